//! A magnet link end to end, without sockets: a leecher's
//! [`MagnetPhase`] fetches the info dictionary from a seed's [`Swarm`],
//! then its new swarm adopts the very same connection and downloads every
//! piece over it (DESIGN.md: one peer path; the connections that fetched
//! the metadata stay open for the download).
//!
//! Messages go straight from one machine's outputs to the other's inputs,
//! in order, on a virtual clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use essaim_core::{Bitfield, InfoHash, Layout};
use essaim_proto::magnet::{MagnetConfig, MagnetPhase};
use essaim_proto::swarm::{Output, PeerKey, Swarm, SwarmConfig};
use essaim_wire::peer::Message;
use sha1::{Digest, Sha1};

const PIECE: u32 = 32 * 1024;

struct Fixture {
    layout: Layout,
    data: Vec<u8>,
    hashes: Vec<[u8; 20]>,
    info: Bytes,
    info_hash: InfoHash,
}

fn fixture() -> Fixture {
    let total = 9 * u64::from(PIECE) + 777;
    let data: Vec<u8> = (0..total).map(|i| (i * 31 % 253) as u8).collect();
    let layout = Layout::new(u64::from(PIECE), &[total]).unwrap();
    let hashes: Vec<[u8; 20]> = data
        .chunks(PIECE as usize)
        .map(|c| Sha1::digest(c).into())
        .collect();
    // Any bytes do for the machines: only their SHA-1 is checked. 40 KiB
    // takes three metadata pieces.
    let info: Vec<u8> = (0..40_000u32).map(|i| (i % 241) as u8).collect();
    let info_hash = InfoHash(Sha1::digest(&info).into());
    Fixture {
        layout,
        data,
        hashes,
        info: Bytes::from(info),
        info_hash,
    }
}

/// The leecher, first in its magnet phase, then a swarm.
enum Leecher {
    Magnet(Box<MagnetPhase>),
    Swarm(Box<Swarm>),
}

/// The leecher's key for the seed, and the seed's for the leecher.
const AT_LEECHER: PeerKey = 11;
const AT_SEED: PeerKey = 22;

#[test]
fn the_connection_that_fetched_the_metadata_carries_the_download() {
    let fx = fixture();
    let mut now = Instant::now();
    let mut seed = Swarm::new(
        fx.info_hash,
        fx.layout.clone(),
        Bitfield::full(fx.layout.num_pieces()),
        Some(fx.info.clone()),
        SwarmConfig {
            super_seed: false,
            ..SwarmConfig::default()
        },
    );
    let mut leecher = Leecher::Magnet(Box::new(MagnetPhase::new(
        fx.info_hash,
        MagnetConfig {
            client: "test".into(),
            listen_port: None,
            pex: true,
            dht_port: None,
        },
    )));
    seed.handle_peer_connected(AT_SEED, true, true, None, now);
    if let Leecher::Magnet(m) = &mut leecher {
        m.handle_peer_connected(AT_LEECHER, true, true, None);
    }
    let mut to_seed: VecDeque<Message> = VecDeque::new();
    let mut to_leecher: VecDeque<Message> = VecDeque::new();
    let mut disk: Vec<Option<Vec<u8>>> = vec![None; fx.layout.num_pieces() as usize];
    let mut metadata = None;
    let mut adopted_at = None;
    for step in 0..100_000 {
        // The seed's outputs.
        while let Some(out) = seed.poll_output() {
            match out {
                Output::Send { msg, .. } => to_leecher.push_back(msg),
                Output::Serve { peer, req } => {
                    let start =
                        fx.layout.piece_offset(req.piece).unwrap() as usize + req.begin as usize;
                    let data = Bytes::copy_from_slice(&fx.data[start..start + req.length as usize]);
                    to_leecher.push_back(Message::Piece {
                        piece: req.piece,
                        begin: req.begin,
                        data,
                    });
                    seed.handle_block_sent(peer, req.length, now);
                }
                Output::Disconnect { reason, .. } => panic!("seed dropped us: {reason:?}"),
                _ => {}
            }
        }
        // The leecher's outputs.
        let mut checks = Vec::new();
        loop {
            let out = match &mut leecher {
                Leecher::Magnet(m) => m.poll_output(),
                Leecher::Swarm(s) => s.poll_output(),
            };
            let Some(out) = out else { break };
            match out {
                Output::Send { msg, .. } => to_seed.push_back(msg),
                Output::MetadataReceived(info) => metadata = Some(info),
                Output::CheckPiece { piece, data } => checks.push((piece, data)),
                Output::Disconnect { reason, .. } => panic!("leecher dropped the seed: {reason:?}"),
                _ => {}
            }
        }
        for (piece, data) in checks {
            let ok = Sha1::digest(&data)[..] == fx.hashes[piece as usize];
            if ok {
                disk[piece as usize] = Some(data.clone());
            }
            if let Leecher::Swarm(s) = &mut leecher {
                s.handle_piece_checked(piece, ok, &data, now);
            }
        }
        // Metadata in: the driver would parse it and look at its disk
        // (nothing there); the swarm takes the connection over.
        if let (Some(info), Leecher::Magnet(_)) = (&metadata, &leecher) {
            assert_eq!(Sha1::digest(info)[..], fx.info_hash.0[..]);
            let Leecher::Magnet(m) = std::mem::replace(
                &mut leecher,
                Leecher::Swarm(Box::new(Swarm::new(
                    fx.info_hash,
                    fx.layout.clone(),
                    Bitfield::new(fx.layout.num_pieces()),
                    Some(info.clone()),
                    SwarmConfig::default(),
                ))),
            ) else {
                unreachable!()
            };
            let peers = (*m).into_peers();
            assert_eq!(peers.len(), 1, "the seed's connection is kept");
            let Leecher::Swarm(s) = &mut leecher else {
                unreachable!()
            };
            for (key, early) in peers {
                assert_eq!(key, AT_LEECHER);
                assert!(
                    matches!(
                        early.bitfield(fx.layout.num_pieces()),
                        Ok(Some(ref b)) if b.is_full()
                    ),
                    "the seed's have_all was kept"
                );
                s.handle_peer_adopted(key, early, now);
            }
            adopted_at = Some(step);
            continue;
        }
        if let Leecher::Swarm(s) = &leecher {
            if s.is_complete() {
                break;
            }
        }
        if to_seed.is_empty() && to_leecher.is_empty() {
            // Quiet: time passes (the choker unchokes every 10 s).
            now += Duration::from_secs(1);
            seed.handle_tick(now);
            match &mut leecher {
                Leecher::Magnet(m) => m.handle_tick(now),
                Leecher::Swarm(s) => s.handle_tick(now),
            }
            continue;
        }
        while let Some(msg) = to_seed.pop_front() {
            seed.handle_message(AT_SEED, msg, now);
        }
        while let Some(msg) = to_leecher.pop_front() {
            match &mut leecher {
                Leecher::Magnet(m) => m.handle_message(AT_LEECHER, msg, now),
                Leecher::Swarm(s) => s.handle_message(AT_LEECHER, msg, now),
            }
        }
    }
    assert!(adopted_at.is_some(), "the metadata never came");
    let Leecher::Swarm(s) = &leecher else {
        panic!("still in the magnet phase")
    };
    assert!(s.is_complete(), "the download did not finish");
    let got: Vec<u8> = disk.into_iter().flat_map(|p| p.unwrap()).collect();
    assert!(got == fx.data, "downloaded bytes differ");
    assert_eq!(seed.peer_count(), 1, "one connection from start to end");
}
