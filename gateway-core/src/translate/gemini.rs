//! Google Gemini `generateContent` (`POST /v1beta/models/{model}:generateContent`) and its
//! stream, `:streamGenerateContent?alt=sse`: SSE `data:` frames, each a partial
//! `GenerateContentResponse`, the last one with `finishReason` and `usageMetadata`, no end marker.
//!
//! Mapping choices:
//! - Field names are read in camelCase and snake_case (the google-genai Python SDK sends the
//!   latter) and written in camelCase.
//! - Tool calls: `functionCall.id` is used when present, otherwise ids are generated (`call_<n>`)
//!   and each `functionResponse` is paired with the earliest unanswered call of the same name.
//!   Encoding drops ids (noted): Gemini pairs calls and results by name and order.
//! - Thought signatures ride on ordinary parts (`text`, `functionCall`). A signature on a
//!   non-thought part decodes to an empty signed [`Block::Thinking`] just before that part's
//!   block, and is encoded back onto the part that follows it, so it returns where the model put
//!   it. Thought parts (`thought: true`) are thinking blocks with their own signature.
//! - Usage: `promptTokenCount` includes `cachedContentTokenCount` (subtracted on decode, added back
//!   on encode); `thoughtsTokenCount` is added to the output.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use bytes::BytesMut;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::ir::{
    self, Block, BlockStart, Delta, ImageSource, Message, Reasoning, ResponseFormat, Role, StopReason,
    StreamEvent, Tool, ToolChoice, Usage,
};
use super::lenient::{self, F, lenient_object};
use super::{Codec, ErrorInfo, Notes, StreamDecoder, StreamEncoder, TranslateError};
use crate::dialect::Dialect;
use crate::sse::SseDecoder;
use crate::usage::TokenUsage;

type Obj = Map<String, Value>;

/// The Google Gemini `generateContent` codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct GeminiCodec;

impl Codec for GeminiCodec {
    fn dialect(&self) -> Dialect {
        Dialect::Gemini
    }

    fn decode_request(&self, body: &[u8], notes: &mut Notes) -> Result<ir::Request, TranslateError> {
        let root = parse_object(body, "request")?;
        // The model and streaming live in the path; the pipeline fills them in.
        let mut req = ir::Request::default();

        match get(&root, "systemInstruction", "system_instruction") {
            None => {}
            // Not the documented shape, but unambiguous.
            Some(Value::String(text)) => req.system.push(text.clone()),
            Some(Value::Object(si)) => {
                for part in get_arr(si, "parts", "parts")?.unwrap_or(&Vec::new()) {
                    let part = as_obj(part, "systemInstruction.parts[]")?;
                    match get_str(part, "text", "text")? {
                        Some(text) => req.system.push(text.to_owned()),
                        None => notes.note("systemInstruction.parts[] (non-text part)"),
                    }
                }
            }
            Some(_) => return Err(bad("systemInstruction", "an object")),
        }

        let mut parts = PartDecoder::new("call_".into());
        for content in get_arr(&root, "contents", "contents")?.unwrap_or(&Vec::new()) {
            let content = as_obj(content, "contents[]")?;
            // Function results come as `user` (older clients said `function` or `tool`).
            let role = match get_str(content, "role", "role")? {
                Some("model") => Role::Assistant,
                _ => Role::User,
            };
            let mut blocks = Vec::new();
            if let Some(list) = get_arr(content, "parts", "parts")? {
                parts.decode(list, &mut blocks, notes)?;
            }
            if !blocks.is_empty() {
                req.messages.push(Message { role, content: blocks });
            }
        }

        decode_tools(&root, &mut req, notes)?;
        decode_tool_config(&root, &mut req, notes)?;
        if let Some(gc) = get_obj(&root, "generationConfig", "generation_config")? {
            decode_generation_config(gc, &mut req, notes)?;
        }
        for (camel, snake) in [
            ("safetySettings", "safety_settings"),
            ("cachedContent", "cached_content"),
            ("labels", "labels"),
            ("serviceTier", "service_tier"),
        ] {
            if get(&root, camel, snake).is_some() {
                notes.note(camel);
            }
        }
        Ok(req)
    }

    fn encode_request(&self, req: &ir::Request, notes: &mut Notes) -> Result<Vec<u8>, TranslateError> {
        let system_instruction = (!req.system.is_empty()).then(|| ContentOut {
            parts: req.system.iter().map(|text| PartOut { text: Some(text), ..PartOut::default() }).collect(),
            role: None,
        });

        let names = tool_names(req.messages.iter().flat_map(|m| &m.content));
        let mut contents = Vec::with_capacity(req.messages.len());
        for message in &req.messages {
            let parts = encode_parts(&message.content, &names, notes);
            // Gemini rejects contents without parts.
            if parts.is_empty() {
                continue;
            }
            let role = match message.role {
                Role::User => "user",
                Role::Assistant => "model",
            };
            contents.push(ContentOut { parts, role: Some(role) });
        }

        let tools = (!req.tools.is_empty())
            .then(|| [ToolsOut { function_declarations: req.tools.iter().map(encode_tool).collect() }]);
        let tool_config = req.tool_choice.as_ref().map(|choice| {
            let (mode, allowed) = match choice {
                ToolChoice::Auto => ("AUTO", None),
                ToolChoice::Required => ("ANY", None),
                ToolChoice::None => ("NONE", None),
                ToolChoice::Tool { name } => ("ANY", Some([name.as_str()])),
            };
            ToolConfigOut {
                function_calling_config: FunctionCallingOut { allowed_function_names: allowed, mode },
            }
        });
        if req.parallel_tool_calls == Some(false) {
            notes.note("parallel_tool_calls (Gemini has no switch for it)");
        }
        if req.user.is_some() {
            notes.note("user");
        }

        let config = encode_generation_config(req, notes);
        let body = RequestOut {
            contents,
            generation_config: (!config.is_empty()).then_some(config),
            system_instruction,
            tool_config,
            tools,
        };
        serde_json::to_vec(&body).map_err(|e| TranslateError::new(format!("encoding Gemini request: {e}")))
    }

    fn request_path(&self, req: &ir::Request) -> String {
        let model = req.model.trim_start_matches('/');
        // `models/x` and `tunedModels/x` are already resource names.
        let resource = if model.contains('/') { model.to_owned() } else { format!("models/{model}") };
        if req.stream {
            format!("/v1beta/{resource}:streamGenerateContent?alt=sse")
        } else {
            format!("/v1beta/{resource}:generateContent")
        }
    }

    fn decode_response(&self, body: &[u8]) -> Result<ir::Response, TranslateError> {
        let root = parse_object(body, "response")?;
        if let Some(error) = root.get("error").filter(|e| !e.is_null()) {
            let (_, message) = error_fields(error);
            return Err(TranslateError::new(format!("Gemini returned an error: {message}")));
        }
        let id = lenient_str(&root, "responseId", "response_id").to_owned();
        let model = lenient_str(&root, "modelVersion", "model_version").to_owned();
        // Only the first candidate is the answer; decode_response has no notes to say so.
        let mut scratch = Notes::default();
        let mut parts = PartDecoder::new(call_prefix(&id));
        let mut content = Vec::new();
        let mut finish = None;
        let candidate = get_arr(&root, "candidates", "candidates")?.and_then(|c| c.first());
        if let Some(candidate) = candidate {
            let candidate = as_obj(candidate, "candidates[]")?;
            if let Some(c) = get_obj(candidate, "content", "content")?
                && let Some(list) = get_arr(c, "parts", "parts")?
            {
                parts.decode(list, &mut content, &mut scratch)?;
            }
            finish = get_str(candidate, "finishReason", "finish_reason")?.map(decode_finish);
        } else if prompt_blocked(&root) {
            finish = Some(StopReason::Refusal);
        }
        let has_calls = content.iter().any(|b| matches!(b, Block::ToolUse { .. }));
        let stop_reason = settle_stop(finish.unwrap_or(StopReason::EndTurn), has_calls);
        let usage = match get(&root, "usageMetadata", "usage_metadata") {
            Some(Value::Object(u)) => decode_usage(u),
            _ => Usage::default(),
        };
        Ok(ir::Response { id, model, content, stop_reason, stop_sequence: None, usage })
    }

