//! Peer wire protocol (BEP 3 §"peer protocol"), with the fast extension's
//! messages (BEP 6), the DHT `port` message (BEP 5) and the envelope of the
//! extension protocol (BEP 10, message id 20).
//!
//! Owns the 68-byte [`Handshake`], the length-prefixed [`Message`]s and the
//! [`MessageDecoder`] that frames them out of a byte stream.
//!
//! Invariants:
//! - decoding never panics, whatever the bytes;
//! - a length prefix is checked against [`MessageDecoder::max_len`] before
//!   anything is reserved, so memory stays bounded by that limit;
//! - `Piece`, `Bitfield` and `Extended` payloads are zero-copy slices of the
//!   receive buffer;
//! - `decode(encode(m)) == m` for every message.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use essaim_core::{InfoHash, PeerId};
use sha1::{Digest, Sha1};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// The protocol string of the handshake (BEP 3), after its length byte 19.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// Message ids (BEP 3; `PORT` from BEP 5; 13..=17 from BEP 6; 20 from BEP 10).
mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 0x0D;
    pub const HAVE_ALL: u8 = 0x0E;
    pub const HAVE_NONE: u8 = 0x0F;
    pub const REJECT: u8 = 0x10;
    pub const ALLOWED_FAST: u8 = 0x11;
    pub const EXTENDED: u8 = 20;
}

/// Errors from the peer wire codec. Each one means the peer broke the
/// protocol (or, for [`WireError::Incomplete`], has not sent enough yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A length prefix above the decoder's limit; nothing was reserved.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLong { len: u32, max: u32 },
    /// A known message id with a payload length that does not fit it (e.g.
    /// `have` with 3 bytes). `len` is the payload length, without the id byte.
    #[error("message id {id} with a payload of {len} bytes, which does not fit it")]
    BadLength { id: u8, len: u32 },
    /// The handshake does not start with byte 19 and "BitTorrent protocol".
    #[error("not a BitTorrent handshake (expected \\x13\"BitTorrent protocol\")")]
    BadHandshake,
    /// The handshake is a correct prefix but shorter than 68 bytes.
    #[error("handshake incomplete: {needed} more bytes needed")]
    Incomplete { needed: usize },
}

/// The handshake (BEP 3): `19`, "BitTorrent protocol", 8 reserved bytes, the
/// 20-byte info hash and the 20-byte peer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
}

/// The first 20 bytes of every handshake.
const HEADER: &[u8; 20] = b"\x13BitTorrent protocol";

impl Handshake {
    pub const LEN: usize = 68;

    /// Our handshake: sets the BEP 10 extension bit (`reserved[5] & 0x10`)
    /// and the BEP 6 fast bit (`reserved[7] & 0x04`).
    pub fn new(info_hash: InfoHash, peer_id: PeerId) -> Self {
        let mut reserved = [0u8; 8];
        reserved[5] |= 0x10;
        reserved[7] |= 0x04;
        Handshake {
            reserved,
            info_hash,
            peer_id,
        }
    }

    /// Sets (or clears) the BEP 5 DHT bit, `reserved[7] & 0x01`: we run a
    /// DHT node and will send a `port` message.
    pub fn with_dht(mut self, dht: bool) -> Self {
        if dht {
            self.reserved[7] |= 0x01;
        } else {
            self.reserved[7] &= !0x01;
        }
        self
    }

