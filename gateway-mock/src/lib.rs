//! A realistic in-process fake of the upstream LLM vendors' HTTP APIs, served over real HTTP on
//! a local port, for tests, benchmarks and examples.
//!
//! [`MockUpstream`] speaks four dialects, chosen by the request path:
//!
//! - Anthropic Messages: `POST /v1/messages` (JSON or SSE stream, text or `tool_use`),
//!   `POST /v1/messages/count_tokens`, `GET /v1/models[/{id}]`.
//! - OpenAI Chat Completions: `POST /v1/chat/completions` (JSON, or `chat.completion.chunk`
//!   lines ending in `data: [DONE]`, with a usage chunk for `stream_options.include_usage`).
//! - OpenAI Responses, as Codex CLI uses it: `POST /v1/responses` (JSON or named SSE events
//!   from `response.created` to `response.completed`), `POST /v1/responses/input_tokens`.
//! - Google Gemini: `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent`
//!   (`?alt=sse`, else a streamed JSON array), `:countTokens`, `GET /v1beta/models[/{model}]`;
//!   the same under `/v1/`.
//!
//! `GET /v1/models` answers in Anthropic's shape when the request has `anthropic-version`, in
//! Gemini's with a Gemini key (`x-goog-api-key` or `?key=`), in OpenAI's list shape with an
//! `Authorization` header (and no `x-api-key`), and in Anthropic's otherwise.
//!
//! Every request is recorded, and every dialect honours the same [`MockBehavior`] knobs: delays,
//! chunking, forced statuses (in the dialect's error shape), fake 200s, mid-stream resets, key
//! checks (`x-api-key` or bearer for Anthropic, bearer for OpenAI, `x-goog-api-key` or `?key=`
//! for Gemini), reply text, model and usage. Usage is mapped to each vendor's accounting: OpenAI
//! and Gemini count cached and cache-written tokens inside their prompt totals.
//!
//! Beyond the knobs, requests steer replies the way they steer real models: offered tools are
//! called (the first function tool, or the one `tool_choice` names) until a tool result comes
//! back; an output limit below `usage.output_tokens` cuts the reply (`length`,
//! `max_output_tokens`, `MAX_TOKENS`); and asking OpenAI or Gemini models to reason reports a
//! third of the output tokens as reasoning (with a reasoning summary item for the Responses
//! API's `reasoning.summary`, and a thought part for Gemini's `includeThoughts`).
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
mod common;
mod gemini;
mod openai;
mod openai_chat;
mod responses;
mod router;
mod server;
mod wire;

pub use behavior::{Fake200, MockBehavior, MockUsage};
pub use server::{MockUpstream, ReceivedRequest};
