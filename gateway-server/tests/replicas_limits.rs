//! Limits with several gateway-server processes sharing PostgreSQL and Redis: one RPM across
//! replicas, config changes reaching every replica within a second, spend surviving an emptied
//! Redis and a restart, and Redis stopping mid-run.

mod db_support;
mod replica_support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use gateway_core::forward::{ClientOptions, build_client};
use gateway_mock::MockUpstream;
use replica_support::{Replica, in_ci, redis_available, start_replica};

const KEY: &str = "sk-replica-limits-1";
const BODY: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;

struct Cluster<'a> {
    config: &'a Path,
    db_url: &'a str,
    dir: &'a Path,
    redis_url: String,
    prefix: String,
}

impl Cluster<'_> {
    fn start(&self, name: &str) -> Replica {
        self.start_with(self.config, name)
    }

    fn start_with(&self, config: &Path, name: &str) -> Replica {
        start_replica(config, self.db_url, &self.redis_url, &self.prefix, self.dir, name)
    }

    fn import(&self, config: &Path) {
        let status = Command::new(env!("CARGO_BIN_EXE_gateway-server"))
            .arg("import")
            .arg(config)
            .env("DATABASE_URL", self.db_url)
            .stdout(Stdio::null())
            .status()
            .expect("run import");
        assert!(status.success(), "import failed");
    }
}

fn config(providers: &[(&str, &MockUpstream, bool)], user_limits: &str) -> String {
    let mut toml = String::new();
    for (i, (name, mock, enabled)) in providers.iter().enumerate() {
        toml.push_str(&format!(
            "[[providers]]\nname = '{name}'\ntype = 'claude'\nbase_url = '{}'\napi_key = 'up'\n\
             priority = {i}\nenabled = {enabled}\n\n",
            mock.url()
        ));
    }
    toml.push_str(&format!(
        "[[users]]\nname = 'team'\n{user_limits}\n[[users.keys]]\nname = 'k'\nkey = '{KEY}'\n\n\
         [[prices]]\nmodel = 'claude-sonnet-4-5'\ninput_per_mtok = '1000'\noutput_per_mtok = '1000'\n"
    ));
    toml
}

async fn send(client: &reqwest::Client, base: &str) -> u16 {
    client
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", KEY)
        .body(BODY)
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

fn redis_keys(url: &str, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client.get_connection().expect("redis connection");
    redis::cmd("KEYS").arg(pattern).query(&mut conn).expect("KEYS")
}

fn redis_del(url: &str, keys: &[String]) {
    if keys.is_empty() {
        return;
    }
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client.get_connection().expect("redis connection");
    let _: () = redis::cmd("DEL").arg(keys).query(&mut conn).expect("DEL");
}

#[tokio::test]
async fn one_rpm_limit_config_changes_and_spend_across_replicas() {
    if !redis_available() {
        return;
    }
    let Some(pg) = db_support::postgres().await else { return };
    let p1 = MockUpstream::start().await.expect("mock");
    let p2 = MockUpstream::start().await.expect("mock");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, config(&[("p1", &p1, true), ("p2", &p2, true)], "rpm_limit = 10")).expect("config");
    let cluster = Cluster {
        config: &path,
        db_url: &pg.url,
        dir: dir.path(),
        redis_url: "redis://127.0.0.1:6379".into(),
        prefix: format!("gwtest-{:016x}:", rand::random::<u64>()),
    };
    let a = cluster.start("a");
    let b = cluster.start("b");
    let client = build_client(&ClientOptions::default()).expect("client");

    // 30 requests at once, alternating replicas: exactly 10 admitted in all.
    let statuses = join_all((0..30).map(|i| send(&client, if i % 2 == 0 { &a.url } else { &b.url }))).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((admitted, limited), (10, 20), "{statuses:?}");

    // A config change imported once reaches both replicas within a second: p1 disabled, the
    // RPM limit replaced by a daily spend limit of $0.48. The 10 requests so far spent $0.40
    // (at $0.04 each) before spend was tracked: the new window starts from the request log.
    let changed = dir.path().join("changed.toml");
    std::fs::write(&changed, config(&[("p1", &p1, false), ("p2", &p2, true)], "limit_daily_usd = '0.48'"))
        .expect("config");
    cluster.import(&changed);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    p1.clear_received();
    p2.clear_received();
    assert_eq!(send(&client, &a.url).await, 200);
    assert_eq!(send(&client, &b.url).await, 200);
    assert!(p1.received().is_empty(), "disabled provider still used");
    assert_eq!(p2.received().len(), 2);

    // $0.48 spent: refused on both replicas (spend is added when the record is made).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(send(&client, &a.url).await, 402);
    assert_eq!(send(&client, &b.url).await, 402);

    // Redis emptied of everything of this deployment and both replicas restarted: the windows
    // are rebuilt from the request log, so the user is still at the limit. (The replicas are
    // killed, not stopped: first let their writers flush the last rows.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(a);
    drop(b);
    let keys = redis_keys(&cluster.redis_url, &format!("{}*", cluster.prefix));
    assert!(!keys.is_empty(), "the replicas kept state in Redis");
    redis_del(&cluster.redis_url, &keys);
    assert!(redis_keys(&cluster.redis_url, &format!("{}*", cluster.prefix)).is_empty());
    let a = cluster.start_with(&changed, "a2");
    assert_eq!(send(&client, &a.url).await, 402, "spend forgotten after a Redis flush and a restart");
    let rows = pg_rows_with_status(&pg.url, 402).await;
    assert!(rows >= 3, "refused requests leave log rows ({rows})");
}

