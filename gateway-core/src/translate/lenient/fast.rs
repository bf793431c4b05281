//! A JSON reader for the simple documents that make up nearly all of the traffic: a fast path in
//! front of `serde_json`, never a replacement for it.
//!
//! It reads objects, arrays, strings, integers that fit an `i64`/`u64` without doubt, `true`,
//! `false` and `null`, and hands out exactly what `serde_json` would. It gives up ([`Bail`]) on
//! anything else: numbers with a fraction or an exponent (whose `f64` must be `serde_json`'s
//! own), `-0`, very long integers, unpaired surrogate escapes, escapes in object keys, deep
//! nesting, and every syntax error. The caller then parses with `serde_json`, which gives the
//! real answer. So a document is accepted or rejected, and read, exactly as by `serde_json`.
//!
//! Unlike a `serde::Deserializer` it is pulled by the reading code ([`super::Shape::read`]):
//! no visitor layers, values built where they are stored.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// This reader does not handle the document; `serde_json` must.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Bail;

/// Nesting this reader handles; `serde_json` allows 128.
const MAX_DEPTH: u32 = 64;

/// Integers of at most this many digits fit both readers' integer paths without doubt.
const MAX_DIGITS: usize = 18;

/// An integer as `serde_json` reports it: non-negative ones as `u64`, negative ones as `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Int {
    Pos(u64),
    Neg(i64),
}

/// A position in a document being read.
pub(crate) struct Reader<'de> {
    input: &'de str,
    bytes: &'de [u8],
    pos: usize,
    depth: u32,
}

impl<'de> Reader<'de> {
    pub(crate) fn new(input: &'de str) -> Self {
        Self { input, bytes: input.as_bytes(), pos: 0, depth: 0 }
    }

