//! The Google Gemini codec: hand-written fixtures (from the vendor documentation) decoded into the
//! IR and snapshotted, round trips Gemini → IR → Gemini → IR, stream decoding under any chunking
//! and early ends, stream encoding checked against the wire format and decoded back, errors.

use bytes::BytesMut;
use gateway_core::translate::gemini::GeminiCodec;
use gateway_core::translate::ir::{
    Block, BlockStart, Delta, ImageSource, Message, Reasoning, Request, ResponseFormat, Role, StopReason,
    StreamEvent, Tool, ToolChoice, Usage,
};
use gateway_core::translate::normalize::StreamNormalizer;
use gateway_core::translate::{Codec, ErrorInfo, Notes};
use gateway_core::usage::TokenUsage;
use serde_json::{Value, json};

const REQUESTS: &[&str] = &[
    "request_text",
    "request_system_multiturn",
    "request_images",
    "request_tools",
    "request_parallel_tools",
    "request_thinking",
    "request_snake_case",
    "request_structured_output",
    "request_unsupported",
];
const RESPONSES: &[&str] =
    &["response_text", "response_tool_calls", "response_reasoning", "response_safety", "response_max_tokens"];
const STREAMS: &[&str] = &["stream_text", "stream_tool_call", "stream_reasoning"];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/gemini/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn request(name: &str) -> (Request, Notes) {
    let mut notes = Notes::default();
    let req = GeminiCodec.decode_request(&fixture(&format!("{name}.json")), &mut notes).expect("decodes");
    (req, notes)
}

fn text(t: &str) -> Block {
    Block::Text { text: t.into() }
}

fn signature(sig: &str) -> Block {
    Block::Thinking { text: String::new(), signature: Some(sig.into()) }
}

fn has_note(notes: &Notes, prefix: &str) -> bool {
    notes.0.iter().any(|n| n.starts_with(prefix))
}

fn usage(input: u64, output: u64, cache_read: u64, reasoning: u64) -> Usage {
    Usage {
        tokens: TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cache_read_input_tokens: cache_read,
            ..TokenUsage::default()
        },
        reasoning_tokens: reasoning,
    }
}

// ---------------------------------------------------------------------------------------------
// Requests.

#[test]
fn request_fixtures_snapshot() {
    for name in REQUESTS {
        let (req, notes) = request(name);
        insta::assert_json_snapshot!(*name, json!({ "ir": req, "notes": notes.0 }));
    }
}

#[test]
fn simple_text_request() {
    let (req, notes) = request("request_text");
    // The model and streaming are in the path, not the body.
    assert_eq!(req.model, "");
    assert!(!req.stream);
    assert_eq!(
        req.messages,
        vec![Message { role: Role::User, content: vec![text("Explain how AI works in a few words")] }]
    );
    assert!(notes.is_empty(), "{notes:?}");
}

#[test]
fn system_and_multi_turn_with_sampling() {
    let (req, _) = request("request_system_multiturn");
    assert_eq!(req.system, vec!["You are a cat. Your name is Neko.", "Answer in at most two sentences."]);
    let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, vec![Role::User, Role::Assistant, Role::User]);
    assert_eq!(req.stop, vec!["Title"]);
    assert_eq!(req.temperature, Some(1.0));
    assert_eq!(req.top_p, Some(0.8));
    assert_eq!(req.top_k, Some(10));
    assert_eq!(req.max_tokens, Some(800));
}

#[test]
fn images_inline_and_by_uri() {
    let (req, notes) = request("request_images");
    let content = &req.messages[0].content;
    assert!(matches!(
        &content[1],
        Block::Image { source: ImageSource::Base64 { media_type, data } }
            if media_type == "image/png" && data.starts_with("iVBORw0KGgo")
    ));
    assert_eq!(
        content[2],
        Block::Image {
            source: ImageSource::Url {
                url: "https://storage.googleapis.com/generativeai-downloads/images/scones.jpg".into()
            }
        }
    );
    assert!(
        matches!(&content[3], Block::Image { source: ImageSource::Url { url } } if url.contains("/files/"))
    );
    // The scones URL says jpeg by itself; the Files API URI does not, so its type is lost.
    assert_eq!(notes.0.len(), 1, "{notes:?}");
    assert!(has_note(&notes, "fileData.mimeType"), "{notes:?}");
}

#[test]
fn tools_choice_call_and_result() {
    let (req, notes) = request("request_tools");
    assert_eq!(
        req.tools[0],
        Tool {
            name: "get_current_weather".into(),
            description: Some("Get the current weather in a given location".into()),
            parameters: json!({
                "type": "object",
                "properties": {
                    "location": { "type": "string", "description": "The city and state, e.g. San Francisco, CA" },
                    "unit": { "type": ["string", "null"], "enum": ["celsius", "fahrenheit"] }
                },
                "required": ["location"]
            }),
        }
    );
    // parametersJsonSchema is JSON Schema already and passes unchanged.
    assert_eq!(req.tools[1].parameters["additionalProperties"], json!(false));
    assert_eq!(req.tools[1].parameters["properties"]["days"]["minimum"], json!(1));
    assert_eq!(req.tool_choice, Some(ToolChoice::Tool { name: "get_current_weather".into() }));
    assert_eq!(req.temperature, Some(0.0));
    assert_eq!(
        req.messages[1].content,
        vec![Block::ToolUse {
            id: "call_0".into(),
            name: "get_current_weather".into(),
            input: json!({ "location": "Boston, MA", "unit": "fahrenheit" }),
        }]
    );
    let Block::ToolResult { tool_use_id, content, is_error } = &req.messages[2].content[0] else {
        panic!("expected a tool result: {:?}", req.messages[2]);
    };
    assert_eq!(tool_use_id, "call_0");
    assert!(!is_error);
    let Block::Text { text } = &content[0] else { panic!("expected text: {content:?}") };
    let result: Value = serde_json::from_str(text).expect("the result object is kept as JSON");
    assert_eq!(result, json!({ "temperature": 38, "unit": "fahrenheit", "description": "Light snow" }));
    assert!(notes.is_empty(), "{notes:?}");
}

