//! Helpers shared by the dialect test files. Each test binary uses a different subset, so unused
//! ones are expected.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::StreamExt;
use gateway_mock::{MockBehavior, MockUpstream, MockUsage};
use serde_json::{Value, json};

pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn client() -> reqwest::Client {
    // Plain HTTP only, but reqwest without a built-in provider refuses to build otherwise.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("build client")
}

pub fn h2c_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().http2_prior_knowledge().build().expect("build h2c client")
}

pub async fn start(behavior: MockBehavior) -> MockUpstream {
    MockUpstream::start_on("127.0.0.1:0".parse().expect("addr"), behavior).await.expect("start mock")
}

/// Sends a prepared request, failing the test when no response arrives in time.
pub async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    tokio::time::timeout(DEADLINE, request.send()).await.expect("response in time").expect("send request")
}

pub async fn json_body(response: reqwest::Response) -> Value {
    let bytes =
        tokio::time::timeout(DEADLINE, response.bytes()).await.expect("body in time").expect("read body");
    serde_json::from_slice(&bytes).unwrap_or_else(|err| panic!("JSON body ({err}): {bytes:?}"))
}

pub async fn text_body(response: reqwest::Response) -> String {
    tokio::time::timeout(DEADLINE, response.text()).await.expect("body in time").expect("read body")
}

/// Reads a streaming body to its end, returning what arrived and whether it ended in an error.
pub async fn read_until_error(response: reqwest::Response) -> (String, bool) {
    let mut frames = response.bytes_stream();
    let mut text = String::new();
    while let Some(frame) = tokio::time::timeout(DEADLINE, frames.next()).await.expect("frame in time") {
        match frame {
            Ok(bytes) => text.push_str(std::str::from_utf8(&bytes).expect("utf-8")),
            Err(_) => return (text, true),
        }
    }
    (text, false)
}

/// The parameter schema of the weather tool every dialect's tests declare.
pub fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "location": { "type": "string" },
            "days": { "type": "integer" },
            "metric": { "type": "boolean" }
        },
        "required": ["location"]
    })
}

/// The arguments the mock derives from [`weather_schema`].
pub fn weather_arguments() -> Value {
    json!({ "location": "mock", "days": 1, "metric": true })
}

/// Usage with every Anthropic bucket set, to check each dialect's accounting.
pub fn cached_usage() -> MockUsage {
    MockUsage {
        input_tokens: 100,
        output_tokens: 7,
        cache_creation_input_tokens: 30,
        cache_creation_5m_input_tokens: 10,
        cache_creation_1h_input_tokens: 20,
        cache_read_input_tokens: 40,
    }
}

/// Input tokens of [`cached_usage`] as OpenAI and Gemini count them (cache reads and writes
/// included).
pub const CACHED_PROMPT_TOKENS: u64 = 100 + 40 + 30;
