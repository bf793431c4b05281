//! Upstream HTTP clients: one per distinct (proxy, connect timeout), shared by every provider
//! with those settings, each with its own connection pool.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::RwLock;

use crate::FastMap;
use crate::config::Provider;
use crate::error::{ErrorKind, GatewayError};
use crate::request::{BoxError, GatewayBody};

/// Settings shared by every upstream client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Connect timeout used when a provider sets none.
    pub connect_timeout: Duration,
    /// How long idle pooled connections are kept.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
    /// Certificates trusted as roots besides the webpki (Mozilla) roots: for upstreams or
    /// proxies behind a private certificate authority.
    pub extra_root_certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
            extra_root_certificates: Vec::new(),
        }
    }
}

fn client_error(e: &dyn std::fmt::Display) -> GatewayError {
    GatewayError::new(
        ErrorKind::Internal,
        "client_setup",
        format!("cannot build an upstream HTTP client: {e}"),
    )
}

/// rustls on ring with the webpki roots, without ALPN protocols (hyper-rustls sets them itself
/// from the enabled HTTP versions).
fn tls_config(opts: &ClientOptions) -> Result<rustls::ClientConfig, GatewayError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in &opts.extra_root_certificates {
        roots.add(cert.clone()).map_err(|e| client_error(&e))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| client_error(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tls)
}

/// Builds a reqwest client configured like the gateway's upstream clients: rustls on ring with
/// the webpki roots, HTTP/2 by ALPN and HTTP/1.1 otherwise, pooling, no redirects followed, no
/// retries of its own, no transparent decompression (bytes are relayed as sent), and no proxy
/// from the environment (proxies are per provider).
pub fn build_client(opts: &ClientOptions) -> Result<reqwest::Client, GatewayError> {
    builder(opts)?.build().map_err(|e| client_error(&e))
}

fn builder(opts: &ClientOptions) -> Result<reqwest::ClientBuilder, GatewayError> {
    let mut tls = tls_config(opts)?;
    // HTTP/2 by ALPN, HTTP/1.1 otherwise.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        // Retries are the router's (attempts, failover, breakers). reqwest's own retry of HTTP/2
        // refusals copied every request's headers and body up front in case it retried.
        .retry(reqwest::retry::never().max_retries_per_request(0))
        .no_proxy()
        .connect_timeout(opts.connect_timeout)
        .pool_idle_timeout(opts.pool_idle_timeout)
        .pool_max_idle_per_host(opts.pool_max_idle_per_host)
        .tcp_nodelay(true))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    /// The runtime the client's connections belong to (see [`crate::runtime_scope`]).
    runtime: Option<std::thread::ThreadId>,
    proxy: Option<String>,
    connect_timeout_ms: u64,
}

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Request body of an upstream call: the (possibly rewritten) client body, already whole.
pub type UpstreamBody = http_body_util::Full<Bytes>;

/// One upstream HTTP client with its own connection pool.
///
/// Direct connections go through hyper-util's pooled client, the cheapest path per request.
/// Providers behind a proxy use reqwest, which speaks every proxy kind they may name: HTTP
/// proxies in absolute form for plain-HTTP upstreams and CONNECT for HTTPS, HTTPS proxies, and
/// SOCKS5 with remote DNS, each with credentials.
#[derive(Debug, Clone)]
pub struct UpstreamClient(Arc<Transport>);

// Behind an `Arc`, so a clone per request is one reference count, whatever the variant's size.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Transport {
    Direct(hyper_util::client::legacy::Client<HttpsConnector, UpstreamBody>),
    Proxied(reqwest::Client),
}

/// Why an upstream call produced no response. Its text names the provider's host at most, never
/// headers, so it may be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// No connection could be made (refused, unreachable, TLS handshake, connect timeout).
    pub connect: bool,
    /// A timeout of the transport itself (connect timeout) ended the call.
    pub timeout: bool,
    /// The provider's proxy itself could not be reached (as opposed to a proxy that answered and
    /// refused): only then may a provider fall back to a direct connection.
    pub proxy_unreachable: bool,
    /// The error and its innermost cause.
    pub detail: String,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// `e` and its innermost cause, the part that says what actually went wrong.
fn describe(e: &dyn std::error::Error) -> String {
    let mut cause = None;
    let mut source = e.source();
    while let Some(s) = source {
        cause = Some(s);
        source = s.source();
    }
    match cause {
        Some(c) => format!("{e}: {c}"),
        None => e.to_string(),
    }
}

