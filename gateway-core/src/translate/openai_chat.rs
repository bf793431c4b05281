//! OpenAI Chat Completions (`POST /v1/chat/completions`): requests, responses, SSE streams of
//! `chat.completion.chunk` objects ending in `data: [DONE]`, and `{"error": {...}}` bodies.
//!
//! Decoding walks `serde_json::Value`s so that unknown fields and vendor extensions never fail a
//! body; only a body that is not JSON, or a field the IR needs with the wrong type, is an error.
//! Vendor extensions understood on decode: DeepSeek-style `reasoning_content` (also `reasoning`),
//! OpenRouter's `prompt_tokens_details.cache_write_tokens`, DeepSeek's `prompt_cache_hit_tokens`,
//! and `top_k`.
//!
//! Usage: `prompt_tokens` counts cached and cache-written tokens; the IR (Anthropic accounting)
//! does not, so decoders subtract them and encoders add them back.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::BytesMut;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::ir::{
    Block, BlockStart, Delta, ImageSource, Message, Reasoning, Request, Response, ResponseFormat, Role,
    StopReason, StreamEvent, Tool, ToolChoice, Usage,
};
use super::lenient::{self, F, StrOr, StrOrList, lenient_object};
use super::{Codec, ErrorInfo, Notes, StreamDecoder, StreamEncoder, TranslateError};
use crate::dialect::Dialect;
use crate::sse::SseDecoder;
use crate::usage::TokenUsage;

/// The OpenAI Chat Completions codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenaiChatCodec;

/// Schema name sent when the IR has none: OpenAI requires `json_schema.name`.
const DEFAULT_SCHEMA_NAME: &str = "response";

// ---------------------------------------------------------------------------------------------
// Lenient JSON access helpers.
// ---------------------------------------------------------------------------------------------

fn err(message: impl Into<String>) -> TranslateError {
    TranslateError::new(message)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Shared mappings.
// ---------------------------------------------------------------------------------------------

fn stop_reason_from_wire(reason: &str) -> StopReason {
    match reason {
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::Refusal,
        // `stop` covers both a natural end and a matched stop sequence: chat does not tell them apart.
        _ => StopReason::EndTurn,
    }
}

fn stop_reason_to_wire(reason: StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::Refusal => "content_filter",
    }
}

#[derive(Debug, Serialize)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: WirePromptDetails,
    completion_tokens_details: WireCompletionDetails,
}

#[derive(Debug, Serialize)]
struct WirePromptDetails {
    cached_tokens: u64,
    /// OpenRouter's name for cache writes; OpenAI has none, so it is sent only when non-zero.
    #[serde(skip_serializing_if = "is_zero")]
    cache_write_tokens: u64,
}

#[derive(Debug, Serialize)]
struct WireCompletionDetails {
    reasoning_tokens: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn usage_to_wire(usage: &Usage) -> WireUsage {
    let t = &usage.tokens;
    let prompt = t
        .input_tokens
        .saturating_add(t.cache_read_input_tokens)
        .saturating_add(t.cache_creation_input_tokens);
    WireUsage {
        prompt_tokens: prompt,
        completion_tokens: t.output_tokens,
        total_tokens: prompt.saturating_add(t.output_tokens),
        prompt_tokens_details: WirePromptDetails {
            cached_tokens: t.cache_read_input_tokens,
            cache_write_tokens: t.cache_creation_input_tokens,
        },
        completion_tokens_details: WireCompletionDetails { reasoning_tokens: usage.reasoning_tokens },
    }
}

fn note_usage_split(usage: &Usage, notes: &mut Notes) {
    let t = &usage.tokens;
    if t.cache_creation_5m_input_tokens != 0 || t.cache_creation_1h_input_tokens != 0 {
        notes.note("usage.cache_creation (5m/1h split)");
    }
}

/// Error category from a chat error's `type` and `code` (no HTTP status, e.g. inside a stream).
fn kind_from_type(error_type: &str, code: &str) -> &'static str {
    match code {
        "invalid_api_key" => return "authentication",
        "rate_limit_exceeded" | "insufficient_quota" => return "rate_limit",
        "server_is_overloaded" | "slow_down" => return "overloaded",
        "model_not_found" => return "not_found",
        _ => {}
    }
    match error_type {
        "invalid_request_error" => "invalid_request",
        "authentication_error" => "authentication",
        "permission_error" => "permission",
        "not_found_error" => "not_found",
        "rate_limit_error" | "requests" | "tokens" | "insufficient_quota" => "rate_limit",
        "service_unavailable_error" | "overloaded_error" => "overloaded",
        _ => "api_error",
    }
}

fn kind_from_status(status: u16) -> Option<&'static str> {
    match status {
        400 | 413 | 422 => Some("invalid_request"),
        401 => Some("authentication"),
        403 => Some("permission"),
        404 => Some("not_found"),
        429 => Some("rate_limit"),
        503 | 529 => Some("overloaded"),
        500..=599 => Some("api_error"),
        _ => None,
    }
}

/// `type` and `code` of a chat error for a vendor-neutral category.
fn wire_error_type(kind: &str, status: u16) -> (&'static str, Option<&'static str>) {
    match kind {
        "invalid_request" => ("invalid_request_error", None),
        // OpenAI reports a bad key as an invalid request with this code.
        "authentication" => ("invalid_request_error", Some("invalid_api_key")),
        "permission" => ("permission_error", None),
        "not_found" => ("not_found_error", None),
        "rate_limit" => ("rate_limit_error", Some("rate_limit_exceeded")),
        "overloaded" => ("service_unavailable_error", Some("server_is_overloaded")),
        "api_error" => ("server_error", None),
        _ if (400..500).contains(&status) => ("invalid_request_error", None),
        _ => ("server_error", None),
    }
}

fn status_for_kind(kind: &str) -> u16 {
    match kind {
        "invalid_request" => 400,
        "authentication" => 401,
        "permission" => 403,
        "not_found" => 404,
        "rate_limit" => 429,
        "overloaded" => 503,
        _ => 500,
    }
}

/// Category and message of an `error` value (object or bare string).
fn error_fields(error: &Value) -> (String, String, String) {
    match error {
        Value::Object(e) => {
            let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            // `code` is sometimes a number (e.g. some proxies echo the HTTP status).
            let code = match e.get("code") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (text("type"), code, text("message"))
        }
        Value::String(s) => (String::new(), String::new(), s.clone()),
        _ => (String::new(), String::new(), String::new()),
    }
}

fn error_body(kind: &str, message: &str, status: u16) -> Value {
    let (error_type, code) = wire_error_type(kind, status);
    json!({ "error": { "message": message, "type": error_type, "param": Value::Null, "code": code } })
}

// ---------------------------------------------------------------------------------------------
// Content.
// ---------------------------------------------------------------------------------------------

/// Parses `data:<media type>;base64,<data>`; other URLs (including non-base64 data URLs) stay URLs.
fn image_from_url(url: &str) -> ImageSource {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media_type) = meta.strip_suffix(";base64")
    {
        return ImageSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() };
    }
    ImageSource::Url { url: url.to_owned() }
}

fn image_to_url(source: &ImageSource) -> String {
    match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url.clone(),
    }
}

fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        // Functions without parameters sometimes come with empty arguments.
        return Value::Object(Map::new());
    }
    // Invalid JSON is kept verbatim as a string so the call is not lost; encoders write it back raw.
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

fn arguments_to_wire(input: &Value) -> String {
    match input {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Typed reading of requests and complete responses.
//
// Bodies are read through borrowing structs (see [`lenient`]) instead of a `Value` tree: the
// same documents accepted, the same fields seen (absent / `null` / wrong type, last duplicate
// wins), and the same errors reported in the same order as walking a `Value` did.
// ---------------------------------------------------------------------------------------------

/// Any value, remembering only whether it was `false` (fields noted unless absent, `null` or
/// `false`).
struct Truthy(bool);

impl<'de> lenient::Shape<'de> for Truthy {
    fn read(r: &mut lenient::fast::Reader<'de>) -> Result<F<Self>, lenient::fast::Bail> {
        match r.peek()? {
            b't' | b'f' => r.bool().map(|b| F::Val(Self(b))),
            _ => r.skip().map(|()| F::Val(Self(true))),
        }
    }
    fn from_str(_s: &str) -> Option<Self> {
        Some(Self(true))
    }
    fn from_u64(_n: u64) -> Option<Self> {
        Some(Self(true))
    }
    fn from_i64(_n: i64) -> Option<Self> {
        Some(Self(true))
    }
    fn from_f64(_n: f64) -> Option<Self> {
        Some(Self(true))
    }
    fn from_bool(b: bool) -> Option<Self> {
        Some(Self(b))
    }
    fn from_seq<A: serde::de::SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        lenient::drain_seq(seq).map(|()| Some(Self(true)))
    }
    fn from_map<A: serde::de::MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        lenient::drain_map(map).map(|()| Some(Self(true)))
    }
}

