//! DHT KRPC messages (BEP 5, with BEP 32 and 43 fields):
//! `essaim_dht::krpc::decode` on arbitrary datagrams. A message that
//! decodes stays within its bounds, re-encodes (canonically) to a packet
//! that decodes to the same message, and that packet is a fixed point.
#![no_main]

use essaim_dht::krpc::{
    decode, Body, MAX_PACKET_LEN, MAX_TID_LEN, MAX_TOKEN_LEN, MAX_VERSION_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let m = match decode(data) {
        Ok(m) => m,
        Err(e) => {
            // An error names the query to answer only for a readable `t`.
            if let Some(tid) = &e.query_tid {
                assert!(!tid.is_empty() && tid.len() <= MAX_TID_LEN);
            }
            return;
        }
    };
    assert!(data.len() <= MAX_PACKET_LEN);
    assert!(!m.tid.is_empty() && m.tid.len() <= MAX_TID_LEN);
    assert!(m.version.as_ref().is_none_or(|v| v.len() <= MAX_VERSION_LEN));
    if let Body::Response(r) = &m.body {
        assert!(r.nodes.iter().all(|n| n.addr.is_ipv4()));
        assert!(r.nodes6.iter().all(|n| n.addr.is_ipv6()));
        assert!(r.token.as_ref().is_none_or(|t| t.len() <= MAX_TOKEN_LEN));
    }
    let encoded = m.encode();
    let back = decode(&encoded).expect("a re-encoded message decodes");
    assert_eq!(back, m, "round trip changed the message");
    assert_eq!(back.encode(), encoded, "encoding is not a fixed point");
});
