-- Rate and spend limits (issue: limits and quotas). One JSON document per row (core's Limits:
-- rpm_limit, limit_concurrent_sessions, limit_5h_usd, ..., money as decimal strings), so new
-- limit kinds need no migration. Spend itself is never stored here: the request log is its
-- source of truth, and the windows are rebuilt from it.
ALTER TABLE providers ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
