//! Loopback load benchmark of the gateway: the same requests straight to the mock upstream and
//! through `gateway-server` in one run, so the difference is what the gateway adds.
//!
//! `cargo xtask bench` builds the release binaries and runs `gateway-bench`; see
//! `docs/benchmarks.md` for the method and the figures.

pub mod load;
pub mod procs;
pub mod redis_keys;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod targets;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::load::{
    BENCH_API_KEY, BENCH_MODEL, ClosedLoop, CpuUse, OpenLoop, PhaseStats, RequestTemplate, closed_loop,
    open_loop, probe,
};
use crate::procs::{ChildGuard, MachineInfo, cpu_time_of};
use crate::redis_keys::RedisRun;
use crate::schedule::RatePlan;
use crate::stats::Added;
use crate::targets::{Measured, TargetCheck, Targets, all_pass, check_targets};

/// The scenarios a run can include.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// Non-streaming requests at a fixed rate, direct and through the gateway.
    FixedRate,
    /// OpenAI chat (translated) against Anthropic passthrough, both through the gateway.
    Translated,
    /// Closed loop at saturation, direct and through the gateway.
    Saturation,
    /// Streaming requests at a fixed rate, direct and through the gateway.
    Streaming,
}

impl ScenarioKind {
    /// Every scenario, in run order.
    pub const ALL: [Self; 4] = [Self::FixedRate, Self::Translated, Self::Saturation, Self::Streaming];
}

/// Everything a run needs, resolved from the command line.
#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    /// The gateway binary.
    pub gateway_bin: PathBuf,
    /// The mock upstream binary.
    pub mock_bin: PathBuf,
    /// Offered rate of the fixed-rate scenario.
    pub rate: u64,
    /// Measured seconds per fixed-rate phase.
    pub fixed_secs: f64,
    /// Closed-loop connections of the saturation scenario.
    pub connections: usize,
    /// Measured seconds per saturation phase.
    pub saturation_secs: f64,
    /// Offered rate of the streaming scenario.
    pub stream_rate: u64,
    /// Measured seconds per streaming phase.
    pub stream_secs: f64,
    /// Warm-up seconds before every phase.
    pub warmup_secs: f64,
    /// Direct/gateway pairs per scenario.
    pub rounds: usize,
    /// SSE content deltas per streamed reply (the mock's `--chunks`).
    pub chunks: u32,
    /// Delay between streamed chunks (the mock's `--chunk-delay-ms`).
    pub chunk_delay_ms: u64,
    /// Request body size.
    pub body_bytes: usize,
    /// Worker threads of the benchmark's own tokio runtime.
    pub client_threads: usize,
    /// Cap on concurrent requests in open-loop phases.
    pub max_connections: usize,
    /// Seconds the gateway idles after start before its idle RSS is read.
    pub idle_settle_secs: f64,
    /// Keep the temporary directory (database, logs) for inspection.
    pub keep_temp: bool,
    /// Scenarios to run (the others are reported as not measured).
    pub scenarios: Vec<ScenarioKind>,
    /// Configure [`BENCH_USER_LIMITS`] on the bench user: every request goes through admission
    /// and spend tracking, none is refused.
    pub limits: bool,
    /// Run gateway-server with this `REDIS_URL` (and a `REDIS_KEY_PREFIX` of its own) instead of
    /// its in-process state store.
    pub redis_url: Option<String>,
}

/// Memory of gateway-server over the run (bytes).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RssReport {
    /// After start, before any request.
    pub idle: u64,
    /// After the fixed-rate scenario.
    pub after_fixed_rate: u64,
    /// After the saturation scenario.
    pub after_saturation: u64,
    /// After the streaming scenario.
    pub after_streaming: u64,
    /// Peak (`VmHWM`).
    pub peak: u64,
    /// Mock upstream's RSS at the end, for comparison.
    pub mock_after: u64,
}

