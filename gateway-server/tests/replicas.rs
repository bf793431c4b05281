//! Two gateway-server processes sharing one database (PostgreSQL; SQLite when no PostgreSQL is
//! reachable outside CI) and one Redis act as one for routing: a session keeps its provider
//! across replicas, and a circuit opened by failures seen on one replica keeps the other away
//! from that provider.

mod db_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use gateway_core::forward::{ClientOptions, build_client};
use gateway_mock::{MockBehavior, MockUpstream};

struct Replica {
    child: Child,
    url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &std::path::Path, db_url: &str, dir: &std::path::Path, prefix: &str, name: &str) -> Replica {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway-server"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("DATABASE_URL", db_url)
        .env("ADMIN_TOKEN", "adm-test")
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("REDIS_KEY_PREFIX", prefix)
        .env("USAGE_SPILL_PATH", dir.join(format!("{name}-spill.jsonl")))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gateway-server");
    let stdout = child.stdout.take().expect("stdout");
    let url = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned))
        .expect("listening line");
    Replica { child, url }
}

fn redis_available() -> bool {
    let up = std::net::TcpStream::connect("127.0.0.1:6379").is_ok();
    if !up {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("Redis is required in CI but 127.0.0.1:6379 is unreachable");
        }
        eprintln!("skipping: Redis at 127.0.0.1:6379 is unreachable");
    }
    up
}

#[tokio::test]
async fn replicas_share_sessions_and_breakers_through_redis() {
    if !redis_available() {
        return;
    }
    let p1 = MockUpstream::start().await.expect("mock");
    let p2 = MockUpstream::start().await.expect("mock");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[[providers]]\nname='p1'\ntype='claude'\nbase_url='{}'\napi_key='a'\nmax_retry_attempts=1\ncircuit_breaker_failure_threshold=1\n\
             [[providers]]\nname='p2'\ntype='claude'\nbase_url='{}'\napi_key='b'\nmax_retry_attempts=1\ncircuit_breaker_failure_threshold=1\n\
             [[users]]\nname='a'\n[[users.keys]]\nname='k'\nkey='sk-replica-01'\n",
            p1.url(),
            p2.url()
        ),
    )
    .expect("config");
    let pg = db_support::postgres().await;
    let db_url = match &pg {
        Some(t) => t.url.clone(),
        None => format!("sqlite://{}", dir.path().join("gw.db").display()),
    };
    let prefix = format!("gwtest-{:016x}:", rand::random::<u64>());
    let a = start(&config, &db_url, dir.path(), &prefix, "a");
    let b = start(&config, &db_url, dir.path(), &prefix, "b");
    let client = build_client(&ClientOptions::default()).expect("client");
    let send = |base: String, session: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("{base}/v1/messages"))
                .header("x-api-key", "sk-replica-01")
                .header("x-session-id", session)
                .body(r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#)
                .send()
                .await
                .expect("send")
                .status()
        }
    };

    // A session started on A continues on B on the same provider.
    assert_eq!(send(a.url.clone(), "sticky".into()).await, 200);
    let first = if p1.received().len() == 1 { &p1 } else { &p2 };
    for _ in 0..6 {
        assert_eq!(send(b.url.clone(), "sticky".into()).await, 200);
    }
    assert_eq!(first.received().len(), 7, "all on the provider that served the session first");

    // p1 fails once on A: its circuit opens for everyone.
    p1.clear_received();
    p2.clear_received();
    p1.set_behavior(MockBehavior { force_status: Some(500), ..MockBehavior::default() });
    let mut session = 0;
    while p1.received().is_empty() {
        session += 1;
        assert!(session < 50, "p1 never chosen");
        assert_eq!(send(a.url.clone(), format!("s-{session}")).await, 200, "failover to p2");
    }
    p1.set_behavior(MockBehavior::default());
    for i in 0..10 {
        assert_eq!(send(b.url.clone(), format!("b-{i}")).await, 200);
    }
    assert_eq!(p1.received().len(), 1, "replica B kept away from the provider whose circuit opened on A");
}