#[test]
fn parallel_calls_pair_with_results_by_name_and_order() {
    let (req, _) = request("request_parallel_tools");
    let ids: Vec<(&str, &str)> = req.messages[1]
        .content
        .iter()
        .map(|b| match b {
            Block::ToolUse { id, name, .. } => (id.as_str(), name.as_str()),
            other => panic!("expected a call: {other:?}"),
        })
        .collect();
    assert_eq!(
        ids,
        vec![("call_0", "power_disco_ball"), ("call_1", "get_weather"), ("call_2", "get_weather")]
    );
    assert_eq!(
        req.messages[2].content,
        vec![
            Block::ToolResult {
                tool_use_id: "call_0".into(),
                content: vec![text("Disco ball is spinning!")],
                is_error: false
            },
            Block::ToolResult {
                tool_use_id: "call_1".into(),
                content: vec![text(r#"{"sky":"clear","temp_c":18}"#)],
                is_error: false
            },
            Block::ToolResult {
                tool_use_id: "call_2".into(),
                content: vec![text("weather service timed out for London")],
                is_error: true
            },
        ]
    );
    assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
}

#[test]
fn thinking_history_keeps_thoughts_and_signatures_in_place() {
    let (req, _) = request("request_thinking");
    assert_eq!(
        req.reasoning,
        Some(Reasoning { budget_tokens: Some(4096), summary: Some("auto".into()), ..Reasoning::default() })
    );
    assert_eq!(req.max_tokens, Some(8192));
    let first = &req.messages[1].content;
    assert!(matches!(&first[0], Block::Thinking { text, signature: None } if text.starts_with("**Checking")));
    assert_eq!(first[1], signature("CiQBVKhc7mYwQ0m2k1ZfR3VnYXJ0aGlua2luZ3NpZ25hdHVyZUE="));
    assert!(matches!(&first[2], Block::ToolUse { id, name, .. } if id == "call_0" && name == "check_flight"));
    assert!(
        matches!(&req.messages[2].content[0], Block::ToolResult { tool_use_id, .. } if tool_use_id == "call_0")
    );
    assert!(matches!(&req.messages[3].content[1], Block::ToolUse { id, .. } if id == "call_1"));
    assert!(
        matches!(&req.messages[4].content[0], Block::ToolResult { tool_use_id, .. } if tool_use_id == "call_1")
    );

    // Encoded again, the signature rides on the function call it came with.
    let mut notes = Notes::default();
    let body: Value = serde_json::from_slice(&GeminiCodec.encode_request(&req, &mut notes).expect("encodes"))
        .expect("json");
    let parts = &body["contents"][1]["parts"];
    assert_eq!(parts[0]["thought"], json!(true));
    assert!(parts[0].get("thoughtSignature").is_none());
    assert_eq!(parts[1]["functionCall"]["name"], "check_flight");
    assert_eq!(parts[1]["thoughtSignature"], "CiQBVKhc7mYwQ0m2k1ZfR3VnYXJ0aGlua2luZ3NpZ25hdHVyZUE=");
    assert_eq!(parts.as_array().map(Vec::len), Some(2));
    assert_eq!(
        body["generationConfig"]["thinkingConfig"],
        json!({ "thinkingBudget": 4096, "includeThoughts": true })
    );
}

#[test]
fn snake_case_fields_are_read() {
    let (req, notes) = request("request_snake_case");
    assert_eq!(req.system, vec!["You describe images for a photo archive."]);
    assert!(matches!(
        &req.messages[0].content[1],
        Block::Image { source: ImageSource::Base64 { media_type, .. } } if media_type == "image/jpeg"
    ));
    assert!(
        matches!(&req.messages[1].content[0], Block::ToolUse { id, name, .. } if id == "call_0" && name == "file_photo")
    );
    assert_eq!(
        req.messages[2].content,
        vec![Block::ToolResult {
            tool_use_id: "call_0".into(),
            content: vec![text("filed as #1207")],
            is_error: false
        }]
    );
    assert_eq!(req.tools[0].parameters["required"], json!(["album"]));
    assert_eq!(req.tool_choice, Some(ToolChoice::Tool { name: "file_photo".into() }));
    assert_eq!(req.max_tokens, Some(256));
    assert_eq!(req.temperature, Some(0.7));
    assert_eq!(req.top_p, Some(0.95));
    assert_eq!(req.top_k, Some(40));
    assert_eq!(req.stop, vec!["\n\n\n"]);
    assert_eq!(req.reasoning, Some(Reasoning { effort: Some("low".into()), ..Reasoning::default() }));
    assert!(notes.is_empty(), "{notes:?}");

    // Written back in camelCase.
    let mut notes = Notes::default();
    let body: Value = serde_json::from_slice(&GeminiCodec.encode_request(&req, &mut notes).expect("encodes"))
        .expect("json");
    for key in ["systemInstruction", "contents", "tools", "toolConfig", "generationConfig"] {
        assert!(body.get(key).is_some(), "{key} missing in {body}");
    }
    assert!(body["contents"][0]["parts"][1]["inlineData"]["mimeType"].is_string());
    assert_eq!(body["generationConfig"]["maxOutputTokens"], json!(256));
    assert_eq!(body["generationConfig"]["thinkingConfig"], json!({ "thinkingLevel": "low" }));
    assert_eq!(
        body["toolConfig"],
        json!({ "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": ["file_photo"] } })
    );
}

#[test]
fn structured_output_and_disabled_thinking() {
    let (req, _) = request("request_structured_output");
    assert_eq!(req.messages[0].role, Role::User);
    assert_eq!(
        req.response_format,
        Some(ResponseFormat::JsonSchema {
            name: None,
            schema: json!({
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "recipeName": { "type": "string" },
                        "ingredients": { "type": "array", "items": { "type": "string" } }
                    },
                    "propertyOrdering": ["recipeName", "ingredients"]
                }
            }),
            strict: None,
        })
    );
    assert_eq!(req.reasoning, Some(Reasoning { disabled: true, ..Reasoning::default() }));
}

