-- EC2 interruption events as the interruption queue delivered them
-- (migrations/sqlite/0004_interruptions.sql), keyed by EventBridge's event id.
CREATE TABLE interruption_notices (
    event_id     TEXT COLLATE "C" PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    kind         TEXT NOT NULL,
    state        TEXT,
    event_time   BIGINT NOT NULL,
    received_at  BIGINT NOT NULL,
    handled_at   BIGINT
);
CREATE INDEX interruption_notices_unhandled ON interruption_notices (handled_at, event_time);
CREATE INDEX interruption_notices_instance ON interruption_notices (instance_id, event_time);
CREATE INDEX interruption_notices_received ON interruption_notices (received_at);
