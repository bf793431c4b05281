//! The Google Gemini dialect: `models/{model}:generateContent`, `:streamGenerateContent`
//! (`?alt=sse` for SSE, else a streamed JSON array), `:countTokens` and the model list, under
//! `/v1beta/` and `/v1/`.
//!
//! Shapes follow the Gemini API reference: `GenerateContentResponse` with
//! `candidates[].content.parts[]`, `finishReason` and `usageMetadata`, and Google's error
//! envelope `{"error":{"code":..,"message":..,"status":..}}`. Requests are parsed leniently and
//! in both of the spellings the API accepts (`functionDeclarations` / `function_declarations`):
//! only `contents`, `tools`, `toolConfig` and `generationConfig` are looked at.

use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue, Method, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::behavior::{Fake200, MockBehavior};
use crate::body::MockBody;
use crate::common::{
    self, Accounting, Event, ToolCall, estimate_tokens, full_response, key_accepted, limit_text,
    parse_object, reported_model, split_even, to_json, u64_field,
};

/// Content type of Gemini's JSON bodies.
const JSON: &str = "application/json; charset=UTF-8";

/// Listed by `GET /v1beta/models`: (id, display name, input limit, output limit).
const MODELS: &[(&str, &str, u64, u64)] = &[
    ("gemini-2.5-pro", "Gemini 2.5 Pro", 1_048_576, 65_536),
    ("gemini-2.5-flash", "Gemini 2.5 Flash", 1_048_576, 65_536),
    ("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", 1_048_576, 65_536),
];

/// A `/v1/models/{model}:{method}` path, which only Gemini serves.
pub(crate) fn is_model_method(path: &str) -> bool {
    path.strip_prefix("/v1/models/").is_some_and(|rest| rest.contains(':'))
}

