//! Responses: status and headers at once, the body pulled frame by frame as Python asks for it.
//!
//! [`Response`] is the awaitable flavour (`await resp.read()`, `async for chunk in resp`),
//! [`SyncResponse`] the blocking one (`resp.read()`, `for chunk in resp`); both wrap the same
//! [`Body`]. Dropping either before the end drops the gateway's body, which records the request
//! as a client abort, exactly as a disconnecting HTTP client would.

use std::sync::Arc;

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use gateway_core::GatewayResponse;
use gateway_core::request::GatewayBody;
use http_body_util::BodyExt;
use pyo3::exceptions::{PyStopAsyncIteration, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tokio::sync::Mutex;

use crate::errors::{self, Class};
use crate::runtime;

enum State {
    /// Frames still to come; `ready` holds frames already taken from `body` by the read-ahead
    /// and not yet handed out; `started` once iteration handed one out.
    Open { body: GatewayBody, ready: VecDeque<Bytes>, started: bool },
    /// The whole body: read by `read()` (kept so `read()`/`json()` can be called again), or
    /// complete when the response arrived.
    Buffered(Bytes),
    /// Iterated to the end.
    Drained,
    /// The body failed during the read-ahead; reported at the next read.
    Failed(String),
    /// Closed before the end.
    Closed,
}

/// Why a body could not be read.
enum BodyError {
    /// The gateway's body failed mid-way.
    Broken(String),
    /// Iteration already consumed part of it, or it was read/iterated to the end.
    Consumed,
    /// `close()` was called.
    Closed,
}

impl BodyError {
    fn into_py(self) -> PyErr {
        match self {
            Self::Broken(msg) => {
                errors::detached(Class::Stream, format!("response body failed: {msg}"), 502, "stream_error")
            }
            Self::Consumed => errors::detached(
                Class::Stream,
                "the response body was already consumed by iteration",
                500,
                "stream_consumed",
            ),
            Self::Closed => errors::detached(Class::Stream, "the response was closed", 500, "stream_closed"),
        }
    }
}

/// The read-ahead takes at most this much from a body without being asked (a stream that is
/// faster than its reader is then read on demand, as before).
const READ_AHEAD_LIMIT: usize = 1 << 20;

/// The shared body of a response.
pub struct Body {
    state: Mutex<State>,
}

impl Body {
    fn new(body: GatewayBody) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(State::Open { body, ready: VecDeque::new(), started: false }) })
    }

    /// Takes the frames the body already has, without waiting. A complete small body (every
    /// non-streaming answer) is then `Buffered` before Python asks, so `read()` and the next
    /// chunk of a burst need no second round trip between the event loop and the runtime.
    fn read_ahead(mut body: GatewayBody) -> Arc<Self> {
        let mut ready = VecDeque::new();
        let mut taken = 0usize;
        let state = loop {
            if taken >= READ_AHEAD_LIMIT {
                break State::Open { body, ready, started: false };
            }
            match body.frame().now_or_never() {
                None => break State::Open { body, ready, started: false },
                Some(None) => {
                    let all = match ready.len() {
                        0 => Bytes::new(),
                        1 => ready.pop_front().unwrap_or_default(),
                        _ => ready
                            .iter()
                            .fold(BytesMut::with_capacity(taken), |mut acc, b| {
                                acc.extend_from_slice(b);
                                acc
                            })
                            .freeze(),
                    };
                    break State::Buffered(all);
                }
                Some(Some(Err(e))) => break State::Failed(e.to_string()),
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        taken += data.len();
                        ready.push_back(data);
                    }
                }
            }
        };
        Arc::new(Self { state: Mutex::new(state) })
    }

    /// The next chunk if it needs no waiting: `None` when the caller must await [`Body::next`].
    fn next_now(&self) -> Option<Result<Option<Bytes>, BodyError>> {
        let mut state = self.state.try_lock().ok()?;
        if let State::Open { ready, started, .. } = &mut *state {
            let chunk = ready.pop_front()?;
            *started = true;
            return Some(Ok(Some(chunk)));
        }
        Some(Self::next_settled(&mut state))
    }

    /// `next` for every state but `Open`.
    fn next_settled(state: &mut State) -> Result<Option<Bytes>, BodyError> {
        match state {
            State::Buffered(bytes) => {
                let bytes = std::mem::take(bytes);
                *state = State::Drained;
                Ok((!bytes.is_empty()).then_some(bytes))
            }
            State::Failed(msg) => {
                let msg = std::mem::take(msg);
                *state = State::Drained;
                Err(BodyError::Broken(msg))
            }
            State::Closed => Err(BodyError::Closed),
            State::Drained | State::Open { .. } => Ok(None),
        }
    }

    /// The next non-empty chunk, `None` at the end.
    async fn next(&self) -> Result<Option<Bytes>, BodyError> {
        let mut state = self.state.lock().await;
        let State::Open { body, ready, started } = &mut *state else {
            return Self::next_settled(&mut state);
        };
        if let Some(chunk) = ready.pop_front() {
            *started = true;
            return Ok(Some(chunk));
        }
        loop {
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => {
                        *started = true;
                        let (chunk, after) = join_waiting(body, data);
                        if let Some(after) = after {
                            *state = after;
                        }
                        return Ok(Some(chunk));
                    }
                    // Empty data frames and trailers carry nothing for the caller.
                    _ => continue,
                },
                Some(Err(e)) => {
                    *state = State::Drained;
                    return Err(BodyError::Broken(e.to_string()));
                }
                None => {
                    *state = State::Drained;
                    return Ok(None);
                }
            }
        }
    }

    /// `read` when it needs no waiting: `None` when the caller must await [`Body::read`].
    fn read_now(&self) -> Option<Result<Bytes, BodyError>> {
        let state = self.state.try_lock().ok()?;
        match &*state {
            State::Buffered(bytes) => Some(Ok(bytes.clone())),
            State::Open { started: false, .. } | State::Failed(_) => None,
            State::Open { started: true, .. } | State::Drained => Some(Err(BodyError::Consumed)),
            State::Closed => Some(Err(BodyError::Closed)),
        }
    }

    /// The whole body (kept for later calls).
    async fn read(&self) -> Result<Bytes, BodyError> {
        let mut state = self.state.lock().await;
        match &mut *state {
            State::Open { started: true, .. } | State::Drained => Err(BodyError::Consumed),
            State::Closed => Err(BodyError::Closed),
            State::Buffered(bytes) => Ok(bytes.clone()),
            State::Failed(msg) => {
                let msg = std::mem::take(msg);
                *state = State::Drained;
                Err(BodyError::Broken(msg))
            }
            State::Open { body, ready, started: false } => {
                let mut all = BytesMut::new();
                for chunk in ready.drain(..) {
                    all.extend_from_slice(&chunk);
                }
                while let Some(frame) = body.frame().await {
                    let frame = match frame {
                        Ok(f) => f,
                        Err(e) => {
                            *state = State::Drained;
                            return Err(BodyError::Broken(e.to_string()));
                        }
                    };
                    if let Ok(data) = frame.into_data() {
                        all.extend_from_slice(&data);
                    }
                }
                let all = all.freeze();
                *state = State::Buffered(all.clone());
                Ok(all)
            }
        }
    }

    async fn close(&self) {
        let mut state = self.state.lock().await;
        if matches!(*state, State::Open { .. }) {
            *state = State::Closed;
        }
    }
}

