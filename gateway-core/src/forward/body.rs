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

/// Error of a stream that went quiet for too long.
#[derive(Debug, thiserror::Error)]
#[error("provider {provider:?} sent nothing for {} ms mid-stream", .limit.as_millis())]
pub struct StreamIdle {
    provider: String,
    limit: Duration,
}

/// Fails a stream when no frame arrives for `limit`.
#[derive(Debug)]
pub struct IdleTimeout {
    inner: GatewayBody,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    provider: String,
}

impl IdleTimeout {
    /// Wraps `inner`.
    pub fn new(inner: GatewayBody, limit: Duration, provider: String) -> Self {
        Self { inner, limit, timer: Box::pin(tokio::time::sleep(limit)), provider }
    }
}

impl Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.limit;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(StreamIdle {
                    provider: this.provider.clone(),
                    limit: this.limit,
                })))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Error of a non-streaming response not complete by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("provider {provider:?} did not complete its response within {} ms", .limit.as_millis())]
pub struct DeadlinePassed {
    provider: String,
    limit: Duration,
}

/// Fails a body still unfinished at `at`, the deadline of the whole exchange.
#[derive(Debug)]
pub struct Deadline {
    inner: GatewayBody,
    timer: Pin<Box<Sleep>>,
    limit: Duration,
    provider: String,
}

impl Deadline {
    /// Wraps `inner`; `limit` is the configured total, for the error message.
    pub fn new(inner: GatewayBody, at: tokio::time::Instant, limit: Duration, provider: String) -> Self {
        Self { inner, timer: Box::pin(tokio::time::sleep_until(at)), limit, provider }
    }
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(DeadlinePassed {
                provider: this.provider.clone(),
                limit: this.limit,
            })))),
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
        let mut body = Deadline::new(stalled_after("{\"id\":"), at, Duration::from_millis(500), "p".into());
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), Bytes::from_static(b"{\"id\":"));
        let started = tokio::time::Instant::now();
        let err = body.frame().await.expect("an end").expect_err("the deadline passed");
        assert!(err.to_string().contains("within 500 ms"), "{err}");
        assert_eq!(tokio::time::Instant::now().duration_since(started), Duration::from_millis(500));

        let whole =
            Deadline::new(crate::request::full_body("{}"), at, Duration::from_millis(500), "p".into());
        assert_eq!(whole.collect().await.expect("in time").to_bytes(), Bytes::from_static(b"{}"));
    }
}
