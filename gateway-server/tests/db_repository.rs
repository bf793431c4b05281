//! Repository tests, each run against SQLite and PostgreSQL (see `db_support`).

mod db_support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use db_support::{as_json, backends, full_record, instant, minimal_record, records};
use gateway_core::config::{ConfigFile, Id, ProviderType, hash_api_key, redirect_model};
use gateway_core::dialect::Dialect;
use gateway_core::usage::{Outcome, UsdNanos};
use gateway_server::db::{Database, DbError, ImportCounts, ImportSummary};
use rust_decimal::Decimal;

const CONFIG: &str = r#"
[[providers]]
name = "anthropic-main"
type = "claude"
base_url = "https://api.anthropic.com"
api_key = "sk-ant-upstream-secret-1"
weight = 3
priority = 1
groups = ["default", "team-a"]
cost_multiplier = "0.30"
model_redirects = [
  { match = "exact", from = "claude-3-5-sonnet-latest", to = "claude-sonnet-4-5" },
  { match = "regex", from = "^claude-(3|4)-opus", to = "claude-opus-4-1" },
]

[[providers]]
name = "openai"
type = "openai-compatible"
base_url = "https://api.openai.com/v1"
api_key = "sk-openai-upstream-2"
enabled = false

[[users]]
name = "alice"
groups = ["team-a"]
expires_at = "2030-01-02T03:04:05.123456Z"
[[users.keys]]
name = "laptop"
key = "sk-alice-plain-key-0001"
[[users.keys]]
name = "ci"
key = "sk-alice-plain-key-0002"
enabled = false
expires_at = "2031-01-01T00:00:00Z"

[[users]]
name = "bob"
[[users.keys]]
name = "main"
key = "sk-bob-plain-key-0003"

[[prices]]
model = "claude-sonnet-4-5"
input_per_mtok = "3"
output_per_mtok = "15"
cache_write_5m_per_mtok = "3.75"
cache_write_1h_per_mtok = "6"
cache_read_per_mtok = "0.30"

[[prices]]
model = "gpt-4.1"
input_per_mtok = "2.00"
output_per_mtok = "8"
"#;

/// Changes most values of `CONFIG` for some rows and leaves out others entirely.
const CONFIG_CHANGED: &str = r#"
[[providers]]
name = "anthropic-main"
type = "claude"
base_url = "https://proxy.example.com/v1"
api_key = "sk-ant-upstream-secret-rotated"
weight = 5
priority = 2
groups = ["team-b"]
cost_multiplier = "1.25"
model_redirects = [{ match = "prefix", from = "claude-", to = "claude-haiku-4-5" }]
enabled = false

[[users]]
name = "alice"
groups = ["team-a", "team-b"]
enabled = false
[[users.keys]]
name = "laptop"
key = "sk-alice-rotated-key-0009"
expires_at = "2032-05-06T07:08:09Z"
[[users.keys]]
name = "ci"
key = "sk-alice-plain-key-0002"
enabled = false
expires_at = "2031-01-01T00:00:00Z"
[[users.keys]]
name = "tablet"
key = "sk-alice-plain-key-0004"

[[prices]]
model = "claude-sonnet-4-5"
input_per_mtok = "3"
output_per_mtok = "15"
cache_write_5m_per_mtok = "3.75"
cache_write_1h_per_mtok = "6"
cache_read_per_mtok = "0.3"
"#;

const PLAIN_KEYS: [&str; 3] = ["sk-alice-plain-key-0001", "sk-alice-plain-key-0002", "sk-bob-plain-key-0003"];

fn config(text: &str) -> ConfigFile {
    ConfigFile::from_toml_str_with_env(text, |_| None).expect("test config parses")
}

fn counts(created: u64, updated: u64, unchanged: u64) -> ImportCounts {
    ImportCounts { created, updated, unchanged }
}

fn dec(text: &str) -> Decimal {
    text.parse().expect("decimal")
}

/// Every id by a readable name: `provider:<name>`, `user:<name>`, `key:<user>/<name>`.
async fn ids(db: &Database) -> BTreeMap<String, Id> {
    let mut out = BTreeMap::new();
    on_pool!(db, |pool| {
        for (kind, sql) in [
            ("provider", "SELECT name, id FROM providers"),
            ("user", "SELECT name, id FROM users"),
            ("key", "SELECT u.name || '/' || k.name, k.id FROM api_keys k JOIN users u ON u.id = k.user_id"),
        ] {
            let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(pool).await.expect("select ids");
            for (name, id) in rows {
                out.insert(format!("{kind}:{name}"), id);
            }
        }
    });
    out
}