    fn encode_response(&self, resp: &ir::Response, notes: &mut Notes) -> Result<Vec<u8>, TranslateError> {
        let names = tool_names(&resp.content);
        let parts = encode_parts(&resp.content, &names, notes);
        if resp.stop_sequence.is_some() {
            notes.note("stop_sequence (Gemini reports only STOP)");
        }
        note_usage(&resp.usage, notes);
        let mut root = Obj::new();
        root.insert(
            "candidates".into(),
            json!([{
                "content": { "role": "model", "parts": serde_json::to_value(&parts).unwrap_or_default() },
                "finishReason": finish_name(resp.stop_reason),
                "index": 0,
            }]),
        );
        root.insert("usageMetadata".into(), encode_usage(&resp.usage));
        if !resp.model.is_empty() {
            root.insert("modelVersion".into(), Value::String(resp.model.clone()));
        }
        if !resp.id.is_empty() {
            root.insert("responseId".into(), Value::String(resp.id.clone()));
        }
        serde_json::to_vec(&root).map_err(|e| TranslateError::new(format!("encoding Gemini response: {e}")))
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(GeminiStreamDecoder::default())
    }

    fn stream_encoder(&self) -> Box<dyn StreamEncoder> {
        Box::new(GeminiStreamEncoder::default())
    }

    fn decode_error(&self, status: u16, body: &[u8]) -> ErrorInfo {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        // The non-SSE stream endpoint wraps everything, errors included, in a JSON array.
        let error = parsed.as_ref().and_then(|v| match v {
            Value::Array(items) => items.first().and_then(|i| i.get("error")),
            other => other.get("error"),
        });
        let (kind, message) = match error {
            Some(error) => {
                let (gstatus, message) = error_fields(error);
                (gstatus.and_then(kind_for_status).unwrap_or_else(|| kind_for_http(status)), message)
            }
            None => (kind_for_http(status), String::from_utf8_lossy(body).trim().to_owned()),
        };
        let message = if message.is_empty() { format!("upstream answered {status}") } else { message };
        ErrorInfo { status, kind: kind.to_owned(), message }
    }

    fn encode_error(&self, error: &ErrorInfo) -> Vec<u8> {
        let status = status_for_kind(&error.kind).map_or_else(|| status_for_http(error.status), |(_, s)| s);
        let body = json!({ "error": { "code": error.status, "message": error.message, "status": status } });
        body.to_string().into_bytes()
    }
}

// ---------------------------------------------------------------------------------------------
// Field access: lenient about unknown fields and spelling, strict about the types we rely on.

/// A field by its camelCase or snake_case name; `null` counts as absent.
fn get<'a>(obj: &'a Obj, camel: &str, snake: &str) -> Option<&'a Value> {
    obj.get(camel).or_else(|| obj.get(snake)).filter(|v| !v.is_null())
}

fn bad(field: &str, what: &str) -> TranslateError {
    TranslateError::new(format!("Gemini field `{field}` must be {what}"))
}

fn parse_object(body: &[u8], what: &str) -> Result<Obj, TranslateError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(TranslateError::new(format!("Gemini {what} must be a JSON object"))),
        Err(e) => Err(TranslateError::new(format!("Gemini {what} is not valid JSON: {e}"))),
    }
}

fn as_obj<'a>(value: &'a Value, field: &str) -> Result<&'a Obj, TranslateError> {
    value.as_object().ok_or_else(|| bad(field, "an object"))
}

fn get_obj<'a>(obj: &'a Obj, camel: &str, snake: &str) -> Result<Option<&'a Obj>, TranslateError> {
    get(obj, camel, snake).map(|v| as_obj(v, camel)).transpose()
}

fn get_arr<'a>(obj: &'a Obj, camel: &str, snake: &str) -> Result<Option<&'a Vec<Value>>, TranslateError> {
    get(obj, camel, snake).map(|v| v.as_array().ok_or_else(|| bad(camel, "an array"))).transpose()
}

fn get_str<'a>(obj: &'a Obj, camel: &str, snake: &str) -> Result<Option<&'a str>, TranslateError> {
    get(obj, camel, snake).map(|v| v.as_str().ok_or_else(|| bad(camel, "a string"))).transpose()
}

fn get_bool(obj: &Obj, camel: &str, snake: &str) -> Result<Option<bool>, TranslateError> {
    get(obj, camel, snake).map(|v| v.as_bool().ok_or_else(|| bad(camel, "a boolean"))).transpose()
}

fn get_f64(obj: &Obj, camel: &str, snake: &str) -> Result<Option<f64>, TranslateError> {
    get(obj, camel, snake).map(|v| v.as_f64().ok_or_else(|| bad(camel, "a number"))).transpose()
}

/// An integer; proto3 JSON also allows numeric strings, and the Python SDK sends `top_k` as a float.
fn get_i64(obj: &Obj, camel: &str, snake: &str) -> Result<Option<i64>, TranslateError> {
    let Some(value) = get(obj, camel, snake) else { return Ok(None) };
    let parsed = match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64().filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.map(Some).ok_or_else(|| bad(camel, "an integer"))
}

fn get_u64(obj: &Obj, camel: &str, snake: &str) -> Result<Option<u64>, TranslateError> {
    get_i64(obj, camel, snake)?
        .map(|n| u64::try_from(n).map_err(|_| bad(camel, "a non-negative integer")))
        .transpose()
}

fn get_strings(obj: &Obj, camel: &str, snake: &str) -> Result<Vec<String>, TranslateError> {
    let Some(items) = get_arr(obj, camel, snake)? else { return Ok(Vec::new()) };
    items
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| bad(camel, "an array of strings")))
        .collect()
}

/// A string field where a wrong type is not worth failing a response for.
fn lenient_str<'a>(obj: &'a Obj, camel: &str, snake: &str) -> &'a str {
    get(obj, camel, snake).and_then(Value::as_str).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Parts ↔ blocks.

/// Turns parts into blocks across a whole conversation, pairing calls and their results.
struct PartDecoder {
    id_prefix: String,
    next_id: usize,
    /// Unanswered call ids by function name, oldest first.
    open_calls: HashMap<String, VecDeque<String>>,
}

impl PartDecoder {
    fn new(id_prefix: String) -> Self {
        Self { id_prefix, next_id: 0, open_calls: HashMap::new() }
    }

    fn fresh_id(&mut self) -> String {
        let id = format!("{}{}", self.id_prefix, self.next_id);
        self.next_id += 1;
        id
    }

    fn call_id(&mut self, name: &str, given: Option<&str>) -> String {
        let id = match given.filter(|id| !id.is_empty()) {
            Some(id) => id.to_owned(),
            None => self.fresh_id(),
        };
        self.open_calls.entry(name.to_owned()).or_default().push_back(id.clone());
        id
    }

    fn result_id(&mut self, name: &str, given: Option<&str>) -> String {
        let queue = self.open_calls.get_mut(name);
        if let Some(id) = given.filter(|id| !id.is_empty()) {
            if let Some(queue) = queue {
                queue.retain(|open| open != id);
            }
            return id.to_owned();
        }
        match queue.and_then(VecDeque::pop_front) {
            Some(id) => id,
            // A result without a call still needs an id of its own.
            None => self.fresh_id(),
        }
    }

    fn decode(
        &mut self,
        parts: &[Value],
        out: &mut Vec<Block>,
        notes: &mut Notes,
    ) -> Result<(), TranslateError> {
        for part in parts {
            self.part(as_obj(part, "parts[]")?, out, notes)?;
        }
        Ok(())
    }

