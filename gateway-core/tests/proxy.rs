//! Per-provider outbound proxies, end to end: the in-process gateway forwards to the mock upstream
//! through real proxy servers started inside each test on a loopback port.
//!
//! The proxies are crates.io implementations, not fakes of the protocols written here:
//!
//! - **SOCKS5**: [`fast-socks5`](https://crates.io/crates/fast-socks5) 1.0, its server protocol
//!   (RFC 1928 with RFC 1929 username/password) and its `run_tcp_proxy` relay. The test only
//!   writes the accept loop and records what each connection asked for, so the tests can tell a
//!   client-resolved target (`socks5://`, an IP) from a proxy-resolved one (`socks5h://`, a name).
//! - **HTTP forward proxy**: [`rama`](https://crates.io/crates/rama) 0.3.0-alpha.4, used through
//!   its sub-crates: `rama-http-backend`'s HTTP server and HTTP client connector over
//!   `rama-tcp`, `rama-http`'s `ProxyAuthLayer` (`Proxy-Authorization: Basic`, 407) and
//!   hop-by-hop header removal. The proxy serves absolute-form requests
//!   (`POST http://127.0.0.1:PORT/v1/messages`), which is what reqwest sends for a plain-HTTP
//!   upstream through an HTTP proxy. rama 0.3.0 and later need Rust 1.96, hence the pinned
//!   pre-release.
//!
//! Not chosen: `hudsucker` and `http-mitm-proxy` (both embeddable MITM proxies) depend on
//! `tokio-rustls` with its default features, which pull `aws-lc-rs` into the graph; the workspace
//! builds rustls on ring only (two providers in one build make provider-less rustls calls panic,
//! and the e2e binaries are built with dev-dependency features). `proxyapi` needs OpenSSL.
//! `tokio-socks` and `hyper-util`'s proxy connectors are clients only.
//!
//! CONNECT tunnelling is not exercised: reqwest uses it only for `https://` upstreams, the mock
//! speaks plain HTTP, and the gateway trusts only the webpki roots.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fast_socks5::server::{DnsResolveHelper as _, Socks5ServerProtocol, run_tcp_proxy};
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command, SocksError};
use gateway_core::config::{ConfigFile, Provider};
use gateway_core::forward::{ClientOptions, ClientPool};
use gateway_core::route::chain::{AttemptOutcome, ChainStep};
use gateway_core::store::MemoryUsageSink;
use gateway_core::{Gateway, GatewayResponse};
use gateway_mock::MockUpstream;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use rama_core::layer::ConsumeErrLayer;
use rama_core::rt::Executor;
use rama_core::service::service_fn;
use rama_core::{Layer as _, Service as _};
use rama_http::layer::proxy_auth::ProxyAuthLayer;
use rama_http::layer::remove_header::{RemoveRequestHeaderLayer, RemoveResponseHeaderLayer};
use rama_http_backend::client::HttpConnector;
use rama_http_backend::server::HttpServer;
use rama_net::client::EstablishedClientConnection;
use rama_net::user::credentials::basic;
use rama_tcp::client::service::TcpConnector;
use rama_tcp::server::TcpListener as RamaTcpListener;

const KEY: &str = "sk-alice-0001";
const PROVIDER: &str = "anthropic-via-proxy";
const PROXY_USER: &str = "proxyuser";
const PROXY_PASS: &str = "proxy-secret-pass";
const NON_STREAM: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

// ---------------------------------------------------------------------------------------------
// The gateway

fn config_text(base_url: &str, provider_options: &str) -> String {
    format!(
        r#"
[[providers]]
name = "{PROVIDER}"
type = "claude"
base_url = "{base_url}"
api_key = "sk-ant-upstream-secret"
max_retry_attempts = 1
{provider_options}

[[users]]
name = "alice"
[[users.keys]]
name = "k"
key = "{KEY}"
"#
    )
}

struct Harness {
    gateway: Gateway,
    sink: MemoryUsageSink,
}

fn harness(base_url: &str, provider_options: &str) -> Harness {
    let config = ConfigFile::from_toml_str(&config_text(base_url, provider_options)).expect("config");
    let sink = MemoryUsageSink::new();
    let gateway =
        Gateway::builder().config(&config).usage_sink(Arc::new(sink.clone())).build().expect("gateway");
    Harness { gateway, sink }
}

fn messages(body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri("/v1/messages")
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", KEY)
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request")
}

