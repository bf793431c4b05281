//! The OpenAI Responses API (`POST /v1/responses`) as Codex CLI speaks it.
//!
//! Requests: `instructions` and `system`/`developer` input messages become system prompts; the
//! `input` items (messages, `function_call`, `function_call_output`, `reasoning`) become turns,
//! consecutive items of one speaker merging into one IR message; tools come from `tools` and from
//! the `additional_tools` input items Codex CLI sends to some models. Responses: each `output` item
//! is one IR block (the text parts of a message item join into one text block); a reasoning item
//! is a thinking block whose signature is its `encrypted_content`. Streams: the IR block index is
//! the `output_index`. Usage: Responses counts cached tokens inside `input_tokens`, the IR does not,
//! so decoding subtracts them and encoding adds them back.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::BytesMut;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::ir::{
    Block, BlockStart, Delta, ImageSource, Message, Reasoning, Request, Response, ResponseFormat, Role,
    StopReason, StreamEvent, Tool, ToolChoice, Usage,
};
use super::lenient::{self, F, lenient_object};
use super::{Codec, ErrorInfo, Notes, StreamDecoder, StreamEncoder, TranslateError};
use crate::dialect::Dialect;
use crate::sse::SseDecoder;
use crate::usage::TokenUsage;

/// Codec of the OpenAI Responses API (Codex CLI's dialect).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenaiResponsesCodec;

/// What Codex asks for so that reasoning survives `store: false`.
const INCLUDE_ENCRYPTED: &str = "reasoning.encrypted_content";

/// Request fields this dialect has and the IR does not; their presence is noted.
const UNCARRIED_FIELDS: &[&str] = &[
    "previous_response_id",
    "conversation",
    "prompt",
    "prompt_cache_key",
    "prompt_cache_retention",
    "metadata",
    "service_tier",
    "truncation",
    "top_logprobs",
    "max_tool_calls",
    "background",
    "client_metadata",
    "stream_options",
];

// ---------------------------------------------------------------------------------------------
// JSON helpers: absent or null is "not set"; a present value of the wrong type is an error.

fn err(message: impl Into<String>) -> TranslateError {
    TranslateError::new(message)
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, TranslateError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(err("the body is not a JSON object")),
        Err(e) => Err(err(format!("the body is not valid JSON: {e}"))),
    }
}

fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(format!("`{key}` must be a string"))),
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a str, TranslateError> {
    opt_str(obj, key)?.ok_or_else(|| err(format!("{what} without `{key}`")))
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(err(format!("`{key}` must be a boolean"))),
    }
}

fn opt_f64(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(err(format!("`{key}` must be a number"))),
    }
}

fn opt_u64(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => Ok(Some(v)),
            // Some clients write integers as `1024.0`.
            None => match n.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(Some(f as u64)),
                _ => Err(err(format!("`{key}` must be a non-negative integer"))),
            },
        },
        Some(_) => Err(err(format!("`{key}` must be a non-negative integer"))),
    }
}

fn opt_array<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Vec<Value>>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(err(format!("`{key}` must be an array"))),
    }
}

fn opt_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(err(format!("`{key}` must be an object"))),
    }
}

fn as_object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, TranslateError> {
    v.as_object().ok_or_else(|| err(format!("{what} must be an object")))
}

/// A number read without failing, for stream events and usage (never worth an error).
fn lenient_u64(v: Option<&Value>) -> u64 {
    v.and_then(|v| v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))).unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------------------
// Shared pieces: usage, images, arguments, stop reasons, error kinds.

/// Responses usage (cached inside `input_tokens`) to the IR's Anthropic accounting.
fn decode_usage(usage: Option<&Value>) -> Usage {
    let Some(u) = usage.and_then(Value::as_object) else {
        return Usage::default();
    };
    let input = lenient_u64(u.get("input_tokens"));
    let cached = lenient_u64(u.get("input_tokens_details").and_then(|d| d.get("cached_tokens")));
    Usage {
        tokens: TokenUsage {
            input_tokens: input.saturating_sub(cached),
            output_tokens: lenient_u64(u.get("output_tokens")),
            cache_read_input_tokens: cached,
            ..TokenUsage::default()
        },
        reasoning_tokens: lenient_u64(u.get("output_tokens_details").and_then(|d| d.get("reasoning_tokens"))),
    }
}

/// The IR usage in Responses accounting: cache reads and writes are part of `input_tokens`.
fn encode_usage(usage: &Usage) -> Value {
    let t = &usage.tokens;
    let input = t
        .input_tokens
        .saturating_add(t.cache_read_input_tokens)
        .saturating_add(t.cache_creation_input_tokens);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": t.cache_read_input_tokens},
        "output_tokens": t.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": input.saturating_add(t.output_tokens),
    })
}

fn image_source(url: &str) -> ImageSource {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media_type) = meta.strip_suffix(";base64")
    {
        return ImageSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() };
    }
    ImageSource::Url { url: url.to_owned() }
}

fn image_url(source: &ImageSource) -> String {
    match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url.clone(),
    }
}

/// Function arguments are a JSON string on the wire; the IR wants the value. Arguments that are
/// not JSON are kept as a JSON string so that they go back out unchanged.
fn parse_arguments(args: &str, notes: &mut Notes) -> Value {
    if args.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v) => v,
        Err(_) => {
            notes.note("function_call.arguments (not valid JSON; kept as a string)");
            Value::String(args.to_owned())
        }
    }
}

