//! The Node.js binding (`gateway-node`, npm package `llm-gateway`) in `cargo xtask`.
//!
//! One step, also runnable alone as `cargo xtask test-node`:
//! 1. `cargo build --workspace --all-targets`: the same command (and so the same features and
//!    artifacts) as the test run's build step, so inside `cargo xtask test` it is a no-op that
//!    makes sure the addon `target/debug/libgateway_node.so` exists.
//! 2. `npm install` in gateway-node/ from the npm registry per package-lock.json (the official
//!    `openai` and `@anthropic-ai/sdk` packages, Express, Fastify); the package's install script
//!    copies the addon built in 1 to `gateway-node/llm-gateway.node` instead of building again.
//! 3. `node --test` over gateway-node/test/*.test.mjs, which include the shared scenarios.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

use super::{Step, cargo, root, run, step, target_dir};

/// The `cargo xtask test` step.
pub(crate) fn test_step() -> Step {
    step("node binding", || run_all(&root()))
}

/// `cargo xtask test-node`.
pub(crate) fn command(args: &[std::ffi::OsString]) -> Result<ExitCode> {
    if !args.is_empty() {
        bail!("xtask test-node takes no arguments");
    }
    run_all(&root())?;
    println!("xtask: node binding passed");
    Ok(ExitCode::SUCCESS)
}

fn run_all(root: &Path) -> Result<()> {
    let package = root.join("gateway-node");
    let mut build = cargo();
    build.args(["build", "--workspace", "--all-targets"]);
    run(build)?;
    let addon = addon_path(root);
    if !addon.is_file() {
        bail!("the gateway-node addon {} was not built", addon.display());
    }

    let mut install = Command::new(npm());
    install
        .current_dir(&package)
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .env("LLM_GATEWAY_NODE_LIB", &addon);
    run(install).context("npm install failed in gateway-node/ (is Node.js 20+ with npm installed?)")?;

    let tests = test_files(&package.join("test"))?;
    let mut node = Command::new("node");
    node.current_dir(&package).arg("--test").args(&tests);
    run(node)
}

/// The debug cdylib cargo builds for gateway-node on this platform.
fn addon_path(root: &Path) -> PathBuf {
    let name = format!("{}gateway_node{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    target_dir(root).join("debug").join(name)
}

fn npm() -> &'static str {
    if cfg!(windows) { "npm.cmd" } else { "npm" }
}

/// `test/*.test.mjs`, sorted, relative to the package (Node 20's `--test` takes no globs).
fn test_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".test.mjs")))
        .filter_map(|p| p.strip_prefix(dir.parent()?).ok().map(Path::to_path_buf))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no test files in {}", dir.display());
    }
    Ok(files)
}