    fn part(&mut self, part: &Obj, out: &mut Vec<Block>, notes: &mut Notes) -> Result<(), TranslateError> {
        let signature = get_str(part, "thoughtSignature", "thought_signature")?.map(str::to_owned);
        if get_bool(part, "thought", "thought")?.unwrap_or(false) {
            let text = get_str(part, "text", "text")?.unwrap_or_default();
            if !text.is_empty() || signature.is_some() {
                out.push(Block::Thinking { text: text.to_owned(), signature });
            }
            return Ok(());
        }
        let block = if let Some(text) = get_str(part, "text", "text")? {
            if text.is_empty() {
                // Gemini 3 may end with an empty text part that only carries a signature.
                if let Some(signature) = signature {
                    out.push(Block::Thinking { text: String::new(), signature: Some(signature) });
                }
                return Ok(());
            }
            Block::Text { text: text.to_owned() }
        } else if let Some(blob) = get_obj(part, "inlineData", "inline_data")? {
            inline_image(blob, notes)?
        } else if let Some(file) = get_obj(part, "fileData", "file_data")? {
            file_image(file, notes)?
        } else if let Some(call) = get_obj(part, "functionCall", "function_call")? {
            let name = get_str(call, "name", "name")?.unwrap_or_default().to_owned();
            let input = get(call, "args", "args").cloned().unwrap_or_else(|| json!({}));
            let id = self.call_id(&name, get_str(call, "id", "id")?);
            Block::ToolUse { id, name, input }
        } else if let Some(result) = get_obj(part, "functionResponse", "function_response")? {
            self.tool_result(result, notes)?
        } else {
            for (camel, snake) in [
                ("executableCode", "executable_code"),
                ("codeExecutionResult", "code_execution_result"),
                ("toolCall", "tool_call"),
                ("toolResponse", "tool_response"),
            ] {
                if get(part, camel, snake).is_some() {
                    notes.note(format!("contents[].parts[].{camel}"));
                }
            }
            // A part that is only a signature keeps it.
            if let Some(signature) = signature {
                out.push(Block::Thinking { text: String::new(), signature: Some(signature) });
            }
            return Ok(());
        };
        if get(part, "videoMetadata", "video_metadata").is_some() {
            notes.note("contents[].parts[].videoMetadata");
        }
        if let Some(signature) = signature {
            out.push(Block::Thinking { text: String::new(), signature: Some(signature) });
        }
        out.push(block);
        Ok(())
    }

    fn tool_result(&mut self, result: &Obj, notes: &mut Notes) -> Result<Block, TranslateError> {
        let name = get_str(result, "name", "name")?.unwrap_or_default();
        let tool_use_id = self.result_id(name, get_str(result, "id", "id")?);
        let (mut content, is_error) = match get_obj(result, "response", "response")? {
            Some(response) => response_content(response),
            None => (Vec::new(), false),
        };
        for part in get_arr(result, "parts", "parts")?.unwrap_or(&Vec::new()) {
            let part = as_obj(part, "functionResponse.parts[]")?;
            if let Some(blob) = get_obj(part, "inlineData", "inline_data")? {
                content.push(inline_image(blob, notes)?);
            } else if let Some(file) = get_obj(part, "fileData", "file_data")? {
                content.push(file_image(file, notes)?);
            }
        }
        Ok(Block::ToolResult { tool_use_id, content, is_error })
    }
}

/// The result text of a `functionResponse.response`: the documented `output` / `error` keys
/// unwrapped, any other object kept whole as JSON text.
fn response_content(response: &Obj) -> (Vec<Block>, bool) {
    let only = |key: &str| response.len() == 1 && response.contains_key(key);
    let (value, is_error) = match (response.get("output"), response.get("error")) {
        (Some(output), _) if only("output") => (output, false),
        (_, Some(error)) if only("error") => (error, true),
        _ if response.is_empty() => return (Vec::new(), false),
        _ => return (vec![Block::Text { text: Value::Object(response.clone()).to_string() }], false),
    };
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let content = if text.is_empty() { Vec::new() } else { vec![Block::Text { text }] };
    (content, is_error)
}

fn inline_image(blob: &Obj, notes: &mut Notes) -> Result<Block, TranslateError> {
    let media_type = get_str(blob, "mimeType", "mime_type")?.unwrap_or_default().to_owned();
    let data = get_str(blob, "data", "data")?.unwrap_or_default().to_owned();
    if !media_type.starts_with("image/") {
        notes.note("inlineData.mimeType (non-image media carried as an image block)");
    }
    Ok(Block::Image { source: ImageSource::Base64 { media_type, data } })
}

fn file_image(file: &Obj, notes: &mut Notes) -> Result<Block, TranslateError> {
    let url = get_str(file, "fileUri", "file_uri")?.unwrap_or_default().to_owned();
    if let Some(mime) = get_str(file, "mimeType", "mime_type")? {
        // The IR keeps only the URL; say so when the type cannot be told from it again.
        if guess_mime(&url) != Some(mime) {
            notes.note("fileData.mimeType (not implied by the URI, which is all the IR keeps)");
        }
        if !mime.starts_with("image/") {
            notes.note("fileData.mimeType (non-image media carried as an image block)");
        }
    }
    Ok(Block::Image { source: ImageSource::Url { url } })
}

/// The media type a URL's extension implies.
fn guess_mime(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let ext = path.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase())?;
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

/// Tool names by call id, to name `functionResponse`s.
fn tool_names<'a>(blocks: impl IntoIterator<Item = &'a Block>) -> HashMap<&'a str, &'a str> {
    blocks
        .into_iter()
        .filter_map(|b| match b {
            Block::ToolUse { id, name, .. } => Some((id.as_str(), name.as_str())),
            _ => None,
        })
        .collect()
}

/// Blocks a pending thought signature can ride on (those that become a non-thought part).
fn carries_signature(block: &Block) -> bool {
    match block {
        Block::Text { text } => !text.is_empty(),
        Block::Image { .. } | Block::ToolUse { .. } | Block::ToolResult { .. } => true,
        Block::Thinking { .. } | Block::RedactedThinking { .. } => false,
    }
}

/// A signature with no part to ride on: an empty text part, as Gemini itself sends it.
fn signature_part(signature: &str) -> Value {
    json!({ "text": "", "thoughtSignature": signature })
}

/// The signature of a thought whose text was already streamed.
fn thought_signature_part(signature: &str) -> Value {
    json!({ "text": "", "thought": true, "thoughtSignature": signature })
}

// Request bodies (and response parts) are written from typed structs borrowing the IR. Their
// fields are declared in key order: the bodies are byte for byte what serializing a `Value`
// (sorted keys) gave.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestOut<'a> {
    contents: Vec<ContentOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation_config: Option<GenerationConfigOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<ContentOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfigOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<[ToolsOut<'a>; 1]>,
}

#[derive(Serialize)]
struct ContentOut<'a> {
    parts: Vec<PartOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
}

/// A part; only the fields of its kind are set.
#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct PartOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    file_data: Option<FileDataOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_response: Option<FunctionResponseOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inline_data: Option<InlineDataOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<&'a str>,
}

impl<'a> PartOut<'a> {
    /// A signature with no part to ride on: an empty text part, as Gemini itself sends it.
    fn signature(signature: &'a str) -> Self {
        Self { text: Some(""), thought_signature: Some(signature), ..Self::default() }
    }

    fn inline(mime_type: &'a str, data: &'a str) -> Self {
        Self { inline_data: Some(InlineDataOut { data, mime_type }), ..Self::default() }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileDataOut<'a> {
    file_uri: &'a str,
    mime_type: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InlineDataOut<'a> {
    data: &'a str,
    mime_type: &'a str,
}

#[derive(Serialize)]
struct FunctionCallOut<'a> {
    args: Cow<'a, Value>,
    name: &'a str,
}

#[derive(Serialize)]
struct FunctionResponseOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    parts: Vec<PartOut<'a>>,
    response: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolsOut<'a> {
    function_declarations: Vec<FunctionDeclarationOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclarationOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters_json_schema: Option<&'a Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfigOut<'a> {
    function_calling_config: FunctionCallingOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<[&'a str; 1]>,
    mode: &'static str,
}

#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfigOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfigOut>,
    #[serde(rename = "topK", skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(rename = "topP", skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
}

impl GenerationConfigOut<'_> {
    fn is_empty(&self) -> bool {
        self.max_output_tokens.is_none()
            && self.response_json_schema.is_none()
            && self.response_mime_type.is_none()
            && self.stop_sequences.is_none()
            && self.temperature.is_none()
            && self.thinking_config.is_none()
            && self.top_k.is_none()
            && self.top_p.is_none()
    }
}

#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfigOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    include_thoughts: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_budget: Option<serde_json::Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_level: Option<&'static str>,
}

impl ThinkingConfigOut {
    fn is_empty(&self) -> bool {
        self.include_thoughts.is_none() && self.thinking_budget.is_none() && self.thinking_level.is_none()
    }
}

