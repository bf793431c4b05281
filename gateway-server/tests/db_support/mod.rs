//! Test harness for the database tests: every test runs against a fresh SQLite file and a fresh
//! PostgreSQL database.
//!
//! PostgreSQL: `GATEWAY_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! names an admin connection; each test database `gw_test_<random hex>` is created there and
//! dropped `WITH (FORCE)` when the [`TestDb`] is dropped (also when the test panics). When the
//! server is unreachable the PostgreSQL half is skipped with a message, unless `CI=true`, where
//! it panics.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use gateway_core::dialect::Dialect;
use gateway_core::route::chain::{AttemptOutcome, ChainEntry, ChainStep, SkipReason};
use gateway_core::usage::{Outcome, TokenUsage, UsageRecord, UsdNanos};
use gateway_server::db::Database;
use rust_decimal::Decimal;
use sqlx::postgres::PgPoolOptions;

const DEFAULT_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Runs `$body` with `$pool` bound to the SQLite or the PostgreSQL pool of `$db`, for raw SQL
/// assertions that must run on both.
#[macro_export]
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        if let Some($pool) = $db.as_sqlite() {
            $body
        } else if let Some($pool) = $db.as_postgres() {
            $body
        } else {
            panic!("unknown backend")
        }
    };
}

/// A fresh, migrated database for one test.
pub struct TestDb {
    /// Connected and migrated.
    pub db: Database,
    /// URL to open more pools on the same database.
    pub url: String,
    /// `sqlite` or `postgres`.
    pub label: &'static str,
    /// Scratch directory (SQLite file, spill files), removed on drop.
    pub dir: tempfile::TempDir,
    pg_cleanup: Option<(String, String)>,
}

impl TestDb {
    /// A new pool on the same database.
    pub async fn reconnect(&self) -> Database {
        Database::connect(&self.url).await.expect("reconnect")
    }

    /// A path inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The SQLite database file, for byte-level checks.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        (self.label == "sqlite").then(|| self.path("gateway.db"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.pg_cleanup.take() else {
            return;
        };
        // Drop is synchronous and may run inside a runtime: use a thread with its own runtime.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for cleanup");
            rt.block_on(async {
                let admin = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&admin_url)
                    .await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&admin)
                    .await?;
                admin.close().await;
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("warning: could not drop a PostgreSQL test database");
        }
    }
}

/// A migrated SQLite database in a temporary directory.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("gateway.db").display());
    let db = Database::connect(&url).await.expect("connect sqlite");
    db.migrate().await.expect("migrate sqlite");
    TestDb { db, url, label: "sqlite", dir, pg_cleanup: None }
}

fn pg_admin_url() -> String {
    std::env::var("GATEWAY_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.to_owned())
}

/// A migrated, freshly created PostgreSQL database, or `None` (with a message) when no server
/// is reachable outside CI.
pub async fn postgres() -> Option<TestDb> {
    let admin_url = pg_admin_url();
    let admin = match PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&admin_url)
        .await
    {
        Ok(pool) => pool,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL is required in CI but unreachable at {admin_url}: {e}");
            }
            eprintln!("skipping the PostgreSQL half of this test: {admin_url} unreachable: {e}");
            return None;
        }
    };
    let name = format!("gw_test_{:016x}", rand::random::<u64>());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;

    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url.as_str(), String::new()),
    };
    let (server, _admin_db) = base.rsplit_once('/').expect("database URL has a path");
    let url = format!("{server}/{name}{query}");
    let dir = tempfile::tempdir().expect("tempdir");
    let test_db = TestDb {
        db: Database::connect(&url).await.expect("connect test database"),
        url,
        label: "postgres",
        dir,
        pg_cleanup: Some((admin_url, name)),
    };
    test_db.db.migrate().await.expect("migrate postgres");
    Some(test_db)
}

/// One fresh database per available backend: SQLite always, PostgreSQL when reachable.
pub async fn backends() -> Vec<TestDb> {
    let mut all = vec![sqlite().await];
    all.extend(postgres().await);
    all
}