#[test]
fn what_cannot_be_carried_is_noted_and_unknown_fields_are_ignored() {
    let (req, notes) = request("request_unsupported");
    assert_eq!(req.messages.len(), 1);
    assert!(req.tools.is_empty());
    for expected in [
        "tools[].googleSearch",
        "tools[].codeExecution",
        "safetySettings",
        "cachedContent",
        "generationConfig.candidateCount",
        "generationConfig.seed",
        "generationConfig.presencePenalty",
        "generationConfig.responseModalities",
    ] {
        assert!(has_note(&notes, expected), "{expected} not noted: {notes:?}");
    }
    assert!(!notes.0.iter().any(|n| n.contains("futureKnob") || n.contains("someFutureField")), "{notes:?}");
}

#[test]
fn requests_round_trip_through_the_ir() {
    for name in REQUESTS {
        let (first, _) = request(name);
        let mut notes = Notes::default();
        let body = GeminiCodec.encode_request(&first, &mut notes).expect("encodes");
        let second = GeminiCodec.decode_request(&body, &mut Notes::default()).expect("decodes again");
        assert_eq!(first, second, "{name}: {}", String::from_utf8_lossy(&body));
    }
}

#[test]
fn malformed_requests_are_errors() {
    let mut notes = Notes::default();
    for body in [
        &b"not json"[..],
        b"[]",
        br#"{"contents": {"role": "user"}}"#,
        br#"{"contents": [{"parts": [{"text": 7}]}]}"#,
        br#"{"contents": [], "generationConfig": {"temperature": "hot"}}"#,
        br#"{"contents": [], "generationConfig": {"maxOutputTokens": -5}}"#,
        br#"{"contents": [], "tools": [{"functionDeclarations": [{"description": "no name"}]}]}"#,
    ] {
        assert!(
            GeminiCodec.decode_request(body, &mut notes).is_err(),
            "accepted {}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn request_path_carries_model_and_stream() {
    let mut req = Request { model: "gemini-2.5-pro".into(), ..Request::default() };
    assert_eq!(GeminiCodec.request_path(&req), "/v1beta/models/gemini-2.5-pro:generateContent");
    req.stream = true;
    assert_eq!(GeminiCodec.request_path(&req), "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse");
    req.model = "models/gemini-2.5-flash".into();
    assert_eq!(
        GeminiCodec.request_path(&req),
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
}

#[test]
fn encoding_from_other_dialects_notes_what_gemini_cannot_take() {
    let req = Request {
        model: "gemini-2.5-flash".into(),
        system: vec!["Be brief.".into()],
        messages: vec![
            Message { role: Role::User, content: vec![text("Weather in Oslo?")] },
            Message {
                role: Role::Assistant,
                content: vec![
                    Block::Thinking {
                        text: "The user wants weather.".into(),
                        signature: Some("sig-1".into()),
                    },
                    Block::RedactedThinking { data: "opaque".into() },
                    signature("sig-2"),
                    Block::ToolUse {
                        id: "toolu_01".into(),
                        name: "get_weather".into(),
                        input: json!({"city": "Oslo"}),
                    },
                    signature("sig-3"),
                ],
            },
            Message {
                role: Role::User,
                content: vec![Block::ToolResult {
                    tool_use_id: "toolu_01".into(),
                    content: vec![
                        text("service down"),
                        Block::Image {
                            source: ImageSource::Base64 {
                                media_type: "image/png".into(),
                                data: "iVBORw0K".into(),
                            },
                        },
                    ],
                    is_error: true,
                }],
            },
            Message {
                role: Role::User,
                content: vec![Block::Image {
                    source: ImageSource::Url { url: "data:image/gif;base64,R0lGOD".into() },
                }],
            },
        ],
        tool_choice: Some(ToolChoice::Required),
        parallel_tool_calls: Some(false),
        user: Some("u-1".into()),
        reasoning: Some(Reasoning {
            effort: Some("high".into()),
            summary: Some("auto".into()),
            ..Reasoning::default()
        }),
        response_format: Some(ResponseFormat::JsonSchema {
            name: Some("weather".into()),
            schema: json!({"type": "object"}),
            strict: Some(true),
        }),
        ..Request::default()
    };
    let mut notes = Notes::default();
    let body: Value = serde_json::from_slice(&GeminiCodec.encode_request(&req, &mut notes).expect("encodes"))
        .expect("json");
    let parts = &body["contents"][1]["parts"];
    assert_eq!(
        parts[0],
        json!({ "text": "The user wants weather.", "thought": true, "thoughtSignature": "sig-1" })
    );
    // The empty signed block's signature goes onto the call after it; ids are dropped.
    assert_eq!(
        parts[1],
        json!({ "functionCall": { "name": "get_weather", "args": { "city": "Oslo" } }, "thoughtSignature": "sig-2" })
    );
    // A trailing signature with nothing after it is an empty text part, as Gemini sends it.
    assert_eq!(parts[2], json!({ "text": "", "thoughtSignature": "sig-3" }));
    assert_eq!(parts.as_array().map(Vec::len), Some(3));
    assert_eq!(
        body["contents"][2]["parts"][0],
        json!({ "functionResponse": {
            "name": "get_weather",
            "response": { "error": "service down" },
            "parts": [{ "inlineData": { "mimeType": "image/png", "data": "iVBORw0K" } }]
        } })
    );
    assert_eq!(
        body["contents"][3]["parts"][0],
        json!({ "inlineData": { "mimeType": "image/gif", "data": "R0lGOD" } })
    );
    assert_eq!(body["toolConfig"]["functionCallingConfig"], json!({ "mode": "ANY" }));
    // Gemini 2.x takes budgets, not levels.
    assert_eq!(
        body["generationConfig"]["thinkingConfig"],
        json!({ "thinkingBudget": 24576, "includeThoughts": true })
    );
    assert_eq!(body["generationConfig"]["responseJsonSchema"], json!({"type": "object"}));
    assert_eq!(body["systemInstruction"], json!({ "parts": [{ "text": "Be brief." }] }));
    for expected in [
        "redacted_thinking",
        "tool_use.id",
        "parallel_tool_calls",
        "user",
        "reasoning.effort",
        "response_format.json_schema.name",
        "response_format.json_schema.strict",
    ] {
        assert!(has_note(&notes, expected), "{expected} not noted: {notes:?}");
    }

    // The same request for a Gemini 3 model uses the level.
    let req = Request { model: "gemini-3-pro-preview".into(), ..req };
    let body: Value =
        serde_json::from_slice(&GeminiCodec.encode_request(&req, &mut Notes::default()).expect("encodes"))
            .expect("json");
    assert_eq!(
        body["generationConfig"]["thinkingConfig"],
        json!({ "thinkingLevel": "high", "includeThoughts": true })
    );
}

// ---------------------------------------------------------------------------------------------
// Responses.

fn response(name: &str) -> gateway_core::translate::ir::Response {
    GeminiCodec.decode_response(&fixture(&format!("{name}.json"))).expect("decodes")
}

#[test]
fn response_fixtures_snapshot() {
    for name in RESPONSES {
        insta::assert_json_snapshot!(*name, response(name));
    }
}

#[test]
fn text_response() {
    let resp = response("response_text");
    assert_eq!(resp.id, "mAitaLmkHPPlz7IPvtfUqQ4");
    assert_eq!(resp.model, "gemini-2.0-flash");
    assert!(matches!(&resp.content[..], [Block::Text { text }] if text.starts_with("AI learns")));
    assert_eq!(resp.stop_reason, StopReason::EndTurn);
    assert_eq!(resp.usage, usage(8, 20, 0, 0));
}

#[test]
fn tool_call_response() {
    let resp = response("response_tool_calls");
    assert_eq!(resp.content[0], text("I'll look up both cities."));
    assert_eq!(resp.content[1], signature("CiIBVKhc7r3xZGVjaXNpb25zaWduYXR1cmVmb3JwYXJpcw=="));
    assert_eq!(
        resp.content[2],
        Block::ToolUse {
            id: "call_Xr3vaJ_kL8a1qtsPzYHo8A4_0".into(),
            name: "get_weather".into(),
            input: json!({ "city": "Paris" }),
        }
    );
    assert!(matches!(&resp.content[3], Block::ToolUse { id, input, .. }
        if id == "call_Xr3vaJ_kL8a1qtsPzYHo8A4_1" && input["city"] == "London"));
    assert_eq!(resp.stop_reason, StopReason::ToolUse);
    // Thoughts count as output.
    assert_eq!(resp.usage, usage(112, 108, 0, 72));
}

#[test]
fn reasoning_response_with_cache() {
    let resp = response("response_reasoning");
    assert!(
        matches!(&resp.content[0], Block::Thinking { text, signature: None } if text.starts_with("**Working"))
    );
    assert_eq!(resp.content[1], signature("CiQBVKhc7kZ0aGVyZWFzb25pbmdzaWduYXR1cmVmb3JzdW1z"));
    assert_eq!(resp.content[2], text("The sum of the first ten prime numbers is **129**."));
    // promptTokenCount includes the cached tokens; the IR does not.
    assert_eq!(resp.usage, usage(102, 664, 2048, 648));
}

#[test]
fn blocked_and_truncated_responses() {
    let resp = response("response_safety");
    assert!(resp.content.is_empty());
    assert_eq!(resp.stop_reason, StopReason::Refusal);
    assert_eq!(resp.usage, usage(14, 0, 0, 0));
    assert_eq!(response("response_max_tokens").stop_reason, StopReason::MaxTokens);
    let blocked =
        br#"{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7}}"#;
    assert_eq!(GeminiCodec.decode_response(blocked).expect("decodes").stop_reason, StopReason::Refusal);
}

#[test]
fn responses_round_trip_through_the_ir() {
    for name in RESPONSES {
        let first = response(name);
        let mut notes = Notes::default();
        let body = GeminiCodec.encode_response(&first, &mut notes).expect("encodes");
        let second = GeminiCodec.decode_response(&body).expect("decodes again");
        assert_eq!(first, second, "{name}: {}", String::from_utf8_lossy(&body));
    }
}

#[test]
fn encoded_response_has_gemini_shape_and_accounting() {
    let resp = response("response_reasoning");
    let body: Value =
        serde_json::from_slice(&GeminiCodec.encode_response(&resp, &mut Notes::default()).expect("encodes"))
            .expect("json");
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");
    assert_eq!(body["candidates"][0]["content"]["role"], "model");
    assert_eq!(body["candidates"][0]["content"]["parts"][1]["thoughtSignature"], resp_sig(&resp));
    assert_eq!(
        body["usageMetadata"],
        json!({
            "promptTokenCount": 2150, "cachedContentTokenCount": 2048, "candidatesTokenCount": 16,
            "thoughtsTokenCount": 648, "totalTokenCount": 2814
        })
    );
    assert_eq!(body["modelVersion"], "gemini-2.5-pro");
    assert_eq!(body["responseId"], "7bvvaPLqBJ3Mz7IPi-HL4QU");

    // Cache writes have no Gemini field: counted as prompt, and noted.
    let mut other = resp.clone();
    other.usage.tokens.cache_creation_input_tokens = 100;
    other.stop_sequence = Some("END".into());
    let mut notes = Notes::default();
    let body: Value =
        serde_json::from_slice(&GeminiCodec.encode_response(&other, &mut notes).expect("encodes"))
            .expect("json");
    assert_eq!(body["usageMetadata"]["promptTokenCount"], json!(2250));
    assert!(has_note(&notes, "usage.cache_creation_input_tokens"), "{notes:?}");
    assert!(has_note(&notes, "stop_sequence"), "{notes:?}");
}

fn resp_sig(resp: &gateway_core::translate::ir::Response) -> String {
    resp.content
        .iter()
        .find_map(|b| match b {
            Block::Thinking { text, signature: Some(s) } if text.is_empty() => Some(s.clone()),
            _ => None,
        })
        .expect("a signature")
}

#[test]
fn an_error_body_is_not_a_response() {
    assert!(GeminiCodec.decode_response(&fixture("error_invalid_argument.json")).is_err());
    assert!(GeminiCodec.decode_response(b"{\"candidates\": 3}").is_err());
    assert!(GeminiCodec.decode_response(b"<html>").is_err());
}

// ---------------------------------------------------------------------------------------------
// Stream decoding.

fn decode_chunks(chunks: &[&[u8]]) -> Vec<StreamEvent> {
    let mut decoder = GeminiCodec.stream_decoder();
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk, &mut out).expect("valid stream");
    }
    decoder.finish(&mut out);
    out
}

fn decode_stream(name: &str) -> Vec<StreamEvent> {
    decode_chunks(&[&fixture(&format!("{name}.sse"))])
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

#[test]
fn stream_fixtures_snapshot() {
    for name in STREAMS {
        insta::assert_json_snapshot!(*name, decode_stream(name));
    }
}

#[test]
fn streams_decode_the_same_under_any_chunking() {
    for name in STREAMS {
        let bytes = fixture(&format!("{name}.sse"));
        let whole = decode_chunks(&[&bytes]);
        for split in 1..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(decode_chunks(&[a, b]), whole, "{name} split at {split}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_chunks(&singles), whole, "{name} byte by byte");
        // Already well formed: the normalizer changes nothing.
        assert_eq!(normalize(whole.clone()), whole, "{name}");
    }
}

#[test]
fn text_stream_events() {
    let events = decode_stream("stream_text");
    let start = StreamEvent::Start {
        id: "YsfvaO6yFcqDz7IPmqCl6Qk".into(),
        model: "gemini-2.0-flash".into(),
        usage: usage(9, 0, 0, 0),
    };
    assert_eq!(
        events,
        vec![
            start,
            StreamEvent::BlockStart { index: 0, block: BlockStart::Text },
            StreamEvent::Delta { index: 0, delta: Delta::Text("The".into()) },
            StreamEvent::Delta { index: 0, delta: Delta::Text(" quick brown fox jumps".into()) },
            StreamEvent::Delta { index: 0, delta: Delta::Text(" over the lazy dog.\n".into()) },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::Finish {
                stop_reason: StopReason::EndTurn,
                stop_sequence: None,
                usage: usage(9, 10, 0, 0)
            },
            StreamEvent::Stop,
        ]
    );
}

#[test]
fn tool_call_stream_events() {
    let events = decode_stream("stream_tool_call");
    let id = "o8nvaMPmMsHqz7IP3fqZoQ8";
    assert_eq!(
        events[1..],
        vec![
            StreamEvent::BlockStart { index: 0, block: BlockStart::Text },
            StreamEvent::Delta { index: 0, delta: Delta::Text("Let me check both cities".into()) },
            StreamEvent::Delta { index: 0, delta: Delta::Text(" at once.".into()) },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::BlockStart { index: 1, block: BlockStart::Thinking },
            StreamEvent::Delta {
                index: 1,
                delta: Delta::Signature("CiIBVKhc7pN0aGVzdHJlYW1zaWduYXR1cmVmb3JwYXJpcw==".into())
            },
            StreamEvent::BlockStop { index: 1 },
            StreamEvent::BlockStart {
                index: 2,
                block: BlockStart::ToolUse { id: format!("call_{id}_0"), name: "get_weather".into() }
            },
            StreamEvent::Delta {
                index: 2,
                delta: Delta::Json(r#"{"city":"Paris","unit":"celsius"}"#.into())
            },
            StreamEvent::BlockStop { index: 2 },
            StreamEvent::BlockStart {
                index: 3,
                block: BlockStart::ToolUse { id: format!("call_{id}_1"), name: "get_weather".into() }
            },
            StreamEvent::Delta {
                index: 3,
                delta: Delta::Json(r#"{"city":"London","unit":"celsius"}"#.into())
            },
            StreamEvent::BlockStop { index: 3 },
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
                stop_sequence: None,
                usage: usage(71, 112, 0, 68)
            },
            StreamEvent::Stop,
        ][..]
    );
}

#[test]
fn reasoning_stream_events() {
    let events = decode_stream("stream_reasoning");
    assert_eq!(
        events[0],
        StreamEvent::Start {
            id: "H8vvaNmlFeGbz7IPv4yYqAk".into(),
            model: "gemini-3-pro-preview".into(),
            usage: usage(102, 0, 2048, 0),
        }
    );
    assert_eq!(
        events[1..],
        vec![
            StreamEvent::BlockStart { index: 0, block: BlockStart::Thinking },
            StreamEvent::Delta {
                index: 0,
                delta: Delta::Thinking("**Counting the primes**\n\nI will list the first ten primes".into())
            },
            StreamEvent::Delta {
                index: 0,
                delta: Delta::Thinking(" and add them up: 2+3+5+7+11+13+17+19+23+29.".into())
            },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::BlockStart { index: 1, block: BlockStart::Text },
            StreamEvent::Delta { index: 1, delta: Delta::Text("The sum is".into()) },
            StreamEvent::Delta { index: 1, delta: Delta::Text(" **129**.".into()) },
            StreamEvent::BlockStop { index: 1 },
            // The final empty part only carries the signature.
            StreamEvent::BlockStart { index: 2, block: BlockStart::Thinking },
            StreamEvent::Delta {
                index: 2,
                delta: Delta::Signature("EqQBCqEBAdHtim9zdHJlYW1lZHJlYXNvbmluZ3NpZ25hdHVyZQ==".into())
            },
            StreamEvent::BlockStop { index: 2 },
            StreamEvent::Finish {
                stop_reason: StopReason::EndTurn,
                stop_sequence: None,
                usage: usage(102, 657, 2048, 648)
            },
            StreamEvent::Stop,
        ][..]
    );
}

#[test]
fn a_stream_cut_early_has_no_finish_and_ends_in_error() {
    for name in STREAMS {
        let bytes = fixture(&format!("{name}.sse"));
        // Up to the last byte of the final frame's JSON, the finishReason chunk is incomplete.
        for cut in 0..bytes.len() - 4 {
            let events = decode_chunks(&[&bytes[..cut]]);
            assert!(
                !events.iter().any(|e| matches!(e, StreamEvent::Finish { .. } | StreamEvent::Stop)),
                "{name} cut at {cut}: {events:?}"
            );
            let normalized = normalize(events);
            assert!(matches!(normalized.last(), Some(StreamEvent::Error { .. })), "{name} cut at {cut}");
        }
        // The final frame without its blank line still counts: the finishReason arrived.
        let events = decode_chunks(&[&bytes[..bytes.len() - 4]]);
        assert_eq!(events.last(), Some(&StreamEvent::Stop), "{name}");
    }
}

#[test]
fn an_error_chunk_ends_the_stream() {
    let stream = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel\"}],\"role\": \"model\"},\"index\": 0}]}\r\n\r\n",
        "data: {\"error\": {\"code\": 429,\"message\": \"Resource has been exhausted\",\"status\": \"RESOURCE_EXHAUSTED\"}}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"lo\"}]},\"finishReason\": \"STOP\"}]}\r\n\r\n",
    );
    let events = decode_chunks(&[stream.as_bytes()]);
    assert_eq!(
        events[1..],
        vec![
            StreamEvent::BlockStart { index: 0, block: BlockStart::Text },
            StreamEvent::Delta { index: 0, delta: Delta::Text("Hel".into()) },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::Error { kind: "rate_limit".into(), message: "Resource has been exhausted".into() },
        ][..]
    );
}

#[test]
fn a_malformed_chunk_is_a_decode_error() {
    let mut decoder = GeminiCodec.stream_decoder();
    let mut out = Vec::new();
    assert!(decoder.push(b"data: {\"candidates\": [tru\r\n\r\n", &mut out).is_err());
    let mut decoder = GeminiCodec.stream_decoder();
    assert!(decoder.push(b"data: {\"candidates\": [{\"content\": {\"parts\": 5}}]}\n\n", &mut out).is_err());
}

// ---------------------------------------------------------------------------------------------
// Stream encoding.

fn encode_events(events: &[StreamEvent]) -> Vec<u8> {
    let mut encoder = GeminiCodec.stream_encoder();
    let mut out = BytesMut::new();
    for e in events {
        encoder.encode(e, &mut out);
    }
    out.to_vec()
}

/// The frames of a Gemini SSE body, checked for the wire format on the way.
fn frames(bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).expect("utf-8");
    assert!(text.ends_with("\r\n\r\n"), "frames end with a blank line: {text:?}");
    assert!(!text.contains("[DONE]"), "Gemini has no end marker");
    text.split_terminator("\r\n\r\n")
        .map(|frame| {
            assert!(!frame.contains('\n'), "one data line per frame: {frame:?}");
            let json = frame.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data frame: {frame:?}"));
            serde_json::from_str(json).expect("each frame is JSON")
        })
        .collect()
}

fn canonical_stream() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            id: "resp-1".into(),
            model: "gemini-2.5-flash".into(),
            usage: usage(50, 0, 10, 0),
        },
        StreamEvent::BlockStart { index: 0, block: BlockStart::Thinking },
        StreamEvent::Delta { index: 0, delta: Delta::Thinking("Weather question; ".into()) },
        StreamEvent::Delta { index: 0, delta: Delta::Thinking("call the tool.".into()) },
        StreamEvent::Delta { index: 0, delta: Delta::Signature("sig-thought".into()) },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::BlockStart { index: 1, block: BlockStart::Text },
        StreamEvent::Delta { index: 1, delta: Delta::Text("Checking ".into()) },
        StreamEvent::Delta { index: 1, delta: Delta::Text("Paris.".into()) },
        StreamEvent::BlockStop { index: 1 },
        StreamEvent::BlockStart { index: 2, block: BlockStart::Thinking },
        StreamEvent::Delta { index: 2, delta: Delta::Signature("sig-call".into()) },
        StreamEvent::BlockStop { index: 2 },
        StreamEvent::BlockStart {
            index: 3,
            block: BlockStart::ToolUse { id: "toolu_1".into(), name: "get_weather".into() },
        },
        StreamEvent::Delta { index: 3, delta: Delta::Json("{\"city\":".into()) },
        StreamEvent::Delta { index: 3, delta: Delta::Json(" \"Paris\"}".into()) },
        StreamEvent::BlockStop { index: 3 },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
            usage: usage(50, 40, 10, 12),
        },
        StreamEvent::Stop,
    ]
}

