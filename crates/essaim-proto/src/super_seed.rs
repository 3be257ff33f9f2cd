//! Initial seeding: send every piece once before any piece twice.
//!
//! A seed whose uplink is the bottleneck loses time for every piece it
//! sends twice while its leechers' uplinks sit idle. Like BEP 16
//! (super-seeding), the seed hides its pieces and reveals them with `have`
//! messages, each piece to one peer: each peer downloads different pieces
//! from the seed and trades them with the others.
//!
//! Pieces are revealed only to the peers the seed has unchoked, the ones
//! that can fetch them now; a choked peer could not, and a piece left
//! waiting for it would be a piece nobody fetches. A hidden seed looks
//! empty, so its peers are not interested: the swarm lets the choker pick
//! among every peer that lacks pieces ([`SuperSeed::wants_slot`]), and an
//! unchoked peer is shown [`AHEAD`] pieces at once.
//!
//! Unlike BEP 16 as libtorrent implements it, a peer is not made to wait
//! until its previous piece is seen elsewhere: as soon as it starts
//! requesting a piece revealed to it, it is shown a new one, so that
//! [`AHEAD`] unstarted pieces are always waiting for it and the seed's
//! uplink never idles. When the seed chokes a peer, what it had not
//! finished goes back to the pool for the next unchoked peer. A revealed
//! piece the peer passes over while it starts [`SKIPPED`] others goes back
//! too; a peer that neither requests nor receives anything for [`STALE`]
//! although pieces wait for it (it wants only some files, say) is shown
//! everything and no longer steered. The mode ends when every piece is held by some peer: then
//! everything is announced and the seed is an ordinary seed. (Ending it as
//! soon as every piece has been *revealed* would let the peers fetch the
//! last ones twice from the seed.)
//!
//! Invariants: `assigned[p]` counts the peers that were revealed `p` and
//! either still work on it (unchoked, not done) or got it; a piece is
//! revealed to a peer at most once; `fresh` counts the pieces with
//! `assigned == 0` that no peer holds, `undone` the pieces no peer holds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use essaim_core::Bitfield;
use rand::Rng;

use crate::swarm::PeerKey;

/// Revealed pieces a peer has not started yet, kept waiting for it.
pub const AHEAD: usize = 4;
/// A revealed piece passed over while the peer started this many others
/// goes back to the pool (the peer does not seem to want it).
pub const SKIPPED: u32 = 16;
/// An unchoked peer with revealed pieces waiting that neither requests nor
/// receives anything for this long is shown every piece from then on.
pub const STALE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Peer {
    /// Pieces revealed to this peer (announced with `have`).
    announced: Bitfield,
    /// Revealed pieces the peer has not requested from us nor got, with
    /// the value of `starts` when they were revealed.
    unstarted: Vec<(u32, u32)>,
    /// Revealed pieces the peer is fetching from us.
    started: Vec<u32>,
    /// Pieces started so far.
    starts: u32,
    /// Whether we have it unchoked.
    unchoked: bool,
    /// Its unchoke, its last request to us or our last block to it.
    active_at: Instant,
    /// Shown everything: it left revealed pieces untouched, so it is not
    /// steered any more.
    open: bool,
}

#[derive(Debug)]
pub struct SuperSeed {
    assigned: Vec<u32>,
    held: Bitfield,
    fresh: u32,
    undone: u32,
    peers: BTreeMap<PeerKey, Peer>,
    active: bool,
}

/// Pieces to announce to a peer with `have`.
pub type Reveals = Vec<(PeerKey, u32)>;

