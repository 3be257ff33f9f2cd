//! Malformed and rule-breaking peer wire traffic, against a real session.
//!
//! essaim's rule: a message that breaks the protocol (a frame above the
//! limit, a bitfield of the wrong size, an index out of range, a request
//! that is not a valid block) closes the connection; data nobody asked for
//! is dropped and counted as wasted, which is no reason to disconnect (it
//! happens after a cancel); unknown messages and extensions are ignored.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use essaim::HANDSHAKE_TIMEOUT;
use essaim::{PeerSource, MAX_KNOWN_PEERS as MAX_KNOWN};
use essaim::{SessionConfig, Settings, TorrentState, TorrentSummary};
use essaim_core::InfoHash;
use essaim_wire::extension::ExtendedHandshake;
use essaim_wire::peer::{BlockRequest, Handshake, Message};
use essaim_wire::pex::{PexMessage, MAX_ENTRIES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::util::*;

/// A length prefix far above the largest legal message (64 KiB here) closes
/// the connection before anything is allocated for it: the decoder checks
/// the prefix first. 32 MiB of payload follow it; essaim must not buffer
/// them (it closes, so our writes fail long before), and neither RSS nor the
/// heap grows by more than 8 MiB, nor is any allocation that large made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_length_prefix_closes_without_allocating() {
    let _alone = EXCLUSIVE.write().await;
    let fx = Fixture::new(256 * 1024, 32 * 1024);
    let (session, handle) = fx.seeder(local()).await;
    for prefix in [0x7fff_ffffu32, u32::MAX, 64 * 1024 + 1] {
        let (mut w, _) =
            Wire::connect(session.local_addr(), fx.info_hash(), random_peer_id()).await;
        w.probe(probe_req(&fx)).await;
        let before = Mem::now();
        let mut head = prefix.to_be_bytes().to_vec();
        head.push(7); // a `piece` message
        w.send_raw(&head).await;
        const FLOOD: usize = 32 << 20;
        let (mut rd, mut wr) = w.stream.split();
        let write = async {
            let chunk = vec![0xA5u8; 64 * 1024];
            let mut sent = 0;
            while sent < FLOOD && wr.write_all(&chunk).await.is_ok() {
                sent += chunk.len();
            }
            sent
        };
        let read = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let (sent, closed) = tokio::join!(timeout(BOUND, write), timeout(PROMPTLY, read));
        assert!(closed.is_ok(), "prefix {prefix:#x}: connection not closed");
        let sent = sent.expect("writes end once essaim has closed");
        assert!(
            sent < FLOOD,
            "prefix {prefix:#x}: essaim took all {sent} bytes"
        );
        before.assert_growth_below(8 << 20, &format!("length prefix {prefix:#x}"));
    }
    // Still serving.
    let (mut w, _) = Wire::connect(session.local_addr(), fx.info_hash(), random_peer_id()).await;
    w.probe(probe_req(&fx)).await;
    assert!(handle.status().is_complete());
    session.shutdown().await;
}

