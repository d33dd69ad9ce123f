-- The auto tiers' spare decisions (ARCHITECTURE.md "Spares that follow demand"): written by the
-- leader when a decision changes (`Store::put_spare_decision`), read by every replica's
-- GET /v1/pool and by a new term, which goes on from it (a hold under way keeps its start).
CREATE TABLE spare_decisions (
    tier TEXT PRIMARY KEY,
    target BIGINT NOT NULL,
    wanted BIGINT NOT NULL,
    lower_since BIGINT,
    held BIGINT NOT NULL,
    demanded BIGINT NOT NULL,
    rate_per_hour DOUBLE PRECISION NOT NULL,
    lead_time BIGINT NOT NULL,
    lead_time_measured BOOLEAN NOT NULL,
    decided_at BIGINT NOT NULL
);
-- Only the leader writes it, through its fenced sessions (0011).
CREATE TRIGGER spotpool_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON spare_decisions
FOR EACH STATEMENT EXECUTE FUNCTION spotpool_fence();
