-- Shared-density tiers (migrations/sqlite/0017_slots.sql): a user holds (instance_id, slot) and
-- a move target (move_instance_id, move_slot), each pair by one user at most.
ALTER TABLE users ADD COLUMN slot BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN move_slot BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users DROP CONSTRAINT users_instance_id_key;
DROP INDEX users_move_instance;
CREATE UNIQUE INDEX users_instance_slot ON users (instance_id, slot);
CREATE UNIQUE INDEX users_move_instance_slot ON users (move_instance_id, move_slot);

-- A slot that must be wiped before anyone takes it (migrations/sqlite/0017_slots.sql).
CREATE TABLE slot_wipes (
    instance_id TEXT COLLATE "C" NOT NULL,
    slot        BIGINT NOT NULL,
    user_id     TEXT NOT NULL,
    volume_id   TEXT,
    command_id  TEXT,
    sent_at     BIGINT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (instance_id, slot)
);
CREATE TRIGGER spotpool_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON slot_wipes
FOR EACH STATEMENT EXECUTE FUNCTION spotpool_fence();