impl SuperSeed {
    pub fn new(num_pieces: u32) -> Self {
        SuperSeed {
            assigned: vec![0; num_pieces as usize],
            held: Bitfield::new(num_pieces),
            fresh: num_pieces,
            undone: num_pieces,
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

    /// Whether `peer` is a candidate for an upload slot although it may not
    /// be interested: a peer of a hidden seed is not interested until it is
    /// shown pieces, and it is shown pieces once unchoked. (The swarm asks
    /// only for peers that lack pieces.) With no fresh piece left, it waits
    /// for pieces to come back: from a peer that leaves, goes idle, or
    /// gives up its slot.
    pub fn wants_slot(&self, peer: PeerKey) -> bool {
        self.active && self.peers.get(&peer).is_some_and(|p| !p.open)
    }

    /// A new peer. Nothing is revealed before it is unchoked.
    pub fn peer_connected(&mut self, peer: PeerKey, now: Instant) {
        if !self.active {
            return;
        }
        self.peers.insert(
            peer,
            Peer {
                announced: Bitfield::new(self.assigned.len() as u32),
                unstarted: Vec::new(),
                started: Vec::new(),
                starts: 0,
                unchoked: false,
                active_at: now,
                open: false,
            },
        );
    }

    /// We unchoked `peer`: its first pieces to fetch.
    pub fn peer_unchoked(
        &mut self,
        peer: PeerKey,
        peer_has: &Bitfield,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Reveals {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Vec::new();
        };
        p.unchoked = true;
        p.active_at = now;
        self.top_up(peer, peer_has, now, rng)
    }

    /// We choked `peer`: the pieces it has not finished go to others.
    pub fn peer_choked(&mut self, peer: PeerKey, peer_has: &Bitfield) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.unchoked = false;
        self.take_back(peer, peer_has);
    }

    /// Everything shown to `peer` that it has not got goes back to the pool.
    fn take_back(&mut self, peer: PeerKey, peer_has: &Bitfield) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let back: Vec<u32> = p
            .unstarted
            .drain(..)
            .map(|(x, _)| x)
            .chain(p.started.drain(..))
            .filter(|&x| !peer_has.get(x))
            .collect();
        for piece in back {
            self.unassign(piece);
        }
    }

