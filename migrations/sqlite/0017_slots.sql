-- Shared-density tiers (issue 14 point 2, ARCHITECTURE.md "Shared tiers"): up to
-- `slots_per_instance` users on one instance, each in its own slot (its host port, Docker
-- network and workspace device follow from it). A user holds (instance_id, slot) and a move
-- target (move_instance_id, move_slot); each pair is held by one user at most (invariant 7).
-- Dedicated tiers use slot 0 only, so for them the new indexes are exactly the old ones.
--
-- SQLite cannot drop a column's UNIQUE constraint: the table is rebuilt with the same columns in
-- the same order, then `slot` and `move_slot`, and its indexes and triggers made again.
CREATE TABLE users_slotted (
    user_id           TEXT PRIMARY KEY,
    tier              TEXT NOT NULL,
    route             TEXT NOT NULL UNIQUE,
    state             TEXT NOT NULL,
    secret_arn        TEXT,
    instance_id       TEXT,
    claim_step        TEXT,
    command_id        TEXT,
    command_sent_at   BIGINT,
    target_group_arn  TEXT,
    listener_arn      TEXT,
    rule_priority     INTEGER,
    rule_arn          TEXT,
    teardown          TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    error             TEXT,
    requested_at      BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    claimed_at        BIGINT,
    ready_at          BIGINT,
    version           BIGINT NOT NULL DEFAULT 0,
    move_instance_id TEXT, move_step TEXT, move_command_id TEXT, move_command_sent_at BIGINT,
    move_reason TEXT, move_started_at BIGINT, move_attempts INTEGER NOT NULL DEFAULT 0,
    workspace_volume_id TEXT, workspace_token TEXT, workspace_zone TEXT,
    workspace_size_gib INTEGER, workspace_attached_to TEXT, workspace_stop_command_id TEXT,
    workspace_stop_sent_at BIGINT, relocation_zone TEXT, relocation_token TEXT,
    relocation_snapshot_id TEXT, relocation_volume_id TEXT, shard TEXT, prewired_route TEXT,
    route_switched_at INTEGER,
    slot              INTEGER NOT NULL DEFAULT 0,
    move_slot         INTEGER NOT NULL DEFAULT 0
);
INSERT INTO users_slotted (user_id, tier, route, state, secret_arn, instance_id, claim_step,
    command_id, command_sent_at, target_group_arn, listener_arn, rule_priority, rule_arn,
    teardown, attempts, error, requested_at, created_at, updated_at, claimed_at, ready_at,
    version, move_instance_id, move_step, move_command_id, move_command_sent_at, move_reason,
    move_started_at, move_attempts, workspace_volume_id, workspace_token, workspace_zone,
    workspace_size_gib, workspace_attached_to, workspace_stop_command_id,
    workspace_stop_sent_at, relocation_zone, relocation_token, relocation_snapshot_id,
    relocation_volume_id, shard, prewired_route, route_switched_at)
SELECT user_id, tier, route, state, secret_arn, instance_id, claim_step,
    command_id, command_sent_at, target_group_arn, listener_arn, rule_priority, rule_arn,
    teardown, attempts, error, requested_at, created_at, updated_at, claimed_at, ready_at,
    version, move_instance_id, move_step, move_command_id, move_command_sent_at, move_reason,
    move_started_at, move_attempts, workspace_volume_id, workspace_token, workspace_zone,
    workspace_size_gib, workspace_attached_to, workspace_stop_command_id,
    workspace_stop_sent_at, relocation_zone, relocation_token, relocation_snapshot_id,
    relocation_volume_id, shard, prewired_route, route_switched_at
FROM users;
DROP TABLE users;
ALTER TABLE users_slotted RENAME TO users;

CREATE UNIQUE INDEX users_listener_priority ON users (listener_arn, rule_priority);
CREATE INDEX users_state ON users (state, requested_at);
CREATE UNIQUE INDEX users_workspace_volume ON users (workspace_volume_id);
CREATE INDEX users_shard ON users (shard);
CREATE UNIQUE INDEX users_instance_slot ON users (instance_id, slot);
CREATE UNIQUE INDEX users_move_instance_slot ON users (move_instance_id, move_slot);

CREATE TRIGGER users_generation_insert AFTER INSERT ON users
BEGIN UPDATE generations SET n = n + 1 WHERE name = 'users'; END;
CREATE TRIGGER users_generation_update AFTER UPDATE ON users
BEGIN UPDATE generations SET n = n + 1 WHERE name = 'users'; END;
CREATE TRIGGER users_generation_delete AFTER DELETE ON users
BEGIN UPDATE generations SET n = n + 1 WHERE name = 'users'; END;
-- The row set is unchanged, but a reader's cached snapshot must not outlive the rebuild.
UPDATE generations SET n = n + 1 WHERE name = 'users';

-- A slot a user left with something of theirs on it (a release, a rollback, a sleep on a shared
-- instance): nobody takes it until the wipe (`wipe_slot_script`) has succeeded and deleted the
-- row. `command_id` is the wipe sent, once sent.
CREATE TABLE slot_wipes (
    instance_id TEXT NOT NULL,
    slot        INTEGER NOT NULL,
    user_id     TEXT NOT NULL,
    volume_id   TEXT,
    command_id  TEXT,
    sent_at     BIGINT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (instance_id, slot)
);
