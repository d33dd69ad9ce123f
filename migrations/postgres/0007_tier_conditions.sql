-- Why a tier's launches are held back (migrations/sqlite/0007_tier_conditions.sql).
CREATE TABLE tier_conditions (
    tier    TEXT COLLATE "C" PRIMARY KEY,
    cause   TEXT NOT NULL,
    detail  TEXT NOT NULL,
    since   BIGINT NOT NULL,
    until   BIGINT NOT NULL
);