#[test]
fn encoded_stream_follows_the_wire_format() {
    let frames = frames(&encode_events(&canonical_stream()));
    // Two thought pieces, the thought's signature, two text pieces, the call, the finish.
    assert_eq!(frames.len(), 7, "{frames:#?}");
    for frame in &frames {
        assert_eq!(frame["responseId"], "resp-1");
        assert_eq!(frame["modelVersion"], "gemini-2.5-flash");
    }
    let part = |i: usize| &frames[i]["candidates"][0]["content"]["parts"][0];
    assert_eq!(*part(0), json!({ "text": "Weather question; ", "thought": true }));
    assert_eq!(*part(2), json!({ "text": "", "thought": true, "thoughtSignature": "sig-thought" }));
    assert_eq!(*part(3), json!({ "text": "Checking " }));
    // The call comes whole, carrying the signature that preceded it; the id is not Gemini's to keep.
    assert_eq!(
        *part(5),
        json!({ "functionCall": { "name": "get_weather", "args": { "city": "Paris" } }, "thoughtSignature": "sig-call" })
    );
    // Input usage rides on the first frame, the final usage on the last one only.
    assert_eq!(frames[0]["usageMetadata"]["promptTokenCount"], json!(60));
    assert!(
        frames[1..6]
            .iter()
            .all(|f| f.get("usageMetadata").is_none() && f["candidates"][0].get("finishReason").is_none())
    );
    let last = &frames[6];
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        last["usageMetadata"],
        json!({
            "promptTokenCount": 60, "cachedContentTokenCount": 10, "candidatesTokenCount": 28,
            "thoughtsTokenCount": 12, "totalTokenCount": 100
        })
    );
}

