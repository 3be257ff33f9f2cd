//! HTTP tracker formats, both sides: the client's `parse_announce_response`
//! and `parse_scrape_response` on arbitrary bytes, and our tracker's
//! `parse_announce_query` and `parse_scrape_query` on arbitrary text (lossy
//! UTF-8). Results must respect the documented bounds and survive a round
//! trip through the matching encoder.
#![no_main]

use essaim_core::InfoHash;
use essaim_wire::tracker::http::{
    encode_scrape, parse_announce_query, parse_announce_response, parse_scrape_query,
    parse_scrape_response, scrape_request_url, AnnounceRequest, MAX_SCRAPE_ENTRIES,
    MAX_SCRAPE_HASHES,
};
use essaim_wire::tracker::{MAX_INTERVAL, MAX_PEERS, MAX_TEXT, MIN_INTERVAL};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse_announce_response(data) {
        assert!((MIN_INTERVAL..=MAX_INTERVAL).contains(&r.interval));
        assert!(r.min_interval.is_none_or(|m| m <= r.interval));
        assert!(r.peers.len() <= MAX_PEERS);
        assert!(r
            .peers
            .iter()
            .all(|p| p.port() != 0 && !p.ip().is_unspecified()));
        assert!(r.tracker_id.as_ref().is_none_or(|t| t.len() <= MAX_TEXT));
        assert!(r.warning.as_ref().is_none_or(|t| t.len() <= MAX_TEXT));
    }
    if let Ok(entries) = parse_scrape_response(data) {
        assert!(entries.len() <= MAX_SCRAPE_ENTRIES);
        let back = parse_scrape_response(&encode_scrape(&entries)).expect("re-encoded scrape");
        // The encoder sorts by hash (and a repeated hash cannot occur: keys
        // are unique), so compare as sets.
        let mut a = entries.clone();
        a.sort_by_key(|(h, _)| *h);
        assert_eq!(back, a);
    }

    let query = String::from_utf8_lossy(data);
    if let Ok(a) = parse_announce_query(&query) {
        assert_ne!(a.port, 0);
        let req = AnnounceRequest {
            info_hash: a.info_hash,
            peer_id: a.peer_id,
            port: a.port,
            uploaded: a.uploaded,
            downloaded: a.downloaded,
            left: a.left,
            event: a.event,
            numwant: a.numwant,
            key: None,
            tracker_id: None,
            compact: a.compact,
        };
        let url = req.to_url("http://t/announce");
        let q = url.split_once('?').expect("a query").1;
        let mut back = parse_announce_query(q).expect("our announce URL parses");
        back.ip = a.ip;
        assert_eq!(back, a);
    }
    if let Ok(hashes) = parse_scrape_query(&query) {
        assert!(hashes.len() <= MAX_SCRAPE_HASHES);
        let url = scrape_request_url("http://t/scrape", &hashes);
        let q = url.split_once('?').map_or("", |(_, q)| q);
        let back: Vec<InfoHash> = parse_scrape_query(q).expect("our scrape URL parses");
        assert_eq!(back, hashes);
    }
});
