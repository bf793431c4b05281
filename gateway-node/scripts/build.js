#!/usr/bin/env node
'use strict';
// Builds the native addon with cargo and places it next to index.js as `llm-gateway.node`.
// Runs as the package's `install` script, so `npm install ./gateway-node` works on any machine
// with a Rust toolchain; nothing is downloaded besides crates.
//
// Environment:
//   LLM_GATEWAY_PROFILE=debug   build the debug profile instead of release
//   LLM_GATEWAY_NODE_LIB=PATH   copy this already-built cdylib instead of building (the
//                               workspace's `cargo xtask` builds it with the rest of the workspace)
//   CARGO                       the cargo to run (default: `cargo` on PATH)

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const pkgDir = path.resolve(__dirname, '..');
const dest = path.join(pkgDir, 'llm-gateway.node');

function fail(message) {
  console.error(`llm-gateway: ${message}`);
  process.exit(1);
}

function place(src) {
  // Copy to a temporary name and rename, so a running process never sees a half-written file.
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.copyFileSync(src, tmp);
  fs.renameSync(tmp, dest);
  console.error(`llm-gateway: ${path.relative(process.cwd(), dest) || dest} <- ${src}`);
}

const prebuilt = process.env.LLM_GATEWAY_NODE_LIB;
if (prebuilt) {
  if (!fs.existsSync(prebuilt)) fail(`LLM_GATEWAY_NODE_LIB=${prebuilt} does not exist`);
  place(prebuilt);
  process.exit(0);
}

const cargo = process.env.CARGO || 'cargo';
const profile = process.env.LLM_GATEWAY_PROFILE === 'debug' ? [] : ['--release'];
const args = [
  'build',
  ...profile,
  '--lib',
  '--manifest-path',
  path.join(pkgDir, 'Cargo.toml'),
  '--message-format=json-render-diagnostics',
];
console.error(`llm-gateway: building the native addon: ${cargo} ${args.join(' ')}`);
const run = spawnSync(cargo, args, {
  cwd: pkgDir,
  stdio: ['ignore', 'pipe', 'inherit'],
  maxBuffer: 256 * 1024 * 1024,
  encoding: 'utf8',
});
if (run.error) {
  fail(`could not run ${cargo} (${run.error.message}); install Rust from your package manager or rustup`);
}
if (run.status !== 0) fail(`cargo build failed with status ${run.status}`);

// cargo names the artifact per platform (libgateway_node.so, libgateway_node.dylib,
// gateway_node.dll); its own report says where it is.
let artifact;
for (const line of run.stdout.split('\n')) {
  if (!line.startsWith('{')) continue;
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    continue;
  }
  if (msg.reason === 'compiler-artifact' && msg.target && msg.target.name === 'gateway_node') {
    artifact = msg.filenames.find((f) => /\.(so|dylib|dll)$/.test(f)) || artifact;
  }
}
if (!artifact) fail('cargo reported no cdylib for gateway-node');
place(artifact);
