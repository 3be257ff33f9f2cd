//! The KRPC codec against the example packets of BEP 5, hostile packets,
//! and property tests (never a panic; encode then decode is the identity).

use std::net::SocketAddr;

use essaim_core::InfoHash;
use essaim_dht::krpc::{
    decode, decode_nodes, encode_nodes, Body, ErrorKind, KrpcError, Message, NodeInfo, Query,
    Response, Want, MAX_PACKET_LEN,
};
use essaim_dht::NodeId;
use proptest::prelude::*;

fn id(s: &[u8; 20]) -> NodeId {
    NodeId(*s)
}

fn msg(body: Body) -> Message {
    Message {
        tid: b"aa".to_vec(),
        version: None,
        read_only: false,
        ip: None,
        body,
    }
}

/// Decodes `wire`, compares with `m`, and encodes `m` back to `wire`.
fn both_ways(wire: &[u8], m: Message) {
    assert_eq!(
        decode(wire).unwrap(),
        m,
        "{}",
        String::from_utf8_lossy(wire)
    );
    assert_eq!(
        String::from_utf8_lossy(&m.encode()),
        String::from_utf8_lossy(wire)
    );
}

#[test]
fn bep5_ping() {
    both_ways(
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        msg(Body::Query(Query::Ping {
            id: id(b"abcdefghij0123456789"),
        })),
    );
    both_ways(
        b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
        msg(Body::Response(Response::id_only(id(
            b"mnopqrstuvwxyz123456",
        )))),
    );
}

#[test]
fn bep5_find_node() {
    both_ways(
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
        msg(Body::Query(Query::FindNode {
            id: id(b"abcdefghij0123456789"),
            target: id(b"mnopqrstuvwxyz123456"),
            want: None,
        })),
    );
    // The BEP's response abbreviates `nodes` as "def456..." (9 bytes): not a
    // whole number of 26-byte entries, so it is refused.
    let e =
        decode(b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:y1:re").unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::Field { field: "nodes", .. }),
        "{e}"
    );
    assert_eq!(e.query_tid, None, "not a query: no error reply");
    // The same response with one real entry.
    let node = NodeInfo {
        id: id(b"def456def456def456de"),
        addr: "1.2.3.4:6881".parse().unwrap(),
    };
    let mut r = Response::id_only(id(b"0123456789abcdefghij"));
    r.nodes = vec![node];
    both_ways(
        b"d1:rd2:id20:0123456789abcdefghij5:nodes26:def456def456def456de\x01\x02\x03\x04\x1a\xe1e1:t2:aa1:y1:re",
        msg(Body::Response(r)),
    );
}

#[test]
fn bep5_get_peers() {
    both_ways(
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
        msg(Body::Query(Query::GetPeers {
            id: id(b"abcdefghij0123456789"),
            info_hash: InfoHash(*b"mnopqrstuvwxyz123456"),
            want: None,
        })),
    );
    // Response with peers: "axje.u" and "idhtnm" are 6-byte compact peers.
    let mut r = Response::id_only(id(b"abcdefghij0123456789"));
    r.token = Some(b"aoeusnth".to_vec());
    r.values = vec![
        SocketAddr::from(([b'a', b'x', b'j', b'e'], u16::from_be_bytes(*b".u"))),
        SocketAddr::from(([b'i', b'd', b'h', b't'], u16::from_be_bytes(*b"nm"))),
    ];
    both_ways(
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
        msg(Body::Response(r)),
    );
    // Response with closest nodes: again "def456..." is refused.
    let e = decode(
        b"d1:rd2:id20:abcdefghij01234567895:nodes9:def456...5:token8:aoeusnthe1:t2:aa1:y1:re",
    )
    .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Field { field: "nodes", .. }));
}

#[test]
fn bep5_announce_peer() {
    both_ways(
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        msg(Body::Query(Query::AnnouncePeer {
            id: id(b"abcdefghij0123456789"),
            info_hash: InfoHash(*b"mnopqrstuvwxyz123456"),
            port: 6881,
            implied_port: true,
            token: b"aoeusnth".to_vec(),
        })),
    );
    both_ways(
        b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
        msg(Body::Response(Response::id_only(id(
            b"mnopqrstuvwxyz123456",
        )))),
    );
}

#[test]
fn bep5_error() {
    both_ways(
        b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
        msg(Body::Error(KrpcError {
            code: 201,
            message: b"A Generic Error Ocurred".to_vec(),
        })),
    );
}

