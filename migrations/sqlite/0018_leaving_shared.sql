-- Leaving shared instances (ARCHITECTURE.md, "Shared tiers").
--
-- `instances.started_at`: when the first start command (a claim's or a move's) was about to
-- reach the instance; never cleared. A shared instance whose last user leaves is given back to
-- the pool only while it is NULL (its only claims rolled back before any start); otherwise it is
-- retired: other users' containers ran there.
ALTER TABLE instances ADD COLUMN started_at BIGINT;

-- `users.move_abandoned_at`: when the user's last move was given up before its point of no
-- return (the user stayed ready where it was). A shared instance keeps its recycle request (it
-- is being emptied: no claim lands there); a user who gave up a move after that request is not
-- asked to move again by it, and a drain counts that move as failed.
ALTER TABLE users ADD COLUMN move_abandoned_at BIGINT;

-- Rows from before: anything handed out may have run a container.
UPDATE instances SET started_at = status_since WHERE status IN ('assigned', 'terminating');
