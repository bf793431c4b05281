//! `Gateway.serve`: an HTTP server in Rust in front of the in-process gateway, so a Node program
//! can offer the gateway to other processes without routing every byte through JavaScript.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use gateway_core::Gateway;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use napi_derive::napi;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::js_error;

/// How long `close()` lets requests in flight finish when the caller gives no grace period.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// A running server; `index.js` wraps it as `GatewayServer`.
#[napi]
pub struct NativeServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl NativeServer {
    pub(crate) async fn start(gateway: Gateway, host: &str, port: u16) -> napi::Result<Self> {
        let listener = TcpListener::bind((host, port))
            .await
            .map_err(|e| js_error(format!("cannot listen on {host}:{port}: {e}")))?;
        let addr = listener.local_addr().map_err(js_error)?;
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, gateway, stopped));
        Ok(Self { addr, stop, accept: Mutex::new(Some(accept)) })
    }
}

#[napi]
impl NativeServer {
    /// `http://host:port`, with the port actually bound.
    #[napi(getter)]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound port.
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        u32::from(self.addr.port())
    }

    /// The bound address.
    #[napi(getter)]
    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// Stops accepting, lets requests in flight finish for up to `grace_ms` (default 10 s), then
    /// drops the rest (their usage records say `client_abort`). Calling it again is a no-op.
    #[napi]
    pub async fn close(&self, grace_ms: Option<u32>) -> napi::Result<()> {
        self.stop.send_replace(true);
        let Some(mut accept) = self.accept.lock().take() else {
            return Ok(());
        };
        let grace = grace_ms.map_or(DEFAULT_GRACE, |ms| Duration::from_millis(u64::from(ms)));
        if tokio::time::timeout(grace, &mut accept).await.is_err() {
            // Aborting the accept task drops its JoinSet, which aborts every connection.
            accept.abort();
            let _ = accept.await;
        }
        Ok(())
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    // A closed channel means the handle is gone: stop as well.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn accept_loop(listener: TcpListener, gateway: Gateway, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(serve_connection(tcp, gateway.clone(), stop.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow with every connection served.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(tcp: TcpStream, gateway: Gateway, mut stop: watch::Receiver<bool>) {
    // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm and the client's
    // delayed ACK hold frames back by tens of milliseconds.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY not set: {e}");
    }
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        // `handle`'s future is 'static but (edition 2024) its type names the borrow of
        // `gateway`: an owned clone (an Arc) keeps the closure reusable.
        let gateway = gateway.clone();
        async move { Ok::<_, Infallible>(gateway.handle(req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended with an error: {e}");
    }
}
