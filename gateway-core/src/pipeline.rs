//! Assembles the pipeline. The layers, outermost first, and the contract between them:
//!
//! | stage | reads | adds |
//! |---|---|---|
//! | ingress ([`Gateway::handle`]) | raw HTTP request | [`GatewayRequest`] (body read once within the size limit, `content-encoding` undone, dialect from the path), context (`dialect`, `billable`) |
//! | [`RecordService`] | the whole context, the response | one usage record per request via the [`Recorder`] (which also adds the cost to the limit windows); errors rendered in the caller's dialect; `x-request-id` |
//! | [`AuthLayer`] | API key headers | context `user`, `key` |
//! | [`ingress::ParseLayer`] | body | request `hints` (model, stream, session hints); context `original_model`, `stream` |
//! | [`PolicyLayer`] | `user`/`key` `allowed_models`, `hints.model` | 403 for a model the caller may not use |
//! | [`SessionLayer`] | session headers, `metadata.user_id`, conversation fingerprint | context `session_id` |
//! | [`RouterLayer`] | `key`/`user` groups and limits, `dialect`, `model`, `session_id`, the state store | admission against the key's, user's and candidate providers' limits (429/402), in the same state call as the routing view; request `target` per attempt (provider, redirected model and body); context `provider`, `forwarded_model`, decision `chain`; state: session binding, breaker outcomes, cooldowns; retries and failover around the forwarder |
//! | [`ForwardService`] | `target` | the upstream response, body streaming; context `ttfb` |
//!
//! The recorder wraps the response body in a [`MeteredBody`], which reads usage as frames pass
//! and writes the record when the body ends or is dropped.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Method, header};
use http_body::Body;
use http_body_util::BodyExt;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder};

use crate::auth::AuthLayer;
use crate::catalog::{Catalog, CatalogHandle};
use crate::config::ConfigFile;
use crate::dialect::Dialect;
use crate::error::{ErrorKind, GatewayError};
use crate::forward::{ClientOptions, ClientPool, ForwardService};
use crate::ingress;
use crate::limit::{LimitEngine, LimitSettings, SpendHistory};
use crate::models::ModelsService;
use crate::policy::PolicyLayer;
use crate::request::{BoxError, GatewayBody, GatewayRequest, GatewayResponse, RequestContext, full_body};
use crate::route::breaker::{BreakerConfig, BreakerStatus};
use crate::route::{RouterLayer, RoutingSettings};
use crate::session::SessionLayer;
use crate::store::state::StateError;
use crate::store::{MemoryStateStore, NullUsageSink, StateStore, UsageSink};
use crate::usage::hide::HideUsageChunk;
use crate::usage::{MeteredBody, Recorder};

type Inner = BoxCloneSyncService<GatewayRequest, GatewayResponse, GatewayError>;

/// Outermost stage: never fails; renders errors, meters bodies, records every request.
#[derive(Clone)]
pub struct RecordService<S> {
    inner: S,
    recorder: Recorder,
}

impl<S> std::fmt::Debug for RecordService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordService").finish_non_exhaustive()
    }
}

/// Adds [`RecordService`].
#[derive(Debug, Clone)]
pub struct RecordLayer {
    recorder: Recorder,
}

impl RecordLayer {
    /// Records through `recorder`.
    pub fn new(recorder: Recorder) -> Self {
        Self { recorder }
    }
}

impl<S> Layer<S> for RecordLayer {
    type Service = RecordService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RecordService { inner, recorder: self.recorder.clone() }
    }
}

fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"))
}

fn set_request_id(headers: &mut http::HeaderMap, ctx: &RequestContext) {
    if let Ok(v) = HeaderValue::from_str(ctx.request_id()) {
        headers.insert(crate::header_names::X_REQUEST_ID, v);
    }
}

/// Renders `err`, records it, and returns the response.
fn error_response(recorder: &Recorder, ctx: &RequestContext, err: &GatewayError) -> GatewayResponse {
    if err.kind == ErrorKind::Internal || err.kind == ErrorKind::Upstream {
        tracing::warn!(request_id = ctx.request_id(), "{}", err.log_text());
    }
    recorder.finish_error(ctx, err);
    let mut resp: GatewayResponse =
        err.to_response::<Bytes>(ctx.error_dialect(), ctx.request_id()).map(full_body);
    set_request_id(resp.headers_mut(), ctx);
    resp
}

