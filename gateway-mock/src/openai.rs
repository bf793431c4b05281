//! What OpenAI's Chat Completions and Responses APIs share: routing, authentication, the error
//! envelope and `GET /v1/models`.
//!
//! Shapes follow OpenAI's public API reference. Errors are
//! `{"error":{"message":..,"type":..,"param":..,"code":..}}` on every endpoint; the request id
//! travels in `x-request-id`.

use bytes::Bytes;
use http::header::{AUTHORIZATION, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::behavior::{Fake200, MockBehavior};
use crate::body::MockBody;
use crate::common::{self, estimate_tokens, full_response, key_accepted, parse_object, to_json};
use crate::{openai_chat, responses};

/// Listed by `GET /v1/models`: (id, created, owned_by).
const MODELS: &[(&str, u64, &str)] = &[
    ("gpt-5", 1_754_425_777, "system"),
    ("gpt-5-codex", 1_757_894_400, "system"),
    ("gpt-5-mini", 1_754_425_928, "system"),
    ("gpt-4.1", 1_744_316_542, "system"),
    ("gpt-4o", 1_715_367_049, "system"),
    ("o3", 1_744_225_308, "system"),
];

/// Produces the response for a request in an OpenAI dialect.
pub(crate) fn respond(
    behavior: &MockBehavior,
    id: u64,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<MockBody> {
    if let Some(status) = behavior.force_status {
        let mut response = error_response(status, &format!("mock upstream: forced status {status}"), id);
        if let Some(secs) = behavior.retry_after_secs {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        return response;
    }
    if let Some(kind) = behavior.fake_200 {
        return fake_200(kind, id, path, body);
    }
    let bearer =
        headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !key_accepted(behavior, bearer) {
        return unauthorized(bearer, id);
    }
    match (method, path) {
        (&Method::POST, "/v1/chat/completions") => {
            with_body(body, id, |request| openai_chat::completions(behavior, id, &request))
        }
        (&Method::POST, "/v1/responses") => {
            with_body(body, id, |request| responses::create(behavior, id, &request))
        }
        (&Method::POST, "/v1/responses/input_tokens") => with_body(body, id, |_| {
            json_response(
                json!({ "object": "response.input_tokens", "input_tokens": estimate_tokens(body) }),
                id,
            )
        }),
        (&Method::GET, "/v1/models") => json_response(
            json!({ "object": "list", "data": MODELS.iter().map(model_json).collect::<Vec<_>>() }),
            id,
        ),
        (&Method::GET, _) if path.starts_with("/v1/models/") => {
            let wanted = path.trim_start_matches("/v1/models/");
            match MODELS.iter().find(|(model, _, _)| *model == wanted) {
                Some(entry) => json_response(model_json(entry), id),
                None => error_with(
                    404,
                    &format!("The model '{wanted}' does not exist"),
                    "invalid_request_error",
                    Some("model"),
                    Some("model_not_found"),
                    id,
                ),
            }
        }
        _ => error_with(
            404,
            &format!("mock upstream: no route for {method} {path}"),
            "invalid_request_error",
            None,
            None,
            id,
        ),
    }
}

/// Parses the JSON object body and runs `then`, or answers 400.
fn with_body(body: &Bytes, id: u64, then: impl FnOnce(Value) -> Response<MockBody>) -> Response<MockBody> {
    match parse_object(body) {
        Ok(request) => then(request),
        Err(message) => error_response(400, &message, id),
    }
}

fn model_json((model, created, owned_by): &(&str, u64, &str)) -> Value {
    json!({ "id": model, "object": "model", "created": created, "owned_by": owned_by })
}

/// The OpenAI error envelope.
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

/// `error` of the envelope; also the shape of a mid-stream `data: {"error":..}` chunk.
#[derive(Serialize)]
pub(crate) struct ErrorDetail<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<&'a str>,
    pub code: Option<&'static str>,
}

/// OpenAI's error `type` and `code` for an HTTP status, as the API sends them.
pub(crate) fn error_kind(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("request_forbidden", None),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("requests", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", None),
        _ => ("invalid_request_error", None),
    }
}

/// An OpenAI error response with the type and code that usually come with `status`.
pub(crate) fn error_response(status: u16, message: &str, id: u64) -> Response<MockBody> {
    let (kind, code) = error_kind(status);
    error_with(status, message, kind, None, code, id)
}

fn error_with(
    status: u16,
    message: &str,
    kind: &'static str,
    param: Option<&str>,
    code: Option<&'static str>,
    id: u64,
) -> Response<MockBody> {
    let body = ErrorBody { error: ErrorDetail { message, kind, param, code } };
    let mut response = full_response(status, "application/json", to_json(&body));
    insert_request_id(response.headers_mut(), id);
    response
}

/// 401 the way OpenAI words it, showing only the ends of the presented key.
fn unauthorized(presented: Option<&str>, id: u64) -> Response<MockBody> {
    let message = match presented {
        Some(key) => {
            let chars: Vec<char> = key.chars().collect();
            let masked = if chars.len() > 8 {
                format!(
                    "{}{}{}",
                    chars[..4].iter().collect::<String>(),
                    "*".repeat(chars.len() - 8),
                    chars[chars.len() - 4..].iter().collect::<String>()
                )
            } else {
                "*".repeat(chars.len())
            };
            format!(
                "Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
            )
        }
        None => "You didn't provide an API key. You need to provide your API key in an Authorization header \
                 using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            .to_owned(),
    };
    error_response(401, &message, id)
}

/// A 200 response whose body is a failure, in the shape of the endpoint that was called.
fn fake_200(kind: Fake200, id: u64, path: &str, body: &Bytes) -> Response<MockBody> {
    let detail =
        ErrorDetail { message: common::FAKE_200_MESSAGE, kind: "server_error", param: None, code: None };
    let mut response = match kind {
        Fake200::Html => full_response(200, "text/html; charset=utf-8", common::HTML_PAGE),
        Fake200::JsonError => full_response(200, "application/json", to_json(&ErrorBody { error: detail })),
        Fake200::SseError if path.starts_with("/v1/responses") => {
            // The model is echoed when the body names one, like a real failed response would.
            let request = parse_object(body).unwrap_or(Value::Null);
            full_response(200, "text/event-stream; charset=utf-8", responses::failed_stream(id, &request))
        }
        // Chat Completions reports a failure inside a stream as a bare error chunk.
        Fake200::SseError => full_response(
            200,
            "text/event-stream; charset=utf-8",
            format!("data: {}\n\n", to_json(&ErrorBody { error: detail })),
        ),
    };
    insert_request_id(response.headers_mut(), id);
    response
}

/// A 200 JSON response carrying `x-request-id`.
pub(crate) fn json_response(body: impl Serialize, id: u64) -> Response<MockBody> {
    let mut response = full_response(200, "application/json", to_json(&body));
    insert_request_id(response.headers_mut(), id);
    response
}

/// OpenAI's request id header.
pub(crate) fn insert_request_id(headers: &mut HeaderMap, id: u64) {
    if let Ok(value) = HeaderValue::from_str(&format!("req_mock_{id}")) {
        headers.insert("x-request-id", value);
    }
}

/// What `tool_choice` allows.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ToolChoice<'a> {
    /// `"none"`: answer in text.
    Forbidden,
    /// Absent, `"auto"` or `"required"`: the mock calls the first function tool.
    First,
    /// A named function.
    Named(&'a str),
}

impl<'a> ToolChoice<'a> {
    /// Reads `tool_choice`. Chat names the function as
    /// `{"type":"function","function":{"name":..}}`, Responses as `{"type":"function","name":..}`.
    pub(crate) fn of(request: &'a Value) -> Self {
        match request.get("tool_choice") {
            Some(Value::String(choice)) if choice == "none" => Self::Forbidden,
            Some(choice @ Value::Object(_)) => choice
                .get("name")
                .or_else(|| choice.get("function").and_then(|f| f.get("name")))
                .and_then(Value::as_str)
                .map_or(Self::First, Self::Named),
            _ => Self::First,
        }
    }

    /// Picks the tool to call among `tools`, function definitions that carry their `name`.
    pub(crate) fn pick<'t>(&self, mut tools: impl Iterator<Item = &'t Value>) -> Option<&'t Value> {
        match self {
            Self::Forbidden => None,
            Self::First => tools.next(),
            Self::Named(name) => tools.find(|tool| tool.get("name").and_then(Value::as_str) == Some(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_match_openai() {
        assert_eq!(error_kind(401), ("invalid_request_error", Some("invalid_api_key")));
        assert_eq!(error_kind(429), ("requests", Some("rate_limit_exceeded")));
        assert_eq!(error_kind(503), ("server_error", None));
        assert_eq!(error_kind(400), ("invalid_request_error", None));
    }

    #[test]
    fn tool_choice_is_read_in_both_spellings() {
        assert_eq!(ToolChoice::of(&json!({})), ToolChoice::First);
        assert_eq!(ToolChoice::of(&json!({ "tool_choice": "auto" })), ToolChoice::First);
        assert_eq!(ToolChoice::of(&json!({ "tool_choice": "none" })), ToolChoice::Forbidden);
        let chat = json!({ "tool_choice": { "type": "function", "function": { "name": "b" } } });
        assert_eq!(ToolChoice::of(&chat), ToolChoice::Named("b"));
        let responses = json!({ "tool_choice": { "type": "function", "name": "c" } });
        assert_eq!(ToolChoice::of(&responses), ToolChoice::Named("c"));
        let tools = [json!({ "name": "a" }), json!({ "name": "c" })];
        assert_eq!(ToolChoice::of(&responses).pick(tools.iter()), Some(&tools[1]));
        assert_eq!(ToolChoice::First.pick(tools.iter()), Some(&tools[0]));
        assert_eq!(ToolChoice::Forbidden.pick(tools.iter()), None);
    }
}