async fn count_rows(db: &Database, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    on_pool!(db, |pool| {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.clone())).fetch_one(pool).await.expect("count")
    })
}

async fn updated_at(db: &Database) -> Vec<DateTime<Utc>> {
    on_pool!(db, |pool| {
        sqlx::query_scalar::<_, DateTime<Utc>>(
            "SELECT updated_at FROM providers UNION ALL SELECT updated_at FROM users \
             UNION ALL SELECT updated_at FROM api_keys UNION ALL SELECT updated_at FROM model_prices",
        )
        .fetch_all(pool)
        .await
        .expect("updated_at")
    })
}

#[tokio::test]
async fn migrations_are_idempotent_and_create_the_schema() {
    for t in backends().await {
        // `backends()` migrated once already; twice more must be no-ops.
        t.db.migrate().await.expect("second migrate");
        t.reconnect().await.migrate().await.expect("migrate from another pool");
        t.db.ping().await.expect("ping");
        for table in ["providers", "users", "api_keys", "model_prices", "request_log", "settings"] {
            assert_eq!(count_rows(&t.db, table).await, 0, "{}: {table}", t.label);
        }
        let applied = on_pool!(t.db, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations")
                .fetch_one(pool)
                .await
                .expect("migrations table")
        });
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/sqlite"))
            .expect("migrations folder")
            .count() as i64;
        assert_eq!(applied, files, "{}: every migration applied once", t.label);
        assert_eq!(t.db.backend_name(), t.label);
    }
}

#[tokio::test]
async fn import_twice_changes_nothing() {
    let file = config(CONFIG);
    for t in backends().await {
        let first = t.db.import_config(&file).await.expect("first import");
        assert_eq!(
            first,
            ImportSummary {
                providers: counts(2, 0, 0),
                users: counts(2, 0, 0),
                keys: counts(3, 0, 0),
                prices: counts(2, 0, 0),
            },
            "{}",
            t.label
        );
        let ids_before = ids(&t.db).await;
        assert_eq!(ids_before.len(), 7, "{}: {ids_before:?}", t.label);
        let stamps_before = updated_at(&t.db).await;

        let second = t.db.import_config(&file).await.expect("second import");
        assert_eq!(
            second,
            ImportSummary {
                providers: counts(0, 0, 2),
                users: counts(0, 0, 2),
                keys: counts(0, 0, 3),
                prices: counts(0, 0, 2),
            },
            "{}",
            t.label
        );
        assert_eq!(ids(&t.db).await, ids_before, "{}: ids are stable", t.label);
        assert_eq!(updated_at(&t.db).await, stamps_before, "{}: rows not rewritten", t.label);
        for (table, n) in [("providers", 2), ("users", 2), ("api_keys", 3), ("model_prices", 2)] {
            assert_eq!(count_rows(&t.db, table).await, n, "{}: {table}", t.label);
        }
    }
}

