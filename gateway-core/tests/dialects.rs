//! The other dialects' endpoints end to end in-process: OpenAI chat to an `openai-compatible`
//! provider, Responses to a `codex` provider, Gemini to a `gemini` provider (same dialect:
//! passthrough), with what each dialect needs changed on the way.

use std::sync::Arc;

use bytes::Bytes;
use gateway_core::config::ConfigFile;
use gateway_core::store::MemoryUsageSink;
use gateway_core::usage::UsageRecord;
use gateway_core::{Gateway, GatewaySettings};
use gateway_mock::MockUpstream;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

const KEY: &str = "sk-alice-0001";

struct Env {
    gateway: Gateway,
    sink: MemoryUsageSink,
    mock: MockUpstream,
}

async fn env(provider_type: &str, options: &str) -> Env {
    let mock = MockUpstream::start().await.expect("mock");
    let toml = format!(
        "[[providers]]\nname = \"p\"\ntype = \"{provider_type}\"\nbase_url = \"{}\"\napi_key = \"up-secret\"\n{options}\n\
         [[users]]\nname = \"alice\"\n[[users.keys]]\nname = \"k\"\nkey = \"{KEY}\"\n",
        mock.url()
    );
    let sink = MemoryUsageSink::new();
    let gateway = Gateway::builder()
        .config(&ConfigFile::from_toml_str(&toml).expect("config"))
        .usage_sink(Arc::new(sink.clone()))
        .settings(GatewaySettings::default())
        .build()
        .expect("gateway");
    Env { gateway, sink, mock }
}

impl Env {
    async fn post(
        &self,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, String, UsageRecord) {
        let mut b =
            Request::builder().method(Method::POST).uri(uri).header("content-type", "application/json");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let before = self.sink.records().len();
        let resp = self.gateway.handle(b.body(Full::new(Bytes::from(body.to_owned()))).expect("req")).await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let record = self.sink.wait_for(before + 1).await.remove(before);
        (status, String::from_utf8_lossy(&bytes).into_owned(), record)
    }
}

const BEARER: (&str, &str) = ("authorization", "Bearer sk-alice-0001");

