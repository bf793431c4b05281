//! Forwarder stage: sends one attempt to the chosen provider and returns its response with the
//! body still streaming.
//!
//! Reads from the request: `target`. Adds to the context: `ttfb`. Before handing a 2xx response
//! on, it looks at its start to catch "fake 200s" (an HTML page, or an error object, sent with
//! status 200) so the router can fail over while nothing has reached the client. Timeouts per
//! provider: connect, first byte (streams), idle gap between chunks (streams), total
//! (non-streaming).

pub mod body;
pub mod client;
pub mod headers;
pub mod translation;
pub mod url;

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header;
use http_body::Body;
use http_body_util::BodyExt;
use tower::Service;

pub use client::{ClientOptions, ClientPool, SendError, UpstreamClient, build_client};

use crate::error::{ErrorKind, GatewayError};
use crate::request::{GatewayBody, GatewayRequest, GatewayResponse};

/// Error code of a 200 response whose body is an error; the router fails over on it.
pub const FAKE_200: &str = "fake_200";

/// Non-stream 2xx bodies up to this size are checked whole for an error object.
const FAKE_200_INSPECT_BYTES: u64 = 64 * 1024;

/// The innermost service: performs one upstream call.
#[derive(Debug, Clone)]
pub struct ForwardService {
    clients: ClientPool,
}

impl ForwardService {
    /// Forwards through `clients` (one HTTP client per proxy and connect timeout).
    pub fn new(clients: ClientPool) -> Self {
        Self { clients }
    }
}

/// Maps a transport error to a gateway error; its detail names the host at most, never headers.
fn upstream_error(e: &SendError, provider: &str) -> GatewayError {
    let (kind, code) = if e.timeout {
        (ErrorKind::UpstreamTimeout, "upstream_timeout")
    } else if e.connect {
        (ErrorKind::Upstream, "upstream_unreachable")
    } else {
        (ErrorKind::Upstream, "upstream_failed")
    };
    let public = if e.connect {
        "the upstream provider could not be reached"
    } else if e.timeout {
        "the upstream provider did not answer in time"
    } else {
        "the upstream request failed"
    };
    GatewayError::new(kind, code, public).with_detail(format!("provider {provider:?}: {e}"))
}

fn timeout_error(provider: &str, what: &str, limit: Duration) -> GatewayError {
    GatewayError::new(
        ErrorKind::UpstreamTimeout,
        "upstream_timeout",
        format!("provider {provider:?}: no {what} within {} ms", limit.as_millis()),
    )
}

fn fake_200(provider: &str, what: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::Upstream,
        FAKE_200,
        format!("provider {provider:?} answered 200 with {what}"),
    )
}

fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Whether `text` starts with the ASCII `prefix`, ignoring ASCII case (media types are
/// case-insensitive), without the lowercase copy a `to_ascii_lowercase` would make per response.
pub(crate) fn starts_with_ignore_ascii_case(text: &str, prefix: &str) -> bool {
    text.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

fn content_type(headers: &http::HeaderMap) -> &str {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The message of a JSON error object (`{"error": ...}` or `{"type":"error", ...}`), if `body`
/// is one.
fn json_error_message(body: &[u8]) -> Option<String> {
    // Inside a JSON string a quote is escaped, so an unescaped `"error"` only occurs as a key or a
    // whole value: success bodies without one (nearly all) skip the parse.
    memchr::memmem::find(body, b"\"error\"")?;
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    let err = obj.get("error")?;
    let success_keys = ["content", "choices", "candidates", "output", "input_tokens"];
    if success_keys.iter().any(|k| obj.contains_key(*k)) {
        return None;
    }
    Some(match err {
        serde_json::Value::String(s) => s.clone(),
        other => other
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| other.to_string()),
    })
}

/// The message of an SSE stream that opens with an error event, if it does.
fn sse_error_message(first: &[u8]) -> Option<String> {
    let mut decoder = crate::sse::SseDecoder::default();
    let mut verdict: Option<Option<String>> = None;
    let _ = decoder.push(first, |ev| {
        if verdict.is_some() {
            return;
        }
        let is_error = ev.event == Some("error") || json_error_message(ev.data.as_bytes()).is_some();
        verdict = Some(is_error.then(|| {
            json_error_message(ev.data.as_bytes()).unwrap_or_else(|| ev.data.chars().take(300).collect())
        }));
    });
    verdict.flatten()
}

impl ForwardService {
    async fn forward(clients: ClientPool, mut req: GatewayRequest) -> Result<GatewayResponse, GatewayError> {
        let target = req.target.take().ok_or_else(|| {
            GatewayError::new(ErrorKind::Internal, "no_target", "forwarder reached without a routed provider")
        })?;
        let provider = target.provider;
        let opts = &provider.options;
        let stream = req.hints.stream;
        let upstream_dialect = provider.provider_type.native_dialect();
        let translated = if upstream_dialect != req.dialect {
            let t = translation::translate_request(
                &target.body,
                req.dialect,
                upstream_dialect,
                target.forwarded_model.as_deref(),
                stream,
            )?;
            if !t.notes.is_empty() {
                req.ctx.update(|s| s.notes.extend(t.notes.0.iter().cloned()));
            }
            Some(t)
        } else {
            None
        };
        let url = match &translated {
            Some(t) => {
                let (path, query) = t.path_and_query.split_once('?').unwrap_or((&t.path_and_query, ""));
                url::join_upstream_url(&provider.base_url, path, Some(query))
            }
            None => {
                let path = passthrough_path(&req, target.forwarded_model.as_deref());
                url::join_upstream_url(&provider.base_url, &path, forwarded_query(req.uri.query()).as_deref())
            }
        };
        let mut upstream_body = translated.as_ref().map_or_else(|| target.body.clone(), |t| t.body.clone());
        if provider.provider_type == crate::config::ProviderType::Codex
            && opts.codex_instructions == crate::config::CodexInstructions::Inject
            && !translation::from_codex_cli(&req.headers)
            && let Some(text) = opts.codex_instructions_text.as_deref()
        {
            upstream_body = translation::inject_codex_instructions(&upstream_body, text)?;
        }
        let headers = headers::upstream_request_headers(&req.headers, &provider, translated.is_some());
        let first_byte_limit = if stream { millis(opts.first_byte_timeout_ms) } else { None };
        let total_limit = if stream { None } else { millis(opts.request_timeout_ms) };

        let uri = clients.parsed_uri(&url)?;
        let request = |headers: http::HeaderMap| {
            let mut r = http::Request::new(upstream_body.clone());
            *r.method_mut() = req.method.clone();
            *r.uri_mut() = uri.clone();
            *r.headers_mut() = headers;
            r
        };
        // Non-streaming calls get one deadline for the whole exchange, body included; streams a
        // deadline for their first byte and then an idle limit between chunks.
        let deadline = first_byte_limit.or(total_limit).map(|d| tokio::time::Instant::now() + d);
        let missed = if stream { "response" } else { "complete response" };
        let limit = first_byte_limit.or(total_limit).unwrap_or_default();
        let clients_for = clients.for_provider(&provider)?;
        let fallback_headers = clients_for.direct_fallback.as_ref().map(|_| headers.clone());
        let sent = match before(deadline, clients_for.primary.send(request(headers))).await {
            Err(()) => return Err(timeout_error(&provider.name, missed, limit)),
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => match (&clients_for.direct_fallback, fallback_headers, e.proxy_unreachable) {
                (Some(direct), Some(headers), true) => {
                    tracing::warn!(provider = %provider.name, "proxy unreachable, connecting directly: {e}");
                    match before(deadline, direct.send(request(headers))).await {
                        Err(()) => return Err(timeout_error(&provider.name, missed, limit)),
                        Ok(r) => r.map_err(|e| upstream_error(&e, &provider.name))?,
                    }
                }
                _ => return Err(upstream_error(&e, &provider.name)),
            },
        };
        req.ctx.update(|s| s.ttfb = Some(req.ctx.elapsed()));
        let mut resp = sent;
        headers::clean_response_headers(resp.headers_mut());
        let (parts, mut body) = resp.into_parts();
        // The part of a non-streaming body relayed without being read here keeps the deadline.
        let keep_deadline = |body: GatewayBody| match (deadline, total_limit) {
            (Some(at), Some(limit)) => {
                body::TimeLimit::deadline(body, at, limit, provider.name.clone()).boxed_unsync()
            }
            _ => body,
        };

        if parts.status.is_success() {
            let ct = content_type(&parts.headers);
            if starts_with_ignore_ascii_case(ct, "text/html") {
                return Err(fake_200(&provider.name, "an HTML page"));
            }
            let is_sse = starts_with_ignore_ascii_case(ct, "text/event-stream");
            let small = body.size_hint().upper().is_some_and(|n| n <= FAKE_200_INSPECT_BYTES);
            if is_sse || !small {
                // Look at the first frame only: enough to see an opening error event.
                let first = match before(deadline, body.frame()).await {
                    Err(()) => {
                        let what = if stream { "first byte" } else { missed };
                        return Err(timeout_error(&provider.name, what, limit));
                    }
                    Ok(None) => None,
                    Ok(Some(Ok(frame))) => frame.into_data().ok(),
                    Ok(Some(Err(e))) => {
                        return Err(GatewayError::new(
                            ErrorKind::Upstream,
                            "upstream_failed",
                            "the upstream provider broke off before the first byte",
                        )
                        .with_detail(format!("provider {:?}: {e}", provider.name)));
                    }
                };
                if let Some(first) = first {
                    let error = if is_sse { sse_error_message(&first) } else { first_chunk_error(&first) };
                    if let Some(msg) = error {
                        return Err(fake_200(&provider.name, &format!("an error: {msg}")));
                    }
                    body = body::Prefixed::new(first, body).boxed_unsync();
                }
                body = keep_deadline(body);
            } else {
                let whole = before(deadline, body.collect())
                    .await
                    .map_err(|()| timeout_error(&provider.name, missed, limit))?
                    .map_err(|e| {
                        GatewayError::new(
                            ErrorKind::Upstream,
                            "upstream_failed",
                            "the upstream provider broke off mid-response",
                        )
                        .with_detail(format!("provider {:?}: {e}", provider.name))
                    })?
                    .to_bytes();
                if let Some(msg) = json_error_message(&whole) {
                    return Err(fake_200(&provider.name, &format!("an error: {msg}")));
                }
                body = crate::request::full_body(whole);
            }
            if is_sse && let Some(idle) = millis(opts.stream_idle_timeout_ms) {
                body = body::TimeLimit::idle(body, idle, provider.name.clone()).boxed_unsync();
            }
        } else {
            body = keep_deadline(body);
        }
        let resp = GatewayResponse::from_parts(parts, body);
        if translated.is_some() {
            let mut notes = crate::translate::Notes::default();
            let resp =
                translation::translate_response(resp, upstream_dialect, req.dialect, &mut notes, &req.ctx)
                    .await?;
            if !notes.is_empty() {
                req.ctx.update(|s| s.notes.extend(notes.0));
            }
            return Ok(resp);
        }
        Ok(resp)
    }
}

/// The client's path, with a redirected model put into Gemini's model segment (the other
/// dialects carry the model in the body, rewritten by the router).
fn passthrough_path(req: &GatewayRequest, forwarded_model: Option<&str>) -> String {
    let path = req.uri.path();
    if let (Some((model, _)), Some(to)) = (crate::ingress::gemini_action(path), forwarded_model)
        && model != to
        && let Some(at) = path.find(&format!("/{model}:"))
    {
        return format!("{}/{to}{}", &path[..at], &path[at + 1 + model.len()..]);
    }
    path.to_owned()
}

/// The client's query without its `key` parameter: a Gemini client may authenticate with
/// `?key=`, and the gateway key must never reach the upstream.
fn forwarded_query(query: Option<&str>) -> Option<String> {
    let query = query?;
    if !query.split('&').any(|p| p == "key" || p.starts_with("key=")) {
        return Some(query.to_owned());
    }
    let kept: Vec<&str> = query.split('&').filter(|p| *p != "key" && !p.starts_with("key=")).collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Runs `fut` until `deadline`, if there is one.
async fn before<F: std::future::Future>(
    deadline: Option<tokio::time::Instant>,
    fut: F,
) -> Result<F::Output, ()> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, fut).await.map_err(|_| ()),
        None => Ok(fut.await),
    }
}

