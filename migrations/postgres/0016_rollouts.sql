-- Rolling upgrades (migrations/sqlite/0016_rollouts.sql).
ALTER TABLE instances ADD COLUMN launch_template TEXT;
ALTER TABLE instances ADD COLUMN image TEXT;

ALTER TABLE tier_overrides ADD COLUMN container_image TEXT;
ALTER TABLE tier_overrides ADD COLUMN launch_template_version TEXT;

CREATE TABLE rollouts (
    tier        TEXT COLLATE "C" PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    drain_id    BIGINT,
    updated_at  BIGINT NOT NULL
);

-- Only the leader writes it, through its fenced sessions (0011).
CREATE TRIGGER spotpool_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON rollouts
FOR EACH STATEMENT EXECUTE FUNCTION spotpool_fence();

-- An instance that pulled an image before this migration: '' is never current.
UPDATE instances SET image = '' WHERE probed_at IS NOT NULL OR status <> 'initializing';
