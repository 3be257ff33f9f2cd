//! UDP tracker packets (BEP 15), both directions: what a client sends
//! ([`encode_connect`], [`UdpAnnounce::encode`], [`encode_scrape`]) and
//! parses ([`parse_response`]), and what a tracker parses
//! ([`parse_request`]) and sends ([`UdpResponse::encode`]).
//!
//! All integers are big-endian. As BEP 15 asks, packets are checked for a
//! minimum size only and may be longer ("future extensions could increase the
//! size of packets"). Peers in an announce reply are 6 bytes over IPv4 and 18
//! over IPv6, chosen by the address family of the datagram (BEP 15 §IPv6), so
//! the parser has a variant per family. A partial trailing peer is ignored;
//! port 0 and unspecified addresses are dropped; at most
//! [`MAX_PEERS`](super::MAX_PEERS) peers are kept. The announce `interval` is
//! reported as sent; callers pass it through
//! [`sanitize_interval`](super::sanitize_interval).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use essaim_core::{InfoHash, PeerId};

use super::{bounded_text, compact_v4, compact_v6, Event, MAX_PEERS};

/// The magic constant of a connect request (BEP 15).
pub const PROTOCOL_ID: u64 = 0x417_2710_1980;
/// Action codes (BEP 15).
pub const ACTION_CONNECT: u32 = 0;
pub const ACTION_ANNOUNCE: u32 = 1;
pub const ACTION_SCRAPE: u32 = 2;
pub const ACTION_ERROR: u32 = 3;
/// Most info-hashes in one scrape ("up to about 74", BEP 15); more are dropped.
pub const MAX_SCRAPE_HASHES: usize = 74;
/// Size of an IPv4 announce request.
pub const ANNOUNCE_LEN: usize = 98;

/// A malformed UDP tracker packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UdpError {
    #[error("packet of {len} bytes is too short, need {need}")]
    TooShort { len: usize, need: usize },
    #[error("unknown action {0}")]
    UnknownAction(u32),
    #[error("connect request without the BEP 15 protocol id")]
    BadProtocolId,
    #[error("unknown event code {0}")]
    BadEvent(u32),
}

/// A connect request: protocol id, action 0, transaction id.
pub fn encode_connect(transaction_id: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    out[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    out[12..].copy_from_slice(&transaction_id.to_be_bytes());
    out
}

/// An IPv4 announce request (BEP 15; also sent over IPv6, where `ip` must
/// stay `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpAnnounce {
    pub connection_id: u64,
    pub transaction_id: u32,
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    pub event: Option<Event>,
    /// The `IP address` field; `None` sends 0 ("default": the source address).
    pub ip: Option<Ipv4Addr>,
    pub key: u32,
    /// `None` sends -1 ("default"); values above `i32::MAX` are clamped.
    pub num_want: Option<u32>,
    pub port: u16,
}

impl UdpAnnounce {
    /// The 98-byte request.
    pub fn encode(&self) -> [u8; ANNOUNCE_LEN] {
        let mut out = [0u8; ANNOUNCE_LEN];
        out[..8].copy_from_slice(&self.connection_id.to_be_bytes());
        out[8..12].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
        out[12..16].copy_from_slice(&self.transaction_id.to_be_bytes());
        out[16..36].copy_from_slice(&self.info_hash.0);
        out[36..56].copy_from_slice(&self.peer_id.0);
        out[56..64].copy_from_slice(&self.downloaded.to_be_bytes());
        out[64..72].copy_from_slice(&self.left.to_be_bytes());
        out[72..80].copy_from_slice(&self.uploaded.to_be_bytes());
        out[80..84].copy_from_slice(&Event::udp_code(self.event).to_be_bytes());
        out[84..88].copy_from_slice(&self.ip.map_or([0; 4], |ip| ip.octets()));
        out[88..92].copy_from_slice(&self.key.to_be_bytes());
        let num_want = self
            .num_want
            .map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
        out[92..96].copy_from_slice(&num_want.to_be_bytes());
        out[96..98].copy_from_slice(&self.port.to_be_bytes());
        out
    }
}

