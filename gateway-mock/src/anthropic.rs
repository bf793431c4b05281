//! The Anthropic Messages API dialect: routing, JSON bodies and the SSE stream.
//!
//! Shapes follow Anthropic's public documentation of `POST /v1/messages` (with and without
//! `stream`), `POST /v1/messages/count_tokens` and `GET /v1/models`. Requests are parsed
//! leniently: only `model`, `stream`, `messages` and `tools` are looked at.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::behavior::{Fake200, MockBehavior, MockUsage};
use crate::body::MockBody;
use crate::common::{self, Event, argument_pieces, estimate_tokens, mock_input, parse_object, split_even};
use crate::wire::{
    ContentBlock, Delta, ErrorBody, ErrorDetail, Message, MessageDelta, OutputUsage, StreamEvent, Usage,
    to_json,
};

/// Model reported when the request names none and no override is set.
const DEFAULT_MODEL: &str = "claude-sonnet-4-5";

/// Listed by `GET /v1/models`, newest first like the real API: (id, display name, created).
const MODELS: &[(&str, &str, &str)] = &[
    ("claude-opus-4-5", "Claude Opus 4.5", "2025-11-24T00:00:00Z"),
    ("claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-opus-4-1", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
];

/// Produces the response for one recorded request.
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
        return fake_200(kind, id);
    }
    if let Some(expected) = &behavior.expected_api_key
        && !api_key_matches(headers, expected)
    {
        return error_response(401, "invalid x-api-key", id);
    }
    match (method, path) {
        (&Method::POST, "/v1/messages") => messages(behavior, id, body),
        (&Method::POST, "/v1/messages/count_tokens") => count_tokens(id, body),
        (&Method::GET, "/v1/models") => json_response(models_list().to_string(), id),
        (&Method::GET, _) if path.starts_with("/v1/models/") => {
            let wanted = path.trim_start_matches("/v1/models/");
            match MODELS.iter().find(|(model, _, _)| *model == wanted) {
                Some(entry) => json_response(model_json(entry).to_string(), id),
                None => error_response(404, &format!("model: {wanted}"), id),
            }
        }
        _ => error_response(404, &format!("mock upstream: no route for {method} {path}"), id),
    }
}

/// A 200 response whose body is a failure.
fn fake_200(kind: Fake200, id: u64) -> Response<MockBody> {
    let error = r#"{"type":"error","error":{"type":"api_error","message":"mock upstream: upstream account suspended"}}"#;
    let (content_type, body) = match kind {
        Fake200::Html => ("text/html; charset=utf-8", common::HTML_PAGE.to_owned()),
        Fake200::JsonError => ("application/json", error.to_owned()),
        Fake200::SseError => ("text/event-stream", format!("event: error\ndata: {error}\n\n")),
    };
    let mut response = Response::new(MockBody::full(body));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&request_id(id)) {
        response.headers_mut().insert("request-id", v);
    }
    response
}

/// An Anthropic error response: `{"type":"error","error":{"type":..,"message":..},"request_id":..}`.
pub(crate) fn error_response(status: u16, message: &str, id: u64) -> Response<MockBody> {
    let request_id = request_id(id);
    let body = ErrorBody {
        kind: "error",
        error: ErrorDetail { kind: error_type(status), message },
        request_id: &request_id,
    };
    let mut response = json_response(to_json(&body), id);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
}

/// Anthropic's error `type` for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

fn request_id(id: u64) -> String {
    format!("req_mock_{id}")
}

/// Accepts the key as `x-api-key` or as an `Authorization: Bearer` token, like the gateway's
/// callers may send either.
fn api_key_matches(headers: &HeaderMap, expected: &str) -> bool {
    let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let bearer =
        headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    x_api_key == Some(expected) || bearer == Some(expected)
}

/// A 200 JSON response carrying the `request-id` header.
fn json_response(body: String, id: u64) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    insert_request_id(headers, id);
    response
}

fn insert_request_id(headers: &mut HeaderMap, id: u64) {
    if let Ok(value) = HeaderValue::from_str(&request_id(id)) {
        headers.insert("request-id", value);
    }
}

fn messages(behavior: &MockBehavior, id: u64, body: &Bytes) -> Response<MockBody> {
    let request = match parse_object(body) {
        Ok(request) => request,
        Err(message) => return error_response(400, &message, id),
    };
    let reply = Reply::plan(behavior, id, &request);
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        stream_response(behavior, &reply, id)
    } else {
        json_response(reply.message_json(), id)
    }
}

fn count_tokens(id: u64, body: &Bytes) -> Response<MockBody> {
    if let Err(message) = parse_object(body) {
        return error_response(400, &message, id);
    }
    json_response(json!({ "input_tokens": estimate_tokens(body) }).to_string(), id)
}

fn model_json((model, display_name, created_at): &(&str, &str, &str)) -> Value {
    json!({
        "type": "model",
        "id": model,
        "display_name": display_name,
        "created_at": created_at,
    })
}

fn models_list() -> Value {
    json!({
        "data": MODELS.iter().map(model_json).collect::<Vec<_>>(),
        "has_more": false,
        "first_id": MODELS.first().map(|m| m.0),
        "last_id": MODELS.last().map(|m| m.0),
    })
}

/// One content block of the reply.
enum Block {
    Text(String),
    ToolUse { id: String, name: String, input: Value },
}

