//! The Rust runner of the shared binding scenarios (`scenarios/*.json` at the repository root,
//! format in `scenarios/README.md`). The Python and Node bindings run the same files through
//! their own in-process calls; this runner is the reference: it calls [`Gateway::handle`]
//! directly, so a scenario that fails here is wrong about the gateway, not about a binding.
//!
//! Every file is run, and every failure is reported before the test fails, with the response and
//! the usage record that were seen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway_core::Gateway;
use gateway_core::config::ConfigFile;
use gateway_core::store::MemoryUsageSink;
use gateway_mock::{MockBehavior, MockUpstream};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use serde::Deserialize;
use serde_json::Value;

/// How long a runner waits for the usage record, and then for a second (unexpected) one.
const USAGE_WAIT: Duration = Duration::from_secs(5);
const SECOND_RECORD_GRACE: Duration = Duration::from_millis(100);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    name: String,
    #[allow(dead_code, reason = "documentation for readers of the file")]
    description: String,
    config: Value,
    #[serde(default)]
    mock: Option<Value>,
    request: ScenarioRequest,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioRequest {
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    sse_events: Option<Vec<String>>,
    #[serde(default)]
    body_contains: Vec<String>,
    #[serde(default)]
    usage: Option<Value>,
}

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("scenarios")
}

fn scenario_files() -> Vec<PathBuf> {
    let dir = scenarios_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

/// Replaces `{{mock_url}}` inside every string of `value`.
fn substitute(value: &mut Value, mock_url: &str) {
    match value {
        Value::String(s) if s.contains("{{mock_url}}") => *s = s.replace("{{mock_url}}", mock_url),
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, mock_url)),
        Value::Object(map) => map.values_mut().for_each(|v| substitute(v, mock_url)),
        _ => {}
    }
}

/// Drops `null` members: TOML has no null, and an absent key is what a null means here.
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        _ => {}
    }
}

/// The scenario's config through the TOML import itself, so that defaults, `${VAR}` expansion
/// and validation are exactly the server's.
fn config_file(mut config: Value) -> Result<ConfigFile, String> {
    drop_nulls(&mut config);
    let text = toml::to_string(&config).map_err(|e| format!("config cannot be written as TOML: {e}"))?;
    ConfigFile::from_toml_str(&text).map_err(|e| format!("config rejected: {e}\n{text}"))
}

/// Whether `actual` contains `expected`: objects as subsets, arrays element-wise with equal
/// length, numbers by value, other scalars equal. On a mismatch, the JSON path of the first one.
fn subset_mismatch(expected: &Value, actual: &Value, path: &str) -> Option<String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().find_map(|(k, ev)| match a.get(k) {
            Some(av) => subset_mismatch(ev, av, &format!("{path}.{k}")),
            None => Some(format!("{path}.{k}: missing (expected {ev})")),
        }),
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Some(format!("{path}: expected {} elements, got {}", e.len(), a.len()));
            }
            e.iter()
                .zip(a)
                .enumerate()
                .find_map(|(i, (ev, av))| subset_mismatch(ev, av, &format!("{path}[{i}]")))
        }
        (Value::Number(e), Value::Number(a)) => {
            let same = match (e.as_i64(), a.as_i64(), e.as_u64(), a.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => e.as_f64() == a.as_f64(),
            };
            (!same).then(|| format!("{path}: expected {e}, got {a}"))
        }
        _ => (expected != actual).then(|| format!("{path}: expected {expected}, got {actual}")),
    }
}

/// The SSE event names of a body, as scenarios list them: the `event:` name, else the `data:`
/// payload's `object` field (`[DONE]` as itself; a payload without a string `object`, "").
fn sse_events(body: &str) -> Vec<String> {
    let normalized = body.replace("\r\n", "\n");
    let mut events = Vec::new();
    for block in normalized.split("\n\n") {
        let mut name = None;
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if let Some(name) = name {
            events.push(name);
        } else if !data.is_empty() {
            let payload = data.join("\n");
            if payload.trim() == "[DONE]" {
                events.push("[DONE]".to_owned());
            } else {
                let object = serde_json::from_str::<Value>(&payload)
                    .ok()
                    .and_then(|v| v.get("object").and_then(Value::as_str).map(str::to_owned));
                events.push(object.unwrap_or_default());
            }
        }
    }
    events
}

struct Outcome {
    status: u16,
    headers: http::HeaderMap,
    body: String,
    records: Vec<Value>,
}

