//! The Anthropic Messages dialect (`POST /v1/messages`): requests, complete responses, the SSE
//! stream (`message_start`, `content_block_*`, `message_delta`, `message_stop`, `ping`, `error`)
//! and error bodies (`{"type":"error","error":{"type","message"}}`).
//!
//! The IR follows Anthropic's model closely, so most fields map one to one. What it cannot hold
//! is recorded in [`Notes`] on request decoding and on encoding: `cache_control` breakpoints,
//! citations, server tools and their result blocks, documents, `thinking.display`, top-level
//! fields such as `service_tier` or `container`. Mid-conversation `role: "system"` messages
//! (Claude Code sends them) are moved into the system list, which is where the Messages API
//! wants system text.
//!
//! Complete responses and streams have no notes channel; the few things dropped there
//! (server-tool blocks, citations, `redacted_thinking` in streams) are logged at debug level.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ir::{
    Block, BlockStart, Delta, ImageSource, Message, Reasoning, Request, Response, ResponseFormat, Role,
    StopReason, StreamEvent, Tool, ToolChoice, Usage,
};
use super::jsonw::{self, Text};
use super::lenient::{self, F, lenient_object};
use super::{Codec, ErrorInfo, Notes, StreamDecoder, StreamEncoder, TranslateError};
use crate::dialect::Dialect;
use crate::sse::SseDecoder;
use crate::usage::TokenUsage;

/// `max_tokens` is mandatory in Anthropic requests; used when the source dialect had none.
const DEFAULT_MAX_TOKENS: u64 = 8192;

/// Effort levels `output_config.effort` accepts.
const EFFORTS: [&str; 5] = ["low", "medium", "high", "xhigh", "max"];

/// The Anthropic Messages codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnthropicCodec;

impl Codec for AnthropicCodec {
    fn dialect(&self) -> Dialect {
        Dialect::Anthropic
    }

    fn decode_request(&self, body: &[u8], notes: &mut Notes) -> Result<Request, TranslateError> {
        match lenient::parse_slice::<RequestIn<'_>>(body) {
            Ok(F::Val(req)) => decode_request(req, notes),
            Ok(_) => Err(TranslateError::new("request body must be a JSON object")),
            Err(e) => Err(TranslateError::new(format!("request body is not JSON: {e}"))),
        }
    }

    fn encode_request(&self, req: &Request, notes: &mut Notes) -> Result<Vec<u8>, TranslateError> {
        let wire = encode_request(req, notes);
        // Sized once: the texts plus room for the envelope, tools and schemas.
        let mut out = Vec::with_capacity(req.text_len() + 1024);
        serde_json::to_writer(&mut out, &wire)
            .map_err(|e| TranslateError::new(format!("cannot write request: {e}")))?;
        Ok(out)
    }

    fn request_path(&self, _req: &Request) -> String {
        // Streaming is a body flag in this dialect, so the path never changes.
        "/v1/messages".to_owned()
    }

    fn decode_response(&self, body: &[u8]) -> Result<Response, TranslateError> {
        match lenient::parse_slice::<ResponseIn<'_>>(body) {
            Ok(F::Val(resp)) => decode_response(resp),
            Ok(_) => Err(TranslateError::new("response body must be a JSON object")),
            Err(e) => Err(TranslateError::new(format!("response body is not JSON: {e}"))),
        }
    }

    fn encode_response(&self, resp: &Response, notes: &mut Notes) -> Result<Vec<u8>, TranslateError> {
        let id = if resp.id.is_empty() { new_message_id() } else { resp.id.clone() };
        let content = resp.content.iter().filter_map(|b| encode_output_block(b, notes)).collect();
        let wire = WireResponse {
            id: &id,
            r#type: "message",
            role: "assistant",
            model: &resp.model,
            content,
            stop_reason: stop_reason_str(resp.stop_reason),
            stop_sequence: resp.stop_sequence.as_deref(),
            usage: WireUsage::full(&resp.usage),
        };
        serde_json::to_vec(&wire).map_err(|e| TranslateError::new(format!("cannot write response: {e}")))
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(AnthropicStreamDecoder::default())
    }

    fn stream_encoder(&self) -> Box<dyn StreamEncoder> {
        Box::new(AnthropicStreamEncoder::default())
    }

    fn decode_error(&self, status: u16, body: &[u8]) -> ErrorInfo {
        let parsed = serde_json::from_slice::<Value>(body).ok();
        let error = parsed.as_ref().and_then(|v| v.get("error")).and_then(Value::as_object);
        let kind = error
            .and_then(|e| e.get("type"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(kind_from_type)
            .unwrap_or_else(|| kind_from_status(status).to_owned());
        let message = match error.and_then(|e| e.get("message")).and_then(Value::as_str) {
            Some(m) => m.to_owned(),
            None => {
                // Not this dialect's shape (a proxy's HTML page, an empty body): keep some text.
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() {
                    format!("upstream returned HTTP {status}")
                } else {
                    text.chars().take(1000).collect()
                }
            }
        };
        ErrorInfo { status, kind, message }
    }

    fn encode_error(&self, error: &ErrorInfo) -> Vec<u8> {
        let wire = WireError {
            r#type: "error",
            error: WireErrorDetail { r#type: error_type(&error.kind, error.status), message: &error.message },
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

type Obj = Map<String, Value>;

// ---------------------------------------------------------------------------------------------
// Requests: decoding.
//
// Bodies are read through typed borrowing structs (see [`lenient`]): the same acceptance and the
// same errors as walking a `Value`, in the same order, without building one. Paths in error
// messages are formatted only when an error is reported.

/// Top-level request fields with no IR equivalent, noted by name when present.
const UNCARRIED_REQUEST_FIELDS: [&str; 6] =
    ["cache_control", "container", "context_management", "inference_geo", "mcp_servers", "service_tier"];

/// Where a value is in the body, for error messages: `messages[2].content[0].source`.
#[derive(Clone, Copy)]
enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
    /// Any element of an array: `system[]`.
    Each(&'a At<'a>),
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Root => Ok(()),
            At::Key(At::Root, key) => f.write_str(key),
            At::Key(parent, key) => write!(f, "{parent}.{key}"),
            At::Index(parent, i) => write!(f, "{parent}[{i}]"),
            At::Each(parent) => write!(f, "{parent}[]"),
        }
    }
}

/// `key` of the object at `at` has the wrong type.
fn wrong_at(at: &At<'_>, key: &str, what: &str) -> TranslateError {
    TranslateError::new(format!("`{}` must be {what}", At::Key(at, key)))
}

fn not_object(at: &At<'_>) -> TranslateError {
    TranslateError::new(format!("`{at}` must be an object"))
}

/// An optional field: absent and `null` are `None`, another type than `T` an error.
fn opt<'v, T>(f: &'v F<T>, at: &At<'_>, key: &str, what: &str) -> Result<Option<&'v T>, TranslateError> {
    match f {
        F::Absent | F::Null => Ok(None),
        F::Val(v) => Ok(Some(v)),
        F::Other => Err(wrong_at(at, key, what)),
    }
}

/// [`opt`] taking the value.
fn opt_take<T>(f: F<T>, at: &At<'_>, key: &str, what: &str) -> Result<Option<T>, TranslateError> {
    match f {
        F::Absent | F::Null => Ok(None),
        F::Val(v) => Ok(Some(v)),
        F::Other => Err(wrong_at(at, key, what)),
    }
}

fn opt_text<'v>(f: &'v F<Cow<'_, str>>, at: &At<'_>, key: &str) -> Result<Option<&'v str>, TranslateError> {
    opt(f, at, key, "a string").map(|s| s.map(|s| s.as_ref()))
}

fn req_text(f: F<Cow<'_, str>>, at: &At<'_>, key: &str) -> Result<String, TranslateError> {
    match f {
        F::Val(s) => Ok(s.into_owned()),
        _ => Err(wrong_at(at, key, "a string")),
    }
}

fn opt_count(f: &F<u64>, at: &At<'_>, key: &str) -> Result<Option<u64>, TranslateError> {
    opt(f, at, key, "a non-negative integer").map(Option::<&u64>::copied)
}

fn opt_number(f: &F<f64>, at: &At<'_>, key: &str) -> Result<Option<f64>, TranslateError> {
    opt(f, at, key, "a number").map(Option::<&f64>::copied)
}

fn opt_flag(f: &F<bool>, at: &At<'_>, key: &str) -> Result<Option<bool>, TranslateError> {
    opt(f, at, key, "a boolean").map(Option::<&bool>::copied)
}

/// A value kept whole (tool input, schemas); `null` as absent.
fn whole(f: F<Value>) -> Option<Value> {
    match f {
        F::Val(v) => Some(v),
        _ => None,
    }
}

