-- On-call's changes to a tier's sizing, made through PUT /v1/admin/pool/{tier}. They override
-- the configured values until changed again (a restart keeps them). NULL means "as configured".
CREATE TABLE tier_overrides (
    tier           TEXT PRIMARY KEY,
    spare_count    INTEGER,
    max_instances  INTEGER,
    paused         BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at     BIGINT NOT NULL,
    updated_by     TEXT NOT NULL
);

-- Every admin action: who, what, when and how it ended. Append-only.
CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    detail   TEXT NOT NULL,
    outcome  TEXT NOT NULL
);

-- Set by POST /v1/admin/instances/{id}/recycle; the reconciler moves the instance's user (if
-- any) to a fresh instance and terminates this one.
ALTER TABLE instances ADD COLUMN recycle_requested_at BIGINT;