/// Each of these closes the connection within [`PROMPTLY`]; a connection
/// that sends valid messages of the same kinds stays open (the control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_disconnect() {
    let _shared = EXCLUSIVE.read().await;
    // 20 pieces of 32 KiB, the last one 5000 bytes: the bitfield has 3
    // bytes and 4 spare bits.
    let fx = Fixture::new(19 * 32 * 1024 + 5000, 32 * 1024);
    let n = fx.num_pieces();
    assert_eq!(n, 20);
    let (session, handle) = fx.seeder(local()).await;
    let req = |piece, begin, length| {
        Message::Request(BlockRequest {
            piece,
            begin,
            length,
        })
    };
    let block = Bytes::from(vec![0u8; 16 * 1024]);
    let cases: Vec<(&str, Message)> = vec![
        (
            "bitfield one byte short",
            Message::Bitfield(Bytes::from_static(&[0xff, 0xff])),
        ),
        (
            "bitfield one byte long",
            Message::Bitfield(Bytes::from_static(&[0xff; 4])),
        ),
        (
            "bitfield with spare bits set",
            Message::Bitfield(Bytes::from_static(&[0xff, 0xff, 0xf1])),
        ),
        ("empty bitfield", Message::Bitfield(Bytes::new())),
        ("have past the last piece", Message::Have { piece: n }),
        ("have u32::MAX", Message::Have { piece: u32::MAX }),
        ("request past the last piece", req(n, 0, 16384)),
        ("request u32::MAX", req(u32::MAX, 0, 16384)),
        (
            "request past the end of a piece",
            req(0, 32 * 1024 - 8000, 16384),
        ),
        (
            "request past the end of the last piece",
            req(n - 1, 0, 16384),
        ),
        (
            "request with a begin that overflows",
            req(0, u32::MAX - 100, 16384),
        ),
        ("request of length 0", req(0, 0, 0)),
        ("request of 16 KiB + 1", req(0, 0, 16385)),
        ("request of 32 KiB", req(0, 0, 32 * 1024)),
        (
            "piece past the last piece",
            Message::Piece {
                piece: n,
                begin: 0,
                data: block.clone(),
            },
        ),
        (
            "piece u32::MAX",
            Message::Piece {
                piece: u32::MAX,
                begin: 0,
                data: block.clone(),
            },
        ),
    ];
    for (what, msg) in cases {
        let (mut w, _) =
            Wire::connect(session.local_addr(), fx.info_hash(), random_peer_id()).await;
        w.probe(probe_req(&fx)).await;
        w.send(&[msg]).await;
        assert!(w.closed_within(PROMPTLY).await, "{what}: not disconnected");
    }
    // The control: the same kinds of messages, valid, keep the connection.
    let (mut w, _) = Wire::connect(session.local_addr(), fx.info_hash(), random_peer_id()).await;
    w.send(&[
        Message::Bitfield(Bytes::from_static(&[0xff, 0x00, 0x10])),
        Message::Have { piece: n - 1 },
        req(n - 1, 0, 5000),
        req(0, 16384, 16384),
        req(0, 32 * 1024 - 1, 1),
    ])
    .await;
    w.probe(probe_req(&fx)).await;
    assert!(!w.closed_within(Duration::from_millis(500)).await);
    wait_status(&handle, |s| s.peers == 1).await;
    session.shutdown().await;
}

/// A whole piece nobody requested, with the right bytes, and a block not cut
/// as essaim cuts them: dropped (counted in `wasted`), never checked nor
/// written, and no reason to disconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrequested_piece_data_is_dropped() {
    let _shared = EXCLUSIVE.read().await;
    let fx = Fixture::new(8 * 32 * 1024, 32 * 1024);
    let (session, handle, file) = fx.leecher(local(), Vec::new()).await;
    wait_status(&handle, |s| s.state == TorrentState::Downloading).await;
    let (mut w, _) = Wire::connect(session.local_addr(), fx.info_hash(), random_peer_id()).await;
    // HaveNone: essaim has no reason to request anything from us.
    w.send(&[Message::HaveNone]).await;
    let mut msgs: Vec<Message> = fx
        .blocks(1)
        .into_iter()
        .map(|r| Message::Piece {
            piece: r.piece,
            begin: r.begin,
            data: fx.block(r),
        })
        .collect();
    msgs.push(Message::Piece {
        piece: 2,
        begin: 100,
        data: Bytes::from(vec![1u8; 1000]),
    });
    w.send(&msgs).await;
    w.probe(probe_req(&fx)).await;
    let wasted = u64::from(fx.piece_length()) + 1000;
    let s = wait_status(&handle, |s| s.wasted >= wasted).await;
    assert_eq!(s.wasted, wasted);
    assert_eq!((s.downloaded, s.pieces_have, s.hash_failures), (0, 0, 0));
    assert_eq!(s.peers, 1, "still connected");
    assert!(!w.closed_within(Duration::from_millis(300)).await);
    let pl = fx.piece_length() as usize;
    assert!(
        unwritten(&file, pl..3 * pl),
        "unrequested data reached the disk"
    );
    session.shutdown().await;
}

