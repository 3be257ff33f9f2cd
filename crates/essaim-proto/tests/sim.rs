//! Deterministic simulation of whole swarms on virtual time (DESIGN.md,
//! "Tests, from fast to real", level 3).
//!
//! The harness in `sim/harness.rs` plays the driver for N [`Swarm`]s joined
//! by virtual links with latency and bandwidth; every test here builds a
//! network, runs it to some end, and asserts on the outcome. Invariants
//! (data verified equals the original, no `Serve` for a missing piece,
//! unrequested blocks are dropped, upload slots respected, ...) are checked
//! by the harness after every step.
//!
//! [`Swarm`]: essaim_proto::swarm::Swarm

#[path = "sim/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use essaim_core::BLOCK_SIZE;
use essaim_proto::swarm::{DisconnectReason, SNUB_TIMEOUT};
use essaim_wire::peer::{BlockRequest, Message};
use harness::{Behavior, Content, LinkSpec, NodeSpec, Sim};
use proptest::prelude::*;

const PIECE: u32 = 32 * 1024;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// 40 pieces of 32 KiB, the last one odd-sized (12,345 bytes).
fn content(seed: u64) -> Content {
    Content::random(PIECE, 39 * u64::from(PIECE) + 12_345, seed)
}

fn leechers_complete(sim: &Sim, leechers: std::ops::Range<usize>) -> bool {
    leechers
        .into_iter()
        .all(|i| sim.nodes[i].swarm.is_complete())
}

/// One seed, one leecher: the leecher gets everything exactly once.
fn seed_and_leecher(fast: bool) {
    let c = content(1);
    let total = c.layout.total_length();
    let mut sim = Sim::new(c, &[NodeSpec::seed(), NodeSpec::leecher()], 1);
    sim.connect(
        0,
        1,
        LinkSpec::latency_ms(20),
        LinkSpec::latency_ms(20),
        fast,
    );
    sim.run_to_completion(secs(60));
    // Keep going: `Completed` must not come again.
    sim.run_for(secs(30));
    sim.assert_all_data_correct();
    assert_eq!(sim.nodes[1].completed, 1);
    assert_eq!(sim.nodes[0].completed, 0, "a seed never completes");
    assert!(
        sim.nodes[1].checks.iter().all(|&n| n == 1),
        "each piece checked once"
    );
    let now = sim.now();
    let s = sim.nodes[1].swarm.stats(now);
    assert_eq!(s.downloaded, total);
    assert_eq!(s.verified, total);
    assert_eq!((s.wasted, s.hash_failures), (0, 0));
    assert_eq!(sim.nodes[0].swarm.stats(now).uploaded, total);
    // Complete, the leecher has no use for the seed any more.
    assert!(
        sim.disconnects
            .iter()
            .any(|d| d.node == 1 && d.remote == Some(0) && d.reason == DisconnectReason::Useless),
        "{:?}",
        sim.disconnects
    );
}

#[test]
fn one_seed_one_leecher() {
    seed_and_leecher(true);
}

#[test]
fn one_seed_one_leecher_without_fast_extension() {
    seed_and_leecher(false);
}

/// Eight leechers behind a seed with a thin uplink: most bytes must come
/// from the leechers trading among themselves.
fn thin_seed_run(seed: u64) -> Sim {
    let mut specs = vec![NodeSpec::seed().uplink(64 * 1024)];
    specs.extend((0..8).map(|_| NodeSpec::leecher().uplink(512 * 1024)));
    let mut sim = Sim::new(content(seed), &specs, seed);
    sim.connect_all(10..60, true);
    sim.run_until(secs(400), |s| leechers_complete(s, 1..9));
    sim
}

