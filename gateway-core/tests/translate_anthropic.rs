//! The Anthropic Messages codec against hand-written fixtures (written from Anthropic's API
//! reference and streaming documentation): decoding into the IR (JSON snapshots), round trips,
//! stream decoding under any chunking and truncation, the stream encoder's wire format, errors,
//! and malformed input.

use std::path::PathBuf;

use bytes::BytesMut;
use gateway_core::translate::anthropic::AnthropicCodec;
use gateway_core::translate::ir::{
    Block, BlockStart, Delta, ImageSource, Message, Reasoning, Request, Response, ResponseFormat, Role,
    StopReason, StreamEvent, Tool, ToolChoice, Usage,
};
use gateway_core::translate::normalize::StreamNormalizer;
use gateway_core::translate::{Codec, ErrorInfo, Notes};
use gateway_core::usage::TokenUsage;
use serde_json::{Value, json};

const REQUESTS: [&str; 7] = [
    "request_text",
    "request_system_multiturn",
    "request_images",
    "request_tools",
    "request_parallel_tools",
    "request_thinking",
    "request_claude_code",
];
const RESPONSES: [&str; 4] =
    ["response_text", "response_tool_use", "response_thinking", "response_stop_sequence"];
const STREAMS: [&str; 5] =
    ["stream_text", "stream_tool_use", "stream_thinking", "stream_server_tool", "stream_error"];

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anthropic").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decode_request(body: &[u8]) -> (Request, Notes) {
    let mut notes = Notes::default();
    let req = AnthropicCodec.decode_request(body, &mut notes).expect("decode request");
    (req, notes)
}

fn encode_request(req: &Request) -> (Value, Notes) {
    let mut notes = Notes::default();
    let body = AnthropicCodec.encode_request(req, &mut notes).expect("encode request");
    (serde_json::from_slice(&body).expect("encoded request is JSON"), notes)
}

/// Decodes a whole stream fed in the given pieces.
fn decode_stream(pieces: &[&[u8]]) -> Vec<StreamEvent> {
    let mut decoder = AnthropicCodec.stream_decoder();
    let mut out = Vec::new();
    for piece in pieces {
        decoder.push(piece, &mut out).expect("push");
    }
    decoder.finish(&mut out);
    out
}

fn normalize(events: Vec<StreamEvent>) -> Vec<StreamEvent> {
    let mut n = StreamNormalizer::default();
    let mut out = Vec::new();
    for e in events {
        n.push(e, &mut out);
    }
    n.finish(&mut out);
    out
}

fn encode_stream(events: &[StreamEvent]) -> Vec<u8> {
    let mut encoder = AnthropicCodec.stream_encoder();
    let mut out = BytesMut::new();
    for e in events {
        encoder.encode(e, &mut out);
    }
    out.to_vec()
}

/// (event name, data JSON) of each SSE event in `bytes`, via the gateway's own SSE parser.
fn sse_events(bytes: &[u8]) -> Vec<(String, Value)> {
    let mut d = gateway_core::sse::SseDecoder::default();
    let mut out = Vec::new();
    let mut take = |e: gateway_core::sse::SseEvent<'_>| {
        let data = serde_json::from_str(&e.data).expect("data is JSON");
        out.push((e.event.expect("every event is named").to_owned(), data));
    };
    d.push(bytes, &mut take).expect("sse");
    d.finish(&mut take);
    out
}

fn usage(input: u64, output: u64, write: u64, w5m: u64, w1h: u64, read: u64, reasoning: u64) -> Usage {
    Usage {
        tokens: TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: write,
            cache_creation_5m_input_tokens: w5m,
            cache_creation_1h_input_tokens: w1h,
            cache_read_input_tokens: read,
        },
        reasoning_tokens: reasoning,
    }
}

// ---------------------------------------------------------------------------------------------
// Requests.

#[test]
fn request_fixtures_decode_into_the_ir() {
    for name in REQUESTS {
        let (req, notes) = decode_request(&fixture(&format!("{name}.json")));
        insta::assert_json_snapshot!(name, json!({ "request": req, "notes": notes.0 }));
    }
}

