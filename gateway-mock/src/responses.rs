//! The OpenAI Responses dialect as Codex CLI uses it: `POST /v1/responses`, as one response
//! object or as named SSE events with increasing `sequence_number`s.
//!
//! Requests are parsed leniently: only `model`, `stream`, `input`, `instructions`, `tools`,
//! `tool_choice`, `max_output_tokens`, `reasoning`, `include`, `store`, `parallel_tool_calls`,
//! `previous_response_id` and `metadata` are looked at. A reasoning item (with a summary when
//! `reasoning.summary` asks for one) precedes the message when the request sets `reasoning`.

use http::Response;
use serde::Serialize;
use serde_json::{Value, json};

use crate::behavior::MockBehavior;
use crate::body::MockBody;
use crate::common::{
    self, Accounting, Event, ToolCall, argument_pieces, limit_text, reported_model, split_even, to_json,
    u64_field, unix_now,
};
use crate::openai::{self, ToolChoice};

/// Model reported when the request names none and no override is set.
const DEFAULT_MODEL: &str = "gpt-5-codex";

/// Answers `POST /v1/responses`.
pub(crate) fn create(behavior: &MockBehavior, id: u64, request: &Value) -> Response<MockBody> {
    let reply = Reply::plan(behavior, id, request);
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let events = reply.stream_events(behavior.chunks);
        let mut response = common::stream_response(behavior, events, "text/event-stream; charset=utf-8");
        openai::insert_request_id(response.headers_mut(), id);
        response
    } else {
        openai::json_response(reply.response(Stage::Done), id)
    }
}

/// The body of a 200 stream that fails at once: an `error` event, then `response.failed`.
pub(crate) fn failed_stream(id: u64, request: &Value) -> String {
    let model = request.get("model").and_then(Value::as_str).unwrap_or(DEFAULT_MODEL);
    let echo = Echo::of(&Value::Null);
    let message = common::FAKE_200_MESSAGE;
    let response_id = format!("resp_mock_{id}");
    let mut response = response_object(&response_id, unix_now(), model, &echo, "failed");
    response.error = Some(ResponseError { code: "server_error", message });
    let events = [Ev::Error { code: "server_error", message, param: None }, Ev::Failed { response }];
    events.into_iter().enumerate().map(|(seq, event)| sse(event, seq as u64)).collect()
}

/// The request fields a response object repeats back.
struct Echo {
    instructions: Value,
    max_output_tokens: Option<u64>,
    parallel_tool_calls: bool,
    previous_response_id: Value,
    reasoning: Value,
    store: bool,
    tool_choice: Value,
    tools: Value,
    metadata: Value,
}

impl Echo {
    fn of(request: &Value) -> Self {
        let field = |name: &str| request.get(name).cloned().unwrap_or(Value::Null);
        let reasoning = request.get("reasoning").filter(|r| r.is_object()).map_or_else(
            || json!({ "effort": null, "summary": null }),
            |r| {
                json!({
                    "effort": r.get("effort").cloned().unwrap_or(Value::Null),
                    "summary": r.get("summary").cloned().unwrap_or(Value::Null),
                })
            },
        );
        Self {
            instructions: field("instructions"),
            max_output_tokens: u64_field(request.get("max_output_tokens")),
            parallel_tool_calls: request.get("parallel_tool_calls").and_then(Value::as_bool).unwrap_or(true),
            previous_response_id: field("previous_response_id"),
            reasoning,
            store: request.get("store").and_then(Value::as_bool).unwrap_or(true),
            tool_choice: request.get("tool_choice").cloned().unwrap_or_else(|| json!("auto")),
            tools: request.get("tools").cloned().unwrap_or_else(|| json!([])),
            metadata: request.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }
    }
}

/// A reasoning output item.
struct Reasoning {
    id: String,
    /// The summary text, when `reasoning.summary` asked for one.
    summary: Option<&'static str>,
    /// Opaque state, when `include` asked for `reasoning.encrypted_content` (as Codex does).
    encrypted_content: Option<String>,
}

/// A function call output item.
struct Call {
    id: String,
    call_id: String,
    call: ToolCall,
    arguments: String,
}

/// How far the response has got, which decides what its object shows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `response.created` / `response.in_progress`: nothing generated yet.
    Started,
    /// The final object (non-stream body, `response.completed` / `response.incomplete`).
    Done,
}

/// Everything the reply says, rendered as one response object or as events.
struct Reply {
    id: String,
    created_at: u64,
    model: String,
    echo: Echo,
    reasoning: Option<Reasoning>,
    message_id: String,
    text: String,
    call: Option<Call>,
    truncated: bool,
    accounting: Accounting,
}

