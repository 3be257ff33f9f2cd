//! BEP 9 metadata fetch: a `MetadataFetch` driven by an arbitrary sequence
//! of `handle_peer`, `next_request`, `handle_data` (good, corrupt, short or
//! out-of-range pieces), `release` and clock advances. The fetch must never
//! panic, hand out pieces only within the announced size, and finish only
//! with the data whose SHA-1 is the infohash.
#![no_main]

use std::time::{Duration, Instant};

use essaim_core::InfoHash;
use essaim_proto::metadata::{MetadataFetch, MAX_METADATA_SIZE};
use libfuzzer_sys::fuzz_target;

#[path = "common/input.rs"]
mod input;
use input::Input;
use sha1::{Digest, Sha1};

const PIECE: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    // The real metadata: small enough to fetch, sometimes several pieces.
    let Some(real_len) = input.u16() else {
        return;
    };
    let real_len = (usize::from(real_len) % (3 * PIECE + 100)).max(1);
    let real: Vec<u8> = (0..real_len).map(|i| (i * 31 % 251) as u8).collect();
    let info_hash = InfoHash(Sha1::digest(&real).into());
    let mut fetch = MetadataFetch::new(info_hash);
    let start = Instant::now();
    let mut now = start;
    // What this harness believes the fetch's current size is.
    let mut size: Option<u64> = None;
    // Pieces handed out, per peer.
    let mut asked: Vec<(u64, u32)> = Vec::new();

    while let Some(op) = input.byte() {
        let peer = u64::from(op >> 5);
        match op & 0x7 {
            0 => {
                let claimed = match input.byte().unwrap_or(0) % 4 {
                    0 => Some(real_len as u64),
                    1 => None,
                    2 => Some(u64::from(input.u32().unwrap_or(0))),
                    _ => Some(MAX_METADATA_SIZE + u64::from(input.byte().unwrap_or(0)) - 128),
                };
                let has_ext = op & 0x8 == 0;
                if fetch.handle_peer(has_ext, claimed).is_ok() {
                    let c = claimed.expect("accepted with a size");
                    assert!(has_ext && c > 0 && c <= MAX_METADATA_SIZE);
                    assert!(size.is_none_or(|s| s == c));
                    size = Some(c);
                }
            }
            1 => {
                if let Some(piece) = fetch.next_request(peer, now) {
                    let s = size.expect("a request before any size");
                    assert!((piece as u64) < s.div_ceil(PIECE as u64));
                    assert!(fetch.result().is_none());
                    asked.push((peer, piece));
                }
            }
            2 | 3 => {
                // Answer a request (honestly unless bit 3 is set).
                let Some(i) = input.byte() else { break };
                if asked.is_empty() {
                    continue;
                }
                let at = usize::from(i) % asked.len();
                let (from, piece) = asked[at];
                let s = size.unwrap_or(real_len as u64);
                let begin = (piece as usize).saturating_mul(PIECE);
                let end = begin.saturating_add(PIECE).min(s as usize);
                let mut chunk: Vec<u8> = if begin < real.len() {
                    real[begin..end.min(real.len())].to_vec()
                } else {
                    Vec::new()
                };
                chunk.resize(end.saturating_sub(begin), 0);
                if op & 0x8 != 0 {
                    if let Some(b) = chunk.first_mut() {
                        *b ^= 1;
                    }
                }
                if op & 0x1 != 0 {
                    chunk.truncate(usize::from(input.u16().unwrap_or(0)));
                }
                let total = if op & 0x10 != 0 { s + 1 } else { s };
                if fetch.handle_data(from, piece, total, &chunk).is_ok() {
                    asked.remove(at);
                }
            }
            4 => {
                // Data nobody asked for.
                let piece = input.u32().unwrap_or(0);
                let total = size.unwrap_or(0);
                let len = usize::from(input.u16().unwrap_or(0)) % (PIECE + 2);
                assert!(fetch
                    .handle_data(peer, piece, total, &vec![0; len])
                    .is_err_or_was_requested(&asked, peer, piece));
            }
            5 => {
                let piece = match input.byte() {
                    Some(b) if b & 1 == 0 => Some(u32::from(b >> 1)),
                    _ => None,
                };
                fetch.release(peer, piece);
                asked.retain(|&(p, x)| p != peer || piece.is_some_and(|y| y != x));
            }
            6 => {
                now += Duration::from_millis(u64::from(input.u16().unwrap_or(0)) * 10);
            }
            _ => {
                for liar in fetch.take_liars() {
                    assert!(liar < 8);
                }
            }
        }
        if let Some(done) = fetch.result() {
            assert_eq!(&done[..], &real[..], "finished with the wrong data");
        }
        // A failed hash check starts over: the size is forgotten.
        if fetch.result().is_none() && !fetch_has_size(&mut fetch, now) {
            size = None;
            asked.clear();
        }
    }
});

/// Whether the fetch still has a size, probed without side effects: a
/// fetch without one refuses data for any piece with `Unrequested`, and a
/// peer key no one uses has no pieces.
fn fetch_has_size(fetch: &mut MetadataFetch, _now: Instant) -> bool {
    use essaim_proto::metadata::MetadataError;
    !matches!(
        fetch.handle_data(u64::MAX, 0, 0, &[]),
        Err(MetadataError::Unrequested(_))
    )
}

trait ErrOrRequested {
    fn is_err_or_was_requested(&self, asked: &[(u64, u32)], peer: u64, piece: u32) -> bool;
}

impl<E> ErrOrRequested for Result<(), E> {
    fn is_err_or_was_requested(&self, asked: &[(u64, u32)], peer: u64, piece: u32) -> bool {
        self.is_err() || asked.contains(&(peer, piece))
    }
}