#[test]
fn leechers_share_when_the_seed_is_slow() {
    let sim = thin_seed_run(2);
    sim.assert_all_data_correct();
    let (mut from_seed, mut from_leechers) = (0u64, 0u64);
    for to in 1..9 {
        assert_eq!(sim.nodes[to].completed, 1);
        from_seed += sim.useful[to][0];
        from_leechers += (1..9).map(|from| sim.useful[to][from]).sum::<u64>();
    }
    let share = from_leechers as f64 / (from_seed + from_leechers) as f64;
    assert!(
        share > 0.30,
        "leechers got only {:.0}% from each other ({from_leechers} vs {from_seed} from the seed)",
        share * 100.0
    );
    // The seed alone would need 8 × 1.25 MiB / 64 KiB/s = 160 s.
    let last = sim.nodes[1..].iter().filter_map(|n| n.completed_at).max();
    assert!(last.is_some_and(|t| t < secs(160)), "finished at {last:?}");
}

#[test]
fn same_seed_same_run() {
    let a = thin_seed_run(3);
    let b = thin_seed_run(3);
    assert_eq!(a.log.len(), b.log.len(), "message counts differ");
    for (x, y) in a.log.iter().zip(&b.log) {
        assert_eq!(
            (x.t, x.from, x.to, &x.msg),
            (y.t, y.from, y.to, &y.msg),
            "runs diverge"
        );
    }
}

#[test]
fn lying_peer_is_banned_and_everyone_completes() {
    // 0: honest seed, 1: liar with every piece, 2..5: leechers.
    let specs = [
        NodeSpec::seed(),
        NodeSpec::seed().behavior(Behavior::Liar),
        NodeSpec::leecher(),
        NodeSpec::leecher(),
        NodeSpec::leecher(),
    ];
    let mut sim = Sim::new(content(4), &specs, 4);
    sim.connect_all(10..60, true);
    sim.run_until(secs(300), |s| leechers_complete(s, 2..5));
    sim.assert_all_data_correct();
    let banned_by: Vec<usize> = sim
        .disconnects
        .iter()
        .filter(|d| d.remote == Some(1) && d.reason == DisconnectReason::Banned)
        .map(|d| d.node)
        .collect();
    eprintln!(
        "LIAR t={:?} disconnects {:#?} useful {:?}",
        sim.t, sim.disconnects, sim.useful
    );
    assert!(
        !banned_by.is_empty(),
        "nobody banned the liar: {:?}",
        sim.disconnects
    );
    let now = sim.now();
    let failures: u32 = (2..5)
        .map(|i| sim.nodes[i].swarm.stats(now).hash_failures)
        .sum();
    let seen: u32 = (2..5).map(|i| sim.nodes[i].check_failures).sum();
    assert!(failures > 0);
    assert_eq!(
        failures, seen,
        "stats.hash_failures counts every failed check"
    );
    for i in 2..5 {
        assert!(
            sim.nodes[i].swarm.stats(now).wasted
                >= u64::from(sim.nodes[i].check_failures) * u64::from(PIECE) / 2
        );
    }
}

#[test]
fn black_hole_is_snubbed_and_its_requests_go_elsewhere() {
    // 0: honest seed with a thin uplink (the download takes over a minute),
    // 1: a seed that never answers, 2: the leecher.
    let specs = [
        NodeSpec::seed().uplink(16 * 1024),
        NodeSpec::seed().behavior(Behavior::BlackHole),
        NodeSpec::leecher(),
    ];
    let mut sim = Sim::new(content(5), &specs, 5);
    let l = LinkSpec::latency_ms(30);
    sim.connect(0, 2, l, l, true);
    sim.connect(1, 2, l, l, true);
    sim.run_until(secs(300), |s| s.nodes[2].swarm.is_complete());
    sim.assert_all_data_correct();
    assert!(
        sim.nodes[1].serves_dropped > 0,
        "the black hole was never asked"
    );

    let to_hole = |m: fn(&Message) -> Option<BlockRequest>| -> Vec<(Duration, BlockRequest)> {
        sim.log
            .iter()
            .filter(|s| s.from == 2 && s.to == 1)
            .filter_map(|s| m(&s.msg).map(|r| (s.t, r)))
            .collect()
    };
    let requests = to_hole(|m| match m {
        Message::Request(r) => Some(*r),
        _ => None,
    });
    let cancels = to_hole(|m| match m {
        Message::Cancel(r) => Some(*r),
        _ => None,
    });
    assert!(!requests.is_empty());
    eprintln!(
        "BH t={:?} cancels {:?} useful {:?} {:?}",
        sim.t, cancels, sim.useful, sim.disconnects
    );
    assert!(
        !cancels.is_empty(),
        "requests to the black hole never cancelled"
    );
    let first_request = requests[0].0;
    for (t, r) in &cancels {
        assert!(
            *t >= first_request + SNUB_TIMEOUT,
            "cancel of {r:?} at {t:?}, before the snub timeout"
        );
        let again = sim
            .log
            .iter()
            .any(|s| s.from == 2 && s.to == 0 && s.t >= *t && s.msg == Message::Request(*r));
        assert!(
            again,
            "{r:?} cancelled at the black hole at {t:?}, never asked of the seed"
        );
    }
    assert!(
        sim.log
            .iter()
            .all(|s| !(s.from == 1 && matches!(s.msg, Message::Piece { .. }))),
        "the black hole sent a block"
    );
}

