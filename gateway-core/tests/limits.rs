//! Rate and spend limits through the whole gateway (memory state store, mock upstreams): what
//! is admitted, what the refused client sees in its own dialect, what the log records, and that
//! spend survives a restart through the request log.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, join_all};
use gateway_core::config::ConfigFile;
use gateway_core::limit::window::EpochMs;
use gateway_core::limit::{
    Admission, AdmissionCheck, LimitSettings, RateLimitFailMode, SpendEvent, SpendHistory, SpendRecord,
    SpendSnapshot, Subject, SubjectKind,
};
use gateway_core::route::breaker::{BreakerConfig, BreakerStatus};
use gateway_core::route::chain::{ChainStep, SkipReason};
use gateway_core::store::state::{AttemptResult, RoutingView, StateError};
use gateway_core::store::{MemoryStateStore, MemoryUsageSink, StateStore};
use gateway_core::usage::{Outcome, UsageRecord, UsdNanos};
use gateway_core::{Gateway, GatewaySettings};
use gateway_mock::MockUpstream;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

const KEY_A: &str = "sk-alice-aaaa";
const KEY_B: &str = "sk-alice-bbbb";
const MESSAGES: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
const CHAT: &str = r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}"#;
const GEMINI: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
/// The mock reports 25 input + 15 output tokens; at $1,000 per million each request costs $0.04.
const COST: UsdNanos = UsdNanos(40_000_000);

struct Env {
    gateway: Gateway,
    sink: MemoryUsageSink,
    _mocks: Vec<MockUpstream>,
}

struct Setup<'a> {
    /// Extra TOML lines per provider (p1, p2, ...).
    providers: &'a [&'a str],
    user: &'a str,
    key_a: &'a str,
    key_b: &'a str,
    settings: LimitSettings,
    store: Option<Arc<dyn StateStore>>,
    history: Option<Arc<dyn SpendHistory>>,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Self {
            providers: &[""],
            user: "",
            key_a: "",
            key_b: "",
            settings: LimitSettings::default(),
            store: None,
            history: None,
        }
    }
}

async fn env(setup: Setup<'_>) -> Env {
    let mut toml = String::new();
    let mut mocks = Vec::new();
    for (i, extra) in setup.providers.iter().enumerate() {
        let mock = MockUpstream::start().await.expect("mock");
        toml.push_str(&format!(
            "[[providers]]\nname = \"p{n}\"\ntype = \"claude\"\nbase_url = \"{url}\"\napi_key = \"up\"\n\
             priority = {i}\n{extra}\n\n",
            n = i + 1,
            url = mock.url(),
        ));
        mocks.push(mock);
    }
    toml.push_str(&format!(
        "[[users]]\nname = \"alice\"\n{user}\n\
         [[users.keys]]\nname = \"a\"\nkey = \"{KEY_A}\"\n{ka}\n\
         [[users.keys]]\nname = \"b\"\nkey = \"{KEY_B}\"\n{kb}\n\
         [[prices]]\nmodel = \"claude-sonnet-4-5\"\ninput_per_mtok = \"1000\"\noutput_per_mtok = \"1000\"\n",
        user = setup.user,
        ka = setup.key_a,
        kb = setup.key_b,
    ));
    let file = ConfigFile::from_toml_str(&toml).expect("config");
    let sink = MemoryUsageSink::new();
    let mut builder = Gateway::builder()
        .config(&file)
        .usage_sink(Arc::new(sink.clone()))
        .settings(GatewaySettings { limits: setup.settings, ..Default::default() });
    if let Some(store) = setup.store {
        builder = builder.state_store(store);
    }
    if let Some(history) = setup.history {
        builder = builder.spend_history(history);
    }
    Env { gateway: builder.build().expect("gateway"), sink, _mocks: mocks }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    json: serde_json::Value,
}

impl Env {
    async fn send(&self, path: &str, key: &str, body: &str, session: Option<&str>) -> Reply {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json");
        if let Some(s) = session {
            req = req.header("x-session-id", s);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).expect("request");
        let resp = self.gateway.handle(req).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Reply { status, headers, json }
    }

    /// A billed Anthropic request, waiting until its spend reached the limit windows.
    async fn spend(&self, key: &str) -> Reply {
        let before = self.sink.records().len();
        let reply = self.send("/v1/messages", key, MESSAGES, None).await;
        self.sink.wait_for(before + 1).await;
        // Spend is added by a task spawned when the record is made; let it run.
        tokio::time::sleep(Duration::from_millis(20)).await;
        reply
    }
}

