//! A deterministic network of [`Swarm`]s on virtual time.
//!
//! Each node is one `Swarm` of the same torrent with a "disk" (one
//! `Option<Vec<u8>>` per piece). Nodes are joined by connections; each
//! direction of a connection is a FIFO link with a latency and, optionally,
//! a bandwidth. A node may also have an uplink cap shared by all its links:
//! its messages then wait in one queue per connection and the uplink takes
//! the connections in turn, sending up to [`UPLINK_QUANTUM`] bytes (at least
//! one message) of each (a deficit round robin without carry-over: byte-fair
//! between connections, FIFO within one, as TCP flows share a bottleneck). A message's
//! delivery time is when it has been transmitted, plus the link latency.
//!
//! The harness is the swarms' driver: it carries out every [`Output`] as the
//! contract at the top of `swarm.rs` says, delivers messages in time order
//! (ties broken by send order, so links are FIFO), and calls `handle_tick`
//! on every node each virtual second. Nothing here reads the real clock
//! except for one `Instant` taken as the origin of virtual time; all
//! randomness comes from seeds, so a run is reproducible.
//!
//! Invariants are checked after every step (see [`Sim::check_invariants`]);
//! per-output ones (e.g. `Serve` only for a piece the node has) where the
//! output is carried out.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use essaim_core::{Bitfield, InfoHash, Layout};
use essaim_proto::swarm::{DisconnectReason, Output, PeerKey, Swarm, SwarmConfig};
use essaim_wire::peer::{BlockRequest, Message};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use sha1::{Digest, Sha1};

/// The torrent every node shares: random content and its piece hashes.
pub struct Content {
    pub layout: Layout,
    pub data: Vec<u8>,
    pub hashes: Vec<[u8; 20]>,
    pub info_hash: InfoHash,
}

impl Content {
    /// `total` random bytes cut in pieces of `piece_length`.
    pub fn random(piece_length: u32, total: u64, seed: u64) -> Content {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut data = vec![0u8; total as usize];
        rng.fill_bytes(&mut data);
        let layout = Layout::new(u64::from(piece_length), &[total]).expect("layout");
        let hashes = data
            .chunks(piece_length as usize)
            .map(|c| Sha1::digest(c).into())
            .collect::<Vec<[u8; 20]>>();
        assert_eq!(hashes.len() as u32, layout.num_pieces());
        let info_hash = InfoHash(Sha1::digest(hashes.concat()).into());
        Content {
            layout,
            data,
            hashes,
            info_hash,
        }
    }

    pub fn num_pieces(&self) -> u32 {
        self.layout.num_pieces()
    }

    pub fn piece(&self, piece: u32) -> &[u8] {
        let start = self.layout.piece_offset(piece).expect("piece in range") as usize;
        let len = self.layout.piece_size(piece).expect("piece in range") as usize;
        &self.data[start..start + len]
    }
}

/// How the harness carries out a node's `Serve` outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    Honest,
    /// Serves every block with its bytes flipped.
    Liar,
    /// Never serves anything (drops every `Serve`).
    BlackHole,
}

#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Starts with every piece.
    pub seed: bool,
    /// Starts with these pieces (overrides `seed`).
    pub pieces: Option<Vec<u32>>,
    pub behavior: Behavior,
    /// Upload cap shared by all the node's links, bytes per virtual second.
    pub uplink: Option<u64>,
    /// Virtual time the node's disk takes to check and store one piece,
    /// one piece at a time; `None`: at once.
    pub disk_time: Option<Duration>,
    pub config: SwarmConfig,
}

impl NodeSpec {
    pub fn seed() -> Self {
        NodeSpec {
            seed: true,
            pieces: None,
            behavior: Behavior::Honest,
            uplink: None,
            disk_time: None,
            config: SwarmConfig::default(),
        }
    }
    pub fn leecher() -> Self {
        NodeSpec {
            seed: false,
            ..NodeSpec::seed()
        }
    }
    /// A node that starts with `pieces` verified on disk.
    pub fn with_pieces(pieces: Vec<u32>) -> Self {
        NodeSpec {
            pieces: Some(pieces),
            ..NodeSpec::leecher()
        }
    }
    pub fn uplink(mut self, bytes_per_sec: u64) -> Self {
        self.uplink = Some(bytes_per_sec);
        self
    }
    pub fn disk_time(mut self, d: Duration) -> Self {
        self.disk_time = Some(d);
        self
    }
    pub fn behavior(mut self, b: Behavior) -> Self {
        self.behavior = b;
        self
    }
    pub fn slots(mut self, n: usize) -> Self {
        self.config.upload_slots = n;
        self
    }
}

