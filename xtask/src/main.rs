//! `cargo xtask`: the one entry point for the project's checks.
//!
//! - `cargo xtask test`: formatting, clippy, the Rust test suite, the binaries, and the
//!   end-to-end suite that drives the real `gateway-server` with the official `anthropic`
//!   Python SDK (`tests/e2e`), then a short run of every fuzz target (`fuzz/`). Stops at the
//!   first failed step and ends with one summary line `xtask: N passed, N failed` (N counts steps).
//! - `cargo xtask fuzz [TARGET] [SECONDS]`: runs one fuzz target (or all) for longer.
//! - `cargo xtask bench [ARGS...]`: builds the release binaries and runs `gateway-bench`.

use std::ffi::OsString;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod node;
mod py;

const HELP: &str = "\
cargo xtask: project tasks

USAGE:
    cargo xtask <COMMAND> [ARGS...]

COMMANDS:
    test            Run everything CI runs, failing fast, in this order:
                      1. cargo fmt --all -- --check
                      2. cargo clippy --workspace --all-targets -- -D warnings
                      3. cargo test --workspace   (with CI=true PostgreSQL must be reachable)
                      4. build the gateway-server and mock-upstream binaries (debug)
                      5. Python virtualenv target/e2e-venv + tests/e2e/requirements.txt
                      6. pytest tests/e2e (official anthropic SDK against the real server)
                      7. fuzz: install cargo-fuzz if missing, build the fuzz targets, run each
                         for 10 s (one per core at a time) on the stable toolchain (see `fuzz`)
                    Then the Python binding (xtask/src/py.rs): virtualenv target/py-venv,
                    maturin develop gateway-py, pytest gateway-py/tests; then fuzz last.
                    Ends with the line `xtask: N passed, N failed` (N counts steps).
    test-node       The Node.js binding step alone (`test` runs it before fuzz): build, npm
                    install, node --test gateway-node/test (see xtask/src/node.rs).
    test-py         Only the Python binding's steps.
    fuzz [TARGET] [SECONDS]
                    Run one fuzz target (every target when TARGET is omitted or `all`) for
                    SECONDS each (default 60) with libFuzzer through cargo-fuzz, on stable Rust
                    (`--sanitizer none`). New inputs go to fuzz/target/xtask-corpus/TARGET, the
                    committed seeds in fuzz/corpus/TARGET are only read; a crash leaves its
                    reproducer in fuzz/artifacts/TARGET/ and fails the command.
    bench [ARGS]    Build release binaries (gateway-server, gateway-mock, gateway-bench) and
                    run target/release/gateway-bench with ARGS.
    help, --help    Print this help.
