-- SQLite's 0006 rebuilt request_log without AUTOINCREMENT. PostgreSQL's ids come from a
-- sequence, which has no such cost: nothing changes here. The file keeps both backends at the
-- same migration version.
SELECT 1;
