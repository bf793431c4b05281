//! `Codec::decode_response` and `Codec::decode_error` of every dialect (selector bits 0-1), and
//! for what decodes, the encoding into every dialect (`encode_response` after the signature
//! tagging that `translate_response` does, `encode_error`). The error status comes from selector
//! bits 2-5. Properties: no panic, a response that encodes decodes again with the target's
//! own codec, and the usage read from an Anthropic body is the one the `serde_json`-only reading
//! finds.
#![no_main]

use gateway_core::translate::{Notes, codec, signature};
use gateway_core::usage::extract::{usage_from_json, usage_from_json_with_serde};
use gateway_fuzz::{DIALECTS, Input};
use libfuzzer_sys::fuzz_target;

const STATUSES: [u16; 16] = [400, 401, 403, 404, 408, 413, 422, 429, 500, 502, 503, 504, 529, 200, 0, 599];

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let from = input.dialect();
    let Some(src) = codec(from) else { return };
    assert_eq!(usage_from_json(input.body), usage_from_json_with_serde(input.body));

    let status = STATUSES[usize::from((input.selector >> 2) & 15)];
    let error = src.decode_error(status, input.body);
    for to in DIALECTS {
        if let Some(dst) = codec(to) {
            let _ = dst.encode_error(&error);
        }
    }

    let Ok(resp) = src.decode_response(input.body) else { return };
    for to in DIALECTS {
        let Some(dst) = codec(to) else { continue };
        let mut resp = resp.clone();
        signature::tag_blocks(from, &mut resp.content);
        let Ok(body) = dst.encode_response(&resp, &mut Notes::default()) else { continue };
        if let Err(e) = dst.decode_response(&body) {
            panic!(
                "{from} -> {to}: the encoded response does not decode: {e}\n{}",
                String::from_utf8_lossy(&body)
            );
        }
    }
});