/// Whether a field is there and neither `null` nor `false`.
fn truthy(f: &F<Truthy>) -> bool {
    matches!(f, F::Val(Truthy(true)))
}

type ContentIn<'de> = StrOrList<'de, StrOr<'de, PartIn<'de>>>;

lenient_object! {
    struct RequestIn<'de> {
        "model" => model: Cow<'de, str>,
        "messages" => messages: Vec<F<MessageIn<'de>>>,
        "tools" => tools: Vec<F<ToolIn<'de>>>,
        "tool_choice" => tool_choice: StrOr<'de, ToolChoiceIn<'de>>,
        "parallel_tool_calls" => parallel_tool_calls: bool,
        "max_completion_tokens" => max_completion_tokens: u64,
        "max_tokens" => max_tokens: u64,
        "temperature" => temperature: f64,
        "top_p" => top_p: f64,
        "top_k" => top_k: u64,
        "stop" => stop: StrOrList<'de, Cow<'de, str>>,
        "stream" => stream: bool,
        "reasoning_effort" => reasoning_effort: Cow<'de, str>,
        "response_format" => response_format: ResponseFormatIn<'de>,
        "user" => user: Cow<'de, str>,
        "n" => n: u64,
        "logprobs" => logprobs: Truthy,
        // Fields with no IR equivalent, noted when present (and not null/false).
        "frequency_penalty" => frequency_penalty: Truthy,
        "presence_penalty" => presence_penalty: Truthy,
        "seed" => seed: Truthy,
        "logit_bias" => logit_bias: Truthy,
        "top_logprobs" => top_logprobs: Truthy,
        "metadata" => metadata: Truthy,
        "store" => store: Truthy,
        "service_tier" => service_tier: Truthy,
        "modalities" => modalities: Truthy,
        "audio" => audio: Truthy,
        "prediction" => prediction: Truthy,
        "web_search_options" => web_search_options: Truthy,
        "functions" => functions: Truthy,
        "function_call" => function_call: Truthy,
        "verbosity" => verbosity: Truthy,
        "prompt_cache_key" => prompt_cache_key: Truthy,
        "safety_identifier" => safety_identifier: Truthy,
    }
}

impl RequestIn<'_> {
    /// The request fields with no IR equivalent, by name, in the order they are noted.
    fn uncarried(&self) -> [(&'static str, &F<Truthy>); 17] {
        [
            ("frequency_penalty", &self.frequency_penalty),
            ("presence_penalty", &self.presence_penalty),
            ("seed", &self.seed),
            ("logit_bias", &self.logit_bias),
            ("top_logprobs", &self.top_logprobs),
            ("metadata", &self.metadata),
            ("store", &self.store),
            ("service_tier", &self.service_tier),
            ("modalities", &self.modalities),
            ("audio", &self.audio),
            ("prediction", &self.prediction),
            ("web_search_options", &self.web_search_options),
            ("functions", &self.functions),
            ("function_call", &self.function_call),
            ("verbosity", &self.verbosity),
            ("prompt_cache_key", &self.prompt_cache_key),
            ("safety_identifier", &self.safety_identifier),
        ]
    }
}

lenient_object! {
    /// A request message of any role, or a response's `message`.
    struct MessageIn<'de> {
        "role" => role: Cow<'de, str>,
        "name" => name: lenient::Any,
        "content" => content: ContentIn<'de>,
        "reasoning_content" => reasoning_content: Cow<'de, str>,
        "reasoning" => reasoning: Cow<'de, str>,
        "refusal" => refusal: Cow<'de, str>,
        "tool_calls" => tool_calls: Vec<F<ToolCallIn<'de>>>,
        "function_call" => function_call: lenient::Any,
        "audio" => audio: lenient::Any,
        "tool_call_id" => tool_call_id: Cow<'de, str>,
    }
}

lenient_object! {
    struct PartIn<'de> {
        "type" => kind: Cow<'de, str>,
        "text" => text: Cow<'de, str>,
        "refusal" => refusal: Cow<'de, str>,
        "image_url" => image_url: StrOr<'de, ImageUrlIn<'de>>,
    }
}

lenient_object! {
    struct ImageUrlIn<'de> {
        "url" => url: Cow<'de, str>,
        "detail" => detail: lenient::Any,
    }
}

lenient_object! {
    struct ToolCallIn<'de> {
        "type" => kind: Cow<'de, str>,
        "id" => id: Cow<'de, str>,
        "function" => function: CalledFunctionIn<'de>,
    }
}

lenient_object! {
    struct CalledFunctionIn<'de> {
        "name" => name: Cow<'de, str>,
        // Usually a string of JSON; some vendors send the object itself.
        "arguments" => arguments: Value,
    }
}

lenient_object! {
    struct ToolIn<'de> {
        "type" => kind: Cow<'de, str>,
        "function" => function: FunctionDefIn<'de>,
    }
}

lenient_object! {
    struct FunctionDefIn<'de> {
        "name" => name: Cow<'de, str>,
        "strict" => strict: bool,
        "parameters" => parameters: Value,
        "description" => description: Cow<'de, str>,
    }
}

lenient_object! {
    struct ToolChoiceIn<'de> {
        "type" => kind: Cow<'de, str>,
        "function" => function: NamedIn<'de>,
    }
}

lenient_object! {
    struct NamedIn<'de> {
        "name" => name: Cow<'de, str>,
    }
}

lenient_object! {
    struct ResponseFormatIn<'de> {
        "type" => kind: Cow<'de, str>,
        "json_schema" => json_schema: JsonSchemaIn<'de>,
    }
}

lenient_object! {
    struct JsonSchemaIn<'de> {
        "name" => name: Cow<'de, str>,
        "description" => description: lenient::Any,
        "schema" => schema: Value,
        "strict" => strict: bool,
    }
}

lenient_object! {
    /// A complete `chat.completion`.
    struct CompletionIn<'de> {
        "error" => error: Value,
        "choices" => choices: Vec<F<CompletionChoiceIn<'de>>>,
        "id" => id: Cow<'de, str>,
        "model" => model: Cow<'de, str>,
        "usage" => usage: UsageIn<'de>,
    }
}

lenient_object! {
    struct CompletionChoiceIn<'de> {
        "message" => message: MessageIn<'de>,
        "finish_reason" => finish_reason: Cow<'de, str>,
    }
}

lenient_object! {
    /// A chat `usage` object (and the vendor extensions read from it).
    struct UsageIn<'de> {
        "prompt_tokens" => prompt_tokens: u64,
        "completion_tokens" => completion_tokens: u64,
        "prompt_tokens_details" => prompt_tokens_details: PromptDetailsIn<'de>,
        "prompt_cache_hit_tokens" => prompt_cache_hit_tokens: u64,
        "completion_tokens_details" => completion_tokens_details: CompletionDetailsIn<'de>,
    }
}

lenient_object! {
    struct PromptDetailsIn<'de> {
        "cached_tokens" => cached_tokens: u64,
        "cache_write_tokens" => cache_write_tokens: u64,
    }
}

lenient_object! {
    struct CompletionDetailsIn<'de> {
        "reasoning_tokens" => reasoning_tokens: u64,
    }
}

/// Reads a chat `usage` object into Anthropic accounting; anything but an object is no usage.
fn usage_from_in(f: &F<UsageIn<'_>>) -> Usage {
    let Some(u) = f.val() else {
        return Usage::default();
    };
    let prompt = u.prompt_tokens.u64().unwrap_or(0);
    let details = u.prompt_tokens_details.val();
    let cached = match details.and_then(|d| d.cached_tokens.u64()) {
        Some(c) => c,
        // DeepSeek reports cache hits at the top level.
        None => u.prompt_cache_hit_tokens.u64().unwrap_or(0),
    };
    let written = details.and_then(|d| d.cache_write_tokens.u64()).unwrap_or(0);
    let reasoning = u.completion_tokens_details.val().and_then(|d| d.reasoning_tokens.u64()).unwrap_or(0);
    Usage {
        tokens: TokenUsage {
            input_tokens: prompt.saturating_sub(cached.saturating_add(written)),
            output_tokens: u.completion_tokens.u64().unwrap_or(0),
            cache_creation_input_tokens: written,
            cache_read_input_tokens: cached,
            ..TokenUsage::default()
        },
        reasoning_tokens: reasoning,
    }
}

