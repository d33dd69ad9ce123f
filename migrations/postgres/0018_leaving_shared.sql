-- Leaving shared instances (migrations/sqlite/0018_leaving_shared.sql says why).
ALTER TABLE instances ADD COLUMN started_at BIGINT;
ALTER TABLE users ADD COLUMN move_abandoned_at BIGINT;
UPDATE instances SET started_at = status_since WHERE status IN ('assigned', 'terminating');