fn encode_parts<'a>(
    blocks: &'a [Block],
    names: &HashMap<&str, &'a str>,
    notes: &mut Notes,
) -> Vec<PartOut<'a>> {
    let mut parts = Vec::new();
    let mut pending: Option<&str> = None;
    for (i, block) in blocks.iter().enumerate() {
        let mut part = match block {
            Block::Thinking { text, signature } if text.is_empty() => {
                let Some(signature) = signature else { continue };
                if let Some(earlier) = pending.take() {
                    parts.push(PartOut::signature(earlier));
                }
                // An empty signed block stands for the signature of the part after it.
                if blocks.get(i + 1).is_some_and(carries_signature) {
                    pending = Some(signature);
                } else {
                    parts.push(PartOut::signature(signature));
                }
                continue;
            }
            Block::Thinking { text, signature } => {
                parts.push(PartOut {
                    text: Some(text),
                    thought: Some(true),
                    thought_signature: signature.as_deref(),
                    ..PartOut::default()
                });
                continue;
            }
            Block::RedactedThinking { .. } => {
                notes.note("redacted_thinking (Gemini has no encrypted reasoning)");
                continue;
            }
            Block::Text { text } => {
                if text.is_empty() {
                    continue;
                }
                PartOut { text: Some(text), ..PartOut::default() }
            }
            Block::Image { source } => image_part(source, notes),
            Block::ToolUse { name, input, .. } => {
                notes.note("tool_use.id (Gemini pairs calls and results by name and order)");
                PartOut {
                    function_call: Some(FunctionCallOut { args: call_args(input, notes), name }),
                    ..PartOut::default()
                }
            }
            Block::ToolResult { tool_use_id, content, is_error } => {
                notes.note("tool_use.id (Gemini pairs calls and results by name and order)");
                let name = match names.get(tool_use_id.as_str()) {
                    Some(name) => *name,
                    None => {
                        notes.note("tool_result without a matching tool_use (its id is sent as the name)");
                        tool_use_id.as_str()
                    }
                };
                function_response(name, content, *is_error, notes)
            }
        };
        if let Some(signature) = pending.take() {
            part.thought_signature = Some(signature);
        }
        parts.push(part);
    }
    if let Some(signature) = pending {
        parts.push(PartOut::signature(signature));
    }
    parts
}

fn call_args<'a>(input: &'a Value, notes: &mut Notes) -> Cow<'a, Value> {
    match input {
        Value::Object(_) => Cow::Borrowed(input),
        Value::Null => Cow::Owned(json!({})),
        other => {
            notes.note("tool_use.input (not a JSON object; wrapped as {\"input\": ...})");
            Cow::Owned(json!({ "input": other }))
        }
    }
}

fn image_part<'a>(source: &'a ImageSource, notes: &mut Notes) -> PartOut<'a> {
    match source {
        ImageSource::Base64 { media_type, data } => PartOut::inline(media_type, data),
        ImageSource::Url { url } => {
            if let Some((media_type, data)) = parse_data_url(url) {
                return PartOut::inline(media_type, data);
            }
            let mime_type = guess_mime(url).unwrap_or_else(|| {
                notes.note("image url (mimeType guessed as image/jpeg)");
                "image/jpeg"
            });
            PartOut { file_data: Some(FileDataOut { file_uri: url, mime_type }), ..PartOut::default() }
        }
    }
}

/// `data:<type>;base64,<data>` → (type, data).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

fn function_response<'a>(
    name: &'a str,
    content: &'a [Block],
    is_error: bool,
    notes: &mut Notes,
) -> PartOut<'a> {
    let texts: Vec<&str> = content
        .iter()
        .filter_map(|b| match b {
            Block::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    if texts.len() > 1 {
        notes.note("tool_result.content (several text blocks joined with newlines)");
    }
    let text = texts.join("\n");
    let response = if is_error {
        json!({ "error": text })
    } else if text.is_empty() {
        json!({})
    } else {
        // A JSON object result goes in as itself, unless it would read as an output/error wrapper.
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(o))
                if !o.is_empty()
                    && !(o.len() == 1 && (o.contains_key("output") || o.contains_key("error"))) =>
            {
                Value::Object(o)
            }
            _ => json!({ "output": text }),
        }
    };
    let mut media = Vec::new();
    for block in content {
        match block {
            Block::Text { .. } => {}
            Block::Image { source: ImageSource::Base64 { media_type, data } } => {
                media.push(PartOut::inline(media_type, data));
            }
            Block::Image { source: ImageSource::Url { url } } => match parse_data_url(url) {
                Some((media_type, data)) => media.push(PartOut::inline(media_type, data)),
                None => notes.note("tool_result image url (function responses take inline data only)"),
            },
            _ => notes.note("tool_result.content (non-text, non-image block)"),
        }
    }
    PartOut {
        function_response: Some(FunctionResponseOut { name, parts: media, response }),
        ..PartOut::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Tools and configuration.

fn decode_tools(root: &Obj, req: &mut ir::Request, notes: &mut Notes) -> Result<(), TranslateError> {
    for tool in get_arr(root, "tools", "tools")?.unwrap_or(&Vec::new()) {
        let tool = as_obj(tool, "tools[]")?;
        for key in tool.keys() {
            if key != "functionDeclarations" && key != "function_declarations" {
                notes.note(format!("tools[].{key}"));
            }
        }
        for decl in get_arr(tool, "functionDeclarations", "function_declarations")?.unwrap_or(&Vec::new()) {
            let decl = as_obj(decl, "functionDeclarations[]")?;
            let name = get_str(decl, "name", "name")?
                .ok_or_else(|| bad("functionDeclarations[].name", "a string"))?;
            let description = get_str(decl, "description", "description")?.map(str::to_owned);
            let parameters = if let Some(schema) = get(decl, "parametersJsonSchema", "parameters_json_schema")
            {
                schema.clone()
            } else if let Some(schema) = get(decl, "parameters", "parameters") {
                openapi_to_json_schema(schema)
            } else {
                json!({ "type": "object", "properties": {} })
            };
            for (camel, snake) in [
                ("response", "response"),
                ("responseJsonSchema", "response_json_schema"),
                ("behavior", "behavior"),
            ] {
                if get(decl, camel, snake).is_some() {
                    notes.note(format!("functionDeclarations[].{camel}"));
                }
            }
            req.tools.push(Tool { name: name.to_owned(), description, parameters });
        }
    }
    Ok(())
}

fn encode_tool(tool: &Tool) -> FunctionDeclarationOut<'_> {
    FunctionDeclarationOut {
        description: tool.description.as_deref(),
        name: &tool.name,
        // JSON Schema as is: `parameters` takes only an OpenAPI subset that real tool schemas exceed.
        parameters_json_schema: (!tool.parameters.is_null()).then_some(&tool.parameters),
    }
}

fn decode_tool_config(root: &Obj, req: &mut ir::Request, notes: &mut Notes) -> Result<(), TranslateError> {
    let Some(config) = get_obj(root, "toolConfig", "tool_config")? else { return Ok(()) };
    for key in config.keys() {
        if key != "functionCallingConfig" && key != "function_calling_config" {
            notes.note(format!("toolConfig.{key}"));
        }
    }
    let Some(fcc) = get_obj(config, "functionCallingConfig", "function_calling_config")? else {
        return Ok(());
    };
    let allowed = get_strings(fcc, "allowedFunctionNames", "allowed_function_names")?;
    let mode = get_str(fcc, "mode", "mode")?.map(str::to_ascii_uppercase);
    req.tool_choice = match mode.as_deref() {
        Some("ANY") if allowed.len() == 1 => {
            Some(ToolChoice::Tool { name: allowed.into_iter().next().unwrap_or_default() })
        }
        Some("ANY") => {
            if !allowed.is_empty() {
                notes.note("functionCallingConfig.allowedFunctionNames (several names: any tool required)");
            }
            Some(ToolChoice::Required)
        }
        Some("NONE") => Some(ToolChoice::None),
        Some(mode @ ("AUTO" | "VALIDATED")) => {
            if mode == "VALIDATED" {
                notes.note("functionCallingConfig.mode VALIDATED (carried as auto)");
            }
            if !allowed.is_empty() {
                notes.note("functionCallingConfig.allowedFunctionNames");
            }
            Some(ToolChoice::Auto)
        }
        _ => None,
    };
    Ok(())
}

