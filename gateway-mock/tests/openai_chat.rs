//! Drives the OpenAI Chat Completions dialect over real HTTP with reqwest.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gateway_mock::{Fake200, MockBehavior, MockUsage};
use serde_json::{Value, json};
use support::*;

fn chat(stream: bool) -> Value {
    json!({
        "model": "gpt-test-1",
        "stream": stream,
        "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": "Say hello" }
        ]
    })
}

fn with_tools(mut request: Value) -> Value {
    request["tools"] = json!([
        { "type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city", "parameters": weather_schema()
        } },
        { "type": "function", "function": { "name": "second_tool", "parameters": { "type": "object" } } }
    ]);
    request
}

async fn post(mock_url: &str, body: &Value) -> reqwest::Response {
    post_with(&client(), mock_url, body).await
}

async fn post_with(client: &reqwest::Client, mock_url: &str, body: &Value) -> reqwest::Response {
    send(
        client
            .post(format!("{mock_url}/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-test")
            .body(body.to_string()),
    )
    .await
}

/// Parses `data: ...\n\n` events: JSON chunks, then the literal `[DONE]` as a string value.
fn parse_data_lines(text: &str) -> Vec<Value> {
    assert!(text.ends_with("\n\n"), "events end with a blank line: {text:?}");
    text.split("\n\n")
        .filter(|frame| !frame.is_empty())
        .map(|frame| {
            let data = frame.strip_prefix("data: ").unwrap_or_else(|| panic!("data line: {frame:?}"));
            assert!(!data.contains('\n'), "one line per event: {frame:?}");
            if data == "[DONE]" {
                Value::String("[DONE]".to_owned())
            } else {
                serde_json::from_str(data).unwrap_or_else(|err| panic!("chunk is JSON ({err}): {data}"))
            }
        })
        .collect()
}

#[tokio::test]
async fn non_stream_text_reply_with_openai_accounting() {
    let mock = start(MockBehavior { usage: cached_usage(), ..MockBehavior::default() }).await;
    let response = post(&mock.url(), &chat(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let request_id = response.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert!(request_id.starts_with("req_mock_"), "{request_id}");
    let raw = text_body(response).await;
    assert!(raw.starts_with(r#"{"id":"chatcmpl-mock"#), "{raw}");
    let body: Value = serde_json::from_str(&raw).expect("JSON");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().expect("created") > 1_700_000_000);
    assert_eq!(body["model"], "gpt-test-1");
    assert_eq!(
        body["choices"],
        json!([{
            "index": 0,
            "message": {
                "role": "assistant", "content": "Hello from the mock upstream.", "refusal": null, "annotations": []
            },
            "logprobs": null,
            "finish_reason": "stop"
        }])
    );
    assert_eq!(
        body["usage"],
        json!({
            "prompt_tokens": CACHED_PROMPT_TOKENS,
            "completion_tokens": 7,
            "total_tokens": CACHED_PROMPT_TOKENS + 7,
            "prompt_tokens_details": { "cached_tokens": 40, "audio_tokens": 0 },
            "completion_tokens_details": {
                "reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
            }
        })
    );
    let seen = mock.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path_and_query, "/v1/chat/completions");
    assert_eq!(seen[0].header("authorization"), Some("Bearer sk-test"));
    assert_eq!(seen[0].json(), Some(chat(false)));
}

#[tokio::test]
async fn model_override_and_reply_text() {
    let mock = start(MockBehavior {
        reply_text: "Custom words".to_owned(),
        model_override: Some("gpt-override".to_owned()),
        ..MockBehavior::default()
    })
    .await;
    let body = json_body(post(&mock.url(), &chat(false)).await).await;
    assert_eq!(body["model"], "gpt-override");
    assert_eq!(body["choices"][0]["message"]["content"], "Custom words");
}

#[tokio::test]
async fn stream_with_include_usage_ends_with_usage_chunk_and_done() {
    let mock = start(MockBehavior { chunks: 4, usage: cached_usage(), ..MockBehavior::default() }).await;
    let mut request = chat(true);
    request["stream_options"] = json!({ "include_usage": true });
    let response = post(&mock.url(), &request).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    assert!(response.headers().contains_key("x-request-id"));
    let text = text_body(response).await;
    assert!(text.starts_with("data: {\"id\":\"chatcmpl-mock"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let events = parse_data_lines(&text);
    // role chunk, 4 content chunks, finish chunk, usage chunk, [DONE]
    assert_eq!(events.len(), 8, "{text}");
    assert_eq!(events[7], "[DONE]");
    let chunks = &events[..7];
    let id = &chunks[0]["id"];
    for chunk in chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(&chunk["id"], id, "every chunk has the same id");
        assert_eq!(chunk["model"], "gpt-test-1");
    }
    assert_eq!(
        chunks[0]["choices"],
        json!([{
            "index": 0,
            "delta": { "role": "assistant", "content": "", "refusal": null },
            "logprobs": null,
            "finish_reason": null
        }])
    );
    let reply: String = chunks[1..5]
        .iter()
        .map(|c| {
            assert_eq!(c["choices"][0]["finish_reason"], Value::Null);
            c["choices"][0]["delta"]["content"].as_str().expect("content delta")
        })
        .collect();
    assert_eq!(reply, "Hello from the mock upstream.");
    assert_eq!(chunks[5]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
    for chunk in &chunks[..6] {
        assert_eq!(chunk["usage"], Value::Null, "usage is null before the usage chunk");
        assert!(chunk.as_object().expect("object").contains_key("usage"));
    }
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(chunks[6]["usage"]["prompt_tokens"], CACHED_PROMPT_TOKENS);
    assert_eq!(chunks[6]["usage"]["completion_tokens"], 7);
    assert_eq!(chunks[6]["usage"]["total_tokens"], CACHED_PROMPT_TOKENS + 7);
    assert_eq!(chunks[6]["usage"]["prompt_tokens_details"]["cached_tokens"], 40);
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage() {
    let mock = start(MockBehavior::default()).await;
    let text = text_body(post(&mock.url(), &chat(true)).await).await;
    let events = parse_data_lines(&text);
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    let chunks = &events[..events.len() - 1];
    assert_eq!(chunks.len(), 5, "role, 3 deltas, finish: {text}");
    assert!(chunks.iter().all(|c| !c.as_object().expect("object").contains_key("usage")), "{text}");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn chunk_delay_paces_deltas_as_separate_frames() {
    let delay = Duration::from_millis(80);
    let mock = start(MockBehavior { chunks: 3, chunk_delay: delay, ..MockBehavior::default() }).await;
    let response = post(&mock.url(), &chat(true)).await;
    let mut frames = response.bytes_stream();
    let mut arrivals = Vec::new();
    while let Some(frame) = tokio::time::timeout(DEADLINE, frames.next()).await.expect("frame in time") {
        let frame = frame.expect("frame");
        let text = std::str::from_utf8(&frame).expect("utf-8");
        for _ in 0..text.matches("{\"content\":\"").count() {
            arrivals.push(Instant::now());
        }
    }
    assert_eq!(arrivals.len(), 3);
    let spread = arrivals[2] - arrivals[0];
    assert!(spread >= delay * 2 - Duration::from_millis(10), "deltas arrived within {spread:?}");
}

#[tokio::test]
async fn tool_call_streams_arguments_in_indexed_pieces() {
    let mock = start(MockBehavior::default()).await;
    let mut request = with_tools(chat(true));
    request["stream_options"] = json!({ "include_usage": true });
    let text = text_body(post(&mock.url(), &request).await).await;
    let events = parse_data_lines(&text);
    assert_eq!(events.len(), 7, "start, 3 argument pieces, finish, usage, [DONE]: {text}");
    let start = &events[0]["choices"][0]["delta"];
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["content"], Value::Null);
    let announced = &start["tool_calls"][0];
    assert_eq!(announced["index"], 0);
    assert!(announced["id"].as_str().expect("id").starts_with("call_mock_"));
    assert_eq!(announced["type"], "function");
    assert_eq!(announced["function"], json!({ "name": "get_weather", "arguments": "" }));
    let arguments: String = events[1..4]
        .iter()
        .map(|e| {
            let call = &e["choices"][0]["delta"]["tool_calls"][0];
            assert_eq!(call["index"], 0);
            assert!(call.get("id").is_none(), "only the first piece names the call: {call}");
            let piece = call["function"]["arguments"].as_str().expect("arguments piece");
            assert!(!piece.is_empty());
            piece
        })
        .collect();
    let arguments: Value = serde_json::from_str(&arguments).expect("pieces concatenate to JSON");
    assert_eq!(arguments, weather_arguments());
    assert_eq!(events[4]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(events[5]["choices"], json!([]));
    assert_eq!(events[5]["usage"]["completion_tokens"], 15);
    assert_eq!(events[6], "[DONE]");
}

#[tokio::test]
async fn tool_call_non_stream_then_text_after_tool_message() {
    let mock = start(MockBehavior::default()).await;
    let request = with_tools(chat(false));
    let body = json_body(post(&mock.url(), &request).await).await;
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments = call["function"]["arguments"].as_str().expect("arguments are a JSON string");
    assert_eq!(serde_json::from_str::<Value>(arguments).expect("JSON"), weather_arguments());

    let mut followup = request.clone();
    followup["messages"] = json!([
        { "role": "user", "content": "Weather in Paris?" },
        choice["message"],
        { "role": "tool", "tool_call_id": call["id"], "content": "sunny" }
    ]);
    let body = json_body(post(&mock.url(), &followup).await).await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the mock upstream.");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());

    let mut named = request.clone();
    named["tool_choice"] = json!({ "type": "function", "function": { "name": "second_tool" } });
    let body = json_body(post(&mock.url(), &named).await).await;
    assert_eq!(body["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "second_tool");
    assert_eq!(body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{}");

    let mut refused = request;
    refused["tool_choice"] = json!("none");
    let body = json_body(post(&mock.url(), &refused).await).await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn output_limit_and_reasoning_effort_shape_usage() {
    let mock = start(MockBehavior {
        reply_text: "abcdefghijklmno".to_owned(),
        usage: MockUsage { output_tokens: 15, ..MockUsage::default() },
        ..MockBehavior::default()
    })
    .await;
    let mut request = chat(false);
    request["max_completion_tokens"] = json!(5);
    let body = json_body(post(&mock.url(), &request).await).await;
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["choices"][0]["message"]["content"], "abcde");
    assert_eq!(body["usage"]["completion_tokens"], 5);

    let mut request = chat(false);
    request["reasoning_effort"] = json!("high");
    let body = json_body(post(&mock.url(), &request).await).await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 15);
    assert_eq!(body["usage"]["completion_tokens_details"]["reasoning_tokens"], 5);
}

#[tokio::test]
async fn forced_status_uses_openai_error_shape() {
    let mock =
        start(MockBehavior { force_status: Some(429), retry_after_secs: Some(7), ..MockBehavior::default() })
            .await;
    let response = post(&mock.url(), &chat(true)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert!(response.headers().contains_key("x-request-id"));
    let raw = text_body(response).await;
    assert!(raw.starts_with(r#"{"error":{"message":"#), "{raw}");
    let body: Value = serde_json::from_str(&raw).expect("JSON");
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["param"], Value::Null);
    assert!(body.get("type").is_none(), "no Anthropic envelope: {body}");
    assert_eq!(mock.received().len(), 1, "forced answers are recorded too");

    for (status, kind, code) in [
        (400, "invalid_request_error", Value::Null),
        (401, "invalid_request_error", json!("invalid_api_key")),
        (404, "invalid_request_error", json!("model_not_found")),
        (500, "server_error", Value::Null),
        (503, "server_error", Value::Null),
    ] {
        mock.set_behavior(MockBehavior { force_status: Some(status), ..MockBehavior::default() });
        let response = post(&mock.url(), &chat(false)).await;
        assert_eq!(response.status(), status);
        assert!(!response.headers().contains_key("retry-after"));
        let body = json_body(response).await;
        assert_eq!(body["error"]["type"], kind, "status {status}");
        assert_eq!(body["error"]["code"], code, "status {status}");
    }
}

#[tokio::test]
async fn wrong_bearer_gets_401() {
    let mock = start(MockBehavior {
        expected_api_key: Some("sk-good-key-123".to_owned()),
        ..MockBehavior::default()
    })
    .await;
    let url = format!("{}/v1/chat/completions", mock.url());
    let attempt = |header: Option<(&'static str, &'static str)>| {
        let mut request = client().post(url.clone()).body(chat(false).to_string());
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        send(request)
    };
    for header in [
        None,
        Some(("authorization", "Bearer sk-bad-key-456")),
        // OpenAI reads only the bearer token.
        Some(("x-api-key", "sk-good-key-123")),
    ] {
        let response = attempt(header).await;
        assert_eq!(response.status(), 401, "{header:?}");
        let body = json_body(response).await;
        assert_eq!(body["error"]["code"], "invalid_api_key", "{header:?}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(!message.contains("sk-bad-key-456"), "the key is masked: {message}");
    }
    assert_eq!(attempt(Some(("authorization", "Bearer sk-good-key-123"))).await.status(), 200);
}

#[tokio::test]
async fn fake_200_variants() {
    let mock = start(MockBehavior { fake_200: Some(Fake200::Html), ..MockBehavior::default() }).await;
    let response = post(&mock.url(), &chat(true)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("text/html"));
    assert!(text_body(response).await.contains("<html>"));

    mock.set_behavior(MockBehavior { fake_200: Some(Fake200::JsonError), ..MockBehavior::default() });
    let response = post(&mock.url(), &chat(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = json_body(response).await;
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body.get("choices").is_none());

    mock.set_behavior(MockBehavior { fake_200: Some(Fake200::SseError), ..MockBehavior::default() });
    let response = post(&mock.url(), &chat(true)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("text/event-stream"));
    let text = text_body(response).await;
    let events = parse_data_lines(&text);
    assert_eq!(events.len(), 1, "{text}");
    assert_eq!(events[0]["error"]["type"], "server_error");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn reset_after_events_breaks_the_stream() {
    for client in [client(), h2c_client()] {
        let mock = start(MockBehavior { reset_after_events: Some(3), ..MockBehavior::default() }).await;
        let response = post_with(&client, &mock.url(), &chat(true)).await;
        assert_eq!(response.status(), 200);
        let version = response.version();
        let (text, failed) = read_until_error(response).await;
        assert!(failed, "{version:?}: the body must end in an error, got {text:?}");
        let events = parse_data_lines(&text);
        assert_eq!(events.len(), 3, "{version:?}: {text}");
        assert!(!text.contains("[DONE]"));

        mock.set_behavior(MockBehavior::default());
        let response = post_with(&client, &mock.url(), &chat(true)).await;
        let (text, failed) = read_until_error(response).await;
        assert!(!failed, "{version:?}");
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
}

#[tokio::test]
async fn models_list_shape_follows_the_headers() {
    let mock = start(MockBehavior::default()).await;
    let openai = json_body(
        send(client().get(format!("{}/v1/models", mock.url())).header("authorization", "Bearer sk")).await,
    )
    .await;
    assert_eq!(openai["object"], "list");
    let data = openai["data"].as_array().expect("data");
    assert!(data.len() >= 2);
    for model in data {
        assert_eq!(model["object"], "model");
        assert!(model["id"].is_string() && model["created"].is_u64() && model["owned_by"].is_string());
    }
    let one =
        send(client().get(format!("{}/v1/models/gpt-4.1", mock.url())).header("authorization", "Bearer sk"))
            .await;
    assert_eq!(json_body(one).await["id"], "gpt-4.1");
    let missing =
        send(client().get(format!("{}/v1/models/gpt-nope", mock.url())).header("authorization", "Bearer sk"))
            .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(json_body(missing).await["error"]["code"], "model_not_found");

    let anthropic = json_body(
        send(
            client()
                .get(format!("{}/v1/models", mock.url()))
                .header("authorization", "Bearer sk")
                .header("anthropic-version", "2023-06-01"),
        )
        .await,
    )
    .await;
    assert_eq!(anthropic["data"][0]["type"], "model");
    assert!(anthropic.get("object").is_none());
}

#[tokio::test]
async fn bad_json_and_unknown_routes() {
    let mock = start(MockBehavior::default()).await;
    let response =
        send(client().post(format!("{}/v1/chat/completions", mock.url())).body("{\"model\": ")).await;
    assert_eq!(response.status(), 400);
    assert_eq!(json_body(response).await["error"]["type"], "invalid_request_error");
    let response = send(client().get(format!("{}/v1/chat/completions", mock.url()))).await;
    assert_eq!(response.status(), 404);
    assert!(json_body(response).await["error"]["message"].is_string());
}
