-- Leader election (`store/leadership.rs`, ARCHITECTURE.md "Replicas and leadership"): one row,
-- the lease. `epoch` grows by one at every change of holder; `expires_at` is in milliseconds of
-- this server's clock (`clock_timestamp()`), so replicas' clocks never matter.
CREATE TABLE leadership (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    holder     TEXT NOT NULL,
    address    TEXT,
    epoch      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    since      BIGINT NOT NULL,
    previous   TEXT
);

-- The fence. The leader's reconciler writes through connections opened with
-- `spotpool.fence = <its epoch>`; every statement on them first checks, under a key-share lock
-- on the lease row, that the epoch is still current and the lease unexpired. A deposed leader's
-- late write fails with SQLSTATE SPF01 instead of landing; a taking-over replica's upsert of the
-- lease (which locks the row as strongly as FOR UPDATE) waits for the writes in flight to
-- commit, while the leader's renewal (a plain UPDATE of non-key columns) never waits for them. Connections without the setting (the
-- API, which every replica serves) are not fenced.
CREATE FUNCTION spotpool_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    fence TEXT := current_setting('spotpool.fence', true);
BEGIN
    IF fence IS NULL OR fence = '' THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM leadership
    WHERE id = 1 AND epoch = fence::BIGINT
      AND expires_at > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
    FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'leadership epoch % is over: this replica is no longer the leader', fence
            USING ERRCODE = 'SPF01';
    END IF;
    RETURN NULL;
END
$$;

-- Every table but the lease itself and the trigger-maintained counters. A table added later
-- needs the same trigger (the shared store suite checks that every table has it).
DO $$
DECLARE
    t TEXT;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables
             WHERE schemaname = current_schema()
               AND tablename NOT IN ('leadership', 'generations', '_sqlx_migrations')
    LOOP
        EXECUTE format(
            'CREATE TRIGGER spotpool_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION spotpool_fence()', t);
    END LOOP;
END
$$;
