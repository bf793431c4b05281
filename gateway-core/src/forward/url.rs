//! Joining a provider's base URL with the endpoint a request targets.
//!
//! Operators paste base URLs in three shapes: a host (`https://api.anthropic.com`), a version
//! root (`https://relay.example/v1`, `.../api/v1`), or a full endpoint
//! (`https://relay.example/v1/messages`). All three must reach the same upstream endpoint
//! without doubling path segments; the client's query string is preserved.

/// Checks that a base URL is absolute `http(s)` with a host.
pub fn validate_base_url(base: &str) -> Result<(), String> {
    let uri: http::Uri = base.parse().map_err(|e| format!("{base:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("{base:?} must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{base:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{base:?} must not have a query string"));
    }
    Ok(())
}

/// Builds the upstream URL for a client request path (e.g. `/v1/messages`) and optional query.
pub fn join_upstream_url(base: &str, client_path: &str, query: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    // The part of the client path after its version segment, e.g. "/messages/count_tokens".
    let (version, endpoint) = split_version(client_path);
    let (origin, base_path) = split_origin(base);

    // The path's pieces, pushed straight into the URL: this runs per request.
    let path: [&str; 3] = if base_path.is_empty() {
        ["", version, endpoint]
    } else if let Some(stem) = strip_endpoint_suffix(base_path, endpoint) {
        // Full endpoint given (".../v1/messages" for "/v1/messages"): use it as is, but keep
        // deeper sub-paths of the client ("/count_tokens").
        [stem, "", endpoint]
    } else if ends_with_version_segment(base_path) {
        [base_path, "", endpoint]
    } else {
        [base_path, version, endpoint]
    };
    let query = query.filter(|q| !q.is_empty());
    let len = origin.len() + path.iter().map(|p| p.len()).sum::<usize>() + query.map_or(0, |q| q.len() + 1);
    let mut url = String::with_capacity(len);
    url.push_str(origin);
    path.iter().for_each(|piece| url.push_str(piece));
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

fn split_origin(base: &str) -> (&str, &str) {
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    match base[after_scheme..].find('/') {
        Some(i) => base.split_at(after_scheme + i),
        None => (base, ""),
    }
}

/// "/v1/messages" → ("/v1", "/messages"); "/v1beta/models/x:gen" → ("/v1beta", "/models/x:gen").
fn split_version(path: &str) -> (&str, &str) {
    let rest = path.strip_prefix('/').unwrap_or(path);
    match rest.find('/') {
        Some(i) if is_version_segment(&rest[..i]) => path.split_at(i + 1),
        _ => ("", path),
    }
}

fn is_version_segment(seg: &str) -> bool {
    let Some(digits) = seg.strip_prefix('v') else {
        return false;
    };
    let numeric_end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    numeric_end > 0 && matches!(&digits[numeric_end..], "" | "beta" | "alpha" | "internal")
}

fn ends_with_version_segment(base_path: &str) -> bool {
    base_path.rsplit('/').next().is_some_and(is_version_segment)
}

/// If `base_path` ends with the endpoint's first segments (e.g. "/messages" of
/// "/messages/count_tokens"), returns the base path without them.
fn strip_endpoint_suffix<'a>(base_path: &'a str, endpoint: &str) -> Option<&'a str> {
    let mut prefix_end = endpoint.len();
    loop {
        let candidate = &endpoint[..prefix_end];
        if !candidate.is_empty() && base_path.ends_with(candidate) {
            // `candidate` starts with '/', so the match is at a segment boundary.
            return Some(&base_path[..base_path.len() - candidate.len()]);
        }
        match endpoint[..prefix_end].rfind('/') {
            Some(i) if i > 0 => prefix_end = i,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_every_base_shape() {
        let cases = [
            ("https://api.anthropic.com", "/v1/messages", None, "https://api.anthropic.com/v1/messages"),
            ("https://api.anthropic.com/", "/v1/messages", None, "https://api.anthropic.com/v1/messages"),
            ("https://relay.example/v1", "/v1/messages", None, "https://relay.example/v1/messages"),
            ("https://relay.example/api/v1", "/v1/messages", None, "https://relay.example/api/v1/messages"),
            ("https://relay.example/api", "/v1/messages", None, "https://relay.example/api/v1/messages"),
            ("https://relay.example/v1/messages", "/v1/messages", None, "https://relay.example/v1/messages"),
            (
                "https://relay.example/v1/messages",
                "/v1/messages/count_tokens",
                None,
                "https://relay.example/v1/messages/count_tokens",
            ),
            (
                "https://api.anthropic.com",
                "/v1/messages",
                Some("beta=true"),
                "https://api.anthropic.com/v1/messages?beta=true",
            ),
            (
                "https://open.bigmodel.cn/api/paas/v4",
                "/v1/chat/completions",
                None,
                "https://open.bigmodel.cn/api/paas/v4/chat/completions",
            ),
            (
                "https://x.example/v1/chat/completions",
                "/v1/chat/completions",
                None,
                "https://x.example/v1/chat/completions",
            ),
            (
                "https://g.example/v1beta",
                "/v1beta/models/gemini-pro:generateContent",
                Some("alt=sse"),
                "https://g.example/v1beta/models/gemini-pro:generateContent?alt=sse",
            ),
            ("http://127.0.0.1:8080", "/v1/models", None, "http://127.0.0.1:8080/v1/models"),
            ("https://relay.example/v1", "/v1/responses", None, "https://relay.example/v1/responses"),
            (
                "https://relay.example/openai/responses",
                "/v1/responses",
                None,
                "https://relay.example/openai/responses",
            ),
        ];
        for (base, path, query, expected) in cases {
            assert_eq!(join_upstream_url(base, path, query), expected, "{base} + {path}");
        }
    }

    #[test]
    fn validates_base_urls() {
        assert!(validate_base_url("https://api.anthropic.com").is_ok());
        assert!(validate_base_url("http://127.0.0.1:9/v1").is_ok());
        assert!(validate_base_url("ftp://x").is_err());
        assert!(validate_base_url("api.anthropic.com").is_err());
        assert!(validate_base_url("https://x/v1?a=b").is_err());
    }
}
