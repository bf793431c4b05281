//! The request and response types flowing through the pipeline, and the per-request context
//! that every stage writes into and the usage record is built from.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use parking_lot::Mutex;

use crate::config::{ApiKey, Provider, User};
use crate::dialect::Dialect;
use crate::usage::{Outcome, TokenUsage};

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Response body: a stream of frames relayed as they arrive.
pub type GatewayBody = UnsyncBoxBody<Bytes, BoxError>;

/// Response of the pipeline.
pub type GatewayResponse = http::Response<GatewayBody>;

/// A whole-bytes body for responses the gateway makes itself.
pub fn full_body(bytes: impl Into<Bytes>) -> GatewayBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// What ingress learned cheaply from the body; everything else stays opaque bytes.
#[derive(Debug, Clone, Default)]
pub struct RequestHints {
    /// `model` field (or the model in a Gemini path).
    pub model: Option<String>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Claude Code's `metadata.user_id`.
    pub metadata_user_id: Option<String>,
    /// Codex CLI's `prompt_cache_key` (equal to its session id).
    pub prompt_cache_key: Option<String>,
    /// OpenAI chat: the client asked for a usage chunk (`stream_options.include_usage`). The
    /// gateway always asks upstream, and hides that chunk from clients that did not.
    pub wants_stream_usage: bool,
    /// Hash input for sessions without an explicit id: a 128-bit XXH3 of the system prompt and
    /// the first user message.
    pub conversation_fingerprint: Option<u128>,
}

/// A request after ingress: body buffered once (so failover can resend it), decoded, with its
/// dialect and hints.
#[derive(Debug)]
pub struct GatewayRequest {
    /// HTTP method.
    pub method: Method,
    /// Path and query as the client sent them.
    pub uri: Uri,
    /// Client headers.
    pub headers: HeaderMap,
    /// Decoded body.
    pub body: Bytes,
    /// Client dialect.
    pub dialect: Dialect,
    /// Cheaply parsed hints.
    pub hints: RequestHints,
    /// Shared per-request state.
    pub ctx: RequestContext,
    /// Provider chosen by the router for the current attempt.
    pub target: Option<Target>,
}

/// The provider an attempt goes to, and the body as it will be sent.
#[derive(Debug, Clone)]
pub struct Target {
    /// Chosen provider.
    pub provider: Arc<Provider>,
    /// Model after redirects (`None` if the request has none).
    pub forwarded_model: Option<String>,
    /// Body to send (differs from the client's when the model was redirected).
    pub body: Bytes,
}

/// Per-request state shared by all stages and by the response body, from which the usage
/// record is built exactly once.
#[derive(Debug, Clone)]
pub struct RequestContext(Arc<ContextInner>);

#[derive(Debug)]
struct ContextInner {
    request_id: String,
    started: Instant,
    created_at: chrono::DateTime<chrono::Utc>,
    method: Method,
    endpoint: String,
    user_agent: Option<String>,
    state: Mutex<ContextState>,
}

/// Mutable part of the context. Stages fill in what they learn.
#[derive(Debug, Default, Clone)]
pub struct ContextState {
    /// Client dialect, once known.
    pub dialect: Option<Dialect>,
    /// Authenticated user.
    pub user: Option<Arc<User>>,
    /// Authenticated key.
    pub key: Option<Arc<ApiKey>>,
    /// Session id.
    pub session_id: Option<String>,
    /// Model the client asked for.
    pub original_model: Option<String>,
    /// Model sent upstream.
    pub forwarded_model: Option<String>,
    /// Client asked for a stream.
    pub stream: bool,
    /// Provider of the (last) attempt.
    pub provider: Option<Arc<Provider>>,
    /// Time to upstream response headers.
    pub ttfb: Option<Duration>,
    /// Time to first generated token.
    pub ttft: Option<Duration>,
    /// Whether usage counts toward cost (false for e.g. `count_tokens`).
    pub billable: bool,
    /// Providers considered and attempts made.
    pub chain: Vec<crate::route::chain::ChainEntry>,
    /// What translation between dialects could not carry over.
    pub notes: Vec<String>,
    /// Drop the trailing usage-only chunk of a chat stream before the client sees it.
    pub hide_usage_chunk: bool,
    /// Usage of a response translated from another dialect, as the upstream reported it (for a
    /// stream: so far). The meter takes it instead of what it reads in the translated body: the
    /// client's dialect may not carry every count (OpenAI chat has no 5m/1h split of cache
    /// writes), and a complete body was already read once.
    pub upstream_usage: Option<TokenUsage>,
}