async fn collect(resp: GatewayResponse) -> (StatusCode, String, Bytes) {
    let (parts, body) = resp.into_parts();
    let ct =
        parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, ct, bytes)
}

impl Harness {
    /// The logged error of the `n`th request (operator detail included).
    async fn logged_error(&self, n: usize) -> String {
        self.sink.wait_for(n + 1).await[n].error.clone().unwrap_or_default()
    }

    async fn send(&self, body: &str) -> (StatusCode, String, Bytes) {
        collect(self.gateway.handle(messages(body)).await).await
    }

    /// A non-streaming request must come back as the mock's message.
    async fn assert_non_stream_ok(&self) {
        let (status, ct, bytes) = self.send(NON_STREAM).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        assert!(ct.starts_with("application/json"), "{ct}");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["type"], "message", "{v}");
    }

    /// A streaming request must come back as the mock's whole event stream.
    async fn assert_stream_ok(&self) {
        let (status, ct, bytes) = self.send(STREAM).await;
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        assert!(text.contains("event: message_start"), "{text}");
        assert!(text.contains("event: message_stop"), "{text}");
    }
}

/// The error message of a gateway error body.
fn error_message(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).expect("error body is JSON");
    v["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

/// A loopback port with nothing listening on it.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

// ---------------------------------------------------------------------------------------------
// HTTP forward proxy (rama)

/// What an HTTP proxy served: `"METHOD URI"` for every request it accepted (after auth).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, s: String) {
        self.0.lock().push(s);
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().clone()
    }
}

struct HttpProxy {
    addr: SocketAddr,
    seen: Seen,
}

impl HttpProxy {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    fn url_with(&self, user: &str, pass: &str) -> String {
        format!("http://{user}:{pass}@{}", self.addr)
    }
}

/// Forwards one absolute-form request to its origin with rama's HTTP client connector.
async fn forward_plain(seen: Seen, req: rama_http::Request) -> Result<rama_http::Response, Infallible> {
    seen.push(format!("{} {}", req.method(), req.uri()));
    let connector = HttpConnector::<_, rama_http::Body>::new(TcpConnector::new());
    let result = async {
        let EstablishedClientConnection { input, conn } = connector.serve(req).await?;
        conn.serve(input).await
    }
    .await;
    Ok(result.unwrap_or_else(|_| {
        let mut resp = rama_http::Response::new(rama_http::Body::empty());
        *resp.status_mut() = rama_http::StatusCode::BAD_GATEWAY;
        resp
    }))
}

/// An HTTP forward proxy on a loopback port. Requests without `Proxy-Authorization` are served;
/// requests with credentials other than `PROXY_USER`/`PROXY_PASS` get 407.
async fn start_http_proxy() -> HttpProxy {
    let listener =
        RamaTcpListener::bind_address(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind http proxy");
    let addr = listener.local_addr().expect("proxy addr");
    let seen = Seen::default();
    let log = seen.clone();
    let http = HttpServer::auto(Executor::default()).service(
        (
            ConsumeErrLayer::default(),
            ProxyAuthLayer::new(basic!("proxyuser", "proxy-secret-pass")).with_allow_anonymous(true),
            RemoveResponseHeaderLayer::hop_by_hop(),
            RemoveRequestHeaderLayer::hop_by_hop(),
        )
            .into_layer(service_fn(move |req| forward_plain(log.clone(), req))),
    );
    tokio::spawn(listener.serve(http));
    HttpProxy { addr, seen }
}

// ---------------------------------------------------------------------------------------------
// SOCKS5 proxy (fast-socks5)

/// What a SOCKS5 proxy saw, one entry per connection: `auth ok USER`, `auth rejected USER`,
/// `ip ADDR` (the client resolved the name) or `domain NAME:PORT` (the proxy resolves it).
#[derive(Clone, Default)]
struct SocksLog(Arc<Mutex<Vec<String>>>);

impl SocksLog {
    fn push(&self, s: String) {
        self.0.lock().push(s);
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().clone()
    }
    fn targets(&self) -> Vec<String> {
        self.all().into_iter().filter(|e| !e.starts_with("auth ")).collect()
    }
}

struct SocksProxy {
    addr: SocketAddr,
    log: SocksLog,
}

impl SocksProxy {
    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }
    fn url_with(&self, scheme: &str, user: &str, pass: &str) -> String {
        format!("{scheme}://{user}:{pass}@{}", self.addr)
    }
}

