//! The peers other nodes announced to us (`announce_peer`), per infohash.
//!
//! Bounded: at most [`MAX_PEERS_PER_HASH`] peers per infohash (a newcomer
//! replaces the oldest announce) and [`MAX_HASHES`] infohashes (a new
//! infohash is refused when full); entries expire [`PEER_TTL`] after their
//! last announce. One entry per (ip, port).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use essaim_core::InfoHash;
use rand::seq::SliceRandom;
use rand::Rng;

pub const PEER_TTL: Duration = Duration::from_secs(30 * 60);
pub const MAX_PEERS_PER_HASH: usize = 100;
pub const MAX_HASHES: usize = 10_000;

#[derive(Default)]
pub struct PeerStore {
    /// Per infohash, each peer with the time of its last announce.
    peers: BTreeMap<InfoHash, Vec<(SocketAddr, Instant)>>,
    max_hashes: usize,
    max_per_hash: usize,
}

impl PeerStore {
    pub fn new() -> Self {
        Self::with_limits(MAX_HASHES, MAX_PEERS_PER_HASH)
    }

    pub fn with_limits(max_hashes: usize, max_per_hash: usize) -> Self {
        PeerStore {
            peers: BTreeMap::new(),
            max_hashes,
            max_per_hash: max_per_hash.max(1),
        }
    }

    /// Records an announce. Returns false when refused (store full).
    pub fn announce(&mut self, info_hash: InfoHash, peer: SocketAddr, now: Instant) -> bool {
        if !self.peers.contains_key(&info_hash) && self.peers.len() >= self.max_hashes {
            return false;
        }
        let list = self.peers.entry(info_hash).or_default();
        if let Some(e) = list.iter_mut().find(|(a, _)| *a == peer) {
            e.1 = now;
            return true;
        }
        if list.len() >= self.max_per_hash {
            // Replace the peer that announced longest ago.
            if let Some(oldest) = list.iter_mut().min_by_key(|(_, t)| *t) {
                *oldest = (peer, now);
            }
            return true;
        }
        list.push((peer, now));
        true
    }

    /// Up to `max` live peers for `info_hash` of the given family (IPv6 or
    /// not), in random order.
    pub fn peers(
        &self,
        info_hash: &InfoHash,
        v6: bool,
        max: usize,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Vec<SocketAddr> {
        let Some(list) = self.peers.get(info_hash) else {
            return Vec::new();
        };
        let mut out: Vec<SocketAddr> = list
            .iter()
            .filter(|(a, t)| a.is_ipv6() == v6 && now.saturating_duration_since(*t) < PEER_TTL)
            .map(|(a, _)| *a)
            .collect();
        out.shuffle(rng);
        out.truncate(max);
        out
    }

    /// Drops expired announces and empty infohashes.
    pub fn expire(&mut self, now: Instant) {
        self.peers.retain(|_, list| {
            list.retain(|(_, t)| now.saturating_duration_since(*t) < PEER_TTL);
            !list.is_empty()
        });
    }

    /// Every stored (infohash, peer), live or not yet expired.
    pub fn iter(&self) -> impl Iterator<Item = (&InfoHash, &SocketAddr)> {
        self.peers
            .iter()
            .flat_map(|(h, list)| list.iter().map(move |(a, _)| (h, a)))
    }

    /// Number of infohashes with at least one stored peer.
    pub fn num_hashes(&self) -> usize {
        self.peers.len()
    }

    /// Number of stored peers over all infohashes.
    pub fn num_peers(&self) -> usize {
        self.peers.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn peer(i: u32) -> SocketAddr {
        SocketAddr::from((std::net::Ipv4Addr::from(0x0100_0000 + i), 6881))
    }

    #[test]
    fn caps_expiry_and_families() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut s = PeerStore::with_limits(2, 3);
        let h = |i: u8| InfoHash([i; 20]);
        assert!(s.announce(h(1), peer(1), t0));
        assert!(s.announce(h(1), peer(1), t0), "re-announce refreshes");
        assert!(s.announce(h(2), peer(2), t0));
        assert!(!s.announce(h(3), peer(3), t0), "third infohash refused");
        for i in 10..20 {
            s.announce(h(1), peer(i), t0 + Duration::from_secs(u64::from(i)));
        }
        let got = s.peers(&h(1), false, 100, t0 + Duration::from_secs(30), &mut rng);
        assert_eq!(got.len(), 3, "per-hash cap");
        assert!(
            got.contains(&peer(19)) && !got.contains(&peer(1)),
            "oldest replaced"
        );
        assert!(
            s.peers(&h(1), true, 100, t0, &mut rng).is_empty(),
            "no IPv6 peers"
        );
        assert_eq!(s.peers(&h(1), false, 2, t0, &mut rng).len(), 2);
        // Expiry.
        let late = t0 + PEER_TTL + Duration::from_secs(20);
        assert!(s.peers(&h(2), false, 100, late, &mut rng).is_empty());
        s.expire(late);
        assert_eq!(s.num_hashes(), 0);
        assert!(s.announce(h(3), peer(3), late), "room again");
    }
}
