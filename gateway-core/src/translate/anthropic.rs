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

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde_json::{Map, Value};

use super::ir::{
    Block, BlockStart, Delta, ImageSource, Message, Reasoning, Request, Response, ResponseFormat, Role,
    StopReason, StreamEvent, Tool, ToolChoice, Usage,
};
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
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| TranslateError::new(format!("request body is not JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(TranslateError::new("request body must be a JSON object"));
        };
        decode_request(&obj, notes)
    }

    fn encode_request(&self, req: &Request, notes: &mut Notes) -> Result<Vec<u8>, TranslateError> {
        let wire = encode_request(req, notes);
        serde_json::to_vec(&wire).map_err(|e| TranslateError::new(format!("cannot write request: {e}")))
    }

    fn request_path(&self, _req: &Request) -> String {
        // Streaming is a body flag in this dialect, so the path never changes.
        "/v1/messages".to_owned()
    }

    fn decode_response(&self, body: &[u8]) -> Result<Response, TranslateError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| TranslateError::new(format!("response body is not JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(TranslateError::new("response body must be a JSON object"));
        };
        decode_response(&obj)
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

// ---------------------------------------------------------------------------------------------
// Lenient JSON reading: absent and `null` are the same; a present value of the wrong type is an
// error, since the vendor would reject it too.

type Obj = Map<String, Value>;

fn wrong(path: &str, key: &str, what: &str) -> TranslateError {
    TranslateError::new(format!("`{path}{key}` must be {what}"))
}

fn get<'a>(o: &'a Obj, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn opt_str<'a>(o: &'a Obj, key: &str, path: &str) -> Result<Option<&'a str>, TranslateError> {
    match get(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong(path, key, "a string")),
    }
}

fn req_str<'a>(o: &'a Obj, key: &str, path: &str) -> Result<&'a str, TranslateError> {
    opt_str(o, key, path)?.ok_or_else(|| wrong(path, key, "a string"))
}

fn opt_u64(o: &Obj, key: &str, path: &str) -> Result<Option<u64>, TranslateError> {
    match get(o, key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| wrong(path, key, "a non-negative integer")),
    }
}

fn opt_f64(o: &Obj, key: &str, path: &str) -> Result<Option<f64>, TranslateError> {
    match get(o, key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| wrong(path, key, "a number")),
    }
}

fn opt_bool(o: &Obj, key: &str, path: &str) -> Result<Option<bool>, TranslateError> {
    match get(o, key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| wrong(path, key, "a boolean")),
    }
}

fn opt_obj<'a>(o: &'a Obj, key: &str, path: &str) -> Result<Option<&'a Obj>, TranslateError> {
    match get(o, key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(wrong(path, key, "an object")),
    }
}

fn opt_arr<'a>(o: &'a Obj, key: &str, path: &str) -> Result<Option<&'a Vec<Value>>, TranslateError> {
    match get(o, key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(wrong(path, key, "an array")),
    }
}

fn as_obj<'a>(v: &'a Value, path: &str) -> Result<&'a Obj, TranslateError> {
    v.as_object().ok_or_else(|| TranslateError::new(format!("`{path}` must be an object")))
}

// ---------------------------------------------------------------------------------------------
// Requests: decoding.

/// Top-level request fields with no IR equivalent, noted by name when present.
const UNCARRIED_REQUEST_FIELDS: [&str; 6] =
    ["cache_control", "container", "context_management", "inference_geo", "mcp_servers", "service_tier"];