/// An optional string field: absent and `null` are `None`, another type an error.
fn t_str<'v>(f: &'v F<Cow<'_, str>>, key: &str) -> Result<Option<&'v str>, TranslateError> {
    match f {
        F::Absent | F::Null => Ok(None),
        F::Val(s) => Ok(Some(s)),
        F::Other => Err(err(format!("`{key}` must be a string"))),
    }
}

fn t_u64(f: &F<u64>, key: &str) -> Result<Option<u64>, TranslateError> {
    match f {
        F::Absent | F::Null => Ok(None),
        F::Val(n) => Ok(Some(*n)),
        F::Other => Err(err(format!("`{key}` must be a non-negative integer"))),
    }
}

fn t_f64(f: &F<f64>, key: &str) -> Result<Option<f64>, TranslateError> {
    match f {
        F::Absent | F::Null => Ok(None),
        F::Val(n) => Ok(Some(*n)),
        F::Other => Err(err(format!("`{key}` must be a number"))),
    }
}

fn t_bool(f: &F<bool>, key: &str) -> Result<Option<bool>, TranslateError> {
    match f {
        F::Absent | F::Null => Ok(None),
        F::Val(b) => Ok(Some(*b)),
        F::Other => Err(err(format!("`{key}` must be a boolean"))),
    }
}

/// Decodes `content` (string, array of parts, or null) into blocks.
fn content_in(content: &F<ContentIn<'_>>, notes: &mut Notes) -> Result<Vec<Block>, TranslateError> {
    let mut blocks = Vec::new();
    match content {
        F::Absent | F::Null => {}
        F::Val(StrOrList::Str(s)) => {
            if !s.is_empty() {
                blocks.push(Block::Text { text: s.as_ref().to_owned() });
            }
        }
        F::Val(StrOrList::Val(parts)) => {
            for part in parts {
                part_in(part, &mut blocks, notes)?;
            }
        }
        F::Other => return Err(err("message `content` must be a string, an array of parts or null")),
    }
    Ok(blocks)
}

/// One content part (an object, or a bare string).
fn part_in(
    part: &F<StrOr<'_, PartIn<'_>>>,
    blocks: &mut Vec<Block>,
    notes: &mut Notes,
) -> Result<(), TranslateError> {
    let part = match part {
        // Some clients send bare strings inside the parts array.
        F::Val(StrOr::Str(s)) => {
            blocks.push(Block::Text { text: s.as_ref().to_owned() });
            return Ok(());
        }
        F::Val(StrOr::Val(p)) => p,
        _ => return Err(err("a content part must be a JSON object")),
    };
    match t_str(&part.kind, "type")?.unwrap_or("text") {
        "text" => {
            blocks.push(Block::Text { text: t_str(&part.text, "text")?.unwrap_or_default().to_owned() })
        }
        // An assistant's refusal part is text the model produced.
        "refusal" => {
            blocks.push(Block::Text { text: t_str(&part.refusal, "refusal")?.unwrap_or_default().to_owned() })
        }
        "image_url" => {
            let url = match &part.image_url {
                F::Val(StrOr::Str(s)) => s.as_ref(),
                F::Val(StrOr::Val(img)) => {
                    if img.detail.present() {
                        notes.note("image_url.detail");
                    }
                    t_str(&img.url, "url")?.unwrap_or_default()
                }
                _ => return Err(err("`image_url` must be an object with a `url`")),
            };
            blocks.push(Block::Image { source: image_from_url(url) });
        }
        other => notes.note(format!("content part type `{other}`")),
    }
    Ok(())
}

/// Text of `content` for a place that holds only text (system, tool results): one entry per part.
fn content_texts_in(
    content: &F<ContentIn<'_>>,
    notes: &mut Notes,
    what: &str,
) -> Result<Vec<String>, TranslateError> {
    let mut texts = Vec::new();
    for block in content_in(content, notes)? {
        match block {
            Block::Text { text } => texts.push(text),
            _ => notes.note(format!("{what}: non-text content")),
        }
    }
    Ok(texts)
}

/// An assistant message's `tool_calls` as tool-use blocks.
fn tool_calls_in(
    calls: F<Vec<F<ToolCallIn<'_>>>>,
    blocks: &mut Vec<Block>,
    notes: &mut Notes,
) -> Result<(), TranslateError> {
    let calls = match calls {
        F::Absent | F::Null => return Ok(()),
        F::Val(calls) => calls,
        F::Other => return Err(err("`tool_calls` must be an array")),
    };
    for call in calls {
        let F::Val(call) = call else {
            return Err(err("a tool call must be a JSON object"));
        };
        let kind = t_str(&call.kind, "type")?.unwrap_or("function");
        if kind != "function" {
            notes.note(format!("tool call type `{kind}`"));
            continue;
        }
        let id = t_str(&call.id, "id")?.unwrap_or_default().to_owned();
        let function = match call.function {
            F::Val(f) => f,
            F::Other => return Err(err("`function` must be a JSON object")),
            F::Absent | F::Null => return Err(err("a function tool call needs `function`")),
        };
        let name = t_str(&function.name, "name")?.unwrap_or_default().to_owned();
        let input = match function.arguments {
            F::Val(Value::String(raw)) => parse_arguments(&raw),
            // Some vendors send the arguments as an object already.
            F::Val(other) => other,
            _ => Value::Object(Map::new()),
        };
        blocks.push(Block::ToolUse { id, name, input });
    }
    Ok(())
}

/// `reasoning_content` (DeepSeek, Qwen, vLLM) or `reasoning` (OpenRouter, newer vLLM).
fn reasoning_in<'v>(m: &'v MessageIn<'_>) -> Option<&'v str> {
    m.reasoning_content.str().or_else(|| m.reasoning.str())
}

/// One request message into the IR (system, user, assistant or tool turn).
fn message_in(
    m: F<MessageIn<'_>>,
    req: &mut Request,
    last_was_tool: &mut bool,
    notes: &mut Notes,
) -> Result<(), TranslateError> {
    let F::Val(mut m) = m else {
        return Err(err("a message must be a JSON object"));
    };
    let role = t_str(&m.role, "role")?.ok_or_else(|| err("a message needs a `role`"))?;
    if m.name.present() {
        notes.note("messages[].name");
    }
    let was_tool = std::mem::replace(last_was_tool, false);
    match role {
        "system" | "developer" => {
            req.system.extend(content_texts_in(&m.content, notes, "system message")?);
        }
        "user" => {
            let content = content_in(&m.content, notes)?;
            req.messages.push(Message { role: Role::User, content });
        }
        "assistant" => {
            let mut content = Vec::new();
            if let Some(text) = reasoning_in(&m).filter(|t| !t.is_empty()) {
                content.push(Block::Thinking { text: text.to_owned(), signature: None });
            }
            content.extend(content_in(&m.content, notes)?);
            if let Some(refusal) = t_str(&m.refusal, "refusal")?.filter(|r| !r.is_empty()) {
                content.push(Block::Text { text: refusal.to_owned() });
            }
            tool_calls_in(std::mem::take(&mut m.tool_calls), &mut content, notes)?;
            if m.function_call.present() {
                notes.note("messages[].function_call");
            }
            if m.audio.present() {
                notes.note("messages[].audio");
            }
            req.messages.push(Message { role: Role::Assistant, content });
        }
        "tool" => {
            let tool_use_id = t_str(&m.tool_call_id, "tool_call_id")?.unwrap_or_default().to_owned();
            let content = content_texts_in(&m.content, notes, "tool message")?
                .into_iter()
                .map(|text| Block::Text { text })
                .collect();
            let block = Block::ToolResult { tool_use_id, content, is_error: false };
            // Consecutive tool messages answer one assistant turn: one IR user message.
            match req.messages.last_mut() {
                Some(last) if was_tool && last.role == Role::User => last.content.push(block),
                _ => req.messages.push(Message { role: Role::User, content: vec![block] }),
            }
            *last_was_tool = true;
        }
        other => notes.note(format!("messages[].role `{other}`")),
    }
    Ok(())
}

