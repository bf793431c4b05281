-- request_log ids without AUTOINCREMENT: a plain INTEGER PRIMARY KEY is still the row's
-- insertion order (the next id is the largest plus one; retention only deletes the oldest
-- rows, so an id is never handed out twice in practice), and it spares every logged request
-- the bookkeeping of sqlite_sequence, about a tenth of SQLite's work per inserted row.
-- SQLite cannot drop AUTOINCREMENT in place: the table is rebuilt, ids kept.
CREATE TABLE request_log_rebuilt (
    id                             INTEGER PRIMARY KEY,
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
    user_agent                     TEXT    NULL,
    decision_chain                 TEXT    NULL,
    translation_notes              TEXT    NULL
);

INSERT INTO request_log_rebuilt (id, request_id, created_at, user_id, key_id, provider_id,
    provider_name, method, endpoint, dialect, original_model, forwarded_model, stream,
    status_code, outcome, input_tokens, output_tokens, cache_creation_input_tokens,
    cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, cache_read_input_tokens,
    cost_nanousd, cost_multiplier, duration_ms, ttfb_ms, ttft_ms, session_id, error, user_agent,
    decision_chain, translation_notes)
SELECT id, request_id, created_at, user_id, key_id, provider_id, provider_name, method,
    endpoint, dialect, original_model, forwarded_model, stream, status_code, outcome,
    input_tokens, output_tokens, cache_creation_input_tokens, cache_creation_5m_input_tokens,
    cache_creation_1h_input_tokens, cache_read_input_tokens, cost_nanousd, cost_multiplier,
    duration_ms, ttfb_ms, ttft_ms, session_id, error, user_agent, decision_chain,
    translation_notes
FROM request_log;

DROP TABLE request_log;
ALTER TABLE request_log_rebuilt RENAME TO request_log;
DELETE FROM sqlite_sequence WHERE name = 'request_log';

CREATE INDEX request_log_user_created ON request_log (user_id, created_at);
CREATE INDEX request_log_key_created ON request_log (key_id, created_at);
CREATE INDEX request_log_provider_created ON request_log (provider_id, created_at);
