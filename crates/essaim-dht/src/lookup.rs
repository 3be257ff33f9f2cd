//! One iterative lookup (Kademlia's node lookup, BEP 5 §"Overview"): query
//! the known nodes closest to a target, learn closer ones from their
//! answers, and stop when the [`K`] closest have answered.
//!
//! The lookup only decides whom to ask; [`crate::Dht`] sends the queries and
//! feeds the answers and timeouts back.
//!
//! # Rules
//! - at most [`ALPHA`] queries are waiting at once; a query unanswered
//!   after the soft timeout no longer counts against that, so one slow or
//!   fake node cannot stall the lookup (a late answer is still used);
//! - only the [`K`] closest candidates that have not failed are ever
//!   queried; the lookup is done when all of them answered, or when nothing
//!   is waiting and nobody is left to ask, or after [`MAX_QUERIES`];
//! - a candidate that answers under another id than the one we were told
//!   counts as failed and its answer is not used (the caller reports it
//!   with [`Lookup::wrong_id`]: who referred it is not to blame);
//! - candidates are unique by id, by address, and one per host (as in the
//!   routing table), and at most [`MAX_CANDIDATES`] are kept, the closest:
//!   a liar sending many made-up nodes only adds candidates that fail.
//!
//! Seeds with an unknown id (bootstrap addresses) sort before all others,
//! so they are asked first; their answer tells their id.
//!
//! Referrals are scored: each candidate remembers who told us about it.
//! A node whose referrals failed [`LIAR_FAILURES`] times with none
//! answering is a liar (a node handing out made-up contacts): it counts as
//! failed, its referrals not yet asked are dropped, and it is reported so
//! the node can ban it ([`Lookup::failed`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use essaim_core::InfoHash;

use crate::id::NodeId;
use crate::krpc::NodeInfo;
use crate::routing::{same_host, K};

/// Queries in flight per lookup.
pub const ALPHA: usize = 3;
/// Candidates kept per lookup.
pub const MAX_CANDIDATES: usize = 64;
/// Queries a lookup may send in all.
pub const MAX_QUERIES: u32 = 150;
/// Failed referrals, with none answering, that make a responder a liar.
pub const LIAR_FAILURES: u16 = 3;

/// What a lookup is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    /// find_node of our own id, at start and when the table is empty.
    Bootstrap,
    /// find_node of a random id in a stale bucket's range.
    Refresh,
    /// get_peers for an infohash, then announce_peer with this port if set.
    GetPeers {
        info_hash: InfoHash,
        announce: Option<u16>,
    },
}

/// Figures of a finished lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Queries sent.
    pub queries: u32,
    pub responses: u32,
    /// Queries that got no answer (or an error, or a wrong id).
    pub failures: u32,
    /// Sequential rounds: 1 + the most hops between a seed and a node that
    /// answered (a node learned from a seed's answer is one hop away).
    pub rounds: u32,
    /// Distinct peers found.
    pub peers: u32,
    /// From start to end.
    pub duration: Duration,
    /// From start to the first peer, if any.
    pub first_peer_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Waiting,
    /// Past the soft timeout: still accepted, but frees its slot.
    Slow,
    Responded,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    id: Option<NodeId>,
    addr: SocketAddr,
    state: State,
    depth: u32,
    token: Option<Vec<u8>>,
    /// Who told us about this candidate (`None` for seeds).
    referrer: Option<SocketAddr>,
}

/// How the referrals of one responder fared.
#[derive(Debug, Clone, Copy, Default)]
struct Referrals {
    answered: u16,
    failed: u16,
}

pub struct Lookup {
    pub target: NodeId,
    pub kind: LookupKind,
    /// Sorted: unknown ids first, then by distance to `target`.
    candidates: Vec<Candidate>,
    peers_seen: BTreeSet<SocketAddr>,
    referrals: BTreeMap<SocketAddr, Referrals>,
    liars: BTreeSet<SocketAddr>,
    started: Instant,
    stats: LookupStats,
}

impl Lookup {
    pub fn new(
        target: NodeId,
        kind: LookupKind,
        seeds: impl IntoIterator<Item = (Option<NodeId>, SocketAddr)>,
        now: Instant,
    ) -> Self {
        let mut l = Lookup {
            target,
            kind,
            candidates: Vec::new(),
            peers_seen: BTreeSet::new(),
            referrals: BTreeMap::new(),
            liars: BTreeSet::new(),
            started: now,
            stats: LookupStats::default(),
        };
        for (id, addr) in seeds {
            l.add(id, addr, 0, None);
        }
        l.sort_and_trim();
        l
    }

