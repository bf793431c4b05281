//! Pieces every dialect shares: request parsing, schema-driven tool arguments, text splitting,
//! token accounting and the paced SSE producer.

use std::iter;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::behavior::{MockBehavior, MockUsage};
use crate::body::{Chunk, MockBody};

/// Number of argument pieces a tool call is streamed in (fewer for tiny arguments).
pub(crate) const TOOL_JSON_PIECES: usize = 3;

/// Frames buffered between the stream producer and the connection.
const STREAM_BUFFER: usize = 16;

/// Body of `Fake200::Html`, the page a misconfigured relay or captive proxy answers with.
pub(crate) const HTML_PAGE: &str = "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>";

/// Message of every fake-200 error body.
pub(crate) const FAKE_200_MESSAGE: &str = "mock upstream: upstream account suspended";

/// The reasoning summary / thought text of dialects that expose reasoning, when it was asked for.
pub(crate) const REASONING_TEXT: &str =
    "**Planning the reply**\n\nThe request is simple, so a short direct answer is best.";

/// A response with `status`, `content-type` and a complete body.
pub(crate) fn full_response(
    status: u16,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Parses a request body that must be a JSON object; the error is the message for a 400.
pub(crate) fn parse_object(body: &Bytes) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err("mock upstream: the request body must be a JSON object".to_owned()),
        Err(err) => Err(format!("mock upstream: the request body is not valid JSON: {err}")),
    }
}

/// Deterministic rough token estimate of a request body (about four characters per token),
/// never zero.
pub(crate) fn estimate_tokens(body: &Bytes) -> u64 {
    let chars = String::from_utf8_lossy(body).chars().count() as u64;
    (chars / 4).max(1)
}

/// Seconds since the Unix epoch, for `created` fields.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The model to report: the override, else the request's, else the dialect's default.
pub(crate) fn reported_model(behavior: &MockBehavior, requested: Option<&str>, default: &str) -> String {
    behavior
        .model_override
        .clone()
        .or_else(|| requested.map(str::to_owned))
        .unwrap_or_else(|| default.to_owned())
}

/// `behavior.expected_api_key` is unset or equals `presented`.
pub(crate) fn key_accepted(behavior: &MockBehavior, presented: Option<&str>) -> bool {
    behavior.expected_api_key.as_deref().is_none_or(|expected| presented == Some(expected))
}

/// Token counts of one reply after the dialect-independent adjustments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accounting {
    /// The configured counts, with `output_tokens` lowered to the request's output limit.
    pub usage: MockUsage,
    /// Part of `usage.output_tokens` spent on reasoning (0 unless the request asked for it).
    pub reasoning_tokens: u64,
}

impl Accounting {
    /// Input as OpenAI and Gemini count it: cached and cache-written tokens are part of the
    /// prompt there, while Anthropic reports them beside `input_tokens`.
    pub(crate) fn prompt_tokens(&self) -> u64 {
        self.usage.input_tokens + self.usage.cache_read_input_tokens + self.usage.cache_creation_input_tokens
    }

    /// `usage.cache_read_input_tokens`, the cached share of [`prompt_tokens`](Self::prompt_tokens).
    pub(crate) fn cached_tokens(&self) -> u64 {
        self.usage.cache_read_input_tokens
    }

    /// All output tokens, reasoning included (OpenAI's `completion_tokens` / `output_tokens`).
    pub(crate) fn output_tokens(&self) -> u64 {
        self.usage.output_tokens
    }
}

/// The reply text and accounting after applying the request's output-token limit.
pub(crate) struct Limited {
    /// The (possibly cut) reply text.
    pub text: String,
    /// Whether the limit cut the reply (`length`, `max_output_tokens`, `MAX_TOKENS`).
    pub truncated: bool,
    /// Token counts to report.
    pub accounting: Accounting,
}

/// Applies an output-token limit to a text reply, like a real model that runs out of budget:
/// when `limit` is below the configured `output_tokens`, exactly `limit` tokens are reported and
/// the text is cut in proportion. Reasoning, when requested, takes a third of the output.
pub(crate) fn limit_text(
    behavior: &MockBehavior,
    text: &str,
    limit: Option<u64>,
    reasoning: bool,
) -> Limited {
    let mut usage = behavior.usage;
    let mut text = text.to_owned();
    let mut truncated = false;
    // A zero limit is rejected by the real APIs; the mock just ignores it rather than invent a reply.
    if let Some(limit) = limit.filter(|limit| *limit > 0 && *limit < usage.output_tokens) {
        let chars = text.chars().count() as u64;
        let keep = (chars * limit).div_ceil(usage.output_tokens);
        text = text.chars().take(usize::try_from(keep).unwrap_or(usize::MAX)).collect();
        usage.output_tokens = limit;
        truncated = true;
    }
    let reasoning_tokens = if reasoning { usage.output_tokens / 3 } else { 0 };
    Limited { text, truncated, accounting: Accounting { usage, reasoning_tokens } }
}