/// A scrape request for at most [`MAX_SCRAPE_HASHES`] of `hashes`.
pub fn encode_scrape(connection_id: u64, transaction_id: u32, hashes: &[InfoHash]) -> Vec<u8> {
    let hashes = &hashes[..hashes.len().min(MAX_SCRAPE_HASHES)];
    let mut out = Vec::with_capacity(16 + 20 * hashes.len());
    out.extend_from_slice(&connection_id.to_be_bytes());
    out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    for hash in hashes {
        out.extend_from_slice(&hash.0);
    }
    out
}

/// A tracker's reply (BEP 15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpResponse {
    Connect {
        transaction_id: u32,
        connection_id: u64,
    },
    Announce {
        transaction_id: u32,
        /// Seconds, as sent (not sanitized).
        interval: u32,
        leechers: u32,
        seeders: u32,
        peers: Vec<SocketAddr>,
    },
    Scrape {
        transaction_id: u32,
        /// `(seeders, completed, leechers)` per requested hash, in order.
        entries: Vec<(u32, u32, u32)>,
    },
    Error {
        transaction_id: u32,
        message: String,
    },
}

impl UdpResponse {
    /// The transaction id, to match the reply with our request.
    pub fn transaction_id(&self) -> u32 {
        match self {
            UdpResponse::Connect { transaction_id, .. }
            | UdpResponse::Announce { transaction_id, .. }
            | UdpResponse::Scrape { transaction_id, .. }
            | UdpResponse::Error { transaction_id, .. } => *transaction_id,
        }
    }

    /// Encodes the reply, as a tracker sends it. Announce peers are written
    /// in the format of the datagram's family (`ipv6`); peers of the other
    /// family are left out.
    pub fn encode(&self, ipv6: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(20);
        let mut head = |action: u32, tid: u32| {
            out.extend_from_slice(&action.to_be_bytes());
            out.extend_from_slice(&tid.to_be_bytes());
        };
        match self {
            UdpResponse::Connect {
                transaction_id,
                connection_id,
            } => {
                head(ACTION_CONNECT, *transaction_id);
                out.extend_from_slice(&connection_id.to_be_bytes());
            }
            UdpResponse::Announce {
                transaction_id,
                interval,
                leechers,
                seeders,
                peers,
            } => {
                head(ACTION_ANNOUNCE, *transaction_id);
                for n in [interval, leechers, seeders] {
                    out.extend_from_slice(&n.to_be_bytes());
                }
                for peer in peers {
                    match (peer.ip(), ipv6) {
                        (IpAddr::V4(ip), false) => out.extend_from_slice(&ip.octets()),
                        (IpAddr::V6(ip), true) => out.extend_from_slice(&ip.octets()),
                        _ => continue,
                    }
                    out.extend_from_slice(&peer.port().to_be_bytes());
                }
            }
            UdpResponse::Scrape {
                transaction_id,
                entries,
            } => {
                head(ACTION_SCRAPE, *transaction_id);
                for (seeders, completed, leechers) in entries {
                    for n in [seeders, completed, leechers] {
                        out.extend_from_slice(&n.to_be_bytes());
                    }
                }
            }
            UdpResponse::Error {
                transaction_id,
                message,
            } => {
                head(ACTION_ERROR, *transaction_id);
                out.extend_from_slice(message.as_bytes());
            }
        }
        out
    }
}

/// Parses a reply received over IPv4 (6-byte peers).
pub fn parse_response(buf: &[u8]) -> Result<UdpResponse, UdpError> {
    parse_response_family(buf, false)
}

/// Parses a reply received over IPv6 (18-byte peers, BEP 15 §IPv6).
pub fn parse_response_v6(buf: &[u8]) -> Result<UdpResponse, UdpError> {
    parse_response_family(buf, true)
}

fn parse_response_family(buf: &[u8], ipv6: bool) -> Result<UdpResponse, UdpError> {
    let action = be32(buf, 0)?;
    let transaction_id = be32(buf, 4)?;
    match action {
        ACTION_CONNECT => Ok(UdpResponse::Connect {
            transaction_id,
            connection_id: be64(buf, 8)?,
        }),
        ACTION_ANNOUNCE => {
            let interval = be32(buf, 8)?;
            let leechers = be32(buf, 12)?;
            let seeders = be32(buf, 16)?;
            let rest = buf.get(20..).unwrap_or_default();
            let mut peers = Vec::new();
            if ipv6 {
                compact_v6(rest, &mut peers, MAX_PEERS);
            } else {
                compact_v4(rest, &mut peers, MAX_PEERS);
            }
            Ok(UdpResponse::Announce {
                transaction_id,
                interval,
                leechers,
                seeders,
                peers,
            })
        }
        ACTION_SCRAPE => {
            let entries = buf
                .get(8..)
                .unwrap_or_default()
                .chunks_exact(12)
                .take(MAX_SCRAPE_HASHES)
                .map(|c| {
                    let n = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                    (n(0), n(4), n(8))
                })
                .collect();
            Ok(UdpResponse::Scrape {
                transaction_id,
                entries,
            })
        }
        ACTION_ERROR => Ok(UdpResponse::Error {
            transaction_id,
            message: bounded_text(buf.get(8..).unwrap_or_default()),
        }),
        other => Err(UdpError::UnknownAction(other)),
    }
}