impl<S> Service<GatewayRequest> for RecordService<S>
where
    S: Service<GatewayRequest, Response = GatewayResponse, Error = GatewayError> + Send,
    S::Future: Send + 'static,
{
    type Response = GatewayResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<GatewayResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Inner stages are always ready; an error here would be a bug, surfaced per request.
        let _ = self.inner.poll_ready(cx);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GatewayRequest) -> Self::Future {
        let ctx = req.ctx.clone();
        let recorder = self.recorder.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = match fut.await {
                Ok(resp) => resp,
                Err(err) => return Ok(error_response(&recorder, &ctx, &err)),
            };
            let (mut parts, body) = resp.into_parts();
            let sse = is_event_stream(&parts.headers);
            set_request_id(&mut parts.headers, &ctx);
            let hide_usage = sse && parts.status.is_success() && ctx.update(|s| s.hide_usage_chunk);
            let metered = MeteredBody::new(body, sse, parts.status.as_u16(), ctx, recorder).boxed_unsync();
            // The meter reads the usage chunk first; only then is it hidden from the client.
            let body = if hide_usage { HideUsageChunk::new(metered).boxed_unsync() } else { metered };
            Ok(GatewayResponse::from_parts(parts, body))
        })
    }
}

/// Settings of a [`Gateway`] that are not part of the catalog.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Request body limit after decompression.
    pub max_body_bytes: usize,
    /// Upstream HTTP client settings.
    pub client: ClientOptions,
    /// Sessions, failover, breakers, timezone.
    pub routing: RoutingSettings,
    /// Rate and spend limits (`ENABLE_RATE_LIMIT`, `RATE_LIMIT_FAIL_MODE`); their timezone and
    /// session TTL are taken from `routing`.
    pub limits: LimitSettings,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            max_body_bytes: ingress::DEFAULT_MAX_BODY_BYTES,
            client: ClientOptions::default(),
            routing: RoutingSettings::default(),
            limits: LimitSettings::default(),
        }
    }
}

/// Builds a [`Gateway`].
pub struct GatewayBuilder {
    catalog: Option<CatalogHandle>,
    sink: Arc<dyn UsageSink>,
    settings: GatewaySettings,
    config_error: Option<crate::config::ConfigError>,
    state: Option<Arc<dyn StateStore>>,
    history: Option<Arc<dyn SpendHistory>>,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        Self {
            catalog: None,
            sink: Arc::new(NullUsageSink),
            settings: GatewaySettings::default(),
            config_error: None,
            state: None,
            history: None,
        }
    }
}

impl GatewayBuilder {
    /// A builder with an empty catalog and a sink that discards records.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves from a live, swappable catalog (the server swaps it when config changes).
    pub fn catalog_handle(mut self, handle: CatalogHandle) -> Self {
        self.catalog = Some(handle);
        self
    }

    /// Serves from a fixed catalog.
    pub fn catalog(self, catalog: Catalog) -> Self {
        self.catalog_handle(CatalogHandle::new(catalog))
    }

    /// Serves from a TOML config (ids assigned in file order); an invalid config fails `build`.
    pub fn config(mut self, file: &ConfigFile) -> Self {
        match Catalog::from_config(file) {
            Ok(catalog) => self.catalog(catalog),
            Err(e) => {
                self.config_error = Some(e);
                self
            }
        }
    }

    /// Where usage records go.
    pub fn usage_sink(mut self, sink: Arc<dyn UsageSink>) -> Self {
        self.sink = sink;
        self
    }

    /// Limits and client settings.
    pub fn settings(mut self, settings: GatewaySettings) -> Self {
        self.settings = settings;
        self
    }

    /// Where routing keeps shared state (default: in memory, for one process).
    pub fn state_store(mut self, state: Arc<dyn StateStore>) -> Self {
        self.state = Some(state);
        self
    }

    /// Where spend windows are rebuilt from after a restart or an emptied Redis (the request
    /// log); without one, they start from zero.
    pub fn spend_history(mut self, history: Arc<dyn SpendHistory>) -> Self {
        self.history = Some(history);
        self
    }

