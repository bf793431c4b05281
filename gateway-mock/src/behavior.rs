//! What the mock answers: timing, failures, content and reported usage.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Knobs that shape every response of a [`crate::MockUpstream`].
///
/// Changed at runtime with [`crate::MockUpstream::set_behavior`]; each request takes one snapshot
/// when it arrives, so a change never affects a response already being produced.
///
/// Its serde form (used by the shared binding scenarios and the Python and Node bindings) has the
/// field names below; every field is optional (missing ones keep their defaults), unknown fields
/// are rejected, durations are serde's `{"secs": N, "nanos": N}` and [`Fake200`] is snake_case.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockBehavior {
    /// Sleep before the response headers are sent (time to first byte). Default 0.
    pub first_byte_delay: Duration,
    /// Number of text deltas the reply text is split into when streaming (Anthropic
    /// `text_delta`, Chat content chunks, Responses `response.output_text.delta`, Gemini
    /// chunks). Default 3; values below 1 count as 1. When the text has fewer characters than
    /// `chunks`, the trailing deltas carry empty text so the event count stays exactly `chunks`.
    pub chunks: usize,
    /// Sleep between two consecutive content-carrying stream events (text deltas, tool
    /// argument pieces, reasoning summary deltas). Default 0.
    pub chunk_delay: Duration,
    /// Answer every request with this status and an error body of the matching type, in the
    /// dialect of the request (Anthropic, OpenAI or Google error envelope).
    pub force_status: Option<u16>,
    /// Answer with status 200 but a failure body (a "fake 200", as some relays send).
    pub fake_200: Option<Fake200>,
    /// With `force_status`: also send a `Retry-After` header with this many seconds.
    pub retry_after_secs: Option<u64>,
    /// Streaming only: after this many stream events (SSE events, including Chat's
    /// `data: [DONE]`, or Gemini JSON-array elements) were written, abort the connection without
    /// terminating the body, so the client observes a body error rather than a clean end.
    pub reset_after_events: Option<usize>,
    /// When set, requests presenting a different key get a 401 in their dialect's shape. The
    /// key is read where the vendor expects it: Anthropic `x-api-key` (or an `Authorization:
    /// Bearer` token), OpenAI the bearer token only, Gemini `x-goog-api-key` or `?key=`.
    pub expected_api_key: Option<String>,
    /// The assistant text of every reply.
    pub reply_text: String,
    /// Token counts reported in responses, mapped to each dialect's accounting (OpenAI and
    /// Gemini count cache reads and writes inside their prompt totals).
    pub usage: MockUsage,
    /// Model name echoed in responses; `None` echoes the request's `model`.
    pub model_override: Option<String>,
}

impl Default for MockBehavior {
    fn default() -> Self {
        Self {
            first_byte_delay: Duration::ZERO,
            chunks: 3,
            chunk_delay: Duration::ZERO,
            force_status: None,
            fake_200: None,
            retry_after_secs: None,
            reset_after_events: None,
            expected_api_key: None,
            reply_text: "Hello from the mock upstream.".to_owned(),
            usage: MockUsage::default(),
            model_override: None,
        }
    }
}

/// The kinds of "200 but actually an error" answers relays are known to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fake200 {
    /// An HTML page (`text/html`), e.g. a proxy's login or error page.
    Html,
    /// `application/json` with the dialect's error object.
    JsonError,
    /// `text/event-stream` whose first event is an error: Anthropic `event: error`, Chat
    /// `data: {"error":..}`, Responses `error` then `response.failed`, Gemini
    /// `data: {"error":..}`.
    SseError,
}

/// Token counts the mock reports, in Anthropic's usage vocabulary.
///
/// `cache_creation_input_tokens` is reported as given; it is not derived from the 5m/1h split,
/// so tests can exercise inconsistent upstream data too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockUsage {
    /// `usage.input_tokens` (uncached input). Default 25.
    pub input_tokens: u64,
    /// `usage.output_tokens`. Default 15.
    pub output_tokens: u64,
    /// `usage.cache_creation_input_tokens`. Default 0.
    pub cache_creation_input_tokens: u64,
    /// `usage.cache_creation.ephemeral_5m_input_tokens`. Default 0.
    pub cache_creation_5m_input_tokens: u64,
    /// `usage.cache_creation.ephemeral_1h_input_tokens`. Default 0.
    pub cache_creation_1h_input_tokens: u64,
    /// `usage.cache_read_input_tokens`. Default 0.
    pub cache_read_input_tokens: u64,
}

impl Default for MockUsage {
    fn default() -> Self {
        Self {
            input_tokens: 25,
            output_tokens: 15,
            cache_creation_input_tokens: 0,
            cache_creation_5m_input_tokens: 0,
            cache_creation_1h_input_tokens: 0,
            cache_read_input_tokens: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_json_keeps_defaults_and_rejects_unknown_keys() {
        let b: MockBehavior = serde_json::from_value(serde_json::json!({
            "force_status": 429,
            "retry_after_secs": 7,
            "fake_200": "sse_error",
            "first_byte_delay": {"secs": 0, "nanos": 5_000_000},
            "usage": {"input_tokens": 3}
        }))
        .expect("valid behavior");
        assert_eq!(b.force_status, Some(429));
        assert_eq!(b.retry_after_secs, Some(7));
        assert_eq!(b.fake_200, Some(Fake200::SseError));
        assert_eq!(b.first_byte_delay, Duration::from_millis(5));
        assert_eq!(b.usage, MockUsage { input_tokens: 3, ..MockUsage::default() });
        assert_eq!(b.chunks, 3, "missing fields keep their defaults");
        assert_eq!(b.reply_text, MockBehavior::default().reply_text);

        let typo = serde_json::from_value::<MockBehavior>(serde_json::json!({"force_stauts": 500}));
        assert!(typo.is_err(), "unknown keys are rejected");
        let typo = serde_json::from_value::<MockBehavior>(serde_json::json!({"usage": {"input": 1}}));
        assert!(typo.is_err(), "unknown usage keys are rejected");
    }

    #[test]
    fn serialized_form_reads_back() {
        let b = MockBehavior { fake_200: Some(Fake200::Html), chunks: 5, ..MockBehavior::default() };
        let json = serde_json::to_value(&b).expect("serialize");
        assert_eq!(json["fake_200"], "html");
        let back: MockBehavior = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back.fake_200, Some(Fake200::Html));
        assert_eq!(back.chunks, 5);
    }
}
