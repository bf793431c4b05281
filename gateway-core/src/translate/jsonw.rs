//! JSON written by hand for what every request repeats (stream events, the logged decision
//! chain): byte for byte what `serde_json` writes for the same values (the writers using this
//! test themselves against it).

use bytes::BufMut;
use serde::{Serialize, Serializer};

use super::lenient::fast::needs_escape;

/// A JSON string, escaped as `serde_json` escapes it.
pub(crate) fn put_str(out: &mut impl BufMut, s: &str) {
    if needs_escape(s.as_bytes()) {
        // Writing a string into memory cannot fail.
        let _ = serde_json::to_writer(out.writer(), s);
        return;
    }
    out.put_u8(b'"');
    out.put_slice(s.as_bytes());
    out.put_u8(b'"');
}

/// A string field of a serialized body that may be long (message text): `serde_json` escapes
/// strings a byte at a time, so one without anything to escape, which is nearly all text, is
/// checked eight bytes at a time and written whole. The bytes are the same either way.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Text<'a>(pub(crate) &'a str);

/// Below this length the byte loop is as cheap as the detour.
const LONG_TEXT: usize = 128;

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = self.0;
        if s.len() >= LONG_TEXT && !needs_escape(s.as_bytes()) {
            let mut quoted = String::with_capacity(s.len() + 2);
            quoted.push('"');
            quoted.push_str(s);
            quoted.push('"');
            // A raw value is written verbatim by `serde_json`; checking it is a fast scan of a
            // string with nothing to unescape.
            if let Ok(raw) = serde_json::value::RawValue::from_string(quoted) {
                return raw.serialize(serializer);
            }
        }
        serializer.serialize_str(s)
    }
}

/// An integer.
pub(crate) fn put_int(out: &mut impl BufMut, n: impl itoa::Integer) {
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    #[test]
    fn strings_and_numbers_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "ctl \u{0} \u{1f} \n \t \u{7f}",
            "é 🦀 \u{2028}",
            "12345678\"",
        ] {
            let mut out = BytesMut::new();
            put_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).expect("string").as_bytes(), "{s:?}");
        }
        let long = "plain words, é 🦀 \u{7f} ".repeat(20);
        let escaped = format!("{long}\"{long}\n");
        for s in ["", "short", long.as_str(), escaped.as_str()] {
            let fast = serde_json::to_string(&Text(s)).expect("text");
            assert_eq!(fast, serde_json::to_string(s).expect("string"));
            let in_value = serde_json::to_value(Text(s)).expect("value");
            assert_eq!(in_value, serde_json::Value::from(s));
        }
        for n in [0, 7, 10, 99, 100, 812, u64::from(u32::MAX), u64::MAX] {
            let mut out = BytesMut::new();
            put_int(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        let mut out = Vec::new();
        put_int(&mut out, i64::MIN);
        assert_eq!(out, i64::MIN.to_string().as_bytes());
    }
}