async fn serve_socks(
    socket: tokio::net::TcpStream,
    require_password: bool,
    log: SocksLog,
) -> Result<(), SocksError> {
    let proto = if require_password {
        let auth_log = log.clone();
        let (proto, _) = Socks5ServerProtocol::accept_password_auth(socket, move |user, pass| {
            let ok = user == PROXY_USER && pass == PROXY_PASS;
            auth_log.push(format!("auth {} {user}", if ok { "ok" } else { "rejected" }));
            ok
        })
        .await?;
        proto
    } else {
        Socks5ServerProtocol::accept_no_auth(socket).await?
    };
    let (proto, cmd, target) = proto.read_command().await?;
    log.push(match &target {
        TargetAddr::Ip(addr) => format!("ip {addr}"),
        TargetAddr::Domain(name, port) => format!("domain {name}:{port}"),
    });
    let (proto, cmd, target) = (proto, cmd, target).resolve_dns().await?;
    match cmd {
        Socks5Command::TCPConnect => {
            run_tcp_proxy(proto, &target, Duration::from_secs(10), true).await?;
        }
        _ => {
            proto.reply_error(&ReplyError::CommandNotSupported).await?;
        }
    }
    Ok(())
}

/// A SOCKS5 proxy on a loopback port; with `require_password`, only `PROXY_USER`/`PROXY_PASS`.
async fn start_socks5(require_password: bool) -> SocksProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind socks5");
    let addr = listener.local_addr().expect("socks addr");
    let log = SocksLog::default();
    let conn_log = log.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let log = conn_log.clone();
            tokio::spawn(async move {
                let _ = serve_socks(socket, require_password, log).await;
            });
        }
    });
    SocksProxy { addr, log }
}

// ---------------------------------------------------------------------------------------------
// HTTP proxy

#[tokio::test]
async fn http_proxy_carries_non_streaming_and_streaming_requests() {
    let mock = MockUpstream::start().await.expect("mock");
    let proxy = start_http_proxy().await;
    let h = harness(&mock.url(), &format!("proxy_url = \"{}\"", proxy.url()));

    h.assert_non_stream_ok().await;
    h.assert_stream_ok().await;

    // Both requests went through the proxy, in absolute form, and on to the upstream.
    let expected = format!("POST {}/v1/messages", mock.url());
    assert_eq!(proxy.seen.all(), vec![expected.clone(), expected]);
    let received = mock.received();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|r| r.path_and_query == "/v1/messages"));
    assert_eq!(received[0].header("x-api-key"), Some("sk-ant-upstream-secret"));
    assert_eq!(received[1].json().expect("json")["stream"], true);
}

#[tokio::test]
async fn http_proxy_with_credentials() {
    let mock = MockUpstream::start().await.expect("mock");
    let proxy = start_http_proxy().await;
    let h = harness(&mock.url(), &format!("proxy_url = \"{}\"", proxy.url_with(PROXY_USER, PROXY_PASS)));

    h.assert_non_stream_ok().await;
    assert_eq!(proxy.seen.all(), vec![format!("POST {}/v1/messages", mock.url())]);
    assert_eq!(mock.received().len(), 1);
    // The proxy's credentials are for the proxy only.
    assert_eq!(mock.received()[0].header("proxy-authorization"), None);
}

#[tokio::test]
async fn http_proxy_with_a_wrong_password_never_reaches_the_upstream() {
    let mock = MockUpstream::start().await.expect("mock");
    let proxy = start_http_proxy().await;
    let h = harness(&mock.url(), &format!("proxy_url = \"{}\"", proxy.url_with(PROXY_USER, "wrong")));

    let (status, _, bytes) = h.send(NON_STREAM).await;
    assert!(!status.is_success(), "{status}: {}", String::from_utf8_lossy(&bytes));
    assert!(proxy.seen.all().is_empty(), "the proxy refused before forwarding");
    assert!(mock.received().is_empty());
    assert!(!String::from_utf8_lossy(&bytes).contains("wrong"), "no proxy password in the reply");
}

/// The proxy's 407 is the gateway's own misconfiguration, not an answer of the upstream: it
/// should fail over and end in an error of the gateway, not be handed to the client as if the
/// upstream had asked the client for proxy credentials.
#[tokio::test]

