//! Routing and resilience in-process against several mock upstreams: failover on every kind of
//! failure, stickiness, breakers on a manual clock, limits, filters, timeouts. Each scenario
//! checks both what the client got and what the decision chain recorded.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway_core::config::ConfigFile;
use gateway_core::route::RoutingSettings;
use gateway_core::route::breaker::CircuitState;
use gateway_core::route::chain::{AttemptOutcome, ChainStep, SelectionMethod, SkipReason};
use gateway_core::store::{ManualClock, MemoryStateStore, MemoryUsageSink};
use gateway_core::usage::{Outcome, UsageRecord};
use gateway_core::{Gateway, GatewaySettings};
use gateway_mock::{Fake200, MockBehavior, MockUpstream};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

const KEY: &str = "sk-alice-0001";
const BODY: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
const STREAM_BODY: &str = r#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;

struct Env {
    gateway: Gateway,
    sink: MemoryUsageSink,
    clock: Arc<ManualClock>,
    mocks: Vec<MockUpstream>,
}

/// Providers p1..pn, one mock each; `extra[i]` is appended to provider i's TOML table.
async fn env(extra: &[&str], users: &str, settings: RoutingSettings) -> Env {
    let mut toml = String::new();
    let mut mocks = Vec::new();
    for (i, options) in extra.iter().enumerate() {
        let mock = MockUpstream::start().await.expect("mock");
        toml.push_str(&format!(
            "[[providers]]\nname = \"p{}\"\ntype = \"claude\"\nbase_url = \"{}\"\napi_key = \"up-{}\"\n{}\n\n",
            i + 1,
            mock.url(),
            i + 1,
            options
        ));
        mocks.push(mock);
    }
    if users.is_empty() {
        toml.push_str(&format!(
            "[[users]]\nname = \"alice\"\n[[users.keys]]\nname = \"k\"\nkey = \"{KEY}\"\n"
        ));
    } else {
        toml.push_str(users);
    }
    let file = ConfigFile::from_toml_str(&toml).expect("config");
    let clock = Arc::new(ManualClock::new(chrono::Utc::now().timestamp_millis()));
    let sink = MemoryUsageSink::new();
    let gateway = Gateway::builder()
        .config(&file)
        .usage_sink(Arc::new(sink.clone()))
        .state_store(Arc::new(MemoryStateStore::with_clock(clock.clone())))
        .settings(GatewaySettings { routing: settings, ..Default::default() })
        .build()
        .expect("gateway");
    Env { gateway, sink, clock, mocks }
}

fn request(body: &str, session: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri("/v1/messages")
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01");
    if let Some(s) = session {
        b = b.header("x-session-id", s);
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).expect("request")
}

impl Env {
    /// Sends one request; without a session id each call is its own session (else every
    /// request with the same opening would share one by the hash fallback).
    async fn send(&self, body: &str, session: Option<&str>) -> (StatusCode, String, UsageRecord) {
        let before = self.sink.records().len();
        let fresh = uuid::Uuid::new_v4().to_string();
        let resp = self.gateway.handle(request(body, Some(session.unwrap_or(&fresh)))).await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let record = self.sink.wait_for(before + 1).await.remove(before);
        (status, String::from_utf8_lossy(&bytes).into_owned(), record)
    }

    fn hits(&self) -> Vec<usize> {
        self.mocks.iter().map(|m| m.received().len()).collect()
    }

    fn set(&self, i: usize, behavior: MockBehavior) {
        self.mocks[i].set_behavior(behavior);
    }
}

fn failing(status: u16) -> MockBehavior {
    MockBehavior { force_status: Some(status), ..MockBehavior::default() }
}

/// (provider, outcome) of every attempt in the chain.
fn attempts(r: &UsageRecord) -> Vec<(String, AttemptOutcome)> {
    r.decision_chain
        .iter()
        .filter_map(|e| match e.step {
            ChainStep::Attempt { outcome, .. } => Some((e.provider.clone(), outcome)),
            _ => None,
        })
        .collect()
}

