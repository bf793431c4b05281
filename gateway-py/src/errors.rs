//! The Python exception classes live in `llm_gateway/errors.py` (so they are ordinary, typed
//! Python classes with `status` and `code`); this module raises them.

use pyo3::prelude::*;

/// Which class of `llm_gateway.errors`.
#[derive(Debug, Clone, Copy)]
pub enum Class {
    /// `GatewayError`, the base.
    Gateway,
    /// `ConfigError`: the configuration was rejected.
    Config,
    /// `TranslateError`: a body could not be translated.
    Translate,
    /// `StreamError`: a response body broke off or was already consumed.
    Stream,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Self::Gateway => "GatewayError",
            Self::Config => "ConfigError",
            Self::Translate => "TranslateError",
            Self::Stream => "StreamError",
        }
    }
}

/// An exception of `class` with a message, an HTTP-like status and a machine code.
pub fn new(py: Python<'_>, class: Class, message: impl Into<String>, status: u16, code: &str) -> PyErr {
    let message = message.into();
    let made = py
        .import("llm_gateway.errors")
        .and_then(|m| m.getattr(class.name()))
        .and_then(|cls| cls.call1((message, status, code)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        // Only when the package is broken (errors.py missing): that error is the useful one.
        Err(e) => e,
    }
}

/// Like [`new`], for code running without the interpreter attached (inside a future).
pub fn detached(class: Class, message: impl Into<String>, status: u16, code: &str) -> PyErr {
    let message = message.into();
    Python::attach(|py| new(py, class, message, status, code))
}
