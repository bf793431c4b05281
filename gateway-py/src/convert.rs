//! Conversions between Python objects and the Rust values the gateway takes: JSON values, header
//! lists and request bodies.

use bytes::Bytes;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};
use serde_json::Value;

/// Nesting beyond this is refused rather than risking the native stack on a cyclic structure.
const MAX_DEPTH: usize = 256;

/// A Python object made of dicts (string keys), lists, tuples, strings, numbers, booleans and
/// `None`, as JSON.
pub fn to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    to_json_at(obj, 0)
}

fn to_json_at(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err("value is nested too deeply (or contains itself)"));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: Python's bool is an int subclass.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.cast::<PyInt>().is_ok() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(PyValueError::new_err("integer does not fit in 64 bits"));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        return serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| PyValueError::new_err(format!("{v} is not a JSON number")));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = serde_json::Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = k
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err("dict keys must be strings to become JSON"))?
                .to_cow()?
                .into_owned();
            map.insert(key, to_json_at(&v, depth + 1)?);
        }
        return Ok(Value::Object(map));
    }
    if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        let mut items = Vec::new();
        for item in obj.try_iter()? {
            items.push(to_json_at(&item?, depth + 1)?);
        }
        return Ok(Value::Array(items));
    }
    let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".to_owned());
    Err(PyTypeError::new_err(format!("a {type_name} cannot be converted to JSON")))
}

/// A JSON value as plain Python objects (dict, list, str, int, float, bool, None).
pub fn from_json<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(from_json(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, from_json(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// Text from a `str` or (latin-1, as HTTP and ASGI carry header bytes) a `bytes` object.
fn header_text(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_cow()?.into_owned());
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().iter().map(|&c| char::from(c)).collect());
    }
    Err(PyTypeError::new_err("header names and values must be str or bytes"))
}

/// Request headers from a mapping (anything with `.items()`) or an iterable of pairs; `None` is
/// no headers.
pub fn headers(obj: Option<&Bound<'_, PyAny>>) -> PyResult<http::HeaderMap> {
    let mut map = http::HeaderMap::new();
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(map);
    };
    let pairs = if obj.hasattr("items")? { obj.call_method0("items")?.try_iter()? } else { obj.try_iter()? };
    for pair in pairs {
        let pair = pair?;
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract().map_err(|_| {
            PyTypeError::new_err("headers must be a mapping or an iterable of (name, value) pairs")
        })?;
        let name = header_text(&name)?;
        let value = header_text(&value)?;
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("invalid header name {name:?}")))?;
        // Text that fits latin-1 goes out byte for byte (as bytes headers came in, and as ASGI
        // servers decode them); anything wider goes out as UTF-8. HeaderValue accepts both as
        // obs-text.
        let raw: Vec<u8> = match value.chars().map(|c| u8::try_from(u32::from(c))).collect() {
            Ok(latin1) => latin1,
            Err(_) => value.into_bytes(),
        };
        let value = http::HeaderValue::from_bytes(&raw)
            .map_err(|_| PyValueError::new_err(format!("invalid value for header {name}")))?;
        map.append(name, value);
    }
    Ok(map)
}

/// A request body: `None` (empty), `bytes`/`bytearray`/`memoryview`, `str` (UTF-8), or any
/// JSON-compatible object, sent as compact JSON. The flag says whether the body was JSON made
/// here (so the caller may add `content-type: application/json`).
pub fn body(obj: Option<&Bound<'_, PyAny>>) -> PyResult<(Bytes, bool)> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok((Bytes::new(), false));
    };
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok((Bytes::copy_from_slice(b.as_bytes()), false));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok((Bytes::from(b.to_vec()), false));
    }
    if obj.cast::<PyMemoryView>().is_ok() {
        let bytes = obj.call_method0("tobytes")?;
        let b = bytes.cast::<PyBytes>()?;
        return Ok((Bytes::copy_from_slice(b.as_bytes()), false));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok((Bytes::copy_from_slice(s.to_cow()?.as_bytes()), false));
    }
    let value = to_json(obj)?;
    let text = serde_json::to_vec(&value).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((Bytes::from(text), true))
}

/// Response headers as `(name, value)` pairs of text (values that are not UTF-8 read as
/// latin-1).
pub fn header_pairs(map: &http::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            let value = match v.to_str() {
                Ok(s) => s.to_owned(),
                Err(_) => v.as_bytes().iter().map(|&c| char::from(c)).collect(),
            };
            (k.as_str().to_owned(), value)
        })
        .collect()
}