    /// After the document: only whitespace may follow.
    pub(crate) fn end(&mut self) -> Result<(), Bail> {
        self.skip_ws();
        if self.pos == self.bytes.len() { Ok(()) } else { Err(Bail) }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The first byte of the next value, after whitespace.
    pub(crate) fn peek(&mut self) -> Result<u8, Bail> {
        self.skip_ws();
        self.bytes.get(self.pos).copied().ok_or(Bail)
    }

    /// Reads `null` if it is next.
    pub(crate) fn null(&mut self) -> Result<bool, Bail> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Bail> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// `true` or `false`, which must be next.
    pub(crate) fn bool(&mut self) -> Result<bool, Bail> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => Err(Bail),
        }
    }

    /// A string, which must be next: borrowed when it has no escapes.
    pub(crate) fn str(&mut self) -> Result<Cow<'de, str>, Bail> {
        if self.peek()? != b'"' {
            return Err(Bail);
        }
        let start = self.pos + 1;
        let b = self.bytes;
        let i = plain_run_end(b, start);
        if b.get(i) == Some(&b'"') {
            self.pos = i + 1;
            return self.input.get(start..i).map(Cow::Borrowed).ok_or(Bail);
        }
        self.escaped(start, i).map(Cow::Owned)
    }

    /// The rest of a string with escapes, from its `start`; `i` is at the first escape.
    #[cold]
    #[inline(never)]
    fn escaped(&mut self, start: usize, mut i: usize) -> Result<String, Bail> {
        let b = self.bytes;
        let mut out = String::with_capacity(i - start + 16);
        let mut run = start;
        loop {
            match b.get(i) {
                Some(b'"') => {
                    out.push_str(self.input.get(run..i).ok_or(Bail)?);
                    self.pos = i + 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push_str(self.input.get(run..i).ok_or(Bail)?);
                    let escaped = *b.get(i + 1).ok_or(Bail)?;
                    i += 2;
                    match escaped {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let unit = hex4(b, i)?;
                            i += 4;
                            let c = match unit {
                                0xD800..=0xDBFF => {
                                    // Only a complete pair is handled here.
                                    if b.get(i..i + 2) != Some(b"\\u") {
                                        return Err(Bail);
                                    }
                                    let low = hex4(b, i + 2)?;
                                    if !(0xDC00..=0xDFFF).contains(&low) {
                                        return Err(Bail);
                                    }
                                    i += 6;
                                    0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                                }
                                0xDC00..=0xDFFF => return Err(Bail),
                                _ => unit,
                            };
                            out.push(char::from_u32(c).ok_or(Bail)?);
                        }
                        _ => return Err(Bail),
                    }
                    run = i;
                }
                Some(c) if *c < 0x20 => return Err(Bail),
                Some(_) => i += 1,
                None => return Err(Bail),
            }
        }
    }

    /// An integer, which must be next.
    pub(crate) fn int(&mut self) -> Result<Int, Bail> {
        self.skip_ws();
        let b = self.bytes;
        let negative = b.get(self.pos) == Some(&b'-');
        let start = if negative { self.pos + 1 } else { self.pos };
        let mut i = start;
        let mut value: u64 = 0;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            value = value * 10 + u64::from(c - b'0');
            i += 1;
            if i - start > MAX_DIGITS {
                return Err(Bail);
            }
        }
        let digits = i - start;
        // No digits, a leading zero, a fraction or an exponent: not this reader's.
        if digits == 0
            || (digits > 1 && b.get(start) == Some(&b'0'))
            || matches!(b.get(i), Some(b'.' | b'e' | b'E'))
        {
            return Err(Bail);
        }
        self.pos = i;
        if !negative {
            return Ok(Int::Pos(value));
        }
        if value == 0 {
            return Err(Bail);
        }
        i64::try_from(value).map(|n| Int::Neg(-n)).map_err(|_| Bail)
    }

    /// Reads an object, which must be next, calling `entry` with each key; `entry` reads the
    /// value. Keys with escapes are left to `serde_json`.
    pub(crate) fn object(
        &mut self,
        mut entry: impl FnMut(&mut Self, &'de str) -> Result<(), Bail>,
    ) -> Result<(), Bail> {
        if self.peek()? != b'{' {
            return Err(Bail);
        }
        self.pos += 1;
        self.enter()?;
        if self.peek()? == b'}' {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            let key = match self.str()? {
                Cow::Borrowed(key) => key,
                Cow::Owned(_) => return Err(Bail),
            };
            if self.peek()? != b':' {
                return Err(Bail);
            }
            self.pos += 1;
            entry(self, key)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(Bail),
            }
        }
    }

    /// Reads an array, which must be next, calling `element` to read each element.
    pub(crate) fn array(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Result<(), Bail>,
    ) -> Result<(), Bail> {
        if self.peek()? != b'[' {
            return Err(Bail);
        }
        self.pos += 1;
        self.enter()?;
        if self.peek()? == b']' {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            element(self)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(Bail),
            }
        }
    }

    fn enter(&mut self) -> Result<(), Bail> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(Bail) } else { Ok(()) }
    }

    /// Reads and drops the next value, checking it as a `serde_json` parse would.
    pub(crate) fn skip(&mut self) -> Result<(), Bail> {
        match self.peek()? {
            b'"' => self.str().map(drop),
            b'{' => self.object(|r, _| r.skip()),
            b'[' => self.array(Self::skip),
            b't' | b'f' => self.bool().map(drop),
            b'n' => self.literal(b"null"),
            _ => self.int().map(drop),
        }
    }

    /// Reads an object, which must be next, as a derived `Deserialize` reads a struct from one:
    /// `slot_of` names the field (at most 64) a key fills, `field` reads that field's value,
    /// other keys are ignored ([`Self::ignore`]). A field filled twice, which serde reports as
    /// an error, is left to serde.
    pub(crate) fn fields<S: Copy + Into<u32>>(
        &mut self,
        slot_of: impl Fn(&str) -> Option<S>,
        mut field: impl FnMut(&mut Self, S) -> Result<(), Bail>,
    ) -> Result<(), Bail> {
        if self.peek()? != b'{' {
            return Err(Bail);
        }
        let mut filled = 0u64;
        self.object(|r, key| {
            let Some(slot) = slot_of(key) else {
                return r.ignore();
            };
            let bit = 1u64.checked_shl(slot.into()).ok_or(Bail)?;
            if filled & bit != 0 {
                return Err(Bail);
            }
            filled |= bit;
            field(r, slot)
        })
    }

    /// An `Option<String>` (borrowed when it has no escapes) as serde reads one: `null` or a
    /// string.
    pub(crate) fn optional_str(&mut self) -> Result<Option<Cow<'de, str>>, Bail> {
        if self.null()? { Ok(None) } else { self.str().map(Some) }
    }

    /// An `Option<&RawValue>` as serde reads one: `null` is none, anything else its text.
    pub(crate) fn optional_raw(&mut self) -> Result<Option<&'de str>, Bail> {
        if self.null()? { Ok(None) } else { self.raw().map(Some) }
    }

    /// An `Option<u64>` as serde reads one: `null` or a non-negative integer.
    pub(crate) fn optional_u64(&mut self) -> Result<Option<u64>, Bail> {
        if self.null()? {
            return Ok(None);
        }
        match self.int()? {
            Int::Pos(n) => Ok(Some(n)),
            Int::Neg(_) => Err(Bail),
        }
    }

    /// Reads and drops the next value as `serde_json` ignores one (`IgnoredAny`, or the value
    /// behind a `RawValue`): numbers are checked against the grammar only and `\u` escapes only
    /// for their four hex digits, so this accepts more than [`Self::skip`] does.
    pub(crate) fn ignore(&mut self) -> Result<(), Bail> {
        match self.peek()? {
            b'"' => self.ignore_str(),
            b'{' => self.object(|r, _| r.ignore()),
            b'[' => self.array(Self::ignore),
            b't' | b'f' => self.bool().map(drop),
            b'n' => self.literal(b"null"),
            _ => self.ignore_number(),
        }
    }

    /// The text of the next value, read as by [`Self::ignore`]: what a `&RawValue` would hold.
    pub(crate) fn raw(&mut self) -> Result<&'de str, Bail> {
        let start = self.mark();
        self.ignore()?;
        self.since(start)
    }

    /// Where the next value starts, to take its text with [`Self::since`] once it is read.
    pub(crate) fn mark(&mut self) -> usize {
        self.skip_ws();
        self.pos
    }

    /// The text read since `mark`.
    pub(crate) fn since(&self, mark: usize) -> Result<&'de str, Bail> {
        self.input.get(mark..self.pos).ok_or(Bail)
    }

    /// A string, which must be next, checked and dropped without unescaping it.
    fn ignore_str(&mut self) -> Result<(), Bail> {
        let b = self.bytes;
        let mut i = self.pos + 1;
        loop {
            i = plain_run_end(b, i);
            match b.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(());
                }
                Some(b'\\') => match b.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => {
                        hex4(b, i + 2)?;
                        i += 6;
                    }
                    _ => return Err(Bail),
                },
                // A control character, or the end of the input.
                _ => return Err(Bail),
            }
        }
    }

    /// A number, which must be next, checked against JSON's grammar only.
    fn ignore_number(&mut self) -> Result<(), Bail> {
        let b = self.bytes;
        let digits_from = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut i = self.pos;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        i = match b.get(i) {
            Some(b'0') => i + 1,
            Some(b'1'..=b'9') => digits_from(i + 1),
            _ => return Err(Bail),
        };
        if b.get(i) == Some(&b'.') {
            let end = digits_from(i + 1);
            if end == i + 1 {
                return Err(Bail);
            }
            i = end;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let end = digits_from(i);
            if end == i {
                return Err(Bail);
            }
            i = end;
        }
        // serde_json stops at a digit after a leading zero and reports it; so do we.
        if b.get(i).is_some_and(u8::is_ascii_digit) {
            return Err(Bail);
        }
        self.pos = i;
        Ok(())
    }

    /// Reads the next value whole, as `serde_json::Value` would hold it.
    pub(crate) fn value(&mut self) -> Result<Value, Bail> {
        Ok(match self.peek()? {
            b'"' => Value::String(self.str()?.into_owned()),
            b'{' => {
                let mut map = Map::new();
                self.object(|r, key| {
                    let v = r.value()?;
                    map.insert(key.to_owned(), v);
                    Ok(())
                })?;
                Value::Object(map)
            }
            b'[' => {
                let mut items = Vec::new();
                self.array(|r| {
                    items.push(r.value()?);
                    Ok(())
                })?;
                Value::Array(items)
            }
            b't' | b'f' => Value::Bool(self.bool()?),
            b'n' => {
                self.literal(b"null")?;
                Value::Null
            }
            _ => match self.int()? {
                Int::Pos(n) => Value::from(n),
                Int::Neg(n) => Value::from(n),
            },
        })
    }
}