/// `content` and `system`: a string or an array of blocks.
type ContentIn<'de> = lenient::StrOrList<'de, BlockIn<'de>>;

lenient_object! {
    struct RequestIn<'de> {
        "model" => model: Cow<'de, str>,
        "max_tokens" => max_tokens: u64,
        "temperature" => temperature: f64,
        "top_p" => top_p: f64,
        "top_k" => top_k: u64,
        "stream" => stream: bool,
        "system" => system: ContentIn<'de>,
        "messages" => messages: Vec<F<MessageIn<'de>>>,
        "tools" => tools: Vec<F<ToolIn<'de>>>,
        "tool_choice" => tool_choice: ToolChoiceIn<'de>,
        "stop_sequences" => stop_sequences: Vec<F<Cow<'de, str>>>,
        "thinking" => thinking: ThinkingIn<'de>,
        "output_config" => output_config: OutputConfigIn<'de>,
        "output_format" => output_format: FormatIn<'de>,
        "metadata" => metadata: MetadataIn<'de>,
        ..rest
    }
}

lenient_object! {
    struct MessageIn<'de> {
        "role" => role: Cow<'de, str>,
        "content" => content: ContentIn<'de>,
    }
}

lenient_object! {
    struct BlockIn<'de> {
        "type" => kind: Cow<'de, str>,
        "cache_control" => cache_control: lenient::Any,
        "citations" => citations: lenient::Any,
        "text" => text: Cow<'de, str>,
        "source" => source: SourceIn<'de>,
        "id" => id: Cow<'de, str>,
        "name" => name: Cow<'de, str>,
        "input" => input: Value,
        "content" => content: ContentIn<'de>,
        "tool_use_id" => tool_use_id: Cow<'de, str>,
        "is_error" => is_error: bool,
        "thinking" => thinking: Cow<'de, str>,
        "signature" => signature: Cow<'de, str>,
        "data" => data: Cow<'de, str>,
    }
}

lenient_object! {
    struct SourceIn<'de> {
        "type" => kind: Cow<'de, str>,
        "media_type" => media_type: Cow<'de, str>,
        "data" => data: Cow<'de, str>,
        "url" => url: Cow<'de, str>,
    }
}

lenient_object! {
    struct ToolIn<'de> {
        "type" => kind: Cow<'de, str>,
        "cache_control" => cache_control: lenient::Any,
        "name" => name: Cow<'de, str>,
        "description" => description: Cow<'de, str>,
        "input_schema" => input_schema: Value,
    }
}

lenient_object! {
    struct ToolChoiceIn<'de> {
        "type" => kind: Cow<'de, str>,
        "name" => name: Cow<'de, str>,
        "disable_parallel_tool_use" => disable_parallel_tool_use: bool,
    }
}

lenient_object! {
    struct ThinkingIn<'de> {
        "type" => kind: Cow<'de, str>,
        "budget_tokens" => budget_tokens: u64,
        "display" => display: lenient::Any,
    }
}

lenient_object! {
    struct OutputConfigIn<'de> {
        "effort" => effort: Cow<'de, str>,
        "format" => format: FormatIn<'de>,
        ..rest
    }
}

lenient_object! {
    struct FormatIn<'de> {
        "type" => kind: Cow<'de, str>,
        "schema" => schema: Value,
    }
}

lenient_object! {
    struct MetadataIn<'de> {
        "user_id" => user_id: Cow<'de, str>,
        ..rest
    }
}

fn decode_request(o: RequestIn<'_>, notes: &mut Notes) -> Result<Request, TranslateError> {
    let RequestIn {
        model,
        max_tokens,
        temperature,
        top_p,
        top_k,
        stream,
        system,
        messages,
        tools,
        tool_choice,
        stop_sequences,
        thinking,
        output_config,
        output_format,
        metadata,
        mut rest,
    } = o;
    let root = &At::Root;
    let mut req = Request {
        model: opt_text(&model, root, "model")?.unwrap_or_default().to_owned(),
        max_tokens: opt_count(&max_tokens, root, "max_tokens")?,
        temperature: opt_number(&temperature, root, "temperature")?,
        top_p: opt_number(&top_p, root, "top_p")?,
        top_k: opt_count(&top_k, root, "top_k")?,
        stream: opt_flag(&stream, root, "stream")?.unwrap_or(false),
        ..Request::default()
    };

    match system {
        F::Absent | F::Null => {}
        F::Val(ContentIn::Str(s)) => req.system.push(s.into_owned()),
        F::Val(ContentIn::Val(items)) => {
            decode_system_blocks(items, &At::Key(root, "system"), "system", &mut req.system, notes)?
        }
        F::Other => return Err(wrong_at(root, "system", "a string or an array of text blocks")),
    }

    if let Some(messages) = opt_take(messages, root, "messages", "an array")? {
        let list = At::Key(root, "messages");
        for (i, m) in messages.into_iter().enumerate() {
            decode_message(m, &At::Index(&list, i), &mut req, notes)?;
        }
    }

    if let Some(tools) = opt_take(tools, root, "tools", "an array")? {
        let list = At::Key(root, "tools");
        for (i, t) in tools.into_iter().enumerate() {
            let at = At::Index(&list, i);
            let F::Val(t) = t else {
                return Err(not_object(&at));
            };
            let kind = opt_text(&t.kind, &at, "type")?;
            if let Some(kind) = kind.filter(|k| *k != "custom") {
                // Server tools (web_search, code_execution, ...) run at Anthropic; elsewhere they
                // do not exist.
                notes.note(format!("tools[].type={kind} (server tool)"));
                continue;
            }
            if t.cache_control.exists() {
                notes.note("tools[].cache_control");
            }
            req.tools.push(Tool {
                name: req_text(t.name, &at, "name")?,
                description: opt_text(&t.description, &at, "description")?.map(str::to_owned),
                parameters: whole(t.input_schema).unwrap_or(Value::Null),
            });
        }
    }

    if let Some(tc) = opt_take(tool_choice, root, "tool_choice", "an object")? {
        let at = At::Key(root, "tool_choice");
        req.tool_choice = match opt_text(&tc.kind, &at, "type")? {
            Some("auto") => Some(ToolChoice::Auto),
            Some("any") => Some(ToolChoice::Required),
            Some("none") => Some(ToolChoice::None),
            Some("tool") => Some(ToolChoice::Tool { name: req_text(tc.name, &at, "name")? }),
            Some(other) => {
                notes.note(format!("tool_choice.type={other}"));
                None
            }
            None => None,
        };
        if let Some(disable) = opt_flag(&tc.disable_parallel_tool_use, &at, "disable_parallel_tool_use")? {
            req.parallel_tool_calls = Some(!disable);
        }
    }

    if let Some(stop) = opt_take(stop_sequences, root, "stop_sequences", "an array")? {
        for s in stop {
            let F::Val(s) = s else {
                return Err(wrong_at(root, "stop_sequences[]", "a string"));
            };
            req.stop.push(s.into_owned());
        }
    }

    if let Some(thinking) = opt_take(thinking, root, "thinking", "an object")? {
        let at = At::Key(root, "thinking");
        match opt_text(&thinking.kind, &at, "type")? {
            Some("enabled") => {
                req.reasoning = Some(Reasoning {
                    budget_tokens: opt_count(&thinking.budget_tokens, &at, "budget_tokens")?,
                    ..Reasoning::default()
                })
            }
            Some("adaptive") => req.reasoning = Some(Reasoning::default()),
            Some("disabled") => req.reasoning = Some(Reasoning { disabled: true, ..Reasoning::default() }),
            Some(other) => notes.note(format!("thinking.type={other}")),
            None => {}
        }
        if thinking.display.exists() {
            notes.note("thinking.display");
        }
    }

    if let Some(mut oc) = opt_take(output_config, root, "output_config", "an object")? {
        let at = At::Key(root, "output_config");
        for key in lenient::sorted_keys(&mut oc.rest) {
            notes.note(format!("output_config.{key}"));
        }
        if let Some(effort) = opt_text(&oc.effort, &at, "effort")? {
            req.reasoning.get_or_insert_with(Reasoning::default).effort = Some(effort.to_owned());
        }
        if let Some(format) = opt_take(oc.format, &at, "format", "an object")? {
            req.response_format = decode_output_format(format, &At::Key(&at, "format"), notes)?;
        }
    }
    // The structured-outputs beta put the same object at the top level.
    if req.response_format.is_none()
        && let Some(format) = opt_take(output_format, root, "output_format", "an object")?
    {
        req.response_format = decode_output_format(format, &At::Key(root, "output_format"), notes)?;
    }

    if let Some(mut meta) = opt_take(metadata, root, "metadata", "an object")? {
        req.user = opt_text(&meta.user_id, &At::Key(root, "metadata"), "user_id")?.map(str::to_owned);
        for key in lenient::sorted_keys(&mut meta.rest) {
            notes.note(format!("metadata.{key}"));
        }
    }

    for key in lenient::sorted_keys(&mut rest) {
        if UNCARRIED_REQUEST_FIELDS.contains(&key) {
            notes.note(key);
        } else {
            notes.note(format!("{key} (unknown field)"));
        }
    }
    Ok(req)
}

