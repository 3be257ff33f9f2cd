//! The DHT node: one [`Dht`] is a whole BEP 5 participant as a state
//! machine, with no socket and no clock.
//!
//! # Contract
//! The driver owns one UDP socket and the clock. It
//! - passes every datagram received to [`Dht::handle_packet`];
//! - calls [`Dht::handle_timeout`] when the instant from
//!   [`Dht::poll_timeout`] has come (calling it earlier is harmless);
//! - after any `handle_*` call or request ([`Dht::get_peers`],
//!   [`Dht::add_node`], ...), drains [`Dht::poll_transmit`] (send each
//!   datagram) and [`Dht::poll_event`] until both return `None`, then asks
//!   [`Dht::poll_timeout`] again.
//!
//! Requests: [`Dht::get_peers`] finds peers for an infohash, and with a
//! port announces us to the nodes closest to it; the search is repeated
//! every 15 to 30 minutes until [`Dht::stop_get_peers`].
//!
//! # Invariants
//! - every query we send goes through the query token bucket (announces,
//!   at most [`K`] per lookup, may overdraw it) and at most
//!   [`MAX_PENDING`] queries wait for an answer; each has a hard timeout;
//! - a response is matched by transaction id *and* source address, or
//!   ignored;
//! - we answer a query only within the per-IP and global reply budgets,
//!   and our reply is never longer than [`DhtConfig::max_reply_factor`]
//!   times the query (values and nodes are dropped to fit), so the node
//!   cannot be used to amplify traffic toward a spoofed source;
//! - queries from port 0, from our own id, or from addresses we would never
//!   contact (multicast, unspecified, local unless
//!   [`DhtConfig::allow_local`]) are ignored; a read-only node (BEP 43)
//!   answers nothing;
//! - nothing grows without bound: routing table (160 buckets of [`K`]),
//!   peer store, per-IP limiter, lookups ([`MAX_LOOKUPS`]) and searches.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use essaim_core::InfoHash;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::id::{is_local, NodeId};
use crate::krpc::{self, Body, Message, NodeInfo, Query, Response};
use crate::lookup::{Lookup, LookupKind, LookupStats};
use crate::peer_store::PeerStore;
use crate::rate::{ReplyLimiter, TokenBucket};
use crate::routing::{Insert, RoutingTable, K};
use crate::token::Tokens;

/// Queries waiting for an answer, at most.
pub const MAX_PENDING: usize = 1024;
/// Lookups running at once, at most (searches over that wait their turn).
pub const MAX_LOOKUPS: usize = 32;
/// Searches (infohashes we look up regularly), at most.
pub const MAX_SEARCHES: usize = 4096;
/// How often the node does its housekeeping.
pub const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);
/// A search is repeated after a random delay in this range.
pub const RESEARCH_MIN: Duration = Duration::from_secs(15 * 60);
pub const RESEARCH_MAX: Duration = Duration::from_secs(30 * 60);
/// A search that reached nobody is retried after this long.
pub const RETRY_EMPTY: Duration = Duration::from_secs(30);
/// Nodes of the table a lookup starts from: more than [`K`], so that a
/// lookup whose closest seeds all fail (liars, departed nodes) goes on.
pub const SEEDS: usize = 3 * K;
/// A node caught handing out made-up contacts is ignored this long.
pub const BAN_FOR: Duration = Duration::from_secs(3600);
/// Banned hosts remembered, at most.
pub const MAX_BANNED: usize = 1024;
/// Peers put in one `get_peers` reply, at most (before the size limit).
pub const MAX_VALUES: usize = 100;