/// The index of the first quote, backslash or control character of `b` from `i` (or its
/// length). Keys and short values end within a few words, tested eight bytes at a time; longer
/// strings (message texts, often kilobytes) are searched with `memchr`'s vector code, whose
/// setup only pays off past a few words, then checked for control characters in one
/// branch-free pass.
fn plain_run_end(b: &[u8], mut i: usize) -> usize {
    const WORDS_BEFORE_MEMCHR: usize = 4;
    for _ in 0..WORDS_BEFORE_MEMCHR {
        let Some(word) = b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) else {
            let tail = b.get(i..).unwrap_or_default();
            return i + tail.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).unwrap_or(tail.len());
        };
        let found = special(u64::from_le_bytes(word));
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    let rest = b.get(i..).unwrap_or_default();
    let run = &rest[..memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len())];
    // No early exit, so the compiler can vectorize it; a control character is an error anyway.
    if run.iter().fold(false, |seen, &c| seen | (c < 0x20)) {
        return i + run.iter().position(|&c| c < 0x20).unwrap_or(run.len());
    }
    i + run.len()
}

/// Whether a JSON string of these bytes needs escapes (a quote, a backslash or a control
/// character).
pub(crate) fn needs_escape(bytes: &[u8]) -> bool {
    plain_run_end(bytes, 0) < bytes.len()
}