/// Accounting for a reply that is not cut (tool calls ignore output limits).
pub(crate) fn accounting(behavior: &MockBehavior, reasoning: bool) -> Accounting {
    limit_text(behavior, "", None, reasoning).accounting
}

/// Reads a non-negative integer field, accepting the JSON number forms clients send.
pub(crate) fn u64_field(value: Option<&Value>) -> Option<u64> {
    value.and_then(|v| v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)))
}

/// A tool call the mock decided to make: the tool's name and its arguments.
pub(crate) struct ToolCall {
    /// Name of the called tool.
    pub name: String,
    /// Arguments built from the tool's parameter schema.
    pub arguments: Value,
}

impl ToolCall {
    /// Builds the call of tool `name` from its parameter schema.
    pub(crate) fn new(name: Option<&str>, schema: Option<&Value>) -> Self {
        Self { name: name.unwrap_or("tool").to_owned(), arguments: mock_input(schema) }
    }

    /// The arguments as a JSON string, as OpenAI transports them.
    pub(crate) fn arguments_json(&self) -> String {
        self.arguments.to_string()
    }
}

/// Splits tool arguments into the pieces a stream delivers them in.
pub(crate) fn argument_pieces(arguments: &str) -> Vec<&str> {
    split_even(arguments, TOOL_JSON_PIECES.min(arguments.chars().count()).max(1))
}

/// A tool input that satisfies a simple JSON schema: one value per declared property (and per
/// required name), typed after the property's schema.
pub(crate) fn mock_input(schema: Option<&Value>) -> Value {
    let mut input = Map::new();
    if let Some(properties) = schema.and_then(|s| s.get("properties")).and_then(Value::as_object) {
        for (name, property) in properties {
            input.insert(name.clone(), mock_value(property));
        }
    }
    if let Some(required) = schema.and_then(|s| s.get("required")).and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            input.entry(name).or_insert(Value::Null);
        }
    }
    Value::Object(input)
}

fn mock_value(property: &Value) -> Value {
    // An enum's first member is the only way to stay valid against the schema.
    if let Some(first) = property.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    let ty = match property.get("type") {
        Some(Value::String(ty)) => ty.as_str(),
        // `["string", "null"]`: prefer the non-null type.
        Some(Value::Array(types)) => {
            types.iter().filter_map(Value::as_str).find(|t| !t.eq_ignore_ascii_case("null")).unwrap_or("null")
        }
        _ => "",
    };
    // Gemini's OpenAPI-style schemas spell types in upper case (`STRING`).
    match ty.to_ascii_lowercase().as_str() {
        "string" => json!("mock"),
        "number" | "integer" => json!(1),
        "boolean" => json!(true),
        _ => Value::Null,
    }
}

/// Splits `text` into exactly `parts` (at least 1) pieces of nearly equal character counts, on
/// character boundaries. Pieces are empty when `text` has fewer characters than `parts`.
pub(crate) fn split_even(text: &str, parts: usize) -> Vec<&str> {
    let parts = parts.max(1);
    let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).chain(iter::once(text.len())).collect();
    let chars = bounds.len() - 1;
    (0..parts).map(|k| &text[bounds[k * chars / parts]..bounds[(k + 1) * chars / parts]]).collect()
}

/// One encoded stream frame (an SSE event, or a piece of a JSON array stream).
pub(crate) struct Event {
    /// The frame's bytes, written as one body frame.
    pub bytes: Bytes,
    /// Carries content (a delta), so `chunk_delay` applies before it.
    pub content: bool,
}

impl Event {
    /// A frame of `bytes`; `content` marks deltas that `chunk_delay` paces.
    pub(crate) fn new(bytes: impl Into<Bytes>, content: bool) -> Self {
        Self { bytes: bytes.into(), content }
    }
}

/// A 200 streaming response fed from `events`, paced and possibly reset per `behavior`.
pub(crate) fn stream_response(
    behavior: &MockBehavior,
    events: Vec<Event>,
    content_type: &'static str,
) -> Response<MockBody> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(produce(tx, events, behavior.chunk_delay, behavior.reset_after_events));
    let mut response = Response::new(MockBody::channel(rx));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Feeds the events into the response body, one frame each, pacing content events.
