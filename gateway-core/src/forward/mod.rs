//! Forwarder stage: sends the prepared request to the chosen provider and returns its response
//! with the body still streaming.
//!
//! Reads from the request: `target`. Adds to the context: `ttfb`. The response body is the
//! upstream's, untouched; the recorder wraps it to meter usage.

pub mod headers;
pub mod url;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use tower::Service;

use crate::error::{ErrorKind, GatewayError};
use crate::request::{BoxError, GatewayRequest, GatewayResponse};

/// Settings of the shared upstream HTTP client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// How long idle pooled connections are kept.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
        }
    }
}

/// Builds the upstream client: rustls on ring with the webpki roots, HTTP/2 by ALPN, HTTP/1.1
/// otherwise, connection pooling, no redirects followed and no transparent decompression (the
/// bytes are relayed as the upstream sent them).
pub fn build_client(opts: &ClientOptions) -> Result<reqwest::Client, GatewayError> {
    let internal = |e: &dyn std::fmt::Display| {
        GatewayError::new(
            ErrorKind::Internal,
            "client_setup",
            format!("cannot build the upstream HTTP client: {e}"),
        )
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut tls =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| internal(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(opts.connect_timeout)
        .pool_idle_timeout(opts.pool_idle_timeout)
        .pool_max_idle_per_host(opts.pool_max_idle_per_host)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| internal(&e))
}

/// The innermost service: performs one upstream call.
#[derive(Debug, Clone)]
pub struct ForwardService {
    client: reqwest::Client,
}

impl ForwardService {
    /// Forwards with `client`.
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }
}

fn upstream_error(e: &reqwest::Error, provider: &str) -> GatewayError {
    let (kind, code) = if e.is_timeout() {
        (ErrorKind::UpstreamTimeout, "upstream_timeout")
    } else if e.is_connect() {
        (ErrorKind::Upstream, "upstream_unreachable")
    } else {
        (ErrorKind::Upstream, "upstream_failed")
    };
    // reqwest's Display carries the URL but never headers, so no secret leaks into messages.
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    GatewayError::new(
        kind,
        code,
        format!("provider {provider:?} failed: {e}{}{cause}", if cause.is_empty() { "" } else { ": " }),
    )
}

impl Service<GatewayRequest> for ForwardService {
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<GatewayResponse, GatewayError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GatewayRequest) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let target = req.target.ok_or_else(|| {
                GatewayError::new(
                    ErrorKind::Internal,
                    "no_target",
                    "forwarder reached without a routed provider",
                )
            })?;
            let provider = target.provider;
            let url = url::join_upstream_url(&provider.base_url, req.uri.path(), req.uri.query());
            let headers = headers::upstream_request_headers(&req.headers, &provider);
            let upstream = client
                .request(req.method, url)
                .headers(headers)
                .body(target.body)
                .send()
                .await
                .map_err(|e| upstream_error(&e, &provider.name))?;
            req.ctx.update(|s| s.ttfb = Some(req.ctx.elapsed()));
            let mut resp: http::Response<reqwest::Body> = upstream.into();
            headers::clean_response_headers(resp.headers_mut());
            Ok(resp.map(|body| body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
        })
    }
}
