-- Shards (issue 11): the load balancer each user is routed through, by the shard's configured
-- name. Set when the user is first claimed and kept for life (moves, sleep and wake keep it);
-- cleared only when a load balancer's limit refused the user's route before it existed.
-- Existing users are placed on the shard of their recorded listener at start-up
-- (`Store::place_routed_users`).
ALTER TABLE users ADD COLUMN shard TEXT;
CREATE INDEX users_shard ON users (shard);