/// One direct phase and one gateway phase run back to back.
#[derive(Debug, Clone, Serialize)]
pub struct RoundPair {
    /// 1-based round.
    pub round: usize,
    /// Whether the direct phase ran first (rounds alternate the order).
    pub direct_first: bool,
    /// Straight to the mock.
    pub direct: PhaseStats,
    /// Through the gateway.
    pub gateway: PhaseStats,
    /// Gateway minus direct: total latency for the open-loop scenarios, time to first byte
    /// for streaming.
    pub added: Added,
    /// Gateway RPS / direct RPS.
    pub rps_ratio: f64,
}

/// One scenario: its rounds and the figures across them.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// Rounds in run order.
    pub rounds: Vec<RoundPair>,
    /// Median over rounds of the per-round added latency.
    pub added: Option<Added>,
    /// Median over rounds of the per-round added time to last byte (streaming only).
    pub added_last_byte: Option<Added>,
    /// Median over rounds of the per-round RPS ratio.
    pub rps_ratio: Option<f64>,
}

impl Scenario {
    fn new(name: &str, rounds: Vec<RoundPair>) -> Self {
        let added = Added::median_of(&rounds.iter().map(|r| r.added).collect::<Vec<_>>());
        let rps_ratio = stats::median(rounds.iter().map(|r| r.rps_ratio).collect());
        Self { name: name.to_owned(), rounds, added, added_last_byte: None, rps_ratio }
    }

    fn failed(&self) -> u64 {
        self.rounds.iter().map(|r| r.direct.failed + r.gateway.failed).sum()
    }

    fn gateway_sent(&self) -> u64 {
        self.rounds.iter().map(|r| r.gateway.sent_total).sum()
    }

    /// Highest share of the machine other processes used during any phase (percent).
    fn max_other_load(&self) -> f64 {
        self.rounds
            .iter()
            .flat_map(|r| [r.direct.cpu.other_load_pct, r.gateway.cpu.other_load_pct])
            .fold(0.0, f64::max)
    }

    fn all_sent(&self) -> u64 {
        self.rounds.iter().map(|r| r.direct.sent_total + r.gateway.sent_total).sum()
    }

    fn requests(&self) -> u64 {
        self.rounds.iter().map(|r| r.direct.measured_requests + r.gateway.measured_requests).sum()
    }
}

/// The Redis the gateway used (`--redis-url`).
#[derive(Debug, Clone, Serialize)]
pub struct RedisReport {
    /// `REDIS_KEY_PREFIX` of the run.
    pub prefix: String,
    /// Whether the server runs on this machine: its CPU time is then reported per phase.
    pub local: bool,
    /// Keys under it deleted at the end; `None` when the deletion failed (they expire anyway).
    pub keys_deleted: Option<usize>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine and how busy it was.
    pub machine: MachineInfo,
    /// Settings of the run.
    pub config: BenchConfig,
    /// The Redis state store, when the gateway used one.
    pub redis: Option<RedisReport>,
    /// Fixed-rate non-streaming requests.
    pub fixed_rate: Scenario,
    /// Closed-loop saturation.
    pub saturation: Scenario,
    /// Fixed-rate streaming requests.
    pub streaming: Scenario,
    /// Translated (OpenAI chat → Anthropic provider) against passthrough, both via the gateway.
    pub translated: Scenario,
    /// Gateway memory.
    pub rss: RssReport,
    /// Requests sent to the gateway over the whole run (warm-ups and the start-up probe
    /// included): its request log should end up with as many rows.
    pub gateway_requests_sent: u64,
    /// Target checks.
    pub targets: Vec<TargetCheck>,
    /// Whether every target passed.
    pub all_pass: bool,
}