#[tokio::test]
async fn reimport_updates_changed_rows_and_leaves_others_alone() {
    for t in backends().await {
        t.db.import_config(&config(CONFIG)).await.expect("import");
        let ids_before = ids(&t.db).await;

        let summary = t.db.import_config(&config(CONFIG_CHANGED)).await.expect("re-import");
        assert_eq!(
            summary,
            ImportSummary {
                providers: counts(0, 1, 0),
                users: counts(0, 1, 0),
                keys: counts(1, 1, 1),
                // "0.3" vs stored "0.30": the text differs, so the row is rewritten.
                prices: counts(0, 1, 0),
            },
            "{}",
            t.label
        );
        let ids_after = ids(&t.db).await;
        for (name, id) in &ids_before {
            assert_eq!(ids_after.get(name), Some(id), "{}: id of {name} kept", t.label);
        }
        assert!(ids_after.contains_key("key:alice/tablet"), "{}", t.label);

        let catalog = t.db.load_catalog().await.expect("catalog");
        let anthropic = &catalog.providers()[0];
        assert_eq!(anthropic.name, "anthropic-main");
        assert_eq!(anthropic.base_url, "https://proxy.example.com/v1");
        assert_eq!(anthropic.api_key, "sk-ant-upstream-secret-rotated");
        assert_eq!((anthropic.weight, anthropic.priority), (5, 2));
        assert_eq!(anthropic.groups, vec!["team-b".to_owned()]);
        assert_eq!(anthropic.cost_multiplier.to_string(), "1.25");
        assert!(!anthropic.enabled);
        assert_eq!(redirect_model(&anthropic.model_redirects, "claude-x"), Some("claude-haiku-4-5"));
        assert_eq!(
            redirect_model(&anthropic.model_redirects, "claude-3-5-sonnet-latest"),
            Some("claude-haiku-4-5"),
            "{}: old rules replaced",
            t.label
        );

        // Not in the second file: left untouched.
        let openai = &catalog.providers()[1];
        assert_eq!(openai.name, "openai");
        assert_eq!(openai.api_key, "sk-openai-upstream-2");
        let bob_key = catalog.key_by_hash(&hash_api_key("sk-bob-plain-key-0003")).expect("bob");
        assert!(catalog.user(bob_key.user_id).is_some_and(|u| u.name == "bob"));
        let gpt = catalog.price("gpt-4.1").expect("gpt-4.1 price kept");
        assert_eq!(gpt.input_per_mtok.to_string(), "2.00");

        let alice_id = ids_after["user:alice"];
        let alice = catalog.user(alice_id).expect("alice");
        assert!(!alice.enabled);
        assert_eq!(alice.groups, vec!["team-a".to_owned(), "team-b".to_owned()]);
        assert_eq!(alice.expires_at, None, "{}: expiry removed", t.label);

        // The rotated key replaced the old hash under the same key id.
        assert!(catalog.key_by_hash(&hash_api_key("sk-alice-plain-key-0001")).is_none());
        let laptop = catalog.key_by_hash(&hash_api_key("sk-alice-rotated-key-0009")).expect("rotated");
        assert_eq!(laptop.id, ids_before["key:alice/laptop"]);
        assert_eq!(laptop.expires_at, Some(instant(1_967_440_089, 0)));
        assert!(laptop.enabled);

        let sonnet = catalog.price("claude-sonnet-4-5").expect("price");
        assert_eq!(sonnet.cache_read_per_mtok.map(|d| d.to_string()).as_deref(), Some("0.3"));
    }
}

#[tokio::test]
async fn keys_are_stored_only_as_hashes() {
    for t in backends().await {
        t.db.import_config(&config(CONFIG)).await.expect("import");

        let rows: Vec<(String, String, String)> = on_pool!(t.db, |pool| {
            sqlx::query_as("SELECT name, key_hash, key_prefix FROM api_keys ORDER BY id")
                .fetch_all(pool)
                .await
                .expect("keys")
        });
        let expected: Vec<(String, String, String)> = [
            ("laptop", PLAIN_KEYS[0], "sk-ali…"),
            ("ci", PLAIN_KEYS[1], "sk-ali…"),
            ("main", PLAIN_KEYS[2], "sk-bob…"),
        ]
        .into_iter()
        .map(|(name, plain, prefix)| (name.to_owned(), hash_api_key(plain), prefix.to_owned()))
        .collect();
        assert_eq!(rows, expected, "{}", t.label);

        // The plain keys appear nowhere in the stored data.
        let haystack: Vec<u8> = if let Some(file) = t.sqlite_file() {
            // Database file plus write-ahead log: every byte SQLite persisted.
            let mut bytes = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                let mut name = file.clone().into_os_string();
                name.push(suffix);
                if let Ok(content) = std::fs::read(&name) {
                    bytes.extend(content);
                }
            }
            assert!(!bytes.is_empty());
            bytes
        } else {
            let pool = t.db.as_postgres().expect("postgres");
            let mut text = String::new();
            for table in ["providers", "users", "api_keys", "model_prices", "settings"] {
                let dump: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT string_agg(t::text, E'\\n') FROM {table} t"
                )))
                .fetch_one(pool)
                .await
                .expect("dump");
                text.push_str(&dump.unwrap_or_default());
            }
            assert!(text.contains(&hash_api_key(PLAIN_KEYS[0])), "dump covers api_keys");
            text.into_bytes()
        };
        for plain in PLAIN_KEYS {
            let found = haystack.windows(plain.len()).any(|w| w == plain.as_bytes());
            assert!(!found, "{}: plain key {plain} is stored", t.label);
        }
    }
}

