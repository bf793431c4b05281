//! `GatewayError`: every way the gateway itself refuses or fails a request, rendered in the
//! caller's own API dialect.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

use crate::dialect::Dialect;

/// Machine-readable category of a gateway error; decides status and the vendor error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed request (bad JSON, missing field, undecodable body).
    InvalidRequest,
    /// Missing, unknown, disabled or expired credentials.
    Authentication,
    /// Authenticated but not allowed.
    Permission,
    /// Route or resource does not exist.
    NotFound,
    /// Body over the configured limit.
    RequestTooLarge,
    /// A rate or concurrency limit was hit.
    RateLimited,
    /// A spend limit was reached (402).
    QuotaExceeded,
    /// No provider can serve the request.
    NoProvider,
    /// The upstream could not be reached or answered unusably.
    Upstream,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// A bug or an unexpected failure inside the gateway.
    Internal,
}

impl ErrorKind {
    /// HTTP status for this kind.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::Authentication => StatusCode::UNAUTHORIZED,
            Self::Permission => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::QuotaExceeded => StatusCode::PAYMENT_REQUIRED,
            Self::NoProvider => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Anthropic's `error.type` for this kind.
    pub fn anthropic_type(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::Permission => "permission_error",
            Self::NotFound => "not_found_error",
            Self::RequestTooLarge => "request_too_large",
            Self::RateLimited | Self::QuotaExceeded => "rate_limit_error",
            Self::NoProvider => "overloaded_error",
            Self::Upstream | Self::UpstreamTimeout | Self::Internal => "api_error",
        }
    }

    /// OpenAI's `error.type` for this kind.
    pub fn openai_type(self) -> &'static str {
        match self {
            Self::InvalidRequest | Self::RequestTooLarge | Self::NotFound => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::Permission => "permission_error",
            Self::RateLimited => "rate_limit_error",
            Self::QuotaExceeded => "insufficient_quota",
            Self::NoProvider | Self::Upstream | Self::UpstreamTimeout | Self::Internal => "server_error",
        }
    }

    /// Google's canonical status name for this kind.
    pub fn gemini_status(self) -> &'static str {
        match self {
            Self::InvalidRequest | Self::RequestTooLarge => "INVALID_ARGUMENT",
            Self::Authentication => "UNAUTHENTICATED",
            Self::Permission => "PERMISSION_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::RateLimited | Self::QuotaExceeded => "RESOURCE_EXHAUSTED",
            Self::NoProvider => "UNAVAILABLE",
            Self::UpstreamTimeout => "DEADLINE_EXCEEDED",
            Self::Upstream | Self::Internal => "INTERNAL",
        }
    }
}

/// An error produced by the gateway (not an upstream error response, which is relayed as is).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    /// Category.
    pub kind: ErrorKind,
    /// Stable machine code, e.g. `invalid_api_key`, `missing_model`.
    pub code: &'static str,
    /// Human-readable explanation for the client; never contains secrets or internal
    /// addresses.
    pub message: String,
    /// Operator-only detail (provider names, upstream URLs, OS errors): logged, never rendered.
    pub detail: Option<String>,
    /// The limit that refused the request, rendered into the body and headers.
    pub limit: Option<Box<LimitInfo>>,
}

/// A hit limit as clients see it: body fields (`limit_type`, `current`, `limit`, `reset_time`)
/// and the `Retry-After` / `X-RateLimit-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitInfo {
    /// `rpm`, `concurrent_sessions`, `usd_5h`, `daily_quota`, `usd_weekly`, `usd_monthly`,
    /// `usd_total`.
    pub limit_type: &'static str,
    /// Current value (a count, or dollars as a decimal string).
    pub current: String,
    /// The limit, in the same unit.
    pub limit: String,
    /// What is left (`X-RateLimit-Remaining`).
    pub remaining: String,
    /// When the request would be admitted again, if known.
    pub reset_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `Retry-After` seconds.
    pub retry_after_secs: Option<u64>,
    /// `X-RateLimit-Reset`, Unix seconds.
    pub reset_epoch_secs: Option<i64>,
}

