//! Decides which vendor dialect a request speaks and hands it to that dialect's module.

use bytes::Bytes;
use http::{HeaderMap, Method, Response, Uri};

use crate::behavior::MockBehavior;
use crate::body::MockBody;
use crate::{anthropic, gemini, openai};

/// The vendor API a request is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Anthropic Messages (`/v1/messages`), and the fallback for unknown paths.
    Anthropic,
    /// OpenAI Chat Completions and Responses (`/v1/chat/completions`, `/v1/responses`).
    OpenAi,
    /// Google Gemini (`/v1beta/models/{model}:generateContent` and friends).
    Gemini,
}

impl Dialect {
    /// The dialect of a request, from its path, query and headers.
    ///
    /// The paths of the generation endpoints name their vendor. `GET /v1/models` exists at
    /// all three vendors, so its headers decide: `anthropic-version` means Anthropic, a Gemini
    /// key (`x-goog-api-key` or `?key=`) means Gemini, an `Authorization` header without
    /// `x-api-key` means OpenAI. A request with none of them stays Anthropic, the mock's
    /// original and only shape before the other dialects existed.
    pub(crate) fn detect(path: &str, query: Option<&str>, headers: &HeaderMap) -> Self {
        if path.starts_with("/v1/chat/") || path == "/v1/responses" || path.starts_with("/v1/responses/") {
            return Self::OpenAi;
        }
        if path.starts_with("/v1beta/") || path == "/v1beta" || gemini::is_model_method(path) {
            return Self::Gemini;
        }
        if path == "/v1/models" || path.starts_with("/v1/models/") {
            if headers.contains_key("anthropic-version") {
                return Self::Anthropic;
            }
            if headers.contains_key("x-goog-api-key") || gemini::query_param(query, "key").is_some() {
                return Self::Gemini;
            }
            if headers.contains_key(http::header::AUTHORIZATION) && !headers.contains_key("x-api-key") {
                return Self::OpenAi;
            }
        }
        Self::Anthropic
    }
}

/// Produces the response for one recorded request.
pub(crate) fn respond(
    behavior: &MockBehavior,
    id: u64,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<MockBody> {
    let path = uri.path();
    match Dialect::detect(path, uri.query(), headers) {
        Dialect::Anthropic => anthropic::respond(behavior, id, method, path, headers, body),
        Dialect::OpenAi => openai::respond(behavior, id, method, path, headers, body),
        Dialect::Gemini => gemini::respond(behavior, id, method, path, uri.query(), headers, body),
    }
}

/// A 400 in the request's dialect, for a request body that could not be read.
pub(crate) fn bad_request(uri: &Uri, headers: &HeaderMap, message: &str, id: u64) -> Response<MockBody> {
    match Dialect::detect(uri.path(), uri.query(), headers) {
        Dialect::Anthropic => anthropic::error_response(400, message, id),
        Dialect::OpenAi => openai::error_response(400, message, id),
        Dialect::Gemini => gemini::error_response(400, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn paths_name_their_dialect() {
        let none = HeaderMap::new();
        assert_eq!(Dialect::detect("/v1/messages", None, &none), Dialect::Anthropic);
        assert_eq!(Dialect::detect("/v1/messages/count_tokens", None, &none), Dialect::Anthropic);
        assert_eq!(Dialect::detect("/v1/chat/completions", None, &none), Dialect::OpenAi);
        assert_eq!(Dialect::detect("/v1/responses", None, &none), Dialect::OpenAi);
        assert_eq!(Dialect::detect("/v1/responses/input_tokens", None, &none), Dialect::OpenAi);
        assert_eq!(Dialect::detect("/v1beta/models", None, &none), Dialect::Gemini);
        assert_eq!(
            Dialect::detect("/v1beta/models/gemini-2.5-pro:generateContent", None, &none),
            Dialect::Gemini
        );
        assert_eq!(Dialect::detect("/v1/models/gemini-2.5-pro:countTokens", None, &none), Dialect::Gemini);
        assert_eq!(Dialect::detect("/v1/unknown", None, &none), Dialect::Anthropic);
    }

    #[test]
    fn models_list_dialect_follows_the_headers() {
        let anthropic = headers(&[("anthropic-version", "2023-06-01"), ("authorization", "Bearer x")]);
        assert_eq!(Dialect::detect("/v1/models", None, &anthropic), Dialect::Anthropic);
        let openai = headers(&[("authorization", "Bearer x")]);
        assert_eq!(Dialect::detect("/v1/models", None, &openai), Dialect::OpenAi);
        assert_eq!(Dialect::detect("/v1/models/gpt-4.1", None, &openai), Dialect::OpenAi);
        let gemini = headers(&[("x-goog-api-key", "k")]);
        assert_eq!(Dialect::detect("/v1/models", None, &gemini), Dialect::Gemini);
        assert_eq!(Dialect::detect("/v1/models", Some("key=k"), &HeaderMap::new()), Dialect::Gemini);
        let x_api_key = headers(&[("x-api-key", "k"), ("authorization", "Bearer x")]);
        assert_eq!(Dialect::detect("/v1/models", None, &x_api_key), Dialect::Anthropic);
        assert_eq!(Dialect::detect("/v1/models", None, &HeaderMap::new()), Dialect::Anthropic);
    }
}