/// Appends to `first` the frames `body` already has (a burst, e.g. the events an upstream wrote
/// at once), without waiting, so that one crossing between the runtime and Python carries them
/// all. Returns the chunk and, when the body ended or failed meanwhile, the state to move to
/// (the end or the error then shows at the next read).
fn join_waiting(body: &mut GatewayBody, first: Bytes) -> (Bytes, Option<State>) {
    let mut joined: Option<BytesMut> = None;
    let mut after = None;
    loop {
        if joined.as_ref().is_some_and(|j| j.len() >= READ_AHEAD_LIMIT) {
            break;
        }
        match body.frame().now_or_never() {
            None => break,
            Some(None) => {
                after = Some(State::Drained);
                break;
            }
            Some(Some(Err(e))) => {
                after = Some(State::Failed(e.to_string()));
                break;
            }
            Some(Some(Ok(frame))) => {
                if let Ok(more) = frame.into_data()
                    && !more.is_empty()
                {
                    joined.get_or_insert_with(|| BytesMut::from(&first[..])).extend_from_slice(&more);
                }
            }
        }
    }
    (joined.map_or(first, BytesMut::freeze), after)
}

/// An awaitable that is already done: for results known without waiting, far cheaper than a
/// round trip through the runtime and back to the event loop.
fn done_future<'py>(py: Python<'py>, result: PyResult<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
    let future = py
        .import(pyo3::intern!(py, "asyncio"))?
        .call_method0(pyo3::intern!(py, "get_running_loop"))?
        .call_method0(pyo3::intern!(py, "create_future"))?;
    match result {
        Ok(value) => future.call_method1(pyo3::intern!(py, "set_result"), (value,))?,
        Err(e) => future.call_method1(pyo3::intern!(py, "set_exception"), (e.value(py),))?,
    };
    Ok(future)
}

/// Status and headers, shared by both flavours.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn of(resp: &GatewayResponse) -> Self {
        Self { status: resp.status().as_u16(), headers: crate::convert::header_pairs(resp.headers()) }
    }

    fn dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (k, v) in &self.headers {
            match dict.get_item(k)? {
                // Repeated headers are joined as HTTP allows (RFC 9110, 5.3).
                Some(prev) => dict.set_item(k, format!("{}, {v}", prev.extract::<String>()?))?,
                None => dict.set_item(k, v)?,
            }
        }
        Ok(dict)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }
}

