//! `Gateway`: a gateway-core pipeline inside the Node process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway_core::route::RoutingSettings;
use gateway_core::store::StateStore;
use gateway_core::{Gateway, GatewaySettings};
use http_body_util::Full;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::body::NativeResponse;
use crate::config::{self, ConfigKind};
use crate::js_error;
use crate::serve::NativeServer;
use crate::usage::{JsUsageSink, UsageCallback};

/// Settings besides the catalog; the server's flags of the same names.
#[napi(object)]
#[derive(Debug, Default)]
pub struct GatewayOptions {
    /// Share routing state with other replicas through this Redis (`redis://host:port/db`).
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (default `gw:`).
    pub redis_key_prefix: Option<String>,
    /// Request body limit in bytes after decompression (default 32 MiB).
    pub max_body_bytes: Option<u32>,
    /// Seconds a session stays bound to its provider (default 300).
    pub session_ttl_seconds: Option<u32>,
    /// Most providers tried for one request (default 3).
    pub max_provider_switches: Option<u32>,
    /// Whether connection failures count toward opening a circuit (default false).
    pub circuit_breaker_on_network_errors: Option<bool>,
    /// IANA timezone of providers' active windows (default UTC).
    pub timezone: Option<String>,
}

fn settings(options: &GatewayOptions) -> napi::Result<GatewaySettings> {
    let mut settings = GatewaySettings::default();
    if let Some(max) = options.max_body_bytes {
        settings.max_body_bytes = usize::try_from(max).map_err(js_error)?;
    }
    let defaults = RoutingSettings::default();
    let timezone = match &options.timezone {
        Some(name) => name.parse::<chrono_tz::Tz>().map_err(|e| js_error(format!("timezone: {e}")))?,
        None => defaults.timezone,
    };
    settings.routing = RoutingSettings {
        session_ttl: options
            .session_ttl_seconds
            .map_or(defaults.session_ttl, |s| Duration::from_secs(u64::from(s))),
        max_provider_switches: options.max_provider_switches.unwrap_or(defaults.max_provider_switches),
        breaker_on_network_errors: options
            .circuit_breaker_on_network_errors
            .unwrap_or(defaults.breaker_on_network_errors),
        timezone,
    };
    Ok(settings)
}

#[cfg(feature = "redis")]
fn redis_store(url: &str, prefix: Option<&str>) -> napi::Result<Arc<dyn StateStore>> {
    use gateway_core::store::{RedisStateOptions, RedisStateStore};
    let mut options = RedisStateOptions::default();
    if let Some(prefix) = prefix {
        options.prefix = prefix.to_owned();
    }
    // Connecting is bounded by the store's own timeout (about a second when Redis is down, after
    // which routing fails open and the store keeps trying in the background).
    let store = napi::bindgen_prelude::block_on(RedisStateStore::connect(url, options))
        .map_err(|e| js_error(format!("redisUrl is not usable: {e}")))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "redis"))]
fn redis_store(_url: &str, _prefix: Option<&str>) -> napi::Result<Arc<dyn StateStore>> {
    Err(js_error("this build of llm-gateway has no Redis support (cargo feature `redis`)"))
}

/// The native gateway; `index.js` wraps it as `Gateway`.
#[napi]
pub struct NativeGateway {
    gateway: Gateway,
    sink: Arc<JsUsageSink>,
}

#[napi]
impl NativeGateway {
    /// `kind` is `path`, `toml` or `json` (see `config::ConfigKind`).
    #[napi(constructor)]
    pub fn new(kind: String, config: String, options: Option<GatewayOptions>) -> napi::Result<Self> {
        let kind = ConfigKind::parse(&kind).map_err(js_error)?;
        let file = config::load(kind, &config).map_err(js_error)?;
        let options = options.unwrap_or_default();
        let sink = Arc::new(JsUsageSink::default());
        let mut builder =
            Gateway::builder().config(&file).usage_sink(sink.clone()).settings(settings(&options)?);
        if let Some(url) = options.redis_url.as_deref().filter(|u| !u.is_empty()) {
            builder = builder.state_store(redis_store(url, options.redis_key_prefix.as_deref())?);
        }
        // The upstream clients and stores may touch Tokio while being built.
        let gateway = napi::bindgen_prelude::within_runtime_if_available(|| builder.build())
            .map_err(|e| js_error(e.message))?;
        Ok(Self { gateway, sink })
    }

    /// Where usage records go: one JSON text per request; `null` stops delivery.
    #[napi]
    pub fn set_usage_callback(&self, callback: Option<UsageCallback>) {
        self.sink.set(callback);
    }

    /// Serves one request in-process. `headers` is `[name, value, ...]`.
    #[napi]
    pub async fn request(
        &self,
        method: String,
        path: String,
        headers: Vec<String>,
        body: Option<Buffer>,
    ) -> napi::Result<NativeResponse> {
        let req = build_request(&method, &path, &headers, body)?;
        Ok(NativeResponse::new(self.gateway.handle(req).await))
    }

    /// Serves HTTP on `host:port` (port 0 picks a free one) from Rust, off the JS thread.
    #[napi]
    pub async fn serve(&self, host: String, port: u32) -> napi::Result<NativeServer> {
        let port = u16::try_from(port).map_err(|_| js_error(format!("port {port} is out of range")))?;
        NativeServer::start(self.gateway.clone(), &host, port).await
    }
}

/// A header value from a JS string the way Node writes headers: one byte per character
/// (Latin-1), so values Node's own parser handed over (obs-text included) round-trip; control
/// characters and characters beyond U+00FF are rejected.
fn header_value(text: &str) -> Option<http::HeaderValue> {
    let bytes: Option<Vec<u8>> = text.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
    http::HeaderValue::from_bytes(&bytes?).ok()
}

fn build_request(
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<Buffer>,
) -> napi::Result<http::Request<Full<Bytes>>> {
    if !path.starts_with('/') {
        return Err(js_error(format!("path must start with '/', got {path:?}")));
    }
    let method = http::Method::from_bytes(method.as_bytes())
        .map_err(|_| js_error(format!("invalid HTTP method {method:?}")))?;
    let uri: http::Uri = path.parse().map_err(|e| js_error(format!("invalid path {path:?}: {e}")))?;
    if !headers.len().is_multiple_of(2) {
        return Err(js_error("headers must be name/value pairs"));
    }
    // The JS memory stays with JS: the body is copied once, then shared by reference in Rust.
    let body = body.map_or_else(Bytes::new, |b| Bytes::copy_from_slice(&b));
    let mut req = http::Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    let map = req.headers_mut();
    for pair in headers.chunks_exact(2) {
        let name = http::HeaderName::from_bytes(pair[0].as_bytes())
            .map_err(|_| js_error(format!("invalid header name {:?}", pair[0])))?;
        let value = header_value(&pair[1])
            .ok_or_else(|| js_error(format!("invalid value for header {:?}", pair[0])))?;
        map.append(name, value);
    }
    Ok(req)
}