async fn http_proxy_auth_failure_is_a_provider_failure() {
    let mock = MockUpstream::start().await.expect("mock");
    let proxy = start_http_proxy().await;
    let h = harness(&mock.url(), &format!("proxy_url = \"{}\"", proxy.url_with(PROXY_USER, "wrong")));

    let (status, _, bytes) = h.send(NON_STREAM).await;
    assert_ne!(status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&bytes));
    assert!(!error_message(&bytes).contains(PROVIDER), "provider names stay out of client errors");
    assert!(h.logged_error(0).await.contains(PROVIDER), "the log names the provider");
}

// ---------------------------------------------------------------------------------------------
// SOCKS5 proxy

#[tokio::test]
async fn socks5_resolves_locally_and_carries_both_kinds_of_request() {
    let mock = MockUpstream::start().await.expect("mock");
    let proxy = start_socks5(false).await;
    let base = format!("http://localhost:{}", mock.addr().port());
    let h = harness(&base, &format!("proxy_url = \"{}\"", proxy.url("socks5")));

    h.assert_non_stream_ok().await;
    h.assert_stream_ok().await;

    // socks5://: the gateway resolved `localhost` and asked the proxy for an address. Pooling may
    // reuse the tunnel for the second request.
    let targets = proxy.log.targets();
    assert!(!targets.is_empty(), "the proxy saw no connection");
    assert!(targets.iter().all(|t| t == &format!("ip 127.0.0.1:{}", mock.addr().port())), "{targets:?}");
    assert_eq!(mock.received().len(), 2);
}

#[tokio::test]
async fn socks5h_lets_the_proxy_resolve_the_name() {
    let mock = MockUpstream::start().await.expect("mock");
    let proxy = start_socks5(false).await;
    let base = format!("http://localhost:{}", mock.addr().port());
    let h = harness(&base, &format!("proxy_url = \"{}\"", proxy.url("socks5h")));

    h.assert_non_stream_ok().await;
    h.assert_stream_ok().await;

    let targets = proxy.log.targets();
    assert!(!targets.is_empty(), "the proxy saw no connection");
    assert!(targets.iter().all(|t| t == &format!("domain localhost:{}", mock.addr().port())), "{targets:?}");
    assert_eq!(mock.received().len(), 2);
}

#[tokio::test]
async fn socks5_with_credentials() {
    for scheme in ["socks5", "socks5h"] {
        let mock = MockUpstream::start().await.expect("mock");
        let proxy = start_socks5(true).await;
        let url = proxy.url_with(scheme, PROXY_USER, PROXY_PASS);
        let h = harness(&mock.url(), &format!("proxy_url = \"{url}\""));

        h.assert_non_stream_ok().await;
        h.assert_stream_ok().await;
        let log = proxy.log.all();
        assert!(log.contains(&format!("auth ok {PROXY_USER}")), "{scheme}: {log:?}");
        assert!(!log.iter().any(|e| e.starts_with("auth rejected")), "{scheme}: {log:?}");
        assert_eq!(mock.received().len(), 2, "{scheme}");
    }
}

#[tokio::test]
async fn socks5_with_a_wrong_password_fails_with_a_503_and_logs_the_provider() {
    let mock = MockUpstream::start().await.expect("mock");
    let proxy = start_socks5(true).await;
    let url = proxy.url_with("socks5", PROXY_USER, "wrong-password");
    let h = harness(&mock.url(), &format!("proxy_url = \"{url}\""));

    let (status, _, bytes) = h.send(NON_STREAM).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&bytes));
    let message = error_message(&bytes);
    assert!(!message.contains(PROVIDER), "provider names stay out of client errors: {message}");
    assert!(h.logged_error(0).await.contains(PROVIDER), "the log names the provider");
    assert!(!message.contains("wrong-password"), "the proxy password leaked: {message}");
    assert!(proxy.log.all().contains(&format!("auth rejected {PROXY_USER}")), "{:?}", proxy.log.all());
    assert!(proxy.log.targets().is_empty());
    assert!(mock.received().is_empty());

    let records = h.sink.wait_for(1).await;
    let chain = serde_json::to_string(&records[0].decision_chain).expect("chain");
    assert!(!chain.contains("wrong-password"), "the proxy password leaked into the log: {chain}");
    assert!(
        records[0]
            .decision_chain
            .iter()
            .any(|e| matches!(e.step, ChainStep::Attempt { outcome: AttemptOutcome::NetworkError, .. })),
        "{chain}"
    );
}

/// Falling back to a direct connection is for a proxy that cannot be reached; a proxy that is up
/// and refuses the credentials is a misconfiguration, and going around it would bypass it.
#[tokio::test]

