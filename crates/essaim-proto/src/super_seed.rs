//! Initial seeding: send every piece once before any piece twice.
//!
//! A seed whose uplink is the bottleneck loses time for every piece it
//! sends twice while its leechers' uplinks sit idle. Like BEP 16
//! (super-seeding), the seed hides its pieces and reveals them to each peer
//! with `have` messages, always choosing the pieces revealed to the fewest
//! peers so far: each peer downloads different pieces from the seed and
//! trades them with the others.
//!
//! Unlike BEP 16 as libtorrent implements it, a peer is not made to wait
//! until its previous piece is seen elsewhere: as soon as it starts
//! requesting the pieces revealed to it (or gets them from someone else), it
//! is shown new ones, so that at least [`AHEAD`] unstarted pieces are always
//! waiting for it and the seed's uplink never idles. Once every piece has
//! been revealed at least once the mode ends and everything is announced:
//! from then on the seed is an ordinary seed.
//!
//! Invariants: `assigned[p]` is the number of peers `p` was revealed to
//! (peers that left are taken off, unless they downloaded it); a piece is
//! revealed to a peer at most once; `unassigned` counts pieces with
//! `assigned == 0`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use essaim_core::Bitfield;
use rand::Rng;

use crate::swarm::PeerKey;

/// Revealed pieces a peer has not started yet, kept waiting for it.
pub const AHEAD: usize = 4;
/// A revealed piece the peer has not started after this long is taken back
/// (the peer may not want it, or be choked): it goes to others, and the
/// peer, which picks for itself, is shown every piece from then on.
pub const STALE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Peer {
    /// Pieces revealed to this peer (announced with `have`).
    announced: Bitfield,
    /// Revealed pieces the peer has not requested from us nor got, with
    /// when they were revealed.
    unstarted: Vec<(u32, Instant)>,
    /// Revealed pieces the peer is fetching from us.
    started: Vec<u32>,
    /// Shown everything: it left revealed pieces untouched (it wants only
    /// some files, or is choked), so it is not steered any more.
    open: bool,
}

#[derive(Debug)]
pub struct SuperSeed {
    assigned: Vec<u32>,
    unassigned: u32,
    peers: BTreeMap<PeerKey, Peer>,
    active: bool,
}

/// Pieces to announce to a peer with `have`.
pub type Reveals = Vec<(PeerKey, u32)>;

impl SuperSeed {
    pub fn new(num_pieces: u32) -> Self {
        SuperSeed {
            assigned: vec![0; num_pieces as usize],
            unassigned: num_pieces,
            peers: BTreeMap::new(),
            active: num_pieces > 0,
        }
    }

