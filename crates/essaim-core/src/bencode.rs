//! Bencode, the serialisation of BEP 3 §"bencoding".
//!
//! The decoder borrows from its input: a [`Value`] keeps the exact byte span
//! it was parsed from (`raw`), so that an infohash is always the SHA-1 of the
//! raw `info` bytes as received, never of a re-encoding.
//!
//! Hostile input is the norm. The policy, the same at every entry point:
//! - nesting deeper than [`MAX_DEPTH`] is an error (no stack overflow);
//! - a string length is checked against the bytes actually left before
//!   anything is done with it (no allocation sized by the input);
//! - integers are `i64`; leading zeros, `-0`, empty digits and overflow are
//!   errors (BEP 3: "i-0e is invalid", leading zeros are not allowed);
//! - dictionary keys must be byte strings; a repeated key is an error, so no
//!   two readers can ever see two different values for one key. Keys out of
//!   order are tolerated (some encoders emit them) because hashes are taken
//!   over raw spans, never over a re-encoding;
//! - [`decode`] refuses trailing bytes; [`decode_prefix`] returns them.
//!
//! Memory is bounded by the input: every value takes at least two input bytes.

use std::collections::BTreeMap;
use std::fmt;

/// Deepest nesting of lists and dictionaries accepted (libtorrent uses 100).
pub const MAX_DEPTH: usize = 100;

/// What was wrong with a bencoded input, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bencode at byte {offset}: {kind}")]
pub struct DecodeError {
    /// Byte offset in the input where the problem was found.
    pub offset: usize,
    /// What the problem is.
    pub kind: DecodeErrorKind,
}

/// The kinds of bencode errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("unexpected end of input")]
    UnexpectedEof,
    #[error("unexpected byte")]
    UnexpectedByte,
    #[error("invalid integer")]
    InvalidInteger,
    #[error("integer does not fit in 64 bits")]
    IntegerOverflow,
    #[error("invalid string length")]
    InvalidLength,
    #[error("string longer than the input")]
    LengthPastEnd,
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("dictionary key is not a string")]
    KeyNotString,
    #[error("repeated dictionary key")]
    DuplicateKey,
    #[error("trailing bytes after the value")]
    TrailingBytes,
}

/// A decoded value together with the input bytes it spans.
#[derive(Clone, PartialEq, Eq)]
pub struct Value<'a> {
    /// The exact bytes this value was decoded from.
    pub raw: &'a [u8],
    /// The value itself.
    pub kind: Kind<'a>,
}

/// The four bencode types.
#[derive(Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    /// Entries in input order; keys are unique.
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Int(i) => write!(f, "{i}"),
            Kind::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) if b.len() <= 64 => write!(f, "{s:?}"),
                _ => write!(f, "<{} bytes>", b.len()),
            },
            Kind::List(l) => f.debug_list().entries(l).finish(),
            Kind::Dict(d) => f
                .debug_map()
                .entries(d.iter().map(|(k, v)| (String::from_utf8_lossy(k), v)))
                .finish(),
        }
    }
}

impl<'a> Value<'a> {
    pub fn as_int(&self) -> Option<i64> {
        match self.kind {
            Kind::Int(i) => Some(i),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self.kind {
            Kind::Bytes(b) => Some(b),
            _ => None,
        }
    }
    /// The string if it is valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match &self.kind {
            Kind::List(l) => Some(l),
            _ => None,
        }
    }
    pub fn as_dict(&self) -> Option<&[(&'a [u8], Value<'a>)]> {
        match &self.kind {
            Kind::Dict(d) => Some(d),
            _ => None,
        }
    }
    /// Looks a key up if this is a dictionary.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
    /// Converts to an owned value (for re-encoding or storage).
    pub fn to_owned_value(&self) -> OwnedValue {
        match &self.kind {
            Kind::Int(i) => OwnedValue::Int(*i),
            Kind::Bytes(b) => OwnedValue::Bytes(b.to_vec()),
            Kind::List(l) => OwnedValue::List(l.iter().map(Value::to_owned_value).collect()),
            Kind::Dict(d) => OwnedValue::Dict(
                d.iter()
                    .map(|(k, v)| (k.to_vec(), v.to_owned_value()))
                    .collect(),
            ),
        }
    }
}

/// Decodes exactly one value; trailing bytes are an error.
pub fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
    let (value, rest) = decode_prefix(input)?;
    if !rest.is_empty() {
        return Err(DecodeError {
            offset: input.len() - rest.len(),
            kind: DecodeErrorKind::TrailingBytes,
        });
    }
    Ok(value)
}

