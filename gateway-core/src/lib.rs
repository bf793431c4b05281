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

pub use error::{ErrorKind, GatewayError};
pub use pipeline::{Gateway, GatewayBuilder, GatewaySettings};
pub use request::{GatewayBody, GatewayRequest, GatewayResponse, RequestContext};

/// The fake upstream vendor server (feature `mock`), re-exported from `gateway-mock`.
#[cfg(feature = "mock")]
pub use gateway_mock as mock;