#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// Our node id; random (or BEP 42 from `external_ip`) when `None`.
    pub id: Option<NodeId>,
    /// Addresses to bootstrap from (ids unknown).
    pub bootstrap: Vec<SocketAddr>,
    /// Nodes saved from an earlier run ([`Dht::routing_table`]).
    pub nodes: Vec<(NodeId, SocketAddr)>,
    /// BEP 43: answer no queries, flag ours with `ro`.
    pub read_only: bool,
    /// Talk to loopback and private addresses (tests, LANs).
    pub allow_local: bool,
    /// Our external address if known: the id then follows BEP 42.
    pub external_ip: Option<IpAddr>,
    /// The socket is IPv6 (BEP 32): only IPv6 nodes are used.
    pub ipv6: bool,
    /// `v` in our messages.
    pub version: Option<Vec<u8>>,
    /// A query unanswered this long has failed.
    pub query_timeout: Duration,
    /// A lookup query unanswered this long frees its slot.
    pub slow_after: Duration,
    /// Queries we send per second, and the burst.
    pub queries_per_sec: u32,
    pub query_burst: u32,
    /// Replies per second to one IP, and the burst.
    pub replies_per_ip: u32,
    pub reply_burst_per_ip: u32,
    /// Replies per second in all.
    pub replies_per_sec: u32,
    /// A reply is at most this many times as long as its query.
    pub max_reply_factor: usize,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            id: None,
            bootstrap: Vec::new(),
            nodes: Vec::new(),
            read_only: false,
            allow_local: false,
            external_ip: None,
            ipv6: false,
            version: Some(b"ES\x00\x01".to_vec()),
            query_timeout: Duration::from_secs(2),
            slow_after: Duration::from_secs(1),
            queries_per_sec: 100,
            query_burst: 100,
            replies_per_ip: 20,
            reply_burst_per_ip: 40,
            replies_per_sec: 500,
            max_reply_factor: 4,
        }
    }
}

/// What the node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtEvent {
    /// Peers found for a search (only ones not yet reported by this lookup).
    Peers {
        info_hash: InfoHash,
        peers: Vec<SocketAddr>,
    },
    /// A get_peers lookup ended; `announced` is how many nodes we sent an
    /// announce_peer to.
    LookupDone {
        info_hash: InfoHash,
        stats: LookupStats,
        announced: usize,
    },
    /// The first bootstrap lookup ended.
    Bootstrapped { nodes: usize },
}

/// Counters, for tests and the user interface.
#[derive(Debug, Clone, Copy, Default)]
pub struct DhtStats {
    pub packets_in: u64,
    /// Packets that were not valid KRPC (or not for us).
    pub invalid: u64,
    pub queries_in: u64,
    pub queries_sent: u64,
    /// Queries not sent for lack of budget.
    pub queries_throttled: u64,
    pub replies_sent: u64,
    /// Queries not answered for lack of reply budget.
    pub replies_limited: u64,
    pub errors_sent: u64,
    pub announces_stored: u64,
    /// announce_peer refused (bad token).
    pub announces_refused: u64,
    pub timeouts: u64,
    /// Liars banned (nodes whose referrals all failed).
    pub banned: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    Lookup(u64),
    Ping,
    Announce,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    addr: SocketAddr,
    id: Option<NodeId>,
    purpose: Purpose,
    /// When it was sent: a timer whose deadline does not match belongs to
    /// an earlier query under the same transaction id.
    sent: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Slow,
    Hard,
}

pub(crate) struct Search {
    pub(crate) announce: Option<u16>,
    pub(crate) lookup: Option<u64>,
    pub(crate) next_run: Option<Instant>,
}

pub struct Dht {
    pub(crate) config: DhtConfig,
    pub(crate) id: NodeId,
    pub(crate) table: RoutingTable,
    pub(crate) tokens: Tokens,
    pub(crate) store: PeerStore,
    pending: BTreeMap<u32, Pending>,
    timers: BinaryHeap<Reverse<(Instant, u32, Stage)>>,
    pub(crate) lookups: BTreeMap<u64, Lookup>,
    pub(crate) next_lookup: u64,
    pub(crate) searches: BTreeMap<InfoHash, Search>,
    pub(crate) bootstrap_lookup: Option<u64>,
    pub(crate) bootstrapped: bool,
    pub(crate) next_bootstrap: Instant,
    /// Unknown nodes that queried us and were pinged, to ping each once.
    pub(crate) pinged: BTreeMap<SocketAddr, Instant>,
    pub(crate) query_limiter: TokenBucket,
    pub(crate) reply_limiter: ReplyLimiter,
    pub(crate) throttled_until: Option<Instant>,
    pub(crate) next_maintenance: Instant,
    pub(crate) next_expiry: Instant,
    pub(crate) ip_votes: BTreeMap<IpAddr, u32>,
    /// Liars (see [`crate::lookup`]) by host, with the end of their ban.
    pub(crate) banned: BTreeMap<SocketAddr, Instant>,
    pub(crate) out: VecDeque<(SocketAddr, Vec<u8>)>,
    pub(crate) events: VecDeque<DhtEvent>,
    pub(crate) rng: StdRng,
    pub(crate) stats: DhtStats,
}