fn io_kind_in_chain(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

impl SendError {
    fn from_direct(e: &hyper_util::client::legacy::Error) -> Self {
        let connect = e.is_connect();
        // hyper-util's connect timeout surfaces as an io::Error of kind TimedOut.
        let timeout = connect && io_kind_in_chain(e) == Some(std::io::ErrorKind::TimedOut);
        Self { connect, timeout, proxy_unreachable: false, detail: describe(e) }
    }

    fn from_proxied(e: &reqwest::Error) -> Self {
        Self {
            connect: e.is_connect(),
            timeout: e.is_timeout(),
            proxy_unreachable: proxy_unreachable(e),
            detail: describe(e),
        }
    }
}

/// Whether a reqwest send failed because the proxy itself could not be reached (refused, timed
/// out, no route), rather than a proxy that answered and refused us (bad credentials): a
/// misconfigured proxy must never be silently bypassed.
fn proxy_unreachable(e: &reqwest::Error) -> bool {
    use std::io::ErrorKind as K;
    if !e.is_connect() {
        return false;
    }
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        // The SOCKS connector reports an unreachable proxy only as text.
        if s.to_string().contains("failed to create underlying connection") {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::TimedOut
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::AddrNotAvailable
                    | K::NotFound
            );
        }
        source = s.source();
    }
    // A connect timeout surfaces as reqwest's own timeout, without an io::Error.
    e.is_timeout()
}