/// Limits of the bench user with `--limits`: one of each kind the admission checks (RPM,
/// concurrent sessions, two spend windows), set far above anything a run reaches (a request
/// costs $0.0003; a 10-minute run at 20,000 req/s would spend $3,600 and count 1.2 million
/// requests a minute), so every request pays for admission and spend tracking and none is
/// refused.
pub const BENCH_USER_LIMITS: &str = r#"rpm_limit = 1000000000
limit_concurrent_sessions = 1000000
limit_5h_usd = "1000000"
limit_daily_usd = "1000000"
"#;

/// The gateway config the benchmark imports: one Claude provider (the mock), one user with one
/// key, and a price so usage is costed as in production; with `limits`, the user has
/// [`BENCH_USER_LIMITS`].
pub fn gateway_config(mock_port: u16, limits: bool) -> String {
    let user_limits = if limits { BENCH_USER_LIMITS } else { "" };
    format!(
        r#"[[providers]]
name = "mock"
type = "claude"
base_url = "http://127.0.0.1:{mock_port}"
api_key = "upstream-secret"
# The translated scenario sends OpenAI chat requests to this Anthropic provider.
translate_from = ["openai-chat"]

[[users]]
name = "bench"
{user_limits}[[users.keys]]
name = "k"
key = "{BENCH_API_KEY}"

[[prices]]
model = "{BENCH_MODEL}"
input_per_mtok = "3"
output_per_mtok = "15"
"#
    )
}

/// The processes under test.
struct Servers {
    mock: ChildGuard,
    gateway: ChildGuard,
    /// The local Redis server the gateway uses, if any: its CPU time is part of the gateway's
    /// cost, not another process's load.
    redis_pid: Option<u32>,
    /// CPUs of the machine, to express other processes' CPU use as a load.
    cpus: usize,
}

impl Servers {
    fn start(config: &BenchConfig, redis: Option<&RedisRun>, dir: &std::path::Path) -> anyhow::Result<Self> {
        let mut mock_cmd = Command::new(&config.mock_bin);
        mock_cmd.args(["--listen", "127.0.0.1:0", "--chunks", &config.chunks.to_string()]);
        mock_cmd.args(["--chunk-delay-ms", &config.chunk_delay_ms.to_string()]);
        let mock = ChildGuard::start("mock-upstream", mock_cmd, dir)?;

        let config_path = dir.join("gateway.toml");
        std::fs::write(&config_path, gateway_config(mock.addr().port(), config.limits))
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let mut gw_cmd = Command::new(&config.gateway_bin);
        gw_cmd.arg("--listen").arg("127.0.0.1:0").arg("--config").arg(&config_path);
        gw_cmd
            .env("DATABASE_URL", format!("sqlite://{}", dir.join("gw.db").display()))
            .env("USAGE_SPILL_PATH", dir.join("spill.jsonl"))
            // A fixed admin token, so the gateway does not print a generated secret.
            .env("ADMIN_TOKEN", "adm-gateway-bench")
            // The production default log level, whatever the caller's environment says:
            // a debug filter would measure logging, not the gateway.
            .env("RUST_LOG", "info")
            .env("SHUTDOWN_GRACE_SECONDS", "2");
        // Limits as configured, and a limit check that fails (Redis) is a failed request rather
        // than an admission skipped unseen, whatever the caller's environment says.
        gw_cmd.env("ENABLE_RATE_LIMIT", "true").env("RATE_LIMIT_FAIL_MODE", "closed");
        // Redis only with --redis-url.
        match redis {
            Some(redis) => gw_cmd.env("REDIS_URL", redis.url()).env("REDIS_KEY_PREFIX", redis.prefix()),
            None => gw_cmd.env_remove("REDIS_URL"),
        };
        let gateway = ChildGuard::start("gateway-server", gw_cmd, dir)?;
        let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        Ok(Self { mock, gateway, redis_pid: redis.and_then(RedisRun::local_pid), cpus })
    }

