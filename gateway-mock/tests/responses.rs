//! Drives the OpenAI Responses dialect over real HTTP with reqwest, with requests shaped like
//! Codex CLI's.

mod support;

use gateway_mock::{Fake200, MockBehavior, MockUsage};
use serde_json::{Value, json};
use support::*;

fn create(stream: bool) -> Value {
    json!({
        "model": "gpt-test-codex",
        "stream": stream,
        "instructions": "You are a coding agent.",
        "input": [
            { "type": "message", "role": "user", "content": [{ "type": "input_text", "text": "Say hello" }] }
        ],
        "store": false
    })
}

/// A Codex-like request: freeform and function tools, reasoning with a summary, encrypted state.
fn codex_with_tools(stream: bool) -> Value {
    let mut request = create(stream);
    request["tools"] = json!([
        { "type": "custom", "name": "apply_patch", "description": "Patch files", "format": { "type": "text" } },
        { "type": "function", "name": "get_weather", "description": "Weather", "strict": false,
          "parameters": weather_schema() }
    ]);
    request["tool_choice"] = json!("auto");
    request["parallel_tool_calls"] = json!(false);
    request["reasoning"] = json!({ "effort": "medium", "summary": "auto" });
    request["include"] = json!(["reasoning.encrypted_content"]);
    request
}

async fn post(mock_url: &str, body: &Value) -> reqwest::Response {
    post_with(&client(), mock_url, body).await
}

async fn post_with(client: &reqwest::Client, mock_url: &str, body: &Value) -> reqwest::Response {
    send(
        client
            .post(format!("{mock_url}/v1/responses"))
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-test")
            .body(body.to_string()),
    )
    .await
}

/// Parses `event: X\ndata: {...}\n\n` frames, checking that names match `data.type` and that
/// sequence numbers count up from 0 without gaps.
fn parse_sse(text: &str) -> Vec<Value> {
    let events: Vec<Value> = text
        .split("\n\n")
        .filter(|frame| !frame.is_empty())
        .map(|frame| {
            let mut lines = frame.lines();
            let event = lines.next().and_then(|l| l.strip_prefix("event: ")).expect("event line");
            let data = lines.next().and_then(|l| l.strip_prefix("data: ")).expect("data line");
            assert!(lines.next().is_none(), "one data line per event: {frame:?}");
            let data: Value = serde_json::from_str(data).expect("event data is JSON");
            assert_eq!(data["type"], event, "event name matches data.type");
            data
        })
        .collect();
    for (expected, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], expected as u64, "sequence numbers increase by one: {event}");
    }
    events
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().expect("type")).collect()
}