fn decode_output_format(
    format: FormatIn<'_>,
    at: &At<'_>,
    notes: &mut Notes,
) -> Result<Option<ResponseFormat>, TranslateError> {
    match opt_text(&format.kind, at, "type")? {
        Some("json_schema") => Ok(Some(ResponseFormat::JsonSchema {
            name: None,
            schema: whole(format.schema).unwrap_or(Value::Null),
            strict: None,
        })),
        Some(other) => {
            notes.note(format!("{at}.type={other}"));
            Ok(None)
        }
        None => Ok(None),
    }
}

/// System text blocks: only `text` exists in this position. `note_path` names the position in
/// notes.
fn decode_system_blocks(
    items: Vec<F<BlockIn<'_>>>,
    at: &At<'_>,
    note_path: &str,
    system: &mut Vec<String>,
    notes: &mut Notes,
) -> Result<(), TranslateError> {
    let each = At::Each(at);
    for item in items {
        let F::Val(b) = item else {
            return Err(not_object(&each));
        };
        match opt_text(&b.kind, &each, "type")? {
            Some("text") | None => {
                if b.cache_control.exists() {
                    notes.note(format!("{note_path}[].cache_control"));
                }
                system.push(req_text(b.text, &each, "text")?);
            }
            Some(other) => notes.note(format!("{note_path}[].type={other}")),
        }
    }
    Ok(())
}

fn decode_message(
    m: F<MessageIn<'_>>,
    at: &At<'_>,
    req: &mut Request,
    notes: &mut Notes,
) -> Result<(), TranslateError> {
    let F::Val(m) = m else {
        return Err(not_object(at));
    };
    let role = match opt_text(&m.role, at, "role")? {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("system" | "developer") => {
            // The Messages API has no system role in `messages`; Claude Code sends one anyway.
            // Its text is instructions, so it joins the system list (losing only its position).
            notes.note("messages[].role=system (moved into system)");
            match m.content {
                F::Absent | F::Null => {}
                F::Val(ContentIn::Str(s)) => req.system.push(s.into_owned()),
                F::Val(ContentIn::Val(items)) => {
                    let path = At::Key(&At::Each(&At::Key(&At::Root, "messages")), "content");
                    decode_system_blocks(items, &path, "messages[].content", &mut req.system, notes)?
                }
                F::Other => return Err(wrong_at(at, "content", "a string or an array")),
            }
            return Ok(());
        }
        Some(other) => return Err(TranslateError::new(format!("`{at}.role` has unknown value `{other}`"))),
        None => return Err(wrong_at(at, "role", "a string")),
    };
    let content = match m.content {
        F::Absent | F::Null => Vec::new(),
        content => decode_blocks(content, &At::Key(at, "content"), "messages[].content[]", notes)?,
    };
    req.messages.push(Message { role, content });
    Ok(())
}

/// Decodes `content` (a string or an array of blocks). `note_path` names the position in notes,
/// without indices so that repeated drops produce one note.
fn decode_blocks(
    v: F<ContentIn<'_>>,
    at: &At<'_>,
    note_path: &str,
    notes: &mut Notes,
) -> Result<Vec<Block>, TranslateError> {
    match v {
        F::Val(ContentIn::Str(s)) => Ok(vec![Block::Text { text: s.into_owned() }]),
        F::Val(ContentIn::Val(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let bat = At::Index(at, i);
                let F::Val(b) = item else {
                    return Err(not_object(&bat));
                };
                if let Some(block) = decode_block(b, &bat, note_path, notes)? {
                    out.push(block);
                }
            }
            Ok(out)
        }
        _ => Err(TranslateError::new(format!("`{at}` must be a string or an array of blocks"))),
    }
}

fn decode_block(
    b: BlockIn<'_>,
    at: &At<'_>,
    note_path: &str,
    notes: &mut Notes,
) -> Result<Option<Block>, TranslateError> {
    let kind = opt_text(&b.kind, at, "type")?.unwrap_or("");
    if b.cache_control.exists() {
        notes.note(format!("{note_path}.cache_control"));
    }
    let block = match kind {
        "text" => {
            if b.citations.exists() {
                notes.note(format!("{note_path}.citations"));
            }
            Block::Text { text: req_text(b.text, at, "text")? }
        }
        "image" => {
            let Some(source) = opt_take(b.source, at, "source", "an object")? else {
                return Err(wrong_at(at, "source", "an object"));
            };
            let sat = At::Key(at, "source");
            let source = match opt_text(&source.kind, &sat, "type")? {
                Some("base64") => ImageSource::Base64 {
                    media_type: req_text(source.media_type, &sat, "media_type")?,
                    data: req_text(source.data, &sat, "data")?,
                },
                Some("url") => ImageSource::Url { url: req_text(source.url, &sat, "url")? },
                other => {
                    notes.note(format!("{note_path}.source.type={}", other.unwrap_or("missing")));
                    return Ok(None);
                }
            };
            Block::Image { source }
        }
        "tool_use" => Block::ToolUse {
            id: req_text(b.id, at, "id")?,
            name: req_text(b.name, at, "name")?,
            input: whole(b.input).unwrap_or_else(|| Value::Object(Map::new())),
        },
        "tool_result" => {
            let content = match b.content {
                F::Absent | F::Null => Vec::new(),
                // An empty string is no content; an empty text block would be rejected upstream.
                F::Val(ContentIn::Str(s)) if s.is_empty() => Vec::new(),
                content => decode_blocks(content, &At::Key(at, "content"), "tool_result.content[]", notes)?,
            };
            Block::ToolResult {
                tool_use_id: req_text(b.tool_use_id, at, "tool_use_id")?,
                content,
                is_error: opt_flag(&b.is_error, at, "is_error")?.unwrap_or(false),
            }
        }
        "thinking" => Block::Thinking {
            text: opt_text(&b.thinking, at, "thinking")?.unwrap_or_default().to_owned(),
            signature: opt_text(&b.signature, at, "signature")?.filter(|s| !s.is_empty()).map(str::to_owned),
        },
        "redacted_thinking" => Block::RedactedThinking { data: req_text(b.data, at, "data")? },
        other => {
            // document, search_result, server_tool_use, web_search_tool_result, container_upload,
            // mcp_tool_use, ...: no IR block.
            notes.note(format!("{note_path}.type={}", if other.is_empty() { "missing" } else { other }));
            return Ok(None);
        }
    };
    Ok(Some(block))
}

// ---------------------------------------------------------------------------------------------
// Requests: encoding.

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<WireSystem<'a>>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<WireThinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<WireOutputConfig<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<WireMetadata<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireSystem<'a> {
    Text(Text<'a>),
    Blocks(Vec<WireTextBlock<'a>>),
}

#[derive(Serialize)]
struct WireTextBlock<'a> {
    r#type: &'static str,
    text: Text<'a>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Vec<WireBlock<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock<'a> {
    Text {
        text: Text<'a>,
    },
    Image {
        source: WireImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        content: Vec<WireBlock<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Value,
}

#[derive(Serialize)]
struct WireToolChoice<'a> {
    r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireThinking {
    Enabled { budget_tokens: u64 },
    Adaptive,
    Disabled,
}

#[derive(Serialize)]
struct WireOutputConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    effort: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<WireOutputFormat<'a>>,
}

#[derive(Serialize)]
struct WireOutputFormat<'a> {
    r#type: &'static str,
    schema: &'a Value,
}

#[derive(Serialize)]
struct WireMetadata<'a> {
    user_id: &'a str,
}

