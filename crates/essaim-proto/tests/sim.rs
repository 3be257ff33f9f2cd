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
use essaim_core::{Bitfield, BLOCK_SIZE};
use essaim_proto::swarm::{DisconnectReason, PeerKey, SwarmConfig, SNUB_TIMEOUT};
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

/// 0: honest seed, 1: a liar with every piece, 2..5: leechers.
fn liar_run(c: Content, seed: u64) -> Sim {
    let specs = [
        NodeSpec::seed(),
        NodeSpec::seed().behavior(Behavior::Liar),
        NodeSpec::leecher(),
        NodeSpec::leecher(),
        NodeSpec::leecher(),
    ];
    let mut sim = Sim::new(c, &specs, seed);
    sim.connect_all(10..60, true);
    sim.run_until(secs(300), |s| leechers_complete(s, 2..5));
    sim.assert_all_data_correct();
    let banned_by: Vec<usize> = sim
        .disconnects
        .iter()
        .filter(|d| d.remote == Some(1) && d.reason == DisconnectReason::Banned)
        .map(|d| d.node)
        .collect();
    assert!(
        !banned_by.is_empty(),
        "nobody banned the liar: {:?}",
        sim.disconnects
    );
    let now = sim.now();
    let smallest = (0..sim.content.num_pieces())
        .filter_map(|p| sim.content.layout.piece_size(p))
        .min()
        .unwrap_or(0);
    let mut failures = 0;
    for i in 2..5 {
        let s = sim.nodes[i].swarm.stats(now);
        assert_eq!(
            s.hash_failures, sim.nodes[i].check_failures,
            "node {i}: stats.hash_failures counts every failed check"
        );
        assert!(s.wasted >= u64::from(s.hash_failures) * u64::from(smallest));
        failures += s.hash_failures;
    }
    assert!(failures > 0, "the liar's blocks were never checked");
    sim
}

#[test]
fn lying_peer_is_banned_and_everyone_completes() {
    liar_run(content(4), 4);
}

#[test]
fn lying_peer_with_large_pieces() {
    // 256 KiB pieces (16 blocks): blocks of one piece come from several
    // peers, so an honest peer shares the blame for the liar's pieces.
    let sim = liar_run(Content::random(256 * 1024, 6 * 256 * 1024 + 1000, 11), 11);
    let honest_banned = sim
        .disconnects
        .iter()
        .filter(|d| d.remote == Some(0) && d.reason == DisconnectReason::Banned)
        .count();
    assert_eq!(
        honest_banned, 0,
        "the honest seed was banned: {:?}",
        sim.disconnects
    );
}

#[test]
fn honest_seed_is_not_banned_for_a_liars_blocks() {
    // Found by adversarial_swarms_complete: once the black hole is snubbed,
    // its blocks are asked of the seed and the liar alike, so pieces mix;
    // blaming every sender of a failed piece banned the honest seed too.
    let seed = 4229112378752076493u64;
    let total = 24 * u64::from(PIECE) + 1 + seed % u64::from(PIECE);
    let mut specs = vec![
        NodeSpec::seed(),
        NodeSpec::seed().behavior(Behavior::Liar),
        NodeSpec::seed().behavior(Behavior::BlackHole),
        NodeSpec::leecher().uplink(8 * 1024),
    ];
    for s in &mut specs {
        s.config.upload_slots = 1;
        s.config.partial_budget = u64::from(PIECE);
    }
    let mut sim = Sim::new(Content::random(PIECE, total, seed), &specs, seed);
    sim.connect_all(1..209, false);
    sim.run_until(secs(600), |s| {
        let banned = s
            .disconnects
            .iter()
            .find(|d| d.remote == Some(0) && d.reason == DisconnectReason::Banned);
        assert!(banned.is_none(), "the honest seed was banned: {banned:?}");
        s.nodes[3].swarm.is_complete()
    });
    sim.assert_all_data_correct();
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
    assert!(
        !cancels.is_empty(),
        "requests to the black hole never cancelled"
    );
    // The first cancels are the snub: every request then outstanding is
    // cancelled and asked of the seed instead. (The black hole keeps one
    // request afterwards, in case it wakes up; the endgame takes it over.)
    let snub_at = cancels[0].0;
    assert!(
        snub_at >= requests[0].0 + SNUB_TIMEOUT,
        "snubbed at {snub_at:?}, before the timeout"
    );
    let outstanding_at_snub = requests.iter().filter(|(t, _)| *t < snub_at).count();
    let snub_cancels: Vec<BlockRequest> = cancels
        .iter()
        .filter(|(t, _)| *t == snub_at)
        .map(|(_, r)| *r)
        .collect();
    assert_eq!(snub_cancels.len(), outstanding_at_snub);
    for r in &snub_cancels {
        let again = sim
            .log
            .iter()
            .any(|s| s.from == 2 && s.to == 0 && s.t >= snub_at && s.msg == Message::Request(*r));
        assert!(
            again,
            "{r:?} cancelled at the black hole at {snub_at:?}, never asked of the seed"
        );
    }
    // Snubbed, the black hole is asked one block at a time.
    let mut outstanding = 0i32;
    for s in sim
        .log
        .iter()
        .filter(|s| s.from == 2 && s.to == 1 && s.t >= snub_at)
    {
        match s.msg {
            Message::Request(_) => outstanding += 1,
            Message::Cancel(r) if !(s.t == snub_at && snub_cancels.contains(&r)) => {
                outstanding -= 1
            }
            _ => {}
        }
        assert!(
            outstanding <= 1,
            "{outstanding} requests at a snubbed peer at {:?}",
            s.t
        );
    }
    assert!(
        sim.log
            .iter()
            .all(|s| !(s.from == 1 && matches!(s.msg, Message::Piece { .. }))),
        "the black hole sent a block"
    );
}

