//! A fixed-length set of piece indices, in the wire layout of BEP 3's
//! `bitfield` message: the high bit of the first byte is piece 0, and spare
//! bits at the end must be zero.
//!
//! Invariant: `count` is the number of set bits among the first `len`; spare
//! bits are always clear.

/// Why a received bitfield was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    #[error("bitfield is {got} bytes, expected {expected} for {pieces} pieces")]
    WrongLength {
        got: usize,
        expected: usize,
        pieces: u32,
    },
    #[error("bitfield has spare bits set past piece {pieces}")]
    SpareBitsSet { pieces: u32 },
}

#[derive(Clone, PartialEq, Eq)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    count: u32,
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.count, self.len)
    }
}

impl Bitfield {
    /// Number of bytes a bitfield of `len` bits takes on the wire.
    pub fn byte_len(len: u32) -> usize {
        (len as usize).div_ceil(8)
    }

    /// All clear.
    pub fn new(len: u32) -> Self {
        Bitfield {
            bytes: vec![0; Self::byte_len(len)],
            len,
            count: 0,
        }
    }

    /// All set.
    pub fn full(len: u32) -> Self {
        let mut b = Bitfield {
            bytes: vec![0xff; Self::byte_len(len)],
            len,
            count: len,
        };
        b.clear_spare();
        b
    }

    /// Validates a bitfield received from a peer.
    pub fn from_bytes(bytes: &[u8], len: u32) -> Result<Self, BitfieldError> {
        let expected = Self::byte_len(len);
        if bytes.len() != expected {
            return Err(BitfieldError::WrongLength {
                got: bytes.len(),
                expected,
                pieces: len,
            });
        }
        let mut b = Bitfield {
            bytes: bytes.to_vec(),
            len,
            count: 0,
        };
        let before: Vec<u8> = b.bytes.clone();
        b.clear_spare();
        if b.bytes != before {
            return Err(BitfieldError::SpareBitsSet { pieces: len });
        }
        b.count = b.bytes.iter().map(|x| x.count_ones()).sum();
        Ok(b)
    }

    fn clear_spare(&mut self) {
        let spare = (self.bytes.len() * 8) as u32 - self.len;
        if spare > 0 {
            if let Some(last) = self.bytes.last_mut() {
                *last &= 0xffu8 << spare;
            }
        }
    }

    pub fn len(&self) -> u32 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Number of set bits.
    pub fn count(&self) -> u32 {
        self.count
    }
    pub fn is_full(&self) -> bool {
        self.count == self.len
    }
    pub fn none_set(&self) -> bool {
        self.count == 0
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether bit `i` is set; `false` when out of range.
    pub fn get(&self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Sets bit `i`; returns whether it changed. Out of range: no change.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.count += 1;
        true
    }

    /// Clears bit `i`; returns whether it changed.
    pub fn clear(&mut self, i: u32) -> bool {
        if !self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] &= !(0x80 >> (i % 8));
        self.count -= 1;
        true
    }

    /// Indices of set bits, ascending.
    pub fn iter_set(&self) -> impl Iterator<Item = u32> + '_ {
        self.bytes.iter().enumerate().flat_map(move |(byte_i, &b)| {
            (0..8u32).filter_map(move |bit| {
                let i = byte_i as u32 * 8 + bit;
                (b & (0x80 >> bit) != 0).then_some(i)
            })
        })
    }

    /// Whether `other` has a bit set that `self` lacks (interest, BEP 3).
    pub fn lacks_any_of(&self, other: &Bitfield) -> bool {
        self.bytes
            .iter()
            .zip(&other.bytes)
            .any(|(mine, theirs)| theirs & !mine != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_matches_the_wire() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0));
        assert!(b.set(9));
        assert!(!b.set(9));
        assert!(!b.set(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        assert_eq!(b.iter_set().collect::<Vec<_>>(), vec![0, 9]);
        assert!(b.clear(0));
        assert_eq!(b.count(), 1);
    }

    #[test]
    fn full_clears_spare_bits() {
        let b = Bitfield::full(10);
        assert_eq!(b.as_bytes(), &[0xff, 0xc0]);
        assert!(b.is_full());
        assert_eq!(Bitfield::full(16).as_bytes(), &[0xff, 0xff]);
    }

    #[test]
    fn refuses_bad_wire_bitfields() {
        assert_eq!(
            Bitfield::from_bytes(&[0xff], 10),
            Err(BitfieldError::WrongLength {
                got: 1,
                expected: 2,
                pieces: 10
            })
        );
        assert_eq!(
            Bitfield::from_bytes(&[0xff, 0xe0], 10),
            Err(BitfieldError::SpareBitsSet { pieces: 10 })
        );
        assert_eq!(Bitfield::from_bytes(&[0xff, 0xc0], 10).unwrap().count(), 10);
    }

    proptest! {
        #[test]
        fn from_bytes_round_trips(len in 0u32..200, seed in any::<u64>()) {
            let mut b = Bitfield::new(len);
            let mut x = seed;
            for i in 0..len {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                if x >> 63 == 1 { b.set(i); }
            }
            let c = Bitfield::from_bytes(b.as_bytes(), len).unwrap();
            prop_assert_eq!(c.count(), b.iter_set().count() as u32);
            prop_assert_eq!(c, b);
        }
    }
}