/// Decodes one value at the start of `input` and returns it with the bytes
/// that follow it (BEP 9 `data` messages carry raw bytes after a dictionary).
pub fn decode_prefix(input: &[u8]) -> Result<(Value<'_>, &[u8]), DecodeError> {
    let mut parser = Parser { input, pos: 0 };
    let value = parser.value(0)?;
    Ok((value, &input[parser.pos..]))
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            offset: self.pos,
            kind,
        }
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.err(DecodeErrorKind::UnexpectedEof))
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, DecodeError> {
        let start = self.pos;
        let kind = match self.peek()? {
            b'i' => {
                self.pos += 1;
                Kind::Int(self.integer(b'e')?)
            }
            b'0'..=b'9' => Kind::Bytes(self.string()?),
            b'l' => {
                if depth >= MAX_DEPTH {
                    return Err(self.err(DecodeErrorKind::TooDeep));
                }
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Kind::List(items)
            }
            b'd' => {
                if depth >= MAX_DEPTH {
                    return Err(self.err(DecodeErrorKind::TooDeep));
                }
                self.pos += 1;
                let mut entries: Vec<(&'a [u8], Value<'a>)> = Vec::new();
                let mut sorted = true;
                while self.peek()? != b'e' {
                    let key_pos = self.pos;
                    if !self.peek()?.is_ascii_digit() {
                        return Err(self.err(DecodeErrorKind::KeyNotString));
                    }
                    let key = self.string()?;
                    if let Some((last, _)) = entries.last() {
                        if *last == key {
                            return Err(DecodeError {
                                offset: key_pos,
                                kind: DecodeErrorKind::DuplicateKey,
                            });
                        }
                        sorted &= *last < key;
                    }
                    let value = self.value(depth + 1)?;
                    entries.push((key, value));
                }
                if !sorted {
                    let mut keys: Vec<&[u8]> = entries.iter().map(|(k, _)| *k).collect();
                    keys.sort_unstable();
                    if keys.windows(2).any(|w| w[0] == w[1]) {
                        return Err(DecodeError {
                            offset: start,
                            kind: DecodeErrorKind::DuplicateKey,
                        });
                    }
                }
                self.pos += 1;
                Kind::Dict(entries)
            }
            _ => return Err(self.err(DecodeErrorKind::UnexpectedByte)),
        };
        Ok(Value {
            raw: &self.input[start..self.pos],
            kind,
        })
    }

    /// Parses a decimal integer terminated by `end`, consuming the terminator.
    fn integer(&mut self, end: u8) -> Result<i64, DecodeError> {
        let start = self.pos;
        let negative = self.peek()? == b'-';
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        let mut value: i64 = 0;
        loop {
            let b = self.peek()?;
            if b == end {
                break;
            }
            if !b.is_ascii_digit() {
                return Err(self.err(DecodeErrorKind::InvalidInteger));
            }
            let digit = i64::from(b - b'0');
            value = value
                .checked_mul(10)
                .and_then(|v| {
                    if negative {
                        v.checked_sub(digit)
                    } else {
                        v.checked_add(digit)
                    }
                })
                .ok_or_else(|| self.err(DecodeErrorKind::IntegerOverflow))?;
            self.pos += 1;
        }
        let digits = &self.input[digits_start..self.pos];
        let bad = digits.is_empty()
            || (digits.len() > 1 && digits[0] == b'0')
            || (negative && digits == b"0");
        if bad {
            return Err(DecodeError {
                offset: start,
                kind: DecodeErrorKind::InvalidInteger,
            });
        }
        self.pos += 1; // the terminator
        Ok(value)
    }

    fn string(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let len = self.integer(b':').map_err(|e| DecodeError {
            offset: e.offset,
            kind: match e.kind {
                DecodeErrorKind::UnexpectedEof => DecodeErrorKind::UnexpectedEof,
                _ => DecodeErrorKind::InvalidLength,
            },
        })?;
        if len < 0 || self.input[start] == b'-' {
            return Err(DecodeError {
                offset: start,
                kind: DecodeErrorKind::InvalidLength,
            });
        }
        let remaining = self.input.len() - self.pos;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= remaining)
            .ok_or(DecodeError {
                offset: start,
                kind: DecodeErrorKind::LengthPastEnd,
            })?;
        let s = &self.input[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }
}

/// An owned bencode value, for building messages and files. Dictionaries are
/// kept sorted by key, as BEP 3 requires of encoders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedValue {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<OwnedValue>),
    Dict(BTreeMap<Vec<u8>, OwnedValue>),
}

impl OwnedValue {
    /// An empty dictionary.
    pub fn dict() -> Self {
        OwnedValue::Dict(BTreeMap::new())
    }