fn skipped(r: &UsageRecord) -> Vec<(String, SkipReason)> {
    r.decision_chain
        .iter()
        .filter_map(|e| match e.step {
            ChainStep::Skipped { reason } => Some((e.provider.clone(), reason)),
            _ => None,
        })
        .collect()
}

fn a(p: &str, o: AttemptOutcome) -> (String, AttemptOutcome) {
    (p.to_owned(), o)
}

const TWO_TIERS: [&str; 2] = ["priority = 0", "priority = 1"];

#[tokio::test]
async fn a_500_is_retried_then_the_next_provider_answers() {
    let e = env(&TWO_TIERS, "", RoutingSettings::default()).await;
    e.set(0, failing(500));
    let (status, _, r) = e.send(BODY, None).await;
    assert_eq!(status, 200);
    assert_eq!(e.hits(), vec![2, 1], "two tries on p1 (max_retry_attempts), then p2");
    assert_eq!(
        attempts(&r),
        vec![
            a("p1", AttemptOutcome::UpstreamError),
            a("p1", AttemptOutcome::UpstreamError),
            a("p2", AttemptOutcome::Success)
        ]
    );
    assert_eq!(r.provider_name.as_deref(), Some("p2"));
    assert_eq!(r.outcome, Outcome::Success);
}

#[tokio::test]
async fn a_429_with_retry_after_switches_at_once_and_cools_the_provider_down() {
    let e = env(&TWO_TIERS, "", RoutingSettings::default()).await;
    e.set(0, MockBehavior { force_status: Some(429), retry_after_secs: Some(60), ..MockBehavior::default() });
    let (status, _, r) = e.send(BODY, Some("s-1")).await;
    assert_eq!(status, 200);
    assert_eq!(e.hits(), vec![1, 1], "no second try on a provider that said Retry-After");
    assert_eq!(attempts(&r), vec![a("p1", AttemptOutcome::UpstreamError), a("p2", AttemptOutcome::Success)]);
    // A new session: p1 is still cooling down.
    let (_, _, r) = e.send(BODY, Some("s-2")).await;
    assert_eq!(skipped(&r), vec![("p1".to_owned(), SkipReason::CoolingDown)]);
    assert_eq!(e.hits(), vec![1, 2]);
    // After the Retry-After time p1 is back (it is healthy again now).
    e.set(0, MockBehavior::default());
    e.clock.advance(Duration::from_secs(61));
    let (_, _, r) = e.send(BODY, Some("s-3")).await;
    assert_eq!(attempts(&r), vec![a("p1", AttemptOutcome::Success)]);
}

