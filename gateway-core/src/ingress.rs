//! Ingress: buffer the body once (with a size limit), undo `content-encoding`, detect the
//! dialect and parse the few fields the pipeline needs. Everything else in the body is left
//! untouched and forwarded byte for byte.

use std::io::Read;

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body::Body;
use http_body_util::BodyExt;
use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::dialect::Dialect;
use crate::error::{ErrorKind, GatewayError};
use crate::request::{GatewayBody, GatewayRequest, GatewayResponse, RequestHints};
use crate::translate::lenient::fast::{Bail, Reader};

/// Default request body limit: 32 MiB, after decompression.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

fn too_large(limit: usize) -> GatewayError {
    GatewayError::new(
        ErrorKind::RequestTooLarge,
        "request_too_large",
        format!("request body exceeds the gateway limit of {limit} bytes"),
    )
}

/// Reads the whole body, up to `limit` bytes. Hand-rolled rather than `Limited` + `collect`
/// because their generic error conversion trips rustc's `Send` inference for boxed bodies.
pub async fn read_body(mut body: GatewayBody, limit: usize) -> Result<Bytes, GatewayError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large(limit));
    }
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            GatewayError::new(
                ErrorKind::InvalidRequest,
                "body_read_failed",
                format!("could not read the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total > limit {
            return Err(too_large(limit));
        }
        // The common case is one frame: keep it without copying.
        match first.take() {
            None if rest.is_empty() => first = Some(data),
            Some(prev) => {
                rest.extend_from_slice(&prev);
                rest.extend_from_slice(&data);
            }
            None => rest.extend_from_slice(&data),
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(rest)))
}

/// Undoes `content-encoding` (gzip, x-gzip, deflate, br, zstd; several in sequence) and removes
/// the header. The decoded size is bounded by `limit` so a small bomb cannot exhaust memory.
pub fn decode_content_encoding(
    headers: &mut HeaderMap,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let Some(value) = headers.remove(header::CONTENT_ENCODING) else {
        return Ok(body);
    };
    let encodings = value.to_str().map_err(|_| {
        GatewayError::new(ErrorKind::InvalidRequest, "bad_content_encoding", "content-encoding is not ASCII")
    })?;
    let mut data = body;
    // Encodings are listed in the order they were applied; undo them in reverse.
    for enc in encodings.split(',').map(str::trim).rev().filter(|e| !e.is_empty()) {
        let decoded = match enc.to_ascii_lowercase().as_str() {
            "identity" => continue,
            "gzip" | "x-gzip" => read_limited(flate2::read::MultiGzDecoder::new(&data[..]), limit),
            "deflate" => read_limited(flate2::read::ZlibDecoder::new(&data[..]), limit),
            "br" => read_limited(brotli::Decompressor::new(&data[..], 64 * 1024), limit),
            "zstd" => match zstd::stream::read::Decoder::new(&data[..]) {
                Ok(d) => read_limited(d, limit),
                Err(e) => Err(DecodeError::Corrupt(e)),
            },
            other => {
                return Err(GatewayError::new(
                    ErrorKind::InvalidRequest,
                    "unsupported_content_encoding",
                    format!("unsupported content-encoding {other:?}"),
                ));
            }
        };
        data = match decoded {
            Ok(v) => Bytes::from(v),
            Err(DecodeError::TooLarge) => return Err(too_large(limit)),
            Err(DecodeError::Corrupt(e)) => {
                return Err(GatewayError::new(
                    ErrorKind::InvalidRequest,
                    "bad_content_encoding",
                    format!("request body is not valid {enc}: {e}"),
                ));
            }
        };
    }
    headers.remove(header::CONTENT_LENGTH);
    Ok(data)
}

enum DecodeError {
    TooLarge,
    Corrupt(std::io::Error),
}

fn read_limited(reader: impl Read, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out).map_err(DecodeError::Corrupt)?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

