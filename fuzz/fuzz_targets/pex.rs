//! Peer exchange (BEP 11): `PexMessage::decode` on arbitrary `ut_pex`
//! payloads, and `filter_added` on what decodes. A decoded message stays
//! within its bounds and round-trips through `encode`; the filter never
//! lets through port 0, unspecified, multicast or broadcast addresses,
//! loopback from a remote peer, or two ports for one (non-loopback) IP.
#![no_main]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use essaim_proto::pex::filter_added;
use essaim_wire::pex::{PexMessage, MAX_ENTRIES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = PexMessage::decode(data) else {
        return;
    };
    assert!(msg.added.len() <= 2 * MAX_ENTRIES);
    assert!(msg.dropped.len() <= 2 * MAX_ENTRIES);
    let back = PexMessage::decode(&msg.encode()).expect("re-encoded ut_pex decodes");
    assert_eq!(back, msg, "round trip changed the message");

    for from in [
        None,
        Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ] {
        let from_loopback = from.is_some_and(|ip| ip.is_loopback());
        let found = filter_added(&msg, from);
        assert!(found.len() <= msg.added.len());
        let mut ips = BTreeSet::new();
        for a in &found {
            let ip = a.ip();
            assert!(a.port() != 0 && !ip.is_unspecified() && !ip.is_multicast());
            assert!(!matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()));
            assert!(from_loopback || !ip.is_loopback(), "loopback from {from:?}");
            assert!(ip.is_loopback() || ips.insert(ip), "two ports for {ip}");
            assert!(msg.added.iter().any(|(x, _)| x == a));
        }
    }
});