#[test]
fn protocol_violations_disconnect_and_the_swarm_stays_usable() {
    // 38 pieces: the bitfield has two spare bits.
    let c = Content::random(PIECE, 37 * u64::from(PIECE) + 12_345, 6);
    let n = c.num_pieces();
    assert_eq!(n % 8, 6);
    let last = n - 1;
    let last_size = c.layout.piece_size(last).unwrap_or(0);
    let mut sim = Sim::new(c, &[NodeSpec::seed(), NodeSpec::leecher()], 6);
    let bitfield_len = n.div_ceil(8) as usize;
    let full_bits = {
        let mut b = vec![0xffu8; bitfield_len];
        let spare = bitfield_len as u32 * 8 - n;
        *b.last_mut().unwrap_or(&mut 0) &= 0xff << spare;
        b
    };
    let req = |piece, begin, length| BlockRequest {
        piece,
        begin,
        length,
    };
    // (node, fast, messages before, the offending message, what it is)
    let cases: Vec<(usize, bool, Vec<Message>, Message, &str)> = vec![
        (
            1,
            true,
            vec![],
            Message::Have { piece: n },
            "have past the end",
        ),
        (
            0,
            true,
            vec![],
            Message::Request(req(n, 0, BLOCK_SIZE)),
            "request of piece n",
        ),
        (
            1,
            true,
            vec![],
            Message::Bitfield(Bytes::from(vec![0xff; bitfield_len + 1])),
            "bitfield too long",
        ),
        (
            1,
            true,
            vec![],
            Message::Bitfield(Bytes::from(vec![0xff; bitfield_len - 1])),
            "bitfield too short",
        ),
        (
            1,
            true,
            vec![],
            Message::Bitfield(Bytes::from(vec![0xff; bitfield_len])),
            "bitfield with spare bits set",
        ),
        (
            1,
            true,
            vec![Message::Have { piece: 0 }],
            Message::Bitfield(Bytes::from(full_bits.clone())),
            "bitfield after have",
        ),
        (
            1,
            true,
            vec![Message::Bitfield(Bytes::from(full_bits.clone()))],
            Message::Bitfield(Bytes::from(full_bits.clone())),
            "second bitfield",
        ),
        (
            1,
            true,
            vec![Message::HaveNone],
            Message::HaveAll,
            "have_all after have_none",
        ),
        (
            0,
            true,
            vec![Message::Interested],
            Message::Request(req(last, last_size - 100, 200)),
            "request past the end of the last piece",
        ),
        (
            0,
            true,
            vec![Message::Interested],
            Message::Request(req(0, PIECE - BLOCK_SIZE / 2, BLOCK_SIZE)),
            "request past the end of a piece",
        ),
        (
            0,
            true,
            vec![],
            Message::Request(req(0, 0, 0)),
            "request of length 0",
        ),
        (
            0,
            true,
            vec![],
            Message::Request(req(0, 0, BLOCK_SIZE + 1)),
            "request over 16 KiB",
        ),
        (
            1,
            false,
            vec![],
            Message::Reject(req(0, 0, BLOCK_SIZE)),
            "reject without fast",
        ),
        (1, false, vec![], Message::HaveAll, "have_all without fast"),
        (
            1,
            false,
            vec![],
            Message::HaveNone,
            "have_none without fast",
        ),
        (
            1,
            false,
            vec![],
            Message::AllowedFast { piece: 0 },
            "allowed_fast without fast",
        ),
        (
            1,
            false,
            vec![],
            Message::Suggest { piece: 0 },
            "suggest without fast",
        ),
    ];
    for (node, fast, before, bad, what) in cases {
        let peers = sim.nodes[node].swarm.peer_count();
        let key = sim.connect_raw(node, fast, true);
        for m in before {
            sim.inject(node, key, m);
            assert!(
                sim.is_connected(node, key),
                "{what}: cut off before the violation"
            );
        }
        sim.inject(node, key, bad);
        let d = sim.disconnects_of(node, key);
        assert!(
            matches!(d.as_slice(), [r] if matches!(r.reason, DisconnectReason::Protocol(_))),
            "{what}: expected one protocol disconnect, got {d:?}"
        );
        assert!(!sim.is_connected(node, key));
        assert_eq!(
            sim.nodes[node].swarm.peer_count(),
            peers,
            "{what}: peer not dropped"
        );
    }
    // A message of the extension protocol without the extension bit.
    let key = sim.connect_raw(1, true, false);
    sim.inject(
        1,
        key,
        Message::Extended {
            id: 0,
            payload: Bytes::from_static(b"de"),
        },
    );
    assert_eq!(
        sim.disconnects_of(1, key).len(),
        1,
        "extended without the bit"
    );

    // Unrequested blocks (a whole piece, and an odd slice): dropped and
    // counted as waste, no disconnect, nothing checked.
    let key = sim.connect_raw(1, true, true);
    sim.inject(1, key, Message::HaveAll);
    let now = sim.now();
    let before = sim.nodes[1].swarm.stats(now);
    let piece0 = sim.content.piece(0).to_vec();
    for begin in (0..PIECE).step_by(BLOCK_SIZE as usize) {
        let data = Bytes::copy_from_slice(&piece0[begin as usize..(begin + BLOCK_SIZE) as usize]);
        sim.inject(
            1,
            key,
            Message::Piece {
                piece: 0,
                begin,
                data,
            },
        );
    }
    sim.inject(
        1,
        key,
        Message::Piece {
            piece: 1,
            begin: 3,
            data: Bytes::from_static(b"not a block as we cut them"),
        },
    );
    let after = sim.nodes[1].swarm.stats(now);
    assert_eq!(after.wasted, before.wasted + u64::from(PIECE) + 26);
    assert_eq!(after.downloaded, before.downloaded);
    assert!(
        sim.is_connected(1, key),
        "unrequested blocks are no reason to disconnect"
    );
    assert!(sim.disconnects_of(1, key).is_empty());
    assert!(
        sim.nodes[1].checks.iter().all(|&c| c == 0),
        "an unrequested block was checked"
    );

    // Still usable: a real seed comes along and the leecher completes.
    let l = LinkSpec::latency_ms(25);
    sim.connect(0, 1, l, l, true);
    sim.run_until(secs(60), |s| s.nodes[1].swarm.is_complete());
    sim.assert_all_data_correct();
    assert_eq!(sim.nodes[1].completed, 1);
}

