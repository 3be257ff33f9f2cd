//! The routing table (BEP 5 §"Routing Table"): k-buckets over the 160-bit
//! id space, finer near our own id.
//!
//! Buckets are kept as a list indexed by the number of leading bits an id
//! shares with ours: bucket `i < last` holds ids sharing exactly `i` bits,
//! the last bucket holds every id sharing `last` bits or more, and so
//! contains our own id. This is BEP 5's range splitting: only the last
//! bucket is ever split, into the ids sharing exactly `last` bits and the
//! rest.
//!
//! # Invariants
//! - a bucket holds at most [`K`] nodes and [`K`] replacements;
//! - every node in the table answered one of our queries at least once
//!   (only [`RoutingTable::node_responded`] inserts);
//! - one node per host: a public IP appears at most once among the nodes
//!   (for local addresses, where many test nodes share one IP, the whole
//!   address is unique instead), so one machine cannot fill the table with
//!   made-up ids;
//! - our own id is never in the table.
//!
//! Node states: *good* if it answered within [`QUESTIONABLE_AFTER`], or has
//! ever answered and queried us within that time; *bad* once it failed
//! [`BAD_AFTER_FAILURES`] queries in a row; *questionable* otherwise. A bad
//! node gives its place to the newest replacement (or to the next node to
//! answer us). When a full bucket has replacements waiting, its least
//! recently seen questionable node is pinged ([`RoutingTable::pings_needed`]):
//! an answer makes it good again, two failures make it bad.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::id::{is_local, NodeId};
use crate::krpc::NodeInfo;

/// Nodes per bucket.
pub const K: usize = 8;
/// A node not heard from for this long is questionable.
pub const QUESTIONABLE_AFTER: Duration = Duration::from_secs(15 * 60);
/// Queries failed in a row that make a node bad.
pub const BAD_AFTER_FAILURES: u8 = 2;
/// A bucket unchanged for this long is refreshed with a lookup.
pub const REFRESH_AFTER: Duration = Duration::from_secs(15 * 60);
/// A ping to a questionable node counts as outstanding for this long.
const PING_PENDING: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    Good,
    Questionable,
    Bad,
}

#[derive(Debug, Clone)]
pub struct NodeEntry {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub last_response: Option<Instant>,
    pub last_query: Option<Instant>,
    /// Queries failed in a row.
    pub failures: u8,
    /// When we last pinged it to check on it.
    pub pinged: Option<Instant>,
}

impl NodeEntry {
    fn new(id: NodeId, addr: SocketAddr, now: Instant) -> Self {
        NodeEntry {
            id,
            addr,
            last_response: Some(now),
            last_query: None,
            failures: 0,
            pinged: None,
        }
    }

    pub fn status(&self, now: Instant) -> NodeStatus {
        let recent = |t: Option<Instant>| {
            t.is_some_and(|t| now.saturating_duration_since(t) < QUESTIONABLE_AFTER)
        };
        if self.failures >= BAD_AFTER_FAILURES {
            NodeStatus::Bad
        } else if recent(self.last_response)
            || (self.last_response.is_some() && recent(self.last_query))
        {
            NodeStatus::Good
        } else {
            NodeStatus::Questionable
        }
    }

    fn last_seen(&self) -> Option<Instant> {
        self.last_response.max(self.last_query)
    }

    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id,
            addr: self.addr,
        }
    }
}

/// Whether two addresses are the same host for the one-node-per-host rule.
pub fn same_host(a: &SocketAddr, b: &SocketAddr) -> bool {
    if is_local(a.ip()) {
        a == b
    } else {
        a.ip() == b.ip()
    }
}

struct Bucket {
    nodes: Vec<NodeEntry>,
    /// Nodes that answered us while the bucket was full, newest last.
    replacements: Vec<NodeEntry>,
    last_changed: Instant,
    /// Refresh at the next chance, however fresh.
    refresh_soon: bool,
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Bucket {
            nodes: Vec::new(),
            replacements: Vec::new(),
            last_changed: now,
            refresh_soon: false,
        }
    }
}

/// What [`RoutingTable::node_responded`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// A new node in the table.
    Added,
    /// A known node, refreshed.
    Updated,
    /// The bucket is full: kept as a replacement.
    Replacement,
    /// Refused: our own id, or another node already holds this host.
    Rejected,
}

pub struct RoutingTable {
    own: NodeId,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    pub fn new(own: NodeId, now: Instant) -> Self {
        RoutingTable {
            own,
            buckets: vec![Bucket::new(now)],
        }
    }

