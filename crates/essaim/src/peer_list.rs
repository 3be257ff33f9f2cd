//! The addresses a torrent knows, where each came from, and when to try it.
//!
//! Policy: a failed dial waits 5 s, doubling per failure up to 10 minutes;
//! after [`MAX_FAILURES`] a peer is forgotten unless the user gave it. A
//! banned address (hash failures) is never dialled nor accepted again. Peers
//! disconnected as useless (both seeds) are not dialled while we seed.
//! The list is capped at [`MAX_KNOWN`] addresses so that no source (a
//! tracker, later PEX or the DHT) can grow it without bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub const MAX_KNOWN: usize = 2000;
pub const MAX_FAILURES: u32 = 8;

/// Where we learnt of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerSource {
    /// Given by the user (`--peer`, `x.pe=`).
    Manual,
    Tracker,
    /// It connected to us.
    Incoming,
    Pex,
    Dht,
    Lsd,
}

impl std::fmt::Display for PeerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerSource::Manual => "manual",
            PeerSource::Tracker => "tracker",
            PeerSource::Incoming => "incoming",
            PeerSource::Pex => "pex",
            PeerSource::Dht => "dht",
            PeerSource::Lsd => "lsd",
        })
    }
}

#[derive(Debug)]
struct Known {
    source: PeerSource,
    failures: u32,
    next_try: Option<Instant>,
    connected: bool,
    banned: bool,
    seed: bool,
}

#[derive(Debug, Default)]
pub struct PeerList {
    peers: HashMap<SocketAddr, Known>,
}

impl PeerList {
    /// Adds an address (port 0 and unspecified addresses are ignored).
    pub fn add(&mut self, addr: SocketAddr, source: PeerSource) {
        if addr.port() == 0 || addr.ip().is_unspecified() || addr.ip().is_multicast() {
            return;
        }
        if self.peers.len() >= MAX_KNOWN && !self.peers.contains_key(&addr) {
            return;
        }
        self.peers.entry(addr).or_insert(Known {
            source,
            failures: 0,
            next_try: None,
            connected: false,
            banned: false,
            seed: false,
        });
    }

    pub fn source(&self, addr: &SocketAddr) -> PeerSource {
        self.peers
            .get(addr)
            .map_or(PeerSource::Incoming, |k| k.source)
    }

    /// Whether `addr` is banned. A ban covers the whole IP (a liar that
    /// comes back from another port is still a liar), except on loopback,
    /// where every local peer shares one IP.
    pub fn is_banned(&self, addr: &SocketAddr) -> bool {
        if self.peers.get(addr).is_some_and(|k| k.banned) {
            return true;
        }
        !addr.ip().is_loopback()
            && self
                .peers
                .iter()
                .any(|(a, k)| k.banned && a.ip() == addr.ip())
    }

    /// The next address worth dialling now, if any.
    pub fn next_to_dial(
        &mut self,
        now: Instant,
        connected: &[SocketAddr],
        seeding: bool,
    ) -> Option<SocketAddr> {
        let addr = self
            .peers
            .iter()
            .filter(|(a, k)| {
                let busy = k.connected || connected.contains(a);
                let unwanted = k.banned || (seeding && k.seed);
                let waiting = k.next_try.is_some_and(|t| t > now);
                !(busy || unwanted || waiting)
            })
            .min_by_key(|(_, k)| (k.failures, k.source))
            .map(|(a, _)| *a)?;
        if let Some(k) = self.peers.get_mut(&addr) {
            // In flight: not again until this dial ends.
            k.next_try = Some(now + Duration::from_secs(3600));
        }
        Some(addr)
    }

    /// When the earliest known peer may be dialled (a time passed if one
    /// may be now), if any may ever be: for a torrent with nothing else to
    /// do, when to wake up.
    pub fn next_retry(&self, seeding: bool) -> Option<Instant> {
        self.peers
            .values()
            .filter(|k| !(k.connected || k.banned || (seeding && k.seed)))
            .map(|k| k.next_try)
            .min_by(|a, b| match (a, b) {
                (None, _) => std::cmp::Ordering::Less,
                (_, None) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => x.cmp(y),
            })
            .map(|t| t.unwrap_or_else(Instant::now))
    }

