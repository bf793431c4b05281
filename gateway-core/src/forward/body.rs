//! Body adapters of the forwarder.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::request::{BoxError, GatewayBody};

/// A body whose first chunk was already read (to inspect it) and is given back first.
#[derive(Debug)]
pub struct Prefixed {
    first: Option<Bytes>,
    rest: GatewayBody,
}

impl Prefixed {
    /// `first`, then the rest of `rest`.
    pub fn new(first: Bytes, rest: GatewayBody) -> Self {
        Self { first: Some(first), rest }
    }
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let extra = self.first.as_ref().map_or(0, |b| b.len() as u64);
        let inner = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + extra);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + extra);
        }
        hint
    }
}

/// Error of a body cut by its time limit.
#[derive(Debug, thiserror::Error)]
pub enum TimedOut {
    /// A stream went quiet for too long.
    #[error("provider {provider:?} sent nothing for {} ms mid-stream", .limit.as_millis())]
    Idle {
        /// The provider's name.
        provider: String,
        /// The configured idle limit.
        limit: Duration,
    },
    /// A non-streaming response was not complete by the deadline of the exchange.
    #[error("provider {provider:?} did not complete its response within {} ms", .limit.as_millis())]
    Deadline {
        /// The provider's name.
        provider: String,
        /// The configured total.
        limit: Duration,
    },
}

/// Fails a body when its timer fires before the next frame: an idle limit starts over with
/// every frame, a deadline holds for the whole body.
#[derive(Debug)]
pub struct TimeLimit {
    inner: GatewayBody,
    timer: Pin<Box<Sleep>>,
    limit: Duration,
    provider: String,
    idle: bool,
}

impl TimeLimit {
    /// Fails `inner` when no frame arrives for `limit`.
    pub fn idle(inner: GatewayBody, limit: Duration, provider: String) -> Self {
        Self { inner, timer: Box::pin(tokio::time::sleep(limit)), limit, provider, idle: true }
    }

    /// Fails `inner` when it is still unfinished at `at`; `limit` is the configured total, for
    /// the error message.
    pub fn deadline(inner: GatewayBody, at: tokio::time::Instant, limit: Duration, provider: String) -> Self {
        Self { inner, timer: Box::pin(tokio::time::sleep_until(at)), limit, provider, idle: false }
    }
}

impl Body for TimeLimit {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if this.idle {
                this.timer.as_mut().reset(tokio::time::Instant::now() + this.limit);
            }
            return Poll::Ready(frame);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let (provider, limit) = (this.provider.clone(), this.limit);
                let error = if this.idle {
                    TimedOut::Idle { provider, limit }
                } else {
                    TimedOut::Deadline { provider, limit }
                };
                Poll::Ready(Some(Err(Box::new(error))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    /// A body that sends `first` and then nothing, ever.
    fn stalled_after(first: &'static str) -> GatewayBody {
        let frames = futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from_static(
            first.as_bytes(),
        )))])
        .chain(futures_util::stream::pending());
        StreamBody::new(frames).boxed_unsync()
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_unfinished_at_its_deadline_fails_and_one_finished_in_time_does_not() {
        let at = tokio::time::Instant::now() + Duration::from_millis(500);
        let mut body =
            TimeLimit::deadline(stalled_after("{\"id\":"), at, Duration::from_millis(500), "p".into());
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), Bytes::from_static(b"{\"id\":"));
        let started = tokio::time::Instant::now();
        let err = body.frame().await.expect("an end").expect_err("the deadline passed");
        assert!(err.to_string().contains("within 500 ms"), "{err}");
        assert_eq!(tokio::time::Instant::now().duration_since(started), Duration::from_millis(500));

        let whole =
            TimeLimit::deadline(crate::request::full_body("{}"), at, Duration::from_millis(500), "p".into());
        assert_eq!(whole.collect().await.expect("in time").to_bytes(), Bytes::from_static(b"{}"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_limit_starts_over_with_every_frame() {
        let start = tokio::time::Instant::now();
        let mut body = TimeLimit::idle(stalled_after("data: {}\n\n"), Duration::from_millis(300), "p".into());
        tokio::time::sleep(Duration::from_millis(200)).await;
        body.frame().await.expect("a frame").expect("data");
        let err = body.frame().await.expect("an end").expect_err("idle too long");
        assert!(err.to_string().contains("sent nothing for 300 ms"), "{err}");
        // 300 ms after the frame read at 200 ms, not 300 ms after the start.
        assert_eq!(tokio::time::Instant::now().duration_since(start), Duration::from_millis(500));
    }
}