/// The raw value of query parameter `name`.
pub(crate) fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Produces the response for a request in the Gemini dialect.
pub(crate) fn respond(
    behavior: &MockBehavior,
    id: u64,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<MockBody> {
    if let Some(status) = behavior.force_status {
        let mut response = error_response(status, &format!("mock upstream: forced status {status}"));
        if let Some(secs) = behavior.retry_after_secs {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        return response;
    }
    if let Some(kind) = behavior.fake_200 {
        return fake_200(kind);
    }
    let key =
        headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()).or_else(|| query_param(query, "key"));
    if !key_accepted(behavior, key) {
        return unauthorized();
    }
    let not_found = || error_response(404, &format!("mock upstream: no route for {method} {path}"));
    let Some(rest) = path.strip_prefix("/v1beta/").or_else(|| path.strip_prefix("/v1/")) else {
        return not_found();
    };
    if rest == "models" {
        return if method == Method::GET {
            json_response(to_json(&json!({ "models": MODELS.iter().map(model_info).collect::<Vec<_>>() })))
        } else {
            not_found()
        };
    }
    let Some(resource) = rest.strip_prefix("models/") else {
        return not_found();
    };
    match (method, resource.rsplit_once(':')) {
        (&Method::GET, None) => match MODELS.iter().find(|(model, ..)| *model == resource) {
            Some(entry) => json_response(to_json(&model_info(entry))),
            None => error_response(
                404,
                &format!(
                    "models/{resource} is not found for API version v1beta, or is not supported for generateContent."
                ),
            ),
        },
        (&Method::POST, Some((model, "generateContent"))) => generate(behavior, id, model, body, None),
        (&Method::POST, Some((model, "streamGenerateContent"))) => {
            let format =
                if query_param(query, "alt") == Some("sse") { Stream::Sse } else { Stream::JsonArray };
            generate(behavior, id, model, body, Some(format))
        }
        (&Method::POST, Some((_, "countTokens"))) => match parse_object(body) {
            Ok(_) => {
                let tokens = estimate_tokens(body);
                json_response(to_json(&CountTokens {
                    total_tokens: tokens,
                    prompt_tokens_details: [ModalityCount { modality: "TEXT", token_count: tokens }],
                }))
            }
            Err(message) => error_response(400, &message),
        },
        _ => not_found(),
    }
}

/// How `streamGenerateContent` delivers its chunks.
#[derive(Clone, Copy)]
enum Stream {
    /// `?alt=sse`: `data: {chunk}` events separated by CRLF blank lines, as Google sends them.
    Sse,
    /// Without `alt=sse`: one JSON array whose elements arrive one by one.
    JsonArray,
}

fn generate(
    behavior: &MockBehavior,
    id: u64,
    model: &str,
    body: &Bytes,
    stream: Option<Stream>,
) -> Response<MockBody> {
    let request = match parse_object(body) {
        Ok(request) => request,
        Err(message) => return error_response(400, &message),
    };
    let reply = Reply::plan(behavior, id, model, &request);
    match stream {
        None => json_response(to_json(&reply.whole())),
        Some(format) => {
            let chunks = reply.stream_chunks(behavior.chunks);
            let last = chunks.len().saturating_sub(1);
            let events = chunks
                .into_iter()
                .enumerate()
                .map(|(i, (json, content))| {
                    let bytes = match format {
                        Stream::Sse => format!("data: {json}\r\n\r\n"),
                        Stream::JsonArray => {
                            let open = if i == 0 { "[" } else { ",\r\n" };
                            let close = if i == last { "]" } else { "" };
                            format!("{open}{json}{close}")
                        }
                    };
                    Event::new(bytes, content)
                })
                .collect();
            let content_type = match format {
                Stream::Sse => "text/event-stream",
                Stream::JsonArray => JSON,
            };
            common::stream_response(behavior, events, content_type)
        }
    }
}

/// Everything the reply says, rendered as one response or as stream chunks.
struct Reply {
    model: String,
    response_id: String,
    /// The thought summary, when `thinkingConfig.includeThoughts` asked for it.
    thought: Option<&'static str>,
    text: String,
    call: Option<ToolCall>,
    finish_reason: &'static str,
    accounting: Accounting,
}

impl Reply {
    fn plan(behavior: &MockBehavior, id: u64, model: &str, request: &Value) -> Self {
        let model = reported_model(behavior, Some(model), model);
        let thinking = field(request, "generationConfig", "generation_config")
            .and_then(|config| field(config, "thinkingConfig", "thinking_config"));
        // Thinking is on when configured with a non-zero budget (-1 means dynamic).
        let reasoning = thinking
            .is_some_and(|config| u64_field(field(config, "thinkingBudget", "thinking_budget")) != Some(0));
        let include_thoughts = thinking
            .and_then(|config| field(config, "includeThoughts", "include_thoughts"))
            .and_then(Value::as_bool)
            == Some(true);
        let (text, call, finish_reason, accounting) = match tool_to_call(request) {
            Some(declaration) => {
                let schema = declaration
                    .get("parameters")
                    .or_else(|| field(declaration, "parametersJsonSchema", "parameters_json_schema"));
                let call = ToolCall::new(declaration.get("name").and_then(Value::as_str), schema);
                // Gemini ends a turn with a function call with STOP, not a dedicated reason.
                (String::new(), Some(call), "STOP", common::accounting(behavior, reasoning))
            }
            None => {
                let limit = field(request, "generationConfig", "generation_config")
                    .and_then(|config| u64_field(field(config, "maxOutputTokens", "max_output_tokens")));
                let limited = limit_text(behavior, &behavior.reply_text, limit, reasoning);
                let finish = if limited.truncated { "MAX_TOKENS" } else { "STOP" };
                (limited.text, None, finish, limited.accounting)
            }
        };
        Self {
            model,
            response_id: format!("mock{id}"),
            thought: (reasoning && include_thoughts).then_some(common::REASONING_TEXT),
            text,
            call,
            finish_reason,
            accounting,
        }
    }

    /// `usageMetadata`: the complete counts, or the prompt-only counts of intermediate chunks.
    fn usage(&self, complete: bool) -> UsageMetadata {
        let a = &self.accounting;
        let prompt = a.prompt_tokens();
        let details = [ModalityCount { modality: "TEXT", token_count: prompt }];
        let cached = Some(a.cached_tokens()).filter(|n| *n > 0);
        if !complete {
            return UsageMetadata {
                prompt_token_count: prompt,
                candidates_token_count: None,
                total_token_count: prompt,
                cached_content_token_count: cached,
                prompt_tokens_details: details,
                thoughts_token_count: None,
            };
        }
        // Unlike OpenAI's completion tokens, candidatesTokenCount excludes the thoughts.
        UsageMetadata {
            prompt_token_count: prompt,
            candidates_token_count: Some(a.output_tokens() - a.reasoning_tokens),
            total_token_count: prompt + a.output_tokens(),
            cached_content_token_count: cached,
            prompt_tokens_details: details,
            thoughts_token_count: Some(a.reasoning_tokens).filter(|n| *n > 0),
        }
    }

    fn response<'a>(&'a self, parts: Vec<Part<'a>>, finish: bool) -> GenerateResponse<'a> {
        GenerateResponse {
            candidates: [Candidate {
                content: Content { parts, role: "model" },
                finish_reason: finish.then_some(self.finish_reason),
                index: 0,
            }],
            usage_metadata: self.usage(finish),
            model_version: &self.model,
            response_id: &self.response_id,
        }
    }

    fn answer_part(&self) -> Part<'_> {
        match &self.call {
            Some(call) => {
                Part::FunctionCall { function_call: FunctionCall { name: &call.name, args: &call.arguments } }
            }
            None => Part::Text { text: &self.text, thought: None },
        }
    }

    fn whole(&self) -> GenerateResponse<'_> {
        let mut parts: Vec<Part<'_>> =
            self.thought.iter().map(|text| Part::Text { text, thought: Some(true) }).collect();
        parts.push(self.answer_part());
        self.response(parts, true)
    }

    /// The chunks of a stream as JSON, each flagged when it carries content. The last one has
    /// the finish reason and the complete usage.
    fn stream_chunks(&self, chunks: usize) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        if let Some(text) = self.thought {
            out.push((to_json(&self.response(vec![Part::Text { text, thought: Some(true) }], false)), true));
        }
        if self.call.is_some() {
            // Gemini delivers a function call whole, with its arguments as an object.
            out.push((to_json(&self.response(vec![self.answer_part()], true)), true));
            return out;
        }
        let pieces = split_even(&self.text, chunks.max(1));
        let last = pieces.len() - 1;
        for (i, text) in pieces.into_iter().enumerate() {
            out.push((to_json(&self.response(vec![Part::Text { text, thought: None }], i == last)), true));
        }
        out
    }
}

