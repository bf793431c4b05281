//! Metering: turns a finished (or abandoned) response into exactly one [`UsageRecord`].
//!
//! [`MeteredBody`] wraps the response body. It relays frames untouched while a tap reads usage
//! from them, and it finalizes the record when the body ends, fails, or is dropped early (the
//! client went away): the finalizer runs at most once, from whichever happens first.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::{Outcome, SseUsageTap, TokenUsage, UsageRecord, compute_cost};
use crate::catalog::CatalogHandle;
use crate::error::{ErrorKind, GatewayError};
use crate::limit::LimitEngine;
use crate::request::{BoxError, Completion, GatewayBody, RequestContext};
use crate::store::UsageSink;

/// Builds usage records and hands them to the sink.
#[derive(Clone)]
pub struct Recorder {
    catalog: CatalogHandle,
    sink: Arc<dyn UsageSink>,
    limits: Option<Arc<LimitEngine>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// Prices with `catalog` and delivers to `sink`.
    pub fn new(catalog: CatalogHandle, sink: Arc<dyn UsageSink>) -> Self {
        Self { catalog, sink, limits: None }
    }

    /// Also adds each request's cost to the spend windows of `limits`.
    pub fn with_limits(mut self, limits: Arc<LimitEngine>) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Builds the record of a request and delivers it.
    pub fn finish(&self, ctx: &RequestContext, done: Completion) {
        let state = ctx.take_for_record();
        let provider = state.provider.as_ref();
        let multiplier = provider.map(|p| p.cost_multiplier);
        let cost = if state.billable && !done.usage.is_empty() {
            let catalog = self.catalog.load();
            // Price what was actually used upstream; fall back to the requested name.
            let price = state
                .forwarded_model
                .as_deref()
                .and_then(|m| catalog.price(m))
                .or_else(|| state.original_model.as_deref().and_then(|m| catalog.price(m)));
            price.and_then(|p| compute_cost(&done.usage, p, multiplier.unwrap_or(rust_decimal::Decimal::ONE)))
        } else {
            None
        };
        if let (Some(limits), Some(cost)) = (&self.limits, cost) {
            limits.record_spend(
                state.key.as_deref(),
                state.user.as_deref(),
                provider.map(|p| &**p),
                ctx.request_id(),
                ctx.created_at().timestamp_millis(),
                cost,
            );
        }
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let record = UsageRecord {
            request_id: ctx.request_id().to_owned(),
            created_at: ctx.created_at(),
            user_id: state.user.as_ref().map(|u| u.id),
            key_id: state.key.as_ref().map(|k| k.id),
            provider_id: provider.map(|p| p.id),
            provider_name: provider.map(|p| p.name.clone()),
            method: ctx.method().to_owned(),
            endpoint: ctx.endpoint().to_owned(),
            dialect: state.dialect,
            original_model: state.original_model,
            forwarded_model: state.forwarded_model,
            stream: state.stream,
            status_code: done.status,
            outcome: done.outcome,
            usage: done.usage,
            cost,
            cost_multiplier: multiplier,
            duration_ms: ms(ctx.elapsed()),
            ttfb_ms: state.ttfb.map(ms),
            ttft_ms: state.ttft.map(ms),
            session_id: state.session_id,
            error: done.error,
            user_agent: ctx.user_agent().map(str::to_owned),
            decision_chain: state.chain,
            translation_notes: state.notes,
        };
        tracing::debug!(
            request_id = %record.request_id,
            status = record.status_code,
            outcome = record.outcome.as_str(),
            duration_ms = record.duration_ms,
            "request finished"
        );
        self.sink.record(record);
    }

    /// Records a request the gateway refused or failed before any upstream response.
    pub fn finish_error(&self, ctx: &RequestContext, err: &GatewayError) {
        let outcome = match err.kind {
            ErrorKind::Upstream | ErrorKind::UpstreamTimeout | ErrorKind::Internal => Outcome::Failed,
            ErrorKind::NoProvider if err.code == crate::route::ALL_PROVIDERS_FAILED => Outcome::Failed,
            _ => Outcome::Rejected,
        };
        self.finish(
            ctx,
            Completion {
                status: err.status().as_u16(),
                outcome,
                usage: TokenUsage::default(),
                error: Some(err.log_text()),
            },
        );
    }
}

/// Largest non-streaming body kept (as shared chunks, not copies) to read usage at the end.
const MAX_JSON_TAP_BYTES: usize = 8 * 1024 * 1024;

enum Tap {
    Sse(Box<SseUsageTap>),
    Json {
        chunks: Vec<Bytes>,
        len: usize,
        overflow: bool,
    },
    /// Usage known before the body is sent (a translated complete response): nothing to read.
    Known(TokenUsage),
}

/// A response body that meters usage and finalizes the request's record exactly once.
pub struct MeteredBody {
    inner: GatewayBody,
    tap: Tap,
    ctx: RequestContext,
    recorder: Option<Recorder>,
    status: u16,
    first_byte_seen: bool,
    /// An error frame to emit before ending a stream that broke.
    trailer_frame: Option<Bytes>,
    ended: bool,
    /// Declared length of a non-stream body; servers stop polling once they have sent that
    /// many bytes, so reaching it is the end.
    remaining: Option<u64>,
}

