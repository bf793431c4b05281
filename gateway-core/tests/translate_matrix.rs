//! Cross-dialect golden tests: every request, response, SSE stream and error fixture of every
//! dialect (read from `tests/fixtures/<dialect>/`, plus `tests/fixtures/matrix/<dialect>/`)
//! translated into each of the other three dialects.
//!
//! Each translation is snapshotted (insta; reviewed by hand once) and checked against invariants
//! that must hold whatever the snapshot says: the target parses, decodes back into the same
//! conversation (what the target cannot carry is named by a note), and so does A → B → A;
//! responses keep text, calls, stop reason and billed usage, and what a client of another dialect
//! sends back reaches the vendor with its reasoning signatures intact; streams give the same bytes
//! however they are chunked and decode into a well-formed event sequence with the same content,
//! stop reason and usage; streams cut short (before any content, mid-content, just before their
//! terminal event) end in the target's error ending; errors keep their category.
//!
//! Generated values (timestamps, ids the encoders make up when the source had none) are replaced
//! by placeholders before snapshotting and comparing; generated ids are numbered by first
//! appearance so that the snapshots still show which events refer to the same item.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use gateway_core::dialect::Dialect;
use gateway_core::sse::SseDecoder;
use gateway_core::translate::ir::{
    Block, BlockStart, Delta, ImageSource, Message, Request, Response, Role, StopReason, StreamEvent, Usage,
};
use gateway_core::translate::normalize::StreamNormalizer;
use gateway_core::translate::signature;
use gateway_core::translate::{
    Codec, ErrorInfo, Notes, StreamTranslator, codec, translate_request, translate_response,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use regex::{Captures, Regex};
use serde_json::{Value, json};

const DIALECTS: [Dialect; 4] =
    [Dialect::Anthropic, Dialect::OpenaiChat, Dialect::OpenaiResponses, Dialect::Gemini];

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn dir_name(d: Dialect) -> &'static str {
    match d {
        Dialect::Anthropic => "anthropic",
        Dialect::OpenaiChat => "openai_chat",
        Dialect::OpenaiResponses => "openai_responses",
        Dialect::Gemini => "gemini",
    }
}

fn the_codec(d: Dialect) -> &'static dyn Codec {
    codec(d).expect("every dialect has a codec")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
    Stream,
    Error,
}

impl Kind {
    /// File name prefix in the flat fixture folders.
    fn prefix(self) -> &'static str {
        match self {
            Kind::Request => "request_",
            Kind::Response => "response_",
            Kind::Stream => "stream_",
            Kind::Error => "error_",
        }
    }

    /// Sub-folder in the Responses fixture folder, which is laid out by kind.
    fn subdir(self) -> &'static str {
        match self {
            Kind::Request => "requests",
            Kind::Response => "responses",
            Kind::Stream => "streams",
            Kind::Error => "errors",
        }
    }

    fn ext(self) -> &'static str {
        if self == Kind::Stream { ".sse" } else { ".json" }
    }
}

struct Fixture {
    from: Dialect,
    name: String,
    bytes: Vec<u8>,
}

impl Fixture {
    fn label(&self) -> String {
        format!("{}/{}", dir_name(self.from), self.name)
    }
}

fn read_fixtures(root: &Path, d: Dialect, kind: Kind, tag: &str, out: &mut Vec<Fixture>) {
    let (dir, prefix) = if d == Dialect::OpenaiResponses {
        (root.join(kind.subdir()), "")
    } else {
        (root.to_owned(), kind.prefix())
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("fixture directory entry").path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(stem) = file.strip_suffix(kind.ext()).and_then(|s| s.strip_prefix(prefix)) else {
            continue;
        };
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push(Fixture { from: d, name: format!("{tag}{stem}"), bytes });
    }
}

/// The dialect's own fixtures, then those written for this matrix (`matrix_` names).
fn fixtures(d: Dialect, kind: Kind) -> Vec<Fixture> {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    read_fixtures(&base.join(dir_name(d)), d, kind, "", &mut out);
    read_fixtures(&base.join("matrix").join(dir_name(d)), d, kind, "matrix_", &mut out);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty() || kind == Kind::Stream, "no {kind:?} fixtures for {d}");
    out
}

fn others(from: Dialect) -> impl Iterator<Item = Dialect> {
    DIALECTS.into_iter().filter(move |d| *d != from)
}

// ---------------------------------------------------------------------------------------------
// Redaction of generated values.

static TIMESTAMP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""(created|created_at)":\d+"#).expect("regex"));
static GENERATED_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(msg_|chatcmpl-|resp_|fc_|rs_|call_)[0-9a-f]{32}\b").expect("regex"));

/// Replaces timestamps and generated ids (uuid-based) with stable placeholders.
fn redact(text: &str) -> String {
    let text = TIMESTAMP.replace_all(text, r#""$1":"[timestamp]""#);
    let mut seen: HashMap<String, usize> = HashMap::new();
    GENERATED_ID
        .replace_all(&text, |c: &Captures<'_>| {
            let next = seen.len() + 1;
            let n = *seen.entry(c[0].to_owned()).or_insert(next);
            format!("{}[generated-{n}]", &c[1])
        })
        .into_owned()
}

fn redact_json(v: &Value) -> Value {
    serde_json::from_str(&redact(&v.to_string())).expect("redaction keeps JSON valid")
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

/// Every string value in a JSON document.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(map) => map.values().for_each(|i| strings(i, out)),
        _ => {}
    }
}

fn noted(notes: &[String], keys: &[&str]) -> bool {
    notes.iter().any(|n| keys.iter().any(|k| n.contains(k)))
}

/// Tool input as a value (dialects that carry unparsed argument text keep it as a string).
fn input_value(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        Value::Null => json!({}),
        other => other.clone(),
    }
}