fn decode_generation_config(
    gc: &Obj,
    req: &mut ir::Request,
    notes: &mut Notes,
) -> Result<(), TranslateError> {
    req.max_tokens = get_u64(gc, "maxOutputTokens", "max_output_tokens")?;
    req.temperature = get_f64(gc, "temperature", "temperature")?;
    req.top_p = get_f64(gc, "topP", "top_p")?;
    req.top_k = get_u64(gc, "topK", "top_k")?;
    req.stop = get_strings(gc, "stopSequences", "stop_sequences")?;
    if get_i64(gc, "candidateCount", "candidate_count")?.is_some_and(|n| n > 1) {
        notes.note("generationConfig.candidateCount (only one candidate is carried)");
    }
    for (camel, snake) in [
        ("presencePenalty", "presence_penalty"),
        ("frequencyPenalty", "frequency_penalty"),
        ("seed", "seed"),
        ("responseLogprobs", "response_logprobs"),
        ("logprobs", "logprobs"),
        ("responseModalities", "response_modalities"),
        ("speechConfig", "speech_config"),
        ("imageConfig", "image_config"),
        ("mediaResolution", "media_resolution"),
        ("enableEnhancedCivicAnswers", "enable_enhanced_civic_answers"),
    ] {
        if get(gc, camel, snake).is_some() {
            notes.note(format!("generationConfig.{camel}"));
        }
    }

    let mime = get_str(gc, "responseMimeType", "response_mime_type")?;
    let json_schema = get(gc, "responseJsonSchema", "response_json_schema")
        .or_else(|| get(gc, "_responseJsonSchema", "_response_json_schema"));
    let schema = get(gc, "responseSchema", "response_schema");
    match mime {
        Some(m) if m.eq_ignore_ascii_case("application/json") => {
            req.response_format = Some(match (json_schema, schema) {
                (Some(s), _) => ResponseFormat::JsonSchema { name: None, schema: s.clone(), strict: None },
                (None, Some(s)) => {
                    ResponseFormat::JsonSchema { name: None, schema: openapi_to_json_schema(s), strict: None }
                }
                (None, None) => ResponseFormat::JsonObject,
            });
        }
        Some(m) if !m.eq_ignore_ascii_case("text/plain") => notes.note("generationConfig.responseMimeType"),
        _ => {
            if json_schema.or(schema).is_some() {
                notes.note("generationConfig.responseSchema (without responseMimeType application/json)");
            }
        }
    }

    if let Some(tc) = get_obj(gc, "thinkingConfig", "thinking_config")? {
        let mut reasoning = Reasoning::default();
        let mut any = false;
        // -1 asks for dynamic thinking, the models' default: nothing to carry.
        match get_i64(tc, "thinkingBudget", "thinking_budget")? {
            Some(0) => {
                reasoning.disabled = true;
                any = true;
            }
            Some(budget) if budget > 0 => {
                reasoning.budget_tokens = u64::try_from(budget).ok();
                any = true;
            }
            _ => {}
        }
        if let Some(level) = get_str(tc, "thinkingLevel", "thinking_level")? {
            let level = level.to_ascii_lowercase();
            if level != "thinking_level_unspecified" {
                reasoning.effort = Some(level);
                any = true;
            }
        }
        // Returned thoughts are summaries, hence the Responses-style summary setting.
        if get_bool(tc, "includeThoughts", "include_thoughts")? == Some(true) {
            reasoning.summary = Some("auto".into());
            any = true;
        }
        if any {
            req.reasoning = Some(reasoning);
        }
    }
    Ok(())
}

fn encode_generation_config<'a>(req: &'a ir::Request, notes: &mut Notes) -> GenerationConfigOut<'a> {
    let mut gc = GenerationConfigOut {
        max_output_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop_sequences: (!req.stop.is_empty()).then_some(req.stop.as_slice()),
        ..GenerationConfigOut::default()
    };
    match &req.response_format {
        None => {}
        Some(ResponseFormat::JsonObject) => gc.response_mime_type = Some("application/json"),
        Some(ResponseFormat::JsonSchema { name, schema, strict }) => {
            gc.response_mime_type = Some("application/json");
            gc.response_json_schema = Some(schema);
            if name.is_some() {
                notes.note("response_format.json_schema.name");
            }
            if strict.is_some() {
                notes.note("response_format.json_schema.strict");
            }
        }
    }
    if let Some(reasoning) = &req.reasoning {
        let tc = encode_thinking(reasoning, &req.model, notes);
        if !tc.is_empty() {
            gc.thinking_config = Some(tc);
        }
    }
    gc
}

fn encode_thinking(r: &Reasoning, model: &str, notes: &mut Notes) -> ThinkingConfigOut {
    let mut tc = ThinkingConfigOut::default();
    if r.disabled {
        tc.thinking_budget = Some(0.into());
        return tc;
    }
    if let Some(budget) = r.budget_tokens {
        tc.thinking_budget = Some(budget.into());
        if r.effort.is_some() {
            notes.note("reasoning.effort (thinkingBudget sent instead)");
        }
    } else if let Some(effort) = &r.effort {
        let effort = effort.to_ascii_lowercase();
        // Gemini 2.x knows only budgets; sending thinkingLevel there is a 400.
        let gemini_2 = model.trim_start_matches("models/").starts_with("gemini-2");
        match (effort.as_str(), gemini_2) {
            ("none", _) => tc.thinking_budget = Some(0.into()),
            (level, true) => {
                let budget: i64 = match level {
                    "minimal" => 512,
                    "low" => 1024,
                    "medium" => 8192,
                    "high" | "xhigh" | "max" => 24576,
                    _ => -1,
                };
                tc.thinking_budget = Some(budget.into());
                notes.note("reasoning.effort (approximated as thinkingBudget)");
            }
            ("minimal", false) => tc.thinking_level = Some("minimal"),
            ("low", false) => tc.thinking_level = Some("low"),
            ("medium", false) => tc.thinking_level = Some("medium"),
            ("high", false) => tc.thinking_level = Some("high"),
            ("xhigh" | "max", false) => {
                tc.thinking_level = Some("high");
                notes.note("reasoning.effort (capped at thinkingLevel high)");
            }
            (_, false) => notes.note("reasoning.effort (no matching thinkingLevel)"),
        }
    }
    if r.summary.as_deref().is_some_and(|s| s != "none") {
        tc.include_thoughts = Some(true);
    }
    tc
}

/// Gemini's OpenAPI-subset `Schema` as JSON Schema: lowercase type names, `nullable` as a
/// `"null"` type. Only schema positions are converted; property names and literal values
/// (`enum`, `default`, `example`) are left alone.
fn openapi_to_json_schema(schema: &Value) -> Value {
    let Value::Object(obj) = schema else { return schema.clone() };
    let mut out = Obj::new();
    for (key, value) in obj {
        let converted = match (key.as_str(), value) {
            ("type", Value::String(t)) => Value::String(t.to_ascii_lowercase()),
            ("nullable", Value::Bool(_)) => continue,
            ("properties" | "$defs" | "definitions" | "patternProperties", Value::Object(map)) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), openapi_to_json_schema(v))).collect())
            }
            ("items" | "additionalProperties" | "not", _) => openapi_to_json_schema(value),
            ("anyOf" | "oneOf" | "allOf" | "prefixItems", Value::Array(items)) => {
                Value::Array(items.iter().map(openapi_to_json_schema).collect())
            }
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    if obj.get("nullable") == Some(&Value::Bool(true))
        && let Some(Value::String(t)) = out.get("type").cloned()
    {
        out.insert("type".into(), json!([t, "null"]));
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// Stop reasons, usage, errors.

fn decode_finish(reason: &str) -> StopReason {
    match reason {
        "MAX_TOKENS" => StopReason::MaxTokens,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "LANGUAGE"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => StopReason::Refusal,
        // STOP (also for a matched stop sequence, which Gemini does not name), OTHER,
        // MALFORMED_FUNCTION_CALL and future values.
        _ => StopReason::EndTurn,
    }
}

/// Gemini says STOP after function calls; the IR says why.
fn settle_stop(reason: StopReason, has_calls: bool) -> StopReason {
    if reason == StopReason::EndTurn && has_calls { StopReason::ToolUse } else { reason }
}

fn finish_name(reason: StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn | StopReason::StopSequence | StopReason::ToolUse => "STOP",
        StopReason::MaxTokens => "MAX_TOKENS",
        StopReason::Refusal => "SAFETY",
    }
}

fn prompt_blocked(root: &Obj) -> bool {
    match get(root, "promptFeedback", "prompt_feedback") {
        Some(Value::Object(feedback)) => get(feedback, "blockReason", "block_reason").is_some(),
        _ => false,
    }
}