#[tokio::test]
async fn catalog_round_trips_every_field() {
    for t in backends().await {
        t.db.import_config(&config(CONFIG)).await.expect("import");
        let ids = ids(&t.db).await;
        let catalog = t.db.load_catalog().await.expect("load");

        let providers = catalog.providers();
        assert_eq!(providers.len(), 2);
        assert!(providers[0].id < providers[1].id, "{}: ordered by id", t.label);
        let p = &providers[0];
        assert_eq!(p.id, ids["provider:anthropic-main"]);
        assert_eq!(p.name, "anthropic-main");
        assert_eq!(p.provider_type, ProviderType::Claude);
        assert_eq!(p.base_url, "https://api.anthropic.com");
        assert_eq!(p.api_key, "sk-ant-upstream-secret-1");
        assert_eq!((p.weight, p.priority), (3, 1));
        assert_eq!(p.groups, vec!["default".to_owned(), "team-a".to_owned()]);
        assert_eq!(p.cost_multiplier, dec("0.30"));
        assert_eq!(p.cost_multiplier.to_string(), "0.30", "{}: scale kept", t.label);
        assert!(p.enabled);
        assert_eq!(p.model_redirects.len(), 2);
        assert_eq!(redirect_model(&p.model_redirects, "claude-3-5-sonnet-latest"), Some("claude-sonnet-4-5"));
        // The regex rule only matches when it was compiled on load.
        assert_eq!(redirect_model(&p.model_redirects, "claude-4-opus-x"), Some("claude-opus-4-1"));
        assert_eq!(redirect_model(&p.model_redirects, "claude-5-opus"), None);

        let o = &providers[1];
        assert_eq!(o.provider_type, ProviderType::OpenaiCompatible);
        assert_eq!(o.groups, vec!["default".to_owned()]);
        assert_eq!(o.cost_multiplier, Decimal::ONE);
        assert_eq!((o.weight, o.priority), (1, 0));
        assert!(o.model_redirects.is_empty());
        assert!(!o.enabled);

        let alice = catalog.user(ids["user:alice"]).expect("alice");
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, vec!["team-a".to_owned()]);
        assert!(alice.enabled);
        assert_eq!(alice.expires_at, Some(instant(1_893_553_445, 123_456)));
        let bob = catalog.user(ids["user:bob"]).expect("bob");
        assert_eq!(bob.groups, vec!["default".to_owned()]);
        assert_eq!(bob.expires_at, None);

        let laptop = catalog.key_by_hash(&hash_api_key(PLAIN_KEYS[0])).expect("laptop");
        assert_eq!((laptop.id, laptop.user_id), (ids["key:alice/laptop"], alice.id));
        assert_eq!(laptop.name, "laptop");
        assert!(laptop.enabled);
        assert_eq!(laptop.expires_at, None);
        let ci = catalog.key_by_hash(&hash_api_key(PLAIN_KEYS[1])).expect("ci");
        assert!(!ci.enabled);
        assert_eq!(ci.expires_at, Some(instant(1_924_992_000, 0)));
        let main = catalog.key_by_hash(&hash_api_key(PLAIN_KEYS[2])).expect("main");
        assert_eq!(main.user_id, bob.id);

        let sonnet = catalog.price("claude-sonnet-4-5").expect("sonnet");
        assert_eq!(sonnet.input_per_mtok, dec("3"));
        assert_eq!(sonnet.output_per_mtok, dec("15"));
        assert_eq!(sonnet.cache_write_5m_per_mtok, Some(dec("3.75")));
        assert_eq!(sonnet.cache_write_1h_per_mtok, Some(dec("6")));
        assert_eq!(sonnet.cache_read_per_mtok.map(|d| d.to_string()).as_deref(), Some("0.30"));
        let gpt = catalog.price("gpt-4.1").expect("gpt");
        assert_eq!(gpt.input_per_mtok.to_string(), "2.00");
        assert_eq!(gpt.cache_write_5m_per_mtok, None);
        assert_eq!(gpt.cache_write_1h_per_mtok, None);
        assert_eq!(gpt.cache_read_per_mtok, None);

        // A second pool sees the same thing (nothing cached in the handle).
        let again = t.reconnect().await.load_catalog().await.expect("load again");
        assert_eq!(again.providers().len(), 2);
    }
}

