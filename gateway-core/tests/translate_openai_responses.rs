//! The OpenAI Responses (Codex CLI) codec: hand-written fixtures decoded into the IR (reviewed
//! snapshots plus explicit checks), round trips through the wire format, the stream decoder under
//! every chunking and with cut streams, the stream encoder checked event by event against the
//! wire format, and errors.

use bytes::BytesMut;
use gateway_core::translate::ir::{
    Block, BlockStart, Delta, ImageSource, Message, Reasoning, Request, Response, ResponseFormat, Role,
    StopReason, StreamEvent, Tool, ToolChoice, Usage,
};
use gateway_core::translate::normalize::StreamNormalizer;
use gateway_core::translate::openai_responses::OpenaiResponsesCodec;
use gateway_core::translate::{Codec, ErrorInfo, Notes};
use gateway_core::usage::TokenUsage;
use serde_json::{Value, json};

const CODEC: OpenaiResponsesCodec = OpenaiResponsesCodec;

const REQUESTS: &[&str] = &[
    "simple_text",
    "system_multiturn",
    "images",
    "tool_choice_function",
    "tools_round",
    "parallel_tools",
    "reasoning",
    "codex_cli",
];
const RESPONSES: &[&str] = &["text", "tool_calls", "reasoning", "incomplete"];
const STREAMS: &[&str] = &["text", "tool_calls", "reasoning"];

fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/fixtures/openai_responses/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn decode_request(name: &str) -> (Request, Notes) {
    let mut notes = Notes::default();
    let req = CODEC
        .decode_request(&fixture(&format!("requests/{name}.json")), &mut notes)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (req, notes)
}

