//! The whole pipeline in-process against the mock upstream: every stage, every bad input, and
//! the usage record each request leaves.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway_core::config::ConfigFile;
use gateway_core::store::MemoryUsageSink;
use gateway_core::usage::{Outcome, UsdNanos};
use gateway_core::{Gateway, GatewaySettings};
use gateway_mock::{MockBehavior, MockUpstream, MockUsage};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "sk-alice-0001";

fn config(upstream: &str, extra: &str) -> ConfigFile {
    let text = format!(
        r#"
[[providers]]
name = "anthropic-main"
type = "claude"
base_url = "{upstream}"
api_key = "sk-ant-upstream-secret"
cost_multiplier = "1.5"
model_redirects = [{{ match = "exact", from = "claude-3-5-sonnet-latest", to = "claude-sonnet-4-5" }}]

[[users]]
name = "alice"
[[users.keys]]
name = "laptop"
key = "{KEY}"
[[users.keys]]
name = "old"
key = "sk-alice-disabled"
enabled = false
[[users.keys]]
name = "expired"
key = "sk-alice-expired"
expires_at = "2020-01-01T00:00:00Z"

[[users]]
name = "mallory"
groups = ["nowhere"]
[[users.keys]]
name = "k"
key = "sk-mallory-0001"

[[users]]
name = "bob"
enabled = false
[[users.keys]]
name = "k"
key = "sk-bob-00000001"

[[prices]]
model = "claude-sonnet-4-5"
input_per_mtok = "3"
output_per_mtok = "15"
cache_write_5m_per_mtok = "3.75"
cache_write_1h_per_mtok = "6"
cache_read_per_mtok = "0.30"
{extra}
"#
    );
    ConfigFile::from_toml_str(&text).expect("config")
}

struct Harness {
    gateway: Gateway,
    sink: MemoryUsageSink,
}

fn harness(upstream: &str, settings: GatewaySettings) -> Harness {
    let sink = MemoryUsageSink::new();
    let gateway = Gateway::builder()
        .config(&config(upstream, ""))
        .usage_sink(Arc::new(sink.clone()))
        .settings(settings)
        .build()
        .expect("gateway");
    Harness { gateway, sink }
}

fn messages_request(key: Option<&str>, body: &str) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri("/v1/messages?beta=true")
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .header("user-agent", "claude-cli/2.1.0 (external, cli)")
        .header("x-app", "cli");
    if let Some(k) = key {
        b = b.header("x-api-key", k);
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).expect("request")
}

const SIMPLE: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;

async fn collect(resp: gateway_core::GatewayResponse) -> (StatusCode, http::HeaderMap, Bytes) {
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, bytes)
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("json body")
}

#[tokio::test]
async fn non_streaming_request_is_forwarded_metered_and_priced() {
    let mock = MockUpstream::start().await.expect("mock");
    mock.set_behavior(MockBehavior {
        usage: MockUsage {
            input_tokens: 1000,
            output_tokens: 500,
            cache_creation_input_tokens: 3000,
            cache_creation_5m_input_tokens: 1000,
            cache_creation_1h_input_tokens: 2000,
            cache_read_input_tokens: 10_000,
        },
        expected_api_key: Some("sk-ant-upstream-secret".into()),
        ..MockBehavior::default()
    });
    let h = harness(&mock.url(), GatewaySettings::default());
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"metadata":{"user_id":"{\"device_id\":\"d\",\"account_uuid\":\"a\",\"session_id\":\"sess-json-1\"}"},"messages":[{"role":"user","content":"Hi"}],"unknown_future_field":{"keep":[1,2,3]}}"#;
    let resp = h.gateway.handle(messages_request(Some(KEY), body)).await;
    let (status, headers, bytes) = collect(resp).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let reply = json(&bytes);
    assert_eq!(reply["type"], "message");
    assert!(headers.get("x-request-id").is_some());

    // What reached the upstream: the body untouched, provider credentials instead of the client's.
    let received = mock.received();
    assert_eq!(received.len(), 1);
    let up = &received[0];
    assert_eq!(up.path_and_query, "/v1/messages?beta=true");
    assert_eq!(&up.body[..], body.as_bytes(), "body must be forwarded byte for byte");
    assert_eq!(up.header("x-api-key"), Some("sk-ant-upstream-secret"));
    assert_eq!(up.header("authorization"), None);
    assert_eq!(up.header("anthropic-beta"), Some("interleaved-thinking-2025-05-14"));
    assert_eq!(up.header("x-app"), Some("cli"));

    let records = h.sink.wait_for(1).await;
    let r = &records[0];
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(r.status_code, 200);
    assert_eq!(r.usage.input_tokens, 1000);
    assert_eq!(r.usage.cache_creation_1h_input_tokens, 2000);
    assert_eq!(r.usage.cache_read_input_tokens, 10_000);
    // (1000*3 + 500*15 + 1000*3.75 + 2000*6 + 10000*0.3) / 1e6 * 1.5 = 0.043875 USD
    assert_eq!(r.cost, Some(UsdNanos(43_875_000)));
    assert_eq!(r.session_id.as_deref(), Some("sess-json-1"));
    assert_eq!(r.user_id, Some(1));
    assert_eq!(r.key_id, Some(1));
    assert_eq!(r.provider_name.as_deref(), Some("anthropic-main"));
    assert!(r.ttfb_ms.is_some() && r.ttft_ms.is_some());
    assert_eq!(r.request_id, headers["x-request-id"].to_str().expect("id"));
}