    /// Assembles the stack.
    pub fn build(self) -> Result<Gateway, GatewayError> {
        if let Some(e) = self.config_error {
            return Err(GatewayError::new(ErrorKind::Internal, "invalid_config", e.to_string()));
        }
        let catalog = self.catalog.unwrap_or_else(|| CatalogHandle::new(Catalog::default()));
        let clients = ClientPool::new(self.settings.client.clone());
        // Building the first client surfaces a broken TLS setup at build time, not per request.
        clients.default_client()?;
        let state: Arc<dyn StateStore> = self.state.unwrap_or_else(|| Arc::new(MemoryStateStore::new()));
        let limit_settings = LimitSettings {
            timezone: self.settings.routing.timezone,
            session_ttl: self.settings.routing.session_ttl,
            ..self.settings.limits.clone()
        };
        let limits = Arc::new(LimitEngine::new(state.clone(), self.history, limit_settings));
        let recorder = Recorder::new(catalog.clone(), self.sink).with_limits(limits.clone());
        let proxy: Inner = BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(AuthLayer::new(catalog.clone()))
                .layer(ingress::ParseLayer)
                .layer(PolicyLayer)
                .layer(SessionLayer)
                .layer(RouterLayer::new(
                    catalog.clone(),
                    state.clone(),
                    self.settings.routing.clone(),
                    limits.clone(),
                ))
                .service(ForwardService::new(clients.clone())),
        );
        let models: Inner = BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(AuthLayer::new(catalog.clone()))
                .service(ModelsService::new(catalog.clone(), clients)),
        );
        Ok(Gateway(Arc::new(GatewayInner {
            proxy: RecordLayer::new(recorder.clone()).layer(proxy),
            models: RecordLayer::new(recorder.clone()).layer(models),
            recorder,
            catalog,
            state,
            limits,
            settings: self.settings,
        })))
    }
}

struct GatewayInner {
    proxy: RecordService<Inner>,
    models: RecordService<Inner>,
    recorder: Recorder,
    catalog: CatalogHandle,
    state: Arc<dyn StateStore>,
    limits: Arc<LimitEngine>,
    settings: GatewaySettings,
}

/// The assembled gateway. Cheap to clone; serves any number of requests concurrently.
#[derive(Clone)]
pub struct Gateway(Arc<GatewayInner>);

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("settings", &self.0.settings).finish_non_exhaustive()
    }
}

/// What the gateway does with a path.
enum Endpoint {
    /// Proxied to a provider; `billable` false for e.g. token counting.
    Proxy { dialect: Dialect, billable: bool },
    /// The model list.
    Models,
}

fn classify(method: &Method, path: &str) -> Result<Endpoint, GatewayError> {
    let not_found = || {
        GatewayError::new(
            ErrorKind::NotFound,
            "not_found",
            format!("{method} {path} is not an endpoint of this gateway"),
        )
    };
    let proxy = |dialect, billable| Ok(Endpoint::Proxy { dialect, billable });
    match (method, path) {
        (&Method::POST, "/v1/messages") => proxy(Dialect::Anthropic, true),
        (&Method::POST, "/v1/messages/count_tokens") => proxy(Dialect::Anthropic, false),
        (&Method::POST, "/v1/chat/completions") => proxy(Dialect::OpenaiChat, true),
        (&Method::POST, "/v1/responses") => proxy(Dialect::OpenaiResponses, true),
        (&Method::POST, "/v1/responses/compact") => proxy(Dialect::OpenaiResponses, false),
        (&Method::GET, "/v1/models" | "/v1beta/models") => Ok(Endpoint::Models),
        (&Method::POST, _) => match ingress::gemini_action(path) {
            Some((_, action)) => proxy(Dialect::Gemini, action != ingress::GeminiAction::CountTokens),
            None => Err(not_found()),
        },
        _ => Err(not_found()),
    }
}

