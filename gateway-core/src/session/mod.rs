//! Session stage: gives every request a session id, so a coding session's requests can be
//! grouped in the log and (in the router) kept on one provider.
//!
//! Adds to the context: `session_id`. Read by: router, log.
//!
//! Order of sources: Claude Code's `x-claude-code-session-id` header; the session inside
//! `metadata.user_id` (JSON `{"session_id": ...}` from Claude Code 2.1.78 on, or the older
//! `user_<hash>_account_<uuid>_session_<uuid>`); `x-session-id`; Codex CLI's `session-id`
//! / `session_id` headers, then its `prompt_cache_key`; else a stable hash of key + system
//! prompt + first user message.

use std::task::{Context, Poll};

use http::HeaderName;
use tower::{Layer, Service};

use crate::error::GatewayError;
use crate::header_names::{SESSION_ID_HEADERS, X_CLAUDE_CODE_SESSION_ID};
use crate::request::{GatewayRequest, GatewayResponse};

/// Adds [`SessionService`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionLayer;

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SessionService { inner }
    }
}

/// Assigns the session id; never rejects.
#[derive(Debug, Clone)]
pub struct SessionService<S> {
    inner: S,
}

/// Longest session id accepted from a client; longer ones are hashed instead.
const MAX_CLIENT_SESSION_ID: usize = 128;

fn usable(id: &str) -> Option<&str> {
    let id = id.trim();
    let ok = !id.is_empty()
        && id.len() <= MAX_CLIENT_SESSION_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then_some(id)
}

/// The session id inside Claude Code's `metadata.user_id`, in either of its formats.
pub fn session_from_metadata_user_id(user_id: &str) -> Option<String> {
    let trimmed = user_id.trim();
    if trimmed.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Ids {
            session_id: Option<String>,
        }
        let ids: Ids = serde_json::from_str(trimmed).ok()?;
        return ids.session_id.as_deref().and_then(usable).map(str::to_owned);
    }
    let (_, session) = trimmed.rsplit_once("_session_")?;
    usable(session).map(str::to_owned)
}

/// Derives the session id of a request.
pub fn derive_session_id(req: &GatewayRequest) -> String {
    let header = |name: &HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok()).and_then(usable);
    if let Some(id) = header(&X_CLAUDE_CODE_SESSION_ID) {
        return id.to_owned();
    }
    if let Some(id) = req.hints.metadata_user_id.as_deref().and_then(session_from_metadata_user_id) {
        return id;
    }
    for name in &SESSION_ID_HEADERS {
        if let Some(id) = header(name) {
            return id.to_owned();
        }
    }
    if let Some(id) = req.hints.prompt_cache_key.as_deref().and_then(usable) {
        return id.to_owned();
    }
    // No id from the client: the same key sending the same opening of a conversation is the
    // same session. Scoped by key so two users never share one.
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    if let Some(key) = req.ctx.key() {
        h.update(&key.id.to_le_bytes());
    }
    match req.hints.conversation_fingerprint {
        Some(fp) => h.update(&fp.to_le_bytes()),
        None => h.update(req.ctx.request_id().as_bytes()),
    }
    hashed_session_id(h.digest128())
}

/// `hash_` and the top 96 bits of `digest` as 24 hex digits: plenty against accidental
/// collisions within one key. Written digit by digit: `format!` took about a hundredth of the
/// CPU of a request.
fn hashed_session_id(digest: u128) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(5 + 24);
    id.push_str("hash_");
    id.extend((8..32).rev().map(|nibble| char::from(DIGITS[((digest >> (nibble * 4)) & 0xf) as usize])));
    id
}

impl<S> Service<GatewayRequest> for SessionService<S>
where
    S: Service<GatewayRequest, Response = GatewayResponse, Error = GatewayError>,
{
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GatewayRequest) -> Self::Future {
        let id = derive_session_id(&req);
        req.ctx.update(|s| s.session_id = Some(id));
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_ids_are_the_top_96_bits_in_hex() {
        for digest in [0, 1, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            assert_eq!(hashed_session_id(digest), format!("hash_{:024x}", digest >> 32));
        }
    }

    #[test]
    fn reads_both_metadata_formats() {
        assert_eq!(
            session_from_metadata_user_id(
                r#"{"device_id":"d1","account_uuid":"a","session_id":"9b2c7e1a-1f3e-4c55-8a4e-0d1f2a3b4c5d"}"#
            )
            .as_deref(),
            Some("9b2c7e1a-1f3e-4c55-8a4e-0d1f2a3b4c5d")
        );
        assert_eq!(
            session_from_metadata_user_id(
                "user_3f2a9c_account_6a1e3b2c-0000-4000-8000-000000000001_session_5d4c3b2a-1111-4222-8333-444455556666"
            )
            .as_deref(),
            Some("5d4c3b2a-1111-4222-8333-444455556666")
        );
        assert_eq!(session_from_metadata_user_id("user_abc_account__session_"), None);
        assert_eq!(session_from_metadata_user_id("plain-user"), None);
        assert_eq!(session_from_metadata_user_id(r#"{"session_id":"has space"}"#), None);
    }
}
