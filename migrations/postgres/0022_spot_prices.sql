-- The spot prices of the tiers' offerings (issue 16; docs/costs.md "The live cost"): the newest
-- DescribeSpotPriceHistory answer per (instance type, zone), written by the leader at most
-- hourly (`Store::put_spot_prices`), read by every replica's GET /v1/pool. `since` is AWS's
-- timestamp of the price, `read_at` when the daemon read it.
CREATE TABLE spot_prices (
    instance_type TEXT NOT NULL,
    zone TEXT NOT NULL,
    dollars_per_hour DOUBLE PRECISION NOT NULL,
    since BIGINT NOT NULL,
    read_at BIGINT NOT NULL,
    PRIMARY KEY (instance_type, zone)
);
-- Only the leader writes it, through its fenced sessions (0011).
CREATE TRIGGER spotpool_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON spot_prices
FOR EACH STATEMENT EXECUTE FUNCTION spotpool_fence();