/// The text of a tool result, JSON text compared as JSON.
fn result_text(content: &[Block]) -> String {
    let text = content
        .iter()
        .filter_map(|b| match b {
            Block::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n");
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => v.to_string(),
        _ => text,
    }
}

fn image_key(source: &ImageSource) -> String {
    match source {
        ImageSource::Base64 { media_type, data } => format!("base64 {media_type} {data}"),
        ImageSource::Url { url } => format!("url {url}"),
    }
}

fn image_payload(source: &ImageSource) -> &str {
    match source {
        ImageSource::Base64 { data, .. } => data,
        ImageSource::Url { url } => url,
    }
}

/// How the target reports `reason` (with tool calls in the answer or not).
fn expected_stop(reason: StopReason, has_calls: bool, to: Dialect) -> StopReason {
    match (reason, to) {
        // Only Anthropic names a matched stop sequence; the others say a plain stop.
        (StopReason::StopSequence, Dialect::Anthropic) => reason,
        (StopReason::StopSequence, _) => StopReason::EndTurn,
        // Responses and Gemini infer tool use from the calls in the answer.
        (StopReason::EndTurn, Dialect::OpenaiResponses | Dialect::Gemini) if has_calls => StopReason::ToolUse,
        _ => reason,
    }
}

/// The usage the target's decoder reads back from what the target's encoder wrote: Responses and
/// Gemini have no cache writes (they are input tokens there); only Anthropic has the 5m/1h split;
/// Gemini's thoughts are part of the output.
fn expected_usage(u: &Usage, to: Dialect) -> Usage {
    let mut u = *u;
    let t = &mut u.tokens;
    if to != Dialect::Anthropic {
        t.cache_creation_5m_input_tokens = 0;
        t.cache_creation_1h_input_tokens = 0;
    }
    if matches!(to, Dialect::OpenaiResponses | Dialect::Gemini) {
        t.input_tokens += t.cache_creation_input_tokens;
        t.cache_creation_input_tokens = 0;
    }
    if to == Dialect::Gemini {
        u.reasoning_tokens = u.reasoning_tokens.min(u.tokens.output_tokens);
    }
    u
}

/// Whether a note is due because `to` cannot express part of `u`.
fn usage_loss(u: &Usage, to: Dialect) -> bool {
    let t = &u.tokens;
    let split = t.cache_creation_5m_input_tokens != 0 || t.cache_creation_1h_input_tokens != 0;
    match to {
        Dialect::Anthropic => false,
        Dialect::OpenaiChat => split,
        Dialect::OpenaiResponses | Dialect::Gemini => t.cache_creation_input_tokens != 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Requests.

/// One item of a conversation as every dialect can hold it.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Text(String),
    Image(String),
    Call { id: Option<String>, name: String, input: Value },
    Result { call: String, text: String, images: Vec<String>, is_error: bool },
}

#[derive(Debug, Clone, Copy, Default)]
struct Lenience {
    /// Gemini pairs calls and results by name and order: compare names, not ids.
    no_ids: bool,
    /// The target has no error flag on tool results (noted).
    is_error: bool,
    /// The target takes only text in tool results (noted).
    result_images: bool,
    /// The target takes no images in assistant turns (noted).
    assistant_images: bool,
}

/// The conversation as turns of items: consecutive turns of one speaker merged (dialects split
/// and merge turns differently), tool results first in user turns and tool calls last in
/// assistant turns (chat keeps them apart from the text), empty text and reasoning left out
/// (compared separately).
fn conversation(req: &Request, len: Lenience) -> Vec<(Role, Vec<Item>)> {
    let names: HashMap<&str, &str> = req
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|b| match b {
            Block::ToolUse { id, name, .. } => Some((id.as_str(), name.as_str())),
            _ => None,
        })
        .collect();
    let mut turns: Vec<(Role, Vec<Item>)> = Vec::new();
    for m in &req.messages {
        let mut items = Vec::new();
        for b in &m.content {
            match b {
                Block::Text { text } if !text.is_empty() => items.push(Item::Text(text.clone())),
                Block::Image { source } if !(len.assistant_images && m.role == Role::Assistant) => {
                    items.push(Item::Image(image_key(source)));
                }
                Block::ToolUse { id, name, input } => items.push(Item::Call {
                    id: (!len.no_ids).then(|| id.clone()),
                    name: name.clone(),
                    input: input_value(input),
                }),
                Block::ToolResult { tool_use_id, content, is_error } => items.push(Item::Result {
                    call: if len.no_ids {
                        names
                            .get(tool_use_id.as_str())
                            .map_or(format!("? {tool_use_id}"), |n| (*n).to_owned())
                    } else {
                        tool_use_id.clone()
                    },
                    text: result_text(content),
                    images: if len.result_images {
                        Vec::new()
                    } else {
                        content
                            .iter()
                            .filter_map(|c| match c {
                                Block::Image { source } => Some(image_key(source)),
                                _ => None,
                            })
                            .collect()
                    },
                    is_error: *is_error && !len.is_error,
                }),
                _ => {}
            }
        }
        if items.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((role, last)) if *role == m.role => last.extend(items),
            _ => turns.push((m.role, items)),
        }
    }
    for (role, items) in &mut turns {
        match role {
            Role::User => items.sort_by_key(|i| !matches!(i, Item::Result { .. })),
            Role::Assistant => items.sort_by_key(|i| matches!(i, Item::Call { .. })),
        }
    }
    turns
}