/// Whether requests to `path` must name a model in the body (Gemini names it in the path).
pub fn model_required(path: &str) -> bool {
    matches!(
        path,
        "/v1/messages"
            | "/v1/messages/count_tokens"
            | "/v1/chat/completions"
            | "/v1/responses"
            | "/v1/responses/compact"
    )
}

/// What a Gemini model path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeminiAction {
    /// `:generateContent`.
    Generate,
    /// `:streamGenerateContent`.
    StreamGenerate,
    /// `:countTokens`.
    CountTokens,
}

/// The model and action of `/v1beta/models/{model}:{action}` (also under `/v1/models/`, which
/// the google-genai SDK uses).
pub fn gemini_action(path: &str) -> Option<(&str, GeminiAction)> {
    let rest = path.strip_prefix("/v1beta/models/").or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, action) = rest.rsplit_once(':')?;
    if model.is_empty() || model.contains('/') {
        return None;
    }
    let action = match action {
        "generateContent" => GeminiAction::Generate,
        "streamGenerateContent" => GeminiAction::StreamGenerate,
        "countTokens" => GeminiAction::CountTokens,
        _ => return None,
    };
    Some((model, action))
}

/// Adds [`ParseService`]: runs after auth, so unauthenticated callers never make the gateway
/// parse their JSON and get a 401 before any 400.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseLayer;

impl<S> tower::Layer<S> for ParseLayer {
    type Service = ParseService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ParseService { inner }
    }
}

/// Parses the request's hints (model, stream, session hints) into the request and context.
///
/// Adds to the request: `hints`. Adds to the context: `original_model`, `stream`.
#[derive(Debug, Clone)]
pub struct ParseService<S> {
    inner: S,
}

impl<S> tower::Service<GatewayRequest> for ParseService<S>
where
    S: tower::Service<GatewayRequest, Response = GatewayResponse, Error = GatewayError>,
{
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = futures_util::future::Either<
        futures_util::future::Ready<Result<GatewayResponse, GatewayError>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: GatewayRequest) -> Self::Future {
        use futures_util::future::{Either, ready};
        let parsed = parse_hints(&req.body, req.dialect, model_required(req.uri.path())).map(|mut hints| {
            if let Some((model, action)) = gemini_action(req.uri.path()) {
                hints.model = Some(model.to_owned());
                hints.stream = action == GeminiAction::StreamGenerate;
            }
            hints
        });
        match parsed {
            Ok(hints) => {
                let hide_usage_chunk =
                    req.dialect == Dialect::OpenaiChat && hints.stream && !hints.wants_stream_usage;
                req.ctx.update(|s| {
                    s.original_model = hints.model.clone();
                    s.stream = hints.stream;
                    s.hide_usage_chunk = hide_usage_chunk;
                });
                req.hints = hints;
                Either::Right(self.inner.call(req))
            }
            Err(e) => Either::Left(ready(Err(e))),
        }
    }
}

/// What hints are made of, borrowed from the body: the same whichever reader produced it.
#[derive(Debug, Default, PartialEq)]
struct Probe<'a> {
    model: Option<Cow<'a, str>>,
    stream: bool,
    metadata_user_id: Option<Cow<'a, str>>,
    prompt_cache_key: Option<Cow<'a, str>>,
    include_usage: Option<bool>,
    /// The opening of the conversation, as raw JSON: system-like instructions and the first
    /// user turn of the dialect's fields.
    system: Option<&'a str>,
    first_user: Option<&'a str>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
}

/// The only fields ingress reads; serde skips the rest without building it.
#[derive(Deserialize)]
struct BodyProbe<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(borrow, default)]
    metadata: Option<Metadata<'a>>,
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<Vec<&'a RawValue>>,
    // OpenAI Responses.
    #[serde(borrow, default)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompt_cache_key: Option<Cow<'a, str>>,
    // Gemini (camelCase from the REST API, snake_case from the google-genai SDK).
    #[serde(borrow, default, alias = "system_instruction")]
    #[serde(rename = "systemInstruction")]
    system_instruction: Option<&'a RawValue>,
    #[serde(borrow, default)]
    contents: Option<Vec<&'a RawValue>>,
    // OpenAI chat.
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct RoleOnly<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
}

