//! The OpenAI Chat Completions dialect: `POST /v1/chat/completions`, as JSON or as a stream of
//! `chat.completion.chunk` objects in `data:` lines ending with `data: [DONE]`.
//!
//! Requests are parsed leniently: only `model`, `stream`, `stream_options.include_usage`,
//! `messages`, `tools`, `tool_choice`, `max_completion_tokens` / `max_tokens` and
//! `reasoning_effort` are looked at.

use http::Response;
use serde::Serialize;
use serde_json::Value;

use crate::behavior::MockBehavior;
use crate::body::MockBody;
use crate::common::{
    self, Accounting, Event, ToolCall, argument_pieces, limit_text, reported_model, split_even, to_json,
    u64_field, unix_now,
};
use crate::openai::{self, ToolChoice};

/// Model reported when the request names none and no override is set.
const DEFAULT_MODEL: &str = "gpt-4.1";

/// Stands in for the backend fingerprint OpenAI reports.
const SYSTEM_FINGERPRINT: &str = "fp_mock";

/// Answers `POST /v1/chat/completions`.
pub(crate) fn completions(behavior: &MockBehavior, id: u64, request: &Value) -> Response<MockBody> {
    let reply = Reply::plan(behavior, id, request);
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = request
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let events = reply.stream_events(behavior.chunks, include_usage);
        let mut response = common::stream_response(behavior, events, "text/event-stream; charset=utf-8");
        openai::insert_request_id(response.headers_mut(), id);
        response
    } else {
        openai::json_response(reply.completion(), id)
    }
}

/// What the assistant says.
enum Content {
    Text(String),
    Tool { id: String, call: ToolCall, arguments: String },
}

/// Everything the reply says, rendered as one completion or as chunks.
struct Reply {
    id: String,
    created: u64,
    model: String,
    content: Content,
    finish_reason: &'static str,
    accounting: Accounting,
}

impl Reply {
    fn plan(behavior: &MockBehavior, id: u64, request: &Value) -> Self {
        let model = reported_model(behavior, request.get("model").and_then(Value::as_str), DEFAULT_MODEL);
        // Reasoning models report hidden reasoning tokens; the text itself is never shown.
        let reasoning =
            request.get("reasoning_effort").and_then(Value::as_str).is_some_and(|effort| effort != "none");
        let (content, finish_reason, accounting) = match tool_to_call(request) {
            Some(function) => {
                let call =
                    ToolCall::new(function.get("name").and_then(Value::as_str), function.get("parameters"));
                let arguments = call.arguments_json();
                let content = Content::Tool { id: format!("call_mock_{id}"), call, arguments };
                (content, "tool_calls", common::accounting(behavior, reasoning))
            }
            None => {
                let limit =
                    u64_field(request.get("max_completion_tokens").or_else(|| request.get("max_tokens")));
                let limited = limit_text(behavior, &behavior.reply_text, limit, reasoning);
                let finish = if limited.truncated { "length" } else { "stop" };
                (Content::Text(limited.text), finish, limited.accounting)
            }
        };
        Self {
            id: format!("chatcmpl-mock{id}"),
            created: unix_now(),
            model,
            content,
            finish_reason,
            accounting,
        }
    }

    fn usage(&self) -> Usage {
        let a = &self.accounting;
        Usage {
            prompt_tokens: a.prompt_tokens(),
            completion_tokens: a.output_tokens(),
            total_tokens: a.prompt_tokens() + a.output_tokens(),
            prompt_tokens_details: PromptDetails { cached_tokens: a.cached_tokens(), audio_tokens: 0 },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: a.reasoning_tokens,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }

    fn completion(&self) -> Completion<'_> {
        let message = match &self.content {
            Content::Text(text) => Message::text(text),
            Content::Tool { id, call, arguments } => Message {
                role: "assistant",
                content: None,
                tool_calls: Some(vec![ToolCallOut {
                    id,
                    kind: "function",
                    function: FunctionOut { name: &call.name, arguments },
                }]),
                refusal: None,
                annotations: [],
            },
        };
        Completion {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            choices: vec![Choice { index: 0, message, logprobs: None, finish_reason: self.finish_reason }],
            usage: self.usage(),
            service_tier: "default",
            system_fingerprint: SYSTEM_FINGERPRINT,
        }
    }