#[tokio::test]
async fn streaming_usage_and_session_from_legacy_metadata() {
    let mock = MockUpstream::start().await.expect("mock");
    mock.set_behavior(MockBehavior {
        chunks: 5,
        usage: MockUsage {
            input_tokens: 40,
            output_tokens: 12,
            cache_read_input_tokens: 300,
            ..MockUsage::default()
        },
        ..MockBehavior::default()
    });
    let h = harness(&mock.url(), GatewaySettings::default());
    let body = r#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":64,"metadata":{"user_id":"user_abc123_account_6a1e3b2c-0000-4000-8000-000000000001_session_5d4c3b2a-1111-4222-8333-444455556666"},"messages":[{"role":"user","content":"Hi"}]}"#;
    let resp = h.gateway.handle(messages_request(Some(KEY), body)).await;
    let (status, headers, bytes) = collect(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().expect("ct").starts_with("text/event-stream"));
    let text = String::from_utf8(bytes.to_vec()).expect("utf8");
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(text.contains("event: message_stop"));
    assert_eq!(text.matches("event: content_block_delta").count(), 5);

    let r = &h.sink.wait_for(1).await[0];
    assert_eq!(r.outcome, Outcome::Success);
    assert!(r.stream);
    assert_eq!(r.usage.input_tokens, 40);
    assert_eq!(r.usage.output_tokens, 12);
    assert_eq!(r.usage.cache_read_input_tokens, 300);
    // (40*3 + 12*15 + 300*0.3) * 1.5 / 1e6
    assert_eq!(r.cost, Some(UsdNanos(585_000)));
    assert_eq!(r.session_id.as_deref(), Some("5d4c3b2a-1111-4222-8333-444455556666"));
    assert!(r.ttft_ms.is_some());
}