#[test]
fn encoded_stream_decodes_back_to_the_same_events() {
    let events = canonical_stream();
    let decoded = decode_chunks(&[&encode_events(&events)]);
    let mut expected = events;
    // Gemini carries no call ids and sends arguments whole: those two differ by design.
    expected[13] = StreamEvent::BlockStart {
        index: 3,
        block: BlockStart::ToolUse { id: "call_resp-1_0".into(), name: "get_weather".into() },
    };
    expected
        .splice(14..16, [StreamEvent::Delta { index: 3, delta: Delta::Json(r#"{"city":"Paris"}"#.into()) }]);
    assert_eq!(decoded, expected);
}

#[test]
fn an_error_ending_is_an_error_frame() {
    let events = vec![
        StreamEvent::Start { id: "resp-2".into(), model: "m".into(), usage: usage(5, 0, 0, 0) },
        StreamEvent::BlockStart { index: 0, block: BlockStart::Text },
        StreamEvent::Delta { index: 0, delta: Delta::Text("Partial".into()) },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::Error { kind: "overloaded".into(), message: "The model is overloaded.".into() },
    ];
    let bytes = encode_events(&events);
    let frames = frames(&bytes);
    assert_eq!(frames.len(), 2);
    assert!(frames.iter().all(|f| f.pointer("/candidates/0/finishReason").is_none()));
    assert_eq!(
        frames[1],
        json!({ "error": { "code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE" } })
    );
    assert_eq!(decode_chunks(&[&bytes]), events);
}

#[test]
fn a_call_cut_off_by_an_error_is_not_sent() {
    let events = vec![
        StreamEvent::Start { id: "resp-3".into(), model: "m".into(), usage: Usage::default() },
        StreamEvent::BlockStart {
            index: 0,
            block: BlockStart::ToolUse { id: "t".into(), name: "get_weather".into() },
        },
        StreamEvent::Delta { index: 0, delta: Delta::Json("{\"city\": \"Par".into()) },
        StreamEvent::BlockStop { index: 0 },
        StreamEvent::Error { kind: "api_error".into(), message: "upstream went away".into() },
    ];
    let frames = frames(&encode_events(&events));
    assert_eq!(frames.len(), 1, "{frames:#?}");
    assert_eq!(frames[0]["error"]["status"], "INTERNAL");
}

#[test]
fn gemini_streams_survive_decode_normalize_encode_decode() {
    for name in STREAMS {
        let events = normalize(decode_stream(name));
        assert_eq!(decode_chunks(&[&encode_events(&events)]), events, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn vendor_errors_decode() {
    assert_eq!(
        GeminiCodec.decode_error(400, &fixture("error_invalid_argument.json")),
        ErrorInfo {
            status: 400,
            kind: "invalid_request".into(),
            message: "* GenerateContentRequest.contents: contents is not specified\n".into(),
        }
    );
    let quota = GeminiCodec.decode_error(429, &fixture("error_resource_exhausted.json"));
    assert_eq!(quota.kind, "rate_limit");
    assert!(quota.message.starts_with("You exceeded your current quota"));
    // The JSON-array stream format wraps errors too.
    let wrapped =
        br#"[{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}]"#;
    assert_eq!(GeminiCodec.decode_error(503, wrapped).kind, "overloaded");
    // Not JSON: the status decides, the body is the message.
    let html = GeminiCodec.decode_error(502, b"<html>Bad Gateway</html>");
    assert_eq!((html.kind.as_str(), html.message.as_str()), ("api_error", "<html>Bad Gateway</html>"));
    assert_eq!(GeminiCodec.decode_error(401, b"").kind, "authentication");
    assert!(!GeminiCodec.decode_error(500, b"").message.is_empty());
}

#[test]
fn errors_encode_in_the_gemini_shape() {
    let info = ErrorInfo { status: 429, kind: "rate_limit".into(), message: "slow down".into() };
    let body: Value = serde_json::from_slice(&GeminiCodec.encode_error(&info)).expect("json");
    assert_eq!(
        body,
        json!({ "error": { "code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED" } })
    );
    for (status, kind) in [
        (400, "invalid_request"),
        (401, "authentication"),
        (403, "permission"),
        (404, "not_found"),
        (429, "rate_limit"),
        (503, "overloaded"),
        (504, "timeout"),
        (500, "api_error"),
    ] {
        let info = ErrorInfo { status, kind: kind.into(), message: format!("{kind} happened") };
        assert_eq!(GeminiCodec.decode_error(status, &GeminiCodec.encode_error(&info)), info);
    }
    // An unknown kind falls back on the HTTP status.
    let info = ErrorInfo { status: 503, kind: "mystery".into(), message: "x".into() };
    let body: Value = serde_json::from_slice(&GeminiCodec.encode_error(&info)).expect("json");
    assert_eq!(body["error"]["status"], "UNAVAILABLE");
}

// ---------------------------------------------------------------------------------------------
// Robustness: decoders see hostile bytes; they may refuse them but never panic.

#[test]
fn decoders_never_panic_on_mangled_input() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut sources: Vec<Vec<u8>> = REQUESTS
        .iter()
        .chain(RESPONSES)
        .map(|n| fixture(&format!("{n}.json")))
        .chain(STREAMS.iter().map(|n| fixture(&format!("{n}.sse"))))
        .collect();
    sources.push(br#"{"contents":[{"parts":[{"functionResponse":{"name":"x","response":{"output":null}}},{"thoughtSignature":"s"}]}]}"#.to_vec());
    for source in &sources {
        for _ in 0..300 {
            let mut bytes = source.clone();
            let len = bytes.len().max(1);
            match next() % 4 {
                0 => bytes.truncate((next() as usize) % len),
                1 => {
                    for _ in 0..1 + next() % 8 {
                        let i = (next() as usize) % len;
                        if let Some(b) = bytes.get_mut(i) {
                            *b = (next() % 256) as u8;
                        }
                    }
                }
                2 => {
                    // Swap a structural character for another one.
                    let i = (next() as usize) % len;
                    if let Some(b) = bytes.get_mut(i) {
                        *b = b"{}[]\":,0n"[(next() % 9) as usize];
                    }
                }
                _ => {
                    let i = (next() as usize) % len;
                    let j = (next() as usize) % len;
                    let (a, b) = (i.min(j), i.max(j));
                    bytes.drain(a..b);
                }
            }
            let _ = GeminiCodec.decode_request(&bytes, &mut Notes::default());
            let _ = GeminiCodec.decode_response(&bytes);
            let _ = GeminiCodec.decode_error(400, &bytes);
            let mut decoder = GeminiCodec.stream_decoder();
            let mut out = Vec::new();
            let split = (next() as usize) % len;
            let (a, b) = bytes.split_at(split.min(bytes.len()));
            let _ = decoder.push(a, &mut out);
            let _ = decoder.push(b, &mut out);
            decoder.finish(&mut out);
            // Whatever came out encodes without trouble once normalized.
            encode_events(&normalize(out));
        }
    }
}
