//! Router stage: chooses a provider, forwards through the inner service, and fails over.
//!
//! Adds to the request: `target` per attempt (provider, redirected model and body). Adds to the
//! context: `provider`, `forwarded_model`, the decision chain. Reads: `user`/`key` (groups),
//! `session_id`, `hints.model`. Writes shared state: session bindings, provider breakers,
//! `Retry-After` cooldowns, provider session counts.
//!
//! Per request: static filters (enabled, dialect, groups, allowed models, active window), then
//! one state-store call for the session binding and the candidates' health, then health filters
//! (circuit, cooldown). The session's bound provider is reused while it passes every filter;
//! otherwise the best priority tier is picked by weight. Each provider is tried up to its
//! `max_retry_attempts`; retryable failures (5xx, 429, timeouts, fake 200s, and network errors)
//! then move on to the next provider, at most `max_provider_switches` providers in all. A 429
//! or 503 with `Retry-After` takes the provider out of selection until then. Client errors (other
//! 4xx) return to the caller as they are. Once a response is handed on, there is no failover.

pub mod breaker;
pub mod chain;
pub mod estimate;
pub mod select;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::StatusCode;
use tower::{Layer, Service, ServiceExt};

use crate::catalog::CatalogHandle;
use crate::config::{Id, Provider, redirect_model};
use crate::dialect::Dialect;
use crate::error::{ErrorKind, GatewayError};
use crate::ingress::set_top_level_field;
use crate::limit::LimitEngine;
use crate::limit::engine::AdmitDecision;
use crate::request::{GatewayRequest, GatewayResponse, Target};
use crate::store::state::{AttemptResult, ProviderHealth, RoutingView, StateStore};
use breaker::BreakerConfig;
use chain::{AttemptOutcome, ChainEntry, ChainStep, SelectionMethod, SkipReason};
pub use select::{ALL_GROUPS, groups_overlap};

/// The groups of a caller: the key's when set, else the user's; a caller without a user (an
/// embedder that authenticates itself) is in the default group.
pub fn caller_groups<'a>(
    user: Option<&'a crate::config::User>,
    key: Option<&'a crate::config::ApiKey>,
) -> &'a [String] {
    static DEFAULT: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec![crate::config::DEFAULT_GROUP.to_owned()]);
    if let Some(groups) = key.and_then(|k| k.groups.as_deref()) {
        return groups;
    }
    user.map_or(DEFAULT.as_slice(), |u| u.groups.as_slice())
}

/// Error code when every provider tried failed (as opposed to none being available).
pub const ALL_PROVIDERS_FAILED: &str = "all_providers_failed";

/// Settings of routing that are not per provider.
#[derive(Debug, Clone)]
pub struct RoutingSettings {
    /// How long a session stays bound to its provider after its last request (`SESSION_TTL`).
    pub session_ttl: Duration,
    /// Most providers tried for one request (`MAX_PROVIDER_SWITCHES`).
    pub max_provider_switches: u32,
    /// Whether connection failures count toward opening a circuit
    /// (`ENABLE_CIRCUIT_BREAKER_ON_NETWORK_ERRORS`).
    pub breaker_on_network_errors: bool,
    /// Timezone of providers' active windows (`TZ`).
    pub timezone: chrono_tz::Tz,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(300),
            max_provider_switches: 3,
            breaker_on_network_errors: false,
            timezone: chrono_tz::UTC,
        }
    }
}

/// Adds [`RouterService`].
#[derive(Debug, Clone)]
pub struct RouterLayer {
    shared: Arc<RouterShared>,
}

#[derive(Debug)]
struct RouterShared {
    catalog: CatalogHandle,
    state: Arc<dyn StateStore>,
    settings: RoutingSettings,
    limits: Arc<LimitEngine>,
}

impl RouterLayer {
    /// Routes among the providers of `catalog`, keeping shared state in `state`; admission
    /// against user, key and provider limits (`limits`) rides on the same state read.
    pub fn new(
        catalog: CatalogHandle,
        state: Arc<dyn StateStore>,
        settings: RoutingSettings,
        limits: Arc<LimitEngine>,
    ) -> Self {
        Self { shared: Arc::new(RouterShared { catalog, state, settings, limits }) }
    }
}