fn decode_response(name: &str) -> Response {
    CODEC
        .decode_response(&fixture(&format!("responses/{name}.json")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn text(s: &str) -> Block {
    Block::Text { text: s.into() }
}

fn has_note(notes: &Notes, needle: &str) -> bool {
    notes.0.iter().any(|n| n.contains(needle))
}

fn snapshot_request(name: &str) -> (Request, Notes) {
    let (req, notes) = decode_request(name);
    insta::assert_json_snapshot!(format!("request_{name}"), json!({"ir": req, "notes": notes.0}));
    (req, notes)
}

// ---------------------------------------------------------------------------------------------
// Requests.

#[test]
fn request_simple_text() {
    let (req, notes) = snapshot_request("simple_text");
    assert_eq!(req.model, "gpt-4.1");
    assert!(req.system.is_empty());
    assert_eq!(
        req.messages,
        vec![Message {
            role: Role::User,
            content: vec![text("Tell me a three sentence bedtime story about a unicorn.")]
        }]
    );
    assert!(!req.stream);
    assert!(notes.is_empty(), "{notes:?}");
}

#[test]
fn request_system_and_multiturn() {
    let (req, notes) = snapshot_request("system_multiturn");
    assert_eq!(
        req.system,
        vec![
            "You are a concise geography tutor. Answer in one sentence.".to_owned(),
            "Use metric units.".to_owned()
        ]
    );
    let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, vec![Role::User, Role::Assistant, Role::User]);
    assert_eq!(req.messages[1].content, vec![text("Mount Everest is 8,849 metres tall.")]);
    assert_eq!(req.messages[2].content, vec![text("And K2?")]);
    assert_eq!((req.temperature, req.top_p, req.max_tokens), (Some(0.2), Some(0.9), Some(256)));
    assert_eq!(req.user.as_deref(), Some("user-1234"));
    assert!(has_note(&notes, "metadata"), "{notes:?}");
    assert!(has_note(&notes, "message.id"), "{notes:?}");
    assert!(!has_note(&notes, "moved to system"), "the developer message came first: {notes:?}");
}

#[test]
fn request_images_base64_and_url() {
    let (req, notes) = snapshot_request("images");
    let content = &req.messages[0].content;
    assert_eq!(content.len(), 3);
    assert!(
        matches!(&content[1], Block::Image { source: ImageSource::Url { url } } if url.starts_with("https://upload.wikimedia.org/"))
    );
    assert!(matches!(
        &content[2],
        Block::Image { source: ImageSource::Base64 { media_type, data } }
            if media_type == "image/png" && data.starts_with("iVBORw0KGgo") && !data.contains(',')
    ));
    assert!(notes.is_empty(), "detail=auto is the default: {notes:?}");
}

#[test]
fn request_forced_tool_choice_and_builtin_tool() {
    let (req, notes) = snapshot_request("tool_choice_function");
    assert_eq!(req.tool_choice, Some(ToolChoice::Tool { name: "get_weather".into() }));
    assert_eq!(req.tools.len(), 1, "the built-in tool is skipped");
    assert_eq!(req.tools[0].name, "get_weather");
    assert_eq!(req.tools[0].parameters["required"], json!(["location"]));
    assert!(has_note(&notes, "web_search_preview"), "{notes:?}");
    assert!(has_note(&notes, "tools[].strict"), "{notes:?}");
}

#[test]
fn request_tool_call_and_result_round() {
    let (req, _) = snapshot_request("tools_round");
    assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
    assert_eq!(req.parallel_tool_calls, Some(false));
    assert_eq!(req.messages.len(), 3);
    assert_eq!(
        req.messages[1],
        Message {
            role: Role::Assistant,
            content: vec![Block::ToolUse {
                id: "call_unLAR8MvFNptuiZK6K6HCy5k".into(),
                name: "get_weather".into(),
                input: json!({"location": "Paris, France"}),
            }],
        }
    );
    assert_eq!(
        req.messages[2],
        Message {
            role: Role::User,
            content: vec![Block::ToolResult {
                tool_use_id: "call_unLAR8MvFNptuiZK6K6HCy5k".into(),
                content: vec![text("{\"temperature_c\": 14, \"conditions\": \"light rain\"}")],
                is_error: false,
            }],
        }
    );
}

#[test]
fn request_parallel_tool_calls() {
    let (req, _) = snapshot_request("parallel_tools");
    assert_eq!(req.tool_choice, Some(ToolChoice::Required));
    assert_eq!(req.parallel_tool_calls, Some(true));
    let calls: Vec<&str> = req.messages[1]
        .content
        .iter()
        .map(|b| match b {
            Block::ToolUse { id, .. } => id.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(calls, vec!["call_paris_a1", "call_bogota_b2"]);
    assert_eq!(req.messages[2].role, Role::User);
    assert!(matches!(
        &req.messages[2].content[1],
        Block::ToolResult { tool_use_id, content, .. }
            if tool_use_id == "call_bogota_b2" && content == &vec![text("18°C, cloudy"), text("Humidity 81%")]
    ));
}

#[test]
fn request_reasoning_items_and_structured_output() {
    let (req, notes) = snapshot_request("reasoning");
    assert_eq!(
        req.messages[1].content[0],
        Block::Thinking {
            text: "**Counting letters**\n\nI spell the word out: s-t-r-a-w-b-e-r-r-y.\n\n**Answer**\n\nThe letter r appears three times.".into(),
            signature: Some("gAAAAABoISQ24OyVRYbkYfukdHCHmgIdvTfpcoYyD0cRwpqITrFJFXyDZ1Ii5mrF0e8GKy0LxHcVi0lmj2kpWUQrd3ZUrkkxPX7nOZNqp3Is9lrsQmM2oRJjSCeUvn0cpNUrcZnOVsNHjy9s6h7QtlxS0A==".into()),
        }
    );
    assert_eq!(req.messages[1].content[1], text("There are 3 r's in \"strawberry\"."));
    assert_eq!(
        req.reasoning,
        Some(Reasoning {
            effort: Some("high".into()),
            budget_tokens: None,
            summary: Some("auto".into()),
            disabled: false
        })
    );
    assert!(matches!(
        &req.response_format,
        Some(ResponseFormat::JsonSchema { name: Some(n), strict: Some(true), schema }) if n == "letter_count" && schema["required"] == json!(["word", "count"])
    ));
    assert_eq!(req.max_tokens, Some(4096));
    assert!(has_note(&notes, "reasoning.id"), "the reasoning item id is noted: {notes:?}");
    assert!(!has_note(&notes, "include"), "encrypted content is what we ask for anyway: {notes:?}");
}

#[test]
fn request_codex_cli() {
    let (req, notes) = snapshot_request("codex_cli");
    assert!(req.stream);
    assert_eq!(req.system.len(), 2, "developer messages are the system prompt");
    assert!(req.system[0].starts_with("You are Codex"));
    let tools: Vec<&str> = req.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        tools,
        vec!["shell_command", "update_plan", "search_docs"],
        "additional_tools, namespace flattened"
    );
    let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, vec![Role::User, Role::Assistant, Role::User]);
    assert_eq!(req.messages[0].content.len(), 3);
    assert!(matches!(&req.messages[1].content[0], Block::Thinking { signature: Some(_), .. }));
    assert!(matches!(
        &req.messages[1].content[1],
        Block::ToolUse { id, name, input } if id == "call_Jx3b0Qq3tTmR1V9XkPz7L2aA" && name == "shell_command" && input["workdir"] == "/home/dev/project"
    ));
    for needle in
        ["tools[].type=custom", "tools[].type=web_search", "namespace", "prompt_cache_key", "text.verbosity"]
    {
        assert!(has_note(&notes, needle), "{needle} missing from {notes:?}");
    }
    assert!(!has_note(&notes, "store"), "store=false is what we send: {notes:?}");
}

#[test]
fn request_round_trips_keep_the_ir() {
    for name in REQUESTS {
        let (first, _) = decode_request(name);
        let mut notes = Notes::default();
        let bytes = CODEC.encode_request(&first, &mut notes).expect("encode");
        let body: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(body["store"], json!(false), "{name}");
        assert_eq!(body["stream"], json!(first.stream), "{name}");
        let mut again_notes = Notes::default();
        let second = CODEC.decode_request(&bytes, &mut again_notes).expect("decode again");
        assert_eq!(second, first, "{name}: {}", String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn encoded_request_has_codex_settings() {
    let (req, _) = decode_request("codex_cli");
    let mut notes = Notes::default();
    let body: Value =
        serde_json::from_slice(&CODEC.encode_request(&req, &mut notes).expect("encode")).expect("json");
    assert_eq!(body["stream"], json!(true));
    assert_eq!(body["store"], json!(false));
    assert_eq!(body["include"], json!(["reasoning.encrypted_content"]));
    assert_eq!(body["instructions"], json!(req.system[0]));
    assert_eq!(
        body["input"][0],
        json!({"type": "message", "role": "developer", "content": [{"type": "input_text", "text": req.system[1]}]})
    );
    assert!(
        body["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .all(|t| t["type"] == "function" && t["strict"] == false)
    );
    assert_eq!(CODEC.request_path(&req), "/v1/responses");
}

#[test]
fn encode_request_from_another_dialect_notes_what_it_drops() {
    let req = Request {
        model: "gpt-5".into(),
        system: vec!["Be brief.".into()],
        messages: vec![
            Message {
                role: Role::User,
                content: vec![
                    text("Look"),
                    Block::Image {
                        source: ImageSource::Base64 { media_type: "image/jpeg".into(), data: "AAAA".into() },
                    },
                ],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    Block::Thinking { text: "unsigned".into(), signature: None },
                    Block::ToolUse { id: "toolu_01".into(), name: "look".into(), input: json!({"x": 1}) },
                ],
            },
            Message {
                role: Role::User,
                content: vec![Block::ToolResult {
                    tool_use_id: "toolu_01".into(),
                    content: vec![text("boom")],
                    is_error: true,
                }],
            },
        ],
        tools: vec![Tool { name: "look".into(), description: None, parameters: json!({"type": "object"}) }],
        max_tokens: Some(1000),
        top_k: Some(40),
        stop: vec!["END".into()],
        stream: true,
        reasoning: Some(Reasoning {
            effort: None,
            budget_tokens: Some(8000),
            summary: None,
            disabled: false,
        }),
        ..Request::default()
    };
    let mut notes = Notes::default();
    let body: Value =
        serde_json::from_slice(&CODEC.encode_request(&req, &mut notes).expect("encode")).expect("json");
    assert_eq!(body["instructions"], "Be brief.");
    assert_eq!(body["max_output_tokens"], 1000);
    assert_eq!(body["reasoning"], json!({"effort": "medium"}));
    assert_eq!(body["include"], json!(["reasoning.encrypted_content"]));
    assert_eq!(
        body["input"][0]["content"][1],
        json!({"type": "input_image", "image_url": "data:image/jpeg;base64,AAAA", "detail": "auto"})
    );
    assert_eq!(
        body["input"][1],
        json!({"type": "function_call", "call_id": "toolu_01", "name": "look", "arguments": "{\"x\":1}"}),
        "the unsigned thinking block is dropped, the call keeps the IR id as call_id"
    );
    assert_eq!(
        body["input"][2],
        json!({"type": "function_call_output", "call_id": "toolu_01", "output": "boom"})
    );
    assert_eq!(body["input"].as_array().map(Vec::len), Some(3));
    for needle in ["top_k", "stop", "thinking without signature", "tool_result.is_error", "budget_tokens"] {
        assert!(has_note(&notes, needle), "{needle} missing from {notes:?}");
    }
}

#[test]
fn decoding_is_lenient_but_rejects_malformed_bodies() {
    let mut notes = Notes::default();
    let ok = br#"{"model":"m","input":"hi","frobnicate":{"x":[1,2]},"input_audio":null}"#;
    assert!(CODEC.decode_request(ok, &mut notes).is_ok());
    assert!(notes.is_empty(), "unknown fields are ignored: {notes:?}");
    let ok =
        br#"{"model":"m","input":[{"type":"item_reference","id":"msg_1"},{"role":"user","content":"x"}]}"#;
    assert!(CODEC.decode_request(ok, &mut notes).is_ok());
    assert!(has_note(&notes, "item_reference"), "{notes:?}");
    for bad in [
        &b"not json"[..],
        b"[1,2]",
        br#"{"model":3}"#,
        br#"{"input":5}"#,
        br#"{"input":[{"role":"user","content":5}]}"#,
        br#"{"input":[{"type":"function_call","call_id":"c"}]}"#,
        br#"{"input":"x","max_output_tokens":"lots"}"#,
        br#"{"input":"x","tools":{"type":"function"}}"#,
    ] {
        let mut notes = Notes::default();
        assert!(CODEC.decode_request(bad, &mut notes).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

// ---------------------------------------------------------------------------------------------
// Responses.

#[test]
fn response_text() {
    let resp = decode_response("text");
    insta::assert_json_snapshot!("response_text", resp);
    assert_eq!(resp.stop_reason, StopReason::EndTurn);
    assert!(matches!(&resp.content[..], [Block::Text { text }] if text.starts_with("In a peaceful grove")));
    assert_eq!(resp.usage.tokens.input_tokens, 36);
    assert_eq!(resp.usage.tokens.output_tokens, 87);
}

#[test]
fn response_parallel_tool_calls_with_cached_input() {
    let resp = decode_response("tool_calls");
    insta::assert_json_snapshot!("response_tool_calls", resp);
    assert_eq!(resp.stop_reason, StopReason::ToolUse);
    assert_eq!(resp.content.len(), 2);
    assert!(
        matches!(&resp.content[1], Block::ToolUse { id, input, .. } if id == "call_bogota_b2" && input["location"] == "Bogotá, Colombia")
    );
    // 1536 input tokens of which 1280 cached: the IR excludes cached tokens from input.
    assert_eq!(resp.usage.tokens.input_tokens, 256);
    assert_eq!(resp.usage.tokens.cache_read_input_tokens, 1280);
    assert_eq!(resp.usage.tokens.cache_creation_input_tokens, 0);
}

#[test]
fn response_reasoning() {
    let resp = decode_response("reasoning");
    insta::assert_json_snapshot!("response_reasoning", resp);
    assert!(
        matches!(&resp.content[0], Block::Thinking { text, signature: Some(sig) } if text.contains("\n\n**Answer**") && sig.starts_with("gAAAA"))
    );
    assert_eq!(resp.usage.reasoning_tokens, 384);
    assert_eq!(resp.usage.tokens.input_tokens, 202);
    assert_eq!(resp.usage.tokens.cache_read_input_tokens, 2048);
}

#[test]
fn response_incomplete_is_max_tokens() {
    let resp = decode_response("incomplete");
    insta::assert_json_snapshot!("response_incomplete", resp);
    assert_eq!(resp.stop_reason, StopReason::MaxTokens);
    assert!(matches!(&resp.content[..], [Block::Thinking { text, signature: Some(_) }] if text.is_empty()));
}

#[test]
fn response_round_trips_keep_the_ir() {
    for name in RESPONSES {
        let first = decode_response(name);
        let mut notes = Notes::default();
        let bytes = CODEC.encode_response(&first, &mut notes).expect("encode");
        let body: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(body["object"], "response");
        for item in body["output"].as_array().expect("output") {
            let id = item["id"].as_str().expect("every item has an id");
            let prefix = match item["type"].as_str() {
                Some("message") => "msg_",
                Some("function_call") => "fc_",
                Some("reasoning") => "rs_",
                other => panic!("{other:?}"),
            };
            assert!(id.starts_with(prefix), "{id}");
        }
        let second = CODEC.decode_response(&bytes).expect("decode again");
        assert_eq!(second, first, "{name}: {}", String::from_utf8_lossy(&bytes));
        assert!(notes.is_empty(), "{name}: {notes:?}");
    }
    let body: Value = serde_json::from_slice(
        &CODEC.encode_response(&decode_response("tool_calls"), &mut Notes::default()).expect("encode"),
    )
    .expect("json");
    assert_eq!(body["usage"]["input_tokens"], 1536, "cached tokens are added back");
    assert_eq!(body["usage"]["input_tokens_details"]["cached_tokens"], 1280);
    assert_eq!(body["usage"]["total_tokens"], 1584);
    assert_eq!(body["output"][0]["call_id"], "call_paris_a1");
}

#[test]
fn response_cache_writes_are_folded_into_input_and_noted() {
    let resp = Response {
        id: "msg_01".into(),
        model: "claude".into(),
        content: vec![text("hi")],
        stop_reason: StopReason::MaxTokens,
        stop_sequence: None,
        usage: Usage {
            tokens: TokenUsage {
                input_tokens: 10,
                output_tokens: 5,
                cache_creation_input_tokens: 100,
                cache_read_input_tokens: 1000,
                ..TokenUsage::default()
            },
            reasoning_tokens: 0,
        },
    };
    let mut notes = Notes::default();
    let body: Value =
        serde_json::from_slice(&CODEC.encode_response(&resp, &mut notes).expect("encode")).expect("json");
    assert_eq!(body["usage"]["input_tokens"], 1110);
    assert_eq!(body["status"], "incomplete");
    assert_eq!(body["incomplete_details"], json!({"reason": "max_output_tokens"}));
    assert!(has_note(&notes, "cache_creation"), "{notes:?}");
}

// ---------------------------------------------------------------------------------------------
// Stream decoding.

fn decode_chunks(chunks: &[&[u8]]) -> Vec<StreamEvent> {
    let mut decoder = CODEC.stream_decoder();
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk, &mut out).expect("push");
    }
    decoder.finish(&mut out);
    out
}

fn normalize(events: Vec<StreamEvent>) -> Vec<StreamEvent> {
    let mut normalizer = StreamNormalizer::default();
    let mut out = Vec::new();
    for ev in events {
        normalizer.push(ev, &mut out);
    }
    normalizer.finish(&mut out);
    out
}

fn stream_fixture(name: &str) -> Vec<u8> {
    fixture(&format!("streams/{name}.sse"))
}

#[test]
fn stream_text_events() {
    let events = decode_chunks(&[&stream_fixture("text")]);
    insta::assert_json_snapshot!("stream_text", events);
    assert!(
        matches!(&events[0], StreamEvent::Start { id, model, .. } if id.starts_with("resp_67c9") && model == "gpt-4.1-2025-04-14")
    );
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta { index: 0, delta: Delta::Text(t) } => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Hi there! How can I help you today?", "the .done events do not repeat the text");
    assert!(matches!(
        &events[events.len() - 2],
        StreamEvent::Finish { stop_reason: StopReason::EndTurn, usage, .. } if usage.tokens.input_tokens == 37 && usage.tokens.output_tokens == 11
    ));
    assert_eq!(events.last(), Some(&StreamEvent::Stop));
}

#[test]
fn stream_tool_calls_events() {
    let events = decode_chunks(&[&stream_fixture("tool_calls")]);
    insta::assert_json_snapshot!("stream_tool_calls", events);
    for (index, id, args) in [
        (0, "call_paris_a1", "{\"location\":\"Paris, France\"}"),
        (1, "call_bogota_b2", "{\"location\":\"Bogotá, Colombia\"}"),
    ] {
        assert!(events.contains(&StreamEvent::BlockStart {
            index,
            block: BlockStart::ToolUse { id: id.into(), name: "get_weather".into() }
        }));
        let pieces: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Delta { index: i, delta: Delta::Json(j) } if *i == index => Some(j.as_str()),
                _ => None,
            })
            .collect();
        assert!(pieces.len() > 1, "arguments arrive in pieces");
        assert_eq!(pieces.concat(), args);
    }
    assert!(matches!(
        &events[events.len() - 2],
        StreamEvent::Finish { stop_reason: StopReason::ToolUse, usage, .. }
            if usage.tokens.input_tokens == 256 && usage.tokens.cache_read_input_tokens == 1280
    ));
}

#[test]
fn stream_reasoning_events() {
    let events = decode_chunks(&[&stream_fixture("reasoning")]);
    insta::assert_json_snapshot!("stream_reasoning", events);
    assert_eq!(events[1], StreamEvent::BlockStart { index: 0, block: BlockStart::Thinking });
    let thinking: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta { index: 0, delta: Delta::Thinking(t) } => Some(t.as_str()),
            _ => None,
        })
        .collect();
    // The same text as the complete response's reasoning item decodes to.
    let Block::Thinking { text: whole, signature } = &decode_response("reasoning").content[0] else {
        panic!("reasoning block expected");
    };
    assert_eq!(&thinking, whole);
    let sig = events.iter().find_map(|e| match e {
        StreamEvent::Delta { index: 0, delta: Delta::Signature(s) } => Some(s.clone()),
        _ => None,
    });
    assert_eq!(sig.as_ref(), signature.as_ref());
    let stop0 = events.iter().position(|e| *e == StreamEvent::BlockStop { index: 0 }).expect("block 0 stops");
    let start1 = events
        .iter()
        .position(|e| *e == StreamEvent::BlockStart { index: 1, block: BlockStart::Text })
        .expect("block 1 starts");
    assert!(stop0 < start1);
    assert!(
        matches!(&events[events.len() - 2], StreamEvent::Finish { usage, .. } if usage.reasoning_tokens == 384)
    );
}

#[test]
fn stream_decoding_is_independent_of_chunking() {
    for name in STREAMS {
        let bytes = stream_fixture(name);
        let whole = decode_chunks(&[&bytes]);
        assert!(whole.len() > 5, "{name}");
        for split in 1..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(decode_chunks(&[a, b]), whole, "{name}: split at {split}");
        }
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_chunks(&single), whole, "{name}: byte by byte");
        let crlf = String::from_utf8(bytes.clone()).expect("utf8").replace('\n', "\r\n");
        assert_eq!(decode_chunks(&[crlf.as_bytes()]), whole, "{name}: CRLF line endings");
    }
}

