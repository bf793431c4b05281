//! The request log: batch inserts of [`UsageRecord`]s and reading rows back.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use gateway_core::dialect::Dialect;
use gateway_core::usage::{Outcome, TokenUsage, UsageRecord, UsdNanos};
use rust_decimal::Decimal;
use serde::de::IntoDeserializer;
use serde::{Deserialize, Serialize};

use super::{Database, DbError, PoolExt, Result, with_pool};

/// Most rows per `INSERT`: [`COLUMNS`] values each, so 1024 rows stay below SQLite's 32,766
/// bound parameters.
const MAX_ROWS_PER_STATEMENT: usize = 1024;

/// Values per row of [`INSERT_HEAD`].
const COLUMNS: usize = 30;

/// `records` cut into `INSERT`s of power-of-two row counts, largest first. Every statement then
/// has one of eleven shapes, which the driver's statement cache keeps prepared; a statement per
/// batch size made the database parse a new statement of thousands of placeholders for most
/// batches (their size follows the load) and filled the cache with them.
fn statement_chunks<T>(mut records: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if records.is_empty() {
            return None;
        }
        let rows = MAX_ROWS_PER_STATEMENT.min(1 << records.len().ilog2());
        let (chunk, rest) = records.split_at(rows);
        records = rest;
        Some(chunk)
    })
}

/// The column list of `request_log`, as a literal so that it can be `concat!`ed into `'static`
/// SQL.
macro_rules! request_log_columns {
    () => {
        "id, request_id, created_at, user_id, key_id, provider_id, provider_name, method, \
         endpoint, dialect, original_model, forwarded_model, stream, status_code, outcome, \
         input_tokens, output_tokens, cache_creation_input_tokens, \
         cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, \
         cache_read_input_tokens, cost_nanousd, cost_multiplier, duration_ms, ttfb_ms, ttft_ms, \
         session_id, error, user_agent, decision_chain, translation_notes"
    };
}

const INSERT_HEAD: &str = "INSERT INTO request_log (request_id, created_at, user_id, key_id, \
     provider_id, provider_name, method, endpoint, dialect, original_model, forwarded_model, \
     stream, status_code, outcome, input_tokens, output_tokens, cache_creation_input_tokens, \
     cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, cache_read_input_tokens, \
     cost_nanousd, cost_multiplier, duration_ms, ttfb_ms, ttft_ms, session_id, error, \
     user_agent, decision_chain, translation_notes) ";

/// One row of `request_log`, with the database's column types (integers as `i64`, the cost
/// multiplier as its exact decimal text). [`RequestLogRow::into_usage_record`] converts back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct RequestLogRow {
    /// Row id (insertion order).
    pub id: i64,
    /// Gateway request id (`x-request-id`), unique.
    pub request_id: String,
    /// Arrival time. PostgreSQL keeps microseconds, SQLite the full nanoseconds.
    pub created_at: DateTime<Utc>,
    /// Authenticated user.
    pub user_id: Option<i64>,
    /// Authenticated key.
    pub key_id: Option<i64>,
    /// Provider that served (or last tried) the request.
    pub provider_id: Option<i64>,
    /// Its name at the time.
    pub provider_name: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Request path without the query.
    pub endpoint: String,
    /// Client dialect ([`Dialect::as_str`]).
    pub dialect: Option<String>,
    /// Model the client asked for.
    pub original_model: Option<String>,
    /// Model sent upstream.
    pub forwarded_model: Option<String>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Status returned to the client.
    pub status_code: i32,
    /// [`Outcome::as_str`].
    pub outcome: String,
    /// Uncached input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// All cache-write tokens.
    pub cache_creation_input_tokens: i64,
    /// Cache writes with a 5-minute TTL.
    pub cache_creation_5m_input_tokens: i64,
    /// Cache writes with a 1-hour TTL.
    pub cache_creation_1h_input_tokens: i64,
    /// Cache-read tokens.
    pub cache_read_input_tokens: i64,
    /// Exact cost in nano-dollars ([`UsdNanos`]); `None` when the model had no price.
    pub cost_nanousd: Option<i64>,
    /// Provider cost multiplier applied, as exact decimal text.
    pub cost_multiplier: Option<String>,
    /// Total duration.
    pub duration_ms: i64,
    /// Time to upstream response headers.
    pub ttfb_ms: Option<i64>,
    /// Time to the first generated token.
    pub ttft_ms: Option<i64>,
    /// Session id.
    pub session_id: Option<String>,
    /// Error message.
    pub error: Option<String>,
    /// Client `user-agent`.
    pub user_agent: Option<String>,
    /// The decision chain as JSON (providers considered, attempts and outcomes).
    pub decision_chain: Option<String>,
    /// What translation could not carry over, as a JSON array of strings.
    pub translation_notes: Option<String>,
}