    pub fn encode(&self) -> [u8; 68] {
        let mut out = [0u8; 68];
        out[..20].copy_from_slice(HEADER);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash.0);
        out[48..68].copy_from_slice(&self.peer_id.0);
        out
    }

    /// Decodes the first 68 bytes of `buf` (bytes after them are ignored).
    ///
    /// The protocol header is checked on whatever is there first, so a
    /// non-BitTorrent peer gets [`WireError::BadHandshake`] as early as its
    /// first byte; a correct but short prefix gives [`WireError::Incomplete`].
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let have = buf.len().min(HEADER.len());
        if buf.get(..have) != HEADER.get(..have) {
            return Err(WireError::BadHandshake);
        }
        let Some((fixed, _)) = buf.split_first_chunk::<68>() else {
            return Err(WireError::Incomplete {
                needed: Self::LEN.saturating_sub(buf.len()),
            });
        };
        let mut reserved = [0u8; 8];
        let mut info_hash = [0u8; 20];
        let mut peer_id = [0u8; 20];
        reserved.copy_from_slice(&fixed[20..28]);
        info_hash.copy_from_slice(&fixed[28..48]);
        peer_id.copy_from_slice(&fixed[48..68]);
        Ok(Handshake {
            reserved,
            info_hash: InfoHash(info_hash),
            peer_id: PeerId(peer_id),
        })
    }

    /// BEP 6: `reserved[7] & 0x04`.
    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    /// BEP 10: `reserved[5] & 0x10`.
    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    /// BEP 5: `reserved[7] & 0x01`.
    pub fn supports_dht(&self) -> bool {
        self.reserved[7] & 0x01 != 0
    }
}

/// The payload of `request`, `cancel` (BEP 3) and `reject` (BEP 6):
/// piece index, byte offset in the piece, length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRequest {
    pub piece: u32,
    pub begin: u32,
    pub length: u32,
}

/// A peer wire message (BEP 3 §"peer messages", BEP 5, BEP 6, BEP 10).
///
/// The codec checks only the framing; whether a message is allowed (e.g.
/// `HaveAll` without the fast bit, a bitfield of the wrong size, a request
/// past the piece end) is for the session to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A zero length prefix (BEP 3).
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have {
        piece: u32,
    },
    /// Raw bitfield bytes, high bit first (BEP 3).
    Bitfield(Bytes),
    Request(BlockRequest),
    Piece {
        piece: u32,
        begin: u32,
        data: Bytes,
    },
    Cancel(BlockRequest),
    /// The sender's DHT port (BEP 5).
    Port(u16),
    /// BEP 6 §"Suggest Piece".
    Suggest {
        piece: u32,
    },
    /// BEP 6 §"Have All/Have None".
    HaveAll,
    HaveNone,
    /// BEP 6 §"Reject Request".
    Reject(BlockRequest),
    /// BEP 6 §"Allowed Fast".
    AllowedFast {
        piece: u32,
    },
    /// BEP 10: extended message id (0 = extended handshake) and its payload.
    Extended {
        id: u8,
        payload: Bytes,
    },
    /// An id we don't know; BEP 3 says to ignore it. Payload skipped.
    Unknown {
        id: u8,
    },
}

impl Message {
    /// Bytes after the length prefix.
    fn body_len(&self) -> usize {
        match self {
            Message::KeepAlive => 0,
            Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone
            | Message::Unknown { .. } => 1,
            Message::Port(_) => 3,
            Message::Have { .. } | Message::Suggest { .. } | Message::AllowedFast { .. } => 5,
            Message::Request(_) | Message::Cancel(_) | Message::Reject(_) => 13,
            Message::Bitfield(b) => b.len().saturating_add(1),
            Message::Piece { data, .. } => data.len().saturating_add(9),
            Message::Extended { payload, .. } => payload.len().saturating_add(2),
        }
    }

    /// Framed length including the 4-byte prefix.
    pub fn encoded_len(&self) -> usize {
        self.body_len().saturating_add(4)
    }