impl std::fmt::Debug for MeteredBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredBody").field("status", &self.status).finish_non_exhaustive()
    }
}

impl MeteredBody {
    /// Wraps `inner`; `sse` selects the stream tap over the whole-JSON tap.
    pub fn new(inner: GatewayBody, sse: bool, status: u16, ctx: RequestContext, recorder: Recorder) -> Self {
        let (tap, remaining) = if sse {
            (Tap::Sse(Box::new(SseUsageTap::for_dialect(ctx.error_dialect()))), None)
        } else {
            let tap = match ctx.update(|s| s.upstream_usage.take()) {
                Some(usage) => Tap::Known(usage),
                None => Tap::Json { chunks: Vec::new(), len: 0, overflow: false },
            };
            (tap, inner.size_hint().exact())
        };
        Self {
            inner,
            tap,
            ctx,
            recorder: Some(recorder),
            status,
            first_byte_seen: false,
            trailer_frame: None,
            ended: false,
            remaining,
        }
    }

    fn observe(&mut self, data: &Bytes) {
        if !self.first_byte_seen && !data.is_empty() {
            self.first_byte_seen = true;
            if !matches!(self.tap, Tap::Sse(_)) {
                let now = self.ctx.elapsed();
                self.ctx.update(|s| s.ttft = Some(now));
            }
        }
        match &mut self.tap {
            Tap::Sse(tap) => {
                if tap.push(data).first_token {
                    let now = self.ctx.elapsed();
                    self.ctx.update(|s| s.ttft = Some(now));
                }
            }
            Tap::Known(_) => {}
            Tap::Json { chunks, len, overflow } => {
                if !*overflow {
                    *len += data.len();
                    if *len > MAX_JSON_TAP_BYTES {
                        *overflow = true;
                        chunks.clear();
                    } else {
                        chunks.push(data.clone());
                    }
                }
            }
        }
    }

    fn usage(&mut self) -> TokenUsage {
        match &mut self.tap {
            // A translated stream: the upstream's own counts (see `upstream_usage`).
            Tap::Sse(tap) => self.ctx.update(|s| s.upstream_usage.take()).unwrap_or(tap.usage),
            Tap::Known(_) | Tap::Json { .. } if self.status >= 300 => TokenUsage::default(),
            Tap::Known(usage) => *usage,
            Tap::Json { chunks, overflow, .. } => {
                if *overflow {
                    return TokenUsage::default();
                }
                let dialect = self.ctx.error_dialect();
                let usage = if chunks.len() == 1 {
                    super::extract::usage_of_body(dialect, &chunks[0])
                } else {
                    super::extract::usage_of_body(dialect, &chunks.concat())
                };
                chunks.clear();
                usage.unwrap_or_default()
            }
        }
    }

    fn finalize(&mut self, outcome: Outcome, error: Option<String>) {
        let Some(recorder) = self.recorder.take() else {
            return;
        };
        let usage = self.usage();
        let outcome =
            if outcome == Outcome::Success && self.status >= 400 { Outcome::UpstreamError } else { outcome };
        recorder.finish(&self.ctx, Completion { status: self.status, outcome, usage, error });
    }

    /// End of the upstream body: check the stream finished properly.
    fn on_end(&mut self) {
        if let Tap::Sse(tap) = &mut self.tap {
            tap.finish();
            if let Some(err) = tap.error.clone() {
                self.finalize(Outcome::Failed, Some(format!("upstream stream error: {err}")));
                return;
            }
            if !tap.saw_stop && self.status < 300 {
                let err = GatewayError::new(
                    ErrorKind::Upstream,
                    "stream_truncated",
                    "the upstream ended the stream before it was complete",
                );
                self.trailer_frame = Some(err.sse_frame(self.ctx.error_dialect(), self.ctx.request_id()));
                self.finalize(Outcome::Failed, Some(err.message));
                return;
            }
        }
        self.finalize(Outcome::Success, None);
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(this.trailer_frame.take().map(|b| Ok(Frame::data(b))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.observe(data);
                    if let Some(left) = &mut this.remaining {
                        *left = left.saturating_sub(data.len() as u64);
                        if *left == 0 {
                            this.ended = true;
                            this.on_end();
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.ended = true;
                let msg = format!("upstream connection broke mid-response: {e}");
                if matches!(this.tap, Tap::Sse(_)) {
                    // The client already has a 200 and part of a stream: end it with a
                    // well-formed error event instead of a cut connection.
                    let err = GatewayError::new(
                        ErrorKind::Upstream,
                        "upstream_stream_broken",
                        "the upstream stream broke off mid-response",
                    );
                    this.finalize(Outcome::Failed, Some(msg));
                    let frame = err.sse_frame(this.ctx.error_dialect(), this.ctx.request_id());
                    Poll::Ready(Some(Ok(Frame::data(frame))))
                } else {
                    this.finalize(Outcome::Failed, Some(msg));
                    Poll::Ready(Some(Err(e)))
                }
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.on_end();
                Poll::Ready(this.trailer_frame.take().map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.trailer_frame.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if matches!(self.tap, Tap::Sse(_)) { SizeHint::default() } else { self.inner.size_hint() }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        if self.recorder.is_some() {
            self.finalize(
                Outcome::ClientAbort,
                Some("client disconnected before the response was complete".to_owned()),
            );
        }
    }
}