/// Reads a field in either of the spellings the Gemini API accepts.
fn field<'a>(value: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    value.get(camel).or_else(|| value.get(snake))
}

/// The function declaration to call, when the model should call one now: functions were
/// declared, `toolConfig` allows it, and the last content is a user turn without a
/// `functionResponse`.
fn tool_to_call(request: &Value) -> Option<&Value> {
    let last = request.get("contents")?.as_array()?.last()?;
    // A content without a role is a user turn.
    if last.get("role").and_then(Value::as_str).is_some_and(|role| role != "user") {
        return None;
    }
    let answered = last.get("parts").and_then(Value::as_array).is_some_and(|parts| {
        parts.iter().any(|part| field(part, "functionResponse", "function_response").is_some())
    });
    if answered {
        return None;
    }
    let calling = field(request, "toolConfig", "tool_config")
        .and_then(|config| field(config, "functionCallingConfig", "function_calling_config"));
    if calling
        .and_then(|c| c.get("mode"))
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    let allowed = calling
        .and_then(|c| field(c, "allowedFunctionNames", "allowed_function_names"))
        .and_then(Value::as_array);
    let mut declarations = request
        .get("tools")?
        .as_array()?
        .iter()
        .filter_map(|tool| {
            field(tool, "functionDeclarations", "function_declarations").and_then(Value::as_array)
        })
        .flatten();
    match allowed {
        Some(names) => declarations.find(|d| d.get("name").is_some_and(|name| names.contains(name))),
        None => declarations.next(),
    }
}

/// Google's canonical status name for an HTTP status.
fn status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        other if (400..500).contains(&other) => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    }
}

fn error_json(status: u16, message: &str, details: Option<Value>) -> String {
    to_json(&ErrorBody { error: ErrorDetail { code: status, message, status: status_name(status), details } })
}

/// A Gemini error response.
pub(crate) fn error_response(status: u16, message: &str) -> Response<MockBody> {
    full_response(status, JSON, error_json(status, message, None))
}

/// The key was missing or wrong. Google words it as an invalid key with an `ErrorInfo` detail;
/// the status is 401 so every dialect reports a refused credential the same way.
fn unauthorized() -> Response<MockBody> {
    let details = json!([{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": { "service": "generativelanguage.googleapis.com" }
    }]);
    full_response(
        401,
        JSON,
        error_json(401, "API key not valid. Please pass a valid API key.", Some(details)),
    )
}

/// A 200 response whose body is a failure.
fn fake_200(kind: Fake200) -> Response<MockBody> {
    let error = error_json(500, common::FAKE_200_MESSAGE, None);
    match kind {
        Fake200::Html => full_response(200, "text/html; charset=utf-8", common::HTML_PAGE),
        Fake200::JsonError => full_response(200, JSON, error),
        Fake200::SseError => full_response(200, "text/event-stream", format!("data: {error}\r\n\r\n")),
    }
}

