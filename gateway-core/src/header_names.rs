//! Names of the non-standard headers the gateway reads or writes. Looking a header up by a
//! `&str` parses and hashes the name on every call; these constants are parsed at compile time.

use http::HeaderName;

/// Anthropic's API key header (also sent by some OpenAI-compatible clients).
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// Gemini's API key header.
pub const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");
/// Anthropic's API version.
pub const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
/// The gateway's request id on every response.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Claude Code's session id.
pub const X_CLAUDE_CODE_SESSION_ID: HeaderName = HeaderName::from_static("x-claude-code-session-id");
/// Session id headers of other clients, in the order they are trusted.
pub const SESSION_ID_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-session-id"),
    HeaderName::from_static("session-id"),
    HeaderName::from_static("session_id"),
];
/// Hop-by-hop headers without a constant in [`http::header`].
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// The non-standard `Proxy-Connection`, hop-by-hop in practice.
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