#[test]
fn a_cut_stream_yields_no_finish_and_normalizes_to_an_error() {
    for name in STREAMS {
        let bytes = stream_fixture(name);
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        let completed = text.find("event: response.completed").expect("has a completed event");
        // Every cut before the terminal event, and cuts inside its JSON.
        let cuts = (1..completed).step_by(37).chain([completed, completed + 60, bytes.len() - 40]);
        for cut in cuts {
            let events = decode_chunks(&[&bytes[..cut]]);
            assert!(
                !events.iter().any(|e| matches!(e, StreamEvent::Finish { .. } | StreamEvent::Stop)),
                "{name}: cut at {cut} invented an ending"
            );
            let normalized = normalize(events);
            assert!(matches!(normalized.last(), Some(StreamEvent::Error { .. })), "{name}: cut at {cut}");
        }
    }
}

#[test]
fn stream_incomplete_and_failed_and_error_events() {
    let incomplete = br#"event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","model":"o4-mini","status":"in_progress","output":[]}}

event: response.incomplete
data: {"type":"response.incomplete","sequence_number":1,"response":{"id":"resp_1","model":"o4-mini","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[],"usage":{"input_tokens":10,"output_tokens":300,"total_tokens":310}}}

"#;
    let events = decode_chunks(&[incomplete]);
    assert!(
        matches!(&events[1], StreamEvent::Finish { stop_reason: StopReason::MaxTokens, usage, .. } if usage.tokens.output_tokens == 300)
    );
    assert_eq!(events[2], StreamEvent::Stop);

    let failed = br#"event: response.failed
data: {"type":"response.failed","sequence_number":3,"response":{"id":"resp_2","model":"gpt-4.1","status":"failed","error":{"code":"rate_limit_exceeded","message":"Rate limit reached. Please try again in 2s."},"output":[]}}

"#;
    let events = decode_chunks(&[failed]);
    assert_eq!(
        events[1],
        StreamEvent::Error {
            kind: "rate_limit".into(),
            message: "Rate limit reached. Please try again in 2s.".into()
        }
    );

    let error = br#"event: error
data: {"type":"error","sequence_number":0,"code":"server_is_overloaded","message":"The server is overloaded.","param":null}

"#;
    assert_eq!(
        decode_chunks(&[error]),
        vec![StreamEvent::Error { kind: "overloaded".into(), message: "The server is overloaded.".into() }]
    );
}

#[test]
fn stream_without_item_events_uses_the_final_output() {
    // Some Responses-compatible servers send only the lifecycle events.
    let body = br#"data: {"type":"response.created","response":{"id":"resp_9","model":"m","output":[]}}

data: {"type":"response.completed","response":{"id":"resp_9","model":"m","status":"completed","output":[{"type":"message","id":"msg_1","role":"assistant","content":[{"type":"output_text","text":"hello"}]},{"type":"function_call","id":"fc_1","call_id":"call_1","name":"f","arguments":"{}"}],"usage":{"input_tokens":3,"output_tokens":2,"total_tokens":5}}}

"#;
    let events = decode_chunks(&[body]);
    assert_eq!(
        events[1..7],
        [
            StreamEvent::BlockStart { index: 0, block: BlockStart::Text },
            StreamEvent::Delta { index: 0, delta: Delta::Text("hello".into()) },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::BlockStart {
                index: 1,
                block: BlockStart::ToolUse { id: "call_1".into(), name: "f".into() }
            },
            StreamEvent::Delta { index: 1, delta: Delta::Json("{}".into()) },
            StreamEvent::BlockStop { index: 1 },
        ]
    );
    assert!(matches!(&events[7], StreamEvent::Finish { stop_reason: StopReason::ToolUse, .. }));
}

// ---------------------------------------------------------------------------------------------
// Stream encoding.

fn encode_events(events: &[StreamEvent]) -> Vec<u8> {
    let mut encoder = CODEC.stream_encoder();
    let mut out = BytesMut::new();
    for ev in events {
        encoder.encode(ev, &mut out);
    }
    out.to_vec()
}

/// `(event name, data)` of every SSE event, checking that each is well-formed on the way.
fn wire_events(bytes: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(bytes).expect("utf8");
    assert!(text.ends_with("\n\n"), "every event is terminated");
    text.split_terminator("\n\n")
        .map(|raw| {
            let mut lines = raw.lines();
            let name = lines.next().and_then(|l| l.strip_prefix("event: ")).expect("event line").to_owned();
            let data = lines.next().and_then(|l| l.strip_prefix("data: ")).expect("data line");
            assert!(lines.next().is_none(), "one data line per event");
            let data: Value = serde_json::from_str(data).expect("data is JSON");
            assert_eq!(data["type"], json!(name), "type matches the event name");
            (name, data)
        })
        .collect()
}

fn usage(input: u64, output: u64, cached: u64, reasoning: u64) -> Usage {
    Usage {
        tokens: TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cache_read_input_tokens: cached,
            ..TokenUsage::default()
        },
        reasoning_tokens: reasoning,
    }
}

fn canonical_stream() -> Vec<StreamEvent> {
    use StreamEvent as E;
    let delta = |index, delta| E::Delta { index, delta };
    vec![
        E::Start { id: "resp_test".into(), model: "gpt-5".into(), usage: Usage::default() },
        E::BlockStart { index: 0, block: BlockStart::Thinking },
        delta(0, Delta::Thinking("Let me".into())),
        delta(0, Delta::Thinking(" think.".into())),
        delta(0, Delta::Signature("gAAAAA-signature".into())),
        E::BlockStop { index: 0 },
        E::BlockStart { index: 1, block: BlockStart::Text },
        delta(1, Delta::Text("Checking".into())),
        delta(1, Delta::Text(" the weather.".into())),
        E::BlockStop { index: 1 },
        E::BlockStart {
            index: 2,
            block: BlockStart::ToolUse { id: "call_1".into(), name: "get_weather".into() },
        },
        delta(2, Delta::Json("{\"loc".into())),
        delta(2, Delta::Json("ation\":\"Paris\"}".into())),
        E::BlockStop { index: 2 },
        E::BlockStart {
            index: 3,
            block: BlockStart::ToolUse { id: "toolu_2".into(), name: "get_time".into() },
        },
        delta(3, Delta::Json("{}".into())),
        E::BlockStop { index: 3 },
        E::Finish { stop_reason: StopReason::ToolUse, stop_sequence: None, usage: usage(100, 50, 1000, 20) },
        E::Stop,
    ]
}

#[test]
fn stream_encoder_round_trips_through_the_decoder() {
    let events = canonical_stream();
    let bytes = encode_events(&events);
    assert_eq!(decode_chunks(&[&bytes]), events);
}

#[test]
fn stream_encoder_follows_the_wire_format() {
    let wire = wire_events(&encode_events(&canonical_stream()));
    let names: Vec<&str> = wire.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (_, data)) in wire.iter().enumerate() {
        assert_eq!(data["sequence_number"], json!(i), "sequence numbers count up from 0");
    }
    let created = &wire[0].1["response"];
    assert_eq!(
        (created["id"].as_str(), created["status"].as_str()),
        (Some("resp_test"), Some("in_progress"))
    );
    assert_eq!(created["model"], "gpt-5");

    // Items: ids by kind, output_index in order, events of an item name its id.
    let added: Vec<&Value> =
        wire.iter().filter(|(n, _)| n == "response.output_item.added").map(|(_, d)| d).collect();
    let prefixes = ["rs_", "msg_", "fc_", "fc_"];
    for (i, (ev, prefix)) in added.iter().zip(prefixes).enumerate() {
        assert_eq!(ev["output_index"], json!(i));
        assert!(ev["item"]["id"].as_str().is_some_and(|id| id.starts_with(prefix)), "{ev}");
    }
    let item_of = |i: usize| added[i]["item"]["id"].clone();
    for (name, data) in &wire[2..wire.len() - 1] {
        let Some(index) = data["output_index"].as_u64() else { panic!("{name} has no output_index") };
        if name != "response.output_item.added" && name != "response.output_item.done" {
            assert_eq!(data["item_id"], item_of(index as usize), "{name}");
        }
    }
    assert_eq!(added[2]["item"]["call_id"], "call_1", "the IR tool id is the call_id");
    assert_eq!(added[3]["item"]["call_id"], "toolu_2");
    assert_eq!(wire[11].1["content_index"], 0);
    assert_eq!(wire[11].1["delta"], "Checking");

    let done: Vec<&Value> =
        wire.iter().filter(|(n, _)| n == "response.output_item.done").map(|(_, d)| &d["item"]).collect();
    assert_eq!(done[0]["encrypted_content"], "gAAAAA-signature");
    assert_eq!(done[0]["summary"], json!([{"type": "summary_text", "text": "Let me think."}]));
    assert_eq!(done[1]["content"][0]["text"], "Checking the weather.");
    assert_eq!(done[2]["arguments"], "{\"location\":\"Paris\"}");
    assert_eq!(done[2]["status"], "completed");

    let completed = &wire[wire.len() - 1].1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"].as_array().map(Vec::len), Some(4));
    assert_eq!(completed["usage"]["input_tokens"], 1100, "cached tokens are inside input_tokens");
    assert_eq!(completed["usage"]["input_tokens_details"]["cached_tokens"], 1000);
    assert_eq!(completed["usage"]["output_tokens_details"]["reasoning_tokens"], 20);
    assert_eq!(completed["usage"]["total_tokens"], 1150);
}

