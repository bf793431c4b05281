//! Cross-dialect forwarding: the request body rewritten for the provider's dialect, and its
//! response (complete, streamed, or an error) rewritten back into the client's.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::dialect::Dialect;
use crate::error::{ErrorKind, GatewayError};
use crate::request::{BoxError, GatewayBody, GatewayResponse, RequestContext, full_body};
use crate::translate::{self, Notes, StreamTranslator};
use crate::usage::TokenUsage;

/// Largest complete body (response or error) translated in memory.
const MAX_TRANSLATED_BODY: usize = 32 * 1024 * 1024;

fn translate_error(what: &str, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(
        ErrorKind::Upstream,
        "translation_failed",
        format!("the {what} could not be translated"),
    )
    .with_detail(e.to_string())
}

/// The endpoints whose requests can be translated: conversations. Token counting, compaction
/// and model listing exist only in a dialect's own terms.
pub fn translatable(dialect: Dialect, path: &str) -> bool {
    match dialect {
        Dialect::Anthropic => path == "/v1/messages",
        Dialect::OpenaiChat => path == "/v1/chat/completions",
        Dialect::OpenaiResponses => path == "/v1/responses",
        Dialect::Gemini => crate::ingress::gemini_action(path)
            .is_some_and(|(_, a)| a != crate::ingress::GeminiAction::CountTokens),
    }
}

/// A request rewritten for another dialect.
#[derive(Debug)]
pub struct TranslatedRequest {
    /// Upstream path and query.
    pub path_and_query: String,
    /// Upstream body.
    pub body: Bytes,
    /// What could not be carried over.
    pub notes: Notes,
}

/// Rewrites a client request body of `from` into `to`, with the model and streaming mode the
/// pipeline decided (the Gemini model lives in the path, not the body).
pub fn translate_request(
    body: &[u8],
    from: Dialect,
    to: Dialect,
    model: Option<&str>,
    stream: bool,
) -> Result<TranslatedRequest, GatewayError> {
    let src =
        translate::codec(from).ok_or_else(|| translate_error("request", format!("no codec for {from}")))?;
    let dst = translate::codec(to).ok_or_else(|| translate_error("request", format!("no codec for {to}")))?;
    let mut notes = Notes::default();
    let mut ir = src.decode_request(body, &mut notes).map_err(|e| {
        GatewayError::new(
            ErrorKind::InvalidRequest,
            "invalid_request",
            format!("the request could not be read: {e}"),
        )
    })?;
    if let Some(m) = model {
        ir.model = m.to_owned();
    }
    translate::signature::restore_for(to, &mut ir.messages, &mut notes);
    ir.stream = stream;
    let out = dst.encode_request(&ir, &mut notes).map_err(|e| translate_error("request", e))?;
    Ok(TranslatedRequest { path_and_query: dst.request_path(&ir), body: Bytes::from(out), notes })
}

async fn collect_limited(body: GatewayBody) -> Result<Bytes, GatewayError> {
    let bytes = body.collect().await.map_err(|e| {
        GatewayError::new(
            ErrorKind::Upstream,
            "upstream_failed",
            "the upstream provider broke off mid-response",
        )
        .with_detail(e.to_string())
    })?;
    let bytes = bytes.to_bytes();
    if bytes.len() > MAX_TRANSLATED_BODY {
        return Err(translate_error("response", "response larger than the translation limit"));
    }
    Ok(bytes)
}

fn set_json(headers: &mut http::HeaderMap, len: usize) {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.remove(header::CONTENT_ENCODING);
}

/// Rewrites an upstream response of dialect `from` into the client's dialect `to`. `stream` is
/// whether the client asked for a stream; the response's own content type decides how it is
/// read. Notes of the response are appended to `notes`. The upstream's usage goes into `ctx`
/// (`upstream_usage`) for the meter: a complete response's at once, a stream's as it goes.
pub async fn translate_response(
    resp: GatewayResponse,
    from: Dialect,
    to: Dialect,
    notes: &mut Notes,
    ctx: &RequestContext,
) -> Result<GatewayResponse, GatewayError> {
    let src =
        translate::codec(from).ok_or_else(|| translate_error("response", format!("no codec for {from}")))?;
    let dst =
        translate::codec(to).ok_or_else(|| translate_error("response", format!("no codec for {to}")))?;
    let (mut parts, body) = resp.into_parts();
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| super::starts_with_ignore_ascii_case(ct.trim_start(), "text/event-stream"));
    if !parts.status.is_success() {
        let raw = collect_limited(body).await?;
        let info = src.decode_error(parts.status.as_u16(), &raw);
        let out = dst.encode_error(&info);
        set_json(&mut parts.headers, out.len());
        return Ok(GatewayResponse::from_parts(parts, full_body(out)));
    }
    if is_sse {
        let translator = StreamTranslator::new(from, to).map_err(|e| translate_error("stream", e))?;
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        let body = TranslatingBody { inner: body, translator, done: false, ctx: ctx.clone(), reported: None }
            .boxed_unsync();
        return Ok(GatewayResponse::from_parts(parts, body));
    }
    let raw = collect_limited(body).await?;
    let mut ir = src.decode_response(&raw).map_err(|e| translate_error("response", e))?;
    translate::signature::tag_blocks(from, &mut ir.content);
    let out = dst.encode_response(&ir, notes).map_err(|e| translate_error("response", e))?;
    set_json(&mut parts.headers, out.len());
    ctx.update(|s| s.upstream_usage = Some(ir.usage.tokens));
    Ok(GatewayResponse::from_parts(parts, full_body(out)))
}