/// The quotes, backslashes and control characters of eight bytes (little-endian): the high bit
/// of each such byte is set. Bytes above the first one found may be flagged wrongly (a borrow
/// carries upwards), never bytes below it, so the lowest flag is exact.
fn special(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    quote | backslash | control
}

fn hex4(b: &[u8], at: usize) -> Result<u32, Bail> {
    let digits = b.get(at..at + 4).ok_or(Bail)?;
    let mut n = 0;
    for d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(Bail),
        };
        n = n * 16 + u32::from(v);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(doc: &str) -> Result<Value, Bail> {
        let mut r = Reader::new(doc);
        let v = r.value()?;
        r.end()?;
        Ok(v)
    }

    #[test]
    fn ignore_accepts_what_serde_ignores_and_raw_is_the_value_as_written() {
        for doc in [
            r#" {"a":[1,-0,2.5e-3,1E+400,123456789012345678901234],"b":"\ud800 lone, \"q\" \\ \/ \b\f\n\r\t","c":{},"d":[],"e":true,"f":null} "#,
            "0",
            "-1.0e5",
            r#""plain""#,
        ] {
            let mut r = Reader::new(doc);
            let raw = r.raw().expect("fast reader ignores it");
            r.end().expect("nothing follows");
            assert_eq!(raw, doc.trim());
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(doc).is_ok(), "{doc}");
        }
        for doc in [
            "01",
            "1.",
            "-",
            "1e",
            "+1",
            "\"\\x\"",
            "\"\\u12\"",
            "\"tab\there\"",
            "\"open",
            "[1,]",
            "{\"k\":}",
        ] {
            let mut r = Reader::new(doc);
            assert!(r.ignore().and_then(|()| r.end()).is_err(), "{doc}");
        }
    }

    /// Whatever the fast reader accepts, `serde_json` accepts and reads the same way.
    fn agrees(doc: &str) -> bool {
        match read(doc) {
            Ok(fast) => {
                let slow = serde_json::from_str::<Value>(doc);
                assert!(matches!(&slow, Ok(v) if *v == fast), "{doc:?}: fast {fast:?}, serde_json {slow:?}");
                true
            }
            Err(Bail) => false,
        }
    }

    #[test]
    fn plain_documents_are_read_here() {
        for doc in [
            r#"{"id":"resp_1","object":"chat.completion.chunk","created":1764145000,"model":"m","choices":[{"index":0,"delta":{"content":"word1 "},"finish_reason":null}]}"#,
            r#" { "a" : [ 1 , -2 , true , false , null , "x\"y\\z\/\b\f\n\r\t\u00e9\ud83d\ude00" , { } , [ ] ] } "#,
            r#"{"a":1,"a":2}"#,
            r#""é""#,
            "0",
            "-123456789012345678",
            "[[[[]]]]",
        ] {
            assert!(agrees(doc), "{doc}");
        }
    }

    #[test]
    fn anything_unusual_is_left_to_serde_json() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        for doc in [
            "",
            " ",
            "1.5",
            "1e3",
            "-0",
            "01",
            "-",
            "1234567890123456789",
            "[1,]",
            "{\"a\":1,}",
            "{,}",
            "[,1]",
            "{\"a\" 1}",
            "{\"a\":}",
            "{1:2}",
            "{\"\\u0061\":1}",
            "tru",
            "nul",
            "[1 2]",
            "{\"a\":1 \"b\":2}",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\x\"",
            "\"a\u{1}\"",
            "\"unterminated",
            "[1] x",
            "\u{feff}1",
            deep.as_str(),
        ] {
            assert!(!agrees(doc), "{doc:?} should be left to serde_json");
        }
    }

    #[test]
    fn a_run_ends_at_its_first_special_byte_at_any_length() {
        // Across the word-at-a-time part, the memchr part and the tail shorter than a word.
        for start in [0, 3] {
            for len in 0..80 {
                for special_byte in [b'"', b'\\', 0x00, 0x1f] {
                    let mut doc = vec![b'x'; start + len];
                    doc.push(special_byte);
                    doc.extend_from_slice(b"\"\\\x01 more");
                    assert_eq!(plain_run_end(&doc, start), start + len, "{start} {len} {special_byte}");
                }
                let plain = vec![b'y'; start + len];
                assert_eq!(plain_run_end(&plain, start), start + len);
            }
        }
        assert_eq!(plain_run_end(b"ab", 5), 5);
    }

    #[test]
    fn the_first_special_byte_of_a_word_is_found_exactly() {
        for len in 0..8 {
            for special_byte in [b'"', b'\\', 0x00, 0x1f] {
                for filler in [b'a', 0x7f, 0x80, 0xff, b' '] {
                    let mut word = [filler; 8];
                    word[len] = special_byte;
                    // Whatever follows it.
                    for (later, byte) in word.iter_mut().enumerate().skip(len + 1) {
                        *byte = if later % 2 == 0 { 0 } else { b'"' };
                    }
                    let found = special(u64::from_le_bytes(word));
                    assert_eq!((found.trailing_zeros() / 8) as usize, len, "{word:?}");
                }
            }
        }
        assert_eq!(special(u64::from_le_bytes(*b"abcdefgh")), 0);
        assert_eq!(special(u64::from_le_bytes([0x80, 0xff, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f])), 0);
    }

    #[test]
    fn random_documents_agree_with_serde_json() {
        const PIECES: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "\"k\"",
            "\"v\\n\"",
            "\"\\u00\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud83d\"",
            "0",
            "7",
            "-3",
            "01",
            "1.0",
            "true",
            "false",
            "null",
            "\"a\":",
            "\"\t\"",
            "-",
            "e",
            "\"\\/\"",
            "\"é\"",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut handled = 0;
        for _ in 0..50_000 {
            let len = 1 + next() % 12;
            let doc: String = (0..len).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
            if agrees(&doc) {
                handled += 1;
            }
        }
        assert!(handled > 500, "the generator should make some valid documents ({handled})");
    }
}