    /// Inserts into a dictionary (no-op on other kinds); returns self for chaining.
    pub fn with(mut self, key: &str, value: impl Into<OwnedValue>) -> Self {
        self.insert(key, value);
        self
    }

    /// Inserts into a dictionary (no-op on other kinds).
    pub fn insert(&mut self, key: &str, value: impl Into<OwnedValue>) {
        if let OwnedValue::Dict(d) = self {
            d.insert(key.as_bytes().to_vec(), value.into());
        }
    }

    /// Encodes to a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            OwnedValue::Int(i) => put_int(out, *i),
            OwnedValue::Bytes(b) => put_bytes(out, b),
            OwnedValue::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            OwnedValue::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    put_bytes(out, k);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }
}

impl From<i64> for OwnedValue {
    fn from(i: i64) -> Self {
        OwnedValue::Int(i)
    }
}
impl From<&str> for OwnedValue {
    fn from(s: &str) -> Self {
        OwnedValue::Bytes(s.as_bytes().to_vec())
    }
}
impl From<String> for OwnedValue {
    fn from(s: String) -> Self {
        OwnedValue::Bytes(s.into_bytes())
    }
}
impl From<&[u8]> for OwnedValue {
    fn from(b: &[u8]) -> Self {
        OwnedValue::Bytes(b.to_vec())
    }
}
impl From<Vec<u8>> for OwnedValue {
    fn from(b: Vec<u8>) -> Self {
        OwnedValue::Bytes(b)
    }
}
impl From<Vec<OwnedValue>> for OwnedValue {
    fn from(l: Vec<OwnedValue>) -> Self {
        OwnedValue::List(l)
    }
}

/// Appends `i<n>e`.
pub fn put_int(out: &mut Vec<u8>, i: i64) {
    out.push(b'i');
    out.extend_from_slice(i.to_string().as_bytes());
    out.push(b'e');
}