/// Function tools; other tool types are noted.
fn tools_in(
    tools: F<Vec<F<ToolIn<'_>>>>,
    req: &mut Request,
    notes: &mut Notes,
) -> Result<(), TranslateError> {
    let tools = match tools {
        F::Absent | F::Null => return Ok(()),
        F::Val(tools) => tools,
        F::Other => return Err(err("`tools` must be an array")),
    };
    req.tools.reserve(tools.len());
    for tool in tools {
        let F::Val(tool) = tool else {
            return Err(err("a tool must be a JSON object"));
        };
        let kind = t_str(&tool.kind, "type")?.unwrap_or("function");
        if kind != "function" {
            notes.note(format!("tools[].type `{kind}`"));
            continue;
        }
        let function = match tool.function {
            F::Val(f) => f,
            F::Other => return Err(err("`function` must be a JSON object")),
            F::Absent | F::Null => return Err(err("a function tool needs `function`")),
        };
        let name = t_str(&function.name, "name")?.ok_or_else(|| err("a function tool needs a `name`"))?;
        if t_bool(&function.strict, "strict")? == Some(true) {
            notes.note("tools[].function.strict");
        }
        let description = t_str(&function.description, "description")?.map(str::to_owned);
        let name = name.to_owned();
        // Omitted parameters mean a function without parameters.
        let parameters = match function.parameters {
            F::Val(p) => p,
            _ => json!({"type": "object", "properties": {}}),
        };
        req.tools.push(Tool { name, description, parameters });
    }
    Ok(())
}

/// `tool_choice`: a mode, or a named function.
fn tool_choice_in(
    v: &F<StrOr<'_, ToolChoiceIn<'_>>>,
    notes: &mut Notes,
) -> Result<Option<ToolChoice>, TranslateError> {
    Ok(match v {
        F::Absent | F::Null => None,
        F::Val(StrOr::Str(s)) => match s.as_ref() {
            "auto" => Some(ToolChoice::Auto),
            "none" => Some(ToolChoice::None),
            "required" => Some(ToolChoice::Required),
            other => {
                notes.note(format!("tool_choice `{other}`"));
                None
            }
        },
        F::Val(StrOr::Val(o)) => match t_str(&o.kind, "type")?.unwrap_or("function") {
            "function" => {
                let name = o
                    .function
                    .val()
                    .and_then(|f| f.name.str())
                    .ok_or_else(|| err("`tool_choice.function.name` must be a string"))?;
                Some(ToolChoice::Tool { name: name.to_owned() })
            }
            other => {
                notes.note(format!("tool_choice type `{other}`"));
                None
            }
        },
        F::Other => return Err(err("`tool_choice` must be a string or an object")),
    })
}

/// `response_format` (present and not `null`).
fn response_format_in(
    v: F<ResponseFormatIn<'_>>,
    notes: &mut Notes,
) -> Result<Option<ResponseFormat>, TranslateError> {
    let F::Val(o) = v else {
        return Err(err("`response_format` must be a JSON object"));
    };
    Ok(match t_str(&o.kind, "type")?.unwrap_or("text") {
        "text" => None,
        "json_object" => Some(ResponseFormat::JsonObject),
        "json_schema" => {
            let s = match o.json_schema {
                F::Val(s) => s,
                F::Other => return Err(err("`response_format.json_schema` must be a JSON object")),
                F::Absent | F::Null => return Err(err("`response_format.json_schema` is required")),
            };
            if s.description.present() {
                notes.note("response_format.json_schema.description");
            }
            let name = t_str(&s.name, "name")?.map(str::to_owned);
            let strict = t_bool(&s.strict, "strict")?;
            let schema = match s.schema {
                F::Val(schema) => schema,
                _ => Value::Null,
            };
            Some(ResponseFormat::JsonSchema { name, schema, strict })
        }
        other => {
            notes.note(format!("response_format type `{other}`"));
            None
        }
    })
}

/// `stop`: a string or an array of strings.
fn stop_in(v: &F<StrOrList<'_, Cow<'_, str>>>) -> Result<Vec<String>, TranslateError> {
    match v {
        F::Absent | F::Null => Ok(Vec::new()),
        F::Val(StrOrList::Str(s)) => Ok(vec![s.as_ref().to_owned()]),
        F::Val(StrOrList::Val(items)) => items
            .iter()
            .map(|i| i.str().map(str::to_owned).ok_or_else(|| err("`stop` entries must be strings")))
            .collect(),
        F::Other => Err(err("`stop` must be a string or an array of strings")),
    }
}

// ---------------------------------------------------------------------------------------------
// Requests.
// ---------------------------------------------------------------------------------------------

// Request bodies are written from typed structs borrowing the IR. Their fields are declared in
// key order: the bodies are byte for byte what serializing a `Value` (sorted keys) gave.

#[derive(Serialize)]
struct RequestOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    messages: Vec<MessageOut<'a>>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormatOut<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptionsOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

/// A message of any role; the fields a role does not have are left out.
#[derive(Serialize)]
struct MessageOut<'a> {
    /// `None` is `null` (an assistant turn with only tool calls).
    content: Option<ContentOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

impl<'a> MessageOut<'a> {
    fn new(role: &'static str, content: ContentOut<'a>) -> Self {
        Self {
            content: Some(content),
            reasoning_content: None,
            role,
            tool_call_id: None,
            tool_calls: Vec::new(),
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum ContentOut<'a> {
    Text(&'a str),
    Parts(Vec<PartOut<'a>>),
}

#[derive(Serialize)]
#[serde(untagged)]
enum PartOut<'a> {
    Text { text: &'a str, r#type: &'static str },
    Image { image_url: ImageUrlOut, r#type: &'static str },
}

impl<'a> PartOut<'a> {
    fn text(text: &'a str) -> Self {
        Self::Text { text, r#type: "text" }
    }
}

#[derive(Serialize)]
struct ImageUrlOut {
    url: String,
}

#[derive(Debug, Serialize)]
struct ToolCallOut<'a> {
    function: FunctionCallOut<'a>,
    id: &'a str,
    r#type: &'static str,
}

#[derive(Debug, Serialize)]
struct FunctionCallOut<'a> {
    arguments: String,
    name: &'a str,
}

#[derive(Serialize)]
struct ToolOut<'a> {
    function: FunctionOut<'a>,
    r#type: &'static str,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Value>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolChoiceOut<'a> {
    Mode(&'static str),
    Function { function: NameOut<'a>, r#type: &'static str },
}

#[derive(Serialize)]
struct NameOut<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct StreamOptionsOut {
    include_usage: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ResponseFormatOut<'a> {
    JsonObject { r#type: &'static str },
    JsonSchema { json_schema: JsonSchemaOut<'a>, r#type: &'static str },
}

#[derive(Serialize)]
struct JsonSchemaOut<'a> {
    name: &'a str,
    schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

// A complete response is written the same way: fields in key order, as the `Value` it used to
// be built as serialized them (its maps are sorted), so the bytes did not change.

#[derive(Serialize)]
struct CompletionOut<'a> {
    choices: [ChoiceOut<'a>; 1],
    created: u64,
    id: &'a str,
    model: &'a str,
    object: &'static str,
    usage: CompletionUsageOut,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    finish_reason: &'static str,
    index: u32,
    /// Always `null`: no log probabilities to report.
    logprobs: (),
    message: CompletionMessageOut<'a>,
}

#[derive(Serialize)]
struct CompletionMessageOut<'a> {
    /// `null` when the turn has no text (only tool calls, or nothing).
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    refusal: (),
    role: &'static str,
    #[serde(skip_serializing_if = "<[ToolCallOut<'_>]>::is_empty")]
    tool_calls: &'a [ToolCallOut<'a>],
}

fn content_len(m: &CompletionMessageOut<'_>) -> usize {
    m.content.as_ref().map_or(0, |c| c.len())
        + m.reasoning_content.map_or(0, str::len)
        + m.tool_calls
            .iter()
            .map(|c| c.function.arguments.len() + c.function.name.len() + c.id.len() + 64)
            .sum::<usize>()
}

/// [`WireUsage`] in key order (the stream writes it in declaration order, unsorted).
#[derive(Serialize)]
struct CompletionUsageOut {
    completion_tokens: u64,
    completion_tokens_details: WireCompletionDetails,
    prompt_tokens: u64,
    prompt_tokens_details: SortedPromptDetails,
    total_tokens: u64,
}

#[derive(Serialize)]
struct SortedPromptDetails {
    /// OpenRouter's name for cache writes; OpenAI has none, so it is sent only when non-zero.
    #[serde(skip_serializing_if = "is_zero")]
    cache_write_tokens: u64,
    cached_tokens: u64,
}

fn encode_messages<'a>(req: &'a Request, notes: &mut Notes) -> Vec<MessageOut<'a>> {
    let mut out = Vec::with_capacity(req.system.len() + req.messages.len());
    for s in &req.system {
        out.push(MessageOut::new("system", ContentOut::Text(s)));
    }
    for m in &req.messages {
        match m.role {
            Role::User => encode_user_message(&m.content, &mut out, notes),
            Role::Assistant => out.push(encode_assistant_message(&m.content, notes)),
        }
    }
    out
}