fn decode_usage(meta: &Obj) -> Usage {
    let count = |camel, snake| get(meta, camel, snake).and_then(Value::as_u64).unwrap_or(0);
    let prompt = count("promptTokenCount", "prompt_token_count");
    let cached = count("cachedContentTokenCount", "cached_content_token_count");
    let candidates = count("candidatesTokenCount", "candidates_token_count");
    let thoughts = count("thoughtsTokenCount", "thoughts_token_count");
    // Tool-use prompt tokens (e.g. search results) are input billed outside promptTokenCount.
    let tool_prompt = count("toolUsePromptTokenCount", "tool_use_prompt_token_count");
    Usage {
        tokens: TokenUsage {
            input_tokens: prompt.saturating_sub(cached).saturating_add(tool_prompt),
            output_tokens: candidates.saturating_add(thoughts),
            cache_read_input_tokens: cached,
            ..TokenUsage::default()
        },
        reasoning_tokens: thoughts,
    }
}

fn encode_usage(usage: &Usage) -> Value {
    let t = &usage.tokens;
    // Gemini has no cache writes in generateContent: they are prompt tokens like the rest.
    let prompt = t
        .input_tokens
        .saturating_add(t.cache_read_input_tokens)
        .saturating_add(t.cache_creation_input_tokens);
    let thoughts = usage.reasoning_tokens.min(t.output_tokens);
    let mut meta = Obj::new();
    meta.insert("promptTokenCount".into(), prompt.into());
    meta.insert("candidatesTokenCount".into(), (t.output_tokens - thoughts).into());
    if thoughts > 0 {
        meta.insert("thoughtsTokenCount".into(), thoughts.into());
    }
    if t.cache_read_input_tokens > 0 {
        meta.insert("cachedContentTokenCount".into(), t.cache_read_input_tokens.into());
    }
    meta.insert("totalTokenCount".into(), prompt.saturating_add(t.output_tokens).into());
    Value::Object(meta)
}

fn note_usage(usage: &Usage, notes: &mut Notes) {
    if usage.tokens.cache_creation_input_tokens > 0 {
        notes.note("usage.cache_creation_input_tokens (counted in promptTokenCount)");
    }
}

/// `(status, message)` of a Gemini `error` object.
fn error_fields(error: &Value) -> (Option<&str>, String) {
    let status = error.get("status").and_then(Value::as_str);
    let message = match error.get("message") {
        Some(Value::String(m)) => m.clone(),
        _ => match error {
            Value::String(m) => m.clone(),
            other => other.to_string(),
        },
    };
    (status, message)
}

fn kind_for_status(status: &str) -> Option<&'static str> {
    Some(match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => "invalid_request",
        "UNAUTHENTICATED" => "authentication",
        "PERMISSION_DENIED" => "permission",
        "NOT_FOUND" => "not_found",
        "RESOURCE_EXHAUSTED" => "rate_limit",
        "UNAVAILABLE" => "overloaded",
        "DEADLINE_EXCEEDED" => "timeout",
        "INTERNAL" | "UNKNOWN" | "DATA_LOSS" => "api_error",
        _ => return None,
    })
}

fn kind_for_http(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request",
        401 => "authentication",
        403 => "permission",
        404 => "not_found",
        413 => "request_too_large",
        429 => "rate_limit",
        503 | 529 => "overloaded",
        504 => "timeout",
        _ => "api_error",
    }
}

/// HTTP code and Google status name of an error kind.
fn status_for_kind(kind: &str) -> Option<(u16, &'static str)> {
    Some(match kind {
        "invalid_request" | "request_too_large" => (400, "INVALID_ARGUMENT"),
        "authentication" => (401, "UNAUTHENTICATED"),
        "permission" => (403, "PERMISSION_DENIED"),
        "not_found" => (404, "NOT_FOUND"),
        "rate_limit" => (429, "RESOURCE_EXHAUSTED"),
        "overloaded" => (503, "UNAVAILABLE"),
        "timeout" => (504, "DEADLINE_EXCEEDED"),
        "api_error" => (500, "INTERNAL"),
        _ => return None,
    })
}

fn status_for_http(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 | 529 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Prefix of call ids generated for one response; the response id keeps them unique across turns.
fn call_prefix(response_id: &str) -> String {
    let clean: String =
        response_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    if clean.is_empty() { "call_".into() } else { format!("call_{clean}_") }
}

// ---------------------------------------------------------------------------------------------
// Streams.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    Thinking { signed: bool },
}

/// Gemini SSE → canonical events. Each chunk's parts are increments; consecutive text (or
/// thought) parts grow one block, a `functionCall` is a whole block of its own.
#[derive(Default)]
struct GeminiStreamDecoder {
    sse: SseDecoder,
    state: DecodeState,
}

#[derive(Default)]
struct DecodeState {
    started: bool,
    /// An error arrived, or the stream was finished: nothing more is read.
    ended: bool,
    call_prefix: String,
    next_call: usize,
    next_index: usize,
    open: Option<(usize, OpenBlock)>,
    saw_call: bool,
    usage: Usage,
    finish: Option<StopReason>,
}

/// A field by its camelCase or snake_case name, as [`get`] finds it: the camelCase key wins
/// when present, even as `null`.
fn pick<'a, T>(camel: &'a F<T>, snake: &'a F<T>) -> &'a F<T> {
    if matches!(camel, F::Absent) { snake } else { camel }
}

/// [`get_str`] on a typed field.
fn str_field<'a>(
    camel: &'a F<Cow<'_, str>>,
    snake: &'a F<Cow<'_, str>>,
    name: &str,
) -> Result<Option<&'a str>, TranslateError> {
    match pick(camel, snake) {
        F::Absent | F::Null => Ok(None),
        F::Val(s) => Ok(Some(s)),
        F::Other => Err(bad(name, "a string")),
    }
}

lenient_object! {
    /// A stream chunk (a partial `GenerateContentResponse`) as the decoder reads it.
    struct ChunkIn<'de> {
        "error" => error: Value,
        "usageMetadata" => usage: UsageIn<'de>,
        "usage_metadata" => usage_snake: UsageIn<'de>,
        "responseId" => response_id: Cow<'de, str>,
        "response_id" => response_id_snake: Cow<'de, str>,
        "modelVersion" => model_version: Cow<'de, str>,
        "model_version" => model_version_snake: Cow<'de, str>,
        "candidates" => candidates: Vec<F<CandidateIn<'de>>>,
        "promptFeedback" => prompt_feedback: FeedbackIn<'de>,
        "prompt_feedback" => prompt_feedback_snake: FeedbackIn<'de>,
    }
}

lenient_object! {
    struct UsageIn<'de> {
        "promptTokenCount" => prompt: u64,
        "prompt_token_count" => prompt_snake: u64,
        "cachedContentTokenCount" => cached: u64,
        "cached_content_token_count" => cached_snake: u64,
        "candidatesTokenCount" => candidates: u64,
        "candidates_token_count" => candidates_snake: u64,
        "thoughtsTokenCount" => thoughts: u64,
        "thoughts_token_count" => thoughts_snake: u64,
        "toolUsePromptTokenCount" => tool_prompt: u64,
        "tool_use_prompt_token_count" => tool_prompt_snake: u64,
    }
}

impl UsageIn<'_> {
    /// [`decode_usage`] of the typed object.
    fn decode(&self) -> Usage {
        let count = |camel, snake| pick(camel, snake).u64().unwrap_or(0);
        let prompt = count(&self.prompt, &self.prompt_snake);
        let cached = count(&self.cached, &self.cached_snake);
        let candidates = count(&self.candidates, &self.candidates_snake);
        let thoughts = count(&self.thoughts, &self.thoughts_snake);
        let tool_prompt = count(&self.tool_prompt, &self.tool_prompt_snake);
        Usage {
            tokens: TokenUsage {
                input_tokens: prompt.saturating_sub(cached).saturating_add(tool_prompt),
                output_tokens: candidates.saturating_add(thoughts),
                cache_read_input_tokens: cached,
                ..TokenUsage::default()
            },
            reasoning_tokens: thoughts,
        }
    }
}

lenient_object! {
    struct FeedbackIn<'de> {
        "blockReason" => block_reason: lenient::Any,
        "block_reason" => block_reason_snake: lenient::Any,
    }
}

lenient_object! {
    struct CandidateIn<'de> {
        "content" => content: ContentIn<'de>,
        "finishReason" => finish_reason: Cow<'de, str>,
        "finish_reason" => finish_reason_snake: Cow<'de, str>,
    }
}

lenient_object! {
    struct ContentIn<'de> {
        "parts" => parts: Vec<F<PartIn<'de>>>,
    }
}

