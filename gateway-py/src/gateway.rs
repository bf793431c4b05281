//! `llm_gateway.Gateway`: a `gateway_core::Gateway` built from a config, called in-process.

use std::sync::Arc;

use bytes::Bytes;
use gateway_core::config::ConfigFile;
use gateway_core::store::{RedisStateOptions, RedisStateStore};
use gateway_core::{GatewayResponse, GatewaySettings};
use http_body_util::Full;
use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::errors::{self, Class};
use crate::response::{Response, SyncResponse};
use crate::usage::{self, Callbacks};
use crate::{convert, runtime};

/// Drops `null` members: TOML has no null, and for the config an absent key is what a null
/// means.
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        _ => {}
    }
}

fn config_error(py: Python<'_>, message: impl Into<String>) -> PyErr {
    errors::new(py, Class::Config, message, 500, "invalid_config")
}

/// A config given as a dict goes through the TOML import itself (written as TOML, then parsed),
/// so its keys, defaults, `${VAR}` expansion and validation are exactly the server's.
pub fn config_from_json(py: Python<'_>, mut value: serde_json::Value) -> PyResult<ConfigFile> {
    if !value.is_object() {
        return Err(config_error(py, "the config must be a dict (a TOML table)"));
    }
    drop_nulls(&mut value);
    let text = toml::to_string(&value)
        .map_err(|e| config_error(py, format!("the config cannot be written as TOML: {e}")))?;
    ConfigFile::from_toml_str(&text).map_err(|e| config_error(py, e.to_string()))
}

/// A TOML path (`str` or `os.PathLike`), TOML text (a `str` with a newline, `=` or `[`, which no
/// sensible path has), or a dict with the TOML's keys.
fn load_config(config: &Bound<'_, PyAny>) -> PyResult<ConfigFile> {
    let py = config.py();
    if let Ok(dict) = config.cast::<PyDict>() {
        return config_from_json(py, convert::to_json(dict.as_any())?);
    }
    if let Ok(text) = config.cast::<PyString>() {
        let text = text.to_cow()?;
        if text.contains(['\n', '=', '[']) {
            return ConfigFile::from_toml_str(&text).map_err(|e| config_error(py, e.to_string()));
        }
        return ConfigFile::from_path(text.as_ref()).map_err(|e| config_error(py, e.to_string()));
    }
    if config.hasattr("__fspath__")? {
        let path: std::path::PathBuf = config.extract()?;
        return ConfigFile::from_path(&path).map_err(|e| config_error(py, e.to_string()));
    }
    Err(PyTypeError::new_err("config must be a TOML path, TOML text or a dict"))
}

/// The gateway, in-process.
#[pyclass(module = "llm_gateway._native", frozen)]
pub struct Gateway {
    pub(crate) inner: gateway_core::Gateway,
    callbacks: Callbacks,
}

/// An `http::Request` from the Python arguments.
fn build_request(
    method: &str,
    path: &str,
    headers: Option<&Bound<'_, PyAny>>,
    body: Option<&Bound<'_, PyAny>>,
) -> PyResult<http::Request<Full<Bytes>>> {
    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| PyValueError::new_err(format!("invalid HTTP method {method:?}")))?;
    if !path.starts_with('/') {
        return Err(PyValueError::new_err(format!("path must start with '/', got {path:?}")));
    }
    let uri: http::Uri =
        path.parse().map_err(|e| PyValueError::new_err(format!("invalid path {path:?}: {e}")))?;
    let mut header_map = convert::headers(headers)?;
    let (bytes, made_json) = convert::body(body)?;
    if made_json && !header_map.contains_key(http::header::CONTENT_TYPE) {
        header_map.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    }
    let mut req = http::Request::new(Full::new(bytes));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = header_map;
    Ok(req)
}

