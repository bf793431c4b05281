//! A realistic in-process fake of the Anthropic Messages API, served over real HTTP on a local
//! port, for tests, benchmarks and examples.
//!
//! [`MockUpstream`] answers `POST /v1/messages` (JSON or SSE stream, text or `tool_use`),
//! `POST /v1/messages/count_tokens` and `GET /v1/models`, records every request, and can be made
//! slow, failing or abruptly disconnecting through [`MockBehavior`].
//!
//! ```no_run
//! use gateway_mock::{MockBehavior, MockUpstream};
//! # async fn demo() -> std::io::Result<()> {
//! let mock = MockUpstream::start().await?;
//! mock.set_behavior(MockBehavior { force_status: Some(529), ..MockBehavior::default() });
//! // requests to mock.url() now get 529 overloaded_error
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod anthropic;
mod behavior;
mod body;
mod server;
mod wire;

pub use behavior::{Fake200, MockBehavior, MockUsage};
pub use server::{MockUpstream, ReceivedRequest};
