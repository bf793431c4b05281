//! Translation between API dialects through one canonical IR ([`ir`]).
//!
//! Each dialect implements [`Codec`]: decode and encode for requests, complete responses, stream
//! events and errors. Translating from A to B is `B.encode(A.decode(x))`, so the work is linear
//! in the number of dialects. Streams go through a [`StreamTranslator`]: the upstream dialect's
//! [`StreamDecoder`] turns bytes into canonical events, a [`normalize::StreamNormalizer`] enforces
//! the client protocol's invariants whatever the upstream did, and the client dialect's
//! [`StreamEncoder`] writes bytes.
//!
//! What a target cannot carry is recorded as a [`Notes`] entry (logged with the request), never
//! dropped silently.

pub mod anthropic;
pub mod gemini;
pub mod ir;
pub(crate) mod jsonw;
pub(crate) mod lenient;
pub mod normalize;
pub mod openai_chat;
pub mod openai_responses;
pub mod signature;

use bytes::{Bytes, BytesMut};

use crate::dialect::Dialect;

/// Things a translation could not carry over, in the words of the field names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes(pub Vec<String>);

impl Notes {
    /// Records that `what` was dropped or approximated.
    pub fn note(&mut self, what: impl Into<String>) {
        let what = what.into();
        if !self.0.contains(&what) {
            self.0.push(what);
        }
    }

    /// Whether nothing was noted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A body that could not be translated.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct TranslateError(pub String);

impl TranslateError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// An error response, vendor-neutral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// HTTP status.
    pub status: u16,
    /// Category (`invalid_request`, `authentication`, `permission`, `not_found`, `rate_limit`,
    /// `overloaded`, `api_error`, ...).
    pub kind: String,
    /// Message.
    pub message: String,
}

/// Turns a dialect's stream bytes into canonical events.
pub trait StreamDecoder: Send {
    /// Feeds bytes; appends the events they complete.
    fn push(&mut self, chunk: &[u8], out: &mut Vec<ir::StreamEvent>) -> Result<(), TranslateError>;
    /// The upstream ended; appends what the end completes.
    fn finish(&mut self, out: &mut Vec<ir::StreamEvent>);
}

/// Writes canonical events as a dialect's stream bytes.
pub trait StreamEncoder: Send {
    /// Appends the bytes of `event`.
    fn encode(&mut self, event: &ir::StreamEvent, out: &mut BytesMut);
}

/// One dialect's wire format.
pub trait Codec: Send + Sync + 'static {
    /// Which dialect.
    fn dialect(&self) -> Dialect;
    /// Parses a request body.
    fn decode_request(&self, body: &[u8], notes: &mut Notes) -> Result<ir::Request, TranslateError>;
    /// Writes a request body.
    fn encode_request(&self, req: &ir::Request, notes: &mut Notes) -> Result<Vec<u8>, TranslateError>;
    /// The upstream path (and query) for `req`, e.g. `/v1/messages` or
    /// `/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse`.
    fn request_path(&self, req: &ir::Request) -> String;
    /// Parses a complete response body.
    fn decode_response(&self, body: &[u8]) -> Result<ir::Response, TranslateError>;
    /// Writes a complete response body.
    fn encode_response(&self, resp: &ir::Response, notes: &mut Notes) -> Result<Vec<u8>, TranslateError>;
    /// A decoder for one stream.
    fn stream_decoder(&self) -> Box<dyn StreamDecoder>;
    /// An encoder for one stream.
    fn stream_encoder(&self) -> Box<dyn StreamEncoder>;
    /// Reads an error response.
    fn decode_error(&self, status: u16, body: &[u8]) -> ErrorInfo;
    /// Writes an error body.
    fn encode_error(&self, error: &ErrorInfo) -> Vec<u8>;
}

/// The codec of a dialect.
pub fn codec(dialect: Dialect) -> Option<&'static dyn Codec> {
    match dialect {
        Dialect::Anthropic => Some(&anthropic::AnthropicCodec),
        Dialect::OpenaiChat => Some(&openai_chat::OpenaiChatCodec),
        Dialect::OpenaiResponses => Some(&openai_responses::OpenaiResponsesCodec),
        Dialect::Gemini => Some(&gemini::GeminiCodec),
    }
}

