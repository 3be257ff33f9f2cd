//! Extension protocol (BEP 10): the extended handshake, and the `ut_metadata`
//! messages of BEP 9 that travel inside extended messages.
//!
//! These are the payloads of [`crate::peer::Message::Extended`], after its
//! extended message id byte. Both decoders take untrusted bytes: bencode is
//! parsed by `essaim_core::bencode` (depth-limited, lengths checked against
//! the input), the number of `m` entries is capped at [`MAX_EXTENSIONS`], and
//! a metadata piece is refused above [`METADATA_PIECE_SIZE`]. Nothing is
//! allocated beyond what the (already length-checked) payload holds.

use bytes::Bytes;
use essaim_core::bencode::{self, DecodeError, OwnedValue, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The extended message id we ask peers to use for `ut_metadata` (BEP 9).
pub const UT_METADATA_ID: u8 = 1;
/// The extended message id we ask peers to use for `ut_pex` (BEP 11).
pub const UT_PEX_ID: u8 = 2;
/// Size of every metadata piece but the last (BEP 9: 16 KiB).
pub const METADATA_PIECE_SIZE: usize = 16384;
/// Most entries accepted in a handshake's `m` dictionary.
pub const MAX_EXTENSIONS: usize = 128;

/// What was wrong with an extension protocol payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    #[error("extension message is not valid bencode: {0}")]
    Bencode(#[from] DecodeError),
    #[error("extension message is not a bencoded dictionary")]
    NotADict,
    #[error("extended handshake lists {count} extensions, more than the {max} accepted")]
    TooManyExtensions { count: usize, max: usize },
    #[error("ut_metadata message with a missing or invalid `{0}`")]
    BadField(&'static str),
    /// BEP 9: "an unrecognized message ID MUST be ignored"; callers should
    /// drop the message and keep the connection.
    #[error("ut_metadata message type {0} is unknown")]
    UnknownMessageType(i64),
    #[error("ut_metadata piece of {len} bytes is larger than {METADATA_PIECE_SIZE}")]
    PieceTooLarge { len: usize },
}

/// The extended handshake (extended message id 0) dictionary (BEP 10
/// §"handshake message"; `metadata_size` from BEP 9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtendedHandshake {
    /// `m`: extension name -> message id this peer wants to receive (0 =
    /// disabled, entries with 0 are kept as "disabled"). In input order.
    pub extensions: Vec<(String, u8)>,
    /// `v`: client name and version.
    pub client: Option<String>,
    /// `p`: the sender's TCP listen port.
    pub listen_port: Option<u16>,
    /// `reqq`: how many outstanding requests the sender accepts.
    pub reqq: Option<u32>,
    /// `yourip`: the receiver's address as the sender sees it (4 or 16 bytes).
    pub your_ip: Option<IpAddr>,
    /// `metadata_size`: size of the info dictionary in bytes (BEP 9).
    pub metadata_size: Option<u64>,
}

impl ExtendedHandshake {
    /// The id the peer wants for extension `name`; `None` if absent or 0
    /// (BEP 10: "Setting an extension number to zero means that the extension
    /// is not supported/disabled").
    pub fn extension_id(&self, name: &str) -> Option<u8> {
        self.extensions
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, id)| id)
            .filter(|&id| id != 0)
    }

    /// The bencoded dictionary payload (without the extended id byte). Keys
    /// are sorted as BEP 3 requires; a `metadata_size` above `i64::MAX`
    /// cannot be bencoded and is left out.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = OwnedValue::dict();
        for (name, id) in &self.extensions {
            m.insert(name, i64::from(*id));
        }
        let mut d = OwnedValue::dict().with("m", m);
        if let Some(v) = &self.client {
            d.insert("v", v.as_str());
        }
        if let Some(p) = self.listen_port {
            d.insert("p", i64::from(p));
        }
        if let Some(reqq) = self.reqq {
            d.insert("reqq", i64::from(reqq));
        }
        match self.your_ip {
            Some(IpAddr::V4(ip)) => d.insert("yourip", ip.octets().to_vec()),
            Some(IpAddr::V6(ip)) => d.insert("yourip", ip.octets().to_vec()),
            None => {}
        }
        if let Some(size) = self.metadata_size.and_then(|s| i64::try_from(s).ok()) {
            d.insert("metadata_size", size);
        }
        d.encode()
    }

    /// Parses the handshake dictionary. Lenient, as BEP 10 asks ("Any unknown
    /// names should be ignored"): optional fields of the wrong type or out of
    /// range are ignored (`p` must be 1..=65535, `m` ids 0..=255, names
    /// UTF-8), and bytes after the dictionary are ignored. Errors: not a
    /// bencoded dictionary, or more than [`MAX_EXTENSIONS`] `m` entries.
    pub fn decode(payload: &[u8]) -> Result<Self, ExtensionError> {
        let (value, _trailing) = bencode::decode_prefix(payload)?;
        if value.as_dict().is_none() {
            return Err(ExtensionError::NotADict);
        }
        let int = |key: &[u8]| value.get(key).and_then(Value::as_int);
        let bytes = |key: &[u8]| value.get(key).and_then(Value::as_bytes);
        let mut extensions = Vec::new();
        if let Some(m) = value.get(b"m").and_then(Value::as_dict) {
            if m.len() > MAX_EXTENSIONS {
                return Err(ExtensionError::TooManyExtensions {
                    count: m.len(),
                    max: MAX_EXTENSIONS,
                });
            }
            extensions = m
                .iter()
                .filter_map(|(name, id)| {
                    let name = std::str::from_utf8(name).ok()?;
                    let id = u8::try_from(id.as_int()?).ok()?;
                    Some((name.to_owned(), id))
                })
                .collect();
        }
        Ok(ExtendedHandshake {
            extensions,
            client: bytes(b"v").map(|v| String::from_utf8_lossy(v).into_owned()),
            listen_port: int(b"p")
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0),
            reqq: int(b"reqq").and_then(|r| u32::try_from(r).ok()),
            your_ip: bytes(b"yourip").and_then(compact_ip),
            metadata_size: int(b"metadata_size").and_then(|s| u64::try_from(s).ok()),
        })
    }
}

