//! One [`Dht`] driven by hand: what it answers, what it refuses, its
//! limits, and a lookup against scripted nodes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use essaim_core::InfoHash;
use essaim_dht::krpc::{decode, error_code, Body, Message, NodeInfo, Query, Response};
use essaim_dht::{Dht, DhtConfig, DhtEvent, NodeId};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn encode(tid: &[u8], q: Query) -> Vec<u8> {
    Message {
        tid: tid.to_vec(),
        version: None,
        read_only: false,
        ip: None,
        body: Body::Query(q),
    }
    .encode()
}

fn respond(tid: &[u8], r: Response) -> Vec<u8> {
    Message {
        tid: tid.to_vec(),
        version: None,
        read_only: false,
        ip: None,
        body: Body::Response(r),
    }
    .encode()
}

fn drain(dht: &mut Dht) -> Vec<(SocketAddr, Message)> {
    let mut out = Vec::new();
    while let Some((to, bytes)) = dht.poll_transmit() {
        out.push((to, decode(&bytes).expect("we send valid KRPC")));
    }
    out
}

fn replies_to(out: &[(SocketAddr, Message)], to: SocketAddr) -> Vec<&Message> {
    out.iter()
        .filter(|(a, m)| *a == to && !matches!(m.body, Body::Query(_)))
        .map(|(_, m)| m)
        .collect()
}

fn node(now: Instant) -> Dht {
    Dht::new(
        DhtConfig {
            id: Some(NodeId([0x42; 20])),
            ..DhtConfig::default()
        },
        now,
        1,
    )
}

fn remote_id(i: u8) -> NodeId {
    NodeId([i; 20])
}

