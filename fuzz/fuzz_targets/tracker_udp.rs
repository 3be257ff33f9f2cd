//! UDP tracker packets (BEP 15), both sides: `parse_response` and
//! `parse_response_v6` (client) and `parse_request` (our tracker) on
//! arbitrary datagrams. Results must respect the bounds and survive a round
//! trip through the matching encoder.
#![no_main]

use essaim_wire::tracker::udp::{
    encode_connect, encode_scrape, parse_request, parse_response, parse_response_v6, UdpRequest,
    UdpResponse, MAX_SCRAPE_HASHES,
};
use essaim_wire::tracker::{MAX_PEERS, MAX_TEXT};
use libfuzzer_sys::fuzz_target;

fn check_response(r: &UdpResponse, ipv6: bool) {
    match r {
        UdpResponse::Announce { peers, .. } => {
            assert!(peers.len() <= MAX_PEERS);
            assert!(peers.iter().all(|p| p.is_ipv6() == ipv6 && p.port() != 0));
        }
        UdpResponse::Scrape { entries, .. } => assert!(entries.len() <= MAX_SCRAPE_HASHES),
        UdpResponse::Error { message, .. } => assert!(message.len() <= MAX_TEXT),
        UdpResponse::Connect { .. } => {}
    }
    let encoded = r.encode(ipv6);
    let back = if ipv6 {
        parse_response_v6(&encoded)
    } else {
        parse_response(&encoded)
    };
    assert_eq!(back.as_ref(), Ok(r), "response round trip");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse_response(data) {
        check_response(&r, false);
    }
    if let Ok(r) = parse_response_v6(data) {
        check_response(&r, true);
    }
    if let Ok(req) = parse_request(data) {
        let encoded: Vec<u8> = match &req {
            UdpRequest::Connect { transaction_id } => encode_connect(*transaction_id).to_vec(),
            UdpRequest::Announce(a) => a.encode().to_vec(),
            UdpRequest::Scrape {
                connection_id,
                transaction_id,
                info_hashes,
            } => {
                assert!(info_hashes.len() <= MAX_SCRAPE_HASHES);
                encode_scrape(*connection_id, *transaction_id, info_hashes)
            }
        };
        assert_eq!(
            parse_request(&encoded).as_ref(),
            Ok(&req),
            "request round trip"
        );
    }
});