fn encode_arguments(input: &Value) -> String {
    match input {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

fn stop_reason(status: Option<&str>, reason: Option<&str>, tool_call: bool, refusal: bool) -> StopReason {
    if status == Some("incomplete") {
        return match reason {
            Some("content_filter") => StopReason::Refusal,
            // `max_output_tokens` is the other documented reason.
            _ => StopReason::MaxTokens,
        };
    }
    if tool_call {
        StopReason::ToolUse
    } else if refusal {
        StopReason::Refusal
    } else {
        StopReason::EndTurn
    }
}

/// `status` and `incomplete_details` of a response that stopped for `reason`.
fn encode_status(reason: StopReason) -> (&'static str, Value) {
    match reason {
        StopReason::MaxTokens => ("incomplete", json!({"reason": "max_output_tokens"})),
        StopReason::Refusal => ("incomplete", json!({"reason": "content_filter"})),
        StopReason::EndTurn | StopReason::ToolUse | StopReason::StopSequence => ("completed", Value::Null),
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

fn kind_from_code(code: Option<&str>, kind: Option<&str>) -> &'static str {
    match code {
        Some("rate_limit_exceeded" | "insufficient_quota") => return "rate_limit",
        Some("server_is_overloaded" | "slow_down") => return "overloaded",
        Some("invalid_api_key") => return "authentication",
        Some("model_not_found") => return "not_found",
        Some("server_error") => return "api_error",
        Some(c) if c.starts_with("invalid_") || c.starts_with("image_") || c == "context_length_exceeded" => {
            return "invalid_request";
        }
        _ => {}
    }
    match kind {
        Some("invalid_request_error") => "invalid_request",
        Some("authentication_error") => "authentication",
        Some("permission_error") => "permission",
        Some("not_found_error") => "not_found",
        Some("rate_limit_error" | "requests" | "tokens" | "insufficient_quota") => "rate_limit",
        Some("overloaded_error") => "overloaded",
        _ => "api_error",
    }
}

/// `(type, code)` of an error of `kind`, in the shapes OpenAI returns.
fn error_type_code(kind: &str) -> (&'static str, Option<&'static str>) {
    match kind {
        "invalid_request" => ("invalid_request_error", None),
        "authentication" => ("invalid_request_error", Some("invalid_api_key")),
        "permission" => ("permission_error", None),
        "not_found" => ("invalid_request_error", Some("model_not_found")),
        "rate_limit" => ("requests", Some("rate_limit_exceeded")),
        "overloaded" => ("server_error", Some("server_is_overloaded")),
        _ => ("server_error", Some("server_error")),
    }
}

/// The `code` of a failed response (`response.error.code`) for an error of `kind`.
fn failed_code(kind: &str) -> &str {
    match kind {
        "rate_limit" => "rate_limit_exceeded",
        "overloaded" => "server_is_overloaded",
        "invalid_request" => "invalid_prompt",
        "authentication" => "invalid_api_key",
        "not_found" => "model_not_found",
        _ => "server_error",
    }
}

// ---------------------------------------------------------------------------------------------
// Requests.

/// Builds IR turns, merging consecutive items of one speaker (Responses lists reasoning, text
/// and each function call as separate items; the IR puts one turn's blocks in one message).
#[derive(Default)]
struct Turns(Vec<Message>);

impl Turns {
    fn push(&mut self, role: Role, block: Block) {
        match self.0.last_mut() {
            Some(last) if last.role == role => last.content.push(block),
            _ => self.0.push(Message { role, content: vec![block] }),
        }
    }
}

fn decode_image(part: &Map<String, Value>, notes: &mut Notes) -> Option<Block> {
    let url = match part.get("image_url") {
        Some(Value::String(s)) => Some(s.as_str()),
        // Chat Completions' shape, sent by some clients to this endpoint too.
        Some(Value::Object(o)) => o.get("url").and_then(Value::as_str),
        _ => None,
    };
    if let Some(detail) = part.get("detail").and_then(Value::as_str)
        && detail != "auto"
    {
        notes.note("input_image.detail");
    }
    match url {
        Some(url) => Some(Block::Image { source: image_source(url) }),
        None => {
            if part.get("file_id").is_some_and(|v| !v.is_null()) {
                notes.note("input_image.file_id (file references cannot be carried)");
            } else {
                notes.note("input_image without image_url");
            }
            None
        }
    }
}

/// Message content: a string or a list of parts.
fn decode_content(content: Option<&Value>, notes: &mut Notes) -> Result<Vec<Block>, TranslateError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![Block::Text { text: s.clone() }]),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(err("`content` must be a string or an array")),
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for part in parts {
        let part = as_object(part, "a content part")?;
        match opt_str(part, "type")? {
            Some("input_text" | "output_text" | "text") => {
                blocks.push(Block::Text { text: req_str(part, "text", "a text part")?.to_owned() });
                if part.get("annotations").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
                    notes.note("output_text.annotations");
                }
            }
            Some("refusal") => {
                blocks.push(Block::Text { text: req_str(part, "refusal", "a refusal part")?.to_owned() })
            }
            Some("input_image") => blocks.extend(decode_image(part, notes)),
            Some("input_file") => notes.note("input_file content parts"),
            Some(other) => notes.note(format!("content part type `{other}`")),
            None => notes.note("content part without `type`"),
        }
    }
    Ok(blocks)
}

/// The text of a system/developer message.
fn system_text(content: Option<&Value>, notes: &mut Notes) -> Result<String, TranslateError> {
    let mut texts = Vec::new();
    for block in decode_content(content, notes)? {
        match block {
            Block::Text { text } => texts.push(text),
            _ => notes.note("non-text content in a system/developer message"),
        }
    }
    Ok(texts.join("\n"))
}

/// A function result: a string, a list of content parts, or Codex's older
/// `{content, success}` object.
fn decode_tool_output(
    output: Option<&Value>,
    notes: &mut Notes,
) -> Result<(Vec<Block>, bool), TranslateError> {
    match output {
        Some(Value::Object(o)) => {
            let failed = opt_bool(o, "success")? == Some(false);
            Ok((decode_content(o.get("content"), notes)?, failed))
        }
        Some(Value::String(s)) => Ok((vec![Block::Text { text: s.clone() }], false)),
        other => Ok((decode_content(other, notes)?, false)),
    }
}

