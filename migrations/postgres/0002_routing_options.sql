-- Routing and resilience settings (issue: routing and resilience).
-- Provider options live in one JSON document (core's ProviderOptions), so new options need no
-- migration; user and key allow-lists and key groups are JSON arrays; the request log keeps the
-- decision chain (every provider tried, why, outcome, latency) as JSON text.
ALTER TABLE providers ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN allowed_models TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN groups TEXT NULL;
ALTER TABLE api_keys ADD COLUMN allowed_models TEXT NOT NULL DEFAULT '[]';
ALTER TABLE request_log ADD COLUMN decision_chain TEXT NULL;