#[test]
fn extensions_v_ro_ip_want_nodes6() {
    let m = Message {
        tid: vec![0, 1, 2, 3],
        version: Some(b"ES\x00\x01".to_vec()),
        read_only: true,
        ip: Some("[2001:db8::1]:6881".parse().unwrap()),
        body: Body::Query(Query::FindNode {
            id: id(b"abcdefghij0123456789"),
            target: id(b"mnopqrstuvwxyz123456"),
            want: Some(Want { n4: true, n6: true }),
        }),
    };
    let wire = m.encode();
    let text = String::from_utf8_lossy(&wire);
    assert!(
        text.contains("2:roi1e") && text.contains("4:wantl2:n42:n6e"),
        "{text}"
    );
    assert_eq!(decode(&wire).unwrap(), m);
    // nodes6 and mixed IPv4/IPv6 values (BEP 32).
    let mut r = Response::id_only(id(b"abcdefghij0123456789"));
    r.nodes6 = vec![NodeInfo {
        id: id(b"zzzzzzzzzzzzzzzzzzzz"),
        addr: "[2001:db8::2]:1234".parse().unwrap(),
    }];
    r.values = vec!["1.2.3.4:5".parse().unwrap(), "[::1]:6".parse().unwrap()];
    let m = msg(Body::Response(r));
    assert_eq!(decode(&m.encode()).unwrap(), m);
    // Unknown `want` strings are ignored.
    let q = b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz1234564:wantl2:n52:n4ee1:q9:find_node1:t2:aa1:y1:qe";
    match decode(q).unwrap().body {
        Body::Query(Query::FindNode { want, .. }) => {
            assert_eq!(
                want,
                Some(Want {
                    n4: true,
                    n6: false
                })
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn strict_fields() {
    let refused: &[&[u8]] = &[
        b"le",
        b"d1:t2:aa1:y1:xe",
        b"d1:t0:1:y1:re",
        b"d1:t17:aaaaaaaaaaaaaaaaa1:y1:re",
        b"d1:ti1e1:y1:re",
        // id of 19 bytes
        b"d1:rd2:id19:abcdefghij012345678e1:t2:aa1:y1:re",
        // values entry of 5 bytes
        b"d1:rd2:id20:abcdefghij01234567896:valuesl5:axje.ee1:t2:aa1:y1:re",
        // values not a list
        b"d1:rd2:id20:abcdefghij01234567896:values6:axje.ue1:t2:aa1:y1:re",
        // token too long
        b"d1:rd2:id20:abcdefghij01234567895:token65:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaae1:t2:aa1:y1:re",
        // ip of 5 bytes
        b"d2:ip5:abcde1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re",
        // ro not an int
        b"d1:rd2:id20:abcdefghij0123456789e2:ro1:11:t2:aa1:y1:re",
        // error without message
        b"d1:eli201ee1:t2:aa1:y1:ee",
        // repeated key
        b"d1:t2:aa1:t2:bb1:y1:re",
        // trailing bytes
        b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:rexx",
    ];
    for p in refused {
        let e = decode(p).unwrap_err();
        assert_eq!(e.query_tid, None, "{}", String::from_utf8_lossy(p));
    }
    // Bad queries keep their transaction id, for a 203 (or 204) reply.
    let bad_queries: &[(&[u8], bool)] = &[
        (b"d1:ad2:id20:abcdefghij0123456789e1:q4:pong1:t2:aa1:y1:qe", true),
        (b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe", false),
        (b"d1:q4:ping1:t2:aa1:y1:qe", false),
        (b"d1:ad2:id20:abcdefghij01234567896:target3:abce1:q9:find_node1:t2:aa1:y1:qe", false),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti65536e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", false),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti0e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", false),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234565:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", false),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti1e5:token0:e1:q13:announce_peer1:t2:aa1:y1:qe", false),
    ];
    for (p, unknown) in bad_queries {
        let e = decode(p).unwrap_err();
        assert_eq!(
            e.query_tid.as_deref(),
            Some(&b"aa"[..]),
            "{}",
            String::from_utf8_lossy(p)
        );
        assert_eq!(e.kind == ErrorKind::UnknownMethod, *unknown);
    }
    // Port 0 is fine with implied_port.
    assert!(decode(b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti0e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe").is_ok());
    // Over the size limit: refused unread.
    let big = vec![b'x'; MAX_PACKET_LEN + 1];
    assert_eq!(
        decode(&big).unwrap_err().kind,
        ErrorKind::TooLarge(MAX_PACKET_LEN + 1)
    );
    // Unknown keys are ignored.
    assert!(decode(b"d1:rd2:id20:mnopqrstuvwxyz1234565:extrai1ee1:t2:aa1:y1:r3:zzzi0ee").is_ok());
}

#[test]
fn compact_nodes() {
    let nodes = vec![
        NodeInfo {
            id: NodeId([1; 20]),
            addr: "1.2.3.4:80".parse().unwrap(),
        },
        NodeInfo {
            id: NodeId([2; 20]),
            addr: "[::2]:81".parse().unwrap(),
        },
    ];
    let v4 = encode_nodes(&nodes, false);
    assert_eq!(v4.len(), 26);
    assert_eq!(decode_nodes(&v4, false).unwrap(), vec![nodes[0]]);
    let v6 = encode_nodes(&nodes, true);
    assert_eq!(v6.len(), 38);
    assert_eq!(decode_nodes(&v6, true).unwrap(), vec![nodes[1]]);
    assert!(decode_nodes(&v4[..25], false).is_none());
}

fn arb_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 20]>().prop_map(NodeId)
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
    ]
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..=max)
}

fn arb_want() -> impl Strategy<Value = Option<Want>> {
    proptest::option::of((any::<bool>(), any::<bool>()).prop_map(|(n4, n6)| Want { n4, n6 }))
}

fn arb_body() -> impl Strategy<Value = Body> {
    let node = (arb_id(), any::<[u8; 4]>(), any::<u16>()).prop_map(|(id, ip, p)| NodeInfo {
        id,
        addr: SocketAddr::from((ip, p)),
    });
    let node6 = (arb_id(), any::<[u8; 16]>(), any::<u16>()).prop_map(|(id, ip, p)| NodeInfo {
        id,
        addr: SocketAddr::from((ip, p)),
    });
    prop_oneof![
        arb_id().prop_map(|id| Body::Query(Query::Ping { id })),
        (arb_id(), arb_id(), arb_want())
            .prop_map(|(id, target, want)| Body::Query(Query::FindNode { id, target, want })),
        (arb_id(), any::<[u8; 20]>(), arb_want()).prop_map(|(id, h, want)| Body::Query(
            Query::GetPeers {
                id,
                info_hash: InfoHash(h),
                want
            }
        )),
        (
            arb_id(),
            any::<[u8; 20]>(),
            1..=u16::MAX,
            any::<bool>(),
            arb_bytes(64)
        )
            .prop_map(|(id, h, port, implied_port, token)| Body::Query(
                Query::AnnouncePeer {
                    id,
                    info_hash: InfoHash(h),
                    port,
                    implied_port,
                    token
                }
            )),
        (
            arb_id(),
            proptest::collection::vec(node, 0..10),
            proptest::collection::vec(node6, 0..5),
            proptest::collection::vec(arb_addr(), 0..20),
            proptest::option::of(arb_bytes(64)),
        )
            .prop_map(
                |(id, nodes, nodes6, values, token)| Body::Response(Response {
                    id,
                    nodes,
                    nodes6,
                    values,
                    token
                })
            ),
        (any::<i64>(), proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(code, message)| Body::Error(KrpcError { code, message })),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        arb_bytes(16),
        proptest::option::of(arb_bytes(16)),
        any::<bool>(),
        proptest::option::of(arb_addr()),
        arb_body(),
    )
        .prop_map(|(tid, version, read_only, ip, body)| Message {
            tid,
            version,
            read_only,
            ip,
            body,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity(m in arb_message()) {
        let wire = m.encode();
        prop_assert_eq!(decode(&wire).unwrap(), m);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let _ = decode(&bytes);
    }

    /// Valid messages with bytes flipped, cut or inserted: errors, never panics.
    #[test]
    fn mutated_messages_never_panic(m in arb_message(), pos in any::<usize>(), byte in any::<u8>(), cut in any::<bool>()) {
        let mut wire = m.encode();
        let i = pos % wire.len();
        if cut {
            wire.truncate(i);
        } else {
            wire[i] = byte;
        }
        let _ = decode(&wire);
    }
}