#[test]
fn request_fields_land_where_they_belong() {
    let (req, _) = decode_request(&fixture("request_system_multiturn.json"));
    assert_eq!(req.system.len(), 2);
    assert_eq!(req.messages.len(), 3);
    assert_eq!(req.messages[1].role, Role::Assistant);
    assert_eq!((req.temperature, req.top_p, req.top_k), (Some(0.7), Some(0.9), Some(40)));
    assert_eq!(req.stop, vec!["\n\nHuman:".to_owned(), "END".to_owned()]);
    assert_eq!(req.max_tokens, Some(2048));
    assert_eq!(req.user.as_deref(), Some("13803d75-b4b5-4c3e-b2a2-6f21399b021b"));

    let (req, _) = decode_request(&fixture("request_images.json"));
    let content = &req.messages[0].content;
    assert!(
        matches!(&content[0], Block::Image { source: ImageSource::Base64 { media_type, .. } } if media_type == "image/png")
    );
    assert!(
        matches!(&content[1], Block::Image { source: ImageSource::Url { url } } if url.ends_with(".jpg"))
    );

    let (req, notes) = decode_request(&fixture("request_tools.json"));
    assert_eq!(req.tools.len(), 1, "the server tool is not a function tool");
    assert!(notes.0.contains(&"tools[].type=web_search_20250305 (server tool)".to_owned()), "{notes:?}");
    assert_eq!(req.tool_choice, Some(ToolChoice::Tool { name: "get_weather".into() }));
    assert!(matches!(
        &req.messages[4].content[0],
        Block::ToolResult { is_error: true, content, .. } if matches!(&content[0], Block::Text { text } if text.starts_with("ConnectionError"))
    ));

    let (req, _) = decode_request(&fixture("request_parallel_tools.json"));
    assert_eq!(req.parallel_tool_calls, Some(true));
    assert_eq!(req.messages[1].content.iter().filter(|b| matches!(b, Block::ToolUse { .. })).count(), 4);

    let (req, _) = decode_request(&fixture("request_thinking.json"));
    assert_eq!(req.reasoning, Some(Reasoning { budget_tokens: Some(10000), ..Reasoning::default() }));
    assert!(
        matches!(&req.messages[1].content[0], Block::Thinking { signature: Some(s), .. } if s.starts_with("BDaL4"))
    );
    assert!(matches!(&req.messages[1].content[1], Block::RedactedThinking { .. }));
}

#[test]
fn claude_code_specifics_are_mapped_and_noted() {
    let (req, notes) = decode_request(&fixture("request_claude_code.json"));
    // The mid-conversation system message joins the system list and leaves the turns.
    assert_eq!(req.system.last().map(String::as_str), Some("The user switched to plan mode."));
    assert_eq!(req.messages.len(), 3);
    assert!(req.stream);
    assert_eq!(req.reasoning, Some(Reasoning { effort: Some("high".into()), ..Reasoning::default() }));
    assert!(matches!(req.response_format, Some(ResponseFormat::JsonSchema { .. })));
    for expected in [
        "messages[].role=system (moved into system)",
        "system[].cache_control",
        "messages[].content[].cache_control",
        "service_tier",
        "context_management",
    ] {
        assert!(notes.0.contains(&expected.to_owned()), "missing note {expected}: {notes:?}");
    }
}

#[test]
fn requests_survive_a_round_trip() {
    for name in REQUESTS {
        let (first, _) = decode_request(&fixture(&format!("{name}.json")));
        let (encoded, encode_notes) = encode_request(&first);
        assert!(encode_notes.is_empty(), "{name}: {encode_notes:?}");
        let (second, decode_notes) = decode_request(encoded.to_string().as_bytes());
        assert_eq!(first, second, "{name}: {encoded}");
        assert!(decode_notes.is_empty(), "{name}: our own output needs no notes: {decode_notes:?}");
    }
}

fn base_request() -> Request {
    Request {
        model: "claude-sonnet-4-5".into(),
        max_tokens: Some(100),
        messages: vec![Message { role: Role::User, content: vec![Block::Text { text: "hi".into() }] }],
        ..Request::default()
    }
}