#[tokio::test]
async fn fake_200s_fail_over() {
    for kind in [Fake200::Html, Fake200::JsonError, Fake200::SseError] {
        let e = env(&TWO_TIERS, "", RoutingSettings::default()).await;
        e.set(0, MockBehavior { fake_200: Some(kind), ..MockBehavior::default() });
        let body = if kind == Fake200::SseError { STREAM_BODY } else { BODY };
        let (status, text, r) = e.send(body, None).await;
        assert_eq!(status, 200, "{kind:?}");
        assert!(
            !text.contains("suspended") && !text.contains("<html"),
            "{kind:?}: nothing of the fake reached the client"
        );
        assert_eq!(
            attempts(&r),
            vec![
                a("p1", AttemptOutcome::Fake200),
                a("p1", AttemptOutcome::Fake200),
                a("p2", AttemptOutcome::Success)
            ],
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn a_connection_reset_before_the_first_byte_fails_over() {
    let e = env(&TWO_TIERS, "", RoutingSettings::default()).await;
    e.set(0, MockBehavior { reset_after_events: Some(0), ..MockBehavior::default() });
    let (status, text, r) = e.send(STREAM_BODY, None).await;
    assert_eq!(status, 200);
    assert!(text.contains("event: message_stop"), "{text}");
    assert_eq!(attempts(&r).last(), Some(&a("p2", AttemptOutcome::Success)));
    assert!(
        attempts(&r).iter().any(|(p, o)| p == "p1" && *o == AttemptOutcome::NetworkError),
        "{:?}",
        attempts(&r)
    );
}

#[tokio::test]
async fn a_stall_past_the_first_byte_timeout_fails_over() {
    let e = env(
        &["priority = 0\nfirst_byte_timeout_ms = 200\nmax_retry_attempts = 1", "priority = 1"],
        "",
        RoutingSettings::default(),
    )
    .await;
    e.set(0, MockBehavior { first_byte_delay: Duration::from_secs(3), ..MockBehavior::default() });
    let started = std::time::Instant::now();
    let (status, _, r) = e.send(STREAM_BODY, None).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "did not wait for the stalled upstream");
    assert_eq!(attempts(&r), vec![a("p1", AttemptOutcome::Timeout), a("p2", AttemptOutcome::Success)]);
}

#[tokio::test]
async fn a_slow_non_stream_request_hits_its_total_timeout_and_fails_over() {
    let e = env(
        &["priority = 0\nrequest_timeout_ms = 200\nmax_retry_attempts = 1", "priority = 1"],
        "",
        RoutingSettings::default(),
    )
    .await;
    e.set(0, MockBehavior { first_byte_delay: Duration::from_secs(3), ..MockBehavior::default() });
    let (status, _, r) = e.send(BODY, None).await;
    assert_eq!(status, 200);
    assert_eq!(attempts(&r), vec![a("p1", AttemptOutcome::Timeout), a("p2", AttemptOutcome::Success)]);
}

#[tokio::test]
async fn a_mid_stream_reset_ends_the_stream_with_an_error_event_and_no_failover() {
    let e = env(&TWO_TIERS, "", RoutingSettings::default()).await;
    e.set(0, MockBehavior { chunks: 10, reset_after_events: Some(5), ..MockBehavior::default() });
    let (status, text, r) = e.send(STREAM_BODY, None).await;
    assert_eq!(status, 200);
    assert!(text.contains("event: content_block_delta"));
    assert!(text.contains("event: error\ndata: {\"type\":\"error\""), "{text}");
    assert!(!text.contains("message_stop"));
    assert_eq!(e.hits(), vec![1, 0], "bytes were sent: no failover");
    assert_eq!(r.outcome, Outcome::Failed);
}

#[tokio::test]
async fn an_idle_stream_is_cut_with_an_error_event() {
    let e = env(&["stream_idle_timeout_ms = 150"], "", RoutingSettings::default()).await;
    e.set(0, MockBehavior { chunks: 3, chunk_delay: Duration::from_millis(600), ..MockBehavior::default() });
    let (status, text, r) = e.send(STREAM_BODY, None).await;
    assert_eq!(status, 200);
    assert!(text.contains("event: error"), "{text}");
    assert!(r.error.as_deref().is_some_and(|m| m.contains("sent nothing for 150 ms")), "{:?}", r.error);
}

#[tokio::test]
async fn a_session_stays_on_its_provider_and_rebinds_after_failover() {
    let e = env(&["weight = 1", "weight = 1"], "", RoutingSettings::default()).await;
    let mut first = None;
    for i in 0..12 {
        let (status, _, r) = e.send(BODY, Some("sticky-1")).await;
        assert_eq!(status, 200);
        let p = r.provider_name.clone().expect("provider");
        let chain_method = r.decision_chain.iter().find_map(|c| match c.step {
            ChainStep::Selected { method, .. } => Some(method),
            _ => None,
        });
        if i > 0 {
            assert_eq!(chain_method, Some(SelectionMethod::SessionReuse));
        }
        assert_eq!(first.get_or_insert(p.clone()), &p, "request {i} moved");
    }
    let bound = first.expect("bound");
    let (bound_i, other) = if bound == "p1" { (0, "p2") } else { (1, "p1") };
    e.set(bound_i, failing(503));
    let (status, _, r) = e.send(BODY, Some("sticky-1")).await;
    assert_eq!(status, 200);
    assert_eq!(r.provider_name.as_deref(), Some(other));
    // The old provider recovers, but the session now lives on the one that served it.
    e.set(bound_i, MockBehavior::default());
    for _ in 0..5 {
        let (_, _, r) = e.send(BODY, Some("sticky-1")).await;
        assert_eq!(r.provider_name.as_deref(), Some(other));
    }
}

#[tokio::test]
async fn providers_with_disable_session_reuse_are_never_bound() {
    let e = env(
        &["weight = 1\ndisable_session_reuse = true", "weight = 1\ndisable_session_reuse = true"],
        "",
        RoutingSettings::default(),
    )
    .await;
    for _ in 0..30 {
        e.send(BODY, Some("s")).await;
    }
    let hits = e.hits();
    assert!(hits[0] > 0 && hits[1] > 0, "spread by weight, not pinned: {hits:?}");
}

#[tokio::test]
async fn the_breaker_opens_half_opens_and_closes_on_the_clock() {
    let e = env(
        &[
            "priority = 0\nmax_retry_attempts = 1\ncircuit_breaker_failure_threshold = 2\ncircuit_breaker_open_duration_ms = 60000\ncircuit_breaker_half_open_success_threshold = 2",
            "priority = 1",
        ],
        "",
        RoutingSettings::default(),
    )
    .await;
    e.set(0, failing(500));
    e.send(BODY, None).await;
    assert_eq!(e.gateway.breaker_status(1).await.expect("p1").expect("ok").state, CircuitState::Closed);
    e.send(BODY, None).await;
    let status = e.gateway.breaker_status(1).await.expect("p1").expect("ok");
    assert_eq!(status.state, CircuitState::Open);
    assert!(status.reason.as_deref().is_some_and(|r| r.contains("500")), "{status:?}");
    // Open: p1 is not even tried.
    let (_, _, r) = e.send(BODY, None).await;
    assert_eq!(skipped(&r), vec![("p1".to_owned(), SkipReason::CircuitOpen)]);
    assert_eq!(e.hits()[0], 2);
    // Half-open after the open period: probes go through; two successes close it.
    e.set(0, MockBehavior::default());
    e.clock.advance(Duration::from_secs(60));
    assert_eq!(e.gateway.breaker_status(1).await.expect("p1").expect("ok").state, CircuitState::HalfOpen);
    let (_, _, r) = e.send(BODY, None).await;
    assert_eq!(attempts(&r), vec![a("p1", AttemptOutcome::Success)]);
    assert_eq!(e.gateway.breaker_status(1).await.expect("p1").expect("ok").state, CircuitState::HalfOpen);
    e.send(BODY, None).await;
    assert_eq!(e.gateway.breaker_status(1).await.expect("p1").expect("ok").state, CircuitState::Closed);
}

#[tokio::test]
async fn a_failed_probe_reopens_and_reset_closes() {
    let e = env(
        &["priority = 0\nmax_retry_attempts = 1\ncircuit_breaker_failure_threshold = 1\ncircuit_breaker_open_duration_ms = 1000", "priority = 1"],
        "",
        RoutingSettings::default(),
    )
    .await;
    e.set(0, failing(502));
    e.send(BODY, None).await;
    assert_eq!(e.gateway.breaker_status(1).await.expect("p1").expect("ok").state, CircuitState::Open);
    e.clock.advance(Duration::from_millis(1000));
    e.send(BODY, None).await; // the probe fails
    assert_eq!(e.gateway.breaker_status(1).await.expect("p1").expect("ok").state, CircuitState::Open);
    e.gateway.reset_breaker(1).await.expect("reset");
    assert_eq!(e.gateway.breaker_status(1).await.expect("p1").expect("ok").state, CircuitState::Closed);
    assert!(e.gateway.breaker_status(99).await.is_none());
}

#[tokio::test]
async fn client_errors_and_network_errors_do_not_open_the_breaker_by_default() {
    let e = env(
        &["max_retry_attempts = 1\ncircuit_breaker_failure_threshold = 1"],
        "",
        RoutingSettings::default(),
    )
    .await;
    e.set(0, failing(400));
    let (status, _, _) = e.send(BODY, None).await;
    assert_eq!(status, 400);
    assert_eq!(e.gateway.breaker_status(1).await.expect("p1").expect("ok").state, CircuitState::Closed);
    e.mocks[0].shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, _, _) = e.send(BODY, None).await;
    assert_eq!(status, 503);
    assert_eq!(e.gateway.breaker_status(1).await.expect("p1").expect("ok").state, CircuitState::Closed);

    let e = env(
        &["max_retry_attempts = 1\ncircuit_breaker_failure_threshold = 1"],
        "",
        RoutingSettings { breaker_on_network_errors: true, ..Default::default() },
    )
    .await;
    e.mocks[0].shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    e.send(BODY, None).await;
    assert_eq!(e.gateway.breaker_status(1).await.expect("p1").expect("ok").state, CircuitState::Open);
}

#[tokio::test]
async fn provider_session_limit_counts_distinct_sessions() {
    let e =
        env(&["priority = 0\nlimit_concurrent_sessions = 1", "priority = 1"], "", RoutingSettings::default())
            .await;
    let (_, _, r) = e.send(BODY, Some("sess-a")).await;
    assert_eq!(r.provider_name.as_deref(), Some("p1"));
    let (_, _, r) = e.send(BODY, Some("sess-b")).await;
    assert_eq!(r.provider_name.as_deref(), Some("p2"));
    assert_eq!(skipped(&r), vec![("p1".to_owned(), SkipReason::ConcurrencyLimit)]);
    let (_, _, r) = e.send(BODY, Some("sess-a")).await;
    assert_eq!(r.provider_name.as_deref(), Some("p1"), "a session already counted is admitted");
    // Sessions expire after the session TTL.
    e.clock.advance(Duration::from_secs(301));
    let (_, _, r) = e.send(BODY, Some("sess-c")).await;
    assert_eq!(r.provider_name.as_deref(), Some("p1"));
}

#[tokio::test]
async fn at_most_max_provider_switches_providers_are_tried() {
    let e = env(
        &[
            "max_retry_attempts = 1",
            "max_retry_attempts = 1",
            "max_retry_attempts = 1",
            "max_retry_attempts = 1",
        ],
        "",
        RoutingSettings { max_provider_switches: 3, ..Default::default() },
    )
    .await;
    for i in 0..4 {
        e.set(i, failing(500));
    }
    let (status, text, r) = e.send(BODY, None).await;
    assert_eq!(status, 503);
    assert!(text.contains("all 3 providers tried failed"), "{text}");
    assert_eq!(e.hits().iter().sum::<usize>(), 3);
    assert_eq!(attempts(&r).len(), 3);
    assert_eq!(r.outcome, Outcome::Failed);
}

#[tokio::test]
async fn model_filters_and_allow_lists() {
    let users = format!(
        "[[users]]\nname = \"alice\"\n[[users.keys]]\nname = \"k\"\nkey = \"{KEY}\"\n\
         [[users]]\nname = \"bob\"\nallowed_models = [\"claude-haiku-4-5\", {{ match = \"prefix\", pattern = \"claude-opus\" }}]\n\
         [[users.keys]]\nname = \"k\"\nkey = \"sk-bob-00000001\"\n"
    );
    let e = env(
        &[
            "priority = 0\nallowed_models = [{ match = \"prefix\", pattern = \"claude-opus\" }]",
            "priority = 1",
        ],
        &users,
        RoutingSettings::default(),
    )
    .await;
    let (_, _, r) = e.send(BODY, None).await;
    assert_eq!(r.provider_name.as_deref(), Some("p2"));
    assert_eq!(skipped(&r), vec![("p1".to_owned(), SkipReason::ModelNotAllowed)]);
    let opus = BODY.replace("claude-sonnet-4-5", "claude-opus-4-1");
    let (_, _, r) = e.send(&opus, None).await;
    assert_eq!(r.provider_name.as_deref(), Some("p1"));

    // Bob may not use sonnet: 403 before any provider is chosen.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/messages")
        .header("x-api-key", "sk-bob-00000001")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .expect("req");
    let before = e.hits();
    let resp = e.gateway.handle(req).await;
    assert_eq!(resp.status(), 403);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.expect("body").to_bytes()).expect("json");
    assert_eq!(v["error"]["type"], "permission_error");
    assert_eq!(e.hits(), before);
}