    pub fn connected(&mut self, addr: SocketAddr) {
        if let Some(k) = self.peers.get_mut(&addr) {
            k.connected = true;
            k.failures = 0;
            k.next_try = None;
        }
    }

    pub fn disconnected(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(k) = self.peers.get_mut(&addr) {
            k.connected = false;
            k.next_try = Some(now + Duration::from_secs(10));
        }
    }

    pub fn failed(&mut self, addr: SocketAddr, now: Instant) {
        let Some(k) = self.peers.get_mut(&addr) else {
            return;
        };
        k.connected = false;
        k.failures += 1;
        if k.failures >= MAX_FAILURES && k.source != PeerSource::Manual {
            self.peers.remove(&addr);
            return;
        }
        let backoff = Duration::from_secs(5 << k.failures.min(7).saturating_sub(1))
            .min(Duration::from_secs(600));
        k.next_try = Some(now + backoff);
    }

    pub fn ban(&mut self, addr: SocketAddr) {
        if let Some(k) = self.peers.get_mut(&addr) {
            k.banned = true;
            k.connected = false;
        } else {
            self.peers.insert(
                addr,
                Known {
                    source: PeerSource::Incoming,
                    failures: 0,
                    next_try: None,
                    connected: false,
                    banned: true,
                    seed: false,
                },
            );
        }
    }

    /// Disconnected because neither side wanted anything (both seeds).
    pub fn useless(&mut self, addr: SocketAddr) {
        if let Some(k) = self.peers.get_mut(&addr) {
            k.connected = false;
            k.seed = true;
        }
    }

    pub fn counts(&self) -> HashMap<PeerSource, usize> {
        let mut m = HashMap::new();
        for k in self.peers.values() {
            *m.entry(k.source).or_insert(0) += 1;
        }
        m
    }
}

#[cfg(test)]
impl PeerList {
    fn len(&self) -> usize {
        self.peers.len()
    }
    fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_retry_is_the_earliest_dialable_peer() {
        let mut l = PeerList::default();
        let t0 = Instant::now();
        assert_eq!(l.next_retry(false), None);
        l.add(a(1), PeerSource::Tracker);
        assert!(l.next_retry(false).is_some_and(|t| t >= t0), "now");
        let dialed = l.next_to_dial(t0, &[], false);
        l.failed(dialed.unwrap(), t0);
        assert_eq!(l.next_retry(false), Some(t0 + Duration::from_secs(5)));
        l.useless(a(1));
        assert_eq!(l.next_retry(true), None, "a seed does not retry a seed");
        l.ban(a(1));
        assert_eq!(l.next_retry(false), None);
    }

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn back_off_and_forget() {
        let mut l = PeerList::default();
        let t0 = Instant::now();
        l.add(a(1), PeerSource::Tracker);
        l.add(a(0), PeerSource::Tracker);
        assert_eq!(l.len(), 1);
        assert_eq!(l.next_to_dial(t0, &[], false), Some(a(1)));
        assert_eq!(l.next_to_dial(t0, &[], false), None, "in flight");
        l.failed(a(1), t0);
        assert_eq!(
            l.next_to_dial(t0 + Duration::from_secs(1), &[], false),
            None
        );
        assert_eq!(
            l.next_to_dial(t0 + Duration::from_secs(6), &[], false),
            Some(a(1))
        );
        for _ in 0..MAX_FAILURES {
            l.failed(a(1), t0);
        }
        assert!(l.is_empty());
    }

    #[test]
    fn banned_and_seed_peers_are_not_dialled() {
        let mut l = PeerList::default();
        let t0 = Instant::now();
        l.add(a(1), PeerSource::Tracker);
        l.add(a(2), PeerSource::Tracker);
        l.ban(a(1));
        l.useless(a(2));
        assert_eq!(l.next_to_dial(t0, &[], true), None);
        assert_eq!(l.next_to_dial(t0, &[], false), Some(a(2)));
        assert!(l.is_banned(&a(1)));
        // Loopback: only the exact address. Elsewhere: the whole IP.
        assert!(!l.is_banned(&a(3)));
        let remote = |port| SocketAddr::from(([203, 0, 113, 7], port));
        l.add(remote(1000), PeerSource::Tracker);
        l.ban(remote(1000));
        assert!(l.is_banned(&remote(2000)));
    }
}
