//! `UsageWriter` tests, each run against SQLite and PostgreSQL (see `db_support`).

mod db_support;

use std::path::Path;
use std::time::Duration;

use db_support::{TestDb, as_json, backends, eventually, full_record, records};
use gateway_core::store::UsageSink;
use gateway_core::usage::UsageRecord;
use gateway_server::db::{Database, UsageWriter, WriterConfig};

const WAIT: Duration = Duration::from_secs(15);

/// Small numbers so that outages spill after a few records.
fn small_config(spill_path: &Path) -> WriterConfig {
    WriterConfig {
        spill_path: spill_path.to_owned(),
        batch_size: 5,
        batch_delay: Duration::from_millis(20),
        spill_threshold: 10,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
    }
}

fn spill_lines(path: &Path) -> Vec<UsageRecord> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|line| serde_json::from_str(line).expect("spill line is a UsageRecord"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot read spill file: {e}"),
    }
}

async fn count(db: &Database) -> u64 {
    db.request_log_count().await.expect("count")
}

async fn rename_request_log(t: &TestDb, from: &str, to: &str) {
    let sql = format!("ALTER TABLE {from} RENAME TO {to}");
    on_pool!(t.db, |pool| {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(pool).await.expect("rename");
    });
}

#[tokio::test]
async fn delivers_records_in_batches_and_on_timer() {
    for t in backends().await {
        let spill = t.path("spill/usage.jsonl");
        let writer = UsageWriter::start(t.db.clone(), spill.clone()).await.expect("start");

        let batch = records("w", 1_234);
        for r in &batch {
            writer.record(r.clone());
        }
        writer.flush().await;
        assert_eq!(count(&t.db).await, 1_234, "{}", t.label);
        let stats = writer.stats();
        assert_eq!((stats.received, stats.written, stats.spilled), (1_234, 1_234, 0));

        // Without a flush, a partial batch is written once the batch delay passes.
        for r in records("timer", 3) {
            writer.record(r);
        }
        eventually(WAIT, "timer flush", || async { count(&t.db).await == 1_237 }).await;

        let row = t.db.request_log_by_request_id("w-17").await.expect("query").expect("row");
        assert_eq!(as_json(&row.into_usage_record().expect("convert")), as_json(&batch[17]));

        writer.shutdown().await;
        assert!(!spill.exists(), "{}: nothing spilled while the database works", t.label);
        assert!(spill.parent().is_some_and(Path::is_dir), "spill directory created at start");
    }
}

