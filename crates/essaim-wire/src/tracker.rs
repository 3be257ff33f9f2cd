//! Tracker wire formats: the HTTP announce and scrape (BEP 3 §trackers,
//! BEP 23 compact peers, BEP 7 `peers6`, BEP 48 scrape) in [`http`], and the
//! UDP tracker packets (BEP 15) in [`udp`].
//!
//! Both decoders see untrusted input; they return errors, never panic, and
//! bound what they keep: at most [`MAX_PEERS`] peers per reply, intervals
//! clamped by [`sanitize_interval`], text fields cut at [`MAX_TEXT`] bytes.
pub mod http;
pub mod udp;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Most peers kept from one announce reply (HTTP or UDP); the rest is
/// ignored. Trackers rarely send more than 200.
pub const MAX_PEERS: usize = 2000;

/// Longest text kept from a tracker (failure reason, warning, tracker id,
/// UDP error message), in bytes; longer text is cut at a character boundary.
pub const MAX_TEXT: usize = 1024;

/// Shortest re-announce interval accepted from a tracker, in seconds.
pub const MIN_INTERVAL: u32 = 60;
/// Longest re-announce interval accepted from a tracker: one day.
pub const MAX_INTERVAL: u32 = 86_400;
/// Interval assumed when a tracker gives none or a non-positive one (the
/// value most trackers use).
pub const DEFAULT_INTERVAL: u32 = 1800;

/// The announce `event` (BEP 3 §trackers; BEP 15 codes 1–3, "none" is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The first announce of a download.
    Started,
    /// Sent once when the download completes (not if it was complete at start).
    Completed,
    /// The download stops; the tracker should forget the peer.
    Stopped,
}

impl Event {
    /// The HTTP query value (BEP 3).
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Completed => "completed",
            Event::Stopped => "stopped",
        }
    }

    /// Parses the HTTP query value; `Ok(None)` for "empty" or "" (BEP 3:
    /// "empty, which is the same as not being present").
    pub fn from_query(s: &[u8]) -> Result<Option<Event>, UnknownEvent> {
        match s {
            b"started" => Ok(Some(Event::Started)),
            b"completed" => Ok(Some(Event::Completed)),
            b"stopped" => Ok(Some(Event::Stopped)),
            b"empty" | b"" => Ok(None),
            _ => Err(UnknownEvent),
        }
    }

    /// The BEP 15 event code: 0 none, 1 completed, 2 started, 3 stopped.
    pub fn udp_code(event: Option<Event>) -> u32 {
        match event {
            None => 0,
            Some(Event::Completed) => 1,
            Some(Event::Started) => 2,
            Some(Event::Stopped) => 3,
        }
    }

    /// Inverse of [`Event::udp_code`]; `Err` for an unknown code.
    pub fn from_udp_code(code: u32) -> Result<Option<Event>, UnknownEvent> {
        match code {
            0 => Ok(None),
            1 => Ok(Some(Event::Completed)),
            2 => Ok(Some(Event::Started)),
            3 => Ok(Some(Event::Stopped)),
            _ => Err(UnknownEvent),
        }
    }
}

/// An `event` value that BEP 3 / BEP 15 do not define.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown announce event")]
pub struct UnknownEvent;

/// The re-announce interval to use for what a tracker sent: a missing or
/// non-positive value becomes [`DEFAULT_INTERVAL`]; anything else is clamped
/// into [[`MIN_INTERVAL`], [`MAX_INTERVAL`]] so that a broken or hostile
/// tracker can make us neither hammer it nor go silent for weeks.
pub fn sanitize_interval(raw: Option<i64>) -> u32 {
    match raw {
        Some(i) if i > 0 => {
            u32::try_from(i.clamp(i64::from(MIN_INTERVAL), i64::from(MAX_INTERVAL)))
                .unwrap_or(DEFAULT_INTERVAL)
        }
        _ => DEFAULT_INTERVAL,
    }
}