#[test]
fn endgame_cancels_duplicate_requests() {
    // One leecher, two seeds: one near, one far. The last blocks are asked
    // of both; the first copy in gets the other request cancelled.
    let specs = [
        NodeSpec::seed().uplink(256 * 1024),
        NodeSpec::seed().uplink(256 * 1024),
        NodeSpec::leecher(),
    ];
    let mut sim = Sim::new(content(7), &specs, 7);
    sim.connect(0, 2, LinkSpec::latency_ms(5), LinkSpec::latency_ms(5), true);
    sim.connect(
        1,
        2,
        LinkSpec::latency_ms(150),
        LinkSpec::latency_ms(150),
        true,
    );
    sim.run_until(secs(60), |s| s.nodes[2].swarm.is_complete());
    sim.assert_all_data_correct();
    assert!(
        sim.t < SNUB_TIMEOUT,
        "took too long for cancels to be endgame ones"
    );
    let requested_of = |seed: usize| -> BTreeSet<(u32, u32)> {
        sim.log
            .iter()
            .filter(|s| s.from == 2 && s.to == seed)
            .filter_map(|s| match s.msg {
                Message::Request(r) => Some((r.piece, r.begin)),
                _ => None,
            })
            .collect()
    };
    let (a, b) = (requested_of(0), requested_of(1));
    let cancels: Vec<_> = sim
        .log
        .iter()
        .filter(|s| s.from == 2)
        .filter_map(|s| match s.msg {
            Message::Cancel(r) => Some((s.to, r)),
            _ => None,
        })
        .collect();
    eprintln!(
        "ENDGAME t={:?} cancels {:?} useful {:?} {:?}",
        sim.t, cancels, sim.useful, sim.disconnects
    );
    assert!(!cancels.is_empty(), "no cancel in the endgame");
    for (to, r) in &cancels {
        let key = (r.piece, r.begin);
        assert!(
            a.contains(&key) && b.contains(&key),
            "cancel of {r:?} to {to}, not a duplicate"
        );
        // The block came from the other seed, and before the cancel.
        let other = 1 - to;
        assert!(sim.useful[2][other] > 0);
    }
    // Every piece checked once: duplicates never made it into a buffer twice.
    assert!(sim.nodes[2].checks.iter().all(|&n| n == 1));
    assert_eq!(sim.nodes[2].check_failures, 0);
}