fn response(m: &Message) -> &Response {
    match &m.body {
        Body::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

#[test]
fn answers_ping_and_adds_the_querier_after_it_answers_our_ping() {
    let t0 = Instant::now();
    let mut dht = node(t0);
    let from = addr("1.2.3.4:1000");
    dht.handle_packet(from, &encode(b"p1", Query::Ping { id: remote_id(1) }), t0);
    let out = drain(&mut dht);
    let reply = replies_to(&out, from)[0];
    assert_eq!(reply.tid, b"p1");
    assert_eq!(reply.ip, Some(from), "BEP 42 ip field");
    assert_eq!(response(reply).id, dht.id());
    // It pings the unknown querier back; the answer puts it in the table.
    let (_, ping) = out
        .iter()
        .find(|(a, m)| *a == from && matches!(m.body, Body::Query(Query::Ping { .. })))
        .expect("ping back");
    assert_eq!(dht.table().len(), 0);
    dht.handle_packet(
        from,
        &respond(&ping.tid, Response::id_only(remote_id(1))),
        t0,
    );
    assert_eq!(dht.routing_table(), vec![(remote_id(1), from)]);
    // A response from another address with the same transaction id is ignored.
    let out = {
        dht.handle_packet(from, &encode(b"p2", Query::Ping { id: remote_id(1) }), t0);
        drain(&mut dht)
    };
    assert!(
        out.iter().all(|(_, m)| !matches!(m.body, Body::Query(_))),
        "known: no ping"
    );
}

#[test]
fn find_node_returns_the_closest() {
    let t0 = Instant::now();
    let mut dht = node(t0);
    // Put 20 nodes in the table through answered pings.
    for i in 1..=20u8 {
        let a = SocketAddr::from(([5, 0, 0, i], 6881));
        dht.add_node(a, t0);
        let out = drain(&mut dht);
        let (_, q) = &out[0];
        dht.handle_packet(a, &respond(&q.tid, Response::id_only(remote_id(i))), t0);
    }
    assert!(dht.table().len() >= 8);
    let from = addr("9.9.9.9:9");
    let target = remote_id(3);
    dht.handle_packet(
        from,
        &encode(
            b"f",
            Query::FindNode {
                id: remote_id(200),
                target,
                want: None,
            },
        ),
        t0,
    );
    let out = drain(&mut dht);
    let r = response(replies_to(&out, from)[0]);
    assert_eq!(r.nodes.len(), 8);
    assert_eq!(r.nodes[0].id, target, "the target itself first");
    let mut sorted = r.nodes.clone();
    sorted.sort_by_key(|n| n.id.distance(&target));
    assert_eq!(sorted, r.nodes);
    assert!(r.token.is_none() && r.values.is_empty());
}

#[test]
fn announce_needs_a_token_for_the_same_ip() {
    let t0 = Instant::now();
    let mut dht = node(t0);
    let h = InfoHash([7; 20]);
    let a = addr("1.1.1.1:1111");
    let b = addr("2.2.2.2:2222");
    let get = |id| {
        encode(
            b"g",
            Query::GetPeers {
                id,
                info_hash: h,
                want: None,
            },
        )
    };
    dht.handle_packet(a, &get(remote_id(1)), t0);
    let out = drain(&mut dht);
    let token = response(replies_to(&out, a)[0])
        .token
        .clone()
        .expect("token");
    let announce = |token: &[u8], port, implied_port| {
        encode(
            b"a",
            Query::AnnouncePeer {
                id: remote_id(1),
                info_hash: h,
                port,
                implied_port,
                token: token.to_vec(),
            },
        )
    };
    // B presents A's token: refused with 203. So does a forged token.
    dht.handle_packet(b, &announce(&token, 5000, false), t0);
    dht.handle_packet(a, &announce(b"forged!!", 5000, false), t0);
    let out = drain(&mut dht);
    for m in replies_to(&out, b).into_iter().chain(replies_to(&out, a)) {
        assert!(
            matches!(&m.body, Body::Error(e) if e.code == error_code::PROTOCOL),
            "{m:?}"
        );
    }
    assert_eq!(dht.stats().announces_refused, 2);
    // A with its own token: stored; implied_port takes the source port.
    dht.handle_packet(a, &announce(&token, 5000, false), t0);
    dht.handle_packet(a, &announce(&token, 0, true), t0);
    drain(&mut dht);
    dht.handle_packet(b, &get(remote_id(2)), t0);
    let out = drain(&mut dht);
    let r = response(replies_to(&out, b)[0]);
    let mut values = r.values.clone();
    values.sort();
    assert_eq!(values, vec![addr("1.1.1.1:1111"), addr("1.1.1.1:5000")]);
    assert!(r.nodes.is_empty(), "values, not nodes (BEP 5)");
    assert!(r.token.is_some());
    // Tokens live 5 to 10 minutes.
    let later = t0 + Duration::from_secs(11 * 60);
    dht.handle_timeout(later);
    drain(&mut dht);
    dht.handle_packet(a, &announce(&token, 5000, false), later);
    let out = drain(&mut dht);
    assert!(matches!(&replies_to(&out, a)[0].body, Body::Error(e) if e.code == 203));
}

#[test]
fn replies_are_rate_limited_per_ip() {
    let t0 = Instant::now();
    let mut dht = node(t0);
    let flooder = addr("6.6.6.6:666");
    let mut replies = 0;
    // 1,000 queries per second for 10 s.
    for ms in 0..10_000u64 {
        let now = t0 + Duration::from_millis(ms);
        let tid = (ms as u32).to_be_bytes();
        dht.handle_packet(
            flooder,
            &encode(&tid, Query::Ping { id: remote_id(6) }),
            now,
        );
        replies += replies_to(&drain(&mut dht), flooder).len();
    }
    let cfg = DhtConfig::default();
    let cap = (cfg.reply_burst_per_ip + 10 * cfg.replies_per_ip) as usize;
    assert!(
        replies <= cap && replies >= cap - 2,
        "{replies} replies, cap {cap}"
    );
    assert_eq!(dht.stats().replies_limited as usize, 10_000 - replies);
    // Someone else is still served.
    let other = addr("7.7.7.7:777");
    dht.handle_packet(
        other,
        &encode(b"x", Query::Ping { id: remote_id(7) }),
        t0 + Duration::from_secs(10),
    );
    assert_eq!(replies_to(&drain(&mut dht), other).len(), 1);
}

#[test]
fn replies_stay_within_four_times_the_query() {
    let t0 = Instant::now();
    let mut dht = node(t0);
    let h = InfoHash([9; 20]);
    // 100 peers announce themselves.
    for i in 0..100u32 {
        let a = SocketAddr::from((std::net::Ipv4Addr::from(0x0b00_0000 + i), 6881));
        dht.handle_packet(
            a,
            &encode(
                b"g",
                Query::GetPeers {
                    id: remote_id(1),
                    info_hash: h,
                    want: None,
                },
            ),
            t0,
        );
        let out = drain(&mut dht);
        let token = response(replies_to(&out, a)[0]).token.clone().unwrap();
        let q = Query::AnnouncePeer {
            id: remote_id(1),
            info_hash: h,
            port: 6881,
            implied_port: false,
            token,
        };
        dht.handle_packet(a, &encode(b"a", q), t0);
        drain(&mut dht);
    }
    assert_eq!(dht.peer_store().num_peers(), 100);
    let from = addr("12.0.0.1:1");
    let query = encode(
        b"g",
        Query::GetPeers {
            id: remote_id(2),
            info_hash: h,
            want: None,
        },
    );
    dht.handle_packet(from, &query, t0);
    let out: Vec<(SocketAddr, Vec<u8>)> = std::iter::from_fn(|| dht.poll_transmit()).collect();
    let reply = &out.iter().find(|(a, _)| *a == from).unwrap().1;
    assert!(
        reply.len() <= 4 * query.len(),
        "{} > 4 × {}",
        reply.len(),
        query.len()
    );
    let r = decode(reply).unwrap();
    let n = response(&r).values.len();
    assert!((20..100).contains(&n), "{n} values");
}

#[test]
fn ignores_what_it_must() {
    let t0 = Instant::now();
    let mut dht = node(t0);
    let ping = |id| encode(b"p", Query::Ping { id });
    // Port 0, our own id, loopback and private addresses, multicast.
    dht.handle_packet(addr("1.2.3.4:0"), &ping(remote_id(1)), t0);
    dht.handle_packet(addr("1.2.3.4:1"), &ping(dht.id()), t0);
    dht.handle_packet(addr("127.0.0.1:1"), &ping(remote_id(1)), t0);
    dht.handle_packet(addr("192.168.1.1:1"), &ping(remote_id(1)), t0);
    dht.handle_packet(addr("224.0.0.1:1"), &ping(remote_id(1)), t0);
    // IPv6 to an IPv4 node.
    dht.handle_packet(addr("[2001:db8::1]:1"), &ping(remote_id(1)), t0);
    // Responses nobody asked for.
    dht.handle_packet(
        addr("1.2.3.4:1"),
        &respond(b"zzzz", Response::id_only(remote_id(1))),
        t0,
    );
    assert!(drain(&mut dht).is_empty());
    assert!(dht.table().is_empty());
    // A read-only querier (BEP 43) is answered but not pinged back.
    let ro = Message {
        tid: b"r".to_vec(),
        version: None,
        read_only: true,
        ip: None,
        body: Body::Query(Query::Ping { id: remote_id(3) }),
    };
    dht.handle_packet(addr("3.3.3.3:3"), &ro.encode(), t0);
    let out = drain(&mut dht);
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0].1.body, Body::Response(_)));
    // A read-only node answers nothing, and flags its queries.
    let mut ro_node = Dht::new(
        DhtConfig {
            read_only: true,
            bootstrap: vec![addr("8.8.8.8:8")],
            ..DhtConfig::default()
        },
        t0,
        2,
    );
    let out = drain(&mut ro_node);
    assert!(out
        .iter()
        .all(|(_, m)| m.read_only && matches!(m.body, Body::Query(_))));
    ro_node.handle_packet(addr("3.3.3.3:3"), &ping(remote_id(3)), t0);
    assert!(drain(&mut ro_node).is_empty());
}