#[tokio::test]
async fn fifty_concurrent_requests_against_an_rpm_of_ten_admit_exactly_ten() {
    let env = env(Setup { user: "rpm_limit = 10", ..Default::default() }).await;
    let replies = join_all((0..50).map(|_| env.send("/v1/messages", KEY_A, MESSAGES, None))).await;
    let ok = replies.iter().filter(|r| r.status == StatusCode::OK).count();
    let limited: Vec<_> = replies.iter().filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS).collect();
    assert_eq!((ok, limited.len()), (10, 40));
    let r = limited[0];
    assert_eq!(r.json["type"], "error");
    assert_eq!(r.json["error"]["type"], "rate_limit_error");
    assert_eq!(r.json["error"]["limit_type"], "rpm");
    assert_eq!(r.json["error"]["limit"], "10");
    assert_eq!(r.headers["x-ratelimit-limit"], "10");
    assert_eq!(r.headers["x-ratelimit-remaining"], "0");
    let retry: u64 = r.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    // Every request left a record, the refused ones too.
    let records = env.sink.wait_for(50).await;
    let rejected = records.iter().filter(|r| r.status_code == 429 && r.outcome == Outcome::Rejected).count();
    assert_eq!(rejected, 40);
}

#[tokio::test]
async fn a_daily_spend_limit_refuses_with_402_in_the_callers_dialect() {
    let env = env(Setup { user: "limit_daily_usd = \"0.1\"", ..Default::default() }).await;
    for _ in 0..3 {
        assert_eq!(env.spend(KEY_A).await.status, StatusCode::OK);
    }
    // $0.12 spent of $0.10.
    let r = env.send("/v1/messages", KEY_A, MESSAGES, None).await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(r.json["error"]["type"], "rate_limit_error");
    assert_eq!(r.json["error"]["limit_type"], "daily_quota");
    assert_eq!(r.json["error"]["current"], "0.12");
    assert_eq!(r.json["error"]["limit"], "0.1");
    let message = r.json["error"]["message"].as_str().expect("message");
    assert!(message.contains("user daily spend limit reached: $0.12 of $0.1"), "{message}");
    let reset =
        chrono::Utc::now().date_naive().succ_opt().expect("tomorrow").and_hms_opt(0, 0, 0).expect("midnight");
    assert_eq!(r.headers["x-ratelimit-reset"], reset.and_utc().timestamp().to_string().as_str());
    assert_eq!(r.json["error"]["reset_time"], format!("{}.000Z", reset.format("%Y-%m-%dT%H:%M:%S")));
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(r.headers["x-ratelimit-remaining"], "0");

    let chat = env.send("/v1/chat/completions", KEY_A, CHAT, None).await;
    assert_eq!(chat.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(chat.json["error"]["type"], "insufficient_quota");
    assert_eq!(chat.json["error"]["code"], "quota_exceeded");
    assert_eq!(chat.json["error"]["limit_type"], "daily_quota");

    let gemini = env.send("/v1beta/models/claude-sonnet-4-5:generateContent", KEY_A, GEMINI, None).await;
    assert_eq!(gemini.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(gemini.json["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(gemini.json["error"]["code"], 402);

    let records = env.sink.wait_for(6).await;
    assert_eq!(records.iter().filter(|r| r.status_code == 402 && r.outcome == Outcome::Rejected).count(), 3);
    assert_eq!(records.iter().filter_map(|r| r.cost).map(|c| c.0).sum::<i64>(), 3 * COST.0);
}

#[tokio::test]
async fn a_users_keys_add_up_and_a_key_limit_is_tighter() {
    let env = env(Setup {
        user: "limit_total_usd = \"0.1\"",
        key_b: "limit_5h_usd = \"0.04\"",
        ..Default::default()
    })
    .await;
    assert_eq!(env.spend(KEY_B).await.status, StatusCode::OK);
    // Key b is at its own 5-hour limit; key a is not limited itself.
    let r = env.send("/v1/messages", KEY_B, MESSAGES, None).await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(r.json["error"]["limit_type"], "usd_5h");
    assert!(r.json["error"]["message"].as_str().expect("msg").starts_with("API key rolling 5-hour"));
    // Rolling: frees when the request leaves the window, 5 hours after the second it arrived
    // in (rounded up to whole seconds: at most one more).
    let retry: u64 = r.headers["retry-after"].to_str().expect("ascii").parse().expect("secs");
    assert!((5 * 3600 - 60..=5 * 3600 + 1).contains(&retry), "retry-after {retry}");
    assert_eq!(env.spend(KEY_A).await.status, StatusCode::OK);
    assert_eq!(env.spend(KEY_A).await.status, StatusCode::OK);
    // $0.12 spent by the user through both keys.
    let r = env.send("/v1/messages", KEY_A, MESSAGES, None).await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(r.json["error"]["limit_type"], "usd_total");
    assert!(!r.headers.contains_key("retry-after"), "a total never resets by itself");
}

#[tokio::test]
async fn concurrent_sessions_admit_known_sessions_and_refuse_new_ones() {
    let env = env(Setup { key_a: "limit_concurrent_sessions = 1", ..Default::default() }).await;
    assert_eq!(env.send("/v1/messages", KEY_A, MESSAGES, Some("s-1")).await.status, StatusCode::OK);
    assert_eq!(env.send("/v1/messages", KEY_A, MESSAGES, Some("s-1")).await.status, StatusCode::OK);
    let r = env.send("/v1/messages", KEY_A, MESSAGES, Some("s-2")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json["error"]["limit_type"], "concurrent_sessions");
    // The other key of the same user has no such limit.
    assert_eq!(env.send("/v1/messages", KEY_B, MESSAGES, Some("s-2")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_provider_over_its_spend_limit_is_left_out() {
    let env = env(Setup { providers: &["limit_total_usd = \"0.04\"", ""], ..Default::default() }).await;
    env.spend(KEY_A).await;
    env.spend(KEY_A).await;
    let records = env.sink.records();
    assert_eq!(records[0].provider_name.as_deref(), Some("p1"));
    assert_eq!(records[1].provider_name.as_deref(), Some("p2"), "p1 spent its $0.04");
    assert!(records[1].decision_chain.iter().any(
        |e| e.provider == "p1" && matches!(e.step, ChainStep::Skipped { reason: SkipReason::SpendLimit })
    ));
}

#[tokio::test]
async fn enable_rate_limit_false_turns_every_limit_off() {
    let settings = LimitSettings { enabled: false, ..Default::default() };
    let env =
        env(Setup { user: "rpm_limit = 1\nlimit_total_usd = \"0.01\"", settings, ..Default::default() })
            .await;
    for _ in 0..3 {
        assert_eq!(env.spend(KEY_A).await.status, StatusCode::OK);
    }
}

/// The request log of a test: the records a gateway wrote.
struct RecordsAsHistory(MemoryUsageSink);

impl RecordsAsHistory {
    fn matching(&self, subject: Subject) -> Vec<UsageRecord> {
        self.0
            .records()
            .into_iter()
            .filter(|r| match subject.kind {
                SubjectKind::User => r.user_id == Some(subject.id),
                SubjectKind::Key => r.key_id == Some(subject.id),
                SubjectKind::Provider => r.provider_id == Some(subject.id),
            })
            .collect()
    }
}

impl SpendHistory for RecordsAsHistory {
    fn events(
        &self,
        subject: Subject,
        from_ms: EpochMs,
    ) -> BoxFuture<'_, Result<Vec<SpendEvent>, StateError>> {
        let events = self
            .matching(subject)
            .into_iter()
            .filter_map(|r| Some((r.created_at.timestamp_millis(), r.request_id, r.cost?)))
            .filter(|e| e.0 >= from_ms)
            .collect();
        Box::pin(async move { Ok(events) })
    }

    fn sum(
        &self,
        subject: Subject,
        from_ms: EpochMs,
        to_ms: Option<EpochMs>,
    ) -> BoxFuture<'_, Result<UsdNanos, StateError>> {
        let total = self
            .matching(subject)
            .into_iter()
            .filter(|r| {
                let at = r.created_at.timestamp_millis();
                at >= from_ms && to_ms.is_none_or(|to| at < to)
            })
            .filter_map(|r| r.cost)
            .map(|c| c.0)
            .sum();
        Box::pin(async move { Ok(UsdNanos(total)) })
    }
}

#[tokio::test]
async fn spend_is_rebuilt_from_the_request_log_after_a_restart() {
    let user = "limit_daily_usd = \"0.08\"\nlimit_5h_mode = \"fixed\"\nlimit_5h_usd = \"0.08\"";
    let first = env(Setup { user, ..Default::default() }).await;
    let log = first.sink.clone();
    first.spend(KEY_A).await;
    first.spend(KEY_A).await;
    assert_eq!(first.send("/v1/messages", KEY_A, MESSAGES, None).await.status, StatusCode::PAYMENT_REQUIRED);

    // A new process: empty state store, same request log.
    let history: Arc<dyn SpendHistory> = Arc::new(RecordsAsHistory(log.clone()));
    let second = env(Setup { user, history: Some(history), ..Default::default() }).await;
    let r = second.send("/v1/messages", KEY_A, MESSAGES, None).await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(r.json["error"]["current"], "0.08");
    // Without the log the same restart forgets the spend: the rebuild is what kept it.
    let forgetful = env(Setup { user, ..Default::default() }).await;
    assert_eq!(forgetful.send("/v1/messages", KEY_A, MESSAGES, None).await.status, StatusCode::OK);
}

/// A state store whose limit calls fail, as an unreachable Redis does; routing state works.
#[derive(Debug, Default)]
struct LimitsDown(MemoryStateStore);

fn down<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T, StateError>> {
    Box::pin(async { Err(StateError("unreachable".into())) })
}

impl StateStore for LimitsDown {
    fn routing_view<'a>(
        &'a self,
        s: Option<&'a str>,
        p: &'a [i64],
        keep: Option<Duration>,
    ) -> BoxFuture<'a, Result<RoutingView, StateError>> {
        self.0.routing_view(s, p, keep)
    }
    fn acquire_provider_session<'a>(
        &'a self,
        provider: i64,
        session: &'a str,
        limit: u32,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        self.0.acquire_provider_session(provider, session, limit, ttl)
    }
    fn record_attempt<'a>(
        &'a self,
        provider: i64,
        cfg: BreakerConfig,
        result: AttemptResult,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        self.0.record_attempt(provider, cfg, result, reason)
    }
    fn bind_session<'a>(
        &'a self,
        s: &'a str,
        p: i64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        self.0.bind_session(s, p, ttl)
    }
    fn set_cooldown(&self, provider: i64, until_ms: i64) -> BoxFuture<'_, Result<(), StateError>> {
        self.0.set_cooldown(provider, until_ms)
    }
    fn breaker_status(
        &self,
        provider: i64,
        cfg: BreakerConfig,
    ) -> BoxFuture<'_, Result<BreakerStatus, StateError>> {
        self.0.breaker_status(provider, cfg)
    }
    fn reset_breaker(&self, provider: i64) -> BoxFuture<'_, Result<(), StateError>> {
        self.0.reset_breaker(provider)
    }
    fn admit<'a>(&'a self, _: &'a AdmissionCheck) -> BoxFuture<'a, Result<Admission, StateError>> {
        down()
    }
    fn add_spend<'a>(&'a self, _: &'a [SpendRecord]) -> BoxFuture<'a, Result<(), StateError>> {
        down()
    }
    fn warm_spend<'a>(&'a self, _: &'a [SpendSnapshot]) -> BoxFuture<'a, Result<(), StateError>> {
        down()
    }
    fn invalidate_spend<'a>(&'a self, _: &'a [Subject]) -> BoxFuture<'a, Result<(), StateError>> {
        down()
    }
}

#[tokio::test]
async fn an_unreachable_limit_store_fails_open_by_default_and_closed_when_asked() {
    let open = env(Setup {
        user: "rpm_limit = 1",
        store: Some(Arc::new(LimitsDown::default())),
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(open.send("/v1/messages", KEY_A, MESSAGES, None).await.status, StatusCode::OK);
    }
    assert_eq!(open.gateway.limits().failures(), 3, "each failure is counted");

    let closed = env(Setup {
        user: "rpm_limit = 1",
        store: Some(Arc::new(LimitsDown::default())),
        settings: LimitSettings { fail_mode: RateLimitFailMode::Closed, ..Default::default() },
        ..Default::default()
    })
    .await;
    let r = closed.send("/v1/chat/completions", KEY_A, CHAT, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json["error"]["code"], "rate_limit_unavailable");
    // Callers without limits are not affected by the outage at all.
    let unlimited = env(Setup { store: Some(Arc::new(LimitsDown::default())), ..Default::default() }).await;
    assert_eq!(unlimited.send("/v1/messages", KEY_A, MESSAGES, None).await.status, StatusCode::OK);
    assert_eq!(unlimited.gateway.limits().failures(), 0);
}
