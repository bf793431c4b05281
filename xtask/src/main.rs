//! `cargo xtask`: the one entry point for the project's checks.
//!
//! - `cargo xtask test`: formatting, clippy, the Rust test suite, the binaries, and the
//!   end-to-end suite that drives the real `gateway-server` with the official `anthropic`
//!   Python SDK (`tests/e2e`). Stops at the first failed step and ends with one summary line
//!   `xtask: N passed, N failed` (N counts steps).
//! - `cargo xtask bench [ARGS...]`: builds the release binaries and runs `gateway-bench`.

use std::ffi::OsString;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

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
                    Ends with the line `xtask: N passed, N failed` (N counts steps).
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
        Some("bench") => bench(&rest),
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

    let steps = vec![
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
    ];

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