/// A compact address (BEP 10 `yourip`): 4 bytes IPv4 or 16 bytes IPv6.
fn compact_ip(b: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        Some(IpAddr::V4(Ipv4Addr::from(v4)))
    } else {
        <[u8; 16]>::try_from(b)
            .ok()
            .map(|v6| IpAddr::V6(Ipv6Addr::from(v6)))
    }
}

/// BEP 9 ut_metadata message: `msg_type` 0 (request), 1 (data), 2 (reject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMessage {
    Request {
        piece: u32,
    },
    /// A metadata piece; `data` follows the dictionary in the payload and
    /// is at most [`METADATA_PIECE_SIZE`] bytes.
    Data {
        piece: u32,
        total_size: u64,
        data: Bytes,
    },
    Reject {
        piece: u32,
    },
}

impl MetadataMessage {
    /// The payload (without the extended id byte): the bencoded dictionary,
    /// followed for `Data` by the piece bytes (BEP 9 §"data"). A
    /// `total_size` above `i64::MAX` cannot be bencoded and is clamped.
    pub fn encode(&self) -> Vec<u8> {
        let (msg_type, piece) = match self {
            MetadataMessage::Request { piece } => (0, piece),
            MetadataMessage::Data { piece, .. } => (1, piece),
            MetadataMessage::Reject { piece } => (2, piece),
        };
        let mut d = OwnedValue::dict()
            .with("msg_type", msg_type)
            .with("piece", i64::from(*piece));
        if let MetadataMessage::Data { total_size, .. } = self {
            d.insert("total_size", i64::try_from(*total_size).unwrap_or(i64::MAX));
        }
        let mut out = d.encode();
        if let MetadataMessage::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
        out
    }

