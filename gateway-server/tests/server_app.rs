//! The HTTP app end to end in-process, on SQLite and on PostgreSQL: config imported into the
//! database, requests through axum to the mock upstream, and log rows written by the writer.

mod db_support;

use std::sync::Arc;

use gateway_core::Gateway;
use gateway_core::catalog::CatalogHandle;
use gateway_core::config::ConfigFile;
use gateway_core::forward::{ClientOptions, build_client};
use gateway_mock::MockUpstream;
use gateway_server::app::{AppState, app};
use gateway_server::db::{UsageWriter, WriterConfig};

use db_support::TestDb;

const KEY: &str = "sk-alice-0001";

fn config(upstream: &str) -> ConfigFile {
    ConfigFile::from_toml_str(&format!(
        r#"
[[providers]]
name = "mock"
type = "claude"
base_url = "{upstream}"
api_key = "upstream-secret"
model_redirects = [{{ match = "exact", from = "claude-3-5-sonnet-latest", to = "claude-sonnet-4-5" }}]
[[users]]
name = "alice"
[[users.keys]]
name = "laptop"
key = "{KEY}"
[[prices]]
model = "claude-sonnet-4-5"
input_per_mtok = "3"
output_per_mtok = "15"
"#
    ))
    .expect("config")
}

async fn exercise(test_db: TestDb) {
    let label = test_db.label;
    let mock = MockUpstream::start().await.expect("mock");
    let db = test_db.db.clone();
    db.import_config(&config(&mock.url())).await.expect("import");
    let catalog = CatalogHandle::new(db.load_catalog().await.expect("catalog"));
    let writer = UsageWriter::start(db.clone(), WriterConfig::with_spill_path(test_db.path("spill.jsonl")))
        .await
        .expect("writer");
    let gateway = Gateway::builder()
        .catalog_handle(catalog)
        .usage_sink(Arc::new(writer.clone()))
        .build()
        .expect("gateway");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(app(AppState {
        gateway,
        db: db.clone(),
    }));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = build_client(&ClientOptions::default()).expect("client");
    let head = client.head(format!("{base}/")).send().await.expect("head");
    assert_eq!(head.status(), 200, "{label}: Claude Code probes HEAD /");
    assert_eq!(client.get(format!("{base}/healthz")).send().await.expect("healthz").status(), 200);
    assert_eq!(client.get(format!("{base}/readyz")).send().await.expect("readyz").status(), 200);

    let body =
        r#"{"model":"claude-3-5-sonnet-latest","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = client
        .post(format!("{base}/v1/messages?beta=true"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200, "{label}");
    let plain_id = resp.headers()["x-request-id"].to_str().expect("id").to_owned();
    let reply: serde_json::Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    assert_eq!(reply["usage"]["output_tokens"], 15);

    let stream_body = r#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = client
        .post(format!("{base}/v1/messages"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(stream_body)
        .send()
        .await
        .expect("send");
    let stream_id = resp.headers()["x-request-id"].to_str().expect("id").to_owned();
    let text = String::from_utf8(resp.bytes().await.expect("stream").to_vec()).expect("utf8");
    assert!(text.contains("event: message_stop"), "{label}: {text}");

    let resp = client
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "sk-nope-0000")
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let rejected_id = resp.headers()["x-request-id"].to_str().expect("id").to_owned();
    let err: serde_json::Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    assert_eq!(err["error"]["type"], "authentication_error");

    writer.flush().await;
    let plain = db.request_log_by_request_id(&plain_id).await.expect("query").expect("plain row");
    assert_eq!(plain.status_code, 200);
    assert_eq!(plain.outcome, "success");
    assert_eq!(plain.original_model.as_deref(), Some("claude-3-5-sonnet-latest"));
    assert_eq!(plain.forwarded_model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!((plain.input_tokens, plain.output_tokens), (25, 15));
    assert_eq!(plain.cost_nanousd, Some(300_000), "{label}: (25*3 + 15*15) / 1e6 USD");
    assert_eq!(plain.provider_name.as_deref(), Some("mock"));
    assert!(plain.session_id.is_some());

    let streamed = db.request_log_by_request_id(&stream_id).await.expect("query").expect("stream row");
    assert!(streamed.stream);
    assert_eq!(streamed.outcome, "success");
    assert_eq!((streamed.input_tokens, streamed.output_tokens), (25, 15));
    assert!(streamed.ttft_ms.is_some());

    let rejected = db.request_log_by_request_id(&rejected_id).await.expect("query").expect("rejected row");
    assert_eq!(rejected.status_code, 401);
    assert_eq!(rejected.outcome, "rejected");
    assert_eq!(db.request_log_count().await.expect("count"), 3, "{label}: one row per proxied request");

    server.abort();
    writer.shutdown().await;
}

#[tokio::test]
async fn app_on_sqlite() {
    exercise(db_support::sqlite().await).await;
}

#[tokio::test]
async fn app_on_postgres() {
    if let Some(db) = db_support::postgres().await {
        exercise(db).await;
    }
}
