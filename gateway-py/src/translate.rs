//! `llm_gateway.translate_request` / `translate_response` / `StreamTranslator`: the gateway's
//! translation between API dialects (gateway_core::translate), for bodies the caller holds.

use bytes::Bytes;
use gateway_core::dialect::Dialect;
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert;
use crate::errors::{self, Class};

/// `anthropic`, `openai-chat`, `openai-responses` or `gemini` (underscores accepted too).
fn dialect(name: &str) -> PyResult<Dialect> {
    Dialect::parse(&name.to_ascii_lowercase().replace('_', "-")).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown dialect {name:?}; expected anthropic, openai-chat, openai-responses or gemini"
        ))
    })
}

/// A translated body with what the target could not carry.
#[pyclass(module = "llm_gateway._native", frozen)]
pub struct Translation {
    body: Bytes,
    notes: Vec<String>,
}

#[pymethods]
impl Translation {
    /// The translated body (JSON text).
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.body)
    }

    /// Fields the target dialect cannot carry, dropped or approximated.
    #[getter]
    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    /// The body parsed as JSON.
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value: serde_json::Value =
            serde_json::from_slice(&self.body).map_err(|e| PyValueError::new_err(e.to_string()))?;
        convert::from_json(py, &value)
    }

    fn __repr__(&self) -> String {
        format!("<Translation {} bytes, {} notes>", self.body.len(), self.notes.len())
    }
}

type TranslateFn =
    fn(
        &[u8],
        Dialect,
        Dialect,
    ) -> Result<(Vec<u8>, gateway_core::translate::Notes), gateway_core::translate::TranslateError>;

fn translate(
    py: Python<'_>,
    body: &Bound<'_, PyAny>,
    source: &str,
    target: &str,
    f: TranslateFn,
) -> PyResult<Translation> {
    let (from, to) = (dialect(source)?, dialect(target)?);
    let (bytes, _) = convert::body(Some(body))?;
    match py.detach(|| f(&bytes, from, to)) {
        Ok((out, notes)) => Ok(Translation { body: Bytes::from(out), notes: notes.0 }),
        Err(e) => Err(errors::new(py, Class::Translate, e.0, 400, "translate_error")),
    }
}

/// Translates a request body (dict, str or bytes) from dialect `source` to `target`.
#[pyfunction]
pub fn translate_request(
    py: Python<'_>,
    body: &Bound<'_, PyAny>,
    source: &str,
    target: &str,
) -> PyResult<Translation> {
    translate(py, body, source, target, gateway_core::translate::translate_request)
}

/// Translates a complete (non-streaming) response body from dialect `source` to `target`.
#[pyfunction]
pub fn translate_response(
    py: Python<'_>,
    body: &Bound<'_, PyAny>,
    source: &str,
    target: &str,
) -> PyResult<Translation> {
    translate(py, body, source, target, gateway_core::translate::translate_response)
}

/// Translates a response stream (SSE bytes, or Gemini's streamed JSON) chunk by chunk, keeping
/// the target's stream protocol intact.
#[pyclass(module = "llm_gateway._native", frozen)]
pub struct StreamTranslator {
    inner: Mutex<gateway_core::translate::StreamTranslator>,
}

#[pymethods]
impl StreamTranslator {
    #[new]
    fn new(py: Python<'_>, source: &str, target: &str) -> PyResult<Self> {
        let inner = gateway_core::translate::StreamTranslator::new(dialect(source)?, dialect(target)?)
            .map_err(|e| errors::new(py, Class::Translate, e.0, 400, "translate_error"))?;
        Ok(Self { inner: Mutex::new(inner) })
    }

    /// Feeds upstream bytes; returns the translated bytes they complete (maybe empty).
    fn push<'py>(&self, py: Python<'py>, chunk: &[u8]) -> Bound<'py, PyBytes> {
        let out = self.inner.lock().push(chunk);
        PyBytes::new(py, &out)
    }

    /// Ends the stream (`error`: why it ended early, if it did); returns the closing bytes.
    #[pyo3(signature = (error=None))]
    fn finish<'py>(&self, py: Python<'py>, error: Option<&str>) -> Bound<'py, PyBytes> {
        let out = self.inner.lock().finish(error);
        PyBytes::new(py, &out)
    }
}
