//! Drives the mock over real HTTP with reqwest, the way the gateway's upstream client will.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gateway_mock::{MockBehavior, MockUpstream, MockUsage};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(10);

fn client() -> reqwest::Client {
    // Plain HTTP only, but reqwest without a built-in provider refuses to build otherwise.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("build client")
}

fn h2c_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().http2_prior_knowledge().build().expect("build h2c client")
}

async fn start(behavior: MockBehavior) -> MockUpstream {
    MockUpstream::start_on("127.0.0.1:0".parse().expect("addr"), behavior).await.expect("start mock")
}

async fn post(client: &reqwest::Client, url: String, body: &Value) -> reqwest::Response {
    tokio::time::timeout(
        DEADLINE,
        client
            .post(url)
            .header("content-type", "application/json")
            .header("x-api-key", "sk-test")
            .header("anthropic-version", "2023-06-01")
            .body(body.to_string())
            .send(),
    )
    .await
    .expect("response in time")
    .expect("send request")
}

async fn json_body(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.expect("read body");
    serde_json::from_slice(&bytes).expect("JSON body")
}

/// Parses `event: X\ndata: {...}\n\n` frames, checking that `event` names match `data.type`.
fn parse_sse(text: &str) -> Vec<Value> {
    text.split("\n\n")
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
        .collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["type"].as_str().expect("type") {
            "content_block_delta" => {
                format!("delta:{}", e["delta"]["type"].as_str().expect("delta type"))
            }
            other => other.to_owned(),
        })
        .collect()
}

fn chat(stream: bool) -> Value {
    json!({
        "model": "claude-test-1",
        "max_tokens": 64,
        "stream": stream,
        "messages": [{ "role": "user", "content": "Say hello" }]
    })
}

fn weather_tools() -> Value {
    json!([{
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {
                "location": { "type": "string" },
                "days": { "type": "integer" },
                "metric": { "type": "boolean" }
            },
            "required": ["location"]
        }
    }, {
        "name": "second_tool",
        "input_schema": { "type": "object", "properties": {} }
    }])
}