/// An instant with microsecond precision (what PostgreSQL keeps).
pub fn instant(secs: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, micros * 1_000).single().expect("valid instant")
}

/// A record with every optional field set and distinctive values.
pub fn full_record(request_id: &str) -> UsageRecord {
    UsageRecord {
        request_id: request_id.to_owned(),
        created_at: instant(1_760_000_000, 123_456),
        user_id: Some(7),
        key_id: Some(11),
        provider_id: Some(3),
        provider_name: Some("anthropic-main".to_owned()),
        method: "POST".to_owned(),
        endpoint: "/v1/responses".to_owned(),
        dialect: Some(Dialect::OpenaiResponses),
        original_model: Some("claude-3-5-sonnet-latest".to_owned()),
        forwarded_model: Some("claude-sonnet-4-5".to_owned()),
        stream: true,
        status_code: 529,
        outcome: Outcome::ClientAbort,
        usage: TokenUsage {
            input_tokens: 1_099_511_627_776, // 2^40: beyond 32 bits
            output_tokens: 2,
            cache_creation_input_tokens: 300,
            cache_creation_5m_input_tokens: 100,
            cache_creation_1h_input_tokens: 200,
            cache_read_input_tokens: 4_000,
        },
        cost: Some(UsdNanos(9_007_199_254_740_993)), // 2^53 + 1: not exact as a double
        cost_multiplier: Some("1.250".parse::<Decimal>().expect("decimal")),
        duration_ms: 12_345,
        ttfb_ms: Some(321),
        ttft_ms: Some(456),
        session_id: Some("sess-ü-1".to_owned()),
        error: Some("client went away: \"broken pipe\"".to_owned()),
        user_agent: Some("claude-cli/1.0.0 (external, cli)".to_owned()),
        decision_chain: vec![
            ChainEntry {
                provider_id: 2,
                provider: "backup".to_owned(),
                step: ChainStep::Skipped { reason: SkipReason::CircuitOpen },
            },
            ChainEntry {
                provider_id: 3,
                provider: "anthropic-main".to_owned(),
                step: ChainStep::Attempt {
                    attempt: 1,
                    outcome: AttemptOutcome::Success,
                    status: Some(200),
                    latency_ms: 12,
                    error: None,
                },
            },
        ],
        translation_notes: vec!["top_k: not supported by openai-chat".to_owned()],
    }
}

/// A record with every optional field empty.
pub fn minimal_record(request_id: &str, created_at: DateTime<Utc>) -> UsageRecord {
    UsageRecord {
        request_id: request_id.to_owned(),
        created_at,
        user_id: None,
        key_id: None,
        provider_id: None,
        provider_name: None,
        method: "GET".to_owned(),
        endpoint: "/v1/models".to_owned(),
        dialect: None,
        original_model: None,
        forwarded_model: None,
        stream: false,
        status_code: 401,
        outcome: Outcome::Rejected,
        usage: TokenUsage::default(),
        cost: None,
        cost_multiplier: None,
        duration_ms: 0,
        ttfb_ms: None,
        ttft_ms: None,
        session_id: None,
        error: None,
        user_agent: None,
        decision_chain: Vec::new(),
        translation_notes: Vec::new(),
    }
}

/// `count` distinct records `<prefix>-<n>`.
pub fn records(prefix: &str, count: usize) -> Vec<UsageRecord> {
    (0..count)
        .map(|n| {
            let mut r = full_record(&format!("{prefix}-{n}"));
            r.usage.output_tokens = n as u64;
            r.cost = Some(UsdNanos(n as i64 * 1_000 + 1));
            r
        })
        .collect()
}

/// A comparable form of a record (UsageRecord has no `PartialEq`).
pub fn as_json(record: &UsageRecord) -> serde_json::Value {
    serde_json::to_value(record).expect("record serializes")
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
