//! An in-memory UDP network on virtual time for many [`Dht`] nodes.
//!
//! Every datagram gets a random one-way latency and may be lost; packets to
//! an address where nobody lives vanish. The harness plays the driver of
//! each node (handle, then drain transmits and events, then re-arm the
//! node's timer) and runs events in time order. Liars are scripted nodes
//! that may also send packets with a forged source address.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use essaim_core::InfoHash;
use essaim_dht::krpc::{decode, Body, Message, NodeInfo, Query, Response};
use essaim_dht::{Dht, DhtConfig, DhtEvent, NodeId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub enum Behavior {
    Honest(Box<Dht>),
    Liar(Box<Liar>),
}

pub struct SimNode {
    pub addr: SocketAddr,
    pub behavior: Behavior,
    pub events: Vec<(Instant, DhtEvent)>,
    /// Datagrams received.
    pub received: u64,
}

impl SimNode {
    pub fn dht(&self) -> Option<&Dht> {
        match &self.behavior {
            Behavior::Honest(d) => Some(d),
            Behavior::Liar(_) => None,
        }
    }
}

struct Packet {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

pub struct Sim {
    pub t0: Instant,
    pub now: Instant,
    pub nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    packets: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: HashMap<u64, Packet>,
    seq: u64,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    armed: Vec<Option<Instant>>,
    rng: StdRng,
    pub loss: f64,
    pub latency_ms: (u64, u64),
    pub delivered: u64,
    pub lost: u64,
    /// Packets sent from `spy_from` to `spy_to`, if set.
    pub spy: Option<(SocketAddr, SocketAddr)>,
    pub spied: u64,
}

/// The address of node `i`: one public IPv4 address per node.
pub fn node_addr(i: usize) -> SocketAddr {
    let i = i as u32;
    SocketAddr::from((Ipv4Addr::from(0x0b00_0000 + (i << 8) + 1), 6881))
}

impl Sim {
    pub fn new(seed: u64) -> Self {
        let t0 = Instant::now();
        Sim {
            t0,
            now: t0,
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            packets: BinaryHeap::new(),
            in_flight: HashMap::new(),
            seq: 0,
            timers: BinaryHeap::new(),
            armed: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            loss: 0.01,
            latency_ms: (10, 150),
            delivered: 0,
            lost: 0,
            spy: None,
            spied: 0,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Adds an honest node bootstrapping from `bootstrap`.
    pub fn add_honest(&mut self, bootstrap: Vec<SocketAddr>, config: DhtConfig) -> usize {
        let i = self.nodes.len();
        let addr = node_addr(i);
        let config = DhtConfig {
            bootstrap,
            ..config
        };
        let dht = Dht::new(config, self.now, self.rng.gen());
        self.push(addr, Behavior::Honest(Box::new(dht)))
    }

    pub fn add_liar(&mut self, victims: Vec<SocketAddr>) -> usize {
        let addr = node_addr(self.nodes.len());
        let liar = Liar::new(addr, victims, self.rng.gen(), self.now);
        self.push(addr, Behavior::Liar(Box::new(liar)))
    }

    fn push(&mut self, addr: SocketAddr, behavior: Behavior) -> usize {
        let i = self.nodes.len();
        self.nodes.push(SimNode {
            addr,
            behavior,
            events: Vec::new(),
            received: 0,
        });
        self.by_addr.insert(addr, i);
        self.armed.push(None);
        self.flush(i);
        i
    }

    pub fn dht_mut(&mut self, i: usize) -> &mut Dht {
        match &mut self.nodes[i].behavior {
            Behavior::Honest(d) => d,
            Behavior::Liar(_) => panic!("node {i} is a liar"),
        }
    }

    /// Runs `f` on node `i`'s DHT now, then plays the driver.
    pub fn with_dht(&mut self, i: usize, f: impl FnOnce(&mut Dht, Instant)) {
        let now = self.now;
        f(self.dht_mut(i), now);
        self.flush(i);
    }

    /// Sends a datagram with any source address (liars forge them).
    pub fn send_raw(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        if self.spy == Some((from, to)) {
            self.spied += 1;
        }
        if self.rng.gen_bool(self.loss) {
            self.lost += 1;
            return;
        }
        let (lo, hi) = self.latency_ms;
        let at = self.now + Duration::from_millis(self.rng.gen_range(lo..=hi));
        self.seq += 1;
        self.packets.push(Reverse((at, self.seq)));
        self.in_flight.insert(self.seq, Packet { from, to, bytes });
    }

    /// Drains node `i`'s outputs and re-arms its timer.
    fn flush(&mut self, i: usize) {
        let now = self.now;
        let from = self.nodes[i].addr;
        let mut sends = Vec::new();
        let node = &mut self.nodes[i];
        let next = match &mut node.behavior {
            Behavior::Honest(dht) => {
                while let Some((to, bytes)) = dht.poll_transmit() {
                    sends.push((from, to, bytes));
                }
                while let Some(e) = dht.poll_event() {
                    node.events.push((now, e));
                }
                dht.poll_timeout()
            }
            Behavior::Liar(l) => {
                sends.append(&mut l.out);
                Some(l.next_flood)
            }
        };
        for (from, to, bytes) in sends {
            self.send_raw(from, to, bytes);
        }
        if let Some(t) = next {
            let t = t.max(now);
            if self.armed[i] != Some(t) {
                self.armed[i] = Some(t);
                self.timers.push(Reverse((t, i)));
            }
        }
    }

    /// Runs events until `end` (virtual).
    pub fn run_until(&mut self, end: Instant) {
        loop {
            let next_packet = self.packets.peek().map(|Reverse((t, _))| *t);
            let next_timer = self.timers.peek().map(|Reverse((t, _))| *t);
            let t = match (next_packet, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if t > end {
                break;
            }
            self.now = t;
            if next_packet == Some(t) {
                let Some(Reverse((_, seq))) = self.packets.pop() else {
                    break;
                };
                let Some(p) = self.in_flight.remove(&seq) else {
                    continue;
                };
                let Some(&i) = self.by_addr.get(&p.to) else {
                    continue;
                };
                self.delivered += 1;
                self.nodes[i].received += 1;
                match &mut self.nodes[i].behavior {
                    Behavior::Honest(dht) => dht.handle_packet(p.from, &p.bytes, t),
                    Behavior::Liar(l) => l.handle_packet(p.from, &p.bytes, t),
                }
                self.flush(i);
            } else {
                let Some(Reverse((_, i))) = self.timers.pop() else {
                    break;
                };
                if self.armed[i] != Some(t) {
                    continue;
                }
                self.armed[i] = None;
                match &mut self.nodes[i].behavior {
                    Behavior::Honest(dht) => dht.handle_timeout(t),
                    Behavior::Liar(l) => l.flood(t),
                }
                self.flush(i);
            }
        }
        self.now = self.now.max(end);
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    /// Runs until `pred` holds, checking every 100 ms, for at most `max`.
    pub fn run_until_pred(&mut self, max: Duration, mut pred: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + max;
        while self.now < end {
            if pred(self) {
                return true;
            }
            self.run_for(Duration::from_millis(100));
        }
        pred(self)
    }
}

/// A node that lies: it answers every find_node and get_peers with eight
/// made-up nodes right next to the target (nonexistent addresses, or its
/// own IP on other ports) and made-up peers; every second it pings honest
/// nodes under fresh ids (a Sybil flood from one IP), announces with forged
/// tokens, and replays tokens it got with a forged source address.
pub struct Liar {
    pub addr: SocketAddr,
    id: NodeId,
    rng: StdRng,
    victims: Vec<SocketAddr>,
    /// The id we last showed each victim, to answer its pings under it.
    shown: HashMap<SocketAddr, NodeId>,
    pub out: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    pub next_flood: Instant,
    pub spoofed_sent: u64,
}

/// Where the liar's made-up nodes and peers live: nowhere.
pub fn is_fake_ip(a: &SocketAddr) -> bool {
    matches!(a.ip(), std::net::IpAddr::V4(v4) if v4.octets()[0] == 45)
}

impl Liar {
    fn new(addr: SocketAddr, victims: Vec<SocketAddr>, seed: u64, now: Instant) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Liar {
            addr,
            id: NodeId::random(&mut rng),
            rng,
            victims,
            shown: HashMap::new(),
            out: Vec::new(),
            next_flood: now + Duration::from_secs(1),
            spoofed_sent: 0,
        }
    }

    fn fake_addr(&mut self) -> SocketAddr {
        if self.rng.gen_bool(0.5) {
            SocketAddr::from(([45, self.rng.gen(), self.rng.gen(), self.rng.gen()], 6881))
        } else {
            SocketAddr::new(self.addr.ip(), self.rng.gen_range(1024..65535))
        }
    }

    fn fakes_near(&mut self, target: &NodeId) -> Vec<NodeInfo> {
        (0..8)
            .map(|_| {
                let mut id = *target;
                for b in &mut id.0[12..] {
                    *b = self.rng.gen();
                }
                NodeInfo {
                    id,
                    addr: self.fake_addr(),
                }
            })
            .collect()
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, m: Message) {
        self.out.push((from, to, m.encode()));
    }

    fn query(&mut self, to: SocketAddr, q: Query) {
        let m = Message {
            tid: self.rng.gen::<[u8; 2]>().to_vec(),
            version: None,
            read_only: false,
            ip: None,
            body: Body::Query(q),
        };
        self.send(self.addr, to, m);
    }

    fn handle_packet(&mut self, from: SocketAddr, bytes: &[u8], _now: Instant) {
        let Ok(m) = decode(bytes) else { return };
        match m.body {
            Body::Query(q) => {
                let id = self.shown.get(&from).copied().unwrap_or(self.id);
                let mut r = Response::id_only(id);
                match q {
                    Query::FindNode { target, .. } => r.nodes = self.fakes_near(&target),
                    Query::GetPeers { info_hash, .. } => {
                        r.nodes = self.fakes_near(&NodeId(info_hash.0));
                        r.values = (0..5).map(|_| self.fake_addr()).collect();
                        r.token = Some(b"liar".to_vec());
                    }
                    _ => {}
                }
                let reply = Message {
                    tid: m.tid,
                    version: None,
                    read_only: false,
                    ip: None,
                    body: Body::Response(r),
                };
                self.send(self.addr, from, reply);
            }
            Body::Response(r) => {
                // A token for our own IP: replay it from a forged source.
                if let Some(token) = r.token {
                    let forged = SocketAddr::from(([45, 1, 2, self.rng.gen()], 6881));
                    let q = Query::AnnouncePeer {
                        id: self.id,
                        info_hash: InfoHash(self.rng.gen()),
                        port: 6881,
                        implied_port: false,
                        token,
                    };
                    let m = Message {
                        tid: b"sp".to_vec(),
                        version: None,
                        read_only: false,
                        ip: None,
                        body: Body::Query(q),
                    };
                    self.spoofed_sent += 1;
                    self.send(forged, from, m);
                }
            }
            Body::Error(_) => {}
        }
    }

    fn flood(&mut self, now: Instant) {
        self.next_flood = now + Duration::from_secs(1);
        for _ in 0..5 {
            let v = self.victims[self.rng.gen_range(0..self.victims.len())];
            let sybil = NodeId::random(&mut self.rng);
            let id = *self.shown.entry(v).or_insert(sybil);
            self.query(v, Query::Ping { id });
        }
        for _ in 0..2 {
            let v = self.victims[self.rng.gen_range(0..self.victims.len())];
            let info_hash = InfoHash(self.rng.gen());
            self.query(
                v,
                Query::GetPeers {
                    id: self.id,
                    info_hash,
                    want: None,
                },
            );
            let token = self.rng.gen::<[u8; 8]>().to_vec();
            self.query(
                v,
                Query::AnnouncePeer {
                    id: self.id,
                    info_hash,
                    port: 1,
                    implied_port: false,
                    token,
                },
            );
        }
    }
}