fn decode_request(o: &Obj, notes: &mut Notes) -> Result<Request, TranslateError> {
    let mut req = Request {
        model: opt_str(o, "model", "")?.unwrap_or_default().to_owned(),
        max_tokens: opt_u64(o, "max_tokens", "")?,
        temperature: opt_f64(o, "temperature", "")?,
        top_p: opt_f64(o, "top_p", "")?,
        top_k: opt_u64(o, "top_k", "")?,
        stream: opt_bool(o, "stream", "")?.unwrap_or(false),
        ..Request::default()
    };

    match get(o, "system") {
        None => {}
        Some(Value::String(s)) => req.system.push(s.clone()),
        Some(Value::Array(items)) => decode_system_blocks(items, "system", &mut req.system, notes)?,
        Some(_) => return Err(wrong("", "system", "a string or an array of text blocks")),
    }

    if let Some(messages) = opt_arr(o, "messages", "")? {
        for (i, m) in messages.iter().enumerate() {
            let path = format!("messages[{i}]");
            decode_message(m, &path, &mut req, notes)?;
        }
    }

    if let Some(tools) = opt_arr(o, "tools", "")? {
        for (i, t) in tools.iter().enumerate() {
            let path = format!("tools[{i}].");
            let t = as_obj(t, &format!("tools[{i}]"))?;
            let kind = opt_str(t, "type", &path)?;
            if let Some(kind) = kind.filter(|k| *k != "custom") {
                // Server tools (web_search, code_execution, ...) run at Anthropic; elsewhere they
                // do not exist.
                notes.note(format!("tools[].type={kind} (server tool)"));
                continue;
            }
            if t.contains_key("cache_control") {
                notes.note("tools[].cache_control");
            }
            req.tools.push(Tool {
                name: req_str(t, "name", &path)?.to_owned(),
                description: opt_str(t, "description", &path)?.map(str::to_owned),
                parameters: get(t, "input_schema").cloned().unwrap_or(Value::Null),
            });
        }
    }

    if let Some(tc) = opt_obj(o, "tool_choice", "")? {
        let path = "tool_choice.";
        req.tool_choice = match opt_str(tc, "type", path)? {
            Some("auto") => Some(ToolChoice::Auto),
            Some("any") => Some(ToolChoice::Required),
            Some("none") => Some(ToolChoice::None),
            Some("tool") => Some(ToolChoice::Tool { name: req_str(tc, "name", path)?.to_owned() }),
            Some(other) => {
                notes.note(format!("tool_choice.type={other}"));
                None
            }
            None => None,
        };
        if let Some(disable) = opt_bool(tc, "disable_parallel_tool_use", path)? {
            req.parallel_tool_calls = Some(!disable);
        }
    }

    if let Some(stop) = opt_arr(o, "stop_sequences", "")? {
        for s in stop {
            let s = s.as_str().ok_or_else(|| wrong("", "stop_sequences[]", "a string"))?;
            req.stop.push(s.to_owned());
        }
    }

    if let Some(thinking) = opt_obj(o, "thinking", "")? {
        let path = "thinking.";
        match opt_str(thinking, "type", path)? {
            Some("enabled") => {
                req.reasoning = Some(Reasoning {
                    budget_tokens: opt_u64(thinking, "budget_tokens", path)?,
                    ..Reasoning::default()
                })
            }
            Some("adaptive") => req.reasoning = Some(Reasoning::default()),
            Some("disabled") => req.reasoning = Some(Reasoning { disabled: true, ..Reasoning::default() }),
            Some(other) => notes.note(format!("thinking.type={other}")),
            None => {}
        }
        if thinking.contains_key("display") {
            notes.note("thinking.display");
        }
    }

    if let Some(oc) = opt_obj(o, "output_config", "")? {
        let path = "output_config.";
        for key in oc.keys() {
            if key != "effort" && key != "format" {
                notes.note(format!("output_config.{key}"));
            }
        }
        if let Some(effort) = opt_str(oc, "effort", path)? {
            req.reasoning.get_or_insert_with(Reasoning::default).effort = Some(effort.to_owned());
        }
        if let Some(format) = opt_obj(oc, "format", path)? {
            req.response_format = decode_output_format(format, "output_config.format.", notes)?;
        }
    }
    // The structured-outputs beta put the same object at the top level.
    if req.response_format.is_none()
        && let Some(format) = opt_obj(o, "output_format", "")?
    {
        req.response_format = decode_output_format(format, "output_format.", notes)?;
    }

    if let Some(meta) = opt_obj(o, "metadata", "")? {
        req.user = opt_str(meta, "user_id", "metadata.")?.map(str::to_owned);
        for key in meta.keys().filter(|k| *k != "user_id") {
            notes.note(format!("metadata.{key}"));
        }
    }

    const HANDLED: [&str; 15] = [
        "model",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stream",
        "system",
        "messages",
        "tools",
        "tool_choice",
        "stop_sequences",
        "thinking",
        "output_config",
        "output_format",
        "metadata",
    ];
    for key in o.keys().filter(|k| !HANDLED.contains(&k.as_str())) {
        if UNCARRIED_REQUEST_FIELDS.contains(&key.as_str()) {
            notes.note(key.clone());
        } else {
            notes.note(format!("{key} (unknown field)"));
        }
    }
    Ok(req)
}

