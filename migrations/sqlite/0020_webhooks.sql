-- Ready webhooks (ARCHITECTURE.md "Webhooks"): a PUT's `callback_url`, and the outbox of the
-- POSTs owed to it.
ALTER TABLE users ADD COLUMN callback_url TEXT;

-- One row per POST owed: written by the trigger below in the transaction that changes the
-- user's state, so no state change is committed without its delivery, whichever statement made
-- it. The leader delivers the oldest pending row of each user in turn (a user's receiver sees
-- its states in order) and retries with back-off for a day. `id` is the `Spotpool-Event-Id`.
CREATE TABLE webhooks (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         TEXT NOT NULL,
    state           TEXT NOT NULL,
    instance_id     TEXT,
    url             TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    -- `delivered`, `abandoned` (a day of failures) or `gone` (the user was deleted first).
    outcome         TEXT,
    finished_at     BIGINT
);
CREATE INDEX webhooks_pending ON webhooks (user_id, id) WHERE finished_at IS NULL;
CREATE INDEX webhooks_finished ON webhooks (finished_at) WHERE finished_at IS NOT NULL;

-- A user becoming `ready`, `failed` or `asleep` owes its callback a POST; a move's end (from
-- `migrating` back to `ready`) does not: the user was served throughout.
CREATE TRIGGER users_webhook AFTER UPDATE OF state ON users
WHEN NEW.callback_url IS NOT NULL AND NEW.state IS NOT OLD.state
     AND NEW.state IN ('ready', 'failed', 'asleep')
     AND NOT (OLD.state = 'migrating' AND NEW.state = 'ready')
BEGIN
    INSERT INTO webhooks (user_id, state, instance_id, url, created_at, next_attempt_at)
    VALUES (NEW.user_id, NEW.state, NEW.instance_id, NEW.callback_url, NEW.updated_at,
            NEW.updated_at);
END;
