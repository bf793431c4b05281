//! Each dialect's `StreamDecoder` (selector bits 0-1), fed the body whole and cut at the fuzzer's
//! split points. Properties: no panic, and the same events up to the end or the first failed
//! push (and the same failure) however the body was cut. Selector bit 2: also feed it one byte
//! at a time.
#![no_main]

use gateway_fuzz::{Input, decode_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let dialect = input.dialect();
    let whole = decode_stream(dialect, &[input.body]);
    let split = decode_stream(dialect, &input.chunks());
    assert_eq!(whole, split, "{dialect}: events differ when the stream is cut at {:?}", input.splits);
    if input.bit(2) {
        let bytes: Vec<&[u8]> = input.body.chunks(1).collect();
        assert_eq!(whole, decode_stream(dialect, &bytes), "{dialect}: events differ fed one byte at a time");
    }
});
