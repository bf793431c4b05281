//! Header hygiene between client and upstream: the client's credentials, hop-by-hop headers
//! and client-IP headers never reach the provider; the provider's credentials are added.

use http::{HeaderMap, HeaderName, HeaderValue, header};

#[cfg(test)]
use crate::config::ProviderConfig;
use crate::config::{Provider, ProviderType};
use crate::header_names as names;

/// Anthropic API version sent when the client did not name one.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus ones the
/// client library recomputes (`host`, `content-length`).
const HOP_BY_HOP: [HeaderName; 11] = [
    header::CONNECTION,
    names::KEEP_ALIVE,
    names::PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
    header::CONTENT_LENGTH,
];

/// Client credentials of any dialect.
const CLIENT_AUTH: &[&str] = &["authorization", "x-api-key", "x-goog-api-key"];

/// Headers that reveal the client's address or the path through proxies.
const CLIENT_IP: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    "forwarded",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "via",
];

fn is_client_ip_header(name: &str) -> bool {
    CLIENT_IP.contains(&name) || name.starts_with("cf-")
}

/// Headers that belong to one vendor's API or SDK: meaningless, or misleading, to another.
const VENDOR_PREFIXES: &[&str] = &["anthropic-", "x-stainless-", "openai-", "x-goog-", "x-app"];

/// The headers sent upstream for a client request to `provider`. `translated` requests (the
/// client speaks another dialect than the provider) drop the client's vendor headers, so that an
/// `anthropic-version` never reaches an OpenAI upstream.
pub fn upstream_request_headers(client: &HeaderMap, provider: &Provider, translated: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(client.len() + 2);
    for (name, value) in client {
        let n = name.as_str();
        if HOP_BY_HOP.contains(name)
            || CLIENT_AUTH.contains(&n)
            || (is_client_ip_header(n) && !provider.options.preserve_client_ip)
            || n == "accept-encoding"
            || n == "content-encoding"
            || (translated && VENDOR_PREFIXES.iter().any(|p| n.starts_with(p)))
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    // Validated when the provider was saved: reserved names are refused there.
    for (name, value) in &provider.options.custom_headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            out.insert(n, v);
        }
    }
    // The usage tap reads the body, so ask for it uncompressed.
    out.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    if !out.contains_key(header::CONTENT_TYPE) {
        out.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Some((name, value)) = &provider.upstream_auth {
        out.insert(name.clone(), value.clone());
    }
    if provider.provider_type == ProviderType::Claude && !out.contains_key(names::ANTHROPIC_VERSION) {
        out.insert(names::ANTHROPIC_VERSION, HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION));
    }
    out
}

/// The header that carries `api_key` to a provider of `provider_type`, marked sensitive (kept
/// out of HTTP/2 header compression and debug output); `None` if the key is not a valid header
/// value. Built once per provider ([`Provider::upstream_auth`]), not per request.
pub fn provider_auth_header(provider_type: ProviderType, api_key: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, value) = match provider_type {
        ProviderType::Claude => (names::X_API_KEY, HeaderValue::from_str(api_key)),
        ProviderType::Gemini => (names::X_GOOG_API_KEY, HeaderValue::from_str(api_key)),
        ProviderType::Codex | ProviderType::OpenaiCompatible => {
            (header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {api_key}")))
        }
    };
    value.ok().map(|v| (name, sensitive(v)))
}