/// A request as a tracker receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpRequest {
    Connect {
        transaction_id: u32,
    },
    Announce(UdpAnnounce),
    Scrape {
        connection_id: u64,
        transaction_id: u32,
        /// At most [`MAX_SCRAPE_HASHES`].
        info_hashes: Vec<InfoHash>,
    },
}

/// Parses a request (the tracker side of BEP 15).
pub fn parse_request(buf: &[u8]) -> Result<UdpRequest, UdpError> {
    let connection_id = be64(buf, 0)?;
    let action = be32(buf, 8)?;
    let transaction_id = be32(buf, 12)?;
    match action {
        ACTION_CONNECT if connection_id == PROTOCOL_ID => {
            Ok(UdpRequest::Connect { transaction_id })
        }
        ACTION_CONNECT => Err(UdpError::BadProtocolId),
        ACTION_ANNOUNCE => {
            let b: &[u8; ANNOUNCE_LEN] = buf
                .get(..ANNOUNCE_LEN)
                .and_then(|b| b.try_into().ok())
                .ok_or(UdpError::TooShort {
                    len: buf.len(),
                    need: ANNOUNCE_LEN,
                })?;
            let id20 = |at: usize| {
                let mut id = [0u8; 20];
                id.copy_from_slice(&b[at..at + 20]);
                id
            };
            let code = be32(b, 80)?;
            let event = Event::from_udp_code(code).map_err(|_| UdpError::BadEvent(code))?;
            let ip = Ipv4Addr::from(be32(b, 84)?);
            let num_want = i32::from_be_bytes(be32(b, 92)?.to_be_bytes());
            Ok(UdpRequest::Announce(UdpAnnounce {
                connection_id,
                transaction_id,
                info_hash: InfoHash(id20(16)),
                peer_id: PeerId(id20(36)),
                downloaded: be64(b, 56)?,
                left: be64(b, 64)?,
                uploaded: be64(b, 72)?,
                event,
                ip: (!ip.is_unspecified()).then_some(ip),
                key: be32(b, 88)?,
                num_want: u32::try_from(num_want).ok(),
                port: u16::from_be_bytes([b[96], b[97]]),
            }))
        }
        ACTION_SCRAPE => {
            let info_hashes = buf
                .get(16..)
                .unwrap_or_default()
                .chunks_exact(20)
                .take(MAX_SCRAPE_HASHES)
                .map(|c| {
                    let mut h = [0u8; 20];
                    h.copy_from_slice(c);
                    InfoHash(h)
                })
                .collect();
            Ok(UdpRequest::Scrape {
                connection_id,
                transaction_id,
                info_hashes,
            })
        }
        other => Err(UdpError::UnknownAction(other)),
    }
}

fn be32(buf: &[u8], at: usize) -> Result<u32, UdpError> {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or(UdpError::TooShort {
            len: buf.len(),
            need: at + 4,
        })
}

