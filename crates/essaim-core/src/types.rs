//! Identifiers: [`InfoHash`] and [`PeerId`], with hex and base32 text forms.

use std::fmt;

/// The SHA-1 of a torrent's raw `info` dictionary (BEP 3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

/// A peer's 20-byte id from its handshake (BEP 3, BEP 20 for the convention).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub [u8; 20]);

impl InfoHash {
    /// SHA-1 of the given raw `info` bytes.
    pub fn of_info(raw_info: &[u8]) -> Self {
        use sha1::{Digest, Sha1};
        InfoHash(Sha1::digest(raw_info).into())
    }

    /// Lower-case hex, 40 characters.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses 40 hex digits or 32 base32 characters (both appear in magnet links).
    pub fn from_text(s: &str) -> Option<Self> {
        let bytes = match s.len() {
            40 => from_hex(s)?,
            32 => from_base32(s)?,
            _ => return None,
        };
        Some(InfoHash(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", self.to_hex())
    }
}
impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl PeerId {
    /// An Azureus-style id (BEP 20): `-ES0100-` followed by 12 bytes of `random`.
    pub fn generate(random: [u8; 12]) -> Self {
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(b"-ES0100-");
        // Printable characters, as most clients use.
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        for (dst, r) in id[8..].iter_mut().zip(random) {
            *dst = ALPHABET[usize::from(r) % ALPHABET.len()];
        }
        PeerId(id)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", String::from_utf8_lossy(&self.0))
    }
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Parses hex (either case); `None` on odd length or a non-hex digit.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

/// Parses RFC 4648 base32 without padding (either case).
pub fn from_base32(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base32_agree() {
        let hex = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
        let a = InfoHash::from_text(hex).unwrap();
        assert_eq!(a.to_hex(), hex);
        // The same hash in base32.
        let b = InfoHash::from_text("YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK").unwrap();
        assert_eq!(a, b);
        assert!(InfoHash::from_text("zz").is_none());
        assert!(InfoHash::from_text(&"g".repeat(40)).is_none());
    }

    #[test]
    fn peer_id_prefix() {
        let id = PeerId::generate([7; 12]);
        assert_eq!(&id.0[..8], b"-ES0100-");
        assert!(id.0.iter().all(u8::is_ascii_alphanumeric_or_dash));
    }

    trait AsciiExt {
        fn is_ascii_alphanumeric_or_dash(&self) -> bool;
    }
    impl AsciiExt for u8 {
        fn is_ascii_alphanumeric_or_dash(&self) -> bool {
            self.is_ascii_alphanumeric() || *self == b'-'
        }
    }
}