#[test]
fn seed_unchokes_at_most_slots_plus_one_and_rotates() {
    // A seed with four slots and ten interested leechers that only know it.
    let mut specs = vec![NodeSpec::seed().slots(4).uplink(20 * 1024)];
    specs.extend((0..10).map(|_| NodeSpec::leecher()));
    let mut sim = Sim::new(content(8), &specs, 8);
    for i in 1..=10 {
        let l = LinkSpec::latency_ms(10 + i as u64 * 7);
        sim.connect(0, i, l, l, true);
    }
    let mut max_unchoked = 0;
    sim.run_until(secs(121), |s| {
        // The harness checks `<= slots + 1` after every step for every node.
        max_unchoked = max_unchoked.max(s.unchoked(0));
        s.t >= secs(120)
    });
    for s in &sim.log {
        if s.from == 0 && matches!(s.msg, Message::Unchoke | Message::Choke) {
            eprintln!("{:?} -> {} {:?}", s.t, s.to, s.msg);
        }
    }
    assert_eq!(max_unchoked, 5, "four slots and one optimistic");
    let unchoked: BTreeSet<usize> = sim
        .log
        .iter()
        .filter(|s| s.from == 0 && s.msg == Message::Unchoke)
        .map(|s| s.to)
        .collect();
    assert_eq!(
        unchoked,
        (1..=10).collect::<BTreeSet<_>>(),
        "not every leecher was unchoked within two minutes"
    );
    assert!(
        (1..=10).all(|i| !sim.nodes[i].swarm.is_complete()),
        "the test wants the seed busy for the whole two minutes"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn random_swarms_complete(
        leechers in 1usize..6,
        piece_length in prop::sample::select(vec![16 * 1024u32, 20_000, 32 * 1024, 48 * 1024, 64 * 1024]),
        pieces in 1u64..24,
        tail in 1u64..64 * 1024,
        latency in 1u64..200,
        fast in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let pl = u64::from(piece_length);
        let total = (pieces - 1) * pl + tail.min(pl);
        let mut specs = vec![NodeSpec::seed().uplink(256 * 1024)];
        specs.extend((0..leechers).map(|_| NodeSpec::leecher().uplink(256 * 1024)));
        let mut sim = Sim::new(Content::random(piece_length, total, seed), &specs, seed);
        sim.connect_all(1..latency + 1, fast);
        sim.run_to_completion(secs(300));
        sim.assert_all_data_correct();
        let now = sim.now();
        for i in 1..=leechers {
            prop_assert_eq!(sim.nodes[i].completed, 1);
            prop_assert_eq!(sim.nodes[i].swarm.stats(now).hash_failures, 0);
            prop_assert!(sim.nodes[i].checks.iter().all(|&n| n == 1));
        }
    }
}
