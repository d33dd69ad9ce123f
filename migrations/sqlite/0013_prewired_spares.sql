-- Pre-wired spares (issue 13; ARCHITECTURE.md, "Pre-wired spares"). A spare whose readiness
-- probe passed (`probed_at`) gets its own target group with itself registered and a warm rule on
-- its shard's listener (a condition no client matches), and becomes `available` once the load
-- balancer reports it healthy. The claim moves the warm route into the user's row (one
-- transaction, `Store::assign`), and the user's `prewired_route` says how far it has come:
-- 'warm' (the rule still has its warm conditions) or 'switched' (it matches the user's route;
-- the user's tags are still to be added). NULL once tagged, and for routes made for the user.
ALTER TABLE instances ADD COLUMN probed_at INTEGER;
ALTER TABLE instances ADD COLUMN warm_shard TEXT;
ALTER TABLE instances ADD COLUMN warm_listener_arn TEXT;
ALTER TABLE instances ADD COLUMN warm_priority INTEGER;
ALTER TABLE instances ADD COLUMN warm_target_group_arn TEXT;
ALTER TABLE instances ADD COLUMN warm_rule_arn TEXT;
ALTER TABLE users ADD COLUMN prewired_route TEXT;
-- A listener priority is held by one spare at a time (users have their own index).
CREATE UNIQUE INDEX instances_warm_priority ON instances (warm_listener_arn, warm_priority);
