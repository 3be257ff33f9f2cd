//! Node ids: 160-bit identifiers in the same space as infohashes, the XOR
//! metric (BEP 5 §"Overview"), and the BEP 42 rule tying an id to the
//! node's external IP address.

use std::fmt;
use std::net::IpAddr;

use essaim_core::InfoHash;
use rand::Rng;

/// A DHT node id (or a lookup target), 20 bytes, big-endian.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 20]);

/// `a XOR b`, compared as an unsigned big-endian integer: smaller is closer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Distance(pub [u8; 20]);

impl NodeId {
    pub const LEN: usize = 20;
    /// Number of bits in an id.
    pub const BITS: usize = 160;

    /// 20 bytes, or `None` for any other length.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        Some(NodeId(b.try_into().ok()?))
    }

    pub fn random(rng: &mut impl Rng) -> Self {
        let mut id = [0u8; 20];
        rng.fill(&mut id[..]);
        NodeId(id)
    }

    pub fn distance(&self, other: &NodeId) -> Distance {
        let mut d = [0u8; 20];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// How many leading bits `self` and `other` share (160 when equal).
    pub fn common_prefix_len(&self, other: &NodeId) -> usize {
        for i in 0..20 {
            let x = self.0[i] ^ other.0[i];
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        Self::BITS
    }

    /// Bit `i` counted from the most significant bit.
    pub fn bit(&self, i: usize) -> bool {
        i < Self::BITS && self.0[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// A random id whose first `prefix_len` bits are those of `self`; with
    /// `flip`, bit `prefix_len` is the opposite of ours (so the id shares
    /// exactly `prefix_len` bits with `self`). Used to refresh a bucket.
    pub fn random_in_range(&self, prefix_len: usize, flip: bool, rng: &mut impl Rng) -> NodeId {
        let mut id = NodeId::random(rng);
        let keep = prefix_len.min(Self::BITS);
        for i in 0..keep {
            set_bit(&mut id, i, self.bit(i));
        }
        if flip && keep < Self::BITS {
            set_bit(&mut id, keep, !self.bit(keep));
        }
        id
    }

    /// Lower-case hex, 40 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A random id valid for `ip` under BEP 42.
    pub fn bep42(ip: IpAddr, rng: &mut impl Rng) -> NodeId {
        let rand: u8 = rng.gen();
        let crc = bep42_crc(ip, rand & 0x7);
        let mut id = NodeId::random(rng);
        id.0[0] = (crc >> 24) as u8;
        id.0[1] = (crc >> 16) as u8;
        id.0[2] = ((crc >> 8) as u8 & 0xf8) | (id.0[2] & 0x7);
        id.0[19] = rand;
        id
    }

    /// Whether this id obeys BEP 42 for `ip`: its first 21 bits match the
    /// CRC32C of the masked address with `r` taken from the last byte.
    /// Local addresses (BEP 42 §"Enforcement") are always valid.
    pub fn is_bep42_valid(&self, ip: IpAddr) -> bool {
        if is_local(ip) {
            return true;
        }
        let crc = bep42_crc(ip, self.0[19] & 0x7);
        self.0[0] == (crc >> 24) as u8
            && self.0[1] == (crc >> 16) as u8
            && self.0[2] & 0xf8 == (crc >> 8) as u8 & 0xf8
    }
}

fn set_bit(id: &mut NodeId, i: usize, v: bool) {
    let mask = 0x80 >> (i % 8);
    if v {
        id.0[i / 8] |= mask;
    } else {
        id.0[i / 8] &= !mask;
    }
}

/// The addresses BEP 42 exempts: private, link-local, loopback (and the
/// IPv6 equivalents: unique-local, link-local, loopback).
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local() || v4.is_loopback(),
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            v6.is_loopback() || (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

fn bep42_crc(ip: IpAddr, r: u8) -> u32 {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = v4.octets();
            for (x, m) in b.iter_mut().zip([0x03, 0x0f, 0x3f, 0xff]) {
                *x &= m;
            }
            b[0] |= r << 5;
            crc32c(&b)
        }
        IpAddr::V6(v6) => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v6.octets()[..8]);
            for (x, m) in b
                .iter_mut()
                .zip([0x01, 0x03, 0x07, 0x0f, 0x1f, 0x3f, 0x7f, 0xff])
            {
                *x &= m;
            }
            b[0] |= r << 5;
            crc32c(&b)
        }
    }
}

/// CRC-32C (Castagnoli), bit by bit: BEP 42 hashes 4 or 8 bytes.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

impl From<InfoHash> for NodeId {
    fn from(h: InfoHash) -> Self {
        NodeId(h.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.to_hex())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn hex_id(s: &str) -> NodeId {
        let v: Vec<u8> = (0..40)
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        NodeId::from_bytes(&v).unwrap()
    }

    #[test]
    fn xor_metric() {
        let a = NodeId([0; 20]);
        let mut b = NodeId([0; 20]);
        b.0[19] = 1;
        let mut c = NodeId([0; 20]);
        c.0[0] = 0x80;
        assert!(a.distance(&b) < a.distance(&c));
        assert_eq!(a.distance(&b), b.distance(&a));
        assert_eq!(a.distance(&a), Distance([0; 20]));
        assert_eq!(a.common_prefix_len(&a), 160);
        assert_eq!(a.common_prefix_len(&b), 159);
        assert_eq!(a.common_prefix_len(&c), 0);
    }

    #[test]
    fn random_in_range_shares_the_prefix() {
        let mut rng = StdRng::seed_from_u64(1);
        let own = NodeId::random(&mut rng);
        for p in [0, 1, 7, 8, 9, 100, 159] {
            let id = own.random_in_range(p, true, &mut rng);
            assert_eq!(own.common_prefix_len(&id), p);
            let id = own.random_in_range(p, false, &mut rng);
            assert!(own.common_prefix_len(&id) >= p);
        }
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    /// The test vectors of BEP 42.
    #[test]
    fn bep42_vectors() {
        let vectors = [
            ("124.31.75.21", "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
            ("21.75.31.124", "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
            ("65.23.51.170", "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
            ("84.124.73.14", "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
            ("43.213.53.83", "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
        ];
        for (ip, id) in vectors {
            let ip: IpAddr = ip.parse().unwrap();
            let id = hex_id(id);
            assert!(id.is_bep42_valid(ip), "{ip}");
            let mut other = id;
            other.0[0] ^= 0x10;
            assert!(!other.is_bep42_valid(ip), "{ip}");
        }
        let mut rng = StdRng::seed_from_u64(2);
        for ip in ["1.2.3.4", "200.100.50.25", "2001:db8::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            for _ in 0..20 {
                assert!(NodeId::bep42(ip, &mut rng).is_bep42_valid(ip));
            }
        }
        // Local addresses are exempt.
        assert!(NodeId([0; 20]).is_bep42_valid("192.168.1.1".parse().unwrap()));
        assert!(NodeId([0; 20]).is_bep42_valid("127.0.0.1".parse().unwrap()));
    }
}
