//! Routing must cost no more than a few microseconds per request: the pure selection path of
//! `gateway_core::route::select` over 50 providers, and one whole request through
//! `Gateway::handle` against the in-process mock upstream for scale.
//!
//! The 50 providers mix what selection has to look at: three caller groups (`default`, `vip`,
//! `other-team`) with per-group priority overrides, four priority tiers, weights 1..10, four
//! disabled providers, three of another dialect (Codex; one of them takes Anthropic requests by
//! translation and sits in the best tier), `allowed_models` lists of every match kind (prefix,
//! regex, exact + contains), and one active window (22:00-06:00, outside it at noon). The health
//! view marks some candidates with an open circuit and some cooling down.
//!
//! Run: `cargo bench -p gateway-core --bench select`.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use gateway_core::config::{ConfigFile, MatchKind, ModelPattern, Provider, ProviderConfig, ProviderType};
use gateway_core::dialect::Dialect;
use gateway_core::route::breaker::{BreakerConfig, BreakerRecord};
use gateway_core::route::chain::ChainEntry;
use gateway_core::route::select::{StaticFilter, healthy_candidates, pick_weighted, static_candidates};
use gateway_core::store::NullUsageSink;
use gateway_core::store::state::ProviderHealth;
use http_body_util::{BodyExt, Full};

const PROVIDERS: usize = 50;
const NOW_MS: i64 = 1_000_000_000;
const MODEL: &str = "claude-sonnet-4-5";

fn pattern(kind: MatchKind, p: &str) -> ModelPattern {
    ModelPattern::new(kind, p).expect("model pattern")
}

/// The i-th of the 50 provider configs, all pointing at `base_url`.
fn provider_config(i: usize, base_url: &str) -> ProviderConfig {
    let provider_type = if i % 16 == 7 { ProviderType::Codex } else { ProviderType::Claude };
    let mut c = ProviderConfig::new(&format!("p{i:02}"), provider_type, base_url, "sk-upstream");
    c.enabled = i % 12 != 11;
    c.groups = match i % 10 {
        0 => vec!["vip".into()],
        5 => vec!["default".into(), "vip".into()],
        9 => vec!["other-team".into()],
        _ => vec!["default".into()],
    };
    c.priority = i32::try_from(i % 4).expect("small");
    c.weight = u32::try_from(1 + (i * 37) % 10).expect("small");
    if i % 10 == 5 {
        c.options.group_priorities.insert("vip".into(), -1);
    }
    c.options.allowed_models = match i % 6 {
        1 => vec![pattern(MatchKind::Prefix, "claude-")],
        2 => vec![pattern(MatchKind::Regex, "^claude-(sonnet|haiku)-4")],
        3 => vec![pattern(MatchKind::Exact, "claude-opus-4-1"), pattern(MatchKind::Contains, "haiku")],
        _ => Vec::new(),
    };
    if i == 7 {
        // A Codex provider that also takes Anthropic requests by translation, in the best tier:
        // the pick has to prefer the native providers there.
        c.options.translate_from = vec![Dialect::Anthropic];
        c.priority = 0;
    }
    if i == 20 {
        c.options.active_from = Some("22:00".into());
        c.options.active_to = Some("06:00".into());
    }
    c
}

fn providers() -> Vec<Arc<Provider>> {
    (0..PROVIDERS)
        .map(|i| {
            let id = i64::try_from(i + 1).expect("small");
            Arc::new(
                Provider::from_config(id, &provider_config(i, "https://api.example.com")).expect("provider"),
            )
        })
        .collect()
}

/// Health of `candidates` as the state store returns it: every 7th circuit open, every 9th
/// cooling down, the rest healthy.
fn health(providers: &[Arc<Provider>], candidates: &[usize]) -> Vec<ProviderHealth> {
    candidates
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let mut breaker = BreakerRecord::default();
            if k % 7 == 3 {
                let cfg = BreakerConfig::of(&providers[i].options);
                for _ in 0..cfg.failure_threshold {
                    breaker.on_failure(&cfg, NOW_MS - 1_000, "upstream answered 500");
                }
            }
            let cooldown_until_ms = (k % 9 == 4).then_some(NOW_MS + 60_000);
            ProviderHealth { breaker, cooldown_until_ms }
        })
        .collect()
}