impl<S> Layer<S> for RouterLayer {
    type Service = RouterService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RouterService { inner, shared: self.shared.clone() }
    }
}

/// Selection and failover around the forwarder.
#[derive(Debug, Clone)]
pub struct RouterService<S> {
    inner: S,
    shared: Arc<RouterShared>,
}

/// How the router judges one attempt.
enum Verdict {
    /// Hand this response to the client.
    Deliver(GatewayResponse, AttemptOutcome),
    /// Try again (same provider or the next).
    Retry {
        outcome: AttemptOutcome,
        status: Option<u16>,
        error: String,
        counts: bool,
        retry_after: Option<Duration>,
    },
    /// Stop: the gateway itself failed.
    Abort(GatewayError),
}

fn retry_after(resp: &GatewayResponse) -> Option<Duration> {
    let value = resp.headers().get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.signed_duration_since(chrono::Utc::now());
    delta.to_std().ok()
}

fn judge(result: Result<GatewayResponse, GatewayError>, network_counts: bool) -> Verdict {
    match result {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                return Verdict::Deliver(resp, AttemptOutcome::Success);
            }
            // 407 can only come from the provider's proxy: a transport failure, not the client's.
            if status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::PROXY_AUTHENTICATION_REQUIRED
                || status.is_server_error()
            {
                let after =
                    if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
                        retry_after(&resp)
                    } else {
                        None
                    };
                return Verdict::Retry {
                    outcome: AttemptOutcome::UpstreamError,
                    status: Some(status.as_u16()),
                    error: format!("upstream answered {status}"),
                    counts: true,
                    retry_after: after,
                };
            }
            Verdict::Deliver(resp, AttemptOutcome::ClientError)
        }
        Err(e) => match (e.kind, e.code) {
            (ErrorKind::Upstream, crate::forward::FAKE_200) => Verdict::Retry {
                outcome: AttemptOutcome::Fake200,
                status: Some(200),
                error: e.log_text(),
                counts: true,
                retry_after: None,
            },
            (ErrorKind::UpstreamTimeout, _) => Verdict::Retry {
                outcome: AttemptOutcome::Timeout,
                status: None,
                error: e.log_text(),
                counts: true,
                retry_after: None,
            },
            (ErrorKind::Upstream, _) => Verdict::Retry {
                outcome: AttemptOutcome::NetworkError,
                status: None,
                error: e.log_text(),
                counts: network_counts,
                retry_after: None,
            },
            _ => Verdict::Abort(e),
        },
    }
}