/// Translates a request body from one dialect to another.
pub fn translate_request(
    body: &[u8],
    from: Dialect,
    to: Dialect,
) -> Result<(Vec<u8>, Notes), TranslateError> {
    let (src, dst) = codecs(from, to)?;
    let mut notes = Notes::default();
    let mut req = src.decode_request(body, &mut notes)?;
    signature::restore_for(to, &mut req.messages, &mut notes);
    let out = dst.encode_request(&req, &mut notes)?;
    Ok((out, notes))
}

/// Translates a complete response body from one dialect to another.
pub fn translate_response(
    body: &[u8],
    from: Dialect,
    to: Dialect,
) -> Result<(Vec<u8>, Notes), TranslateError> {
    let (src, dst) = codecs(from, to)?;
    let mut notes = Notes::default();
    let mut resp = src.decode_response(body)?;
    signature::tag_blocks(from, &mut resp.content);
    let out = dst.encode_response(&resp, &mut notes)?;
    Ok((out, notes))
}

fn codecs(from: Dialect, to: Dialect) -> Result<(&'static dyn Codec, &'static dyn Codec), TranslateError> {
    let get = |d: Dialect| codec(d).ok_or_else(|| TranslateError::new(format!("no codec for {d}")));
    Ok((get(from)?, get(to)?))
}

/// Streams bytes of one dialect out as bytes of another, keeping the client protocol intact.
pub struct StreamTranslator {
    decoder: Box<dyn StreamDecoder>,
    normalizer: normalize::StreamNormalizer,
    encoder: Box<dyn StreamEncoder>,
    events: Vec<ir::StreamEvent>,
    normalized: Vec<ir::StreamEvent>,
    signatures: signature::StreamTagger,
    /// Output buffer, reused: each call hands out what was written since the last one.
    out: BytesMut,
    /// The usage of the last start or finish event: the upstream's own counts.
    upstream_usage: Option<crate::usage::TokenUsage>,
}

impl std::fmt::Debug for StreamTranslator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTranslator").finish_non_exhaustive()
    }
}

impl StreamTranslator {
    /// From `from`'s stream format to `to`'s.
    pub fn new(from: Dialect, to: Dialect) -> Result<Self, TranslateError> {
        let (src, dst) = codecs(from, to)?;
        Ok(Self {
            decoder: src.stream_decoder(),
            normalizer: normalize::StreamNormalizer::default(),
            encoder: dst.stream_encoder(),
            events: Vec::new(),
            normalized: Vec::new(),
            signatures: signature::StreamTagger::new(from),
            out: BytesMut::new(),
            upstream_usage: None,
        })
    }

    /// Normalizes the pending decoded events (and, at the end, closes the stream) and encodes them.
    fn emit(&mut self, end: bool) -> Bytes {
        for mut ev in self.events.drain(..) {
            self.signatures.tag(&mut ev);
            self.normalizer.push(ev, &mut self.normalized);
        }
        if end {
            self.normalizer.finish(&mut self.normalized);
        }
        if self.normalized.is_empty() {
            return Bytes::new();
        }
        if self.out.capacity() == 0 {
            // Room for a few events; the buffer grows as needed and is reclaimed once the
            // previous output is dropped.
            self.out.reserve(1024);
        }
        for ev in self.normalized.drain(..) {
            if let ir::StreamEvent::Start { usage, .. } | ir::StreamEvent::Finish { usage, .. } = &ev {
                self.upstream_usage = Some(usage.tokens);
            }
            self.encoder.encode(&ev, &mut self.out);
        }
        self.out.split().freeze()
    }

    /// The usage the upstream reported so far (its start event's, then its final one), in the
    /// gateway's terms: every count, whatever the client's dialect can carry.
    pub fn upstream_usage(&self) -> Option<crate::usage::TokenUsage> {
        self.upstream_usage
    }

    /// Translates a chunk of upstream bytes; may return nothing while an event is incomplete.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        if let Err(e) = self.decoder.push(chunk, &mut self.events) {
            self.events.push(ir::StreamEvent::Error { kind: "api_error".into(), message: e.0 });
        }
        self.emit(false)
    }

    /// The upstream ended (cleanly or not: `error` says why not); returns the closing bytes.
    pub fn finish(&mut self, error: Option<&str>) -> Bytes {
        self.decoder.finish(&mut self.events);
        if let Some(message) = error {
            self.events
                .push(ir::StreamEvent::Error { kind: "api_error".into(), message: message.to_owned() });
        }
        self.emit(true)
    }
}
