//! Local service discovery (BEP 14): `lsd::Announce::decode` on arbitrary
//! datagrams (anyone on the LAN can send them). An announce that decodes
//! stays within its bounds and survives `encode` and `decode` unchanged.
#![no_main]

use essaim_wire::lsd::{Announce, GROUP_V4, MAX_INFOHASHES, MAX_PACKET, PORT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(a) = Announce::decode(data) else {
        return;
    };
    assert!(data.len() <= MAX_PACKET);
    assert_ne!(a.port, 0);
    assert!(!a.info_hashes.is_empty() && a.info_hashes.len() <= MAX_INFOHASHES);
    assert!(a.cookie.as_ref().is_none_or(|c| c.chars().count() <= 64));
    let [a0, a1, a2, a3] = GROUP_V4;
    let host = format!("{a0}.{a1}.{a2}.{a3}:{PORT}");
    let bytes = a.encode(&host);
    assert!(bytes.len() <= MAX_PACKET, "our announce is {} bytes", bytes.len());
    assert_eq!(Announce::decode(&bytes).as_ref(), Some(&a), "round trip");
});
