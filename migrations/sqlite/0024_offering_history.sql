-- Each offering's interruption history (ARCHITECTURE.md "Cost"), for placement = "cheapest":
-- the instance-hours the leader saw of its live instances and its interruption warnings, both
-- decayed to `at` with a half-life of a day. Written by the leader every ten minutes and at
-- each warning (`Store::put_offering_history`); a new term goes on from it.
CREATE TABLE offering_history (
    instance_type TEXT NOT NULL,
    zone TEXT NOT NULL,
    instance_hours REAL NOT NULL,
    interruptions REAL NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (instance_type, zone)
);
