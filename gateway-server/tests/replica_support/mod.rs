//! gateway-server processes for the multi-replica tests, and the Redis they share.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running gateway-server, killed when dropped.
pub struct Replica {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a replica importing `config`, on `db_url`, sharing the Redis at `redis_url` under
/// `prefix`; its spill file is `<dir>/<name>-spill.jsonl`.
pub fn start_replica(
    config: &Path,
    db_url: &str,
    redis_url: &str,
    prefix: &str,
    dir: &Path,
    name: &str,
) -> Replica {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway-server"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("DATABASE_URL", db_url)
        .env("ADMIN_TOKEN", "adm-test")
        .env("REDIS_URL", redis_url)
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

/// Whether `CI=true`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether the shared Redis at 127.0.0.1:6379 answers; in CI its absence is a failure.
pub fn redis_available() -> bool {
    let up = std::net::TcpStream::connect("127.0.0.1:6379").is_ok();
    if !up {
        assert!(!in_ci(), "Redis is required in CI but 127.0.0.1:6379 is unreachable");
        eprintln!("skipping: Redis at 127.0.0.1:6379 is unreachable");
    }
    up
}
