//! A magnet link's first phase (`MagnetPhase`) driven by hostile peers,
//! then its connections adopted by a swarm, the way the engine does it.
//!
//! The first bytes pick the real info dictionary (1 to 3 metadata pieces)
//! and 1–3 peers with their fast/extension bits. Every following byte is
//! an operation: raw wire bytes for a peer (through a `MessageDecoder` of
//! the phase's framing limit), an extended handshake with some
//! `metadata_size`, the answer to one of our metadata requests (right,
//! corrupt, wrong piece or wrong size), a reject, a `have`/`bitfield`/
//! `have_all`, a tick after the clock moves, a peer leaving or coming.
//! Then every peer still connected is adopted by a swarm over a torrent of
//! some piece count.
//!
//! Checked: no panic; `MetadataReceived` at most once and only with bytes
//! whose SHA-1 is the infohash; outputs only for connected peers; metadata
//! requests only to peers that offered ut_metadata, at most
//! `REQUESTS_PER_PEER` outstanding; no block request while we have
//! nothing; adoption takes every peer or drops it with a reason.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use essaim_core::{Bitfield, InfoHash, Layout};
use essaim_proto::magnet::{MagnetConfig, MagnetPhase, MAX_MESSAGE_LEN, REQUESTS_PER_PEER};
use essaim_proto::swarm::{Output, PeerKey, Swarm, SwarmConfig};
use essaim_wire::extension::{ExtendedHandshake, MetadataMessage, UT_METADATA_ID};
use essaim_wire::peer::{Message, MessageDecoder};
use libfuzzer_sys::fuzz_target;
use sha1::{Digest, Sha1};

#[path = "common/input.rs"]
mod input;
use input::Input;

const PIECE: usize = 16 * 1024;
/// The id our peers ask us to use for their ut_metadata.
const THEIR_ID: u8 = 5;