/// Counts are `u64` in the domain and `BIGINT` in the database; no real count gets near 2^63.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(column: &'static str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| DbError::invalid("request_log", column, format!("negative: {value}")))
}

fn opt_to_u64(column: &'static str, value: Option<i64>) -> Result<Option<u64>> {
    value.map(|v| to_u64(column, v)).transpose()
}

impl RequestLogRow {
    /// Converts the row back into the domain record.
    pub fn into_usage_record(self) -> Result<UsageRecord> {
        const T: &str = "request_log";
        let dialect = self
            .dialect
            .as_deref()
            .map(|d| {
                Dialect::parse(d).ok_or_else(|| DbError::invalid(T, "dialect", format!("unknown {d:?}")))
            })
            .transpose()?;
        let outcome = Outcome::deserialize(self.outcome.as_str().into_deserializer())
            .map_err(|e: serde::de::value::Error| DbError::invalid(T, "outcome", e.to_string()))?;
        let status_code = u16::try_from(self.status_code)
            .map_err(|_| DbError::invalid(T, "status_code", format!("out of range: {}", self.status_code)))?;
        let cost_multiplier = self
            .cost_multiplier
            .as_deref()
            .map(|m| Decimal::from_str(m).map_err(|e| DbError::invalid(T, "cost_multiplier", e.to_string())))
            .transpose()?;
        Ok(UsageRecord {
            request_id: self.request_id,
            created_at: self.created_at,
            user_id: self.user_id,
            key_id: self.key_id,
            provider_id: self.provider_id,
            provider_name: self.provider_name,
            method: self.method,
            endpoint: self.endpoint,
            dialect,
            original_model: self.original_model,
            forwarded_model: self.forwarded_model,
            stream: self.stream,
            status_code,
            outcome,
            usage: TokenUsage {
                input_tokens: to_u64("input_tokens", self.input_tokens)?,
                output_tokens: to_u64("output_tokens", self.output_tokens)?,
                cache_creation_input_tokens: to_u64(
                    "cache_creation_input_tokens",
                    self.cache_creation_input_tokens,
                )?,
                cache_creation_5m_input_tokens: to_u64(
                    "cache_creation_5m_input_tokens",
                    self.cache_creation_5m_input_tokens,
                )?,
                cache_creation_1h_input_tokens: to_u64(
                    "cache_creation_1h_input_tokens",
                    self.cache_creation_1h_input_tokens,
                )?,
                cache_read_input_tokens: to_u64("cache_read_input_tokens", self.cache_read_input_tokens)?,
            },
            cost: self.cost_nanousd.map(UsdNanos),
            cost_multiplier,
            duration_ms: to_u64("duration_ms", self.duration_ms)?,
            ttfb_ms: opt_to_u64("ttfb_ms", self.ttfb_ms)?,
            ttft_ms: opt_to_u64("ttft_ms", self.ttft_ms)?,
            session_id: self.session_id,
            error: self.error,
            user_agent: self.user_agent,
            decision_chain: match self.decision_chain.as_deref() {
                None | Some("") => Vec::new(),
                Some(json) => serde_json::from_str(json)
                    .map_err(|e| DbError::invalid("request_log", "decision_chain", e.to_string()))?,
            },
            translation_notes: match self.translation_notes.as_deref() {
                None | Some("") => Vec::new(),
                Some(json) => serde_json::from_str(json)
                    .map_err(|e| DbError::invalid("request_log", "translation_notes", e.to_string()))?,
            },
        })
    }
}

/// The decision chain as stored: JSON, or NULL when nothing was routed.
fn chain_json(chain: &[gateway_core::route::chain::ChainEntry]) -> Option<String> {
    if chain.is_empty() { None } else { Some(gateway_core::route::chain::chain_to_json(chain)) }
}

/// Translation notes as stored: a JSON array, or NULL when there are none.
fn notes_json(notes: &[String]) -> Option<String> {
    if notes.is_empty() { None } else { serde_json::to_string(notes).ok() }
}

