-- PostgreSQL's 0012 makes a replica's API writes wake the leader through LISTEN/NOTIFY. SQLite
-- has no such channel and needs none: its replicas are one process at a time on one machine
-- (the file lock), whose API wakes its own reconciler. Nothing to change here; the file keeps
-- the two sets paired by number.
SELECT 1;
