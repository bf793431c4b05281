//! Upstream HTTP clients: one per distinct (proxy, connect timeout), shared by every provider
//! with those settings, each with its own connection pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::config::Provider;
use crate::error::{ErrorKind, GatewayError};

/// Settings shared by every upstream client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Connect timeout used when a provider sets none.
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

fn client_error(e: &dyn std::fmt::Display) -> GatewayError {
    GatewayError::new(
        ErrorKind::Internal,
        "client_setup",
        format!("cannot build an upstream HTTP client: {e}"),
    )
}

/// Builds a client: rustls on ring with the webpki roots, HTTP/2 by ALPN and HTTP/1.1 otherwise,
/// pooling, no redirects followed, no retries of its own, no transparent decompression (bytes are
/// relayed as sent), and no proxy from the environment (proxies are per provider).
pub fn build_client(opts: &ClientOptions) -> Result<reqwest::Client, GatewayError> {
    builder(opts)?.build().map_err(|e| client_error(&e))
}

fn builder(opts: &ClientOptions) -> Result<reqwest::ClientBuilder, GatewayError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut tls =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| client_error(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
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
    proxy: Option<String>,
    connect_timeout_ms: u64,
}

/// The clients one provider uses.
#[derive(Debug, Clone)]
pub struct ProviderClients {
    /// Through the provider's proxy, if it has one.
    pub primary: reqwest::Client,
    /// Direct, when the provider allows falling back from an unreachable proxy.
    pub direct_fallback: Option<reqwest::Client>,
}

/// Clients by settings, created on first use and kept for the life of the gateway.
#[derive(Debug, Clone)]
pub struct ClientPool {
    opts: ClientOptions,
    clients: Arc<RwLock<HashMap<ClientKey, reqwest::Client>>>,
    urls: Arc<RwLock<HashMap<String, reqwest::Url>>>,
}

/// Parsed upstream URLs kept at most; a gateway sends to few distinct endpoints, so the cache
/// is simply emptied when a flood of distinct query strings fills it.
const MAX_CACHED_URLS: usize = 1024;

impl ClientPool {
    /// A pool whose clients use `opts`.
    pub fn new(opts: ClientOptions) -> Self {
        Self { opts, clients: Arc::default(), urls: Arc::default() }
    }

    /// A pool whose direct clients (no proxy, default connect timeout) are `client`.
    pub fn with_client(opts: ClientOptions, client: reqwest::Client) -> Self {
        let pool = Self::new(opts);
        let key = ClientKey { proxy: None, connect_timeout_ms: duration_ms(pool.opts.connect_timeout) };
        pool.clients.write().insert(key, client);
        pool
    }

    fn get(&self, key: ClientKey) -> Result<reqwest::Client, GatewayError> {
        if let Some(c) = self.clients.read().get(&key) {
            return Ok(c.clone());
        }
        let mut opts = self.opts.clone();
        opts.connect_timeout = Duration::from_millis(key.connect_timeout_ms);
        let mut b = builder(&opts)?;
        if let Some(url) = &key.proxy {
            b = b.proxy(reqwest::Proxy::all(url.as_str()).map_err(|e| client_error(&e))?);
        }
        let client = b.build().map_err(|e| client_error(&e))?;
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
        let primary = self.get(ClientKey { proxy, connect_timeout_ms })?;
        let direct_fallback = if has_proxy && provider.options.proxy_fallback_to_direct {
            Some(self.get(ClientKey { proxy: None, connect_timeout_ms })?)
        } else {
            None
        };
        Ok(ProviderClients { primary, direct_fallback })
    }

    /// `url` parsed, from a cache: parsing (host normalisation included) is a measurable share of
    /// a request's CPU when done per request.
    pub fn parsed_url(&self, url: &str) -> Result<reqwest::Url, GatewayError> {
        if let Some(parsed) = self.urls.read().get(url) {
            return Ok(parsed.clone());
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            GatewayError::new(ErrorKind::Internal, "bad_upstream_url", "the upstream URL is invalid")
                .with_detail(format!("{url:?}: {e}"))
        })?;
        let mut urls = self.urls.write();
        if urls.len() >= MAX_CACHED_URLS {
            urls.clear();
        }
        urls.insert(url.to_owned(), parsed.clone());
        Ok(parsed)
    }

    /// A direct client with default settings (for listing models and similar side calls).
    pub fn default_client(&self) -> Result<reqwest::Client, GatewayError> {
        self.get(ClientKey { proxy: None, connect_timeout_ms: duration_ms(self.opts.connect_timeout) })
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
        let first = pool.parsed_url(url).expect("valid");
        assert_eq!(first, reqwest::Url::parse(url).expect("valid"));
        assert_eq!(pool.parsed_url(url).expect("cached"), first);
        assert!(pool.parsed_url("not a url").is_err());
        for n in 0..MAX_CACHED_URLS + 10 {
            pool.parsed_url(&format!("http://127.0.0.1:1/v1/messages?n={n}")).expect("valid");
        }
        assert!(pool.urls.read().len() <= MAX_CACHED_URLS);
    }
}
