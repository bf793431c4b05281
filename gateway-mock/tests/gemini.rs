//! Drives the Gemini dialect over real HTTP with reqwest.

mod support;

use gateway_mock::{Fake200, MockBehavior, MockUsage};
use serde_json::{Value, json};
use support::*;

const MODEL: &str = "gemini-2.5-flash";

fn generate() -> Value {
    json!({
        "systemInstruction": { "parts": [{ "text": "Be brief." }] },
        "contents": [{ "role": "user", "parts": [{ "text": "Say hello" }] }],
        "generationConfig": { "temperature": 0.2 }
    })
}

fn with_tools(mut request: Value) -> Value {
    // Gemini's OpenAPI-style schema spells types in upper case.
    request["tools"] = json!([{ "functionDeclarations": [{
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "OBJECT",
            "properties": {
                "location": { "type": "STRING" },
                "days": { "type": "INTEGER" },
                "metric": { "type": "BOOLEAN" }
            },
            "required": ["location"]
        }
    }, { "name": "second_tool" }] }]);
    request
}

/// POSTs to `{base}/{version}/models/{MODEL}:{method}` with the key in `x-goog-api-key`.
async fn call(mock_url: &str, method_and_query: &str, body: &Value) -> reqwest::Response {
    call_with(&client(), mock_url, method_and_query, body).await
}

async fn call_with(
    client: &reqwest::Client,
    mock_url: &str,
    method_and_query: &str,
    body: &Value,
) -> reqwest::Response {
    send(
        client
            .post(format!("{mock_url}/v1beta/models/{MODEL}:{method_and_query}"))
            .header("content-type", "application/json")
            .header("x-goog-api-key", "AIza-test")
            .body(body.to_string()),
    )
    .await
}

/// Parses Gemini's SSE: `data: {...}` events separated by CRLF blank lines, no `[DONE]`.
fn parse_sse(text: &str) -> Vec<Value> {
    assert!(text.ends_with("\r\n\r\n"), "events end with a CRLF blank line: {text:?}");
    text.split("\r\n\r\n")
        .filter(|frame| !frame.is_empty())
        .map(|frame| {
            let data = frame.strip_prefix("data: ").unwrap_or_else(|| panic!("data line: {frame:?}"));
            assert!(!data.contains('\n'), "one line per event: {frame:?}");
            serde_json::from_str(data).unwrap_or_else(|err| panic!("chunk is JSON ({err}): {data}"))
        })
        .collect()
}

fn parts(chunk: &Value) -> &Vec<Value> {
    chunk["candidates"][0]["content"]["parts"].as_array().expect("parts")
}

#[tokio::test]
async fn generate_content_text_with_gemini_accounting() {
    let mock = start(MockBehavior { usage: cached_usage(), ..MockBehavior::default() }).await;
    let response = call(&mock.url(), "generateContent", &generate()).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let raw = text_body(response).await;
    assert!(raw.starts_with(r#"{"candidates":[{"content":{"parts":[{"text":"#), "{raw}");
    let body: Value = serde_json::from_str(&raw).expect("JSON");
    assert_eq!(
        body["candidates"],
        json!([{
            "content": { "parts": [{ "text": "Hello from the mock upstream." }], "role": "model" },
            "finishReason": "STOP",
            "index": 0
        }])
    );
    assert_eq!(
        body["usageMetadata"],
        json!({
            "promptTokenCount": CACHED_PROMPT_TOKENS,
            "candidatesTokenCount": 7,
            "totalTokenCount": CACHED_PROMPT_TOKENS + 7,
            "cachedContentTokenCount": 40,
            "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": CACHED_PROMPT_TOKENS }]
        })
    );
    assert_eq!(body["modelVersion"], MODEL);
    assert!(body["responseId"].is_string());
    let seen = mock.received();
    assert_eq!(seen[0].path_and_query, format!("/v1beta/models/{MODEL}:generateContent"));
    assert_eq!(seen[0].header("x-goog-api-key"), Some("AIza-test"));
}

