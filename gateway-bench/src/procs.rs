//! The processes under test: starting them, waiting for readiness, reading their memory and
//! CPU time from `/proc`, and stopping them however the benchmark ends.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError, mpsc};
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

/// Pids of the children currently running, for the signal handler: a SIGTERM or SIGINT ends
/// the benchmark without unwinding, so the guards' `Drop` would not run.
static LIVE_CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn live_children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    LIVE_CHILDREN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends `signal` (`TERM`, `KILL`) to `pid` with the `kill` utility: std only sends SIGKILL to
/// its own children, and the workspace forbids the unsafe code a direct `kill(2)` needs.
fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `pid` has exited (gone, or a zombie waiting to be reaped).
fn has_exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) == Some("Z")
    })
}

/// Starts a thread that, on SIGINT or SIGTERM, stops the running children and exits with
/// status 130: without it, `kill <gateway-bench>` would leave the servers running.
pub fn stop_children_on_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("signals".to_owned()).spawn(move || {
        let name = runtime.block_on(async {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            }
        });
        let pids = live_children().clone();
        for &pid in &pids {
            send_signal(pid, "TERM");
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && !pids.iter().all(|&pid| has_exited(pid)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for &pid in pids.iter().filter(|&&pid| !has_exited(pid)) {
            send_signal(pid, "KILL");
        }
        eprintln!("gateway-bench: {name}: stopped the servers ({pids:?})");
        std::process::exit(130);
    })?;
    Ok(())
}

/// A running child process, stopped when dropped, so an error or a panic in the benchmark
/// never leaves a gateway or mock behind.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    /// stdout and stderr logs.
    logs: [PathBuf; 2],
    addr: SocketAddr,
}

impl ChildGuard {
    /// Starts `command` and waits until it prints `listening on http://ADDR`. Its stdout and
    /// stderr are saved as `NAME.stdout.log` and `NAME.stderr.log` in `log_dir` (the gateway
    /// logs to stdout).
    pub fn start(name: &str, mut command: Command, log_dir: &Path) -> anyhow::Result<Self> {
        let stderr_log = log_dir.join(format!("{name}.stderr.log"));
        let stdout_log = log_dir.join(format!("{name}.stdout.log"));
        let open =
            |path: &Path| File::create(path).with_context(|| format!("cannot create {}", path.display()));
        let (err_file, mut out_file) = (open(&stderr_log)?, open(&stdout_log)?);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(err_file));
        let mut child = command.spawn().with_context(|| format!("cannot start {name} ({command:?})"))?;
        live_children().push(child.id());
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("{name}: no stdout pipe"))?;
        // Guard first, so a failed wait below still stops the child.
        let mut guard = Self {
            name: name.to_owned(),
            child: Some(child),
            logs: [stdout_log, stderr_log],
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };

        let (tx, rx) = mpsc::channel::<String>();
        // The reader keeps draining stdout after the readiness line: a child blocked on a full
        // pipe would stall mid-benchmark.
        std::thread::Builder::new().name(format!("{name}-stdout")).spawn(move || {
            let mut announced = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(out_file, "{line}");
                if !announced && let Some(rest) = line.strip_prefix(READY_PREFIX) {
                    announced = true;
                    let _ = tx.send(rest.to_owned());
                }
            }
        })?;
        let url = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(url) => url,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("{name} printed no `listening on` line within {READY_TIMEOUT:?}{}", guard.log_tail())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = guard.child.as_mut().and_then(|c| c.wait().ok());
                bail!("{name} exited before it was ready ({status:?}){}", guard.log_tail())
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
                bail!("{} exited during the benchmark ({status}){}", self.name, self.log_tail())
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

    /// The last lines the child wrote (stdout and stderr), for error messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for (stream, path) in ["stdout", "stderr"].iter().zip(&self.logs) {
            let Ok(mut file) = File::open(path) else { continue };
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(SeekFrom::Start(len.saturating_sub(2_000)));
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            if !text.trim().is_empty() {
                out.push_str(&format!("\n--- {} {stream} (tail) ---\n{}", self.name, text.trim_end()));
            }
        }
        out
    }

    /// Stops the child: SIGTERM (the gateway then shuts down gracefully and flushes its usage
    /// log), SIGKILL after a grace period.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = child.id();
        live_children().retain(|&p| p != pid);
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        if send_signal(pid, "TERM") {
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

/// CPU time all CPUs spent busy since boot (`/proc/stat`), to see how much of a phase's CPU
/// went to processes other than the benchmark's.
pub fn system_busy_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks = parse_proc_stat_busy(&stat).ok_or_else(|| anyhow!("cannot parse /proc/stat"))?;
    Ok(Duration::from_millis(ticks * 1000 / CLOCK_TICKS_PER_SEC))
}

/// Busy ticks of the `cpu` line of `/proc/stat`: user, nice, system, irq, softirq and steal
/// (idle and iowait left out; guest time is already counted in user).
pub fn parse_proc_stat_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
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

/// `pid name` of every running cargo or rustc process, except this process's ancestors
/// (`cargo xtask bench` runs us under `cargo run`, which just waits).
pub fn competing_builds() -> Vec<String> {
    let ancestors = ancestors();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found: Vec<(u32, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| !ancestors.contains(pid))
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim();
            (comm == "rustc" || comm == "cargo").then(|| (pid, comm.to_owned()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(pid, comm)| format!("{pid} {comm}")).collect()
}

/// This process and its ancestors up to init.
fn ancestors() -> Vec<u32> {
    let mut chain = vec![std::process::id()];
    while let Some(&pid) = chain.last()
        && pid > 1
        && chain.len() < 64
    {
        let Some(parent) =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| parse_stat_ppid(&s))
        else {
            break;
        };
        chain.push(parent);
    }
    chain
}

/// The parent pid (field 4) of a `/proc/<pid>/stat` line.
pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()
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
        assert_eq!(parse_stat_ppid(stat), Some(1));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn proc_stat_busy_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 9000 40 3 2 1 0 0\ncpu0 50 2 25 4500 20 1 1 0 0 0\n";
        assert_eq!(parse_proc_stat_busy(stat), Some(100 + 5 + 50 + 3 + 2 + 1));
        assert_eq!(parse_proc_stat_busy("cpu0 1 2 3\n"), None);
        assert_eq!(parse_proc_stat_busy("cpu  1 x 3\n"), None);
    }

    #[test]
    fn exited_and_missing_processes_count_as_exited() {
        assert!(!has_exited(std::process::id()));
        assert!(has_exited(u32::MAX));
    }

    #[test]
    fn ancestors_start_with_this_process_and_include_the_parent() {
        let chain = ancestors();
        assert_eq!(chain[0], std::process::id());
        assert_eq!(chain.get(1).copied(), Some(std::os::unix::process::parent_id()));
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_time_of("self").is_ok());
    }
}
