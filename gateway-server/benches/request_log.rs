//! What writing the request log costs per request on SQLite: batches of 512 records like the
//! load benchmark's (a success through one provider, with its session and decision chain) into
//! a file database in WAL mode, as the usage writer does. The database keeps growing over the
//! run, as a real one does.
//!
//! Run: `cargo bench -p gateway-server --bench request_log`.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gateway_core::dialect::Dialect;
use gateway_core::route::chain::{AttemptOutcome, ChainEntry, ChainStep, SelectionMethod};
use gateway_core::usage::{Outcome, TokenUsage, UsageRecord, UsdNanos};
use gateway_server::db::Database;

const BATCH: usize = 512;

fn record(n: u64) -> UsageRecord {
    UsageRecord {
        request_id: format!("req_{:032x}", (u128::from(n) << 40) | 0x5eed),
        created_at: chrono::Utc::now(),
        user_id: Some(1),
        key_id: Some(1),
        provider_id: Some(1),
        provider_name: Some("mock".to_owned()),
        method: "POST".to_owned(),
        endpoint: "/v1/messages".to_owned(),
        dialect: Some(Dialect::Anthropic),
        original_model: Some("claude-sonnet-4-5".to_owned()),
        forwarded_model: Some("claude-sonnet-4-5".to_owned()),
        stream: false,
        status_code: 200,
        outcome: Outcome::Success,
        usage: TokenUsage { input_tokens: 25, output_tokens: 15, ..TokenUsage::default() },
        cost: Some(UsdNanos(300_000)),
        cost_multiplier: Some(rust_decimal::Decimal::ONE),
        duration_ms: 0,
        ttfb_ms: Some(0),
        ttft_ms: Some(0),
        session_id: Some(format!("hash_{:024x}", n % 50)),
        error: None,
        user_agent: Some("claude-cli/2.1.0 (external, cli)".to_owned()),
        decision_chain: vec![
            ChainEntry {
                provider_id: 1,
                provider: "mock".to_owned(),
                step: ChainStep::Selected {
                    method: SelectionMethod::SessionReuse,
                    priority: 0,
                    tier_size: 1,
                },
            },
            ChainEntry {
                provider_id: 1,
                provider: "mock".to_owned(),
                step: ChainStep::Attempt {
                    attempt: 1,
                    outcome: AttemptOutcome::Success,
                    status: Some(200),
                    latency_ms: 0,
                    error: None,
                },
            },
        ],
        translation_notes: Vec::new(),
    }
}

fn request_log(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => panic!("runtime: {e}"),
    };
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("temp dir: {e}"),
    };
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let db = runtime.block_on(async {
        let db = Database::connect(&url).await.unwrap_or_else(|e| panic!("connect: {e}"));
        db.migrate().await.unwrap_or_else(|e| panic!("migrate: {e}"));
        db
    });
    let mut next = 0u64;
    let mut group = c.benchmark_group("request_log");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("sqlite_insert_512", |b| {
        b.iter_custom(|iterations| {
            let mut spent = Duration::ZERO;
            for _ in 0..iterations {
                let batch: Vec<UsageRecord> = (next..next + BATCH as u64).map(record).collect();
                next += BATCH as u64;
                let started = Instant::now();
                runtime.block_on(db.insert_usage_records(&batch)).unwrap_or_else(|e| panic!("insert: {e}"));
                spent += started.elapsed();
            }
            spent
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(8));
    targets = request_log
}
criterion_main!(benches);