fn encode_request<'a>(req: &'a Request, notes: &mut Notes) -> WireRequest<'a> {
    let system: Vec<&str> = req.system.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
    let system = match system.as_slice() {
        [] => None,
        [one] => Some(WireSystem::Text(Text(one))),
        many => Some(WireSystem::Blocks(
            many.iter().map(|text| WireTextBlock { r#type: "text", text: Text(text) }).collect(),
        )),
    };

    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let mut content: Vec<WireBlock<'a>> =
            m.content.iter().filter_map(|b| encode_input_block(b, m.role, notes)).collect();
        if m.role == Role::User {
            // The API wants tool results first in a user turn; the sort is stable.
            content.sort_by_key(|b| !matches!(b, WireBlock::ToolResult { .. }));
        }
        if content.is_empty() {
            notes.note("messages[] with no content Anthropic accepts (skipped)");
            continue;
        }
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        messages.push(WireMessage { role, content });
    }

    let tools: Vec<WireTool<'a>> = req
        .tools
        .iter()
        .map(|t| WireTool {
            name: &t.name,
            description: t.description.as_deref().filter(|d| !d.is_empty()),
            input_schema: match &t.parameters {
                Value::Null => serde_json::json!({"type": "object", "properties": {}}),
                v => v.clone(),
            },
        })
        .collect();

    let tool_choice = encode_tool_choice(req, !tools.is_empty(), notes);

    let (mut thinking, effort) = encode_reasoning(req.reasoning.as_ref(), notes);
    if matches!(thinking, Some(WireThinking::Enabled { .. } | WireThinking::Adaptive))
        && continues_tool_turn_without_thinking(&messages)
    {
        // Anthropic rejects the request otherwise; the turn's reasoning was another vendor's
        // (or unsigned) and could not be sent.
        notes.note(
            "thinking (disabled: the tool calls being answered have no signed thinking block before them, which Anthropic requires with thinking on)",
        );
        thinking = Some(WireThinking::Disabled);
    }
    let format = match &req.response_format {
        None => None,
        Some(ResponseFormat::JsonSchema { name, schema, strict }) => {
            if name.is_some() {
                notes.note("response_format.json_schema.name");
            }
            if *strict == Some(false) {
                notes.note("response_format.json_schema.strict=false (Anthropic output is always strict)");
            }
            Some(WireOutputFormat { r#type: "json_schema", schema })
        }
        Some(ResponseFormat::JsonObject) => {
            notes.note("response_format.json_object (Anthropic needs a schema)");
            None
        }
    };
    let output_config = (effort.is_some() || format.is_some()).then_some(WireOutputConfig { effort, format });

    let budget = match thinking {
        Some(WireThinking::Enabled { budget_tokens }) => Some(budget_tokens),
        _ => None,
    };
    let max_tokens = req.max_tokens.unwrap_or_else(|| {
        notes.note(format!("max_tokens (required by Anthropic; {DEFAULT_MAX_TOKENS} used)"));
        // max_tokens must exceed the thinking budget.
        budget.map_or(DEFAULT_MAX_TOKENS, |b| b.saturating_add(DEFAULT_MAX_TOKENS))
    });

    let temperature = req.temperature.map(|t| {
        if t > 1.0 {
            notes.note("temperature above 1 (clamped to Anthropic's maximum, 1)");
            1.0
        } else {
            t
        }
    });

    WireRequest {
        model: &req.model,
        max_tokens,
        system,
        messages,
        tools,
        tool_choice,
        temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop_sequences: req.stop.iter().map(String::as_str).collect(),
        stream: req.stream,
        thinking,
        output_config,
        metadata: req.user.as_deref().map(|user_id| WireMetadata { user_id }),
    }
}

/// Whether the request answers tool calls (it ends with tool results) of an assistant turn that
/// does not start with a thinking block: with thinking on, Anthropic requires one there.
fn continues_tool_turn_without_thinking(messages: &[WireMessage<'_>]) -> bool {
    let answers_tools = messages.last().is_some_and(|m| {
        m.role == "user" && m.content.iter().any(|b| matches!(b, WireBlock::ToolResult { .. }))
    });
    let Some(turn) = messages.iter().rev().find(|m| m.role == "assistant") else {
        return false;
    };
    answers_tools
        && turn.content.iter().any(|b| matches!(b, WireBlock::ToolUse { .. }))
        && !matches!(
            turn.content.first(),
            Some(WireBlock::Thinking { .. } | WireBlock::RedactedThinking { .. })
        )
}

fn encode_tool_choice<'a>(
    req: &'a Request,
    has_tools: bool,
    notes: &mut Notes,
) -> Option<WireToolChoice<'a>> {
    let disable = req.parallel_tool_calls.map(|p| !p);
    let (kind, name) = match &req.tool_choice {
        Some(ToolChoice::Auto) => ("auto", None),
        Some(ToolChoice::Required) => ("any", None),
        Some(ToolChoice::None) => ("none", None),
        Some(ToolChoice::Tool { name }) => ("tool", Some(name.as_str())),
        // Parallel calls can only be turned off through a tool_choice.
        None if disable == Some(true) => ("auto", None),
        None => return None,
    };
    if !has_tools {
        // Anthropic rejects tool_choice without tools; with no tools nothing can be called anyway.
        if !matches!(req.tool_choice, None | Some(ToolChoice::None) | Some(ToolChoice::Auto)) {
            notes.note("tool_choice without tools");
        }
        return None;
    }
    // `none` has no parallel flag: no tool runs at all.
    let disable_parallel_tool_use = if kind == "none" { None } else { disable };
    Some(WireToolChoice { r#type: kind, name, disable_parallel_tool_use })
}

fn encode_reasoning<'a>(
    reasoning: Option<&'a Reasoning>,
    notes: &mut Notes,
) -> (Option<WireThinking>, Option<&'a str>) {
    let Some(r) = reasoning else {
        return (None, None);
    };
    if r.summary.is_some() {
        notes.note("reasoning.summary");
    }
    let mut disabled = r.disabled;
    let effort = match r.effort.as_deref() {
        None => None,
        Some(e) if EFFORTS.contains(&e) => Some(e),
        Some("minimal") => {
            notes.note("reasoning.effort=minimal (sent as low)");
            Some("low")
        }
        Some("none") => {
            notes.note("reasoning.effort=none (sent as thinking disabled)");
            disabled = true;
            None
        }
        Some(other) => {
            notes.note(format!("reasoning.effort={other}"));
            None
        }
    };
    let thinking = if disabled && r.budget_tokens.is_none() {
        WireThinking::Disabled
    } else if let Some(budget_tokens) = r.budget_tokens {
        WireThinking::Enabled { budget_tokens }
    } else {
        // No budget: let the model size its thinking, steered by `effort`.
        WireThinking::Adaptive
    };
    (Some(thinking), effort)
}

/// A block of a request message; `None` when Anthropic cannot take it.
fn encode_input_block<'a>(b: &'a Block, role: Role, notes: &mut Notes) -> Option<WireBlock<'a>> {
    match b {
        Block::Text { text } if text.is_empty() => None,
        Block::Thinking { signature, .. } if signature.as_deref().unwrap_or("").is_empty() => {
            // Unsigned reasoning (another vendor's) is rejected as input.
            notes.note("thinking block without signature (not sent)");
            None
        }
        Block::Thinking { .. } | Block::RedactedThinking { .. } if role == Role::User => {
            notes.note("thinking in a user message (not sent)");
            None
        }
        Block::ToolResult { tool_use_id, content, is_error } => Some(WireBlock::ToolResult {
            tool_use_id,
            content: content
                .iter()
                .filter_map(|c| match c {
                    Block::Text { text } if text.is_empty() => None,
                    Block::Text { text } => Some(WireBlock::Text { text: Text(text) }),
                    Block::Image { source } => Some(WireBlock::Image { source: image_source(source) }),
                    _ => {
                        notes.note("tool_result.content[] other than text and image");
                        None
                    }
                })
                .collect(),
            is_error: *is_error,
        }),
        other => encode_common_block(other, notes),
    }
}

/// A block of a response; tool results and images do not appear there.
fn encode_output_block<'a>(b: &'a Block, notes: &mut Notes) -> Option<WireBlock<'a>> {
    match b {
        Block::ToolResult { .. } => {
            notes.note("tool_result in a response (not sent)");
            None
        }
        Block::Image { .. } => {
            notes.note("image in a response (not sent)");
            None
        }
        other => encode_common_block(other, notes),
    }
}

fn encode_common_block<'a>(b: &'a Block, notes: &mut Notes) -> Option<WireBlock<'a>> {
    Some(match b {
        Block::Text { text } => WireBlock::Text { text: Text(text) },
        Block::Image { source } => WireBlock::Image { source: image_source(source) },
        Block::ToolUse { id, name, input } => {
            WireBlock::ToolUse { id, name, input: tool_input(input, notes) }
        }
        Block::Thinking { text, signature } => {
            WireBlock::Thinking { thinking: text, signature: signature.as_deref().unwrap_or("") }
        }
        Block::RedactedThinking { data } => WireBlock::RedactedThinking { data },
        Block::ToolResult { .. } => return None,
    })
}

fn image_source(source: &ImageSource) -> WireImageSource<'_> {
    match source {
        ImageSource::Base64 { media_type, data } => WireImageSource::Base64 { media_type, data },
        ImageSource::Url { url } => WireImageSource::Url { url },
    }
}