    fn cpu_snapshot(&self) -> anyhow::Result<CpuSnapshot> {
        Ok(CpuSnapshot {
            at: Instant::now(),
            own: [
                self.gateway.cpu_time()?,
                self.mock.cpu_time()?,
                cpu_time_of("self")?,
                self.redis_pid.map_or(Ok(Duration::ZERO), |pid| cpu_time_of(&pid.to_string()))?,
            ],
            system: procs::system_busy_time()?,
        })
    }

    fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.mock.ensure_running()?;
        self.gateway.ensure_running()
    }
}

/// CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
struct CpuSnapshot {
    at: Instant,
    /// gateway, mock, this process, the local Redis server (zero without one).
    own: [Duration; 4],
    /// All CPUs of the machine.
    system: Duration,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// CPU used between two snapshots on a machine with `cpus` CPUs.
fn cpu_delta(before: &CpuSnapshot, after: &CpuSnapshot, cpus: usize) -> CpuUse {
    let own = |i: usize| after.own[i].saturating_sub(before.own[i]);
    let own_total = own(0) + own(1) + own(2) + own(3);
    let other = after.system.saturating_sub(before.system).saturating_sub(own_total);
    let capacity = after.at.saturating_duration_since(before.at).as_secs_f64() * cpus.max(1) as f64;
    CpuUse {
        gateway_ms: millis(own(0)),
        mock_ms: millis(own(1)),
        client_ms: millis(own(2)),
        redis_ms: millis(own(3)),
        other_ms: millis(other),
        other_load_pct: if capacity > 0.0 { other.as_secs_f64() / capacity * 100.0 } else { 0.0 },
    }
}

/// Which load shape a scenario uses.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Open(OpenLoop),
    Closed(ClosedLoop),
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::ZERO)
}

/// Runs one phase against one target and attributes CPU time to it.
async fn phase(
    servers: &mut Servers,
    target: &str,
    template: &Arc<RequestTemplate>,
    shape: Shape,
) -> anyhow::Result<PhaseStats> {
    // The template decides where the request goes; the label only names the phase (in the
    // translated scenario both sides go through the gateway).
    let addr = template.addr();
    let before = servers.cpu_snapshot()?;
    let mut stats = match shape {
        Shape::Open(settings) => open_loop(target, addr, template.clone(), settings).await?,
        Shape::Closed(settings) => closed_loop(target, addr, template.clone(), settings).await?,
    };
    stats.cpu = cpu_delta(&before, &servers.cpu_snapshot()?, servers.cpus);
    servers.ensure_running()?;
    stats.gateway_rss_after = servers.gateway.rss_bytes()?;
    stats.competing_builds = procs::competing_builds().len();
    eprintln!("  {}", report::phase_line(&stats));
    Ok(stats)
}

/// Runs `rounds` direct/gateway pairs, alternating which goes first (ABBA order cancels a
/// linear drift of the machine's state, e.g. another process ramping up).
async fn rounds(
    servers: &mut Servers,
    config: &BenchConfig,
    direct: &Arc<RequestTemplate>,
    gateway: &Arc<RequestTemplate>,
    shape: Shape,
    added_of: fn(&PhaseStats, &PhaseStats) -> Added,
) -> anyhow::Result<Vec<RoundPair>> {
    let mut pairs = Vec::new();
    for round in 1..=config.rounds.max(1) {
        let direct_first = round % 2 == 1;
        let (d, g) = if direct_first {
            let d = phase(servers, "direct", direct, shape).await?;
            (d, phase(servers, "gateway", gateway, shape).await?)
        } else {
            let g = phase(servers, "gateway", gateway, shape).await?;
            (phase(servers, "direct", direct, shape).await?, g)
        };
        let added = added_of(&d, &g);
        let rps_ratio = if d.rps > 0.0 { g.rps / d.rps } else { 0.0 };
        pairs.push(RoundPair { round, direct_first, direct: d, gateway: g, added, rps_ratio });
    }
    Ok(pairs)
}

