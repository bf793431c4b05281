//! Typed, borrowing JSON reading with the leniency of walking a `serde_json::Value`: for stream
//! events, which are parsed by the thousand and of which only a few fields matter.
//!
//! Parsing into a `Value` allocates every string and map node of an event just to read a few of
//! them. The types here read only the declared fields, borrow strings from the input when they
//! have no escapes, and yet accept exactly what `serde_json::from_str::<Value>` accepts and see
//! what the `Value` accessors would:
//!
//! - a field is [`F::Absent`], [`F::Null`], [`F::Val`] (the JSON type the field expects) or
//!   [`F::Other`] (any other type), so `get(k)`, `.filter(|v| !v.is_null())` and
//!   `.and_then(Value::as_str)` all have an equivalent;
//! - a duplicate key replaces the earlier value, as in a `Value` map;
//! - undeclared fields and values of an unexpected type are still parsed in full (numbers in
//!   range, escapes valid, the nesting limit) — never skipped with `IgnoredAny`, which accepts
//!   more than a `Value` does — so a body is rejected exactly when a `Value` parse rejects it.
//!
//! Objects are declared with [`lenient_object!`]. Documents go through [`fast`], a reader for
//! plain JSON, and through `serde_json` only when that reader gives up on them.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

pub(crate) mod fast;

/// A field as a `Value` map would hold it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum F<T> {
    /// The key is not there.
    #[default]
    Absent,
    /// `null`.
    Null,
    /// A value of the expected type.
    Val(T),
    /// A value of another type.
    Other,
}

impl<T> F<T> {
    /// The value if it has the expected type (`get(k).and_then(Value::as_…)`).
    pub(crate) fn val(&self) -> Option<&T> {
        match self {
            Self::Val(v) => Some(v),
            _ => None,
        }
    }

    /// Present and not `null` (`get(k).filter(|v| !v.is_null()).is_some()`).
    pub(crate) fn present(&self) -> bool {
        matches!(self, Self::Val(_) | Self::Other)
    }

    /// The key exists, even with `null` (`contains_key(k)`).
    pub(crate) fn exists(&self) -> bool {
        !matches!(self, Self::Absent)
    }
}

impl<'de> F<Cow<'de, str>> {
    /// The string, if the value is one (`get(k).and_then(Value::as_str)`).
    pub(crate) fn str(&self) -> Option<&str> {
        self.val().map(|s| s.as_ref())
    }
}

impl F<u64> {
    /// The count, if the value is a non-negative integer (`get(k).and_then(Value::as_u64)`).
    pub(crate) fn u64(&self) -> Option<u64> {
        self.val().copied()
    }
}

/// A type a JSON value may turn into; every `from_*` method not overridden means "another
/// type". The `visit_*` calls are the ones `serde_json` makes for `deserialize_any`, as for a
/// `Value`. [`Shape::read`] is the same reading on the [`fast`] path, and must agree with them.
pub(crate) trait Shape<'de>: Sized {
    /// Reads a value that is not `null` from the fast reader: `F::Val`, or `F::Other` (after
    /// skipping it) when it has another type.
    fn read(r: &mut fast::Reader<'de>) -> Result<F<Self>, fast::Bail>;

    /// A string without escapes, borrowed from the input.
    fn from_borrowed_str(s: &'de str) -> Option<Self> {
        Self::from_str(s)
    }
    /// A string.
    fn from_str(_s: &str) -> Option<Self> {
        None
    }
    /// A non-negative integer.
    fn from_u64(_n: u64) -> Option<Self> {
        None
    }
    /// A negative integer.
    fn from_i64(_n: i64) -> Option<Self> {
        None
    }
    /// A number with a fraction or an exponent.
    fn from_f64(_n: f64) -> Option<Self> {
        None
    }
    /// `true` or `false`.
    fn from_bool(_b: bool) -> Option<Self> {
        None
    }
    /// An array.
    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        drain_seq(seq).map(|()| None)
    }
    /// An object.
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        drain_map(map).map(|()| None)
    }
}

/// Parses and discards the rest of an array, validating it as a `Value` parse would.
pub(crate) fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Any>()?.is_some() {}
    Ok(())
}