/// Peer exchange (BEP 11) from a hostile peer, and extensions essaim does
/// not know. Limits: a PEX list is read up to `MAX_ENTRIES` (200)
/// addresses; port 0, unspecified, multicast and broadcast addresses are
/// dropped; the known addresses stay within `MAX_KNOWN` (2,000) whatever
/// arrives. A PEX message that does not parse is ignored, as are unknown
/// extended ids and message ids (BEP 10, BEP 3): no crash, no disconnect.
/// (The session takes one peer, so it never dials what it learns here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pex_floods_and_unknown_extensions_are_harmless() {
    let _shared = EXCLUSIVE.read().await;
    let fx = Fixture::new(4 * 32 * 1024, 32 * 1024);
    let (session, handle) = fx
        .seeder({
            let mut c = local();
            c.settings = Settings {
                max_peers_per_torrent: 1,
                ..c.settings
            };
            c
        })
        .await;
    let (mut w, hs) = Wire::connect(session.local_addr(), fx.info_hash(), random_peer_id()).await;
    assert!(hs.supports_extensions());
    let ours = ExtendedHandshake {
        extensions: vec![("ut_pex".into(), 2), ("ut_metadata".into(), 3)],
        ..ExtendedHandshake::default()
    };
    w.send(&[Message::Extended {
        id: 0,
        payload: Bytes::from(ours.encode()),
    }])
    .await;
    let Message::Extended { payload, .. } = w
        .expect("essaim's extended handshake", |m| {
            matches!(m, Message::Extended { id: 0, .. })
        })
        .await
    else {
        unreachable!()
    };
    let theirs = ExtendedHandshake::decode(&payload).unwrap();
    let pex_id = theirs.extension_id("ut_pex").expect("essaim offers ut_pex");
    let pex = |addrs: Vec<SocketAddr>| Message::Extended {
        id: pex_id,
        payload: Bytes::from(
            PexMessage {
                added: addrs.into_iter().map(|a| (a, 0x10)).collect(),
                dropped: Vec::new(),
            }
            .encode(),
        ),
    };
    let learnt = |s: &TorrentSummary| {
        s.known_peers
            .iter()
            .find(|(p, _)| *p == PeerSource::Pex)
            .map_or(0, |(_, n)| *n)
    };

    // 5,000 unusable addresses.
    let junk: Vec<SocketAddr> = (0..5000u16)
        .map(|i| match i % 4 {
            0 => SocketAddr::from(([127, 0, 0, 1], 0)),
            1 => SocketAddr::from(([0, 0, 0, 0], i + 1)),
            2 => SocketAddr::from(([224, 0, 0, 1], i + 1)),
            _ => SocketAddr::from(([255, 255, 255, 255], i + 1)),
        })
        .collect();
    w.send(&[pex(junk)]).await;
    w.probe(probe_req(&fx)).await;
    assert_eq!(
        learnt(&fresh_status(&handle).await),
        0,
        "junk addresses kept"
    );

    // 20 lists of 5,000 addresses (127.0.0.1, distinct ports).
    let list = |k: u16| -> Vec<SocketAddr> {
        (0..5000u16)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 1 + (k * 200 + i) % 60000)))
            .collect()
    };
    w.send(&[pex(list(0))]).await;
    w.probe(probe_req(&fx)).await;
    let first = learnt(&fresh_status(&handle).await);
    assert!(
        first > 0 && first <= MAX_ENTRIES,
        "{first} learnt from one list"
    );
    w.send(&(1..20).map(|k| pex(list(k))).collect::<Vec<_>>())
        .await;
    w.probe(probe_req(&fx)).await;
    let s = fresh_status(&handle).await;
    assert!(learnt(&s) > first);
    assert!(
        s.known_peers.iter().map(|(_, n)| n).sum::<usize>() <= MAX_KNOWN,
        "{:?}",
        s.known_peers
    );

    // Garbage under the PEX id, unknown extended ids, unknown messages.
    w.send(&[
        Message::Extended {
            id: pex_id,
            payload: Bytes::from_static(b"not even bencode"),
        },
        Message::Extended {
            id: pex_id,
            payload: Bytes::from_static(b"li1ei2ee"),
        },
        Message::Extended {
            id: 200,
            payload: Bytes::from_static(b"d5:added6:abcdefe"),
        },
        Message::Extended {
            id: 77,
            payload: Bytes::from_static(b"\xff\x00garbage"),
        },
        Message::Unknown { id: 99 },
        Message::Port(0),
    ])
    .await;
    w.probe(probe_req(&fx)).await;
    let s = fresh_status(&handle).await;
    assert_eq!(s.peers, 1, "still connected");
    // Shut down before letting go of the one slot: nothing is ever dialled.
    session.shutdown().await;
    drop(w);
}

