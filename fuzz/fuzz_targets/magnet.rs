//! Magnet links: `Magnet::parse` on arbitrary text (lossy UTF-8). A link
//! that parses must print (`to_uri`) to a link that parses to the same
//! infohash, name, trackers and peers.
#![no_main]

use essaim_core::Magnet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(m) = Magnet::parse(&text) else {
        return;
    };
    if let Some(so) = &m.select_only {
        assert!(so.len() <= 1_000_000);
    }
    let uri = m.to_uri();
    let again = Magnet::parse(&uri).expect("to_uri output parses");
    assert_eq!(again.info_hash, m.info_hash);
    assert_eq!(again.display_name, m.display_name);
    assert_eq!(again.trackers, m.trackers);
    assert_eq!(again.peers, m.peers);
    assert_eq!(again.to_uri(), uri);
});
