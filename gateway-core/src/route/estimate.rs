//! Token counts the gateway answers itself when no provider of the caller's dialect exists (a
//! team on an OpenAI-compatible vendor still runs Claude Code, which calls `count_tokens`).
//! Token counting has no cross-dialect equivalent, and a 503 would make clients retry; an
//! estimate of about four characters per token is what clients use these counts for (context
//! budgeting), and the response says it is an estimate.

use http::{HeaderValue, StatusCode, header};

use crate::dialect::Dialect;
use crate::ingress::{GeminiAction, gemini_action};
use crate::request::{GatewayRequest, GatewayResponse, full_body};

/// Header marking a count the gateway estimated.
pub const ESTIMATE_HEADER: &str = "x-gateway-token-count";

/// Characters per token of the estimate; tokenizers of current models average about this on
/// English and code.
const CHARS_PER_TOKEN: usize = 4;

/// Roughly the tokens of the text in a JSON request: string contents, not the JSON syntax.
pub fn estimate_tokens(body: &[u8]) -> u64 {
    fn walk(v: &serde_json::Value, chars: &mut usize) {
        match v {
            serde_json::Value::String(s) => *chars += s.chars().count(),
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, chars)),
            serde_json::Value::Object(map) => map.values().for_each(|i| walk(i, chars)),
            _ => {}
        }
    }
    let mut chars = 0;
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        walk(&v, &mut chars);
    }
    u64::try_from(chars.div_ceil(CHARS_PER_TOKEN)).unwrap_or(u64::MAX).max(1)
}

/// The estimated answer to a token-count request, or `None` for other endpoints.
pub fn token_count_response(req: &GatewayRequest) -> Option<GatewayResponse> {
    let path = req.uri.path();
    let body = match req.dialect {
        Dialect::Anthropic if path == "/v1/messages/count_tokens" => {
            serde_json::json!({ "input_tokens": estimate_tokens(&req.body) })
        }
        Dialect::Gemini if gemini_action(path).is_some_and(|(_, a)| a == GeminiAction::CountTokens) => {
            serde_json::json!({ "totalTokens": estimate_tokens(&req.body) })
        }
        _ => return None,
    };
    let mut resp = http::Response::new(full_body(body.to_string()));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(ESTIMATE_HEADER, HeaderValue::from_static("estimated"));
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_text_not_syntax() {
        let body = br#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"abcdefgh"}]}"#;
        // "claude-sonnet-4-5" (17) + "user" (4) + "abcdefgh" (8) = 29 chars -> 8 tokens
        assert_eq!(estimate_tokens(body), 8);
        assert_eq!(estimate_tokens(b"not json"), 1);
    }
}
