//! The HTTP server: listener, connections, request recording and the public handle.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::behavior::MockBehavior;
use crate::body::MockBody;
use crate::router;

/// One request as the mock received it, recorded before any response was produced.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path plus query string, e.g. `/v1/messages?beta=true`.
    pub path_and_query: String,
    /// All request headers as received.
    pub headers: HeaderMap,
    /// The complete request body.
    pub body: Bytes,
}

impl ReceivedRequest {
    /// The body parsed as JSON, or `None` when it is not valid JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The first value of header `name` (case-insensitive), when present and valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// State shared by the handle and the server tasks.
struct Shared {
    /// Snapshot per request; an `Arc` so taking it does not clone the reply text.
    behavior: RwLock<Arc<MockBehavior>>,
    received: Mutex<Vec<ReceivedRequest>>,
    /// Woken whenever a request was recorded, for `wait_for_requests`.
    arrived: Notify,
    recording: AtomicBool,
    /// Numbers request ids, message ids and tool-use ids.
    next_id: AtomicU64,
}

/// Signals shutdown when the last handle goes away.
///
/// Kept apart from [`Shared`] because the server tasks hold `Shared`: the server must not keep
/// itself alive.
struct ShutdownGuard {
    tx: watch::Sender<bool>,
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.tx.send_replace(true);
    }
}

/// A fake of the Anthropic Messages, OpenAI Chat Completions, OpenAI Responses and Gemini APIs
/// served over real HTTP (HTTP/1.1 with keep-alive, and h2c) on a local port.
///
/// Cloning gives another handle to the same server; the server stops when
/// [`shutdown`](Self::shutdown) is called or the last handle is dropped.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let mock = gateway_mock::MockUpstream::start().await?;
/// let endpoint = format!("{}/v1/messages", mock.url());
/// // ... point the client under test at `endpoint` ...
/// let seen = mock.wait_for_requests(1).await;
/// assert_eq!(seen[0].path_and_query, "/v1/messages");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MockUpstream {
    shared: Arc<Shared>,
    guard: Arc<ShutdownGuard>,
    addr: SocketAddr,
}

impl fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .field("received", &self.shared.received.lock().len())
            .field("shut_down", &*self.guard.tx.borrow())
            .finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// Starts a mock with default behavior on `127.0.0.1` and a free port.
    pub async fn start() -> std::io::Result<MockUpstream> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), MockBehavior::default()).await
    }

    /// Starts a mock listening on `addr` (port 0 picks a free port) with `behavior`.
    pub async fn start_on(addr: SocketAddr, behavior: MockBehavior) -> std::io::Result<MockUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            behavior: RwLock::new(Arc::new(behavior)),
            received: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            recording: AtomicBool::new(true),
            next_id: AtomicU64::new(1),
        });
        let (tx, rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, Arc::clone(&shared), rx));
        tracing::debug!(%addr, "mock upstream listening");
        Ok(MockUpstream { shared, guard: Arc::new(ShutdownGuard { tx }), addr })
    }

    /// The socket address the mock listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the behavior; requests arriving afterwards use it.
    pub fn set_behavior(&self, behavior: MockBehavior) {
        *self.shared.behavior.write() = Arc::new(behavior);
    }

    /// The current behavior.
    pub fn behavior(&self) -> MockBehavior {
        MockBehavior::clone(&self.shared.behavior.read())
    }

    /// Every request received so far (since the last [`clear_received`](Self::clear_received)),
    /// in arrival order.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.shared.received.lock().clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_received(&self) {
        self.shared.received.lock().clear();
    }

    /// Turns request recording on (the default) or off.
    ///
    /// Long benchmarks turn it off so memory stays flat; while it is off,
    /// [`wait_for_requests`](Self::wait_for_requests) cannot make progress.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::Relaxed);
    }

    /// Waits until at least `n` requests were recorded and returns all recorded requests.
    ///
    /// Waits forever if they never arrive: wrap it in `tokio::time::timeout` in tests.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<ReceivedRequest> {
        loop {
            // Register interest before checking, so a request recorded in between still wakes us.
            let notified = self.shared.arrived.notified();
            {
                let received = self.shared.received.lock();
                if received.len() >= n {
                    return received.clone();
                }
            }
            notified.await;
        }
    }

    /// Stops accepting connections and closes idle ones; requests in flight finish.
    ///
    /// Takes effect asynchronously, as soon as the server tasks next run. Dropping the last
    /// handle does the same.
    pub fn shutdown(&self) {
        self.guard.tx.send_replace(true);
    }
}

/// Resolves once shutdown was requested (or every handle is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which is a shutdown as well.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // `auto` serves HTTP/1.1 and detects h2c prior-knowledge connections by their preface.
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Usually fd exhaustion; back off instead of spinning.
                tracing::warn!(%err, "mock upstream: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small SSE frames must leave immediately for delays to be observable.
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let shared = Arc::clone(&shared);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(shared, req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                // Expected for reset_after_events and for clients that hang up early.
                tracing::debug!(%err, "mock upstream: connection ended with an error");
            }
        });
    }
    tracing::debug!("mock upstream stopped listening");
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<MockBody> {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let behavior = Arc::clone(&shared.behavior.read());
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            let message = format!("mock upstream: could not read the request body: {err}");
            return router::bad_request(&parts.uri, &parts.headers, &message, id);
        }
    };
    let path_and_query =
        parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    if shared.recording.load(Ordering::Relaxed) {
        shared.received.lock().push(ReceivedRequest {
            method: parts.method.as_str().to_owned(),
            path_and_query,
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        shared.arrived.notify_waiters();
    }
    if !behavior.first_byte_delay.is_zero() {
        tokio::time::sleep(behavior.first_byte_delay).await;
    }
    router::respond(&behavior, id, &parts.method, &parts.uri, &parts.headers, &body)
}
