//! `translateRequest` / `translateResponse`: gateway-core's dialect translation on its own.

use gateway_core::dialect::Dialect;
use gateway_core::translate;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::js_error;

/// A translated body and what the target dialect could not carry.
#[napi(object)]
pub struct NativeTranslation {
    /// The body in the target dialect (JSON text).
    pub body: Buffer,
    /// Fields dropped or approximated.
    pub notes: Vec<String>,
}

fn dialect(name: &str) -> napi::Result<Dialect> {
    Dialect::parse(name).ok_or_else(|| {
        js_error(format!(
            "unknown dialect {name:?} (expected anthropic, openai-chat, openai-responses or gemini)"
        ))
    })
}

type Translate =
    fn(&[u8], Dialect, Dialect) -> Result<(Vec<u8>, translate::Notes), translate::TranslateError>;

fn run(f: Translate, body: &[u8], source: &str, target: &str) -> napi::Result<NativeTranslation> {
    let (from, to) = (dialect(source)?, dialect(target)?);
    let (out, notes) = f(body, from, to).map_err(|e| js_error(format!("cannot translate: {e}")))?;
    Ok(NativeTranslation { body: Buffer::from(out), notes: notes.0 })
}

/// Translates a request body from one dialect to another.
#[napi]
pub fn translate_request_native(
    body: Buffer,
    source: String,
    target: String,
) -> napi::Result<NativeTranslation> {
    run(translate::translate_request, &body, &source, &target)
}

/// Translates a complete (non-stream) response body from one dialect to another.
#[napi]
pub fn translate_response_native(
    body: Buffer,
    source: String,
    target: String,
) -> napi::Result<NativeTranslation> {
    run(translate::translate_response, &body, &source, &target)
}