impl Block {
    fn wire(&self) -> ContentBlock<'_> {
        match self {
            Self::Text(text) => ContentBlock::Text { text },
            Self::ToolUse { id, name, input } => ContentBlock::ToolUse { id, name, input },
        }
    }
}

/// Everything the reply says, rendered either as one JSON message or as an SSE stream.
struct Reply {
    id: String,
    model: String,
    blocks: Vec<Block>,
    stop_reason: &'static str,
    usage: MockUsage,
}

impl Reply {
    fn plan(behavior: &MockBehavior, id: u64, request: &Value) -> Self {
        let model = behavior
            .model_override
            .clone()
            .or_else(|| request.get("model").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        let (blocks, stop_reason) = match tool_to_call(request) {
            Some(tool) => {
                let name = tool.get("name").and_then(Value::as_str).unwrap_or("tool").to_owned();
                let input = mock_input(tool.get("input_schema"));
                // Models usually announce a tool call with a short text first; clients must
                // cope with a text block before the tool_use block.
                let blocks = vec![
                    Block::Text(format!("I'll call the {name} tool.")),
                    Block::ToolUse { id: format!("toolu_mock_{id}"), name, input },
                ];
                (blocks, "tool_use")
            }
            None => (vec![Block::Text(behavior.reply_text.clone())], "end_turn"),
        };
        Self { id: format!("msg_mock_{id}"), model, blocks, stop_reason, usage: behavior.usage }
    }

    fn message<'a>(&'a self, content: Vec<ContentBlock<'a>>, stream_start: bool) -> Message<'a> {
        Message {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content,
            // message_start announces the message before anything was generated.
            stop_reason: (!stream_start).then_some(self.stop_reason),
            stop_sequence: None,
            usage: Usage::new(&self.usage, if stream_start { 1 } else { self.usage.output_tokens }),
        }
    }

    fn message_json(&self) -> String {
        to_json(&self.message(self.blocks.iter().map(Block::wire).collect(), false))
    }

    /// The SSE events in the order Anthropic sends them.
    fn stream_events(&self, chunks: usize) -> Vec<Event> {
        let mut events = vec![
            event(&StreamEvent::MessageStart { message: self.message(Vec::new(), true) }, false),
            event(&StreamEvent::Ping, false),
        ];
        let empty_input = Value::Object(Map::new());
        for (index, block) in self.blocks.iter().enumerate() {
            match block {
                Block::Text(text) => {
                    events.push(event(
                        &StreamEvent::ContentBlockStart {
                            index,
                            content_block: ContentBlock::Text { text: "" },
                        },
                        false,
                    ));
                    for text in split_even(text, chunks.max(1)) {
                        let delta = Delta::TextDelta { text };
                        events.push(event(&StreamEvent::ContentBlockDelta { index, delta }, true));
                    }
                }
                Block::ToolUse { id, name, input } => {
                    events.push(event(
                        &StreamEvent::ContentBlockStart {
                            index,
                            content_block: ContentBlock::ToolUse { id, name, input: &empty_input },
                        },
                        false,
                    ));
                    let input = input.to_string();
                    for partial_json in argument_pieces(&input) {
                        let delta = Delta::InputJsonDelta { partial_json };
                        events.push(event(&StreamEvent::ContentBlockDelta { index, delta }, true));
                    }
                }
            }
            events.push(event(&StreamEvent::ContentBlockStop { index }, false));
        }
        events.push(event(
            &StreamEvent::MessageDelta {
                delta: MessageDelta { stop_reason: self.stop_reason, stop_sequence: None },
                usage: OutputUsage { output_tokens: self.usage.output_tokens },
            },
            false,
        ));
        events.push(event(&StreamEvent::MessageStop, false));
        events
    }
}

/// The first tool, when the model should call one now: tools were offered and the last message
/// is a user turn that does not already carry a `tool_result` (which asks for a final answer).
fn tool_to_call(request: &Value) -> Option<&Value> {
    let tool = request.get("tools")?.as_array()?.first()?;
    let last = request.get("messages")?.as_array()?.last()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let has_tool_result = last.get("content").and_then(Value::as_array).is_some_and(|blocks| {
        blocks.iter().any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
    });
    (!has_tool_result).then_some(tool)
}

/// One Anthropic SSE event: `event: <type>` plus its JSON `data`.
fn event(data: &StreamEvent<'_>, content: bool) -> Event {
    Event::new(format!("event: {}\ndata: {}\n\n", data.name(), to_json(data)), content)
}

fn stream_response(behavior: &MockBehavior, reply: &Reply, id: u64) -> Response<MockBody> {
    let mut response =
        common::stream_response(behavior, reply.stream_events(behavior.chunks), "text/event-stream");
    insert_request_id(response.headers_mut(), id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_is_called_only_without_a_tool_result() {
        let tools = json!([{ "name": "get_weather", "input_schema": { "type": "object" } }]);
        let ask = json!({ "tools": tools, "messages": [{ "role": "user", "content": "weather?" }] });
        assert!(tool_to_call(&ask).is_some());
        let answered = json!({ "tools": tools, "messages": [
            { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "t", "content": "sunny" }] }
        ] });
        assert!(tool_to_call(&answered).is_none());
        let no_tools = json!({ "tools": [], "messages": [{ "role": "user", "content": "hi" }] });
        assert!(tool_to_call(&no_tools).is_none());
    }

    #[test]
    fn error_types_match_anthropic() {
        assert_eq!(error_type(413), "request_too_large");
        assert_eq!(error_type(529), "overloaded_error");
        assert_eq!(error_type(502), "api_error");
    }
}