#[test]
fn stream_encoder_error_ending() {
    use StreamEvent as E;
    let events = vec![
        E::Start { id: "resp_e".into(), model: "gpt-5".into(), usage: Usage::default() },
        E::BlockStart { index: 0, block: BlockStart::Text },
        E::Delta { index: 0, delta: Delta::Text("partial".into()) },
        E::BlockStop { index: 0 },
        E::Error { kind: "overloaded".into(), message: "upstream overloaded".into() },
    ];
    let bytes = encode_events(&events);
    assert_eq!(decode_chunks(&[&bytes]), events);
    let wire = wire_events(&bytes);
    let (last, data) = wire.last().expect("events");
    assert_eq!(last, "response.failed");
    assert_eq!(data["response"]["status"], "failed");
    assert_eq!(data["response"]["error"]["message"], "upstream overloaded");
    assert!(!wire.iter().any(|(n, _)| n == "response.completed"));
    assert_eq!(wire.iter().filter(|(n, _)| n == "response.failed").count(), 1);
}

#[test]
fn stream_encoder_max_tokens_is_response_incomplete() {
    use StreamEvent as E;
    let events = vec![
        E::Start { id: "resp_m".into(), model: "gpt-5".into(), usage: Usage::default() },
        E::BlockStart { index: 0, block: BlockStart::Text },
        E::Delta { index: 0, delta: Delta::Text("Once upon".into()) },
        E::BlockStop { index: 0 },
        E::Finish { stop_reason: StopReason::MaxTokens, stop_sequence: None, usage: usage(5, 2, 0, 0) },
        E::Stop,
    ];
    let bytes = encode_events(&events);
    assert_eq!(decode_chunks(&[&bytes]), events);
    let wire = wire_events(&bytes);
    let (last, data) = wire.last().expect("events");
    assert_eq!(last, "response.incomplete");
    assert_eq!(data["response"]["incomplete_details"]["reason"], "max_output_tokens");
}