#[tokio::test]
async fn stream_generate_content_sse_chunks() {
    let mock = start(MockBehavior {
        chunks: 4,
        model_override: Some("gemini-override".to_owned()),
        ..MockBehavior::default()
    })
    .await;
    let response = call(&mock.url(), "streamGenerateContent?alt=sse", &generate()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = text_body(response).await;
    assert!(!text.contains("[DONE]"));
    let chunks = parse_sse(&text);
    assert_eq!(chunks.len(), 4, "{text}");
    let reply: String = chunks
        .iter()
        .map(|c| {
            assert_eq!(c["modelVersion"], "gemini-override");
            assert_eq!(c["responseId"], chunks[0]["responseId"]);
            let parts = parts(c);
            assert_eq!(parts.len(), 1);
            parts[0]["text"].as_str().expect("text part")
        })
        .collect();
    assert_eq!(reply, "Hello from the mock upstream.");
    for chunk in &chunks[..3] {
        assert!(chunk["candidates"][0].get("finishReason").is_none(), "{chunk}");
        assert_eq!(chunk["usageMetadata"]["promptTokenCount"], 25);
        assert!(chunk["usageMetadata"].get("candidatesTokenCount").is_none());
    }
    let last = &chunks[3];
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 25);
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 15);
    assert_eq!(last["usageMetadata"]["totalTokenCount"], 40);
}

#[tokio::test]
async fn stream_without_alt_sse_is_a_json_array() {
    let mock = start(MockBehavior::default()).await;
    let response = call(&mock.url(), "streamGenerateContent", &generate()).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("application/json"));
    let body = json_body(response).await;
    let chunks = body.as_array().expect("a JSON array");
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn function_call_then_text_after_function_response() {
    let mock = start(MockBehavior::default()).await;
    let request = with_tools(generate());
    let body = json_body(call(&mock.url(), "generateContent", &request).await).await;
    let candidate = &body["candidates"][0];
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(
        candidate["content"]["parts"],
        json!([{ "functionCall": { "name": "get_weather", "args": weather_arguments() } }])
    );

    // Streamed, the call arrives whole in the final chunk, its arguments an object.
    let text = text_body(call(&mock.url(), "streamGenerateContent?alt=sse", &request).await).await;
    let chunks = parse_sse(&text);
    assert_eq!(chunks.len(), 1, "{text}");
    assert_eq!(parts(&chunks[0])[0]["functionCall"]["args"], weather_arguments());
    assert_eq!(chunks[0]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(chunks[0]["usageMetadata"]["candidatesTokenCount"], 15);

    let mut followup = request.clone();
    followup["contents"] = json!([
        { "role": "user", "parts": [{ "text": "Weather in Paris?" }] },
        candidate["content"],
        { "role": "user", "parts": [{ "functionResponse": { "name": "get_weather", "response": { "sky": "sunny" } } }] }
    ]);
    let body = json_body(call(&mock.url(), "generateContent", &followup).await).await;
    assert_eq!(parts(&body), &vec![json!({ "text": "Hello from the mock upstream." })]);

    let mut restricted = request;
    restricted["toolConfig"] =
        json!({ "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": ["second_tool"] } });
    let body = json_body(call(&mock.url(), "generateContent", &restricted).await).await;
    assert_eq!(parts(&body)[0]["functionCall"], json!({ "name": "second_tool", "args": {} }));
}

