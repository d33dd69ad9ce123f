-- Moves (migrations/sqlite/0005_moves.sql).
ALTER TABLE users ADD COLUMN move_instance_id TEXT;
ALTER TABLE users ADD COLUMN move_step TEXT;
ALTER TABLE users ADD COLUMN move_command_id TEXT;
ALTER TABLE users ADD COLUMN move_command_sent_at BIGINT;
ALTER TABLE users ADD COLUMN move_reason TEXT;
ALTER TABLE users ADD COLUMN move_started_at BIGINT;
ALTER TABLE users ADD COLUMN move_attempts BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX users_move_instance ON users (move_instance_id);