/// Starts the servers, runs every scenario and checks the targets.
pub fn run(config: &BenchConfig) -> anyhow::Result<Report> {
    procs::stop_children_on_signal()?;
    let redis = config.redis_url.as_deref().map(RedisRun::connect).transpose()?;
    if let Some(redis) = &redis {
        let server =
            redis.local_pid().map_or_else(|| "not on this machine".to_owned(), |pid| format!("pid {pid}"));
        eprintln!("state store: Redis at {} ({server}), key prefix {}", redis.url(), redis.prefix());
    }
    let temp = tempfile::Builder::new().prefix("gateway-bench-").tempdir()?;
    let report = measure(config, redis.as_ref(), temp.path());
    // The keys of a failed run too (they would expire, but not for a day or two).
    let redis = redis.map(|redis| {
        let keys_deleted = redis
            .delete_keys()
            .inspect(|n| eprintln!("deleted {n} Redis key(s) under {}", redis.prefix()))
            .inspect_err(|e| eprintln!("warning: could not delete the keys under {}: {e:#}", redis.prefix()))
            .ok();
        RedisReport { prefix: redis.prefix().to_owned(), local: redis.local_pid().is_some(), keys_deleted }
    });
    let mut report = report?;
    report.redis = redis;
    if config.keep_temp {
        let kept = temp.keep();
        eprintln!("kept the work dir {}", kept.display());
    }
    Ok(report)
}