impl Dht {
    /// A node that starts bootstrapping at once from `config.nodes` and
    /// `config.bootstrap`.
    pub fn new(config: DhtConfig, now: Instant, rng_seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(rng_seed);
        let id = match (config.id, config.external_ip) {
            (Some(id), _) => id,
            (None, Some(ip)) => NodeId::bep42(ip, &mut rng),
            (None, None) => NodeId::random(&mut rng),
        };
        let mut dht = Dht {
            table: RoutingTable::new(id, now),
            tokens: Tokens::new(now, &mut rng),
            store: PeerStore::new(),
            pending: BTreeMap::new(),
            timers: BinaryHeap::new(),
            lookups: BTreeMap::new(),
            next_lookup: 0,
            searches: BTreeMap::new(),
            bootstrap_lookup: None,
            bootstrapped: false,
            next_bootstrap: now,
            pinged: BTreeMap::new(),
            query_limiter: TokenBucket::new(config.queries_per_sec, config.query_burst, now),
            reply_limiter: ReplyLimiter::new(
                config.replies_per_ip,
                config.reply_burst_per_ip,
                config.replies_per_sec,
                now,
            ),
            throttled_until: None,
            next_maintenance: now + MAINTENANCE_EVERY,
            next_expiry: now + Duration::from_secs(60),
            ip_votes: BTreeMap::new(),
            banned: BTreeMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            rng,
            stats: DhtStats::default(),
            id,
            config,
        };
        dht.start_bootstrap(now);
        dht
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn stats(&self) -> DhtStats {
        self.stats
    }

    /// Nodes in the routing table, for saving and for [`DhtConfig::nodes`].
    pub fn routing_table(&self) -> Vec<(NodeId, SocketAddr)> {
        self.table
            .export()
            .into_iter()
            .map(|n| (n.id, n.addr))
            .collect()
    }

    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    pub fn peer_store(&self) -> &PeerStore {
        &self.store
    }

    /// The external IP most responders report (BEP 42 `ip`), if any.
    pub fn external_ip(&self) -> Option<IpAddr> {
        self.ip_votes
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(ip, _)| *ip)
    }

    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }

    /// When [`Dht::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_maintenance;
        if let Some(Reverse((at, _, _))) = self.timers.peek() {
            t = t.min(*at);
        }
        if let Some(at) = self.throttled_until {
            t = t.min(at);
        }
        Some(t)
    }

    /// Whether we would ever talk to this address.
    pub fn addr_ok(&self, addr: &SocketAddr) -> bool {
        if addr.port() == 0 || addr.is_ipv6() != self.config.ipv6 {
            return false;
        }
        let ip = addr.ip();
        let special = match ip {
            IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
            IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
        };
        !special && (self.config.allow_local || !is_local(ip))
    }

    /// Pings an address (a PORT message, a known router): if it answers,
    /// it goes into the routing table.
    pub fn add_node(&mut self, addr: SocketAddr, now: Instant) {
        if self.addr_ok(&addr) {
            self.send_query(
                addr,
                None,
                Query::Ping { id: self.id },
                Purpose::Ping,
                false,
                now,
            );
        }
    }

    /// More bootstrap addresses (router names resolved after start, say).
    /// If the table is short of [`K`] nodes and no bootstrap runs, one
    /// starts now from them; searches waiting for nodes retry.
    pub fn add_bootstrap(&mut self, addrs: Vec<SocketAddr>, now: Instant) {
        const MAX_BOOTSTRAP: usize = 64;
        for a in addrs {
            if self.config.bootstrap.len() < MAX_BOOTSTRAP && !self.config.bootstrap.contains(&a) {
                self.config.bootstrap.push(a);
            }
        }
        if self.table.len() < K && self.bootstrap_lookup.is_none() {
            self.start_bootstrap(now);
        }
    }

    /// Sends a query if the budget allows (`force`: even over it).
    pub(crate) fn send_query(
        &mut self,
        addr: SocketAddr,
        id: Option<NodeId>,
        query: Query,
        purpose: Purpose,
        force: bool,
        now: Instant,
    ) -> bool {
        if self.pending.len() >= MAX_PENDING {
            self.stats.queries_throttled += 1;
            return false;
        }
        if !self.query_limiter.try_take(now) && !force {
            self.stats.queries_throttled += 1;
            self.throttled_until = Some(self.query_limiter.next_token(now));
            return false;
        }
        let mut tid: u32 = self.rng.gen();
        while self.pending.contains_key(&tid) {
            tid = self.rng.gen();
        }
        let msg = Message {
            tid: tid.to_be_bytes().to_vec(),
            version: self.config.version.clone(),
            read_only: self.config.read_only,
            ip: None,
            body: Body::Query(query),
        };
        self.out.push_back((addr, msg.encode()));
        self.pending.insert(
            tid,
            Pending {
                addr,
                id,
                purpose,
                sent: now,
            },
        );
        if matches!(purpose, Purpose::Lookup(_)) {
            self.timers
                .push(Reverse((now + self.config.slow_after, tid, Stage::Slow)));
        }
        self.timers
            .push(Reverse((now + self.config.query_timeout, tid, Stage::Hard)));
        self.stats.queries_sent += 1;
        true
    }

    /// A datagram arrived from `from`.
    pub fn handle_packet(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        self.stats.packets_in += 1;
        if !self.addr_ok(&from) {
            self.stats.invalid += 1;
            return;
        }
        match krpc::decode(bytes) {
            Ok(msg) => match msg.body {
                Body::Query(q) => {
                    self.handle_query(from, msg.tid, q, msg.read_only, bytes.len(), now)
                }
                Body::Response(r) => self.handle_response(from, &msg.tid, r, msg.ip, now),
                Body::Error(_) => self.handle_error(from, &msg.tid, now),
            },
            Err(e) => {
                self.stats.invalid += 1;
                if let Some(tid) = e.query_tid {
                    self.reply_error(from, tid, &e.kind, bytes.len(), now);
                }
            }
        }
    }

    fn take_pending(&mut self, from: SocketAddr, tid: &[u8]) -> Option<Pending> {
        let tid = u32::from_be_bytes(tid.try_into().ok()?);
        if self.pending.get(&tid)?.addr != from {
            return None;
        }
        self.pending.remove(&tid)
    }

    fn handle_response(
        &mut self,
        from: SocketAddr,
        tid: &[u8],
        r: Response,
        ip: Option<SocketAddr>,
        now: Instant,
    ) {
        let Some(p) = self.take_pending(from, tid) else {
            self.stats.invalid += 1;
            return;
        };
        if r.id == self.id || p.id.is_some_and(|id| id != r.id) || self.is_banned(&from, now) {
            // Answering as us, or not as the node we were told of, or
            // banned: no use, though whoever referred it is not to blame.
            if let Some(id) = p.id {
                self.table.node_failed(&id, &p.addr, now);
            }
            if let Purpose::Lookup(lid) = p.purpose {
                if let Some(l) = self.lookups.get_mut(&lid) {
                    l.wrong_id(&from);
                }
                self.pump(lid, now);
            }
            return;
        }
        if self.table.node_responded(r.id, from, now) == Insert::Replacement {
            self.send_table_pings(now);
        }
        if let Some(ip) = ip {
            if self.ip_votes.len() < 64 || self.ip_votes.contains_key(&ip.ip()) {
                *self.ip_votes.entry(ip.ip()).or_default() += 1;
            }
        }
        let Purpose::Lookup(lid) = p.purpose else {
            return;
        };
        let nodes: Vec<NodeInfo> = if self.config.ipv6 { r.nodes6 } else { r.nodes }
            .into_iter()
            .filter(|n| n.id != self.id && self.addr_ok(&n.addr) && !self.is_banned(&n.addr, now))
            .collect();
        let peers: Vec<SocketAddr> = r.values.into_iter().filter(|a| self.addr_ok(a)).collect();
        let Some(l) = self.lookups.get_mut(&lid) else {
            return;
        };
        let fresh = l.responded(&from, r.id, r.token, &nodes, &peers, now);
        if let (false, LookupKind::GetPeers { info_hash, .. }) = (fresh.is_empty(), l.kind) {
            self.events.push_back(DhtEvent::Peers {
                info_hash,
                peers: fresh,
            });
        }
        self.pump(lid, now);
    }

    fn handle_error(&mut self, from: SocketAddr, tid: &[u8], now: Instant) {
        // The node is alive but did not help: the lookup moves on; the
        // routing table is left as it was.
        if let Some(p) = self.take_pending(from, tid) {
            if let Purpose::Lookup(lid) = p.purpose {
                self.lookup_failed(lid, &from, now);
            }
        } else {
            self.stats.invalid += 1;
        }
    }

    fn query_failed(&mut self, p: Pending, now: Instant) {
        if let Some(id) = p.id {
            self.table.node_failed(&id, &p.addr, now);
        }
        if let Purpose::Lookup(lid) = p.purpose {
            self.lookup_failed(lid, &p.addr, now);
        }
    }

    pub(crate) fn send_table_pings(&mut self, now: Instant) {
        for n in self.table.pings_needed(now) {
            self.send_query(
                n.addr,
                Some(n.id),
                Query::Ping { id: self.id },
                Purpose::Ping,
                false,
                now,
            );
        }
    }

    /// Timers: query timeouts, housekeeping, a refilled query budget.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, tid, stage))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match stage {
                Stage::Slow => {
                    if let Some(&Pending {
                        addr,
                        purpose: Purpose::Lookup(lid),
                        sent,
                        ..
                    }) = self.pending.get(&tid)
                    {
                        if sent + self.config.slow_after != at {
                            continue;
                        }
                        if let Some(l) = self.lookups.get_mut(&lid) {
                            l.slow(&addr);
                        }
                        self.pump(lid, now);
                    }
                }
                Stage::Hard => {
                    let mine = self
                        .pending
                        .get(&tid)
                        .is_some_and(|p| p.sent + self.config.query_timeout == at);
                    if let Some(p) = mine.then(|| self.pending.remove(&tid)).flatten() {
                        self.stats.timeouts += 1;
                        self.query_failed(p, now);
                    }
                }
            }
        }
        if self.throttled_until.is_some_and(|t| t <= now) {
            self.throttled_until = None;
            let ids: Vec<u64> = self.lookups.keys().copied().collect();
            for lid in ids {
                self.pump(lid, now);
            }
        }
        if now >= self.next_maintenance {
            self.maintenance(now);
        }
    }

    fn maintenance(&mut self, now: Instant) {
        self.next_maintenance = now + MAINTENANCE_EVERY;
        self.tokens.maybe_rotate(now, &mut self.rng);
        if now >= self.next_expiry {
            self.next_expiry = now + Duration::from_secs(60);
            self.store.expire(now);
            self.reply_limiter.prune(now);
            self.pinged
                .retain(|_, t| now.saturating_duration_since(*t) < Duration::from_secs(300));
            self.banned.retain(|_, until| *until > now);
        }
        self.send_table_pings(now);
        if self.bootstrap_lookup.is_none() {
            if !self.bootstrapped || self.table.is_empty() {
                if now >= self.next_bootstrap {
                    self.start_bootstrap(now);
                }
            } else if self.lookups.len() < MAX_LOOKUPS {
                let targets = self.table.refresh_targets(now, 1, &mut self.rng);
                for target in targets {
                    let lid = self.start_lookup(target, LookupKind::Refresh, now);
                    self.pump(lid, now);
                }
            }
        }
        let due: Vec<InfoHash> = self
            .searches
            .iter()
            .filter(|(_, s)| s.lookup.is_none() && s.next_run.is_some_and(|t| t <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            self.start_search(h, now);
        }
    }
}