#[tokio::test]
async fn thinking_reports_thoughts_and_output_limit_cuts() {
    let mock = start(MockBehavior {
        reply_text: "abcdefghijklmno".to_owned(),
        usage: MockUsage { output_tokens: 15, ..MockUsage::default() },
        ..MockBehavior::default()
    })
    .await;
    let mut request = generate();
    request["generationConfig"]["thinkingConfig"] = json!({ "thinkingBudget": -1, "includeThoughts": true });
    let text = text_body(call(&mock.url(), "streamGenerateContent?alt=sse", &request).await).await;
    let chunks = parse_sse(&text);
    assert_eq!(chunks.len(), 4, "a thought chunk, then three text chunks: {text}");
    assert_eq!(parts(&chunks[0])[0]["thought"], true);
    assert!(parts(&chunks[1])[0].get("thought").is_none());
    let usage = &chunks[3]["usageMetadata"];
    assert_eq!(usage["thoughtsTokenCount"], 5);
    assert_eq!(usage["candidatesTokenCount"], 10, "candidates exclude thoughts");
    assert_eq!(usage["totalTokenCount"], 25 + 15);

    let mut request = generate();
    request["generationConfig"]["maxOutputTokens"] = json!(5);
    let body = json_body(call(&mock.url(), "generateContent", &request).await).await;
    assert_eq!(body["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(parts(&body)[0]["text"], "abcde");
    assert_eq!(body["usageMetadata"]["candidatesTokenCount"], 5);
    assert!(body["usageMetadata"].get("thoughtsTokenCount").is_none());
}

#[tokio::test]
async fn forced_status_uses_google_error_shape() {
    let mock =
        start(MockBehavior { force_status: Some(429), retry_after_secs: Some(9), ..MockBehavior::default() })
            .await;
    let response = call(&mock.url(), "streamGenerateContent?alt=sse", &generate()).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "9");
    let raw = text_body(response).await;
    assert!(raw.starts_with(r#"{"error":{"code":429,"#), "{raw}");
    let body: Value = serde_json::from_str(&raw).expect("JSON");
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    assert!(body["error"]["message"].is_string());
    for (status, name) in
        [(400, "INVALID_ARGUMENT"), (403, "PERMISSION_DENIED"), (500, "INTERNAL"), (503, "UNAVAILABLE")]
    {
        mock.set_behavior(MockBehavior { force_status: Some(status), ..MockBehavior::default() });
        let response = call(&mock.url(), "generateContent", &generate()).await;
        assert_eq!(response.status(), status);
        let body = json_body(response).await;
        assert_eq!(body["error"]["code"], status);
        assert_eq!(body["error"]["status"], name);
    }
}

#[tokio::test]
async fn key_is_read_from_header_or_query() {
    let mock =
        start(MockBehavior { expected_api_key: Some("AIza-good".to_owned()), ..MockBehavior::default() })
            .await;
    let url = format!("{}/v1beta/models/{MODEL}:generateContent", mock.url());
    let attempt = |query: &'static str, header: Option<(&'static str, &'static str)>| {
        let mut request = client().post(format!("{url}{query}")).body(generate().to_string());
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        send(request)
    };
    for (query, header) in [
        ("", None),
        ("", Some(("x-goog-api-key", "AIza-bad"))),
        ("?key=AIza-bad", None),
        // Gemini does not take bearer API keys.
        ("", Some(("authorization", "Bearer AIza-good"))),
    ] {
        let response = attempt(query, header).await;
        assert_eq!(response.status(), 401, "{query} {header:?}");
        let body = json_body(response).await;
        assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(body["error"]["details"][0]["reason"], "API_KEY_INVALID");
    }
    assert_eq!(attempt("", Some(("x-goog-api-key", "AIza-good"))).await.status(), 200);
    assert_eq!(attempt("?key=AIza-good", None).await.status(), 200);
    assert_eq!(
        mock.received()[5].path_and_query,
        format!("/v1beta/models/{MODEL}:generateContent?key=AIza-good")
    );
}

#[tokio::test]
async fn fake_200_variants() {
    let mock = start(MockBehavior { fake_200: Some(Fake200::SseError), ..MockBehavior::default() }).await;
    let response = call(&mock.url(), "streamGenerateContent?alt=sse", &generate()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let chunks = parse_sse(&text_body(response).await);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["error"]["code"], 500);
    assert_eq!(chunks[0]["error"]["status"], "INTERNAL");
    assert!(chunks[0].get("candidates").is_none());

    mock.set_behavior(MockBehavior { fake_200: Some(Fake200::JsonError), ..MockBehavior::default() });
    let response = call(&mock.url(), "generateContent", &generate()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(json_body(response).await["error"]["status"], "INTERNAL");

    mock.set_behavior(MockBehavior { fake_200: Some(Fake200::Html), ..MockBehavior::default() });
    let response = call(&mock.url(), "generateContent", &generate()).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("text/html"));
}

#[tokio::test]
async fn reset_after_events_breaks_the_stream() {
    for client in [client(), h2c_client()] {
        let mock =
            start(MockBehavior { chunks: 4, reset_after_events: Some(2), ..MockBehavior::default() }).await;
        let response = call_with(&client, &mock.url(), "streamGenerateContent?alt=sse", &generate()).await;
        assert_eq!(response.status(), 200);
        let version = response.version();
        let (text, failed) = read_until_error(response).await;
        assert!(failed, "{version:?}: the body must end in an error, got {text:?}");
        let chunks = parse_sse(&text);
        assert_eq!(chunks.len(), 2, "{version:?}");
        assert!(chunks.iter().all(|c| c["candidates"][0].get("finishReason").is_none()));
    }
}

#[tokio::test]
async fn count_tokens_models_and_v1_paths() {
    let mock = start(MockBehavior::default()).await;
    let request = generate();
    let response = call(&mock.url(), "countTokens", &json!({ "contents": request["contents"] })).await;
    assert_eq!(response.status(), 200);
    let body = json_body(response).await;
    assert!(body["totalTokens"].as_u64().is_some_and(|n| n > 0), "{body}");
    assert_eq!(body["promptTokensDetails"][0]["tokenCount"], body["totalTokens"]);

    let list = json_body(send(client().get(format!("{}/v1beta/models", mock.url()))).await).await;
    let models = list["models"].as_array().expect("models");
    assert!(models.len() >= 2);
    let flash = models.iter().find(|m| m["name"] == format!("models/{MODEL}")).expect("flash listed");
    assert!(
        flash["supportedGenerationMethods"].as_array().expect("methods").contains(&json!("generateContent"))
    );
    assert!(flash["inputTokenLimit"].is_u64() && flash["displayName"].is_string());
    let one = json_body(send(client().get(format!("{}/v1beta/models/{MODEL}", mock.url()))).await).await;
    assert_eq!(one, *flash);
    let missing = send(client().get(format!("{}/v1beta/models/gemini-nope", mock.url()))).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(json_body(missing).await["error"]["status"], "NOT_FOUND");

    // The v1 surface: generation paths name Gemini; the list needs a Gemini key to be told apart.
    let v1 = send(
        client().post(format!("{}/v1/models/{MODEL}:generateContent", mock.url())).body(request.to_string()),
    )
    .await;
    assert_eq!(json_body(v1).await["candidates"][0]["finishReason"], "STOP");
    let v1_list = send(client().get(format!("{}/v1/models?key=AIza", mock.url()))).await;
    assert!(json_body(v1_list).await["models"].is_array());
    let v1_list =
        send(client().get(format!("{}/v1/models", mock.url())).header("x-goog-api-key", "AIza")).await;
    assert!(json_body(v1_list).await["models"].is_array());

    let bad =
        send(client().post(format!("{}/v1beta/models/{MODEL}:generateContent", mock.url())).body("nope"))
            .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(json_body(bad).await["error"]["status"], "INVALID_ARGUMENT");
    let unknown =
        send(client().post(format!("{}/v1beta/models/{MODEL}:embedContent", mock.url())).body("{}")).await;
    assert_eq!(unknown.status(), 404);
}