#[tokio::test]
async fn chat_streams_always_ask_for_usage() {
    let e = env("openai-compatible", "").await;
    let body = r#"{"model":"gpt-4.1","stream":true,"stream_options":{"include_obfuscation":false},"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, text, r) = e.post("/v1/chat/completions", &[BEARER], body).await;
    assert_eq!(status, 200);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let sent = e.mock.received().remove(0);
    assert_eq!(sent.path_and_query, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer up-secret"));
    let json = sent.json().expect("json");
    assert_eq!(json["stream_options"]["include_usage"], true);
    assert_eq!(json["stream_options"]["include_obfuscation"], false, "other stream options are kept");
    assert_eq!(r.original_model.as_deref(), Some("gpt-4.1"));
    assert!(r.stream);
}

#[tokio::test]
async fn chat_errors_are_openai_shaped() {
    let e = env("openai-compatible", "").await;
    let (status, text, _) = e.post("/v1/chat/completions", &[BEARER], r#"{"messages":[]}"#).await;
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "missing_model");
    let (status, text, _) = e.post("/v1/chat/completions", &[], r#"{"model":"m","messages":[]}"#).await;
    assert_eq!(status, 401);
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn responses_go_to_codex_providers_with_the_session_from_prompt_cache_key() {
    let e = env("codex", "").await;
    let body = r#"{"model":"gpt-5-codex","stream":true,"store":false,"prompt_cache_key":"0199a7b2-codex-session","input":[{"type":"message","role":"developer","content":[{"type":"input_text","text":"You are Codex."}]},{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}],"include":["reasoning.encrypted_content"]}"#;
    let (status, text, r) = e
        .post("/v1/responses", &[BEARER, ("user-agent", "codex_cli_rs/0.169.0 (Linux; x86_64)")], body)
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("response.completed"), "{text}");
    assert_eq!(r.session_id.as_deref(), Some("0199a7b2-codex-session"));
    let sent = e.mock.received().remove(0);
    assert_eq!(sent.path_and_query, "/v1/responses");
    assert_eq!(&sent.body[..], body.as_bytes(), "passthrough leaves the body as it was");
}

#[tokio::test]
async fn codex_instructions_are_injected_only_for_other_clients() {
    let e = env(
        "codex",
        "codex_instructions = \"inject\"\ncodex_instructions_text = \"You are Codex, the official CLI.\"",
    )
    .await;
    let body = r#"{"model":"gpt-5-codex","instructions":"Answer in French.","input":"hi"}"#;
    let (status, _, _) =
        e.post("/v1/responses", &[BEARER, ("user-agent", "OpenAI/Python 2.8.0")], body).await;
    assert_eq!(status, 200);
    let sent = e.mock.received().remove(0).json().expect("json");
    assert_eq!(sent["instructions"], "You are Codex, the official CLI.");
    assert_eq!(sent["input"][0]["role"], "developer");
    assert_eq!(sent["input"][0]["content"][0]["text"], "Answer in French.");
    e.mock.clear_received();
    e.post("/v1/responses", &[BEARER, ("user-agent", "codex_cli_rs/0.169.0")], body).await;
    let sent = e.mock.received().remove(0);
    assert_eq!(&sent.body[..], body.as_bytes(), "Codex CLI's own requests are left alone");
}

#[tokio::test]
async fn gemini_model_comes_from_the_path_and_the_gateway_key_never_reaches_the_upstream() {
    let e = env(
        "gemini",
        "model_redirects = [{ match = \"exact\", from = \"gemini-pro-latest\", to = \"gemini-2.5-pro\" }]",
    )
    .await;
    let body = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
    let (status, text, r) = e
        .post(&format!("/v1beta/models/gemini-pro-latest:streamGenerateContent?alt=sse&key={KEY}"), &[], body)
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("finishReason"), "{text}");
    let sent = e.mock.received().remove(0);
    assert_eq!(sent.path_and_query, "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse");
    assert_eq!(sent.header("x-goog-api-key"), Some("up-secret"));
    assert_eq!(&sent.body[..], body.as_bytes());
    assert_eq!(r.original_model.as_deref(), Some("gemini-pro-latest"));
    assert_eq!(r.forwarded_model.as_deref(), Some("gemini-2.5-pro"));
    assert!(r.stream);
    assert!(!sent.path_and_query.contains(KEY));
}

#[tokio::test]
async fn gemini_via_the_v1_models_path_and_snake_case_bodies() {
    let e = env("gemini", "").await;
    let body = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"system_instruction":{"parts":[{"text":"be brief"}]},"generation_config":{"max_output_tokens":64}}"#;
    let (status, _, r) =
        e.post("/v1/models/gemini-2.5-flash:generateContent", &[("x-goog-api-key", KEY)], body).await;
    assert_eq!(status, 200);
    assert!(!r.stream);
    assert_eq!(e.mock.received()[0].path_and_query, "/v1/models/gemini-2.5-flash:generateContent");
    let (status, text, _) = e.post("/v1beta/models/gemini-2.5-flash:generateContent", &[], body).await;
    assert_eq!(status, 401);
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["error"]["status"], "UNAUTHENTICATED", "Gemini-shaped error: {v}");
}

#[tokio::test]
async fn gemini_models_listing_is_gemini_shaped() {
    let e = env("gemini", "").await;
    let req = Request::builder()
        .uri("/v1beta/models")
        .header("x-goog-api-key", KEY)
        .body(Full::new(Bytes::new()))
        .expect("req");
    let resp = e.gateway.handle(req).await;
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.expect("body").to_bytes()).expect("json");
    let names: Vec<&str> =
        v["models"].as_array().expect("models").iter().filter_map(|m| m["name"].as_str()).collect();
    assert!(!names.is_empty() && names.iter().all(|n| n.starts_with("models/")), "{v}");
}

// ---------------------------------------------------------------------------------------------
// Translation between dialects

const ANTHROPIC_HEADERS: [(&str, &str); 2] = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];

