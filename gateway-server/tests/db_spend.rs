//! The request log as the source of truth of spend, on SQLite and PostgreSQL: the events and
//! sums limit windows are rebuilt from, and limits surviving an import round trip.

mod db_support;

use chrono::{DateTime, Utc};
use db_support::{backends, minimal_record};
use gateway_core::config::ConfigFile;
use gateway_core::limit::{SpendHistory, Subject};
use gateway_core::usage::{UsageRecord, UsdNanos};

fn billed(id: &str, at: DateTime<Utc>, user: i64, key: i64, provider: i64, cost: i64) -> UsageRecord {
    let mut r = minimal_record(id, at);
    r.user_id = Some(user);
    r.key_id = Some(key);
    r.provider_id = Some(provider);
    r.cost = Some(UsdNanos(cost));
    r.status_code = 200;
    r
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("instant").with_timezone(&Utc)
}

#[tokio::test]
async fn spend_events_and_sums_come_from_the_request_log() {
    for t in backends().await {
        let db = &t.db;
        let mut unbilled = minimal_record("free", at("2025-03-10T12:00:00Z"));
        unbilled.user_id = Some(1);
        db.insert_usage_records(&[
            billed("a", at("2025-03-09T23:59:59.999Z"), 1, 10, 100, 5),
            billed("b", at("2025-03-10T00:00:00Z"), 1, 10, 100, 7),
            billed("c", at("2025-03-10T08:30:00.250Z"), 1, 11, 101, 11),
            billed("d", at("2025-03-11T00:00:00Z"), 1, 11, 100, 13),
            billed("other-user", at("2025-03-10T09:00:00Z"), 2, 20, 100, 1_000),
            unbilled,
        ])
        .await
        .expect("insert");
        let ms = |s: &str| at(s).timestamp_millis();
        let label = t.label;

        // The day of 2025-03-10: the boundaries are half-open, to the millisecond.
        let day = db.sum(Subject::user(1), ms("2025-03-10T00:00:00Z"), Some(ms("2025-03-11T00:00:00Z")));
        assert_eq!(day.await.expect("sum"), UsdNanos(18), "{label}");
        let since = db.sum(Subject::user(1), ms("2025-03-10T00:00:00Z"), None);
        assert_eq!(since.await.expect("sum"), UsdNanos(31), "{label}");
        let key = db.sum(Subject::key(11), 0, None);
        assert_eq!(key.await.expect("sum"), UsdNanos(24), "{label}");
        let provider = db.sum(Subject::provider(100), 0, Some(ms("2025-03-11T00:00:00Z")));
        assert_eq!(provider.await.expect("sum"), UsdNanos(1_012), "{label}");
        let nothing = db.sum(Subject::user(3), 0, None);
        assert_eq!(nothing.await.expect("sum"), UsdNanos(0), "{label}");

        let events = db.events(Subject::user(1), ms("2025-03-10T00:00:00Z")).await.expect("events");
        let got: Vec<(i64, &str, i64)> = events.iter().map(|(t, id, c)| (*t, id.as_str(), c.0)).collect();
        assert_eq!(
            got,
            [
                (ms("2025-03-10T00:00:00Z"), "b", 7),
                (ms("2025-03-10T08:30:00.250Z"), "c", 11),
                (ms("2025-03-11T00:00:00Z"), "d", 13),
            ],
            "{label}: billed rows only, oldest first"
        );
    }
}

#[tokio::test]
async fn limits_survive_the_import_round_trip() {
    let file = ConfigFile::from_toml_str(
        r#"
[[providers]]
name = "p"
type = "claude"
base_url = "https://api.anthropic.com"
api_key = "up"
limit_daily_usd = "100"
limit_concurrent_sessions = 3

[[users]]
name = "alice"
rpm_limit = 30
limit_5h_usd = "2.5"
limit_5h_mode = "fixed"
daily_reset_time = "18:30"
total_reset_at = "2025-01-01T00:00:00Z"

[[users.keys]]
name = "laptop"
key = "sk-alice-laptop-1"
limit_concurrent_sessions = 2
limit_monthly_usd = "40"
"#,
    )
    .expect("config");
    for t in backends().await {
        t.db.import_config(&file).await.expect("import");
        let catalog = t.db.load_catalog().await.expect("load");
        let p = &catalog.providers()[0];
        assert_eq!(p.limits.limit_daily_usd, Some(UsdNanos(100 * UsdNanos::PER_USD)), "{}", t.label);
        assert_eq!(p.options.limit_concurrent_sessions, 3);
        let user = catalog.user(1).expect("user");
        assert_eq!(user.limits, file.users[0].limits, "{}", t.label);
        assert_eq!(user.limits.rpm_limit, 30);
        let key = catalog.key_by_hash(&gateway_core::config::hash_api_key("sk-alice-laptop-1")).expect("key");
        assert_eq!(key.limits, file.users[0].keys[0].limits, "{}", t.label);
        // Unchanged limits are no change: a second import writes nothing.
        let again = t.db.import_config(&file).await.expect("import");
        assert!(!again.changed(), "{}: {again}", t.label);
    }
}

#[test]
fn unknown_or_misplaced_limit_keys_are_config_errors() {
    let user_typo = "[[users]]\nname = \"a\"\nlimit_dayly_usd = \"1\"\n";
    let err = ConfigFile::from_toml_str(user_typo).expect_err("typo");
    assert!(err.to_string().contains("limit_dayly_usd"), "{err}");
    let provider_rpm = "[[providers]]\nname = \"p\"\ntype = \"claude\"\nbase_url = \"https://x.invalid\"\napi_key = \"k\"\nrpm_limit = 5\n";
    assert!(ConfigFile::from_toml_str(provider_rpm).is_err());
    let float_money = "[[users]]\nname = \"a\"\nlimit_daily_usd = 0.1\n";
    let err = ConfigFile::from_toml_str(float_money).expect_err("float");
    assert!(err.to_string().contains("decimal string"), "{err}");
}