    /// We sent `peer` a block: it is busy fetching, not ignoring its
    /// pieces (its requests may wait in our queue for a long time).
    pub fn peer_served(&mut self, peer: PeerKey, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.active_at = now;
        }
    }

    /// Some peer holds `piece` (it said so with `have` or a bitfield).
    pub fn piece_held(&mut self, piece: u32) {
        if !self.active || piece as usize >= self.assigned.len() || self.held.get(piece) {
            return;
        }
        self.held.set(piece);
        self.undone -= 1;
        if self.assigned[piece as usize] == 0 {
            self.fresh -= 1;
        }
        if self.undone == 0 {
            self.active = false;
        }
    }

    /// No connected peer holds `piece` any more (they left, or a new
    /// bitfield took it back): unless a peer is fetching it from us, it is
    /// fresh again.
    pub fn piece_lost(&mut self, piece: u32) {
        if !self.active || !self.held.get(piece) {
            return;
        }
        self.held.clear(piece);
        self.undone += 1;
        let working = self
            .peers
            .values()
            .filter(|p| p.started.contains(&piece) || p.unstarted.iter().any(|&(x, _)| x == piece))
            .count() as u32;
        if let Some(a) = self.assigned.get_mut(piece as usize) {
            *a = working;
            if working == 0 {
                self.fresh += 1;
            }
        }
    }

    /// A peer's whole bitfield: every piece it holds.
    pub fn pieces_held(&mut self, bits: &Bitfield) {
        for piece in bits.iter_set() {
            self.piece_held(piece);
        }
    }

    /// The peer's pieces changed (a `have`, or a bitfield), or time
    /// passed: the revealed pieces it now has are done, passed-over ones
    /// are taken back, and it is shown new ones.
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
        p.active_at = now;
        if let Some(i) = p.unstarted.iter().position(|&(x, _)| x == piece) {
            p.unstarted.swap_remove(i);
            p.started.push(piece);
            p.starts = p.starts.wrapping_add(1);
            return self.top_up(peer, peer_has, now, rng);
        }
        if p.announced.get(piece) && !p.started.contains(&piece) && !peer_has.get(piece) {
            // Shown earlier and taken back (it was choked, or passed it
            // over): it wants it after all, so it counts again.
            p.started.push(piece);
            p.starts = p.starts.wrapping_add(1);
            self.assign(piece);
        }
        Vec::new()
    }

    fn assign(&mut self, piece: u32) {
        let Some(a) = self.assigned.get_mut(piece as usize) else {
            return;
        };
        if *a == 0 && !self.held.get(piece) {
            self.fresh -= 1;
        }
        *a = a.saturating_add(1);
    }

    fn unassign(&mut self, piece: u32) {
        if let Some(a) = self.assigned.get_mut(piece as usize) {
            *a = a.saturating_sub(1);
            if *a == 0 && !self.held.get(piece) {
                self.fresh += 1;
            }
        }
    }

    /// The peer left: what it never got goes back to the pool.
    pub fn peer_gone(&mut self, peer: PeerKey, peer_had: &Bitfield) {
        self.take_back(peer, peer_had);
        self.peers.remove(&peer);
    }

    /// Keeps [`AHEAD`] fresh unstarted pieces revealed to an unchoked
    /// `peer`.
    fn top_up(
        &mut self,
        peer: PeerKey,
        peer_has: &Bitfield,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Reveals {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Vec::new();
        };
        if !self.active || !p.unchoked || p.open {
            return Vec::new();
        }
        let waiting = !p.unstarted.is_empty() || !p.started.is_empty();
        if waiting && now.saturating_duration_since(p.active_at) >= STALE {
            // Idle with pieces waiting, or stuck in one it started: all of
            // them go back (were one kept, nobody else could have it).
            self.take_back(peer, peer_has);
            return self.open_up(peer, peer_has);
        }
        if !waiting {
            // Whatever it is shown now, its wait starts now.
            p.active_at = now;
        }
        let starts = p.starts;
        let mut skipped = Vec::new();
        p.unstarted.retain(|&(x, at)| {
            let keep = starts.wrapping_sub(at) < SKIPPED;
            if !keep {
                skipped.push(x);
            }
            keep
        });
        for piece in skipped {
            self.unassign(piece);
        }
        let mut out = Vec::new();
        while let Some(p) = self.peers.get(&peer) {
            if p.unstarted.len() >= AHEAD || self.fresh == 0 {
                break;
            }
            let Some(piece) = self.pick_fresh(&p.announced, peer_has, rng) else {
                break;
            };
            self.assign(piece);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.announced.set(piece);
                p.unstarted.push((piece, p.starts));
            }
            out.push((peer, piece));
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

    /// A piece nobody holds nor works on that this peer lacks and was not
    /// shown, starting from a random place.
    fn pick_fresh(&self, announced: &Bitfield, has: &Bitfield, rng: &mut impl Rng) -> Option<u32> {
        let n = self.assigned.len() as u32;
        if n == 0 {
            return None;
        }
        let start = rng.gen_range(0..n);
        (0..n).map(|i| (start + i) % n).find(|&piece| {
            self.assigned[piece as usize] == 0
                && !self.held.get(piece)
                && !announced.get(piece)
                && !has.get(piece)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn pieces(r: Reveals) -> Vec<u32> {
        r.iter().map(|x| x.1).collect()
    }

    /// A seed of `n` pieces, its random source, the start time and an
    /// empty bitfield.
    fn setup(n: u32, seed: u64) -> (SuperSeed, SmallRng, Instant, Bitfield) {
        let rng = SmallRng::seed_from_u64(seed);
        (SuperSeed::new(n), rng, Instant::now(), Bitfield::new(n))
    }

    /// [`setup`] with peer 1 connected and unchoked, and what peer 1 was
    /// shown.
    fn one_unchoked(n: u32, seed: u64) -> (SuperSeed, SmallRng, Instant, Bitfield, Vec<u32>) {
        let (mut s, mut rng, t0, none) = setup(n, seed);
        s.peer_connected(1, t0);
        let shown = pieces(s.peer_unchoked(1, &none, t0, &mut rng));
        (s, rng, t0, none, shown)
    }

    #[test]
    fn every_piece_is_revealed_once_before_any_twice() {
        let n = 40;
        let (mut s, mut rng, t0, none) = setup(n, 1);
        let mut seen = std::collections::HashMap::new();
        for peer in 0..5u64 {
            s.peer_connected(peer, t0);
            for piece in pieces(s.peer_unchoked(peer, &none, t0, &mut rng)) {
                *seen.entry(piece).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), 20, "5 peers × 4 distinct pieces");
        // Each peer starts its pieces: more are revealed, still distinct,
        // until all 40 are out.
        for _ in 0..4 {
            for peer in 0..5u64 {
                let first = s.peers[&peer].unstarted[0].0;
                for piece in pieces(s.peer_requested(peer, first, &none, t0, &mut rng)) {
                    *seen.entry(piece).or_insert(0) += 1;
                }
            }
        }
        assert_eq!(seen.len(), 40);
        assert!(seen.values().all(|&c| c == 1), "{seen:?}");
        assert!(s.peers.values().all(|p| p.announced.count() == 8));
        // All revealed, none held yet: the mode goes on (the peers must not
        // fetch the last pieces twice), and nobody needs a new slot for
        // pieces it does not have.
        assert!(s.is_active());
        s.peer_connected(9, t0);
        assert!(s.peer_unchoked(9, &none, t0, &mut rng).is_empty());
        // The pieces arrive: once all are held, the mode ends.
        for piece in 0..n {
            assert!(s.is_active());
            s.piece_held(piece);
        }
        assert!(!s.is_active());
    }

    #[test]
    fn only_unchoked_peers_are_shown_pieces_and_a_choke_takes_them_back() {
        let n = 12;
        let (mut s, mut rng, t0, none) = setup(n, 4);
        s.peer_connected(1, t0);
        s.peer_connected(2, t0);
        // Nothing is shown to a choked peer, but it wants a slot.
        assert!(s.peer_has(1, &none, t0, &mut rng).is_empty());
        assert!(s.wants_slot(1) && s.wants_slot(2));
        let first = pieces(s.peer_unchoked(1, &none, t0, &mut rng));
        assert_eq!(first.len(), AHEAD);
        assert_eq!(s.fresh, n - AHEAD as u32);
        // It starts one and gets part of it, then is choked: all it had not
        // finished returns to the pool...
        let _ = s.peer_requested(1, first[0], &none, t0, &mut rng);
        s.peer_choked(1, &none);
        assert_eq!(s.fresh, n);
        assert!(s.assigned.iter().all(|&a| a == 0));
        // ...and goes to the next unchoked peer.
        let second = pieces(s.peer_unchoked(2, &none, t0, &mut rng));
        assert_eq!(second.len(), AHEAD);
        // Peer 1, unchoked later, asks for a piece it was shown before the
        // choke: it counts again (the seed serves it).
        let _ = s.peer_unchoked(1, &none, t0, &mut rng);
        let before = s.assigned[first[1] as usize];
        let _ = s.peer_requested(1, first[1], &none, t0, &mut rng);
        assert_eq!(s.assigned[first[1] as usize], before + 1);
    }

    #[test]
    fn pieces_the_peer_has_are_not_revealed_and_leavers_return_theirs() {
        let (mut s, mut rng, t0, _) = setup(8, 2);
        let mut has = Bitfield::new(8);
        for p in 0..6 {
            has.set(p);
        }
        s.peer_connected(1, t0);
        let mut got = pieces(s.peer_unchoked(1, &has, t0, &mut rng));
        got.sort_unstable();
        assert_eq!(got, vec![6, 7]);
        assert_eq!((s.assigned[6], s.assigned[7], s.fresh), (1, 1, 6));
        s.peer_gone(1, &has);
        // 6 and 7 are back in the pool.
        assert_eq!((s.assigned[6], s.assigned[7], s.fresh), (0, 0, 8));
        // Had they been downloaded, they would stay counted.
        s.peer_connected(3, t0);
        let _ = s.peer_unchoked(3, &has, t0, &mut rng);
        let mut all = has.clone();
        all.set(6);
        all.set(7);
        s.peer_gone(3, &all);
        assert_eq!((s.assigned[6], s.assigned[7]), (1, 1));
    }

    #[test]
    fn a_peer_that_ignores_its_reveals_is_shown_everything() {
        let n = 12;
        let (mut s, mut rng, t0, none, first) = one_unchoked(n, 3);
        assert_eq!(first.len(), AHEAD);
        // Nothing happens for a while: nothing new before STALE...
        assert!(s.peer_has(1, &none, t0 + STALE / 2, &mut rng).is_empty());
        // ...then the four go back to the pool and the peer sees all.
        let next = pieces(s.peer_has(1, &none, t0 + STALE, &mut rng));
        assert_eq!(next.len(), n as usize - AHEAD);
        assert!(
            next.iter().all(|p| !first.contains(p)),
            "{first:?} {next:?}"
        );
        for p in &first {
            assert_eq!(s.assigned[*p as usize], 0);
        }
        // Nothing more for it, no slot; others are still steered.
        assert!(s.peer_has(1, &none, t0 + STALE * 3, &mut rng).is_empty());
        assert!(!s.wants_slot(1));
        s.peer_connected(2, t0);
        assert_eq!(s.peer_unchoked(2, &none, t0, &mut rng).len(), AHEAD);
    }

    #[test]
    fn a_busy_peer_is_not_stale_but_a_passed_over_piece_goes_back() {
        let (mut s, mut rng, t0, none, shown) = one_unchoked(200, 5);
        let ignored = shown[0];
        // The peer keeps fetching (slowly: large pieces) every piece but
        // one: it is never opened up, and the ignored piece goes back to
        // the pool once SKIPPED others were started after it.
        let mut t = t0;
        for i in 0..SKIPPED {
            t += STALE / 2;
            let next = s.peers[&1]
                .unstarted
                .iter()
                .map(|&(x, _)| x)
                .find(|&x| x != ignored)
                .expect("pieces wait for it");
            let _ = s.peer_requested(1, next, &none, t, &mut rng);
            assert!(!s.peers[&1].open, "after {i} starts");
            let waiting = s.peers[&1].unstarted.iter().any(|&(x, _)| x == ignored);
            assert_eq!(waiting, i + 1 < SKIPPED, "after {} starts", i + 1);
        }
        assert_eq!(s.assigned[ignored as usize], 0);
        assert_eq!(s.peers[&1].unstarted.len(), AHEAD);
    }

    #[test]
    fn a_peer_stuck_in_a_started_piece_gives_it_back() {
        let n = 4;
        let (mut s, mut rng, t0, none, shown) = one_unchoked(n, 6);
        assert_eq!(shown.len(), 4);
        // It starts every piece (one block each), then goes silent.
        for &x in &shown {
            let _ = s.peer_requested(1, x, &none, t0, &mut rng);
        }
        assert_eq!(s.fresh, 0);
        let _ = s.peer_has(1, &none, t0 + STALE, &mut rng);
        assert_eq!(s.fresh, n, "its started pieces went back");
        // Another peer gets them.
        s.peer_connected(2, t0);
        assert_eq!(s.peer_unchoked(2, &none, t0 + STALE, &mut rng).len(), 4);
    }

    #[test]
    fn a_peer_shown_pieces_late_gets_its_full_wait() {
        let n = 4;
        let (mut s, mut rng, t0, none) = setup(n, 7);
        s.peer_connected(1, t0);
        s.peer_connected(2, t0);
        let shown = pieces(s.peer_unchoked(1, &none, t0, &mut rng));
        // Peer 2, unchoked with nothing left to show, waits.
        assert!(s.peer_unchoked(2, &none, t0, &mut rng).is_empty());
        // Much later peer 1 leaves: its pieces go to peer 2, which must
        // get STALE to start on them, not be opened up at the next tick.
        let later = t0 + STALE * 3;
        s.peer_gone(1, &none);
        assert_eq!(
            pieces(s.peer_has(2, &none, later, &mut rng)).len(),
            shown.len()
        );
        let tick = later + STALE / 2;
        assert!(s.peer_has(2, &none, tick, &mut rng).is_empty());
        assert!(!s.peers[&2].open);
    }

    #[test]
    fn pieces_held_only_by_leavers_are_fresh_again() {
        let n = 2;
        let (mut s, mut rng, t0, none, shown) = one_unchoked(n, 8);
        let mut got = Bitfield::new(n);
        got.set(shown[0]);
        s.piece_held(shown[0]);
        let _ = s.peer_has(1, &got, t0, &mut rng);
        assert_eq!((s.undone, s.fresh), (1, 0));
        // It leaves with it, and nobody else has it: it is fresh again.
        s.peer_gone(1, &got);
        s.piece_lost(shown[0]);
        assert_eq!((s.undone, s.fresh), (2, 2));
        assert!(s.is_active());
        s.peer_connected(2, t0);
        assert_eq!(s.peer_unchoked(2, &none, t0, &mut rng).len(), 2);
    }
}
