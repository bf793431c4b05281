//! The OpenAI Chat Completions codec against hand-written fixtures that follow the vendor's
//! documented wire format: requests, responses, SSE streams and errors.

use bytes::BytesMut;
use gateway_core::translate::ir::{
    Block, BlockStart, Delta, ImageSource, Message, Reasoning, Request, Response, ResponseFormat, Role,
    StopReason, StreamEvent, Tool, ToolChoice, Usage,
};
use gateway_core::translate::normalize::StreamNormalizer;
use gateway_core::translate::openai_chat::OpenaiChatCodec;
use gateway_core::translate::{Codec, ErrorInfo, Notes};
use gateway_core::usage::TokenUsage;
use serde_json::{Value, json};

const REQUESTS: &[&str] = &[
    "request_simple_text",
    "request_system_multi_turn",
    "request_images",
    "request_tools_round",
    "request_parallel_tools",
    "request_reasoning",
    "request_uncarried",
];

const RESPONSES: &[&str] = &[
    "response_text",
    "response_tool_calls",
    "response_reasoning",
    "response_cache_write",
    "response_refusal",
];

const STREAMS: &[&str] = &["stream_text", "stream_tool_call", "stream_reasoning", "stream_error"];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/openai_chat/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn decode_request(name: &str) -> (Request, Notes) {
    let mut notes = Notes::default();
    let req = OpenaiChatCodec.decode_request(&fixture(&format!("{name}.json")), &mut notes).expect(name);
    (req, notes)
}

fn decode_stream(chunks: &[&[u8]]) -> Vec<StreamEvent> {
    let mut decoder = OpenaiChatCodec.stream_decoder();
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk, &mut out).expect("push");
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
    let mut encoder = OpenaiChatCodec.stream_encoder();
    let mut out = BytesMut::new();
    for e in events {
        encoder.encode(e, &mut out);
    }
    out.to_vec()
}