/// One direction of a connection.
#[derive(Debug, Clone, Copy)]
pub struct LinkSpec {
    pub latency: Duration,
    /// Bytes per virtual second; `None` is unlimited.
    pub bandwidth: Option<u64>,
}

impl LinkSpec {
    pub fn latency_ms(ms: u64) -> Self {
        LinkSpec {
            latency: Duration::from_millis(ms),
            bandwidth: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    /// Connection index and our side of it.
    Conn(usize, usize),
    /// A peer played by the test itself ([`Sim::connect_raw`]).
    Raw,
}

pub struct Node {
    pub swarm: Swarm,
    pub disk: Vec<Option<Vec<u8>>>,
    pub behavior: Behavior,
    pub initial_seed: bool,
    pub upload_slots: usize,
    uplink: Option<u64>,
    /// Messages waiting for the uplink, per `(connection, side)`.
    uplink_queues: BTreeMap<(usize, usize), VecDeque<Queued>>,
    /// The queue served last (round robin), and whether a send is under way.
    uplink_last: (usize, usize),
    uplink_busy: bool,
    next_key: PeerKey,
    endpoints: BTreeMap<PeerKey, Endpoint>,
    /// `Completed` outputs seen.
    pub completed: u32,
    /// When the (first) `Completed` output was seen.
    pub completed_at: Option<Duration>,
    /// `PieceVerified` outputs seen, per piece.
    pub verified: Vec<u32>,
    /// `CheckPiece` outputs seen, per piece.
    pub checks: Vec<u32>,
    /// Pieces handed over by `CheckPiece` whose check has not come back
    /// (with a [`NodeSpec::disk_time`]), now and at most.
    pub checking: u32,
    pub max_checking: u32,
    disk_time: Option<Duration>,
    disk_free_at: Duration,
    /// `CheckPiece` outputs whose hash did not match.
    pub check_failures: u32,
    /// `Serve` outputs dropped (black hole).
    pub serves_dropped: u32,
    /// Pieces the node does not want ([`Sim::skip`]).
    pub skipped: Vec<bool>,
}

struct Link {
    spec: LinkSpec,
    busy: Duration,
}

pub struct Conn {
    /// `(node, key at that node)` for both sides.
    pub ends: [(usize, PeerKey); 2],
    links: [Link; 2],
    pub alive: bool,
    pub fast: bool,
    /// Requests sent by `ends[s]` that the harness expects an answer to
    /// (sent, not cancelled, not rejected, not cleared by a BEP 3 choke).
    requested: [Vec<BlockRequest>; 2],
}

/// A message put on a link.
#[derive(Debug, Clone)]
pub struct Sent {
    pub t: Duration,
    pub from: usize,
    pub to: usize,
    pub msg: Message,
}

/// A `Disconnect` output.
#[derive(Debug, Clone)]
pub struct DisconnectRecord {
    pub t: Duration,
    pub node: usize,
    pub key: PeerKey,
    /// The node on the other side; `None` for raw peers.
    pub remote: Option<usize>,
    pub reason: DisconnectReason,
}

/// Bytes a connection may send per turn of a capped uplink: one block
/// message, or many small ones.
pub const UPLINK_QUANTUM: usize = essaim_core::BLOCK_SIZE as usize + 1024;

/// A message waiting for a node's uplink; `block` is the length of a served
/// block (reported with `handle_block_sent` once transmitted).
struct Queued {
    msg: Message,
    block: Option<u32>,
}

enum Event {
    /// A node's uplink finished transmitting a message.
    Transmitted {
        node: usize,
        conn: usize,
        side: usize,
        batch: Vec<Queued>,
    },
    Deliver {
        conn: usize,
        to_side: usize,
        msg: Message,
    },
    BlockSent {
        conn: usize,
        side: usize,
        len: u32,
    },
    /// A slow disk finished a `CheckPiece`.
    Checked {
        node: usize,
        piece: u32,
        ok: bool,
        data: Vec<u8>,
    },
}

pub struct Sim {
    pub content: Content,
    pub nodes: Vec<Node>,
    pub conns: Vec<Conn>,
    events: BTreeMap<(Duration, u64), Event>,
    seq: u64,
    /// Virtual time since the start.
    pub t: Duration,
    epoch: Instant,
    next_tick: Duration,
    pub steps: u64,
    pub max_steps: u64,
    /// Every message put on a link, in send order.
    pub log: Vec<Sent>,
    pub disconnects: Vec<DisconnectRecord>,
    /// `useful[to][from]`: payload bytes `to` accepted (requested) from `from`.
    pub useful: Vec<Vec<u64>>,
    /// What nodes sent to raw peers: `(node, key, message)`.
    pub raw_sent: Vec<(usize, PeerKey, Message)>,
    pub rng: SmallRng,
    /// Debugging aid: print every message delivered to this node.
    pub trace: Option<usize>,
}

impl Sim {
    pub fn new(content: Content, specs: &[NodeSpec], seed: u64) -> Sim {
        let n = content.num_pieces();
        let nodes = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let mut have = if spec.seed {
                    Bitfield::full(n)
                } else {
                    Bitfield::new(n)
                };
                if let Some(pieces) = &spec.pieces {
                    have = Bitfield::new(n);
                    for &p in pieces {
                        have.set(p);
                    }
                }
                let disk = (0..n)
                    .map(|p| have.get(p).then(|| content.piece(p).to_vec()))
                    .collect();
                let full = have.is_full();
                let mut config = spec.config.clone();
                config.seed = seed.wrapping_mul(1000).wrapping_add(i as u64);
                Node {
                    upload_slots: config.upload_slots,
                    swarm: Swarm::new(
                        content.info_hash,
                        content.layout.clone(),
                        have,
                        None,
                        config,
                    ),
                    disk,
                    behavior: spec.behavior,
                    initial_seed: full,
                    uplink: spec.uplink,
                    uplink_queues: BTreeMap::new(),
                    uplink_last: (0, 0),
                    uplink_busy: false,
                    next_key: 100,
                    endpoints: BTreeMap::new(),
                    completed: 0,
                    completed_at: None,
                    verified: vec![0; n as usize],
                    checks: vec![0; n as usize],
                    check_failures: 0,
                    checking: 0,
                    max_checking: 0,
                    disk_time: spec.disk_time,
                    disk_free_at: Duration::ZERO,
                    serves_dropped: 0,
                    skipped: vec![false; n as usize],
                }
            })
            .collect();
        let count = specs.len();
        Sim {
            content,
            nodes,
            conns: Vec::new(),
            events: BTreeMap::new(),
            seq: 0,
            t: Duration::ZERO,
            epoch: Instant::now(),
            next_tick: Duration::from_secs(1),
            steps: 0,
            max_steps: 2_000_000,
            log: Vec::new(),
            disconnects: Vec::new(),
            useful: vec![vec![0; count]; count],
            raw_sent: Vec::new(),
            rng: SmallRng::seed_from_u64(seed),
            trace: None,
        }
    }

