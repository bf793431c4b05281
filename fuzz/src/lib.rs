//! Shared input layout for the fuzz targets.
//!
//! Every target reads its input as `[selector, n, offsets..., body...]`:
//! - `selector` picks the dialect (low two bits, in [`DIALECTS`] order) and target-specific
//!   options from the higher bits;
//! - `n & 7` is how many split points follow, each a little-endian `u16` taken modulo the body
//!   length, so the fuzzer chooses where the body is cut into chunks;
//! - the rest is the body.
//!
//! A seed is therefore a fixture file with two header bytes in front (`[selector, 0]`).

use gateway_core::dialect::Dialect;
use gateway_core::translate::ir::StreamEvent;
use gateway_core::translate::{StreamDecoder, codec};

/// Dialects in selector order.
pub const DIALECTS: [Dialect; 4] =
    [Dialect::Anthropic, Dialect::OpenaiChat, Dialect::OpenaiResponses, Dialect::Gemini];

/// A decoded fuzz input.
#[derive(Debug)]
pub struct Input<'a> {
    /// The selector byte.
    pub selector: u8,
    /// The body.
    pub body: &'a [u8],
    /// Sorted, deduplicated cut positions inside `body` (each in `1..body.len()`).
    pub splits: Vec<usize>,
}

impl<'a> Input<'a> {
    /// Reads the header; a short input is a body-less one.
    pub fn parse(data: &'a [u8]) -> Self {
        let selector = data.first().copied().unwrap_or(0);
        let count = usize::from(data.get(1).copied().unwrap_or(0) & 7);
        let header_end = (2 + 2 * count).min(data.len());
        let offsets = data.get(2..header_end).unwrap_or_default();
        let body = data.get(header_end..).unwrap_or_default();
        let mut splits: Vec<usize> = offsets
            .chunks_exact(2)
            .filter(|_| body.len() > 1)
            .map(|pair| usize::from(u16::from_le_bytes([pair[0], pair[1]])) % body.len())
            .filter(|&at| at > 0)
            .collect();
        splits.sort_unstable();
        splits.dedup();
        Self { selector, body, splits }
    }

    /// The dialect in the selector's low two bits.
    pub fn dialect(&self) -> Dialect {
        DIALECTS[usize::from(self.selector & 3)]
    }

    /// The dialect in selector bits 2-3.
    pub fn second_dialect(&self) -> Dialect {
        DIALECTS[usize::from((self.selector >> 2) & 3)]
    }

    /// Selector bit `n`.
    pub fn bit(&self, n: u32) -> bool {
        self.selector & (1 << n) != 0
    }

    /// The body cut at the split points.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        let mut out = Vec::with_capacity(self.splits.len() + 1);
        let mut from = 0;
        for &at in &self.splits {
            out.push(&self.body[from..at]);
            from = at;
        }
        out.push(&self.body[from..]);
        out
    }
}

/// What a stream decoder made of some chunks: its events, and whether `push` reported an error.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    /// Events, in order: up to the first failed `push` (included), else including `finish`'s.
    pub events: Vec<StreamEvent>,
    /// Whether a `push` returned an error.
    pub failed: bool,
}

/// Runs `dialect`'s stream decoder over `chunks`, then finishes it; stops at the first failed
/// `push`, as the gateway does (a `StreamTranslator` turns that error into the stream's terminal
/// event, after which nothing the decoder says reaches the client).
pub fn decode_stream(dialect: Dialect, chunks: &[&[u8]]) -> Decoded {
    let mut decoder: Box<dyn StreamDecoder> = stream_decoder(dialect);
    let mut events = Vec::new();
    for chunk in chunks {
        if decoder.push(chunk, &mut events).is_err() {
            return Decoded { events, failed: true };
        }
    }
    decoder.finish(&mut events);
    Decoded { events, failed: false }
}

/// A fresh stream decoder of `dialect`.
pub fn stream_decoder(dialect: Dialect) -> Box<dyn StreamDecoder> {
    match codec(dialect) {
        Some(c) => c.stream_decoder(),
        None => panic!("no codec for {dialect}"),
    }
}

/// Whether an event ends a stream.
pub fn is_terminal(event: &StreamEvent) -> bool {
    matches!(event, StreamEvent::Stop | StreamEvent::Error { .. })
}
