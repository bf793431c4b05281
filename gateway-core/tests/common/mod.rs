//! Helpers shared by the store suites (`state_conformance.rs`, `limit_conformance.rs`).

#[cfg(feature = "redis")]
pub mod redis_fixture;