struct Peer {
    decoder: MessageDecoder,
    buf: BytesMut,
    offered: bool,
    asked: BTreeSet<u32>,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(len) = input.u16() else { return };
    let len = (usize::from(len) % (3 * PIECE)).max(1);
    let real: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
    let info_hash = InfoHash(Sha1::digest(&real).into());
    let mut m = MagnetPhase::new(
        info_hash,
        MagnetConfig {
            client: "fuzz".into(),
            listen_port: Some(1),
            pex: true,
            dht_port: Some(2),
        },
    );
    let mut now = Instant::now();
    let mut peers: BTreeMap<PeerKey, Peer> = BTreeMap::new();
    let mut next_key: PeerKey = 0;
    let mut received = 0;
    let connect = |m: &mut MagnetPhase, peers: &mut BTreeMap<PeerKey, Peer>, k, bits: u8| {
        m.handle_peer_connected(k, bits & 1 != 0, bits & 2 != 0, None);
        peers.insert(
            k,
            Peer {
                decoder: MessageDecoder::new(MAX_MESSAGE_LEN),
                buf: BytesMut::new(),
                offered: false,
                asked: BTreeSet::new(),
            },
        );
    };
    for _ in 0..(input.byte_or0() % 3 + 1) {
        let bits = input.byte_or0();
        connect(&mut m, &mut peers, next_key, bits);
        next_key += 1;
    }
    while let Some(op) = input.byte() {
        let keys: Vec<PeerKey> = peers.keys().copied().collect();
        let key = keys.get(usize::from(op >> 4) % keys.len().max(1)).copied();
        match (op & 0xf, key) {
            (0, Some(k)) => {
                let n = usize::from(input.byte_or0());
                let raw = input.take(n);
                let p = peers.get_mut(&k).expect("peer");
                p.buf.extend_from_slice(raw);
                let mut msgs = Vec::new();
                let mut broken = false;
                loop {
                    match p.decoder.decode(&mut p.buf) {
                        Ok(Some(msg)) => msgs.push(msg),
                        Ok(None) => break,
                        Err(_) => {
                            broken = true;
                            break;
                        }
                    }
                }
                for msg in msgs {
                    if !peers.contains_key(&k) {
                        break;
                    }
                    m.handle_message(k, msg, now);
                    drain(&mut m, &mut peers, &mut received, info_hash);
                }
                if broken {
                    drain(&mut m, &mut peers, &mut received, info_hash);
                    if peers.remove(&k).is_some() {
                        m.handle_peer_disconnected(k, now);
                    }
                }
            }
            (1, Some(k)) => {
                let size = match input.byte_or0() % 4 {
                    0 => Some(len as u64),
                    1 => None,
                    2 => Some(u64::from(input.u32_or0())),
                    _ => Some(len as u64 + 1),
                };
                let hs = ExtendedHandshake {
                    extensions: vec![("ut_metadata".into(), THEIR_ID)],
                    metadata_size: size,
                    ..ExtendedHandshake::default()
                };
                if let Some(p) = peers.get_mut(&k) {
                    p.offered = size.is_some();
                }
                let payload = Bytes::from(hs.encode());
                m.handle_message(k, Message::Extended { id: 0, payload }, now);
            }
            (2 | 3, Some(k)) => {
                let Some(piece) = peers.get(&k).and_then(|p| p.asked.iter().next().copied())
                else {
                    continue;
                };
                let how = input.byte_or0() % 4;
                let start = piece as usize * PIECE;
                let end = (start + PIECE).min(real.len());
                let mut chunk = real.get(start..end).unwrap_or_default().to_vec();
                let (mut p, mut total) = (piece, real.len() as u64);
                match how {
                    0 => {}
                    1 => chunk.iter_mut().for_each(|b| *b ^= 0xff),
                    2 => p += 1,
                    _ => total += 1,
                }
                let reply = if op & 0xf == 3 {
                    MetadataMessage::Reject { piece }
                } else {
                    MetadataMessage::Data {
                        piece: p,
                        total_size: total,
                        data: Bytes::from(chunk),
                    }
                };
                if let Some(peer) = peers.get_mut(&k) {
                    peer.asked.remove(&piece);
                }
                let payload = Bytes::from(reply.encode());
                m.handle_message(k, Message::Extended { id: UT_METADATA_ID, payload }, now);
            }
            (4, Some(k)) => {
                let msg = match input.byte_or0() % 3 {
                    0 => Message::Have { piece: input.u32_or0() % 100 },
                    1 => Message::Bitfield(Bytes::copy_from_slice(input.take(3))),
                    _ => Message::HaveAll,
                };
                m.handle_message(k, msg, now);
            }
            (5, _) => {
                now += Duration::from_millis(u64::from(input.byte_or0()) * 100);
                for p in peers.values_mut() {
                    p.asked.clear(); // timed-out pieces may be asked again
                }
                m.handle_tick(now);
            }
            (6, Some(k)) => {
                drain(&mut m, &mut peers, &mut received, info_hash);
                peers.remove(&k);
                m.handle_peer_disconnected(k, now);
            }
            (7, _) if peers.len() < 4 => {
                let bits = input.byte_or0();
                connect(&mut m, &mut peers, next_key, bits);
                next_key += 1;
            }
            _ => {}
        }
        drain(&mut m, &mut peers, &mut received, info_hash);
    }
    // Adoption by a swarm of some piece count.
    let pieces = u64::from(input.byte_or0() % 40) + 1;
    let layout = Layout::new(PIECE as u64, &[pieces * PIECE as u64 - 7]).expect("layout");
    let n = layout.num_pieces();
    let mut swarm = Swarm::new(
        info_hash,
        layout,
        Bitfield::new(n),
        Some(Bytes::from(real)),
        SwarmConfig::default(),
    );
    let adopted = m.into_peers();
    let mut dropped = BTreeSet::new();
    for (k, early) in adopted {
        assert!(peers.contains_key(&k), "adopted a peer that left");
        let ok = early.bitfield(n).is_ok();
        swarm.handle_peer_adopted(k, early, now);
        if !ok {
            dropped.insert(k);
        }
    }
    let mut gone = BTreeSet::new();
    while let Some(out) = swarm.poll_output() {
        if let Output::Disconnect { peer, .. } = out {
            gone.insert(peer);
        }
    }
    assert!(dropped.is_subset(&gone), "a bad early bitfield was kept");
    assert_eq!(swarm.peer_count() + dropped.len(), peers.len());
});

/// Carries out the phase's outputs, checking each.
fn drain(
    m: &mut MagnetPhase,
    peers: &mut BTreeMap<PeerKey, Peer>,
    received: &mut u32,
    info_hash: InfoHash,
) {
        while let Some(out) = m.poll_output() {
            match out {
                Output::Send { peer, msg } => {
                    let p = peers.get_mut(&peer).expect("a message to a peer not connected");
                    match msg {
                        Message::Extended { id: THEIR_ID, payload } => {
                            if let Ok(MetadataMessage::Request { piece }) =
                                MetadataMessage::decode(&payload)
                            {
                                assert!(p.offered, "asked a peer that offered nothing");
                                p.asked.insert(piece);
                                assert!(p.asked.len() <= REQUESTS_PER_PEER);
                            }
                        }
                        Message::Request(_) => panic!("a block request with no metadata"),
                        Message::Have { .. } | Message::Bitfield(_) | Message::HaveAll => {
                            panic!("we claimed a piece")
                        }
                        _ => {}
                    }
                }
                Output::Disconnect { peer, .. } => {
                    assert!(peers.remove(&peer).is_some(), "disconnected twice");
                }
                Output::MetadataReceived(b) => {
                    *received += 1;
                    assert_eq!(*received, 1, "metadata received twice");
                    assert_eq!(Sha1::digest(&b)[..], info_hash.0[..]);
                    assert_eq!(m.metadata(), Some(&b));
                }
                Output::PeersDiscovered(_) | Output::DhtNode(_) => {}
                other => panic!("unexpected output {other:?}"),
            }
        }
}
