//! `gateway-bench`: the loopback load benchmark behind `cargo xtask bench`.
//!
//! Starts `mock-upstream` and `gateway-server` from the release build, sends the same requests
//! to each, prints a table (or markdown), optionally writes JSON, and checks the targets. Exits
//! 0 even when a target is missed (it is a benchmark, not a test) unless `--strict`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use gateway_bench::procs::default_release_dir;
use gateway_bench::report::{Format, render};
use gateway_bench::{BenchConfig, ScenarioKind, run};

/// Loopback load benchmark: the gateway against the mock upstream it fronts.
#[derive(Debug, Parser)]
#[command(name = "gateway-bench", version)]
struct Cli {
    /// Measured seconds of each fixed-rate phase [default: 10; 2 with --quick].
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Offered rate of the fixed-rate scenario (req/s); the targets are stated for 1000.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Concurrent connections of the saturation scenario.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured seconds of each saturation phase [default: 5; 1 with --quick].
    #[arg(long)]
    saturation_secs: Option<f64>,
    /// Offered rate of the streaming scenario (req/s).
    #[arg(long, default_value_t = 200)]
    stream_rate: u64,
    /// Measured seconds of each streaming phase [default: 5; 1 with --quick].
    #[arg(long)]
    stream_secs: Option<f64>,
    /// Warm-up seconds before every phase [default: 1; 0.3 with --quick].
    #[arg(long)]
    warmup_secs: Option<f64>,
    /// Direct/gateway pairs per scenario, alternating which goes first [default: 2; 1 with --quick].
    #[arg(long)]
    rounds: Option<usize>,
    /// SSE content chunks per streamed reply.
    #[arg(long, default_value_t = 20)]
    chunks: u32,
    /// Delay between streamed chunks (ms).
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Request body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Worker threads of the load generator's runtime (1 leaves the cores to the servers).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Cap on concurrent requests (and connections) in the open-loop scenarios.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// The gateway binary [default: <workspace>/target/release/gateway-server].
    #[arg(long, env = "GATEWAY_BENCH_GATEWAY_BIN")]
    gateway_bin: Option<PathBuf>,
    /// The mock upstream binary [default: <workspace>/target/release/mock-upstream].
    #[arg(long, env = "GATEWAY_BENCH_MOCK_BIN")]
    mock_bin: Option<PathBuf>,
    /// Short runs, to check that everything works (figures are noisy).
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Print markdown tables instead of plain text.
    #[arg(long)]
    markdown: bool,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    strict: bool,
    /// Keep the temporary directory (gateway database, logs) and print its path.
    #[arg(long)]
    keep_temp: bool,
    /// Scenarios to run, comma-separated [default: all]; the targets of the others are
    /// reported as not measured.
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<ScenarioKind>,
    /// Give the bench user limits far above what the run reaches (RPM, concurrent sessions,
    /// 5-hour and daily spend): every request is admitted and its spend tracked, none refused.
    #[arg(long)]
    limits: bool,
    /// Run gateway-server with this REDIS_URL and a REDIS_KEY_PREFIX of its own, whose keys are
    /// deleted at the end (default: the in-process state store).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
}

impl Cli {
    fn config(&self) -> BenchConfig {
        let quick = |normal: f64, short: f64| if self.quick { short } else { normal };
        let release = default_release_dir();
        BenchConfig {
            gateway_bin: self.gateway_bin.clone().unwrap_or_else(|| release.join("gateway-server")),
            mock_bin: self.mock_bin.clone().unwrap_or_else(|| release.join("mock-upstream")),
            rate: self.rate,
            fixed_secs: self.duration_secs.unwrap_or(quick(10.0, 2.0)),
            connections: self.connections,
            saturation_secs: self.saturation_secs.unwrap_or(quick(5.0, 1.0)),
            stream_rate: self.stream_rate,
            stream_secs: self.stream_secs.unwrap_or(quick(5.0, 1.0)),
            warmup_secs: self.warmup_secs.unwrap_or(quick(1.0, 0.3)),
            rounds: self.rounds.unwrap_or(if self.quick { 1 } else { 2 }).max(1),
            chunks: self.chunks,
            chunk_delay_ms: self.chunk_delay_ms,
            body_bytes: self.body_bytes,
            client_threads: self.client_threads.max(1),
            max_connections: self.max_connections.max(1),
            idle_settle_secs: quick(1.0, 0.3),
            keep_temp: self.keep_temp,
            scenarios: if self.scenarios.is_empty() {
                ScenarioKind::ALL.to_vec()
            } else {
                self.scenarios.clone()
            },
            limits: self.limits,
            redis_url: self.redis_url.clone(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match bench(&cli) {
        Ok(all_pass) if all_pass || !cli.strict => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("gateway-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn bench(cli: &Cli) -> anyhow::Result<bool> {
    let config = cli.config();
    for bin in [&config.gateway_bin, &config.mock_bin] {
        anyhow::ensure!(
            bin.is_file(),
            "{} not found: build it first (`cargo build --release -p gateway-server -p gateway-mock`) \
             or pass --gateway-bin/--mock-bin",
            bin.display()
        );
    }
    let report = run(&config)?;
    let format = if cli.markdown { Format::Markdown } else { Format::Text };
    println!("{}", render(&report, format));
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(report.all_pass)
}