    pub fn now(&self) -> Instant {
        self.epoch + self.t
    }

    fn ip(node: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(
            10,
            0,
            (node / 250) as u8,
            (node % 250) as u8 + 1,
        ))
    }

    fn new_key(&mut self, node: usize) -> PeerKey {
        let n = &mut self.nodes[node];
        n.next_key += 1;
        n.next_key
    }

    /// Connects `a` and `b`; `ab` is the link from a to b, `ba` back.
    pub fn connect(&mut self, a: usize, b: usize, ab: LinkSpec, ba: LinkSpec, fast: bool) -> usize {
        assert_ne!(a, b);
        let ka = self.new_key(a);
        let kb = self.new_key(b);
        let c = self.conns.len();
        self.conns.push(Conn {
            ends: [(a, ka), (b, kb)],
            links: [
                Link {
                    spec: ab,
                    busy: self.t,
                },
                Link {
                    spec: ba,
                    busy: self.t,
                },
            ],
            alive: true,
            fast,
            requested: [Vec::new(), Vec::new()],
        });
        self.nodes[a].endpoints.insert(ka, Endpoint::Conn(c, 0));
        self.nodes[b].endpoints.insert(kb, Endpoint::Conn(c, 1));
        let now = self.now();
        self.nodes[a]
            .swarm
            .handle_peer_connected(ka, fast, true, Some(Self::ip(b)), now);
        self.nodes[b]
            .swarm
            .handle_peer_connected(kb, fast, true, Some(Self::ip(a)), now);
        self.drain_all();
        c
    }

    /// Tells both ends of connection `c` its round trip (the two links'
    /// latencies), as the engine does from the kernel's estimate.
    pub fn report_rtt(&mut self, c: usize) {
        let rtt = self.conns[c].links[0].spec.latency + self.conns[c].links[1].spec.latency;
        for (node, key) in self.conns[c].ends {
            self.nodes[node].swarm.handle_peer_rtt(key, rtt);
        }
    }

    /// Connects every pair, with a link latency drawn from `latency_ms`.
    pub fn connect_all(&mut self, latency_ms: std::ops::Range<u64>, fast: bool) {
        use rand::Rng;
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                let l = LinkSpec::latency_ms(self.rng.gen_range(latency_ms.clone()));
                self.connect(a, b, l, l, fast);
            }
        }
    }

    /// A peer played by the test: the node sees a connection, what it sends
    /// lands in [`Sim::raw_sent`], and [`Sim::inject`] speaks for the peer.
    pub fn connect_raw(&mut self, node: usize, fast: bool, extensions: bool) -> PeerKey {
        let k = self.new_key(node);
        self.nodes[node].endpoints.insert(k, Endpoint::Raw);
        let now = self.now();
        self.nodes[node].swarm.handle_peer_connected(
            k,
            fast,
            extensions,
            Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            now,
        );
        self.drain_all();
        k
    }

    /// Delivers `msg` from raw peer `key` to `node` now, and carries out
    /// the node's outputs.
    pub fn inject(&mut self, node: usize, key: PeerKey, msg: Message) {
        let now = self.now();
        self.nodes[node].swarm.handle_message(key, msg, now);
        self.drain_all();
        self.check_invariants();
    }

    /// `node` skips `piece` (an unselected file).
    pub fn skip(&mut self, node: usize, piece: u32) {
        let n = &mut self.nodes[node];
        n.skipped[piece as usize] = true;
        n.swarm.skip_piece(piece);
        if n.completed == 0 && n.swarm.is_complete() {
            // Has all it wants from the start: no `Completed` to expect.
            n.initial_seed = true;
        }
    }

    pub fn is_connected(&self, node: usize, key: PeerKey) -> bool {
        self.nodes[node].endpoints.contains_key(&key)
    }

    /// The disconnect records `node` produced for raw peer `key`.
    pub fn disconnects_of(&self, node: usize, key: PeerKey) -> Vec<&DisconnectRecord> {
        self.disconnects
            .iter()
            .filter(|d| d.node == node && d.key == key)
            .collect()
    }

    // ---- carrying out outputs ----------------------------------------------

    fn drain_all(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.nodes.len() {
                while let Some(o) = self.nodes[i].swarm.poll_output() {
                    any = true;
                    self.handle_output(i, o);
                }
            }
            if !any {
                break;
            }
        }
    }

    fn handle_output(&mut self, i: usize, o: Output) {
        let now = self.now();
        match o {
            Output::Send { peer, msg } => match self.nodes[i].endpoints.get(&peer).copied() {
                Some(Endpoint::Conn(c, s)) => {
                    match &msg {
                        Message::Request(r) => self.conns[c].requested[s].push(*r),
                        Message::Cancel(r) => remove_one(&mut self.conns[c].requested[s], r),
                        _ => {}
                    }
                    self.transmit(c, s, msg, None);
                }
                Some(Endpoint::Raw) => self.raw_sent.push((i, peer, msg)),
                None => {}
            },
            Output::Serve { peer, req } => {
                let node = &mut self.nodes[i];
                let Some(piece) = node.disk.get(req.piece as usize).and_then(|p| p.as_ref()) else {
                    panic!(
                        "t={:?}: node {i} told to serve piece {} it does not have",
                        self.t, req.piece
                    );
                };
                assert!(
                    node.swarm.have().get(req.piece),
                    "node {i} serves piece {} not in its have set",
                    req.piece
                );
                let (b, l) = (req.begin as usize, req.length as usize);
                assert!(
                    b + l <= piece.len() && l > 0 && req.length <= essaim_core::BLOCK_SIZE,
                    "node {i} told to serve an invalid range {req:?}"
                );
                let mut data = piece[b..b + l].to_vec();
                match node.behavior {
                    Behavior::BlackHole => {
                        node.serves_dropped += 1;
                        return;
                    }
                    Behavior::Liar => data.iter_mut().for_each(|x| *x ^= 0x5a),
                    Behavior::Honest => {}
                }
                let msg = Message::Piece {
                    piece: req.piece,
                    begin: req.begin,
                    data: Bytes::from(data),
                };
                match node.endpoints.get(&peer).copied() {
                    Some(Endpoint::Conn(c, s)) => self.transmit(c, s, msg, Some(req.length)),
                    Some(Endpoint::Raw) => {
                        self.raw_sent.push((i, peer, msg));
                        node.swarm.handle_block_sent(peer, req.length, now);
                    }
                    // Closed meanwhile: reported sent all the same.
                    None => node.swarm.handle_block_sent(peer, req.length, now),
                }
            }
            Output::CheckPiece { piece, data } => {
                let ok = {
                    let node = &mut self.nodes[i];
                    let p = piece as usize;
                    assert!(
                        p < node.disk.len(),
                        "node {i}: CheckPiece {piece} out of range"
                    );
                    assert!(
                        node.disk[p].is_none(),
                        "t={:?}: node {i} asked to check piece {piece} it already has",
                        self.t
                    );
                    node.checks[p] += 1;
                    <[u8; 20]>::from(Sha1::digest(&data)) == self.content.hashes[p]
                };
                let node = &mut self.nodes[i];
                match node.disk_time {
                    Some(d) => {
                        node.checking += 1;
                        node.max_checking = node.max_checking.max(node.checking);
                        let at = node.disk_free_at.max(self.t) + d;
                        node.disk_free_at = at;
                        let ev = Event::Checked {
                            node: i,
                            piece,
                            ok,
                            data,
                        };
                        self.schedule(at, ev);
                    }
                    None => self.checked(i, piece, ok, data),
                }
            }
            Output::Disconnect { peer, reason } => {
                let ep = self.nodes[i].endpoints.get(&peer).copied();
                let remote = match ep {
                    Some(Endpoint::Conn(c, s)) => Some(self.conns[c].ends[1 - s].0),
                    _ => None,
                };
                if ep.is_some() {
                    self.disconnects.push(DisconnectRecord {
                        t: self.t,
                        node: i,
                        key: peer,
                        remote,
                        reason,
                    });
                }
                match ep {
                    Some(Endpoint::Conn(c, _)) => self.close(c),
                    Some(Endpoint::Raw) => {
                        self.nodes[i].endpoints.remove(&peer);
                        self.nodes[i].swarm.handle_peer_disconnected(peer, now);
                    }
                    None => {}
                }
            }
            Output::PieceVerified(p) => {
                let node = &mut self.nodes[i];
                let idx = p as usize;
                assert_eq!(
                    node.disk[idx].as_deref(),
                    Some(self.content.piece(p)),
                    "node {i}: piece {p} verified with data other than the original"
                );
                node.verified[idx] += 1;
                assert_eq!(node.verified[idx], 1, "node {i}: piece {p} verified twice");
            }
            Output::PeersDiscovered(_) | Output::DhtNode(_) => {}
            Output::MetadataReceived(_) => panic!("a swarm never fetches metadata"),
            Output::Completed => {
                let node = &mut self.nodes[i];
                node.completed += 1;
                node.completed_at.get_or_insert(self.t);
                for (p, d) in node.disk.iter().enumerate() {
                    if node.skipped[p] {
                        continue;
                    }
                    assert_eq!(
                        d.as_deref(),
                        Some(self.content.piece(p as u32)),
                        "node {i} completed without piece {p} correct on disk"
                    );
                }
            }
        }
    }

    /// Puts `msg` on link `s` of connection `c` (through the sender's
    /// uplink, if capped). `block`: the length of a served block.
    fn transmit(&mut self, c: usize, s: usize, msg: Message, block: Option<u32>) {
        let from = self.conns[c].ends[s].0;
        let to = self.conns[c].ends[1 - s].0;
        self.log.push(Sent {
            t: self.t,
            from,
            to,
            msg: msg.clone(),
        });
        if self.nodes[from].uplink.is_some() {
            let node = &mut self.nodes[from];
            node.uplink_queues
                .entry((c, s))
                .or_default()
                .push_back(Queued { msg, block });
            if !node.uplink_busy {
                self.uplink_next(from);
            }
            return;
        }
        let link = &mut self.conns[c].links[s];
        let start = self.t.max(link.busy);
        let end = start + tx_time(msg.encoded_len(), link.spec.bandwidth);
        link.busy = end;
        let deliver = end + link.spec.latency;
        self.schedule(
            deliver,
            Event::Deliver {
                conn: c,
                to_side: 1 - s,
                msg,
            },
        );
        if let Some(len) = block {
            self.schedule(
                end,
                Event::BlockSent {
                    conn: c,
                    side: s,
                    len,
                },
            );
        }
    }

    /// Starts sending the next queued message of `node`'s uplink, taking
    /// the connections in turn.
    fn uplink_next(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.uplink_queues.retain(|_, q| !q.is_empty());
        let next = n
            .uplink_queues
            .range((
                std::ops::Bound::Excluded(n.uplink_last),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .or_else(|| n.uplink_queues.iter().next())
            .map(|(k, _)| *k);
        let Some((c, s)) = next else {
            n.uplink_busy = false;
            return;
        };
        n.uplink_last = (c, s);
        n.uplink_busy = true;
        let mut batch = Vec::new();
        let mut size = 0;
        if let Some(q) = n.uplink_queues.get_mut(&(c, s)) {
            while let Some(m) = q.front() {
                let len = m.msg.encoded_len();
                if !batch.is_empty() && size + len > UPLINK_QUANTUM {
                    break;
                }
                size += len;
                batch.extend(q.pop_front());
            }
        }
        let bw = match (n.uplink, self.conns[c].links[s].spec.bandwidth) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let done = self.t + tx_time(size, bw);
        self.schedule(
            done,
            Event::Transmitted {
                node,
                conn: c,
                side: s,
                batch,
            },
        );
    }

    fn schedule(&mut self, at: Duration, ev: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), ev);
    }

    /// Holds everything sent on link `side` of connection `c` until virtual
    /// time `until` (a stalled route; TCP delivers it all afterwards). Only
    /// for senders without an uplink cap.
    pub fn stall(&mut self, c: usize, side: usize, until: Duration) {
        let from = self.conns[c].ends[side].0;
        assert!(
            self.nodes[from].uplink.is_none(),
            "stall on a capped uplink"
        );
        let link = &mut self.conns[c].links[side];
        link.busy = link.busy.max(until);
    }

    /// Closes connection `c` at both ends (in-flight messages are lost).
    pub fn close(&mut self, c: usize) {
        if !self.conns[c].alive {
            return;
        }
        self.conns[c].alive = false;
        self.conns[c].requested = [Vec::new(), Vec::new()];
        let now = self.now();
        for (side, (node, key)) in self.conns[c].ends.into_iter().enumerate() {
            // Whatever still waits for the uplink is lost with the connection.
            self.nodes[node].uplink_queues.remove(&(c, side));
            self.nodes[node].endpoints.remove(&key);
            self.nodes[node].swarm.handle_peer_disconnected(key, now);
        }
    }

    fn deliver(&mut self, c: usize, r: usize, msg: Message) {
        if !self.conns[c].alive {
            return;
        }
        let (to, key) = self.conns[c].ends[r];
        let from = self.conns[c].ends[1 - r].0;
        let now = self.now();
        if self.trace == Some(to) {
            match &msg {
                Message::Piece { piece, begin, data } => eprintln!(
                    "{:?} {from} -> {to}: piece {piece} {begin} +{}",
                    self.t,
                    data.len()
                ),
                m => eprintln!("{:?} {from} -> {to}: {m:?}", self.t),
            }
        }
        match &msg {
            Message::Piece { piece, begin, data } => {
                let req = BlockRequest {
                    piece: *piece,
                    begin: *begin,
                    length: data.len() as u32,
                };
                let list = &mut self.conns[c].requested[r];
                let expected = list.iter().position(|x| *x == req);
                if let Some(i) = expected {
                    list.remove(i);
                }
                let before = self.nodes[to].swarm.stats(now);
                self.nodes[to].swarm.handle_message(key, msg, now);
                let after = self.nodes[to].swarm.stats(now);
                let len = u64::from(req.length);
                if expected.is_some() {
                    assert_eq!(
                        after.downloaded,
                        before.downloaded + len,
                        "t={:?}: node {to} did not accept block {req:?} it requested from node {from}",
                        self.t
                    );
                    self.useful[to][from] += len;
                } else {
                    assert_eq!(
                        (after.downloaded, after.wasted),
                        (before.downloaded, before.wasted + len),
                        "t={:?}: node {to} did not drop unrequested block {req:?} from node {from}",
                        self.t
                    );
                }
                return;
            }
            Message::Reject(req) => remove_one(&mut self.conns[c].requested[r], req),
            Message::Choke if !self.conns[c].fast => self.conns[c].requested[r].clear(),
            _ => {}
        }
        self.nodes[to].swarm.handle_message(key, msg, now);
    }

    /// A node's check of `piece` is done: store it if good, tell the swarm.
    fn checked(&mut self, i: usize, piece: u32, ok: bool, data: Vec<u8>) {
        let now = self.now();
        let node = &mut self.nodes[i];
        if ok {
            assert_eq!(data, self.content.piece(piece), "sha1 collision?!");
            node.disk[piece as usize] = Some(data.clone());
        } else {
            node.check_failures += 1;
        }
        node.swarm.handle_piece_checked(piece, ok, &data, now);
    }

    // ---- the loop ------------------------------------------------------------

    /// One event (a delivery, a block sent, or a tick), then every output.
    pub fn step(&mut self) {
        self.steps += 1;
        let next_ev = self.events.first_key_value().map(|(k, _)| k.0);
        match next_ev {
            Some(at) if at < self.next_tick => {
                let ((at, _), ev) = self.events.pop_first().expect("an event");
                self.t = at;
                match ev {
                    Event::Deliver { conn, to_side, msg } => self.deliver(conn, to_side, msg),
                    Event::Transmitted {
                        node,
                        conn,
                        side,
                        batch,
                    } => {
                        let key = self.conns[conn].ends[side].1;
                        let now = self.now();
                        for Queued { msg, block } in batch {
                            if self.conns[conn].alive {
                                let at = self.t + self.conns[conn].links[side].spec.latency;
                                let to_side = 1 - side;
                                self.schedule(at, Event::Deliver { conn, to_side, msg });
                            }
                            if let Some(len) = block {
                                self.nodes[node].swarm.handle_block_sent(key, len, now);
                            }
                        }
                        self.uplink_next(node);
                    }
                    Event::BlockSent { conn, side, len } => {
                        let (node, key) = self.conns[conn].ends[side];
                        let now = self.now();
                        self.nodes[node].swarm.handle_block_sent(key, len, now);
                    }
                    Event::Checked {
                        node,
                        piece,
                        ok,
                        data,
                    } => {
                        self.nodes[node].checking -= 1;
                        self.checked(node, piece, ok, data);
                    }
                }
            }
            _ => {
                self.t = self.next_tick;
                self.next_tick += Duration::from_secs(1);
                let now = self.now();
                for n in &mut self.nodes {
                    n.swarm.handle_tick(now);
                }
            }
        }
        self.drain_all();
        self.check_invariants();
    }

    /// Steps until `done` holds (checked before every step); panics past
    /// `max` virtual time or [`Sim::max_steps`] steps.
    pub fn run_until(&mut self, max: Duration, mut done: impl FnMut(&mut Sim) -> bool) {
        loop {
            if done(self) {
                return;
            }
            if self.t > max || self.steps >= self.max_steps {
                let summary = self.summary();
                panic!(
                    "simulation bound hit (t={:?} of {:?}, step {} of {}) before done:\n{}",
                    self.t, max, self.steps, self.max_steps, summary
                );
            }
            self.step();
        }
    }

    /// Steps until virtual time `until` (inclusive of events before it).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.t + d;
        self.run_until(end + Duration::from_secs(1), |s| s.next_time() > end);
    }

    fn next_time(&self) -> Duration {
        let ev = self.events.first_key_value().map(|(k, _)| k.0);
        ev.map_or(self.next_tick, |e| e.min(self.next_tick))
    }

    /// Runs until every node has every piece.
    pub fn run_to_completion(&mut self, max: Duration) {
        self.run_until(max, |s| s.all_complete());
    }

    pub fn all_complete(&self) -> bool {
        self.nodes.iter().all(|n| n.swarm.is_complete())
    }

    pub fn summary(&mut self) -> String {
        let now = self.now();
        let mut out = String::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let s = n.swarm.stats(now);
            out += &format!(
                "  node {i} ({:?}{}): {}/{} pieces, {} peers, down {} up {} wasted {} hash failures {}\n",
                n.behavior,
                if n.initial_seed { ", seed" } else { "" },
                s.pieces_have,
                s.num_pieces,
                s.peers,
                s.downloaded,
                s.uploaded,
                s.wasted,
                s.hash_failures,
            );
            for p in n.swarm.peer_stats(now) {
                out += &format!("      {p:?}\n");
            }
        }
        for d in self.disconnects.iter().take(20) {
            out += &format!(
                "  t={:?} node {} dropped {:?} (key {}): {:?}\n",
                d.t, d.node, d.remote, d.key, d.reason
            );
        }
        out
    }

    /// Checks what must hold between any two steps.
    pub fn check_invariants(&mut self) {
        let now = self.now();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let have = n.swarm.have();
            for p in 0..have.len() {
                assert_eq!(
                    have.get(p),
                    n.disk[p as usize].is_some(),
                    "node {i}: piece {p} in the have set iff on disk"
                );
            }
            let have_count = have.count();
            let stats = n.swarm.stats(now);
            assert_eq!(stats.pieces_have, have_count, "node {i}: pieces_have");
            assert!(
                n.completed <= 1,
                "node {i}: Completed {} times",
                n.completed
            );
            if n.completed == 1 {
                assert!(n.swarm.is_complete(), "node {i}: Completed yet incomplete");
            }
            if !n.initial_seed && n.swarm.is_complete() {
                assert_eq!(
                    n.completed, 1,
                    "node {i}: complete without a Completed output"
                );
            }
            assert_eq!(
                n.swarm.peer_count(),
                n.endpoints.len(),
                "node {i}: swarm and harness disagree on the connections"
            );
            let unchoked = n
                .swarm
                .peer_stats(now)
                .iter()
                .filter(|p| !p.am_choking)
                .count();
            assert!(
                unchoked <= n.upload_slots + 1,
                "t={:?}: node {i} has {unchoked} peers unchoked, slots {} + 1",
                self.t,
                n.upload_slots
            );
        }
    }

    /// Number of peers `node` has unchoked now.
    pub fn unchoked(&mut self, node: usize) -> usize {
        let now = self.now();
        self.nodes[node]
            .swarm
            .peer_stats(now)
            .iter()
            .filter(|p| !p.am_choking)
            .count()
    }

    /// Asserts every node ends with the original content on its disk.
    pub fn assert_all_data_correct(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            for (p, d) in n.disk.iter().enumerate() {
                assert_eq!(
                    d.as_deref(),
                    Some(self.content.piece(p as u32)),
                    "node {i}: piece {p} missing or wrong"
                );
            }
        }
    }
}

fn tx_time(size: usize, bandwidth: Option<u64>) -> Duration {
    bandwidth.map_or(Duration::ZERO, |bw| {
        Duration::from_nanos(size as u64 * 1_000_000_000 / bw.max(1))
    })
}

fn remove_one(list: &mut Vec<BlockRequest>, r: &BlockRequest) {
    if let Some(i) = list.iter().position(|x| x == r) {
        list.remove(i);
    }
}