#[tokio::test]
async fn anthropic_clients_served_by_an_openai_compatible_provider() {
    let e = env("openai-compatible", "translate_from = [\"anthropic\"]").await;
    let body = r#"{"model":"gpt-4.1","max_tokens":64,"system":"be brief","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, text, r) = e.post("/v1/messages", &ANTHROPIC_HEADERS, body).await;
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["content"][0]["text"], "Hello from the mock upstream.");
    assert_eq!(v["stop_reason"], "end_turn");
    let sent = e.mock.received().remove(0);
    assert_eq!(sent.path_and_query, "/v1/chat/completions");
    let sent = sent.json().expect("json");
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["messages"][1]["content"], "hi");
    assert_eq!(
        (r.usage.input_tokens, r.usage.output_tokens),
        (25, 15),
        "usage read from the translated body"
    );

    // Streaming: an Anthropic event stream built from chat chunks.
    let stream = body.replace("\"max_tokens\":64", "\"max_tokens\":64,\"stream\":true");
    let (status, text, r) = e.post("/v1/messages", &ANTHROPIC_HEADERS, &stream).await;
    assert_eq!(status, 200);
    assert!(text.starts_with("event: message_start"), "{text}");
    assert_eq!(text.matches("event: message_stop").count(), 1, "{text}");
    assert!(text.contains("text_delta"));
    assert_eq!(e.mock.received()[1].json().expect("json")["stream_options"]["include_usage"], true);
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (25, 15), "{r:?}");
    assert_eq!(r.outcome, gateway_core::usage::Outcome::Success);
}

#[tokio::test]
async fn chat_clients_served_by_a_claude_provider_including_tool_calls() {
    let e = env("claude", "translate_from = [\"openai-chat\"]").await;
    let body = r#"{"model":"claude-sonnet-4-5","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"weather in Paris?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]}"#;
    let (status, text, r) = e.post("/v1/chat/completions", &[BEARER], body).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("\"tool_calls\""), "{text}");
    assert!(text.contains("\"finish_reason\":\"tool_calls\""), "{text}");
    let sent = e.mock.received().remove(0);
    assert_eq!(sent.path_and_query, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("up-secret"));
    let sent = sent.json().expect("json");
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert!(sent["max_tokens"].as_u64().is_some(), "Anthropic requires max_tokens: {sent}");
    assert!(r.usage.output_tokens > 0, "{r:?}");
}

/// Sends `body` as an OpenAI chat client to an Anthropic provider whose usage has cache writes
/// of both TTLs, checks that the record bills the upstream's own counts (OpenAI chat has no field
/// for the 5m/1h split, so reading the chat response back would lose it), and returns the body.
async fn chat_over_claude_billed_from_upstream_usage(body: &str) -> String {
    let e = env("claude", "translate_from = [\"openai-chat\"]").await;
    e.mock.set_behavior(gateway_mock::MockBehavior {
        usage: gateway_mock::MockUsage {
            input_tokens: 100,
            output_tokens: 40,
            cache_creation_input_tokens: 3000,
            cache_creation_5m_input_tokens: 1000,
            cache_creation_1h_input_tokens: 2000,
            cache_read_input_tokens: 500,
        },
        ..gateway_mock::MockBehavior::default()
    });
    let (status, text, r) = e.post("/v1/chat/completions", &[BEARER], body).await;
    assert_eq!(status, 200, "{text}");
    let u = r.usage;
    assert_eq!((u.input_tokens, u.output_tokens, u.cache_read_input_tokens), (100, 40, 500), "{r:?}");
    assert_eq!(
        (u.cache_creation_input_tokens, u.cache_creation_5m_input_tokens, u.cache_creation_1h_input_tokens),
        (3000, 1000, 2000),
        "cache writes reach the record although the chat response cannot carry them: {r:?}"
    );
    assert_eq!(r.outcome, gateway_core::usage::Outcome::Success);
    assert!(r.ttft_ms.is_some(), "the translated bytes still set the time to first token");
    text
}

#[tokio::test]
async fn translated_complete_responses_are_billed_from_the_upstreams_usage() {
    let body = r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}"#;
    let text = chat_over_claude_billed_from_upstream_usage(body).await;
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["object"], "chat.completion", "{text}");
    assert_eq!(v["usage"]["completion_tokens"], 40, "{text}");
}

#[tokio::test]
async fn translated_streams_are_billed_from_the_upstreams_usage() {
    let body = r#"{"model":"claude-sonnet-4-5","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let text = chat_over_claude_billed_from_upstream_usage(body).await;
    assert!(text.contains("chat.completion.chunk") && text.contains("\"completion_tokens\":40"), "{text}");
}

