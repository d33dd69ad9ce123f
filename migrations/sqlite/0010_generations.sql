-- A counter per table that every write to it bumps (issue 11, a loop that scales): a pass
-- re-reads the users and the instance ledger only when the counter moved since its last read
-- (`store/generations.rs`), whichever process or connection wrote. A steady pass of a pool of
-- 10,000 instances decoded every row of both tables before, every pass.
CREATE TABLE generations (
    name TEXT PRIMARY KEY,
    n    INTEGER NOT NULL
);
INSERT INTO generations (name, n) VALUES ('users', 0), ('instances', 0);

CREATE TRIGGER users_generation_insert AFTER INSERT ON users
BEGIN UPDATE generations SET n = n + 1 WHERE name = 'users'; END;
CREATE TRIGGER users_generation_update AFTER UPDATE ON users
BEGIN UPDATE generations SET n = n + 1 WHERE name = 'users'; END;
CREATE TRIGGER users_generation_delete AFTER DELETE ON users
BEGIN UPDATE generations SET n = n + 1 WHERE name = 'users'; END;

CREATE TRIGGER instances_generation_insert AFTER INSERT ON instances
BEGIN UPDATE generations SET n = n + 1 WHERE name = 'instances'; END;
CREATE TRIGGER instances_generation_update AFTER UPDATE ON instances
BEGIN UPDATE generations SET n = n + 1 WHERE name = 'instances'; END;
CREATE TRIGGER instances_generation_delete AFTER DELETE ON instances
BEGIN UPDATE generations SET n = n + 1 WHERE name = 'instances'; END;
