-- A counter per table that every write to it bumps (migrations/sqlite/0010_generations.sql): a
-- pass re-reads the users and the instance ledger only when the counter moved since its last
-- read (`store/generations.rs`). As in SQLite, a trigger per row, in the writer's transaction.
CREATE TABLE generations (
    name TEXT PRIMARY KEY,
    n    BIGINT NOT NULL
);
INSERT INTO generations (name, n) VALUES ('users', 0), ('instances', 0);

CREATE FUNCTION bump_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE generations SET n = n + 1 WHERE name = TG_ARGV[0];
    RETURN NULL;
END
$$;

CREATE TRIGGER users_generation AFTER INSERT OR UPDATE OR DELETE ON users
FOR EACH ROW EXECUTE FUNCTION bump_generation('users');
CREATE TRIGGER instances_generation AFTER INSERT OR UPDATE OR DELETE ON instances
FOR EACH ROW EXECUTE FUNCTION bump_generation('instances');