/// Parses and discards the rest of an object, validating it as a `Value` parse would.
pub(crate) fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_key::<Any>()?.is_some() {
        map.next_value::<Any>()?;
    }
    Ok(())
}

/// Reads a field's value on the fast path: `null`, or what `T` makes of it.
pub(crate) fn read_field<'de, T: Shape<'de>>(r: &mut fast::Reader<'de>) -> Result<F<T>, fast::Bail> {
    if r.null()? { Ok(F::Null) } else { T::read(r) }
}

/// Skips a value of another type than expected.
fn other<T>(r: &mut fast::Reader<'_>) -> Result<F<T>, fast::Bail> {
    r.skip().map(|()| F::Other)
}

struct FVisitor<T>(PhantomData<T>);

impl<T> FVisitor<T> {
    fn wrap<E>(v: Option<T>) -> Result<F<T>, E> {
        Ok(v.map_or(F::Other, F::Val))
    }
}

impl<'de, T: Shape<'de>> Visitor<'de> for FVisitor<T> {
    type Value = F<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<F<T>, E> {
        Ok(F::Null)
    }

    fn visit_none<E>(self) -> Result<F<T>, E> {
        Ok(F::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<F<T>, E> {
        Self::wrap(T::from_bool(b))
    }

    fn visit_u64<E>(self, n: u64) -> Result<F<T>, E> {
        Self::wrap(T::from_u64(n))
    }

    fn visit_i64<E>(self, n: i64) -> Result<F<T>, E> {
        Self::wrap(T::from_i64(n))
    }

    fn visit_f64<E>(self, n: f64) -> Result<F<T>, E> {
        Self::wrap(T::from_f64(n))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<F<T>, E> {
        Self::wrap(T::from_borrowed_str(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<F<T>, E> {
        Self::wrap(T::from_str(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<F<T>, A::Error> {
        T::from_seq(seq).map(|v| v.map_or(F::Other, F::Val))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<F<T>, A::Error> {
        T::from_map(map).map(|v| v.map_or(F::Other, F::Val))
    }
}

impl<'de, T: Shape<'de>> Deserialize<'de> for F<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FVisitor(PhantomData))
    }
}

/// Any JSON value, parsed (and so validated) in full and dropped.
pub(crate) struct Any;

impl<'de> Shape<'de> for Any {
    fn read(r: &mut fast::Reader<'de>) -> Result<F<Self>, fast::Bail> {
        r.skip().map(|()| F::Val(Any))
    }
    fn from_str(_s: &str) -> Option<Self> {
        Some(Any)
    }
    fn from_u64(_n: u64) -> Option<Self> {
        Some(Any)
    }
    fn from_i64(_n: i64) -> Option<Self> {
        Some(Any)
    }
    fn from_f64(_n: f64) -> Option<Self> {
        Some(Any)
    }
    fn from_bool(_b: bool) -> Option<Self> {
        Some(Any)
    }
    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        drain_seq(seq).map(|()| Some(Any))
    }
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        drain_map(map).map(|()| Some(Any))
    }
}

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FVisitor::<Any>(PhantomData)).map(|_| Any)
    }
}

impl<'de> Shape<'de> for Cow<'de, str> {
    fn read(r: &mut fast::Reader<'de>) -> Result<F<Self>, fast::Bail> {
        if r.peek()? == b'"' { r.str().map(F::Val) } else { other(r) }
    }
    fn from_borrowed_str(s: &'de str) -> Option<Self> {
        Some(Cow::Borrowed(s))
    }
    fn from_str(s: &str) -> Option<Self> {
        Some(Cow::Owned(s.to_owned()))
    }
}

/// As `Value::as_u64` sees numbers: non-negative integers only.
impl<'de> Shape<'de> for u64 {
    fn read(r: &mut fast::Reader<'de>) -> Result<F<Self>, fast::Bail> {
        match r.peek()? {
            b'-' | b'0'..=b'9' => match r.int()? {
                fast::Int::Pos(n) => Ok(F::Val(n)),
                fast::Int::Neg(_) => Ok(F::Other),
            },
            _ => other(r),
        }
    }
    fn from_u64(n: u64) -> Option<Self> {
        Some(n)
    }
    fn from_i64(n: i64) -> Option<Self> {
        u64::try_from(n).ok()
    }
}

/// As `Value::as_f64` sees numbers: any number.
impl<'de> Shape<'de> for f64 {
    fn read(r: &mut fast::Reader<'de>) -> Result<F<Self>, fast::Bail> {
        match r.peek()? {
            b'-' | b'0'..=b'9' => match r.int()? {
                fast::Int::Pos(n) => Ok(F::Val(n as f64)),
                fast::Int::Neg(n) => Ok(F::Val(n as f64)),
            },
            _ => other(r),
        }
    }
    fn from_u64(n: u64) -> Option<Self> {
        Some(n as f64)
    }
    fn from_i64(n: i64) -> Option<Self> {
        Some(n as f64)
    }
    fn from_f64(n: f64) -> Option<Self> {
        Some(n)
    }
}

impl<'de> Shape<'de> for bool {
    fn read(r: &mut fast::Reader<'de>) -> Result<F<Self>, fast::Bail> {
        match r.peek()? {
            b't' | b'f' => r.bool().map(F::Val),
            _ => other(r),
        }
    }
    fn from_bool(b: bool) -> Option<Self> {
        Some(b)
    }
}

/// An array of fields (each element may itself be of another type than expected).
impl<'de, T: Shape<'de>> Shape<'de> for Vec<F<T>> {
    fn read(r: &mut fast::Reader<'de>) -> Result<F<Self>, fast::Bail> {
        if r.peek()? != b'[' {
            return other(r);
        }
        let mut out = Vec::new();
        r.array(|r| {
            out.push(read_field(r)?);
            Ok(())
        })?;
        Ok(F::Val(out))
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(item) = seq.next_element::<F<T>>()? {
            out.push(item);
        }
        Ok(Some(out))
    }
}

