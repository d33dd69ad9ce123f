-- EC2 interruption events (issue 5), as the interruption queue delivered them: EventBridge rules
-- put them in SQS, and the consumer (src/interruptions.rs) writes each here before it deletes
-- the message. The reconciler reads the unhandled ones and sets handled_at once it has acted.
-- Keyed by EventBridge's event id: a redelivered message inserts nothing. Delivery may be out of
-- order, so judge by event_time (when EC2 emitted the event), not by arrival.
CREATE TABLE interruption_notices (
    event_id     TEXT PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    -- spot_interruption_warning, rebalance_recommendation or state_change.
    kind         TEXT NOT NULL,
    -- For state_change: the EC2 state entered (stopping, stopped, shutting-down, terminated).
    state        TEXT,
    event_time   BIGINT NOT NULL,
    received_at  BIGINT NOT NULL,
    handled_at   BIGINT
);
CREATE INDEX interruption_notices_unhandled ON interruption_notices (handled_at, event_time);
CREATE INDEX interruption_notices_instance ON interruption_notices (instance_id, event_time);
CREATE INDEX interruption_notices_received ON interruption_notices (received_at);