#[tokio::test]
async fn a_full_batch_is_written_at_once_and_a_partial_one_waits_for_its_delay() {
    for t in backends().await {
        let config =
            WriterConfig { batch_delay: Duration::from_secs(3600), ..small_config(&t.path("spill.jsonl")) };
        let writer = UsageWriter::start(t.db.clone(), config).await.expect("start");
        // The writer sleeps while a batch fills; the record that completes it wakes it.
        for r in records("full", 10) {
            writer.record(r);
            tokio::task::yield_now().await;
        }
        eventually(WAIT, "two full batches written", || async { count(&t.db).await == 10 }).await;
        for r in records("partial", 3) {
            writer.record(r);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(count(&t.db).await, 10, "{}: a partial batch waits for its delay", t.label);
        writer.flush().await;
        assert_eq!(count(&t.db).await, 13, "{}: a flush does not wait for the delay", t.label);
        writer.shutdown().await;
    }
}

#[tokio::test]
async fn records_queued_with_a_shutdown_are_all_written() {
    for t in backends().await {
        let spill = t.path("spill/usage.jsonl");
        let writer = UsageWriter::start(t.db.clone(), spill.clone()).await.expect("start");
        // The first record starts a batch; the rest and the shutdown request then arrive
        // together and are taken from the channel in one bulk.
        writer.record(records("first", 1).remove(0));
        tokio::task::yield_now().await;
        for r in records("q", 300) {
            writer.record(r);
        }
        writer.shutdown().await;
        assert_eq!(count(&t.db).await, 301, "{}", t.label);
        assert_eq!(writer.stats().written, 301, "{}", t.label);
        assert!(!spill.exists(), "{}: nothing spilled", t.label);
    }
}

#[tokio::test]
async fn spills_while_the_database_is_down_and_replays_on_next_start() {
    for t in backends().await {
        let spill = t.path("usage-spill.jsonl");
        let db = t.reconnect().await;
        let writer = UsageWriter::start(db.clone(), small_config(&spill)).await.expect("start");
        db.close().await; // the database is now unreachable for this writer

        let sent = records("down", 40);
        for r in &sent {
            writer.record(r.clone());
        }
        // The overflow beyond the threshold goes to disk while the writer keeps retrying.
        eventually(WAIT, "overflow spilled during the outage", || async { writer.stats().spilled >= 25 })
            .await;
        assert!(writer.stats().failed_writes >= 1);
        assert_eq!(writer.stats().written, 0);

        // Shutdown cannot reach the database either: the rest is spilled too.
        writer.shutdown().await;
        let spilled = spill_lines(&spill);
        let mut ids: Vec<_> = spilled.iter().map(|r| r.request_id.clone()).collect();
        ids.sort();
        let mut expected: Vec<_> = sent.iter().map(|r| r.request_id.clone()).collect();
        expected.sort();
        assert_eq!(ids, expected, "{}: every record spilled exactly once", t.label);
        assert_eq!(writer.stats().spilled, 40);
        assert_eq!(count(&t.db).await, 0);

        // Next start on a working database replays and removes the file.
        let writer = UsageWriter::start(t.db.clone(), small_config(&spill)).await.expect("start");
        assert_eq!(count(&t.db).await, 40, "{}: replayed at start", t.label);
        assert_eq!(writer.stats().replayed, 40);
        assert!(!spill.exists());
        assert!(!t.path("usage-spill.jsonl.replaying").exists());
        let row = t.db.request_log_by_request_id("down-33").await.expect("query").expect("row");
        assert_eq!(as_json(&row.into_usage_record().expect("convert")), as_json(&sent[33]));
        writer.shutdown().await;
    }
}

#[tokio::test]
async fn recovers_without_restart_and_replays_its_own_spill() {
    for t in backends().await {
        let spill = t.path("usage-spill.jsonl");
        let writer = UsageWriter::start(t.db.clone(), small_config(&spill)).await.expect("start");
        writer.record(full_record("before"));
        writer.flush().await;
        assert_eq!(count(&t.db).await, 1);

        // Make inserts fail, as during an outage.
        rename_request_log(&t, "request_log", "request_log_offline").await;
        for r in records("outage", 30) {
            writer.record(r);
        }
        eventually(WAIT, "spill during the outage", || async { writer.stats().spilled >= 15 }).await;
        assert!(spill.exists());

        // The database comes back: the backlog and the spill file both arrive.
        rename_request_log(&t, "request_log_offline", "request_log").await;
        eventually(WAIT, "recovery", || async { count(&t.db).await == 31 }).await;
        eventually(WAIT, "spill file removed", || async { !spill.exists() }).await;
        let stats = writer.stats();
        assert!(stats.replayed >= 15, "{}: {stats:?}", t.label);
        assert!(stats.failed_writes >= 1);
        writer.shutdown().await;
        assert_eq!(count(&t.db).await, 31, "{}: no duplicates", t.label);
    }
}

#[tokio::test]
async fn shutdown_with_the_database_down_spills_and_later_records_are_not_lost() {
    for t in backends().await {
        let spill = t.path("data/usage-spill.jsonl");
        let db = t.reconnect().await;
        // Production defaults: nothing spills before shutdown (threshold 10,000).
        let writer =
            UsageWriter::start(db.clone(), WriterConfig::with_spill_path(&spill)).await.expect("start");
        db.close().await;
        for r in records("queued", 5) {
            writer.record(r);
        }
        writer.shutdown().await;
        assert_eq!(spill_lines(&spill).len(), 5, "{}", t.label);

        // A record arriving after shutdown (e.g. a late stream ending) goes to the file too.
        writer.record(full_record("late"));
        eventually(WAIT, "late record spilled", || async { spill_lines(&spill).len() == 6 }).await;
        assert!(spill_lines(&spill).iter().any(|r| r.request_id == "late"));

        let writer = UsageWriter::start(t.db.clone(), spill.clone()).await.expect("restart");
        assert_eq!(count(&t.db).await, 6, "{}", t.label);
        writer.shutdown().await;
    }
}

#[tokio::test]
async fn replay_is_idempotent_and_sets_corrupt_lines_aside() {
    for t in backends().await {
        let spill = t.path("usage-spill.jsonl");
        let sent = records("replay", 3);
        // One record is already in the database (a crash after insert, before removing the file).
        t.db.insert_usage_records(&sent[..1]).await.expect("insert");
        let mut text = String::new();
        for r in &sent {
            text.push_str(&serde_json::to_string(r).expect("json"));
            text.push('\n');
        }
        text.push_str("{\"request_id\": \"truncated by a cra\n");
        // Left over from an interrupted replay: handled first.
        let leftover = full_record("leftover");
        std::fs::write(
            t.path("usage-spill.jsonl.replaying"),
            serde_json::to_string(&leftover).expect("json") + "\n",
        )
        .expect("write");
        std::fs::write(&spill, text).expect("write spill");

        let writer = UsageWriter::start(t.db.clone(), spill.clone()).await.expect("start");
        assert_eq!(count(&t.db).await, 4, "{}", t.label);
        assert!(!spill.exists());
        assert!(!t.path("usage-spill.jsonl.replaying").exists());
        let corrupt = std::fs::read_to_string(t.path("usage-spill.jsonl.corrupt")).expect("corrupt");
        assert_eq!(corrupt, "{\"request_id\": \"truncated by a cra\n");
        writer.shutdown().await;
    }
}

#[tokio::test]
async fn record_returns_at_once_and_memory_stays_bounded_during_an_outage() {
    for t in backends().await {
        let spill = t.path("usage-spill.jsonl");
        let db = t.reconnect().await;
        // Production tuning: the backlog kept in memory is 10,000 records.
        let writer = UsageWriter::start(db.clone(), spill.clone()).await.expect("start");
        db.close().await;

        let sent = records("burst", 20_000);
        let started = std::time::Instant::now();
        for r in sent {
            writer.record(r);
        }
        assert!(started.elapsed() < Duration::from_secs(5), "record() must not wait");
        eventually(WAIT, "overflow beyond 10,000 spilled", || async { writer.stats().spilled >= 9_500 })
            .await;
        assert!(writer.stats().spilled <= 10_000, "{:?}", writer.stats());

        writer.shutdown().await;
        assert_eq!(spill_lines(&spill).len(), 20_000, "{}", t.label);

        let writer = UsageWriter::start(t.db.clone(), spill.clone()).await.expect("restart");
        assert_eq!(count(&t.db).await, 20_000, "{}", t.label);
        writer.shutdown().await;
    }
}