/// A string, or a value of shape `T` (an object: `image_url`, `tool_choice`, content parts; or
/// an array: [`StrOrList`]). Anything else is `Other`, as `T` itself reports it.
pub(crate) enum StrOr<'de, T> {
    /// The string form.
    Str(Cow<'de, str>),
    /// The `T` form.
    Val(T),
}

/// A string, or an array of `T` (`content`, `system`, `stop`).
pub(crate) type StrOrList<'de, T> = StrOr<'de, Vec<F<T>>>;

impl<'de, T: Shape<'de>> Shape<'de> for StrOr<'de, T> {
    fn read(r: &mut fast::Reader<'de>) -> Result<F<Self>, fast::Bail> {
        if r.peek()? == b'"' {
            return r.str().map(|s| F::Val(Self::Str(s)));
        }
        T::read(r).map(|v| match v {
            F::Val(t) => F::Val(Self::Val(t)),
            _ => F::Other,
        })
    }
    fn from_borrowed_str(s: &'de str) -> Option<Self> {
        Some(Self::Str(Cow::Borrowed(s)))
    }
    fn from_str(s: &str) -> Option<Self> {
        Some(Self::Str(Cow::Owned(s.to_owned())))
    }
    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        T::from_seq(seq).map(|t| t.map(Self::Val))
    }
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        T::from_map(map).map(|t| t.map(Self::Val))
    }
}

/// The value itself, for the rare parts kept whole (usage objects, tool arguments).
impl<'de> Shape<'de> for Value {
    fn read(r: &mut fast::Reader<'de>) -> Result<F<Self>, fast::Bail> {
        r.value().map(F::Val)
    }
    fn from_str(s: &str) -> Option<Self> {
        Some(Value::String(s.to_owned()))
    }
    fn from_u64(n: u64) -> Option<Self> {
        Some(Value::from(n))
    }
    fn from_i64(n: i64) -> Option<Self> {
        Some(Value::from(n))
    }
    fn from_f64(n: f64) -> Option<Self> {
        Some(Value::from(n))
    }
    fn from_bool(b: bool) -> Option<Self> {
        Some(Value::Bool(b))
    }
    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Some)
    }
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
    }
}

/// An object key, borrowed when it has no escapes.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Parses `data` as a JSON document of shape `T`, validating exactly as a `Value` parse would:
/// `Err` when that parse fails, `F::Other` when the document is not a `T`.
pub(crate) fn parse<'de, T: Shape<'de>>(data: &'de str) -> serde_json::Result<F<T>> {
    match read_document(data) {
        Ok(value) => Ok(value),
        Err(fast::Bail) => serde_json::from_str(data),
    }
}

