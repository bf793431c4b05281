//! Persistence: one [`Database`] handle over SQLite or PostgreSQL, the same repository code for
//! both, and the background [`UsageWriter`].
//!
//! # One SQL text, two backends
//!
//! Every query is written once as a `&'static str` and run on both pool types by the private
//! `with_pool!` macro, which expands the same block once per backend (so each expansion is
//! statically typed against `sqlx::Sqlite` or `sqlx::Postgres`; no `sqlx::Any`, no `query!`
//! macros). The SQL sticks to the common dialect:
//!
//! - placeholders are `$1, $2, …` (sqlx binds SQLite's `$NNN` parameters by number, and a number
//!   may repeat); multi-row inserts use [`sqlx::QueryBuilder`], which writes each backend's own
//!   placeholders;
//! - `INSERT … ON CONFLICT (…) DO NOTHING | DO UPDATE SET x = excluded.x` and `RETURNING`;
//! - integers are `i64` (`BIGINT`/`INTEGER`) except `priority` and `status_code` (`i32`),
//!   booleans are `BOOLEAN`, timestamps are bound as `chrono::DateTime<Utc>` (TEXT on SQLite,
//!   `TIMESTAMPTZ` on PostgreSQL), decimals and JSON are TEXT.
//!
//! The schemas live in `migrations/sqlite` and `migrations/postgres` and are embedded in the
//! binary.

mod catalog;
mod spend;
mod usage;
pub mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use catalog::{ImportCounts, ImportSummary};
pub use usage::RequestLogRow;
pub use writer::{UsageWriter, WriterConfig, WriterStats};

/// WAL pages (4 KiB each) after which a commit of the request log's connection copies the WAL
/// back into the database file. SQLite's default of 1000 made a checkpoint, with its two
/// `fsync`s, every few hundred milliseconds under load, a fifth of the log's cost; at 8000 (a
/// WAL of up to 32 MiB) they come eight times less often and copy each hot page once.
const LOG_WRITER_WAL_AUTOCHECKPOINT: &str = "8000";

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// How long a caller waits for a pooled connection before the operation fails. Short, so that a
/// database outage surfaces as an error (and the usage writer spills) instead of a long hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits on a locked database before reporting `SQLITE_BUSY`.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pool size for SQLite files (WAL: many readers, one writer at a time).
const SQLITE_MAX_CONNECTIONS: u32 = 8;
/// Pool size for PostgreSQL.
const POSTGRES_MAX_CONNECTIONS: u32 = 10;

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported backend. Only the scheme is kept: URLs may carry passwords.
    #[error("unsupported database URL scheme {0:?}: expected sqlite:, postgres:// or postgresql://")]
    UnsupportedUrl(String),
    /// The database reported an error or could not be reached.
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Applying the migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be turned into the domain type (hand-edited or corrupt row).
    #[error("invalid data in {table}.{column}: {message}")]
    InvalidData {
        /// Table name.
        table: &'static str,
        /// Column name.
        column: &'static str,
        /// What is wrong with the value (never the value of a secret column).
        message: String,
    },
    /// Encoding a JSON column failed.
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// File-system error (creating the SQLite directory, the spill file).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl DbError {
    pub(crate) fn invalid(table: &'static str, column: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidData { table, column, message: message.into() }
    }
}

/// Result alias of this module.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// A connection pool to the gateway's database: SQLite (embedded default) or PostgreSQL.
///
/// Cheap to clone (the pools are reference-counted); all clones share one pool.
#[derive(Clone)]
pub struct Database {
    backend: Backend,
    /// SQLite files: a pool of one long-lived connection for [`Database::insert_usage_records`].
    /// A SQLite connection drops its page cache whenever another connection has written, and
    /// the main pool hands out its idle connections in turn; so every log batch found a cold
    /// cache and read the pages of the table and its indexes again. On one connection, the
    /// pages a batch touches are those the previous batch left in its cache. Nor does the log
    /// wait for a connection while the main pool is busy with slow reads.
    log_writer: Option<Backend>,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL (which may hold a password) is deliberately not kept or printed.
        f.debug_struct("Database").field("backend", &self.backend_name()).finish()
    }
}

/// Runs the same block once per backend: `with_pool!(db, |pool| body)` binds `pool` to
/// `&SqlitePool` or `&PgPool` and evaluates `body` (which may `.await` and use `?`).
macro_rules! with_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        $crate::db::with_pool!(backend: &$db.backend, |$pool| $body)
    };
    (backend: $backend:expr, |$pool:ident| $body:expr) => {
        match $backend {
            $crate::db::Backend::Sqlite($pool) => $body,
            $crate::db::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Backend-specific bits the shared query code needs, implemented for both pool types.
pub(crate) trait PoolExt {
    /// The sqlx database of the pool.
    type Db: sqlx::Database;

    /// Begins a transaction that will write. On SQLite this is `BEGIN IMMEDIATE`, which takes
    /// the write lock up front: a deferred transaction that reads first and then writes can fail
    /// with `SQLITE_BUSY` when another connection wrote in between.
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send;

    /// Whether this is SQLite (statement texts that differ by backend are cached per backend).
    const SQLITE: bool;

    /// Appends the `n`th (1-based) bind parameter in this backend's syntax.
    fn push_placeholder(sql: &mut String, n: usize);
}

impl PoolExt for SqlitePool {
    type Db = sqlx::Sqlite;
    const SQLITE: bool = true;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }

    /// Anonymous `?`: bound in order, the driver has no parameter name to look up and parse.
    fn push_placeholder(sql: &mut String, _n: usize) {
        sql.push('?');
    }
}

impl PoolExt for PgPool {
    type Db = sqlx::Postgres;
    const SQLITE: bool = false;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }

    fn push_placeholder(sql: &mut String, n: usize) {
        use std::fmt::Write;
        let _ = write!(sql, "${n}");
    }
}

