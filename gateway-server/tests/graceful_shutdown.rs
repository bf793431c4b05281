//! The server binary as a process: SIGTERM lets a stream in flight finish, refuses new
//! connections, flushes the request log, and exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use gateway_core::forward::{ClientOptions, build_client};
use gateway_mock::{MockBehavior, MockUpstream};
use gateway_server::db::Database;

#[tokio::test]
async fn sigterm_drains_streams_and_flushes_the_log() {
    let mock = MockUpstream::start().await.expect("mock");
    // 20 deltas x 100 ms: the stream is still running when SIGTERM arrives.
    mock.set_behavior(MockBehavior {
        chunks: 20,
        chunk_delay: Duration::from_millis(100),
        ..MockBehavior::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[[providers]]\nname='mock'\ntype='claude'\nbase_url='{}'\napi_key='up'\n[[users]]\nname='a'\n[[users.keys]]\nname='k'\nkey='sk-shutdown-01'\n",
            mock.url()
        ),
    )
    .expect("config");
    let db_url = format!("sqlite://{}", dir.path().join("gw.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway-server"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("DATABASE_URL", &db_url)
        .env("ADMIN_TOKEN", "adm-test-token")
        .env("USAGE_SPILL_PATH", dir.path().join("spill.jsonl"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gateway-server");
    let stdout = child.stdout.take().expect("stdout");
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned))
        .expect("listening line");

    let client = build_client(&ClientOptions::default()).expect("client");
    let resp = client
        .post(format!("{addr}/v1/messages"))
        .header("x-api-key", "sk-shutdown-01")
        .body(r#"{"model":"m","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .expect("stream starts");
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().expect("id").to_owned();

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = client.get(format!("{addr}/healthz")).timeout(Duration::from_secs(2)).send().await;
    assert!(refused.is_err(), "no new connections after SIGTERM");

    let text = String::from_utf8(resp.bytes().await.expect("stream completes").to_vec()).expect("utf8");
    assert!(text.contains("event: message_stop"), "the in-flight stream finished: {text}");

    let exit = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    assert!(exit.success(), "exit status {exit:?}");

    let db = Database::connect(&db_url).await.expect("db");
    let row =
        db.request_log_by_request_id(&request_id).await.expect("query").expect("row flushed before exit");
    assert_eq!(row.outcome, "success");
    assert_eq!(row.output_tokens, 15);
}