#[test]
fn bad_queries_get_203_and_unknown_methods_204() {
    let t0 = Instant::now();
    let mut dht = node(t0);
    let from = addr("4.4.4.4:4");
    dht.handle_packet(from, b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe", t0);
    dht.handle_packet(
        from,
        b"d1:ad2:id20:abcdefghij0123456789e1:q3:put1:t2:bb1:y1:qe",
        t0,
    );
    dht.handle_packet(from, b"not bencode", t0);
    let out = drain(&mut dht);
    let codes: Vec<(Vec<u8>, i64)> = out
        .iter()
        .map(|(_, m)| match &m.body {
            Body::Error(e) => (m.tid.clone(), e.code),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(codes, vec![(b"aa".to_vec(), 203), (b"bb".to_vec(), 204)]);
}

/// A lookup against three scripted nodes: bootstrap, closer nodes, peers,
/// then announce_peer with the tokens they gave.
#[test]
fn get_peers_lookup_and_announce() {
    let t0 = Instant::now();
    let router = addr("20.0.0.1:1");
    let mut dht = Dht::new(
        DhtConfig {
            bootstrap: vec![router],
            ..DhtConfig::default()
        },
        t0,
        3,
    );
    let h = InfoHash([0x10; 20]);
    let near = |b: u8| {
        let mut id = NodeId(h.0);
        id.0[19] ^= b;
        id
    };
    let n1 = NodeInfo {
        id: near(1),
        addr: addr("20.0.0.2:2"),
    };
    let n2 = NodeInfo {
        id: near(2),
        addr: addr("20.0.0.3:3"),
    };
    // Bootstrap: the router knows n1 and n2.
    let out = drain(&mut dht);
    assert_eq!(out.len(), 1);
    let (to, q) = &out[0];
    assert_eq!(*to, router);
    assert!(matches!(&q.body, Body::Query(Query::FindNode { target, .. }) if *target == dht.id()));
    let mut r = Response::id_only(remote_id(0x99));
    r.nodes = vec![n1, n2];
    dht.handle_packet(router, &respond(&q.tid, r), t0);
    // n1 and n2 are asked for our id; n1 answers, n2 never does.
    let out = drain(&mut dht);
    let asked: Vec<SocketAddr> = out.iter().map(|(a, _)| *a).collect();
    assert_eq!(asked.len(), 2);
    let q1 = &out.iter().find(|(a, _)| *a == n1.addr).unwrap().1;
    dht.handle_packet(n1.addr, &respond(&q1.tid, Response::id_only(n1.id)), t0);
    let mut now = t0;
    while !matches!(dht.poll_event(), Some(DhtEvent::Bootstrapped { .. })) {
        now += Duration::from_millis(500);
        assert!(now < t0 + Duration::from_secs(10), "bootstrap never ends");
        dht.handle_timeout(now);
        drain(&mut dht);
    }
    assert_eq!(dht.table().len(), 2, "router and n1; n2 never answered");
    // get_peers with announce.
    dht.get_peers(h, Some(7777), now);
    let out = drain(&mut dht);
    let mut tokens = 0u8;
    for (to, q) in &out {
        assert!(matches!(q.body, Body::Query(Query::GetPeers { info_hash, .. }) if info_hash == h));
        let id = if *to == n1.addr {
            n1.id
        } else {
            remote_id(0x99)
        };
        let mut r = Response::id_only(id);
        tokens += 1;
        r.token = Some(vec![tokens]);
        if *to == n1.addr {
            r.values = vec![addr("30.0.0.1:3000")];
        }
        dht.handle_packet(*to, &respond(&q.tid, r), now);
    }
    let events: Vec<DhtEvent> = std::iter::from_fn(|| dht.poll_event()).collect();
    assert!(
        events.contains(&DhtEvent::Peers {
            info_hash: h,
            peers: vec![addr("30.0.0.1:3000")]
        }),
        "{events:?}"
    );
    let done = events.iter().find_map(|e| match e {
        DhtEvent::LookupDone {
            stats, announced, ..
        } => Some((*stats, *announced)),
        _ => None,
    });
    let (stats, announced) = done.expect("lookup done");
    assert_eq!((stats.queries, stats.responses, stats.peers), (2, 2, 1));
    assert_eq!(announced, 2);
    let announces = drain(&mut dht);
    assert_eq!(announces.len(), 2);
    for (to, m) in announces {
        match m.body {
            Body::Query(Query::AnnouncePeer {
                port,
                token,
                info_hash,
                ..
            }) => {
                assert_eq!((port, info_hash), (7777, h));
                let expect = if to == n1.addr { 1 } else { 2 };
                assert_eq!(token.len(), 1);
                assert!(token[0] == expect || token[0] == 3 - expect);
            }
            other => panic!("{other:?}"),
        }
    }
    // The search comes back 15 to 30 minutes later.
    let mut t = now;
    let mut rerun = None;
    while t < now + Duration::from_secs(31 * 60) {
        t += Duration::from_secs(5);
        dht.handle_timeout(t);
        if drain(&mut dht)
            .iter()
            .any(|(_, m)| matches!(m.body, Body::Query(Query::GetPeers { .. })))
        {
            rerun = Some(t - now);
            break;
        }
    }
    let rerun = rerun.expect("search repeated");
    assert!(
        rerun >= Duration::from_secs(15 * 60) && rerun <= Duration::from_secs(30 * 60 + 5),
        "{rerun:?}"
    );
}

/// An IPv6 node (BEP 32) answers with `nodes6`, and by `want` with both
/// lists; IPv4 traffic is not for it.
#[test]
fn ipv6_node_answers_with_nodes6() {
    let t0 = Instant::now();
    let mut dht = Dht::new(
        DhtConfig {
            ipv6: true,
            ..DhtConfig::default()
        },
        t0,
        4,
    );
    for i in 1..=3u16 {
        let a = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, i], 6881));
        dht.add_node(a, t0);
        let out = drain(&mut dht);
        dht.handle_packet(
            a,
            &respond(&out[0].1.tid, Response::id_only(remote_id(i as u8))),
            t0,
        );
    }
    assert_eq!(dht.table().len(), 3);
    let from = addr("[2001:db8::99]:1");
    let q = |want| {
        encode(
            b"f",
            Query::FindNode {
                id: remote_id(50),
                target: remote_id(1),
                want,
            },
        )
    };
    dht.handle_packet(from, &q(None), t0);
    let out = drain(&mut dht);
    let r = response(replies_to(&out, from)[0]);
    assert_eq!((r.nodes.len(), r.nodes6.len()), (0, 3));
    dht.handle_packet(
        from,
        &q(Some(essaim_dht::krpc::Want {
            n4: true,
            n6: false,
        })),
        t0,
    );
    let out = drain(&mut dht);
    let r = response(replies_to(&out, from)[0]);
    assert_eq!(
        (r.nodes.len(), r.nodes6.len()),
        (0, 0),
        "no IPv4 nodes in an IPv6 table"
    );
    dht.handle_packet(addr("1.2.3.4:5"), &q(None), t0);
    assert!(drain(&mut dht).is_empty());
}

/// With a known external IP the id follows BEP 42; the `ip` field of
/// responses is counted toward our external address.
#[test]
fn bep42_id_and_external_ip_votes() {
    let t0 = Instant::now();
    let ip: std::net::IpAddr = "124.31.75.21".parse().unwrap();
    let mut dht = Dht::new(
        DhtConfig {
            external_ip: Some(ip),
            ..DhtConfig::default()
        },
        t0,
        5,
    );
    assert!(dht.id().is_bep42_valid(ip));
    assert_eq!(dht.external_ip(), None);
    let a = addr("9.9.9.9:9");
    dht.add_node(a, t0);
    let out = drain(&mut dht);
    let reply = Message {
        tid: out[0].1.tid.clone(),
        version: None,
        read_only: false,
        ip: Some(addr("124.31.75.21:6881")),
        body: Body::Response(Response::id_only(remote_id(9))),
    };
    dht.handle_packet(a, &reply.encode(), t0);
    assert_eq!(dht.external_ip(), Some(ip));
}
