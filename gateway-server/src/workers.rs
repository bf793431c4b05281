//! The listener side of the server: one thread per CPU, each with its own single-threaded tokio
//! runtime and its own listening socket, serving the connections it accepts from start to end.
//!
//! Why not one multi-threaded runtime: a proxied request is a handful of small tasks (the client
//! connection, the upstream connection, their bodies) that wake one another several times.
//! Under one work-stealing runtime those wake-ups crossed threads, idle workers were woken to
//! steal, and shared state bounced between the cores' caches. With a runtime per thread (the
//! model of nginx and Envoy) a request's tasks and its upstream connection stay on one thread:
//! at saturation the gateway used about 9 % less CPU per request, and the machine served about
//! 11 % more requests per second through it (`docs/benchmarks.md`).
//!
//! On Linux every thread binds its own socket to the address with `SO_REUSEPORT`, so the kernel
//! spreads new connections evenly; elsewhere the threads accept from one shared socket.
//! Background work (the usage writer, the configuration watch) stays on the main runtime.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
#[cfg(target_os = "linux")]
use tokio::net::TcpSocket;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::app::App;

/// Where the server is in its life; every thread and connection follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Accepting and serving.
    Running = 0,
    /// No new connections; each open one finishes its request in flight and closes.
    Draining = 1,
    /// The grace period is over: remaining connections are dropped, which ends their response
    /// bodies, so their usage records are still written.
    Closing = 2,
    /// Everything is flushed: the runtimes may stop.
    Exit = 3,
}

/// Backlog of each listening socket, as `tokio::net::TcpListener::bind` uses.
#[cfg(target_os = "linux")]
const BACKLOG: u32 = 1024;

/// Threads serving connections, one runtime each.
#[derive(Debug)]
pub struct Workers {
    local_addr: SocketAddr,
    phase: watch::Sender<Phase>,
    connections: TaskTracker,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// How many serving threads to run when not told: one per CPU the process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

impl Workers {
    /// Binds `addr` and starts `count` threads serving `app`. Fails when the address cannot be
    /// bound or a runtime or thread cannot be started; threads already started then end, as
    /// their phase channel closes.
    pub fn start(addr: SocketAddr, count: usize, app: App) -> anyhow::Result<Self> {
        let count = count.max(1);
        let mut runtimes = Vec::with_capacity(count);
        for _ in 0..count {
            runtimes.push(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot build a worker runtime")?,
            );
        }
        let listeners = bind(addr, &runtimes).with_context(|| format!("cannot listen on {addr}"))?;
        let local_addr = listeners[0].local_addr()?;
        let (phase, _) = watch::channel(Phase::Running);
        let connections = TaskTracker::new();
        let mut threads = Vec::with_capacity(count);
        for (index, (runtime, listener)) in runtimes.into_iter().zip(listeners).enumerate() {
            let worker = Worker {
                listener,
                app: app.clone(),
                phase: phase.subscribe(),
                connections: connections.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("gateway-worker-{index}"))
                .spawn(move || runtime.block_on(worker.run()))
                .context("cannot start a worker thread")?;
            threads.push(thread);
        }
        Ok(Self { local_addr, phase, connections, threads })
    }

    /// The bound address (with the port the system chose when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets open connections finish for up to `grace`, then drops the rest.
    /// Returns once no connection task is left (their usage records are queued by then).
    pub async fn drain(&self, grace: Duration) {
        self.phase.send_replace(Phase::Draining);
        self.connections.close();
        if tokio::time::timeout(grace, self.connections.wait()).await.is_ok() {
            return;
        }
        tracing::warn!("grace period of {}s over; closing remaining connections", grace.as_secs());
        self.phase.send_replace(Phase::Closing);
        // Dropping a connection is immediate; the bound only guards against a stuck thread.
        if tokio::time::timeout(Duration::from_secs(5), self.connections.wait()).await.is_err() {
            tracing::warn!("{} connection(s) did not close", self.connections.len());
        }
    }

    /// Lets the threads end and waits for them. Called after the usage log is flushed: database
    /// connections opened during a request live on the runtime of its thread and must keep
    /// working until then.
    pub async fn stop(self) {
        self.phase.send_replace(Phase::Exit);
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a worker thread panicked");
                }
            }
        });
        if joined.await.is_err() {
            tracing::error!("cannot wait for the worker threads");
        }
    }
}