/// The multi-row `INSERT` of `rows` records (a power of two, at most
/// [`MAX_ROWS_PER_STATEMENT`]) in the placeholder syntax of `P`. Built once per shape and
/// backend: formatting thousands of placeholders per statement cost more than binding them.
fn insert_sql<P: PoolExt>(rows: usize) -> &'static str {
    const SHAPES: usize = MAX_ROWS_PER_STATEMENT.ilog2() as usize + 1;
    static TEXTS: [[OnceLock<String>; SHAPES]; 2] = [const { [const { OnceLock::new() }; SHAPES] }; 2];
    let shape = (rows.ilog2() as usize).min(SHAPES - 1);
    TEXTS[usize::from(P::SQLITE)][shape].get_or_init(|| {
        let rows = 1usize << shape;
        let mut sql = String::with_capacity(INSERT_HEAD.len() + rows * COLUMNS * 6 + 64);
        sql.push_str(INSERT_HEAD);
        sql.push_str("VALUES ");
        for row in 0..rows {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for column in 0..COLUMNS {
                if column > 0 {
                    sql.push_str(", ");
                }
                P::push_placeholder(&mut sql, row * COLUMNS + column + 1);
            }
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (request_id) DO NOTHING");
        sql
    })
}

fn insert_sql_for<P: PoolExt>(_pool: &P, rows: usize) -> &'static str {
    insert_sql::<P>(rows)
}

fn arguments_for<P: PoolExt>(_pool: &P) -> <P::Db as sqlx::Database>::Arguments {
    Default::default()
}

/// A column's string of the previous row, bound again as one shared `Arc<str>` while rows
/// repeat it (method, path, provider, models, user agent... mostly do). Bound by value, a
/// shared string reaches the driver without the copy and allocation that binding a borrowed
/// string makes for every row.
#[derive(Default)]
struct Repeated(Option<Arc<str>>);

impl Repeated {
    fn get(&mut self, s: &str) -> Arc<str> {
        match &self.0 {
            Some(last) if **last == *s => last.clone(),
            _ => self.0.insert(Arc::from(s)).clone(),
        }
    }

    fn get_opt(&mut self, s: Option<&str>) -> Option<Arc<str>> {
        s.map(|s| self.get(s))
    }
}

/// [`Repeated`] for each column whose value rows tend to share.
#[derive(Default)]
struct RepeatedColumns {
    provider_name: Repeated,
    method: Repeated,
    endpoint: Repeated,
    dialect: Repeated,
    original_model: Repeated,
    forwarded_model: Repeated,
    outcome: Repeated,
    user_agent: Repeated,
    /// The multiplier and its decimal text.
    cost_multiplier: Option<(Decimal, Arc<str>)>,
}

impl RepeatedColumns {
    fn cost_multiplier(&mut self, multiplier: Option<Decimal>) -> Option<Arc<str>> {
        let m = multiplier?;
        match &self.cost_multiplier {
            Some((last, text)) if *last == m => Some(text.clone()),
            _ => Some(self.cost_multiplier.insert((m, Arc::from(m.to_string()))).1.clone()),
        }
    }
}

/// Adds the [`COLUMNS`] values of one record to `$args`, in the column order of [`INSERT_HEAD`].
macro_rules! add_record {
    ($args:ident, $r:ident, $repeated:ident) => {{
        let u = &$r.usage;
        let c = &mut $repeated;
        $args.add(&$r.request_id)?;
        $args.add($r.created_at)?;
        $args.add($r.user_id)?;
        $args.add($r.key_id)?;
        $args.add($r.provider_id)?;
        $args.add(c.provider_name.get_opt($r.provider_name.as_deref()))?;
        $args.add(c.method.get(&$r.method))?;
        $args.add(c.endpoint.get(&$r.endpoint))?;
        $args.add(c.dialect.get_opt($r.dialect.map(Dialect::as_str)))?;
        $args.add(c.original_model.get_opt($r.original_model.as_deref()))?;
        $args.add(c.forwarded_model.get_opt($r.forwarded_model.as_deref()))?;
        $args.add($r.stream)?;
        $args.add(i32::from($r.status_code))?;
        $args.add(c.outcome.get($r.outcome.as_str()))?;
        $args.add(to_i64(u.input_tokens))?;
        $args.add(to_i64(u.output_tokens))?;
        $args.add(to_i64(u.cache_creation_input_tokens))?;
        $args.add(to_i64(u.cache_creation_5m_input_tokens))?;
        $args.add(to_i64(u.cache_creation_1h_input_tokens))?;
        $args.add(to_i64(u.cache_read_input_tokens))?;
        $args.add($r.cost.map(|c| c.0))?;
        $args.add(c.cost_multiplier($r.cost_multiplier))?;
        $args.add(to_i64($r.duration_ms))?;
        $args.add($r.ttfb_ms.map(to_i64))?;
        $args.add($r.ttft_ms.map(to_i64))?;
        $args.add(&$r.session_id)?;
        $args.add(&$r.error)?;
        $args.add(c.user_agent.get_opt($r.user_agent.as_deref()))?;
        $args.add(chain_json(&$r.decision_chain))?;
        $args.add(notes_json(&$r.translation_notes))?;
    }};
}