fn sensitive(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

/// Removes connection-level headers from an upstream response before it is relayed (its
/// `content-length` stays: it describes the body).
pub fn clean_response_headers(headers: &mut HeaderMap) {
    let hop_by_hop = |name: &HeaderName| *name != header::CONTENT_LENGTH && HOP_BY_HOP.contains(name);
    // Most responses carry none: one pass over their few headers instead of a lookup per name.
    if !headers.keys().any(hop_by_hop) {
        return;
    }
    for name in HOP_BY_HOP.iter().filter(|n| hop_by_hop(n)) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_lose_hop_by_hop_headers_but_keep_their_length() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/json"),
            ("content-length", "42"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "close"),
            ("x-request-id", "upstream-1"),
        ] {
            headers.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        clean_response_headers(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "content-type", "x-request-id"]);

        let mut plain = HeaderMap::new();
        plain.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        clean_response_headers(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    fn claude() -> Provider {
        let cfg =
            ProviderConfig::new("p", ProviderType::Claude, "https://api.anthropic.com", "sk-ant-upstream");
        Provider::from_config(1, &cfg).expect("provider")
    }

    #[test]
    fn swaps_credentials_and_strips_hop_by_hop_and_ip_headers() {
        let mut client = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer sk-gateway-user"),
            ("x-api-key", "sk-gateway-user"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "interleaved-thinking-2025-05-14,context-1m-2025-08-07"),
            ("x-app", "cli"),
            ("user-agent", "claude-cli/2.1.0 (external, cli)"),
            ("connection", "keep-alive"),
            ("content-length", "123"),
            ("host", "gateway.local"),
            ("x-forwarded-for", "10.0.0.1"),
            ("cf-connecting-ip", "10.0.0.2"),
            ("accept-encoding", "gzip, br"),
        ] {
            client.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = upstream_request_headers(&client, &claude(), false);
        assert_eq!(out.get("x-api-key").and_then(|v| v.to_str().ok()), Some("sk-ant-upstream"));
        assert!(out.get("authorization").is_none());
        assert_eq!(
            out.get("anthropic-beta").and_then(|v| v.to_str().ok()),
            Some("interleaved-thinking-2025-05-14,context-1m-2025-08-07")
        );
        assert_eq!(out.get("x-app").and_then(|v| v.to_str().ok()), Some("cli"));
        assert!(out.get("user-agent").is_some());
        for gone in ["connection", "content-length", "host", "x-forwarded-for", "cf-connecting-ip"] {
            assert!(out.get(gone).is_none(), "{gone} must be stripped");
        }
        assert_eq!(out.get("accept-encoding").and_then(|v| v.to_str().ok()), Some("identity"));
        assert!(!format!("{out:?}").contains("sk-ant-upstream"), "secret must be marked sensitive");
    }

    #[test]
    fn custom_headers_and_preserved_client_ip() {
        let mut cfg =
            ProviderConfig::new("p", ProviderType::Claude, "https://api.anthropic.com", "sk-ant-upstream");
        cfg.options.custom_headers.insert("X-Team".into(), "platform".into());
        cfg.options.preserve_client_ip = true;
        let p = Provider::from_config(1, &cfg).expect("provider");
        let mut client = HeaderMap::new();
        client.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let out = upstream_request_headers(&client, &p, false);
        assert_eq!(out.get("x-team").and_then(|v| v.to_str().ok()), Some("platform"));
        assert_eq!(out.get("x-forwarded-for").and_then(|v| v.to_str().ok()), Some("10.0.0.1"));
        cfg.options.custom_headers.insert("Authorization".into(), "Bearer hijack".into());
        assert!(cfg.validate().is_err(), "custom headers cannot replace credentials");
    }

    #[test]
    fn translated_requests_drop_the_clients_vendor_headers() {
        let cfg = ProviderConfig::new("p", ProviderType::OpenaiCompatible, "https://api.openai.com", "sk-up");
        let p = Provider::from_config(1, &cfg).expect("provider");
        let mut client = HeaderMap::new();
        for (k, v) in [
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "x"),
            ("x-stainless-lang", "python"),
            ("x-app", "cli"),
            ("user-agent", "claude-cli/2.1.0"),
        ] {
            client.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = upstream_request_headers(&client, &p, true);
        for gone in ["anthropic-version", "anthropic-beta", "x-stainless-lang", "x-app"] {
            assert!(out.get(gone).is_none(), "{gone}");
        }
        assert!(out.get("user-agent").is_some());
        assert_eq!(out.get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer sk-up"));
        // The same headers pass to a provider of the client's own dialect.
        let out = upstream_request_headers(&client, &claude(), false);
        assert!(out.get("anthropic-beta").is_some());
    }

    #[test]
    fn adds_a_default_anthropic_version() {
        let out = upstream_request_headers(&HeaderMap::new(), &claude(), false);
        assert_eq!(
            out.get("anthropic-version").and_then(|v| v.to_str().ok()),
            Some(DEFAULT_ANTHROPIC_VERSION)
        );
    }
}
