-- Blank workspaces and the settled switch (issue 13; ARCHITECTURE.md, "Blank workspaces").
-- A spare is launched with a blank encrypted volume attached at /dev/sdg, deleted with the
-- instance unless a claim keeps it. `blank_volume_id` is what DescribeInstances last reported
-- attached there; a first claim takes it as the user's workspace in its own transaction
-- (`Store::assign`), unless some user's workspace already is that volume.
ALTER TABLE instances ADD COLUMN blank_volume_id TEXT;
-- When the claim switched a pre-wired spare's rule to the user's route: `ready` waits until the
-- switch is `SPOTPOOL_RULE_SETTLE` old, so that the load balancer applies it first.
ALTER TABLE users ADD COLUMN route_switched_at BIGINT;