#[tokio::test]
async fn translated_upstream_errors_keep_their_status_in_the_callers_shape() {
    let e = env("openai-compatible", "translate_from = [\"anthropic\"]\nmax_retry_attempts = 1").await;
    e.mock.set_behavior(gateway_mock::MockBehavior { force_status: Some(400), ..Default::default() });
    let body = r#"{"model":"gpt-4.1","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, text, _) = e.post("/v1/messages", &ANTHROPIC_HEADERS, body).await;
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["type"], "error", "Anthropic shape: {v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn native_providers_are_preferred_over_translating_ones_in_a_tier() {
    let mock_a = MockUpstream::start().await.expect("mock");
    let mock_b = MockUpstream::start().await.expect("mock");
    let toml = format!(
        "[[providers]]\nname = \"chat\"\ntype = \"openai-compatible\"\nbase_url = \"{}\"\napi_key = \"a\"\ntranslate_from = [\"anthropic\"]\nweight = 100\n\
         [[providers]]\nname = \"claude\"\ntype = \"claude\"\nbase_url = \"{}\"\napi_key = \"b\"\nweight = 1\n\
         [[users]]\nname = \"alice\"\n[[users.keys]]\nname = \"k\"\nkey = \"{KEY}\"\n",
        mock_a.url(),
        mock_b.url()
    );
    let sink = MemoryUsageSink::new();
    let gateway = Gateway::builder()
        .config(&ConfigFile::from_toml_str(&toml).expect("config"))
        .usage_sink(Arc::new(sink.clone()))
        .build()
        .expect("gateway");
    for i in 0..10 {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/messages")
            .header("x-api-key", KEY)
            .header("x-session-id", format!("s{i}"))
            .body(Full::new(Bytes::from_static(
                br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
            )))
            .expect("req");
        gateway.handle(req).await.into_body().collect().await.expect("body");
    }
    assert_eq!(mock_a.received().len(), 0, "the translating provider is only a fallback");
    assert_eq!(mock_b.received().len(), 10);
    // With the native provider down, the translating one takes over.
    mock_b.shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/messages")
        .header("x-api-key", KEY)
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .expect("req");
    let resp = gateway.handle(req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock_a.received().len(), 1);
}

#[tokio::test]
async fn the_usage_chunk_is_hidden_from_chat_clients_that_did_not_ask_yet_billed() {
    let e = env("openai-compatible", "").await;
    let body = r#"{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, text, r) = e.post("/v1/chat/completions", &[BEARER], body).await;
    assert_eq!(status, 200);
    assert!(!text.contains("\"choices\":[]"), "no usage-only chunk for this client: {text}");
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert_eq!(r.usage.output_tokens, 15, "the meter saw the usage anyway");
    assert_eq!(e.mock.received()[0].json().expect("json")["stream_options"]["include_usage"], true);
    // A client that asked gets it.
    let asked =
        body.replace("\"stream\":true", "\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    let (_, text, _) = e.post("/v1/chat/completions", &[BEARER], &asked).await;
    assert!(text.contains("\"choices\":[]"), "{text}");
}

#[tokio::test]
async fn token_counts_without_a_native_provider_are_estimated_not_refused() {
    let e = env("openai-compatible", "translate_from = [\"anthropic\"]").await;
    let body = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"count these words please"}]}"#;
    let (status, text, r) = e.post("/v1/messages/count_tokens", &ANTHROPIC_HEADERS, body).await;
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert!(v["input_tokens"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert!(e.mock.received().is_empty(), "nothing to send upstream");
    assert!(r.translation_notes.iter().any(|n| n.contains("estimated")), "{:?}", r.translation_notes);
}

#[tokio::test]
async fn translated_requests_do_not_carry_the_clients_vendor_headers() {
    let e = env("openai-compatible", "translate_from = [\"anthropic\"]").await;
    let body = r#"{"model":"gpt-4.1","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    e.post(
        "/v1/messages",
        &[
            ANTHROPIC_HEADERS[0],
            ANTHROPIC_HEADERS[1],
            ("anthropic-beta", "x"),
            ("x-stainless-lang", "python"),
        ],
        body,
    )
    .await;
    let sent = e.mock.received().remove(0);
    for h in ["anthropic-version", "anthropic-beta", "x-stainless-lang", "x-api-key"] {
        assert_eq!(sent.header(h), None, "{h}");
    }
    assert_eq!(sent.header("authorization"), Some("Bearer up-secret"));
}