/// `tool_use.input` must be an object; other dialects sometimes carry unparsed argument text.
fn tool_input(input: &Value, notes: &mut Notes) -> Value {
    match input {
        Value::Object(_) => input.clone(),
        Value::Null => Value::Object(Map::new()),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                notes.note("tool_use.input that is not a JSON object (sent as {})");
                Value::Object(Map::new())
            }
        },
        _ => {
            notes.note("tool_use.input that is not a JSON object (sent as {})");
            Value::Object(Map::new())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses.

#[derive(Serialize)]
struct WireResponse<'a> {
    id: &'a str,
    r#type: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<WireBlock<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: WireUsage,
}

/// `usage` as the Messages API reports it. Every count is written so clients that read any of
/// them (and the gateway's own usage tap) see the full picture.
#[derive(Serialize)]
struct WireUsage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_creation: Option<WireCacheCreation>,
    output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_tokens_details: Option<WireOutputDetails>,
}

#[derive(Serialize)]
struct WireCacheCreation {
    ephemeral_5m_input_tokens: u64,
    ephemeral_1h_input_tokens: u64,
}

#[derive(Serialize)]
struct WireOutputDetails {
    thinking_tokens: u64,
}

impl WireUsage {
    /// A complete `usage` object, TTL split included (as in responses and `message_start`).
    fn full(u: &Usage) -> Self {
        let t = &u.tokens;
        Self {
            input_tokens: t.input_tokens,
            cache_creation_input_tokens: t.cache_creation_input_tokens,
            cache_read_input_tokens: t.cache_read_input_tokens,
            cache_creation: Some(WireCacheCreation {
                ephemeral_5m_input_tokens: t.cache_creation_5m_input_tokens,
                ephemeral_1h_input_tokens: t.cache_creation_1h_input_tokens,
            }),
            output_tokens: t.output_tokens,
            output_tokens_details: (u.reasoning_tokens > 0)
                .then_some(WireOutputDetails { thinking_tokens: u.reasoning_tokens }),
        }
    }

    /// `message_delta.usage`: cumulative counts; the TTL split only when there is one, as the
    /// documented delta usage has no such field. Input-side counts the final usage lacks come
    /// from `start`: clients overwrite their totals with any count present here.
    fn delta(u: &Usage, start: &Usage) -> Self {
        let pick = |end: u64, begin: u64| if end == 0 { begin } else { end };
        let (t, s) = (&u.tokens, &start.tokens);
        let merged = Usage {
            tokens: TokenUsage {
                input_tokens: pick(t.input_tokens, s.input_tokens),
                output_tokens: t.output_tokens,
                cache_creation_input_tokens: pick(
                    t.cache_creation_input_tokens,
                    s.cache_creation_input_tokens,
                ),
                cache_creation_5m_input_tokens: pick(
                    t.cache_creation_5m_input_tokens,
                    s.cache_creation_5m_input_tokens,
                ),
                cache_creation_1h_input_tokens: pick(
                    t.cache_creation_1h_input_tokens,
                    s.cache_creation_1h_input_tokens,
                ),
                cache_read_input_tokens: pick(t.cache_read_input_tokens, s.cache_read_input_tokens),
            },
            reasoning_tokens: u.reasoning_tokens,
        };
        let mut w = Self::full(&merged);
        if merged.tokens.cache_creation_5m_input_tokens == 0
            && merged.tokens.cache_creation_1h_input_tokens == 0
        {
            w.cache_creation = None;
        }
        w
    }
}

lenient_object! {
    struct ResponseIn<'de> {
        "type" => kind: Cow<'de, str>,
        "error" => error: Value,
        "content" => content: Vec<F<BlockIn<'de>>>,
        "usage" => usage: UsageIn<'de>,
        "id" => id: Cow<'de, str>,
        "model" => model: Cow<'de, str>,
        "stop_reason" => stop_reason: Cow<'de, str>,
        "stop_sequence" => stop_sequence: Cow<'de, str>,
    }
}

fn decode_response(o: ResponseIn<'_>) -> Result<Response, TranslateError> {
    if o.kind.str() == Some("error") {
        let message =
            o.error.val().and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or("unknown error");
        return Err(TranslateError::new(format!("upstream returned an error body: {message}")));
    }
    let root = &At::Root;
    let mut content = Vec::new();
    if let Some(items) = opt_take(o.content, root, "content", "an array")? {
        let list = At::Key(root, "content");
        let mut ignored = Notes::default();
        for (i, item) in items.into_iter().enumerate() {
            let at = At::Index(&list, i);
            let F::Val(b) = item else {
                return Err(not_object(&at));
            };
            if let Some(block) = decode_block(b, &at, "content[]", &mut ignored)? {
                content.push(block);
            }
        }
        if !ignored.is_empty() {
            tracing::debug!(dropped = ?ignored.0, "anthropic response: content the IR cannot hold");
        }
    }
    let mut usage = Usage::default();
    match &o.usage {
        F::Val(u) => merge_usage(u, &mut usage),
        F::Other => return Err(wrong_at(root, "usage", "an object")),
        F::Absent | F::Null => {}
    }
    Ok(Response {
        id: opt_text(&o.id, root, "id")?.unwrap_or_default().to_owned(),
        model: opt_text(&o.model, root, "model")?.unwrap_or_default().to_owned(),
        content,
        stop_reason: parse_stop_reason(opt_text(&o.stop_reason, root, "stop_reason")?),
        stop_sequence: opt_text(&o.stop_sequence, root, "stop_sequence")?.map(str::to_owned),
        usage,
    })
}

/// [`merge_usage`] for a `usage` the stream decoder holds as a `Value`: read through the same
/// typed shape, so both paths apply one set of rules; anything but an object is no usage.
fn merge_usage_value(u: &Value, into: &mut Usage) {
    if let Ok(F::Val(u)) = F::<UsageIn<'_>>::deserialize(u) {
        merge_usage(&u, into);
    }
}

lenient_object! {
    /// A `usage` object, as [`merge_usage`] reads it.
    struct UsageIn<'de> {
        "input_tokens" => input_tokens: u64,
        "output_tokens" => output_tokens: u64,
        "cache_read_input_tokens" => cache_read_input_tokens: u64,
        "cache_creation" => cache_creation: CacheCreationIn<'de>,
        "cache_creation_input_tokens" => cache_creation_input_tokens: u64,
        "output_tokens_details" => output_tokens_details: OutputDetailsIn<'de>,
    }
}

lenient_object! {
    struct CacheCreationIn<'de> {
        "ephemeral_5m_input_tokens" => ephemeral_5m_input_tokens: u64,
        "ephemeral_1h_input_tokens" => ephemeral_1h_input_tokens: u64,
    }
}

lenient_object! {
    struct OutputDetailsIn<'de> {
        "thinking_tokens" => thinking_tokens: u64,
    }
}

/// Overlays the counts present in `u` onto `into`: `message_delta` carries only some, and later
/// values are cumulative, so they win.
fn merge_usage(u: &UsageIn<'_>, into: &mut Usage) {
    let t = &mut into.tokens;
    if let Some(v) = u.input_tokens.u64() {
        t.input_tokens = v;
    }
    if let Some(v) = u.output_tokens.u64() {
        t.output_tokens = v;
    }
    if let Some(v) = u.cache_read_input_tokens.u64() {
        t.cache_read_input_tokens = v;
    }
    if let Some(split) = u.cache_creation.val() {
        if let Some(v) = split.ephemeral_5m_input_tokens.u64() {
            t.cache_creation_5m_input_tokens = v;
        }
        if let Some(v) = split.ephemeral_1h_input_tokens.u64() {
            t.cache_creation_1h_input_tokens = v;
        }
    }
    match u.cache_creation_input_tokens.u64() {
        Some(v) => t.cache_creation_input_tokens = v,
        None => {
            let split = t.cache_creation_5m_input_tokens.saturating_add(t.cache_creation_1h_input_tokens);
            t.cache_creation_input_tokens = t.cache_creation_input_tokens.max(split);
        }
    }
    if let Some(v) = u.output_tokens_details.val().and_then(|d| d.thinking_tokens.u64()) {
        into.reasoning_tokens = v;
    }
}

fn parse_stop_reason(s: Option<&str>) -> StopReason {
    match s {
        Some("max_tokens") | Some("model_context_window_exceeded") => StopReason::MaxTokens,
        Some("stop_sequence") => StopReason::StopSequence,
        Some("tool_use") => StopReason::ToolUse,
        Some("refusal") => StopReason::Refusal,
        // `pause_turn` (a server tool loop paused; the client resends to continue) has no IR
        // value; ending the turn is the closest and lets the client decide.
        _ => StopReason::EndTurn,
    }
}

fn stop_reason_str(r: StopReason) -> &'static str {
    match r {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::Refusal => "refusal",
    }
}

fn new_message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[derive(Serialize)]
struct WireError<'a> {
    r#type: &'static str,
    error: WireErrorDetail<'a>,
}

#[derive(Serialize)]
struct WireErrorDetail<'a> {
    r#type: &'a str,
    message: &'a str,
}