fn groups(g: &[&str]) -> Vec<String> {
    g.iter().map(|s| (*s).to_owned()).collect()
}

fn bench_selection(c: &mut Criterion) {
    let providers = providers();
    let mut group = c.benchmark_group("select_50_providers");

    for (label, caller) in [("default", groups(&["default"])), ("wildcard", groups(&["*"]))] {
        let filter = StaticFilter {
            dialect: Dialect::Anthropic,
            groups: &caller,
            model: Some(MODEL),
            local_minute: 12 * 60,
            translatable: true,
        };
        let candidates = static_candidates(&providers, &filter, &mut Vec::new());
        let health = health(&providers, &candidates);
        let healthy =
            healthy_candidates(&providers, &candidates, &health, &[], NOW_MS, &mut Vec::new(), true);
        assert!(!healthy.is_empty(), "the {label} caller has someone to pick");
        println!(
            "select_50_providers/{label}: {} static candidates, {} healthy, best tier of {}",
            candidates.len(),
            healthy.len(),
            pick_weighted(&providers, &healthy, &caller, Dialect::Anthropic, &mut rand::rng())
                .map_or(0, |(_, n)| n),
        );

        group.bench_function(format!("static_candidates/{label}"), |b| {
            b.iter(|| {
                let mut chain: Vec<ChainEntry> = Vec::new();
                black_box(static_candidates(&providers, black_box(&filter), &mut chain))
            });
        });
        group.bench_function(format!("healthy_candidates/{label}"), |b| {
            b.iter(|| {
                let mut chain: Vec<ChainEntry> = Vec::new();
                black_box(healthy_candidates(
                    &providers,
                    black_box(&candidates),
                    &health,
                    &[],
                    NOW_MS,
                    &mut chain,
                    true,
                ))
            });
        });
        group.bench_function(format!("pick_weighted/{label}"), |b| {
            let mut rng = rand::rng();
            b.iter(|| {
                black_box(pick_weighted(
                    &providers,
                    black_box(&healthy),
                    &caller,
                    Dialect::Anthropic,
                    &mut rng,
                ))
            });
        });
        // What the router does before its first attempt (minus the state-store call).
        group.bench_function(format!("all_three/{label}"), |b| {
            let mut rng = rand::rng();
            b.iter(|| {
                let mut chain: Vec<ChainEntry> = Vec::new();
                let candidates = static_candidates(&providers, black_box(&filter), &mut chain);
                let healthy =
                    healthy_candidates(&providers, &candidates, &health, &[], NOW_MS, &mut chain, true);
                black_box((pick_weighted(&providers, &healthy, &caller, Dialect::Anthropic, &mut rng), chain))
            });
        });
    }
    group.finish();
}

const BODY: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;

/// One whole non-streaming request through the in-process gateway (auth, routing over the same
/// 50 providers, forwarding over loopback HTTP to the mock, metering) for scale.
fn bench_gateway(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mock = rt.block_on(gateway_mock::MockUpstream::start()).expect("mock");
    mock.set_recording(false);
    let mut config = ConfigFile::from_toml_str(
        "[[users]]\nname = \"alice\"\n[[users.keys]]\nname = \"k\"\nkey = \"sk-alice-0001\"\n",
    )
    .expect("config");
    config.providers = (0..PROVIDERS).map(|i| provider_config(i, &mock.url())).collect();
    let gateway = {
        let _guard = rt.enter();
        gateway_core::Gateway::builder()
            .config(&config)
            .usage_sink(Arc::new(NullUsageSink))
            .build()
            .expect("gateway")
    };
    let request = || {
        http::Request::builder()
            .method(http::Method::POST)
            .uri("/v1/messages")
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .header("x-api-key", "sk-alice-0001")
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .expect("request")
    };
    let once = || async {
        let resp = gateway.handle(request()).await;
        assert_eq!(resp.status(), http::StatusCode::OK);
        resp.into_body().collect().await.expect("body").to_bytes()
    };
    rt.block_on(once());

    let mut group = c.benchmark_group("gateway");
    group.bench_function("handle_non_stream/50_providers", |b| {
        b.iter(|| black_box(rt.block_on(once())));
    });
    group.finish();
}

criterion_group!(benches, bench_selection, bench_gateway);
criterion_main!(benches);
