//! `gateway-core`: the LLM gateway pipeline as composable tower services.
//!
//! Build a [`Gateway`] with [`GatewayBuilder`] from a [`config::ConfigFile`] (or a live
//! [`catalog::CatalogHandle`]), give it a [`store::UsageSink`], and serve HTTP requests with
//! [`Gateway::handle`] or mount it as a tower `Service`. The layer order and what each stage
//! adds to the request is documented in [`pipeline`].
#![warn(missing_docs)]

pub mod auth;
pub mod catalog;
pub mod config;
pub mod dialect;
pub mod error;
pub mod forward;
pub mod header_names;
pub mod ingress;
pub mod limit;
pub mod models;
pub mod pipeline;
pub mod policy;
pub mod request;
pub mod route;
pub mod session;
pub mod sse;
pub mod store;
pub mod translate;
pub mod usage;

/// A hash map for per-request lookups whose keys come from configuration, not from callers, so
/// a fast hash (foldhash) needs no resistance to chosen keys.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Which connections a caller uses: the single-threaded runtime it runs on, or `None` (shared)
/// on a multi-threaded one. A connection (upstream HTTP, Redis) is driven by a task on the
/// runtime that opened it, so under single-threaded runtimes (`gateway-server` runs one per
/// CPU) each keeps its own: a request then never waits on another thread's tasks, and a runtime
/// that stops takes only its own connections with it.
pub(crate) fn runtime_scope() -> Option<std::thread::ThreadId> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::CurrentThread => {
            Some(std::thread::current().id())
        }
        _ => None,
    }
}

pub use error::{ErrorKind, GatewayError};
pub use pipeline::{Gateway, GatewayBuilder, GatewaySettings};
pub use request::{GatewayBody, GatewayRequest, GatewayResponse, RequestContext};

/// The fake upstream vendor server (feature `mock`), re-exported from `gateway-mock`.
#[cfg(feature = "mock")]
pub use gateway_mock as mock;
