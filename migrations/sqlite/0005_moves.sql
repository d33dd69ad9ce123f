-- A move: the user's container is started on a second instance while the first still serves,
-- the target group is pointed at the new one, then the old one is retired. The route, rule,
-- target group and secret stay the same throughout. Set by an interruption warning, a state
-- change of the instance, a rebalance recommendation or on-call's recycle.
ALTER TABLE users ADD COLUMN move_instance_id TEXT;
ALTER TABLE users ADD COLUMN move_step TEXT;
ALTER TABLE users ADD COLUMN move_command_id TEXT;
ALTER TABLE users ADD COLUMN move_command_sent_at BIGINT;
ALTER TABLE users ADD COLUMN move_reason TEXT;
-- When the cause happened (the warning's event time), for the move-duration metric.
ALTER TABLE users ADD COLUMN move_started_at BIGINT;
ALTER TABLE users ADD COLUMN move_attempts INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX users_move_instance ON users (move_instance_id);