    /// Whether pieces are still being revealed one by one.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether `piece` was revealed to `peer`.
    pub fn was_revealed(&self, peer: PeerKey, piece: u32) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.announced.get(piece))
    }

    /// A new peer: its first pieces to announce.
    pub fn peer_connected(
        &mut self,
        peer: PeerKey,
        peer_has: &Bitfield,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Reveals {
        if !self.active {
            return Vec::new();
        }
        self.peers.insert(
            peer,
            Peer {
                announced: Bitfield::new(self.assigned.len() as u32),
                unstarted: Vec::new(),
                started: Vec::new(),
                open: false,
            },
        );
        self.top_up(peer, peer_has, now, rng)
    }

    /// The peer's pieces changed (a `have`, or a bitfield), or time
    /// passed: the revealed pieces it now has are done, stale ones are
    /// taken back, and it is shown new ones.
    pub fn peer_has(
        &mut self,
        peer: PeerKey,
        peer_has: &Bitfield,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Reveals {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Vec::new();
        };
        p.unstarted.retain(|&(x, _)| !peer_has.get(x));
        p.started.retain(|&x| !peer_has.get(x));
        self.top_up(peer, peer_has, now, rng)
    }

    /// The peer requested a block of `piece` from us.
    pub fn peer_requested(
        &mut self,
        peer: PeerKey,
        piece: u32,
        peer_has: &Bitfield,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Reveals {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Vec::new();
        };
        if let Some(i) = p.unstarted.iter().position(|&(x, _)| x == piece) {
            p.unstarted.swap_remove(i);
            p.started.push(piece);
            return self.top_up(peer, peer_has, now, rng);
        }
        Vec::new()
    }

    fn unassign(&mut self, piece: u32) {
        if let Some(a) = self.assigned.get_mut(piece as usize) {
            *a = a.saturating_sub(1);
            if *a == 0 {
                self.unassigned += 1;
            }
        }
    }

    /// The peer left: what it never got goes back to the pool.
    pub fn peer_gone(&mut self, peer: PeerKey, peer_had: &Bitfield) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        for piece in p.unstarted.into_iter().map(|(x, _)| x).chain(p.started) {
            if !peer_had.get(piece) {
                self.unassign(piece);
            }
        }
    }

    /// Keeps [`AHEAD`] fresh unstarted pieces revealed to `peer`.
    fn top_up(
        &mut self,
        peer: PeerKey,
        peer_has: &Bitfield,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Reveals {
        let mut out = Vec::new();
        let mut stale = Vec::new();
        if let Some(p) = self.peers.get_mut(&peer) {
            p.unstarted.retain(|&(x, at)| {
                let keep = now.saturating_duration_since(at) < STALE;
                if !keep {
                    stale.push(x);
                }
                keep
            });
        }
        if !stale.is_empty() {
            for piece in stale {
                self.unassign(piece);
            }
            return self.open_up(peer, peer_has);
        }
        if self.peers.get(&peer).is_some_and(|p| p.open) {
            return out;
        }
        while let Some(p) = self.peers.get(&peer) {
            if p.unstarted.len() >= AHEAD {
                break;
            }
            let Some(piece) = self.least_assigned(&p.announced, peer_has, rng) else {
                break;
            };
            let a = &mut self.assigned[piece as usize];
            if *a == 0 {
                self.unassigned -= 1;
            }
            *a += 1;
            if let Some(p) = self.peers.get_mut(&peer) {
                p.announced.set(piece);
                p.unstarted.push((piece, now));
            }
            out.push((peer, piece));
            if self.unassigned == 0 {
                self.active = false;
                break;
            }
        }
        out
    }

    /// Shows `peer` every piece it lacks and was not shown yet.
    fn open_up(&mut self, peer: PeerKey, peer_has: &Bitfield) -> Reveals {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Vec::new();
        };
        p.open = true;
        let mut out = Vec::new();
        for piece in 0..self.assigned.len() as u32 {
            if !p.announced.get(piece) && !peer_has.get(piece) {
                p.announced.set(piece);
                out.push((peer, piece));
            }
        }
        out
    }

    /// The least-revealed piece this peer lacks and was not shown, ties
    /// broken at random.
    fn least_assigned(
        &self,
        announced: &Bitfield,
        has: &Bitfield,
        rng: &mut impl Rng,
    ) -> Option<u32> {
        let n = self.assigned.len() as u32;
        if n == 0 {
            return None;
        }
        let start = rng.gen_range(0..n);
        let mut best: Option<(u32, u32)> = None;
        for i in 0..n {
            let piece = (start + i) % n;
            if announced.get(piece) || has.get(piece) {
                continue;
            }
            let a = self.assigned[piece as usize];
            if best.is_none_or(|(_, b)| a < b) {
                best = Some((piece, a));
                if a == 0 {
                    break;
                }
            }
        }
        best.map(|(p, _)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn every_piece_is_revealed_once_before_any_twice() {
        let mut rng = SmallRng::seed_from_u64(1);
        let t0 = Instant::now();
        let n = 40;
        let mut s = SuperSeed::new(n);
        let none = Bitfield::new(n);
        let mut seen = std::collections::HashMap::new();
        for peer in 0..5u64 {
            for (_, piece) in s.peer_connected(peer, &none, t0, &mut rng) {
                *seen.entry(piece).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), 20, "5 peers × 4 distinct pieces");
        assert!(seen.values().all(|&c| c == 1));
        // Each peer starts its pieces: more are revealed, still distinct,
        // until all 40 are out; then the mode ends.
        for round in 0..4 {
            for peer in 0..5u64 {
                let first = s.peers[&peer].unstarted[0].0;
                for (_, piece) in s.peer_requested(peer, first, &none, t0, &mut rng) {
                    *seen.entry(piece).or_insert(0) += 1;
                }
            }
            let _ = round;
            if !s.is_active() {
                break;
            }
        }
        assert_eq!(seen.len(), 40);
        assert!(seen.values().all(|&c| c == 1), "{seen:?}");
        assert!(!s.is_active());
        assert!(s.peers.values().all(|p| p.announced.count() == 8));
    }

    #[test]
    fn pieces_the_peer_has_are_not_revealed_and_leavers_return_theirs() {
        let mut rng = SmallRng::seed_from_u64(2);
        let t0 = Instant::now();
        let mut s = SuperSeed::new(8);
        let mut has = Bitfield::new(8);
        for p in 0..6 {
            has.set(p);
        }
        let r = s.peer_connected(1, &has, t0, &mut rng);
        let mut got: Vec<u32> = r.iter().map(|x| x.1).collect();
        got.sort_unstable();
        assert_eq!(got, vec![6, 7]);
        assert_eq!((s.assigned[6], s.assigned[7], s.unassigned), (1, 1, 6));
        s.peer_gone(1, &has);
        // 6 and 7 are back in the pool.
        assert_eq!((s.assigned[6], s.assigned[7], s.unassigned), (0, 0, 8));
        // Had they been downloaded, they would stay counted.
        s.peer_connected(3, &has, t0, &mut rng);
        let mut all = has.clone();
        all.set(6);
        all.set(7);
        s.peer_gone(3, &all);
        assert_eq!((s.assigned[6], s.assigned[7]), (1, 1));
    }

    #[test]
    fn a_peer_that_ignores_its_reveals_is_shown_everything() {
        let mut rng = SmallRng::seed_from_u64(3);
        let t0 = Instant::now();
        let n = 12;
        let none = Bitfield::new(n);
        let mut s = SuperSeed::new(n);
        let reveal = |r: Reveals| -> Vec<u32> { r.iter().map(|x| x.1).collect() };
        let first = reveal(s.peer_connected(1, &none, t0, &mut rng));
        assert_eq!(first.len(), AHEAD);
        // Nothing happens for a while: nothing new before STALE...
        assert!(s.peer_has(1, &none, t0 + STALE / 2, &mut rng).is_empty());
        // ...then the stale four go back to the pool and the peer sees all.
        let next = reveal(s.peer_has(1, &none, t0 + STALE, &mut rng));
        assert_eq!(next.len(), n as usize - AHEAD);
        assert!(
            next.iter().all(|p| !first.contains(p)),
            "{first:?} {next:?}"
        );
        for p in &first {
            assert_eq!(s.assigned[*p as usize], 0);
        }
        // Nothing more for it; others are still steered.
        assert!(s.peer_has(1, &none, t0 + STALE * 3, &mut rng).is_empty());
        assert_eq!(s.peer_connected(2, &none, t0, &mut rng).len(), AHEAD);
    }
}
