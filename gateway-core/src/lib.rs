//! `gateway-core`: the LLM gateway pipeline as composable tower services.
#![warn(missing_docs)]

pub mod catalog;
pub mod config;
pub mod dialect;
pub mod forward;
pub mod sse;
pub mod store;
pub mod usage;

/// The fake upstream vendor server (feature `mock`), re-exported from `gateway-mock`.
#[cfg(feature = "mock")]
pub use gateway_mock as mock;