fn decode_output_format(
    format: &Obj,
    path: &str,
    notes: &mut Notes,
) -> Result<Option<ResponseFormat>, TranslateError> {
    match opt_str(format, "type", path)? {
        Some("json_schema") => Ok(Some(ResponseFormat::JsonSchema {
            name: None,
            schema: get(format, "schema").cloned().unwrap_or(Value::Null),
            strict: None,
        })),
        Some(other) => {
            notes.note(format!("{path}type={other}"));
            Ok(None)
        }
        None => Ok(None),
    }
}

/// System text blocks: only `text` exists in this position.
fn decode_system_blocks(
    items: &[Value],
    path: &str,
    system: &mut Vec<String>,
    notes: &mut Notes,
) -> Result<(), TranslateError> {
    for item in items {
        let b = as_obj(item, &format!("{path}[]"))?;
        let bpath = format!("{path}[].");
        match opt_str(b, "type", &bpath)? {
            Some("text") | None => {
                if b.contains_key("cache_control") {
                    notes.note(format!("{path}[].cache_control"));
                }
                system.push(req_str(b, "text", &bpath)?.to_owned());
            }
            Some(other) => notes.note(format!("{path}[].type={other}")),
        }
    }
    Ok(())
}

fn decode_message(m: &Value, path: &str, req: &mut Request, notes: &mut Notes) -> Result<(), TranslateError> {
    let m = as_obj(m, path)?;
    let dot = format!("{path}.");
    let role = match req_str(m, "role", &dot)? {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "system" | "developer" => {
            // The Messages API has no system role in `messages`; Claude Code sends one anyway.
            // Its text is instructions, so it joins the system list (losing only its position).
            notes.note("messages[].role=system (moved into system)");
            match get(m, "content") {
                None => {}
                Some(Value::String(s)) => req.system.push(s.clone()),
                Some(Value::Array(items)) => {
                    decode_system_blocks(items, "messages[].content", &mut req.system, notes)?
                }
                Some(_) => return Err(wrong(&dot, "content", "a string or an array")),
            }
            return Ok(());
        }
        other => return Err(TranslateError::new(format!("`{path}.role` has unknown value `{other}`"))),
    };
    let content = match get(m, "content") {
        None => Vec::new(),
        Some(v) => decode_blocks(v, &format!("{path}.content"), "messages[].content[]", notes)?,
    };
    req.messages.push(Message { role, content });
    Ok(())
}

/// Decodes `content` (a string or an array of blocks). `note_path` names the position in notes,
/// without indices so that repeated drops produce one note.
fn decode_blocks(
    v: &Value,
    path: &str,
    note_path: &str,
    notes: &mut Notes,
) -> Result<Vec<Block>, TranslateError> {
    match v {
        Value::String(s) => Ok(vec![Block::Text { text: s.clone() }]),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let bpath = format!("{path}[{i}]");
                let b = as_obj(item, &bpath)?;
                if let Some(block) = decode_block(b, &format!("{bpath}."), note_path, notes)? {
                    out.push(block);
                }
            }
            Ok(out)
        }
        _ => Err(TranslateError::new(format!("`{path}` must be a string or an array of blocks"))),
    }
}

