//! Reading token usage from upstream responses: whole JSON bodies and SSE streams as they pass.

use serde::Deserialize;

use super::TokenUsage;
use crate::sse::SseDecoder;
use crate::translate::lenient::fast::{Bail, Reader};

#[derive(Debug, Default, Deserialize)]
struct CacheCreationSplit {
    #[serde(default)]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

/// Anthropic's `usage` object; every field optional because deltas carry only some.
#[derive(Debug, Default, Deserialize)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation: Option<CacheCreationSplit>,
}

impl AnthropicUsage {
    /// Overlays the fields present in `self` onto `into` (later events win).
    fn merge_into(self, into: &mut TokenUsage) {
        if let Some(v) = self.input_tokens {
            into.input_tokens = v;
        }
        if let Some(v) = self.output_tokens {
            into.output_tokens = v;
        }
        if let Some(v) = self.cache_read_input_tokens {
            into.cache_read_input_tokens = v;
        }
        if let Some(split) = self.cache_creation {
            if let Some(v) = split.ephemeral_5m_input_tokens {
                into.cache_creation_5m_input_tokens = v;
            }
            if let Some(v) = split.ephemeral_1h_input_tokens {
                into.cache_creation_1h_input_tokens = v;
            }
        }
        match self.cache_creation_input_tokens {
            Some(v) => into.cache_creation_input_tokens = v,
            None => {
                // Upstream numbers are untrusted: saturate instead of overflowing.
                let split =
                    into.cache_creation_5m_input_tokens.saturating_add(into.cache_creation_1h_input_tokens);
                into.cache_creation_input_tokens = into.cache_creation_input_tokens.max(split);
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct MessageBody {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

/// Usage of a complete (non-streaming) Anthropic Messages response; `None` when the body has
/// no `usage` object or is not JSON.
pub fn usage_from_json(body: &[u8]) -> Option<TokenUsage> {
    // The fast reader answers for nearly every body; serde_json for the rest.
    let fast = std::str::from_utf8(body).ok().and_then(|text| message_usage_fast(text).ok());
    let parsed = match fast {
        Some(usage) => usage,
        None => serde_json::from_slice::<MessageBody>(body).ok()?.usage,
    };
    let mut usage = TokenUsage::default();
    parsed?.merge_into(&mut usage);
    Some(usage)
}

/// [`usage_from_json`] with `serde_json` alone: the reference the fast reading must agree with
/// (for tests and fuzzing).
#[doc(hidden)]
pub fn usage_from_json_with_serde(body: &[u8]) -> Option<TokenUsage> {
    let mut usage = TokenUsage::default();
    serde_json::from_slice::<MessageBody>(body).ok()?.usage?.merge_into(&mut usage);
    Some(usage)
}

/// [`MessageBody`]'s `usage` read in one pass of the fast reader, giving up where serde's
/// reading could differ.
fn message_usage_fast(text: &str) -> Result<Option<AnthropicUsage>, Bail> {
    let mut r = Reader::new(text);
    let mut usage = None;
    r.fields(
        |k| (k == "usage").then_some(0u32),
        |r, _| {
            usage = if r.null()? { None } else { Some(anthropic_usage_fast(r)?) };
            Ok(())
        },
    )?;
    r.end()?;
    Ok(usage)
}

fn anthropic_usage_fast(r: &mut Reader<'_>) -> Result<AnthropicUsage, Bail> {
    let mut u = AnthropicUsage::default();
    let slot_of = |key: &str| match key {
        "input_tokens" => Some(0u32),
        "output_tokens" => Some(1),
        "cache_creation_input_tokens" => Some(2),
        "cache_read_input_tokens" => Some(3),
        "cache_creation" => Some(4),
        _ => None,
    };
    r.fields(slot_of, |r, slot| {
        match slot {
            0 => u.input_tokens = r.optional_u64()?,
            1 => u.output_tokens = r.optional_u64()?,
            2 => u.cache_creation_input_tokens = r.optional_u64()?,
            3 => u.cache_read_input_tokens = r.optional_u64()?,
            _ if r.null()? => u.cache_creation = None,
            _ => {
                let mut split = CacheCreationSplit::default();
                let slot_of = |key: &str| match key {
                    "ephemeral_5m_input_tokens" => Some(0u32),
                    "ephemeral_1h_input_tokens" => Some(1),
                    _ => None,
                };
                r.fields(slot_of, |r, slot| {
                    let value = r.optional_u64()?;
                    if slot == 0 {
                        split.ephemeral_5m_input_tokens = value;
                    } else {
                        split.ephemeral_1h_input_tokens = value;
                    }
                    Ok(())
                })?;
                u.cache_creation = Some(split);
            }
        }
        Ok(())
    })?;
    Ok(u)
}

#[derive(Debug, Deserialize)]
struct MessageStart {
    message: MessageBody,
}

#[derive(Debug, Deserialize)]
struct StreamError {
    error: StreamErrorDetail,
}

#[derive(Debug, Deserialize)]
struct StreamErrorDetail {
    #[serde(default)]
    r#type: String,
    #[serde(default)]
    message: String,
}

/// Watches an SSE stream as it is relayed and keeps what the log needs: usage (later values
/// winning), whether generation began (first content delta), whether the stream ended properly
/// and any error event. The relayed bytes themselves are never modified.
///
/// Anthropic streams (the common case) are read by event name, parsing only the few events that
/// carry usage; other dialects go through their codec's stream decoder.
#[derive(Default)]
pub struct SseUsageTap {
    decoder: SseDecoder,
    codec: Option<CodecTap>,
    /// A dialect the tap cannot read: it must not judge the stream's ending.
    blind: bool,
    /// Usage so far.
    pub usage: TokenUsage,
    /// Set once a usage-bearing event was seen.
    pub saw_usage: bool,
    /// Set at the first content delta.
    pub saw_first_token: bool,
    /// Set at the stream's terminal event.
    pub saw_stop: bool,
    /// Message of an error event, if one came.
    pub error: Option<String>,
}

struct CodecTap {
    decoder: Box<dyn crate::translate::StreamDecoder>,
    events: Vec<crate::translate::ir::StreamEvent>,
}

impl std::fmt::Debug for SseUsageTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseUsageTap").field("usage", &self.usage).field("saw_stop", &self.saw_stop).finish()
    }
}

/// What one chunk changed, for timing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TapProgress {
    /// The chunk held the first generated token.
    pub first_token: bool,
}

impl SseUsageTap {
    /// A tap for streams of `dialect`.
    pub fn for_dialect(dialect: crate::dialect::Dialect) -> Self {
        let codec = match dialect {
            crate::dialect::Dialect::Anthropic => None,
            other => crate::translate::codec(other)
                .map(|c| CodecTap { decoder: c.stream_decoder(), events: Vec::new() }),
        };
        let blind = dialect != crate::dialect::Dialect::Anthropic && codec.is_none();
        Self { codec, blind, ..Self::default() }
    }

    /// Feeds relayed bytes.
    pub fn push(&mut self, chunk: &[u8]) -> TapProgress {
        let mut progress = TapProgress::default();
        if self.blind {
            return progress;
        }
        if let Some(mut codec) = self.codec.take() {
            if let Err(e) = codec.decoder.push(chunk, &mut codec.events) {
                self.error.get_or_insert(e.0);
            }
            self.observe_events(&mut codec.events, &mut progress);
            self.codec = Some(codec);
            return progress;
        }
        let Self { decoder, usage, saw_usage, saw_first_token, saw_stop, error, .. } = self;
        let result = decoder.push(chunk, |ev| {
            observe(ev.event, &ev.data, usage, saw_usage, saw_first_token, saw_stop, error, &mut progress)
        });
        if let Err(e) = result {
            self.error.get_or_insert_with(|| e.to_string());
        }
        progress
    }

    /// Feeds the end of the stream.
    pub fn finish(&mut self) {
        if self.blind {
            self.saw_stop = true;
            return;
        }
        if let Some(mut codec) = self.codec.take() {
            codec.decoder.finish(&mut codec.events);
            self.observe_events(&mut codec.events, &mut TapProgress::default());
            self.codec = Some(codec);
            return;
        }
        let Self { decoder, usage, saw_usage, saw_first_token, saw_stop, error, .. } = self;
        let mut progress = TapProgress::default();
        decoder.finish(|ev| {
            observe(ev.event, &ev.data, usage, saw_usage, saw_first_token, saw_stop, error, &mut progress)
        });
    }

    fn observe_events(
        &mut self,
        events: &mut Vec<crate::translate::ir::StreamEvent>,
        progress: &mut TapProgress,
    ) {
        use crate::translate::ir::StreamEvent as E;
        for ev in events.drain(..) {
            match ev {
                E::Start { usage, .. } | E::Finish { usage, .. } => {
                    overlay(&mut self.usage, &usage.tokens);
                    self.saw_usage = true;
                }
                E::Delta { .. } if !self.saw_first_token => {
                    self.saw_first_token = true;
                    progress.first_token = true;
                }
                E::Stop => self.saw_stop = true,
                E::Error { kind, message } => {
                    self.error.get_or_insert(format!("{kind}: {message}"));
                }
                _ => {}
            }
        }
    }
}

/// Later usage wins field by field where it says something.
fn overlay(into: &mut TokenUsage, from: &TokenUsage) {
    let pairs = [
        (&mut into.input_tokens, from.input_tokens),
        (&mut into.output_tokens, from.output_tokens),
        (&mut into.cache_creation_input_tokens, from.cache_creation_input_tokens),
        (&mut into.cache_creation_5m_input_tokens, from.cache_creation_5m_input_tokens),
        (&mut into.cache_creation_1h_input_tokens, from.cache_creation_1h_input_tokens),
        (&mut into.cache_read_input_tokens, from.cache_read_input_tokens),
    ];
    for (slot, value) in pairs {
        if value != 0 {
            *slot = value;
        }
    }
}

/// Usage of a complete response body of `dialect`.
pub fn usage_of_body(dialect: crate::dialect::Dialect, body: &[u8]) -> Option<TokenUsage> {
    match dialect {
        crate::dialect::Dialect::Anthropic => usage_from_json(body),
        other => crate::translate::codec(other)?.decode_response(body).ok().map(|r| r.usage.tokens),
    }
}

#[allow(clippy::too_many_arguments)]
fn observe(
    event: Option<&str>,
    data: &str,
    usage: &mut TokenUsage,
    saw_usage: &mut bool,
    saw_first_token: &mut bool,
    saw_stop: &mut bool,
    error: &mut Option<String>,
    progress: &mut TapProgress,
) {
    // Anthropic names every event; fall back to the JSON `type` only when a relay dropped it.
    let kind = match event {
        Some(k) => k,
        None => json_type(data).unwrap_or(""),
    };
    match kind {
        "content_block_delta" if !*saw_first_token => {
            *saw_first_token = true;
            progress.first_token = true;
        }
        "message_start" => {
            if let Ok(start) = serde_json::from_str::<MessageStart>(data)
                && let Some(u) = start.message.usage
            {
                u.merge_into(usage);
                *saw_usage = true;
            }
        }
        "message_delta" => {
            if let Ok(delta) = serde_json::from_str::<MessageBody>(data)
                && let Some(u) = delta.usage
            {
                u.merge_into(usage);
                *saw_usage = true;
            }
        }
        "message_stop" => *saw_stop = true,
        "error" => {
            let message = serde_json::from_str::<StreamError>(data)
                .map(|e| format!("{}: {}", e.error.r#type, e.error.message))
                .unwrap_or_else(|_| data.to_owned());
            error.get_or_insert(message);
        }
        _ => {}
    }
}

/// Cheap read of a top-level `"type"` without parsing the whole event.
fn json_type(data: &str) -> Option<&str> {
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(borrow)]
        r#type: &'a str,
    }
    serde_json::from_str::<Typed<'_>>(data).ok().map(|t| t.r#type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_from_a_whole_message() {
        let body = br#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],
            "usage":{"input_tokens":12,"output_tokens":7,"cache_creation_input_tokens":30,
            "cache_read_input_tokens":100,"cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":20}}}"#;
        let usage = usage_from_json(body).expect("usage");
        assert_eq!(
            usage,
            TokenUsage {
                input_tokens: 12,
                output_tokens: 7,
                cache_creation_input_tokens: 30,
                cache_creation_5m_input_tokens: 10,
                cache_creation_1h_input_tokens: 20,
                cache_read_input_tokens: 100,
            }
        );
        assert!(usage_from_json(b"not json").is_none());
        assert!(usage_from_json(b"{\"id\":1}").is_none());
    }

    #[test]
    fn the_fast_usage_reading_agrees_with_serde() {
        let decided = [
            r#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"a \"quoted\"\n\u00e9 text"}],"stop_reason":"end_turn","usage":{"input_tokens":25,"output_tokens":15,"service_tier":"standard","server_tool_use":{"web_search_requests":0}}}"#,
            r#" { "usage" : { "input_tokens" : 1 , "cache_creation" : { "ephemeral_5m_input_tokens" : 4 , "x" : 1.5 } , "cache_read_input_tokens" : null } } "#,
            r#"{"usage":{"cache_creation":null,"input_tokens":3}}"#,
            r#"{"usage":null}"#,
            r#"{"content":[{"type":"tool_use","input":{"usage":{"input_tokens":999}}}],"usage":{"output_tokens":2}}"#,
            r#"{"usage":{}}"#,
            r#"{}"#,
        ];
        for body in decided {
            assert!(message_usage_fast(body).is_ok(), "the fast reading gave up on {body}");
            assert_eq!(
                usage_from_json(body.as_bytes()),
                usage_from_json_with_serde(body.as_bytes()),
                "{body}"
            );
        }
        let left_to_serde = [
            r#"{"usage":{"input_tokens":1},"usage":{"input_tokens":2}}"#,
            r#"{"usage":{"input_tokens":1,"input_tokens":2}}"#,
            r#"{"usage":{"input_tokens":-1}}"#,
            r#"{"usage":{"input_tokens":1.0}}"#,
            r#"{"usage":{"input_tokens":"1"}}"#,
            r#"{"usage":{"cache_creation":{"ephemeral_1h_input_tokens":1,"ephemeral_1h_input_tokens":2}}}"#,
            r#"{"usage":[1,2]}"#,
            r#"[{"input_tokens":1}]"#,
            r#"{"usage":{"input_tokens":1}} trailing"#,
            r#"{"us\u0061ge":{"input_tokens":1}}"#,
            r#"{"usage":{"input_tokens":123456789012345678901}}"#,
        ];
        for body in left_to_serde {
            assert!(message_usage_fast(body).is_err(), "the fast reading decided {body}");
            assert_eq!(
                usage_from_json(body.as_bytes()),
                usage_from_json_with_serde(body.as_bytes()),
                "{body}"
            );
        }
    }

    #[test]
    fn huge_cache_splits_saturate_instead_of_overflowing() {
        let body = format!(
            r#"{{"usage":{{"cache_creation":{{"ephemeral_5m_input_tokens":{m},"ephemeral_1h_input_tokens":{m}}}}}}}"#,
            m = u64::MAX
        );
        let usage = usage_from_json(body.as_bytes()).expect("usage");
        assert_eq!(usage.cache_creation_input_tokens, u64::MAX);
    }

    #[test]
    fn cache_total_derived_from_split_when_absent() {
        let usage = usage_from_json(
            br#"{"usage":{"input_tokens":1,"output_tokens":1,"cache_creation":{"ephemeral_5m_input_tokens":4,"ephemeral_1h_input_tokens":6}}}"#,
        )
        .expect("usage");
        assert_eq!(usage.cache_creation_input_tokens, 10);
    }

    #[test]
    fn stream_usage_merges_start_and_delta() {
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":50,\"cache_creation_input_tokens\":5}}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let mut tap = SseUsageTap::default();
        let mut first_token_chunks = 0;
        for chunk in stream.as_bytes().chunks(7) {
            if tap.push(chunk).first_token {
                first_token_chunks += 1;
            }
        }
        tap.finish();
        assert_eq!(first_token_chunks, 1);
        assert!(tap.saw_stop && tap.saw_usage && tap.error.is_none());
        assert_eq!(tap.usage.input_tokens, 25);
        assert_eq!(tap.usage.output_tokens, 15);
        assert_eq!(tap.usage.cache_read_input_tokens, 50);
        assert_eq!(tap.usage.cache_creation_input_tokens, 5);
    }

    #[test]
    fn error_event_is_kept() {
        let mut tap = SseUsageTap::default();
        tap.push(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
        assert_eq!(tap.error.as_deref(), Some("overloaded_error: Overloaded"));
    }
}
