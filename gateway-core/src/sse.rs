//! Incremental Server-Sent Events decoding, as the HTML standard defines the format: events are
//! separated by a blank line, fields are `name: value` lines, multiple `data` lines join with
//! `\n`, lines starting with `:` are comments, and `\n`, `\r\n` or `\r` end a line.

use bytes::{Buf, BytesMut};

/// One dispatched event. Borrowed from the decoder's buffer; copy what you keep.
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field, if any.
    pub event: Option<&'a str>,
    /// The `data:` lines joined by `\n`.
    pub data: std::borrow::Cow<'a, str>,
}

/// Error when an event grows past the decoder's frame limit without ending.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("SSE event larger than {0} bytes")]
pub struct FrameTooLarge(pub usize);

/// Splits a byte stream into events, keeping at most one incomplete event buffered.
#[derive(Debug)]
pub struct SseDecoder {
    buf: BytesMut,
    max_frame: usize,
    scanned: usize,
}

/// Default bound on one event: generous for large tool inputs, small enough to bound memory.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl SseDecoder {
    /// A decoder that fails on events over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self { buf: BytesMut::new(), max_frame, scanned: 0 }
    }

    /// Feeds a chunk and calls `on_event` for each event it completes.
    pub fn push(
        &mut self,
        chunk: &[u8],
        mut on_event: impl FnMut(SseEvent<'_>),
    ) -> Result<(), FrameTooLarge> {
        if self.buf.is_empty() {
            // Nothing pending: read the events straight from the chunk and keep only its
            // incomplete tail, instead of copying everything through the buffer.
            let mut rest = chunk;
            while let Some((end, sep)) = find_event_end(rest, 0) {
                if let Some(ev) = parse_event(&rest[..end]) {
                    on_event(ev);
                }
                rest = &rest[end + sep..];
            }
            self.buf.extend_from_slice(rest);
            return self.wait_for_more();
        }
        self.buf.extend_from_slice(chunk);
        loop {
            let Some((end, sep)) = find_event_end(&self.buf, self.scanned) else {
                return self.wait_for_more();
            };
            if let Some(ev) = parse_event(&self.buf[..end]) {
                on_event(ev);
            }
            self.buf.advance(end + sep);
            self.scanned = 0;
        }
    }

    /// The buffer holds an incomplete event (or nothing): bounds it and notes where to resume.
    fn wait_for_more(&mut self) -> Result<(), FrameTooLarge> {
        // Resume scanning near the end next time; a separator may straddle chunks.
        self.scanned = self.buf.len().saturating_sub(3);
        if self.buf.len() > self.max_frame {
            self.buf.clear();
            self.scanned = 0;
            return Err(FrameTooLarge(self.max_frame));
        }
        Ok(())
    }

    /// Feeds the end of the stream: a final event without its blank line is dispatched, as
    /// upstreams that close abruptly sometimes leave one.
    pub fn finish(&mut self, mut on_event: impl FnMut(SseEvent<'_>)) {
        if !self.buf.is_empty() {
            if let Some(ev) = parse_event(&self.buf) {
                on_event(ev);
            }
            self.buf.clear();
        }
        self.scanned = 0;
    }
}

/// Finds the first blank line at or after `from`: returns (end of event, separator length).
fn find_event_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while let Some(pos) = memchr::memchr2(b'\n', b'\r', &buf[i..]) {
        let at = i + pos;
        let rest = &buf[at..];
        // A line ending followed directly by another line ending is a blank line.
        let first = if rest.starts_with(b"\r\n") { 2 } else { 1 };
        if rest.len() <= first {
            // "\r" at the very end might be the start of "\r\n"; wait for more.
            return None;
        }
        let second = &rest[first..];
        if second.starts_with(b"\r\n") {
            return Some((at, first + 2));
        }
        if second[0] == b'\n' {
            return Some((at, first + 1));
        }
        if second[0] == b'\r' {
            if second.len() == 1 {
                return None;
            }
            return Some((at, first + 1));
        }
        i = at + first;
    }
    None
}

fn parse_event(raw: &[u8]) -> Option<SseEvent<'_>> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut event = None;
    let mut data: Option<std::borrow::Cow<'_, str>> = None;
    let mut rest = text;
    loop {
        // Lines end at `\n` or `\r`; the empty piece between `\r` and `\n` is skipped below.
        let (line, more) = match memchr::memchr2(b'\n', b'\r', rest.as_bytes()) {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        if !line.is_empty() && !line.starts_with(':') {
            let (name, value) = match memchr::memchr(b':', line.as_bytes()) {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(' ').unwrap_or(v))
                }
                None => (line, ""),
            };
            match name {
                "event" => event = Some(value),
                "data" => {
                    data = Some(match data {
                        None => std::borrow::Cow::Borrowed(value),
                        Some(prev) => {
                            let mut s = prev.into_owned();
                            s.push('\n');
                            s.push_str(value);
                            std::borrow::Cow::Owned(s)
                        }
                    })
                }
                _ => {}
            }
        }
        match more {
            Some(m) => rest = m,
            None => break,
        }
    }
    if event.is_none() && data.is_none() {
        return None;
    }
    Some(SseEvent { event, data: data.unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<(Option<String>, String)> {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, |e| out.push((e.event.map(str::to_owned), e.data.into_owned()))).expect("push");
        }
        d.finish(|e| out.push((e.event.map(str::to_owned), e.data.into_owned())));
        out
    }

    #[test]
    fn splits_events_across_any_chunking() {
        let stream = b"event: a\ndata: {\"x\":1}\n\n: comment\n\nevent: b\r\ndata: l1\r\ndata: l2\r\n\r\ndata: last\n\n";
        let expected = vec![
            (Some("a".into()), "{\"x\":1}".into()),
            (Some("b".into()), "l1\nl2".into()),
            (None, "last".into()),
        ];
        assert_eq!(collect(&[stream]), expected);
        for split in 1..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(collect(&[a, b]), expected, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(collect(&bytes), expected);
    }

    #[test]
    fn unterminated_last_event_is_dispatched_at_finish() {
        assert_eq!(collect(&[b"data: tail"]), vec![(None, "tail".into())]);
    }

    #[test]
    fn oversized_frame_is_an_error() {
        let mut d = SseDecoder::new(16);
        assert!(d.push(b"data: 0123456789abcdefghij", |_| {}).is_err());
    }
}