#[test]
fn request_encoding_follows_the_wire_format() {
    let mut req = base_request();
    req.system = vec!["one".into()];
    req.stream = true;
    req.user = Some("u-1".into());
    req.tools = vec![Tool { name: "f".into(), description: None, parameters: Value::Null }];
    req.tool_choice = Some(ToolChoice::Required);
    req.parallel_tool_calls = Some(false);
    req.reasoning =
        Some(Reasoning { budget_tokens: Some(2048), effort: Some("medium".into()), ..Reasoning::default() });
    req.response_format =
        Some(ResponseFormat::JsonSchema { name: None, schema: json!({"type": "object"}), strict: None });
    let (body, notes) = encode_request(&req);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "system": "one",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stream": true,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "output_config": {"effort": "medium", "format": {"type": "json_schema", "schema": {"type": "object"}}},
            "metadata": {"user_id": "u-1"}
        })
    );

    req.system = vec!["one".into(), "two".into()];
    req.reasoning = Some(Reasoning { disabled: true, ..Reasoning::default() });
    let (body, _) = encode_request(&req);
    assert_eq!(body["system"], json!([{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]));
    assert_eq!(body["thinking"], json!({"type": "disabled"}));

    req.reasoning = Some(Reasoning { effort: Some("high".into()), ..Reasoning::default() });
    req.response_format = None;
    let (body, _) = encode_request(&req);
    assert_eq!(body["thinking"], json!({"type": "adaptive"}));
    assert_eq!(body["output_config"], json!({"effort": "high"}));
}

#[test]
fn request_encoding_adapts_and_notes_what_anthropic_cannot_take() {
    let mut req = base_request();
    req.max_tokens = None;
    req.temperature = Some(1.5);
    req.reasoning = Some(Reasoning {
        effort: Some("minimal".into()),
        summary: Some("auto".into()),
        ..Reasoning::default()
    });
    req.response_format = Some(ResponseFormat::JsonObject);
    req.messages = vec![
        Message {
            role: Role::Assistant,
            content: vec![
                Block::Thinking { text: "unsigned (chat reasoning_content)".into(), signature: None },
                Block::ToolUse { id: "c1".into(), name: "f".into(), input: json!("{\"a\":1}") },
            ],
        },
        Message {
            role: Role::User,
            content: vec![
                Block::Text { text: "after".into() },
                Block::ToolResult { tool_use_id: "c1".into(), content: vec![], is_error: false },
            ],
        },
    ];
    let (body, notes) = encode_request(&req);
    assert_eq!(body["max_tokens"], 8192);
    assert_eq!(body["temperature"], 1.0);
    assert_eq!(body["output_config"], json!({"effort": "low"}));
    assert_eq!(
        body["messages"][0]["content"],
        json!([{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]),
        "unsigned thinking is dropped, string input parsed"
    );
    assert_eq!(body["messages"][1]["content"][0]["type"], "tool_result", "tool results come first");
    assert_eq!(body["messages"][1]["content"][1]["type"], "text");
    for expected in [
        "max_tokens (required by Anthropic; 8192 used)",
        "temperature above 1 (clamped to Anthropic's maximum, 1)",
        "reasoning.effort=minimal (sent as low)",
        "reasoning.summary",
        "response_format.json_object (Anthropic needs a schema)",
        "thinking block without signature (not sent)",
    ] {
        assert!(notes.0.contains(&expected.to_owned()), "missing note {expected}: {notes:?}");
    }
}

#[test]
fn decoding_is_lenient_but_rejects_malformed_bodies() {
    let ok = |body: Value| {
        let mut notes = Notes::default();
        AnthropicCodec.decode_request(body.to_string().as_bytes(), &mut notes).map(|r| (r, notes))
    };
    let (req, notes) = ok(json!({
        "model": "m", "max_tokens": 5, "messages": [], "brand_new_field": {"x": 1},
        "temperature": null
    }))
    .expect("unknown fields are fine");
    assert_eq!(req.temperature, None);
    assert_eq!(notes.0, vec!["brand_new_field (unknown field)".to_owned()]);

    let (req, notes) = ok(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}},
        {"type": "text", "text": "y", "citations": []}
    ]}]}))
    .expect("unknown blocks are skipped");
    assert_eq!(req.messages[0].content, vec![Block::Text { text: "y".into() }]);
    assert!(notes.0.contains(&"messages[].content[].type=document".to_owned()), "{notes:?}");

    for bad in [
        json!([1, 2]),
        json!({"model": 3}),
        json!({"messages": "hello"}),
        json!({"max_tokens": "10"}),
        json!({"temperature": "hot"}),
        json!({"messages": [{"role": "robot", "content": "x"}]}),
        json!({"messages": [{"role": "user", "content": 5}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "tool_use", "name": "f"}]}]}),
        json!({"tools": [{"description": "no name"}]}),
        json!({"system": 5}),
    ] {
        assert!(ok(bad.clone()).is_err(), "{bad}");
    }
    let mut notes = Notes::default();
    assert!(AnthropicCodec.decode_request(b"{not json", &mut notes).is_err());
}

