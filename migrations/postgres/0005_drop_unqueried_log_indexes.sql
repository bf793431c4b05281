-- Every index of request_log is written by every logged request. No query reads these two (recent
-- logs go by id, spend windows by subject and time), so they only cost inserts.
DROP INDEX request_log_created_at;
DROP INDEX request_log_session;