/// The text of a reasoning item: its summary parts, else its raw reasoning text.
fn reasoning_text(item: &Map<String, Value>) -> String {
    let texts = |key: &str| -> Vec<String> {
        item.get(key)
            .and_then(Value::as_array)
            .map(|parts| {
                parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let summary = texts("summary");
    if !summary.is_empty() {
        return summary.join("\n\n");
    }
    texts("content").join("\n\n")
}

fn decode_tools(tools: &[Value], out: &mut Vec<Tool>, notes: &mut Notes) -> Result<(), TranslateError> {
    for tool in tools {
        let tool = as_object(tool, "a tool")?;
        match opt_str(tool, "type")? {
            Some("function") | None => {
                // Chat Completions nests the definition under `function`; accept that too.
                let def = opt_object(tool, "function")?.unwrap_or(tool);
                let name = req_str(def, "name", "a function tool")?;
                if def.get("strict").and_then(Value::as_bool) == Some(true) {
                    notes.note("tools[].strict");
                }
                if out.iter().any(|t| t.name == name) {
                    continue;
                }
                out.push(Tool {
                    name: name.to_owned(),
                    description: opt_str(def, "description")?.map(str::to_owned),
                    parameters: match def.get("parameters") {
                        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                        Some(p) => p.clone(),
                    },
                });
            }
            Some("namespace") => {
                // Codex groups MCP tools in namespaces; the IR has one flat list.
                notes.note("tools[].type=namespace (flattened)");
                if let Some(inner) = opt_array(tool, "tools")? {
                    decode_tools(inner, out, notes)?;
                }
            }
            Some(other) => notes.note(format!("tools[].type={other} (built-in or custom tool skipped)")),
        }
    }
    Ok(())
}

fn decode_tool_choice(v: Option<&Value>, notes: &mut Notes) -> Result<Option<ToolChoice>, TranslateError> {
    Ok(match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(ToolChoice::Auto),
            "none" => Some(ToolChoice::None),
            "required" => Some(ToolChoice::Required),
            other => {
                notes.note(format!("tool_choice={other}"));
                None
            }
        },
        Some(Value::Object(o)) => match opt_str(o, "type")? {
            Some("function") => {
                let name = match opt_str(o, "name")? {
                    Some(n) => n,
                    None => req_str(
                        opt_object(o, "function")?
                            .ok_or_else(|| err("tool_choice function without `name`"))?,
                        "name",
                        "tool_choice.function",
                    )?,
                };
                Some(ToolChoice::Tool { name: name.to_owned() })
            }
            Some(other) => {
                notes.note(format!("tool_choice.type={other}"));
                None
            }
            None => {
                notes.note("tool_choice without type");
                None
            }
        },
        Some(_) => return Err(err("`tool_choice` must be a string or an object")),
    })
}

fn decode_input_item(
    item: &Value,
    req: &mut Request,
    turns: &mut Turns,
    notes: &mut Notes,
) -> Result<(), TranslateError> {
    let item = as_object(item, "an `input` item")?;
    let kind = opt_str(item, "type")?;
    let note_id = |notes: &mut Notes, what: &str| {
        if item.get("id").is_some_and(|v| !v.is_null()) {
            notes.note(format!("{what}.id (item ids are not carried)"));
        }
    };
    match kind {
        None | Some("message") => {
            let role = req_str(item, "role", "an input message")?;
            match role {
                "system" | "developer" => {
                    if !turns.0.is_empty() {
                        notes.note(
                            "input[] system/developer message after the conversation began (moved to system)",
                        );
                    }
                    let text = system_text(item.get("content"), notes)?;
                    if !text.is_empty() {
                        req.system.push(text);
                    }
                }
                "user" | "assistant" => {
                    let role = if role == "user" { Role::User } else { Role::Assistant };
                    for block in decode_content(item.get("content"), notes)? {
                        turns.push(role, block);
                    }
                    note_id(notes, "message");
                }
                other => notes.note(format!("input message role `{other}`")),
            }
        }
        Some("function_call") => {
            let call_id = match opt_str(item, "call_id")? {
                Some(c) => c,
                None => req_str(item, "id", "a function_call")?,
            };
            let name = req_str(item, "name", "a function_call")?;
            let input = match item.get("arguments") {
                None | Some(Value::Null) => json!({}),
                Some(Value::String(s)) => parse_arguments(s, notes),
                // Some clients send the arguments already parsed.
                Some(v @ Value::Object(_)) => v.clone(),
                Some(_) => return Err(err("`arguments` must be a string")),
            };
            if item.get("namespace").is_some_and(|v| !v.is_null()) {
                notes.note("function_call.namespace");
            }
            note_id(notes, "function_call");
            turns.push(
                Role::Assistant,
                Block::ToolUse { id: call_id.to_owned(), name: name.to_owned(), input },
            );
        }
        Some("function_call_output") => {
            let call_id = req_str(item, "call_id", "a function_call_output")?;
            let (content, is_error) = decode_tool_output(item.get("output"), notes)?;
            turns.push(Role::User, Block::ToolResult { tool_use_id: call_id.to_owned(), content, is_error });
        }
        Some("reasoning") => {
            note_id(notes, "reasoning");
            let signature = opt_str(item, "encrypted_content")?.map(str::to_owned);
            turns.push(Role::Assistant, Block::Thinking { text: reasoning_text(item), signature });
        }
        Some("additional_tools") => {
            if let Some(tools) = opt_array(item, "tools")? {
                decode_tools(tools, &mut req.tools, notes)?;
            }
        }
        Some(other) => notes.note(format!("input item type `{other}`")),
    }
    Ok(())
}

fn decode_request(body: &[u8], notes: &mut Notes) -> Result<Request, TranslateError> {
    let obj = parse_object(body)?;
    let mut req =
        Request { model: opt_str(&obj, "model")?.unwrap_or_default().to_owned(), ..Request::default() };
    if let Some(instructions) = opt_str(&obj, "instructions")?
        && !instructions.is_empty()
    {
        req.system.push(instructions.to_owned());
    }
    let mut turns = Turns::default();
    match obj.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => turns.push(Role::User, Block::Text { text: text.clone() }),
        Some(Value::Array(items)) => {
            for item in items {
                decode_input_item(item, &mut req, &mut turns, notes)?;
            }
        }
        Some(_) => return Err(err("`input` must be a string or an array")),
    }
    req.messages = turns.0;
    if let Some(tools) = opt_array(&obj, "tools")? {
        // Top-level tools come first, as the model sees them.
        let mut top = Vec::new();
        decode_tools(tools, &mut top, notes)?;
        for tool in std::mem::take(&mut req.tools) {
            if !top.iter().any(|t| t.name == tool.name) {
                top.push(tool);
            }
        }
        req.tools = top;
    }
    req.tool_choice = decode_tool_choice(obj.get("tool_choice"), notes)?;
    req.parallel_tool_calls = opt_bool(&obj, "parallel_tool_calls")?;
    req.max_tokens = opt_u64(&obj, "max_output_tokens")?;
    req.temperature = opt_f64(&obj, "temperature")?;
    req.top_p = opt_f64(&obj, "top_p")?;
    req.stream = opt_bool(&obj, "stream")?.unwrap_or(false);
    req.user = opt_str(&obj, "user")?.map(str::to_owned);
    if let Some(id) = obj.get("safety_identifier").and_then(Value::as_str) {
        match &req.user {
            None => req.user = Some(id.to_owned()),
            Some(user) if user != id => notes.note("safety_identifier"),
            Some(_) => {}
        }
    }
    if let Some(r) = opt_object(&obj, "reasoning")? {
        let effort = opt_str(r, "effort")?.map(str::to_owned);
        let summary = match opt_str(r, "summary")? {
            Some(s) => Some(s.to_owned()),
            None => opt_str(r, "generate_summary")?.map(str::to_owned),
        };
        let disabled = effort.as_deref() == Some("none");
        req.reasoning = Some(Reasoning { effort, budget_tokens: None, summary, disabled });
    }
    if let Some(text) = opt_object(&obj, "text")? {
        if let Some(format) = opt_object(text, "format")? {
            req.response_format = match opt_str(format, "type")? {
                Some("json_schema") => {
                    if format.get("description").is_some_and(|v| !v.is_null()) {
                        notes.note("text.format.description");
                    }
                    Some(ResponseFormat::JsonSchema {
                        name: opt_str(format, "name")?.map(str::to_owned),
                        schema: format.get("schema").cloned().unwrap_or(Value::Null),
                        strict: opt_bool(format, "strict")?,
                    })
                }
                Some("json_object") => Some(ResponseFormat::JsonObject),
                Some("text") | None => None,
                Some(other) => {
                    notes.note(format!("text.format.type={other}"));
                    None
                }
            };
        }
        if text.get("verbosity").is_some_and(|v| !v.is_null()) {
            notes.note("text.verbosity");
        }
    }
    for field in UNCARRIED_FIELDS {
        if obj.get(*field).is_some_and(|v| !v.is_null()) {
            notes.note(*field);
        }
    }
    if obj.get("store").and_then(Value::as_bool) == Some(true) {
        notes.note("store=true (requests are sent with store=false)");
    }
    if let Some(include) = obj.get("include").and_then(Value::as_array) {
        for what in include.iter().filter_map(Value::as_str).filter(|w| *w != INCLUDE_ENCRYPTED) {
            notes.note(format!("include[]={what}"));
        }
    }
    Ok(req)
}

fn reasoning_item(text: &str, signature: Option<&str>) -> Value {
    let summary = if text.is_empty() { json!([]) } else { json!([{"type": "summary_text", "text": text}]) };
    let mut item = json!({"type": "reasoning", "summary": summary});
    if let (Some(sig), Some(obj)) = (signature, item.as_object_mut()) {
        obj.insert("encrypted_content".into(), sig.into());
    }
    item
}

// Request bodies are written from typed structs borrowing the IR. Their fields are declared in
// key order: the bodies are byte for byte what serializing a `Value` (sorted keys) gave.