lenient_object! {
    struct PartIn<'de> {
        "thoughtSignature" => signature: Cow<'de, str>,
        "thought_signature" => signature_snake: Cow<'de, str>,
        "thought" => thought: bool,
        "text" => text: Cow<'de, str>,
        "functionCall" => call: CallIn<'de>,
        "function_call" => call_snake: CallIn<'de>,
    }
}

lenient_object! {
    struct CallIn<'de> {
        "name" => name: Cow<'de, str>,
        "id" => id: Cow<'de, str>,
        "args" => args: Value,
    }
}

impl DecodeState {
    fn begin(&mut self, block: BlockStart, out: &mut Vec<StreamEvent>) -> usize {
        let index = self.next_index;
        self.next_index += 1;
        out.push(StreamEvent::BlockStart { index, block });
        index
    }

    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some((index, _)) = self.open.take() {
            out.push(StreamEvent::BlockStop { index });
        }
    }

    /// A signature on a non-thought part: an empty signed thinking block before that part.
    fn carrier(&mut self, signature: &str, out: &mut Vec<StreamEvent>) {
        self.close(out);
        let index = self.begin(BlockStart::Thinking, out);
        out.push(StreamEvent::Delta { index, delta: Delta::Signature(signature.to_owned()) });
        out.push(StreamEvent::BlockStop { index });
    }

    fn frame(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let data = data.trim();
        if self.ended || data.is_empty() || data == "[DONE]" {
            return Ok(());
        }
        let chunk = match lenient::parse::<ChunkIn<'_>>(data) {
            Ok(F::Val(chunk)) => chunk,
            Ok(_) => return Err(TranslateError::new("Gemini stream chunk must be a JSON object")),
            Err(e) => return Err(TranslateError::new(format!("Gemini stream chunk is not valid JSON: {e}"))),
        };
        if let Some(error) = chunk.error.val() {
            let (status, message) = error_fields(error);
            let kind = status.and_then(kind_for_status).unwrap_or("api_error").to_owned();
            self.close(out);
            out.push(StreamEvent::Error { kind, message });
            self.ended = true;
            return Ok(());
        }
        let usage = pick(&chunk.usage, &chunk.usage_snake).val().map(UsageIn::decode);
        if !self.started {
            self.started = true;
            let lenient_str = |camel, snake| pick(camel, snake).str().unwrap_or_default().to_owned();
            let id = lenient_str(&chunk.response_id, &chunk.response_id_snake);
            self.call_prefix = call_prefix(&id);
            let model = lenient_str(&chunk.model_version, &chunk.model_version_snake);
            // Only the input side is final at the start.
            let mut start_usage = Usage::default();
            if let Some(u) = usage {
                start_usage.tokens.input_tokens = u.tokens.input_tokens;
                start_usage.tokens.cache_read_input_tokens = u.tokens.cache_read_input_tokens;
            }
            out.push(StreamEvent::Start { id, model, usage: start_usage });
        }
        if let Some(usage) = usage {
            self.usage = usage;
        }
        let candidate = match &chunk.candidates {
            F::Absent | F::Null => None,
            F::Val(candidates) => candidates.first(),
            F::Other => return Err(bad("candidates", "an array")),
        };
        match candidate {
            Some(candidate) => {
                let F::Val(candidate) = candidate else {
                    return Err(bad("candidates[]", "an object"));
                };
                match &candidate.content {
                    F::Absent | F::Null => {}
                    F::Val(content) => match &content.parts {
                        F::Absent | F::Null => {}
                        F::Val(parts) => {
                            for part in parts {
                                let F::Val(part) = part else {
                                    return Err(bad("parts[]", "an object"));
                                };
                                self.part(part, out)?;
                            }
                        }
                        F::Other => return Err(bad("parts", "an array")),
                    },
                    F::Other => return Err(bad("content", "an object")),
                }
                if let Some(reason) =
                    str_field(&candidate.finish_reason, &candidate.finish_reason_snake, "finishReason")?
                {
                    self.close(out);
                    self.finish = Some(decode_finish(reason));
                }
            }
            None if prompt_blocked_in(&chunk) => self.finish = Some(StopReason::Refusal),
            None => {}
        }
        Ok(())
    }

    fn part(&mut self, part: &PartIn<'_>, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let signature = str_field(&part.signature, &part.signature_snake, "thoughtSignature")?;
        let thought = match &part.thought {
            F::Absent | F::Null => false,
            F::Val(b) => *b,
            F::Other => return Err(bad("thought", "a boolean")),
        };
        if thought {
            let text = str_field(&part.text, &part.text, "text")?.unwrap_or_default();
            let index = match self.open {
                // A signed thought block is complete; new thought text starts another.
                Some((index, OpenBlock::Thinking { signed })) if !signed || text.is_empty() => index,
                _ => {
                    if text.is_empty() && signature.is_none() {
                        return Ok(());
                    }
                    self.close(out);
                    let index = self.begin(BlockStart::Thinking, out);
                    self.open = Some((index, OpenBlock::Thinking { signed: false }));
                    index
                }
            };
            if !text.is_empty() {
                out.push(StreamEvent::Delta { index, delta: Delta::Thinking(text.to_owned()) });
            }
            if let Some(signature) = signature {
                out.push(StreamEvent::Delta { index, delta: Delta::Signature(signature.to_owned()) });
                self.open = Some((index, OpenBlock::Thinking { signed: true }));
            }
            return Ok(());
        }
        if let Some(text) = str_field(&part.text, &part.text, "text")? {
            if let Some(signature) = signature {
                self.carrier(signature, out);
            }
            if text.is_empty() {
                return Ok(());
            }
            let index = match self.open {
                Some((index, OpenBlock::Text)) => index,
                _ => {
                    self.close(out);
                    let index = self.begin(BlockStart::Text, out);
                    self.open = Some((index, OpenBlock::Text));
                    index
                }
            };
            out.push(StreamEvent::Delta { index, delta: Delta::Text(text.to_owned()) });
            return Ok(());
        }
        let call = match pick(&part.call, &part.call_snake) {
            F::Absent | F::Null => None,
            F::Val(call) => Some(call),
            F::Other => return Err(bad("functionCall", "an object")),
        };
        if let Some(call) = call {
            self.close(out);
            if let Some(signature) = signature {
                self.carrier(signature, out);
            }
            let name = str_field(&call.name, &call.name, "name")?.unwrap_or_default().to_owned();
            let id = match str_field(&call.id, &call.id, "id")?.filter(|id| !id.is_empty()) {
                Some(id) => id.to_owned(),
                None => {
                    let id = format!("{}{}", self.call_prefix, self.next_call);
                    self.next_call += 1;
                    id
                }
            };
            let args = call.args.val().map_or_else(|| "{}".to_owned(), Value::to_string);
            let index = self.begin(BlockStart::ToolUse { id, name }, out);
            out.push(StreamEvent::Delta { index, delta: Delta::Json(args) });
            out.push(StreamEvent::BlockStop { index });
            self.saw_call = true;
            return Ok(());
        }
        // Media and code-execution parts have no stream event; a signature on them still counts.
        if let Some(signature) = signature {
            self.carrier(signature, out);
        }
        Ok(())
    }
}

/// [`prompt_blocked`] of a typed chunk.
fn prompt_blocked_in(chunk: &ChunkIn<'_>) -> bool {
    match pick(&chunk.prompt_feedback, &chunk.prompt_feedback_snake) {
        F::Val(feedback) => pick(&feedback.block_reason, &feedback.block_reason_snake).present(),
        _ => false,
    }
}

