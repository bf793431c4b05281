//! Node.js binding of the gateway: the native half of the npm package `llm-gateway`.
//!
//! The exports here are deliberately small and typed for the JavaScript wrapper (`index.js`),
//! which turns them into the public API described in `index.d.ts`: headers travel as flat
//! `[name, value, ...]` lists, bodies as `Buffer`s, usage records and mock behaviours as JSON
//! text. Everything that decides something about a request lives in `gateway-core`.
//!
//! Async exports run on napi-rs's Tokio runtime; JavaScript is only ever called back through
//! thread-safe functions, so no Rust thread waits on the JS event loop.

// Under `cfg(test)` napi-derive leaves out the registration of exports, so every export would
// look unused to the lib-test build that `--all-targets` makes.
#![cfg_attr(test, allow(dead_code))]

mod body;
mod config;
mod gateway;
mod mock;
mod serve;
mod translate;
mod usage;

/// Turns any displayable error into a JS `Error` with that message.
pub(crate) fn js_error(message: impl std::fmt::Display) -> napi::Error {
    napi::Error::from_reason(message.to_string())
}