/// The reference reading of a body, with `serde_json`: it decides every body the fast reader
/// gives up on, and its errors are the ones clients see.
fn probe_with_serde(body: &[u8], dialect: Dialect) -> Result<Probe<'_>, GatewayError> {
    fn raw(value: Option<&RawValue>) -> Option<&str> {
        value.map(RawValue::get)
    }
    let probe: BodyProbe<'_> = serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_data() { "must be a JSON object" } else { "is not valid JSON" };
        GatewayError::new(ErrorKind::InvalidRequest, "invalid_json", format!("request body {what}: {e}"))
    })?;
    fn first_user<'a>(items: Option<&[&'a RawValue]>) -> Option<&'a str> {
        items.unwrap_or_default().iter().map(|m| m.get()).find(|m| {
            serde_json::from_str::<RoleOnly<'_>>(m).ok().and_then(|r| r.role).is_some_and(|r| r == "user")
        })
    }
    let (system, first_user) = match dialect {
        Dialect::Anthropic | Dialect::OpenaiChat => {
            (raw(probe.system), first_user(probe.messages.as_deref()))
        }
        Dialect::OpenaiResponses => (raw(probe.instructions), raw(probe.input)),
        Dialect::Gemini => (raw(probe.system_instruction), first_user(probe.contents.as_deref())),
    };
    Ok(Probe {
        model: probe.model,
        stream: matches!(probe.stream, Some(serde_json::Value::Bool(true))),
        metadata_user_id: probe.metadata.and_then(|m| m.user_id),
        prompt_cache_key: probe.prompt_cache_key,
        include_usage: probe.stream_options.and_then(|o| o.include_usage),
        system,
        first_user,
    })
}

/// The same reading in one pass of [`fast`]: no list of raw messages, each message read once.
/// It gives up ([`Bail`]) on anything where it could differ from [`probe_with_serde`]: a field
/// of an unexpected type, a repeated field, a body that is not an object, and whatever the
/// fast reader itself leaves to `serde_json`.
fn probe_fast(text: &str, dialect: Dialect) -> Result<Probe<'_>, Bail> {
    #[derive(Clone, Copy)]
    enum Field {
        Model,
        Stream,
        Metadata,
        System,
        Messages,
        Instructions,
        Input,
        PromptCacheKey,
        SystemInstruction,
        Contents,
        StreamOptions,
    }
    impl From<Field> for u32 {
        fn from(field: Field) -> u32 {
            field as u32
        }
    }
    let field_of = |key: &str| {
        Some(match key {
            "model" => Field::Model,
            "stream" => Field::Stream,
            "metadata" => Field::Metadata,
            "system" => Field::System,
            "messages" => Field::Messages,
            "instructions" => Field::Instructions,
            "input" => Field::Input,
            "prompt_cache_key" => Field::PromptCacheKey,
            // One field under two names: serde reports both together as a duplicate.
            "systemInstruction" | "system_instruction" => Field::SystemInstruction,
            "contents" => Field::Contents,
            "stream_options" => Field::StreamOptions,
            _ => return None,
        })
    };
    let mut probe = Probe::default();
    let (mut system, mut messages, mut instructions, mut input) = (None, None, None, None);
    let (mut system_instruction, mut contents) = (None, None);
    let mut r = Reader::new(text);
    r.fields(field_of, |r, field| {
        match field {
            Field::Model => probe.model = r.optional_str()?,
            Field::Stream => {
                probe.stream = !r.null()? && matches!(r.value()?, serde_json::Value::Bool(true));
            }
            Field::Metadata => {
                if !r.null()? {
                    r.fields(
                        |k| (k == "user_id").then_some(0u32),
                        |r, _| {
                            probe.metadata_user_id = r.optional_str()?;
                            Ok(())
                        },
                    )?;
                }
            }
            Field::System => system = r.optional_raw()?,
            Field::Messages => messages = first_user_fast(r)?,
            Field::Instructions => instructions = r.optional_raw()?,
            Field::Input => input = r.optional_raw()?,
            Field::PromptCacheKey => probe.prompt_cache_key = r.optional_str()?,
            Field::SystemInstruction => system_instruction = r.optional_raw()?,
            Field::Contents => contents = first_user_fast(r)?,
            Field::StreamOptions => {
                if !r.null()? {
                    r.fields(
                        |k| (k == "include_usage").then_some(0u32),
                        |r, _| {
                            probe.include_usage = if r.null()? { None } else { Some(r.bool()?) };
                            Ok(())
                        },
                    )?;
                }
            }
        }
        Ok(())
    })?;
    r.end()?;
    (probe.system, probe.first_user) = match dialect {
        Dialect::Anthropic | Dialect::OpenaiChat => (system, messages),
        Dialect::OpenaiResponses => (instructions, input),
        Dialect::Gemini => (system_instruction, contents),
    };
    Ok(probe)
}

