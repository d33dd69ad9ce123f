-- Launches in flight: written before RunInstances is called and deleted once its instances are
-- in the ledger. A launch whose response was lost (a crash, a timeout, a 5xx after the SDK's
-- retries) is redone on the next pass with the same EC2 ClientToken, so EC2 returns the
-- instances it already started instead of starting more.
CREATE TABLE launches (
    client_token   TEXT PRIMARY KEY,
    tier           TEXT NOT NULL,
    instance_type  TEXT NOT NULL,
    subnet_id      TEXT NOT NULL,
    count          INTEGER NOT NULL,
    spot           BOOLEAN NOT NULL,
    created_at     BIGINT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT
);