async fn produce(
    tx: mpsc::Sender<Chunk>,
    events: Vec<Event>,
    chunk_delay: Duration,
    reset_after_events: Option<usize>,
) {
    if reset_after_events == Some(0) {
        abort(&tx).await;
        return;
    }
    let mut content_sent = false;
    for (written, event) in events.into_iter().enumerate() {
        if event.content {
            if content_sent && !chunk_delay.is_zero() {
                tokio::time::sleep(chunk_delay).await;
            }
            content_sent = true;
        }
        if tx.send(Chunk::Data(event.bytes)).await.is_err() {
            // The client went away; nobody is listening.
            return;
        }
        if reset_after_events == Some(written + 1) {
            abort(&tx).await;
            return;
        }
    }
}

/// Tears the response down once the events already sent had a chance to reach the client.
async fn abort(tx: &mpsc::Sender<Chunk>) {
    // Wait until the body has taken every frame, then give the connection a moment to write
    // them out (HTTP/2 writes from a separate task), so the client sees a truncated stream
    // rather than no stream at all.
    while tx.capacity() < tx.max_capacity() && !tx.is_closed() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _ = tx.send(Chunk::Abort).await;
}

/// Serializes a wire value. The mock's wire types cannot fail to serialize; should that ever
/// change, an empty object is better for a test double than a panic inside the server.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|err| {
        tracing::error!(%err, "mock upstream: serialization failed");
        "{}".to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_even_keeps_every_character_and_the_count() {
        let pieces = split_even("héllo wörld", 4);
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.concat(), "héllo wörld");
        assert!(pieces.iter().all(|p| !p.is_empty()));
        let short = split_even("ab", 5);
        assert_eq!(short.len(), 5);
        assert_eq!(short.concat(), "ab");
        assert_eq!(split_even("abc", 0), vec!["abc"]);
    }

    #[test]
    fn mock_input_follows_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": { "type": "string" },
                "days": { "type": "integer" },
                "ratio": { "type": "number" },
                "metric": { "type": "boolean" },
                "unit": { "type": "string", "enum": ["celsius", "fahrenheit"] },
                "note": { "type": ["null", "string"] },
                "tags": { "type": "array" }
            },
            "required": ["city", "extra"]
        });
        assert_eq!(
            mock_input(Some(&schema)),
            json!({
                "city": "mock", "days": 1, "ratio": 1, "metric": true, "unit": "celsius",
                "note": "mock", "tags": null, "extra": null
            })
        );
        assert_eq!(mock_input(None), json!({}));
    }

    #[test]
    fn mock_input_reads_gemini_upper_case_types() {
        let schema = json!({
            "type": "OBJECT",
            "properties": { "city": { "type": "STRING" }, "days": { "type": "INTEGER" }, "ok": { "type": "BOOLEAN" } }
        });
        assert_eq!(mock_input(Some(&schema)), json!({ "city": "mock", "days": 1, "ok": true }));
    }

    #[test]
    fn output_limit_cuts_text_and_tokens() {
        let behavior = MockBehavior {
            reply_text: "abcdefghij".to_owned(),
            usage: MockUsage { output_tokens: 10, ..MockUsage::default() },
            ..MockBehavior::default()
        };
        let cut = limit_text(&behavior, &behavior.reply_text, Some(3), false);
        assert!(cut.truncated);
        assert_eq!(cut.text, "abc");
        assert_eq!(cut.accounting.output_tokens(), 3);
        for limit in [None, Some(0), Some(10), Some(50)] {
            let whole = limit_text(&behavior, &behavior.reply_text, limit, true);
            assert!(!whole.truncated, "{limit:?}");
            assert_eq!(whole.text, "abcdefghij");
            assert_eq!(whole.accounting.output_tokens(), 10);
            assert_eq!(whole.accounting.reasoning_tokens, 3);
        }
    }

    #[test]
    fn prompt_tokens_include_cache_reads_and_writes() {
        let behavior = MockBehavior {
            usage: MockUsage {
                input_tokens: 10,
                cache_read_input_tokens: 100,
                cache_creation_input_tokens: 1000,
                ..MockUsage::default()
            },
            ..MockBehavior::default()
        };
        let accounting = accounting(&behavior, false);
        assert_eq!(accounting.prompt_tokens(), 1110);
        assert_eq!(accounting.cached_tokens(), 100);
        assert_eq!(accounting.reasoning_tokens, 0);
    }
}