impl GatewayError {
    /// A new error.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self { kind, code, message: message.into(), detail: None, limit: None }
    }

    /// Attaches the limit that refused the request.
    pub fn with_limit(mut self, limit: LimitInfo) -> Self {
        self.limit = Some(Box::new(limit));
        self
    }

    /// Adds operator-only detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The message plus detail, for logs.
    pub fn log_text(&self) -> String {
        match &self.detail {
            Some(d) => format!("{}: {} ({d})", self.code, self.message),
            None => format!("{}: {}", self.code, self.message),
        }
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The JSON error body in `dialect`'s shape, with the request id appended to the message so
    /// operators can find the log row from a user's report.
    pub fn body(&self, dialect: Dialect, request_id: &str) -> Bytes {
        /// Limit fields, flat in the vendor's error object (clients ignore unknown fields).
        #[derive(serde::Serialize)]
        struct LimitFields<'a> {
            limit_type: &'a str,
            current: &'a str,
            limit: &'a str,
            reset_time: Option<String>,
        }
        #[derive(serde::Serialize)]
        struct Detail<'a> {
            r#type: &'a str,
            message: &'a str,
            #[serde(flatten, skip_serializing_if = "Option::is_none")]
            limit: Option<LimitFields<'a>>,
        }
        #[derive(serde::Serialize)]
        struct AnthropicError<'a> {
            r#type: &'a str,
            error: Detail<'a>,
            request_id: &'a str,
        }
        #[derive(serde::Serialize)]
        struct OpenaiDetail<'a> {
            message: &'a str,
            r#type: &'a str,
            param: Option<&'a str>,
            code: &'a str,
            #[serde(flatten, skip_serializing_if = "Option::is_none")]
            limit: Option<LimitFields<'a>>,
        }
        #[derive(serde::Serialize)]
        struct OpenaiError<'a> {
            error: OpenaiDetail<'a>,
        }
        #[derive(serde::Serialize)]
        struct GeminiDetail<'a> {
            code: u16,
            message: &'a str,
            status: &'a str,
            #[serde(flatten, skip_serializing_if = "Option::is_none")]
            limit: Option<LimitFields<'a>>,
        }
        #[derive(serde::Serialize)]
        struct GeminiError<'a> {
            error: GeminiDetail<'a>,
        }
        let message = format!("{} (request id: {request_id})", self.message);
        let message = message.as_str();
        let limit = || {
            self.limit.as_deref().map(|l| LimitFields {
                limit_type: l.limit_type,
                current: &l.current,
                limit: &l.limit,
                reset_time: l.reset_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            })
        };
        // Structs rather than `json!` so fields keep the vendors' documented order.
        let rendered = match dialect {
            Dialect::Anthropic => serde_json::to_vec(&AnthropicError {
                r#type: "error",
                error: Detail { r#type: self.kind.anthropic_type(), message, limit: limit() },
                request_id,
            }),
            Dialect::OpenaiChat | Dialect::OpenaiResponses => serde_json::to_vec(&OpenaiError {
                error: OpenaiDetail {
                    message,
                    r#type: self.kind.openai_type(),
                    param: None,
                    code: self.code,
                    limit: limit(),
                },
            }),
            Dialect::Gemini => serde_json::to_vec(&GeminiError {
                error: GeminiDetail {
                    code: self.status().as_u16(),
                    message,
                    status: self.kind.gemini_status(),
                    limit: limit(),
                },
            }),
        };
        Bytes::from(rendered.unwrap_or_default())
    }

    /// A complete HTTP response in `dialect`'s shape.
    pub fn to_response<B: From<Bytes>>(&self, dialect: Dialect, request_id: &str) -> http::Response<B> {
        let mut resp = http::Response::new(B::from(self.body(dialect, request_id)));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(l) = self.limit.as_deref() {
            let mut put = |name: &'static str, value: String| {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(name, v);
                }
            };
            put("x-ratelimit-limit", l.limit.clone());
            put("x-ratelimit-remaining", l.remaining.clone());
            if let Some(reset) = l.reset_epoch_secs {
                put("x-ratelimit-reset", reset.to_string());
            }
            if let Some(secs) = l.retry_after_secs {
                put("retry-after", secs.to_string());
            }
        }
        resp
    }

    /// An SSE frame announcing the error to a client whose stream has already begun.
    pub fn sse_frame(&self, dialect: Dialect, request_id: &str) -> Bytes {
        let body = self.body(dialect, request_id);
        let mut frame = Vec::with_capacity(body.len() + 24);
        if dialect == Dialect::Anthropic {
            frame.extend_from_slice(b"event: error\n");
        }
        frame.extend_from_slice(b"data: ");
        frame.extend_from_slice(&body);
        frame.extend_from_slice(b"\n\n");
        Bytes::from(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_dialect() {
        let err = GatewayError::new(ErrorKind::Authentication, "invalid_api_key", "bad key");
        let anthropic: serde_json::Value =
            serde_json::from_slice(&err.body(Dialect::Anthropic, "r1")).expect("json");
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "authentication_error");
        assert_eq!(anthropic["error"]["message"], "bad key (request id: r1)");
        let openai: serde_json::Value =
            serde_json::from_slice(&err.body(Dialect::OpenaiChat, "r1")).expect("json");
        assert_eq!(openai["error"]["code"], "invalid_api_key");
        let gemini: serde_json::Value =
            serde_json::from_slice(&err.body(Dialect::Gemini, "r1")).expect("json");
        assert_eq!(gemini["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(gemini["error"]["code"], 401);
        let frame = err.sse_frame(Dialect::Anthropic, "r1");
        assert!(frame.starts_with(b"event: error\ndata: {") && frame.ends_with(b"\n\n"));
    }
}