impl Database {
    /// Connects to the database named by `url`:
    ///
    /// - `sqlite:PATH`, `sqlite://PATH` (e.g. `sqlite://./data/gateway.db?mode=rwc`): a file in
    ///   WAL mode with foreign keys on. Without a `mode=` parameter the file is created if
    ///   missing; the parent directory is created in any case.
    /// - `sqlite::memory:` / `sqlite://:memory:`: a private in-memory database on a pool of one
    ///   connection (several connections would each see their own empty database).
    /// - `postgres://…` / `postgresql://…`.
    ///
    /// Connects eagerly, so an unreachable server is reported here.
    pub async fn connect(url: &str) -> Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default().to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Self::connect_sqlite(url).await,
            "postgres" | "postgresql" => {
                let pool = PgPoolOptions::new()
                    .max_connections(POSTGRES_MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect(url)
                    .await?;
                Ok(Self::from_postgres_pool(pool))
            }
            _ => Err(DbError::UnsupportedUrl(scheme)),
        }
    }

    async fn connect_sqlite(url: &str) -> Result<Self> {
        let params = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let in_memory = url.contains(":memory:") || params.split('&').any(|p| p == "mode=memory");
        let explicit_mode = params.split('&').any(|p| p.starts_with("mode="));

        let mut options =
            SqliteConnectOptions::from_str(url)?.foreign_keys(true).busy_timeout(SQLITE_BUSY_TIMEOUT);
        if !explicit_mode {
            options = options.create_if_missing(true);
        }

        let pool = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await?
        } else {
            if let Some(parent) = options.get_filename().parent()
                && !parent.as_os_str().is_empty()
            {
                tokio::fs::create_dir_all(parent).await?;
            }
            let options = options.journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal);
            let pool = SqlitePoolOptions::new()
                .max_connections(SQLITE_MAX_CONNECTIONS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options.clone())
                .await?;
            // Connected on first use (after the migrations), and kept: its page cache is the point.
            let log_writer = SqlitePoolOptions::new()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(options.pragma("wal_autocheckpoint", LOG_WRITER_WAL_AUTOCHECKPOINT));
            return Ok(Self {
                backend: Backend::Sqlite(pool),
                log_writer: Some(Backend::Sqlite(log_writer)),
            });
        };
        Ok(Self::from_sqlite_pool(pool))
    }

    /// Wraps an existing SQLite pool (configured by the caller); the request log is written
    /// through it too.
    pub fn from_sqlite_pool(pool: SqlitePool) -> Self {
        Self { backend: Backend::Sqlite(pool), log_writer: None }
    }

    /// Wraps an existing PostgreSQL pool.
    pub fn from_postgres_pool(pool: PgPool) -> Self {
        Self { backend: Backend::Postgres(pool), log_writer: None }
    }

    /// The pool [`Database::insert_usage_records`] writes through.
    fn log_backend(&self) -> &Backend {
        self.log_writer.as_ref().unwrap_or(&self.backend)
    }

    /// The SQLite pool, when this is a SQLite database.
    pub fn as_sqlite(&self) -> Option<&SqlitePool> {
        match &self.backend {
            Backend::Sqlite(pool) => Some(pool),
            Backend::Postgres(_) => None,
        }
    }

    /// The PostgreSQL pool, when this is a PostgreSQL database.
    pub fn as_postgres(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Postgres(pool) => Some(pool),
            Backend::Sqlite(_) => None,
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Applies the embedded migrations of this backend; already applied ones are skipped, so
    /// this is safe at every start (on PostgreSQL replicas serialize on an advisory lock).
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await?,
            Backend::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await?,
        }
        Ok(())
    }

    /// Round-trips a trivial query; for readiness probes.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes the pool: waits for checked-out connections to return, then closes them all.
    /// Every later operation on any clone fails with [`sqlx::Error::PoolClosed`].
    pub async fn close(&self) {
        if let Some(log_writer) = &self.log_writer {
            with_pool!(backend: log_writer, |pool| pool.close().await);
        }
        with_pool!(self, |pool| pool.close().await)
    }

    /// Whether [`Database::close`] was called.
    pub fn is_closed(&self) -> bool {
        with_pool!(self, |pool| pool.is_closed())
    }

    /// A value from the `settings` table.
    pub async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        let value = with_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await?
        });
        Ok(value)
    }

    /// Inserts or replaces a value in the `settings` table.
    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let now = chrono::Utc::now();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                 updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(value)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Removes a value from the `settings` table; `true` when it existed.
    pub async fn delete_setting(&self, key: &str) -> Result<bool> {
        let result = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM settings WHERE key = $1").bind(key).execute(pool).await?.rows_affected()
        });
        Ok(result > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_request_log_connection_of_a_sqlite_file_checkpoints_less_often() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::connect(&format!("sqlite://{}", dir.path().join("gw.db").display()))
            .await
            .expect("connect");
        db.migrate().await.expect("migrate");
        let pragma = "PRAGMA wal_autocheckpoint";
        let Backend::Sqlite(log) = db.log_backend() else { panic!("SQLite log writer") };
        let log_pages: i64 = sqlx::query_scalar(pragma).fetch_one(log).await.expect("log writer");
        assert_eq!(log_pages.to_string(), LOG_WRITER_WAL_AUTOCHECKPOINT);
        let Some(main) = db.as_sqlite() else { panic!("SQLite pool") };
        let main_pages: i64 = sqlx::query_scalar(pragma).fetch_one(main).await.expect("main pool");
        assert_eq!(main_pages, 1000, "other connections keep SQLite's default");
        db.close().await;
    }
}