#[tokio::test]
async fn deleting_a_user_deletes_its_keys() {
    for t in backends().await {
        t.db.import_config(&config(CONFIG)).await.expect("import");
        on_pool!(t.db, |pool| {
            sqlx::query("DELETE FROM users WHERE name = 'alice'").execute(pool).await.expect("delete");
        });
        assert_eq!(count_rows(&t.db, "api_keys").await, 1, "{}: cascade", t.label);
    }
}

#[tokio::test]
async fn usage_records_round_trip_exactly() {
    for t in backends().await {
        let full = full_record("req-full");
        let minimal = minimal_record("req-min", instant(1_760_000_001, 0));
        t.db.insert_usage_records(&[full.clone(), minimal.clone()]).await.expect("insert");

        let row = t.db.request_log_by_request_id("req-full").await.expect("query").expect("row");
        assert_eq!(row.cost_nanousd, Some(9_007_199_254_740_993), "{}: exact cost", t.label);
        assert_eq!(row.cost_multiplier.as_deref(), Some("1.250"));
        assert_eq!(row.input_tokens, 1_099_511_627_776);
        assert_eq!(row.outcome, "client_abort");
        assert_eq!(row.dialect.as_deref(), Some("openai-responses"));
        assert_eq!(row.status_code, 529);
        assert!(row.stream);
        assert_eq!(row.created_at, full.created_at);
        assert_eq!(as_json(&row.into_usage_record().expect("convert")), as_json(&full), "{}", t.label);

        let row = t.db.request_log_by_request_id("req-min").await.expect("query").expect("row");
        assert_eq!(row.cost_nanousd, None);
        assert_eq!(row.cost_multiplier, None);
        assert_eq!(as_json(&row.into_usage_record().expect("convert")), as_json(&minimal));

        // Newest first, limited.
        let recent = t.db.recent_request_logs(10).await.expect("recent");
        let order: Vec<&str> = recent.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(order, ["req-min", "req-full"], "{}", t.label);
        assert_eq!(t.db.recent_request_logs(1).await.expect("recent").len(), 1);
    }
}

/// The writer binds a string again while rows repeat it; rows that change, change back or lack
/// a value must still be stored as they are.
#[tokio::test]
async fn rows_that_repeat_change_and_omit_values_round_trip_in_one_batch() {
    for t in backends().await {
        let a = full_record("req-a1");
        let mut b = full_record("req-b1");
        b.provider_name = Some("openai-main".to_owned());
        b.method = "GET".to_owned();
        b.endpoint = "/v1/messages".to_owned();
        b.dialect = Some(Dialect::Anthropic);
        b.original_model = Some("gpt-5".to_owned());
        b.forwarded_model = None;
        b.outcome = Outcome::Success;
        b.user_agent = None;
        b.cost_multiplier = Some("0.5".parse::<Decimal>().expect("decimal"));
        let mut a2 = a.clone();
        a2.request_id = "req-a2".to_owned();
        let mut b2 = b.clone();
        b2.request_id = "req-b2".to_owned();
        let minimal = minimal_record("req-min", instant(1_760_000_001, 0));
        let batch = [a, b, a2.clone(), a2.clone(), minimal, b2]
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                r.request_id = format!("{}-{i}", r.request_id);
                r
            })
            .collect::<Vec<_>>();
        t.db.insert_usage_records(&batch).await.expect("insert");
        for record in &batch {
            let row = t.db.request_log_by_request_id(&record.request_id).await.expect("query").expect("row");
            assert_eq!(
                as_json(&row.into_usage_record().expect("convert")),
                as_json(record),
                "{}: {}",
                t.label,
                record.request_id
            );
        }
    }
}

