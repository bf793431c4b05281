//! `llm_gateway.testing.MockUpstream`: gateway-mock's fake vendor server for users' own tests.

use std::net::SocketAddr;
use std::time::Duration;

use gateway_mock::{MockBehavior, ReceivedRequest};
use pyo3::exceptions::{PyOSError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::{convert, runtime};

/// A fake Anthropic / OpenAI Chat / OpenAI Responses / Gemini server on a loopback port.
#[pyclass(module = "llm_gateway._native", frozen)]
pub struct MockUpstream {
    inner: gateway_mock::MockUpstream,
}

/// A behaviour from its serde JSON form (a dict; see `MockBehavior` in gateway-mock).
fn behavior(obj: &Bound<'_, PyAny>) -> PyResult<MockBehavior> {
    let value = convert::to_json(obj)?;
    serde_json::from_value(value).map_err(|e| PyValueError::new_err(format!("invalid mock behavior: {e}")))
}

fn received_dict<'py>(py: Python<'py>, r: &ReceivedRequest) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("method", &r.method)?;
    d.set_item("path", &r.path_and_query)?;
    let headers = PyDict::new(py);
    for (k, v) in convert::header_pairs(&r.headers) {
        headers.set_item(k, v)?;
    }
    d.set_item("headers", headers)?;
    d.set_item("body", PyBytes::new(py, &r.body))?;
    match r.json() {
        Some(v) => d.set_item("json", convert::from_json(py, &v)?)?,
        None => d.set_item("json", py.None())?,
    }
    Ok(d)
}

#[pymethods]
impl MockUpstream {
    /// Starts the mock on `host:port` (port 0 picks a free one) with `behavior` (a dict in the
    /// serde form of gateway-mock's `MockBehavior`; missing keys keep their defaults).
    #[new]
    #[pyo3(signature = (behavior=None, *, host="127.0.0.1", port=0))]
    fn new(py: Python<'_>, behavior: Option<&Bound<'_, PyAny>>, host: &str, port: u16) -> PyResult<Self> {
        let behavior = match behavior.filter(|b| !b.is_none()) {
            Some(b) => self::behavior(b)?,
            None => MockBehavior::default(),
        };
        let ip = host
            .parse()
            .map_err(|_| PyValueError::new_err(format!("host must be an IP address, got {host:?}")))?;
        let addr = SocketAddr::new(ip, port);
        let inner = py
            .detach(|| runtime().block_on(gateway_mock::MockUpstream::start_on(addr, behavior)))
            .map_err(|e| PyOSError::new_err(format!("mock upstream cannot listen on {addr}: {e}")))?;
        Ok(Self { inner })
    }

    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`.
    #[getter]
    fn url(&self) -> String {
        self.inner.url()
    }

    /// The port listened on.
    #[getter]
    fn port(&self) -> u16 {
        self.inner.addr().port()
    }

    /// Replaces the behaviour (a dict; missing keys take their defaults, not their current values).
    fn set_behavior(&self, behavior: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.set_behavior(self::behavior(behavior)?);
        Ok(())
    }

    /// The current behaviour as a dict.
    #[getter]
    fn behavior<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value =
            serde_json::to_value(self.inner.behavior()).map_err(|e| PyValueError::new_err(e.to_string()))?;
        convert::from_json(py, &value)
    }

    /// Every request received so far: dicts with `method`, `path` (with the query), `headers`,
    /// `body` (bytes) and `json` (the parsed body, or None).
    fn received<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.inner.received().iter().map(|r| received_dict(py, r)).collect()
    }

    /// Forgets the recorded requests.
    fn clear_received(&self) {
        self.inner.clear_received();
    }

    /// Waits until at least `count` requests arrived and returns them all; raises TimeoutError
    /// after `timeout` seconds.
    #[pyo3(signature = (count, timeout=5.0))]
    fn wait_for_requests<'py>(
        &self,
        py: Python<'py>,
        count: usize,
        timeout: f64,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let wait = Duration::try_from_secs_f64(timeout).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mock = self.inner.clone();
        let got = py.detach(move || {
            runtime().block_on(async move { tokio::time::timeout(wait, mock.wait_for_requests(count)).await })
        });
        match got {
            Ok(list) => list.iter().map(|r| received_dict(py, r)).collect(),
            Err(_) => {
                Err(PyTimeoutError::new_err(format!("fewer than {count} requests arrived in {timeout} s")))
            }
        }
    }

    /// Stops accepting connections; requests in flight finish.
    fn stop(&self) {
        self.inner.shutdown();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) {
        self.inner.shutdown();
    }

    fn __repr__(&self) -> String {
        format!("<MockUpstream {}>", self.inner.url())
    }
}