/// Runs every scenario against servers started in `dir`, stops them, and checks the targets.
fn measure(config: &BenchConfig, redis: Option<&RedisRun>, dir: &std::path::Path) -> anyhow::Result<Report> {
    let mut machine = MachineInfo::probe();
    if !machine.competing_builds_start.is_empty() {
        eprintln!(
            "warning: cargo/rustc running ({}): they compete for the CPUs and disturb the figures",
            machine.competing_builds_start.join(", ")
        );
    }
    let mut servers = Servers::start(config, redis, dir)?;
    eprintln!(
        "mock-upstream on {} (pid {}), gateway-server on {} (pid {}), work dir {}",
        servers.mock.addr(),
        servers.mock.pid().unwrap_or(0),
        servers.gateway.addr(),
        servers.gateway.pid().unwrap_or(0),
        dir.display()
    );

    // Idle memory first, before any request allocates pools and buffers.
    std::thread::sleep(secs(config.idle_settle_secs));
    let mut rss = RssReport { idle: servers.gateway.rss_bytes()?, ..RssReport::default() };

    // A small runtime: the load generator must leave the two cores to the gateway and the mock.
    let runtime = if config.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.client_threads)
            .enable_all()
            .build()?
    };

    let report = runtime.block_on(async {
        let plain_direct = Arc::new(RequestTemplate::new(servers.mock.addr(), false, config.body_bytes)?);
        let plain_gateway = Arc::new(RequestTemplate::new(servers.gateway.addr(), false, config.body_bytes)?);
        let stream_direct = Arc::new(RequestTemplate::new(servers.mock.addr(), true, config.body_bytes)?);
        let stream_gateway = Arc::new(RequestTemplate::new(servers.gateway.addr(), true, config.body_bytes)?);
        let chat_gateway = Arc::new(RequestTemplate::chat(servers.gateway.addr(), false, config.body_bytes)?);
        probe(servers.mock.addr(), &plain_direct).await.context("probe request to mock-upstream failed")?;
        probe(servers.gateway.addr(), &plain_gateway).await.with_context(|| {
            format!("probe request through gateway-server failed{}", servers.gateway.log_tail())
        })?;

        let warmup = secs(config.warmup_secs);
        let open = |rate: u64, measure: f64| {
            Shape::Open(OpenLoop {
                plan: RatePlan::new(rate, warmup, secs(measure)),
                max_connections: config.max_connections,
                prefill: 4,
            })
        };
        let total = |d: &PhaseStats, g: &PhaseStats| Added::between(&d.latency, &g.latency);
        let first_byte = |d: &PhaseStats, g: &PhaseStats| Added::between(&d.ttfb, &g.ttfb);
        let wants = |kind: ScenarioKind| config.scenarios.contains(&kind);

        let mut fixed = Vec::new();
        if wants(ScenarioKind::FixedRate) {
            eprintln!(
                "fixed rate: {} req/s, {} B body, {} s x {} round(s)",
                config.rate,
                plain_direct.body_len(),
                config.fixed_secs,
                config.rounds
            );
            fixed = rounds(
                &mut servers,
                config,
                &plain_direct,
                &plain_gateway,
                open(config.rate, config.fixed_secs),
                total,
            )
            .await?;
        }
        rss.after_fixed_rate = servers.gateway.rss_bytes()?;

        // Translated against passthrough, both through the gateway: the "direct" side of each
        // round is the Anthropic request, the other the same request as OpenAI chat, which the
        // gateway translates to Anthropic and back.
        let mut translated = Vec::new();
        if wants(ScenarioKind::Translated) {
            eprintln!("translated: OpenAI chat vs Anthropic through the gateway, {} req/s", config.rate);
            translated = rounds(
                &mut servers,
                config,
                &plain_gateway,
                &chat_gateway,
                open(config.rate, config.fixed_secs),
                total,
            )
            .await?;
        }

        let mut saturation = Vec::new();
        if wants(ScenarioKind::Saturation) {
            eprintln!(
                "saturation: {} connections, {} s x {} round(s)",
                config.connections, config.saturation_secs, config.rounds
            );
            let closed = Shape::Closed(ClosedLoop {
                connections: config.connections,
                warmup,
                measure: secs(config.saturation_secs),
            });
            saturation = rounds(&mut servers, config, &plain_direct, &plain_gateway, closed, total).await?;
        }
        rss.after_saturation = servers.gateway.rss_bytes()?;

        let mut streaming = Vec::new();
        if wants(ScenarioKind::Streaming) {
            eprintln!(
                "streaming: {} chunks, {} req/s, {} s x {} round(s)",
                config.chunks, config.stream_rate, config.stream_secs, config.rounds
            );
            streaming = rounds(
                &mut servers,
                config,
                &stream_direct,
                &stream_gateway,
                open(config.stream_rate, config.stream_secs),
                first_byte,
            )
            .await?;
        }
        rss.after_streaming = servers.gateway.rss_bytes()?;
        rss.peak = servers.gateway.peak_rss_bytes()?;
        rss.mock_after = servers.mock.rss_bytes()?;

        let mut streaming = Scenario::new("streaming", streaming);
        streaming.added_last_byte = Added::median_of(
            &streaming.rounds.iter().map(|r| total(&r.direct, &r.gateway)).collect::<Vec<_>>(),
        );
        anyhow::Ok((
            Scenario::new("fixed-rate", fixed),
            Scenario::new("saturation", saturation),
            streaming,
            Scenario::new("translated", translated),
        ))
    });
    // Stop the servers whatever happened (the guards would too, but this way the gateway's
    // graceful shutdown is done before the report is printed).
    servers.gateway.stop();
    servers.mock.stop();
    let (fixed_rate, saturation, streaming, translated) = report?;
    machine.finish();

    let measured = Measured {
        rate: config.rate,
        added_p50_us: fixed_rate.added.map(|a| a.p50_us),
        added_p99_us: fixed_rate.added.map(|a| a.p99_us),
        saturation_ratio: saturation.rps_ratio,
        idle_rss_bytes: Some(rss.idle),
        failed_requests: fixed_rate.failed() + saturation.failed() + streaming.failed() + translated.failed(),
        total_requests: fixed_rate.requests()
            + saturation.requests()
            + streaming.requests()
            + translated.requests(),
        translated_p50_ratio: translated_ratio(&translated),
        fixed_rate_other_load_pct: fixed_rate.max_other_load(),
        saturation_other_load_pct: saturation.max_other_load(),
        translated_other_load_pct: translated.max_other_load(),
    };
    let targets = check_targets(&measured, &Targets::default());
    // The start-up probe is one more request.
    // Both sides of the translated scenario go through the gateway.
    let gateway_requests_sent = 1
        + fixed_rate.gateway_sent()
        + saturation.gateway_sent()
        + streaming.gateway_sent()
        + translated.all_sent();
    Ok(Report {
        gateway_requests_sent,
        all_pass: all_pass(&targets),
        machine,
        config: config.clone(),
        redis: None,
        fixed_rate,
        saturation,
        streaming,
        translated,
        rss,
        targets,
    })
}