    /// Parses a ut_metadata payload. `Data` is a zero-copy slice of
    /// `payload`. An unknown `msg_type` gives
    /// [`ExtensionError::UnknownMessageType`], which BEP 9 says to ignore.
    /// Whether `piece` and `total_size` agree with the torrent is for the
    /// caller to check.
    pub fn decode(payload: &Bytes) -> Result<Self, ExtensionError> {
        let (value, rest) = bencode::decode_prefix(payload)?;
        if value.as_dict().is_none() {
            return Err(ExtensionError::NotADict);
        }
        let int = |key: &[u8]| value.get(key).and_then(Value::as_int);
        let msg_type = int(b"msg_type").ok_or(ExtensionError::BadField("msg_type"))?;
        if !(0..=2).contains(&msg_type) {
            return Err(ExtensionError::UnknownMessageType(msg_type));
        }
        let piece = int(b"piece")
            .and_then(|p| u32::try_from(p).ok())
            .ok_or(ExtensionError::BadField("piece"))?;
        Ok(match msg_type {
            0 => MetadataMessage::Request { piece },
            2 => MetadataMessage::Reject { piece },
            _ => {
                let total_size = int(b"total_size")
                    .and_then(|s| u64::try_from(s).ok())
                    .ok_or(ExtensionError::BadField("total_size"))?;
                if rest.len() > METADATA_PIECE_SIZE {
                    return Err(ExtensionError::PieceTooLarge { len: rest.len() });
                }
                let start = payload.len().saturating_sub(rest.len());
                MetadataMessage::Data {
                    piece,
                    total_size,
                    data: payload.slice(start..),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn md(bytes: &[u8]) -> Result<MetadataMessage, ExtensionError> {
        MetadataMessage::decode(&Bytes::copy_from_slice(bytes))
    }

    /// BEP 9 §"extension message" examples.
    #[test]
    fn metadata_vectors() {
        let request = MetadataMessage::Request { piece: 0 };
        assert_eq!(request.encode(), b"d8:msg_typei0e5:piecei0ee");
        assert_eq!(md(b"d8:msg_typei0e5:piecei0ee"), Ok(request));
        // BEP 9's reject example carries msg_type 1 by mistake; 2 is reject.
        let reject = MetadataMessage::Reject { piece: 0 };
        assert_eq!(reject.encode(), b"d8:msg_typei2e5:piecei0ee");
        assert_eq!(md(b"d8:msg_typei2e5:piecei0ee"), Ok(reject));
        let wire = b"d8:msg_typei1e5:piecei0e10:total_sizei34256eexxxxxxxx";
        let data = MetadataMessage::Data {
            piece: 0,
            total_size: 34256,
            data: Bytes::from_static(b"xxxxxxxx"),
        };
        assert_eq!(data.encode(), wire);
        assert_eq!(md(wire), Ok(data));
    }

    #[test]
    fn metadata_data_is_zero_copy() {
        let payload = Bytes::from_static(b"d8:msg_typei1e5:piecei2e10:total_sizei5eeabcde");
        let Ok(MetadataMessage::Data { data, .. }) = MetadataMessage::decode(&payload) else {
            panic!("not data");
        };
        assert_eq!(data.as_ptr() as usize, payload.as_ptr() as usize + 41);
        assert_eq!(&data[..], b"abcde");
    }

    #[test]
    fn metadata_errors() {
        use ExtensionError::*;
        assert_eq!(md(b"d8:msg_typei3e5:piecei0ee"), Err(UnknownMessageType(3)));
        assert_eq!(md(b"d8:msg_typei9ee"), Err(UnknownMessageType(9)));
        assert_eq!(md(b"d5:piecei0ee"), Err(BadField("msg_type")));
        assert_eq!(md(b"d8:msg_typei0ee"), Err(BadField("piece")));
        assert_eq!(md(b"d8:msg_typei0e5:piecei-1ee"), Err(BadField("piece")));
        assert_eq!(
            md(b"d8:msg_typei0e5:piecei4294967296ee"),
            Err(BadField("piece"))
        );
        assert_eq!(
            md(b"d8:msg_typei1e5:piecei0ee"),
            Err(BadField("total_size"))
        );
        assert_eq!(md(b"li0ee"), Err(NotADict));
        assert!(matches!(md(b"d8:msg_type"), Err(Bencode(_))));
        let mut big = b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee".to_vec();
        big.resize(big.len() + METADATA_PIECE_SIZE + 1, 0);
        assert_eq!(
            md(&big),
            Err(PieceTooLarge {
                len: METADATA_PIECE_SIZE + 1
            })
        );
        big.pop();
        assert!(md(&big).is_ok());
    }

    /// BEP 10 §"handshake message" example. The BEP prints `6:µT_PEX` and
    /// `13:\xc2\xb5Torrent 1.2`; the 6 only fits a one-byte (Latin-1) µ in the
    /// key, which is then not UTF-8 and ignored.
    #[test]
    fn bep10_example() {
        let wire = b"d1:md11:LT_metadatai1e6:\xb5T_PEXi2ee1:pi6881e1:v13:\xc2\xb5Torrent 1.2e";
        let hs = ExtendedHandshake::decode(wire).unwrap();
        assert_eq!(hs.extensions, [("LT_metadata".to_owned(), 1)]);
        assert_eq!(hs.extension_id("LT_metadata"), Some(1));
        assert_eq!(hs.listen_port, Some(6881));
        assert_eq!(hs.client.as_deref(), Some("µTorrent 1.2"));
        // Disabling an extension: id 0 is kept but reads as absent.
        let off = ExtendedHandshake::decode(b"d1:md11:LT_metadatai0eee").unwrap();
        assert_eq!(off.extensions, [("LT_metadata".to_owned(), 0)]);
        assert_eq!(off.extension_id("LT_metadata"), None);
        assert_eq!(off.extension_id("ut_pex"), None);
    }

    /// BEP 9 §"extension header" example.
    #[test]
    fn bep9_example() {
        let hs = ExtendedHandshake::decode(b"d1:md11:ut_metadatai3ee13:metadata_sizei31235ee");
        let hs = hs.unwrap();
        assert_eq!(hs.extension_id("ut_metadata"), Some(3));
        assert_eq!(hs.metadata_size, Some(31235));
    }

    /// Shaped like the handshake libtorrent 2.0 sends.
    #[test]
    fn libtorrent_like_handshake() {
        let wire: &[u8] = b"d12:complete_agoi-1e1:md11:lt_donthavei7e10:share_modei8e\
            11:upload_onlyi3e12:ut_holepunchi4e11:ut_metadatai2e6:ut_pexi1ee\
            13:metadata_sizei5032e1:pi51413e4:reqqi500e11:upload_onlyi1e\
            1:v17:libtorrent/2.0.106:yourip4:\xc0\xa8\x01\x02e";
        let hs = ExtendedHandshake::decode(wire).unwrap();
        let names: Vec<_> = hs
            .extensions
            .iter()
            .map(|(n, id)| (n.as_str(), *id))
            .collect();
        assert_eq!(
            names,
            [
                ("lt_donthave", 7),
                ("share_mode", 8),
                ("upload_only", 3),
                ("ut_holepunch", 4),
                ("ut_metadata", 2),
                ("ut_pex", 1)
            ]
        );
        assert_eq!(hs.extension_id("ut_metadata"), Some(2));
        assert_eq!(hs.extension_id("ut_pex"), Some(1));
        assert_eq!(hs.client.as_deref(), Some("libtorrent/2.0.10"));
        assert_eq!(hs.listen_port, Some(51413));
        assert_eq!(hs.reqq, Some(500));
        assert_eq!(hs.your_ip, Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2))));
        assert_eq!(hs.metadata_size, Some(5032));
    }

    #[test]
    fn handshake_is_lenient_with_optional_fields() {
        let wire = b"d1:md1:ai300e1:b3:xyz1:ci-1e1:di5ee13:metadata_sizei-5e\
            1:pi70000e4:reqq3:abc1:vi1e6:yourip5:abcdee";
        let hs = ExtendedHandshake::decode(wire).unwrap();
        assert_eq!(hs.extensions, [("d".to_owned(), 5)]);
        assert_eq!(hs.client, None);
        assert_eq!(hs.listen_port, None);
        assert_eq!(hs.reqq, None);
        assert_eq!(hs.your_ip, None);
        assert_eq!(hs.metadata_size, None);
        assert_eq!(
            ExtendedHandshake::decode(b"d1:pi0ee").unwrap().listen_port,
            None
        );
        assert_eq!(
            ExtendedHandshake::decode(b"d1:mi1ee"),
            Ok(ExtendedHandshake::default())
        );
        assert_eq!(
            ExtendedHandshake::decode(b"de"),
            Ok(ExtendedHandshake::default())
        );
        let v6 = b"d6:yourip16:\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01e";
        assert_eq!(
            ExtendedHandshake::decode(v6).unwrap().your_ip,
            "2001:db8::1".parse().ok()
        );
    }

    #[test]
    fn handshake_errors() {
        assert_eq!(
            ExtendedHandshake::decode(b"i1e"),
            Err(ExtensionError::NotADict)
        );
        assert!(matches!(
            ExtendedHandshake::decode(b""),
            Err(ExtensionError::Bencode(_))
        ));
        let mut many = b"d1:md".to_vec();
        for i in 0..=MAX_EXTENSIONS {
            let name = format!("x{i:03}");
            many.extend_from_slice(format!("{}:{name}i1e", name.len()).as_bytes());
        }
        many.extend_from_slice(b"ee");
        assert_eq!(
            ExtendedHandshake::decode(&many),
            Err(ExtensionError::TooManyExtensions {
                count: 129,
                max: 128
            })
        );
    }

    /// The bencode policy (see `essaim_core::bencode`) holds for both
    /// extension messages: hostile values anywhere are refused, keys out of
    /// order are accepted, a repeated key is refused. Bytes after the
    /// dictionary are ignored in a handshake (BEP 10 allows extending it)
    /// and are the piece data of a ut_metadata `data` message (BEP 9).
    #[test]
    fn bencode_policy_at_the_extension_entry_points() {
        use essaim_core::bencode::DecodeErrorKind as K;
        let hs_kind = |b: &[u8]| match ExtendedHandshake::decode(b) {
            Err(ExtensionError::Bencode(e)) => e.kind,
            other => panic!("expected a bencode error, got {other:?}"),
        };
        let md_kind = |b: &[u8]| match md(b) {
            Err(ExtensionError::Bencode(e)) => e.kind,
            other => panic!("expected a bencode error, got {other:?}"),
        };
        let mut deep = "l".repeat(100_000);
        deep.push_str(&"e".repeat(100_000));
        for (value, want) in [
            (deep.as_str(), K::TooDeep),
            ("9223372036854775808:x", K::InvalidLength),
            ("18446744073709551617:x", K::InvalidLength),
            ("i03e", K::InvalidInteger),
            ("i-0e", K::InvalidInteger),
        ] {
            // In an unknown key (BEP 10: ignored, but still parsed) and in
            // the `m` dictionary.
            let hs = format!("d1:md11:ut_metadatai1ee1:z{value}e");
            assert_eq!(hs_kind(hs.as_bytes()), want, "{:.40}", value);
            let hs = format!("d1:md11:ut_metadata{value}ee");
            assert_eq!(hs_kind(hs.as_bytes()), want, "{:.40}", value);
            let msg = format!("d8:msg_typei0e5:piecei0e1:z{value}e");
            assert_eq!(md_kind(msg.as_bytes()), want, "{:.40}", value);
            let msg = format!("d8:msg_typei0e5:piece{value}e");
            assert_eq!(md_kind(msg.as_bytes()), want, "{:.40}", value);
        }
        // Repeated keys, including inside `m`, where a second id for one
        // extension would be ambiguous.
        assert_eq!(hs_kind(b"d1:md6:ut_pexi1e6:ut_pexi2eee"), K::DuplicateKey);
        assert_eq!(hs_kind(b"d1:pi1e1:md6:ut_pexi1ee1:pi2ee"), K::DuplicateKey);
        assert_eq!(
            md_kind(b"d8:msg_typei0e5:piecei0e5:piecei1ee"),
            K::DuplicateKey
        );
        // Out of order: accepted.
        let hs =
            ExtendedHandshake::decode(b"d1:pi6881e1:md6:ut_pexi2e11:ut_metadatai1eee").unwrap();
        assert_eq!(hs.listen_port, Some(6881));
        assert_eq!(hs.extension_id("ut_metadata"), Some(1));
        assert_eq!(hs.extension_id("ut_pex"), Some(2));
        assert_eq!(
            md(b"d5:piecei3e8:msg_typei0ee"),
            Ok(MetadataMessage::Request { piece: 3 })
        );
        // After the dictionary: ignored in a handshake, data in a message.
        let hs = ExtendedHandshake::decode(b"d1:pi6881eeXYZ").unwrap();
        assert_eq!(hs.listen_port, Some(6881));
        assert_eq!(
            md(b"d8:msg_typei1e5:piecei0e10:total_sizei3eeXYZ"),
            Ok(MetadataMessage::Data {
                piece: 0,
                total_size: 3,
                data: Bytes::from_static(b"XYZ"),
            })
        );
    }

    #[test]
    fn our_handshake_encoding() {
        let hs = ExtendedHandshake {
            extensions: vec![
                ("ut_pex".into(), UT_PEX_ID),
                ("ut_metadata".into(), UT_METADATA_ID),
            ],
            client: Some("essaim 0.1.0".into()),
            listen_port: Some(6881),
            reqq: Some(250),
            your_ip: Some(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))),
            metadata_size: Some(31235),
        };
        let expected: &[u8] = b"d1:md11:ut_metadatai1e6:ut_pexi2ee13:metadata_sizei31235e\
            1:pi6881e4:reqqi250e1:v12:essaim 0.1.06:yourip4:\x01\x02\x03\x04e";
        assert_eq!(hs.encode(), expected);
        assert_eq!(ExtendedHandshake::default().encode(), b"d1:mdee");
    }