/// A list of messages (`null` or an array): the first whose `role` is `"user"`, as raw JSON.
/// A message that is not an object counts as no user turn, as in [`probe_with_serde`], except
/// an array, which serde would read as a struct: that is left to serde.
fn first_user_fast<'a>(r: &mut Reader<'a>) -> Result<Option<&'a str>, Bail> {
    let mut found = None;
    if r.null()? {
        return Ok(found);
    }
    r.array(|r| {
        if found.is_some() {
            return r.ignore();
        }
        match r.peek()? {
            b'[' => Err(Bail),
            b'{' => {
                let start = r.mark();
                // A role that is not a string, or a repeated one, fails serde's reading of
                // the message; that is left to serde too.
                let mut is_user = false;
                r.fields(
                    |k| (k == "role").then_some(0u32),
                    |r, _| {
                        is_user = r.optional_str()?.is_some_and(|role| role == "user");
                        Ok(())
                    },
                )?;
                if is_user {
                    found = Some(r.since(start)?);
                }
                Ok(())
            }
            _ => r.ignore(),
        }
    })?;
    Ok(found)
}

/// The error for a body with nothing but whitespace.
fn reject_empty(body: &[u8]) -> Result<(), GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::new(
            ErrorKind::InvalidRequest,
            "empty_body",
            "request body is empty; a JSON object is required",
        ));
    }
    Ok(())
}

/// Parses the hints of a JSON body. `require_model` makes a missing `model` an error.
pub fn parse_hints(body: &[u8], dialect: Dialect, require_model: bool) -> Result<RequestHints, GatewayError> {
    reject_empty(body)?;
    let fast = std::str::from_utf8(body).ok().and_then(|text| probe_fast(text, dialect).ok());
    let probe = match fast {
        Some(probe) => probe,
        None => probe_with_serde(body, dialect)?,
    };
    hints_of(probe, require_model)
}

/// [`parse_hints`] with `serde_json` alone: the reference the fast reading must agree with (for
/// tests and fuzzing).
#[doc(hidden)]
pub fn parse_hints_with_serde(
    body: &[u8],
    dialect: Dialect,
    require_model: bool,
) -> Result<RequestHints, GatewayError> {
    reject_empty(body)?;
    hints_of(probe_with_serde(body, dialect)?, require_model)
}

fn hints_of(probe: Probe<'_>, require_model: bool) -> Result<RequestHints, GatewayError> {
    let model = probe.model.map(Cow::into_owned).filter(|m| !m.is_empty());
    if require_model && model.is_none() {
        return Err(GatewayError::new(ErrorKind::InvalidRequest, "missing_model", "model: field required"));
    }
    // The same key sending the same opening is the same session.
    let conversation_fingerprint = if probe.system.is_none() && probe.first_user.is_none() {
        None
    } else {
        // Not a cryptographic hash: the opening can be tens of kilobytes (Claude Code's system
        // prompt and tools), and a collision could only join two sessions of the same key.
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        h.update(probe.system.unwrap_or_default().as_bytes());
        h.update(&[0]);
        h.update(probe.first_user.unwrap_or_default().as_bytes());
        Some(h.digest128())
    };
    Ok(RequestHints {
        model,
        stream: probe.stream,
        metadata_user_id: probe.metadata_user_id.map(Cow::into_owned),
        prompt_cache_key: probe.prompt_cache_key.map(Cow::into_owned),
        wants_stream_usage: probe.include_usage.unwrap_or(false),
        conversation_fingerprint,
    })
}

