-- The health watch (ARCHITECTURE.md "Health watch"): its record of each ready user's container,
-- written by the watch alone (`Store::set_health`), never by a row's versioned update, and only
-- when its judgement changes (a write of `users` makes every pass decode the users again). When
-- each user was last read is the leader's, in memory.
ALTER TABLE users ADD COLUMN health TEXT;
ALTER TABLE users ADD COLUMN health_instance_id TEXT;
ALTER TABLE users ADD COLUMN health_since BIGINT;
ALTER TABLE users ADD COLUMN health_restarted_at BIGINT;
ALTER TABLE users ADD COLUMN health_recycled_at BIGINT;
ALTER TABLE users ADD COLUMN health_cause TEXT;