    fn add(
        &mut self,
        id: Option<NodeId>,
        addr: SocketAddr,
        depth: u32,
        referrer: Option<SocketAddr>,
    ) {
        let dup = self
            .candidates
            .iter()
            .any(|c| same_host(&c.addr, &addr) || (id.is_some() && c.id == id));
        if !dup {
            self.candidates.push(Candidate {
                id,
                addr,
                state: State::New,
                depth,
                token: None,
                referrer,
            });
        }
    }

    fn sort_and_trim(&mut self) {
        let target = self.target;
        self.candidates
            .sort_by_key(|c| c.id.map(|id| id.distance(&target)));
        // `None` sorts first: unknown ids lead, as wanted. Over the cap,
        // the farthest failed candidates go first, then the farthest new.
        while self.candidates.len() > MAX_CANDIDATES {
            let drop = self
                .candidates
                .iter()
                .rposition(|c| c.state == State::Failed)
                .or_else(|| self.candidates.iter().rposition(|c| c.state == State::New));
            match drop {
                Some(i) => {
                    self.candidates.remove(i);
                }
                None => break,
            }
        }
    }

    /// The [`K`] closest candidates that have not failed.
    fn top(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates
            .iter()
            .filter(|c| c.state != State::Failed)
            .take(K)
    }