#[tokio::test]
async fn non_stream_text_reply_with_openai_accounting() {
    let mock = start(MockBehavior { usage: cached_usage(), ..MockBehavior::default() }).await;
    let response = post(&mock.url(), &create(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().contains_key("x-request-id"));
    let raw = text_body(response).await;
    assert!(raw.starts_with(r#"{"id":"resp_mock_"#), "{raw}");
    let body: Value = serde_json::from_str(&raw).expect("JSON");
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["model"], "gpt-test-codex");
    assert_eq!(body["error"], Value::Null);
    assert_eq!(body["incomplete_details"], Value::Null);
    assert_eq!(body["instructions"], "You are a coding agent.");
    assert_eq!(body["store"], false);
    let output = body["output"].as_array().expect("output");
    assert_eq!(output.len(), 1, "{body}");
    assert_eq!(output[0]["type"], "message");
    assert!(output[0]["id"].as_str().expect("id").starts_with("msg_mock_"));
    assert_eq!(output[0]["status"], "completed");
    assert_eq!(output[0]["role"], "assistant");
    assert_eq!(
        output[0]["content"],
        json!([{ "type": "output_text", "annotations": [], "logprobs": [], "text": "Hello from the mock upstream." }])
    );
    assert_eq!(
        body["usage"],
        json!({
            "input_tokens": CACHED_PROMPT_TOKENS,
            "input_tokens_details": { "cached_tokens": 40 },
            "output_tokens": 7,
            "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": CACHED_PROMPT_TOKENS + 7
        })
    );
}

#[tokio::test]
async fn stream_text_events_in_openai_order() {
    let mock = start(MockBehavior { chunks: 4, ..MockBehavior::default() }).await;
    let response = post(&mock.url(), &create(true)).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let text = text_body(response).await;
    assert!(
        text.starts_with(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_mock_"
        ),
        "{text}"
    );
    let events = parse_sse(&text);
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let created = &events[0]["response"];
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    assert_eq!(created["usage"], Value::Null);
    assert_eq!(events[1]["response"]["id"], created["id"]);
    let item = &events[2]["item"];
    assert_eq!(item["type"], "message");
    assert_eq!(item["status"], "in_progress");
    assert_eq!(item["content"], json!([]));
    let item_id = item["id"].clone();
    assert_eq!(events[3]["part"]["text"], "");
    let reply: String = events[4..8]
        .iter()
        .map(|e| {
            assert_eq!(e["item_id"], item_id);
            assert_eq!(e["output_index"], 0);
            assert_eq!(e["content_index"], 0);
            e["delta"].as_str().expect("delta")
        })
        .collect();
    assert_eq!(reply, "Hello from the mock upstream.");
    assert_eq!(events[8]["text"], reply);
    assert_eq!(events[9]["part"]["text"], reply);
    assert_eq!(events[10]["item"]["status"], "completed");
    assert_eq!(events[10]["item"]["content"][0]["text"], reply);
    let completed = &events[11]["response"];
    assert_eq!(completed["id"], created["id"]);
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"][0], events[10]["item"]);
    assert_eq!(completed["usage"]["input_tokens"], 25);
    assert_eq!(completed["usage"]["output_tokens"], 15);
    assert_eq!(completed["usage"]["total_tokens"], 40);
}

#[tokio::test]
async fn codex_tool_call_streams_reasoning_and_argument_pieces() {
    let mock = start(MockBehavior::default()).await;
    let text = text_body(post(&mock.url(), &codex_with_tools(true)).await).await;
    let events = parse_sse(&text);
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    // Reasoning first, at output index 0, with an encrypted state as Codex asked for.
    let reasoning = &events[9]["item"];
    assert_eq!(reasoning["type"], "reasoning");
    assert!(reasoning["id"].as_str().expect("id").starts_with("rs_mock_"));
    assert!(reasoning["encrypted_content"].is_string());
    let summary: String = events[4..7].iter().map(|e| e["delta"].as_str().expect("delta")).collect();
    assert_eq!(reasoning["summary"], json!([{ "type": "summary_text", "text": summary }]));
    assert_eq!(events[7]["text"], summary);

    // The function call, at output index 2, arguments in three pieces.
    let added = &events[18];
    assert_eq!(added["output_index"], 2);
    assert_eq!(added["item"]["type"], "function_call");
    assert_eq!(added["item"]["arguments"], "");
    assert_eq!(added["item"]["name"], "get_weather");
    let item_id = added["item"]["id"].clone();
    assert!(item_id.as_str().expect("id").starts_with("fc_mock_"));
    let arguments: String = events[19..22]
        .iter()
        .map(|e| {
            assert_eq!(e["item_id"], item_id);
            assert_eq!(e["output_index"], 2);
            e["delta"].as_str().expect("delta")
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).expect("pieces form JSON"), weather_arguments());
    assert_eq!(events[22]["arguments"], arguments);
    let call = &events[23]["item"];
    assert_eq!(call["status"], "completed");
    assert_eq!(call["arguments"], arguments);
    assert!(call["call_id"].as_str().expect("call_id").starts_with("call_mock_"));

    let completed = &events[24]["response"];
    let output = completed["output"].as_array().expect("output");
    assert_eq!(
        output.iter().map(|i| i["type"].as_str().expect("type")).collect::<Vec<_>>(),
        ["reasoning", "message", "function_call"]
    );
    assert_eq!(output[2], *call);
    assert_eq!(completed["usage"]["output_tokens"], 15);
    assert_eq!(completed["usage"]["output_tokens_details"]["reasoning_tokens"], 5);
    assert_eq!(completed["reasoning"], json!({ "effort": "medium", "summary": "auto" }));
    assert_eq!(completed["parallel_tool_calls"], false);
    assert_eq!(completed["tools"].as_array().expect("tools").len(), 2);
}

#[tokio::test]
async fn tool_call_non_stream_then_text_after_function_call_output() {
    let mock = start(MockBehavior::default()).await;
    let mut request = codex_with_tools(false);
    request.as_object_mut().expect("object").remove("reasoning");
    let body = json_body(post(&mock.url(), &request).await).await;
    let output = body["output"].as_array().expect("output");
    assert_eq!(output.len(), 2, "{body}");
    assert_eq!(output[0]["type"], "message");
    let call = &output[1];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "get_weather");
    let arguments = call["arguments"].as_str().expect("string arguments");
    assert_eq!(serde_json::from_str::<Value>(arguments).expect("JSON"), weather_arguments());

    let mut input = request["input"].as_array().expect("input").clone();
    input.push(call.clone());
    input.push(json!({ "type": "function_call_output", "call_id": call["call_id"], "output": "sunny" }));
    request["input"] = Value::Array(input);
    let body = json_body(post(&mock.url(), &request).await).await;
    let output = body["output"].as_array().expect("output");
    assert_eq!(output.len(), 1, "{body}");
    assert_eq!(output[0]["content"][0]["text"], "Hello from the mock upstream.");

    // A plain string input is a user turn too.
    request["input"] = json!("What's the weather?");
    let body = json_body(post(&mock.url(), &request).await).await;
    assert_eq!(body["output"][1]["type"], "function_call");
}

#[tokio::test]
async fn output_limit_ends_incomplete() {
    let mock = start(MockBehavior {
        reply_text: "abcdefghijklmno".to_owned(),
        usage: MockUsage { output_tokens: 15, ..MockUsage::default() },
        ..MockBehavior::default()
    })
    .await;
    let mut request = create(true);
    request["max_output_tokens"] = json!(5);
    let events = parse_sse(&text_body(post(&mock.url(), &request).await).await);
    let last = events.last().expect("events");
    assert_eq!(last["type"], "response.incomplete");
    let response = &last["response"];
    assert_eq!(response["status"], "incomplete");
    assert_eq!(response["incomplete_details"], json!({ "reason": "max_output_tokens" }));
    assert_eq!(response["max_output_tokens"], 5);
    assert_eq!(response["usage"]["output_tokens"], 5);
    assert_eq!(response["output"][0]["status"], "incomplete");
    assert_eq!(response["output"][0]["content"][0]["text"], "abcde");
}

#[tokio::test]
async fn forced_status_uses_openai_error_shape() {
    let mock =
        start(MockBehavior { force_status: Some(529), retry_after_secs: Some(3), ..MockBehavior::default() })
            .await;
    let response = post(&mock.url(), &create(true)).await;
    assert_eq!(response.status(), 529);
    assert_eq!(response.headers()["retry-after"], "3");
    let body = json_body(response).await;
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body["error"]["message"].is_string());

    mock.set_behavior(MockBehavior { force_status: Some(429), ..MockBehavior::default() });
    let response = post(&mock.url(), &create(false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(json_body(response).await["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn wrong_bearer_gets_401() {
    let mock =
        start(MockBehavior { expected_api_key: Some("sk-good".to_owned()), ..MockBehavior::default() }).await;
    let response = post(&mock.url(), &create(true)).await;
    assert_eq!(response.status(), 401);
    let body = json_body(response).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let good = send(
        client()
            .post(format!("{}/v1/responses", mock.url()))
            .header("authorization", "Bearer sk-good")
            .body(create(false).to_string()),
    )
    .await;
    assert_eq!(good.status(), 200);
}

#[tokio::test]
async fn fake_200_variants() {
    let mock = start(MockBehavior { fake_200: Some(Fake200::SseError), ..MockBehavior::default() }).await;
    let response = post(&mock.url(), &create(true)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("text/event-stream"));
    let events = parse_sse(&text_body(response).await);
    assert_eq!(types(&events), ["error", "response.failed"]);
    assert_eq!(events[0]["code"], "server_error");
    assert!(events[0]["message"].is_string());
    let failed = &events[1]["response"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["model"], "gpt-test-codex");
    assert_eq!(failed["error"]["code"], "server_error");

    mock.set_behavior(MockBehavior { fake_200: Some(Fake200::JsonError), ..MockBehavior::default() });
    let response = post(&mock.url(), &create(false)).await;
    assert_eq!(response.status(), 200);
    let body = json_body(response).await;
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body.get("output").is_none());

    mock.set_behavior(MockBehavior { fake_200: Some(Fake200::Html), ..MockBehavior::default() });
    let response = post(&mock.url(), &create(false)).await;
    assert_eq!(response.status(), 200);
    assert!(text_body(response).await.starts_with("<!DOCTYPE html>"));
}

#[tokio::test]
async fn reset_after_events_breaks_the_stream() {
    for client in [client(), h2c_client()] {
        let mock = start(MockBehavior { reset_after_events: Some(5), ..MockBehavior::default() }).await;
        let response = post_with(&client, &mock.url(), &create(true)).await;
        assert_eq!(response.status(), 200);
        let version = response.version();
        let (text, failed) = read_until_error(response).await;
        assert!(failed, "{version:?}: the body must end in an error, got {text:?}");
        let events = parse_sse(&text);
        assert_eq!(
            types(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
            ],
            "{version:?}"
        );
    }
}

#[tokio::test]
async fn input_tokens_and_bad_json() {
    let mock = start(MockBehavior::default()).await;
    let request = create(false);
    let response = send(
        client()
            .post(format!("{}/v1/responses/input_tokens", mock.url()))
            .header("authorization", "Bearer sk")
            .body(request.to_string()),
    )
    .await;
    assert_eq!(response.status(), 200);
    let expected = request.to_string().chars().count() / 4;
    assert_eq!(
        json_body(response).await,
        json!({ "object": "response.input_tokens", "input_tokens": expected })
    );
    let response = send(client().post(format!("{}/v1/responses", mock.url())).body("[1, 2]")).await;
    assert_eq!(response.status(), 400);
    assert_eq!(json_body(response).await["error"]["type"], "invalid_request_error");
    assert_eq!(mock.received().len(), 2);
    assert_eq!(mock.received()[1].path_and_query, "/v1/responses");
}