/// Median over rounds of translated p50 latency / passthrough p50 latency.
fn translated_ratio(s: &Scenario) -> Option<f64> {
    stats::median(
        s.rounds
            .iter()
            .filter_map(|r| {
                let (d, g) = (r.direct.latency.p50_us, r.gateway.latency.p50_us);
                (d > 0).then(|| g as f64 / d as f64)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_config_parses_as_toml_with_the_mock_port() {
        let doc: toml::Table = toml::from_str(&gateway_config(4567, false)).expect("valid TOML");
        assert_eq!(doc["providers"][0]["base_url"].as_str(), Some("http://127.0.0.1:4567"));
        assert_eq!(doc["providers"][0]["type"].as_str(), Some("claude"));
        assert_eq!(doc["users"][0]["keys"][0]["key"].as_str(), Some(BENCH_API_KEY));
        assert_eq!(doc["prices"][0]["model"].as_str(), Some(BENCH_MODEL));
        let user = doc["users"][0].as_table().expect("user table");
        assert!(!user.keys().any(|k| k.starts_with("rpm_") || k.starts_with("limit_")), "{user:?}");
    }

    #[test]
    fn limits_go_on_the_bench_user_and_stay_out_of_reach() {
        use gateway_core::config::ConfigFile;
        use gateway_core::usage::cost::UsdNanos;

        // The gateway's own import parser: unknown keys and malformed limits are errors there.
        let file = ConfigFile::from_toml_str(&gateway_config(4567, true)).expect("a valid gateway config");
        let [user] = file.users.as_slice() else { panic!("one user: {:?}", file.users) };
        assert_eq!(user.name, "bench");
        let [key] = user.keys.as_slice() else { panic!("one key: {:?}", user.keys) };
        assert_eq!(key.key, BENCH_API_KEY);
        assert_eq!(key.limits, Default::default(), "limits on the user only");

        // Far above a long saturation run: 1.2 million requests a minute, 10 minutes of them at
        // $0.0003 each (25 input and 15 output tokens at $3 / $15 per million).
        let limits = &user.limits;
        assert!(limits.rpm_limit >= 100_000_000, "{limits:?}");
        assert!(limits.limit_concurrent_sessions >= 1_000, "{limits:?}");
        let plenty = Some(UsdNanos(10_000 * UsdNanos::PER_USD));
        assert!(limits.limit_5h_usd >= plenty && limits.limit_daily_usd >= plenty, "{limits:?}");

        let without =
            ConfigFile::from_toml_str(&gateway_config(4567, false)).expect("a valid gateway config");
        assert_eq!(without.users[0].limits, Default::default());
    }

    #[test]
    fn cpu_delta_attributes_the_rest_of_the_machine_to_others() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let before = CpuSnapshot { at: t0, own: [ms(100), ms(50), ms(10), ms(5)], system: ms(1_000) };
        // 1 s on 2 CPUs: 250 + 0 + 20 + 30 ms by our processes and Redis, 500 ms busy in total.
        let after =
            CpuSnapshot { at: t0 + ms(1_000), own: [ms(350), ms(40), ms(30), ms(35)], system: ms(1_500) };
        let cpu = cpu_delta(&before, &after, 2);
        assert_eq!((cpu.gateway_ms, cpu.mock_ms, cpu.client_ms, cpu.redis_ms), (250, 0, 20, 30));
        assert_eq!(cpu.other_ms, 200);
        assert!((cpu.other_load_pct - 10.0).abs() < 1e-9, "{}", cpu.other_load_pct);
    }

    #[test]
    fn scenario_takes_medians_over_rounds() {
        use fixtures::pair;
        let s = Scenario::new("x", vec![pair(1, 0.5, 100.0), pair(2, 0.3, 900.0), pair(3, 0.6, 120.0)]);
        assert_eq!(s.rps_ratio, Some(0.5));
        assert_eq!(s.added, Some(Added { p50_us: 120.0, p99_us: 240.0 }));
        assert_eq!(s.requests(), 60);
        assert_eq!(s.failed(), 0);
    }
}

/// Synthetic results for tests of the aggregation and the rendering.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::stats::LatencySummary;

    /// A phase with 10 successful requests at `rps`.
    pub fn phase(target: &str, rps: f64) -> PhaseStats {
        let latency =
            LatencySummary { count: 10, p50_us: 100, p99_us: 300, max_us: 400, ..Default::default() };
        PhaseStats {
            target: target.to_owned(),
            offered_rate: None,
            connections: None,
            measured_requests: 10,
            sent_total: 12,
            ok: 10,
            failed: 0,
            failures: Default::default(),
            failure_samples: Vec::new(),
            seconds: 1.0,
            rps,
            latency,
            ttfb: latency,
            send_lag: None,
            connections_opened: 1,
            cpu: CpuUse::default(),
            gateway_rss_after: 0,
            competing_builds: 0,
        }
    }

    /// A round whose gateway reaches `ratio` of direct's RPS and adds `p50` µs (twice at p99).
    pub fn pair(round: usize, ratio: f64, p50: f64) -> RoundPair {
        RoundPair {
            round,
            direct_first: round % 2 == 1,
            direct: phase("direct", 100.0),
            gateway: phase("gateway", 100.0 * ratio),
            added: Added { p50_us: p50, p99_us: p50 * 2.0 },
            rps_ratio: ratio,
        }
    }

    /// A two-round report with one failed gateway request in the streaming scenario.
    pub fn report() -> Report {
        let scenario = |name| Scenario::new(name, vec![pair(1, 0.5, 100.0), pair(2, 0.4, 120.0)]);
        let mut streaming = scenario("streaming");
        streaming.rounds[0].gateway.failed = 1;
        streaming.rounds[0].gateway.failure_samples.push("HTTP 502: upstream gone".to_owned());
        let config = BenchConfig {
            gateway_bin: PathBuf::from("gw"),
            mock_bin: PathBuf::from("mock"),
            rate: 1000,
            fixed_secs: 10.0,
            connections: 32,
            saturation_secs: 5.0,
            stream_rate: 200,
            stream_secs: 5.0,
            warmup_secs: 1.0,
            rounds: 2,
            chunks: 20,
            chunk_delay_ms: 0,
            body_bytes: 1024,
            client_threads: 1,
            max_connections: 256,
            idle_settle_secs: 1.0,
            keep_temp: false,
            scenarios: ScenarioKind::ALL.to_vec(),
            limits: false,
            redis_url: None,
        };
        let measured = Measured { rate: 1000, failed_requests: 1, total_requests: 120, ..Default::default() };
        let targets = check_targets(&measured, &Targets::default());
        Report {
            machine: MachineInfo::default(),
            config,
            redis: None,
            fixed_rate: scenario("fixed-rate"),
            saturation: scenario("saturation"),
            streaming,
            translated: scenario("translated"),
            rss: RssReport::default(),
            gateway_requests_sent: 0,
            all_pass: all_pass(&targets),
            targets,
        }
    }
}
