-- The event stream (migrations/sqlite/0019_events.sql says why).
ALTER TABLE journal ADD COLUMN tier TEXT;
UPDATE journal SET tier = COALESCE(
    (SELECT tier FROM users WHERE users.user_id = journal.user_id),
    (SELECT tier FROM instances WHERE instances.instance_id = journal.instance_id));

CREATE TABLE journal_horizon (
    only_row       INTEGER PRIMARY KEY CHECK (only_row = 1),
    pruned_through BIGINT NOT NULL
);

-- Only the leader writes it, through its fenced sessions (0011).
CREATE TRIGGER spotpool_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON journal_horizon
FOR EACH STATEMENT EXECUTE FUNCTION spotpool_fence();