/// Lossy UTF-8 of at most [`MAX_TEXT`] bytes of `bytes`.
pub(crate) fn bounded_text(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_TEXT)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    // A cut through a multi-byte character leaves a replacement character;
    // harmless, but keep the result within the bound in bytes too.
    while s.len() > MAX_TEXT {
        s.pop();
    }
    s
}

/// Compact IPv4 peers (BEP 23): 4 address bytes then 2 port bytes, network
/// order. A trailing partial entry is ignored (some trackers and truncated
/// UDP datagrams produce one); port 0 and the unspecified address are
/// dropped; at most `room` peers are appended to `out`.
pub(crate) fn compact_v4(bytes: &[u8], out: &mut Vec<SocketAddr>, room: usize) {
    for chunk in bytes.chunks_exact(6) {
        if out.len() >= room {
            return;
        }
        let ip = Ipv4Addr::new(chunk[0], chunk[1], chunk[2], chunk[3]);
        let port = u16::from_be_bytes([chunk[4], chunk[5]]);
        push_peer(out, IpAddr::V4(ip), port);
    }
}

/// Compact IPv6 peers (BEP 7 `peers6`, BEP 15 over IPv6): 16 + 2 bytes per
/// peer, with the same rules as [`compact_v4`].
pub(crate) fn compact_v6(bytes: &[u8], out: &mut Vec<SocketAddr>, room: usize) {
    for chunk in bytes.chunks_exact(18) {
        if out.len() >= room {
            return;
        }
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&chunk[..16]);
        let port = u16::from_be_bytes([chunk[16], chunk[17]]);
        push_peer(out, IpAddr::V6(Ipv6Addr::from(ip)), port);
    }
}