impl StreamDecoder for GeminiStreamDecoder {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let Self { sse, state } = self;
        // A malformed frame ends this push: the frames after it in the same chunk are dropped.
        let mut failed = None;
        let read = sse.push(chunk, |ev| {
            if failed.is_none()
                && let Err(e) = state.frame(&ev.data, out)
            {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        read.map_err(|e| TranslateError::new(e.to_string()))
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        let Self { sse, state } = self;
        let mut failed = false;
        // An unterminated tail that does not parse is a cut stream; the missing finish says so.
        sse.finish(|ev| {
            if !failed {
                failed = state.frame(&ev.data, out).is_err();
            }
        });
        if state.ended {
            return;
        }
        state.ended = true;
        // Gemini has no end marker: the finishReason chunk followed by the end of the body is one.
        if let Some(reason) = state.finish.take() {
            state.close(out);
            out.push(StreamEvent::Finish {
                stop_reason: settle_stop(reason, state.saw_call),
                stop_sequence: None,
                usage: state.usage,
            });
            out.push(StreamEvent::Stop);
        }
    }
}

#[derive(Debug)]
enum EncodedBlock {
    Text,
    Thinking { sent_text: bool },
    Tool { name: String, args: String },
}

/// Canonical events → Gemini SSE: one `data:` frame per increment, a function call as one frame
/// when its arguments are complete, a last frame with `finishReason` and `usageMetadata`.
#[derive(Default)]
struct GeminiStreamEncoder {
    id: String,
    model: String,
    /// Input usage known at the start, sent with the first frame as Gemini does.
    start_usage: Option<Usage>,
    blocks: Vec<(usize, EncodedBlock)>,
    /// The signature of an empty thinking block, waiting for the part it belongs to.
    pending_signature: Option<String>,
    done: bool,
}

impl GeminiStreamEncoder {
    fn frame(&self, value: &Value, out: &mut BytesMut) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(value.to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
    }

    fn chunk(&mut self, parts: Vec<Value>, end: Option<(StopReason, &Usage)>, out: &mut BytesMut) {
        let mut candidate = Obj::new();
        if !parts.is_empty() {
            candidate.insert("content".into(), json!({ "parts": parts, "role": "model" }));
        }
        if let Some((reason, _)) = end {
            candidate.insert("finishReason".into(), finish_name(reason).into());
        }
        candidate.insert("index".into(), 0.into());
        let mut root = Obj::new();
        root.insert("candidates".into(), json!([candidate]));
        let start_usage = self.start_usage.take();
        match (end, start_usage) {
            (Some((_, usage)), _) => {
                root.insert("usageMetadata".into(), encode_usage(usage));
            }
            (None, Some(usage)) => {
                root.insert("usageMetadata".into(), encode_usage(&usage));
            }
            (None, None) => {}
        }
        if !self.model.is_empty() {
            root.insert("modelVersion".into(), self.model.clone().into());
        }
        if !self.id.is_empty() {
            root.insert("responseId".into(), self.id.clone().into());
        }
        self.frame(&Value::Object(root), out);
    }

    /// Sends a waiting signature on its own, when no part follows that could carry it.
    fn flush_signature(&mut self, out: &mut BytesMut) {
        if let Some(signature) = self.pending_signature.take() {
            self.chunk(vec![signature_part(&signature)], None, out);
        }
    }

    /// A part with the waiting signature attached.
    fn signed(&mut self, mut part: Value) -> Value {
        if let (Some(signature), Value::Object(p)) = (self.pending_signature.take(), &mut part) {
            p.insert("thoughtSignature".into(), Value::String(signature));
        }
        part
    }

    fn block(&mut self, index: usize) -> Option<&mut EncodedBlock> {
        self.blocks.iter_mut().find(|(i, _)| *i == index).map(|(_, b)| b)
    }
}

impl StreamEncoder for GeminiStreamEncoder {
    fn encode(&mut self, event: &StreamEvent, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match event {
            StreamEvent::Start { id, model, usage } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
                // Cache writes are prompt tokens here: the first frame's promptTokenCount is the
                // whole prompt, as the last frame's is.
                let mut input = Usage::default();
                input.tokens.input_tokens = usage.tokens.input_tokens;
                input.tokens.cache_read_input_tokens = usage.tokens.cache_read_input_tokens;
                input.tokens.cache_creation_input_tokens = usage.tokens.cache_creation_input_tokens;
                self.start_usage = (!input.tokens.is_empty()).then_some(input);
            }
            StreamEvent::BlockStart { index, block } => {
                let block = match block {
                    BlockStart::Text => EncodedBlock::Text,
                    BlockStart::Thinking => EncodedBlock::Thinking { sent_text: false },
                    BlockStart::ToolUse { name, .. } => {
                        EncodedBlock::Tool { name: name.clone(), args: String::new() }
                    }
                };
                self.blocks.push((*index, block));
            }
            StreamEvent::Delta { index, delta } => match delta {
                Delta::Text(text) if !text.is_empty() => {
                    let Some(EncodedBlock::Text) = self.block(*index) else { return };
                    let part = self.signed(json!({ "text": text }));
                    self.chunk(vec![part], None, out);
                }
                Delta::Thinking(text) if !text.is_empty() => {
                    let Some(EncodedBlock::Thinking { sent_text }) = self.block(*index) else { return };
                    *sent_text = true;
                    self.flush_signature(out);
                    self.chunk(vec![json!({ "text": text, "thought": true })], None, out);
                }
                Delta::Json(piece) => {
                    if let Some(EncodedBlock::Tool { args, .. }) = self.block(*index) {
                        args.push_str(piece);
                    }
                }
                Delta::Signature(signature) => {
                    let Some(EncodedBlock::Thinking { sent_text }) = self.block(*index) else { return };
                    if *sent_text {
                        self.chunk(vec![thought_signature_part(signature)], None, out);
                    } else {
                        // Thinking with only a signature: it belongs on the next part, as Gemini sends it.
                        self.flush_signature(out);
                        self.pending_signature = Some(signature.clone());
                    }
                }
                Delta::Text(_) | Delta::Thinking(_) => {}
            },
            StreamEvent::BlockStop { index } => {
                let Some(pos) = self.blocks.iter().position(|(i, _)| i == index) else { return };
                let (_, block) = self.blocks.remove(pos);
                match block {
                    EncodedBlock::Tool { name, args } => {
                        let args = match serde_json::from_str::<Value>(&args) {
                            Ok(v @ Value::Object(_)) => v,
                            Ok(Value::Null) => json!({}),
                            Ok(other) => json!({ "input": other }),
                            Err(_) if args.trim().is_empty() => json!({}),
                            // Cut off (the stream is failing): a truncated call must not be run.
                            Err(_) => return,
                        };
                        let part = self.signed(json!({ "functionCall": { "name": name, "args": args } }));
                        self.chunk(vec![part], None, out);
                    }
                    EncodedBlock::Text | EncodedBlock::Thinking { .. } => {}
                }
            }
            StreamEvent::Finish { stop_reason, usage, .. } => {
                let parts =
                    self.pending_signature.take().map(|s| vec![signature_part(&s)]).unwrap_or_default();
                self.chunk(parts, Some((*stop_reason, usage)), out);
                self.done = true;
            }
            StreamEvent::Stop => {}
            StreamEvent::Error { kind, message } => {
                let (code, status) = status_for_kind(kind).unwrap_or((500, "INTERNAL"));
                let body = json!({ "error": { "code": code, "message": message, "status": status } });
                self.frame(&body, out);
                self.done = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_schema_becomes_json_schema() {
        let schema = json!({
            "type": "OBJECT",
            "properties": {
                "unit": { "type": "STRING", "enum": ["CELSIUS", "FAHRENHEIT"], "nullable": true },
                "type": { "type": "ARRAY", "items": { "type": "INTEGER" } }
            },
            "required": ["unit"]
        });
        assert_eq!(
            openapi_to_json_schema(&schema),
            json!({
                "type": "object",
                "properties": {
                    "unit": { "type": ["string", "null"], "enum": ["CELSIUS", "FAHRENHEIT"] },
                    "type": { "type": "array", "items": { "type": "integer" } }
                },
                "required": ["unit"]
            })
        );
    }

    #[test]
    fn mime_is_guessed_from_the_path_only() {
        assert_eq!(guess_mime("https://x.test/a/cat.PNG?sig=1.jpg"), Some("image/png"));
        assert_eq!(guess_mime("gs://bucket/files/abc"), None);
        assert_eq!(guess_mime(""), None);
    }

    #[test]
    fn call_prefix_keeps_ids_safe() {
        assert_eq!(call_prefix(""), "call_");
        assert_eq!(call_prefix("a b/c-d_e"), "call_abc-d_e_");
    }

    #[test]
    fn usage_round_trips_through_gemini_accounting() {
        let meta = json!({
            "promptTokenCount": 100, "cachedContentTokenCount": 40, "candidatesTokenCount": 20,
            "thoughtsTokenCount": 10, "totalTokenCount": 130
        });
        let usage = decode_usage(meta.as_object().expect("object"));
        assert_eq!(usage.tokens.input_tokens, 60);
        assert_eq!(usage.tokens.cache_read_input_tokens, 40);
        assert_eq!(usage.tokens.output_tokens, 30);
        assert_eq!(usage.reasoning_tokens, 10);
        assert_eq!(encode_usage(&usage), meta);
    }
}