fn be64(buf: &[u8], at: usize) -> Result<u64, UdpError> {
    buf.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(UdpError::TooShort {
            len: buf.len(),
            need: at + 8,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_vectors() {
        let req = encode_connect(0x0102_0304);
        assert_eq!(
            req,
            [0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4]
        );
        assert_eq!(
            parse_request(&req),
            Ok(UdpRequest::Connect {
                transaction_id: 0x0102_0304
            })
        );
        let mut bad = req;
        bad[0] = 1;
        assert_eq!(parse_request(&bad), Err(UdpError::BadProtocolId));
        let reply = [0, 0, 0, 0, 1, 2, 3, 4, 9, 8, 7, 6, 5, 4, 3, 2, 0xff];
        assert_eq!(
            parse_response(&reply),
            Ok(UdpResponse::Connect {
                transaction_id: 0x0102_0304,
                connection_id: 0x0908_0706_0504_0302
            }),
            "longer packets are accepted"
        );
        assert_eq!(
            parse_response(&reply[..15]),
            Err(UdpError::TooShort { len: 15, need: 16 })
        );
    }

    #[test]
    fn announce_request_layout() {
        let a = UdpAnnounce {
            connection_id: 0x1122_3344_5566_7788,
            transaction_id: 7,
            info_hash: InfoHash([1; 20]),
            peer_id: PeerId([2; 20]),
            downloaded: 3,
            left: 4,
            uploaded: 5,
            event: Some(Event::Stopped),
            ip: None,
            key: 0xaabb_ccdd,
            num_want: None,
            port: 6881,
        };
        let b = a.encode();
        assert_eq!(&b[..8], &0x1122_3344_5566_7788u64.to_be_bytes());
        assert_eq!(&b[8..16], &[0, 0, 0, 1, 0, 0, 0, 7]);
        assert_eq!(b[16..36], [1; 20]);
        assert_eq!(b[36..56], [2; 20]);
        assert_eq!(b[63], 3);
        assert_eq!(b[71], 4);
        assert_eq!(b[79], 5);
        assert_eq!(&b[80..84], &[0, 0, 0, 3], "stopped is 3");
        assert_eq!(&b[84..88], &[0; 4]);
        assert_eq!(&b[88..92], &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(&b[92..96], &[0xff; 4], "num_want -1");
        assert_eq!(&b[96..98], &[0x1a, 0xe1]);
        assert_eq!(parse_request(&b), Ok(UdpRequest::Announce(a.clone())));
        assert!(matches!(
            parse_request(&b[..97]),
            Err(UdpError::TooShort { need: 98, .. })
        ));
        let mut bad = b;
        bad[83] = 9;
        assert_eq!(parse_request(&bad), Err(UdpError::BadEvent(9)));
    }

    #[test]
    fn announce_reply_both_families() {
        let mut v4 = vec![0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 7, 8, 0, 0, 0, 2, 0, 0, 0, 3];
        v4.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1, 1, 2]);
        let UdpResponse::Announce {
            transaction_id,
            interval,
            leechers,
            seeders,
            peers,
        } = parse_response(&v4).unwrap()
        else {
            panic!("not an announce")
        };
        assert_eq!(
            (transaction_id, interval, leechers, seeders),
            (9, 1800, 2, 3)
        );
        assert_eq!(peers, vec!["127.0.0.1:6881".parse().unwrap()]);
        let mut v6 = v4[..20].to_vec();
        v6.extend_from_slice(&[0; 15]);
        v6.extend_from_slice(&[1, 0, 80]);
        let UdpResponse::Announce { peers, .. } = parse_response_v6(&v6).unwrap() else {
            panic!("not an announce")
        };
        assert_eq!(peers, vec!["[::1]:80".parse().unwrap()]);
        assert!(parse_response(&v4[..19]).is_err());
    }

    #[test]
    fn scrape_and_error() {
        let req = encode_scrape(5, 6, &vec![InfoHash([3; 20]); 80]);
        assert_eq!(req.len(), 16 + 20 * MAX_SCRAPE_HASHES);
        let UdpRequest::Scrape { info_hashes, .. } = parse_request(&req).unwrap() else {
            panic!("not a scrape")
        };
        assert_eq!(info_hashes.len(), MAX_SCRAPE_HASHES);
        let reply = [
            0, 0, 0, 2, 0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 9,
        ];
        assert_eq!(
            parse_response(&reply),
            Ok(UdpResponse::Scrape {
                transaction_id: 6,
                entries: vec![(1, 2, 3)]
            })
        );
        let mut err = vec![0, 0, 0, 3, 0, 0, 0, 6];
        err.extend_from_slice(b"bad torrent");
        assert_eq!(
            parse_response(&err),
            Ok(UdpResponse::Error {
                transaction_id: 6,
                message: "bad torrent".into()
            })
        );
        assert_eq!(
            parse_response(&[0, 0, 0, 7, 0, 0, 0, 0]),
            Err(UdpError::UnknownAction(7))
        );
    }
}