/// Appends a peer unless it cannot be dialled (port 0, unspecified address).
pub(crate) fn push_peer(out: &mut Vec<SocketAddr>, ip: IpAddr, port: u16) {
    if port != 0 && !ip.is_unspecified() {
        out.push(SocketAddr::new(ip, port));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_sanitized() {
        assert_eq!(sanitize_interval(None), DEFAULT_INTERVAL);
        assert_eq!(sanitize_interval(Some(0)), DEFAULT_INTERVAL);
        assert_eq!(sanitize_interval(Some(-5)), DEFAULT_INTERVAL);
        assert_eq!(sanitize_interval(Some(1)), MIN_INTERVAL);
        assert_eq!(sanitize_interval(Some(900)), 900);
        assert_eq!(sanitize_interval(Some(i64::MAX)), MAX_INTERVAL);
    }

    #[test]
    fn event_codes_round_trip() {
        for e in [
            None,
            Some(Event::Started),
            Some(Event::Completed),
            Some(Event::Stopped),
        ] {
            assert_eq!(Event::from_udp_code(Event::udp_code(e)), Ok(e));
            if let Some(ev) = e {
                assert_eq!(Event::from_query(ev.as_str().as_bytes()), Ok(e));
            }
        }
        assert_eq!(Event::udp_code(Some(Event::Started)), 2);
        assert!(Event::from_udp_code(4).is_err());
        assert!(Event::from_query(b"paused").is_err());
        assert_eq!(Event::from_query(b"empty"), Ok(None));
    }

    #[test]
    fn compact_peers_drop_bad_entries_and_tail() {
        let bytes = [
            10, 0, 0, 1, 0x1a, 0xe1, // 10.0.0.1:6881
            10, 0, 0, 2, 0, 0, // port 0: dropped
            0, 0, 0, 0, 0, 80, // unspecified: dropped
            1, 2, 3, // partial tail: ignored
        ];
        let mut out = Vec::new();
        compact_v4(&bytes, &mut out, 10);
        assert_eq!(out, vec!["10.0.0.1:6881".parse().unwrap()]);
        let mut out = Vec::new();
        compact_v4(&[1, 1, 1, 1, 0, 1, 2, 2, 2, 2, 0, 2], &mut out, 1);
        assert_eq!(out.len(), 1, "room is respected");
    }

    #[test]
    fn text_is_bounded() {
        let long = "é".repeat(MAX_TEXT);
        let s = bounded_text(long.as_bytes());
        assert!(s.len() <= MAX_TEXT);
        assert!(s.starts_with("éé"));
    }

    /// Decoders that see remote bytes, and the round trips between our
    /// encoders and parsers, for both HTTP and UDP.
    mod props {
        use super::super::http::*;
        use super::super::udp::*;
        use super::super::*;
        use essaim_core::{InfoHash, PeerId};
        use proptest::prelude::*;

        fn addr() -> impl Strategy<Value = SocketAddr> {
            let v4 = (any::<[u8; 4]>(), 1u16..)
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), p));
            let v6 = (any::<[u8; 16]>(), 1u16..)
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), p));
            prop_oneof![v4, v6].prop_filter("dialable", |a| !a.ip().is_unspecified())
        }

        fn event() -> impl Strategy<Value = Option<Event>> {
            prop_oneof![
                Just(None),
                Just(Some(Event::Started)),
                Just(Some(Event::Completed)),
                Just(Some(Event::Stopped)),
            ]
        }

        proptest! {
            #[test]
            fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = parse_announce_response(&bytes);
                let _ = parse_scrape_response(&bytes);
                let _ = parse_response(&bytes);
                let _ = parse_response_v6(&bytes);
                let _ = parse_request(&bytes);
                let text = String::from_utf8_lossy(&bytes);
                let _ = parse_announce_query(&text);
                let _ = parse_scrape_query(&text);
                let _ = scrape_url(&text);
            }

            #[test]
            fn bencode_shaped_replies_never_panic(
                keys in proptest::collection::vec(
                    prop_oneof![
                        Just("interval"), Just("min interval"), Just("peers"),
                        Just("peers6"), Just("failure reason"), Just("complete"),
                        Just("files"), Just("ip"), Just("port"),
                    ],
                    0..6,
                ),
                values in proptest::collection::vec(
                    prop_oneof![
                        Just("i-1e".to_owned()), Just("i99999999999e".to_owned()),
                        Just("5:abcde".to_owned()), Just("le".to_owned()),
                        Just("ld2:ip3:::14:porti1eee".to_owned()), Just("de".to_owned()),
                        Just("d20:aaaaaaaaaaaaaaaaaaaad8:completei-3eee".to_owned()),
                    ],
                    6,
                ),
            ) {
                let mut body = String::from("d");
                let mut sorted = keys.clone();
                sorted.sort_unstable();
                sorted.dedup();
                for (k, v) in sorted.iter().zip(&values) {
                    body.push_str(&format!("{}:{k}{v}", k.len()));
                }
                body.push('e');
                if let Ok(r) = parse_announce_response(body.as_bytes()) {
                    prop_assert!((MIN_INTERVAL..=MAX_INTERVAL).contains(&r.interval));
                    prop_assert!(r.min_interval.is_none_or(|m| m <= r.interval));
                    prop_assert!(r.peers.iter().all(|p| p.port() != 0));
                }
                let _ = parse_scrape_response(body.as_bytes());
            }

            #[test]
            fn http_reply_round_trip(
                peers in proptest::collection::vec(addr(), 0..40),
                interval in MIN_INTERVAL..MAX_INTERVAL,
                counts in any::<(u32, u32)>(),
                compact in any::<bool>(),
            ) {
                let body = encode_announce_response(interval, None, counts.0, counts.1, &peers, compact);
                let r = parse_announce_response(&body).unwrap();
                let (mut got, mut want) = (r.peers, peers);
                got.sort();
                want.sort();
                prop_assert_eq!(got, want);
                prop_assert_eq!(r.interval, interval);
                prop_assert_eq!((r.complete, r.incomplete), (Some(counts.0), Some(counts.1)));
            }

            #[test]
            fn http_query_round_trip(
                ids in any::<([u8; 20], [u8; 20])>(),
                port in 1u16..,
                amounts in any::<(u64, u64, u64)>(),
                ev in event(),
                numwant in proptest::option::of(any::<u32>()),
            ) {
                let req = AnnounceRequest {
                    info_hash: InfoHash(ids.0),
                    peer_id: PeerId(ids.1),
                    port,
                    uploaded: amounts.0,
                    downloaded: amounts.1,
                    left: amounts.2,
                    event: ev,
                    numwant,
                    key: Some(1),
                    tracker_id: None,
                    compact: false,
                };
                let url = req.to_url("http://h:1/announce?x=%2B");
                let got = parse_announce_query(url.split_once('?').unwrap().1).unwrap();
                prop_assert_eq!(got.info_hash, req.info_hash);
                prop_assert_eq!(got.peer_id, req.peer_id);
                prop_assert_eq!((got.port, got.uploaded, got.downloaded, got.left),
                    (port, amounts.0, amounts.1, amounts.2));
                prop_assert_eq!(got.event, ev);
                prop_assert_eq!(got.numwant, numwant);
                prop_assert!(!got.compact);
            }

            #[test]
            fn udp_round_trips(
                ids in any::<([u8; 20], [u8; 20])>(),
                nums in any::<(u64, u32, u64, u64, u64, u32, u16)>(),
                ev in event(),
                num_want in proptest::option::of(0..=i32::MAX as u32),
                peers in proptest::collection::vec(addr(), 0..40),
                ipv6 in any::<bool>(),
                message in "[ -~]{0,50}",
            ) {
                let (conn, tid, down, left, up, key, port) = nums;
                let a = UdpAnnounce {
                    connection_id: conn, transaction_id: tid,
                    info_hash: InfoHash(ids.0), peer_id: PeerId(ids.1),
                    downloaded: down, left, uploaded: up, event: ev, ip: None,
                    key, num_want, port,
                };
                prop_assert_eq!(parse_request(&a.encode()), Ok(UdpRequest::Announce(a)));
                let family: Vec<SocketAddr> =
                    peers.iter().copied().filter(|p| p.is_ipv6() == ipv6).collect();
                let replies = [
                    UdpResponse::Connect { transaction_id: tid, connection_id: conn },
                    UdpResponse::Announce {
                        transaction_id: tid, interval: key, leechers: 1, seeders: 2,
                        peers: family,
                    },
                    UdpResponse::Scrape { transaction_id: tid, entries: vec![(1, 2, 3); 5] },
                    UdpResponse::Error { transaction_id: tid, message },
                ];
                for reply in replies {
                    let bytes = reply.encode(ipv6);
                    let parsed = if ipv6 { parse_response_v6(&bytes) } else { parse_response(&bytes) };
                    prop_assert_eq!(parsed, Ok(reply));
                }
            }
        }
    }

    /// Unit tests of the HTTP formats.
    mod http {
        use super::super::http::*;
        use super::super::{Event, DEFAULT_INTERVAL, MAX_PEERS, MAX_TEXT};
        use essaim_core::{InfoHash, PeerId};
        use std::net::SocketAddr;

        fn request() -> AnnounceRequest {
            AnnounceRequest {
                info_hash: InfoHash([0xab; 20]),
                peer_id: PeerId(*b"-ES0100-abcdefghijkl"),
                port: 6881,
                uploaded: 1,
                downloaded: 2,
                left: 3,
                event: Some(Event::Started),
                numwant: Some(50),
                key: Some(0xdead_beef),
                tracker_id: Some("t 1".into()),
                compact: true,
            }
        }

        #[test]
        fn announce_url_is_encoded_and_joined() {
            let url = request().to_url("http://t.example/announce");
            assert_eq!(
                url,
                format!(
                    "http://t.example/announce?info_hash={}&peer_id=-ES0100-abcdefghijkl\
                     &port=6881&uploaded=1&downloaded=2&left=3&compact=1&event=started\
                     &numwant=50&key=DEADBEEF&trackerid=t%201",
                    "%AB".repeat(20)
                )
            );
            let url = request().to_url("http://t/announce?passkey=x#frag");
            assert!(url.starts_with("http://t/announce?passkey=x&info_hash=%AB"));
            assert!(!url.contains("frag"));
            assert!(request()
                .to_url("http://t/a?")
                .starts_with("http://t/a?info_hash="));
        }

        #[test]
        fn compact_reply_with_peers6() {
            let mut body =
                b"d8:completei5e10:incompletei7e8:intervali900e12:min intervali30e".to_vec();
            body.extend_from_slice(b"5:peers14:");
            body.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 80, 9, 9]);
            body.extend_from_slice(b"6:peers618:");
            body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 81]);
            body.extend_from_slice(b"10:tracker id2:ab15:warning message4:slowe\n");
            let r = parse_announce_response(&body).unwrap();
            assert_eq!(r.interval, 900);
            assert_eq!(r.min_interval, Some(30));
            assert_eq!((r.complete, r.incomplete), (Some(5), Some(7)));
            assert_eq!(r.tracker_id.as_deref(), Some("ab"));
            assert_eq!(r.warning.as_deref(), Some("slow"));
            let want: Vec<SocketAddr> = ["127.0.0.1:6881", "10.0.0.2:80", "[::1]:81"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
            assert_eq!(r.peers, want, "partial 2-byte tail ignored");
        }

        #[test]
        fn dict_reply_and_odd_values() {
            let body = b"d8:intervali0e12:min intervali99999e5:peersl\
                d2:ip9:127.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881ee\
                d2:ip5:[::1]4:porti7eed2:ip11:example.com4:porti80eed2:ip7:1.2.3.44:porti0ee\
                d2:ip7:1.2.3.44:porti70000eeee";
            let r = parse_announce_response(body).unwrap();
            assert_eq!(r.interval, DEFAULT_INTERVAL);
            assert_eq!(r.min_interval, Some(r.interval), "capped at the interval");
            assert_eq!(
                r.peers,
                vec![
                    "127.0.0.1:6881".parse::<SocketAddr>().unwrap(),
                    "[::1]:7".parse().unwrap()
                ]
            );
            assert_eq!(r.complete, None);
        }

        #[test]
        fn failures_and_garbage() {
            assert_eq!(
                parse_announce_response(b"d14:failure reason9:not knowne"),
                Err(TrackerError::Failure("not known".into()))
            );
            assert!(matches!(
                parse_announce_response(b"<html>nope</html>"),
                Err(TrackerError::Bencode(_))
            ));
            assert_eq!(
                parse_announce_response(b"li1ee"),
                Err(TrackerError::NotADict)
            );
            assert_eq!(
                parse_announce_response(b"d3:fooi1ee"),
                Err(TrackerError::MissingField("interval"))
            );
            assert!(matches!(
                parse_scrape_response(b"d14:failure reasoni3ee"),
                Err(TrackerError::Failure(_))
            ));
        }

        /// The bencode policy (see `essaim_core::bencode`) holds for
        /// tracker replies: hostile values anywhere are refused, keys out of
        /// order are accepted, a repeated key is refused. Trailing bytes are
        /// the one leniency: ignored (some trackers append a newline).
        #[test]
        fn bencode_policy_at_the_tracker_entry_point() {
            use essaim_core::bencode::DecodeErrorKind as K;
            let kind = |body: &[u8]| match parse_announce_response(body) {
                Err(TrackerError::Bencode(e)) => e.kind,
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
                let body = format!("d8:intervali900e5:peers0:1:z{value}e");
                assert_eq!(kind(body.as_bytes()), want, "{:.40}", value);
                // Also where a value is read: `interval`, a peer entry.
                let body = format!("d8:interval{value}e");
                assert_eq!(kind(body.as_bytes()), want, "{:.40}", value);
                let body = format!("d8:intervali900e5:peersld2:ip{value}4:porti1eeee");
                assert_eq!(kind(body.as_bytes()), want, "{:.40}", value);
            }
            // A repeated key could give a second `interval` or `peers`.
            assert_eq!(
                kind(b"d8:intervali900e8:intervali1e5:peers0:e"),
                K::DuplicateKey
            );
            assert_eq!(
                kind(b"d5:peers6:\x7f\0\0\x01\x1a\xe18:intervali900e5:peers0:e"),
                K::DuplicateKey
            );
            // Out of order: accepted.
            let r =
                parse_announce_response(b"d5:peers6:\x7f\0\0\x01\x1a\xe18:intervali900ee").unwrap();
            assert_eq!(r.interval, 900);
            assert_eq!(r.peers, vec!["127.0.0.1:6881".parse().unwrap()]);
            // Trailing bytes: ignored, the dictionary is read.
            let r = parse_announce_response(b"d8:intervali900e5:peers0:e\r\ngarbage").unwrap();
            assert_eq!(r.interval, 900);
            // But an incomplete reply is an error, not a partial read.
            assert!(matches!(
                parse_announce_response(b"d8:intervali900e5:peers12:\x7f\0\0\x01\x1a\xe1"),
                Err(TrackerError::Bencode(_))
            ));
        }

        #[test]
        fn peers_are_capped() {
            let n = MAX_PEERS + 10;
            let mut body = format!("d8:intervali60e5:peers{}:", n * 6).into_bytes();
            for i in 0..n {
                body.extend_from_slice(&[10, 0, (i >> 8) as u8, i as u8, 0, 1]);
            }
            body.push(b'e');
            assert_eq!(
                parse_announce_response(&body).unwrap().peers.len(),
                MAX_PEERS
            );
        }

        #[test]
        fn scrape_urls_follow_bep48() {
            let cases = [
                ("http://e.com/announce", Some("http://e.com/scrape")),
                ("http://e.com/x/announce", Some("http://e.com/x/scrape")),
                ("http://e.com/announce.php", Some("http://e.com/scrape.php")),
                ("http://e.com/a?x=2&y=3", None),
                (
                    "http://e.com/announce?x2%0644",
                    Some("http://e.com/scrape?x2%0644"),
                ),
                (
                    "http://e.com/announce?x=2/4",
                    Some("http://e.com/scrape?x=2/4"),
                ),
                ("http://e.com/x%064announce", None),
                ("http://announce.e.com", None),
                ("http://e.com/announce/x", None),
                ("nonsense", None),
            ];
            for (announce, scrape) in cases {
                assert_eq!(scrape_url(announce).as_deref(), scrape, "{announce}");
            }
            assert_eq!(
                scrape_request_url("http://e.com/scrape", &[InfoHash([b'x'; 20]); 2]),
                format!(
                    "http://e.com/scrape?info_hash={0}&info_hash={0}",
                    "x".repeat(20)
                )
            );
        }

        #[test]
        fn scrape_bep48_example_and_round_trip() {
            // The BEP 48 example, with the `e` closing the first entry that the
            // BEP's text lacks, plus an entry whose key is not 20 bytes.
            let body = "d5:filesd20:xxxxxxxxxxxxxxxxxxxxd8:completei11e10:downloadedi13772e\
                10:incompletei19ee20:yyyyyyyyyyyyyyyyyyyyd8:completei21e10:downloadedi206e\
                10:incompletei20ee3:badd8:completei1eeee";
            let got = parse_scrape_response(body.as_bytes()).unwrap();
            let x = (
                InfoHash([b'x'; 20]),
                ScrapeEntry {
                    complete: 11,
                    incomplete: 19,
                    downloaded: 13772,
                },
            );
            let y = (
                InfoHash([b'y'; 20]),
                ScrapeEntry {
                    complete: 21,
                    incomplete: 20,
                    downloaded: 206,
                },
            );
            assert_eq!(got, vec![x, y]);
            let without_bad = body.replace("3:badd8:completei1ee", "");
            assert_eq!(encode_scrape(&[x, y]), without_bad.as_bytes());
            assert_eq!(
                parse_scrape_response(b"d5:filesi1ee"),
                Err(TrackerError::MissingField("files"))
            );
        }

        #[test]
        fn server_query_rules() {
            let ih = "%AB".repeat(20);
            let base = format!("info_hash={ih}&peer_id=aaaaaaaaaaaaaaaaaaa%2B&port=1");
            let q = parse_announce_query(&base).unwrap();
            assert_eq!(q.peer_id.0[19], b'+');
            assert!(q.compact, "compact by default (BEP 23)");
            assert_eq!((q.left, q.event, q.numwant), (0, None, None));
            let q = parse_announce_query(&format!(
                "{base}&compact=0&event=stopped&numwant=-1&ip=10.1.2.3&left=9&port=5"
            ))
            .unwrap();
            assert!(!q.compact);
            assert_eq!(q.port, 1, "first occurrence wins");
            assert_eq!(
                (q.left, q.event, q.numwant),
                (9, Some(Event::Stopped), None)
            );
            assert_eq!(q.ip, Some("10.1.2.3".parse().unwrap()));
            let err = |q: &str| parse_announce_query(q).unwrap_err();
            assert_eq!(err("port=1"), TrackerError::MissingParam("info_hash"));
            assert_eq!(
                err(&base.replace("%2B", "")),
                TrackerError::InvalidParam("peer_id")
            );
            assert_eq!(
                err(&base.replace("port=1", "port=0")),
                TrackerError::InvalidParam("port")
            );
            assert_eq!(
                err(&format!("{base}&left=-1")),
                TrackerError::InvalidParam("left")
            );
            assert_eq!(
                err(&format!("{base}&event=x")),
                TrackerError::InvalidParam("event")
            );
            assert_eq!(err(&format!("{base}&a=%4")), TrackerError::BadEncoding);
            assert_eq!(err(&format!("{base}&a=%zz")), TrackerError::BadEncoding);
            assert_eq!(
                err(&"a".repeat(MAX_QUERY_LEN + 1)),
                TrackerError::QueryTooLong
            );
            let hashes = parse_scrape_query(&format!("info_hash={ih}&x=1&info_hash={ih}")).unwrap();
            assert_eq!(hashes, vec![InfoHash([0xab; 20]); 2]);
            assert!(parse_scrape_query("").unwrap().is_empty());
            assert!(parse_scrape_query("info_hash=abc").is_err());
        }

        #[test]
        fn server_replies_parse_back() {
            let peers: Vec<SocketAddr> = ["1.2.3.4:5", "[2001:db8::1]:6", "9.9.9.9:65535"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
            for compact in [true, false] {
                let body = encode_announce_response(120, Some(10), 3, 4, &peers, compact);
                let r = parse_announce_response(&body).unwrap();
                assert_eq!((r.interval, r.min_interval), (120, Some(10)));
                assert_eq!((r.complete, r.incomplete), (Some(3), Some(4)));
                let mut got = r.peers.clone();
                got.sort();
                let mut want = peers.clone();
                want.sort();
                assert_eq!(got, want, "compact={compact}");
            }
            let body = encode_announce_response(60, None, 0, 0, &peers[..1], true);
            assert_eq!(
                body,
                b"d8:completei0e10:incompletei0e8:intervali60e5:peers6:\x01\x02\x03\x04\x00\x05e"
            );
            assert_eq!(
                parse_announce_response(&encode_failure("nope")),
                Err(TrackerError::Failure("nope".into()))
            );
            assert!(encode_failure(&"é".repeat(1000)).len() < MAX_TEXT + 40);
        }
    }
}
