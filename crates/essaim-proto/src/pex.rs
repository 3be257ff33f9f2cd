//! Peer exchange (BEP 11): which peers to tell each peer about, and what to
//! make of what peers tell us.
//!
//! Only live connections are shared ("a peer must only be included in an
//! `added` field once a connection is successfully established"), and only
//! with a reachable address: the address we dialled, or for an incoming
//! connection its IP with the listen port from its extended handshake. For
//! each peer we remember what we told it; a message carries what changed
//! since (added and dropped, never both for one address), at most
//! [`MAX_PER_MESSAGE`] of each, no more than once per [`PEX_INTERVAL`]; the
//! first one goes [`FIRST_DELAY`] after the connection.
//!
//! Received lists are untrusted: port 0, unspecified, multicast and
//! broadcast addresses are dropped; loopback addresses are accepted only
//! from a peer that is itself on loopback; one port per IP is kept (BEP 11:
//! "duplicate IP addresses should be ignored"), except on loopback where
//! many peers share 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use essaim_wire::pex::PexMessage;

use crate::swarm::PeerKey;

pub const PEX_INTERVAL: Duration = Duration::from_secs(60);
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
pub const MAX_PER_MESSAGE: usize = 50;

#[derive(Debug)]
struct PeerPex {
    /// The peer's own reachable address, once known.
    own: Option<SocketAddr>,
    /// What we told it is connected (added and not dropped since).
    told: BTreeSet<SocketAddr>,
    next_at: Instant,
}

#[derive(Debug, Default)]
pub struct PexState {
    /// Reachable addresses of our live connections, with BEP 11 flags.
    live: BTreeMap<SocketAddr, u8>,
    peers: BTreeMap<PeerKey, PeerPex>,
}

impl PexState {
    pub fn peer_connected(&mut self, peer: PeerKey, now: Instant) {
        self.peers.insert(
            peer,
            PeerPex {
                own: None,
                told: BTreeSet::new(),
                next_at: now + FIRST_DELAY,
            },
        );
    }

    /// The peer's reachable address is known.
    pub fn peer_address(&mut self, peer: PeerKey, addr: SocketAddr, flags: u8) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(old) = p.own.replace(addr) {
            self.live.remove(&old);
        }
        self.live.insert(addr, flags);
    }

    pub fn peer_gone(&mut self, peer: PeerKey) {
        if let Some(own) = self.peers.remove(&peer).and_then(|p| p.own) {
            self.live.remove(&own);
        }
    }

    /// The message due for `peer` now, if any.
    pub fn due(&mut self, peer: PeerKey, now: Instant) -> Option<PexMessage> {
        let p = self.peers.get_mut(&peer)?;
        if now < p.next_at {
            return None;
        }
        p.next_at = now + PEX_INTERVAL;
        let added: Vec<(SocketAddr, u8)> = self
            .live
            .iter()
            .filter(|(a, _)| Some(**a) != p.own && !p.told.contains(a))
            .take(MAX_PER_MESSAGE)
            .map(|(a, f)| (*a, *f))
            .collect();
        let dropped: Vec<SocketAddr> = p
            .told
            .iter()
            .filter(|a| !self.live.contains_key(a))
            .take(MAX_PER_MESSAGE)
            .copied()
            .collect();
        for (a, _) in &added {
            p.told.insert(*a);
        }
        for a in &dropped {
            p.told.remove(a);
        }
        let msg = PexMessage { added, dropped };
        (!msg.is_empty()).then_some(msg)
    }
}

/// The addresses of a received message worth dialling, from a peer at
/// `from`.
pub fn filter_added(msg: &PexMessage, from: Option<IpAddr>) -> Vec<SocketAddr> {
    let from_loopback = from.is_some_and(|ip| ip.is_loopback());
    let mut ips = BTreeSet::new();
    let mut out = Vec::new();
    for (addr, _) in &msg.added {
        let ip = addr.ip();
        let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if addr.port() == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
            continue;
        }
        if ip.is_loopback() && !from_loopback {
            continue;
        }
        if !ip.is_loopback() && !ips.insert(ip) {
            continue;
        }
        out.push(*addr);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tells_added_then_dropped_at_most_once_a_minute() {
        let t0 = Instant::now();
        let mut s = PexState::default();
        for k in 1..=3 {
            s.peer_connected(k, t0);
        }
        s.peer_address(1, a("10.0.0.1:1"), 0);
        s.peer_address(2, a("10.0.0.2:2"), 0);
        // Peer 3 has no reachable address yet: it is told, but not told of.
        assert_eq!(s.due(3, t0), None, "not before FIRST_DELAY");
        let m = s.due(3, t0 + FIRST_DELAY).unwrap();
        assert_eq!(m.added.len(), 2);
        assert!(m.dropped.is_empty());
        // Peer 1 is told of 2 only, never of itself.
        let m = s.due(1, t0 + FIRST_DELAY).unwrap();
        assert_eq!(m.added, vec![(a("10.0.0.2:2"), 0)]);
        // 2 leaves: 3 hears of it, but only a minute after the last message.
        s.peer_gone(2);
        assert_eq!(s.due(3, t0 + FIRST_DELAY * 2), None);
        let m = s.due(3, t0 + FIRST_DELAY + PEX_INTERVAL).unwrap();
        assert_eq!(m.dropped, vec![a("10.0.0.2:2")]);
        assert!(m.added.is_empty());
        // Nothing new: nothing sent.
        assert_eq!(s.due(3, t0 + FIRST_DELAY + PEX_INTERVAL * 2), None);
    }

    #[test]
    fn caps_each_message_at_fifty() {
        let t0 = Instant::now();
        let mut s = PexState::default();
        s.peer_connected(0, t0);
        for k in 1..=120u64 {
            s.peer_connected(k, t0);
            s.peer_address(k, SocketAddr::from(([10, 0, 0, k as u8], 1)), 0);
        }
        let m = s.due(0, t0 + FIRST_DELAY).unwrap();
        assert_eq!(m.added.len(), MAX_PER_MESSAGE);
        let m = s.due(0, t0 + FIRST_DELAY + PEX_INTERVAL).unwrap();
        assert_eq!(m.added.len(), MAX_PER_MESSAGE);
    }

    #[test]
    fn filters_what_peers_tell_us() {
        let msg = PexMessage {
            added: vec![
                (a("1.2.3.4:0"), 0),
                (a("0.0.0.0:5"), 0),
                (a("224.0.0.1:5"), 0),
                (a("255.255.255.255:5"), 0),
                (a("127.0.0.1:5"), 0),
                (a("127.0.0.1:6"), 0),
                (a("8.8.8.8:1"), 0),
                (a("8.8.8.8:2"), 0),
            ],
            dropped: vec![],
        };
        let remote = filter_added(&msg, Some("9.9.9.9".parse().unwrap()));
        assert_eq!(remote, vec![a("8.8.8.8:1")]);
        let local = filter_added(&msg, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            local,
            vec![a("127.0.0.1:5"), a("127.0.0.1:6"), a("8.8.8.8:1")]
        );
    }
}
