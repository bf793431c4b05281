//! Hides the usage-only chunk of an OpenAI chat stream from a client that did not ask for it.
//!
//! The gateway always asks chat upstreams for usage (`stream_options.include_usage`), because an
//! unbilled stream is not acceptable; a client that did not ask must not see the extra chunk
//! (`choices: []`), which breaks the common `chunk.choices[0]` loop. The meter reads the chunk
//! before this filter drops it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use crate::request::{BoxError, GatewayBody};

/// Relays a chat SSE stream event by event, without its usage-only chunk.
#[derive(Debug)]
pub struct HideUsageChunk {
    inner: GatewayBody,
    pending: BytesMut,
    done: bool,
}

impl HideUsageChunk {
    /// Wraps a chat stream.
    pub fn new(inner: GatewayBody) -> Self {
        Self { inner, pending: BytesMut::new(), done: false }
    }

    /// Moves complete events out of `pending`, leaving an incomplete tail.
    fn drain_events(&mut self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.pending.len());
        while let Some((end, sep)) = find_blank_line(&self.pending) {
            // The event with its own separator: relayed bytes stay as the upstream sent them.
            let event = self.pending.split_to(end + sep);
            if !is_usage_only(&event[..end]) {
                out.extend_from_slice(&event);
            }
        }
        out.freeze()
    }
}

/// (end of event, length of the blank-line separator).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| (i, 2));
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// A `data:` event whose chunk has no choices but a usage object.
fn is_usage_only(event: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Option<Vec<serde::de::IgnoredAny>>,
        #[serde(default)]
        usage: Option<serde::de::IgnoredAny>,
    }
    let Ok(text) = std::str::from_utf8(event) else { return false };
    let Some(data) = text.lines().find_map(|l| l.strip_prefix("data:")) else { return false };
    // Cheap pre-check: only chunks mentioning usage are parsed.
    if !data.contains("\"usage\"") {
        return false;
    }
    serde_json::from_str::<Chunk>(data.trim())
        .is_ok_and(|c| c.choices.is_some_and(|ch| ch.is_empty()) && c.usage.is_some())
}

impl Body for HideUsageChunk {
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
                    this.pending.extend_from_slice(&data);
                    let out = this.drain_events();
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = this.pending.split().freeze();
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn drops_only_the_usage_chunk_whatever_the_chunking() {
        let stream = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
            "data: [DONE]\n\n",
        );
        let expected = stream.replace(
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
            "",
        );
        for size in [1, 7, 64, stream.len()] {
            let chunks: Vec<Result<Frame<Bytes>, BoxError>> =
                stream.as_bytes().chunks(size).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
            let inner = http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync();
            let out = HideUsageChunk::new(inner).collect().await.expect("body").to_bytes();
            assert_eq!(std::str::from_utf8(&out).expect("utf8"), expected, "chunk size {size}");
        }
    }
}
