//! Usage records: what one request consumed, cost, timing and outcome.

pub mod cost;
pub mod extract;
pub mod hide;
pub mod meter;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::config::Id;
use crate::dialect::Dialect;

pub use cost::{UsdNanos, compute_cost};
pub use extract::{SseUsageTap, usage_from_json};
pub use meter::{MeteredBody, Recorder};

/// Token counts of one request, in Anthropic's accounting: `input_tokens` excludes cached and
/// cache-written tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens (thinking included).
    pub output_tokens: u64,
    /// All tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Of those, written with a 5-minute TTL (when the upstream reports the split).
    pub cache_creation_5m_input_tokens: u64,
    /// Of those, written with a 1-hour TTL (when the upstream reports the split).
    pub cache_creation_1h_input_tokens: u64,
    /// Tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

impl TokenUsage {
    /// Whether any count is non-zero.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Upstream answered 2xx and the response was delivered completely.
    Success,
    /// Upstream answered with an error status, passed through to the client.
    UpstreamError,
    /// The gateway rejected the request before forwarding (auth, validation, no provider).
    Rejected,
    /// The upstream could not be reached or broke off mid-response.
    Failed,
    /// The client went away before the response was complete.
    ClientAbort,
}

impl Outcome {
    /// The stable name stored in the request log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::UpstreamError => "upstream_error",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::ClientAbort => "client_abort",
        }
    }
}

/// One row of the request log. Every request that reaches the gateway yields exactly one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Gateway-assigned id, also returned to the client in `x-request-id`.
    pub request_id: String,
    /// When the request arrived.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Authenticated user, if auth got that far.
    pub user_id: Option<Id>,
    /// Authenticated key.
    pub key_id: Option<Id>,
    /// Provider that served (or last tried) the request.
    pub provider_id: Option<Id>,
    /// Its name, kept for readability after providers are renamed or deleted.
    pub provider_name: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Request path, without the query.
    pub endpoint: String,
    /// Client dialect.
    pub dialect: Option<Dialect>,
    /// Model the client asked for.
    pub original_model: Option<String>,
    /// Model sent upstream after redirects.
    pub forwarded_model: Option<String>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Status returned to the client (for an aborted stream: the status it had begun with).
    pub status_code: u16,
    /// How the request ended.
    pub outcome: Outcome,
    /// Tokens counted (partial on aborts).
    pub usage: TokenUsage,
    /// Cost in exact nano-dollars; `None` when the model has no price.
    pub cost: Option<UsdNanos>,
    /// Provider cost multiplier applied.
    pub cost_multiplier: Option<Decimal>,
    /// Wall time from arrival to the end of the response body.
    pub duration_ms: u64,
    /// Arrival to upstream response headers.
    pub ttfb_ms: Option<u64>,
    /// Arrival to the first generated token (first content delta, or whole body when not streaming).
    pub ttft_ms: Option<u64>,
    /// Session the request belongs to.
    pub session_id: Option<String>,
    /// Error message when the request did not succeed.
    pub error: Option<String>,
    /// Client `user-agent`.
    pub user_agent: Option<String>,
    /// Providers considered and attempts made, in order.
    #[serde(default)]
    pub decision_chain: Vec<crate::route::chain::ChainEntry>,
    /// What translation between dialects could not carry over.
    #[serde(default)]
    pub translation_notes: Vec<String>,
}