";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(cmd) = args.next() else {
        print!("{HELP}");
        return ExitCode::from(2);
    };
    let rest: Vec<OsString> = args.collect();
    let outcome = match cmd.to_str() {
        Some("test") => {
            if !rest.is_empty() {
                eprintln!("xtask test takes no arguments\n\n{HELP}");
                return ExitCode::from(2);
            }
            test()
        }
        Some("test-node") => node::command(&rest),
        Some("test-py") => py::test_py(),
        Some("bench") => bench(&rest),
        Some("fuzz") => fuzz_command(&rest),
        Some("help" | "--help" | "-h") => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("xtask: unknown command {cmd:?}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where cargo puts its artifacts.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// The cargo that runs us (so toolchain overrides hold), else `cargo` on PATH.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs a command to completion with inherited stdio; an error names the command and its status.
fn run(mut cmd: Command) -> Result<()> {
    let shown = describe(&cmd);
    println!("xtask: $ {shown}");
    let status = cmd.status().with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` exited with {status}");
    }
    Ok(())
}

struct Step {
    name: &'static str,
    run: Box<dyn FnOnce() -> Result<()>>,
}

fn step(name: &'static str, run: impl FnOnce() -> Result<()> + 'static) -> Step {
    Step { name, run: Box::new(run) }
}

fn test() -> Result<ExitCode> {
    let root = root();
    let target = target_dir(&root);
    let venv = target.join("e2e-venv");
    let venv_python = venv.join("bin").join("python");
    let gateway_bin = target.join("debug").join("gateway-server");
    let mock_bin = target.join("debug").join("mock-upstream");

    let mut steps = vec![
        step("fmt", || {
            let mut cmd = cargo();
            cmd.args(["fmt", "--all", "--", "--check"]);
            run(cmd).context("formatting differs; run `cargo fmt --all`")
        }),
        step("clippy", || {
            let mut cmd = cargo();
            cmd.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
            run(cmd)
        }),
        step("cargo test", || {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                require_postgres()?;
            }
            let mut cmd = cargo();
            cmd.args(["test", "--workspace"]);
            run(cmd)
        }),
        step("build binaries", {
            let (gateway_bin, mock_bin) = (gateway_bin.clone(), mock_bin.clone());
            move || {
                // `--workspace --all-targets` resolves features exactly as `cargo test
                // --workspace` did (dev-dependency features included), so this reuses the test
                // build's artifacts instead of rebuilding shared crates with other features.
                let mut cmd = cargo();
                cmd.args(["build", "--workspace", "--all-targets"]);
                run(cmd)?;
                for bin in [&gateway_bin, &mock_bin] {
                    if !bin.is_file() {
                        bail!("expected binary {} was not built", bin.display());
                    }
                }
                Ok(())
            }
        }),
        step("python env", {
            let (root, venv, venv_python) = (root.clone(), venv.clone(), venv_python.clone());
            move || {
                if !venv_python.is_file() {
                    let mut cmd = Command::new("python3");
                    cmd.arg("-m").arg("venv").arg(&venv);
                    run(cmd).context(
                        "could not create the e2e virtualenv (on Debian: apt-get install python3-venv)",
                    )?;
                }
                let mut cmd = Command::new(&venv_python);
                cmd.current_dir(&root).args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-r",
                    "tests/e2e/requirements.txt",
                ]);
                run(cmd)
            }
        }),
        step("e2e (pytest)", move || {
            let mut cmd = Command::new(&venv_python);
            cmd.current_dir(&root)
                .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/e2e"])
                .env("GATEWAY_BIN", &gateway_bin)
                .env("MOCK_BIN", &mock_bin);
            let shown = describe(&cmd);
            println!("xtask: $ {shown}");
            let status = cmd.status().with_context(|| format!("could not start `{shown}`"))?;
            match status.code() {
                Some(0) => Ok(()),
                Some(5) => bail!("pytest collected no tests (exit 5): `{shown}`"),
                _ => bail!("`{shown}` exited with {status}"),
            }
        }),
        node::test_step(),
        step("fuzz", || fuzz(&self::root(), None, CI_FUZZ_SECONDS, FuzzOutput::Summary)),
    ];
    steps.splice(steps.len() - 1..steps.len() - 1, py::steps()); // before fuzz (xtask/src/py.rs)

    let total = steps.len();
    let names: Vec<&'static str> = steps.iter().map(|s| s.name).collect();
    let mut results: Vec<(&'static str, Duration, bool)> = Vec::new();
    let mut failure = None;
    for Step { name, run } in steps {
        println!("\nxtask: ==> step {}/{total}: {name}", results.len() + 1);
        let start = Instant::now();
        let outcome = run();
        let took = start.elapsed();
        results.push((name, took, outcome.is_ok()));
        if let Err(e) = outcome {
            failure = Some(format!("step `{name}` failed: {e:#}"));
            break;
        }
    }

    let passed = results.iter().filter(|(_, _, ok)| *ok).count();
    let failed = results.len() - passed;
    println!("\nxtask: step timings");
    for (name, took, ok) in &results {
        let mark = if *ok { "ok" } else { "FAILED" };
        println!("xtask:   {name:<16} {:>8.1}s  {mark}", took.as_secs_f64());
    }
    for name in &names[results.len()..] {
        println!("xtask:   {name:<16} {:>9}  not run", "-");
    }
    if let Some(msg) = &failure {
        eprintln!("xtask: {msg}");
    }
    println!("xtask: {passed} passed, {failed} failed");
    Ok(if failed == 0 && results.len() == total { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// In CI the PostgreSQL-backed tests must run, so an unreachable server is an error up front.
fn require_postgres() -> Result<()> {
    let url = std::env::var("GATEWAY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let authority = url.split("://").nth(1).unwrap_or(&url);
    let authority = authority.split(['/', '?']).next().unwrap_or(authority);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host_port = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") };
    let addrs: Vec<_> = host_port
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve PostgreSQL address {host_port}"))?
        .collect();
    for addr in &addrs {
        if TcpStream::connect_timeout(addr, Duration::from_secs(5)).is_ok() {
            return Ok(());
        }
    }
    bail!("CI=true but PostgreSQL is unreachable at {host_port}: the PostgreSQL tests must run in CI")
}

fn bench(args: &[OsString]) -> Result<ExitCode> {
    let root = root();
    let meta = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("could not run `cargo metadata`")?;
    if !meta.status.success() {
        bail!("`cargo metadata` failed: {}", String::from_utf8_lossy(&meta.stderr));
    }
    if !String::from_utf8_lossy(&meta.stdout).contains("\"name\":\"gateway-bench\"") {
        bail!(
            "the `gateway-bench` crate is not in the workspace yet; `cargo xtask bench` needs it \
             (add it as a workspace member)"
        );
    }
    let mut build = cargo();
    build.args(["build", "--release", "-p", "gateway-server", "-p", "gateway-mock", "-p", "gateway-bench"]);
    run(build)?;
    let bin = target_dir(&root).join("release").join("gateway-bench");
    let mut cmd = Command::new(&bin);
    cmd.current_dir(&root).args(args);
    let status = cmd.status().with_context(|| format!("could not start {}", bin.display()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Seconds each fuzz target runs in `cargo xtask test`.
const CI_FUZZ_SECONDS: u64 = 10;
/// Seconds each fuzz target runs in `cargo xtask fuzz` when SECONDS is not given.
const DEFAULT_FUZZ_SECONDS: u64 = 60;
/// The cargo-fuzz release series installed when `cargo fuzz` is missing.
const CARGO_FUZZ_VERSION: &str = "^0.13";
/// Build flags for every `cargo fuzz build|run`. Stable Rust has no `-Zsanitizer`, so no
/// sanitizer: libFuzzer's coverage instrumentation (`-Cpasses=sancov-module` and the
/// `-Cllvm-args=-sanitizer-coverage-*` options cargo-fuzz passes) works on stable, and a panic,
/// an overflow (debug assertions are on) or a stack overflow aborts, which libFuzzer reports.
const CARGO_FUZZ_FLAGS: [&str; 2] = ["--sanitizer", "none"];

/// Where libFuzzer's output goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FuzzOutput {
    /// To fuzz/target/xtask-logs/TARGET.log, with a one-line summary per target (and the part of
    /// the log about the failure when it fails): CI logs stay short.
    Summary,
    /// To the terminal.
    Live,
}

/// `cargo xtask fuzz [TARGET] [SECONDS]` (a lone number is SECONDS for every target).
fn fuzz_command(args: &[OsString]) -> Result<ExitCode> {
    let args: Vec<&str> =
        args.iter().map(|a| a.to_str().context("arguments must be UTF-8")).collect::<Result<_>>()?;
    let parse_seconds =
        |s: &str| s.parse::<u64>().with_context(|| format!("SECONDS must be a number, not {s:?}"));
    let (target, seconds) = match args.as_slice() {
        [] => (None, DEFAULT_FUZZ_SECONDS),
        [one] if one.parse::<u64>().is_ok() => (None, parse_seconds(one)?),
        [target] => (Some(*target), DEFAULT_FUZZ_SECONDS),
        [target, seconds] => (Some(*target), parse_seconds(seconds)?),
        _ => {
            eprintln!("usage: cargo xtask fuzz [TARGET] [SECONDS]\n\n{HELP}");
            return Ok(ExitCode::from(2));
        }
    };
    fuzz(&root(), target.filter(|t| *t != "all"), seconds, FuzzOutput::Live)?;
    Ok(ExitCode::SUCCESS)
}

/// `cargo fuzz SUBCOMMAND --fuzz-dir fuzz`, from the workspace root.
fn cargo_fuzz(fuzz_dir: &Path, subcommand: &str) -> Command {
    let mut cmd = cargo();
    cmd.args(["fuzz", subcommand, "--fuzz-dir"]).arg(fuzz_dir);
    cmd
}

/// Installs cargo-fuzz from crates.io unless `cargo fuzz` already runs.
fn ensure_cargo_fuzz() -> Result<()> {
    let mut probe = cargo();
    probe.args(["fuzz", "--version"]);
    if let Ok(out) = probe.output()
        && out.status.success()
    {
        println!("xtask: {}", String::from_utf8_lossy(&out.stdout).trim());
        return Ok(());
    }
    let mut install = cargo();
    install.args(["install", "--locked", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION]);
    run(install).context("could not install cargo-fuzz")
}

/// The fuzz targets, as `cargo fuzz list` reads them from fuzz/Cargo.toml.
fn fuzz_targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let mut cmd = cargo_fuzz(fuzz_dir, "list");
    let shown = describe(&cmd);
    let out = cmd.output().with_context(|| format!("could not run `{shown}`"))?;
    if !out.status.success() {
        bail!("`{shown}` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let targets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("`{shown}` listed no fuzz targets");
    }
    Ok(targets)
}

/// The files in `dir` (none when it does not exist).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Builds the fuzz targets and runs each (or only `only`) for `seconds`; fails when any target
/// finds a crash, a timeout or an out-of-memory input, after printing where its reproducer is.
fn fuzz(root: &Path, only: Option<&str>, seconds: u64, output: FuzzOutput) -> Result<()> {
    let fuzz_dir = root.join("fuzz");
    let target_dir = fuzz_dir.join("target");
    ensure_cargo_fuzz()?;
    let mut targets = fuzz_targets(&fuzz_dir)?;
    if let Some(only) = only {
        if !targets.iter().any(|t| t == only) {
            bail!("no fuzz target {only:?}; the targets are: {}", targets.join(", "));
        }
        targets = vec![only.to_owned()];
    }

    let start = Instant::now();
    let mut build = cargo_fuzz(&fuzz_dir, "build");
    build.args(CARGO_FUZZ_FLAGS).arg("--target-dir").arg(&target_dir);
    if let Some(only) = only {
        build.arg(only);
    }
    run(build).context("building the fuzz targets failed")?;
    println!("xtask: fuzz targets built in {:.1}s", start.elapsed().as_secs_f64());

    // In CI the targets run side by side, one per core; by hand, one at a time on the terminal.
    let jobs = match output {
        FuzzOutput::Summary => std::thread::available_parallelism().map_or(1, |n| n.get()).min(targets.len()),
        FuzzOutput::Live => 1,
    };
    let mut failures = Vec::new();
    for batch in targets.chunks(jobs.max(1)) {
        let running = batch
            .iter()
            .map(|target| FuzzRun::start(&fuzz_dir, &target_dir, target, seconds, output))
            .collect::<Result<Vec<_>>>()?;
        for run in running {
            if let Some(failure) = run.wait(output)? {
                failures.push(failure);
            }
        }
    }
    if !failures.is_empty() {
        bail!("fuzzing failed: {}", failures.join(", "));
    }
    Ok(())
}

/// One fuzz target running.
struct FuzzRun {
    target: String,
    child: std::process::Child,
    shown: String,
    log: PathBuf,
    artifacts: PathBuf,
    /// When it started, by the clock file times use: an artifact written since is this run's.
    since: std::time::SystemTime,
    started: Instant,
}

impl FuzzRun {
    fn start(
        fuzz_dir: &Path,
        target_dir: &Path,
        target: &str,
        seconds: u64,
        output: FuzzOutput,
    ) -> Result<Self> {
        let work = target_dir.join("xtask-corpus").join(target);
        let seeds = fuzz_dir.join("corpus").join(target);
        let artifacts = fuzz_dir.join("artifacts").join(target);
        let logs = target_dir.join("xtask-logs");
        for dir in [&work, &artifacts, &logs] {
            std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
        }
        // New inputs go to the first corpus directory (scratch); the committed seeds are read.
        let mut cmd = cargo_fuzz(fuzz_dir, "run");
        cmd.args(CARGO_FUZZ_FLAGS).arg("--target-dir").arg(target_dir).arg(target).arg(&work);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            // One input taking this long is a hang, reported like a crash.
            .arg("-timeout=10")
            .arg("-print_final_stats=1");
        let shown = describe(&cmd);
        println!("xtask: $ {shown}");
        let log = logs.join(format!("{target}.log"));
        if output == FuzzOutput::Summary {
            let file =
                std::fs::File::create(&log).with_context(|| format!("could not create {}", log.display()))?;
            cmd.stdout(file.try_clone()?).stderr(file);
        }
        let since = std::time::SystemTime::now() - Duration::from_secs(1);
        let child = cmd.spawn().with_context(|| format!("could not start `{shown}`"))?;
        Ok(Self { target: target.to_owned(), child, shown, log, artifacts, since, started: Instant::now() })
    }

    /// Waits for the run; reports it, and returns what failed, if anything.
    fn wait(mut self, output: FuzzOutput) -> Result<Option<String>> {
        let status = self.child.wait().with_context(|| format!("could not wait for `{}`", self.shown))?;
        let took = self.started.elapsed().as_secs_f64();
        let target = &self.target;
        let found: Vec<PathBuf> = files_in(&self.artifacts)
            .into_iter()
            .filter(|p| std::fs::metadata(p).and_then(|m| m.modified()).is_ok_and(|t| t >= self.since))
            .collect();
        let text = if output == FuzzOutput::Summary {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        } else {
            String::new()
        };
        if status.success() && found.is_empty() {
            if output == FuzzOutput::Summary {
                println!("xtask: fuzz {target}: ok in {took:.1}s: {}", fuzz_summary(&text));
            }
            return Ok(None);
        }
        if output == FuzzOutput::Summary {
            println!("xtask: --- from {} ---", self.log.display());
            for line in failure_excerpt(&text) {
                println!("{line}");
            }
            println!("xtask: ---");
        }
        println!("xtask: fuzz {target}: FAILED after {took:.1}s ({status})");
        for path in &found {
            println!("xtask:   reproducer: {}", path.display());
            println!(
                "xtask:   reproduce with: cargo fuzz run --fuzz-dir fuzz {} {target} {}",
                CARGO_FUZZ_FLAGS.join(" "),
                path.display()
            );
        }
        Ok(Some(match found.first() {
            Some(path) => format!("{target} ({})", path.display()),
            None => format!("{target} ({status})"),
        }))
    }
}

/// The part of a failed run's log that tells what happened: from the panic (or libFuzzer's
/// error) through the failing input, without cargo-fuzz's own backtrace; else the log's tail.
fn failure_excerpt(log: &str) -> Vec<&str> {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("panicked at") || l.contains("ERROR: libFuzzer"))
        .unwrap_or(lines.len().saturating_sub(40));
    let end = lines[start..]
        .iter()
        .position(|l| l.starts_with("Stack backtrace:"))
        .map_or(lines.len(), |i| start + i)
        .min(start + 80);
    lines[start..end].to_vec()
}

/// One line from libFuzzer's output: runs, coverage and speed.
fn fuzz_summary(log: &str) -> String {
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .map_or_else(|| "?".to_owned(), |v| v.trim().to_owned())
    };
    let done = log.lines().rev().find(|l| l.contains(" DONE ") || l.contains("\tDONE ")).unwrap_or("");
    let field = |name: &str| {
        done.split_whitespace()
            .skip_while(|w| *w != name)
            .nth(1)
            .map_or_else(|| "?".to_owned(), str::to_owned)
    };
    format!(
        "{} runs, {} exec/s, cov {}, features {}, corpus {}",
        stat("number_of_executed_units"),
        stat("average_exec_per_sec"),
        field("cov:"),
        field("ft:"),
        field("corp:"),
    )
}