fn text_content(texts: Vec<&str>) -> ContentOut<'_> {
    match texts.as_slice() {
        [] => ContentOut::Text(""),
        [one] => ContentOut::Text(one),
        many => ContentOut::Parts(many.iter().map(|t| PartOut::text(t)).collect()),
    }
}

fn encode_user_message<'a>(blocks: &'a [Block], out: &mut Vec<MessageOut<'a>>, notes: &mut Notes) {
    // Tool messages must directly follow the assistant turn that called them, so they go first.
    let mut parts = Vec::new();
    let mut tool_results = 0;
    for block in blocks {
        match block {
            Block::ToolResult { tool_use_id, content, is_error } => {
                tool_results += 1;
                if *is_error {
                    notes.note("tool_result.is_error");
                }
                let mut texts = Vec::new();
                for b in content {
                    match b {
                        Block::Text { text } => texts.push(text.as_str()),
                        _ => notes.note("tool_result: non-text content"),
                    }
                }
                let mut message = MessageOut::new("tool", text_content(texts));
                message.tool_call_id = Some(tool_use_id);
                out.push(message);
            }
            Block::Text { text } => parts.push(PartOut::text(text)),
            Block::Image { source } => parts.push(PartOut::Image {
                image_url: ImageUrlOut { url: image_to_url(source) },
                r#type: "image_url",
            }),
            Block::ToolUse { .. } => notes.note("user message: tool_use block"),
            Block::Thinking { .. } | Block::RedactedThinking { .. } => {
                notes.note("user message: thinking block")
            }
        }
    }
    if parts.is_empty() && tool_results > 0 {
        return;
    }
    let content = match parts.as_slice() {
        [] => ContentOut::Text(""),
        [PartOut::Text { text, .. }] => ContentOut::Text(text),
        _ => ContentOut::Parts(parts),
    };
    out.push(MessageOut::new("user", content));
}

/// Reasoning, text and tool calls of an assistant turn, as chat holds them (in separate fields).
struct AssistantParts<'a> {
    reasoning: Option<String>,
    texts: Vec<&'a str>,
    tool_calls: Vec<ToolCallOut<'a>>,
}

fn assistant_parts<'a>(blocks: &'a [Block], notes: &mut Notes) -> AssistantParts<'a> {
    let mut reasoning: Option<String> = None;
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block {
            Block::Text { text } => texts.push(text.as_str()),
            Block::Thinking { text, signature } => {
                if signature.is_some() {
                    notes.note("thinking.signature");
                }
                // A block with no text (a signature carrier, encrypted-only reasoning) adds
                // nothing: no separator, no empty `reasoning_content`.
                if text.is_empty() {
                    continue;
                }
                // Chat has one reasoning field per turn; several blocks share it, blank-line separated.
                let r = reasoning.get_or_insert_with(String::new);
                if !r.is_empty() {
                    r.push_str("\n\n");
                }
                r.push_str(text);
            }
            Block::RedactedThinking { .. } => notes.note("redacted_thinking"),
            Block::ToolUse { id, name, input } => tool_calls.push(ToolCallOut {
                function: FunctionCallOut { arguments: arguments_to_wire(input), name },
                id,
                r#type: "function",
            }),
            Block::Image { .. } => notes.note("assistant message: image"),
            Block::ToolResult { .. } => notes.note("assistant message: tool_result block"),
        }
    }
    AssistantParts { reasoning, texts, tool_calls }
}

fn encode_assistant_message<'a>(blocks: &'a [Block], notes: &mut Notes) -> MessageOut<'a> {
    let parts = assistant_parts(blocks, notes);
    let content = if parts.texts.is_empty() && !parts.tool_calls.is_empty() {
        // OpenAI wants null content next to tool calls.
        None
    } else {
        Some(text_content(parts.texts))
    };
    MessageOut {
        content,
        reasoning_content: parts.reasoning,
        role: "assistant",
        tool_call_id: None,
        tool_calls: parts.tool_calls,
    }
}