#[tokio::test]
async fn key_groups_override_the_users() {
    let users = format!(
        "[[users]]\nname = \"alice\"\ngroups = [\"team-a\"]\n[[users.keys]]\nname = \"k\"\nkey = \"{KEY}\"\ngroups = [\"team-b\"]\n"
    );
    let e =
        env(&["groups = [\"team-a\"]", "groups = [\"team-b\"]"], &users, RoutingSettings::default()).await;
    for _ in 0..5 {
        let (_, _, r) = e.send(BODY, None).await;
        assert_eq!(r.provider_name.as_deref(), Some("p2"));
    }
}

#[tokio::test]
async fn groups_isolate_callers_with_a_503_that_says_so() {
    let users = format!(
        "[[users]]\nname = \"alice\"\ngroups = [\"team-x\"]\n[[users.keys]]\nname = \"k\"\nkey = \"{KEY}\"\n"
    );
    let e = env(&["groups = [\"team-a\"]"], &users, RoutingSettings::default()).await;
    let (status, text, _) = e.send(BODY, None).await;
    assert_eq!(status, 503);
    assert!(text.contains("team-x"), "{text}");
    assert_eq!(e.hits(), vec![0]);
}

#[tokio::test]
async fn active_windows_follow_the_configured_timezone() {
    use chrono::Timelike;
    let tz = chrono_tz::Asia::Tokyo;
    let now = chrono::Utc::now().with_timezone(&tz);
    let minute = now.hour() * 60 + now.minute();
    let hhmm = |m: u32| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
    // A window that ends two minutes ago in Tokyo and one that covers now.
    let closed = format!(
        "priority = 0\nactive_from = \"{}\"\nactive_to = \"{}\"",
        hhmm(minute + 1440 - 120),
        hhmm(minute + 1440 - 2)
    );
    let open = format!(
        "priority = 0\nactive_from = \"{}\"\nactive_to = \"{}\"",
        hhmm(minute + 1440 - 5),
        hhmm(minute + 5)
    );
    let e =
        env(&[&closed, &open, "priority = 1"], "", RoutingSettings { timezone: tz, ..Default::default() })
            .await;
    let (_, _, r) = e.send(BODY, None).await;
    assert_eq!(r.provider_name.as_deref(), Some("p2"));
    assert_eq!(skipped(&r), vec![("p1".to_owned(), SkipReason::OutsideActiveWindow)]);
}