/// Anthropic `error.type` → the vendor-neutral kind.
fn kind_from_type(t: &str) -> String {
    match t {
        "invalid_request_error" => "invalid_request",
        "authentication_error" => "authentication",
        "permission_error" => "permission",
        "not_found_error" => "not_found",
        "request_too_large" => "request_too_large",
        "rate_limit_error" => "rate_limit",
        "api_error" => "api_error",
        "overloaded_error" => "overloaded",
        "billing_error" => "billing",
        "timeout_error" => "timeout",
        other => return other.strip_suffix("_error").filter(|s| !s.is_empty()).unwrap_or(other).to_owned(),
    }
    .to_owned()
}

fn kind_from_status(status: u16) -> &'static str {
    match status {
        401 => "authentication",
        402 => "billing",
        403 => "permission",
        404 => "not_found",
        413 => "request_too_large",
        429 => "rate_limit",
        504 => "timeout",
        503 | 529 => "overloaded",
        400..=499 => "invalid_request",
        _ => "api_error",
    }
}

/// The vendor-neutral kind → Anthropic `error.type`; unknown kinds fall back on the status.
fn error_type(kind: &str, status: u16) -> &'static str {
    match kind {
        "invalid_request" | "invalid_request_error" => "invalid_request_error",
        "authentication" | "authentication_error" => "authentication_error",
        "permission" | "permission_error" => "permission_error",
        "not_found" | "not_found_error" => "not_found_error",
        "request_too_large" => "request_too_large",
        "rate_limit" | "rate_limit_error" => "rate_limit_error",
        "overloaded" | "overloaded_error" => "overloaded_error",
        "billing" | "billing_error" => "billing_error",
        "timeout" | "timeout_error" => "timeout_error",
        "api_error" => "api_error",
        _ if status == 0 => "api_error",
        _ => error_type(kind_from_status(status), 0),
    }
}

// ---------------------------------------------------------------------------------------------
// Stream decoding.

/// Turns an Anthropic SSE stream into canonical events, whatever the chunking.
///
/// `Finish` is emitted at `message_stop` from the accumulated `message_delta`s (there may be
/// several; their usage is cumulative), or at the end of the input when a `message_delta` with a
/// stop reason arrived but `message_stop` did not. A stream cut before that yields neither
/// `Finish` nor `Stop`, so the normalizer ends it with an error.
#[derive(Default)]
struct AnthropicStreamDecoder {
    sse: SseDecoder,
    state: DecodeState,
}

#[derive(Default)]
struct DecodeState {
    usage: Usage,
    stop_reason: Option<StopReason>,
    stop_sequence: Option<String>,
    saw_delta: bool,
    /// `message_stop` or `error` arrived: nothing more is decoded.
    done: bool,
    /// First malformed event; the rest of the stream is ignored.
    failed: Option<TranslateError>,
    /// Upstream block index → IR index, `None` for blocks the IR cannot hold. IR indices stay
    /// contiguous when such blocks are skipped.
    blocks: std::collections::HashMap<u64, Option<usize>>,
    next_index: usize,
}

impl StreamDecoder for AnthropicStreamDecoder {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let Self { sse, state } = self;
        if state.failed.is_some() {
            return Ok(());
        }
        let result = sse.push(chunk, |ev| state.on_event(ev.event, &ev.data, out));
        if let Err(e) = result {
            state.failed.get_or_insert_with(|| TranslateError::new(e.to_string()));
        }
        match &state.failed {
            // Reported once; the translator turns it into an error ending.
            Some(e) if !state.done => {
                state.done = true;
                Err(e.clone())
            }
            _ => Ok(()),
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        let Self { sse, state } = self;
        if state.failed.is_some() {
            return;
        }
        // A cut stream often ends inside an event; that partial event is dropped, and does not
        // undo a message_delta that arrived whole.
        sse.finish(|ev| state.on_event(ev.event, &ev.data, out));
        if !state.done && state.stop_reason.is_some() {
            // message_delta arrived, message_stop did not: the response itself is complete.
            state.done = true;
            out.push(state.finish_event());
        }
    }
}

impl DecodeState {
    fn fail(&mut self, what: &str) {
        if self.failed.is_none() {
            self.failed = Some(TranslateError::new(format!("malformed Anthropic stream event: {what}")));
        }
    }

    fn finish_event(&self) -> StreamEvent {
        StreamEvent::Finish {
            stop_reason: self.stop_reason.unwrap_or(StopReason::EndTurn),
            stop_sequence: self.stop_sequence.clone(),
            usage: self.usage,
        }
    }

    fn on_event(&mut self, name: Option<&str>, data: &str, out: &mut Vec<StreamEvent>) {
        if self.done || self.failed.is_some() {
            return;
        }
        let parsed = serde_json::from_str::<Value>(data).ok();
        let obj = parsed.as_ref().and_then(Value::as_object);
        // Anthropic names every event; fall back on the JSON `type` when a relay dropped it.
        let Some(kind) = name.or_else(|| obj.and_then(|o| o.get("type")).and_then(Value::as_str)) else {
            return;
        };
        let known = matches!(
            kind,
            "message_start"
                | "content_block_start"
                | "content_block_delta"
                | "content_block_stop"
                | "message_delta"
                | "message_stop"
                | "error"
        );
        if !known {
            // ping and event types added later.
            return;
        }
        let Some(o) = obj else {
            self.fail(&format!("`{kind}` data is not a JSON object"));
            return;
        };
        match kind {
            "message_start" => {
                let Some(m) = o.get("message").and_then(Value::as_object) else {
                    self.fail("message_start without message");
                    return;
                };
                if let Some(u) = m.get("usage") {
                    merge_usage_value(u, &mut self.usage);
                }
                let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                out.push(StreamEvent::Start { id: text("id"), model: text("model"), usage: self.usage });
            }
            "content_block_start" => self.on_block_start(o, out),
            "content_block_delta" => self.on_block_delta(o, out),
            "content_block_stop" => {
                let Some(upstream) = o.get("index").and_then(Value::as_u64) else {
                    self.fail("content_block_stop without index");
                    return;
                };
                if let Some(Some(index)) = self.blocks.get(&upstream) {
                    out.push(StreamEvent::BlockStop { index: *index });
                }
            }
            "message_delta" => {
                self.saw_delta = true;
                if let Some(d) = o.get("delta").and_then(Value::as_object) {
                    if let Some(r) = d.get("stop_reason").and_then(Value::as_str) {
                        self.stop_reason = Some(parse_stop_reason(Some(r)));
                    }
                    if let Some(s) = d.get("stop_sequence") {
                        self.stop_sequence = s.as_str().map(str::to_owned);
                    }
                }
                if let Some(u) = o.get("usage") {
                    merge_usage_value(u, &mut self.usage);
                }
            }
            "message_stop" => {
                self.done = true;
                if self.saw_delta {
                    out.push(self.finish_event());
                }
                out.push(StreamEvent::Stop);
            }
            "error" => {
                self.done = true;
                let e = o.get("error");
                let t = e.and_then(|e| e.get("type")).and_then(Value::as_str).unwrap_or("api_error");
                let message =
                    e.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or_default().to_owned();
                out.push(StreamEvent::Error { kind: kind_from_type(t), message });
            }
            _ => {}
        }
    }

    fn on_block_start(&mut self, o: &Obj, out: &mut Vec<StreamEvent>) {
        let (Some(upstream), Some(block)) =
            (o.get("index").and_then(Value::as_u64), o.get("content_block").and_then(Value::as_object))
        else {
            self.fail("content_block_start without index or content_block");
            return;
        };
        let s = |k: &str| block.get(k).and_then(Value::as_str).unwrap_or_default();
        let kind = s("type");
        let start = match kind {
            "text" => BlockStart::Text,
            "thinking" => BlockStart::Thinking,
            "tool_use" => BlockStart::ToolUse { id: s("id").to_owned(), name: s("name").to_owned() },
            other => {
                // redacted_thinking (no stream form in the IR), server_tool_use and server tool
                // results: skipped with their deltas and stop.
                tracing::debug!(block = other, "anthropic stream: block the IR cannot hold");
                self.blocks.insert(upstream, None);
                return;
            }
        };
        let index = self.next_index;
        self.next_index += 1;
        self.blocks.insert(upstream, Some(index));
        out.push(StreamEvent::BlockStart { index, block: start });
        // Content in the start event itself is rare but allowed; keep it as a first delta.
        match kind {
            "text" if !s("text").is_empty() => {
                out.push(StreamEvent::Delta { index, delta: Delta::Text(s("text").to_owned()) })
            }
            "thinking" => {
                if !s("thinking").is_empty() {
                    out.push(StreamEvent::Delta { index, delta: Delta::Thinking(s("thinking").to_owned()) });
                }
                if !s("signature").is_empty() {
                    out.push(StreamEvent::Delta {
                        index,
                        delta: Delta::Signature(s("signature").to_owned()),
                    });
                }
            }
            "tool_use" => {
                if let Some(input) =
                    block.get("input").filter(|i| i.as_object().is_some_and(|m| !m.is_empty()))
                {
                    out.push(StreamEvent::Delta { index, delta: Delta::Json(input.to_string()) });
                }
            }
            _ => {}
        }
    }