    /// Appends the framed message (4-byte length prefix included) to dst.
    ///
    /// A payload must leave the frame under 4 GiB (the prefix is a `u32`);
    /// larger payloads are a caller bug and give a corrupt frame, not a panic.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_u32(u32::try_from(self.body_len()).unwrap_or(u32::MAX));
        let put_block = |dst: &mut BytesMut, op: u8, r: &BlockRequest| {
            dst.put_u8(op);
            dst.put_u32(r.piece);
            dst.put_u32(r.begin);
            dst.put_u32(r.length);
        };
        match self {
            Message::KeepAlive => {}
            Message::Choke => dst.put_u8(id::CHOKE),
            Message::Unchoke => dst.put_u8(id::UNCHOKE),
            Message::Interested => dst.put_u8(id::INTERESTED),
            Message::NotInterested => dst.put_u8(id::NOT_INTERESTED),
            Message::HaveAll => dst.put_u8(id::HAVE_ALL),
            Message::HaveNone => dst.put_u8(id::HAVE_NONE),
            Message::Unknown { id } => dst.put_u8(*id),
            Message::Have { piece } => {
                dst.put_u8(id::HAVE);
                dst.put_u32(*piece);
            }
            Message::Suggest { piece } => {
                dst.put_u8(id::SUGGEST);
                dst.put_u32(*piece);
            }
            Message::AllowedFast { piece } => {
                dst.put_u8(id::ALLOWED_FAST);
                dst.put_u32(*piece);
            }
            Message::Port(port) => {
                dst.put_u8(id::PORT);
                dst.put_u16(*port);
            }
            Message::Request(r) => put_block(dst, id::REQUEST, r),
            Message::Cancel(r) => put_block(dst, id::CANCEL, r),
            Message::Reject(r) => put_block(dst, id::REJECT, r),
            Message::Bitfield(b) => {
                dst.put_u8(id::BITFIELD);
                dst.put_slice(b);
            }
            Message::Piece { piece, begin, data } => {
                dst.put_u8(id::PIECE);
                dst.put_u32(*piece);
                dst.put_u32(*begin);
                dst.put_slice(data);
            }
            Message::Extended { id, payload } => {
                dst.put_u8(id::EXTENDED);
                dst.put_u8(*id);
                dst.put_slice(payload);
            }
        }
    }
}

/// Frames messages out of a byte stream. Refuses a length prefix above
/// `max_len` BEFORE reserving anything.
#[derive(Debug, Clone)]
pub struct MessageDecoder {
    max_len: u32,
}

impl MessageDecoder {
    /// Largest message accepted (the length prefix's value, i.e. id byte
    /// plus payload): callers pass e.g. max(16 KiB + 13, bitfield bytes + 1,
    /// extension limit).
    pub fn new(max_len: u32) -> Self {
        MessageDecoder { max_len }
    }

    pub fn max_len(&self) -> u32 {
        self.max_len
    }

    /// Ok(None) when more bytes are needed; consumes exactly one message from
    /// src when complete. On error `src` is left as it was; the connection
    /// should be closed.
    ///
    /// Piece/Bitfield/Extended payloads are zero-copy slices of src
    /// (`BytesMut::split_to(..).freeze()`).
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, WireError> {
        let Some(prefix) = src.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        if len == 0 {
            src.advance(4);
            return Ok(Some(Message::KeepAlive));
        }
        let too_long = WireError::MessageTooLong {
            len,
            max: self.max_len,
        };
        if len > self.max_len {
            return Err(too_long);
        }
        let frame_len = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(4))
            .ok_or(too_long)?;
        let Some(body) = src.get(4..frame_len) else {
            // Bounded by max_len, checked above.
            src.reserve(frame_len.saturating_sub(src.len()));
            return Ok(None);
        };
        let Some((&op, payload)) = body.split_first() else {
            return Ok(None); // len >= 1 here, so unreachable
        };
        let bad = WireError::BadLength {
            id: op,
            len: len.saturating_sub(1),
        };
        let msg = match op {
            id::BITFIELD => Message::Bitfield(take(src, frame_len, 5)),
            id::PIECE => {
                let Some((header, _)) = payload.split_first_chunk::<8>() else {
                    return Err(bad);
                };
                let (piece, begin) = split_u32_pair(header);
                Message::Piece {
                    piece,
                    begin,
                    data: take(src, frame_len, 13),
                }
            }
            id::EXTENDED => {
                let Some(&ext) = payload.first() else {
                    return Err(bad);
                };
                Message::Extended {
                    id: ext,
                    payload: take(src, frame_len, 6),
                }
            }
            _ => {
                let msg = parse_fixed(op, payload).ok_or(bad)?;
                src.advance(frame_len);
                msg
            }
        };
        Ok(Some(msg))
    }
}