/// For large or unsized non-stream bodies: an error object is recognizable by its start.
fn first_chunk_error(first: &Bytes) -> Option<String> {
    let text = std::str::from_utf8(first).ok()?.trim_start();
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).take(24).collect();
    if compact.starts_with("{\"error\"") || compact.starts_with("{\"type\":\"error\"") {
        return Some(json_error_message(first).unwrap_or_else(|| text.chars().take(300).collect()));
    }
    None
}

impl Service<GatewayRequest> for ForwardService {
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<GatewayResponse, GatewayError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GatewayRequest) -> Self::Future {
        Box::pin(Self::forward(self.clients.clone(), req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_prefixes_ignore_ascii_case() {
        assert!(starts_with_ignore_ascii_case("Text/Event-Stream; charset=utf-8", "text/event-stream"));
        assert!(starts_with_ignore_ascii_case("text/html", "text/html"));
        assert!(!starts_with_ignore_ascii_case("text/ht", "text/html"));
        assert!(!starts_with_ignore_ascii_case("application/json", "text/html"));
        assert!(!starts_with_ignore_ascii_case("tëxt/html", "text/html"));
    }

    #[test]
    fn recognizes_error_bodies() {
        assert_eq!(
            json_error_message(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            )
            .as_deref(),
            Some("Overloaded")
        );
        assert_eq!(json_error_message(br#"{"error":"quota exceeded"}"#).as_deref(), Some("quota exceeded"));
        assert_eq!(json_error_message(br#"{"id":"msg_1","type":"message","content":[]}"#), None);
        assert_eq!(json_error_message(br#"{"content":[],"error":null}"#), None);
        assert_eq!(
            sse_error_message(
                b"event: error\ndata: {\"type\":\"error\",\"error\":{\"message\":\"boom\"}}\n\n"
            )
            .as_deref(),
            Some("boom")
        );
        assert_eq!(sse_error_message(b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"), None);
        assert_eq!(sse_error_message(b": comment only\n\n"), None);
        assert!(first_chunk_error(&Bytes::from_static(b"  { \"error\" : {\"message\":\"x\"")).is_some());
        assert!(first_chunk_error(&Bytes::from_static(b"{\"id\":\"msg\"")).is_none());
    }
}
