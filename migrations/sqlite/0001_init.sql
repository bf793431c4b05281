-- Initial schema (SQLite). Keep in step with migrations/postgres/0001_init.sql: the repository
-- code in gateway-server/src/db runs the same SQL on both.
--
-- Conventions:
--   * timestamps are TEXT in RFC 3339 UTC as written by sqlx/chrono ("2025-01-02T03:04:05.123456+00:00"),
--     so they sort chronologically as text;
--   * decimals (prices, multipliers) are TEXT decimal strings, never REAL, so they stay exact;
--   * JSON documents (groups, model_redirects) are TEXT;
--   * costs are exact integer nano-dollars.

CREATE TABLE providers (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL UNIQUE,
    type            TEXT    NOT NULL,
    base_url        TEXT    NOT NULL,
    api_key         TEXT    NOT NULL,
    weight          INTEGER NOT NULL DEFAULT 1,
    priority        INTEGER NOT NULL DEFAULT 0,
    groups          TEXT    NOT NULL DEFAULT '["default"]',
    cost_multiplier TEXT    NOT NULL DEFAULT '1',
    model_redirects TEXT    NOT NULL DEFAULT '[]',
    enabled         BOOLEAN NOT NULL DEFAULT 1,
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))
);

CREATE TABLE users (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    groups     TEXT    NOT NULL DEFAULT '["default"]',
    enabled    BOOLEAN NOT NULL DEFAULT 1,
    expires_at TEXT    NULL,
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))
);

CREATE TABLE api_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    -- lowercase hex SHA-256 of the plain key; the plain key is never stored
    key_hash   TEXT    NOT NULL UNIQUE,
    -- first characters of the plain key plus an ellipsis, for display only
    key_prefix TEXT    NOT NULL,
    enabled    BOOLEAN NOT NULL DEFAULT 1,
    expires_at TEXT    NULL,
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    UNIQUE (user_id, name)
);

CREATE TABLE model_prices (
    model                   TEXT NOT NULL PRIMARY KEY,
    input_per_mtok          TEXT NOT NULL,
    output_per_mtok         TEXT NOT NULL,
    cache_write_5m_per_mtok TEXT NULL,
    cache_write_1h_per_mtok TEXT NULL,
    cache_read_per_mtok     TEXT NULL,
    updated_at              TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))
);

CREATE TABLE request_log (
    id                             INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id                     TEXT    NOT NULL UNIQUE,
    created_at                     TEXT    NOT NULL,
    user_id                        INTEGER NULL,
    key_id                         INTEGER NULL,
    provider_id                    INTEGER NULL,
    provider_name                  TEXT    NULL,
    method                         TEXT    NOT NULL,
    endpoint                       TEXT    NOT NULL,
    dialect                        TEXT    NULL,
    original_model                 TEXT    NULL,
    forwarded_model                TEXT    NULL,
    stream                         BOOLEAN NOT NULL,
    status_code                    INTEGER NOT NULL,
    outcome                        TEXT    NOT NULL,
    input_tokens                   BIGINT  NOT NULL DEFAULT 0,
    output_tokens                  BIGINT  NOT NULL DEFAULT 0,
    cache_creation_input_tokens    BIGINT  NOT NULL DEFAULT 0,
    cache_creation_5m_input_tokens BIGINT  NOT NULL DEFAULT 0,
    cache_creation_1h_input_tokens BIGINT  NOT NULL DEFAULT 0,
    cache_read_input_tokens        BIGINT  NOT NULL DEFAULT 0,
    -- exact cost in integer nano-dollars (1e-9 USD); NULL when the model has no price
    cost_nanousd                   BIGINT  NULL,
    cost_multiplier                TEXT    NULL,
    duration_ms                    BIGINT  NOT NULL,
    ttfb_ms                        BIGINT  NULL,
    ttft_ms                        BIGINT  NULL,
    session_id                     TEXT    NULL,
    error                          TEXT    NULL,
    user_agent                     TEXT    NULL
);

CREATE INDEX request_log_created_at ON request_log (created_at);
CREATE INDEX request_log_user_created ON request_log (user_id, created_at);
CREATE INDEX request_log_key_created ON request_log (key_id, created_at);
CREATE INDEX request_log_provider_created ON request_log (provider_id, created_at);
CREATE INDEX request_log_session ON request_log (session_id);

CREATE TABLE settings (
    key        TEXT NOT NULL PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))
);