#[tokio::test]
async fn duplicate_request_ids_are_ignored() {
    for t in backends().await {
        let original = full_record("req-dup");
        t.db.insert_usage_records(std::slice::from_ref(&original)).await.expect("insert");

        let mut changed = full_record("req-dup");
        changed.status_code = 200;
        changed.cost = Some(UsdNanos(1));
        let fresh = minimal_record("req-new", instant(1_760_000_002, 0));
        // A retried batch: one already stored (with other content), one new.
        t.db.insert_usage_records(&[changed.clone(), fresh]).await.expect("retry is not an error");
        t.db.insert_usage_records(&[changed]).await.expect("again");

        assert_eq!(t.db.request_log_count().await.expect("count"), 2, "{}", t.label);
        let row = t.db.request_log_by_request_id("req-dup").await.expect("query").expect("row");
        assert_eq!(as_json(&row.into_usage_record().expect("convert")), as_json(&original));
    }
}

#[tokio::test]
async fn large_batches_are_split_into_statements_within_parameter_limits() {
    for t in backends().await {
        // 2,500 records × 28 columns = 70,000 parameters: over both backends' per-statement limit.
        let batch = records("bulk", 2_500);
        t.db.insert_usage_records(&batch).await.expect("insert");
        assert_eq!(t.db.request_log_count().await.expect("count"), 2_500, "{}", t.label);
        let last = t.db.recent_request_logs(1).await.expect("recent");
        assert_eq!(last[0].request_id, "bulk-2499");
        assert_eq!(last[0].output_tokens, 2_499);
        t.db.insert_usage_records(&[]).await.expect("empty batch is fine");
    }
}

/// Every logged request writes every index of `request_log`: it keeps only those its queries
/// use (the unique request id, and subject + time for the spend windows).
#[tokio::test]
async fn request_log_has_only_the_indexes_its_queries_use() {
    for t in backends().await {
        let mut names: Vec<String> = on_pool!(t.db, |pool| {
            sqlx::query_scalar(if t.label == "sqlite" {
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'request_log'"
            } else {
                "SELECT indexname::TEXT FROM pg_indexes WHERE tablename = 'request_log'"
            })
            .fetch_all(pool)
            .await
            .expect("indexes")
        });
        names.sort();
        let expected: &[&str] = if t.label == "sqlite" {
            &[
                "request_log_key_created",
                "request_log_provider_created",
                "request_log_user_created",
                "sqlite_autoindex_request_log_1",
            ]
        } else {
            &[
                "request_log_key_created",
                "request_log_pkey",
                "request_log_provider_created",
                "request_log_request_id_key",
                "request_log_user_created",
            ]
        };
        assert_eq!(names, expected, "{}", t.label);
    }
}

#[tokio::test]
async fn settings_round_trip() {
    for t in backends().await {
        assert_eq!(t.db.get_setting("admin_token_hash").await.expect("get"), None);
        t.db.set_setting("admin_token_hash", "abc").await.expect("set");
        assert_eq!(t.db.get_setting("admin_token_hash").await.expect("get").as_deref(), Some("abc"));
        t.db.set_setting("admin_token_hash", "def").await.expect("overwrite");
        assert_eq!(t.db.get_setting("admin_token_hash").await.expect("get").as_deref(), Some("def"));
        assert_eq!(count_rows(&t.db, "settings").await, 1);
        assert!(t.db.delete_setting("admin_token_hash").await.expect("delete"));
        assert!(!t.db.delete_setting("admin_token_hash").await.expect("delete again"));
        assert_eq!(t.db.get_setting("admin_token_hash").await.expect("get"), None, "{}", t.label);
    }
}

#[tokio::test]
async fn sqlite_urls_create_directories_and_use_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("nested/deeper/gateway.db");
    for url in [
        format!("sqlite://{}?mode=rwc", file.display()),
        // Without `mode=` the file is created as well (here: already exists).
        format!("sqlite:{}", file.display()),
    ] {
        let db = Database::connect(&url).await.expect("connect");
        db.migrate().await.expect("migrate");
        let pool = db.as_sqlite().expect("sqlite");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await.expect("pragma");
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(pool).await.expect("pragma");
        assert_eq!(fk, 1);
        db.close().await;
        assert!(db.is_closed());
        assert!(matches!(db.ping().await, Err(DbError::Sqlx(sqlx::Error::PoolClosed))));
    }
    assert!(file.exists());
}