/// One listening socket per runtime, registered with it. On Linux each is its own socket bound
/// with `SO_REUSEPORT` to the same address (the first one's, so port 0 means one port for all);
/// elsewhere they are duplicates of one socket.
#[cfg(target_os = "linux")]
fn bind(addr: SocketAddr, runtimes: &[tokio::runtime::Runtime]) -> std::io::Result<Vec<TcpListener>> {
    // With `SO_REUSEPORT` a second gateway started on the same port would bind as well and
    // silently take half the connections. A plain bind first fails on a port anything listens
    // on, as a server's start should.
    if addr.port() != 0 {
        drop(std::net::TcpListener::bind(addr)?);
    }
    let mut addr = addr;
    let mut listeners = Vec::with_capacity(runtimes.len());
    for runtime in runtimes {
        let _in_runtime = runtime.enter();
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        // As std's and tokio's `bind`: a restart may reuse the port while old connections linger.
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(BACKLOG)?;
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

#[cfg(not(target_os = "linux"))]
fn bind(addr: SocketAddr, runtimes: &[tokio::runtime::Runtime]) -> std::io::Result<Vec<TcpListener>> {
    let shared = std::net::TcpListener::bind(addr)?;
    shared.set_nonblocking(true)?;
    runtimes
        .iter()
        .map(|runtime| {
            let _in_runtime = runtime.enter();
            TcpListener::from_std(shared.try_clone()?)
        })
        .collect()
}

/// One thread's accept loop and the connections it serves.
struct Worker {
    listener: TcpListener,
    app: App,
    phase: watch::Receiver<Phase>,
    connections: TaskTracker,
}

impl Worker {
    async fn run(self) {
        let Worker { listener, app, mut phase, connections } = self;
        let open = OpenConnections::default();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = phase.wait_for(|p| *p != Phase::Running) => break,
            };
            match accepted {
                Ok((tcp, _)) => {
                    let signal = open.register();
                    tokio::spawn(connections.track_future(serve_connection(tcp, app.clone(), signal)));
                }
                Err(e) => accept_failed(e).await,
            }
        }
        // Closing the socket refuses new connections at once.
        drop(listener);
        // Relay every later phase to the open connections. This runtime keeps polling what was
        // opened on it (upstream and database connections) until the server has flushed its log.
        loop {
            let now = *phase.borrow_and_update();
            open.tell(now);
            if now == Phase::Exit || phase.changed().await.is_err() {
                return;
            }
        }
    }
}

/// An accept error is about one connection (it was reset before we took it) or about the
/// process (out of file descriptors): then wait a little, as retrying at once would spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind as K;
    if matches!(e.kind(), K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused | K::Interrupted) {
        return;
    }
    tracing::warn!("accept failed: {e}; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// How one connection learns the server's phase. A connection checks it on every poll, so it
/// is its own: a `watch` receiver instead would lock the channel's waiter list, shared by every
/// connection of every thread, each time.
#[derive(Debug, Default)]
struct PhaseSignal {
    phase: AtomicU8,
    waker: AtomicWaker,
}

impl PhaseSignal {
    fn get(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Running,
            1 => Phase::Draining,
            2 => Phase::Closing,
            _ => Phase::Exit,
        }
    }

    fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
        self.waker.wake();
    }
}

/// The open connections of one worker, to tell them when the phase changes.
#[derive(Debug, Default, Clone)]
struct OpenConnections(Arc<Mutex<OpenInner>>);

#[derive(Debug, Default)]
struct OpenInner {
    next_id: u64,
    signals: HashMap<u64, Arc<PhaseSignal>>,
}

impl OpenConnections {
    fn register(&self) -> Registered {
        let signal = Arc::new(PhaseSignal::default());
        let mut inner = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = inner.next_id;
        inner.next_id += 1;
        inner.signals.insert(id, signal.clone());
        Registered { signal, id, open: self.clone() }
    }

    fn tell(&self, phase: Phase) {
        let inner = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for signal in inner.signals.values() {
            signal.set(phase);
        }
    }
}

/// A connection's place in [`OpenConnections`], given up when the connection ends.
struct Registered {
    signal: Arc<PhaseSignal>,
    id: u64,
    open: OpenConnections,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut inner = self.open.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.signals.remove(&self.id);
    }
}

async fn serve_connection(tcp: TcpStream, app: App, registered: Registered) {
    // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm and the client's
    // delayed ACK hold frames back by ~40 ms.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }
    let service =
        TowerToHyperService::new(tower::ServiceExt::map_request(app, |req: http::Request<Incoming>| {
            req.map(Body::new)
        }));
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(connection);
    let signal = &registered.signal;
    let mut draining = false;
    std::future::poll_fn(|cx| {
        signal.waker.register(cx.waker());
        match signal.get() {
            Phase::Running => {}
            Phase::Draining => {
                if !draining {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            // Dropping the connection ends its response bodies.
            Phase::Closing | Phase::Exit => return Poll::Ready(()),
        }
        connection.as_mut().poll(cx).map(|_| ())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtimes(n: usize) -> Vec<tokio::runtime::Runtime> {
        (0..n)
            .map(|_| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
            .collect()
    }

    #[test]
    fn every_worker_listens_on_the_same_port() {
        let rts = runtimes(3);
        let listeners = bind("127.0.0.1:0".parse().expect("addr"), &rts).expect("bind");
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().expect("addr")).collect();
        assert_eq!(addrs.len(), 3);
        assert_ne!(addrs[0].port(), 0);
        assert!(addrs.iter().all(|a| *a == addrs[0]), "{addrs:?}");
    }

    #[test]
    fn a_port_in_use_is_an_error_even_for_a_second_gateway() {
        let rts = runtimes(2);
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        assert!(bind(addr, &rts).is_err(), "a port another program listens on");
        drop(taken);

        let first = bind("127.0.0.1:0".parse().expect("addr"), &rts).expect("first gateway");
        let addr = first[0].local_addr().expect("addr");
        let second = bind(addr, &runtimes(2));
        assert_eq!(
            second.map(|_| ()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::AddrInUse),
            "a second gateway on the port of a running one"
        );
    }
}