/// An upstream that answers with fixed bytes in awkward chunks, to prove the relay does not
/// re-encode anything: comments, CRLF line endings, split UTF-8 and split events.
async fn canned_sse_upstream(chunks: Vec<&'static [u8]>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let chunks = chunks.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                // Read headers and the declared body.
                loop {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                for c in chunks {
                    let _ = sock.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await;
                    let _ = sock.write_all(c).await;
                    let _ = sock.write_all(b"\r\n").await;
                    let _ = sock.flush().await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let _ = sock.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn streams_are_relayed_byte_identical() {
    let chunks: Vec<&'static [u8]> = vec![
        b": keep-alive comment\r\n\r\nevent: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\r\n\r\nevent: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n",
        b"\r\nevent: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"caf\xc3",
        b"\xa9 \xe2\x98\x95\"}}\r\n\r\nevent: content_block_stop\r\ndata: {\"type\":\"content_block_stop\",\"index\":0}\r\n\r\n",
        b"event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\r\n\r\nevent: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n",
    ];
    let expected: Vec<u8> = chunks.concat();
    let upstream = canned_sse_upstream(chunks).await;
    let h = harness(&upstream, GatewaySettings::default());
    let body = r#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":8,"messages":[{"role":"user","content":"Hi"}]}"#;
    let (status, _, bytes) = collect(h.gateway.handle(messages_request(Some(KEY), body)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&bytes[..], &expected[..], "relayed stream must equal the upstream's bytes");
    let r = &h.sink.wait_for(1).await[0];
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (7, 3));
    assert_eq!(r.outcome, Outcome::Success);
}

#[tokio::test]
async fn frames_are_relayed_as_they_arrive() {
    let mock = MockUpstream::start().await.expect("mock");
    mock.set_behavior(MockBehavior {
        chunks: 4,
        chunk_delay: Duration::from_millis(150),
        ..MockBehavior::default()
    });
    let h = harness(&mock.url(), GatewaySettings::default());
    let body = r#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":8,"messages":[{"role":"user","content":"Hi"}]}"#;
    let resp = h.gateway.handle(messages_request(Some(KEY), body)).await;
    let mut body = resp.into_body();
    // The first frame arrives long before the 4 x 150 ms the whole stream takes: no buffering.
    let first = tokio::time::timeout(Duration::from_millis(400), body.frame())
        .await
        .expect("first frame must arrive before the stream completes")
        .expect("frame")
        .expect("ok");
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
}

#[tokio::test]
async fn model_redirect_rewrites_only_the_model() {
    let mock = MockUpstream::start().await.expect("mock");
    let h = harness(&mock.url(), GatewaySettings::default());
    let body = r#"{"model":"claude-3-5-sonnet-latest","max_tokens":64,"messages":[{"role":"user","content":"Hi"}],"x":{"b":1,"a":2}}"#;
    let (status, _, _) = collect(h.gateway.handle(messages_request(Some(KEY), body)).await).await;
    assert_eq!(status, StatusCode::OK);
    let up = mock.received().remove(0);
    assert_eq!(
        std::str::from_utf8(&up.body).expect("utf8"),
        r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hi"}],"x":{"b":1,"a":2}}"#
    );
    let r = &h.sink.wait_for(1).await[0];
    assert_eq!(r.original_model.as_deref(), Some("claude-3-5-sonnet-latest"));
    assert_eq!(r.forwarded_model.as_deref(), Some("claude-sonnet-4-5"));
    assert!(r.cost.is_some(), "priced by the forwarded model");
}

async fn expect_error(
    h: &Harness,
    req: Request<Full<Bytes>>,
    status: StatusCode,
    error_type: &str,
) -> serde_json::Value {
    let before = h.sink.records().len();
    let (got, headers, bytes) = collect(h.gateway.handle(req).await).await;
    assert_eq!(got, status, "{}", String::from_utf8_lossy(&bytes));
    let v = json(&bytes);
    assert_eq!(v["type"], "error", "Anthropic error shape: {v}");
    assert_eq!(v["error"]["type"], error_type, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    let records = h.sink.wait_for(before + 1).await;
    let r = &records[before];
    assert_eq!(r.status_code, status.as_u16());
    assert_eq!(Some(r.request_id.as_str()), headers.get("x-request-id").and_then(|v| v.to_str().ok()));
    assert!(r.error.is_some());
    v
}

#[tokio::test]
async fn bad_input_gets_anthropic_errors_and_a_record() {
    let mock = MockUpstream::start().await.expect("mock");
    let h = harness(&mock.url(), GatewaySettings { max_body_bytes: 4096, ..Default::default() });
    let unauthorized = StatusCode::UNAUTHORIZED;
    expect_error(&h, messages_request(None, SIMPLE), unauthorized, "authentication_error").await;
    expect_error(
        &h,
        messages_request(Some("sk-wrong-key-123"), SIMPLE),
        unauthorized,
        "authentication_error",
    )
    .await;
    expect_error(
        &h,
        messages_request(Some("sk-alice-disabled"), SIMPLE),
        unauthorized,
        "authentication_error",
    )
    .await;
    expect_error(
        &h,
        messages_request(Some("sk-alice-expired"), SIMPLE),
        unauthorized,
        "authentication_error",
    )
    .await;
    expect_error(&h, messages_request(Some("sk-bob-00000001"), SIMPLE), unauthorized, "authentication_error")
        .await;
    expect_error(
        &h,
        messages_request(Some(KEY), "{\"model\":"),
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
    )
    .await;
    let v = expect_error(
        &h,
        messages_request(Some(KEY), r#"{"messages":[]}"#),
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
    )
    .await;
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("model")));
    let big = format!(
        r#"{{"model":"claude-sonnet-4-5","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(5000)
    );
    expect_error(&h, messages_request(Some(KEY), &big), StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
        .await;
    expect_error(
        &h,
        messages_request(Some("sk-mallory-0001"), SIMPLE),
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded_error",
    )
    .await;
    let unknown = Request::builder()
        .method(Method::POST)
        .uri("/v1/nope")
        .header("x-api-key", KEY)
        .body(Full::new(Bytes::new()))
        .expect("req");
    expect_error(&h, unknown, StatusCode::NOT_FOUND, "not_found_error").await;
    assert!(mock.received().is_empty(), "nothing rejected may reach the upstream");
}

#[tokio::test]
async fn bad_key_cases_use_distinct_codes_in_the_log() {
    let mock = MockUpstream::start().await.expect("mock");
    let h = harness(&mock.url(), GatewaySettings::default());
    for key in ["sk-alice-disabled", "sk-alice-expired", "sk-bob-00000001"] {
        h.gateway.handle(messages_request(Some(key), SIMPLE)).await;
    }
    let errors: Vec<String> = h.sink.wait_for(3).await.into_iter().filter_map(|r| r.error).collect();
    assert!(errors[0].starts_with("key_disabled"), "{errors:?}");
    assert!(errors[1].starts_with("key_expired"), "{errors:?}");
    assert!(errors[2].starts_with("user_disabled"), "{errors:?}");
}

#[tokio::test]
async fn upstream_client_errors_pass_through_with_their_status() {
    let mock = MockUpstream::start().await.expect("mock");
    mock.set_behavior(MockBehavior { force_status: Some(400), ..MockBehavior::default() });
    let h = harness(&mock.url(), GatewaySettings::default());
    let (status, _, bytes) = collect(h.gateway.handle(messages_request(Some(KEY), SIMPLE)).await).await;
    assert_eq!(status.as_u16(), 400);
    assert_eq!(json(&bytes)["error"]["type"], "invalid_request_error", "the upstream's own body");
    assert_eq!(mock.received().len(), 1, "client errors are not retried");
    let r = &h.sink.wait_for(1).await[0];
    assert_eq!(r.outcome, Outcome::UpstreamError);
    assert_eq!(r.status_code, 400);
    assert_eq!(r.cost, None);
}

#[tokio::test]
async fn exhausted_retries_end_in_a_503_naming_the_request() {
    let mock = MockUpstream::start().await.expect("mock");
    mock.set_behavior(MockBehavior { force_status: Some(529), ..MockBehavior::default() });
    let h = harness(&mock.url(), GatewaySettings::default());
    let v = expect_error(
        &h,
        messages_request(Some(KEY), SIMPLE),
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded_error",
    )
    .await;
    let message = v["error"]["message"].as_str().expect("message");
    assert!(message.contains("529") && message.contains("request id: req_"), "{message}");
    assert_eq!(mock.received().len(), 2, "max_retry_attempts (2) tries on the one provider");
    let r = &h.sink.records()[0];
    assert_eq!(r.outcome, Outcome::Failed);
    let attempts = r
        .decision_chain
        .iter()
        .filter(|e| matches!(e.step, gateway_core::route::chain::ChainStep::Attempt { .. }))
        .count();
    assert_eq!(attempts, 2, "{:?}", r.decision_chain);
}

#[tokio::test]
async fn unreachable_upstream_fails_over_then_503s_in_anthropic_shape() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let h = harness(&url, GatewaySettings::default());
    let v = expect_error(
        &h,
        messages_request(Some(KEY), SIMPLE),
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded_error",
    )
    .await;
    assert!(!v.to_string().contains("sk-ant-upstream-secret"));
    assert!(v.to_string().contains("Connection refused") || v.to_string().contains("connect"), "{v}");
    assert_eq!(h.sink.records()[0].outcome, Outcome::Failed);
}

#[tokio::test]
async fn client_disconnect_mid_stream_leaves_a_partial_record() {
    let mock = MockUpstream::start().await.expect("mock");
    mock.set_behavior(MockBehavior {
        chunks: 20,
        chunk_delay: Duration::from_millis(50),
        usage: MockUsage { input_tokens: 33, ..MockUsage::default() },
        ..MockBehavior::default()
    });
    let h = harness(&mock.url(), GatewaySettings::default());
    let body = r#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;
    let resp = h.gateway.handle(messages_request(Some(KEY), body)).await;
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("content_block_delta") {
        let frame = body.frame().await.expect("frame").expect("ok");
        if let Some(d) = frame.data_ref() {
            seen.extend_from_slice(d);
        }
    }
    drop(body); // the client goes away
    let r = &h.sink.wait_for(1).await[0];
    assert_eq!(r.outcome, Outcome::ClientAbort);
    assert_eq!(r.status_code, 200);
    assert_eq!(r.usage.input_tokens, 33, "usage counted so far is kept");
    assert!(r.cost.is_some(), "partial usage is still billed");
}

#[tokio::test]
async fn mid_stream_reset_ends_with_an_error_event() {
    let mock = MockUpstream::start().await.expect("mock");
    mock.set_behavior(MockBehavior { chunks: 10, reset_after_events: Some(4), ..MockBehavior::default() });
    let h = harness(&mock.url(), GatewaySettings::default());
    let body = r#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;
    let (status, _, bytes) = collect(h.gateway.handle(messages_request(Some(KEY), body)).await).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("event: message_start"));
    assert!(
        text.trim_end().ends_with('}') && text.contains("event: error\ndata: {\"type\":\"error\""),
        "{text}"
    );
    let r = &h.sink.wait_for(1).await[0];
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(r.error.as_deref().is_some_and(|e| e.contains("mid-response")), "{:?}", r.error);
}

#[tokio::test]
async fn compressed_request_bodies_are_decoded_before_forwarding() {
    let mock = MockUpstream::start().await.expect("mock");
    let h = harness(&mock.url(), GatewaySettings::default());
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(SIMPLE.as_bytes()).expect("gz");
    let gz = enc.finish().expect("gz");
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/messages")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Full::new(Bytes::from(gz)))
        .expect("req");
    let (status, _, _) = collect(h.gateway.handle(req).await).await;
    assert_eq!(status, StatusCode::OK);
    let up = mock.received().remove(0);
    assert_eq!(&up.body[..], SIMPLE.as_bytes());
    assert_eq!(up.header("content-encoding"), None);
}

#[tokio::test]
async fn count_tokens_passes_through_unbilled() {
    let mock = MockUpstream::start().await.expect("mock");
    let h = harness(&mock.url(), GatewaySettings::default());
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/messages/count_tokens")
        .header("x-api-key", KEY)
        .body(Full::new(Bytes::from_static(SIMPLE.as_bytes())))
        .expect("req");
    let (status, _, bytes) = collect(h.gateway.handle(req).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(json(&bytes)["input_tokens"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(mock.received()[0].path_and_query, "/v1/messages/count_tokens");
    let r = &h.sink.wait_for(1).await[0];
    assert_eq!(r.cost, None);
    assert_eq!(r.endpoint, "/v1/messages/count_tokens");
}

#[tokio::test]
async fn models_list_in_both_shapes() {
    let mock = MockUpstream::start().await.expect("mock");
    let h = harness(&mock.url(), GatewaySettings::default());
    let anthropic = Request::builder()
        .uri("/v1/models")
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let (status, _, bytes) = collect(h.gateway.handle(anthropic).await).await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&bytes);
    let ids: Vec<&str> =
        v["data"].as_array().expect("data").iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&"claude-sonnet-4-5"), "{v}");
    assert!(ids.contains(&"claude-3-5-sonnet-latest"), "redirect sources are listed: {v}");
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);
    let openai = Request::builder()
        .uri("/v1/models")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .expect("req");
    let (status, _, bytes) = collect(h.gateway.handle(openai).await).await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&bytes);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["object"], "model");
    let unauth = Request::builder().uri("/v1/models").body(Full::new(Bytes::new())).expect("req");
    let (status, _, _) = collect(h.gateway.handle(unauth).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn claude_code_session_header_wins_and_hash_fallback_is_stable() {
    let mock = MockUpstream::start().await.expect("mock");
    let h = harness(&mock.url(), GatewaySettings::default());
    let mut req = messages_request(Some(KEY), SIMPLE);
    req.headers_mut().insert("x-claude-code-session-id", "cc-session-42".parse().expect("hv"));
    h.gateway.handle(req).await;
    h.gateway.handle(messages_request(Some(KEY), SIMPLE)).await;
    h.gateway.handle(messages_request(Some(KEY), SIMPLE)).await;
    let other = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Something else"}]}"#;
    h.gateway.handle(messages_request(Some(KEY), other)).await;
    let records = h.sink.wait_for(4).await;
    let ids: Vec<&str> = records.iter().map(|r| r.session_id.as_deref().expect("session")).collect();
    assert_eq!(ids[0], "cc-session-42");
    assert_eq!(ids[1], ids[2], "same key + same conversation start = same session");
    assert_ne!(ids[1], ids[3]);
    let digits = ids[1].strip_prefix("hash_").expect("hash_ prefix");
    assert!(digits.len() == 24 && digits.bytes().all(|b| b.is_ascii_hexdigit()), "{}", ids[1]);
}

#[tokio::test]
async fn a_body_read_to_its_content_length_is_a_success_even_if_never_polled_to_the_end() {
    let mock = MockUpstream::start().await.expect("mock");
    let h = harness(&mock.url(), GatewaySettings::default());
    let resp = h.gateway.handle(messages_request(Some(KEY), SIMPLE)).await;
    let declared: usize = resp.headers()["content-length"].to_str().expect("cl").parse().expect("n");
    let mut body = resp.into_body();
    let mut got = 0;
    // Like hyper: stop polling once the declared length was sent, then drop the body.
    while got < declared {
        let frame = body.frame().await.expect("frame").expect("ok");
        got += frame.data_ref().map_or(0, |d| d.len());
    }
    drop(body);
    let r = &h.sink.wait_for(1).await[0];
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(r.usage.output_tokens, 15);
}

#[tokio::test]
async fn missing_key_is_a_401_even_when_the_body_is_bad() {
    let mock = MockUpstream::start().await.expect("mock");
    let h = harness(&mock.url(), GatewaySettings::default());
    expect_error(&h, messages_request(None, "{}"), StatusCode::UNAUTHORIZED, "authentication_error").await;
}

#[tokio::test]
async fn a_client_gone_before_the_response_began_leaves_a_record() {
    let mock = MockUpstream::start().await.expect("mock");
    mock.set_behavior(MockBehavior { first_byte_delay: Duration::from_secs(5), ..MockBehavior::default() });
    let h = harness(&mock.url(), GatewaySettings::default());
    // The client gives up after 100 ms: the handling future is dropped mid-flight.
    let handled = tokio::time::timeout(
        Duration::from_millis(100),
        h.gateway.handle(messages_request(Some(KEY), SIMPLE)),
    )
    .await;
    assert!(handled.is_err(), "the upstream is slower than the client's patience");
    let r = &h.sink.wait_for(1).await[0];
    assert_eq!(r.outcome, Outcome::ClientAbort);
    assert_eq!(r.status_code, 499);
    assert_eq!(r.user_id, Some(1), "what was known is kept");
    assert_eq!(r.provider_name.as_deref(), Some("anthropic-main"));
    assert_eq!(h.sink.records().len(), 1, "exactly one record");
}