async fn run(scenario: &Scenario) -> Result<Outcome, String> {
    let mock = MockUpstream::start().await.map_err(|e| format!("mock did not start: {e}"))?;
    if let Some(behavior) = &scenario.mock {
        let behavior: MockBehavior =
            serde_json::from_value(behavior.clone()).map_err(|e| format!("invalid mock behavior: {e}"))?;
        mock.set_behavior(behavior);
    }
    let mut config = scenario.config.clone();
    substitute(&mut config, &mock.url());
    let sink = MemoryUsageSink::new();
    let gateway = Gateway::builder()
        .config(&config_file(config)?)
        .usage_sink(Arc::new(sink.clone()))
        .build()
        .map_err(|e| format!("gateway did not build: {e}"))?;

    let req = &scenario.request;
    let mut builder = http::Request::builder().method(req.method.as_str()).uri(req.path.as_str());
    for (name, value) in &req.headers {
        builder = builder.header(name, value);
    }
    let body: UnsyncBoxBody<Bytes, std::convert::Infallible> = match &req.body {
        Some(value) => Full::new(Bytes::from(value.to_string())).boxed_unsync(),
        None => Empty::new().boxed_unsync(),
    };
    let request = builder.body(body).map_err(|e| format!("invalid request: {e}"))?;
    let response = gateway.handle(request).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes =
        response.into_body().collect().await.map_err(|e| format!("response body failed: {e}"))?.to_bytes();
    let body = String::from_utf8_lossy(&bytes).into_owned();

    let records = match tokio::time::timeout(USAGE_WAIT, sink.wait_for(1)).await {
        Ok(_) => {
            tokio::time::sleep(SECOND_RECORD_GRACE).await;
            sink.records()
        }
        Err(_) => Vec::new(),
    };
    let records = records
        .iter()
        .map(|r| serde_json::to_value(r).map_err(|e| format!("usage record does not serialize: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(Outcome { status, headers, body, records })
}

/// Every expectation that does not hold.
fn check(expect: &Expect, out: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    if out.status != expect.status {
        problems.push(format!("status: expected {}, got {}", expect.status, out.status));
    }
    for (name, prefix) in &expect.headers {
        match out.headers.get(name.as_str()).map(|v| v.to_str()) {
            Some(Ok(v)) if v.starts_with(prefix.as_str()) => {}
            Some(Ok(v)) => problems.push(format!("header {name}: expected prefix {prefix:?}, got {v:?}")),
            Some(Err(_)) => problems.push(format!("header {name}: not text")),
            None => problems.push(format!("header {name}: missing")),
        }
    }
    if let Some(expected) = &expect.json {
        match serde_json::from_str::<Value>(&out.body) {
            Ok(actual) => problems.extend(subset_mismatch(expected, &actual, "json")),
            Err(e) => problems.push(format!("json: body is not JSON: {e}")),
        }
    }
    if let Some(expected) = &expect.sse_events {
        let actual = sse_events(&out.body);
        if &actual != expected {
            problems.push(format!("sse_events: expected {expected:?}, got {actual:?}"));
        }
    }
    for needle in &expect.body_contains {
        if !out.body.contains(needle.as_str()) {
            problems.push(format!("body_contains: {needle:?} not in the body"));
        }
    }
    match out.records.as_slice() {
        [record] => {
            if let Some(expected) = &expect.usage {
                problems.extend(subset_mismatch(expected, record, "usage"));
            }
        }
        records => problems.push(format!("usage: expected exactly one record, got {}", records.len())),
    }
    problems
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

#[test]
fn every_shared_scenario_passes() {
    let files = scenario_files();
    assert!(files.len() >= 8, "expected at least 8 scenarios in {}", scenarios_dir().display());
    let rt = runtime();
    let mut failures = Vec::new();
    let mut names = std::collections::HashSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let scenario: Scenario = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{}: not a valid scenario: {e}", file.display()));
                continue;
            }
        };
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if scenario.name != stem {
            failures.push(format!("{}: name {:?} differs from the file name", file.display(), scenario.name));
        }
        if !names.insert(scenario.name.clone()) {
            failures.push(format!("{}: duplicate name {:?}", file.display(), scenario.name));
        }
        match rt.block_on(run(&scenario)) {
            Ok(out) => {
                let problems = check(&scenario.expect, &out);
                if problems.is_empty() {
                    println!("scenario {}: ok", scenario.name);
                } else {
                    failures.push(format!(
                        "scenario {}:\n  - {}\n  status {}, body:\n{}\n  usage records: {}",
                        scenario.name,
                        problems.join("\n  - "),
                        out.status,
                        out.body,
                        serde_json::to_string_pretty(&out.records).unwrap_or_default()
                    ));
                }
            }
            Err(e) => failures.push(format!("scenario {}: {e}", scenario.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_matchers_can_fail() {
    let actual = serde_json::json!({"a": 1, "b": [1, {"c": "x", "d": 2}], "e": 2.5});
    assert_eq!(subset_mismatch(&serde_json::json!({"a": 1, "b": [1, {"c": "x"}]}), &actual, "j"), None);
    assert_eq!(subset_mismatch(&serde_json::json!({"a": 1.0, "e": 2.5}), &actual, "j"), None);
    assert!(subset_mismatch(&serde_json::json!({"a": 2}), &actual, "j").is_some());
    assert!(subset_mismatch(&serde_json::json!({"b": [1]}), &actual, "j").is_some(), "array lengths differ");
    assert!(subset_mismatch(&serde_json::json!({"z": null}), &actual, "j").is_some(), "missing key");
    assert!(subset_mismatch(&serde_json::json!({"a": "1"}), &actual, "j").is_some(), "types differ");

    let named = "event: message_start\ndata: {}\n\n: comment\n\nevent: ping\r\ndata: {}\r\n\r\n";
    assert_eq!(sse_events(named), ["message_start", "ping"]);
    let chat = "data: {\"object\":\"chat.completion.chunk\"}\n\ndata: {\"x\":1}\n\ndata: [DONE]\n\n";
    assert_eq!(sse_events(chat), ["chat.completion.chunk", "", "[DONE]"]);
}
