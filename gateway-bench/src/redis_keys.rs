//! The Redis the gateway shares its state through when the benchmark runs with `--redis-url`:
//! a key prefix of its own for the run, so that it never touches another user's keys, the
//! deletion of that prefix's keys at the end, and the server's process when it runs on this
//! machine (its CPU time is the benchmark's, not another process's).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use redis::Commands;

/// Connecting and every command of the clean-up.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Keys deleted per `UNLINK`.
const DELETE_BATCH: usize = 500;

/// One run's Redis: the URL handed to gateway-server as `REDIS_URL` and the unique
/// `REDIS_KEY_PREFIX` its keys are written under.
#[derive(Debug, Clone)]
pub struct RedisRun {
    url: String,
    prefix: String,
    local_pid: Option<u32>,
}

impl RedisRun {
    /// Checks that `url` answers (so a wrong URL fails before any process starts), picks a
    /// prefix no other run uses and looks for the server among this machine's processes.
    pub fn connect(url: &str) -> anyhow::Result<Self> {
        let mut run = Self { url: url.to_owned(), prefix: unique_prefix(), local_pid: None };
        let mut conn = run.connection()?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut conn)
            .with_context(|| format!("INFO {url} failed"))?;
        // The pid is the server's own: on another machine (or in a container) it names nothing
        // here, or another program.
        run.local_pid = server_pid(&info).filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.starts_with("redis-server"))
        });
        Ok(run)
    }

    /// The Redis server's pid when it runs on this machine.
    pub fn local_pid(&self) -> Option<u32> {
        self.local_pid
    }

    /// `REDIS_URL` of gateway-server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `REDIS_KEY_PREFIX` of gateway-server.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn connection(&self) -> anyhow::Result<redis::Connection> {
        let client =
            redis::Client::open(self.url.as_str()).with_context(|| format!("bad Redis URL {}", self.url))?;
        let conn = client
            .get_connection_with_timeout(TIMEOUT)
            .with_context(|| format!("cannot connect to Redis at {}", self.url))?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        Ok(conn)
    }

    /// Deletes every key under the run's prefix (`SCAN` + `UNLINK`); returns how many.
    pub fn delete_keys(&self) -> anyhow::Result<usize> {
        let mut conn = self.connection()?;
        let keys: Vec<String> = conn
            .scan_match::<_, String>(format!("{}*", self.prefix))
            .and_then(Iterator::collect)
            .with_context(|| format!("SCAN {}* failed", self.prefix))?;
        for batch in keys.chunks(DELETE_BATCH) {
            redis::cmd("UNLINK").arg(batch).exec(&mut conn).context("UNLINK failed")?;
        }
        Ok(keys.len())
    }
}

/// `process_id` from the reply to `INFO server`.
fn server_pid(info: &str) -> Option<u32> {
    info.lines().find_map(|line| line.strip_prefix("process_id:")).and_then(|pid| pid.trim().parse().ok())
}

/// `gateway-bench-<pid>-<nanoseconds>:`: unique per run, no `{` (which would move the gateway's
/// hash tags) and no glob character (it is matched with `SCAN MATCH <prefix>*`).
fn unique_prefix() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("gateway-bench-{}-{nanos:x}:", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_unique_and_safe_for_hash_tags_and_scan_patterns() {
        let a = unique_prefix();
        std::thread::sleep(Duration::from_millis(1));
        let b = unique_prefix();
        assert_ne!(a, b);
        for p in [&a, &b] {
            assert!(p.starts_with("gateway-bench-") && p.ends_with(':'), "{p}");
            assert!(!p.contains(['{', '}', '*', '?', '[', ']', '\\']), "{p}");
        }
    }

    #[test]
    fn server_pid_comes_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\ntcp_port:6379\r\n";
        assert_eq!(server_pid(info), Some(4242));
        assert_eq!(server_pid("# Server\r\nredis_version:7.0.15\r\n"), None);
    }

    /// Runs against the local Redis when one answers (required in CI, as the gateway's Redis
    /// tests do).
    #[test]
    fn deletes_the_keys_under_its_prefix_and_no_other() {
        const URL: &str = "redis://127.0.0.1:6379";
        if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!in_ci, "Redis is required in CI but 127.0.0.1:6379 is unreachable");
            eprintln!("skipping: Redis at 127.0.0.1:6379 is unreachable");
            return;
        }
        let run = RedisRun::connect(URL).expect("connect");
        let other = RedisRun::connect(URL).expect("connect");
        let mut conn = run.connection().expect("connection");
        let _: () = conn.set(format!("{}{{lim}}:u:1:rpm", run.prefix()), 1).expect("SET");
        let _: () = conn.set(format!("{}{{p:1}}:breaker", run.prefix()), 1).expect("SET");
        let _: () = conn.set(format!("{}{{p:1}}:breaker", other.prefix()), 1).expect("SET");

        assert_eq!(run.delete_keys().expect("delete"), 2);
        assert_eq!(run.delete_keys().expect("delete"), 0);
        assert_eq!(other.delete_keys().expect("delete"), 1, "another run's key was left alone");
        assert!(run.local_pid().is_some(), "the server on 127.0.0.1 is a local process");
    }
}
