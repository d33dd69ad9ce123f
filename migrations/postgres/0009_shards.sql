-- Shards (migrations/sqlite/0009_shards.sql): the load balancer each user is routed through.
ALTER TABLE users ADD COLUMN shard TEXT;
CREATE INDEX users_shard ON users (shard);