/// The fast path of [`parse`].
fn read_document<'de, T: Shape<'de>>(data: &'de str) -> Result<F<T>, fast::Bail> {
    let mut r = fast::Reader::new(data);
    let value = read_field(&mut r)?;
    r.end()?;
    Ok(value)
}

/// [`parse`] for bytes, as `serde_json::from_slice::<Value>` reads them (invalid UTF-8 is an
/// error where that parse reports it).
pub(crate) fn parse_slice<'de, T: Shape<'de>>(data: &'de [u8]) -> serde_json::Result<F<T>> {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(value) = read_document(text)
    {
        return Ok(value);
    }
    serde_json::from_slice(data)
}

/// Keys an object had besides its declared fields, in the order a `Value` map lists them
/// (sorted, each once).
pub(crate) fn sorted_keys<'a, 'de>(rest: &'a mut [Cow<'de, str>]) -> impl Iterator<Item = &'a str> {
    rest.sort_unstable();
    let mut last: Option<&'a str> = None;
    rest.iter().map(|k| k.as_ref()).filter(move |k| {
        let new = last != Some(*k);
        last = Some(k);
        new
    })
}

/// Declares a struct read from a JSON object: each field with the key it comes from, of type
/// [`F`]; other keys are validated and dropped, or with a trailing `..rest` listed in a
/// `rest: Vec<Cow<str>>` field (in document order, duplicates included: see [`sorted_keys`]).
macro_rules! lenient_object {
    (
        $(#[$meta:meta])*
        struct $name:ident<$de:lifetime> { $( $key:literal => $field:ident : $ty:ty ),* , ..$rest:ident $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Default)]
        struct $name<$de> {
            $( $field: $crate::translate::lenient::F<$ty>, )*
            $rest: Vec<::std::borrow::Cow<$de, str>>,
        }

        impl<$de> $crate::translate::lenient::Shape<$de> for $name<$de> {
            fn read(
                r: &mut $crate::translate::lenient::fast::Reader<$de>,
            ) -> Result<$crate::translate::lenient::F<Self>, $crate::translate::lenient::fast::Bail> {
                if r.peek()? != b'{' {
                    return r.skip().map(|()| $crate::translate::lenient::F::Other);
                }
                let mut s = Self::default();
                r.object(|r, key| {
                    match key {
                        $( $key => s.$field = $crate::translate::lenient::read_field(r)?, )*
                        _ => {
                            r.skip()?;
                            s.$rest.push(::std::borrow::Cow::Borrowed(key));
                        }
                    }
                    Ok(())
                })?;
                Ok($crate::translate::lenient::F::Val(s))
            }

            fn from_map<A: ::serde::de::MapAccess<$de>>(mut map: A) -> Result<Option<Self>, A::Error> {
                let mut s = Self::default();
                while let Some(key) = map.next_key::<$crate::translate::lenient::Key<$de>>()? {
                    match key.0.as_ref() {
                        $( $key => s.$field = map.next_value()?, )*
                        _ => {
                            map.next_value::<$crate::translate::lenient::Any>()?;
                            s.$rest.push(key.0);
                        }
                    }
                }
                Ok(Some(s))
            }
        }
    };
    (
        $(#[$meta:meta])*
        struct $name:ident<$de:lifetime> { $( $key:literal => $field:ident : $ty:ty ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Default)]
        struct $name<$de> {
            $( $field: $crate::translate::lenient::F<$ty>, )*
            _borrow: ::std::marker::PhantomData<&$de str>,
        }

        impl<$de> $crate::translate::lenient::Shape<$de> for $name<$de> {
            fn read(
                r: &mut $crate::translate::lenient::fast::Reader<$de>,
            ) -> Result<$crate::translate::lenient::F<Self>, $crate::translate::lenient::fast::Bail> {
                if r.peek()? != b'{' {
                    return r.skip().map(|()| $crate::translate::lenient::F::Other);
                }
                let mut s = Self::default();
                r.object(|r, key| {
                    match key {
                        $( $key => s.$field = $crate::translate::lenient::read_field(r)?, )*
                        _ => r.skip()?,
                    }
                    Ok(())
                })?;
                Ok($crate::translate::lenient::F::Val(s))
            }

            fn from_map<A: ::serde::de::MapAccess<$de>>(mut map: A) -> Result<Option<Self>, A::Error> {
                let mut s = Self::default();
                while let Some(key) = map.next_key::<$crate::translate::lenient::Key<$de>>()? {
                    match key.0.as_ref() {
                        $( $key => s.$field = map.next_value()?, )*
                        _ => {
                            map.next_value::<$crate::translate::lenient::Any>()?;
                        }
                    }
                }
                Ok(Some(s))
            }
        }
    };
}

pub(crate) use lenient_object;

#[cfg(test)]
mod tests {
    use super::*;

    lenient_object! {
        struct Probe<'de> {
            "s" => s: Cow<'de, str>,
            "n" => n: u64,
            "b" => b: bool,
            "v" => v: Value,
            "list" => list: Vec<F<Probe<'de>>>,
        }
    }

    fn probe(json: &str) -> Option<Probe<'_>> {
        match parse::<Probe<'_>>(json) {
            Ok(F::Val(p)) => Some(p),
            _ => None,
        }
    }

    #[test]
    fn fields_read_as_value_accessors_see_them() {
        let p = probe(r#"{"s": "a\"b", "n": 3, "b": true, "v": {"x": [1, 2.5]}, "other": [{}]}"#)
            .expect("object");
        assert_eq!(p.s.str(), Some("a\"b"));
        assert_eq!(p.n.u64(), Some(3));
        assert_eq!(p.b.val(), Some(&true));
        assert_eq!(p.v.val(), Some(&serde_json::json!({"x": [1, 2.5]})));
        assert!(matches!(p.list, F::Absent));

        let p = probe(r#"{"s": 1, "n": -1, "b": null, "list": [{"n": 1.0}, 7, null]}"#).expect("object");
        assert_eq!(p.s, F::Other);
        assert_eq!(p.n, F::Other);
        assert_eq!(p.b, F::Null);
        assert!(!p.b.present());
        let list = p.list.val().expect("array");
        assert_eq!(list.len(), 3);
        assert!(matches!(&list[0], F::Val(inner) if inner.n == F::Other));
        assert!(matches!(list[1], F::Other));
        assert!(matches!(list[2], F::Null));
    }

    lenient_object! {
        struct WithRest<'de> {
            "known" => known: u64,
            ..rest
        }
    }

    #[test]
    fn other_keys_are_listed_as_a_map_would() {
        let json = r#"{"b": 1, "known": 2, "a": {"x": 1}, "b": null, "\u0063": []}"#;
        let Ok(F::Val(mut w)) = parse::<WithRest<'_>>(json) else { panic!("object") };
        assert_eq!(w.known.u64(), Some(2));
        let keys: Vec<&str> = sorted_keys(&mut w.rest).collect();
        let value: Value = serde_json::from_str(json).expect("json");
        let expected: Vec<&str> =
            value.as_object().expect("object").keys().map(String::as_str).filter(|k| *k != "known").collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn the_last_duplicate_wins() {
        let p = probe(r#"{"s": "first", "s": "second"}"#).expect("object");
        assert_eq!(p.s.str(), Some("second"));
    }

    #[test]
    fn rejected_exactly_when_a_value_parse_is() {
        let deep = format!("{{\"z\": {}{}}}", "[".repeat(200), "]".repeat(200));
        for json in [
            r#"{"z": 1e400}"#,
            r#"{"z": "\ud800"}"#,
            r#"{"z": "\uDC00x"}"#,
            r#"{"z": [1, 2,]}"#,
            r#"{"z": "\q"}"#,
            r#"{"a": 1} x"#,
            deep.as_str(),
            r#"{"z": 1e-400, "y": "\ud83d\ude00", "x": -0, "w": 18446744073709551616}"#,
            r#"[1, {"s": 2}]"#,
            r#""text""#,
        ] {
            let value = serde_json::from_str::<Value>(json);
            let typed = parse::<Probe<'_>>(json);
            assert_eq!(value.is_ok(), typed.is_ok(), "{json}");
            if let (Ok(v), Ok(t)) = (value, typed) {
                assert_eq!(v.is_object(), matches!(t, F::Val(_)), "{json}");
            }
        }
    }
}