#[test]
fn fixture_streams_survive_decode_normalize_encode_decode() {
    for name in STREAMS {
        let normalized = normalize(decode_chunks(&[&stream_fixture(name)]));
        let bytes = encode_events(&normalized);
        assert_eq!(decode_chunks(&[&bytes]), normalized, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn decode_vendor_errors() {
    let rate = CODEC.decode_error(429, &fixture("errors/rate_limit.json"));
    assert_eq!(rate.kind, "rate_limit");
    assert_eq!(rate.status, 429);
    assert!(rate.message.starts_with("Rate limit reached for gpt-4.1"));
    assert_eq!(CODEC.decode_error(400, &fixture("errors/invalid_request.json")).kind, "invalid_request");
    assert_eq!(CODEC.decode_error(401, &fixture("errors/invalid_api_key.json")).kind, "authentication");
    // Without a telling status, the code decides.
    assert_eq!(CODEC.decode_error(200, &fixture("errors/rate_limit.json")).kind, "rate_limit");
    let html = CODEC.decode_error(502, b"<html>502 Bad Gateway</html>");
    assert_eq!((html.kind.as_str(), html.message.as_str()), ("api_error", "<html>502 Bad Gateway</html>"));
    assert_eq!(CODEC.decode_error(503, b"").kind, "overloaded");
}

#[test]
fn encode_errors_in_the_vendor_shape() {
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
        let body: Value = serde_json::from_slice(&CODEC.encode_error(&info)).expect("json");
        let error = body["error"].as_object().expect("error object");
        let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, vec!["code", "message", "param", "type"]);
        assert!(error["type"].is_string());
        assert_eq!(error["message"], json!(info.message));
        let back = CODEC.decode_error(status, &CODEC.encode_error(&info));
        assert_eq!(back, info);
    }
    let body: Value = serde_json::from_slice(&CODEC.encode_error(&ErrorInfo {
        status: 429,
        kind: "rate_limit".into(),
        message: "slow down".into(),
    }))
    .expect("json");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
}

// ---------------------------------------------------------------------------------------------
// Robustness: arbitrary input never panics.

#[test]
fn decoders_do_not_panic_on_garbage() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for name in REQUESTS {
        corpus.push(fixture(&format!("requests/{name}.json")));
    }
    for name in RESPONSES {
        corpus.push(fixture(&format!("responses/{name}.json")));
    }
    for name in STREAMS {
        corpus.push(stream_fixture(name));
    }
    let pieces: &[&[u8]] =
        &[b"{", b"}", b"[", b"]", b"\"", b":", b",", b"null", b"1e400", b"-1", b"\n\n", b"data: ", b"\xff"];
    for round in 0..3000 {
        let base = &corpus[round % corpus.len()];
        let mut bytes = base.clone();
        for _ in 0..(next() % 8 + 1) {
            let at = (next() as usize) % (bytes.len() + 1);
            match next() % 3 {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 => {
                    let piece = pieces[(next() as usize) % pieces.len()];
                    bytes.splice(at..at, piece.iter().copied());
                }
                _ => {
                    if at < bytes.len() {
                        bytes[at] = next() as u8;
                    }
                }
            }
        }
        let _ = CODEC.decode_request(&bytes, &mut Notes::default());
        let _ = CODEC.decode_response(&bytes);
        let _ = CODEC.decode_error(500, &bytes);
        let events = decode_chunks(&[&bytes]);
        // Whatever came out must encode without trouble too.
        let _ = encode_events(&normalize(events));
    }
    // Events with wrong types everywhere.
    let odd = br#"data: {"type":"response.output_item.added","output_index":-1,"item":{"type":"message"}}

data: {"type":"response.output_item.added","output_index":18446744073709551615,"item":{"type":"function_call","call_id":5}}

data: {"type":"response.output_text.delta","output_index":18446744073709551615,"delta":7}

data: {"type":"response.output_item.done","output_index":3,"item":{"type":"message","content":"x"}}

data: {"type":"response.completed","response":{"output":7,"usage":{"input_tokens":-5}}}

"#;
    let _ = decode_chunks(&[odd]);
}
