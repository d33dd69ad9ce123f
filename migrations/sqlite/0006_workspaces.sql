-- Per-user workspaces (issue 10): each user's EBS volume, kept across moves, sleep and wake and
-- deleted only with the user. The token is CreateVolume's ClientToken, written before the call,
-- so a lost response finds the same volume again. attached_to is the instance the daemon
-- attached it to; the stop command is the stop-and-unmount sent before a detach. The relocation
-- columns describe a copy to another zone through a snapshot.
ALTER TABLE users ADD COLUMN workspace_volume_id TEXT;
ALTER TABLE users ADD COLUMN workspace_token TEXT;
ALTER TABLE users ADD COLUMN workspace_zone TEXT;
ALTER TABLE users ADD COLUMN workspace_size_gib INTEGER;
ALTER TABLE users ADD COLUMN workspace_attached_to TEXT;
ALTER TABLE users ADD COLUMN workspace_stop_command_id TEXT;
ALTER TABLE users ADD COLUMN workspace_stop_sent_at BIGINT;
ALTER TABLE users ADD COLUMN relocation_zone TEXT;
ALTER TABLE users ADD COLUMN relocation_token TEXT;
ALTER TABLE users ADD COLUMN relocation_snapshot_id TEXT;
ALTER TABLE users ADD COLUMN relocation_volume_id TEXT;
CREATE UNIQUE INDEX users_workspace_volume ON users (workspace_volume_id);
