-- The digest each configured image reference was pinned to (issue 18): resolved once, the first
-- time a daemon runs with that image string, and used by every probe and start after that, by
-- every replica and across restarts. A new image string gets a new row; a row is never replaced
-- (on-call re-pins by deleting it: `spotpool repin`).
CREATE TABLE image_pins (
    image       TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,
    resolved_at BIGINT NOT NULL
);