/// Handshakes essaim refuses: closed at once, before essaim sends its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handshakes_are_closed_at_once() {
    let _shared = EXCLUSIVE.read().await;
    let fx = Fixture::new(64 * 1024, 32 * 1024);
    let (session, _handle) = fx.seeder(local()).await;
    let addr = session.local_addr();
    let wrong_hash = Handshake::new(InfoHash([0x5a; 20]), random_peer_id()).encode();
    assert!(
        refused_before_handshake(addr, &wrong_hash).await,
        "wrong infohash"
    );
    // Our own peer id: a connection to ourselves.
    let itself = Handshake::new(fx.info_hash(), session.peer_id()).encode();
    assert!(
        refused_before_handshake(addr, &itself).await,
        "self-connection"
    );
    let garbage = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(2);
    assert!(
        refused_before_handshake(addr, &garbage).await,
        "not BitTorrent"
    );
    // The control: the right handshake is answered.
    let good = Handshake::new(fx.info_hash(), random_peer_id()).encode();
    assert!(!refused_before_handshake(addr, &good).await);
    session.shutdown().await;
}

/// A peer that sends its handshake one byte a second is dropped when the
/// handshake timeout ([`HANDSHAKE_TIMEOUT`], 10 s, for the whole handshake)
/// runs out, without an answer. (After the handshake a trickling peer is no
/// threat of its own: it holds one of the 50 connection slots and is
/// choked, snubbed, or dropped as useless after 5 min like any slow peer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshake_is_dropped_by_the_timeout() {
    let _shared = EXCLUSIVE.read().await;
    let fx = Fixture::new(64 * 1024, 32 * 1024);
    let (session, _handle) = fx.seeder(local()).await;
    let stream = TcpStream::connect(session.local_addr()).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let hs = Handshake::new(fx.info_hash(), random_peer_id()).encode();
    let trickle = tokio::spawn(async move {
        for b in hs {
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 68];
    let got = timeout(
        HANDSHAKE_TIMEOUT + Duration::from_secs(5),
        rd.read(&mut buf),
    )
    .await
    .expect("dropped by the handshake timeout");
    assert!(
        matches!(got, Ok(0) | Err(_)),
        "essaim answered a partial handshake"
    );
    let took = started.elapsed();
    assert!(
        took >= HANDSHAKE_TIMEOUT - Duration::from_secs(1),
        "closed after {took:?}"
    );
    trickle.abort();
    session.shutdown().await;
}

/// A peer silent after the handshake is dropped after the idle timeout
/// (180 s by default; 2 s here through `SessionConfig::idle_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_dropped_by_the_idle_timeout() {
    let _shared = EXCLUSIVE.read().await;
    let fx = Fixture::new(64 * 1024, 32 * 1024);
    let idle = Duration::from_secs(2);
    let (session, handle) = fx
        .seeder(SessionConfig {
            idle_timeout: idle,
            ..local()
        })
        .await;
    let (mut w, _) = Wire::connect(session.local_addr(), fx.info_hash(), random_peer_id()).await;
    w.probe(probe_req(&fx)).await;
    let started = Instant::now();
    assert!(w.closed_within(idle + PROMPTLY).await, "silent peer kept");
    let took = started.elapsed();
    assert!(
        took >= idle - Duration::from_millis(200),
        "closed after {took:?}"
    );
    wait_status(&handle, |s| s.peers == 0).await;
    session.shutdown().await;
}
