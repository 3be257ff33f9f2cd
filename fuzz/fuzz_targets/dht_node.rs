//! A whole DHT node (`essaim_dht::Dht`) driven by arbitrary bytes, the way
//! its driver drives it (see the contract in `essaim-dht/src/node.rs`).
//!
//! The first byte picks the configuration (read-only, local addresses
//! allowed, a bootstrap node). Every following byte is an operation:
//! - a raw datagram from one of a few addresses (public, same /24, local,
//!   port 0, IPv6);
//! - a well-formed query to us (ping, find_node, get_peers, announce_peer
//!   with a token we handed out or a made-up one);
//! - an answer to one of the queries the node sent (its transaction id,
//!   from its address or another, with the expected id or not, with nodes,
//!   peers and a token from the input), or an error for it;
//! - time passing (`handle_timeout`), `get_peers` with or without an
//!   announce, `stop_get_peers`, `add_node`.
//!
//! After every step the transmits and events are drained, checking: every
//! datagram we send is valid KRPC, goes to an address the node would talk
//! to, and a reply goes only to the sender of the query being handled,
//! within `max_reply_factor` times its size (no amplification), never from
//! a read-only node; our queries carry `ro` exactly when read-only; peers
//! reported are for a search we started and are addresses the node would
//! talk to; the routing table stays within 160 buckets of `K`.
#![no_main]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use essaim_core::InfoHash;
use essaim_dht::krpc::{self, Body, KrpcError, Message, NodeInfo, Query, Response};
use essaim_dht::{Dht, DhtConfig, DhtEvent, NodeId, K};
use libfuzzer_sys::fuzz_target;

#[path = "common/input.rs"]
mod input;
use input::Input;

/// A node id: one of a few fixed ones, or 20 bytes of input.
fn node_id(input: &mut Input<'_>) -> NodeId {
    let k = input.byte_or0();
    if k < 0xf0 {
        let mut id = [k; 20];
        id[19] = k.wrapping_mul(37);
        NodeId(id)
    } else {
        let mut id = [0u8; 20];
        let bytes = input.take(20);
        id[..bytes.len()].copy_from_slice(bytes);
        NodeId(id)
    }
}

/// Addresses packets come from and nodes are said to be at.
fn addr(k: u8) -> SocketAddr {
    let port = 6881 + u16::from(k & 3);
    let ip = match (k >> 2) % 8 {
        0 => IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)),
        1 => IpAddr::V4(Ipv4Addr::new(1, 2, 3, 5)),
        2 => IpAddr::V4(Ipv4Addr::new(5, 6, 7, 8)),
        3 => IpAddr::V4(Ipv4Addr::new(9, 9, 9, k)),
        4 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        5 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        _ => IpAddr::V4(Ipv4Addr::new(8, 8, 4, k)),
    };
    let port = if k == 0xff { 0 } else { port };
    SocketAddr::new(ip, port)
}

fn info_hash(k: u8) -> InfoHash {
    InfoHash([k % 4; 20])
}

/// A query the node sent and we may answer.
struct Sent {
    to: SocketAddr,
    tid: Vec<u8>,
    method: &'static str,
}

struct Driver {
    dht: Dht,
    read_only: bool,
    now: Instant,
    sent: Vec<Sent>,
    /// Tokens the node gave each address in get_peers replies.
    tokens: Vec<(SocketAddr, Vec<u8>)>,
    searched: BTreeSet<InfoHash>,
}

impl Driver {
    /// A datagram from `from`, then the outputs drained and checked.
    fn packet(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.dht.handle_packet(from, bytes, self.now);
        self.drain(Some((from, bytes.len())));
    }

    fn drain(&mut self, query: Option<(SocketAddr, usize)>) {
        while let Some((to, bytes)) = self.dht.poll_transmit() {
            assert!(self.dht.addr_ok(&to), "datagram to {to}");
            let msg = krpc::decode(&bytes).expect("the node sends valid KRPC");
            match &msg.body {
                Body::Query(q) => {
                    assert_eq!(msg.read_only, self.read_only, "`ro` flag");
                    assert_eq!(msg.tid.len(), 4);
                    if self.sent.len() >= 64 {
                        self.sent.remove(0);
                    }
                    self.sent.push(Sent {
                        to,
                        tid: msg.tid.clone(),
                        method: q.method(),
                    });
                }
                Body::Response(_) | Body::Error(_) => {
                    assert!(!self.read_only, "a read-only node replied");
                    let Some((from, len)) = query else {
                        panic!("a reply to {to} with no query being handled");
                    };
                    assert_eq!(to, from, "reply to someone else than the querier");
                    assert!(
                        bytes.len() <= len * 4,
                        "reply of {} bytes to a query of {len}",
                        bytes.len()
                    );
                    if let Body::Response(Response { token: Some(t), .. }) = &msg.body {
                        if self.tokens.len() >= 16 {
                            self.tokens.remove(0);
                        }
                        self.tokens.push((to, t.clone()));
                    }
                }
            }
        }
        while let Some(ev) = self.dht.poll_event() {
            if let DhtEvent::Peers { info_hash, peers } = ev {
                assert!(self.searched.contains(&info_hash), "peers for {info_hash}");
                assert!(!peers.is_empty());
                for p in &peers {
                    assert!(self.dht.addr_ok(p), "peer {p} reported");
                }
            }
        }
        let table = self.dht.table();
        assert!(table.num_buckets() <= 160);
        assert!(table.bucket_sizes().iter().all(|&n| n <= K));
        assert!(table.len() <= 160 * K);
    }
}