#[derive(Serialize)]
struct RequestOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    include: Option<[&'static str; 1]>,
    input: Vec<ItemOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<ReasoningOut<'a>>,
    store: bool,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<TextOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ItemOut<'a> {
    Message { content: Vec<PartOut<'a>>, role: &'static str, r#type: &'static str },
    FunctionCall { arguments: String, call_id: &'a str, name: &'a str, r#type: &'static str },
    FunctionCallOutput { call_id: &'a str, output: ToolOutputOut<'a>, r#type: &'static str },
    Reasoning { encrypted_content: &'a str, summary: Vec<PartOut<'a>>, r#type: &'static str },
}

#[derive(Serialize)]
#[serde(untagged)]
enum PartOut<'a> {
    Text { text: &'a str, r#type: &'static str },
    Image { detail: &'static str, image_url: String, r#type: &'static str },
}

fn image_part(source: &ImageSource) -> PartOut<'_> {
    PartOut::Image { detail: "auto", image_url: image_url(source), r#type: "input_image" }
}

/// A reasoning input item: its summary text and encrypted content.
fn reasoning_input<'a>(text: &'a str, signature: &'a str) -> ItemOut<'a> {
    let summary =
        if text.is_empty() { Vec::new() } else { vec![PartOut::Text { text, r#type: "summary_text" }] };
    ItemOut::Reasoning { encrypted_content: signature, summary, r#type: "reasoning" }
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolOutputOut<'a> {
    Text(&'a str),
    Parts(Vec<PartOut<'a>>),
}

#[derive(Serialize)]
struct ToolOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    name: &'a str,
    parameters: &'a Value,
    strict: bool,
    r#type: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolChoiceOut<'a> {
    Mode(&'static str),
    Function { name: &'a str, r#type: &'static str },
}

#[derive(Serialize)]
struct ReasoningOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    effort: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<&'a str>,
}

#[derive(Serialize)]
struct TextOut<'a> {
    format: FormatOut<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum FormatOut<'a> {
    JsonObject {
        r#type: &'static str,
    },
    JsonSchema {
        name: &'a str,
        schema: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
        r#type: &'static str,
    },
}

fn encode_tool_output<'a>(content: &'a [Block], notes: &mut Notes) -> ToolOutputOut<'a> {
    if let [Block::Text { text }] = content {
        return ToolOutputOut::Text(text);
    }
    if content.is_empty() {
        return ToolOutputOut::Text("");
    }
    let mut parts = Vec::new();
    for block in content {
        match block {
            Block::Text { text } => parts.push(PartOut::Text { text, r#type: "input_text" }),
            Block::Image { source } => parts.push(image_part(source)),
            _ => notes.note("non-text, non-image content in a tool result"),
        }
    }
    ToolOutputOut::Parts(parts)
}

/// Writes the IR turns as input items, splitting each message at tool calls, tool results and
/// reasoning (separate items here).
fn encode_messages<'a>(messages: &'a [Message], input: &mut Vec<ItemOut<'a>>, notes: &mut Notes) {
    for message in messages {
        let (role, text_type) = match message.role {
            Role::User => ("user", "input_text"),
            Role::Assistant => ("assistant", "output_text"),
        };
        let mut parts: Vec<PartOut<'a>> = Vec::new();
        let flush = |parts: &mut Vec<PartOut<'a>>, input: &mut Vec<ItemOut<'a>>| {
            if !parts.is_empty() {
                input.push(ItemOut::Message { content: std::mem::take(parts), role, r#type: "message" });
            }
        };
        for block in &message.content {
            match block {
                Block::Text { text } => parts.push(PartOut::Text { text, r#type: text_type }),
                Block::Image { source } => {
                    if message.role == Role::User {
                        parts.push(image_part(source));
                    } else {
                        notes.note("images in assistant messages");
                    }
                }
                Block::ToolUse { id, name, input: args } => {
                    flush(&mut parts, input);
                    input.push(ItemOut::FunctionCall {
                        arguments: encode_arguments(args),
                        call_id: id,
                        name,
                        r#type: "function_call",
                    });
                }
                Block::ToolResult { tool_use_id, content, is_error } => {
                    flush(&mut parts, input);
                    if *is_error {
                        notes.note("tool_result.is_error");
                    }
                    input.push(ItemOut::FunctionCallOutput {
                        call_id: tool_use_id,
                        output: encode_tool_output(content, notes),
                        r#type: "function_call_output",
                    });
                }
                Block::Thinking { text, signature } => match signature {
                    Some(sig) => {
                        flush(&mut parts, input);
                        input.push(reasoning_input(text, sig));
                    }
                    // Without `store`, a reasoning item is only usable with its encrypted content.
                    None => {
                        notes.note("thinking without signature (a reasoning item needs encrypted_content)")
                    }
                },
                Block::RedactedThinking { data } => {
                    flush(&mut parts, input);
                    input.push(reasoning_input("", data));
                }
            }
        }
        flush(&mut parts, input);
    }
}

fn encode_request(req: &Request, notes: &mut Notes) -> Result<Vec<u8>, TranslateError> {
    let mut input = Vec::new();
    let mut system = req.system.iter().filter(|s| !s.is_empty());
    let instructions = system.next().map(String::as_str);
    // Further system prompts go first as developer messages, as Codex CLI sends them.
    for text in system {
        input.push(ItemOut::Message {
            content: vec![PartOut::Text { text, r#type: "input_text" }],
            role: "developer",
            r#type: "message",
        });
    }
    encode_messages(&req.messages, &mut input, notes);
    let tools = req
        .tools
        .iter()
        .map(|t| ToolOut {
            description: t.description.as_deref(),
            name: &t.name,
            parameters: &t.parameters,
            strict: false,
            r#type: "function",
        })
        .collect();
    let tool_choice = req.tool_choice.as_ref().map(|choice| match choice {
        ToolChoice::Auto => ToolChoiceOut::Mode("auto"),
        ToolChoice::None => ToolChoiceOut::Mode("none"),
        ToolChoice::Required => ToolChoiceOut::Mode("required"),
        ToolChoice::Tool { name } => ToolChoiceOut::Function { name, r#type: "function" },
    });
    if req.top_k.is_some() {
        notes.note("top_k");
    }
    if !req.stop.is_empty() {
        notes.note("stop");
    }
    let mut reasoning_on = false;
    let mut reasoning = None;
    if let Some(r) = &req.reasoning {
        let mut effort = r.effort.as_deref();
        if effort.is_none()
            && let Some(budget) = r.budget_tokens
        {
            notes.note("reasoning.budget_tokens (approximated as reasoning.effort)");
            effort = Some(match budget {
                0..4096 => "low",
                4096..16384 => "medium",
                _ => "high",
            });
        }
        if r.disabled && effort.is_none() {
            notes.note("reasoning disabled (left to the model's default)");
        } else {
            reasoning_on = effort != Some("none");
            reasoning = Some(ReasoningOut { effort, summary: r.summary.as_deref() });
        }
    }
    let text = match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            Some(TextOut { format: FormatOut::JsonObject { r#type: "json_object" } })
        }
        Some(ResponseFormat::JsonSchema { name, schema, strict }) => {
            // OpenAI requires a name.
            let name = name.as_deref().unwrap_or_else(|| {
                notes.note("response_format.json_schema.name (defaulted)");
                "response"
            });
            Some(TextOut {
                format: FormatOut::JsonSchema { name, schema, strict: *strict, r#type: "json_schema" },
            })
        }
        None => None,
    };
    let body = RequestOut {
        include: reasoning_on.then_some([INCLUDE_ENCRYPTED]),
        input,
        instructions,
        max_output_tokens: req.max_tokens,
        model: &req.model,
        parallel_tool_calls: req.parallel_tool_calls,
        reasoning,
        // Codex CLI's settings: nothing stored upstream; reasoning comes back encrypted instead.
        store: false,
        stream: req.stream,
        temperature: req.temperature,
        text,
        tool_choice,
        tools,
        top_p: req.top_p,
        user: req.user.as_deref(),
    };
    serde_json::to_vec(&body).map_err(|e| err(format!("cannot write the request: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Responses.

/// What an output item says, for complete responses and for streams that skip deltas.
struct OutputBlock {
    block: Block,
    refusal: bool,
}

fn block_from_output_item(item: &Map<String, Value>) -> Result<Option<OutputBlock>, TranslateError> {
    let mut notes = Notes::default();
    Ok(match opt_str(item, "type")? {
        Some("message") => {
            let mut text = String::new();
            let mut refusal = false;
            match item.get("content") {
                Some(Value::Array(parts)) => {
                    for part in parts {
                        let part = as_object(part, "a content part")?;
                        match opt_str(part, "type")? {
                            Some("refusal") => {
                                refusal = true;
                                text.push_str(opt_str(part, "refusal")?.unwrap_or_default());
                            }
                            _ => text.push_str(opt_str(part, "text")?.unwrap_or_default()),
                        }
                    }
                }
                Some(Value::String(s)) => text.push_str(s),
                None | Some(Value::Null) => {}
                Some(_) => return Err(err("message `content` must be an array")),
            }
            Some(OutputBlock { block: Block::Text { text }, refusal })
        }
        Some("function_call") => {
            let id = match opt_str(item, "call_id")? {
                Some(c) => c,
                None => opt_str(item, "id")?.unwrap_or_default(),
            };
            let input = match item.get("arguments") {
                Some(Value::String(s)) => parse_arguments(s, &mut notes),
                Some(v @ Value::Object(_)) => v.clone(),
                _ => json!({}),
            };
            Some(OutputBlock {
                block: Block::ToolUse {
                    id: id.to_owned(),
                    name: opt_str(item, "name")?.unwrap_or_default().to_owned(),
                    input,
                },
                refusal: false,
            })
        }
        Some("reasoning") => Some(OutputBlock {
            block: Block::Thinking {
                text: reasoning_text(item),
                signature: opt_str(item, "encrypted_content")?.map(str::to_owned),
            },
            refusal: false,
        }),
        _ => None,
    })
}

fn decode_response(body: &[u8]) -> Result<Response, TranslateError> {
    let obj = parse_object(body)?;
    let status = opt_str(&obj, "status")?;
    if status == Some("failed") {
        let message = obj
            .get("error")
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("the response failed");
        return Err(err(message.to_owned()));
    }
    let mut content = Vec::new();
    let (mut tool_call, mut refusal) = (false, false);
    for item in opt_array(&obj, "output")?.map(Vec::as_slice).unwrap_or_default() {
        if let Some(out) = block_from_output_item(as_object(item, "an output item")?)? {
            tool_call |= matches!(out.block, Block::ToolUse { .. });
            refusal |= out.refusal;
            content.push(out.block);
        }
    }
    let reason = obj.get("incomplete_details").and_then(|d| d.get("reason")).and_then(Value::as_str);
    Ok(Response {
        id: opt_str(&obj, "id")?.unwrap_or_default().to_owned(),
        model: opt_str(&obj, "model")?.unwrap_or_default().to_owned(),
        content,
        stop_reason: stop_reason(status, reason, tool_call, refusal),
        stop_sequence: None,
        usage: decode_usage(obj.get("usage")),
    })
}

fn message_item(id: &str, status: &str, text: &str) -> Value {
    let content = if status == "completed" {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    } else {
        json!([])
    };
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn function_call_item(id: &str, status: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({
        "id": id, "type": "function_call", "status": status,
        "call_id": call_id, "name": name, "arguments": arguments,
    })
}

fn output_reasoning_item(id: &str, text: &str, signature: Option<&str>) -> Value {
    let mut item = reasoning_item(text, signature);
    if let Some(obj) = item.as_object_mut() {
        obj.insert("id".into(), id.into());
    }
    item
}

fn response_object(
    id: &str,
    model: &str,
    created_at: i64,
    status: &str,
    output: Vec<Value>,
) -> Map<String, Value> {
    let value = json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": null,
        "incomplete_details": null,
        "model": model,
        "output": output,
        "usage": null,
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn encode_response(resp: &Response, notes: &mut Notes) -> Result<Vec<u8>, TranslateError> {
    let mut output = Vec::new();
    for block in &resp.content {
        match block {
            Block::Text { text } => output.push(message_item(&new_id("msg_"), "completed", text)),
            Block::ToolUse { id, name, input } => {
                let call_id = if id.is_empty() { new_id("call_") } else { id.clone() };
                output.push(function_call_item(
                    &new_id("fc_"),
                    "completed",
                    &call_id,
                    name,
                    &encode_arguments(input),
                ));
            }
            Block::Thinking { text, signature } => {
                output.push(output_reasoning_item(&new_id("rs_"), text, signature.as_deref()))
            }
            Block::RedactedThinking { data } => {
                output.push(output_reasoning_item(&new_id("rs_"), "", Some(data)))
            }
            Block::Image { .. } => notes.note("images in responses"),
            Block::ToolResult { .. } => notes.note("tool results in responses"),
        }
    }
    if resp.stop_reason == StopReason::StopSequence || resp.stop_sequence.is_some() {
        notes.note("stop_sequence");
    }
    if resp.usage.tokens.cache_creation_input_tokens > 0 {
        notes.note("usage.cache_creation_input_tokens (counted in input_tokens)");
    }
    let id = if resp.id.is_empty() { new_id("resp_") } else { resp.id.clone() };
    let (status, incomplete) = encode_status(resp.stop_reason);
    let mut obj = response_object(&id, &resp.model, chrono::Utc::now().timestamp(), status, output);
    obj.insert("incomplete_details".into(), incomplete);
    obj.insert("usage".into(), encode_usage(&resp.usage));
    serde_json::to_vec(&Value::Object(obj)).map_err(|e| err(format!("cannot write the response: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Errors.

fn decode_error(status: u16, body: &[u8]) -> ErrorInfo {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    // `{"error": {...}}`, or the bare object some servers send.
    let error = parsed.as_ref().map(|v| v.get("error").filter(|e| e.is_object()).unwrap_or(v));
    let field = |key: &str| error.and_then(|e| e.get(key)).and_then(Value::as_str);
    let message = match field("message") {
        Some(m) => m.to_owned(),
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() || parsed.is_some() {
                format!("upstream error (HTTP {status})")
            } else {
                text.chars().take(1000).collect()
            }
        }
    };
    let kind = match kind_from_status(status) {
        Some(kind) => kind,
        None => kind_from_code(field("code"), field("type")),
    };
    ErrorInfo { status, kind: kind.to_owned(), message }
}

fn encode_error(error: &ErrorInfo) -> Vec<u8> {
    let (kind, code) = error_type_code(&error.kind);
    json!({"error": {"message": error.message, "type": kind, "param": null, "code": code}})
        .to_string()
        .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Stream decoding.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    Message,
    FunctionCall,
    Reasoning,
}

impl ItemKind {
    fn of(item: &Map<String, Value>) -> Option<Self> {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => Some(Self::Message),
            Some("function_call") => Some(Self::FunctionCall),
            Some("reasoning") => Some(Self::Reasoning),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct ItemState {
    kind: ItemKind,
    open: bool,
    /// Some content of the item was emitted (then `.done` events only repeat it).
    streamed: bool,
    /// Some content of the current part (text part or summary part) was emitted.
    part_streamed: bool,
}

#[derive(Debug, Default)]
struct DecodeState {
    started: bool,
    terminated: bool,
    /// By output index (few per response: a B-tree beats hashing them).
    items: std::collections::BTreeMap<usize, ItemState>,
    ids: HashMap<String, usize>,
    tool_call: bool,
    refusal: bool,
}

lenient_object! {
    /// A stream event as the decoder reads it: the small fields borrowed, the objects that come
    /// once per item or response whole.
    struct EventIn<'de> {
        "type" => kind: Cow<'de, str>,
        "output_index" => output_index: u64,
        "item_id" => item_id: Cow<'de, str>,
        "summary_index" => summary_index: Value,
        "delta" => delta: Cow<'de, str>,
        "text" => text: Cow<'de, str>,
        "arguments" => arguments: Cow<'de, str>,
        "refusal" => refusal: Cow<'de, str>,
        "item" => item: Value,
        "response" => response: ResponseIn<'de>,
    }
}

lenient_object! {
    /// The response object of `response.created`, `.completed` and the like. Its `output` is
    /// read (from the whole event) only when no item events came.
    struct ResponseIn<'de> {
        "id" => id: Cow<'de, str>,
        "model" => model: Cow<'de, str>,
        "status" => status: Cow<'de, str>,
        "usage" => usage: Value,
        "incomplete_details" => incomplete_details: Value,
        "error" => error: Value,
        "output" => output: lenient::Any,
    }
}

impl DecodeState {
    /// The item an event is about: its `output_index`, or the index of its `item_id`.
    fn output_index(&self, ev: &EventIn<'_>) -> Option<usize> {
        ev.output_index
            .u64()
            .and_then(|i| usize::try_from(i).ok())
            .or_else(|| ev.item_id.str().and_then(|id| self.ids.get(id).copied()))
    }

    fn start(&mut self, response: Option<&ResponseIn<'_>>, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(StreamEvent::Start {
            id: response.and_then(|r| r.id.str()).unwrap_or_default().to_owned(),
            model: response.and_then(|r| r.model.str()).unwrap_or_default().to_owned(),
            usage: decode_usage(response.and_then(|r| r.usage.val())),
        });
    }

    fn open_item(&mut self, index: usize, item: &Map<String, Value>, out: &mut Vec<StreamEvent>) -> bool {
        if let Some(id) = item.get("id").and_then(Value::as_str) {
            self.ids.insert(id.to_owned(), index);
        }
        if self.items.contains_key(&index) {
            return true;
        }
        let Some(kind) = ItemKind::of(item) else {
            return false;
        };
        let block = match kind {
            ItemKind::Message => BlockStart::Text,
            ItemKind::Reasoning => BlockStart::Thinking,
            ItemKind::FunctionCall => {
                self.tool_call = true;
                let field = |k: &str| item.get(k).and_then(Value::as_str);
                BlockStart::ToolUse {
                    id: field("call_id").or_else(|| field("id")).unwrap_or_default().to_owned(),
                    name: field("name").unwrap_or_default().to_owned(),
                }
            }
        };
        out.push(StreamEvent::BlockStart { index, block });
        self.items.insert(index, ItemState { kind, open: true, streamed: false, part_streamed: false });
        true
    }

    /// Emits `text` into the open item at `index` if it is of `kind`; `whole` marks a `.done`
    /// event, whose text only counts when no delta of its part came.
    fn content(
        &mut self,
        index: Option<usize>,
        text: Option<&str>,
        kind: ItemKind,
        whole: bool,
        out: &mut Vec<StreamEvent>,
    ) {
        let Some(index) = index else {
            return;
        };
        let Some(text) = text else {
            return;
        };
        if !self.items.contains_key(&index) && kind != ItemKind::FunctionCall {
            // Deltas for an item never announced: open it rather than lose them.
            let synthetic = match kind {
                ItemKind::Message => json!({"type": "message"}),
                _ => json!({"type": "reasoning"}),
            };
            if let Some(item) = synthetic.as_object() {
                self.open_item(index, item, out);
            }
        }
        let Some(state) = self.items.get_mut(&index) else {
            return;
        };
        if !state.open || state.kind != kind || text.is_empty() || (whole && state.part_streamed) {
            return;
        }
        state.streamed = true;
        state.part_streamed = true;
        let delta = match kind {
            ItemKind::Message => Delta::Text(text.to_owned()),
            ItemKind::FunctionCall => Delta::Json(text.to_owned()),
            ItemKind::Reasoning => Delta::Thinking(text.to_owned()),
        };
        out.push(StreamEvent::Delta { index, delta });
    }

    fn new_part(&mut self, ev: &EventIn<'_>, out: &mut Vec<StreamEvent>) {
        let Some(index) = self.output_index(ev) else {
            return;
        };
        let Some(state) = self.items.get_mut(&index) else {
            return;
        };
        state.part_streamed = false;
        // Summary parts join with a blank line, as in complete responses.
        if state.open && state.kind == ItemKind::Reasoning && lenient_u64(ev.summary_index.val()) > 0 {
            out.push(StreamEvent::Delta { index, delta: Delta::Thinking("\n\n".into()) });
        }
    }

    /// `response.output_item.done`: `item` complete at `index`.
    fn item_done(
        &mut self,
        index: Option<usize>,
        item: Option<&Map<String, Value>>,
        out: &mut Vec<StreamEvent>,
    ) {
        let Some(item) = item else {
            return;
        };
        let Some(index) = index else {
            return;
        };
        if !self.open_item(index, item, out) {
            return;
        }
        let Some(state) = self.items.get_mut(&index) else {
            return;
        };
        if !state.open {
            return;
        }
        state.open = false;
        let streamed = state.streamed;
        let kind = state.kind;
        if let Ok(Some(whole)) = block_from_output_item(item) {
            self.refusal |= whole.refusal;
            match whole.block {
                Block::Text { text } if !streamed && !text.is_empty() => {
                    out.push(StreamEvent::Delta { index, delta: Delta::Text(text) })
                }
                Block::ToolUse { .. } if !streamed && kind == ItemKind::FunctionCall => {
                    // The raw string, exactly as sent.
                    if let Some(args) =
                        item.get("arguments").and_then(Value::as_str).filter(|a| !a.is_empty())
                    {
                        out.push(StreamEvent::Delta { index, delta: Delta::Json(args.to_owned()) });
                    }
                }
                Block::Thinking { text, signature } if kind == ItemKind::Reasoning => {
                    if !streamed && !text.is_empty() {
                        out.push(StreamEvent::Delta { index, delta: Delta::Thinking(text) });
                    }
                    if let Some(sig) = signature.filter(|s| !s.is_empty()) {
                        out.push(StreamEvent::Delta { index, delta: Delta::Signature(sig) });
                    }
                }
                _ => {}
            }
        }
        out.push(StreamEvent::BlockStop { index });
    }

    fn close_open(&mut self, out: &mut Vec<StreamEvent>) {
        let mut open: Vec<usize> = self.items.iter().filter(|(_, s)| s.open).map(|(i, _)| *i).collect();
        open.sort_unstable();
        for index in open {
            if let Some(state) = self.items.get_mut(&index) {
                state.open = false;
            }
            out.push(StreamEvent::BlockStop { index });
        }
    }

    /// `response.completed` or `.incomplete`; `data` is the whole event.
    fn complete(
        &mut self,
        incomplete: bool,
        response: Option<&ResponseIn<'_>>,
        data: &str,
        out: &mut Vec<StreamEvent>,
    ) {
        self.start(response, out);
        self.close_open(out);
        if self.items.is_empty() && response.is_some_and(|r| r.output.present()) {
            // A server that sent no item events: the final response still lists the output.
            let whole: Value = serde_json::from_str(data).unwrap_or_default();
            let items = whole.get("response").and_then(|r| r.get("output")).and_then(Value::as_array);
            for (index, item) in items.into_iter().flatten().enumerate() {
                let Some(item) = item.as_object() else { continue };
                if self.open_item(index, item, out) {
                    self.item_done(Some(index), Some(item), out);
                }
            }
        }
        let status = response.and_then(|r| r.status.str()).or(incomplete.then_some("incomplete"));
        let reason = response
            .and_then(|r| r.incomplete_details.val())
            .and_then(|d| d.get("reason"))
            .and_then(Value::as_str);
        out.push(StreamEvent::Finish {
            stop_reason: stop_reason(status, reason, self.tool_call, self.refusal),
            stop_sequence: None,
            usage: decode_usage(response.and_then(|r| r.usage.val())),
        });
        out.push(StreamEvent::Stop);
        self.terminated = true;
    }

    fn fail(&mut self, error: Option<&Value>, default: &str, out: &mut Vec<StreamEvent>) {
        let field = |k: &str| error.and_then(|e| e.get(k)).and_then(Value::as_str);
        out.push(StreamEvent::Error {
            kind: kind_from_code(field("code"), field("type")).to_owned(),
            message: field("message").unwrap_or(default).to_owned(),
        });
        self.terminated = true;
    }

    fn handle(&mut self, name: Option<&str>, data: &str, out: &mut Vec<StreamEvent>) {
        if self.terminated {
            return;
        }
        // Events that are not JSON objects (keep-alives, `[DONE]` from look-alike servers) carry nothing.
        let Ok(F::Val(ev)) = lenient::parse::<EventIn<'_>>(data) else {
            return;
        };
        let kind = ev.kind.str().or(name).unwrap_or_default();
        let index = || self.output_index(&ev);
        match kind {
            "response.created" | "response.in_progress" | "response.queued" => {
                self.start(ev.response.val(), out)
            }
            "response.output_item.added" => {
                if let (Some(item), Some(index)) = (
                    ev.item.val().and_then(Value::as_object),
                    ev.output_index.u64().and_then(|i| usize::try_from(i).ok()),
                ) {
                    self.open_item(index, item, out);
                }
            }
            "response.content_part.added" | "response.reasoning_summary_part.added" => {
                self.new_part(&ev, out)
            }
            "response.output_text.delta" => {
                self.content(index(), ev.delta.str(), ItemKind::Message, false, out)
            }
            "response.output_text.done" => self.content(index(), ev.text.str(), ItemKind::Message, true, out),
            "response.refusal.delta" | "response.refusal.done" => {
                self.refusal = true;
                let (text, whole) =
                    if kind.ends_with("delta") { (ev.delta.str(), false) } else { (ev.refusal.str(), true) };
                let index = self.output_index(&ev);
                self.content(index, text, ItemKind::Message, whole, out);
            }
            "response.function_call_arguments.delta" => {
                self.content(index(), ev.delta.str(), ItemKind::FunctionCall, false, out)
            }
            "response.function_call_arguments.done" => {
                self.content(index(), ev.arguments.str(), ItemKind::FunctionCall, true, out)
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                self.content(index(), ev.delta.str(), ItemKind::Reasoning, false, out)
            }
            "response.reasoning_summary_text.done" | "response.reasoning_text.done" => {
                self.content(index(), ev.text.str(), ItemKind::Reasoning, true, out)
            }
            "response.output_item.done" => {
                let index = self.output_index(&ev);
                self.item_done(index, ev.item.val().and_then(Value::as_object), out)
            }
            "response.completed" => self.complete(false, ev.response.val(), data, out),
            "response.incomplete" => self.complete(true, ev.response.val(), data, out),
            "response.failed" => {
                let response = ev.response.val();
                self.start(response, out);
                self.fail(response.and_then(|r| r.error.val()), "the response failed", out);
            }
            "error" => {
                // `{type: error, code, message}` as documented; some servers nest an `error` object.
                // Rare: read the whole event.
                let whole: Value = serde_json::from_str(data).unwrap_or_default();
                let error = whole.get("error").filter(|e| e.is_object()).unwrap_or(&whole);
                self.fail(Some(error), "upstream stream error", out);
            }
            _ => {}
        }
    }
}

/// Turns Responses SSE bytes into canonical events.
struct ResponsesStreamDecoder {
    sse: SseDecoder,
    state: DecodeState,
}

impl StreamDecoder for ResponsesStreamDecoder {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let state = &mut self.state;
        self.sse.push(chunk, |ev| state.handle(ev.event, &ev.data, out)).map_err(|e| err(e.to_string()))
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        let state = &mut self.state;
        // A cut stream simply ends here: no Finish is invented, the normalizer turns it into an error.
        self.sse.finish(|ev| state.handle(ev.event, &ev.data, out));
    }
}

// ---------------------------------------------------------------------------------------------
// Stream encoding.

#[derive(Debug)]
enum OpenBody {
    Text { text: String },
    Call { call_id: String, name: String, arguments: String },
    Reasoning { text: String, signature: Option<String>, part_open: bool },
}

#[derive(Debug)]
struct OpenItem {
    output_index: usize,
    item_id: String,
    body: OpenBody,
}

/// Writes canonical events as Responses SSE: `response.created`/`in_progress`, one output item per
/// block, then `response.completed` (`response.incomplete` when cut by a limit or a filter,
/// `response.failed` on error).
struct ResponsesStreamEncoder {
    seq: u64,
    id: String,
    model: String,
    created_at: i64,
    started: bool,
    terminated: bool,
    open: HashMap<usize, OpenItem>,
    next_output_index: usize,
    done_items: Vec<(usize, Value)>,
    usage: Usage,
    stop_reason: Option<StopReason>,
}

impl Default for ResponsesStreamEncoder {
    fn default() -> Self {
        Self {
            seq: 0,
            id: String::new(),
            model: String::new(),
            created_at: chrono::Utc::now().timestamp(),
            started: false,
            terminated: false,
            open: HashMap::new(),
            next_output_index: 0,
            done_items: Vec::new(),
            usage: Usage::default(),
            stop_reason: None,
        }
    }
}

impl ResponsesStreamEncoder {
    fn emit(&mut self, out: &mut BytesMut, kind: &str, mut payload: Map<String, Value>) {
        payload.insert("type".into(), kind.into());
        payload.insert("sequence_number".into(), self.seq.into());
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(Value::Object(payload).to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn emit_json(&mut self, out: &mut BytesMut, kind: &str, payload: Value) {
        let payload = match payload {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        self.emit(out, kind, payload);
    }

    fn response(&self, status: &str) -> Map<String, Value> {
        let mut items = self.done_items.clone();
        items.sort_by_key(|(i, _)| *i);
        let output = items.into_iter().map(|(_, v)| v).collect();
        response_object(&self.id, &self.model, self.created_at, status, output)
    }

    fn ensure_start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        if self.id.is_empty() {
            self.id = new_id("resp_");
        }
        for kind in ["response.created", "response.in_progress"] {
            let response = self.response("in_progress");
            self.emit_json(out, kind, json!({"response": response}));
        }
    }

    fn block_start(&mut self, index: usize, block: &BlockStart, out: &mut BytesMut) {
        if self.open.contains_key(&index) {
            return;
        }
        let output_index = self.next_output_index;
        self.next_output_index += 1;
        let (item_id, body, item) = match block {
            BlockStart::Text => {
                let id = new_id("msg_");
                let item = message_item(&id, "in_progress", "");
                (id, OpenBody::Text { text: String::new() }, item)
            }
            BlockStart::ToolUse { id: call_id, name } => {
                let id = new_id("fc_");
                let call_id = if call_id.is_empty() { new_id("call_") } else { call_id.clone() };
                let item = function_call_item(&id, "in_progress", &call_id, name, "");
                (id, OpenBody::Call { call_id, name: name.clone(), arguments: String::new() }, item)
            }
            BlockStart::Thinking => {
                let id = new_id("rs_");
                let item = output_reasoning_item(&id, "", None);
                (id, OpenBody::Reasoning { text: String::new(), signature: None, part_open: false }, item)
            }
        };
        self.emit_json(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": item}),
        );
        if matches!(body, OpenBody::Text { .. }) {
            self.emit_json(
                out,
                "response.content_part.added",
                json!({
                    "item_id": item_id, "output_index": output_index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                }),
            );
        }
        self.open.insert(index, OpenItem { output_index, item_id, body });
    }

    fn delta(&mut self, index: usize, delta: &Delta, out: &mut BytesMut) {
        let Some(item) = self.open.get_mut(&index) else {
            return;
        };
        let (item_id, output_index) = (item.item_id.clone(), item.output_index);
        let mut summary_part_added = false;
        let event = match (&mut item.body, delta) {
            (OpenBody::Text { text }, Delta::Text(d)) => {
                text.push_str(d);
                Some(("response.output_text.delta", json!({"content_index": 0, "delta": d, "logprobs": []})))
            }
            (OpenBody::Call { arguments, .. }, Delta::Json(d)) => {
                arguments.push_str(d);
                Some(("response.function_call_arguments.delta", json!({"delta": d})))
            }
            (OpenBody::Reasoning { text, part_open, .. }, Delta::Thinking(d)) => {
                text.push_str(d);
                summary_part_added = !*part_open;
                *part_open = true;
                Some(("response.reasoning_summary_text.delta", json!({"summary_index": 0, "delta": d})))
            }
            (OpenBody::Reasoning { signature, .. }, Delta::Signature(s)) => {
                signature.get_or_insert_with(String::new).push_str(s);
                None
            }
            _ => None,
        };
        if summary_part_added {
            self.emit_json(
                out,
                "response.reasoning_summary_part.added",
                json!({
                    "item_id": item_id, "output_index": output_index, "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                }),
            );
        }
        if let Some((kind, Value::Object(mut payload))) = event {
            payload.insert("item_id".into(), item_id.into());
            payload.insert("output_index".into(), output_index.into());
            self.emit(out, kind, payload);
        }
    }

    fn block_stop(&mut self, index: usize, out: &mut BytesMut) {
        let Some(OpenItem { output_index, item_id, body }) = self.open.remove(&index) else {
            return;
        };
        let ids = json!({"item_id": item_id, "output_index": output_index});
        let with = |extra: Value| -> Value {
            let mut v = ids.clone();
            if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
                obj.extend(extra);
            }
            v
        };
        let item = match body {
            OpenBody::Text { text } => {
                self.emit_json(
                    out,
                    "response.output_text.done",
                    with(json!({"content_index": 0, "text": text, "logprobs": []})),
                );
                self.emit_json(
                    out,
                    "response.content_part.done",
                    with(json!({
                        "content_index": 0,
                        "part": {"type": "output_text", "text": text, "annotations": []},
                    })),
                );
                message_item(&item_id, "completed", &text)
            }
            OpenBody::Call { call_id, name, arguments } => {
                self.emit_json(
                    out,
                    "response.function_call_arguments.done",
                    with(json!({"name": name, "arguments": arguments})),
                );
                function_call_item(&item_id, "completed", &call_id, &name, &arguments)
            }
            OpenBody::Reasoning { text, signature, part_open } => {
                if part_open {
                    self.emit_json(
                        out,
                        "response.reasoning_summary_text.done",
                        with(json!({"summary_index": 0, "text": text})),
                    );
                    self.emit_json(
                        out,
                        "response.reasoning_summary_part.done",
                        with(json!({"summary_index": 0, "part": {"type": "summary_text", "text": text}})),
                    );
                }
                output_reasoning_item(&item_id, &text, signature.as_deref())
            }
        };
        self.emit_json(out, "response.output_item.done", json!({"output_index": output_index, "item": item}));
        self.done_items.push((output_index, item));
    }

    fn close_all(&mut self, out: &mut BytesMut) {
        let mut open: Vec<usize> = self.open.keys().copied().collect();
        open.sort_unstable();
        for index in open {
            self.block_stop(index, out);
        }
    }

    fn terminal(&mut self, out: &mut BytesMut) {
        self.close_all(out);
        let (status, incomplete) = encode_status(self.stop_reason.unwrap_or(StopReason::EndTurn));
        let mut response = self.response(status);
        response.insert("incomplete_details".into(), incomplete);
        response.insert("usage".into(), encode_usage(&self.usage));
        let kind = if status == "incomplete" { "response.incomplete" } else { "response.completed" };
        self.emit_json(out, kind, json!({"response": response}));
        self.terminated = true;
    }
}

impl StreamEncoder for ResponsesStreamEncoder {
    fn encode(&mut self, event: &StreamEvent, out: &mut BytesMut) {
        if self.terminated {
            return;
        }
        match event {
            StreamEvent::Start { id, model, usage } => {
                if !self.started {
                    self.id = id.clone();
                    self.model = model.clone();
                    self.usage = *usage;
                }
                self.ensure_start(out);
            }
            StreamEvent::BlockStart { index, block } => {
                self.ensure_start(out);
                self.block_start(*index, block, out);
            }
            StreamEvent::Delta { index, delta } => self.delta(*index, delta, out),
            StreamEvent::BlockStop { index } => self.block_stop(*index, out),
            StreamEvent::Finish { stop_reason, usage, .. } => {
                // The terminal event carries the usage, so it is written here; `Stop` adds nothing.
                self.ensure_start(out);
                self.stop_reason = Some(*stop_reason);
                self.usage = *usage;
                self.terminal(out);
            }
            StreamEvent::Stop => {
                self.ensure_start(out);
                self.terminal(out);
            }
            StreamEvent::Error { kind, message } => {
                self.ensure_start(out);
                self.close_all(out);
                let mut response = self.response("failed");
                response.insert("error".into(), json!({"code": failed_code(kind), "message": message}));
                self.emit_json(out, "response.failed", json!({"response": response}));
                self.terminated = true;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

impl Codec for OpenaiResponsesCodec {
    fn dialect(&self) -> Dialect {
        Dialect::OpenaiResponses
    }

    fn decode_request(&self, body: &[u8], notes: &mut Notes) -> Result<Request, TranslateError> {
        decode_request(body, notes)
    }

    fn encode_request(&self, req: &Request, notes: &mut Notes) -> Result<Vec<u8>, TranslateError> {
        encode_request(req, notes)
    }

    fn request_path(&self, _req: &Request) -> String {
        "/v1/responses".to_owned()
    }

    fn decode_response(&self, body: &[u8]) -> Result<Response, TranslateError> {
        decode_response(body)
    }

    fn encode_response(&self, resp: &Response, notes: &mut Notes) -> Result<Vec<u8>, TranslateError> {
        encode_response(resp, notes)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ResponsesStreamDecoder { sse: SseDecoder::default(), state: DecodeState::default() })
    }

    fn stream_encoder(&self) -> Box<dyn StreamEncoder> {
        Box::new(ResponsesStreamEncoder::default())
    }

    fn decode_error(&self, status: u16, body: &[u8]) -> ErrorInfo {
        decode_error(status, body)
    }

    fn encode_error(&self, error: &ErrorInfo) -> Vec<u8> {
        encode_error(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_split_into_media_type_and_data() {
        assert_eq!(
            image_source("data:image/webp;base64,UklGR"),
            ImageSource::Base64 { media_type: "image/webp".into(), data: "UklGR".into() }
        );
        // Not base64: kept whole as a URL rather than misread.
        assert_eq!(image_source("data:text/plain,hi"), ImageSource::Url { url: "data:text/plain,hi".into() });
        let source = ImageSource::Base64 { media_type: "image/png".into(), data: "AAAA".into() };
        assert_eq!(image_source(&image_url(&source)), source);
    }

    #[test]
    fn arguments_that_are_not_json_go_back_out_unchanged() {
        let mut notes = Notes::default();
        let input = parse_arguments("{\"a\": 1", &mut notes);
        assert_eq!(encode_arguments(&input), "{\"a\": 1");
        assert!(!notes.is_empty());
        assert_eq!(parse_arguments("  ", &mut Notes::default()), json!({}));
        assert_eq!(encode_arguments(&parse_arguments("{\"a\":[1,2]}", &mut notes)), "{\"a\":[1,2]}");
    }

    #[test]
    fn failed_response_codes_map_back_to_their_kind() {
        for kind in
            ["rate_limit", "overloaded", "invalid_request", "authentication", "not_found", "api_error"]
        {
            assert_eq!(kind_from_code(Some(failed_code(kind)), None), kind);
            let (kind_type, code) = error_type_code(kind);
            assert_eq!(kind_from_code(code, Some(kind_type)), kind, "{kind}");
        }
    }

    #[test]
    fn usage_accounting_is_inverse() {
        let usage = Usage {
            tokens: TokenUsage {
                input_tokens: 7,
                output_tokens: 3,
                cache_read_input_tokens: 90,
                ..TokenUsage::default()
            },
            reasoning_tokens: 2,
        };
        let wire = encode_usage(&usage);
        assert_eq!(wire["input_tokens"], 97);
        assert_eq!(decode_usage(Some(&wire)), usage);
        // Cached above input (a broken upstream) does not underflow.
        let odd = json!({"input_tokens": 5, "input_tokens_details": {"cached_tokens": 9}});
        assert_eq!(decode_usage(Some(&odd)).tokens.input_tokens, 0);
    }
}