fn local_minute(now_ms: i64, tz: chrono_tz::Tz) -> u16 {
    use chrono::Timelike;
    let utc = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    let local = utc.with_timezone(&tz);
    u16::try_from(local.hour() * 60 + local.minute()).unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Builds the attempt's target: the provider's model redirect applied to the client body.
fn target_for(provider: &Arc<Provider>, req: &GatewayRequest) -> Result<Target, GatewayError> {
    let original = req.hints.model.as_deref();
    let redirected = original
        .and_then(|m| redirect_model(&provider.model_redirects, m))
        .filter(|to| Some(*to) != original);
    let forwarded_model = redirected.map(str::to_owned).or_else(|| req.hints.model.clone());
    let mut body = req.body.clone();
    // Gemini names the model in the path; the forwarder rewrites that.
    if let Some(to) = redirected
        && req.dialect != Dialect::Gemini
    {
        body = set_top_level_field(&body, "model", &serde_json::Value::from(to))?;
    }
    // Chat streams report usage only when asked; the gateway always asks, so no stream goes
    // unbilled. (Translated requests get it from the chat encoder.)
    if req.dialect == Dialect::OpenaiChat
        && provider.provider_type == crate::config::ProviderType::OpenaiCompatible
        && req.hints.stream
    {
        body = crate::ingress::merge_top_level_object(
            &body,
            "stream_options",
            "include_usage",
            serde_json::Value::Bool(true),
        )?;
    }
    Ok(Target { provider: provider.clone(), forwarded_model, body })
}

fn attempt_request(req: &GatewayRequest, target: Target) -> GatewayRequest {
    GatewayRequest {
        method: req.method.clone(),
        uri: req.uri.clone(),
        headers: req.headers.clone(),
        body: target.body.clone(),
        dialect: req.dialect,
        hints: req.hints.clone(),
        ctx: req.ctx.clone(),
        target: Some(target),
    }
}

impl RouterShared {
    async fn route<S>(&self, inner: S, req: GatewayRequest) -> Result<GatewayResponse, GatewayError>
    where
        S: Service<GatewayRequest, Response = GatewayResponse, Error = GatewayError> + Clone,
    {
        let catalog = self.catalog.load();
        let providers = catalog.providers();
        let (user, key, session) = req.ctx.update(|s| (s.user.clone(), s.key.clone(), s.session_id.clone()));
        let groups = caller_groups(user.as_deref(), key.as_deref());
        let mut chain: Vec<ChainEntry> = Vec::new();

        // Time for active windows comes from the same source as the state (the store's clock),
        // so replicas agree; without a view yet, use the local clock.
        let now_local = chrono::Utc::now().timestamp_millis();
        let filter = select::StaticFilter {
            dialect: req.dialect,
            groups,
            model: req.hints.model.as_deref(),
            local_minute: local_minute(now_local, self.settings.timezone),
            translatable: crate::forward::translation::translatable(req.dialect, req.uri.path()),
        };
        let candidates = select::static_candidates(providers, &filter, &mut chain);
        if candidates.is_empty()
            && let Some(resp) = estimate::token_count_response(&req)
        {
            req.ctx.update(|s| {
                s.chain = chain;
                s.notes.push("token count estimated by the gateway: no provider of this dialect".to_owned());
            });
            return Ok(resp);
        }
        let ids: Vec<Id> = candidates.iter().map(|&i| providers[i].id).collect();
        let mut excluded: Vec<Id> = Vec::new();
        let limit_check = {
            let refs: Vec<&Provider> = candidates.iter().map(|&i| &*providers[i]).collect();
            self.limits.check_for(
                key.as_deref(),
                user.as_deref(),
                &refs,
                session.as_deref(),
                req.ctx.request_id(),
                now_local,
            )
        };
        // The view keeps a binding it finds for another session TTL: the common case, a session
        // staying on its provider, then writes nothing more (one round trip with Redis). A
        // session stays bound for SESSION_TTL after its last request.
        let keep_binding = session.is_some().then_some(self.settings.session_ttl);
        let view = match &limit_check {
            None => self.state.routing_view(session.as_deref(), &ids, keep_binding).await,
            Some(check) => {
                let (decision, view) =
                    self.limits.admit_and_view(check, session.as_deref(), &ids, keep_binding).await;
                match decision {
                    AdmitDecision::Rejected(e) => {
                        req.ctx.update(|s| s.chain = chain);
                        return Err(e);
                    }
                    AdmitDecision::Admitted { providers_over } => {
                        for &i in &candidates {
                            if providers_over.contains(&providers[i].id) {
                                select::skip(&mut chain, &providers[i], SkipReason::SpendLimit);
                            }
                        }
                        excluded = providers_over;
                    }
                }
                view
            }
        };
        let view = match view {
            Ok(v) => v,
            Err(e) => {
                // Fail open: route as if every provider were healthy and nothing bound.
                tracing::warn!(request_id = req.ctx.request_id(), "routing state unavailable: {e}");
                RoutingView { binding: None, health: Vec::new(), now_ms: now_local }
            }
        };

        let mut tried = 0u32;
        let mut last_error: Option<String> = None;
        let mut last_public: Option<String> = None;
        let mut first_pick = true;
        let mut delivered: Option<GatewayResponse> = None;
        // Where the session is bound as far as this request knows (the view refreshed it).
        let mut bound = view.binding;
        loop {
            if tried >= self.settings.max_provider_switches.max(1) {
                break;
            }
            let healthy = select::healthy_candidates(
                providers,
                &candidates,
                &view.health,
                &excluded,
                view.now_ms,
                &mut chain,
                first_pick,
            );
            let reuse = view
                .binding
                .filter(|_| first_pick)
                .and_then(|bound| healthy.iter().copied().find(|&i| providers[i].id == bound))
                .filter(|&i| !providers[i].options.disable_session_reuse);
            let (index, method, tier_size) = match reuse {
                Some(i) => (i, SelectionMethod::SessionReuse, 1),
                None => {
                    match select::pick_weighted(providers, &healthy, groups, req.dialect, &mut rand::rng()) {
                        Some((i, n)) => (i, SelectionMethod::WeightedRandom, n),
                        None => break,
                    }
                }
            };
            let provider = &providers[index];
            // The first pick's new binding is written while its first attempt runs, so it costs
            // no round trip of its own; after a failover, the provider that answers is bound
            // once it did (awaited, rare).
            let mut bind_early = session.as_deref().filter(|_| {
                first_pick && bound != Some(provider.id) && !provider.options.disable_session_reuse
            });
            first_pick = false;
            if provider.options.limit_concurrent_sessions > 0
                && let Some(sid) = session.as_deref()
            {
                let admitted = self
                    .state
                    .acquire_provider_session(
                        provider.id,
                        sid,
                        provider.options.limit_concurrent_sessions,
                        self.settings.session_ttl,
                    )
                    .await
                    .unwrap_or(true);
                if !admitted {
                    chain.push(ChainEntry {
                        provider_id: provider.id,
                        provider: provider.name.clone(),
                        step: ChainStep::Skipped { reason: SkipReason::ConcurrencyLimit },
                    });
                    excluded.push(provider.id);
                    continue;
                }
            }
            chain.push(ChainEntry {
                provider_id: provider.id,
                provider: provider.name.clone(),
                step: ChainStep::Selected {
                    method,
                    priority: provider.effective_priority(groups),
                    tier_size,
                },
            });
            tried += 1;

            let target = target_for(provider, &req)?;
            let breaker = BreakerConfig::of(&provider.options);
            let attempts = provider.options.max_retry_attempts.max(1);
            let mut switch_reason = None;
            for attempt in 1..=attempts {
                req.ctx.update(|s| {
                    s.provider = Some(provider.clone());
                    s.forwarded_model = target.forwarded_model.clone();
                    s.ttfb = None;
                });
                let started = Instant::now();
                let call = inner.clone().oneshot(attempt_request(&req, target.clone()));
                let upstream = async move {
                    let outcome = call.await;
                    (outcome, millis(started.elapsed()))
                };
                let (outcome, latency_ms) = match bind_early.take() {
                    Some(sid) => {
                        bound = Some(provider.id);
                        let bind = self.state.bind_session(sid, provider.id, self.settings.session_ttl);
                        // Both finish before the response is handed on, so the next request of
                        // the session (on any replica) sees the binding.
                        let (upstream, _) = tokio::join!(upstream, bind);
                        upstream
                    }
                    None => upstream.await,
                };
                match judge(outcome, self.settings.breaker_on_network_errors) {
                    Verdict::Deliver(resp, outcome) => {
                        chain.push(ChainEntry {
                            provider_id: provider.id,
                            provider: provider.name.clone(),
                            step: ChainStep::Attempt {
                                attempt,
                                outcome,
                                status: Some(resp.status().as_u16()),
                                latency_ms,
                                error: None,
                            },
                        });
                        if outcome == AttemptOutcome::Success {
                            let health =
                                ids.iter().position(|&id| id == provider.id).and_then(|i| view.health.get(i));
                            self.on_success(provider, breaker, health, session.as_deref(), bound).await;
                        }
                        delivered = Some(resp);
                        break;
                    }
                    Verdict::Abort(e) => {
                        req.ctx.update(|s| s.chain = std::mem::take(&mut chain));
                        return Err(e);
                    }
                    Verdict::Retry { outcome, status, error, counts, retry_after } => {
                        chain.push(ChainEntry {
                            provider_id: provider.id,
                            provider: provider.name.clone(),
                            step: ChainStep::Attempt {
                                attempt,
                                outcome,
                                status,
                                latency_ms,
                                error: Some(error.clone()),
                            },
                        });
                        last_error = Some(format!("{}: {error}", provider.name));
                        last_public = Some(match (outcome, status) {
                            (AttemptOutcome::UpstreamError, Some(code)) => format!("upstream status {code}"),
                            (AttemptOutcome::Timeout, _) => "upstream timeout".to_owned(),
                            (AttemptOutcome::Fake200, _) => "an error sent with status 200".to_owned(),
                            _ => "upstream connection failed".to_owned(),
                        });
                        if let Some(after) = retry_after {
                            let until = view
                                .now_ms
                                .saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
                            let _ = self.state.set_cooldown(provider.id, until).await;
                            switch_reason = Some((counts, error));
                            break;
                        }
                        if attempt == attempts {
                            switch_reason = Some((counts, error));
                        }
                    }
                }
            }
            if delivered.is_some() {
                break;
            }
            if let Some((counts, reason)) = switch_reason {
                if counts {
                    let _ = self
                        .state
                        .record_attempt(provider.id, breaker, AttemptResult::Failure, &reason)
                        .await;
                }
                excluded.push(provider.id);
            }
        }
        match delivered {
            Some(resp) => {
                req.ctx.update(|s| s.chain = chain);
                Ok(resp)
            }
            None => {
                let message = if tried == 0 {
                    format!(
                        "no provider is available for this request (dialect {}, groups {})",
                        req.dialect,
                        groups.join(", ")
                    )
                } else {
                    let last = last_public.map(|l| format!("; last failure: {l}")).unwrap_or_default();
                    format!("all {tried} providers tried failed{last}")
                };
                req.ctx.update(|s| s.chain = chain);
                let code = if tried == 0 { "no_provider_available" } else { ALL_PROVIDERS_FAILED };
                let err = GatewayError::new(ErrorKind::NoProvider, code, message);
                Err(match last_error {
                    Some(detail) => err.with_detail(detail),
                    None => err,
                })
            }
        }
    }

    /// Breaker and binding bookkeeping after a successful attempt. `health` is what the routing
    /// view read for the provider (none when the view failed); `bound` where the session is
    /// bound now (the view refreshed it, or it was written alongside the attempt).
    async fn on_success(
        &self,
        provider: &Arc<Provider>,
        breaker: BreakerConfig,
        health: Option<&ProviderHealth>,
        session: Option<&str>,
        bound: Option<Id>,
    ) {
        // A success leaves a clean record (closed, no failures, no half-open probes) as it is, so
        // writing it would change nothing: skip the round trip. A failure another replica
        // recorded since the view then is not reset by this success but by the next one.
        let clean = health.is_some_and(|h| {
            let r = &h.breaker;
            r.failures == 0 && r.half_open_successes == 0 && r.opened_at_ms.is_none()
        });
        if !clean {
            let _ = self.state.record_attempt(provider.id, breaker, AttemptResult::Success, "").await;
        }
        if let Some(sid) = session
            && !provider.options.disable_session_reuse
            && bound != Some(provider.id)
        {
            let _ = self.state.bind_session(sid, provider.id, self.settings.session_ttl).await;
        }
    }
}

impl<S> Service<GatewayRequest> for RouterService<S>
where
    S: Service<GatewayRequest, Response = GatewayResponse, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<GatewayResponse, GatewayError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each attempt drives a clone of the inner service to readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GatewayRequest) -> Self::Future {
        let shared = self.shared.clone();
        let inner = self.inner.clone();
        Box::pin(async move { shared.route(inner, req).await })
    }
}