async fn pg_rows_with_status(url: &str, status: i32) -> i64 {
    let db = gateway_server::db::Database::connect(url).await.expect("db");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = db.recent_request_logs(1_000).await.expect("rows");
        let n = rows.iter().filter(|r| r.status_code == status).count() as i64;
        if n >= 3 || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A private Redis on a free port, so stopping it does not disturb other tests.
struct PrivateRedis {
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                assert!(!in_ci(), "redis-server is required in CI: {e}");
                eprintln!("skipping: cannot run redis-server: {e}");
                return None;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "private redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self { child: Some(child) })
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn redis_stopping_mid_run_fails_open_and_limits_resume_when_it_is_back() {
    let port = TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let Some(mut redis) = PrivateRedis::start(port) else { return };
    let p1 = MockUpstream::start().await.expect("mock");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, config(&[("p1", &p1, true)], "rpm_limit = 3")).expect("config");
    let db_url = format!("sqlite://{}", dir.path().join("gw.db").display());
    let cluster = Cluster {
        config: &path,
        db_url: &db_url,
        dir: dir.path(),
        redis_url: format!("redis://127.0.0.1:{port}"),
        prefix: "gw:".into(),
    };
    let a = cluster.start("a");
    let client = build_client(&ClientOptions::default()).expect("client");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(&client, &a.url).await);
    }
    assert_eq!(statuses, [200, 200, 200, 429], "the limit holds while Redis is up");

    redis.stop();
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(send(&client, &a.url).await, 200, "fail-open while Redis is down");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "requests must not hang on a dead Redis");
    let ready = client.get(format!("{}/readyz", a.url)).send().await.expect("readyz");
    let ready: serde_json::Value = serde_json::from_slice(&ready.bytes().await.expect("body")).expect("json");
    assert!(ready["limit_store_failures"].as_u64().is_some_and(|n| n >= 5), "failures counted: {ready}");

    let Some(_back) = PrivateRedis::start(port) else { return };
    redis.child = None;
    // The store backs off for a moment after failures; within a few seconds limits apply again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen_limit = false;
    while Instant::now() < deadline {
        if send(&client, &a.url).await == 429 {
            seen_limit = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_limit, "limits did not resume after Redis came back");
}
