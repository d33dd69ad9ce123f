-- Why a tier's launches are held back, for every API replica to show (GET /v1/pool, a queued
-- user's `waiting_for`): `quota_exceeded` when RunInstances answered that an account quota is
-- used up. The row stays while launches keep failing that way and goes with the next launch
-- that succeeds; `until` is when the reconciler tries again.
CREATE TABLE tier_conditions (
    tier    TEXT PRIMARY KEY,
    cause   TEXT NOT NULL,
    detail  TEXT NOT NULL,
    since   BIGINT NOT NULL,
    until   BIGINT NOT NULL
);