impl UpstreamClient {
    /// Sends `req` (an absolute URI) and returns the response with its body still streaming.
    pub async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<GatewayBody>, SendError> {
        match &*self.0 {
            Transport::Direct(client) => {
                let (parts, body) = req.into_parts();
                let resp = client
                    .request(http::Request::from_parts(parts, UpstreamBody::new(body)))
                    .await
                    .map_err(|e| SendError::from_direct(&e))?;
                Ok(resp.map(|body| body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
            }
            Transport::Proxied(client) => {
                let req = reqwest::Request::try_from(req).map_err(|e| SendError::from_proxied(&e))?;
                let resp: http::Response<reqwest::Body> =
                    client.execute(req).await.map_err(|e| SendError::from_proxied(&e))?.into();
                Ok(resp.map(|body| body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
            }
        }
    }
}

fn direct_client(opts: &ClientOptions) -> Result<UpstreamClient, GatewayError> {
    let mut http = HttpConnector::new();
    // The TLS layer above decides between http and https.
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(opts.connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(opts)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(opts.pool_idle_timeout)
        .pool_max_idle_per_host(opts.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https);
    Ok(UpstreamClient(Arc::new(Transport::Direct(client))))
}

/// The clients one provider uses.
#[derive(Debug, Clone)]
pub struct ProviderClients {
    /// Through the provider's proxy, if it has one.
    pub primary: UpstreamClient,
    /// Direct, when the provider allows falling back from an unreachable proxy.
    pub direct_fallback: Option<UpstreamClient>,
}

/// Clients by settings, created on first use and kept for the life of the gateway.
#[derive(Debug, Clone)]
pub struct ClientPool {
    opts: ClientOptions,
    clients: Arc<RwLock<FastMap<ClientKey, UpstreamClient>>>,
    uris: Arc<RwLock<FastMap<String, http::Uri>>>,
}

/// Parsed upstream URLs kept at most; a gateway sends to few distinct endpoints, so the cache
/// is simply emptied when a flood of distinct query strings fills it.
const MAX_CACHED_URLS: usize = 1024;

impl ClientPool {
    /// A pool whose clients use `opts`.
    pub fn new(opts: ClientOptions) -> Self {
        Self { opts, clients: Arc::default(), uris: Arc::default() }
    }

    fn get(&self, key: ClientKey) -> Result<UpstreamClient, GatewayError> {
        if let Some(c) = self.clients.read().get(&key) {
            return Ok(c.clone());
        }
        let mut opts = self.opts.clone();
        opts.connect_timeout = Duration::from_millis(key.connect_timeout_ms);
        let client = match &key.proxy {
            None => direct_client(&opts)?,
            Some(url) => {
                let proxy = reqwest::Proxy::all(url.as_str()).map_err(|e| client_error(&e))?;
                let client = builder(&opts)?.proxy(proxy).build().map_err(|e| client_error(&e))?;
                UpstreamClient(Arc::new(Transport::Proxied(client)))
            }
        };
        Ok(self.clients.write().entry(key).or_insert(client).clone())
    }

    /// The clients for `provider`.
    pub fn for_provider(&self, provider: &Provider) -> Result<ProviderClients, GatewayError> {
        let connect_timeout_ms = match provider.options.connect_timeout_ms {
            0 => duration_ms(self.opts.connect_timeout),
            ms => ms,
        };
        let proxy = provider.options.proxy_url.clone();
        let has_proxy = proxy.is_some();
        let runtime = crate::runtime_scope();
        let primary = self.get(ClientKey { runtime, proxy, connect_timeout_ms })?;
        let direct_fallback = if has_proxy && provider.options.proxy_fallback_to_direct {
            Some(self.get(ClientKey { runtime, proxy: None, connect_timeout_ms })?)
        } else {
            None
        };
        Ok(ProviderClients { primary, direct_fallback })
    }

    /// `url` parsed, from a cache: parsing is a measurable share of a request's CPU when done per
    /// request.
    pub fn parsed_uri(&self, url: &str) -> Result<http::Uri, GatewayError> {
        if let Some(parsed) = self.uris.read().get(url) {
            return Ok(parsed.clone());
        }
        let parsed = http::Uri::try_from(url)
            .ok()
            .filter(|u| u.scheme().is_some() && u.authority().is_some())
            .ok_or_else(|| {
                GatewayError::new(ErrorKind::Internal, "bad_upstream_url", "the upstream URL is invalid")
                    .with_detail(format!("{url:?}"))
            })?;
        let mut uris = self.uris.write();
        if uris.len() >= MAX_CACHED_URLS {
            uris.clear();
        }
        uris.insert(url.to_owned(), parsed.clone());
        Ok(parsed)
    }

    /// A direct client with default settings (for listing models and similar side calls).
    pub fn default_client(&self) -> Result<UpstreamClient, GatewayError> {
        self.get(ClientKey {
            runtime: crate::runtime_scope(),
            proxy: None,
            connect_timeout_ms: duration_ms(self.opts.connect_timeout),
        })
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_urls_are_cached_and_the_cache_stays_bounded() {
        let pool = ClientPool::new(ClientOptions::default());
        let url = "https://API.example.com:443/v1/messages?beta=true";
        let first = pool.parsed_uri(url).expect("valid");
        assert_eq!(first, http::Uri::from_static("https://API.example.com:443/v1/messages?beta=true"));
        assert_eq!(pool.parsed_uri(url).expect("cached"), first);
        assert!(pool.parsed_uri("not a url").is_err());
        assert!(pool.parsed_uri("/v1/messages").is_err(), "a URL without scheme and host");
        for n in 0..MAX_CACHED_URLS + 10 {
            pool.parsed_uri(&format!("http://127.0.0.1:1/v1/messages?n={n}")).expect("valid");
        }
        assert!(pool.uris.read().len() <= MAX_CACHED_URLS);
    }

    fn same(a: &UpstreamClient, b: &UpstreamClient) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    /// The default client as a task spawned on the current runtime gets it.
    async fn from_a_spawned_task(pool: &ClientPool) -> UpstreamClient {
        let pool = pool.clone();
        tokio::spawn(async move { pool.default_client().expect("client") }).await.expect("task")
    }

    #[test]
    fn each_single_threaded_runtime_has_its_own_clients_and_a_multi_threaded_one_shares() {
        let pool = ClientPool::new(ClientOptions::default());
        let on_current_thread_runtime = |pool: ClientPool| {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
                runtime.block_on(async move {
                    let first = pool.default_client().expect("client");
                    let again = from_a_spawned_task(&pool).await;
                    assert!(same(&first, &again), "one runtime, one client");
                    first
                })
            })
            .join()
            .expect("thread")
        };
        let a = on_current_thread_runtime(pool.clone());
        let b = on_current_thread_runtime(pool.clone());
        assert!(!same(&a, &b), "two single-threaded runtimes never share connections");

        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
        let (main, worker) = runtime.block_on(async {
            let main = pool.default_client().expect("client");
            (main, from_a_spawned_task(&pool).await)
        });
        assert!(same(&main, &worker), "threads of a multi-threaded runtime share one client");
        assert!(!same(&main, &a));
    }
}