/// `reasoning_effort` for the IR's reasoning settings.
fn encode_reasoning<'a>(r: &'a Reasoning, notes: &mut Notes) -> Option<&'a str> {
    if r.summary.is_some() {
        notes.note("reasoning.summary");
    }
    if r.disabled {
        Some("none")
    } else if let Some(effort) = &r.effort {
        if r.budget_tokens.is_some() {
            notes.note("reasoning.budget_tokens");
        }
        Some(effort)
    } else if let Some(budget) = r.budget_tokens {
        // Chat has no budget; approximate it by the effort level it roughly corresponds to.
        notes.note("reasoning.budget_tokens (approximated by reasoning_effort)");
        Some(match budget {
            0..=2048 => "low",
            2049..=16384 => "medium",
            _ => "high",
        })
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Codec.
// ---------------------------------------------------------------------------------------------

impl Codec for OpenaiChatCodec {
    fn dialect(&self) -> Dialect {
        Dialect::OpenaiChat
    }

    fn decode_request(&self, body: &[u8], notes: &mut Notes) -> Result<Request, TranslateError> {
        let mut root = match lenient::parse_slice::<RequestIn<'_>>(body) {
            Ok(F::Val(root)) => root,
            Ok(_) => return Err(err("the request must be a JSON object")),
            Err(e) => return Err(err(format!("request is not valid JSON: {e}"))),
        };
        let mut req = Request {
            model: t_str(&root.model, "model")?.unwrap_or_default().to_owned(),
            ..Request::default()
        };
        let F::Val(messages) = std::mem::take(&mut root.messages) else {
            return Err(err("`messages` must be an array"));
        };
        req.messages.reserve(messages.len());
        let mut last_was_tool = false;
        for m in messages {
            message_in(m, &mut req, &mut last_was_tool, notes)?;
        }
        tools_in(std::mem::take(&mut root.tools), &mut req, notes)?;
        req.tool_choice = tool_choice_in(&root.tool_choice, notes)?;
        req.parallel_tool_calls = t_bool(&root.parallel_tool_calls, "parallel_tool_calls")?;
        req.max_tokens = match t_u64(&root.max_completion_tokens, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => t_u64(&root.max_tokens, "max_tokens")?,
        };
        req.temperature = t_f64(&root.temperature, "temperature")?;
        req.top_p = t_f64(&root.top_p, "top_p")?;
        req.top_k = t_u64(&root.top_k, "top_k")?;
        req.stop = stop_in(&root.stop)?;
        req.stream = t_bool(&root.stream, "stream")?.unwrap_or(false);
        if let Some(effort) = t_str(&root.reasoning_effort, "reasoning_effort")? {
            req.reasoning = Some(if effort == "none" {
                Reasoning { disabled: true, ..Reasoning::default() }
            } else {
                Reasoning { effort: Some(effort.to_owned()), ..Reasoning::default() }
            });
        }
        if root.response_format.present() {
            req.response_format = response_format_in(std::mem::take(&mut root.response_format), notes)?;
        }
        req.user = t_str(&root.user, "user")?.map(str::to_owned);
        for (key, value) in root.uncarried() {
            if truthy(value) {
                notes.note(key);
            }
        }
        if root.n.u64().is_some_and(|n| n > 1) {
            notes.note("n");
        }
        if truthy(&root.logprobs) {
            notes.note("logprobs");
        }
        Ok(req)
    }

    fn encode_request(&self, req: &Request, notes: &mut Notes) -> Result<Vec<u8>, TranslateError> {
        let messages = encode_messages(req, notes);
        let tools = req
            .tools
            .iter()
            .map(|t| ToolOut {
                function: FunctionOut {
                    description: t.description.as_deref(),
                    name: &t.name,
                    parameters: (!t.parameters.is_null()).then_some(&t.parameters),
                },
                r#type: "function",
            })
            .collect();
        let tool_choice = req.tool_choice.as_ref().map(|choice| match choice {
            ToolChoice::Auto => ToolChoiceOut::Mode("auto"),
            ToolChoice::Required => ToolChoiceOut::Mode("required"),
            ToolChoice::None => ToolChoiceOut::Mode("none"),
            ToolChoice::Tool { name } => {
                ToolChoiceOut::Function { function: NameOut { name }, r#type: "function" }
            }
        });
        if req.top_k.is_some() {
            notes.note("top_k");
        }
        let reasoning_effort = req.reasoning.as_ref().and_then(|r| encode_reasoning(r, notes));
        let response_format = match &req.response_format {
            None => None,
            Some(ResponseFormat::JsonObject) => Some(ResponseFormatOut::JsonObject { r#type: "json_object" }),
            Some(ResponseFormat::JsonSchema { name, schema, strict }) => {
                let name = name.as_deref().unwrap_or_else(|| {
                    notes.note("response_format.json_schema.name (defaulted)");
                    DEFAULT_SCHEMA_NAME
                });
                Some(ResponseFormatOut::JsonSchema {
                    json_schema: JsonSchemaOut { name, schema, strict: *strict },
                    r#type: "json_schema",
                })
            }
        };
        let body = RequestOut {
            // `max_tokens` is deprecated and rejected by reasoning models.
            max_completion_tokens: req.max_tokens,
            messages,
            model: &req.model,
            parallel_tool_calls: req.parallel_tool_calls,
            reasoning_effort,
            response_format,
            stop: &req.stop,
            stream: req.stream,
            // Without it the stream carries no usage at all.
            stream_options: req.stream.then_some(StreamOptionsOut { include_usage: true }),
            temperature: req.temperature,
            tool_choice,
            tools,
            top_p: req.top_p,
            user: req.user.as_deref(),
        };
        // Sized once: the texts plus room for the envelope, tools and schemas.
        let mut out = Vec::with_capacity(req.text_len() + 1024);
        serde_json::to_writer(&mut out, &body).map_err(|e| err(e.to_string()))?;
        Ok(out)
    }

    fn request_path(&self, _req: &Request) -> String {
        "/v1/chat/completions".to_owned()
    }

    fn decode_response(&self, body: &[u8]) -> Result<Response, TranslateError> {
        let mut root = match lenient::parse_slice::<CompletionIn<'_>>(body) {
            Ok(F::Val(root)) => root,
            Ok(_) => return Err(err("the response must be a JSON object")),
            Err(e) => return Err(err(format!("response is not valid JSON: {e}"))),
        };
        if let F::Val(error) = &root.error {
            let (_, _, message) = error_fields(error);
            return Err(err(format!("the response is an error: {message}")));
        }
        let choices = match std::mem::take(&mut root.choices) {
            F::Absent | F::Null => Vec::new(),
            F::Val(c) => c,
            F::Other => return Err(err("`choices` must be an array")),
        };
        let mut content = Vec::new();
        let mut stop_reason = StopReason::EndTurn;
        // Only the first choice maps onto the IR; `n > 1` was noted when the request was translated.
        if let Some(choice) = choices.into_iter().next() {
            let F::Val(mut choice) = choice else {
                return Err(err("a choice must be a JSON object"));
            };
            match std::mem::take(&mut choice.message) {
                F::Val(mut message) => {
                    if let Some(text) = reasoning_in(&message).filter(|t| !t.is_empty()) {
                        content.push(Block::Thinking { text: text.to_owned(), signature: None });
                    }
                    content.extend(content_in(&message.content, &mut Notes::default())?);
                    let refusal = t_str(&message.refusal, "refusal")?.filter(|r| !r.is_empty());
                    if let Some(refusal) = refusal {
                        content.push(Block::Text { text: refusal.to_owned() });
                    }
                    let refused = refusal.is_some();
                    tool_calls_in(
                        std::mem::take(&mut message.tool_calls),
                        &mut content,
                        &mut Notes::default(),
                    )?;
                    if let Some(reason) = t_str(&choice.finish_reason, "finish_reason")? {
                        stop_reason = stop_reason_from_wire(reason);
                    }
                    if refused {
                        stop_reason = StopReason::Refusal;
                    }
                }
                F::Other => return Err(err("`message` must be a JSON object")),
                F::Absent | F::Null => {
                    if let Some(reason) = t_str(&choice.finish_reason, "finish_reason")? {
                        stop_reason = stop_reason_from_wire(reason);
                    }
                }
            }
        }
        Ok(Response {
            id: t_str(&root.id, "id")?.unwrap_or_default().to_owned(),
            model: t_str(&root.model, "model")?.unwrap_or_default().to_owned(),
            content,
            stop_reason,
            stop_sequence: None,
            usage: usage_from_in(&root.usage),
        })
    }

    fn encode_response(&self, resp: &Response, notes: &mut Notes) -> Result<Vec<u8>, TranslateError> {
        let parts = assistant_parts(&resp.content, notes);
        let content = if parts.texts.is_empty() {
            None
        } else if let [one] = parts.texts.as_slice() {
            Some(Cow::Borrowed(*one))
        } else {
            Some(Cow::Owned(parts.texts.concat()))
        };
        if resp.stop_sequence.is_some() {
            notes.note("stop_sequence");
        }
        note_usage_split(&resp.usage, notes);
        let t = &resp.usage.tokens;
        let prompt = t
            .input_tokens
            .saturating_add(t.cache_read_input_tokens)
            .saturating_add(t.cache_creation_input_tokens);
        let body = CompletionOut {
            choices: [ChoiceOut {
                finish_reason: stop_reason_to_wire(resp.stop_reason),
                index: 0,
                logprobs: (),
                message: CompletionMessageOut {
                    content,
                    reasoning_content: parts.reasoning.as_deref(),
                    refusal: (),
                    role: "assistant",
                    tool_calls: &parts.tool_calls,
                },
            }],
            created: now_secs(),
            id: &resp.id,
            model: &resp.model,
            object: "chat.completion",
            usage: CompletionUsageOut {
                completion_tokens: t.output_tokens,
                completion_tokens_details: WireCompletionDetails {
                    reasoning_tokens: resp.usage.reasoning_tokens,
                },
                prompt_tokens: prompt,
                prompt_tokens_details: SortedPromptDetails {
                    cache_write_tokens: t.cache_creation_input_tokens,
                    cached_tokens: t.cache_read_input_tokens,
                },
                total_tokens: prompt.saturating_add(t.output_tokens),
            },
        };
        // Sized for the envelope (about 400 bytes) plus the content.
        let mut out = Vec::with_capacity(512 + content_len(&body.choices[0].message));
        serde_json::to_writer(&mut out, &body).map_err(|e| err(e.to_string()))?;
        Ok(out)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ChatStreamDecoder::default())
    }

    fn stream_encoder(&self) -> Box<dyn StreamEncoder> {
        Box::new(ChatStreamEncoder::default())
    }

    fn decode_error(&self, status: u16, body: &[u8]) -> ErrorInfo {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let (error_type, code, message) = match parsed.as_ref().and_then(Value::as_object) {
            Some(root) => match root.get("error") {
                Some(error) => error_fields(error),
                // Some compatible servers put the fields at the top level.
                None => error_fields(&Value::Object(root.clone())),
            },
            None => (String::new(), String::new(), String::from_utf8_lossy(body).trim().to_owned()),
        };
        let kind = kind_from_status(status).unwrap_or_else(|| kind_from_type(&error_type, &code));
        let message = if message.is_empty() { format!("upstream error (HTTP {status})") } else { message };
        ErrorInfo { status, kind: kind.to_owned(), message }
    }

    fn encode_error(&self, error: &ErrorInfo) -> Vec<u8> {
        error_body(&error.kind, &error.message, error.status).to_string().into_bytes()
    }
}

// ---------------------------------------------------------------------------------------------
// Stream decoding.
// ---------------------------------------------------------------------------------------------

/// The IR block currently open. Only one is open at a time, so every target sees blocks in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(usize),
    Thinking(usize),
    Tool { chat_index: u64, index: usize },
}

impl Open {
    fn index(self) -> usize {
        match self {
            Self::Text(i) | Self::Thinking(i) | Self::Tool { index: i, .. } => i,
        }
    }
}

/// A streamed tool call, keyed by its chat `index`.
#[derive(Debug, Default)]
struct ToolState {
    id: String,
    name: String,
    /// Argument pieces that came before the name (then the block cannot start yet).
    pending: String,
    started: bool,
    /// Its block was closed because another began; later pieces cannot be placed.
    closed: bool,
}

#[derive(Debug, Default)]
struct ChatStreamDecoder {
    sse: SseDecoder,
    state: ChatDecodeState,
}

#[derive(Debug, Default)]
struct ChatDecodeState {
    started: bool,
    /// `[DONE]` or an error arrived, or the input was malformed: nothing more is read.
    done: bool,
    next_index: usize,
    open: Option<Open>,
    tools: HashMap<u64, ToolState>,
    /// Order in which tool calls first appeared, to start nameless ones at the end.
    tool_order: Vec<u64>,
    finish: Option<StopReason>,
    finish_emitted: bool,
    refusal: bool,
    usage: Usage,
}