/// On a SQLite file the request log is written through a connection of its own: a busy main
/// pool does not hold it up, and closing the database closes it too.
#[tokio::test]
async fn sqlite_log_writes_do_not_wait_for_the_main_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::connect(&format!("sqlite:{}", dir.path().join("gateway.db").display()))
        .await
        .expect("connect");
    db.migrate().await.expect("migrate");
    let pool = db.as_sqlite().expect("sqlite");
    let mut held = Vec::new();
    for _ in 0..pool.options().get_max_connections() {
        held.push(pool.acquire().await.expect("acquire"));
    }
    tokio::time::timeout(Duration::from_secs(2), db.insert_usage_records(&records("busy", 3)))
        .await
        .expect("the log does not wait for the main pool")
        .expect("insert");
    drop(held);
    assert_eq!(db.request_log_count().await.expect("count"), 3);

    db.close().await;
    let after_close = db.insert_usage_records(&records("closed", 1)).await;
    assert!(matches!(after_close, Err(DbError::Sqlx(sqlx::Error::PoolClosed))), "{after_close:?}");
}

#[tokio::test]
async fn sqlite_in_memory_keeps_its_data_on_one_connection() {
    for url in ["sqlite::memory:", "sqlite://:memory:"] {
        let db = Database::connect(url).await.expect("connect");
        db.migrate().await.expect("migrate");
        db.import_config(&config(CONFIG)).await.expect("import");
        // Let an idle period pass: the single connection must stay alive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let catalog = db.load_catalog().await.expect("load");
        assert_eq!(catalog.providers().len(), 2, "{url}");
        db.insert_usage_records(&records("mem", 3)).await.expect("insert");
        assert_eq!(db.request_log_count().await.expect("count"), 3);
    }
}

#[tokio::test]
async fn unsupported_urls_are_rejected_without_echoing_secrets() {
    let err = Database::connect("mysql://root:hunter2@localhost/db").await.expect_err("mysql");
    assert!(matches!(err, DbError::UnsupportedUrl(ref s) if s == "mysql"), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// Migration 0006 rebuilds SQLite's `request_log` without `AUTOINCREMENT`: the rows logged
/// before it keep their ids and values, its indexes come back, and the next row follows the
/// largest id.
#[tokio::test]
async fn sqlite_request_log_rebuild_keeps_rows_and_ids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let before_rebuild = {
        let db = Database::connect(&url).await.expect("connect");
        let Some(pool) = db.as_sqlite() else { panic!("a SQLite database") };
        sqlx::migrate!("../migrations/sqlite").run_to(5, pool).await.expect("migrations up to 0005");
        let schema: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'request_log'")
            .fetch_one(pool)
            .await
            .expect("schema");
        assert!(schema.contains("AUTOINCREMENT"), "{schema}");
        db.insert_usage_records(&records("old", 3)).await.expect("insert");
        // A gap, as deleted rows leave: the next id must follow the largest.
        sqlx::query("UPDATE request_log SET id = 41 WHERE request_id = 'old-2'")
            .execute(pool)
            .await
            .expect("move an id");
        let rows = db.recent_request_logs(10).await.expect("rows");
        db.close().await;
        rows
    };
    assert_eq!(before_rebuild.iter().map(|r| r.id).collect::<Vec<_>>(), [41, 2, 1]);

    let db = Database::connect(&url).await.expect("reconnect");
    db.migrate().await.expect("migrate through 0006");
    let Some(pool) = db.as_sqlite() else { panic!("a SQLite database") };
    let schema: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'request_log'")
        .fetch_one(pool)
        .await
        .expect("schema");
    assert!(!schema.contains("AUTOINCREMENT"), "{schema}");
    let mut indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'request_log' \
         AND name NOT LIKE 'sqlite_autoindex%'",
    )
    .fetch_all(pool)
    .await
    .expect("indexes");
    indexes.sort();
    assert_eq!(
        indexes,
        ["request_log_key_created", "request_log_provider_created", "request_log_user_created"]
    );
    assert_eq!(db.recent_request_logs(10).await.expect("rows"), before_rebuild, "rows and ids kept");

    db.insert_usage_records(&records("new", 1)).await.expect("insert after the rebuild");
    let newest = db.request_log_by_request_id("new-0").await.expect("query").expect("new row");
    assert_eq!(newest.id, 42);
    let duplicate = db.insert_usage_records(&records("old", 1)).await;
    assert!(duplicate.is_ok(), "request_id stays unique and a replay is skipped: {duplicate:?}");
    assert_eq!(db.request_log_count().await.expect("count"), 4);
}