    fn chunk<'a>(
        &'a self,
        delta: Delta<'a>,
        finish_reason: Option<&'static str>,
        usage: UsageField,
    ) -> String {
        to_json(&ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            service_tier: "default",
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices: vec![ChunkChoice { index: 0, delta, logprobs: None, finish_reason }],
            usage,
        })
    }

    /// The `data:` events in the order OpenAI sends them.
    fn stream_events(&self, chunks: usize, include_usage: bool) -> Vec<Event> {
        // With include_usage every chunk carries `"usage": null` until the final usage chunk.
        let no_usage = || if include_usage { Some(None) } else { None };
        let mut events = Vec::new();
        let mut push =
            |json: String, content: bool| events.push(Event::new(format!("data: {json}\n\n"), content));
        match &self.content {
            Content::Text(text) => {
                let start =
                    Delta::Start { role: "assistant", content: Some(""), tool_calls: None, refusal: None };
                push(self.chunk(start, None, no_usage()), false);
                for piece in split_even(text, chunks.max(1)) {
                    push(self.chunk(Delta::Content { content: piece }, None, no_usage()), true);
                }
            }
            Content::Tool { id, call, arguments } => {
                let announce = ToolCallDelta {
                    index: 0,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionDelta { name: Some(&call.name), arguments: "" },
                };
                let start = Delta::Start {
                    role: "assistant",
                    content: None,
                    tool_calls: Some([announce]),
                    refusal: None,
                };
                push(self.chunk(start, None, no_usage()), false);
                for piece in argument_pieces(arguments) {
                    let delta = ToolCallDelta {
                        index: 0,
                        id: None,
                        kind: None,
                        function: FunctionDelta { name: None, arguments: piece },
                    };
                    push(self.chunk(Delta::Tool { tool_calls: [delta] }, None, no_usage()), true);
                }
            }
        }
        push(self.chunk(Delta::Empty {}, Some(self.finish_reason), no_usage()), false);
        if include_usage {
            let usage_chunk = UsageChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                service_tier: "default",
                system_fingerprint: SYSTEM_FINGERPRINT,
                choices: [],
                usage: self.usage(),
            };
            push(to_json(&usage_chunk), false);
        }
        push("[DONE]".to_owned(), false);
        events
    }
}

/// The function to call, when the model should call one now: function tools were offered,
/// `tool_choice` allows it, and the last message is a user turn (after a `tool` message the
/// model answers in text).
fn tool_to_call(request: &Value) -> Option<&Value> {
    let tools = request.get("tools")?.as_array()?;
    let last = request.get("messages")?.as_array()?.last()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let functions = tools.iter().filter_map(|tool| tool.get("function"));
    ToolChoice::of(request).pick(functions)
}

/// A complete `chat.completion`.
#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    usage: Usage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallOut<'a>>>,
    refusal: Option<&'a str>,
    annotations: [(); 0],
}

impl<'a> Message<'a> {
    fn text(text: &'a str) -> Self {
        Self { role: "assistant", content: Some(text), tool_calls: None, refusal: None, annotations: [] }
    }
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// `usage` of a completion and of the final usage chunk.
#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

/// `usage` of a content chunk: absent (`None`), or `null` (`Some(None)`) with include_usage.
type UsageField = Option<Option<Usage>>;

/// One `chat.completion.chunk` with a choice.
#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: UsageField,
}

/// The final usage-only chunk of `stream_options.include_usage`: no choices.
#[derive(Serialize)]
struct UsageChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: [(); 0],
    usage: Usage,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// `delta` of a chunk; its keys vary by position in the stream.
#[derive(Serialize)]
#[serde(untagged)]
enum Delta<'a> {
    /// The first chunk: the role, empty or null content, and a tool call's id and name.
    Start {
        role: &'static str,
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_calls: Option<[ToolCallDelta<'a>; 1]>,
        refusal: Option<&'a str>,
    },
    Content {
        content: &'a str,
    },
    Tool {
        tool_calls: [ToolCallDelta<'a>; 1],
    },
    /// The finishing chunk's `{}`.
    Empty {},
}

/// One entry of `delta.tool_calls`; `index` ties the pieces of one call together.
#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_is_called_only_for_a_user_turn() {
        let tools = json!([{ "type": "function", "function": { "name": "a", "parameters": {} } }]);
        let ask = json!({ "tools": tools, "messages": [{ "role": "user", "content": "hi" }] });
        assert!(tool_to_call(&ask).is_some());
        let answered = json!({ "tools": tools, "messages": [
            { "role": "user", "content": "hi" },
            { "role": "assistant", "content": null, "tool_calls": [] },
            { "role": "tool", "tool_call_id": "call_1", "content": "sunny" }
        ] });
        assert!(tool_to_call(&answered).is_none());
        let none = json!({ "tools": tools, "tool_choice": "none", "messages": [{ "role": "user", "content": "hi" }] });
        assert!(tool_to_call(&none).is_none());
    }

    #[test]
    fn deltas_serialize_like_openai() {
        let start = Delta::Start { role: "assistant", content: Some(""), tool_calls: None, refusal: None };
        assert_eq!(to_json(&start), r#"{"role":"assistant","content":"","refusal":null}"#);
        assert_eq!(to_json(&Delta::Empty {}), "{}");
        let piece = ToolCallDelta {
            index: 0,
            id: None,
            kind: None,
            function: FunctionDelta { name: None, arguments: "{\"a\"" },
        };
        assert_eq!(
            to_json(&Delta::Tool { tool_calls: [piece] }),
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}"#
        );
    }
}