#[test]
fn request_path_is_messages() {
    assert_eq!(AnthropicCodec.request_path(&base_request()), "/v1/messages");
}

// ---------------------------------------------------------------------------------------------
// Responses.

#[test]
fn response_fixtures_decode_into_the_ir() {
    for name in RESPONSES {
        let resp = AnthropicCodec.decode_response(&fixture(&format!("{name}.json"))).expect("decode");
        insta::assert_json_snapshot!(name, resp);
    }
}

#[test]
fn response_usage_and_stop_reasons() {
    let resp = AnthropicCodec.decode_response(&fixture("response_thinking.json")).expect("decode");
    assert_eq!(resp.usage, usage(12, 1500, 248, 48, 200, 41203, 1320));
    assert_eq!(resp.stop_reason, StopReason::MaxTokens);
    let resp = AnthropicCodec.decode_response(&fixture("response_tool_use.json")).expect("decode");
    assert_eq!(resp.stop_reason, StopReason::ToolUse);
    assert_eq!(resp.content.iter().filter(|b| matches!(b, Block::ToolUse { .. })).count(), 2);
    let resp = AnthropicCodec.decode_response(&fixture("response_stop_sequence.json")).expect("decode");
    assert_eq!((resp.stop_reason, resp.stop_sequence.as_deref()), (StopReason::StopSequence, Some("END")));
    assert_eq!(resp.usage.tokens.cache_read_input_tokens, 0, "absent cache counts are zero");

    for (wire, ir) in [
        ("end_turn", StopReason::EndTurn),
        ("refusal", StopReason::Refusal),
        ("pause_turn", StopReason::EndTurn),
        ("model_context_window_exceeded", StopReason::MaxTokens),
    ] {
        let body = json!({"id": "m", "type": "message", "role": "assistant", "model": "x", "content": [], "stop_reason": wire});
        let resp = AnthropicCodec.decode_response(body.to_string().as_bytes()).expect("decode");
        assert_eq!(resp.stop_reason, ir, "{wire}");
    }
    assert!(AnthropicCodec.decode_response(&fixture("error_overloaded.json")).is_err());
    assert!(AnthropicCodec.decode_response(b"[]").is_err());
}

#[test]
fn responses_survive_a_round_trip() {
    for name in RESPONSES {
        let first = AnthropicCodec.decode_response(&fixture(&format!("{name}.json"))).expect("decode");
        let mut notes = Notes::default();
        let body = AnthropicCodec.encode_response(&first, &mut notes).expect("encode");
        assert!(notes.is_empty(), "{name}: {notes:?}");
        let second = AnthropicCodec.decode_response(&body).expect("decode again");
        assert_eq!(first, second, "{name}");
    }
}

#[test]
fn response_encoding_follows_the_wire_format() {
    let resp = Response {
        id: String::new(),
        model: "claude-x".into(),
        content: vec![
            Block::Thinking { text: "t".into(), signature: None },
            Block::Text { text: "hello".into() },
            Block::ToolResult { tool_use_id: "x".into(), content: vec![], is_error: false },
        ],
        stop_reason: StopReason::Refusal,
        stop_sequence: None,
        usage: usage(10, 20, 5, 5, 0, 7, 3),
    };
    let mut notes = Notes::default();
    let body: Value =
        serde_json::from_slice(&AnthropicCodec.encode_response(&resp, &mut notes).expect("encode"))
            .expect("json");
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("msg_")), "an id is always present");
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["stop_reason"], "refusal");
    assert_eq!(body["stop_sequence"], Value::Null);
    assert_eq!(
        body["content"],
        json!([{"type": "thinking", "thinking": "t", "signature": ""}, {"type": "text", "text": "hello"}])
    );
    assert_eq!(
        body["usage"],
        json!({
            "input_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 7,
            "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 20, "output_tokens_details": {"thinking_tokens": 3}
        })
    );
    assert_eq!(notes.0, vec!["tool_result in a response (not sent)".to_owned()]);
}

