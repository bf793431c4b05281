//! `Gateway.serve()`: the gateway over real HTTP on a background thread of the binding's tokio
//! runtime. Every request goes to `gateway_core::Gateway::handle`; this file only accepts
//! connections and speaks HTTP/1.1 and h2c through hyper.

use std::convert::Infallible;
use std::net::SocketAddr;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::runtime;

/// A running HTTP server; stops on `close()`, at the end of a `with` block, or when collected.
#[pyclass(module = "llm_gateway._native", frozen)]
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    pub fn start(py: Python<'_>, gateway: gateway_core::Gateway, host: &str, port: u16) -> PyResult<Self> {
        let target = format!("{host}:{port}");
        let bound = py.detach(|| {
            runtime().block_on(async {
                let listener = TcpListener::bind(&target).await?;
                let addr = listener.local_addr()?;
                Ok::<_, std::io::Error>((listener, addr))
            })
        });
        let (listener, addr) =
            bound.map_err(|e| PyOSError::new_err(format!("cannot listen on {target}: {e}")))?;
        let (stop, stopped) = watch::channel(false);
        let task = runtime().spawn(accept_loop(listener, gateway, stopped));
        Ok(Self { addr, stop, task: Mutex::new(Some(task)) })
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which is a stop as well.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn accept_loop(listener: TcpListener, gateway: gateway_core::Gateway, mut stop: watch::Receiver<bool>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%err, "llm_gateway server: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // Without it, small SSE frames wait for Nagle and delayed ACKs (tens of milliseconds).
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let gateway = gateway.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                // `handle`'s future borrows the gateway (edition 2024 captures); a clone per
                // request (one Arc) lets it own one.
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(gateway.handle(req).await) }
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
                tracing::debug!(%err, "llm_gateway server: connection ended with an error");
            }
        });
    }
}

#[pymethods]
impl Server {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    #[getter]
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address listened on.
    #[getter]
    fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// The port listened on.
    #[getter]
    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops accepting and lets open connections finish their current request; returns when the
    /// listener is closed. Idempotent.
    fn close(&self, py: Python<'_>) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.lock().take() {
            py.detach(|| {
                // A panic in the loop would already have been reported; closing still succeeds.
                let _ = runtime().block_on(task);
            });
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) {
        self.close(py);
    }

    fn __repr__(&self) -> String {
        format!("<Server {}>", self.url())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