impl Reply {
    fn plan(behavior: &MockBehavior, id: u64, request: &Value) -> Self {
        let model = reported_model(behavior, request.get("model").and_then(Value::as_str), DEFAULT_MODEL);
        let reasoning = reasoning_of(request, id);
        let (text, call, truncated, accounting) = match tool_to_call(request) {
            Some(tool) => {
                let call = ToolCall::new(tool.get("name").and_then(Value::as_str), tool.get("parameters"));
                // Codex-era models often say what they are about to do before calling a tool;
                // clients must cope with a message item before the function_call item.
                let text = format!("I'll call the {} tool.", call.name);
                let arguments = call.arguments_json();
                let call =
                    Call { id: format!("fc_mock_{id}"), call_id: format!("call_mock_{id}"), call, arguments };
                (text, Some(call), false, common::accounting(behavior, reasoning.is_some()))
            }
            None => {
                let limit = u64_field(request.get("max_output_tokens"));
                let limited = limit_text(behavior, &behavior.reply_text, limit, reasoning.is_some());
                (limited.text, None, limited.truncated, limited.accounting)
            }
        };
        Self {
            id: format!("resp_mock_{id}"),
            created_at: unix_now(),
            model,
            echo: Echo::of(request),
            reasoning,
            message_id: format!("msg_mock_{id}"),
            text,
            call,
            truncated,
            accounting,
        }
    }

    fn usage(&self) -> Usage {
        let a = &self.accounting;
        Usage {
            input_tokens: a.prompt_tokens(),
            input_tokens_details: InputDetails { cached_tokens: a.cached_tokens() },
            output_tokens: a.output_tokens(),
            output_tokens_details: OutputDetails { reasoning_tokens: a.reasoning_tokens },
            total_tokens: a.prompt_tokens() + a.output_tokens(),
        }
    }

    fn status(&self) -> &'static str {
        if self.truncated { "incomplete" } else { "completed" }
    }

    fn reasoning_item(reasoning: &Reasoning, done: bool) -> OutputItem<'_> {
        let summary = match (done, reasoning.summary) {
            (true, Some(text)) => vec![SummaryPart::new(text)],
            _ => Vec::new(),
        };
        OutputItem::Reasoning {
            id: &reasoning.id,
            summary,
            encrypted_content: reasoning.encrypted_content.as_deref(),
        }
    }

    fn message_item(&self, done: bool) -> OutputItem<'_> {
        OutputItem::Message {
            id: &self.message_id,
            status: if !done { "in_progress" } else { self.status() },
            content: if done { vec![OutputText::new(&self.text)] } else { Vec::new() },
            role: "assistant",
        }
    }

    fn call_item(call: &Call, done: bool) -> OutputItem<'_> {
        OutputItem::FunctionCall {
            id: &call.id,
            status: if done { "completed" } else { "in_progress" },
            arguments: if done { &call.arguments } else { "" },
            call_id: &call.call_id,
            name: &call.call.name,
        }
    }

    /// The response object at `stage`.
    fn response(&self, stage: Stage) -> ResponseObject<'_> {
        if stage == Stage::Started {
            return response_object(&self.id, self.created_at, &self.model, &self.echo, "in_progress");
        }
        let mut response = response_object(&self.id, self.created_at, &self.model, &self.echo, self.status());
        if self.truncated {
            response.incomplete_details = Some(IncompleteDetails { reason: "max_output_tokens" });
        }
        response.output = self.reasoning.iter().map(|r| Self::reasoning_item(r, true)).collect();
        response.output.push(self.message_item(true));
        if let Some(call) = &self.call {
            response.output.push(Self::call_item(call, true));
        }
        response.usage = Some(self.usage());
        response
    }

    /// The SSE events in the order OpenAI sends them.
    fn stream_events(&self, chunks: usize) -> Vec<Event> {
        let mut events = vec![
            (Ev::Created { response: self.response(Stage::Started) }, false),
            (Ev::InProgress { response: self.response(Stage::Started) }, false),
        ];
        let mut output_index = 0;
        if let Some(reasoning) = &self.reasoning {
            let item_id = reasoning.id.as_str();
            events
                .push((Ev::ItemAdded { output_index, item: Self::reasoning_item(reasoning, false) }, false));
            if let Some(text) = reasoning.summary {
                let summary_index = 0;
                events.push((
                    Ev::SummaryPartAdded { item_id, output_index, summary_index, part: SummaryPart::new("") },
                    false,
                ));
                for delta in split_even(text, chunks.max(1)) {
                    events.push((Ev::SummaryDelta { item_id, output_index, summary_index, delta }, true));
                }
                events.push((Ev::SummaryDone { item_id, output_index, summary_index, text }, false));
                events.push((
                    Ev::SummaryPartDone {
                        item_id,
                        output_index,
                        summary_index,
                        part: SummaryPart::new(text),
                    },
                    false,
                ));
            }
            events.push((Ev::ItemDone { output_index, item: Self::reasoning_item(reasoning, true) }, false));
            output_index += 1;
        }
        let item_id = self.message_id.as_str();
        let content_index = 0;
        events.push((Ev::ItemAdded { output_index, item: self.message_item(false) }, false));
        events
            .push((Ev::PartAdded { item_id, output_index, content_index, part: OutputText::new("") }, false));
        for delta in split_even(&self.text, chunks.max(1)) {
            events.push((Ev::TextDelta { item_id, output_index, content_index, delta, logprobs: [] }, true));
        }
        let text = self.text.as_str();
        events.push((Ev::TextDone { item_id, output_index, content_index, text, logprobs: [] }, false));
        events.push((
            Ev::PartDone { item_id, output_index, content_index, part: OutputText::new(text) },
            false,
        ));
        events.push((Ev::ItemDone { output_index, item: self.message_item(true) }, false));
        if let Some(call) = &self.call {
            output_index += 1;
            let item_id = call.id.as_str();
            events.push((Ev::ItemAdded { output_index, item: Self::call_item(call, false) }, false));
            for delta in argument_pieces(&call.arguments) {
                events.push((Ev::ArgsDelta { item_id, output_index, delta }, true));
            }
            events.push((
                Ev::ArgsDone { item_id, output_index, name: &call.call.name, arguments: &call.arguments },
                false,
            ));
            events.push((Ev::ItemDone { output_index, item: Self::call_item(call, true) }, false));
        }
        let response = self.response(Stage::Done);
        let last = if self.truncated { Ev::Incomplete { response } } else { Ev::Completed { response } };
        events.push((last, false));
        events
            .into_iter()
            .enumerate()
            .map(|(seq, (event, content))| Event::new(sse(event, seq as u64), content))
            .collect()
    }
}

