-- Leader election (`store/leadership.rs`): one row, the lease, as in PostgreSQL. On SQLite the
-- exclusive file lock beside the database decides who leads (one machine: a frozen process
-- keeps its lock, so nobody else can lead and write meanwhile); the row records the holder and
-- the epoch for on-call and for the journal's leadership events.
CREATE TABLE leadership (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT NOT NULL,
    address    TEXT,
    epoch      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    since      INTEGER NOT NULL,
    previous   TEXT
);