    fn arb_handshake() -> impl Strategy<Value = ExtendedHandshake> {
        let ip = prop_oneof![
            any::<[u8; 4]>().prop_map(|b| IpAddr::V4(b.into())),
            any::<[u8; 16]>().prop_map(|b| IpAddr::V6(b.into())),
        ];
        (
            proptest::collection::btree_map("[a-zA-Z_µ]{1,16}", any::<u8>(), 0..20),
            proptest::option::of(".{0,32}"),
            proptest::option::of(1u16..),
            proptest::option::of(any::<u32>()),
            proptest::option::of(ip),
            proptest::option::of(0..=i64::MAX as u64),
        )
            .prop_map(|(m, client, listen_port, reqq, your_ip, metadata_size)| {
                ExtendedHandshake {
                    extensions: m.into_iter().collect(),
                    client,
                    listen_port,
                    reqq,
                    your_ip,
                    metadata_size,
                }
            })
    }

    fn arb_metadata() -> impl Strategy<Value = MetadataMessage> {
        let data = proptest::collection::vec(any::<u8>(), 0..=METADATA_PIECE_SIZE);
        prop_oneof![
            any::<u32>().prop_map(|piece| MetadataMessage::Request { piece }),
            any::<u32>().prop_map(|piece| MetadataMessage::Reject { piece }),
            (any::<u32>(), 0..=i64::MAX as u64, data).prop_map(|(piece, total_size, data)| {
                MetadataMessage::Data {
                    piece,
                    total_size,
                    data: data.into(),
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn handshake_round_trip(hs in arb_handshake()) {
            prop_assert_eq!(ExtendedHandshake::decode(&hs.encode()), Ok(hs));
        }

        #[test]
        fn metadata_round_trip(msg in arb_metadata()) {
            prop_assert_eq!(MetadataMessage::decode(&Bytes::from(msg.encode())), Ok(msg));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ExtendedHandshake::decode(&bytes);
            let _ = MetadataMessage::decode(&Bytes::from(bytes));
        }

        /// Garbage that starts like a dictionary gets further into the decoders.
        #[test]
        fn dict_shaped_garbage_never_panics(body in "(d|e|l|i-?[0-9]{1,3}e|[0-9]:|1:[mpv]|8:msg_type|5:piece|10:total_size|6:yourip|[a-z\u{b5}]){0,40}") {
            let wire = format!("d{body}");
            let _ = ExtendedHandshake::decode(wire.as_bytes());
            let _ = MetadataMessage::decode(&Bytes::from(wire.into_bytes()));
        }
    }
}