/// A response object with no output and no usage yet.
fn response_object<'a>(
    id: &'a str,
    created_at: u64,
    model: &'a str,
    echo: &'a Echo,
    status: &'static str,
) -> ResponseObject<'a> {
    ResponseObject {
        id,
        object: "response",
        created_at,
        status,
        background: false,
        error: None,
        incomplete_details: None,
        instructions: &echo.instructions,
        max_output_tokens: echo.max_output_tokens,
        model,
        output: Vec::new(),
        parallel_tool_calls: echo.parallel_tool_calls,
        previous_response_id: &echo.previous_response_id,
        reasoning: &echo.reasoning,
        store: echo.store,
        text: TextConfig { format: TextFormat { kind: "text" } },
        tool_choice: &echo.tool_choice,
        tools: &echo.tools,
        truncation: "disabled",
        usage: None,
        metadata: &echo.metadata,
    }
}

/// The reasoning item to emit, when the request turned reasoning on.
fn reasoning_of(request: &Value, id: u64) -> Option<Reasoning> {
    let config = request.get("reasoning").filter(|r| r.is_object())?;
    if config.get("effort").and_then(Value::as_str) == Some("none") {
        return None;
    }
    let summary = config
        .get("summary")
        .and_then(Value::as_str)
        .filter(|s| *s != "none")
        .map(|_| common::REASONING_TEXT);
    let encrypted = request
        .get("include")
        .and_then(Value::as_array)
        .is_some_and(|include| include.iter().any(|i| i.as_str() == Some("reasoning.encrypted_content")));
    Some(Reasoning {
        id: format!("rs_mock_{id}"),
        summary,
        encrypted_content: encrypted.then(|| format!("gAAAAA-mock-encrypted-reasoning-{id}")),
    })
}

/// The function tool to call, when the model should call one now: function tools were offered,
/// `tool_choice` allows it, and the input ends with a user turn rather than a tool's output.
fn tool_to_call(request: &Value) -> Option<&Value> {
    let tools = request.get("tools")?.as_array()?;
    let user_turn = match request.get("input")? {
        Value::String(_) => true,
        Value::Array(items) => items.last().is_some_and(|last| {
            // function_call_output, custom_tool_call_output, local_shell_call_output, ...
            let is_output = last.get("type").and_then(Value::as_str).is_some_and(|t| t.ends_with("_output"));
            !is_output && last.get("role").and_then(Value::as_str) == Some("user")
        }),
        _ => false,
    };
    if !user_turn {
        return None;
    }
    let functions = tools.iter().filter(|tool| tool.get("type").and_then(Value::as_str) == Some("function"));
    ToolChoice::of(request).pick(functions)
}