    fn waiting(&self) -> usize {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Waiting)
            .count()
    }

    /// The next node to query, if a slot is free; the caller sends the
    /// query and then calls [`Lookup::sent`].
    pub fn next(&self) -> Option<(Option<NodeId>, SocketAddr)> {
        if self.stats.queries >= MAX_QUERIES || self.waiting() >= ALPHA {
            return None;
        }
        self.top()
            .find(|c| c.state == State::New)
            .map(|c| (c.id, c.addr))
    }

    pub fn sent(&mut self, addr: &SocketAddr) {
        if let Some(c) = self.find(addr) {
            c.state = State::Waiting;
            self.stats.queries += 1;
        }
    }

    fn find(&mut self, addr: &SocketAddr) -> Option<&mut Candidate> {
        self.candidates.iter_mut().find(|c| c.addr == *addr)
    }

    pub fn is_done(&self) -> bool {
        if self.top().all(|c| c.state == State::Responded) {
            return true;
        }
        let in_flight = self
            .candidates
            .iter()
            .any(|c| matches!(c.state, State::Waiting | State::Slow));
        !in_flight && self.next_ignoring_slots().is_none()
    }

    fn next_ignoring_slots(&self) -> Option<&Candidate> {
        if self.stats.queries >= MAX_QUERIES {
            return None;
        }
        self.top().find(|c| c.state == State::New)
    }

    /// The soft timeout passed for the query to `addr`.
    pub fn slow(&mut self, addr: &SocketAddr) {
        if let Some(c) = self.find(addr) {
            if c.state == State::Waiting {
                c.state = State::Slow;
            }
        }
    }

    /// The query to `addr` failed (timeout, error, or wrong id). Returns
    /// the node that referred it if that makes it a liar (see the module
    /// documentation); the lookup has then dropped it and its referrals.
    pub fn failed(&mut self, addr: &SocketAddr) -> Option<SocketAddr> {
        let c = self.find(addr)?;
        if !matches!(c.state, State::Waiting | State::Slow) {
            return None;
        }
        c.state = State::Failed;
        let referrer = c.referrer;
        self.stats.failures += 1;
        let referrer = referrer?;
        let r = self.referrals.entry(referrer).or_default();
        r.failed += 1;
        if r.answered > 0 || r.failed < LIAR_FAILURES || !self.liars.insert(referrer) {
            return None;
        }
        for c in &mut self.candidates {
            if c.addr == referrer {
                c.state = State::Failed;
            }
        }
        self.candidates
            .retain(|c| !(c.referrer == Some(referrer) && c.state == State::New));
        Some(referrer)
    }

    /// `addr` answered, but not as the node we were told of (or is one we
    /// ignore): it counts as failed, without blaming who referred it (the
    /// address was alive).
    pub fn wrong_id(&mut self, addr: &SocketAddr) {
        if let Some(c) = self.find(addr) {
            if matches!(c.state, State::Waiting | State::Slow) {
                c.state = State::Failed;
                self.stats.failures += 1;
            }
        }
    }

    /// `addr` answered as `id`, with these nodes (already filtered by the
    /// caller) and peers. Returns the peers not seen before in this lookup.
    pub fn responded(
        &mut self,
        addr: &SocketAddr,
        id: NodeId,
        token: Option<Vec<u8>>,
        nodes: &[NodeInfo],
        peers: &[SocketAddr],
        now: Instant,
    ) -> Vec<SocketAddr> {
        let Some(c) = self.find(addr) else {
            return Vec::new();
        };
        if !matches!(c.state, State::Waiting | State::Slow) {
            return Vec::new();
        }
        if c.id.is_some_and(|known| known != id) {
            c.state = State::Failed;
            self.stats.failures += 1;
            return Vec::new();
        }
        c.id = Some(id);
        c.state = State::Responded;
        c.token = token;
        let depth = c.depth;
        if let Some(r) = c.referrer {
            self.referrals.entry(r).or_default().answered += 1;
        }
        self.stats.responses += 1;
        self.stats.rounds = self.stats.rounds.max(depth + 1);
        // A seed that turned out to have an id we already had: keep one.
        let addr = *addr;
        self.candidates
            .retain(|o| o.addr == addr || o.id != Some(id) || o.state != State::New);
        for n in nodes {
            self.add(Some(n.id), n.addr, depth + 1, Some(addr));
        }
        self.sort_and_trim();
        let mut fresh = Vec::new();
        for p in peers {
            if self.peers_seen.len() < 10_000 && self.peers_seen.insert(*p) {
                fresh.push(*p);
            }
        }
        if !fresh.is_empty() && self.stats.first_peer_after.is_none() {
            self.stats.first_peer_after = Some(now.saturating_duration_since(self.started));
        }
        self.stats.peers = self.peers_seen.len() as u32;
        fresh
    }

    /// The `n` closest nodes that answered with a token (announce targets).
    pub fn closest_with_tokens(&self, n: usize) -> Vec<(NodeId, SocketAddr, Vec<u8>)> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Responded)
            .filter_map(|c| Some((c.id?, c.addr, c.token.clone()?)))
            .take(n)
            .collect()
    }

    /// The `n` closest nodes that answered.
    pub fn closest_responded(&self, n: usize) -> Vec<NodeInfo> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Responded)
            .filter_map(|c| {
                Some(NodeInfo {
                    id: c.id?,
                    addr: c.addr,
                })
            })
            .take(n)
            .collect()
    }

    pub fn stats(&self, now: Instant) -> LookupStats {
        let mut s = self.stats;
        s.duration = now.saturating_duration_since(self.started);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(0x0500_0000 + i), 6881))
    }

    fn id(b: u8) -> NodeId {
        let mut id = NodeId([0; 20]);
        id.0[0] = b;
        id
    }

    #[test]
    fn asks_alpha_at_a_time_and_converges() {
        let t0 = Instant::now();
        let target = NodeId([0; 20]);
        let seeds = (1..=10u8).map(|i| (Some(id(i * 10)), addr(u32::from(i))));
        let mut l = Lookup::new(target, LookupKind::Refresh, seeds, t0);
        let mut asked = Vec::new();
        while let Some((_, a)) = l.next() {
            l.sent(&a);
            asked.push(a);
        }
        assert_eq!(
            asked,
            vec![addr(1), addr(2), addr(3)],
            "closest first, α = 3"
        );
        // The closest answers with two closer nodes: they are asked next.
        let closer = [
            NodeInfo {
                id: id(1),
                addr: addr(101),
            },
            NodeInfo {
                id: id(2),
                addr: addr(102),
            },
        ];
        l.responded(&addr(1), id(10), None, &closer, &[], t0);
        assert_eq!(l.next().map(|(_, a)| a), Some(addr(101)));
        l.sent(&addr(101));
        // A slow query frees its slot.
        assert!(l.next().is_none());
        l.slow(&addr(2));
        assert_eq!(l.next().map(|(_, a)| a), Some(addr(102)));
        // Answer or fail everything; the lookup ends.
        let mut guard = 0;
        while !l.is_done() {
            guard += 1;
            assert!(guard < 100);
            if let Some((i, a)) = l.next() {
                l.sent(&a);
                l.responded(&a, i.unwrap(), Some(vec![1]), &[], &[], t0);
            } else {
                l.failed(&addr(2));
                l.failed(&addr(3));
                l.responded(&addr(101), id(1), Some(vec![2]), &[], &[], t0);
            }
        }
        let s = l.stats(t0);
        assert_eq!(s.rounds, 2);
        assert_eq!(s.failures, 2);
        // The 8 closest that answered, in order.
        let closest = l.closest_responded(K);
        assert_eq!(closest[0].id, id(1));
        assert_eq!(closest.len(), K);
        assert!(closest
            .iter()
            .all(|n| n.addr != addr(2) && n.addr != addr(3)));
    }

    #[test]
    fn wrong_id_liars_and_unknown_seeds() {
        let t0 = Instant::now();
        let target = NodeId([0; 20]);
        let mut l = Lookup::new(
            target,
            LookupKind::Bootstrap,
            [(Some(id(50)), addr(1)), (None, addr(2))],
            t0,
        );
        // The seed without id is asked first.
        assert_eq!(l.next(), Some((None, addr(2))));
        l.sent(&addr(2));
        l.sent(&addr(1));
        // addr(1) answers as someone else: failed, its nodes ignored.
        let fake = [NodeInfo {
            id: id(0),
            addr: addr(9),
        }];
        l.responded(&addr(1), id(51), None, &fake, &[], t0);
        assert!(l.next().is_none());
        // A liar's 100 made-up nodes on one host count once.
        let flood: Vec<NodeInfo> = (0..100u8)
            .map(|i| NodeInfo {
                id: id(i),
                addr: SocketAddr::from(([9, 9, 9, 9], 1000 + u16::from(i))),
            })
            .collect();
        let peers = [addr(500), addr(500), addr(501)];
        let fresh = l.responded(&addr(2), id(60), None, &flood, &peers, t0);
        assert_eq!(fresh, vec![addr(500), addr(501)]);
        assert_eq!(l.candidates.len(), 3);
        assert_eq!(l.stats(t0).first_peer_after, Some(Duration::ZERO));
    }

    #[test]
    fn a_responder_whose_referrals_all_fail_is_a_liar() {
        let t0 = Instant::now();
        let target = NodeId([0; 20]);
        let seeds = [(Some(id(200)), addr(1)), (Some(id(201)), addr(2))];
        let mut l = Lookup::new(target, LookupKind::Refresh, seeds, t0);
        for a in [addr(1), addr(2)] {
            l.sent(&a);
        }
        // addr(1) refers five nodes that never answer; addr(2) refers two
        // nodes, one of which answers.
        let fakes: Vec<NodeInfo> = (1..=5u8)
            .map(|i| NodeInfo {
                id: id(i),
                addr: addr(100 + u32::from(i)),
            })
            .collect();
        l.responded(&addr(1), id(200), Some(vec![1]), &fakes, &[], t0);
        let real = [
            NodeInfo {
                id: id(10),
                addr: addr(10),
            },
            NodeInfo {
                id: id(11),
                addr: addr(11),
            },
        ];
        l.responded(&addr(2), id(201), Some(vec![2]), &real, &[], t0);
        let mut liar = None;
        for _ in 0..3 {
            let (_, a) = l.next().unwrap();
            l.sent(&a);
            assert!(a.ip() != addr(10).ip() || a == addr(10));
            if let Some(x) = l.failed(&a) {
                liar = Some(x);
            }
        }
        assert_eq!(liar, Some(addr(1)), "three failed referrals, none answered");
        // Its other referrals are dropped, and it is no announce target.
        assert!(l
            .candidates
            .iter()
            .all(|c| c.referrer != Some(addr(1)) || c.state == State::Failed));
        assert!(l
            .closest_with_tokens(K)
            .iter()
            .all(|(_, a, _)| *a != addr(1)));
        // addr(2)'s failed referral does not make it a liar once one answered.
        let (i, a) = l.next().unwrap();
        l.sent(&a);
        l.responded(&a, i.unwrap(), None, &[], &[], t0);
        let (_, b) = l.next().unwrap();
        l.sent(&b);
        assert_eq!(l.failed(&b), None);
    }
}
