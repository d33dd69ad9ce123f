-- The event stream (`GET /v1/events`, ARCHITECTURE.md "Events").
--
-- `journal.tier`: the tier of the entry's user, or else of its instance, when it was written
-- (the stream's `?tier=` filter).
ALTER TABLE journal ADD COLUMN tier TEXT;
UPDATE journal SET tier = COALESCE(
    (SELECT tier FROM users WHERE users.user_id = journal.user_id),
    (SELECT tier FROM instances WHERE instances.instance_id = journal.instance_id));

-- How far the journal was pruned: every entry with an id up to `pruned_through` is gone (or
-- never existed; no row: nothing was pruned). A stream resumed from an older id gets
-- `event: reset`: it missed entries.
CREATE TABLE journal_horizon (
    only_row       INTEGER PRIMARY KEY CHECK (only_row = 1),
    pruned_through BIGINT NOT NULL
);