#[tokio::test]
async fn custom_headers_are_sent_and_client_ip_headers_stripped_unless_preserved() {
    let e = env(
        &["priority = 0\ncustom_headers = { \"x-team\" = \"platform\" }"],
        "",
        RoutingSettings::default(),
    )
    .await;
    let mut req = request(BODY, None);
    req.headers_mut().insert("x-forwarded-for", "203.0.113.9".parse().expect("hv"));
    e.gateway.handle(req).await.into_body().collect().await.expect("body");
    let got = e.mocks[0].received().remove(0);
    assert_eq!(got.header("x-team"), Some("platform"));
    assert_eq!(got.header("x-forwarded-for"), None);

    let e = env(&["preserve_client_ip = true"], "", RoutingSettings::default()).await;
    let mut req = request(BODY, None);
    req.headers_mut().insert("x-forwarded-for", "203.0.113.9".parse().expect("hv"));
    e.gateway.handle(req).await.into_body().collect().await.expect("body");
    assert_eq!(e.mocks[0].received().remove(0).header("x-forwarded-for"), Some("203.0.113.9"));
}

#[tokio::test]
async fn invalid_provider_options_are_rejected_when_loaded() {
    for (options, needle) in [
        ("proxy_url = \"ftp://proxy:21\"", "proxy_url"),
        ("custom_headers = { \"Authorization\" = \"x\" }", "reserved"),
        ("active_from = \"25:00\"\nactive_to = \"01:00\"", "HH:MM"),
        ("active_from = \"01:00\"", "together"),
        ("max_retry_attempts = 0", "max_retry_attempts"),
        ("unknown_option = 1", "unknown_option"),
    ] {
        let toml = format!(
            "[[providers]]\nname = \"p\"\ntype = \"claude\"\nbase_url = \"http://127.0.0.1:1\"\napi_key = \"k\"\n{options}\n"
        );
        let err = ConfigFile::from_toml_str(&toml).expect_err(options).to_string();
        assert!(err.contains(needle), "{options}: {err}");
    }
}