    pub fn own_id(&self) -> NodeId {
        self.own
    }

    /// Nodes in the table (not counting replacements).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn num_buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Nodes per bucket, from the farthest bucket to ours.
    pub fn bucket_sizes(&self) -> Vec<usize> {
        self.buckets.iter().map(|b| b.nodes.len()).collect()
    }

    fn index(&self, id: &NodeId) -> usize {
        self.own.common_prefix_len(id).min(self.buckets.len() - 1)
    }

    pub fn get(&self, id: &NodeId) -> Option<&NodeEntry> {
        self.buckets[self.index(id)]
            .nodes
            .iter()
            .find(|n| n.id == *id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &NodeEntry> {
        self.buckets.iter().flat_map(|b| b.nodes.iter())
    }

    fn host_holder(&self, addr: &SocketAddr) -> Option<(usize, usize)> {
        self.buckets.iter().enumerate().find_map(|(bi, b)| {
            b.nodes
                .iter()
                .position(|n| same_host(&n.addr, addr))
                .map(|ni| (bi, ni))
        })
    }

    /// The node answered one of our queries: insert or refresh it.
    pub fn node_responded(&mut self, id: NodeId, addr: SocketAddr, now: Instant) -> Insert {
        if id == self.own {
            return Insert::Rejected;
        }
        let mut bi = self.index(&id);
        let bucket = &mut self.buckets[bi];
        if let Some(n) = bucket.nodes.iter_mut().find(|n| n.id == id) {
            if n.addr != addr {
                if n.status(now) == NodeStatus::Good {
                    // Keep the address that works; do not let another host
                    // take a good node's place by claiming its id.
                    return Insert::Rejected;
                }
                n.addr = addr;
            }
            n.last_response = Some(now);
            n.failures = 0;
            n.pinged = None;
            bucket.last_changed = now;
            return Insert::Updated;
        }
        if let Some((hb, hn)) = self.host_holder(&addr) {
            if self.buckets[hb].nodes[hn].status(now) == NodeStatus::Good {
                return Insert::Rejected;
            }
            // The host came back under a new id: drop the stale entry.
            self.buckets[hb].nodes.remove(hn);
            bi = self.index(&id);
        }
        let entry = NodeEntry::new(id, addr, now);
        loop {
            let last = self.buckets.len() - 1;
            let can_split = bi == last && self.buckets.len() < NodeId::BITS;
            let bucket = &mut self.buckets[bi];
            bucket
                .replacements
                .retain(|r| r.id != id && !same_host(&r.addr, &addr));
            if bucket.nodes.len() < K {
                bucket.nodes.push(entry);
                bucket.last_changed = now;
                return Insert::Added;
            }
            if can_split {
                self.split(now);
                bi = self.index(&id);
                continue;
            }
            if let Some(i) = bucket
                .nodes
                .iter()
                .position(|n| n.status(now) == NodeStatus::Bad)
            {
                bucket.nodes[i] = entry;
                bucket.last_changed = now;
                return Insert::Added;
            }
            if bucket.replacements.len() >= K {
                bucket.replacements.remove(0);
            }
            bucket.replacements.push(entry);
            return Insert::Replacement;
        }
    }

    /// Splits the last bucket: ids sharing exactly `last` bits with ours
    /// stay at `last`, the rest go to a new last bucket.
    fn split(&mut self, now: Instant) {
        let last = self.buckets.len() - 1;
        let own = self.own;
        let mut far = Bucket::new(now);
        let mut near = Bucket::new(now);
        let old = self.buckets.pop();
        if let Some(old) = old {
            far.last_changed = old.last_changed;
            near.last_changed = old.last_changed;
            for n in old.nodes {
                if own.common_prefix_len(&n.id) == last {
                    far.nodes.push(n);
                } else {
                    near.nodes.push(n);
                }
            }
            for r in old.replacements {
                if own.common_prefix_len(&r.id) == last {
                    far.replacements.push(r);
                } else {
                    near.replacements.push(r);
                }
            }
        }
        self.buckets.push(far);
        self.buckets.push(near);
    }

    /// The node sent us a query. Returns whether it is in the table.
    pub fn node_queried(&mut self, id: &NodeId, addr: &SocketAddr, now: Instant) -> bool {
        let bi = self.index(id);
        match self.buckets[bi]
            .nodes
            .iter_mut()
            .find(|n| n.id == *id && n.addr == *addr)
        {
            Some(n) => {
                n.last_query = Some(now);
                true
            }
            None => false,
        }
    }

    /// Whether a node that is not in the table would get in if it answered
    /// us now (its bucket has room, can split, or holds a bad node).
    pub fn would_accept(&self, id: &NodeId, addr: &SocketAddr, now: Instant) -> bool {
        if *id == self.own || self.get(id).is_some() {
            return false;
        }
        if let Some((hb, hn)) = self.host_holder(addr) {
            if self.buckets[hb].nodes[hn].status(now) == NodeStatus::Good {
                return false;
            }
        }
        let bi = self.index(id);
        let b = &self.buckets[bi];
        b.nodes.len() < K
            || (bi == self.buckets.len() - 1 && self.buckets.len() < NodeId::BITS)
            || b.nodes.iter().any(|n| n.status(now) == NodeStatus::Bad)
    }

    /// A query to this node went unanswered.
    pub fn node_failed(&mut self, id: &NodeId, addr: &SocketAddr, now: Instant) {
        let bi = self.index(id);
        let bucket = &mut self.buckets[bi];
        bucket.replacements.retain(|r| r.id != *id);
        let Some(i) = bucket
            .nodes
            .iter()
            .position(|n| n.id == *id && n.addr == *addr)
        else {
            return;
        };
        let n = &mut bucket.nodes[i];
        n.failures = n.failures.saturating_add(1);
        n.pinged = None;
        if n.status(now) == NodeStatus::Bad {
            if let Some(r) = bucket.replacements.pop() {
                bucket.nodes[i] = r;
                bucket.last_changed = now;
            }
        }
    }

    /// Removes every node (and replacement) at this host; the newest
    /// replacements take the freed places.
    pub fn remove_host(&mut self, addr: &SocketAddr, now: Instant) {
        for b in &mut self.buckets {
            b.replacements.retain(|n| !same_host(&n.addr, addr));
            let before = b.nodes.len();
            b.nodes.retain(|n| !same_host(&n.addr, addr));
            if b.nodes.len() < before {
                b.last_changed = now;
                while b.nodes.len() < K {
                    match b.replacements.pop() {
                        Some(r) => b.nodes.push(r),
                        None => break,
                    }
                }
            }
        }
    }

    /// Nodes to ping now: in each bucket where replacements wait, the least
    /// recently seen questionable (or once-failed) node, unless a ping to one
    /// is already out. They are marked as pinged.
    pub fn pings_needed(&mut self, now: Instant) -> Vec<NodeInfo> {
        let mut out = Vec::new();
        for b in &mut self.buckets {
            if b.replacements.is_empty() {
                continue;
            }
            let busy = b.nodes.iter().any(|n| {
                n.pinged
                    .is_some_and(|t| now.saturating_duration_since(t) < PING_PENDING)
            });
            if busy {
                continue;
            }
            if let Some(n) = b
                .nodes
                .iter_mut()
                .filter(|n| n.status(now) != NodeStatus::Good || n.failures > 0)
                .min_by_key(|n| n.last_seen())
            {
                n.pinged = Some(now);
                out.push(n.info());
            }
        }
        out
    }

    /// Buckets unchanged for [`REFRESH_AFTER`]: a random target in each
    /// one's range (at most `max`), and the bucket counts as refreshed.
    pub fn refresh_targets(&mut self, now: Instant, max: usize, rng: &mut impl Rng) -> Vec<NodeId> {
        let last = self.buckets.len() - 1;
        let mut out = Vec::new();
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if out.len() >= max {
                break;
            }
            if b.refresh_soon || now.saturating_duration_since(b.last_changed) >= REFRESH_AFTER {
                b.last_changed = now;
                b.refresh_soon = false;
                out.push(self.own.random_in_range(i, i != last, rng));
            }
        }
        out
    }

    /// Marks every bucket that is not full for refreshing at the next
    /// chance (after bootstrap, so that far buckets get nodes too).
    pub fn refresh_sparse(&mut self) {
        for b in &mut self.buckets {
            b.refresh_soon |= b.nodes.len() < K;
        }
    }

    /// The `n` nodes closest to `target` that are not bad and whose address
    /// passes `filter`.
    pub fn closest(
        &self,
        target: &NodeId,
        n: usize,
        now: Instant,
        filter: impl Fn(&SocketAddr) -> bool,
    ) -> Vec<NodeInfo> {
        let mut all: Vec<&NodeEntry> = self
            .entries()
            .filter(|e| e.status(now) != NodeStatus::Bad && filter(&e.addr))
            .collect();
        all.sort_by_key(|e| e.id.distance(target));
        all.into_iter().take(n).map(NodeEntry::info).collect()
    }

    /// Every node, for saving the table.
    pub fn export(&self) -> Vec<NodeInfo> {
        self.entries().map(NodeEntry::info).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(0x0200_0000 + i), 6881))
    }

    /// An id sharing exactly `prefix` bits with `own`, then `tail`.
    fn id_at(own: &NodeId, prefix: usize, tail: u8) -> NodeId {
        let mut rng = rand::rngs::mock::StepRng::new(u64::from(tail), 0);
        let mut id = own.random_in_range(prefix, true, &mut rng);
        id.0[19] = tail;
        id
    }

    #[test]
    fn splits_only_the_bucket_holding_our_id() {
        let now = Instant::now();
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, now);
        // 8 far nodes (first bit differs) fill the only bucket.
        for i in 0..8 {
            assert_eq!(
                t.node_responded(id_at(&own, 0, i), addr(u32::from(i)), now),
                Insert::Added
            );
        }
        assert_eq!(t.num_buckets(), 1);
        // A ninth far node splits: the far half is full, so it is a replacement.
        assert_eq!(
            t.node_responded(id_at(&own, 0, 8), addr(8), now),
            Insert::Replacement
        );
        assert_eq!(t.bucket_sizes(), vec![8, 0]);
        // Near nodes fill the near half, which splits again and again.
        for p in 1..40 {
            for i in 0..3u8 {
                let id = id_at(&own, p, i);
                let r = t.node_responded(id, addr(1000 + p as u32 * 10 + u32::from(i)), now);
                assert_eq!(r, Insert::Added, "prefix {p}");
            }
        }
        let sizes = t.bucket_sizes();
        assert_eq!(sizes[0], 8);
        assert!(sizes.iter().all(|&s| s <= K));
        assert_eq!(t.len(), 8 + 39 * 3);
        // Every node sits in the bucket its prefix says.
        let last = t.num_buckets() - 1;
        for (i, b) in t.buckets.iter().enumerate() {
            for n in &b.nodes {
                assert_eq!(own.common_prefix_len(&n.id).min(last), i);
            }
        }
        // The far bucket never split although it is full.
        assert_eq!(
            t.node_responded(id_at(&own, 0, 99), addr(99), now),
            Insert::Replacement
        );
        assert_eq!(t.bucket_sizes()[0], 8);
        // Our own id is refused.
        assert_eq!(t.node_responded(own, addr(7777), now), Insert::Rejected);
    }

    #[test]
    fn one_node_per_host_and_no_hijack() {
        let now = Instant::now();
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, now);
        let a = id_at(&own, 0, 1);
        assert_eq!(t.node_responded(a, addr(1), now), Insert::Added);
        // Same IP, other port, other id: refused (one machine, one entry).
        let mut other_port = addr(1);
        other_port.set_port(9999);
        assert_eq!(
            t.node_responded(id_at(&own, 3, 2), other_port, now),
            Insert::Rejected
        );
        // Another host claiming a's id while a is good: refused.
        assert_eq!(t.node_responded(a, addr(2), now), Insert::Rejected);
        assert_eq!(t.get(&a).unwrap().addr, addr(1));
        // Loopback nodes are told apart by port.
        let l1 = SocketAddr::from(([127, 0, 0, 1], 1000));
        let l2 = SocketAddr::from(([127, 0, 0, 1], 1001));
        assert_eq!(t.node_responded(id_at(&own, 1, 1), l1, now), Insert::Added);
        assert_eq!(t.node_responded(id_at(&own, 1, 2), l2, now), Insert::Added);
    }

    #[test]
    fn questionable_nodes_are_pinged_and_bad_ones_replaced() {
        let t0 = Instant::now();
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, t0);
        // Fill the far bucket after the split (first bit differs).
        t.node_responded(id_at(&own, 1, 200), addr(200), t0);
        for i in 0..8 {
            t.node_responded(
                id_at(&own, 0, i),
                addr(u32::from(i)),
                t0 + Duration::from_secs(u64::from(i)),
            );
        }
        t.node_responded(id_at(&own, 1, 201), addr(201), t0);
        assert_eq!(t.num_buckets(), 2);
        let later = t0 + QUESTIONABLE_AFTER + Duration::from_secs(60);
        // All good: a newcomer waits as a replacement, and nobody needs a ping.
        let newcomer = id_at(&own, 0, 50);
        assert_eq!(
            t.node_responded(newcomer, addr(50), t0),
            Insert::Replacement
        );
        assert!(t.pings_needed(t0).is_empty());
        // 15 minutes later they are questionable: the least recently seen is pinged.
        assert_eq!(
            t.get(&id_at(&own, 0, 0)).unwrap().status(later),
            NodeStatus::Questionable
        );
        let pings = t.pings_needed(later);
        assert_eq!(pings.len(), 1);
        assert_eq!(pings[0].id, id_at(&own, 0, 0));
        assert!(t.pings_needed(later).is_empty(), "one ping out per bucket");
        // It answers: good again; the next one is pinged.
        t.node_responded(pings[0].id, pings[0].addr, later);
        let pings = t.pings_needed(later);
        assert_eq!(pings[0].id, id_at(&own, 0, 1));
        // It fails once: still in the table, pinged once more.
        t.node_failed(&pings[0].id, &pings[0].addr, later);
        assert!(t.get(&pings[0].id).is_some());
        let again = t.pings_needed(later);
        assert_eq!(again[0].id, pings[0].id, "tried once more");
        // Twice: bad, replaced by the waiting newcomer.
        t.node_failed(&again[0].id, &again[0].addr, later);
        assert!(t.get(&again[0].id).is_none());
        assert_eq!(t.get(&newcomer).unwrap().addr, addr(50));
        // A bad node without replacement stays until a newcomer takes its place.
        let victim = id_at(&own, 0, 3);
        t.node_failed(&victim, &addr(3), later);
        t.node_failed(&victim, &addr(3), later);
        assert_eq!(t.get(&victim).unwrap().status(later), NodeStatus::Bad);
        assert!(t
            .closest(&victim, 100, later, |_| true)
            .iter()
            .all(|n| n.id != victim));
        let fresh = id_at(&own, 0, 60);
        assert_eq!(t.node_responded(fresh, addr(60), later), Insert::Added);
        assert!(t.get(&victim).is_none());
    }

    #[test]
    fn closest_are_sorted_by_xor_distance() {
        let now = Instant::now();
        let own = NodeId([0x55; 20]);
        let mut t = RoutingTable::new(own, now);
        let mut rng = rand::rngs::mock::StepRng::new(12345, 0x9e37_79b9_7f4a_7c15);
        let mut ids = Vec::new();
        for i in 0..200 {
            let id = NodeId::random(&mut rng);
            if t.node_responded(id, addr(i), now) == Insert::Added {
                ids.push(id);
            }
        }
        let target = NodeId::random(&mut rng);
        let got = t.closest(&target, K, now, |_| true);
        assert_eq!(got.len(), K);
        ids.sort_by_key(|id| id.distance(&target));
        let want: Vec<NodeId> = ids.into_iter().take(K).collect();
        assert_eq!(got.iter().map(|n| n.id).collect::<Vec<_>>(), want);
        assert_eq!(t.export().len(), t.len());
    }

    #[test]
    fn stale_buckets_are_refreshed_in_range() {
        let t0 = Instant::now();
        let own = NodeId([0xf0; 20]);
        let mut t = RoutingTable::new(own, t0);
        for i in 0..20u8 {
            t.node_responded(id_at(&own, usize::from(i % 4), i), addr(u32::from(i)), t0);
        }
        let n = t.num_buckets();
        let mut rng = rand::rngs::mock::StepRng::new(7, 11);
        assert!(t
            .refresh_targets(t0 + Duration::from_secs(60), 100, &mut rng)
            .is_empty());
        let late = t0 + REFRESH_AFTER;
        let targets = t.refresh_targets(late, 100, &mut rng);
        assert_eq!(targets.len(), n);
        for (i, id) in targets.iter().enumerate() {
            let p = own.common_prefix_len(id);
            if i < n - 1 {
                assert_eq!(p, i);
            } else {
                assert!(p >= i);
            }
        }
        assert!(
            t.refresh_targets(late, 100, &mut rng).is_empty(),
            "refreshed"
        );
        // After bootstrap, sparse buckets are refreshed at once.
        t.refresh_sparse();
        let sparse = t.bucket_sizes().iter().filter(|&&s| s < K).count();
        assert!(sparse > 0);
        assert_eq!(t.refresh_targets(late, 100, &mut rng).len(), sparse);
    }
}
