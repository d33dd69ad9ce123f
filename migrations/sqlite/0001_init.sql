-- Desired state: one row per user who wants (or is giving up) an instance. The claim columns are
-- the claim's journal state: each step writes its result here before the next step starts.
-- Timestamps are Unix epoch milliseconds. Kept to portable SQL for the PostgreSQL port.
CREATE TABLE users (
    user_id           TEXT PRIMARY KEY,
    tier              TEXT NOT NULL,
    route             TEXT NOT NULL UNIQUE,
    state             TEXT NOT NULL,
    secret_arn        TEXT,
    instance_id       TEXT UNIQUE,
    claim_step        TEXT,
    command_id        TEXT,
    command_sent_at   BIGINT,
    target_group_arn  TEXT,
    listener_arn      TEXT,
    rule_priority     INTEGER,
    rule_arn          TEXT,
    -- Set before an undo (rollback or recover) starts, so an interrupted undo resumes as one.
    teardown          TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    error             TEXT,
    requested_at      BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    claimed_at        BIGINT,
    ready_at          BIGINT,
    version           BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX users_listener_priority ON users (listener_arn, rule_priority);
CREATE INDEX users_state ON users (state, requested_at);

-- The ledger of pool instances: what this daemon launched or adopted, merged each pass with
-- DescribeInstances. Which user holds an instance is users.instance_id (one place only).
CREATE TABLE instances (
    instance_id        TEXT PRIMARY KEY,
    tier               TEXT NOT NULL,
    status             TEXT NOT NULL,
    arn                TEXT,
    instance_type      TEXT,
    availability_zone  TEXT,
    private_ip         TEXT,
    launched_at        BIGINT NOT NULL,
    status_since       BIGINT NOT NULL,
    probe_command_id   TEXT,
    probe_sent_at      BIGINT,
    probe_failed_at    BIGINT,
    probe_failures     INTEGER NOT NULL DEFAULT 0,
    last_error         TEXT,
    -- Consecutive passes in which DescribeInstances did not list the instance.
    missed_observations INTEGER NOT NULL DEFAULT 0
);

-- Append-only journal of every step taken: claim steps, rollbacks, releases, launches, probes,
-- terminations. On-call reads it; the event stream is built on it.
CREATE TABLE journal (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    user_id      TEXT,
    instance_id  TEXT,
    message      TEXT NOT NULL
);
CREATE INDEX journal_user ON journal (user_id, id);