/// BEP 3 wants the bitfield first, but aria2 sends one later as well: a
/// late bitfield (or have_all/have_none) replaces what we knew of the peer
/// instead of cutting it off, and availability follows.
#[test]
fn late_bitfields_replace_the_piece_set() {
    let c = Content::random(PIECE, 10 * u64::from(PIECE), 9);
    let n = c.num_pieces();
    let mut sim = Sim::new(c, &[NodeSpec::leecher()], 9);
    let key = sim.connect_raw(0, true, true);
    let full = {
        let mut b = vec![0xffu8; n.div_ceil(8) as usize];
        let spare = n.div_ceil(8) * 8 - n;
        if let Some(last) = b.last_mut() {
            *last &= 0xff << spare;
        }
        b
    };
    for msg in [
        Message::Have { piece: 0 },
        Message::Bitfield(Bytes::from(full.clone())),
        Message::HaveNone,
        Message::HaveAll,
        Message::Bitfield(Bytes::from(full)),
    ] {
        sim.inject(0, key, msg.clone());
        assert!(sim.is_connected(0, key), "{msg:?} cut the peer off");
    }
    assert!(sim.disconnects_of(0, key).is_empty());
    // One peer with everything, counted once: the node is interested in it.
    let now = sim.now();
    let stats = sim.nodes[0].swarm.peer_stats(now);
    assert!(stats
        .iter()
        .any(|p| p.key == key && p.am_interested && p.is_seed));
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
            Message::Piece {
                piece: n,
                begin: 0,
                data: Bytes::from(vec![0; BLOCK_SIZE as usize]),
            },
            "piece of piece n",
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
    // of both; the first copy in gets the other request cancelled. (Plain
    // seeds: initial seeding would show each seed's pieces to one peer.)
    let plain = |spec: NodeSpec| NodeSpec {
        config: SwarmConfig {
            super_seed: false,
            ..spec.config.clone()
        },
        ..spec
    };
    let specs = [
        plain(NodeSpec::seed().uplink(256 * 1024)),
        plain(NodeSpec::seed().uplink(256 * 1024)),
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
    assert!(!cancels.is_empty(), "no cancel in the endgame");
    for (to, r) in &cancels {
        let key = (r.piece, r.begin);
        assert!(
            a.contains(&key) && b.contains(&key),
            "cancel of {r:?} to {to}, not a duplicate"
        );
        // The copy that won came from the other seed, before the cancel.
        let other = 1 - to;
        let cancel_t = sim
            .log
            .iter()
            .find(|s| s.from == 2 && s.to == *to && s.msg == Message::Cancel(*r))
            .map(|s| s.t);
        let won = sim.log.iter().any(|s| {
            s.from == other
                && s.to == 2
                && cancel_t.is_some_and(|t| s.t <= t)
                && matches!(&s.msg, Message::Piece { piece, begin, .. }
                    if (*piece, *begin) == (r.piece, r.begin))
        });
        assert!(won, "{r:?} cancelled at {to} before {other} sent it");
    }
    // Every piece checked once: duplicates never made it into a buffer twice.
    assert!(sim.nodes[2].checks.iter().all(|&n| n == 1));
    assert_eq!(sim.nodes[2].check_failures, 0);
}

/// A seed with four slots and ten interested leechers that only know it,
/// uploading slowly enough that nobody finishes in the two minutes.
fn busy_seed(seed: u64) -> Sim {
    busy_seed_with(seed, true)
}

fn busy_seed_with(seed: u64, super_seed: bool) -> Sim {
    let mut s = NodeSpec::seed().slots(4).uplink(20 * 1024);
    s.config.super_seed = super_seed;
    let mut specs = vec![s];
    specs.extend((0..10).map(|_| NodeSpec::leecher()));
    let mut sim = Sim::new(content(seed), &specs, seed);
    for i in 1..=10 {
        let l = LinkSpec::latency_ms(10 + i as u64 * 7);
        sim.connect(0, i, l, l, true);
    }
    sim
}

#[test]
fn ten_leechers_behind_one_slow_seed_all_complete() {
    // Nobody to trade with but the seed: 10 × 1.25 MiB through 20 KiB/s is
    // 630 s at best. Choking, rotation and snubbing must not lose much.
    let mut sim = busy_seed(8);
    sim.run_until(secs(1000), |s| leechers_complete(s, 1..11));
    sim.assert_all_data_correct();
    let total = sim.content.layout.total_length();
    let now = sim.now();
    let uploaded = sim.nodes[0].swarm.stats(now).uploaded;
    assert!(
        uploaded <= total * 10 + total / 10,
        "the seed uploaded {uploaded} bytes for {} useful",
        total * 10
    );
    assert!(sim.t < secs(700), "done only at {:?}", sim.t);
}

#[test]
fn seed_unchokes_at_most_slots_plus_one() {
    let mut sim = busy_seed(8);
    let mut max_unchoked = 0;
    sim.run_until(secs(121), |s| {
        // The harness also checks `<= slots + 1` after every step.
        let u = s.unchoked(0);
        assert!(u <= 5, "t={:?}: {u} unchoked", s.t);
        max_unchoked = max_unchoked.max(u);
        s.t >= secs(120)
    });
    assert_eq!(max_unchoked, 5, "four slots and one optimistic");
    let chokes = sim
        .log
        .iter()
        .filter(|s| s.from == 0 && s.msg == Message::Choke)
        .count();
    assert!(chokes > 0, "the seed never rechoked anyone");
    assert!(
        (1..=10).all(|i| !sim.nodes[i].swarm.is_complete()),
        "the test wants the seed busy for the whole two minutes"
    );
}

#[test]
fn seed_rotation_unchokes_every_leecher_within_two_minutes() {
    // Over a few seeds: the choker's randomness must not decide it.
    let mut failures = Vec::new();
    for seed in 8..28 {
        // An ordinary seed: initial seeding keeps its slots until every
        // piece is out (`choker::ChokeMode::InitialSeeding`).
        let mut sim = busy_seed_with(seed, false);
        sim.run_until(secs(121), |s| s.t >= secs(120));
        let unchoked: BTreeSet<usize> = sim
            .log
            .iter()
            .filter(|s| s.from == 0 && s.msg == Message::Unchoke)
            .map(|s| s.to)
            .collect();
        let never: Vec<usize> = (1..=10).filter(|i| !unchoked.contains(i)).collect();
        if !never.is_empty() {
            failures.push((seed, never));
        }
    }
    assert!(
        failures.is_empty(),
        "(seed, leechers never unchoked in two minutes): {failures:?}"
    );
}

#[test]
fn stalled_seed_is_asked_again_after_the_snub() {
    // The only seed's route stalls for 45 s: the leecher snubs it (cancels
    // what it asked), but must go back to it when it answers again.
    let mut sim = Sim::new(content(12), &[NodeSpec::seed(), NodeSpec::leecher()], 12);
    let down = LinkSpec {
        latency: Duration::from_millis(20),
        bandwidth: Some(64 * 1024),
    };
    let c = sim.connect(0, 1, down, LinkSpec::latency_ms(20), true);
    sim.run_until(secs(30), |s| s.nodes[1].swarm.have().count() >= 5);
    let stall_end = sim.t + secs(45);
    sim.stall(c, 0, stall_end);
    sim.run_until(secs(300), |s| s.nodes[1].swarm.is_complete());
    sim.assert_all_data_correct();
    let snub_cancels = sim
        .log
        .iter()
        .filter(|s| s.from == 1 && matches!(s.msg, Message::Cancel(_)))
        .count();
    assert!(snub_cancels > 0, "the stall did not get the seed snubbed");
    assert!(sim.t < stall_end + secs(60), "done only at {:?}", sim.t);
}

#[test]
fn skipped_pieces_are_neither_requested_nor_wanted() {
    // 0: has pieces 0..10 and wants no more, 1: seed, 2: a leecher that
    // skips 0..10, so has no use for node 0.
    let specs = [
        NodeSpec::with_pieces((0..10).collect()),
        NodeSpec::seed(),
        NodeSpec::leecher(),
    ];
    let mut sim = Sim::new(content(13), &specs, 13);
    for p in 0..10 {
        sim.skip(2, p);
    }
    for p in 10..sim.content.num_pieces() {
        sim.skip(0, p);
    }
    sim.connect_all(10..40, true);
    sim.run_until(secs(60), |s| s.nodes[2].completed == 1);
    sim.run_for(secs(10));
    let n = sim.content.num_pieces();
    for p in 0..n {
        let got = sim.nodes[2].disk[p as usize].as_deref();
        if p < 10 {
            assert_eq!(got, None, "skipped piece {p} downloaded");
        } else {
            assert_eq!(got, Some(sim.content.piece(p)), "piece {p}");
        }
    }
    let asked_skipped = sim
        .log
        .iter()
        .any(|s| s.from == 2 && matches!(s.msg, Message::Request(r) if r.piece < 10));
    assert!(!asked_skipped, "a skipped piece was requested");
    let interested_in_0 = sim
        .log
        .iter()
        .any(|s| s.from == 2 && s.to == 0 && s.msg == Message::Interested);
    assert!(
        !interested_in_0,
        "interested in a peer that has only skipped pieces"
    );
}

#[test]
fn lost_connection_releases_its_requests() {
    // Two seeds; the connection to the first drops while blocks are in
    // flight. Its requests go back to the picker and the other seed.
    let specs = [
        NodeSpec::seed().uplink(64 * 1024),
        NodeSpec::seed().uplink(64 * 1024),
        NodeSpec::leecher(),
    ];
    let mut sim = Sim::new(content(9), &specs, 9);
    let l = LinkSpec::latency_ms(40);
    let lost = sim.connect(0, 2, l, l, true);
    sim.connect(1, 2, l, l, true);
    sim.run_until(secs(60), |s| s.useful[2][0] >= 256 * 1024);
    let cut_at = sim.t;
    sim.close(lost);
    sim.run_until(secs(120), |s| s.nodes[2].swarm.is_complete());
    sim.assert_all_data_correct();
    assert_eq!(sim.nodes[2].completed, 1);
    // Well before any snub timeout: the requests were released at once.
    assert!(sim.t < cut_at + SNUB_TIMEOUT, "done only at {:?}", sim.t);
    assert!(sim.nodes[2].checks.iter().all(|&n| n == 1));
}

#[test]
fn allowed_fast_pieces_are_requested_while_choked() {
    let c = content(10);
    let mut sim = Sim::new(c, &[NodeSpec::leecher()], 10);
    let key = sim.connect_raw(0, true, true);
    sim.inject(0, key, Message::HaveAll);
    sim.inject(0, key, Message::AllowedFast { piece: 7 });
    let requests: Vec<BlockRequest> = sim
        .raw_sent
        .iter()
        .filter_map(|(_, k, m)| match m {
            Message::Request(r) if *k == key => Some(*r),
            _ => None,
        })
        .collect();
    assert_eq!(
        requests,
        vec![
            BlockRequest {
                piece: 7,
                begin: 0,
                length: BLOCK_SIZE
            },
            BlockRequest {
                piece: 7,
                begin: BLOCK_SIZE,
                length: BLOCK_SIZE
            },
        ],
        "choked, only the allowed fast piece may be requested"
    );
    for r in requests {
        let start = r.begin as usize;
        let data =
            Bytes::copy_from_slice(&sim.content.piece(7)[start..start + BLOCK_SIZE as usize]);
        sim.inject(
            0,
            key,
            Message::Piece {
                piece: 7,
                begin: r.begin,
                data,
            },
        );
    }
    assert_eq!(
        sim.nodes[0].verified[7], 1,
        "the allowed fast piece was verified"
    );
    // A reject of an allowed fast request frees the block for others.
    sim.inject(0, key, Message::AllowedFast { piece: 8 });
    let r8 = BlockRequest {
        piece: 8,
        begin: 0,
        length: BLOCK_SIZE,
    };
    assert!(sim
        .raw_sent
        .iter()
        .any(|(_, _, m)| *m == Message::Request(r8)));
    sim.inject(0, key, Message::Reject(r8));
    assert!(sim.is_connected(0, key));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// A seed and up to five leechers, random geometry and links.
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

    /// No seed at all: each node starts with a random part of the torrent,
    /// together they have it all; a small partial budget on some.
    #[test]
    fn partial_nodes_complete_each_other(
        nodes in 2usize..6,
        pieces in 2u32..30,
        owners in prop::collection::vec(any::<u64>(), 30),
        budget_pieces in prop::option::of(1u64..4),
        latency in 1u64..100,
        fast in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let total = u64::from(pieces - 1) * u64::from(PIECE) + 777;
        let mut have = vec![Vec::new(); nodes];
        for p in 0..pieces {
            // Every piece at one node at least, sometimes at two.
            let o = owners[p as usize];
            have[(o % nodes as u64) as usize].push(p);
            if o & 0x100 != 0 {
                have[((o >> 16) % nodes as u64) as usize].push(p);
            }
        }
        let specs: Vec<NodeSpec> = have
            .into_iter()
            .map(|ps| {
                let mut s = NodeSpec::with_pieces(ps).uplink(128 * 1024);
                if let Some(b) = budget_pieces {
                    s.config.partial_budget = b * u64::from(PIECE);
                }
                s
            })
            .collect();
        let mut sim = Sim::new(Content::random(PIECE, total, seed), &specs, seed);
        sim.connect_all(1..latency + 1, fast);
        sim.run_to_completion(secs(300));
        sim.assert_all_data_correct();
        for n in &sim.nodes {
            prop_assert_eq!(n.completed, u32::from(!n.initial_seed));
            prop_assert_eq!(n.check_failures, 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Honest seed, leechers, maybe a liar and a black hole, slow uplinks,
    /// and connections that drop and come back.
    #[test]
    fn adversarial_swarms_complete(
        leechers in 1usize..5,
        liar in any::<bool>(),
        hole in any::<bool>(),
        uplinks in prop::collection::vec(prop::option::of(8u64..256), 8),
        slots in 1usize..5,
        budget in prop::option::of(1u64..4),
        pieces in 1u64..30,
        latency in 1u64..300,
        fast in any::<bool>(),
        churn in prop::collection::vec((1u64..120, any::<u16>(), 1u64..30), 0..6),
        seed in any::<u64>(),
    ) {
        let total = (pieces - 1) * u64::from(PIECE) + 1 + seed % u64::from(PIECE);
        let mut specs = vec![NodeSpec::seed()];
        if liar { specs.push(NodeSpec::seed().behavior(Behavior::Liar)); }
        if hole { specs.push(NodeSpec::seed().behavior(Behavior::BlackHole)); }
        let first_leecher = specs.len();
        specs.extend((0..leechers).map(|_| NodeSpec::leecher()));
        for (i, s) in specs.iter_mut().enumerate() {
            s.uplink = uplinks[i].map(|k| k * 1024);
            s.config.upload_slots = slots;
            if let Some(b) = budget { s.config.partial_budget = b * u64::from(PIECE); }
        }
        let n = specs.len();
        let mut sim = Sim::new(Content::random(PIECE, total, seed), &specs, seed);
        sim.connect_all(1..latency + 1, fast);
        let mut churn = churn;
        churn.sort();
        for (at, which, down_for) in churn {
            let at = secs(at);
            sim.run_until(at + secs(1), |s| s.t >= at);
            let c = usize::from(which) % sim.conns.len();
            if !sim.conns[c].alive { continue; }
            let [(a, _), (b, _)] = sim.conns[c].ends;
            sim.close(c);
            let back = sim.t + secs(down_for);
            sim.run_until(back + secs(1), |s| s.t >= back);
            let l = LinkSpec::latency_ms(1 + u64::from(which) % latency);
            // Whoever is complete by now would drop a seed at once: skip.
            if !(sim.nodes[a].swarm.is_complete() && sim.nodes[b].swarm.is_complete()) {
                sim.connect(a, b, l, l, fast);
            }
        }
        sim.run_until(secs(3000), |s| leechers_complete(s, first_leecher..n));
        let liar_node = liar.then_some(1);
        for d in &sim.disconnects {
            if d.reason == DisconnectReason::Banned {
                prop_assert_eq!(d.remote, liar_node, "an honest node was banned: {:?}", d);
            }
        }
        for i in first_leecher..n {
            prop_assert_eq!(sim.nodes[i].completed, 1);
            for (p, d) in sim.nodes[i].disk.iter().enumerate() {
                prop_assert_eq!(d.as_deref(), Some(sim.content.piece(p as u32)));
            }
        }
    }
}

/// BEP 5 `port`: with a DHT, we send ours after the bitfield to peers whose
/// handshake has the DHT bit, and report a peer's DHT node once per
/// connection (port 0 ignored); without a DHT, neither.
#[test]
fn dht_port_messages() {
    use essaim_core::{Bitfield, InfoHash, Layout};
    use essaim_proto::swarm::{Output, Swarm};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Instant;

    let layout = Layout::new(PIECE.into(), &[4 * u64::from(PIECE)]).unwrap();
    let mut have = Bitfield::new(4);
    have.set(1);
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
    for dht_port in [Some(7000), None] {
        let config = SwarmConfig {
            dht_port,
            ..SwarmConfig::default()
        };
        let mut swarm = Swarm::new(
            InfoHash([3; 20]),
            layout.clone(),
            have.clone(),
            None,
            config,
        );
        let now = Instant::now();
        swarm.handle_peer_connected(1, false, false, Some(ip), now);
        swarm.handle_peer_dht(1);
        let mut sent = Vec::new();
        while let Some(o) = swarm.poll_output() {
            if let Output::Send { peer: 1, msg } = o {
                sent.push(msg);
            }
        }
        assert!(
            matches!(sent.first(), Some(Message::Bitfield(_))),
            "{sent:?}"
        );
        let ports: Vec<_> = sent
            .iter()
            .filter(|m| matches!(m, Message::Port(_)))
            .collect();
        match dht_port {
            Some(p) => assert_eq!(ports, vec![&Message::Port(p)]),
            None => assert!(ports.is_empty(), "{sent:?}"),
        }
        for port in [0, 6000, 6001, 6000] {
            swarm.handle_message(1, Message::Port(port), now);
        }
        let mut nodes = Vec::new();
        while let Some(o) = swarm.poll_output() {
            assert!(!matches!(o, Output::Disconnect { .. }), "{o:?}");
            if let Output::DhtNode(a) = o {
                nodes.push(a);
            }
        }
        match dht_port {
            Some(_) => assert_eq!(nodes, vec![SocketAddr::new(ip, 6000)]),
            None => assert!(nodes.is_empty()),
        }
    }
}

/// The swarm of `bench/swarm.sh` in small: a seed and 20 leechers, all
/// uplinks equal, so the seed's uplink is the bottleneck. Until every piece
/// is out (held by some leecher), initial seeding must send each piece
/// about once: then the seed's uplink has carried one copy of the file and
/// no more, and the leechers trade the rest.
#[test]
fn initial_seed_sends_each_piece_about_once() {
    let up = 64 * 1024;
    let piece = 64 * 1024;
    let content = Content::random(piece, 128 * u64::from(piece), 21);
    let total = content.layout.total_length();
    let n = content.layout.num_pieces();
    let mut specs = vec![NodeSpec::seed().uplink(up)];
    specs.extend((0..20).map(|_| NodeSpec::leecher().uplink(up)));
    let mut sim = Sim::new(content, &specs, 21);
    sim.connect_all(5..40, true);
    // The seed's upload when the last piece reached its first leecher.
    let mut out_at: Option<(Duration, u64)> = None;
    sim.run_until(secs(1200), |s| {
        if out_at.is_none() {
            let mut held = Bitfield::new(n);
            for node in &s.nodes[1..] {
                for p in node.swarm.have().iter_set() {
                    held.set(p);
                }
            }
            if held.is_full() {
                let now = s.now();
                out_at = Some((s.t, s.nodes[0].swarm.stats(now).uploaded));
            }
        }
        leechers_complete(s, 1..21)
    });
    sim.assert_all_data_correct();
    let (t_out, sent) = out_at.expect("every piece got out");
    let copies = sent as f64 / total as f64;
    let bound = total as f64 / up as f64;
    eprintln!(
        "every piece out at {:.2} x the bound after {copies:.3} copies; last leecher at {:.2} x",
        t_out.as_secs_f64() / bound,
        sim.t.as_secs_f64() / bound
    );
    assert!(
        copies < 1.03,
        "the seed sent {copies:.3} copies before every piece was out"
    );
    // Its uplink did not idle meanwhile.
    assert!(
        t_out.as_secs_f64() < bound * 1.08,
        "every piece out only at {t_out:?}"
    );
}

/// A peer that stops being interested gives its upload slot back at once,
/// to a peer that wants it (not at the next rechoke, ten seconds later).
#[test]
fn a_slot_left_by_an_uninterested_peer_goes_to_a_waiting_one() {
    // A leecher with half the pieces, one upload slot (plus the optimistic
    // one): three raw peers want what it has.
    let spec = NodeSpec::with_pieces((0..20).collect()).slots(1);
    let mut sim = Sim::new(content(5), &[spec], 5);
    let keys: Vec<PeerKey> = (0..3).map(|_| sim.connect_raw(0, true, true)).collect();
    for &k in &keys {
        sim.inject(0, k, Message::HaveNone);
        sim.inject(0, k, Message::Interested);
    }
    let unchoked = |sim: &Sim| -> Vec<PeerKey> {
        keys.iter()
            .copied()
            .filter(|&k| {
                let ups = sim
                    .raw_sent
                    .iter()
                    .filter(|(n, kk, m)| *n == 0 && *kk == k && *m == Message::Unchoke)
                    .count();
                let downs = sim
                    .raw_sent
                    .iter()
                    .filter(|(n, kk, m)| *n == 0 && *kk == k && *m == Message::Choke)
                    .count();
                ups > downs
            })
            .collect()
    };
    let first = unchoked(&sim);
    assert_eq!(first.len(), 2, "one slot and the optimistic one");
    let waiting = *keys.iter().find(|k| !first.contains(k)).expect("one waits");
    sim.inject(0, first[0], Message::NotInterested);
    let now = unchoked(&sim);
    assert!(
        !now.contains(&first[0]),
        "the uninterested peer keeps its slot"
    );
    assert!(
        now.contains(&waiting),
        "the waiting peer did not get the slot"
    );
}

/// An initial seed unchokes a newcomer at once and shows it pieces; a
/// request for a piece it was not shown is turned down (the peer cannot
/// know we have it, and serving it would send that piece twice).
#[test]
fn an_initial_seed_serves_only_the_pieces_it_showed() {
    let mut sim = Sim::new(content(9), &[NodeSpec::seed()], 9);
    let key = sim.connect_raw(0, true, true);
    sim.inject(0, key, Message::HaveNone);
    let sent = |sim: &Sim| -> Vec<Message> {
        sim.raw_sent
            .iter()
            .filter(|(n, k, _)| *n == 0 && *k == key)
            .map(|(_, _, m)| m.clone())
            .collect()
    };
    let msgs = sent(&sim);
    assert!(msgs.contains(&Message::Unchoke), "{msgs:?}");
    let shown: Vec<u32> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Have { piece } => Some(*piece),
            _ => None,
        })
        .collect();
    assert_eq!(shown.len(), 4, "{msgs:?}");
    let hidden = (0..sim.content.layout.num_pieces())
        .find(|p| !shown.contains(p))
        .expect("a hidden piece");
    let req = |piece| BlockRequest {
        piece,
        begin: 0,
        length: BLOCK_SIZE,
    };
    sim.inject(0, key, Message::Request(req(hidden)));
    assert!(sent(&sim).contains(&Message::Reject(req(hidden))));
    sim.inject(0, key, Message::Request(req(shown[0])));
    assert!(!sent(&sim).contains(&Message::Reject(req(shown[0]))));
}

/// A disk slower than the link holds the requests back instead of letting
/// complete pieces pile up in memory ([`SwarmConfig::check_budget`]).
#[test]
fn a_slow_disk_holds_back_the_requests() {
    let run = |budget: u64| {
        let c = Content::random(PIECE, 300 * u64::from(PIECE), 7);
        let mut seed = NodeSpec::seed().uplink(1024 * 1024);
        seed.config.super_seed = false;
        // 32 KiB per 100 ms: a tenth of the link.
        let mut leecher = NodeSpec::leecher().disk_time(Duration::from_millis(100));
        leecher.config.check_budget = budget;
        let mut sim = Sim::new(c, &[seed, leecher], 7);
        sim.connect(
            0,
            1,
            LinkSpec::latency_ms(10),
            LinkSpec::latency_ms(10),
            true,
        );
        sim.run_to_completion(secs(600));
        sim.assert_all_data_correct();
        assert_eq!(sim.nodes[1].check_failures, 0);
        (sim.nodes[1].max_checking, sim.t)
    };
    let (bounded, t_bounded) = run(2 * u64::from(PIECE));
    let (unbounded, t_unbounded) = run(u64::MAX);
    // Two pieces, plus what was in flight when the budget was reached: the
    // request depth covers at most 2 s of the 1 MiB/s link (64 pieces).
    assert!(bounded <= 2 + 64, "{bounded} pieces waited for the disk");
    assert!(
        unbounded > 100,
        "without the budget only {unbounded} waited"
    );
    // Holding back costs no time: the disk is the bottleneck either way.
    assert!(
        t_bounded <= t_unbounded + secs(1),
        "{t_bounded:?} vs {t_unbounded:?}"
    );
}

/// A disk that stalls for longer than the snub timeout holds the requests
/// back; when they resume, the peer we were not waiting on is not taken
/// for a snubbing one (which would cancel its requests and cut it to one).
#[test]
fn a_long_disk_stall_snubs_nobody() {
    let mut seed = NodeSpec::seed();
    seed.config.super_seed = false;
    let mut leecher = NodeSpec::leecher().disk_time(SNUB_TIMEOUT + secs(10));
    leecher.config.check_budget = 2 * u64::from(PIECE);
    let mut sim = Sim::new(content(3), &[seed, leecher], 3);
    // A round trip longer than a tick: a tick always comes between the
    // requests sent after a check and their first block.
    let slow = LinkSpec::latency_ms(600);
    sim.connect(0, 1, slow, slow, true);
    sim.run_to_completion(secs(3600));
    sim.assert_all_data_correct();
    assert!(
        sim.nodes[1].max_checking >= 2,
        "the disk never held anything back"
    );
    let cancels: Vec<_> = sim
        .log
        .iter()
        .filter(|s| s.from == 1 && matches!(s.msg, Message::Cancel(_)))
        .map(|s| s.t)
        .collect();
    assert!(
        cancels.is_empty(),
        "the leecher cancelled requests at {cancels:?}"
    );
}

/// Over a long round trip (1.2 s) the request pipeline covers it (three
/// round trips once known; two seconds before): a pipeline shorter than
/// the round trip would cut the rate, the rate the depth, and so on down
/// to a few blocks per round trip.
#[test]
fn a_long_round_trip_keeps_the_link_full() {
    for report in [true, false] {
        let up = 256 * 1024;
        let c = Content::random(PIECE, 160 * u64::from(PIECE), 11);
        let total = c.layout.total_length();
        let mut seed = NodeSpec::seed().uplink(up);
        seed.config.super_seed = false;
        let mut sim = Sim::new(c, &[seed, NodeSpec::leecher()], 11);
        let far = LinkSpec::latency_ms(600);
        let conn = sim.connect(0, 1, far, far, true);
        if report {
            sim.report_rtt(conn);
        }
        sim.run_to_completion(secs(600));
        sim.assert_all_data_correct();
        let at_link_rate = total as f64 / up as f64;
        let took = sim.nodes[1].completed_at.expect("completed").as_secs_f64();
        // The handshake, the first round trips while the rate is unknown,
        // and the last round trip: a few seconds over the link's time.
        let slack = if report { 4.0 } else { 6.0 };
        assert!(
            took < at_link_rate + slack,
            "rtt reported: {report}; {took:.1} s for {at_link_rate:.1} s at the link's rate"
        );
    }
}