impl Gateway {
    /// A builder.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::new()
    }

    /// Limit enforcement (its failure counter, its settings).
    pub fn limits(&self) -> &LimitEngine {
        &self.0.limits
    }

    /// The live catalog.
    pub fn catalog(&self) -> &CatalogHandle {
        &self.0.catalog
    }

    /// The circuit breaker of a provider; `None` for an unknown id.
    pub async fn breaker_status(
        &self,
        provider: crate::config::Id,
    ) -> Option<Result<BreakerStatus, StateError>> {
        let catalog = self.0.catalog.load();
        let p = catalog.providers().iter().find(|p| p.id == provider)?.clone();
        Some(self.0.state.breaker_status(p.id, BreakerConfig::of(&p.options)).await)
    }

    /// Closes a provider's circuit and clears its `Retry-After` cooldown.
    pub async fn reset_breaker(&self, provider: crate::config::Id) -> Result<(), StateError> {
        self.0.state.reset_breaker(provider).await
    }

    /// Serves one HTTP request. Never fails: errors become responses in the caller's dialect,
    /// and every request yields one usage record.
    pub fn handle<B>(&self, req: http::Request<B>) -> impl Future<Output = GatewayResponse> + Send + 'static
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
        let gw = self.clone();
        async move { gw.handle_boxed(req).await }
    }

    async fn handle_boxed(&self, req: http::Request<GatewayBody>) -> GatewayResponse {
        let (mut parts, body) = req.into_parts();
        let ctx = RequestContext::new(&parts.method, &parts.uri, &parts.headers);
        // If the client goes away before a response exists (while the body is read, or while
        // the upstream is slow to answer), this future is dropped: the guard records that.
        let guard = AbandonGuard { ctx: ctx.clone(), recorder: self.0.recorder.clone(), armed: true };
        let resp = self.respond(&mut parts, body, ctx).await;
        guard.disarm();
        resp
    }

    async fn respond(
        &self,
        parts: &mut http::request::Parts,
        body: GatewayBody,
        ctx: RequestContext,
    ) -> GatewayResponse {
        let endpoint = match classify(&parts.method, parts.uri.path()) {
            Ok(e) => e,
            Err(err) => {
                ctx.update(|s| s.dialect = Dialect::from_path(parts.uri.path()));
                drop(body);
                return error_response(&self.0.recorder, &ctx, &err);
            }
        };
        let (dialect, billable, is_models) = match endpoint {
            Endpoint::Proxy { dialect, billable } => (dialect, billable, false),
            Endpoint::Models => (models_dialect(&parts.headers, parts.uri.path()), false, true),
        };
        ctx.update(|s| {
            s.dialect = Some(dialect);
            s.billable = billable;
        });
        let mut greq = GatewayRequest {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: std::mem::take(&mut parts.headers),
            body: Bytes::new(),
            dialect,
            hints: Default::default(),
            ctx: ctx.clone(),
            target: None,
        };
        let service = if is_models {
            drop(body);
            &self.0.models
        } else {
            let limit = self.0.settings.max_body_bytes;
            let prepared = async {
                let raw = ingress::read_body(body, limit).await?;
                ingress::decode_content_encoding(&mut greq.headers, raw, limit)
            }
            .await;
            match prepared {
                Ok(decoded) => greq.body = decoded,
                Err(err) => return error_response(&self.0.recorder, &ctx, &err),
            }
            &self.0.proxy
        };
        // RecordService is always ready and its future owns everything it needs.
        let fut = service.clone().call(greq);
        match fut.await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// Records a request whose handling was dropped before it produced a response.
struct AbandonGuard {
    ctx: RequestContext,
    recorder: Recorder,
    armed: bool,
}

impl AbandonGuard {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if self.armed {
            self.recorder.finish(
                &self.ctx,
                crate::request::Completion {
                    // nginx's "client closed request": no status was ever sent.
                    status: 499,
                    outcome: crate::usage::Outcome::ClientAbort,
                    usage: Default::default(),
                    error: Some("client disconnected before the response began".to_owned()),
                },
            );
        }
    }
}

/// `GET /v1/models` answers in Anthropic's shape when the client sends `anthropic-version`
/// (Claude Code and the Anthropic SDKs do), else in OpenAI's list shape.
fn models_dialect(headers: &http::HeaderMap, path: &str) -> Dialect {
    if path.starts_with("/v1beta/") || headers.contains_key(crate::header_names::X_GOOG_API_KEY) {
        Dialect::Gemini
    } else if headers.contains_key(crate::header_names::ANTHROPIC_VERSION) {
        Dialect::Anthropic
    } else {
        Dialect::OpenaiChat
    }
}

impl<B> Service<http::Request<B>> for Gateway
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<GatewayBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.handle(req);
        Box::pin(async move { Ok(fut.await) })
    }
}
