-- Launches in flight (migrations/sqlite/0002_launches.sql): written before RunInstances is
-- called and deleted once its instances are in the ledger, so a launch whose response was lost
-- is redone with the same EC2 ClientToken.
CREATE TABLE launches (
    client_token   TEXT COLLATE "C" PRIMARY KEY,
    tier           TEXT NOT NULL,
    instance_type  TEXT NOT NULL,
    subnet_id      TEXT NOT NULL,
    count          BIGINT NOT NULL,
    spot           BOOLEAN NOT NULL,
    created_at     BIGINT NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    last_error     TEXT
);