fn json_loads<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (PyBytes::new(py, bytes),))
}

/// A response of `await Gateway.request(...)`.
#[pyclass(module = "llm_gateway._native", frozen)]
pub struct Response {
    head: Head,
    body: Arc<Body>,
}

impl Response {
    /// Runs on the runtime as the request's future completes, so the read-ahead costs no extra
    /// wake-up.
    pub fn new(resp: GatewayResponse) -> Self {
        let head = Head::of(&resp);
        Self { head, body: Body::read_ahead(resp.into_body()) }
    }
}

#[pymethods]
impl Response {
    /// HTTP status code.
    #[getter]
    fn status(&self) -> u16 {
        self.head.status
    }

    /// Headers as a dict of lower-case names; repeated headers joined with ", ".
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.head.dict(py)
    }

    /// Headers as (name, value) pairs, repeated ones kept apart.
    #[getter]
    fn header_list(&self) -> Vec<(String, String)> {
        self.head.headers.clone()
    }

    /// One header (case-insensitive), or `default`.
    #[pyo3(signature = (name, default=None))]
    fn header(&self, name: &str, default: Option<String>) -> Option<String> {
        self.head.header(name).or(default)
    }

    /// The whole body as bytes (awaitable).
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(now) = self.body.read_now() {
            return done_future(py, now.map(|b| PyBytes::new(py, &b).into_any()).map_err(BodyError::into_py));
        }
        let body = Arc::clone(&self.body);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            body.read().await.map_err(BodyError::into_py)
        })
    }

    /// The body parsed as JSON (awaitable).
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(now) = self.body.read_now() {
            let parsed = now.map_err(BodyError::into_py).and_then(|b| json_loads(py, &b));
            return done_future(py, parsed);
        }
        let body = Arc::clone(&self.body);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let bytes = body.read().await.map_err(BodyError::into_py)?;
            Python::attach(|py| json_loads(py, &bytes).map(Bound::unbind))
        })
    }

    /// Stops reading; the rest of the body is dropped (awaitable).
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let body = Arc::clone(&self.body);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            body.close().await;
            Ok(())
        })
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(now) = self.body.next_now() {
            let result = match now {
                Ok(Some(chunk)) => Ok(PyBytes::new(py, &chunk).into_any()),
                Ok(None) => Err(PyStopAsyncIteration::new_err(())),
                Err(e) => Err(e.into_py()),
            };
            return done_future(py, result);
        }
        let body = Arc::clone(&self.body);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match body.next().await {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => Err(PyStopAsyncIteration::new_err(())),
                Err(e) => Err(e.into_py()),
            }
        })
    }

    fn __aenter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(slf) })
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.aclose(py)
    }

    fn __repr__(&self) -> String {
        format!("<Response [{}]>", self.head.status)
    }
}

/// A response of `Gateway.request_sync(...)`: the same, blocking (the GIL is released while it
/// waits).
#[pyclass(module = "llm_gateway._native", frozen)]
pub struct SyncResponse {
    head: Head,
    body: Arc<Body>,
}

impl SyncResponse {
    pub fn new(resp: GatewayResponse) -> Self {
        let head = Head::of(&resp);
        Self { head, body: Body::new(resp.into_body()) }
    }
}

#[pymethods]
impl SyncResponse {
    /// HTTP status code.
    #[getter]
    fn status(&self) -> u16 {
        self.head.status
    }

    /// Headers as a dict of lower-case names; repeated headers joined with ", ".
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.head.dict(py)
    }

    /// Headers as (name, value) pairs, repeated ones kept apart.
    #[getter]
    fn header_list(&self) -> Vec<(String, String)> {
        self.head.headers.clone()
    }

    /// One header (case-insensitive), or `default`.
    #[pyo3(signature = (name, default=None))]
    fn header(&self, name: &str, default: Option<String>) -> Option<String> {
        self.head.header(name).or(default)
    }

    /// The whole body as bytes.
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let body = Arc::clone(&self.body);
        let bytes = py.detach(move || runtime().block_on(body.read()));
        match bytes {
            Ok(b) => Ok(PyBytes::new(py, &b)),
            Err(e) => Err(e.into_py()),
        }
    }

    /// The body parsed as JSON.
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let bytes = self.read(py)?;
        json_loads(py, bytes.as_bytes())
    }

    /// Stops reading; the rest of the body is dropped.
    fn close(&self, py: Python<'_>) {
        let body = Arc::clone(&self.body);
        py.detach(move || runtime().block_on(body.close()));
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let body = Arc::clone(&self.body);
        match py.detach(move || runtime().block_on(body.next())) {
            Ok(Some(chunk)) => Ok(PyBytes::new(py, &chunk)),
            Ok(None) => Err(PyStopIteration::new_err(())),
            Err(e) => Err(e.into_py()),
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
        format!("<SyncResponse [{}]>", self.head.status)
    }
}
