//! The processes under test: starting them, waiting for readiness, reading their memory and
//! CPU time from `/proc`, and stopping them however the benchmark ends.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

/// Prefix of the readiness line both binaries print on stdout.
const READY_PREFIX: &str = "listening on ";

/// How long a child may take to print its readiness line (the gateway migrates its database
/// first).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a child gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Linux `USER_HZ`: the unit of CPU times in `/proc/<pid>/stat`. It is 100 on every Linux
/// architecture this runs on; reading it needs `sysconf`, i.e. unsafe code or a libc crate.
const CLOCK_TICKS_PER_SEC: u64 = 100;

/// A running child process, stopped when dropped, so an error or a panic in the benchmark
/// never leaves a gateway or mock behind.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    stderr_log: PathBuf,
    addr: SocketAddr,
}

impl ChildGuard {
    /// Starts `command` (stdout is taken over, stderr goes to `stderr_log`) and waits until it
    /// prints `listening on http://ADDR`.
    pub fn start(name: &str, mut command: Command, stderr_log: &Path) -> anyhow::Result<Self> {
        let log =
            File::create(stderr_log).with_context(|| format!("cannot create {}", stderr_log.display()))?;
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log));
        let mut child = command.spawn().with_context(|| format!("cannot start {name} ({command:?})"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("{name}: no stdout pipe"))?;
        // Guard first, so a failed wait below still stops the child.
        let mut guard = Self {
            name: name.to_owned(),
            child: Some(child),
            stderr_log: stderr_log.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };

        let (tx, rx) = mpsc::channel::<String>();
        // The reader keeps draining stdout after the readiness line: a child blocked on a full
        // pipe would stall mid-benchmark.
        std::thread::Builder::new().name(format!("{name}-stdout")).spawn(move || {
            let mut announced = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !announced && let Some(rest) = line.strip_prefix(READY_PREFIX) {
                    announced = true;
                    let _ = tx.send(rest.to_owned());
                }
            }
        })?;
        let url = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(url) => url,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("{name} printed no `listening on` line within {READY_TIMEOUT:?}{}", guard.stderr_tail())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = guard.child.as_mut().and_then(|c| c.wait().ok());
                bail!("{name} exited before it was ready ({status:?}){}", guard.stderr_tail())
            }
        };
        guard.addr =
            parse_listening_url(&url).with_context(|| format!("{name} printed `{READY_PREFIX}{url}`"))?;
        Ok(guard)
    }

    /// Address the child listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails when the child has exited (crashed) since it was started.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else { bail!("{} was stopped", self.name) };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                bail!("{} exited during the benchmark ({status}){}", self.name, self.stderr_tail())
            }
            Err(err) => bail!("cannot check {}: {err}", self.name),
        }
    }

    /// Resident set size now (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.pid().ok_or_else(|| anyhow!("{} was stopped", self.name))?;
        read_status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
    }

    /// Peak resident set size since start (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.pid().ok_or_else(|| anyhow!("{} was stopped", self.name))?;
        read_status_kib(pid, "VmHWM:").map(|kib| kib * 1024)
    }

    /// User + system CPU time consumed so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let pid = self.pid().ok_or_else(|| anyhow!("{} was stopped", self.name))?;
        cpu_time_of(&pid.to_string())
    }

    /// The last lines the child wrote to stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let Ok(mut file) = File::open(&self.stderr_log) else { return String::new() };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(2_000)));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        if text.trim().is_empty() {
            String::new()
        } else {
            format!("\n--- {} stderr (tail) ---\n{}", self.name, text.trim_end())
        }
    }

    /// Stops the child: SIGTERM (the gateway then shuts down gracefully and flushes its usage
    /// log), SIGKILL after a grace period.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // std only sends SIGKILL and the workspace forbids unsafe code, so the `kill` utility
        // sends the SIGTERM.
        let termed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if termed {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `http://127.0.0.1:PORT` (optionally with a trailing slash) to a socket address.
pub fn parse_listening_url(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.trim().strip_prefix("http://").ok_or_else(|| anyhow!("not an http:// URL"))?;
    Ok(rest.trim_end_matches('/').parse()?)
}

fn read_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&status, field).ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// The value of a `Name:   1234 kB` line of `/proc/<pid>/status`, in KiB.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// CPU time (user + system) of `/proc/<pid>`; `pid` may be `self`.
pub fn cpu_time_of(pid: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or_else(|| anyhow!("cannot parse /proc/{pid}/stat"))?;
    Ok(Duration::from_millis(ticks * 1000 / CLOCK_TICKS_PER_SEC))
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks. The
/// command name (field 2) is in parentheses and may contain spaces, so fields are counted
/// after the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // after_comm starts at field 3 (state); utime is field 14, i.e. the 12th from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Where the benchmarked binaries live by default: `$CARGO_TARGET_DIR/release` when set, else
/// `<workspace root>/target/release`.
pub fn default_release_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("release");
    }
    // This crate sits one level below the workspace root.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).join("target").join("release")
}

/// What the report says about the machine and how busy it was.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MachineInfo {
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` in bytes.
    pub mem_total_bytes: u64,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// 1-minute load average when the benchmark started.
    pub loadavg_start: f64,
    /// 1-minute load average when it ended.
    pub loadavg_end: f64,
    /// Compiler processes (cargo, rustc) running when the benchmark started: they compete for
    /// the CPUs and disturb the figures.
    pub competing_builds_start: Vec<String>,
    /// The same when it ended.
    pub competing_builds_end: Vec<String>,
}

impl MachineInfo {
    /// Reads `/proc`; fields that cannot be read stay empty.
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map(usize::from).unwrap_or(0),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| {
                    l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim())
                })
                .unwrap_or("unknown")
                .to_owned(),
            mem_total_bytes: parse_status_kib(&meminfo, "MemTotal:").unwrap_or(0) * 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            loadavg_start: loadavg(),
            loadavg_end: 0.0,
            competing_builds_start: competing_builds(),
            competing_builds_end: Vec::new(),
        }
    }

    /// Records the state at the end of the run.
    pub fn finish(&mut self) {
        self.loadavg_end = loadavg();
        self.competing_builds_end = competing_builds();
    }
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// `pid name` of every running cargo or rustc process (other than cargo's own `cargo run`
/// parent, which sleeps while the benchmark runs).
pub fn competing_builds() -> Vec<String> {
    let me = std::process::id();
    let parent = std::os::unix::process::parent_id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found: Vec<(u32, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|&pid| pid != me && pid != parent)
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim();
            (comm == "rustc" || comm == "cargo").then(|| (pid, comm.to_owned()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(pid, comm)| format!("{pid} {comm}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_url_parses() {
        assert_eq!(
            parse_listening_url("http://127.0.0.1:4321").expect("valid"),
            SocketAddr::from(([127, 0, 0, 1], 4321))
        );
        assert_eq!(parse_listening_url("http://127.0.0.1:80/\n").expect("valid").port(), 80);
        assert!(parse_listening_url("https://127.0.0.1:1").is_err());
        assert!(parse_listening_url("http://localhost").is_err());
    }

    #[test]
    fn status_fields_parse() {
        let status = "Name:\tgateway-server\nVmPeak:\t  999 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(12_345));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(20_480));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn stat_cpu_ticks_skip_a_command_name_with_spaces_and_parens() {
        // Fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime ...
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(281));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_time_of("self").is_ok());
    }
}