/// Facts known only when the response ends, passed to the finalizer.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Status sent to the client.
    pub status: u16,
    /// How it ended.
    pub outcome: Outcome,
    /// Tokens counted.
    pub usage: TokenUsage,
    /// Error message, if any.
    pub error: Option<String>,
}

impl RequestContext {
    /// A context for a request that just arrived.
    pub fn new(method: &Method, uri: &Uri, headers: &HeaderMap) -> Self {
        Self(Arc::new(ContextInner {
            request_id: new_request_id(),
            started: Instant::now(),
            created_at: chrono::Utc::now(),
            method: method.clone(),
            endpoint: uri.path().to_owned(),
            user_agent: headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                // `to_str` passes visible ASCII only, so any byte offset is a char boundary.
                .map(|s| s.get(..MAX_USER_AGENT_BYTES).unwrap_or(s).to_owned()),
            state: Mutex::new(ContextState { billable: true, ..Default::default() }),
        }))
    }

    /// Gateway request id (`x-request-id` on the response, `request_id` in the log).
    pub fn request_id(&self) -> &str {
        &self.0.request_id
    }

    /// Time since arrival.
    pub fn elapsed(&self) -> Duration {
        self.0.started.elapsed()
    }

    /// Arrival instant.
    pub fn started(&self) -> Instant {
        self.0.started
    }

    /// Arrival wall-clock time.
    pub fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at
    }

    /// Request method.
    pub fn method(&self) -> &str {
        self.0.method.as_str()
    }

    /// Request path.
    pub fn endpoint(&self) -> &str {
        &self.0.endpoint
    }

    /// Client user agent (truncated).
    pub fn user_agent(&self) -> Option<&str> {
        self.0.user_agent.as_deref()
    }

    /// Runs `f` with the mutable state locked; keep `f` short.
    pub fn update<R>(&self, f: impl FnOnce(&mut ContextState) -> R) -> R {
        f(&mut self.0.state.lock())
    }

    /// The authenticated user, if any (cheap: an `Arc` clone).
    pub fn user(&self) -> Option<Arc<User>> {
        self.0.state.lock().user.clone()
    }

    /// The authenticated key, if any.
    pub fn key(&self) -> Option<Arc<ApiKey>> {
        self.0.state.lock().key.clone()
    }

    /// A copy of the mutable state.
    pub fn snapshot(&self) -> ContextState {
        self.0.state.lock().clone()
    }

    /// The state for the usage record, built once at the end of the request: what only the
    /// record needs (session, models, chain, notes) is moved out rather than copied; the rest
    /// (dialect, user, key, provider...) stays readable, e.g. to render a late error.
    pub fn take_for_record(&self) -> ContextState {
        let mut state = self.0.state.lock();
        ContextState {
            dialect: state.dialect,
            user: state.user.clone(),
            key: state.key.clone(),
            session_id: state.session_id.take(),
            original_model: state.original_model.take(),
            forwarded_model: state.forwarded_model.take(),
            stream: state.stream,
            provider: state.provider.clone(),
            ttfb: state.ttfb,
            ttft: state.ttft,
            billable: state.billable,
            chain: std::mem::take(&mut state.chain),
            notes: std::mem::take(&mut state.notes),
            hide_usage_chunk: state.hide_usage_chunk,
            upstream_usage: state.upstream_usage.take(),
        }
    }

    /// The dialect to render errors in: the detected one, else Anthropic (our primary client).
    pub fn error_dialect(&self) -> Dialect {
        self.0.state.lock().dialect.unwrap_or(Dialect::Anthropic)
    }
}

/// Longest user agent kept for the log.
const MAX_USER_AGENT_BYTES: usize = 512;

/// Time-ordered, unique request ids (UUIDv7) so log rows sort by arrival.
fn new_request_id() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::now_v7().simple().encode_lower(&mut buf);
    let mut out = String::with_capacity(4 + id.len());
    out.push_str("req_");
    out.push_str(id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_method_path_and_at_most_512_bytes_of_user_agent() {
        let mut headers = HeaderMap::new();
        let long = "claude-cli/2.1 ".repeat(50);
        headers.insert(http::header::USER_AGENT, long.parse().expect("header value"));
        let uri: Uri = "/v1/messages?beta=true".parse().expect("uri");
        let ctx = RequestContext::new(&Method::POST, &uri, &headers);
        assert_eq!(ctx.method(), "POST");
        assert_eq!(ctx.endpoint(), "/v1/messages");
        assert_eq!(ctx.user_agent(), Some(&long[..512]));

        headers.insert(http::header::USER_AGENT, "curl/8".parse().expect("header value"));
        assert_eq!(RequestContext::new(&Method::GET, &uri, &headers).user_agent(), Some("curl/8"));
        assert!(ctx.request_id().starts_with("req_"));
    }
}
