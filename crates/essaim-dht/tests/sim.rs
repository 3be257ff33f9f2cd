//! Whole DHT networks on virtual time (DESIGN.md, "Tests, from fast to
//! real", level 3): 1,000 nodes join through a few routers over lossy
//! links with latency, announce, and find each other's announces; liars
//! try to poison lookups, tables and peer stores; a flood from one IP is
//! rate-limited. Figures are printed (run with `--nocapture`).

#[path = "sim/net.rs"]
mod net;

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use essaim_core::InfoHash;
use essaim_dht::krpc::{Body, Message, Query};
use essaim_dht::{DhtConfig, DhtEvent, LookupStats, NodeId, K};
use net::{is_fake_ip, node_addr, Behavior, Sim};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROUTERS: usize = 4;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Builds a network of `honest` nodes (the first [`ROUTERS`] are routers
/// everyone bootstraps from) and `liars` liars spread among them, joining
/// one every 50 ms; then lets it settle for five minutes.
fn network(seed: u64, honest: usize, liars: usize) -> (Sim, Vec<usize>, Vec<usize>) {
    let mut sim = Sim::new(seed);
    let total = honest + liars;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    // Liars take random positions after the routers.
    let mut liar_pos = BTreeSet::new();
    while liar_pos.len() < liars {
        liar_pos.insert(rng.gen_range(ROUTERS..total));
    }
    let honest_addrs: Vec<SocketAddr> = (0..total)
        .filter(|i| !liar_pos.contains(i))
        .map(node_addr)
        .collect();
    let routers: Vec<SocketAddr> = (0..ROUTERS).map(node_addr).collect();
    let (mut h, mut l) = (Vec::new(), Vec::new());
    for i in 0..total {
        if liar_pos.contains(&i) {
            l.push(sim.add_liar(honest_addrs.clone()));
        } else {
            let boot = if i < ROUTERS {
                routers[..i].to_vec()
            } else {
                let a = rng.gen_range(0..ROUTERS);
                let b = (a + 1 + rng.gen_range(0..ROUTERS - 1)) % ROUTERS;
                vec![routers[a], routers[b]]
            };
            h.push(sim.add_honest(boot, DhtConfig::default()));
        }
        sim.run_for(Duration::from_millis(50));
    }
    sim.run_for(secs(300));
    (sim, h, l)
}

/// The `i`-th test infohash (random-looking, so they spread over the space).
fn info_hash(i: usize) -> InfoHash {
    InfoHash(StdRng::seed_from_u64(0x1f0 + i as u64).gen())
}

struct Outcome {
    stats: LookupStats,
    found: bool,
}

/// `announcers[i]` announces `info_hash(i)` on port 7000 + i; then each
/// searcher looks one of them up. Returns one outcome per search.
fn announce_and_search(sim: &mut Sim, announcers: &[usize], searchers: &[usize]) -> Vec<Outcome> {
    for (i, &a) in announcers.iter().enumerate() {
        sim.with_dht(a, |d, now| {
            d.get_peers(info_hash(i), Some(7000 + i as u16), now)
        });
    }
    let done = |sim: &Sim, node: usize, h: InfoHash| {
        sim.nodes[node]
            .events
            .iter()
            .any(|(_, e)| matches!(e, DhtEvent::LookupDone { info_hash, .. } if *info_hash == h))
    };
    let all_announced = sim.run_until_pred(secs(120), |sim| {
        announcers
            .iter()
            .enumerate()
            .all(|(i, &a)| done(sim, a, info_hash(i)))
    });
    assert!(all_announced, "announce lookups did not end");
    sim.run_for(secs(5));
    // Searches start 200 ms apart.
    let mut started = Vec::new();
    for (j, &s) in searchers.iter().enumerate() {
        let i = j % announcers.len();
        sim.nodes[s].events.clear();
        sim.with_dht(s, |d, now| d.get_peers(info_hash(i), None, now));
        started.push((s, i));
        sim.run_for(Duration::from_millis(200));
    }
    let all_done = sim.run_until_pred(secs(120), |sim| {
        started.iter().all(|&(s, i)| done(sim, s, info_hash(i)))
    });
    assert!(all_done, "searches did not end");
    started
        .iter()
        .map(|&(s, i)| {
            let h = info_hash(i);
            let want = SocketAddr::new(sim.nodes[announcers[i]].addr.ip(), 7000 + i as u16);
            let mut found = false;
            let mut stats = None;
            for (_, e) in &sim.nodes[s].events {
                match e {
                    DhtEvent::Peers { info_hash, peers } if *info_hash == h => {
                        found |= peers.contains(&want)
                    }
                    DhtEvent::LookupDone {
                        info_hash,
                        stats: st,
                        ..
                    } if *info_hash == h => {
                        stats.get_or_insert(*st);
                    }
                    _ => {}
                }
            }
            Outcome {
                stats: stats.expect("done"),
                found,
            }
        })
        .collect()
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

fn percentile<T: Ord + Copy>(mut v: Vec<T>, p: usize) -> T {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn report(name: &str, outcomes: &[Outcome]) -> (usize, u32, u32) {
    let ok = outcomes.iter().filter(|o| o.found).count();
    let queries = median(outcomes.iter().map(|o| o.stats.queries).collect());
    let rounds = median(outcomes.iter().map(|o| o.stats.rounds).collect());
    let first: Vec<Duration> = outcomes
        .iter()
        .filter_map(|o| o.stats.first_peer_after)
        .collect();
    let dur = median(outcomes.iter().map(|o| o.stats.duration).collect());
    eprintln!(
        "{name}: {ok}/{} found; queries median {queries} (p90 {}), rounds median {rounds} (max {}), \
         first peer after median {:?} (p90 {:?}), lookup duration median {dur:?}, failures median {}",
        outcomes.len(),
        percentile(outcomes.iter().map(|o| o.stats.queries).collect(), 90),
        outcomes.iter().map(|o| o.stats.rounds).max().unwrap_or(0),
        median(first.clone()),
        percentile(first, 90),
        median(outcomes.iter().map(|o| o.stats.failures).collect()),
    );
    (ok, queries, rounds)
}

fn pick(rng: &mut StdRng, from: &[usize], n: usize, not: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    while out.len() < n {
        let x = from[rng.gen_range(ROUTERS..from.len())];
        if !out.contains(&x) && !not.contains(&x) {
            out.push(x);
        }
    }
    out
}

#[test]
fn thousand_nodes_find_each_others_announces() {
    let wall = std::time::Instant::now();
    let (mut sim, honest, _) = network(1, 1000, 0);
    let sizes: Vec<usize> = honest
        .iter()
        .map(|&i| sim.nodes[i].dht().unwrap().table().len())
        .collect();
    eprintln!(
        "1000 nodes joined in {:?} virtual: routing table median {} nodes (min {}), {} packets delivered, {} lost",
        sim.elapsed(),
        median(sizes.clone()),
        sizes.iter().min().unwrap(),
        sim.delivered,
        sim.lost
    );
    assert!(
        *sizes.iter().min().unwrap() >= K,
        "every node knows at least K nodes"
    );
    // Tables hold only real nodes, each where its id says.
    let real: HashSet<SocketAddr> = honest.iter().map(|&i| sim.nodes[i].addr).collect();
    for &i in &honest {
        let d = sim.nodes[i].dht().unwrap();
        for (id, a) in d.routing_table() {
            assert!(real.contains(&a) && a != sim.nodes[i].addr);
            assert_ne!(id, d.id());
        }
        assert!(d.table().bucket_sizes().iter().all(|&s| s <= K));
    }
    let mut rng = StdRng::seed_from_u64(7);
    let announcers = pick(&mut rng, &honest, 20, &[]);
    let searchers = pick(&mut rng, &honest, 100, &announcers);
    let outcomes = announce_and_search(&mut sim, &announcers, &searchers);
    let (ok, queries, rounds) = report("1000 honest nodes", &outcomes);
    assert!(ok >= 99, "{ok}/100 searches found the announced peer");
    // log2(1000 / 8) ≈ 7: a lookup needs a handful of rounds and a few
    // dozen queries, not a crawl of the network.
    assert!(queries <= 40, "median {queries} queries");
    assert!(rounds <= 5, "median {rounds} rounds");
    // Every announce landed on the nodes closest to its infohash.
    let stored: usize = honest
        .iter()
        .map(|&i| sim.nodes[i].dht().unwrap().peer_store().num_peers())
        .sum();
    assert!(stored >= 20 * 6, "{stored} announces stored");
    eprintln!("wall time {:?}", wall.elapsed());
}

/// Share of liars in honest nodes' tables (median and max, in percent),
/// after checking that no made-up node got in and that no liar holds
/// more than one entry in a table.
fn liar_share(sim: &Sim, honest: &[usize], liar_ips: &HashSet<IpAddr>) -> (usize, usize) {
    let mut shares = Vec::new();
    for &i in honest {
        let table = sim.nodes[i].dht().unwrap().routing_table();
        assert!(
            table.iter().all(|(_, a)| !is_fake_ip(a)),
            "node {i} holds a made-up node"
        );
        let mut seen = HashSet::new();
        for (_, a) in &table {
            if liar_ips.contains(&a.ip()) {
                assert!(seen.insert(a.ip()), "node {i} holds liar {a} twice");
            }
        }
        shares.push(seen.len() * 100 / table.len().max(1));
    }
    (median(shares.clone()), *shares.iter().max().unwrap())
}

#[test]
fn liars_are_contained() {
    let wall = std::time::Instant::now();
    let (mut sim, honest, liars) = network(2, 1000, 50);
    let liar_ips: HashSet<IpAddr> = liars.iter().map(|&i| sim.nodes[i].addr.ip()).collect();
    // They are 5% of the nodes and pinged every node under made-up ids;
    // each got in where there was room, once per table at most, and was
    // banned by nodes whose lookups it lied to (refreshes after bootstrap).
    let (share, max) = liar_share(&sim, &honest, &liar_ips);
    eprintln!("after joining: liars hold {share}% of a table (median; max {max}%), one entry each at most");
    assert!(share <= 10 && max <= 50, "{share}% {max}%");
    let mut rng = StdRng::seed_from_u64(8);
    let announcers = pick(&mut rng, &honest, 20, &[]);
    let searchers = pick(&mut rng, &honest, 100, &announcers);
    let outcomes = announce_and_search(&mut sim, &announcers, &searchers);
    let (ok, queries, _) = report("1000 honest nodes + 50 liars", &outcomes);
    assert!(
        ok >= 97,
        "{ok}/100 searches found the announced peer despite the liars"
    );
    assert!(queries <= 60, "median {queries} queries");
    // Peer stores: only the real announces; forged tokens and forged
    // sources were refused.
    let announced: HashSet<SocketAddr> = announcers
        .iter()
        .enumerate()
        .map(|(i, &a)| SocketAddr::new(sim.nodes[a].addr.ip(), 7000 + i as u16))
        .collect();
    let mut refused = 0;
    for &i in &honest {
        let d = sim.nodes[i].dht().unwrap();
        for (_, p) in d.peer_store().iter() {
            assert!(announced.contains(p), "node {i} stored {p}");
        }
        refused += d.stats().announces_refused;
    }
    let spoofed: u64 = liars
        .iter()
        .map(|&i| match &sim.nodes[i].behavior {
            Behavior::Liar(l) => l.spoofed_sent,
            Behavior::Honest(_) => 0,
        })
        .sum();
    eprintln!("{refused} announces refused ({spoofed} with a replayed token from a forged source)");
    assert!(spoofed > 100 && refused > spoofed);
    // Liars are caught when they lie: bucket refreshes run lookups through
    // the table, and a node whose referrals all fail is banned and dropped.
    sim.run_for(secs(16 * 60));
    let (later, max) = liar_share(&sim, &honest, &liar_ips);
    let bans: Vec<u64> = honest
        .iter()
        .map(|&i| sim.nodes[i].dht().unwrap().stats().banned)
        .collect();
    let banned_liars = honest
        .iter()
        .map(|&i| {
            let d = sim.nodes[i].dht().unwrap();
            d.banned(sim.now)
                .iter()
                .filter(|a| liar_ips.contains(&a.ip()))
                .count()
        })
        .sum::<usize>();
    let banned_total: u64 = bans.iter().sum();
    let wrongly = banned_total as usize - banned_liars;
    eprintln!(
        "16 minutes later: liars hold {later}% of a table (median; max {max}%); {banned_total} bans, \
         {banned_liars} of liars ({:.1} per node), {wrongly} of honest nodes",
        banned_liars as f64 / honest.len() as f64
    );
    assert!(later <= share && max <= 50, "liars do not gain ground");
    assert!(
        wrongly * 20 <= banned_total as usize,
        "few honest nodes banned"
    );
    eprintln!("wall time {:?}", wall.elapsed());
}

#[test]
fn a_flood_from_one_ip_is_rate_limited() {
    let (mut sim, honest, _) = network(3, 100, 0);
    let target = sim.nodes[honest[10]].addr;
    let attacker: SocketAddr = "66.6.6.6:666".parse().unwrap();
    // The attacker forges its source as a victim's address; replies go
    // to the victim.
    let victim: SocketAddr = "77.7.7.7:777".parse().unwrap();
    sim.loss = 0.0;
    let cfg = DhtConfig::default();
    for (from, spy) in [(attacker, attacker), (victim, victim)] {
        sim.spy = Some((target, spy));
        sim.spied = 0;
        // 2,000 get_peers per second for 10 s.
        for ms in 0..10_000u32 {
            for k in 0..2u32 {
                let q = Message {
                    tid: (ms * 2 + k).to_be_bytes().to_vec(),
                    version: None,
                    read_only: false,
                    ip: None,
                    body: Body::Query(Query::GetPeers {
                        id: NodeId([9; 20]),
                        info_hash: InfoHash([ms as u8; 20]),
                        want: None,
                    }),
                };
                sim.send_raw(from, target, q.encode());
            }
            sim.run_for(Duration::from_millis(1));
        }
        // Replies, plus the one ping sent to check on the unknown querier.
        let cap = u64::from(cfg.reply_burst_per_ip + 10 * cfg.replies_per_ip) + 1;
        eprintln!(
            "flood of 20,000 queries from {from}: {} packets sent back (cap {cap})",
            sim.spied
        );
        assert!(sim.spied <= cap, "{} packets to {spy}", sim.spied);
        assert!(sim.spied >= cap - 10);
    }
    let d = sim.nodes[honest[10]].dht().unwrap();
    assert!(d.stats().replies_limited >= 39_000);
}
