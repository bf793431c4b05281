//! The embedding example (`examples/axum_embed.rs`) as a test: the gateway under `/llm` of an
//! axum app, behind the app's own authentication, streaming included.

#[allow(dead_code)] // the example's `main` is not used here
#[path = "../examples/axum_embed.rs"]
mod example;

use std::sync::Arc;

use axum::body::Body;
use gateway_core::store::MemoryUsageSink;
use gateway_mock::MockUpstream;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

const BODY: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;

fn post(path: &str, auth: Option<&str>, body: &str) -> Request<Body> {
    let mut req = Request::post(path).header("content-type", "application/json");
    if let Some(token) = auth {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.body(Body::from(body.to_owned())).expect("request")
}

#[tokio::test]
async fn the_gateway_serves_under_llm_behind_the_apps_own_auth() {
    let upstream = MockUpstream::start().await.expect("mock");
    let sink = MemoryUsageSink::new();
    let gateway = example::gateway(&upstream.url(), Arc::new(sink.clone())).expect("gateway");
    let auth = example::AppAuth::new(&[("app-session-alice", "sk-gateway-alice-app")]);
    let app = example::app(gateway, auth);

    let home = app.clone().oneshot(Request::get("/").body(Body::empty()).expect("req")).await.expect("home");
    assert_eq!(home.status(), StatusCode::OK);

    // Without the app's session the gateway is never reached.
    let denied = app.clone().oneshot(post("/llm/v1/messages", None, BODY)).await.expect("resp");
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let foreign = app.clone().oneshot(post("/llm/v1/messages", Some("sk-gateway-alice-app"), BODY)).await;
    assert_eq!(
        foreign.expect("resp").status(),
        StatusCode::UNAUTHORIZED,
        "gateway keys are not app sessions"
    );

    let ok =
        app.clone().oneshot(post("/llm/v1/messages", Some("app-session-alice"), BODY)).await.expect("resp");
    assert_eq!(ok.status(), StatusCode::OK);
    let json: serde_json::Value =
        serde_json::from_slice(&ok.into_body().collect().await.expect("body").to_bytes()).expect("json");
    assert_eq!(json["type"], "message");

    let stream_body = BODY.replace("\"max_tokens\"", "\"stream\":true,\"max_tokens\"");
    let streamed = app
        .clone()
        .oneshot(post("/llm/v1/messages", Some("app-session-alice"), &stream_body))
        .await
        .expect("resp");
    assert_eq!(streamed.status(), StatusCode::OK);
    let text = String::from_utf8(streamed.into_body().collect().await.expect("body").to_bytes().to_vec())
        .expect("utf-8");
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(text.trim_end().ends_with("data: {\"type\":\"message_stop\"}"), "{text}");

    // The upstream saw the provider's key, never the app's token or the gateway key.
    let received = upstream.received();
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(r.headers.get("x-api-key").and_then(|v| v.to_str().ok()), Some("upstream-secret"));
        assert!(r.headers.get("authorization").is_none());
    }
    let records = sink.wait_for(2).await;
    assert!(records.iter().all(|r| r.user_id == Some(1) && r.cost.is_some()));
    assert!(
        records.iter().all(|r| r.endpoint == "/v1/messages"),
        "the mount prefix is not part of the endpoint"
    );
}
