//! Cost of translating one conversation turn: a ~2 KB Anthropic request rewritten for another
//! dialect, plus that dialect's 20-chunk answer stream rewritten back into Anthropic events —
//! what the gateway does per request when Claude Code runs on a non-Anthropic provider. Target:
//! under 20 µs of CPU.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use gateway_core::dialect::Dialect;
use gateway_core::translate::ir::{BlockStart, Delta, StopReason, StreamEvent, Usage};
use gateway_core::translate::{StreamTranslator, codec, translate_request};

/// A Claude Code–like request of about 2 KB: system prompt, a few turns, two tools.
fn request() -> Vec<u8> {
    let body = serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "stream": true,
        "system": [{"type": "text", "text": "You are a careful coding assistant. ".repeat(12)}],
        "messages": [
            {"role": "user", "content": "Please read src/main.rs and explain what the server does on shutdown."},
            {"role": "assistant", "content": [
                {"type": "text", "text": "I'll read the file first."},
                {"type": "tool_use", "id": "toolu_01", "name": "read_file", "input": {"path": "src/main.rs"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "fn main() { /* ... */ }\n".repeat(10)}
            ]}
        ],
        "tools": [
            {"name": "read_file", "description": "Read a file of the workspace.",
             "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
            {"name": "run", "description": "Run a shell command.",
             "input_schema": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}
        ]
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The answer as `dialect`'s stream, one upstream chunk per event: start, 20 text deltas, end.
fn upstream_stream(dialect: Dialect) -> Vec<Vec<u8>> {
    let Some(c) = codec(dialect) else { return Vec::new() };
    let mut encoder = c.stream_encoder();
    let usage = Usage {
        tokens: gateway_core::usage::TokenUsage {
            input_tokens: 812,
            output_tokens: 60,
            ..Default::default()
        },
        reasoning_tokens: 0,
    };
    let mut events = vec![
        StreamEvent::Start { id: "resp_1".into(), model: "m".into(), usage },
        StreamEvent::BlockStart { index: 0, block: BlockStart::Text },
    ];
    events.extend((0..20).map(|i| StreamEvent::Delta { index: 0, delta: Delta::Text(format!("word{i} ")) }));
    events.push(StreamEvent::BlockStop { index: 0 });
    events.push(StreamEvent::Finish { stop_reason: StopReason::EndTurn, stop_sequence: None, usage });
    events.push(StreamEvent::Stop);
    events
        .iter()
        .map(|e| {
            let mut out = BytesMut::new();
            encoder.encode(e, &mut out);
            out.to_vec()
        })
        .filter(|c| !c.is_empty())
        .collect()
}

fn bench(c: &mut Criterion) {
    let req = request();
    let mut group = c.benchmark_group("translate_turn_2kb_20_chunks");
    for target in [Dialect::OpenaiChat, Dialect::OpenaiResponses, Dialect::Gemini] {
        let chunks = upstream_stream(target);
        group.bench_function(target.as_str(), |b| {
            b.iter(|| {
                let out = translate_request(black_box(&req), Dialect::Anthropic, target);
                let Ok(mut t) = StreamTranslator::new(target, Dialect::Anthropic) else { return 0 };
                let mut n = out.map(|(body, _)| body.len()).unwrap_or(0);
                for chunk in &chunks {
                    n += t.push(black_box(chunk)).len();
                }
                n + t.finish(None).len()
            })
        });
    }
    group.finish();
    // The two halves apart, to see where the time goes.
    let mut parts = c.benchmark_group("translate_parts");
    for target in [Dialect::OpenaiChat, Dialect::OpenaiResponses, Dialect::Gemini] {
        parts.bench_function(format!("request_to_{}", target.as_str()), |b| {
            b.iter(|| translate_request(black_box(&req), Dialect::Anthropic, target).map(|(b, _)| b.len()))
        });
        let chunks = upstream_stream(target);
        parts.bench_function(format!("stream_from_{}", target.as_str()), |b| {
            b.iter(|| {
                let Ok(mut t) = StreamTranslator::new(target, Dialect::Anthropic) else { return 0 };
                let mut n = 0;
                for chunk in &chunks {
                    n += t.push(black_box(chunk)).len();
                }
                n + t.finish(None).len()
            })
        });
    }
    parts.finish();
    nonstream(c);
}

/// The load benchmark's translated request: OpenAI chat, non-streaming, 1,024 bytes.
fn chat_request_1kb() -> Vec<u8> {
    let envelope = |pad: &str| {
        format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{{"role":"user","content":"{pad}"}}]}}"#
        )
    };
    let bare = envelope("").len();
    let pad: String =
        "the quick brown fox jumps over the lazy dog ".chars().cycle().take(1024 - bare).collect();
    envelope(&pad).into_bytes()
}

/// What the mock upstream (and a real one, give or take fields) answers to it.
const ANTHROPIC_MESSAGE: &[u8] = br#"{"id":"msg_mock_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello from the mock upstream."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":15}}"#;

/// The translated non-streaming round trip of the load benchmark, as the forwarder does it: an
/// OpenAI chat request into the Anthropic provider's dialect, the Anthropic message back into a
/// chat completion, and the usage read from that completion by the meter.
fn nonstream(c: &mut Criterion) {
    use gateway_core::forward::translation;
    let req = chat_request_1kb();
    let mut group = c.benchmark_group("translate_nonstream_chat_via_anthropic");
    group.bench_function("request", |b| {
        b.iter(|| {
            translation::translate_request(
                black_box(&req),
                Dialect::OpenaiChat,
                Dialect::Anthropic,
                Some("claude-sonnet-4-5"),
                false,
            )
            .map(|t| t.body.len())
        })
    });
    group.bench_function("response", |b| {
        b.iter(|| {
            gateway_core::translate::translate_response(
                black_box(ANTHROPIC_MESSAGE),
                Dialect::Anthropic,
                Dialect::OpenaiChat,
            )
            .map(|(body, _)| body.len())
        })
    });
    let Ok((completion, _)) = gateway_core::translate::translate_response(
        ANTHROPIC_MESSAGE,
        Dialect::Anthropic,
        Dialect::OpenaiChat,
    ) else {
        return;
    };
    group.bench_function("usage_of_completion", |b| {
        b.iter(|| gateway_core::usage::extract::usage_of_body(Dialect::OpenaiChat, black_box(&completion)))
    });
    group.bench_function("round_trip", |b| {
        b.iter(|| {
            let t = translation::translate_request(
                black_box(&req),
                Dialect::OpenaiChat,
                Dialect::Anthropic,
                Some("claude-sonnet-4-5"),
                false,
            );
            let r = gateway_core::translate::translate_response(
                black_box(ANTHROPIC_MESSAGE),
                Dialect::Anthropic,
                Dialect::OpenaiChat,
            );
            let usage = r
                .as_ref()
                .ok()
                .and_then(|(body, _)| gateway_core::usage::extract::usage_of_body(Dialect::OpenaiChat, body));
            t.map(|t| t.body.len()).unwrap_or(0)
                + usage.map_or(0, |u| usize::try_from(u.output_tokens).unwrap_or(0))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
