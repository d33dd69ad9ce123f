-- Per-user workspaces (migrations/sqlite/0006_workspaces.sql).
ALTER TABLE users ADD COLUMN workspace_volume_id TEXT;
ALTER TABLE users ADD COLUMN workspace_token TEXT;
ALTER TABLE users ADD COLUMN workspace_zone TEXT;
ALTER TABLE users ADD COLUMN workspace_size_gib BIGINT;
ALTER TABLE users ADD COLUMN workspace_attached_to TEXT;
ALTER TABLE users ADD COLUMN workspace_stop_command_id TEXT;
ALTER TABLE users ADD COLUMN workspace_stop_sent_at BIGINT;
ALTER TABLE users ADD COLUMN relocation_zone TEXT;
ALTER TABLE users ADD COLUMN relocation_token TEXT;
ALTER TABLE users ADD COLUMN relocation_snapshot_id TEXT;
ALTER TABLE users ADD COLUMN relocation_volume_id TEXT;
CREATE UNIQUE INDEX users_workspace_volume ON users (workspace_volume_id);
