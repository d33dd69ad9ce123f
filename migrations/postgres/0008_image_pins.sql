-- The digest each configured image reference was pinned to
-- (migrations/sqlite/0008_image_pins.sql); the first writer wins.
CREATE TABLE image_pins (
    image       TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,
    resolved_at BIGINT NOT NULL
);