    fn on_block_delta(&mut self, o: &Obj, out: &mut Vec<StreamEvent>) {
        let (Some(upstream), Some(delta)) =
            (o.get("index").and_then(Value::as_u64), o.get("delta").and_then(Value::as_object))
        else {
            self.fail("content_block_delta without index or delta");
            return;
        };
        let Some(Some(index)) = self.blocks.get(&upstream).copied() else {
            return;
        };
        let s = |k: &str| delta.get(k).and_then(Value::as_str).map(str::to_owned);
        let delta = match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => s("text").map(Delta::Text),
            Some("input_json_delta") => s("partial_json").map(Delta::Json),
            Some("thinking_delta") => s("thinking").map(Delta::Thinking),
            Some("signature_delta") => s("signature").map(Delta::Signature),
            // citations_delta and later additions.
            _ => None,
        };
        if let Some(delta) = delta {
            out.push(StreamEvent::Delta { index, delta });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream encoding.

/// Writes canonical events as Anthropic SSE: `message_start`, `content_block_start` /
/// `content_block_delta` / `content_block_stop`, `message_delta`, `message_stop`, or
/// `event: error`.
///
/// Block indices are renumbered from 0 in order of appearance, as clients index the final
/// `content` array with them. A thinking block's signature pieces are joined and sent as one
/// `signature_delta` just before its `content_block_stop`, as the API does (clients replace the
/// signature on each `signature_delta` rather than append).
#[derive(Default)]
struct AnthropicStreamEncoder {
    started: bool,
    ended: bool,
    /// Usage announced in `message_start`.
    start_usage: Usage,
    /// IR index → (Anthropic index, pending signature).
    blocks: Vec<(usize, usize, Option<String>)>,
    next_index: usize,
}

#[cfg(test)]
#[derive(Serialize)]
struct WireStart<'a> {
    r#type: &'static str,
    message: WireStartMessage<'a>,
}

#[cfg(test)]
#[derive(Serialize)]
struct WireStartMessage<'a> {
    id: &'a str,
    r#type: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<()>,
    stop_sequence: Option<()>,
    usage: WireUsage,
}

#[cfg(test)]
#[derive(Serialize)]
struct WireBlockStart<'a> {
    r#type: &'static str,
    index: usize,
    content_block: WireStartBlock<'a>,
}

#[cfg(test)]
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireStartBlock<'a> {
    Text { text: &'static str },
    ToolUse { id: &'a str, name: &'a str, input: Map<String, Value> },
    Thinking { thinking: &'static str, signature: &'static str },
}

#[cfg(test)]
#[derive(Serialize)]
struct WireBlockDelta<'a> {
    r#type: &'static str,
    index: usize,
    delta: WireDelta<'a>,
}

#[cfg(test)]
#[derive(Serialize)]
#[serde(tag = "type")]
enum WireDelta<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
}

#[cfg(test)]
#[derive(Serialize)]
struct WireIndexed {
    r#type: &'static str,
    index: usize,
}

#[cfg(test)]
#[derive(Serialize)]
struct WireMessageDelta<'a> {
    r#type: &'static str,
    delta: WireStop<'a>,
    usage: WireUsage,
}

#[cfg(test)]
#[derive(Serialize)]
struct WireStop<'a> {
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
}

#[cfg(test)]
#[derive(Serialize)]
struct WireTyped {
    r#type: &'static str,
}

fn write_event(out: &mut BytesMut, name: &str, data: &impl Serialize) {
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    // Serializing these plain structs cannot fail; on the impossible error the data line stays
    // empty rather than panicking mid-stream.
    let _ = serde_json::to_writer(out.writer(), data);
    out.put_slice(b"\n\n");
}

// The stream's events are written by hand (see [`jsonw`]): the same bytes as `write_event` with
// the `Wire*` structs above, which the tests compare them with.

/// A `content_block_delta` event, the bulk of every stream. `head` is the delta object up to
/// its value.
fn write_block_delta(out: &mut BytesMut, index: usize, head: &[u8], value: &str) {
    out.put_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":");
    jsonw::put_int(out, index as u64);
    out.put_slice(head);
    jsonw::put_str(out, value);
    out.put_slice(b"}}\n\n");
}

const SIGNATURE_DELTA: &[u8] = b",\"delta\":{\"type\":\"signature_delta\",\"signature\":";

/// `message_start`.
fn write_message_start(out: &mut BytesMut, id: &str, model: &str, usage: &WireUsage) {
    out.put_slice(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":");
    jsonw::put_str(out, id);
    out.put_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    jsonw::put_str(out, model);
    out.put_slice(b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":");
    put_usage(out, usage);
    out.put_slice(b"}}\n\n");
}

/// `content_block_start`.
fn write_block_start(out: &mut BytesMut, index: usize, block: &BlockStart) {
    out.put_slice(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":");
    jsonw::put_int(out, index as u64);
    match block {
        BlockStart::Text => out.put_slice(b",\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"),
        BlockStart::ToolUse { id, name } => {
            out.put_slice(b",\"content_block\":{\"type\":\"tool_use\",\"id\":");
            jsonw::put_str(out, id);
            out.put_slice(b",\"name\":");
            jsonw::put_str(out, name);
            out.put_slice(b",\"input\":{}}}\n\n");
        }
        BlockStart::Thinking => out.put_slice(
            b",\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n",
        ),
    }
}

/// `content_block_stop`.
fn write_block_stop(out: &mut BytesMut, index: usize) {
    out.put_slice(b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":");
    jsonw::put_int(out, index as u64);
    out.put_slice(b"}\n\n");
}

/// `message_delta`.
fn write_message_delta(
    out: &mut BytesMut,
    stop_reason: &str,
    stop_sequence: Option<&str>,
    usage: &WireUsage,
) {
    out.put_slice(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":");
    jsonw::put_str(out, stop_reason);
    out.put_slice(b",\"stop_sequence\":");
    match stop_sequence {
        Some(s) => jsonw::put_str(out, s),
        None => out.put_slice(b"null"),
    }
    out.put_slice(b"},\"usage\":");
    put_usage(out, usage);
    out.put_slice(b"}\n\n");
}

/// A `usage` object, as [`WireUsage`] serializes.
fn put_usage(out: &mut BytesMut, u: &WireUsage) {
    out.put_slice(b"{\"input_tokens\":");
    jsonw::put_int(out, u.input_tokens);
    out.put_slice(b",\"cache_creation_input_tokens\":");
    jsonw::put_int(out, u.cache_creation_input_tokens);
    out.put_slice(b",\"cache_read_input_tokens\":");
    jsonw::put_int(out, u.cache_read_input_tokens);
    if let Some(c) = &u.cache_creation {
        out.put_slice(b",\"cache_creation\":{\"ephemeral_5m_input_tokens\":");
        jsonw::put_int(out, c.ephemeral_5m_input_tokens);
        out.put_slice(b",\"ephemeral_1h_input_tokens\":");
        jsonw::put_int(out, c.ephemeral_1h_input_tokens);
        out.put_u8(b'}');
    }
    out.put_slice(b",\"output_tokens\":");
    jsonw::put_int(out, u.output_tokens);
    if let Some(d) = &u.output_tokens_details {
        out.put_slice(b",\"output_tokens_details\":{\"thinking_tokens\":");
        jsonw::put_int(out, d.thinking_tokens);
        out.put_u8(b'}');
    }
    out.put_u8(b'}');
}

impl AnthropicStreamEncoder {
    fn ensure_start(&mut self, out: &mut BytesMut) {
        if !self.started {
            self.write_start("", "", &Usage::default(), out);
        }
    }

    fn write_start(&mut self, id: &str, model: &str, usage: &Usage, out: &mut BytesMut) {
        self.started = true;
        self.start_usage = *usage;
        let generated;
        let id = if id.is_empty() {
            generated = new_message_id();
            generated.as_str()
        } else {
            id
        };
        write_message_start(out, id, model, &WireUsage::full(usage));
    }

    fn block(&mut self, ir: usize) -> Option<&mut (usize, usize, Option<String>)> {
        self.blocks.iter_mut().find(|b| b.0 == ir)
    }

