-- Rolling upgrades (issue 14 point 4, ARCHITECTURE.md "Rolling upgrades").
--
-- What each instance was launched from and last pulled, so a drain can find the `outdated` ones:
-- `launch_template` is "<template id>:<version as asked>", written once when the launch is
-- recorded; `image` is the reference its probe or its user's container last pulled (pinned to a
-- digest when the image has a pin). NULL is unknown (an instance adopted from a listing, or one
-- launched before this migration): an `outdated` drain counts unknown as outdated.
ALTER TABLE instances ADD COLUMN launch_template TEXT;
ALTER TABLE instances ADD COLUMN image TEXT;

-- On-call's image and launch template version of a tier (PUT /v1/admin/pool/{tier}); NULL keeps
-- the configured one.
ALTER TABLE tier_overrides ADD COLUMN container_image TEXT;
ALTER TABLE tier_overrides ADD COLUMN launch_template_version TEXT;

-- The image and launch template each tier last rolled out to: when the effective ones differ
-- (a SIGHUP, a PUT, a restart with new settings), the leader replaces this row and starts an
-- `outdated` drain of the tier (`drain_id`). A tier seen for the first time only gets its row.
CREATE TABLE rollouts (
    tier        TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    drain_id    BIGINT,
    updated_at  BIGINT NOT NULL
);

-- An instance that pulled an image before this migration ran one that was not recorded: '' is
-- never a current image, so an `outdated` drain takes it.
UPDATE instances SET image = '' WHERE probed_at IS NOT NULL OR status <> 'initializing';