/// Replaces the value of one top-level field of a JSON object, keeping every other byte of the
/// body as it was (key order, unknown fields, number formatting). Adds the field if absent.
pub fn set_top_level_field(
    body: &[u8],
    field: &str,
    value: &serde_json::Value,
) -> Result<Bytes, GatewayError> {
    let entries: Vec<(std::borrow::Cow<'_, str>, &RawValue)> =
        serde_json::from_slice::<OrderedObject<'_>>(body)
            .map_err(|e| {
                GatewayError::new(
                    ErrorKind::InvalidRequest,
                    "invalid_json",
                    format!("request body is not a JSON object: {e}"),
                )
            })?
            .0;
    let value_text = value.to_string();
    let mut out = Vec::with_capacity(body.len() + value_text.len());
    out.push(b'{');
    let mut replaced = false;
    for (i, (key, raw)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Keys were unescaped by parsing; re-encode them.
        out.extend_from_slice(serde_json::Value::String(key.to_string()).to_string().as_bytes());
        out.push(b':');
        if key == field {
            out.extend_from_slice(value_text.as_bytes());
            replaced = true;
        } else {
            out.extend_from_slice(raw.get().as_bytes());
        }
    }
    if !replaced {
        if !entries.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(serde_json::Value::String(field.to_owned()).to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(value_text.as_bytes());
    }
    out.push(b'}');
    Ok(Bytes::from(out))
}

/// Sets `key` inside the top-level object field `field` (creating it), keeping the field's other
/// keys and every other byte of the body.
pub fn merge_top_level_object(
    body: &[u8],
    field: &str,
    key: &str,
    value: serde_json::Value,
) -> Result<Bytes, GatewayError> {
    let entries = serde_json::from_slice::<OrderedObject<'_>>(body)
        .map_err(|e| {
            GatewayError::new(
                ErrorKind::InvalidRequest,
                "invalid_json",
                format!("request body is not a JSON object: {e}"),
            )
        })?
        .0;
    let mut object = entries
        .iter()
        .find(|(k, _)| k == field)
        .and_then(|(_, raw)| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw.get()).ok()
        })
        .unwrap_or_default();
    object.insert(key.to_owned(), value);
    set_top_level_field(body, field, &serde_json::Value::Object(object))
}

