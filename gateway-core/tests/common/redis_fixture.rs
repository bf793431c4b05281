//! A Redis for the store suites: a fresh key prefix per test, a direct connection for checks and
//! cleanup, and the CI rule: without a Redis a test prints why it skips, unless `CI=true`, where
//! it fails.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::time::Duration;

use gateway_core::store::RedisStateOptions;
use redis::AsyncCommands;

/// Where the suites expect Redis.
pub const URL: &str = "redis://127.0.0.1:6379";

/// A direct connection for checks and cleanup, if Redis answers; else skips (or fails on CI).
pub async fn raw(test: &str) -> Option<redis::aio::MultiplexedConnection> {
    let connect = async {
        let client = redis::Client::open(URL)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    let error = match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok(conn)) => return Some(conn),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 3 s".to_owned(),
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but Redis at {URL} is unreachable ({error}): the Redis state store goes untested");
    }
    eprintln!("skipping redis test {test}: Redis at {URL} is unreachable ({error})");
    None
}

/// One test's share of Redis: a random key prefix and a direct connection.
pub struct RedisPrefix {
    pub prefix: String,
    raw: redis::aio::MultiplexedConnection,
}

impl RedisPrefix {
    /// A fresh prefix, or `None` when the test skips (see [`raw`]).
    pub async fn new(test: &str) -> Option<Self> {
        let raw = raw(test).await?;
        let prefix = format!("gwtest:{:016x}:", rand::random::<u64>());
        Some(Self { prefix, raw })
    }

    /// Store options on this prefix. The timeout is generous: the machine may be busy
    /// compiling; the timeout itself has its own tests.
    pub fn options(&self) -> RedisStateOptions {
        RedisStateOptions { prefix: self.prefix.clone(), timeout: Duration::from_secs(3), clock: None }
    }

    /// The keys under this prefix.
    pub async fn keys(&mut self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        let mut iter: redis::AsyncIter<'_, String> =
            self.raw.scan_match(format!("{}*", self.prefix)).await.expect("scan");
        while let Some(key) = iter.next_item().await {
            keys.push(key.expect("scan item"));
        }
        keys
    }

    /// Drops every cached script of the server, as a restart does.
    pub async fn flush_scripts(&mut self) {
        redis::cmd("SCRIPT").arg("FLUSH").exec_async(&mut self.raw).await.expect("SCRIPT FLUSH");
    }

    /// A key's remaining TTL in ms (-1 none, -2 no key).
    pub async fn pttl(&mut self, key: &str) -> i64 {
        self.raw.pttl(key).await.expect("pttl")
    }

    /// Checks that every key left has a TTL, then deletes them.
    pub async fn finish(mut self) {
        let keys = self.keys().await;
        for key in &keys {
            let ttl: i64 = self.raw.pttl(key).await.expect("pttl");
            // -2: expired since the scan, fine; -1: no TTL, a leak.
            assert!(ttl > 0 || ttl == -2, "key {key} has no TTL ({ttl})");
        }
        if !keys.is_empty() {
            let _: i64 = self.raw.del(&keys).await.expect("cleanup");
        }
    }
}

/// A private `redis-server` on a free port, stopped on drop: for tests that restart Redis or
/// flush its scripts, which would disturb the other tests on the shared one.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    pub fn start(port: u16) -> Option<Self> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let server = Self { port, child: Some(child) };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}
