//! The Python binding's part of `cargo xtask test`, also runnable alone as `cargo xtask test-py`:
//!
//! 1. `py setup`: virtualenv `target/py-venv` with `gateway-py/tests/requirements.txt` (maturin,
//!    pytest, the official `anthropic` and `openai` SDKs, httpx, starlette) from PyPI.
//! 2. `py build`: `maturin develop` builds `gateway-py` (debug) into that virtualenv as
//!    `llm_gateway`.
//! 3. `py pytest`: `pytest gateway-py/tests` (in-process API, SDKs against `serve()`, ASGI,
//!    translation, and the shared scenarios in `scenarios/`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{Step, describe, root, run, step, target_dir};

/// The virtualenv's directory and its python.
fn venv() -> (PathBuf, PathBuf) {
    let venv = target_dir(&root()).join("py-venv");
    let python = venv.join("bin").join("python");
    (venv, python)
}

/// A command run inside the virtualenv (as if it were activated).
fn in_venv(program: &Path, venv: &Path) -> Command {
    let mut cmd = Command::new(program);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![venv.join("bin")];
    dirs.extend(std::env::split_paths(&path));
    if let Ok(joined) = std::env::join_paths(dirs) {
        cmd.env("PATH", joined);
    }
    cmd.env("VIRTUAL_ENV", venv).current_dir(root());
    cmd
}

fn setup() -> Result<()> {
    let (venv, python) = venv();
    if !python.is_file() {
        let mut cmd = Command::new("python3");
        cmd.arg("-m").arg("venv").arg(&venv);
        run(cmd).context("could not create the virtualenv (on Debian: apt-get install python3-venv)")?;
    }
    let mut cmd = in_venv(&python, &venv);
    cmd.args([
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "-r",
        "gateway-py/tests/requirements.txt",
    ]);
    run(cmd)
}

fn build() -> Result<()> {
    let (venv, _) = venv();
    let mut cmd = in_venv(&venv.join("bin").join("maturin"), &venv);
    // `maturin develop` builds the extension with the workspace's target dir and installs the
    // package (Python sources from gateway-py/python plus `_native`) into the virtualenv.
    cmd.args(["develop", "--manifest-path", "gateway-py/Cargo.toml"]);
    run(cmd).context("maturin could not build gateway-py")
}

fn pytest() -> Result<()> {
    let (venv, python) = venv();
    let mut cmd = in_venv(&python, &venv);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "gateway-py/tests"]);
    let shown = describe(&cmd);
    println!("xtask: $ {shown}");
    let status = cmd.status().with_context(|| format!("could not start `{shown}`"))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(5) => bail!("pytest collected no tests (exit 5): `{shown}`"),
        _ => bail!("`{shown}` exited with {status}"),
    }
}

/// The steps, in order, for `cargo xtask test`.
pub(super) fn steps() -> Vec<Step> {
    vec![step("py setup", setup), step("py build", build), step("py pytest", pytest)]
}

/// `cargo xtask test-py`: the Python steps alone, failing fast, with the same closing line as
/// `cargo xtask test`.
pub(super) fn test_py() -> Result<ExitCode> {
    let steps = steps();
    let total = steps.len();
    let (mut passed, mut failed) = (0, 0);
    for (i, Step { name, run }) in steps.into_iter().enumerate() {
        println!("\nxtask: ==> step {}/{total}: {name}", i + 1);
        let start = Instant::now();
        let outcome = run();
        println!("xtask: {name} took {:.1}s", start.elapsed().as_secs_f64());
        if let Err(e) = outcome {
            eprintln!("xtask: step `{name}` failed: {e:#}");
            failed += 1;
            break;
        }
        passed += 1;
    }
    println!("xtask: {passed} passed, {failed} failed");
    Ok(if failed == 0 && passed == total { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