fn json_response(body: String) -> Response<MockBody> {
    full_response(200, JSON, body)
}

fn model_info(
    (model, display_name, input_limit, output_limit): &(&str, &'static str, u64, u64),
) -> ModelInfo {
    ModelInfo {
        name: format!("models/{model}"),
        version: "001",
        display_name,
        description: display_name,
        input_token_limit: *input_limit,
        output_token_limit: *output_limit,
        supported_generation_methods: &[
            "generateContent",
            "countTokens",
            "createCachedContent",
            "batchGenerateContent",
        ],
        temperature: 1.0,
        top_p: 0.95,
        top_k: 64,
        max_temperature: 2.0,
        thinking: true,
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: u16,
    message: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse<'a> {
    candidates: [Candidate<'a>; 1],
    usage_metadata: UsageMetadata,
    model_version: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    content: Content<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    index: u32,
}

#[derive(Serialize)]
struct Content<'a> {
    parts: Vec<Part<'a>>,
    role: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Part<'a> {
    Text {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        thought: Option<bool>,
    },
    FunctionCall {
        #[serde(rename = "functionCall")]
        function_call: FunctionCall<'a>,
    },
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    args: &'a Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidates_token_count: Option<u64>,
    total_token_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_content_token_count: Option<u64>,
    prompt_tokens_details: [ModalityCount; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    thoughts_token_count: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModalityCount {
    modality: &'static str,
    token_count: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CountTokens {
    total_tokens: u64,
    prompt_tokens_details: [ModalityCount; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelInfo {
    name: String,
    version: &'static str,
    display_name: &'static str,
    description: &'static str,
    input_token_limit: u64,
    output_token_limit: u64,
    supported_generation_methods: &'static [&'static str],
    temperature: f64,
    top_p: f64,
    top_k: u32,
    max_temperature: f64,
    thinking: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_by_name() {
        assert_eq!(query_param(Some("alt=sse&key=abc"), "key"), Some("abc"));
        assert_eq!(query_param(Some("alt=sse"), "key"), None);
        assert_eq!(query_param(Some("key"), "key"), Some(""));
        assert_eq!(query_param(None, "key"), None);
    }

    #[test]
    fn tool_is_called_only_for_a_user_turn() {
        let tools = json!([
            { "googleSearch": {} },
            { "function_declarations": [{ "name": "a" }, { "name": "b" }] }
        ]);
        let ask = json!({ "tools": tools, "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] });
        assert_eq!(tool_to_call(&ask).and_then(|d| d.get("name")), Some(&json!("a")));
        let roleless = json!({ "tools": tools, "contents": [{ "parts": [{ "text": "hi" }] }] });
        assert!(tool_to_call(&roleless).is_some());
        let answered = json!({ "tools": tools, "contents": [
            { "role": "user", "parts": [{ "text": "hi" }] },
            { "role": "model", "parts": [{ "functionCall": { "name": "a", "args": {} } }] },
            { "role": "user", "parts": [{ "functionResponse": { "name": "a", "response": { "ok": true } } }] }
        ] });
        assert!(tool_to_call(&answered).is_none());
        let mut none = ask.clone();
        none["toolConfig"] = json!({ "functionCallingConfig": { "mode": "NONE" } });
        assert!(tool_to_call(&none).is_none());
        let mut only_b = ask.clone();
        only_b["toolConfig"] =
            json!({ "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": ["b"] } });
        assert_eq!(tool_to_call(&only_b).and_then(|d| d.get("name")), Some(&json!("b")));
    }

    #[test]
    fn statuses_use_google_names() {
        assert_eq!(status_name(429), "RESOURCE_EXHAUSTED");
        assert_eq!(status_name(503), "UNAVAILABLE");
        assert_eq!(status_name(529), "INTERNAL");
        assert_eq!(status_name(413), "FAILED_PRECONDITION");
    }

    #[test]
    fn parts_serialize_like_gemini() {
        assert_eq!(to_json(&Part::Text { text: "a", thought: None }), r#"{"text":"a"}"#);
        assert_eq!(to_json(&Part::Text { text: "a", thought: Some(true) }), r#"{"text":"a","thought":true}"#);
        let args = json!({ "x": 1 });
        assert_eq!(
            to_json(&Part::FunctionCall { function_call: FunctionCall { name: "f", args: &args } }),
            r#"{"functionCall":{"name":"f","args":{"x":1}}}"#
        );
    }
}