/// Splits one frame off `src` and returns it minus its first `skip` bytes,
/// without copying.
fn take(src: &mut BytesMut, frame_len: usize, skip: usize) -> Bytes {
    let mut frame = src.split_to(frame_len);
    frame.advance(skip);
    frame.freeze()
}

fn split_u32_pair(b: &[u8; 8]) -> (u32, u32) {
    (
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    )
}

/// Parses a message without a variable payload; `None` if the payload
/// length does not fit the id. Unknown ids are accepted with any payload.
fn parse_fixed(op: u8, payload: &[u8]) -> Option<Message> {
    let empty = |m: Message| payload.is_empty().then_some(m);
    let index = || payload.try_into().ok().map(u32::from_be_bytes);
    let block = || {
        let b: &[u8; 12] = payload.try_into().ok()?;
        let [p0, p1, p2, p3, b0, b1, b2, b3, l0, l1, l2, l3] = *b;
        Some(BlockRequest {
            piece: u32::from_be_bytes([p0, p1, p2, p3]),
            begin: u32::from_be_bytes([b0, b1, b2, b3]),
            length: u32::from_be_bytes([l0, l1, l2, l3]),
        })
    };
    match op {
        id::CHOKE => empty(Message::Choke),
        id::UNCHOKE => empty(Message::Unchoke),
        id::INTERESTED => empty(Message::Interested),
        id::NOT_INTERESTED => empty(Message::NotInterested),
        id::HAVE_ALL => empty(Message::HaveAll),
        id::HAVE_NONE => empty(Message::HaveNone),
        id::HAVE => index().map(|piece| Message::Have { piece }),
        id::SUGGEST => index().map(|piece| Message::Suggest { piece }),
        id::ALLOWED_FAST => index().map(|piece| Message::AllowedFast { piece }),
        id::REQUEST => block().map(Message::Request),
        id::CANCEL => block().map(Message::Cancel),
        id::REJECT => block().map(Message::Reject),
        id::PORT => payload
            .try_into()
            .ok()
            .map(u16::from_be_bytes)
            .map(Message::Port),
        _ => Some(Message::Unknown { id: op }),
    }
}