/// Appends `<len>:<bytes>`.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind_of(input: &[u8]) -> DecodeErrorKind {
        decode(input).unwrap_err().kind
    }

    #[test]
    fn decodes_bep3_examples() {
        assert_eq!(decode(b"4:spam").unwrap().as_bytes(), Some(&b"spam"[..]));
        assert_eq!(decode(b"i3e").unwrap().as_int(), Some(3));
        assert_eq!(decode(b"i-3e").unwrap().as_int(), Some(-3));
        assert_eq!(decode(b"i0e").unwrap().as_int(), Some(0));
        let l = decode(b"l4:spam4:eggse").unwrap();
        assert_eq!(l.as_list().unwrap().len(), 2);
        let d = decode(b"d3:cow3:moo4:spam4:eggse").unwrap();
        assert_eq!(d.get(b"cow").unwrap().as_str(), Some("moo"));
        assert_eq!(d.get(b"spam").unwrap().as_str(), Some("eggs"));
        assert!(d.get(b"nope").is_none());
    }

    #[test]
    fn keeps_raw_spans() {
        let input = b"d4:infod6:lengthi5ee3:zzzi1ee";
        let v = decode(input).unwrap();
        assert_eq!(v.raw, &input[..]);
        assert_eq!(v.get(b"info").unwrap().raw, b"d6:lengthi5ee");
    }

    #[test]
    fn rejects_bad_integers() {
        assert_eq!(kind_of(b"i-0e"), DecodeErrorKind::InvalidInteger);
        assert_eq!(kind_of(b"i03e"), DecodeErrorKind::InvalidInteger);
        assert_eq!(kind_of(b"i00e"), DecodeErrorKind::InvalidInteger);
        assert_eq!(kind_of(b"i-03e"), DecodeErrorKind::InvalidInteger);
        assert_eq!(kind_of(b"i-00e"), DecodeErrorKind::InvalidInteger);
        assert_eq!(kind_of(b"ie"), DecodeErrorKind::InvalidInteger);
        assert_eq!(kind_of(b"i-e"), DecodeErrorKind::InvalidInteger);
        assert_eq!(kind_of(b"i1x2e"), DecodeErrorKind::InvalidInteger);
        assert_eq!(
            kind_of(b"i9223372036854775808e"),
            DecodeErrorKind::IntegerOverflow
        );
        assert_eq!(
            decode(b"i-9223372036854775808e").unwrap().as_int(),
            Some(i64::MIN)
        );
        assert_eq!(kind_of(b"i12"), DecodeErrorKind::UnexpectedEof);
    }

    #[test]
    fn rejects_bad_strings() {
        assert_eq!(kind_of(b"5:abc"), DecodeErrorKind::LengthPastEnd);
        assert_eq!(
            kind_of(b"9223372036854775807:x"),
            DecodeErrorKind::LengthPastEnd
        );
        assert_eq!(
            kind_of(b"99999999999999999999999:x"),
            DecodeErrorKind::InvalidLength
        );
        assert_eq!(kind_of(b"03:abc"), DecodeErrorKind::InvalidLength);
        assert_eq!(kind_of(b"3abc"), DecodeErrorKind::InvalidLength);
    }

    #[test]
    fn string_lengths_beyond_64_bits_are_refused_without_allocating() {
        // 2^63: one past i64::MAX; 2^64 + 1: past u64 too. Neither may be
        // cast, wrapped or used to size a buffer.
        for len in ["9223372036854775808", "18446744073709551617"] {
            let input = format!("{len}:abc");
            assert_eq!(kind_of(input.as_bytes()), DecodeErrorKind::InvalidLength);
            // Also as a dictionary key and inside a list.
            let key = format!("d{len}:ai1ee");
            assert_eq!(kind_of(key.as_bytes()), DecodeErrorKind::InvalidLength);
            let list = format!("l{len}:e");
            assert_eq!(kind_of(list.as_bytes()), DecodeErrorKind::InvalidLength);
        }
        // 2^63 - 1 fits the integer but not the input.
        assert_eq!(
            kind_of(b"l9223372036854775807:abce"),
            DecodeErrorKind::LengthPastEnd
        );
        assert_eq!(kind_of(b"-1:a"), DecodeErrorKind::UnexpectedByte);
    }

    #[test]
    fn refuses_deep_dictionaries_and_mixed_nesting() {
        let n = 100_000;
        let mut deep = b"d1:a".repeat(n);
        deep.extend_from_slice(b"i0e");
        deep.extend(vec![b'e'; n]);
        assert_eq!(kind_of(&deep), DecodeErrorKind::TooDeep);
        let mut mixed = b"ld1:a".repeat(n / 2);
        mixed.extend_from_slice(b"i0e");
        mixed.extend(vec![b'e'; n]);
        assert_eq!(kind_of(&mixed), DecodeErrorKind::TooDeep);
        // Unterminated deep input: TooDeep before running out of input.
        assert_eq!(kind_of(&vec![b'l'; 100_000]), DecodeErrorKind::TooDeep);
        // The error is reported where the limit was crossed.
        assert_eq!(decode(&deep).unwrap_err().offset, MAX_DEPTH * 4);
    }

    #[test]
    fn refuses_deep_nesting_without_overflowing_the_stack() {
        let mut deep = vec![b'l'; 100_000];
        deep.extend(vec![b'e'; 100_000]);
        assert_eq!(kind_of(&deep), DecodeErrorKind::TooDeep);
        let mut ok = vec![b'l'; MAX_DEPTH];
        ok.extend(vec![b'e'; MAX_DEPTH]);
        assert!(decode(&ok).is_ok());
    }

    #[test]
    fn dictionary_key_policy() {
        assert_eq!(kind_of(b"d1:ai1e1:ai2ee"), DecodeErrorKind::DuplicateKey);
        assert_eq!(
            kind_of(b"d1:ai1e1:bi1e1:ai2ee"),
            DecodeErrorKind::DuplicateKey
        );
        assert_eq!(kind_of(b"di1ei2ee"), DecodeErrorKind::KeyNotString);
        // Out of order but unique: accepted, lookups work.
        let v = decode(b"d1:bi2e1:ai1ee").unwrap();
        assert_eq!(v.get(b"a").unwrap().as_int(), Some(1));
    }

    #[test]
    fn trailing_bytes() {
        assert_eq!(kind_of(b"i1ei2e"), DecodeErrorKind::TrailingBytes);
        let (v, rest) = decode_prefix(b"d1:ai1eeRAW").unwrap();
        assert_eq!(v.get(b"a").unwrap().as_int(), Some(1));
        assert_eq!(rest, b"RAW");
    }

    #[test]
    fn garbage() {
        assert_eq!(kind_of(b""), DecodeErrorKind::UnexpectedEof);
        assert_eq!(kind_of(b"x"), DecodeErrorKind::UnexpectedByte);
        assert_eq!(kind_of(b"l"), DecodeErrorKind::UnexpectedEof);
        assert_eq!(kind_of(b"d1:a"), DecodeErrorKind::UnexpectedEof);
    }

    fn owned() -> impl Strategy<Value = OwnedValue> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(OwnedValue::Int),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(OwnedValue::Bytes),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(OwnedValue::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..6),
                    inner,
                    0..6
                )
                .prop_map(OwnedValue::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(v in owned()) {
            let bytes = v.encode();
            let decoded = decode(&bytes).unwrap();
            prop_assert_eq!(decoded.raw, &bytes[..]);
            prop_assert_eq!(decoded.to_owned_value(), v);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
