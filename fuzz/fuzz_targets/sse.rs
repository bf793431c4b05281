//! `SseDecoder`: arbitrary chunks, then `finish`. Properties: no panic; the events do not depend
//! on where the stream was cut (whole, at the fuzzer's split points, or one byte at a time); an
//! event name never holds a line break and data never holds a carriage return.
//!
//! Selector bit 0: a tiny frame limit (only "no panic" is checked then, since the limit trips at
//! chunk boundaries). Bit 1: also feed the body one byte at a time.
#![no_main]

use gateway_core::sse::SseDecoder;
use gateway_fuzz::Input;
use libfuzzer_sys::fuzz_target;

type Events = Vec<(Option<String>, String)>;

fn collect(chunks: &[&[u8]]) -> Events {
    let mut decoder = SseDecoder::default();
    let mut out = Vec::new();
    let mut keep = |e: gateway_core::sse::SseEvent<'_>| {
        let name = e.event.map(str::to_owned);
        assert!(
            !name.as_deref().unwrap_or_default().contains(['\r', '\n']),
            "line break in event name {name:?}"
        );
        assert!(!e.data.contains('\r'), "carriage return in data {:?}", e.data);
        out.push((name, e.data.into_owned()));
    };
    for chunk in chunks {
        if decoder.push(chunk, &mut keep).is_err() {
            panic!("frame limit hit on a fuzz-sized input");
        }
    }
    decoder.finish(&mut keep);
    out
}

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    if input.bit(0) {
        let mut decoder = SseDecoder::new(usize::from(input.selector >> 2));
        for chunk in input.chunks() {
            let _ = decoder.push(chunk, |_| {});
        }
        decoder.finish(|_| {});
        return;
    }
    let whole = collect(&[input.body]);
    let split = collect(&input.chunks());
    assert_eq!(whole, split, "events differ when the stream is cut at {:?}", input.splits);
    if input.bit(1) {
        let bytes: Vec<&[u8]> = input.body.chunks(1).collect();
        assert_eq!(whole, collect(&bytes), "events differ when fed one byte at a time");
    }
});