/// The allowed fast set of the peer at `ip` (BEP 6 §"Allowed Fast Set
/// Generation", the canonical algorithm): the first `k` distinct indices of
/// the SHA-1 chain seeded with `(ip & 0xFFFFFF00) ++ info_hash`.
///
/// `k` is capped at `num_pieces`; with no pieces the set is empty.
pub fn allowed_fast_set(info_hash: &InfoHash, ip: Ipv4Addr, num_pieces: u32, k: usize) -> Vec<u32> {
    let k = k.min(usize::try_from(num_pieces).unwrap_or(usize::MAX));
    let mut set = Vec::with_capacity(k);
    if k == 0 {
        return set;
    }
    let mut seen = HashSet::with_capacity(k);
    let masked = u32::from(ip) & 0xFFFF_FF00;
    let mut x: [u8; 20] = Sha1::new()
        .chain_update(masked.to_be_bytes())
        .chain_update(info_hash.0)
        .finalize()
        .into();
    loop {
        for j in [0, 4, 8, 12, 16] {
            let y = u32::from_be_bytes([x[j], x[j + 1], x[j + 2], x[j + 3]]);
            let index = y % num_pieces;
            if seen.insert(index) {
                set.push(index);
                if set.len() >= k {
                    return set;
                }
            }
        }
        x = Sha1::digest(x).into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decoder() -> MessageDecoder {
        MessageDecoder::new(16 * 1024 + 13)
    }

    fn encode(m: &Message) -> BytesMut {
        let mut b = BytesMut::new();
        m.encode(&mut b);
        b
    }

    fn decode_all(dec: &mut MessageDecoder, buf: &mut BytesMut) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(m) = dec.decode(buf).unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn handshake_round_trip_and_bits() {
        let hs = Handshake::new(InfoHash([0xaa; 20]), PeerId(*b"-ES0100-abcdefghijkl"));
        let bytes = hs.encode();
        assert_eq!(bytes[0], 19);
        assert_eq!(&bytes[1..20], PROTOCOL);
        assert_eq!(bytes[20..28], [0, 0, 0, 0, 0, 0x10, 0, 0x04]);
        assert_eq!(Handshake::decode(&bytes), Ok(hs));
        assert!(hs.supports_fast() && hs.supports_extensions() && !hs.supports_dht());
        let mut dht = hs;
        dht.reserved = [0, 0, 0, 0, 0, 0, 0, 0x01];
        assert!(dht.supports_dht() && !dht.supports_fast() && !dht.supports_extensions());
        let ours = Handshake::new(hs.info_hash, hs.peer_id).with_dht(true);
        assert!(ours.supports_dht() && ours.supports_fast() && ours.supports_extensions());
        assert!(!ours.with_dht(false).supports_dht());
        // Trailing bytes (the first message) are ignored.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(Handshake::decode(&longer), Ok(hs));
    }

    #[test]
    fn handshake_errors() {
        let bytes = Handshake::new(InfoHash([1; 20]), PeerId([2; 20])).encode();
        assert_eq!(
            Handshake::decode(&bytes[..67]),
            Err(WireError::Incomplete { needed: 1 })
        );
        assert_eq!(
            Handshake::decode(&[]),
            Err(WireError::Incomplete { needed: 68 })
        );
        assert_eq!(
            Handshake::decode(b"GET / HTTP/1.1"),
            Err(WireError::BadHandshake)
        );
        assert_eq!(Handshake::decode(&[18]), Err(WireError::BadHandshake));
        let mut wrong = bytes;
        wrong[5] = b't';
        assert_eq!(Handshake::decode(&wrong), Err(WireError::BadHandshake));
    }

    /// Hex with spaces for readability.
    fn h(s: &str) -> Vec<u8> {
        essaim_core::types::from_hex(&s.replace(' ', "")).unwrap()
    }

    /// Byte layouts from BEP 3 §"peer messages", BEP 5 (port) and BEP 6.
    #[test]
    fn encoding_vectors() {
        let r = BlockRequest {
            piece: 1,
            begin: 0x4000,
            length: 0x4000,
        };
        let data = Bytes::from_static(b"ab");
        let cases = [
            (Message::KeepAlive, "00000000"),
            (Message::Choke, "00000001 00"),
            (Message::Unchoke, "00000001 01"),
            (Message::Interested, "00000001 02"),
            (Message::NotInterested, "00000001 03"),
            (Message::Have { piece: 258 }, "00000005 04 00000102"),
            (
                Message::Bitfield(Bytes::from_static(&[0xf0])),
                "00000002 05 f0",
            ),
            (
                Message::Request(r),
                "0000000d 06 00000001 00004000 00004000",
            ),
            (
                Message::Piece {
                    piece: 1,
                    begin: 2,
                    data,
                },
                "0000000b 07 00000001 00000002 6162",
            ),
            (Message::Cancel(r), "0000000d 08 00000001 00004000 00004000"),
            (Message::Port(6881), "00000003 09 1ae1"),
            (Message::Suggest { piece: 7 }, "00000005 0d 00000007"),
            (Message::HaveAll, "00000001 0e"),
            (Message::HaveNone, "00000001 0f"),
            (Message::Reject(r), "0000000d 10 00000001 00004000 00004000"),
            (Message::AllowedFast { piece: 7 }, "00000005 11 00000007"),
            (
                Message::Extended {
                    id: 0,
                    payload: Bytes::from_static(b"de"),
                },
                "00000004 14 00 6465",
            ),
        ];
        for (msg, hex) in cases {
            let bytes = h(hex);
            assert_eq!(&encode(&msg)[..], &bytes[..], "{msg:?}");
            assert_eq!(msg.encoded_len(), bytes.len());
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(decoder().decode(&mut buf), Ok(Some(msg)));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn huge_prefix_refused_without_allocation() {
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 7]);
        let cap = buf.capacity();
        let err = WireError::MessageTooLong {
            len: u32::MAX,
            max: 16 * 1024 + 13,
        };
        assert_eq!(decoder().decode(&mut buf), Err(err));
        assert_eq!((buf.capacity(), buf.len()), (cap, 5));
        // Just above the limit is refused too; at the limit only the frame is reserved.
        let mut buf = BytesMut::from(&(16u32 * 1024 + 14).to_be_bytes()[..]);
        assert!(matches!(
            decoder().decode(&mut buf),
            Err(WireError::MessageTooLong { .. })
        ));
        let mut buf = BytesMut::from(&(16u32 * 1024 + 13).to_be_bytes()[..]);
        assert_eq!(decoder().decode(&mut buf), Ok(None));
        assert!(buf.capacity() >= 16 * 1024 + 17 && buf.capacity() < 64 * 1024);
    }

    #[test]
    fn wrong_lengths_are_bad_length() {
        let decode = |hex: &str| decoder().decode(&mut BytesMut::from(&h(hex)[..]));
        let cases = [
            ("00000004 04 000001", 4, 3), // have with 3 bytes
            ("00000002 00 00", 0, 1),     // choke with a payload
            ("0000000c 06 0000000000000000000000", 6, 11),
            ("0000000e 06 00000000000000000000000000", 6, 13),
            ("0000000c 08 0000000000000000000000", 8, 11),
            ("0000000e 10 00000000000000000000000000", 0x10, 13),
            ("00000008 07 00000001000000", 7, 7), // piece without its begin
            ("00000001 14", 20, 0),               // extended without its id
            ("00000002 09 00", 9, 1),
            ("00000002 0e 00", 0x0e, 1),
        ];
        for (hex, id, len) in cases {
            assert_eq!(decode(hex), Err(WireError::BadLength { id, len }), "{hex}");
        }
        // A piece with an empty block and a bitfield with no bytes frame fine.
        let empty_piece = Message::Piece {
            piece: 1,
            begin: 2,
            data: Bytes::new(),
        };
        assert_eq!(
            decode("00000009 07 00000001 00000002"),
            Ok(Some(empty_piece))
        );
        assert_eq!(
            decode("00000001 05"),
            Ok(Some(Message::Bitfield(Bytes::new())))
        );
    }

    #[test]
    fn keep_alive_and_unknown_ids_are_skipped() {
        let mut buf =
            BytesMut::from(&h("00000000 00000004 63 010203 00000005 04 00000009 0000")[..]);
        let mut dec = decoder();
        assert_eq!(
            decode_all(&mut dec, &mut buf),
            [
                Message::KeepAlive,
                Message::Unknown { id: 99 },
                Message::Have { piece: 9 }
            ]
        );
        assert_eq!(&buf[..], &[0, 0]);
    }

    #[test]
    fn payloads_are_zero_copy() {
        let msg = Message::Piece {
            piece: 3,
            begin: 0,
            data: Bytes::from(vec![7u8; 1000]),
        };
        let mut buf = encode(&msg);
        let start = buf.as_ptr() as usize;
        let Some(Message::Piece { data, .. }) = decoder().decode(&mut buf).unwrap() else {
            panic!("not a piece");
        };
        assert_eq!(data.as_ptr() as usize, start + 13);
    }

    /// BEP 6 §"Allowed Fast Set Generation", example results.
    #[test]
    fn allowed_fast_vectors() {
        let ih = InfoHash([0xaa; 20]);
        let ip = Ipv4Addr::new(80, 4, 4, 200);
        assert_eq!(
            allowed_fast_set(&ih, ip, 1313, 7),
            [1059, 431, 808, 1217, 287, 376, 1188]
        );
        assert_eq!(
            allowed_fast_set(&ih, ip, 1313, 9),
            [1059, 431, 808, 1217, 287, 376, 1188, 353, 508]
        );
        // The last octet is masked off.
        assert_eq!(
            allowed_fast_set(&ih, Ipv4Addr::new(80, 4, 4, 1), 1313, 7),
            allowed_fast_set(&ih, ip, 1313, 7)
        );
        assert!(allowed_fast_set(&ih, ip, 0, 10).is_empty());
        let mut all = allowed_fast_set(&ih, ip, 5, 10);
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3, 4]);
    }

    const KNOWN_IDS: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 20];

    fn arb_block() -> impl Strategy<Value = BlockRequest> {
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(piece, begin, length)| BlockRequest {
            piece,
            begin,
            length,
        })
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            Just(Message::KeepAlive),
            Just(Message::Choke),
            Just(Message::Unchoke),
            Just(Message::Interested),
            Just(Message::NotInterested),
            any::<u32>().prop_map(|piece| Message::Have { piece }),
            arb_bytes(64).prop_map(Message::Bitfield),
            arb_block().prop_map(Message::Request),
            (any::<u32>(), any::<u32>(), arb_bytes(300))
                .prop_map(|(piece, begin, data)| Message::Piece { piece, begin, data }),
            arb_block().prop_map(Message::Cancel),
            any::<u16>().prop_map(Message::Port),
            any::<u32>().prop_map(|piece| Message::Suggest { piece }),
            Just(Message::HaveAll),
            Just(Message::HaveNone),
            arb_block().prop_map(Message::Reject),
            any::<u32>().prop_map(|piece| Message::AllowedFast { piece }),
            (any::<u8>(), arb_bytes(100))
                .prop_map(|(id, payload)| Message::Extended { id, payload }),
            any::<u8>()
                .prop_filter("unknown id", |op| !KNOWN_IDS.contains(op))
                .prop_map(|id| Message::Unknown { id }),
        ]
    }

    proptest! {
        #[test]
        fn message_round_trip(msg in arb_message()) {
            let mut buf = encode(&msg);
            prop_assert_eq!(buf.len(), msg.encoded_len());
            prop_assert_eq!(decoder().decode(&mut buf), Ok(Some(msg)));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn stream_round_trip_in_any_chunking(
            msgs in proptest::collection::vec(arb_message(), 0..20),
            cuts in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let mut wire = BytesMut::new();
            for m in &msgs {
                m.encode(&mut wire);
            }
            // Byte by byte.
            let mut dec = decoder();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for &b in wire.iter() {
                buf.put_u8(b);
                got.extend(decode_all(&mut dec, &mut buf));
            }
            prop_assert_eq!(&got, &msgs);
            prop_assert!(buf.is_empty());
            // Random chunk sizes, cycled.
            let mut got = Vec::new();
            let mut rest = &wire[..];
            for &cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at(cut.min(rest.len()));
                buf.extend_from_slice(chunk);
                rest = tail;
                got.extend(decode_all(&mut dec, &mut buf));
            }
            prop_assert_eq!(got, msgs);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0u32..600) {
            let mut dec = MessageDecoder::new(max);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
            prop_assert!(buf.capacity() <= bytes.len().max(max as usize + 4) * 2 + 64);
            let _ = Handshake::decode(&bytes);
        }

        #[test]
        fn handshake_round_trip(reserved in any::<[u8; 8]>(), ih in any::<[u8; 20]>(), id in any::<[u8; 20]>()) {
            let hs = Handshake { reserved, info_hash: InfoHash(ih), peer_id: PeerId(id) };
            prop_assert_eq!(Handshake::decode(&hs.encode()), Ok(hs));
        }

        #[test]
        fn allowed_fast_is_distinct_and_in_range(ih in any::<[u8; 20]>(), ip in any::<u32>(), n in 1u32..2000, k in 0usize..20) {
            let set = allowed_fast_set(&InfoHash(ih), Ipv4Addr::from(ip), n, k);
            prop_assert_eq!(set.len(), k.min(n as usize));
            prop_assert!(set.iter().all(|&i| i < n));
            prop_assert_eq!(set.iter().collect::<HashSet<_>>().len(), set.len());
            // A longer set extends the shorter one (BEP 6: "the same k plus one more").
            let longer = allowed_fast_set(&InfoHash(ih), Ipv4Addr::from(ip), n, k + 1);
            prop_assert_eq!(&longer[..set.len()], &set[..]);
        }
    }
}