/// Encodes one event with its sequence number.
fn sse(event: Ev<'_>, sequence_number: u64) -> String {
    let name = event.name();
    format!("event: {name}\ndata: {}\n\n", to_json(&Sequenced { event, sequence_number }))
}

/// The response object.
#[derive(Serialize)]
struct ResponseObject<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    background: bool,
    error: Option<ResponseError<'a>>,
    incomplete_details: Option<IncompleteDetails>,
    instructions: &'a Value,
    max_output_tokens: Option<u64>,
    model: &'a str,
    output: Vec<OutputItem<'a>>,
    parallel_tool_calls: bool,
    previous_response_id: &'a Value,
    reasoning: &'a Value,
    store: bool,
    text: TextConfig,
    tool_choice: &'a Value,
    tools: &'a Value,
    truncation: &'static str,
    usage: Option<Usage>,
    metadata: &'a Value,
}

#[derive(Serialize)]
struct ResponseError<'a> {
    code: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct IncompleteDetails {
    reason: &'static str,
}

#[derive(Serialize)]
struct TextConfig {
    format: TextFormat,
}

#[derive(Serialize)]
struct TextFormat {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    input_tokens_details: InputDetails,
    output_tokens: u64,
    output_tokens_details: OutputDetails,
    total_tokens: u64,
}

#[derive(Serialize)]
struct InputDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct OutputDetails {
    reasoning_tokens: u64,
}

/// One item of `output`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutputItem<'a> {
    Reasoning {
        id: &'a str,
        summary: Vec<SummaryPart<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<&'a str>,
    },
    Message {
        id: &'a str,
        status: &'static str,
        content: Vec<OutputText<'a>>,
        role: &'static str,
    },
    FunctionCall {
        id: &'a str,
        status: &'static str,
        arguments: &'a str,
        call_id: &'a str,
        name: &'a str,
    },
}

/// An `output_text` content part.
#[derive(Serialize)]
struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    annotations: [(); 0],
    logprobs: [(); 0],
    text: &'a str,
}

impl<'a> OutputText<'a> {
    fn new(text: &'a str) -> Self {
        Self { kind: "output_text", annotations: [], logprobs: [], text }
    }
}

/// A `summary_text` part of a reasoning item.
#[derive(Serialize)]
struct SummaryPart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

impl<'a> SummaryPart<'a> {
    fn new(text: &'a str) -> Self {
        Self { kind: "summary_text", text }
    }
}

/// An event with its `sequence_number` after the event's own fields.
#[derive(Serialize)]
struct Sequenced<'a> {
    #[serde(flatten)]
    event: Ev<'a>,
    sequence_number: u64,
}