/// A stream body translated frame by frame; memory is bounded by one incomplete event.
struct TranslatingBody {
    inner: GatewayBody,
    translator: StreamTranslator,
    done: bool,
    /// Where the upstream's usage goes for the meter, which reads the translated stream and,
    /// in the client's dialect, may not find every count (OpenAI chat has no 5m/1h split).
    ctx: RequestContext,
    /// The usage last put into `ctx`.
    reported: Option<TokenUsage>,
}

impl TranslatingBody {
    /// Passes a changed upstream usage to the context; called before the bytes that carry it
    /// go on to the meter.
    fn report_usage(&mut self) {
        let usage = self.translator.upstream_usage();
        if usage != self.reported {
            self.reported = usage;
            self.ctx.update(|s| s.upstream_usage = usage);
        }
    }
}

impl Body for TranslatingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let out = this.translator.push(&data);
                    this.report_usage();
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    // The client gets a well-formed error ending in its own dialect; the meter
                    // sees the error event and records the failure.
                    this.done = true;
                    let out = this.translator.finish(Some(&format!("the upstream stream broke off: {e}")));
                    this.report_usage();
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let out = this.translator.finish(None);
                    this.report_usage();
                    return Poll::Ready((!out.is_empty()).then(|| Ok(Frame::data(out))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Whether a request comes from Codex CLI (its user agent, or its `originator` header).
pub fn from_codex_cli(headers: &http::HeaderMap) -> bool {
    let starts = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("codex"))
    };
    starts("user-agent") || starts("originator")
}

/// Puts `text` into a Responses request's `instructions`; instructions the request had move into
/// a leading developer message so nothing the client said is lost.
pub fn inject_codex_instructions(body: &[u8], text: &str) -> Result<Bytes, GatewayError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        instructions: Option<String>,
        #[serde(default)]
        input: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(body).map_err(|e| {
        GatewayError::new(
            ErrorKind::InvalidRequest,
            "invalid_json",
            format!("request body is not a JSON object: {e}"),
        )
    })?;
    let mut out = crate::ingress::set_top_level_field(body, "instructions", &serde_json::Value::from(text))?;
    if let Some(own) = probe.instructions.filter(|t| !t.trim().is_empty() && t != text) {
        let developer = serde_json::json!({
            "type": "message",
            "role": "developer",
            "content": [{ "type": "input_text", "text": own }],
        });
        let input = match probe.input {
            Some(serde_json::Value::Array(mut items)) => {
                items.insert(0, developer);
                serde_json::Value::Array(items)
            }
            Some(serde_json::Value::String(s)) => serde_json::json!([
                developer,
                { "type": "message", "role": "user", "content": [{ "type": "input_text", "text": s }] },
            ]),
            _ => serde_json::json!([developer]),
        };
        out = crate::ingress::set_top_level_field(&out, "input", &input)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_keeps_the_clients_instructions_as_a_developer_message() {
        let body = br#"{"model":"gpt-5-codex","instructions":"Be terse.","input":[{"type":"message","role":"user","content":"hi"}],"store":false}"#;
        let out = inject_codex_instructions(body, "You are Codex.").expect("inject");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["instructions"], "You are Codex.");
        assert_eq!(v["input"][0]["role"], "developer");
        assert_eq!(v["input"][0]["content"][0]["text"], "Be terse.");
        assert_eq!(v["input"][1]["content"], "hi");
        assert_eq!(v["store"], false);
        let plain = inject_codex_instructions(br#"{"model":"m","input":"hello"}"#, "X").expect("inject");
        let v: serde_json::Value = serde_json::from_slice(&plain).expect("json");
        assert_eq!(v["instructions"], "X");
        assert_eq!(v["input"], "hello", "nothing to move: input untouched");
    }

    #[test]
    fn codex_cli_is_recognized() {
        let mut h = http::HeaderMap::new();
        h.insert("user-agent", HeaderValue::from_static("codex_cli_rs/0.169.0 (Mac OS 15.5; arm64)"));
        assert!(from_codex_cli(&h));
        h.insert("user-agent", HeaderValue::from_static("OpenAI/Python 2.8.0"));
        assert!(!from_codex_cli(&h));
        h.insert("originator", HeaderValue::from_static("codex_cli_rs"));
        assert!(from_codex_cli(&h));
    }

    #[test]
    fn only_conversation_endpoints_translate() {
        assert!(translatable(Dialect::Anthropic, "/v1/messages"));
        assert!(!translatable(Dialect::Anthropic, "/v1/messages/count_tokens"));
        assert!(!translatable(Dialect::OpenaiResponses, "/v1/responses/compact"));
        assert!(translatable(Dialect::Gemini, "/v1beta/models/gemini-2.5-pro:streamGenerateContent"));
        assert!(!translatable(Dialect::Gemini, "/v1beta/models/gemini-2.5-pro:countTokens"));
    }
}
