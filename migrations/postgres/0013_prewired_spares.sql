-- Pre-wired spares (migrations/sqlite/0013_prewired_spares.sql).
ALTER TABLE instances ADD COLUMN probed_at BIGINT;
ALTER TABLE instances ADD COLUMN warm_shard TEXT;
ALTER TABLE instances ADD COLUMN warm_listener_arn TEXT;
ALTER TABLE instances ADD COLUMN warm_priority BIGINT;
ALTER TABLE instances ADD COLUMN warm_target_group_arn TEXT;
ALTER TABLE instances ADD COLUMN warm_rule_arn TEXT;
ALTER TABLE users ADD COLUMN prewired_route TEXT;
CREATE UNIQUE INDEX instances_warm_priority ON instances (warm_listener_arn, warm_priority);
