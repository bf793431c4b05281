//! The server binary as a process: SIGTERM lets a stream in flight finish, refuses new
//! connections, flushes the request log, and exits 0; a stream that outlives the grace period is
//! cut, and still logged.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway_core::forward::{ClientOptions, build_client};
use gateway_mock::{MockBehavior, MockUpstream};
use gateway_server::db::Database;

/// A running `gateway-server` in front of a mock whose streams take `chunks` x 100 ms.
struct Server {
    child: Child,
    addr: String,
    db_url: String,
    _mock: MockUpstream,
    _dir: tempfile::TempDir,
}

async fn start(chunks: usize, grace_seconds: u64, workers: usize) -> Server {
    let mock = MockUpstream::start().await.expect("mock");
    mock.set_behavior(MockBehavior {
        chunks,
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
        .env("SHUTDOWN_GRACE_SECONDS", grace_seconds.to_string())
        .env("GATEWAY_WORKERS", workers.to_string())
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
    Server { child, addr, db_url, _mock: mock, _dir: dir }
}

impl Server {
    /// Starts a streamed request; returns its response, still streaming, and its request id.
    async fn start_stream(&self, client: &reqwest::Client) -> (reqwest::Response, String) {
        let resp = client
            .post(format!("{}/v1/messages", self.addr))
            .header("x-api-key", "sk-shutdown-01")
            .body(STREAM_BODY)
            .send()
            .await
            .expect("stream starts");
        assert_eq!(resp.status(), 200);
        let request_id = resp.headers()["x-request-id"].to_str().expect("id").to_owned();
        (resp, request_id)
    }

    fn terminate(&self) {
        let status =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to end; the database stays until the returned directory is dropped.
    async fn exit_status(self) -> (std::process::ExitStatus, String, tempfile::TempDir) {
        let Server { mut child, db_url, _dir, .. } = self;
        let exit = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
        (exit, db_url, _dir)
    }
}

const STREAM_BODY: &str =
    r#"{"model":"m","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn sigterm_drains_streams_and_flushes_the_log() {
    // 20 deltas x 100 ms: the stream is still running when SIGTERM arrives.
    let server = start(20, 30, 2).await;
    let client = build_client(&ClientOptions::default()).expect("client");
    let (resp, request_id) = server.start_stream(&client).await;

    server.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = client.get(format!("{}/healthz", server.addr)).timeout(Duration::from_secs(2)).send().await;
    assert!(refused.is_err(), "no new connections after SIGTERM");

    let text = String::from_utf8(resp.bytes().await.expect("stream completes").to_vec()).expect("utf8");
    assert!(text.contains("event: message_stop"), "the in-flight stream finished: {text}");

    let (exit, db_url, _dir) = server.exit_status().await;
    assert!(exit.success(), "exit status {exit:?}");

    let db = Database::connect(&db_url).await.expect("db");
    let row =
        db.request_log_by_request_id(&request_id).await.expect("query").expect("row flushed before exit");
    assert_eq!(row.outcome, "success");
    assert_eq!(row.output_tokens, 15);
}

#[tokio::test]
async fn a_stream_longer_than_the_grace_period_is_cut_and_still_logged() {
    // 100 deltas x 100 ms: ten seconds, far beyond a grace period of one.
    let server = start(100, 1, 2).await;
    let client = build_client(&ClientOptions::default()).expect("client");
    let (resp, request_id) = server.start_stream(&client).await;
    // An idle keep-alive connection must not hold the shutdown up either.
    let idle = client.get(format!("{}/healthz", server.addr)).send().await.expect("healthz");
    assert_eq!(idle.status(), 200);

    let asked = Instant::now();
    server.terminate();
    let cut = resp.bytes().await;
    let text = cut.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    assert!(!text.contains("event: message_stop"), "the stream was cut before its end");
    let (exit, db_url, _dir) = server.exit_status().await;
    assert!(exit.success(), "exit status {exit:?}");
    assert!(asked.elapsed() < Duration::from_secs(8), "the grace period bounds the shutdown");

    let db = Database::connect(&db_url).await.expect("db");
    let row =
        db.request_log_by_request_id(&request_id).await.expect("query").expect("the cut stream is logged");
    assert_eq!(row.outcome, "client_abort");
}
