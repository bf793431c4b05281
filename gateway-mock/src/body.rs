//! The response body type: either a complete buffer or frames pushed through a channel.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// What the stream producer sends to the body.
pub(crate) enum Chunk {
    /// One frame of body bytes (one SSE event).
    Data(Bytes),
    /// Abort the response: the connection is torn down without a clean end of body.
    Abort,
}

/// Response body of the mock.
///
/// An enum instead of a boxed body: no allocation per response and an exact size hint for
/// complete bodies, so hyper sends `content-length` for them and chunked encoding for streams.
pub(crate) enum MockBody {
    /// A complete body; `None` once it was yielded.
    Full(Option<Bytes>),
    /// A streamed body; each received chunk becomes its own frame so delays are observable.
    Channel {
        /// Frames from the producer task.
        rx: mpsc::Receiver<Chunk>,
        /// Set once `Chunk::Abort` arrived; the next poll fails the body.
        aborting: bool,
    },
}

impl MockBody {
    /// A complete body.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// A streamed body fed by `rx`.
    pub(crate) fn channel(rx: mpsc::Receiver<Chunk>) -> Self {
        Self::Channel { rx, aborting: false }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Channel { rx, aborting } => {
                if *aborting {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "mock upstream: reset_after_events reached",
                    ))));
                }
                match ready!(rx.poll_recv(cx)) {
                    Some(Chunk::Data(bytes)) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                    Some(Chunk::Abort) => {
                        // Report Pending once (with an immediate wake-up) before failing: hyper
                        // flushes its write buffer whenever the body is pending, so the events
                        // already produced reach the client before the connection is torn down.
                        *aborting = true;
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Channel { .. } => SizeHint::default(),
        }
    }
}