lenient_object! {
    /// A `chat.completion.chunk` as the stream decoder reads it.
    struct ChunkIn<'de> {
        "id" => id: Cow<'de, str>,
        "model" => model: Cow<'de, str>,
        "choices" => choices: Vec<F<ChoiceIn<'de>>>,
        "usage" => usage: UsageIn<'de>,
        "error" => error: Value,
    }
}

lenient_object! {
    struct ChoiceIn<'de> {
        "index" => index: u64,
        "delta" => delta: DeltaIn<'de>,
        "finish_reason" => finish_reason: Cow<'de, str>,
    }
}

lenient_object! {
    struct DeltaIn<'de> {
        "reasoning_content" => reasoning_content: Cow<'de, str>,
        "reasoning" => reasoning: Cow<'de, str>,
        "content" => content: Cow<'de, str>,
        "refusal" => refusal: Cow<'de, str>,
        "tool_calls" => tool_calls: Vec<F<ToolPieceIn<'de>>>,
    }
}

lenient_object! {
    struct ToolPieceIn<'de> {
        "index" => index: u64,
        "id" => id: Cow<'de, str>,
        "function" => function: FunctionIn<'de>,
    }
}

lenient_object! {
    struct FunctionIn<'de> {
        "name" => name: Cow<'de, str>,
        "arguments" => arguments: Cow<'de, str>,
    }
}

impl ChatDecodeState {
    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(open) = self.open.take() {
            if let Open::Tool { chat_index, .. } = open
                && let Some(t) = self.tools.get_mut(&chat_index)
            {
                t.closed = true;
            }
            out.push(StreamEvent::BlockStop { index: open.index() });
        }
    }

    fn begin(&mut self, block: BlockStart, out: &mut Vec<StreamEvent>) -> usize {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        out.push(StreamEvent::BlockStart { index, block });
        index
    }

    fn text(&mut self, text: &str, out: &mut Vec<StreamEvent>) {
        if text.is_empty() {
            return;
        }
        let index = match self.open {
            Some(Open::Text(i)) => i,
            _ => {
                let i = self.begin(BlockStart::Text, out);
                self.open = Some(Open::Text(i));
                i
            }
        };
        out.push(StreamEvent::Delta { index, delta: Delta::Text(text.to_owned()) });
    }

    fn thinking(&mut self, text: &str, out: &mut Vec<StreamEvent>) {
        if text.is_empty() {
            return;
        }
        let index = match self.open {
            Some(Open::Thinking(i)) => i,
            _ => {
                let i = self.begin(BlockStart::Thinking, out);
                self.open = Some(Open::Thinking(i));
                i
            }
        };
        out.push(StreamEvent::Delta { index, delta: Delta::Thinking(text.to_owned()) });
    }

    /// Starts the block of tool call `chat_index` and flushes its buffered arguments.
    fn start_tool(&mut self, chat_index: u64, out: &mut Vec<StreamEvent>) {
        let (id, name) = match self.tools.get(&chat_index) {
            Some(t) if !t.started && !t.closed => {
                let id = if t.id.is_empty() { format!("call_{chat_index}") } else { t.id.clone() };
                (id, t.name.clone())
            }
            _ => return,
        };
        let index = self.begin(BlockStart::ToolUse { id, name }, out);
        self.open = Some(Open::Tool { chat_index, index });
        if let Some(t) = self.tools.get_mut(&chat_index) {
            t.started = true;
            let pending = std::mem::take(&mut t.pending);
            if !pending.is_empty() {
                out.push(StreamEvent::Delta { index, delta: Delta::Json(pending) });
            }
        }
    }

    fn tool_piece(&mut self, position: usize, piece: &ToolPieceIn<'_>, out: &mut Vec<StreamEvent>) {
        let chat_index = piece.index.u64().unwrap_or(position as u64);
        let function = piece.function.val();
        let name = function.and_then(|f| f.name.str()).unwrap_or_default();
        let args = function.and_then(|f| f.arguments.str()).unwrap_or_default();
        let id = piece.id.str().unwrap_or_default();
        if !self.tools.contains_key(&chat_index) {
            self.tool_order.push(chat_index);
        }
        let state = self.tools.entry(chat_index).or_default();
        if state.closed {
            return;
        }
        if !state.started {
            if !id.is_empty() {
                state.id = id.to_owned();
            }
            state.name.push_str(name);
            state.pending.push_str(args);
            if !state.name.is_empty() {
                self.start_tool(chat_index, out);
            }
            return;
        }
        if !args.is_empty()
            && let Some(Open::Tool { chat_index: open, index }) = self.open
            && open == chat_index
        {
            out.push(StreamEvent::Delta { index, delta: Delta::Json(args.to_owned()) });
        }
    }

    /// Tool calls whose name never came still happened: start them so they are not lost.
    fn flush_nameless_tools(&mut self, out: &mut Vec<StreamEvent>) {
        for chat_index in self.tool_order.clone() {
            if self.tools.get(&chat_index).is_some_and(|t| !t.started && !t.closed) {
                self.start_tool(chat_index, out);
            }
        }
    }

    fn emit_finish(&mut self, stop_reason: StopReason, out: &mut Vec<StreamEvent>) {
        self.flush_nameless_tools(out);
        self.close(out);
        if !self.finish_emitted {
            self.finish_emitted = true;
            out.push(StreamEvent::Finish { stop_reason, stop_sequence: None, usage: self.usage });
        }
    }

    fn event(
        &mut self,
        name: Option<&str>,
        data: &str,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), TranslateError> {
        if self.done {
            return Ok(());
        }
        let data = data.trim();
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            let reason = self.finish.unwrap_or(StopReason::EndTurn);
            self.ensure_start("", "", out);
            self.emit_finish(reason, out);
            out.push(StreamEvent::Stop);
            self.done = true;
            return Ok(());
        }
        let chunk = match lenient::parse::<ChunkIn<'_>>(data) {
            Ok(F::Val(chunk)) => chunk,
            Ok(_) => return Ok(()),
            Err(e) => {
                self.done = true;
                return Err(err(format!("malformed chat stream chunk: {e}")));
            }
        };
        if chunk.error.present() || name == Some("error") {
            // Rare: read the whole chunk, which may itself be the error object.
            let v: Value = serde_json::from_str(data).unwrap_or_default();
            let error = match chunk.error.val() {
                Some(error) => error,
                None => &v,
            };
            let (error_type, code, message) = error_fields(error);
            self.close(out);
            self.done = true;
            out.push(StreamEvent::Error { kind: kind_from_type(&error_type, &code).to_owned(), message });
            return Ok(());
        }
        let id = chunk.id.str().unwrap_or_default();
        let model = chunk.model.str().unwrap_or_default();
        self.ensure_start(id, model, out);
        if let Some(choices) = chunk.choices.val() {
            // Only choice 0 maps onto the IR.
            let first = choices.iter().filter_map(F::val).find(|c| c.index.u64().unwrap_or(0) == 0);
            if let Some(choice) = first {
                self.choice(choice, out);
            }
        }
        // Any value but `null` replaces the usage (one that is not an object with none).
        if chunk.usage.present() {
            self.usage = usage_from_in(&chunk.usage);
        }
        Ok(())
    }

    fn ensure_start(&mut self, id: &str, model: &str, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: id.to_owned(),
                model: model.to_owned(),
                usage: Usage::default(),
            });
        }
    }

    fn choice(&mut self, choice: &ChoiceIn<'_>, out: &mut Vec<StreamEvent>) {
        if self.finish.is_some() {
            // Content after the finish reason would reopen blocks after they were closed.
            return;
        }
        if let Some(delta) = choice.delta.val() {
            // `reasoning_content` (DeepSeek, Qwen, vLLM) or `reasoning` (OpenRouter, newer vLLM).
            if let Some(r) = delta.reasoning_content.str().or_else(|| delta.reasoning.str()) {
                self.thinking(r, out);
            }
            if let Some(c) = delta.content.str() {
                self.text(c, out);
            }
            if let Some(r) = delta.refusal.str().filter(|r| !r.is_empty()) {
                self.refusal = true;
                self.text(r, out);
            }
            if let Some(calls) = delta.tool_calls.val() {
                for (position, piece) in calls.iter().enumerate() {
                    if let F::Val(piece) = piece {
                        self.tool_piece(position, piece, out);
                    }
                }
            }
        }
        if let Some(reason) = choice.finish_reason.str() {
            let reason = if self.refusal { StopReason::Refusal } else { stop_reason_from_wire(reason) };
            self.finish = Some(reason);
            self.flush_nameless_tools(out);
            self.close(out);
        }
    }
}