// ---------------------------------------------------------------------------------------------
// Stream decoding.

#[test]
fn stream_fixtures_decode_into_canonical_events() {
    for name in STREAMS {
        let events = decode_stream(&[&fixture(&format!("{name}.sse"))]);
        insta::assert_json_snapshot!(name, events);
    }
}

#[test]
fn stream_decoding_does_not_depend_on_chunking() {
    for name in STREAMS {
        let bytes = fixture(&format!("{name}.sse"));
        let whole = decode_stream(&[&bytes]);
        for split in 1..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(decode_stream(&[a, b]), whole, "{name}: split at {split}");
        }
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_stream(&single), whole, "{name}: byte by byte");
    }
}

#[test]
fn stream_decoding_keeps_indices_usage_and_arguments() {
    let events = decode_stream(&[&fixture("stream_tool_use.sse")]);
    assert_eq!(
        events[0],
        StreamEvent::Start {
            id: "msg_014p7gG3wDgGV9EUtLvnow3U".into(),
            model: "claude-opus-4-1-20250805".into(),
            usage: usage(472, 2, 0, 0, 0, 0, 0),
        }
    );
    let args: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta { index: 1, delta: Delta::Json(j) } => Some(j.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).expect("arguments are JSON"),
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    assert!(events.contains(&StreamEvent::BlockStart {
        index: 1,
        block: BlockStart::ToolUse {
            id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
            name: "get_weather".into()
        }
    }));
    assert_eq!(
        events[events.len() - 2..],
        [
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
                stop_sequence: None,
                usage: usage(472, 89, 0, 0, 0, 0, 0),
            },
            StreamEvent::Stop
        ]
    );

    let events = decode_stream(&[&fixture("stream_text.sse")]);
    assert!(
        matches!(&events[0], StreamEvent::Start { usage, .. } if *usage == usage_fn(12, 1, 2048, 2048, 0, 1024))
    );
    assert!(matches!(
        &events[events.len() - 2],
        StreamEvent::Finish { usage, stop_reason: StopReason::EndTurn, .. } if *usage == usage_fn(12, 30, 2048, 2048, 0, 1024)
    ));

    // Server tool blocks are skipped and later blocks renumbered, so IR indices stay contiguous.
    let events = decode_stream(&[&fixture("stream_server_tool.sse")]);
    let starts: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::BlockStart { index, .. } => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(starts, vec![0, 1]);
    assert!(!events.iter().any(|e| matches!(e, StreamEvent::Delta { delta: Delta::Json(_), .. })));
}

fn usage_fn(input: u64, output: u64, write: u64, w5m: u64, w1h: u64, read: u64) -> Usage {
    usage(input, output, write, w5m, w1h, read, 0)
}

#[test]
fn a_cut_stream_never_invents_its_end() {
    for name in ["stream_text", "stream_tool_use", "stream_thinking", "stream_server_tool"] {
        let bytes = fixture(&format!("{name}.sse"));
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        let delta_at = text.find("event: message_delta").expect("has message_delta");
        let delta_end = delta_at + text[delta_at..].find("}}\n").expect("delta data") + 2;
        // A final event whose data line arrived whole counts, even without its blank line.
        let stop_at = text.rfind("event: message_stop").expect("has message_stop");
        let stop_end = stop_at + text[stop_at..].find('}').expect("stop data") + 1;
        for cut in 0..bytes.len() {
            let events = decode_stream(&[&bytes[..cut]]);
            assert_eq!(events.contains(&StreamEvent::Stop), cut >= stop_end, "{name}: cut at {cut}");
            let finished = events.iter().any(|e| matches!(e, StreamEvent::Finish { .. }));
            assert_eq!(finished, cut >= delta_end, "{name}: cut at {cut}");
            let normalized = normalize(events);
            if cut < delta_end {
                assert!(
                    matches!(normalized.last(), Some(StreamEvent::Error { .. })),
                    "{name}: cut at {cut} must end in an error: {normalized:?}"
                );
            } else {
                assert_eq!(normalized.last(), Some(&StreamEvent::Stop), "{name}: cut at {cut}");
            }
        }
    }
}