async fn socks5_auth_failure_does_not_fall_back_to_direct() {
    let mock = MockUpstream::start().await.expect("mock");
    let proxy = start_socks5(true).await;
    let url = proxy.url_with("socks5", PROXY_USER, "wrong-password");
    let h = harness(&mock.url(), &format!("proxy_url = \"{url}\"\nproxy_fallback_to_direct = true"));

    let (status, _, _) = h.send(NON_STREAM).await;
    assert!(proxy.log.all().contains(&format!("auth rejected {PROXY_USER}")));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(mock.received().is_empty(), "the request went around the proxy");
}

// ---------------------------------------------------------------------------------------------
// Proxy down

#[tokio::test]
async fn proxy_down_with_fallback_connects_directly() {
    for scheme in ["http", "socks5", "socks5h"] {
        let mock = MockUpstream::start().await.expect("mock");
        let port = closed_port().await;
        let h = harness(
            &mock.url(),
            &format!("proxy_url = \"{scheme}://127.0.0.1:{port}\"\nproxy_fallback_to_direct = true"),
        );
        h.assert_non_stream_ok().await;
        h.assert_stream_ok().await;
        assert_eq!(mock.received().len(), 2, "{scheme}: both requests arrived directly");
    }
}

#[tokio::test]
async fn proxy_down_without_fallback_fails_with_a_503() {
    for scheme in ["http", "socks5", "socks5h"] {
        let mock = MockUpstream::start().await.expect("mock");
        let port = closed_port().await;
        let h = harness(&mock.url(), &format!("proxy_url = \"{scheme}://127.0.0.1:{port}\""));

        for body in [NON_STREAM, STREAM] {
            let (status, _, bytes) = h.send(body).await;
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{scheme}: {}",
                String::from_utf8_lossy(&bytes)
            );
            let message = error_message(&bytes);
            assert!(
                !message.contains(PROVIDER),
                "{scheme}: provider names stay out of client errors: {message}"
            );
            assert!(message.contains("request id"), "{scheme}: {message}");
        }
        assert!(mock.received().is_empty(), "{scheme}: nothing may go around the proxy");
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

#[test]
fn malformed_proxy_urls_are_rejected_when_the_config_is_read() {
    for bad in [
        "ftp://x",
        "socks5://",
        "not a url",
        "http://",
        "socks4://127.0.0.1:1080",
        "127.0.0.1:8080",
        "http://:8080",
        "http://user name@proxy:8080",
    ] {
        let text = config_text("https://api.anthropic.com", &format!("proxy_url = \"{bad}\""));
        let err = match ConfigFile::from_toml_str(&text) {
            Ok(_) => panic!("{bad:?} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("proxy_url"), "{bad:?}: {err}");
        assert!(err.contains(PROVIDER), "{bad:?}: {err}");
    }
}

/// A port that is not a port must be refused when the config is read, not surface later as a
/// client-building error on the first request.
#[test]

fn proxy_urls_with_a_bad_port_are_rejected_when_the_config_is_read() {
    for bad in ["http://127.0.0.1:99999", "socks5://127.0.0.1:65536", "http://proxy:80x"] {
        let text = config_text("https://api.anthropic.com", &format!("proxy_url = \"{bad}\""));
        let err = match ConfigFile::from_toml_str(&text) {
            Ok(_) => panic!("{bad:?} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("proxy_url"), "{bad:?}: {err}");
    }
}

/// Whatever the validation accepts must also build a client: a bad proxy URL must never first
/// show up when a request is forwarded.
#[test]
fn accepted_proxy_urls_build_a_client() {
    let pool = ClientPool::new(ClientOptions::default());
    for good in [
        "http://127.0.0.1:3128",
        "https://proxy.example.com",
        "socks5://proxy.example.com:1080",
        "socks5h://user:pa%40ss@proxy.example.com:1080",
        "http://user:pass@[::1]:8080",
        "http://proxy.example.com:8080/",
    ] {
        let text = config_text("https://api.anthropic.com", &format!("proxy_url = \"{good}\""));
        let config = ConfigFile::from_toml_str(&text).unwrap_or_else(|e| panic!("{good:?} rejected: {e}"));
        let provider = Provider::from_config(1, &config.providers[0]).expect("provider");
        if let Err(e) = pool.for_provider(&provider) {
            panic!("{good:?} was accepted but cannot build a client: {e}");
        }
    }
}