impl Database {
    /// Writes records to the request log with multi-row `INSERT`s of at most 1024 rows, all in
    /// one transaction. A record whose `request_id` is already stored is skipped (`ON CONFLICT
    /// (request_id) DO NOTHING`), so retrying a batch is harmless.
    pub async fn insert_usage_records(&self, records: &[UsageRecord]) -> Result<()> {
        use sqlx::Arguments;
        if records.is_empty() {
            return Ok(());
        }
        let chunks: Vec<&[UsageRecord]> = statement_chunks(records).collect();
        let mut repeated = RepeatedColumns::default();
        with_pool!(backend: self.log_backend(), |pool| {
            let mut statement = |chunk: &[UsageRecord]| {
                let mut args = arguments_for(pool);
                args.reserve(chunk.len() * COLUMNS, 0);
                let added: std::result::Result<(), sqlx::error::BoxDynError> = (|| {
                    for r in chunk {
                        add_record!(args, r, repeated);
                    }
                    Ok(())
                })();
                added.map_err(sqlx::Error::Encode)?;
                Ok::<_, sqlx::Error>(sqlx::query_with(insert_sql_for(pool, chunk.len()), args))
            };
            if let [only] = chunks[..] {
                // One statement (every full batch) is its own transaction: no `BEGIN`/`COMMIT`
                // round trips to the driver, and no statement journal, which SQLite keeps for a
                // statement inside a larger transaction.
                statement(only)?.execute(pool).await?;
            } else {
                let mut tx = pool.begin_write().await?;
                for &chunk in &chunks {
                    statement(chunk)?.execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
        });
        Ok(())
    }

    /// The latest `limit` rows of the request log, newest first.
    pub async fn recent_request_logs(&self, limit: u32) -> Result<Vec<RequestLogRow>> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, RequestLogRow>(concat!(
                "SELECT ",
                request_log_columns!(),
                " FROM request_log ORDER BY id DESC LIMIT $1"
            ))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// One row of the request log by request id.
    pub async fn request_log_by_request_id(&self, request_id: &str) -> Result<Option<RequestLogRow>> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as::<_, RequestLogRow>(concat!(
                "SELECT ",
                request_log_columns!(),
                " FROM request_log WHERE request_id = $1"
            ))
            .bind(request_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Number of rows in the request log.
    pub async fn request_log_count(&self) -> Result<u64> {
        let count = with_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM request_log").fetch_one(pool).await?
        });
        Ok(u64::try_from(count).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_take_power_of_two_row_counts_in_order_and_cover_every_record() {
        let mut shapes = std::collections::BTreeSet::new();
        for len in [0, 1, 2, 3, 7, 100, 500, 511, 512, 513, 1000, 1023, 1024, 1025, 1537, 3073, 4099] {
            let records: Vec<usize> = (0..len).collect();
            let chunks: Vec<&[usize]> = statement_chunks(&records).collect();
            let seen: Vec<usize> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(seen, records, "{len} records, in order, each once");
            for chunk in &chunks {
                assert!(chunk.len().is_power_of_two() && chunk.len() <= MAX_ROWS_PER_STATEMENT, "{len}");
                shapes.insert(chunk.len());
            }
            let biggest = chunks.iter().map(|c| c.len()).max().unwrap_or(0);
            assert!(chunks.len() <= len / MAX_ROWS_PER_STATEMENT + 10, "{len}: {} statements", chunks.len());
            assert!(chunks.windows(2).all(|w| w[0].len() >= w[1].len()), "{len}: largest first");
            assert!(len == 0 || biggest == MAX_ROWS_PER_STATEMENT.min(1 << len.ilog2()), "{len}");
        }
        assert!(shapes.len() <= 11, "{shapes:?}");
    }
}