#[tokio::test]
async fn non_stream_text_reply() {
    let mock = start(MockBehavior::default()).await;
    let response = post(&client(), format!("{}/v1/messages?beta=true", mock.url()), &chat(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let request_id = response.headers()["request-id"].to_str().expect("ascii");
    assert!(request_id.starts_with("req_mock_"), "{request_id}");
    let raw = response.text().await.expect("body");
    // Field order as Anthropic sends it, for clients that peek at the start of a payload.
    assert!(raw.starts_with(r#"{"id":"msg_mock_"#), "{raw}");
    assert!(raw.contains(r#""content":[{"type":"text","#), "{raw}");
    let body: Value = serde_json::from_str(&raw).expect("JSON body");
    assert!(body["id"].as_str().expect("id").starts_with("msg_mock_"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-test-1");
    assert_eq!(body["content"], json!([{ "type": "text", "text": "Hello from the mock upstream." }]));
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["stop_sequence"], Value::Null);
    assert_eq!(
        body["usage"],
        json!({
            "input_tokens": 25, "output_tokens": 15,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "cache_creation": { "ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0 }
        })
    );
}

#[tokio::test]
async fn behavior_controls_text_model_and_usage() {
    let mock = start(MockBehavior::default()).await;
    mock.set_behavior(MockBehavior {
        reply_text: "Custom words".to_owned(),
        model_override: Some("claude-override".to_owned()),
        usage: MockUsage {
            input_tokens: 100,
            output_tokens: 7,
            cache_creation_input_tokens: 30,
            cache_creation_5m_input_tokens: 10,
            cache_creation_1h_input_tokens: 20,
            cache_read_input_tokens: 40,
        },
        ..MockBehavior::default()
    });
    assert_eq!(mock.behavior().reply_text, "Custom words");
    let body = json_body(post(&client(), format!("{}/v1/messages", mock.url()), &chat(false)).await).await;
    assert_eq!(body["content"][0]["text"], "Custom words");
    assert_eq!(body["model"], "claude-override");
    assert_eq!(body["usage"]["input_tokens"], 100);
    assert_eq!(body["usage"]["output_tokens"], 7);
    assert_eq!(body["usage"]["cache_creation_input_tokens"], 30);
    assert_eq!(body["usage"]["cache_read_input_tokens"], 40);
    assert_eq!(body["usage"]["cache_creation"]["ephemeral_5m_input_tokens"], 10);
    assert_eq!(body["usage"]["cache_creation"]["ephemeral_1h_input_tokens"], 20);
}

#[tokio::test]
async fn stream_events_in_anthropic_order() {
    let mock = start(MockBehavior { chunks: 4, ..MockBehavior::default() }).await;
    let response = post(&client(), format!("{}/v1/messages", mock.url()), &chat(true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().contains_key("request-id"));
    let text = response.text().await.expect("stream body");
    assert!(
        text.starts_with(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock_"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        )
    );
    let events = parse_sse(&text);
    assert_eq!(
        types(&events),
        [
            "message_start",
            "ping",
            "content_block_start",
            "delta:text_delta",
            "delta:text_delta",
            "delta:text_delta",
            "delta:text_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let start = &events[0]["message"];
    assert!(start["id"].as_str().expect("id").starts_with("msg_mock_"));
    assert_eq!(start["model"], "claude-test-1");
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["input_tokens"], 25);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(start["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(start["usage"]["cache_creation"]["ephemeral_5m_input_tokens"], 0);
    assert_eq!(events[2]["content_block"], json!({ "type": "text", "text": "" }));
    let reply: String = events[3..7]
        .iter()
        .map(|e| {
            assert_eq!(e["index"], 0);
            e["delta"]["text"].as_str().expect("text")
        })
        .collect();
    assert_eq!(reply, "Hello from the mock upstream.");
    assert_eq!(events[7], json!({ "type": "content_block_stop", "index": 0 }));
    assert_eq!(
        events[8],
        json!({
            "type": "message_delta",
            "delta": { "stop_reason": "end_turn", "stop_sequence": null },
            "usage": { "output_tokens": 15 }
        })
    );
}

#[tokio::test]
async fn chunk_delay_paces_deltas_as_separate_frames() {
    let delay = Duration::from_millis(80);
    let mock = start(MockBehavior { chunks: 3, chunk_delay: delay, ..MockBehavior::default() }).await;
    let response = post(&client(), format!("{}/v1/messages", mock.url()), &chat(true)).await;
    let mut frames = response.bytes_stream();
    let mut delta_arrivals = Vec::new();
    while let Some(frame) = tokio::time::timeout(DEADLINE, frames.next()).await.expect("frame in time") {
        let frame = frame.expect("frame");
        let text = std::str::from_utf8(&frame).expect("utf-8");
        for _ in 0..text.matches("\"text_delta\"").count() {
            delta_arrivals.push(Instant::now());
        }
    }
    assert_eq!(delta_arrivals.len(), 3);
    let spread = delta_arrivals[2] - delta_arrivals[0];
    // Two pauses between three deltas; arrival gaps prove each delta was its own flushed frame.
    assert!(spread >= delay * 2 - Duration::from_millis(10), "deltas arrived within {spread:?}");
}

#[tokio::test]
async fn first_byte_delay_holds_back_the_headers() {
    let mock =
        start(MockBehavior { first_byte_delay: Duration::from_millis(200), ..MockBehavior::default() }).await;
    let started = Instant::now();
    let response = post(&client(), format!("{}/v1/messages", mock.url()), &chat(false)).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(190), "{:?}", started.elapsed());
}

#[tokio::test]
async fn tool_use_streams_input_json_deltas() {
    let mock = start(MockBehavior::default()).await;
    let mut request = chat(true);
    request["tools"] = weather_tools();
    let response = post(&client(), format!("{}/v1/messages", mock.url()), &request).await;
    assert_eq!(response.status(), 200);
    let events = parse_sse(&response.text().await.expect("stream body"));
    let kinds = types(&events);
    let tool_start = events
        .iter()
        .position(|e| e["type"] == "content_block_start" && e["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    let block = &events[tool_start]["content_block"];
    assert!(block["id"].as_str().expect("id").starts_with("toolu_mock_"));
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({}));
    let index = events[tool_start]["index"].clone();
    assert_eq!(index, 1, "a short text block comes first");
    assert_eq!(kinds[..3], ["message_start", "ping", "content_block_start"]);
    assert_eq!(
        kinds[tool_start..],
        [
            "content_block_start",
            "delta:input_json_delta",
            "delta:input_json_delta",
            "delta:input_json_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let partial: String = events[tool_start + 1..tool_start + 4]
        .iter()
        .map(|e| {
            assert_eq!(e["index"], index);
            e["delta"]["partial_json"].as_str().expect("partial_json")
        })
        .collect();
    let input: Value = serde_json::from_str(&partial).expect("concatenated partial_json parses");
    assert_eq!(input, json!({ "location": "mock", "days": 1, "metric": true }));
    assert_eq!(events[tool_start + 4], json!({ "type": "content_block_stop", "index": 1 }));
    let delta = events.iter().find(|e| e["type"] == "message_delta").expect("message_delta");
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn tool_use_non_stream_then_text_after_tool_result() {
    let mock = start(MockBehavior::default()).await;
    let url = format!("{}/v1/messages", mock.url());
    let mut request = chat(false);
    request["tools"] = weather_tools();
    let body = json_body(post(&client(), url.clone(), &request).await).await;
    assert_eq!(body["stop_reason"], "tool_use");
    let content = body["content"].as_array().expect("content");
    assert_eq!(content[0]["type"], "text");
    let tool_use = content.last().expect("tool_use block");
    assert_eq!(tool_use["type"], "tool_use");
    assert_eq!(tool_use["name"], "get_weather");
    assert_eq!(tool_use["input"], json!({ "location": "mock", "days": 1, "metric": true }));
    let tool_id = tool_use["id"].as_str().expect("id").to_owned();
    assert!(tool_id.starts_with("toolu_mock_"));

    request["messages"] = json!([
        { "role": "user", "content": "Weather in Paris?" },
        { "role": "assistant", "content": body["content"] },
        { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": tool_id, "content": "sunny" }] }
    ]);
    let body = json_body(post(&client(), url, &request).await).await;
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["content"], json!([{ "type": "text", "text": "Hello from the mock upstream." }]));
}

#[tokio::test]
async fn forced_status_with_retry_after_is_recorded() {
    let mock =
        start(MockBehavior { force_status: Some(429), retry_after_secs: Some(7), ..MockBehavior::default() })
            .await;
    let response = post(&client(), format!("{}/v1/messages", mock.url()), &chat(true)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let request_id = response.headers()["request-id"].to_str().expect("ascii").to_owned();
    let raw = response.text().await.expect("body");
    assert!(raw.starts_with(r#"{"type":"error","error":{"type":"rate_limit_error","#), "{raw}");
    let body: Value = serde_json::from_str(&raw).expect("JSON body");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["message"].is_string());
    assert_eq!(body["request_id"], request_id);
    assert_eq!(mock.received().len(), 1, "forced answers are recorded too");

    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (500, "api_error"),
        (502, "api_error"),
        (529, "overloaded_error"),
    ] {
        mock.set_behavior(MockBehavior { force_status: Some(status), ..MockBehavior::default() });
        let response = client().get(format!("{}/v1/models", mock.url())).send().await.expect("send");
        assert_eq!(response.status(), status);
        assert!(!response.headers().contains_key("retry-after"));
        assert_eq!(json_body(response).await["error"]["type"], kind, "status {status}");
    }
}

#[tokio::test]
async fn wrong_api_key_gets_401() {
    let mock =
        start(MockBehavior { expected_api_key: Some("sk-good".to_owned()), ..MockBehavior::default() }).await;
    let url = format!("{}/v1/messages", mock.url());
    let send = |key_header: Option<(&'static str, &'static str)>| {
        let mut request = client().post(url.clone()).body(chat(false).to_string());
        if let Some((name, value)) = key_header {
            request = request.header(name, value);
        }
        request.send()
    };
    for header in [None, Some(("x-api-key", "sk-bad")), Some(("authorization", "Bearer sk-bad"))] {
        let response = send(header).await.expect("send");
        assert_eq!(response.status(), 401, "{header:?}");
        assert_eq!(json_body(response).await["error"]["type"], "authentication_error");
    }
    for header in [Some(("x-api-key", "sk-good")), Some(("authorization", "Bearer sk-good"))] {
        assert_eq!(send(header).await.expect("send").status(), 200, "{header:?}");
    }
}

/// Reads a streaming body to its end, returning what arrived and whether it ended in an error.
async fn read_until_error(response: reqwest::Response) -> (String, bool) {
    let mut frames = response.bytes_stream();
    let mut text = String::new();
    while let Some(frame) = tokio::time::timeout(DEADLINE, frames.next()).await.expect("frame in time") {
        match frame {
            Ok(bytes) => text.push_str(std::str::from_utf8(&bytes).expect("utf-8")),
            Err(_) => return (text, true),
        }
    }
    (text, false)
}

#[tokio::test]
async fn reset_after_events_breaks_the_body() {
    for client in [client(), h2c_client()] {
        let mock = start(MockBehavior { reset_after_events: Some(4), ..MockBehavior::default() }).await;
        let response = post(&client, format!("{}/v1/messages", mock.url()), &chat(true)).await;
        assert_eq!(response.status(), 200);
        let version = response.version();
        let (text, failed) = read_until_error(response).await;
        assert!(failed, "{version:?}: the body must end in an error, got {text:?}");
        let events = parse_sse(&text);
        assert_eq!(
            types(&events),
            ["message_start", "ping", "content_block_start", "delta:text_delta"],
            "{version:?}"
        );

        // The same behavior without reset completes cleanly, on the same client.
        mock.set_behavior(MockBehavior::default());
        let response = post(&client, format!("{}/v1/messages", mock.url()), &chat(true)).await;
        let (text, failed) = read_until_error(response).await;
        assert!(!failed, "{version:?}");
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }
}

#[tokio::test]
async fn h2c_serves_json_and_streams() {
    let mock = start(MockBehavior::default()).await;
    let client = h2c_client();
    let response = post(&client, format!("{}/v1/messages", mock.url()), &chat(false)).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(json_body(response).await["stop_reason"], "end_turn");
    let response = post(&client, format!("{}/v1/messages", mock.url()), &chat(true)).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let events = parse_sse(&response.text().await.expect("body"));
    assert_eq!(events.last().expect("events")["type"], "message_stop");
}

#[tokio::test]
async fn count_tokens_estimates_from_the_body() {
    let mock = start(MockBehavior::default()).await;
    let url = format!("{}/v1/messages/count_tokens", mock.url());
    let request =
        json!({ "model": "claude-test-1", "messages": [{ "role": "user", "content": "x".repeat(400) }] });
    let response = post(&client(), url.clone(), &request).await;
    assert_eq!(response.status(), 200);
    let expected = request.to_string().chars().count() / 4;
    assert_eq!(json_body(response).await, json!({ "input_tokens": expected }));
    let tiny = post(&client(), url.clone(), &json!({})).await;
    assert_eq!(json_body(tiny).await, json!({ "input_tokens": 1 }));
    let response = client().post(url).body("{not json").send().await.expect("send");
    assert_eq!(response.status(), 400);
    assert_eq!(json_body(response).await["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn models_list_and_lookup() {
    let mock = start(MockBehavior::default()).await;
    let response = client().get(format!("{}/v1/models", mock.url())).send().await.expect("send");
    assert_eq!(response.status(), 200);
    let body = json_body(response).await;
    let data = body["data"].as_array().expect("data");
    assert!(data.len() >= 2);
    assert!(data.iter().all(|m| m["type"] == "model"
        && m["id"].is_string()
        && m["display_name"].is_string()
        && m["created_at"].is_string()));
    let sonnet = data.iter().find(|m| m["id"] == "claude-sonnet-4-5").expect("sonnet 4.5 listed");
    assert_eq!(sonnet["display_name"], "Claude Sonnet 4.5");
    assert_eq!(body["has_more"], false);
    assert_eq!(body["first_id"], data[0]["id"]);
    assert_eq!(body["last_id"], data[data.len() - 1]["id"]);
    let one = client().get(format!("{}/v1/models/claude-sonnet-4-5", mock.url())).send().await.expect("send");
    assert_eq!(json_body(one).await, *sonnet);
}

#[tokio::test]
async fn unknown_routes_and_bad_json() {
    let mock = start(MockBehavior::default()).await;
    let response = client().get(format!("{}/v1/nothing", mock.url())).send().await.expect("send");
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("request-id"));
    let body = json_body(response).await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");
    let response = client().get(format!("{}/v1/messages", mock.url())).send().await.expect("send");
    assert_eq!(response.status(), 404);
    let response =
        client().post(format!("{}/v1/messages", mock.url())).body("{\"model\": ").send().await.expect("send");
    assert_eq!(response.status(), 400);
    assert_eq!(json_body(response).await["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn requests_are_recorded_in_order() {
    let mock = start(MockBehavior::default()).await;
    let client = client();
    let waiter = {
        let mock = mock.clone();
        tokio::spawn(async move { mock.wait_for_requests(2).await })
    };
    post(&client, format!("{}/v1/messages?beta=true", mock.url()), &chat(false)).await;
    client.get(format!("{}/v1/models", mock.url())).header("x-custom", "yes").send().await.expect("send");
    let seen =
        tokio::time::timeout(DEADLINE, waiter).await.expect("two requests in time").expect("waiter task");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path_and_query, "/v1/messages?beta=true");
    assert_eq!(seen[0].header("x-api-key"), Some("sk-test"));
    assert_eq!(seen[0].header("Anthropic-Version"), Some("2023-06-01"));
    assert_eq!(seen[0].json(), Some(chat(false)));
    assert_eq!(seen[1].method, "GET");
    assert_eq!(seen[1].path_and_query, "/v1/models");
    assert_eq!(seen[1].header("x-custom"), Some("yes"));
    assert!(seen[1].body.is_empty());
    assert_eq!(seen[1].json(), None);
    assert_eq!(mock.received().len(), 2);
    mock.clear_received();
    assert!(mock.received().is_empty());
    assert!(format!("{mock:?}").contains("MockUpstream"));
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let mock = start(MockBehavior::default()).await;
    let url = format!("{}/v1/models", mock.url());
    assert_eq!(client().get(&url).send().await.expect("send").status(), 200);
    mock.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let result = tokio::time::timeout(DEADLINE, client().get(&url).send()).await.expect("fails in time");
    assert!(result.is_err(), "still answering after shutdown: {result:?}");
}

/// Kills the child process even when an assertion fails first.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_serves_and_announces_its_address() {
    use std::io::BufRead;

    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
            .args(["--listen", "127.0.0.1:0", "--chunks", "5"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn mock-upstream"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let line = tokio::time::timeout(
        DEADLINE,
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout).read_line(&mut line).map(|_| line)
        }),
    )
    .await
    .expect("announcement in time")
    .expect("reader task")
    .expect("read stdout");
    let url = line.trim_end().strip_prefix("listening on ").expect("announcement line").to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let response = post(&client(), format!("{url}/v1/messages"), &chat(true)).await;
    let events = parse_sse(&response.text().await.expect("body"));
    assert_eq!(types(&events).iter().filter(|t| *t == "delta:text_delta").count(), 5);
}
