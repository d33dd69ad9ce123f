-- Ready webhooks (migrations/sqlite/0020_webhooks.sql says why).
ALTER TABLE users ADD COLUMN callback_url TEXT;

CREATE TABLE webhooks (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         TEXT NOT NULL,
    state           TEXT NOT NULL,
    instance_id     TEXT,
    url             TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    outcome         TEXT,
    finished_at     BIGINT
);
CREATE INDEX webhooks_pending ON webhooks (user_id, id) WHERE finished_at IS NULL;
CREATE INDEX webhooks_finished ON webhooks (finished_at) WHERE finished_at IS NOT NULL;

CREATE FUNCTION spotpool_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhooks (user_id, state, instance_id, url, created_at, next_attempt_at)
    VALUES (NEW.user_id, NEW.state, NEW.instance_id, NEW.callback_url, NEW.updated_at,
            NEW.updated_at);
    RETURN NULL;
END
$$;

CREATE TRIGGER users_webhook AFTER UPDATE OF state ON users
FOR EACH ROW
WHEN (NEW.callback_url IS NOT NULL AND NEW.state IS DISTINCT FROM OLD.state
      AND NEW.state IN ('ready', 'failed', 'asleep')
      AND NOT (OLD.state = 'migrating' AND NEW.state = 'ready'))
EXECUTE FUNCTION spotpool_webhook();

-- The API's PUT writes no row here (the trigger does, in whichever session changed the user);
-- the leader's delivery updates them through its fenced sessions.
CREATE TRIGGER spotpool_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON webhooks
FOR EACH STATEMENT EXECUTE FUNCTION spotpool_fence();