fn nodes(input: &mut Input<'_>) -> Vec<NodeInfo> {
    (0..input.byte_or0() % 10)
        .map(|_| {
            let a = input.byte_or0();
            NodeInfo {
                id: node_id(input),
                addr: addr(a),
            }
        })
        .filter(|n| n.addr.is_ipv4())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let setup = input.byte_or0();
    let read_only = setup & 1 != 0;
    let config = DhtConfig {
        id: Some(NodeId([0x55; 20])),
        bootstrap: if setup & 2 != 0 {
            vec![addr(0), addr(9)]
        } else {
            Vec::new()
        },
        read_only,
        allow_local: setup & 4 != 0,
        nodes: if setup & 8 != 0 {
            vec![
                (NodeId([0x77; 20]), addr(8)),
                (NodeId([0x33; 20]), addr(12)),
            ]
        } else {
            Vec::new()
        },
        ..DhtConfig::default()
    };
    let now = Instant::now();
    let mut d = Driver {
        dht: Dht::new(config, now, u64::from(setup)),
        read_only,
        now,
        sent: Vec::new(),
        tokens: Vec::new(),
        searched: BTreeSet::new(),
    };
    d.drain(None);

    while let Some(op) = input.byte() {
        match op % 8 {
            0 => {
                let from = addr(input.byte_or0());
                let len = usize::from(input.byte_or0()) * 2;
                let bytes = input.take(len);
                d.packet(from, bytes);
            }
            1 | 2 => {
                // Answer one of the node's queries.
                let pick = usize::from(input.byte_or0());
                let how = input.byte_or0();
                if d.sent.is_empty() {
                    continue;
                }
                let s = d.sent.swap_remove(pick % d.sent.len());
                let from = if how & 1 == 0 { s.to } else { addr(input.byte_or0()) };
                let body = if op % 8 == 2 && how & 2 != 0 {
                    Body::Error(KrpcError {
                        code: 201,
                        message: b"no".to_vec(),
                    })
                } else {
                    let mut r = Response::id_only(node_id(&mut input));
                    if s.method == "find_node" || s.method == "get_peers" {
                        r.nodes = nodes(&mut input);
                    }
                    if s.method == "get_peers" {
                        if how & 4 != 0 {
                            r.values = (0..input.byte_or0() % 6).map(|_| addr(input.byte_or0())).collect();
                        }
                        r.token = Some(vec![b't', input.byte_or0()]);
                    }
                    Body::Response(r)
                };
                let msg = Message {
                    tid: s.tid,
                    version: None,
                    read_only: false,
                    ip: (how & 8 != 0).then(|| addr(input.byte_or0())),
                    body,
                };
                d.packet(from, &msg.encode());
            }
            3 => {
                // A query to us.
                let from = addr(input.byte_or0());
                let kind = input.byte_or0();
                let id = node_id(&mut input);
                let q = match kind % 4 {
                    0 => Query::Ping { id },
                    1 => Query::FindNode {
                        id,
                        target: node_id(&mut input),
                        want: None,
                    },
                    2 => Query::GetPeers {
                        id,
                        info_hash: info_hash(input.byte_or0()),
                        want: None,
                    },
                    _ => {
                        let token = d
                            .tokens
                            .iter()
                            .rev()
                            .find(|(a, _)| *a == from || kind & 4 != 0)
                            .map(|(_, t)| t.clone())
                            .unwrap_or_else(|| b"made up".to_vec());
                        Query::AnnouncePeer {
                            id,
                            info_hash: info_hash(input.byte_or0()),
                            port: u16::from(input.byte_or0()) + 1,
                            implied_port: kind & 8 != 0,
                            token,
                        }
                    }
                };
                let msg = Message {
                    tid: vec![b'q', input.byte_or0()],
                    version: None,
                    read_only: kind & 0x80 != 0,
                    ip: None,
                    body: Body::Query(q),
                };
                d.packet(from, &msg.encode());
            }
            4 => {
                let step = u64::from(input.byte_or0());
                d.now += Duration::from_millis(step * step * 8);
                d.dht.handle_timeout(d.now);
                d.drain(None);
            }
            5 => {
                // Jump to the node's next timer.
                if let Some(at) = d.dht.poll_timeout() {
                    d.now = d.now.max(at);
                }
                d.dht.handle_timeout(d.now);
                d.drain(None);
            }
            6 => {
                let k = input.byte_or0();
                let ih = info_hash(k);
                if k & 0x80 != 0 {
                    d.dht.stop_get_peers(&ih);
                } else {
                    d.searched.insert(ih);
                    let port = (k & 0x40 != 0).then_some(6881);
                    d.dht.get_peers(ih, port, d.now);
                }
                d.drain(None);
            }
            _ => {
                let a = addr(input.byte_or0());
                d.dht.add_node(a, d.now);
                d.drain(None);
            }
        }
    }
});