/// A JSON object as its entries in order, values left raw.
struct OrderedObject<'a>(Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for OrderedObject<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<std::borrow::Cow<'de, str>, &'de RawValue>()? {
                    entries.push((k, v));
                }
                Ok(OrderedObject(entries))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn hints_are_parsed_leniently() {
        let body = br#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":10,"metadata":{"user_id":"u"},
            "system":[{"type":"text","text":"x-anthropic-billing-header: cc"}],
            "messages":[{"role":"user","content":"hi"},{"role":"system","content":"mid"}],
            "thinking":{"type":"adaptive"},"output_config":{"effort":"high"},"future_field":[1,2]}"#;
        let h = parse_hints(body, Dialect::Anthropic, true).expect("hints");
        assert_eq!(h.model.as_deref(), Some("claude-sonnet-4-5"));
        assert!(h.stream);
        assert_eq!(h.metadata_user_id.as_deref(), Some("u"));
        assert!(h.conversation_fingerprint.is_some());
    }

    #[test]
    fn bad_bodies_are_invalid_requests() {
        for (body, code) in [
            (&b"{not json"[..], "invalid_json"),
            (b"[1,2]", "invalid_json"),
            (b"", "empty_body"),
            (br#"{"messages":[]}"#, "missing_model"),
            (br#"{"model":""}"#, "missing_model"),
        ] {
            let err = parse_hints(body, Dialect::Anthropic, true).expect_err("must fail");
            assert_eq!(err.code, code, "{}", String::from_utf8_lossy(body));
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        }
    }

    const DIALECTS: [Dialect; 4] =
        [Dialect::Anthropic, Dialect::OpenaiChat, Dialect::OpenaiResponses, Dialect::Gemini];

    /// `parse_hints` (fast reading, serde where it gives up) gives exactly what serde alone
    /// gives, errors included; returns whether the fast reading decided the body itself.
    fn same_as_serde(body: &str) -> bool {
        let mut fast_decided = false;
        for dialect in DIALECTS {
            for require_model in [false, true] {
                let both = parse_hints(body.as_bytes(), dialect, require_model);
                let serde_only = parse_hints_with_serde(body.as_bytes(), dialect, require_model);
                assert_eq!(format!("{both:?}"), format!("{serde_only:?}"), "{dialect:?}: {body}");
            }
            if let Ok(fast) = probe_fast(body, dialect) {
                let reference =
                    probe_with_serde(body.as_bytes(), dialect).expect("serde reads what fast reads");
                assert_eq!(fast, reference, "{dialect:?}: {body}");
                fast_decided = true;
            }
        }
        fast_decided
    }

    #[test]
    fn the_fast_reading_decides_ordinary_bodies_as_serde_would() {
        for body in [
            r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#,
            r#" { "model" : "m" , "stream" : true , "temperature" : 0.7, "top_p": 1e-3, "n": -0,
                "system": [ {"type":"text","text":"line\none \"quoted\" \u00e9 \ud83d\ude00"} ] ,
                "messages":[{"content":"sys","role":"system"},{"content":[{"type":"text","text":"a\\b"}],"role":"user"},{"role":"user","content":"second"}],
                "metadata":{"user_id":"user_abc_account_x_session_y","other":[1,2.5,{"k":null}]},
                "stream_options":{"include_usage":true,"x":1}} "#,
            r#"{"model":"gpt-5","instructions":"be brief","input":[{"role":"user","content":"hi"}],"prompt_cache_key":"sess-1","stream":false}"#,
            r#"{"contents":[{"role":"model","parts":[]},{"role":"user","parts":[{"text":"hi"}]}],"systemInstruction":{"parts":[{"text":"s"}]}}"#,
            r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"system_instruction":{"parts":[{"text":"s"}]}}"#,
            r#"{"model":null,"stream":null,"metadata":null,"system":null,"messages":null,"stream_options":null,"input":null}"#,
            r#"{"model":"m","messages":[{"role":"us\u0065r","content":"escaped role"}]}"#,
            r#"{"model":"m","messages":[null,"user",7,{"role":null},{"content":"no role"},{"role":"user","content":"this one"}]}"#,
            r#"{"model":"m","messages":[],"metadata":{"user_id":null},"stream_options":{"include_usage":null}}"#,
            r#"{"model":"m","stream":{"nested":[true]},"unknown":[[[]]],"big":123456789012345678901234567890,"e":1E+400}"#,
            r#"{"model":"m","ignored":"lone \udc00 surrogate"}"#,
            r#"{}"#,
        ] {
            assert!(same_as_serde(body), "the fast reading gave up on {body}");
        }
    }

    #[test]
    fn the_fast_reading_leaves_doubtful_bodies_to_serde() {
        for body in [
            // Not an object, or not one object.
            r#"["m",true]"#,
            r#"{"model":"m"} {}"#,
            r#"{"model":"m""#,
            r#"{"model":"m",}"#,
            // Fields of another type, or repeated.
            r#"{"model":5}"#,
            r#"{"model":"a","model":"b"}"#,
            r#"{"systemInstruction":{},"system_instruction":{}}"#,
            r#"{"metadata":{"user_id":1}}"#,
            r#"{"metadata":{"user_id":"a","user_id":"b"}}"#,
            r#"{"metadata":["as a sequence"]}"#,
            r#"{"stream_options":{"include_usage":"yes"}}"#,
            r#"{"stream_options":[true]}"#,
            r#"{"messages":{"role":"user"}}"#,
            r#"{"messages":[["user"]]}"#,
            r#"{"model":"m","messages":[{"role":"user","role":"user"},{"role":"user","content":"x"}]}"#,
            r#"{"model":"m","messages":[{"role":5},{"role":"user","content":"x"}]}"#,
            r#"{"stream":1.5}"#,
            // What the fast reader itself does not decide.
            r#"{"mod\u0065l":"m"}"#,
            r#"{"model":"m","x":01}"#,
            r#"{"model":"m","x":1.}"#,
            r#"{"model":"m","x":"\x"}"#,
            "{\"model\":\"m\",\"x\":\"tab\there\"}",
            r#"{"model":"m","messages":[{"role":"\ud800"}]}"#,
        ] {
            same_as_serde(body);
        }
        // Bytes that are not UTF-8 in a field nobody reads: serde accepts them.
        let body = b"{\"model\":\"m\",\"x\":\"\xff\"}";
        let hints = parse_hints(body, Dialect::Anthropic, true).expect("serde accepts it");
        assert_eq!(hints.model.as_deref(), Some("m"));
    }

    #[test]
    fn the_fingerprint_is_the_opening_as_sent() {
        let spaced = r#"{"model":"m","system": "s" ,"messages":[ {"role":"user","content":"a"} ]}"#;
        let tight = r#"{"model":"m","system":"s","messages":[{"role":"user","content":"a"}]}"#;
        let fingerprint = |body: &str| {
            parse_hints(body.as_bytes(), Dialect::Anthropic, true).expect("hints").conversation_fingerprint
        };
        assert!(same_as_serde(spaced) && same_as_serde(tight));
        // Raw values start and end at the value itself, whatever surrounds them.
        assert_eq!(fingerprint(spaced), fingerprint(tight));
        assert_ne!(fingerprint(tight), fingerprint(&tight.replace("\"a\"", "\"b\"")));
    }

    #[test]
    fn rewrites_only_the_model() {
        let body = br#"{"z":1.50,"model":"a","messages":[{"role":"user","content":"\u00e9"}],"k\"q":true}"#;
        let out = set_top_level_field(body, "model", &serde_json::json!("b")).expect("rewrite");
        assert_eq!(
            std::str::from_utf8(&out).expect("utf8"),
            r#"{"z":1.50,"model":"b","messages":[{"role":"user","content":"\u00e9"}],"k\"q":true}"#
        );
        let added = set_top_level_field(b"{}", "model", &serde_json::json!("m")).expect("add");
        assert_eq!(&added[..], br#"{"model":"m"}"#);
    }

    #[test]
    fn decodes_every_supported_encoding() {
        let plain = br#"{"model":"m"}"#.repeat(100);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&plain).expect("gz");
            e.finish().expect("gz")
        };
        let br = {
            let mut out = Vec::new();
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(&plain).expect("br");
            drop(w);
            out
        };
        let zs = zstd::encode_all(&plain[..], 3).expect("zstd");
        for (name, data) in [("gzip", gz), ("br", br), ("zstd", zs)] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_ENCODING, name.parse().expect("hv"));
            let out = decode_content_encoding(&mut headers, Bytes::from(data.clone()), 1 << 20).expect(name);
            assert_eq!(&out[..], &plain[..], "{name}");
            assert!(headers.get(header::CONTENT_ENCODING).is_none());
            // The same data over the decoded limit is a 413, not an allocation.
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_ENCODING, name.parse().expect("hv"));
            let err = decode_content_encoding(&mut headers, Bytes::from(data), 100).expect_err("limit");
            assert_eq!(err.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, "gzip".parse().expect("hv"));
        let err =
            decode_content_encoding(&mut headers, Bytes::from_static(b"nope"), 100).expect_err("corrupt");
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    }
}