impl StreamDecoder for ChatStreamDecoder {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let Self { sse, state } = self;
        // After a malformed chunk the state is done: later events of this chunk are no-ops.
        let mut failed = None;
        let pushed = sse.push(chunk, |e| {
            if failed.is_none()
                && let Err(e) = state.event(e.event, &e.data, out)
            {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        pushed.map_err(|e| {
            state.done = true;
            err(e.to_string())
        })
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        let Self { sse, state } = self;
        let mut failed = false;
        sse.finish(|e| {
            if !failed {
                failed = state.event(e.event, &e.data, out).is_err();
            }
        });
        // The finish reason arrived but `[DONE]` (and maybe the usage chunk) did not: the answer is
        // complete, so report how it ended. Without a finish reason nothing is invented.
        if !state.done
            && let Some(reason) = state.finish
        {
            state.emit_finish(reason, out);
            state.done = true;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream encoding.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct WireChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<WireChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<WireUsage>,
}

#[derive(Debug, Serialize)]
struct WireChoice {
    index: u32,
    delta: Value,
    finish_reason: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EncKind {
    Text,
    Thinking,
    Tool(u64),
}

#[derive(Debug, Default)]
struct ChatStreamEncoder {
    id: String,
    model: String,
    created: u64,
    started: bool,
    ended: bool,
    blocks: HashMap<usize, EncKind>,
    next_tool: u64,
}

impl ChatStreamEncoder {
    fn write(
        &self,
        out: &mut BytesMut,
        delta: Option<Value>,
        finish: Option<&'static str>,
        usage: Option<WireUsage>,
    ) {
        let choices = match delta {
            Some(delta) => vec![WireChoice { index: 0, delta, finish_reason: finish }],
            None => Vec::new(),
        };
        let chunk = WireChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        };
        // Serializing these plain structs cannot fail; an empty line would be skipped by clients.
        let data = serde_json::to_string(&chunk).unwrap_or_default();
        write_data(out, &data);
    }

    fn start(&mut self, id: &str, model: &str, out: &mut BytesMut) {
        self.started = true;
        self.id =
            if id.is_empty() { format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()) } else { id.to_owned() };
        self.model = model.to_owned();
        self.created = now_secs();
        self.write(out, Some(json!({"role": "assistant", "content": ""})), None, None);
    }
}

fn write_data(out: &mut BytesMut, data: &str) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl StreamEncoder for ChatStreamEncoder {
    fn encode(&mut self, event: &StreamEvent, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        if !self.started {
            match event {
                StreamEvent::Start { id, model, .. } => {
                    self.start(id, model, out);
                    return;
                }
                _ => self.start("", "", out),
            }
        }
        match event {
            StreamEvent::Start { .. } => {}
            StreamEvent::BlockStart { index, block } => match block {
                BlockStart::Text => {
                    self.blocks.insert(*index, EncKind::Text);
                }
                BlockStart::Thinking => {
                    self.blocks.insert(*index, EncKind::Thinking);
                }
                BlockStart::ToolUse { id, name } => {
                    let tool = self.next_tool;
                    self.next_tool += 1;
                    self.blocks.insert(*index, EncKind::Tool(tool));
                    let delta = json!({"tool_calls": [{
                        "index": tool,
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }]});
                    self.write(out, Some(delta), None, None);
                }
            },
            StreamEvent::Delta { index, delta } => {
                let Some(kind) = self.blocks.get(index).copied() else {
                    return;
                };
                let wire = match (kind, delta) {
                    (EncKind::Text, Delta::Text(t)) => json!({"content": t}),
                    (EncKind::Thinking, Delta::Thinking(t)) => json!({"reasoning_content": t}),
                    (EncKind::Tool(tool), Delta::Json(piece)) => {
                        json!({"tool_calls": [{"index": tool, "function": {"arguments": piece}}]})
                    }
                    // Signatures have no chat field; mismatched deltas are ignored.
                    _ => return,
                };
                self.write(out, Some(wire), None, None);
            }
            StreamEvent::BlockStop { index } => {
                self.blocks.remove(index);
            }
            StreamEvent::Finish { stop_reason, usage, .. } => {
                self.write(out, Some(json!({})), Some(stop_reason_to_wire(*stop_reason)), None);
                // The usage chunk has empty choices, as with `stream_options.include_usage`.
                if !usage.tokens.is_empty() || usage.reasoning_tokens != 0 {
                    self.write(out, None, None, Some(usage_to_wire(usage)));
                }
            }
            StreamEvent::Stop => {
                write_data(out, "[DONE]");
                self.ended = true;
            }
            StreamEvent::Error { kind, message } => {
                // OpenAI reports mid-stream failures as a data line holding an error object; SDKs
                // raise on it. No `[DONE]` follows: the stream did not complete.
                write_data(out, &error_body(kind, message, status_for_kind(kind)).to_string());
                self.ended = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_become_base64_images() {
        assert_eq!(
            image_from_url("data:image/png;base64,iVBORw0KGgo="),
            ImageSource::Base64 { media_type: "image/png".into(), data: "iVBORw0KGgo=".into() }
        );
        assert_eq!(
            image_from_url("data:text/plain,hello"),
            ImageSource::Url { url: "data:text/plain,hello".into() }
        );
        assert_eq!(image_from_url("https://x/y.png"), ImageSource::Url { url: "https://x/y.png".into() });
        let b64 = ImageSource::Base64 { media_type: "image/jpeg".into(), data: "AAAA".into() };
        assert_eq!(image_from_url(&image_to_url(&b64)), b64);
    }

    fn usage_from_wire(v: &Value) -> Usage {
        let text = v.to_string();
        usage_from_in(&lenient::parse::<UsageIn<'_>>(&text).expect("json"))
    }

    #[test]
    fn usage_subtracts_cached_and_written_tokens() {
        let u = usage_from_wire(&json!({
            "prompt_tokens": 100, "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
            "completion_tokens_details": {"reasoning_tokens": 3}
        }));
        assert_eq!(u.tokens.input_tokens, 10);
        assert_eq!(u.tokens.cache_read_input_tokens, 60);
        assert_eq!(u.tokens.cache_creation_input_tokens, 30);
        assert_eq!(u.reasoning_tokens, 3);
        let wire = usage_to_wire(&u);
        assert_eq!(wire.prompt_tokens, 100);
        assert_eq!(wire.total_tokens, 107);
        // Inconsistent counts never underflow.
        let odd =
            usage_from_wire(&json!({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}}));
        assert_eq!(odd.tokens.input_tokens, 0);
        // DeepSeek's top-level cache hit count.
        let ds = usage_from_wire(&json!({"prompt_tokens": 50, "prompt_cache_hit_tokens": 20}));
        assert_eq!(ds.tokens.cache_read_input_tokens, 20);
        assert_eq!(ds.tokens.input_tokens, 30);
    }

    #[test]
    fn completions_are_written_with_sorted_keys_as_a_value_would_be() {
        let tokens = TokenUsage {
            input_tokens: 10,
            output_tokens: 5,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 2,
            ..TokenUsage::default()
        };
        let usage = Usage { tokens, reasoning_tokens: 4 };
        let contents = [
            vec![],
            vec![Block::Text { text: "only \"text\" \u{1f980}".into() }],
            vec![
                Block::Thinking { text: "hmm".into(), signature: Some("sig".into()) },
                Block::Text { text: "a".into() },
                Block::Text { text: "b".into() },
                Block::ToolUse { id: "call_1".into(), name: "f".into(), input: json!({"x": [1, "y"]}) },
                Block::ToolUse { id: "call_2".into(), name: "g".into(), input: Value::String("{bad".into()) },
            ],
        ];
        for content in contents {
            let resp = Response {
                id: "chatcmpl-1".into(),
                model: "m".into(),
                content,
                stop_reason: StopReason::ToolUse,
                stop_sequence: Some("x".into()),
                usage,
            };
            let out = OpenaiChatCodec.encode_response(&resp, &mut Notes::default()).expect("encode");
            let value: Value = serde_json::from_slice(&out).expect("json");
            assert_eq!(String::from_utf8_lossy(&out), value.to_string());
        }
    }

    #[test]
    fn invalid_arguments_survive_verbatim() {
        let v = parse_arguments("{\"a\": 1");
        assert_eq!(v, Value::String("{\"a\": 1".into()));
        assert_eq!(arguments_to_wire(&v), "{\"a\": 1");
        assert_eq!(parse_arguments(""), json!({}));
    }
}