fn thinking_texts(blocks: &[Block]) -> Vec<String> {
    blocks
        .iter()
        .filter_map(|b| match b {
            Block::Thinking { text, .. } if !text.is_empty() => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// Signatures and encrypted reasoning, which must reach the vendor unchanged or not at all.
fn signatures(blocks: &[Block]) -> Vec<String> {
    blocks
        .iter()
        .filter_map(|b| match b {
            Block::Thinking { signature: Some(s), .. } if !s.is_empty() => Some(s.clone()),
            Block::RedactedThinking { data } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

fn normalized_tools(req: &Request) -> Vec<(String, Option<String>, Value)> {
    req.tools
        .iter()
        .map(|t| {
            let params = match &t.parameters {
                Value::Null => json!({"type": "object", "properties": {}}),
                p => p.clone(),
            };
            (t.name.clone(), t.description.clone().filter(|d| !d.is_empty()), params)
        })
        .collect()
}

/// What of `a` did not arrive in `b` without a note saying so. `via_gemini`: the model and the
/// stream flag travel in Gemini's path, and call ids do not exist there.
fn compare_requests(a: &Request, b: &Request, notes: &[String], via_gemini: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |what: &str, same: bool, keys: &[&str], detail: String| {
        if !same && !noted(notes, keys) {
            problems.push(format!("{what} changed without a note: {detail}"));
        }
    };
    if !via_gemini {
        check("model", a.model == b.model, &[], format!("{:?} → {:?}", a.model, b.model));
        check("stream", a.stream == b.stream, &[], format!("{} → {}", a.stream, b.stream));
    }
    let system = |r: &Request| r.system.iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>();
    check("system", system(a) == system(b), &[], format!("{:?} → {:?}", system(a), system(b)));
    // Function tools are all the IR holds, and every dialect takes them.
    let (ta, tb) = (normalized_tools(a), normalized_tools(b));
    check("tools", ta == tb, &[], format!("{ta:?} → {tb:?}"));
    check(
        "tool_choice",
        a.tool_choice == b.tool_choice,
        &["tool_choice"],
        format!("{:?} → {:?}", a.tool_choice, b.tool_choice),
    );
    // `true` is every dialect's default.
    let parallel = a.parallel_tool_calls == b.parallel_tool_calls
        || (a.parallel_tool_calls == Some(true) && b.parallel_tool_calls.is_none());
    check(
        "parallel_tool_calls",
        parallel,
        &["parallel_tool_calls"],
        format!("{:?} → {:?}", a.parallel_tool_calls, b.parallel_tool_calls),
    );
    check(
        "max_tokens",
        a.max_tokens == b.max_tokens,
        &["max_tokens"],
        format!("{:?} → {:?}", a.max_tokens, b.max_tokens),
    );
    check(
        "temperature",
        a.temperature == b.temperature,
        &["temperature"],
        format!("{:?} → {:?}", a.temperature, b.temperature),
    );
    check("top_p", a.top_p == b.top_p, &["top_p"], format!("{:?} → {:?}", a.top_p, b.top_p));
    check("top_k", a.top_k == b.top_k, &["top_k"], format!("{:?} → {:?}", a.top_k, b.top_k));
    let stop_noted = notes.iter().any(|n| n == "stop");
    check("stop", a.stop == b.stop || stop_noted, &[], format!("{:?} → {:?}", a.stop, b.stop));
    check(
        "reasoning",
        a.reasoning == b.reasoning,
        &["reasoning.", "reasoning disabled", "thinking (disabled"],
        format!("{:?} → {:?}", a.reasoning, b.reasoning),
    );
    check(
        "response_format",
        a.response_format == b.response_format,
        &["response_format"],
        format!("{:?} → {:?}", a.response_format, b.response_format),
    );
    let user_noted = notes.iter().any(|n| n == "user");
    check("user", a.user == b.user || user_noted, &[], format!("{:?} → {:?}", a.user, b.user));

    let len = Lenience {
        no_ids: via_gemini,
        is_error: noted(notes, &["tool_result.is_error"]),
        result_images: noted(notes, &["tool_result: non-text", "tool_result image url"]),
        assistant_images: noted(notes, &["assistant message: image", "images in assistant messages"]),
    };
    let (ca, cb) = (conversation(a, len), conversation(b, len));
    if ca != cb {
        problems.push(format!("conversation changed:\n  before: {ca:?}\n  after:  {cb:?}"));
    }

    let blocks = |r: &Request| r.messages.iter().flat_map(|m| m.content.clone()).collect::<Vec<_>>();
    let (ba, bb) = (blocks(a), blocks(b));
    // Reasoning text arrives as it was (chat joins a turn's blocks with a blank line), unless a
    // note says the target would not take it.
    let dropped = ["without signature", "thinking in a user message", "user message: thinking block"];
    let (ta, tb) = (thinking_texts(&ba).join("\n\n"), thinking_texts(&bb).join("\n\n"));
    if ta != tb && !noted(notes, &dropped) {
        problems.push(format!("reasoning text changed without a note: {ta:?} → {tb:?}"));
    }
    let kept = signatures(&bb);
    for sig in signatures(&ba) {
        if !kept.contains(&sig) && !noted(notes, &["signature", "redacted", "thinking"]) {
            problems.push(format!("signature lost without a note: {sig:?}"));
        }
    }
    problems
}

fn decode_request(d: Dialect, body: &[u8]) -> Result<(Request, Notes), String> {
    let mut notes = Notes::default();
    the_codec(d).decode_request(body, &mut notes).map(|r| (r, notes)).map_err(|e| e.0)
}

/// Checks on the translated body itself: it is JSON and holds the system text, every tool name,
/// every call id (where the target has ids), every image, and the stream flag or model in
/// Gemini's path.
fn check_request_body(src: &Request, to: Dialect, target: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut all = Vec::new();
    strings(target, &mut all);
    for s in src.system.iter().filter(|s| !s.is_empty()) {
        if !all.iter().any(|t| t.contains(s.as_str())) {
            problems.push(format!("system text missing: {s:?}"));
        }
    }
    let blocks: Vec<&Block> = src.messages.iter().flat_map(|m| &m.content).collect();
    let mut names: Vec<&str> = src.tools.iter().map(|t| t.name.as_str()).collect();
    for b in &blocks {
        match b {
            Block::ToolUse { id, name, .. } => {
                names.push(name);
                if to != Dialect::Gemini && !all.iter().any(|t| t == id) {
                    problems.push(format!("call id missing: {id}"));
                }
            }
            Block::ToolResult { tool_use_id, content, .. } => {
                if to != Dialect::Gemini && !all.iter().any(|t| t == tool_use_id) {
                    problems.push(format!("result id missing: {tool_use_id}"));
                }
                for c in content {
                    if let Block::Image { source } = c
                        && to != Dialect::OpenaiChat
                        && !all.iter().any(|t| t.contains(image_payload(source)))
                    {
                        problems.push("tool result image missing".to_owned());
                    }
                }
            }
            Block::Image { source } if !all.iter().any(|t| t.contains(image_payload(source))) => {
                problems.push(format!("image missing: {}", image_key(source)));
            }
            _ => {}
        }
    }
    for name in names {
        if !all.iter().any(|t| t == name) {
            problems.push(format!("tool name missing: {name}"));
        }
    }
    if to == Dialect::Anthropic
        && matches!(target["thinking"]["type"].as_str(), Some("enabled" | "adaptive"))
        && let Some(messages) = target["messages"].as_array()
    {
        // With thinking on, Anthropic rejects tool results for a turn that does not start with a
        // thinking block.
        let answers_tools = messages.last().is_some_and(|m| {
            m["content"].as_array().is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"))
        });
        let turn = messages.iter().rev().find(|m| m["role"] == "assistant");
        let first = turn.map(|m| m["content"][0]["type"].clone()).unwrap_or_default();
        if answers_tools && first != "thinking" && first != "redacted_thinking" {
            problems.push("thinking on, but the tool turn being answered starts without thinking".to_owned());
        }
    }
    if to == Dialect::Gemini {
        let path = the_codec(to).request_path(src);
        if !path.contains(src.model.as_str()) || path.contains("streamGenerateContent") != src.stream {
            problems.push(format!(
                "Gemini path {path} does not carry model {:?} / stream {}",
                src.model, src.stream
            ));
        }
    }
    problems
}

fn fail_on(problems: Vec<String>, what: &str) {
    fail_on_except(problems, what, &[]);
}

/// Fails on `problems`, except those of known, not yet fixed translation bugs: `(where, what)`
/// pairs matched against the start and the text of a problem. A known bug that no longer shows
/// fails too, so that its entry goes once it is fixed.
fn fail_on_except(problems: Vec<String>, what: &str, known: &[(&str, &str)]) {
    let is_known = |p: &String| known.iter().any(|(at, text)| p.starts_with(at) && p.contains(text));
    let (seen, new): (Vec<String>, Vec<String>) = problems.into_iter().partition(is_known);
    for p in &seen {
        eprintln!("known bug: {p}");
    }
    for (at, text) in known {
        assert!(
            seen.iter().any(|p| p.starts_with(at) && p.contains(text)),
            "known bug no longer shows, remove its entry: {at}: {text}"
        );
    }
    assert!(new.is_empty(), "{what}: {} problem(s):\n{}", new.len(), new.join("\n"));
}

#[test]
fn requests_translate_into_every_other_dialect() {
    let mut problems = Vec::new();
    let mut count = 0;
    for from in DIALECTS {
        for fx in fixtures(from, Kind::Request) {
            let (src, _) = decode_request(from, &fx.bytes).expect("source fixture decodes");
            for to in others(from) {
                count += 1;
                let at = format!("{} → {to}", fx.label());
                let (body, notes) = match translate_request(&fx.bytes, from, to) {
                    Ok(r) => r,
                    Err(e) => {
                        problems.push(format!("{at}: translation failed: {e}"));
                        continue;
                    }
                };
                let Ok(target) = serde_json::from_slice::<Value>(&body) else {
                    problems.push(format!("{at}: target body is not JSON"));
                    continue;
                };
                insta::assert_json_snapshot!(
                    format!("req__{}__{}__to__{}", dir_name(from), fx.name, dir_name(to)),
                    json!({ "body": redact_json(&target), "notes": notes.0 })
                );
                problems
                    .extend(check_request_body(&src, to, &target).into_iter().map(|p| format!("{at}: {p}")));
                match decode_request(to, &body) {
                    Ok((back, _)) => problems.extend(
                        compare_requests(&src, &back, &notes.0, to == Dialect::Gemini)
                            .into_iter()
                            .map(|p| format!("{at}: {p}")),
                    ),
                    Err(e) => problems.push(format!("{at}: the target codec rejects the body: {e}")),
                }
            }
        }
    }
    assert!(count >= 3 * 31, "every request fixture in every other dialect: {count}");
    fail_on(problems, "requests");
}

/// A → B → A keeps everything the IR models, except what one of the two hops noted.
#[test]
fn requests_survive_a_round_trip_through_every_other_dialect() {
    let mut problems = Vec::new();
    for from in DIALECTS {
        for fx in fixtures(from, Kind::Request) {
            let (src, _) = decode_request(from, &fx.bytes).expect("source fixture decodes");
            for via in others(from) {
                let at = format!("{} → {via} → {from}", fx.label());
                let (there, mut notes) = translate_request(&fx.bytes, from, via).expect("translates");
                let (back, more) = match translate_request(&there, via, from) {
                    Ok(r) => r,
                    Err(e) => {
                        problems.push(format!("{at}: the way back failed: {e}"));
                        continue;
                    }
                };
                notes.0.extend(more.0);
                let (again, _) = decode_request(from, &back).expect("our own output decodes");
                let via_gemini = from == Dialect::Gemini || via == Dialect::Gemini;
                problems.extend(
                    compare_requests(&src, &again, &notes.0, via_gemini)
                        .into_iter()
                        .map(|p| format!("{at}: {p}")),
                );
            }
        }
    }
    fail_on(problems, "round trips");
}

// ---------------------------------------------------------------------------------------------
// Complete responses.

fn calls(blocks: &[Block], ids: bool) -> Vec<(Option<String>, String, Value)> {
    blocks
        .iter()
        .filter_map(|b| match b {
            Block::ToolUse { id, name, input } => {
                Some((ids.then(|| id.clone()), name.clone(), input_value(input)))
            }
            _ => None,
        })
        .collect()
}

fn text_of(blocks: &[Block]) -> String {
    blocks
        .iter()
        .filter_map(|b| match b {
            Block::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// Signatures of `from` as a translation hands them to a client: tagged with their origin.
fn tagged(from: Dialect, sigs: &[String]) -> Vec<String> {
    sigs.iter().map(|s| signature::tag(from, s)).collect()
}

/// Signatures that reached the client: each one tagged (never altered), and any missing one
/// named by a note.
fn check_signatures(expected: &[String], got: &[String], notes: &[String]) -> Option<String> {
    let stray: Vec<&String> = got.iter().filter(|s| !expected.contains(s)).collect();
    if !stray.is_empty() {
        return Some(format!("signatures {stray:?} are not the tagged originals {expected:?}"));
    }
    let missing: Vec<&String> = expected.iter().filter(|s| !got.contains(s)).collect();
    if !missing.is_empty() && !noted(notes, &["signature", "redacted"]) {
        return Some(format!("signatures {missing:?} lost without a note"));
    }
    None
}

fn compare_responses(
    a: &Response,
    b: &Response,
    from: Dialect,
    to: Dialect,
    notes: &[String],
) -> Vec<String> {
    let mut problems = Vec::new();
    if a.model != b.model {
        problems.push(format!("model {:?} → {:?}", a.model, b.model));
    }
    if text_of(&a.content) != text_of(&b.content) {
        problems.push(format!("text {:?} → {:?}", text_of(&a.content), text_of(&b.content)));
    }
    // Every dialect has a place for reasoning text in a response.
    let (ta, tb) = (thinking_texts(&a.content).join("\n\n"), thinking_texts(&b.content).join("\n\n"));
    if ta != tb {
        problems.push(format!("reasoning {ta:?} → {tb:?}"));
    }
    // Tagged as the library tags them (redacted reasoning has its own tag).
    let mut tagged_blocks = a.content.clone();
    signature::tag_blocks(from, &mut tagged_blocks);
    let expected = signatures(&tagged_blocks);
    problems.extend(check_signatures(&expected, &signatures(&b.content), notes));
    let ids = to != Dialect::Gemini;
    let (ca, cb) = (calls(&a.content, ids), calls(&b.content, ids));
    if ca != cb {
        problems.push(format!("tool calls {ca:?} → {cb:?}"));
    }
    let has_calls = !ca.is_empty();
    let stop = expected_stop(a.stop_reason, has_calls, to);
    if b.stop_reason != stop {
        problems.push(format!("stop reason {:?} → {:?} (expected {stop:?})", a.stop_reason, b.stop_reason));
    }
    if a.stop_sequence.is_some() && a.stop_sequence != b.stop_sequence && !noted(notes, &["stop_sequence"]) {
        problems.push(format!("stop_sequence {:?} lost without a note", a.stop_sequence));
    }
    let usage = expected_usage(&a.usage, to);
    if b.usage != usage {
        problems.push(format!("usage {:?} → {:?} (expected {usage:?})", a.usage, b.usage));
    }
    if usage_loss(&a.usage, to) && !noted(notes, &["cache_creation"]) {
        problems.push("cache writes not expressible in the target, and no note says so".to_owned());
    }
    problems
}

#[test]
fn responses_translate_into_every_other_dialect() {
    let mut problems = Vec::new();
    for from in DIALECTS {
        for fx in fixtures(from, Kind::Response) {
            let src = the_codec(from).decode_response(&fx.bytes).expect("source fixture decodes");
            for to in others(from) {
                let at = format!("{} → {to}", fx.label());
                let (body, notes) = match translate_response(&fx.bytes, from, to) {
                    Ok(r) => r,
                    Err(e) => {
                        problems.push(format!("{at}: translation failed: {e}"));
                        continue;
                    }
                };
                let Ok(target) = serde_json::from_slice::<Value>(&body) else {
                    problems.push(format!("{at}: target body is not JSON"));
                    continue;
                };
                insta::assert_json_snapshot!(
                    format!("resp__{}__{}__to__{}", dir_name(from), fx.name, dir_name(to)),
                    json!({ "body": redact_json(&target), "notes": notes.0 })
                );
                match the_codec(to).decode_response(&body) {
                    Ok(back) => problems.extend(
                        compare_responses(&src, &back, from, to, &notes.0)
                            .into_iter()
                            .map(|p| format!("{at}: {p}")),
                    ),
                    Err(e) => problems.push(format!("{at}: the target codec rejects the body: {e}")),
                }
            }
        }
    }
    fail_on(problems, "responses");
}

/// The reasoning kind of each signature: a signed thinking block or encrypted (redacted) reasoning.
fn signature_kinds(blocks: &[Block]) -> Vec<(bool, String)> {
    blocks
        .iter()
        .filter_map(|b| match b {
            Block::Thinking { signature: Some(s), .. } if !s.is_empty() => Some((false, s.clone())),
            Block::RedactedThinking { data } => Some((true, data.clone())),
            _ => None,
        })
        .collect()
}

/// A response of vendor A translated for a client of dialect B, sent back by that client as the
/// assistant turn of its next request, and translated back to A: the calls keep their ids (unless
/// B is Gemini, which has none) and A's own signatures come back exactly as A made them, in
/// blocks of the same kind — or are dropped with a note where B has no place for them.
#[test]
fn translated_answers_come_back_to_their_vendor_intact() {
    let mut problems = Vec::new();
    for from in DIALECTS {
        for fx in fixtures(from, Kind::Response) {
            let src = the_codec(from).decode_response(&fx.bytes).expect("source fixture decodes");
            for client in others(from) {
                let at = format!("{} → {client} → {from}", fx.label());
                let (body, mut notes) = translate_response(&fx.bytes, from, client).expect("translates");
                let answer = the_codec(client).decode_response(&body).expect("decodes");
                let results: Vec<Block> = answer
                    .content
                    .iter()
                    .filter_map(|b| match b {
                        Block::ToolUse { id, .. } => Some(Block::ToolResult {
                            tool_use_id: id.clone(),
                            content: vec![Block::Text { text: "done".into() }],
                            is_error: false,
                        }),
                        _ => None,
                    })
                    .collect();
                let next =
                    if results.is_empty() { vec![Block::Text { text: "Go on.".into() }] } else { results };
                let req = Request {
                    model: "m".into(),
                    max_tokens: Some(100),
                    messages: vec![
                        Message { role: Role::User, content: vec![Block::Text { text: "Hi.".into() }] },
                        Message { role: Role::Assistant, content: answer.content.clone() },
                        Message { role: Role::User, content: next },
                    ],
                    ..Request::default()
                };
                let sent = the_codec(client).encode_request(&req, &mut notes).expect("the client's request");
                let (upstream, more) = match translate_request(&sent, client, from) {
                    Ok(r) => r,
                    Err(e) => {
                        problems.push(format!("{at}: translation failed: {e}"));
                        continue;
                    }
                };
                notes.0.extend(more.0);
                let (back, _) = decode_request(from, &upstream).expect("our own output decodes");
                let turn = back.messages.iter().find(|m| m.role == Role::Assistant);
                let blocks = turn.map(|m| m.content.clone()).unwrap_or_default();
                let (want, got) = (signature_kinds(&src.content), signature_kinds(&blocks));
                let stray: Vec<_> = got.iter().filter(|s| !want.contains(s)).collect();
                if !stray.is_empty() {
                    problems.push(format!("{at}: signatures arrive changed: {stray:?}, sent {want:?}"));
                }
                if got.len() < want.len() && !noted(&notes.0, &["signature", "redacted"]) {
                    problems.push(format!("{at}: signatures lost without a note: {want:?} → {got:?}"));
                }
                let ids = from != Dialect::Gemini && client != Dialect::Gemini;
                let (ca, cb) = (calls(&src.content, ids), calls(&blocks, ids));
                if ca != cb {
                    problems.push(format!("{at}: tool calls {ca:?} → {cb:?}"));
                }
                if text_of(&src.content) != text_of(&blocks) {
                    problems.push(format!("{at}: text {:?} → {:?}", text_of(&src.content), text_of(&blocks)));
                }
            }
        }
    }
    fail_on(problems, "answers sent back");
}

// ---------------------------------------------------------------------------------------------
// Streams.

/// Decodes a whole stream with `d`'s decoder; a decoder error is a malformed stream.
fn decode_stream(d: Dialect, bytes: &[u8]) -> Result<Vec<StreamEvent>, String> {
    let mut decoder = the_codec(d).stream_decoder();
    let mut out = Vec::new();
    decoder.push(bytes, &mut out).map_err(|e| e.0)?;
    decoder.finish(&mut out);
    Ok(out)
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

/// Runs `pieces` through a translator, then ends the upstream cleanly.
fn translate_stream<'a>(from: Dialect, to: Dialect, pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut t = StreamTranslator::new(from, to).expect("translator");
    let mut out = Vec::new();
    for piece in pieces {
        out.extend_from_slice(&t.push(piece));
    }
    out.extend_from_slice(&t.finish(None));
    out
}

fn seed_of(label: &str) -> u64 {
    // FNV-1a: stable across runs and platforms.
    label.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn random_pieces(bytes: &[u8], seed: u64) -> Vec<&[u8]> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let n = rng.random_range(1..=64).min(bytes.len() - at);
        pieces.push(&bytes[at..at + n]);
        at += n;
    }
    pieces
}

/// The output fed whole, byte by byte and in random pieces; the three must agree.
fn translate_three_ways(from: Dialect, to: Dialect, bytes: &[u8], label: &str) -> Result<Vec<u8>, String> {
    let whole = translate_stream(from, to, [bytes]);
    let bytewise = translate_stream(from, to, bytes.chunks(1));
    let random = translate_stream(from, to, random_pieces(bytes, seed_of(label)));
    let (w, b, r) = (
        redact(&String::from_utf8_lossy(&whole)),
        redact(&String::from_utf8_lossy(&bytewise)),
        redact(&String::from_utf8_lossy(&random)),
    );
    if w != b {
        return Err(format!("whole and byte-by-byte feeding differ:\n{w}\n---\n{b}"));
    }
    if w != r {
        return Err(format!("whole and random-piece feeding differ:\n{w}\n---\n{r}"));
    }
    Ok(whole)
}

/// Checks the canonical-stream invariants: `Start` first (or a lone `Error`: an upstream that
/// failed before anything), blocks started once, deltas of the block's kind only while it is
/// open, blocks closed in order before the end, and exactly one terminal, last: `Finish` then
/// `Stop`, or `Error`.
fn check_well_formed(events: &[StreamEvent]) -> Result<(), String> {
    let mut open: Vec<(usize, &BlockStart)> = Vec::new();
    let mut seen: Vec<usize> = Vec::new();
    let mut finished = false;
    let mut terminated = false;
    for (i, e) in events.iter().enumerate() {
        if terminated {
            return Err(format!("event {i} after the terminal: {e:?}"));
        }
        if i == 0 && !matches!(e, StreamEvent::Start { .. } | StreamEvent::Error { .. }) {
            return Err(format!("the first event is not Start: {e:?}"));
        }
        match e {
            StreamEvent::Start { .. } if i != 0 => return Err(format!("Start again at {i}")),
            StreamEvent::Start { .. } => {}
            StreamEvent::BlockStart { index, block } => {
                if finished || seen.contains(index) {
                    return Err(format!("block {index} started after Finish or twice"));
                }
                if seen.last().is_some_and(|last| last > index) {
                    return Err(format!("block {index} starts after a higher index"));
                }
                seen.push(*index);
                open.push((*index, block));
            }
            StreamEvent::Delta { index, delta } => {
                let Some((_, block)) = open.iter().find(|(i, _)| i == index) else {
                    return Err(format!("delta for block {index}, which is not open"));
                };
                let fits = matches!(
                    (block, delta),
                    (BlockStart::Text, Delta::Text(_))
                        | (BlockStart::ToolUse { .. }, Delta::Json(_))
                        | (BlockStart::Thinking, Delta::Thinking(_) | Delta::Signature(_))
                );
                if !fits {
                    return Err(format!("delta {delta:?} in a {block:?} block"));
                }
            }
            StreamEvent::BlockStop { index } => {
                let Some(pos) = open.iter().position(|(i, _)| i == index) else {
                    return Err(format!("stop of block {index}, which is not open"));
                };
                if open.iter().any(|(i, _)| i < index) {
                    return Err(format!("block {index} closes while a lower one is open"));
                }
                open.remove(pos);
            }
            StreamEvent::Finish { .. } => {
                if finished || !open.is_empty() {
                    return Err("Finish twice or with open blocks".into());
                }
                finished = true;
            }
            StreamEvent::Stop => {
                if !finished {
                    return Err("Stop without Finish".into());
                }
                terminated = true;
            }
            StreamEvent::Error { .. } => {
                if !open.is_empty() {
                    return Err("Error with open blocks".into());
                }
                terminated = true;
            }
        }
    }
    if !terminated {
        return Err("no terminal event".into());
    }
    Ok(())
}

/// Prompt tokens (input, cache reads and writes) announced at the start and at the finish.
fn prompt_sizes(events: &[StreamEvent]) -> (u64, u64) {
    let prompt = |u: &Usage| {
        let t = &u.tokens;
        t.input_tokens + t.cache_read_input_tokens + t.cache_creation_input_tokens
    };
    let mut sizes = (0, 0);
    for e in events {
        match e {
            StreamEvent::Start { usage, .. } => sizes.0 = prompt(usage),
            StreamEvent::Finish { usage, .. } => sizes.1 = prompt(usage),
            _ => {}
        }
    }
    sizes
}

/// What a stream said.
#[derive(Debug, Default, PartialEq)]
struct Said {
    text: String,
    thinking: String,
    signatures: Vec<String>,
    calls: Vec<(Option<String>, String, Value)>,
    finish: Option<(StopReason, Usage)>,
    error: Option<String>,
}

fn said(events: &[StreamEvent], ids: bool) -> Said {
    let mut s = Said::default();
    let mut args: HashMap<usize, String> = HashMap::new();
    let mut call_at: HashMap<usize, usize> = HashMap::new();
    let mut signature: HashMap<usize, String> = HashMap::new();
    for e in events {
        match e {
            StreamEvent::BlockStart { index, block: BlockStart::ToolUse { id, name } } => {
                call_at.insert(*index, s.calls.len());
                s.calls.push((ids.then(|| id.clone()), name.clone(), Value::Null));
            }
            StreamEvent::BlockStart { index, block: BlockStart::Thinking } => {
                if !s.thinking.is_empty() {
                    s.thinking.push_str("\n\n");
                }
                signature.insert(*index, String::new());
            }
            StreamEvent::Delta { index, delta } => match delta {
                Delta::Text(t) => s.text.push_str(t),
                Delta::Thinking(t) => s.thinking.push_str(t),
                Delta::Json(j) => args.entry(*index).or_default().push_str(j),
                Delta::Signature(sig) => signature.entry(*index).or_default().push_str(sig),
            },
            StreamEvent::BlockStop { index } => {
                if let Some(at) = call_at.remove(index) {
                    let raw = args.remove(index).unwrap_or_default();
                    s.calls[at].2 = if raw.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&raw).unwrap_or(Value::String(raw))
                    };
                }
                if let Some(sig) = signature.remove(index).filter(|s| !s.is_empty()) {
                    s.signatures.push(sig);
                }
            }
            StreamEvent::Finish { stop_reason, usage, .. } => s.finish = Some((*stop_reason, *usage)),
            StreamEvent::Error { kind, .. } => s.error = Some(kind.clone()),
            _ => {}
        }
    }
    // Reasoning blocks with no text (Gemini signature carriers) add no separator.
    s.thinking = s.thinking.split("\n\n").filter(|p| !p.is_empty()).collect::<Vec<_>>().join("\n\n");
    s
}

/// What the target should say, given what the source said.
fn expected_said(src: &Said, from: Dialect, to: Dialect) -> Said {
    Said {
        text: src.text.clone(),
        thinking: src.thinking.clone(),
        // Chat has no place for signatures or encrypted reasoning; the others get them tagged.
        signatures: if to == Dialect::OpenaiChat { Vec::new() } else { tagged(from, &src.signatures) },
        calls: src
            .calls
            .iter()
            .map(|(id, n, a)| (id.clone().filter(|_| to != Dialect::Gemini), n.clone(), a.clone()))
            .collect(),
        finish: src
            .finish
            .map(|(r, u)| (expected_stop(r, !src.calls.is_empty(), to), expected_usage(&u, to))),
        error: src.error.clone(),
    }
}

#[test]
fn streams_translate_into_every_other_dialect() {
    let mut problems = Vec::new();
    for from in DIALECTS {
        for fx in fixtures(from, Kind::Stream) {
            let src_events = normalize(decode_stream(from, &fx.bytes).expect("source fixture decodes"));
            check_well_formed(&src_events).expect("the normalized source is well-formed");
            for to in others(from) {
                let at = format!("{} → {to}", fx.label());
                let out = match translate_three_ways(from, to, &fx.bytes, &at) {
                    Ok(out) => out,
                    Err(e) => {
                        problems.push(format!("{at}: {e}"));
                        continue;
                    }
                };
                let text = String::from_utf8(out.clone()).expect("translated streams are UTF-8");
                insta::assert_snapshot!(
                    format!("stream__{}__{}__to__{}", dir_name(from), fx.name, dir_name(to)),
                    redact(&text)
                );
                problems.extend(check_wire(to, &out, false).into_iter().map(|p| format!("{at}: {p}")));
                let events = match decode_stream(to, &out) {
                    Ok(e) => e,
                    Err(e) => {
                        problems.push(format!("{at}: the target decoder rejects the output: {e}"));
                        continue;
                    }
                };
                if let Err(e) = check_well_formed(&events) {
                    problems.push(format!("{at}: not well-formed: {e}\n{events:#?}"));
                }
                // The prompt size a target announces at the start (Anthropic's message_start,
                // Gemini's first frame) is the source's (unless the source's own grew, as with
                // server tools).
                let (src_start, src_end) = prompt_sizes(&src_events);
                let (start, _) = prompt_sizes(&events);
                if src_start == src_end && start != 0 && start != src_start {
                    problems.push(format!("{at}: prompt tokens {start} at the start, {src_end} in all"));
                }
                let ids = to != Dialect::Gemini;
                let expected = expected_said(&said(&src_events, ids), from, to);
                let got = said(&events, ids);
                if got != expected {
                    problems
                        .push(format!("{at}: content differs:\n  expected {expected:?}\n  got      {got:?}"));
                }
            }
        }
    }
    fail_on(problems, "streams");
}

/// Events of a dialect's stream as (event name, data), parsed by the gateway's SSE parser.
fn sse(bytes: &[u8]) -> Vec<(Option<String>, String)> {
    let mut d = SseDecoder::default();
    let mut out = Vec::new();
    let mut take =
        |e: gateway_core::sse::SseEvent<'_>| out.push((e.event.map(str::to_owned), e.data.into_owned()));
    d.push(bytes, &mut take).expect("sse");
    d.finish(&mut take);
    out
}

/// Wire-level checks: complete events only, JSON data, and the target's own ending — its error
/// ending when `error` (never its success ending then), its success ending otherwise unless the
/// stream carried an error.
fn check_wire(to: Dialect, bytes: &[u8], error: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if !(bytes.is_empty() || bytes.ends_with(b"\n\n") || bytes.ends_with(b"\r\n\r\n")) {
        problems.push("the output ends inside an event".to_owned());
    }
    let events = sse(bytes);
    let mut datas = Vec::new();
    for (name, data) in &events {
        if data == "[DONE]" && to == Dialect::OpenaiChat {
            datas.push((name.clone(), Value::String(data.clone())));
            continue;
        }
        match serde_json::from_str::<Value>(data) {
            Ok(v) => datas.push((name.clone(), v)),
            Err(e) => problems.push(format!("event data is not JSON ({e}): {data}")),
        }
    }
    let Some((last_name, last)) = datas.last() else {
        problems.push("no events".to_owned());
        return problems;
    };
    let has_error = match to {
        Dialect::Anthropic => last_name.as_deref() == Some("error"),
        Dialect::OpenaiChat => last.get("error").is_some(),
        Dialect::OpenaiResponses => matches!(last["type"].as_str(), Some("response.failed" | "error")),
        Dialect::Gemini => last.get("error").is_some(),
    };
    let success_marks = datas
        .iter()
        .filter(|(name, v)| match to {
            Dialect::Anthropic => name.as_deref() == Some("message_stop"),
            Dialect::OpenaiChat => v == &Value::String("[DONE]".into()),
            Dialect::OpenaiResponses => {
                matches!(v["type"].as_str(), Some("response.completed" | "response.incomplete"))
            }
            Dialect::Gemini => v["candidates"][0].get("finishReason").is_some(),
        })
        .count();
    if error {
        if !has_error {
            problems.push(format!("does not end with the {to} error ending: {last_name:?} {last}"));
        }
        if success_marks != 0 {
            problems.push(format!("a cut stream carries {to}'s success ending"));
        }
    } else if !has_error && success_marks != 1 {
        problems.push(format!("{success_marks} success endings"));
    }
    if has_error && success_marks != 0 {
        problems.push("both an error and a success ending".to_owned());
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Streams that stop early.

/// Byte offsets just after each SSE event (after its blank line).
fn event_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"\r\n\r\n") {
            ends.push(i + 4);
            i += 4;
        } else if bytes[i..].starts_with(b"\n\n") {
            ends.push(i + 2);
            i += 2;
        } else {
            i += 1;
        }
    }
    ends
}

/// Where to cut a stream: in the middle of the first event with content, halfway through the
/// content, right before the event that completes the response (or fails it), and inside it.
fn cut_points(from: Dialect, bytes: &[u8]) -> Vec<(&'static str, usize)> {
    let ends = event_ends(bytes);
    let mut starts = vec![0];
    starts.extend(&ends);
    let decoded = |cut: usize| decode_stream(from, &bytes[..cut]).unwrap_or_default();
    let first = |pred: &dyn Fn(&[StreamEvent]) -> bool| {
        ends.iter().position(|end| pred(&decoded(*end))).expect("the fixture has such an event")
    };
    let content = first(&|ev| ev.iter().any(|e| matches!(e, StreamEvent::Delta { .. })));
    let terminal = first(&|ev| {
        ev.iter()
            .any(|e| matches!(e, StreamEvent::Finish { .. } | StreamEvent::Stop | StreamEvent::Error { .. }))
    });
    assert!(content < terminal, "content comes before the end");
    let (c0, c1) = (starts[content], ends[content]);
    let (t0, t1) = (starts[terminal], ends[terminal]);
    vec![
        ("before_content", c0 + (c1 - c0) / 2),
        ("mid_content", c1 + (t0 - c1) / 2),
        ("before_terminal", t0),
        ("inside_terminal", t0 + (t1 - t0) / 2),
    ]
}

#[test]
fn streams_cut_short_end_with_the_targets_error_ending() {
    let mut problems = Vec::new();
    let mut count = 0;
    for from in DIALECTS {
        for fx in fixtures(from, Kind::Stream) {
            for (point, cut) in cut_points(from, &fx.bytes) {
                let prefix = &fx.bytes[..cut];
                let src_events = normalize(decode_stream(from, prefix).unwrap_or_default());
                assert!(
                    matches!(src_events.last(), Some(StreamEvent::Error { .. })),
                    "{} cut {point} at {cut} is not early: {src_events:?}",
                    fx.label()
                );
                let src = said(&src_events, true);
                for to in DIALECTS {
                    count += 1;
                    let at = format!("{} cut {point} (byte {cut}) → {to}", fx.label());
                    let out = match translate_three_ways(from, to, prefix, &at) {
                        Ok(out) => out,
                        Err(e) => {
                            problems.push(format!("{at}: {e}"));
                            continue;
                        }
                    };
                    problems.extend(check_wire(to, &out, true).into_iter().map(|p| format!("{at}: {p}")));
                    let events = match decode_stream(to, &out) {
                        Ok(e) => e,
                        Err(e) => {
                            problems.push(format!("{at}: the target decoder rejects the output: {e}"));
                            continue;
                        }
                    };
                    if let Err(e) = check_well_formed(&events) {
                        problems.push(format!("{at}: not well-formed: {e}\n{events:#?}"));
                    }
                    let got = said(&events, true);
                    if got.error.is_none() || got.finish.is_some() {
                        problems
                            .push(format!("{at}: ends {:?} / {:?}, not in an error", got.finish, got.error));
                    }
                    if got.error != src.error {
                        problems.push(format!("{at}: error kind {:?}, expected {:?}", got.error, src.error));
                    }
                    if got.text != src.text || got.thinking != src.thinking {
                        problems.push(format!(
                            "{at}: what arrived before the cut differs: {:?} {:?} vs {:?} {:?}",
                            got.text, got.thinking, src.text, src.thinking
                        ));
                    }
                }
            }
        }
    }
    assert!(count > 0);
    fail_on(problems, "cut streams");
}

// ---------------------------------------------------------------------------------------------
// Errors.

fn status_of(name: &str) -> u16 {
    if name.contains("rate_limit") || name.contains("resource_exhausted") {
        429
    } else if name.contains("overloaded") {
        529
    } else if name.contains("invalid_api_key") {
        401
    } else if name.contains("invalid_request") || name.contains("invalid_argument") {
        400
    } else {
        panic!("no HTTP status known for error fixture {name}")
    }
}

#[test]
fn errors_keep_their_category_in_every_other_dialect() {
    let mut problems = Vec::new();
    for from in DIALECTS {
        for fx in fixtures(from, Kind::Error) {
            let status = status_of(&fx.name);
            let info = the_codec(from).decode_error(status, &fx.bytes);
            let mut translated = serde_json::Map::new();
            for to in others(from) {
                let at = format!("{} → {to}", fx.label());
                let body = the_codec(to).encode_error(&info);
                let Ok(value) = serde_json::from_slice::<Value>(&body) else {
                    problems.push(format!("{at}: not JSON"));
                    continue;
                };
                translated.insert(dir_name(to).to_owned(), value);
                // With the status, and from the body alone (as inside a stream).
                for seen_status in [status, 0] {
                    let back: ErrorInfo = the_codec(to).decode_error(seen_status, &body);
                    if back.kind != info.kind || back.message != info.message {
                        problems.push(format!(
                            "{at} (read with status {seen_status}): {:?} {:?} became {:?} {:?}",
                            info.kind, info.message, back.kind, back.message
                        ));
                    }
                }
            }
            insta::assert_json_snapshot!(
                format!("error__{}__{}", dir_name(from), fx.name),
                json!({
                    "decoded": {"status": info.status, "kind": info.kind, "message": info.message},
                    "translated": translated,
                })
            );
        }
    }
    fail_on(problems, "errors");
}
