-- A replica's API writes wake the leader, wherever it runs: every statement that writes
-- `users`, `tier_overrides`, `instances` (a recycle) or `image_pins` (a re-pin) outside the leader's fenced sessions sends a notification on
-- `spotpool_wake`, delivered at commit (once per transaction). The leader listens while it
-- leads (`Store::forward_api_writes`); its own writes (fenced sessions) send nothing, so they
-- cannot wake it into a loop.
CREATE FUNCTION spotpool_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('spotpool.fence', true), '') = '' THEN
        PERFORM pg_notify('spotpool_wake', TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER spotpool_wake AFTER INSERT OR UPDATE OR DELETE ON users
FOR EACH STATEMENT EXECUTE FUNCTION spotpool_wake();
CREATE TRIGGER spotpool_wake AFTER INSERT OR UPDATE OR DELETE ON tier_overrides
FOR EACH STATEMENT EXECUTE FUNCTION spotpool_wake();
CREATE TRIGGER spotpool_wake AFTER INSERT OR UPDATE OR DELETE ON instances
FOR EACH STATEMENT EXECUTE FUNCTION spotpool_wake();
CREATE TRIGGER spotpool_wake AFTER INSERT OR UPDATE OR DELETE ON image_pins
FOR EACH STATEMENT EXECUTE FUNCTION spotpool_wake();