/// The `data:` payloads of a stream, checking every event is one `data:` line plus a blank line.
fn data_lines(bytes: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(bytes).expect("utf-8");
    assert!(text.ends_with("\n\n"), "stream must end with a blank line: {text:?}");
    text.trim_end_matches('\n')
        .split("\n\n")
        .map(|event| {
            assert!(!event.contains('\n'), "one line per event: {event:?}");
            event.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data line: {event:?}")).to_owned()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Requests.
// ---------------------------------------------------------------------------------------------

#[test]
fn requests_decode_into_the_ir() {
    for name in REQUESTS {
        let (req, notes) = decode_request(name);
        insta::assert_json_snapshot!(*name, json!({"request": req, "notes": notes.0}));
    }
}

#[test]
fn simple_text_request_fields() {
    let (req, notes) = decode_request("request_simple_text");
    assert_eq!(req.model, "gpt-4o-mini");
    assert_eq!(req.max_tokens, Some(64));
    assert_eq!(req.temperature, Some(0.7));
    assert!(!req.stream);
    assert_eq!(
        req.messages,
        vec![Message {
            role: Role::User,
            content: vec![Block::Text { text: "Say hello in French.".into() }]
        }]
    );
    assert!(notes.is_empty(), "{notes:?}");
}

#[test]
fn system_and_developer_messages_become_system_prompts() {
    let (req, notes) = decode_request("request_system_multi_turn");
    assert_eq!(req.system, vec!["You are a terse assistant.".to_owned(), "Answer in English.".to_owned()]);
    let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, vec![Role::User, Role::Assistant, Role::User]);
    assert_eq!(req.messages[2].content.len(), 2);
    // max_completion_tokens is the current name of the limit.
    assert_eq!(req.max_tokens, Some(256));
    assert_eq!(req.top_p, Some(0.9));
    assert_eq!(req.stop, vec!["\n\n".to_owned(), "END".to_owned()]);
    assert_eq!(req.user.as_deref(), Some("user-1234"));
    assert!(notes.is_empty(), "{notes:?}");
}

#[test]
fn images_decode_as_base64_and_url() {
    let (req, _) = decode_request("request_images");
    let content = &req.messages[0].content;
    match &content[1] {
        Block::Image { source: ImageSource::Base64 { media_type, data } } => {
            assert_eq!(media_type, "image/png");
            assert!(data.starts_with("iVBORw0KGgo"), "{data}");
        }
        other => panic!("expected a base64 image, got {other:?}"),
    }
    assert!(
        matches!(&content[2], Block::Image { source: ImageSource::Url { url } } if url.starts_with("https://upload")),
        "{:?}",
        content[2]
    );
}

#[test]
fn tool_round_decodes_calls_results_and_choice() {
    let (req, notes) = decode_request("request_tools_round");
    assert_eq!(req.tools.len(), 2);
    assert_eq!(req.tools[0].name, "get_current_weather");
    assert_eq!(req.tools[0].parameters["required"], json!(["location"]));
    // A function without parameters gets an empty object schema.
    assert_eq!(req.tools[1].parameters, json!({"type": "object", "properties": {}}));
    assert_eq!(req.tool_choice, Some(ToolChoice::Tool { name: "get_current_weather".into() }));
    assert_eq!(req.parallel_tool_calls, Some(false));
    assert_eq!(
        req.messages[1].content,
        vec![Block::ToolUse {
            id: "call_abc123".into(),
            name: "get_current_weather".into(),
            input: json!({"location": "Boston, MA", "unit": "celsius"}),
        }]
    );
    assert_eq!(
        req.messages[2],
        Message {
            role: Role::User,
            content: vec![Block::ToolResult {
                tool_use_id: "call_abc123".into(),
                content: vec![Block::Text {
                    text: "{\"temperature\": 22, \"conditions\": \"sunny\"}".into()
                }],
                is_error: false,
            }],
        }
    );
    assert!(notes.is_empty(), "{notes:?}");
}

#[test]
fn parallel_tool_results_share_one_user_turn() {
    let (req, _) = decode_request("request_parallel_tools");
    assert_eq!(req.messages.len(), 3, "{:#?}", req.messages);
    let calls: Vec<&str> = req.messages[1]
        .content
        .iter()
        .filter_map(|b| match b {
            Block::ToolUse { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(calls, ["call_paris", "call_tokyo"]);
    let results: Vec<&str> = req.messages[2]
        .content
        .iter()
        .filter_map(|b| match b {
            Block::ToolResult { tool_use_id, .. } => Some(tool_use_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(results, ["call_paris", "call_tokyo"]);
    assert_eq!(req.tool_choice, Some(ToolChoice::Required));
    assert!(req.stream);
}

#[test]
fn reasoning_request_keeps_reasoning_content_and_structured_output() {
    let (req, _) = decode_request("request_reasoning");
    assert_eq!(req.reasoning, Some(Reasoning { effort: Some("high".into()), ..Reasoning::default() }));
    assert_eq!(
        req.messages[1].content[0],
        Block::Thinking {
            text: "I need to list the directory first, so I will call the tool.".into(),
            signature: None
        }
    );
    assert!(matches!(req.messages[1].content[1], Block::ToolUse { .. }));
    assert_eq!(req.messages[1].content.len(), 2, "empty content adds no text block");
    assert_eq!(req.stop, vec!["###".to_owned()]);
    match &req.response_format {
        Some(ResponseFormat::JsonSchema { name, schema, strict }) => {
            assert_eq!(name.as_deref(), Some("file_count"));
            assert_eq!(schema["required"], json!(["count"]));
            assert_eq!(*strict, Some(true));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn uncarried_request_fields_are_noted_and_unknown_ones_ignored() {
    let (req, notes) = decode_request("request_uncarried");
    for field in [
        "n",
        "logprobs",
        "top_logprobs",
        "frequency_penalty",
        "presence_penalty",
        "seed",
        "messages[].name",
        "image_url.detail",
        "content part type `input_audio`",
    ] {
        assert!(notes.0.iter().any(|n| n == field), "missing note {field:?} in {notes:?}");
    }
    assert!(!notes.0.iter().any(|n| n.contains("some_future_field")), "{notes:?}");
    assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
    assert_eq!(req.messages[0].content.len(), 2, "text and image survive, audio is noted");
}

#[test]
fn malformed_requests_are_errors() {
    let codec = OpenaiChatCodec;
    let mut notes = Notes::default();
    for body in [
        &b"not json"[..],
        b"[]",
        b"{\"model\":\"m\"}",
        b"{\"model\":\"m\",\"messages\":{}}",
        b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":1}]}",
        b"{\"model\":\"m\",\"messages\":[],\"temperature\":\"hot\"}",
        b"{\"model\":\"m\",\"messages\":[],\"tools\":[{\"type\":\"function\"}]}",
    ] {
        assert!(codec.decode_request(body, &mut notes).is_err(), "{}", String::from_utf8_lossy(body));
    }
    let ok = b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\",\"x\":[1]}],\"y\":{}}";
    assert!(codec.decode_request(ok, &mut notes).is_ok());
}

#[test]
fn requests_round_trip_through_the_ir() {
    let codec = OpenaiChatCodec;
    for name in REQUESTS {
        let (first, _) = decode_request(name);
        let mut notes = Notes::default();
        let body = codec.encode_request(&first, &mut notes).expect("encode");
        let second = codec.decode_request(&body, &mut Notes::default()).expect("decode again");
        assert_eq!(first, second, "{name}: {}", String::from_utf8_lossy(&body));
        assert!(notes.is_empty(), "{name}: nothing the IR holds should be lost: {notes:?}");
        assert_eq!(codec.request_path(&first), "/v1/chat/completions");
    }
}

#[test]
fn encoded_requests_use_the_wire_shapes() {
    let (req, _) = decode_request("request_parallel_tools");
    let body: Value =
        serde_json::from_slice(&OpenaiChatCodec.encode_request(&req, &mut Notes::default()).expect("encode"))
            .expect("json");
    assert_eq!(body["stream"], json!(true));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["tool_choice"], json!("required"));
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages[1]["content"], Value::Null, "content is null next to tool calls");
    assert_eq!(messages[1]["tool_calls"][0]["type"], json!("function"));
    assert_eq!(messages[1]["tool_calls"][0]["function"]["arguments"], json!("{\"city\":\"Paris\"}"));
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": "call_paris", "content": "18 °C, cloudy"})
    );
    assert_eq!(messages[3]["role"], json!("tool"));

    let (req, _) = decode_request("request_reasoning");
    let body: Value =
        serde_json::from_slice(&OpenaiChatCodec.encode_request(&req, &mut Notes::default()).expect("encode"))
            .expect("json");
    assert_eq!(
        body["messages"][1]["reasoning_content"],
        json!("I need to list the directory first, so I will call the tool.")
    );
    assert_eq!(body["reasoning_effort"], json!("high"));
    assert_eq!(body["response_format"]["json_schema"]["name"], json!("file_count"));
    assert_eq!(body["stop"], json!(["###"]));

    let (req, _) = decode_request("request_simple_text");
    let body: Value =
        serde_json::from_slice(&OpenaiChatCodec.encode_request(&req, &mut Notes::default()).expect("encode"))
            .expect("json");
    assert_eq!(body["max_completion_tokens"], json!(64));
    assert!(body.get("stream").is_none() && body.get("stream_options").is_none());
}

/// An IR request as another dialect (Anthropic) would produce it: what chat cannot carry is noted.
#[test]
fn encoding_foreign_features_notes_what_is_lost() {
    let req = Request {
        model: "gpt-5".into(),
        system: vec!["Be brief.".into()],
        messages: vec![
            Message { role: Role::User, content: vec![Block::Text { text: "Weather?".into() }] },
            Message {
                role: Role::Assistant,
                content: vec![
                    Block::Thinking { text: "Use the tool.".into(), signature: Some("sig-abc".into()) },
                    Block::RedactedThinking { data: "opaque".into() },
                    Block::ToolUse {
                        id: "toolu_1".into(),
                        name: "weather".into(),
                        input: json!({"city": "Oslo"}),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    Block::Text { text: "here you go".into() },
                    Block::ToolResult {
                        tool_use_id: "toolu_1".into(),
                        content: vec![
                            Block::Text { text: "failed".into() },
                            Block::Image { source: ImageSource::Url { url: "https://x/y.png".into() } },
                        ],
                        is_error: true,
                    },
                ],
            },
        ],
        tools: vec![Tool {
            name: "weather".into(),
            description: None,
            parameters: json!({"type": "object"}),
        }],
        top_k: Some(40),
        reasoning: Some(Reasoning { budget_tokens: Some(8000), ..Reasoning::default() }),
        response_format: Some(ResponseFormat::JsonSchema { name: None, schema: json!({}), strict: None }),
        ..Request::default()
    };
    let mut notes = Notes::default();
    let body: Value =
        serde_json::from_slice(&OpenaiChatCodec.encode_request(&req, &mut notes).expect("encode"))
            .expect("json");
    for field in [
        "thinking.signature",
        "redacted_thinking",
        "tool_result.is_error",
        "tool_result: non-text content",
        "top_k",
        "reasoning.budget_tokens (approximated by reasoning_effort)",
        "response_format.json_schema.name (defaulted)",
    ] {
        assert!(notes.0.iter().any(|n| n == field), "missing note {field:?} in {notes:?}");
    }
    assert_eq!(body["reasoning_effort"], json!("medium"));
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages[0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(messages[2]["reasoning_content"], json!("Use the tool."));
    // The tool result must directly follow the assistant turn, before the user's text.
    assert_eq!(messages[3], json!({"role": "tool", "tool_call_id": "toolu_1", "content": "failed"}));
    assert_eq!(messages[4], json!({"role": "user", "content": "here you go"}));
    assert!(body.get("top_k").is_none());

    // Disabled thinking is reasoning_effort "none", and comes back as disabled.
    let off = Request {
        reasoning: Some(Reasoning { disabled: true, ..Reasoning::default() }),
        ..Request::default()
    };
    let body = OpenaiChatCodec.encode_request(&off, &mut Notes::default()).expect("encode");
    let back = OpenaiChatCodec.decode_request(&body, &mut Notes::default()).expect("decode");
    assert_eq!(back.reasoning, off.reasoning);
}

// ---------------------------------------------------------------------------------------------
// Responses.
// ---------------------------------------------------------------------------------------------

fn decode_response(name: &str) -> Response {
    OpenaiChatCodec.decode_response(&fixture(&format!("{name}.json"))).expect(name)
}

#[test]
fn responses_decode_into_the_ir() {
    for name in RESPONSES {
        insta::assert_json_snapshot!(*name, decode_response(name));
    }
}

#[test]
fn response_usage_is_in_anthropic_accounting() {
    let text = decode_response("response_text");
    assert_eq!(text.usage.tokens.input_tokens, 2006 - 1920);
    assert_eq!(text.usage.tokens.cache_read_input_tokens, 1920);
    assert_eq!(text.usage.tokens.output_tokens, 10);
    assert_eq!(text.stop_reason, StopReason::EndTurn);

    let reasoning = decode_response("response_reasoning");
    assert_eq!(reasoning.usage.reasoning_tokens, 200);
    assert_eq!(reasoning.usage.tokens.input_tokens, 56);
    assert_eq!(reasoning.stop_reason, StopReason::MaxTokens);
    assert!(
        matches!(&reasoning.content[0], Block::Thinking { text, signature: None } if text.starts_with("Compare"))
    );
    assert!(matches!(&reasoning.content[1], Block::Text { .. }));

    let written = decode_response("response_cache_write");
    assert_eq!(written.usage.tokens.cache_creation_input_tokens, 100);
    assert_eq!(written.usage.tokens.input_tokens, 94);

    let tools = decode_response("response_tool_calls");
    assert_eq!(tools.stop_reason, StopReason::ToolUse);
    assert_eq!(tools.content.len(), 2);
    assert!(
        matches!(&tools.content[0], Block::ToolUse { id, input, .. } if id == "call_abc123" && input["location"] == "Boston, MA")
    );

    let refusal = decode_response("response_refusal");
    assert_eq!(refusal.stop_reason, StopReason::Refusal);
    assert_eq!(refusal.content, vec![Block::Text { text: "I'm sorry, I can't help with that.".into() }]);
}

#[test]
fn responses_round_trip_through_the_ir() {
    let codec = OpenaiChatCodec;
    for name in RESPONSES {
        let first = decode_response(name);
        let mut notes = Notes::default();
        let body = codec.encode_response(&first, &mut notes).expect("encode");
        let second = codec.decode_response(&body).expect("decode again");
        assert_eq!(first, second, "{name}: {}", String::from_utf8_lossy(&body));
        assert!(notes.is_empty(), "{name}: {notes:?}");
        let wire: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(wire["object"], json!("chat.completion"));
        assert_eq!(wire["choices"][0]["message"]["role"], json!("assistant"));
        assert!(wire["choices"][0]["finish_reason"].is_string());
    }
}

#[test]
fn encoded_response_adds_cached_tokens_back() {
    let resp = Response {
        id: "msg_1".into(),
        model: "claude-sonnet-4-5".into(),
        content: vec![
            Block::Thinking { text: "hmm".into(), signature: Some("sig".into()) },
            Block::Text { text: "Hi".into() },
        ],
        stop_reason: StopReason::StopSequence,
        stop_sequence: Some("END".into()),
        usage: Usage {
            tokens: TokenUsage {
                input_tokens: 10,
                output_tokens: 5,
                cache_creation_input_tokens: 20,
                cache_creation_5m_input_tokens: 20,
                cache_read_input_tokens: 30,
                ..TokenUsage::default()
            },
            reasoning_tokens: 2,
        },
    };
    let mut notes = Notes::default();
    let wire: Value =
        serde_json::from_slice(&OpenaiChatCodec.encode_response(&resp, &mut notes).expect("encode"))
            .expect("json");
    assert_eq!(wire["usage"]["prompt_tokens"], json!(60));
    assert_eq!(wire["usage"]["total_tokens"], json!(65));
    assert_eq!(wire["usage"]["prompt_tokens_details"]["cached_tokens"], json!(30));
    assert_eq!(wire["usage"]["prompt_tokens_details"]["cache_write_tokens"], json!(20));
    assert_eq!(wire["usage"]["completion_tokens_details"]["reasoning_tokens"], json!(2));
    assert_eq!(wire["choices"][0]["finish_reason"], json!("stop"));
    assert_eq!(wire["choices"][0]["message"]["reasoning_content"], json!("hmm"));
    for field in ["thinking.signature", "stop_sequence", "usage.cache_creation (5m/1h split)"] {
        assert!(notes.0.iter().any(|n| n == field), "missing note {field:?} in {notes:?}");
    }
}

#[test]
fn malformed_responses_are_errors() {
    let codec = OpenaiChatCodec;
    for body in
        [&b"<html>"[..], b"\"x\"", b"{\"choices\":{}}", b"{\"choices\":[{\"message\":{\"content\":5}}]}"]
    {
        assert!(codec.decode_response(body).is_err(), "{}", String::from_utf8_lossy(body));
    }
    let lenient =
        codec.decode_response(b"{\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":\"many\"}}");
    assert!(lenient.is_ok(), "{lenient:?}");
}

// ---------------------------------------------------------------------------------------------
// Streams.
// ---------------------------------------------------------------------------------------------

#[test]
fn streams_decode_into_canonical_events() {
    for name in STREAMS {
        let events = decode_stream(&[&fixture(&format!("{name}.sse"))]);
        insta::assert_json_snapshot!(*name, events);
    }
}

#[test]
fn stream_decoding_is_independent_of_chunking() {
    for name in STREAMS {
        let bytes = fixture(&format!("{name}.sse"));
        let whole = decode_stream(&[&bytes]);
        for split in 1..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(decode_stream(&[a, b]), whole, "{name} split at {split}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_stream(&singles), whole, "{name} byte by byte");
    }
}

#[test]
fn tool_call_stream_has_distinct_indices_and_argument_pieces() {
    let events = decode_stream(&[&fixture("stream_tool_call.sse")]);
    let starts: Vec<(usize, BlockStart)> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::BlockStart { index, block } => Some((*index, block.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        starts,
        vec![
            (
                0,
                BlockStart::ToolUse {
                    id: "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
                    name: "get_weather".into()
                }
            ),
            (
                1,
                BlockStart::ToolUse {
                    id: "call_7qXvA2bPq9LmR4sT8uVw1yZ0".into(),
                    name: "get_weather".into()
                }
            ),
        ]
    );
    let args = |want: usize| -> String {
        events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Delta { index, delta: Delta::Json(p) } if *index == want => Some(p.as_str()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(args(0), "{\"location\":\"Paris, France\"}");
    assert_eq!(args(1), "{\"location\": \"Bogotá, Colombia\"}");
    let pieces = events.iter().filter(|e| matches!(e, StreamEvent::Delta { index: 0, .. })).count();
    assert_eq!(pieces, 5, "each argument piece stays a delta");
    assert!(matches!(
        events[events.len() - 2],
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            usage: Usage { tokens: TokenUsage { input_tokens: 84, output_tokens: 48, .. }, .. },
            ..
        }
    ));
    assert_eq!(events.last(), Some(&StreamEvent::Stop));
    assert_eq!(normalize(events.clone()), events, "the decoder's output is already well formed");
}

#[test]
fn reasoning_stream_gives_thinking_then_text() {
    let events = decode_stream(&[&fixture("stream_reasoning.sse")]);
    assert!(
        matches!(&events[0], StreamEvent::Start { id, model, .. } if model == "deepseek-reasoner" && id.starts_with("0b3c"))
    );
    assert_eq!(events[1], StreamEvent::BlockStart { index: 0, block: BlockStart::Thinking });
    assert_eq!(events[2], StreamEvent::Delta { index: 0, delta: Delta::Thinking("Compare".into()) });
    assert!(events.contains(&StreamEvent::BlockStop { index: 0 }));
    assert!(events.contains(&StreamEvent::BlockStart { index: 1, block: BlockStart::Text }));
    match &events[events.len() - 2] {
        StreamEvent::Finish { stop_reason, usage, .. } => {
            assert_eq!(*stop_reason, StopReason::EndTurn);
            assert_eq!(usage.reasoning_tokens, 84);
            assert_eq!(usage.tokens.input_tokens, 17);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stream_error_chunk_becomes_an_error_event() {
    let events = decode_stream(&[&fixture("stream_error.sse")]);
    assert_eq!(events[events.len() - 2], StreamEvent::BlockStop { index: 0 });
    assert!(
        matches!(events.last(), Some(StreamEvent::Error { kind, message }) if kind == "api_error" && message.starts_with("The server had an error"))
    );
    assert!(!events.iter().any(|e| matches!(e, StreamEvent::Finish { .. } | StreamEvent::Stop)));
}

#[test]
fn a_cut_stream_invents_no_ending() {
    for name in STREAMS {
        let bytes = fixture(&format!("{name}.sse"));
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        // Cut just before the chunk carrying the finish reason (or the error).
        let cut = text.find("\"finish_reason\":\"").or_else(|| text.find("{\"error\"")).expect("marker");
        let cut = text[..cut].rfind("data: ").expect("event start");
        for end in [cut, cut + 20] {
            let events = decode_stream(&[&bytes[..end]]);
            assert!(
                !events.iter().any(|e| matches!(
                    e,
                    StreamEvent::Finish { .. } | StreamEvent::Stop | StreamEvent::Error { .. }
                )),
                "{name} cut at {end}: {events:?}"
            );
            let normalized = normalize(events);
            assert!(matches!(normalized.last(), Some(StreamEvent::Error { .. })), "{name}: {normalized:?}");
        }
    }
    // Cut after the finish reason but before the usage chunk and [DONE]: the answer is complete.
    let bytes = fixture("stream_text.sse");
    let text = std::str::from_utf8(&bytes).expect("utf-8");
    let cut = text.find("\"choices\":[]").expect("usage chunk");
    let cut = text[..cut].rfind("data: ").expect("event start");
    let events = decode_stream(&[&bytes[..cut]]);
    assert!(
        matches!(events.last(), Some(StreamEvent::Finish { stop_reason: StopReason::EndTurn, .. })),
        "{events:?}"
    );
    assert!(!events.contains(&StreamEvent::Stop));
}

#[test]
fn compact_and_unusual_chunks_decode() {
    // Everything in one chunk (some compatible servers do this), usage on the finish chunk.
    let one = br#"data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"r","content":"Hi","tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},{"index":1,"id":"b","type":"function","function":{"name":"g","arguments":"{\"x\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}

data: [DONE]

"#;
    let events = decode_stream(&[one]);
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e {
            StreamEvent::BlockStart { index, block } => format!("start {index} {block:?}"),
            StreamEvent::Delta { index, delta } => format!("delta {index} {delta:?}"),
            StreamEvent::BlockStop { index } => format!("stop {index}"),
            other => format!("{other:?}").split_whitespace().next().unwrap_or_default().to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Start",
            "start 0 Thinking",
            "delta 0 Thinking(\"r\")",
            "stop 0",
            "start 1 Text",
            "delta 1 Text(\"Hi\")",
            "stop 1",
            "start 2 ToolUse { id: \"a\", name: \"f\" }",
            "delta 2 Json(\"{}\")",
            "stop 2",
            "start 3 ToolUse { id: \"b\", name: \"g\" }",
            "delta 3 Json(\"{\\\"x\\\":1}\")",
            "stop 3",
            "Finish",
            "Stop",
        ]
    );

    // The name arrives after the id, arguments before the name; text after a tool call gets a new
    // block; a choice other than 0 is ignored.
    let late = br#"data: {"id":"c2","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_x","function":{"arguments":"{\"a\""}}]}}]}

data: {"id":"c2","model":"m","choices":[{"index":1,"delta":{"content":"other choice"}},{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"late","arguments":":1}"}}]}}]}

data: {"id":"c2","model":"m","choices":[{"index":0,"delta":{"content":"after"},"finish_reason":"stop"}]}

data: [DONE]

"#;
    let events = decode_stream(&[late]);
    assert_eq!(
        events[1],
        StreamEvent::BlockStart {
            index: 0,
            block: BlockStart::ToolUse { id: "call_x".into(), name: "late".into() }
        }
    );
    // Arguments buffered until the name came are sent with the piece that completed the header.
    assert_eq!(events[2], StreamEvent::Delta { index: 0, delta: Delta::Json("{\"a\":1}".into()) });
    assert_eq!(events[3], StreamEvent::BlockStop { index: 0 });
    assert_eq!(events[4], StreamEvent::BlockStart { index: 1, block: BlockStart::Text });
    assert_eq!(events[5], StreamEvent::Delta { index: 1, delta: Delta::Text("after".into()) });
    assert!(!format!("{events:?}").contains("other choice"));
    assert_eq!(normalize(events.clone()), events);
}

#[test]
fn malformed_stream_data_is_an_error() {
    let mut decoder = OpenaiChatCodec.stream_decoder();
    let mut out = Vec::new();
    assert!(decoder.push(b"data: {not json}\n\n", &mut out).is_err());
    // Unknown JSON shapes are ignored.
    let events = decode_stream(&[b"data: 42\n\ndata: {\"foo\":[1]}\n\n"]);
    assert!(
        !events.iter().any(|e| matches!(e, StreamEvent::Finish { .. } | StreamEvent::Stop)),
        "{events:?}"
    );
}

fn usage_sample() -> Usage {
    Usage {
        tokens: TokenUsage {
            input_tokens: 10,
            output_tokens: 20,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 5,
            ..TokenUsage::default()
        },
        reasoning_tokens: 4,
    }
}

fn canonical_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start { id: "chatcmpl-enc1".into(), model: "gpt-4o".into(), usage: Usage::default() },
        StreamEvent::BlockStart { index: 0, block: BlockStart::Thinking },
        StreamEvent::Delta { index: 0, delta: Delta::Thinking("Let me think".into()) },
        StreamEvent::Delta { index: 0, delta: Delta::Thinking(" more.".into()) },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::BlockStart { index: 1, block: BlockStart::Text },
        StreamEvent::Delta { index: 1, delta: Delta::Text("Checking the weather.".into()) },
        StreamEvent::BlockStop { index: 1 },
        StreamEvent::BlockStart {
            index: 2,
            block: BlockStart::ToolUse { id: "call_1".into(), name: "get_weather".into() },
        },
        StreamEvent::Delta { index: 2, delta: Delta::Json("{\"city\":".into()) },
        StreamEvent::Delta { index: 2, delta: Delta::Json("\"Paris\"}".into()) },
        StreamEvent::BlockStop { index: 2 },
        StreamEvent::BlockStart {
            index: 3,
            block: BlockStart::ToolUse { id: "call_2".into(), name: "get_time".into() },
        },
        StreamEvent::Delta { index: 3, delta: Delta::Json("{}".into()) },
        StreamEvent::BlockStop { index: 3 },
        StreamEvent::Finish { stop_reason: StopReason::ToolUse, stop_sequence: None, usage: usage_sample() },
        StreamEvent::Stop,
    ]
}

#[test]
fn stream_encoder_round_trips_and_follows_the_wire_format() {
    let events = canonical_events();
    assert_eq!(normalize(events.clone()), events, "the sample is a normalized stream");
    let bytes = encode_stream(&events);
    assert_eq!(decode_stream(&[&bytes]), events);

    let lines = data_lines(&bytes);
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(lines.iter().filter(|l| *l == "[DONE]").count(), 1);
    let chunks: Vec<Value> =
        lines[..lines.len() - 1].iter().map(|l| serde_json::from_str(l).expect("chunk json")).collect();
    for c in &chunks {
        assert_eq!(c["object"], json!("chat.completion.chunk"));
        assert_eq!(c["id"], json!("chatcmpl-enc1"));
        assert_eq!(c["model"], json!("gpt-4o"));
        assert_eq!(c["created"], chunks[0]["created"]);
        assert!(c["created"].as_u64().is_some_and(|t| t > 1_700_000_000));
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], json!("assistant"));
    assert_eq!(chunks[1]["choices"][0]["delta"], json!({"reasoning_content": "Let me think"}));
    // Tool calls are numbered from 0 in their own sequence, with id and name first.
    let headers: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0].as_object().filter(|t| t.contains_key("id"))
        })
        .map(|t| &t["index"])
        .collect();
    assert_eq!(headers, [&json!(0), &json!(1)]);
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], json!("tool_calls"));
    assert_eq!(chunks[n - 2]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(chunks[n - 1]["usage"]["prompt_tokens"], json!(18));
    assert_eq!(chunks[n - 1]["usage"]["completion_tokens"], json!(20));
    assert_eq!(chunks[n - 1]["usage"]["prompt_tokens_details"]["cached_tokens"], json!(5));
    for c in &chunks[..n - 2] {
        assert_eq!(
            c["choices"][0]["finish_reason"],
            Value::Null,
            "finish_reason only on the last content chunk"
        );
    }
}

#[test]
fn stream_encoder_ends_an_error_with_an_error_chunk() {
    let events = vec![
        StreamEvent::Start { id: "chatcmpl-enc2".into(), model: "gpt-4o".into(), usage: Usage::default() },
        StreamEvent::BlockStart { index: 0, block: BlockStart::Text },
        StreamEvent::Delta { index: 0, delta: Delta::Text("Partial".into()) },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::Error { kind: "overloaded".into(), message: "Overloaded".into() },
    ];
    let bytes = encode_stream(&events);
    assert_eq!(decode_stream(&[&bytes]), events);
    let lines = data_lines(&bytes);
    assert!(!lines.iter().any(|l| l == "[DONE]"), "a failed stream has no [DONE]");
    let last: Value = serde_json::from_str(lines.last().expect("line")).expect("json");
    assert_eq!(
        last,
        json!({"error": {"message": "Overloaded", "type": "service_unavailable_error", "param": null, "code": "server_is_overloaded"}})
    );
    // Nothing is written after the terminal event.
    let mut encoder = OpenaiChatCodec.stream_encoder();
    let mut out = BytesMut::new();
    for e in &events {
        encoder.encode(e, &mut out);
    }
    let len = out.len();
    encoder.encode(&StreamEvent::Stop, &mut out);
    assert_eq!(out.len(), len);
}

#[test]
fn recorded_streams_survive_encode_and_decode() {
    for name in STREAMS {
        let events = normalize(decode_stream(&[&fixture(&format!("{name}.sse"))]));
        let again = decode_stream(&[&encode_stream(&events)]);
        assert_eq!(normalize(again), events, "{name}");
    }
}

#[test]
fn stream_encoder_drops_signatures_and_handles_a_missing_start() {
    let events = vec![
        StreamEvent::BlockStart { index: 0, block: BlockStart::Thinking },
        StreamEvent::Delta { index: 0, delta: Delta::Thinking("t".into()) },
        StreamEvent::Delta { index: 0, delta: Delta::Signature("sig".into()) },
        StreamEvent::Delta { index: 5, delta: Delta::Text("orphan".into()) },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::Finish {
            stop_reason: StopReason::EndTurn,
            stop_sequence: None,
            usage: Usage::default(),
        },
        StreamEvent::Stop,
    ];
    let bytes = encode_stream(&events);
    let lines = data_lines(&bytes);
    let first: Value = serde_json::from_str(&lines[0]).expect("json");
    assert!(first["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")), "{first}");
    assert!(!lines.iter().any(|l| l.contains("sig") || l.contains("orphan")), "{lines:?}");
    // Zero usage: no usage chunk, the finish chunk is followed by [DONE].
    assert_eq!(lines.len(), 4, "{lines:?}");
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

#[test]
fn errors_decode() {
    let codec = OpenaiChatCodec;
    let e = codec.decode_error(400, &fixture("error_invalid_request.json"));
    assert_eq!(e.kind, "invalid_request");
    assert_eq!(e.status, 400);
    assert!(e.message.starts_with("Invalid value for 'tool_choice'"));
    assert_eq!(codec.decode_error(401, &fixture("error_invalid_api_key.json")).kind, "authentication");
    assert_eq!(codec.decode_error(429, &fixture("error_rate_limit.json")).kind, "rate_limit");
    // Without a telling status, the type and code decide.
    assert_eq!(codec.decode_error(200, &fixture("error_rate_limit.json")).kind, "rate_limit");
    assert_eq!(codec.decode_error(200, &fixture("error_invalid_api_key.json")).kind, "authentication");
    assert_eq!(codec.decode_error(503, b"upstream connect error").kind, "overloaded");
    assert_eq!(codec.decode_error(503, b"upstream connect error").message, "upstream connect error");
    assert_eq!(codec.decode_error(502, b"").message, "upstream error (HTTP 502)");
    assert_eq!(codec.decode_error(500, b"{\"error\":\"boom\"}").message, "boom");
}

#[test]
fn errors_encode_in_the_chat_shape_and_decode_back() {
    let codec = OpenaiChatCodec;
    for (status, kind) in [
        (400, "invalid_request"),
        (401, "authentication"),
        (403, "permission"),
        (404, "not_found"),
        (429, "rate_limit"),
        (503, "overloaded"),
        (500, "api_error"),
    ] {
        let info = ErrorInfo { status, kind: kind.into(), message: format!("{kind} happened") };
        let body: Value = serde_json::from_slice(&codec.encode_error(&info)).expect("json");
        let error = body["error"].as_object().expect("error object");
        assert_eq!(error["message"], json!(format!("{kind} happened")));
        assert!(error["type"].is_string());
        assert!(error.contains_key("param") && error.contains_key("code"), "{body}");
        assert_eq!(codec.decode_error(status, &codec.encode_error(&info)), info);
        // Inside a stream there is no status: the type and code alone must keep the category.
        assert_eq!(codec.decode_error(200, &codec.encode_error(&info)).kind, kind, "{body}");
    }
}

// ---------------------------------------------------------------------------------------------
// Robustness: decoders must never panic on arbitrary input.
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8] = b"{}[]\":,0123456789-.eEtrufalsn \n\r\\data:[DONE]indexchoices";
    let mut out = input.to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(4) {
            0 if at < out.len() => {
                out.remove(at);
            }
            1 => out.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            2 if at < out.len() => out[at] = (rng.next() & 0xff) as u8,
            _ => {
                let end = (at + rng.below(40)).min(out.len());
                out.drain(at..end);
            }
        }
    }
    out
}

#[test]
fn decoders_never_panic() {
    let codec = OpenaiChatCodec;
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for name in REQUESTS.iter().chain(RESPONSES) {
        seeds.push(fixture(&format!("{name}.json")));
    }
    for name in STREAMS {
        seeds.push(fixture(&format!("{name}.sse")));
    }
    // Type confusion in every position a decoder reads.
    seeds.push(
        br#"{"model":1,"messages":[{"role":"assistant","content":[{"type":"image_url","image_url":7}],"tool_calls":[{"function":{"arguments":{}}}]}]}"#
            .to_vec(),
    );
    seeds.push(br#"data: {"choices":[{"delta":{"tool_calls":[{"index":18446744073709551615,"function":{"name":"x"}}]}}]}"#.to_vec());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let seed = &seeds[round % seeds.len()];
        let input = mutate(&mut rng, seed);
        let _ = codec.decode_request(&input, &mut Notes::default());
        let _ = codec.decode_response(&input);
        let _ = codec.decode_error(rng.below(600) as u16, &input);
        let mut decoder = codec.stream_decoder();
        let mut out = Vec::new();
        let split = rng.below(input.len() + 1);
        let _ = decoder.push(&input[..split], &mut out);
        let _ = decoder.push(&input[split..], &mut out);
        decoder.finish(&mut out);
        // Whatever came out, the encoder accepts it.
        let _ = encode_stream(&normalize(out));
    }
}