#[pymethods]
impl Gateway {
    #[new]
    #[pyo3(signature = (config, *, redis_url=None, redis_prefix=None, max_body_bytes=None, on_usage=None))]
    fn new(
        py: Python<'_>,
        config: &Bound<'_, PyAny>,
        redis_url: Option<String>,
        redis_prefix: Option<String>,
        max_body_bytes: Option<usize>,
        on_usage: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let file = load_config(config)?;
        let callbacks: Callbacks = Arc::new(Mutex::new(on_usage.into_iter().collect()));
        let sink = usage::start(Arc::clone(&callbacks))?;
        let mut settings = GatewaySettings::default();
        if let Some(limit) = max_body_bytes {
            settings.max_body_bytes = limit;
        }
        let mut builder =
            gateway_core::Gateway::builder().config(&file).usage_sink(Arc::new(sink)).settings(settings);
        if let Some(url) = redis_url {
            let mut options = RedisStateOptions::default();
            if let Some(prefix) = redis_prefix {
                options.prefix = prefix;
            }
            let store = py
                .detach(|| runtime().block_on(RedisStateStore::connect(&url, options)))
                .map_err(|e| errors::new(py, Class::Config, e.to_string(), 500, "invalid_redis_url"))?;
            builder = builder.state_store(Arc::new(store));
        }
        let inner = builder.build().map_err(|e| {
            let class = if e.code == "invalid_config" { Class::Config } else { Class::Gateway };
            errors::new(py, class, e.message.clone(), e.status().as_u16(), e.code)
        })?;
        Ok(Self { inner, callbacks })
    }

    /// Sends one request through the gateway; awaitable, resolves to a `Response` as soon as the
    /// status and headers are known (the body streams).
    #[pyo3(signature = (method, path, headers=None, body=None))]
    fn request<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        path: &str,
        headers: Option<&Bound<'py, PyAny>>,
        body: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let req = build_request(method, path, headers, body)?;
        let gateway = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(
            py,
            async move { Ok(Response::new(gateway.handle(req).await)) },
        )
    }

    /// The blocking twin of `request`: returns a `SyncResponse`; the GIL is released while the
    /// gateway works.
    #[pyo3(signature = (method, path, headers=None, body=None))]
    fn request_sync(
        &self,
        py: Python<'_>,
        method: &str,
        path: &str,
        headers: Option<&Bound<'_, PyAny>>,
        body: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<SyncResponse> {
        let req = build_request(method, path, headers, body)?;
        let resp: GatewayResponse = py.detach(|| runtime().block_on(self.inner.handle(req)));
        Ok(SyncResponse::new(resp))
    }

    /// Registers `callback(record: dict)` for every usage record; returns it (usable as a
    /// decorator). Called on a dedicated thread, never on the request path.
    fn on_usage(&self, callback: Py<PyAny>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if !callback.bind(py).is_callable() {
            return Err(PyTypeError::new_err("on_usage needs a callable"));
        }
        self.callbacks.lock().push(callback.clone_ref(py));
        Ok(callback)
    }

    /// Removes a callback registered with `on_usage`; returns whether it was registered.
    fn remove_usage_callback(&self, callback: &Bound<'_, PyAny>) -> bool {
        let mut callbacks = self.callbacks.lock();
        let before = callbacks.len();
        callbacks.retain(|cb| !cb.bind(callback.py()).is(callback));
        callbacks.len() != before
    }

    /// An ASGI application serving this gateway (see `llm_gateway.asgi.GatewayASGI`).
    fn asgi<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("llm_gateway.asgi")?.getattr("GatewayASGI")?.call1((slf,))
    }

    /// Serves the gateway over HTTP on a background thread; returns a `Server`.
    #[pyo3(signature = (host="127.0.0.1", port=0))]
    fn serve(&self, py: Python<'_>, host: &str, port: u16) -> PyResult<crate::server::Server> {
        crate::server::Server::start(py, self.inner.clone(), host, port)
    }

    fn __repr__(&self) -> String {
        let catalog = self.inner.catalog().load();
        format!("<Gateway providers={}>", catalog.providers().len())
    }
}
