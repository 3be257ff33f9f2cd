//! Peer exchange messages (BEP 11, `ut_pex` over the extension protocol).
//!
//! A message lists peers the sender connected to (`added`, with one flag
//! byte each in `added.f`) and peers it was disconnected from (`dropped`),
//! IPv4 in 6-byte and IPv6 in 18-byte compact form. Decoding is lenient
//! about what it may ignore (a partial trailing entry, missing flags) and
//! strict about size: at most [`MAX_ENTRIES`] addresses are read per list.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use essaim_core::bencode::{self, OwnedValue, Value};

/// Addresses read per list at most; the rest of a longer list is ignored.
pub const MAX_ENTRIES: usize = 200;
/// Flag bit: the peer is a seed (BEP 11).
pub const FLAG_SEED: u8 = 0x02;
/// Flag bit: we connected out to it, so it is reachable (BEP 11).
pub const FLAG_REACHABLE: u8 = 0x10;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMessage {
    /// Added peers with their flags.
    pub added: Vec<(SocketAddr, u8)>,
    pub dropped: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PexError {
    #[error("ut_pex payload is not bencode: {0}")]
    Bencode(#[from] bencode::DecodeError),
    #[error("ut_pex payload is not a dictionary")]
    NotADict,
}

impl PexMessage {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.dropped.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let (mut a4, mut f4, mut a6, mut f6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (addr, flags) in &self.added {
            match addr {
                SocketAddr::V4(_) => {
                    put_compact(&mut a4, addr);
                    f4.push(*flags);
                }
                SocketAddr::V6(_) => {
                    put_compact(&mut a6, addr);
                    f6.push(*flags);
                }
            }
        }
        let (mut d4, mut d6) = (Vec::new(), Vec::new());
        for addr in &self.dropped {
            match addr {
                SocketAddr::V4(_) => put_compact(&mut d4, addr),
                SocketAddr::V6(_) => put_compact(&mut d6, addr),
            }
        }
        OwnedValue::dict()
            .with("added", a4)
            .with("added.f", f4)
            .with("added6", a6)
            .with("added6.f", f6)
            .with("dropped", d4)
            .with("dropped6", d6)
            .encode()
    }

    pub fn decode(payload: &[u8]) -> Result<Self, PexError> {
        // A trailing byte or two after the dictionary is tolerated.
        let (v, _) = bencode::decode_prefix(payload)?;
        if v.as_dict().is_none() {
            return Err(PexError::NotADict);
        }
        let bytes = |key: &[u8]| v.get(key).and_then(Value::as_bytes).unwrap_or_default();
        let mut added = Vec::new();
        for (list, flags, len) in [
            (b"added".as_ref(), b"added.f".as_ref(), 6),
            (b"added6", b"added6.f", 18),
        ] {
            let flags = bytes(flags);
            for (i, addr) in read_compact(bytes(list), len).into_iter().enumerate() {
                added.push((addr, flags.get(i).copied().unwrap_or(0)));
            }
        }
        let mut dropped = read_compact(bytes(b"dropped"), 6);
        dropped.extend(read_compact(bytes(b"dropped6"), 18));
        added.truncate(2 * MAX_ENTRIES);
        dropped.truncate(2 * MAX_ENTRIES);
        Ok(PexMessage { added, dropped })
    }
}

fn put_compact(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn read_compact(bytes: &[u8], len: usize) -> Vec<SocketAddr> {
    bytes
        .chunks_exact(len)
        .take(MAX_ENTRIES)
        .filter_map(|c| {
            let (ip, port) = c.split_at(len - 2);
            let port = u16::from_be_bytes([port[0], port[1]]);
            let ip = match len {
                6 => IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
                _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(ip).ok()?)),
            };
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_v4_and_v6() {
        let m = PexMessage {
            added: vec![
                ("1.2.3.4:6881".parse().unwrap(), FLAG_SEED),
                ("[2001:db8::1]:51413".parse().unwrap(), FLAG_REACHABLE),
            ],
            dropped: vec!["5.6.7.8:1".parse().unwrap()],
        };
        assert_eq!(PexMessage::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn lenient_where_harmless_strict_on_size() {
        // Partial trailing entry ignored, missing flags read as 0.
        let m = PexMessage::decode(b"d5:added8:\x01\x02\x03\x04\x1a\xe1\xffxe").unwrap();
        assert_eq!(m.added, vec![("1.2.3.4:6881".parse().unwrap(), 0)]);
        // Thousands of entries: only MAX_ENTRIES are read.
        let mut big = b"d5:added6000:".to_vec();
        big.extend(std::iter::repeat_n(7u8, 6000));
        big.push(b'e');
        assert_eq!(PexMessage::decode(&big).unwrap().added.len(), MAX_ENTRIES);
        assert_eq!(PexMessage::decode(b"le"), Err(PexError::NotADict));
        assert!(PexMessage::decode(b"d5:added").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = PexMessage::decode(&bytes);
        }
    }
}