    fn close(&mut self, ir: usize, out: &mut BytesMut) {
        let Some(pos) = self.blocks.iter().position(|b| b.0 == ir) else {
            return;
        };
        let (_, index, signature) = self.blocks.remove(pos);
        if let Some(signature) = signature {
            write_block_delta(out, index, SIGNATURE_DELTA, &signature);
        }
        write_block_stop(out, index);
    }
}

impl StreamEncoder for AnthropicStreamEncoder {
    fn encode(&mut self, event: &StreamEvent, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        match event {
            StreamEvent::Start { id, model, usage } => {
                if !self.started {
                    self.write_start(id, model, usage, out);
                }
            }
            StreamEvent::BlockStart { index: ir, block } => {
                self.ensure_start(out);
                if self.block(*ir).is_some() {
                    return;
                }
                let index = self.next_index;
                self.next_index += 1;
                self.blocks.push((*ir, index, None));
                write_block_start(out, index, block);
            }
            StreamEvent::Delta { index: ir, delta } => {
                let Some(block) = self.block(*ir) else {
                    return;
                };
                let index = block.1;
                let (head, value): (&[u8], &str) = match delta {
                    Delta::Text(t) => (b",\"delta\":{\"type\":\"text_delta\",\"text\":", t),
                    Delta::Json(j) => (b",\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":", j),
                    Delta::Thinking(t) => (b",\"delta\":{\"type\":\"thinking_delta\",\"thinking\":", t),
                    Delta::Signature(s) => {
                        block.2.get_or_insert_with(String::new).push_str(s);
                        return;
                    }
                };
                write_block_delta(out, index, head, value);
            }
            StreamEvent::BlockStop { index } => self.close(*index, out),
            StreamEvent::Finish { stop_reason, stop_sequence, usage } => {
                self.ensure_start(out);
                let open: Vec<usize> = self.blocks.iter().map(|b| b.0).collect();
                for ir in open {
                    self.close(ir, out);
                }
                write_message_delta(
                    out,
                    stop_reason_str(*stop_reason),
                    stop_sequence.as_deref(),
                    &WireUsage::delta(usage, &self.start_usage),
                );
            }
            StreamEvent::Stop => {
                self.ensure_start(out);
                self.ended = true;
                out.put_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
            }
            StreamEvent::Error { kind, message } => {
                // An error ends an Anthropic stream by itself: no message_stop follows.
                self.ended = true;
                let e = WireError {
                    r#type: "error",
                    error: WireErrorDetail { r#type: error_type(kind, 0), message },
                };
                write_event(out, "error", &e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_map_both_ways() {
        for t in [
            "invalid_request_error",
            "authentication_error",
            "permission_error",
            "not_found_error",
            "request_too_large",
            "rate_limit_error",
            "api_error",
            "overloaded_error",
            "billing_error",
            "timeout_error",
        ] {
            assert_eq!(error_type(&kind_from_type(t), 0), t, "{t}");
        }
        assert_eq!(error_type("something_new", 529), "overloaded_error");
        assert_eq!(error_type("something_new", 0), "api_error");
    }

    #[test]
    fn stream_events_are_written_as_the_serializer_would() {
        let texts = ["", "msg_01", "claude-sonnet-4-5", "quote \" backslash \\ nul \u{0} é 🦀"];
        let usages = [
            Usage::default(),
            Usage {
                tokens: TokenUsage {
                    input_tokens: 812,
                    output_tokens: 60,
                    cache_creation_input_tokens: 7,
                    cache_creation_5m_input_tokens: 3,
                    cache_creation_1h_input_tokens: 4,
                    cache_read_input_tokens: u64::MAX,
                },
                reasoning_tokens: 9,
            },
        ];
        for text in texts {
            for usage in &usages {
                for wire in [WireUsage::full(usage), WireUsage::delta(usage, &Usage::default())] {
                    let mut fast = BytesMut::new();
                    write_message_start(&mut fast, text, text, &wire);
                    let start = WireStart {
                        r#type: "message_start",
                        message: WireStartMessage {
                            id: text,
                            r#type: "message",
                            role: "assistant",
                            model: text,
                            content: [],
                            stop_reason: None,
                            stop_sequence: None,
                            usage: wire,
                        },
                    };
                    let mut expected = BytesMut::new();
                    write_event(&mut expected, "message_start", &start);
                    assert_eq!(fast, expected);
                }
                for sequence in [None, Some(text)] {
                    let wire = WireUsage::delta(usage, &usages[1]);
                    let mut fast = BytesMut::new();
                    write_message_delta(&mut fast, "end_turn", sequence, &wire);
                    let d = WireMessageDelta {
                        r#type: "message_delta",
                        delta: WireStop { stop_reason: "end_turn", stop_sequence: sequence },
                        usage: WireUsage::delta(usage, &usages[1]),
                    };
                    let mut expected = BytesMut::new();
                    write_event(&mut expected, "message_delta", &d);
                    assert_eq!(fast, expected);
                }
            }
            for (index, block) in [
                (0, BlockStart::Text),
                (3, BlockStart::Thinking),
                (12, BlockStart::ToolUse { id: text.to_owned(), name: text.to_owned() }),
            ] {
                let mut fast = BytesMut::new();
                write_block_start(&mut fast, index, &block);
                let content_block = match &block {
                    BlockStart::Text => WireStartBlock::Text { text: "" },
                    BlockStart::ToolUse { id, name } => {
                        WireStartBlock::ToolUse { id, name, input: Map::new() }
                    }
                    BlockStart::Thinking => WireStartBlock::Thinking { thinking: "", signature: "" },
                };
                let mut expected = BytesMut::new();
                write_event(
                    &mut expected,
                    "content_block_start",
                    &WireBlockStart { r#type: "content_block_start", index, content_block },
                );
                assert_eq!(fast, expected);
            }
        }
        let mut fast = BytesMut::new();
        write_block_stop(&mut fast, 42);
        let mut expected = BytesMut::new();
        write_event(
            &mut expected,
            "content_block_stop",
            &WireIndexed { r#type: "content_block_stop", index: 42 },
        );
        assert_eq!(fast, expected);
        let mut expected = BytesMut::new();
        write_event(&mut expected, "message_stop", &WireTyped { r#type: "message_stop" });
        assert_eq!(&expected[..], b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    }

    #[test]
    fn block_deltas_are_written_as_the_serializer_would() {
        for value in ["", "word ", "quote \" backslash \\ newline \n tab \t nul \u{0} é 🦀", "{\"a\": [1]}"]
        {
            for (index, delta) in [
                (0, WireDelta::Text { text: value }),
                (7, WireDelta::InputJson { partial_json: value }),
                (123_456, WireDelta::Thinking { thinking: value }),
                (5, WireDelta::Signature { signature: value }),
            ] {
                let head: &[u8] = match delta {
                    WireDelta::Text { .. } => b",\"delta\":{\"type\":\"text_delta\",\"text\":",
                    WireDelta::InputJson { .. } => {
                        b",\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":"
                    }
                    WireDelta::Thinking { .. } => b",\"delta\":{\"type\":\"thinking_delta\",\"thinking\":",
                    WireDelta::Signature { .. } => SIGNATURE_DELTA,
                };
                let mut expected = BytesMut::new();
                let d = WireBlockDelta { r#type: "content_block_delta", index, delta };
                write_event(&mut expected, "content_block_delta", &d);
                let mut fast = BytesMut::new();
                write_block_delta(&mut fast, index, head, value);
                assert_eq!(fast, expected);
            }
        }
    }

    #[test]
    fn typed_usage_reads_as_the_value_one() {
        for u in [
            r#"{"input_tokens": 25, "output_tokens": 15, "cache_read_input_tokens": 2, "cache_creation_input_tokens": 3}"#,
            r#"{"cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 4}}"#,
            r#"{"cache_creation": {"ephemeral_5m_input_tokens": 3}, "cache_creation_input_tokens": 1, "output_tokens_details": {"thinking_tokens": 9}}"#,
            r#"{"input_tokens": -1, "output_tokens": 1.5, "cache_creation": [], "output_tokens_details": 3}"#,
            r#"{"input_tokens": null, "input_tokens": 7, "output_tokens_details": {"thinking_tokens": "x"}}"#,
        ] {
            let value: Value = serde_json::from_str(u).expect("json");
            let mut from_value = Usage::default();
            merge_usage_value(&value, &mut from_value);
            let Ok(F::Val(typed)) = lenient::parse::<UsageIn<'_>>(u) else { panic!("object: {u}") };
            let mut from_typed = Usage::default();
            merge_usage(&typed, &mut from_typed);
            assert_eq!(from_typed, from_value, "{u}");
        }
    }

    #[test]
    fn usage_split_alone_gives_the_cache_creation_total() {
        let u = serde_json::json!({"cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 4}});
        let mut usage = Usage::default();
        merge_usage_value(&u, &mut usage);
        assert_eq!(usage.tokens.cache_creation_input_tokens, 7);
    }
}
