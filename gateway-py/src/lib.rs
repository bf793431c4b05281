//! `llm_gateway`: Python bindings of the LLM gateway.
//!
//! Everything a request goes through lives in `gateway-core`; this crate only converts types
//! between Python and Rust and runs the core's futures on one tokio runtime (the one
//! `pyo3-async-runtimes` manages, so awaitables resolve on the caller's asyncio loop). The GIL is
//! released whenever Rust waits or works.
//!
//! The Python half of the package (`python/llm_gateway`) holds the exception classes, the ASGI
//! adapter and the typed stubs.

mod convert;
mod errors;
mod gateway;
mod mock;
mod response;
mod server;
mod translate;
mod usage;

use pyo3::prelude::*;

/// The binding's tokio runtime (multi-threaded, shared with `pyo3-async-runtimes`).
fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<gateway::Gateway>()?;
    m.add_class::<response::Response>()?;
    m.add_class::<response::SyncResponse>()?;
    m.add_class::<server::Server>()?;
    m.add_class::<mock::MockUpstream>()?;
    m.add_class::<translate::Translation>()?;
    m.add_class::<translate::StreamTranslator>()?;
    m.add_function(wrap_pyfunction!(translate::translate_request, m)?)?;
    m.add_function(wrap_pyfunction!(translate::translate_response, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