fn decode_block(
    b: &Obj,
    path: &str,
    note_path: &str,
    notes: &mut Notes,
) -> Result<Option<Block>, TranslateError> {
    let kind = opt_str(b, "type", path)?.unwrap_or("");
    if b.contains_key("cache_control") {
        notes.note(format!("{note_path}.cache_control"));
    }
    let block = match kind {
        "text" => {
            if b.contains_key("citations") {
                notes.note(format!("{note_path}.citations"));
            }
            Block::Text { text: req_str(b, "text", path)?.to_owned() }
        }
        "image" => {
            let spath = format!("{path}source.");
            let Some(source) = opt_obj(b, "source", path)? else {
                return Err(wrong(path, "source", "an object"));
            };
            let source = match opt_str(source, "type", &spath)? {
                Some("base64") => ImageSource::Base64 {
                    media_type: req_str(source, "media_type", &spath)?.to_owned(),
                    data: req_str(source, "data", &spath)?.to_owned(),
                },
                Some("url") => ImageSource::Url { url: req_str(source, "url", &spath)?.to_owned() },
                other => {
                    notes.note(format!("{note_path}.source.type={}", other.unwrap_or("missing")));
                    return Ok(None);
                }
            };
            Block::Image { source }
        }
        "tool_use" => Block::ToolUse {
            id: req_str(b, "id", path)?.to_owned(),
            name: req_str(b, "name", path)?.to_owned(),
            input: get(b, "input").cloned().unwrap_or_else(|| Value::Object(Map::new())),
        },
        "tool_result" => {
            let content = match get(b, "content") {
                None => Vec::new(),
                // An empty string is no content; an empty text block would be rejected upstream.
                Some(Value::String(s)) if s.is_empty() => Vec::new(),
                Some(v) => decode_blocks(v, &format!("{path}content"), "tool_result.content[]", notes)?,
            };
            Block::ToolResult {
                tool_use_id: req_str(b, "tool_use_id", path)?.to_owned(),
                content,
                is_error: opt_bool(b, "is_error", path)?.unwrap_or(false),
            }
        }
        "thinking" => Block::Thinking {
            text: opt_str(b, "thinking", path)?.unwrap_or_default().to_owned(),
            signature: opt_str(b, "signature", path)?.filter(|s| !s.is_empty()).map(str::to_owned),
        },
        "redacted_thinking" => Block::RedactedThinking { data: req_str(b, "data", path)?.to_owned() },
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
    Text(&'a str),
    Blocks(Vec<WireTextBlock<'a>>),
}

#[derive(Serialize)]
struct WireTextBlock<'a> {
    r#type: &'static str,
    text: &'a str,
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
        text: &'a str,
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
        [one] => Some(WireSystem::Text(one)),
        many => {
            Some(WireSystem::Blocks(many.iter().map(|text| WireTextBlock { r#type: "text", text }).collect()))
        }
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
                    Block::Text { text } => Some(WireBlock::Text { text }),
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
        Block::Text { text } => WireBlock::Text { text },
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

fn decode_response(o: &Obj) -> Result<Response, TranslateError> {
    if o.get("type").and_then(Value::as_str) == Some("error") {
        let message =
            o.get("error").and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or("unknown error");
        return Err(TranslateError::new(format!("upstream returned an error body: {message}")));
    }
    let mut content = Vec::new();
    if let Some(items) = opt_arr(o, "content", "")? {
        let mut ignored = Notes::default();
        for (i, item) in items.iter().enumerate() {
            let path = format!("content[{i}]");
            let b = as_obj(item, &path)?;
            if let Some(block) = decode_block(b, &format!("{path}."), "content[]", &mut ignored)? {
                content.push(block);
            }
        }
        if !ignored.is_empty() {
            tracing::debug!(dropped = ?ignored.0, "anthropic response: content the IR cannot hold");
        }
    }
    let mut usage = Usage::default();
    if let Some(u) = opt_obj(o, "usage", "")? {
        merge_usage(u, &mut usage);
    }
    Ok(Response {
        id: opt_str(o, "id", "")?.unwrap_or_default().to_owned(),
        model: opt_str(o, "model", "")?.unwrap_or_default().to_owned(),
        content,
        stop_reason: parse_stop_reason(opt_str(o, "stop_reason", "")?),
        stop_sequence: opt_str(o, "stop_sequence", "")?.map(str::to_owned),
        usage,
    })
}

/// Overlays the counts present in `u` onto `into`: `message_delta` carries only some, and later
/// values are cumulative, so they win.
fn merge_usage(u: &Obj, into: &mut Usage) {
    let n = |key: &str| u.get(key).and_then(Value::as_u64);
    let t = &mut into.tokens;
    if let Some(v) = n("input_tokens") {
        t.input_tokens = v;
    }
    if let Some(v) = n("output_tokens") {
        t.output_tokens = v;
    }
    if let Some(v) = n("cache_read_input_tokens") {
        t.cache_read_input_tokens = v;
    }
    if let Some(split) = u.get("cache_creation").and_then(Value::as_object) {
        if let Some(v) = split.get("ephemeral_5m_input_tokens").and_then(Value::as_u64) {
            t.cache_creation_5m_input_tokens = v;
        }
        if let Some(v) = split.get("ephemeral_1h_input_tokens").and_then(Value::as_u64) {
            t.cache_creation_1h_input_tokens = v;
        }
    }
    match n("cache_creation_input_tokens") {
        Some(v) => t.cache_creation_input_tokens = v,
        None => {
            let split = t.cache_creation_5m_input_tokens.saturating_add(t.cache_creation_1h_input_tokens);
            t.cache_creation_input_tokens = t.cache_creation_input_tokens.max(split);
        }
    }
    if let Some(v) =
        u.get("output_tokens_details").and_then(|d| d.get("thinking_tokens")).and_then(Value::as_u64)
    {
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
                if let Some(u) = m.get("usage").and_then(Value::as_object) {
                    merge_usage(u, &mut self.usage);
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
                if let Some(u) = o.get("usage").and_then(Value::as_object) {
                    merge_usage(u, &mut self.usage);
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

#[derive(Serialize)]
struct WireStart<'a> {
    r#type: &'static str,
    message: WireStartMessage<'a>,
}

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

#[derive(Serialize)]
struct WireBlockStart<'a> {
    r#type: &'static str,
    index: usize,
    content_block: WireStartBlock<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireStartBlock<'a> {
    Text { text: &'static str },
    ToolUse { id: &'a str, name: &'a str, input: Map<String, Value> },
    Thinking { thinking: &'static str, signature: &'static str },
}

#[derive(Serialize)]
struct WireBlockDelta<'a> {
    r#type: &'static str,
    index: usize,
    delta: WireDelta<'a>,
}

/// Text, JSON and thinking deltas are written by [`write_block_delta`]; their variants stay as
/// the reference it is tested against.
#[derive(Serialize)]
#[serde(tag = "type")]
#[cfg_attr(not(test), allow(dead_code))]
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

#[derive(Serialize)]
struct WireIndexed {
    r#type: &'static str,
    index: usize,
}

#[derive(Serialize)]
struct WireMessageDelta<'a> {
    r#type: &'static str,
    delta: WireStop<'a>,
    usage: WireUsage,
}

#[derive(Serialize)]
struct WireStop<'a> {
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
}

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

/// A `content_block_delta` event, the bulk of every stream, written without going through a
/// serializer: the same bytes as `write_event` with a [`WireBlockDelta`]. `head` is the delta
/// object up to its value.
fn write_block_delta(out: &mut BytesMut, index: usize, head: &[u8], value: &str) {
    out.put_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":");
    // Writing a number or a string cannot fail (see `write_event`).
    let _ = serde_json::to_writer(out.writer(), &index);
    out.put_slice(head);
    let _ = serde_json::to_writer(out.writer(), value);
    out.put_slice(b"}}\n\n");
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
        let start = WireStart {
            r#type: "message_start",
            message: WireStartMessage {
                id,
                r#type: "message",
                role: "assistant",
                model,
                content: [],
                stop_reason: None,
                stop_sequence: None,
                usage: WireUsage::full(usage),
            },
        };
        write_event(out, "message_start", &start);
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
            let d = WireBlockDelta {
                r#type: "content_block_delta",
                index,
                delta: WireDelta::Signature { signature: &signature },
            };
            write_event(out, "content_block_delta", &d);
        }
        write_event(out, "content_block_stop", &WireIndexed { r#type: "content_block_stop", index });
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
                let content_block = match block {
                    BlockStart::Text => WireStartBlock::Text { text: "" },
                    BlockStart::ToolUse { id, name } => {
                        WireStartBlock::ToolUse { id, name, input: Map::new() }
                    }
                    BlockStart::Thinking => WireStartBlock::Thinking { thinking: "", signature: "" },
                };
                let start = WireBlockStart { r#type: "content_block_start", index, content_block };
                write_event(out, "content_block_start", &start);
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
                let d = WireMessageDelta {
                    r#type: "message_delta",
                    delta: WireStop {
                        stop_reason: stop_reason_str(*stop_reason),
                        stop_sequence: stop_sequence.as_deref(),
                    },
                    usage: WireUsage::delta(usage, &self.start_usage),
                };
                write_event(out, "message_delta", &d);
            }
            StreamEvent::Stop => {
                self.ensure_start(out);
                self.ended = true;
                write_event(out, "message_stop", &WireTyped { r#type: "message_stop" });
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
    fn block_deltas_are_written_as_the_serializer_would() {
        for value in ["", "word ", "quote \" backslash \\ newline \n tab \t nul \u{0} é 🦀", "{\"a\": [1]}"]
        {
            for (index, delta) in [
                (0, WireDelta::Text { text: value }),
                (7, WireDelta::InputJson { partial_json: value }),
                (123_456, WireDelta::Thinking { thinking: value }),
            ] {
                let head: &[u8] = match delta {
                    WireDelta::Text { .. } => b",\"delta\":{\"type\":\"text_delta\",\"text\":",
                    WireDelta::InputJson { .. } => {
                        b",\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":"
                    }
                    _ => b",\"delta\":{\"type\":\"thinking_delta\",\"thinking\":",
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
    fn usage_split_alone_gives_the_cache_creation_total() {
        let u = serde_json::json!({"cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 4}});
        let mut usage = Usage::default();
        merge_usage(u.as_object().expect("object"), &mut usage);
        assert_eq!(usage.tokens.cache_creation_input_tokens, 7);
    }
}