#[test]
fn a_stream_error_event_ends_the_stream() {
    let events = decode_stream(&[&fixture("stream_error.sse")]);
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Error { kind: "overloaded".into(), message: "Overloaded".into() })
    );
    assert!(!events.iter().any(|e| matches!(e, StreamEvent::Finish { .. } | StreamEvent::Stop)));
}

#[test]
fn a_malformed_event_is_reported_once() {
    let mut decoder = AnthropicCodec.stream_decoder();
    let mut out = Vec::new();
    let bad = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"de\n\n";
    assert!(decoder.push(bad, &mut out).is_err());
    assert!(decoder.push(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", &mut out).is_ok());
    decoder.finish(&mut out);
    assert!(out.is_empty(), "nothing after a malformed event: {out:?}");

    // Unknown event types and non-JSON pings are ignored.
    let events =
        decode_stream(&[b"event: ping\ndata: x\n\nevent: brand_new\ndata: {\"type\":\"brand_new\"}\n\n"]);
    assert!(events.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Stream encoding.

fn canonical_events() -> Vec<StreamEvent> {
    let start_usage = usage(25, 1, 300, 100, 200, 4000, 0);
    vec![
        StreamEvent::Start {
            id: "msg_canonical".into(),
            model: "claude-sonnet-4-5".into(),
            usage: start_usage,
        },
        StreamEvent::BlockStart { index: 0, block: BlockStart::Thinking },
        StreamEvent::Delta { index: 0, delta: Delta::Thinking("Two cities, ".into()) },
        StreamEvent::Delta { index: 0, delta: Delta::Thinking("two calls.".into()) },
        StreamEvent::Delta { index: 0, delta: Delta::Signature("EqQBCgIYAhIM".into()) },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::BlockStart { index: 1, block: BlockStart::Text },
        StreamEvent::Delta { index: 1, delta: Delta::Text("Checking both \"cities\"…\n".into()) },
        StreamEvent::BlockStop { index: 1 },
        StreamEvent::BlockStart {
            index: 2,
            block: BlockStart::ToolUse { id: "toolu_a".into(), name: "get_weather".into() },
        },
        StreamEvent::Delta { index: 2, delta: Delta::Json("{\"location\":".into()) },
        StreamEvent::Delta { index: 2, delta: Delta::Json(" \"Paris\"}".into()) },
        StreamEvent::BlockStop { index: 2 },
        StreamEvent::BlockStart {
            index: 3,
            block: BlockStart::ToolUse { id: "toolu_b".into(), name: "get_weather".into() },
        },
        StreamEvent::Delta { index: 3, delta: Delta::Json("{\"location\": \"Rome\"}".into()) },
        StreamEvent::BlockStop { index: 3 },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
            usage: usage(25, 120, 300, 100, 200, 4000, 40),
        },
        StreamEvent::Stop,
    ]
}

#[test]
fn encoded_streams_decode_back_to_the_same_events() {
    let events = canonical_events();
    assert_eq!(normalize(events.clone()), events, "the canonical sequence is already normalized");
    let bytes = encode_stream(&events);
    assert_eq!(decode_stream(&[&bytes]), events, "{}", String::from_utf8_lossy(&bytes));

    let error_events = vec![
        StreamEvent::Start { id: "msg_e".into(), model: "m".into(), usage: usage(3, 1, 0, 0, 0, 0, 0) },
        StreamEvent::BlockStart { index: 0, block: BlockStart::Text },
        StreamEvent::Delta { index: 0, delta: Delta::Text("partial".into()) },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::Error { kind: "overloaded".into(), message: "Overloaded".into() },
    ];
    let bytes = encode_stream(&error_events);
    assert_eq!(decode_stream(&[&bytes]), error_events);
}

#[test]
fn encoded_stream_follows_the_wire_format() {
    let bytes = encode_stream(&canonical_events());
    let events = sse_events(&bytes);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "data type matches the event name");
    }
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert_eq!(names.iter().filter(|n| **n == "message_stop").count(), 1);
    assert_eq!(names[names.len() - 2], "message_delta");
    let starts: Vec<u64> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| d["index"].as_u64().expect("index"))
        .collect();
    let stops: Vec<u64> = events
        .iter()
        .filter(|(n, _)| n == "content_block_stop")
        .map(|(_, d)| d["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(starts, vec![0, 1, 2, 3]);
    assert_eq!(stops, starts, "every block is closed, in order");

    let start = &events[0].1["message"];
    assert_eq!(start["id"], "msg_canonical");
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["input_tokens"], 25);
    assert_eq!(start["usage"]["cache_creation"]["ephemeral_1h_input_tokens"], 200);
    assert_eq!(events[1].1["content_block"], json!({"type": "thinking", "thinking": "", "signature": ""}));
    assert_eq!(
        events
            .iter()
            .find(|(_, d)| d["content_block"]["type"] == "tool_use")
            .map(|(_, d)| &d["content_block"]),
        Some(&json!({"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}))
    );
    // The signature comes right before the thinking block's stop.
    let sig = events.iter().position(|(_, d)| d["delta"]["type"] == "signature_delta").expect("signature");
    assert_eq!(events[sig + 1].0, "content_block_stop");
    let delta = &events[names.len() - 2].1;
    assert_eq!(delta["delta"], json!({"stop_reason": "tool_use", "stop_sequence": null}));
    assert_eq!(delta["usage"]["output_tokens"], 120);
    assert_eq!(delta["usage"]["input_tokens"], 25);
    assert_eq!(delta["usage"]["output_tokens_details"]["thinking_tokens"], 40);
    assert!(bytes.ends_with(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));

    // The gateway's own usage tap reads the encoded stream correctly.
    let mut tap = gateway_core::usage::SseUsageTap::default();
    tap.push(&bytes);
    tap.finish();
    assert!(tap.saw_stop);
    assert_eq!(tap.usage, usage(25, 120, 300, 100, 200, 4000, 0).tokens);
}

#[test]
fn encoded_error_stream_ends_with_an_error_event() {
    let events = normalize(vec![
        StreamEvent::Start { id: "msg_e".into(), model: "m".into(), usage: Usage::default() },
        StreamEvent::BlockStart { index: 0, block: BlockStart::Text },
        StreamEvent::Delta { index: 0, delta: Delta::Text("partial".into()) },
        StreamEvent::Error { kind: "rate_limit".into(), message: "slow down".into() },
    ]);
    let bytes = encode_stream(&events);
    let sse = sse_events(&bytes);
    let names: Vec<&str> = sse.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["message_start", "content_block_start", "content_block_delta", "content_block_stop", "error"]
    );
    assert_eq!(
        sse[4].1,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    );
}

#[test]
fn encoder_renumbers_blocks_and_joins_signature_pieces() {
    let events = normalize(vec![
        StreamEvent::Start { id: String::new(), model: "m".into(), usage: Usage::default() },
        StreamEvent::BlockStart { index: 5, block: BlockStart::Thinking },
        StreamEvent::Delta { index: 5, delta: Delta::Signature("abc".into()) },
        StreamEvent::Delta { index: 5, delta: Delta::Signature("def".into()) },
        StreamEvent::BlockStop { index: 5 },
        StreamEvent::BlockStart { index: 9, block: BlockStart::Text },
        StreamEvent::Delta { index: 9, delta: Delta::Text("x".into()) },
        StreamEvent::Stop,
    ]);
    let sse = sse_events(&encode_stream(&events));
    assert!(sse[0].1["message"]["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
    let indices: Vec<u64> = sse.iter().filter_map(|(_, d)| d["index"].as_u64()).collect();
    assert_eq!(indices, vec![0, 0, 0, 1, 1, 1]);
    let signatures: Vec<&Value> = sse
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "signature_delta")
        .map(|(_, d)| &d["delta"]["signature"])
        .collect();
    assert_eq!(signatures, vec![&json!("abcdef")]);
    let names: Vec<&str> = sse.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
}

#[test]
fn message_delta_keeps_input_counts_the_final_usage_lacks() {
    // A source dialect that reports input at the start only: clients would otherwise overwrite
    // the input count with 0.
    let events = [
        StreamEvent::Start { id: "msg_u".into(), model: "m".into(), usage: usage(40, 0, 0, 0, 0, 900, 0) },
        StreamEvent::Finish {
            stop_reason: StopReason::EndTurn,
            stop_sequence: None,
            usage: usage(0, 7, 0, 0, 0, 0, 0),
        },
        StreamEvent::Stop,
    ];
    let sse = sse_events(&encode_stream(&events));
    assert_eq!(
        sse[1].1["usage"],
        json!({"input_tokens": 40, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 900, "output_tokens": 7})
    );
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn error_bodies_decode() {
    let e = AnthropicCodec.decode_error(529, &fixture("error_overloaded.json"));
    assert_eq!(e, ErrorInfo { status: 529, kind: "overloaded".into(), message: "Overloaded".into() });
    let e = AnthropicCodec.decode_error(400, &fixture("error_invalid_request.json"));
    assert_eq!(e.kind, "invalid_request");
    assert!(e.message.starts_with("messages.1.content.0.tool_use.input"));

    let e = AnthropicCodec.decode_error(502, b"<html>Bad Gateway</html>");
    assert_eq!((e.kind.as_str(), e.message.as_str()), ("api_error", "<html>Bad Gateway</html>"));
    let e = AnthropicCodec.decode_error(429, b"");
    assert_eq!((e.kind.as_str(), e.message.as_str()), ("rate_limit", "upstream returned HTTP 429"));
}

#[test]
fn error_bodies_encode() {
    let body = |kind: &str, status: u16| -> Value {
        let e = ErrorInfo { status, kind: kind.into(), message: "m".into() };
        serde_json::from_slice(&AnthropicCodec.encode_error(&e)).expect("json")
    };
    assert_eq!(
        body("rate_limit", 429),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "m"}})
    );
    for (kind, status, wire) in [
        ("invalid_request", 400, "invalid_request_error"),
        ("authentication", 401, "authentication_error"),
        ("permission", 403, "permission_error"),
        ("not_found", 404, "not_found_error"),
        ("request_too_large", 413, "request_too_large"),
        ("api_error", 500, "api_error"),
        ("overloaded", 529, "overloaded_error"),
        ("something_else", 529, "overloaded_error"),
        ("something_else", 404, "not_found_error"),
        ("something_else", 500, "api_error"),
    ] {
        assert_eq!(body(kind, status)["error"]["type"], wire, "{kind} {status}");
    }
    let original =
        ErrorInfo { status: 401, kind: "authentication".into(), message: "invalid x-api-key".into() };
    assert_eq!(AnthropicCodec.decode_error(401, &AnthropicCodec.encode_error(&original)), original);
}

// ---------------------------------------------------------------------------------------------
// Robustness: decoders get arbitrary upstream and client bytes.

#[test]
fn decoders_never_panic_on_garbage() {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for name in REQUESTS
        .iter()
        .chain(&RESPONSES)
        .map(|n| format!("{n}.json"))
        .chain(STREAMS.iter().map(|n| format!("{n}.sse")))
    {
        let original = fixture(&name);
        for _ in 0..40 {
            let mut mutated = original.clone();
            for _ in 0..1 + next() % 8 {
                let at = (next() as usize) % mutated.len();
                match next() % 3 {
                    0 => mutated[at] = next() as u8,
                    1 => {
                        mutated.remove(at);
                    }
                    _ => mutated.insert(at, b"{}[]\":,0-e\n"[(next() % 11) as usize]),
                }
            }
            inputs.push(mutated);
        }
    }
    for _ in 0..200 {
        let len = (next() % 300) as usize;
        inputs.push((0..len).map(|_| next() as u8).collect());
    }
    inputs.push(
        br#"{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64"}}]}]}"#.to_vec(),
    );
    inputs.push(b"event: content_block_start\ndata: {\"index\":18446744073709551615,\"content_block\":{\"type\":\"text\"}}\n\n".to_vec());
    for input in &inputs {
        let mut notes = Notes::default();
        let _ = AnthropicCodec.decode_request(input, &mut notes);
        let _ = AnthropicCodec.decode_response(input);
        let _ = AnthropicCodec.decode_error(500, input);
        let mut decoder = AnthropicCodec.stream_decoder();
        let mut out = Vec::new();
        for piece in input.chunks(7) {
            let _ = decoder.push(piece, &mut out);
        }
        decoder.finish(&mut out);
        let mut encoder = AnthropicCodec.stream_encoder();
        let mut bytes = BytesMut::new();
        for e in normalize(out) {
            encoder.encode(&e, &mut bytes);
        }
    }
}
