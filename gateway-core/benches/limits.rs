//! What limits cost per request on the memory store: one admission and one added spend with the
//! load benchmark's user limits (RPM, concurrent sessions, rolling 5 h and fixed daily spend,
//! none reached), on the system clock, after the store already took a few hundred thousand
//! requests (so that the cost of a store that keeps growing would show).
//!
//! Run: `cargo bench -p gateway-core --bench limits`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use gateway_core::limit::{AdmissionCheck, Limits, SpendRecord, SpendSnapshot, Subject, SubjectCheck};
use gateway_core::store::MemoryStateStore;
use gateway_core::store::state::StateStore;
use gateway_core::usage::UsdNanos;

const TZ: chrono_tz::Tz = chrono_tz::UTC;

fn limits() -> Limits {
    Limits {
        rpm_limit: 1_000_000_000,
        limit_concurrent_sessions: 1_000_000,
        limit_5h_usd: Some(UsdNanos(1_000_000_000_000_000)),
        limit_daily_usd: Some(UsdNanos(1_000_000_000_000_000)),
        ..Limits::default()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One request: admission (session `i % 50`) and its spend.
fn request(store: &MemoryStateStore, limits: &Limits, i: u64) {
    let subject = Subject::user(1);
    let t = now();
    let id = format!("0196f1c2-7d3e-7a8b-9c0d-{i:012x}");
    let check = AdmissionCheck {
        request_id: id.clone(),
        session: Some(format!("session-{}", i % 50)),
        session_ttl_ms: 300_000,
        subjects: vec![SubjectCheck {
            subject,
            rpm: limits.rpm_limit,
            concurrent_sessions: limits.limit_concurrent_sessions,
            spend: limits.spend_windows().collect(),
            shape: limits.shape(TZ),
            frame: limits.frame(t, TZ),
        }],
        providers: Vec::new(),
    };
    // The stores answer at once (ready futures): poll them without a runtime.
    let admitted = futures_util::FutureExt::now_or_never(store.admit(&check));
    black_box(admitted);
    let record = SpendRecord {
        subject,
        shape: limits.shape(TZ),
        frame: limits.frame(t, TZ),
        at_ms: t,
        request_id: id,
        amount: UsdNanos(1_234_567),
    };
    black_box(futures_util::FutureExt::now_or_never(store.add_spend(std::slice::from_ref(&record))));
}

fn bench(c: &mut Criterion) {
    let limits = limits();
    let store = MemoryStateStore::new();
    let snapshot = SpendSnapshot {
        subject: Subject::user(1),
        shape: limits.shape(TZ),
        frame: limits.frame(now(), TZ),
        ..SpendSnapshot::default()
    };
    let _ = futures_util::FutureExt::now_or_never(store.warm_spend(std::slice::from_ref(&snapshot)));
    let next = AtomicU64::new(0);
    for _ in 0..200_000 {
        request(&store, &limits, next.fetch_add(1, Ordering::Relaxed));
    }
    c.bench_function("memory store: admission + added spend, after 200,000 requests", |b| {
        b.iter(|| request(&store, &limits, next.fetch_add(1, Ordering::Relaxed)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
