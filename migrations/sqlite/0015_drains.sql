-- On-call's drains (POST /v1/admin/drain, `store/drains.rs`): a selector of instances to empty,
-- its bounds and its progress. `selector`, `requested` and `failed_users` are JSON.
CREATE TABLE drains (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    selector             TEXT NOT NULL,
    max_concurrent_moves INTEGER NOT NULL,
    max_failures         INTEGER NOT NULL,
    state                TEXT NOT NULL,
    moved                INTEGER NOT NULL DEFAULT 0,
    failed               INTEGER NOT NULL DEFAULT 0,
    requested            TEXT NOT NULL DEFAULT '[]',
    failed_users         TEXT NOT NULL DEFAULT '[]',
    created_by           TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
