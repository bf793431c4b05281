//! `Codec::decode_request` of every dialect (selector bits 0-1), and for what decodes, the
//! encoding into every dialect (`encode_request`, `request_path`, after the signature pass that
//! `translate_request` does). Properties: no panic, and what encodes decodes again with the
//! target's own codec (the gateway never sends an upstream a body it could not read itself).
#![no_main]

use gateway_core::translate::{Notes, codec, signature};
use gateway_fuzz::{DIALECTS, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let from = input.dialect();
    let Some(src) = codec(from) else { return };
    let mut notes = Notes::default();
    let Ok(req) = src.decode_request(input.body, &mut notes) else { return };
    for to in DIALECTS {
        let Some(dst) = codec(to) else { continue };
        let mut req = req.clone();
        let mut notes = notes.clone();
        signature::restore_for(to, &mut req.messages, &mut notes);
        let _ = dst.request_path(&req);
        let Ok(body) = dst.encode_request(&req, &mut notes) else { continue };
        if let Err(e) = dst.decode_request(&body, &mut Notes::default()) {
            panic!(
                "{from} -> {to}: the encoded request does not decode: {e}\n{}",
                String::from_utf8_lossy(&body)
            );
        }
    }
});