/// The `data` of one SSE event; the event name equals its `type`.
#[derive(Serialize)]
#[serde(tag = "type")]
enum Ev<'a> {
    #[serde(rename = "response.created")]
    Created { response: ResponseObject<'a> },
    #[serde(rename = "response.in_progress")]
    InProgress { response: ResponseObject<'a> },
    #[serde(rename = "response.output_item.added")]
    ItemAdded { output_index: usize, item: OutputItem<'a> },
    #[serde(rename = "response.output_item.done")]
    ItemDone { output_index: usize, item: OutputItem<'a> },
    #[serde(rename = "response.content_part.added")]
    PartAdded { item_id: &'a str, output_index: usize, content_index: usize, part: OutputText<'a> },
    #[serde(rename = "response.content_part.done")]
    PartDone { item_id: &'a str, output_index: usize, content_index: usize, part: OutputText<'a> },
    #[serde(rename = "response.output_text.delta")]
    TextDelta {
        item_id: &'a str,
        output_index: usize,
        content_index: usize,
        delta: &'a str,
        logprobs: [(); 0],
    },
    #[serde(rename = "response.output_text.done")]
    TextDone { item_id: &'a str, output_index: usize, content_index: usize, text: &'a str, logprobs: [(); 0] },
    #[serde(rename = "response.function_call_arguments.delta")]
    ArgsDelta { item_id: &'a str, output_index: usize, delta: &'a str },
    #[serde(rename = "response.function_call_arguments.done")]
    ArgsDone { item_id: &'a str, output_index: usize, name: &'a str, arguments: &'a str },
    #[serde(rename = "response.reasoning_summary_part.added")]
    SummaryPartAdded { item_id: &'a str, output_index: usize, summary_index: usize, part: SummaryPart<'a> },
    #[serde(rename = "response.reasoning_summary_text.delta")]
    SummaryDelta { item_id: &'a str, output_index: usize, summary_index: usize, delta: &'a str },
    #[serde(rename = "response.reasoning_summary_text.done")]
    SummaryDone { item_id: &'a str, output_index: usize, summary_index: usize, text: &'a str },
    #[serde(rename = "response.reasoning_summary_part.done")]
    SummaryPartDone { item_id: &'a str, output_index: usize, summary_index: usize, part: SummaryPart<'a> },
    #[serde(rename = "response.completed")]
    Completed { response: ResponseObject<'a> },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: ResponseObject<'a> },
    #[serde(rename = "response.failed")]
    Failed { response: ResponseObject<'a> },
    #[serde(rename = "error")]
    Error { code: &'static str, message: &'a str, param: Option<&'a str> },
}

impl Ev<'_> {
    /// The SSE `event:` name.
    fn name(&self) -> &'static str {
        match self {
            Self::Created { .. } => "response.created",
            Self::InProgress { .. } => "response.in_progress",
            Self::ItemAdded { .. } => "response.output_item.added",
            Self::ItemDone { .. } => "response.output_item.done",
            Self::PartAdded { .. } => "response.content_part.added",
            Self::PartDone { .. } => "response.content_part.done",
            Self::TextDelta { .. } => "response.output_text.delta",
            Self::TextDone { .. } => "response.output_text.done",
            Self::ArgsDelta { .. } => "response.function_call_arguments.delta",
            Self::ArgsDone { .. } => "response.function_call_arguments.done",
            Self::SummaryPartAdded { .. } => "response.reasoning_summary_part.added",
            Self::SummaryDelta { .. } => "response.reasoning_summary_text.delta",
            Self::SummaryDone { .. } => "response.reasoning_summary_text.done",
            Self::SummaryPartDone { .. } => "response.reasoning_summary_part.done",
            Self::Completed { .. } => "response.completed",
            Self::Incomplete { .. } => "response.incomplete",
            Self::Failed { .. } => "response.failed",
            Self::Error { .. } => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_put_type_first_and_sequence_number_last() {
        let text = sse(Ev::ArgsDelta { item_id: "fc_1", output_index: 1, delta: "{" }, 7);
        assert_eq!(
            text,
            "event: response.function_call_arguments.delta\ndata: \
             {\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_1\",\"output_index\":1,\
             \"delta\":\"{\",\"sequence_number\":7}\n\n"
        );
    }

    #[test]
    fn tool_is_called_only_for_a_user_turn() {
        let tools = json!([
            { "type": "custom", "name": "apply_patch" },
            { "type": "function", "name": "shell", "parameters": { "type": "object" } }
        ]);
        let ask = json!({ "tools": tools, "input": "list files" });
        assert_eq!(tool_to_call(&ask).and_then(|t| t.get("name")), Some(&json!("shell")));
        let ask = json!({ "tools": tools, "input": [
            { "type": "message", "role": "user", "content": [{ "type": "input_text", "text": "hi" }] }
        ] });
        assert!(tool_to_call(&ask).is_some());
        let answered = json!({ "tools": tools, "input": [
            { "type": "message", "role": "user", "content": [{ "type": "input_text", "text": "hi" }] },
            { "type": "function_call", "call_id": "c", "name": "shell", "arguments": "{}" },
            { "type": "function_call_output", "call_id": "c", "output": "ok" }
        ] });
        assert!(tool_to_call(&answered).is_none());
        assert!(tool_to_call(&json!({ "input": "hi" })).is_none());
    }

    #[test]
    fn reasoning_follows_the_request() {
        assert!(reasoning_of(&json!({}), 1).is_none());
        assert!(reasoning_of(&json!({ "reasoning": { "effort": "none" } }), 1).is_none());
        let plain = reasoning_of(&json!({ "reasoning": { "effort": "low" } }), 1).expect("reasoning");
        assert!(plain.summary.is_none() && plain.encrypted_content.is_none());
        let codex = json!({
            "reasoning": { "effort": "medium", "summary": "auto" },
            "include": ["reasoning.encrypted_content"]
        });
        let codex = reasoning_of(&codex, 1).expect("reasoning");
        assert!(codex.summary.is_some() && codex.encrypted_content.is_some());
    }
}
