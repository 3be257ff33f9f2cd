//! The piece picker: which blocks to ask a peer for.
//!
//! Policy (BEP 3 §"piece downloading strategy", as mature clients do it):
//! 1. blocks of partially downloaded pieces first, most complete first, so
//!    that pieces finish and can be shared early;
//! 2. then a new piece, rarest first (lowest availability among connected
//!    peers), ties broken at random so that peers don't all pick alike;
//! 3. endgame: once every missing block has been requested, blocks already
//!    requested from others are requested again from this peer; the first
//!    copy to arrive wins and the others are cancelled by the caller.
//!
//! Piece states: `missing` → `partial` (some blocks requested or received)
//! → `pending` (all blocks received, being hashed) → `have`; a failed hash
//! takes a pending piece back to `missing`.
//!
//! Invariants: a piece is in at most one of `partial`, `pending`, `have`;
//! `fresh` holds exactly the pieces in none of them and not skipped (so
//! finding a new piece skips whole bytes of done pieces instead of testing
//! every piece: picking stays cheap as the download nears its end);
//! a block's request count is the number of peers that have it outstanding.

use std::collections::HashMap;

use essaim_core::{Bitfield, Layout};
use rand::Rng;

/// A block: piece index and block index within the piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRef {
    pub piece: u32,
    pub block: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockState {
    Missing,
    /// Outstanding at this many peers.
    Requested(u16),
    Received,
}

#[derive(Debug, Clone)]
struct Partial {
    blocks: Vec<BlockState>,
    received: u32,
}

/// What happened to a block that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReceived {
    /// We didn't want it (already have it, or not a block of ours).
    Unwanted,
    /// Stored; the piece still misses blocks.
    Stored,
    /// Stored, and it completed the piece: hash it next.
    PieceComplete,
}

#[derive(Debug, Clone)]
pub struct PiecePicker {
    layout: Layout,
    have: Bitfield,
    pending: Bitfield,
    /// Pieces we don't want (file selection); never picked.
    skip: Bitfield,
    /// Pieces to start: neither verified, pending, partial nor skipped.
    fresh: Bitfield,
    availability: Vec<u32>,
    partial: HashMap<u32, Partial>,
}

impl PiecePicker {
    pub fn new(layout: Layout, have: Bitfield) -> Self {
        let n = layout.num_pieces();
        let mut fresh = Bitfield::full(n);
        for p in have.iter_set() {
            fresh.clear(p);
        }
        PiecePicker {
            availability: vec![0; n as usize],
            fresh,
            have,
            pending: Bitfield::new(n),
            skip: Bitfield::new(n),
            partial: HashMap::new(),
            layout,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn have(&self) -> &Bitfield {
        &self.have
    }
    /// Whether every wanted piece is verified.
    pub fn is_complete(&self) -> bool {
        if self.skip.none_set() {
            return self.have.is_full();
        }
        self.have.count() + self.skip.iter_set().filter(|&p| !self.have.get(p)).count() as u32
            == self.layout.num_pieces()
    }
    /// Excludes a piece from picking (files the user did not select).
    pub fn set_skipped(&mut self, piece: u32) {
        self.skip.set(piece);
        self.fresh.clear(piece);
    }
    /// Wants a skipped piece again (a file selected at run time).
    pub fn set_unskipped(&mut self, piece: u32) {
        if !self.skip.clear(piece) {
            return;
        }
        if !self.have.get(piece) && !self.pending.get(piece) && !self.partial.contains_key(&piece) {
            self.fresh.set(piece);
        }
    }
    pub fn is_skipped(&self, piece: u32) -> bool {
        self.skip.get(piece)
    }
    /// Whether `piece` is still to download: neither verified nor skipped.
    pub fn wants(&self, piece: u32) -> bool {
        !self.have.get(piece) && !self.skip.get(piece)
    }
    pub fn availability(&self, piece: u32) -> u32 {
        self.availability.get(piece as usize).copied().unwrap_or(0)
    }

    /// Whether we want anything this peer has.
    pub fn is_interesting(&self, peer: &Bitfield) -> bool {
        let (have, skip) = (self.have.as_bytes(), self.skip.as_bytes());
        peer.len() == self.have.len()
            && peer
                .as_bytes()
                .iter()
                .zip(have.iter().zip(skip))
                .any(|(theirs, (h, s))| theirs & !h & !s != 0)
    }

    pub fn peer_has(&mut self, piece: u32) {
        if let Some(a) = self.availability.get_mut(piece as usize) {
            *a = a.saturating_add(1);
        }
    }
    pub fn peer_bitfield(&mut self, bits: &Bitfield) {
        for p in bits.iter_set() {
            self.peer_has(p);
        }
    }
    pub fn peer_gone(&mut self, bits: &Bitfield) {
        for p in bits.iter_set() {
            if let Some(a) = self.availability.get_mut(p as usize) {
                *a = a.saturating_sub(1);
            }
        }
    }

    /// Whether every block of every wanted piece is received or requested.
    pub fn in_endgame(&self) -> bool {
        self.fresh.none_set()
            && self
                .partial
                .values()
                .all(|pp| !pp.blocks.contains(&BlockState::Missing))
    }

    /// Picks up to `max` blocks from pieces `peer` has, marks them requested
    /// and returns them. `outstanding(b)` says whether this peer already has
    /// block `b` outstanding (so endgame never asks one peer twice).
    /// With `allow_new` false no new piece is started (memory budget).
    pub fn pick(
        &mut self,
        peer: &Bitfield,
        max: usize,
        allow_new: bool,
        outstanding: &dyn Fn(BlockRef) -> bool,
        rng: &mut impl Rng,
    ) -> Vec<BlockRef> {
        let mut out = Vec::new();
        if max == 0 {
            return out;
        }
        // 1. Partial pieces, most complete first.
        let mut partials: Vec<(u32, u32)> = self
            .partial
            .iter()
            .filter(|(p, _)| peer.get(**p))
            .map(|(p, pp)| (*p, pp.received))
            .collect();
        partials.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (piece, _) in partials {
            self.take_missing(piece, max, &mut out);
            if out.len() >= max {
                return out;
            }
        }
        // 2. New pieces, rarest first with a random tie-break.
        while allow_new && out.len() < max {
            let Some(piece) = self.rarest_new_piece(peer, rng) else {
                break;
            };
            let blocks = self.layout.blocks_in_piece(piece).unwrap_or(0) as usize;
            self.fresh.clear(piece);
            self.partial.insert(
                piece,
                Partial {
                    blocks: vec![BlockState::Missing; blocks],
                    received: 0,
                },
            );
            self.take_missing(piece, max, &mut out);
        }
        // 3. Endgame: duplicate outstanding requests.
        if out.len() < max && self.in_endgame() {
            let mut candidates: Vec<BlockRef> = Vec::new();
            for (&piece, pp) in &self.partial {
                if !peer.get(piece) {
                    continue;
                }
                for (i, b) in pp.blocks.iter().enumerate() {
                    let r = BlockRef {
                        piece,
                        block: i as u32,
                    };
                    if matches!(b, BlockState::Requested(_)) && !outstanding(r) && !out.contains(&r)
                    {
                        candidates.push(r);
                    }
                }
            }
            // Least-duplicated first.
            candidates.sort_unstable_by_key(|r| (self.request_count(*r), *r));
            for r in candidates.into_iter().take(max - out.len()) {
                self.mark_requested(r);
                out.push(r);
            }
        }
        out
    }

    /// The fresh piece `peer` has with the lowest availability; the scan
    /// starts at a random piece and wraps, so ties go to a random one.
    fn rarest_new_piece(&self, peer: &Bitfield, rng: &mut impl Rng) -> Option<u32> {
        let n = self.layout.num_pieces();
        if n == 0 || self.fresh.none_set() || peer.len() != n {
            return None;
        }
        let (theirs, fresh) = (peer.as_bytes(), self.fresh.as_bytes());
        let bytes = fresh.len();
        let start = rng.gen_range(0..n);
        let first = (start / 8) as usize;
        // Bits at or after `start` in its byte (MSB first, as on the wire).
        let from_start = 0xffu8 >> (start % 8);
        let mut best: Option<(u32, u32)> = None;
        // The start byte twice: its bits from `start` first, the ones
        // before `start` after wrapping around.
        for k in 0..=bytes {
            let i = (first + k) % bytes;
            let mut byte = theirs[i] & fresh[i];
            if k == 0 {
                byte &= from_start;
            } else if k == bytes {
                byte &= !from_start;
            }
            while byte != 0 {
                let bit = byte.leading_zeros();
                byte &= !(0x80u8 >> bit);
                let p = i as u32 * 8 + bit;
                let a = self.availability.get(p as usize).copied().unwrap_or(0);
                if best.is_none_or(|(_, ba)| a < ba) {
                    if a <= 1 {
                        return Some(p); // nothing is rarer than a piece only this peer has
                    }
                    best = Some((p, a));
                }
            }
        }
        best.map(|(p, _)| p)
    }

    fn take_missing(&mut self, piece: u32, max: usize, out: &mut Vec<BlockRef>) {
        let Some(pp) = self.partial.get_mut(&piece) else {
            return;
        };
        for (i, b) in pp.blocks.iter_mut().enumerate() {
            if out.len() >= max {
                return;
            }
            if *b == BlockState::Missing {
                *b = BlockState::Requested(1);
                out.push(BlockRef {
                    piece,
                    block: i as u32,
                });
            }
        }
    }

    fn request_count(&self, r: BlockRef) -> u16 {
        match self.block_state(r) {
            Some(BlockState::Requested(n)) => n,
            _ => 0,
        }
    }

    fn block_state(&self, r: BlockRef) -> Option<BlockState> {
        self.partial
            .get(&r.piece)
            .and_then(|pp| pp.blocks.get(r.block as usize))
            .copied()
    }

    fn mark_requested(&mut self, r: BlockRef) {
        if let Some(b) = self
            .partial
            .get_mut(&r.piece)
            .and_then(|pp| pp.blocks.get_mut(r.block as usize))
        {
            *b = match *b {
                BlockState::Missing => BlockState::Requested(1),
                BlockState::Requested(n) => BlockState::Requested(n.saturating_add(1)),
                BlockState::Received => BlockState::Received,
            };
        }
    }

    /// A request for `r` is no longer outstanding at one peer (rejected,
    /// cancelled, timed out, peer gone) without the block arriving.
    pub fn request_dropped(&mut self, r: BlockRef) {
        if let Some(b) = self
            .partial
            .get_mut(&r.piece)
            .and_then(|pp| pp.blocks.get_mut(r.block as usize))
        {
            if let BlockState::Requested(n) = *b {
                *b = if n <= 1 {
                    BlockState::Missing
                } else {
                    BlockState::Requested(n - 1)
                };
            }
        }
    }

    /// A block arrived. The caller keeps the data.
    pub fn block_received(&mut self, r: BlockRef) -> BlockReceived {
        let Some(pp) = self.partial.get_mut(&r.piece) else {
            return BlockReceived::Unwanted;
        };
        let Some(b) = pp.blocks.get_mut(r.block as usize) else {
            return BlockReceived::Unwanted;
        };
        if *b == BlockState::Received {
            return BlockReceived::Unwanted;
        }
        *b = BlockState::Received;
        pp.received += 1;
        if pp.received as usize == pp.blocks.len() {
            self.partial.remove(&r.piece);
            self.pending.set(r.piece);
            BlockReceived::PieceComplete
        } else {
            BlockReceived::Stored
        }
    }

    /// How many peers have block `r` outstanding (for endgame cancels).
    pub fn outstanding_count(&self, r: BlockRef) -> u16 {
        self.request_count(r)
    }

    /// The hash of a pending piece matched and its data is on disk.
    pub fn piece_verified(&mut self, piece: u32) {
        self.pending.clear(piece);
        self.partial.remove(&piece);
        self.fresh.clear(piece);
        self.have.set(piece);
    }

    /// The hash of a pending piece failed: download it again.
    pub fn piece_failed(&mut self, piece: u32) {
        self.pending.clear(piece);
        self.partial.remove(&piece);
        if !self.have.get(piece) && !self.skip.get(piece) {
            self.fresh.set(piece);
        }
    }

    /// Pieces with blocks in flight or received but not verified.
    pub fn partial_count(&self) -> usize {
        self.partial.len() + self.pending.count() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn picker(pieces: u32, blocks_per_piece: u32) -> PiecePicker {
        let pl = u64::from(blocks_per_piece) * u64::from(essaim_core::BLOCK_SIZE);
        let layout = Layout::new(pl, &[pl * u64::from(pieces)]).unwrap();
        PiecePicker::new(layout, Bitfield::new(pieces))
    }

    fn bits(s: &str) -> Bitfield {
        let mut b = Bitfield::new(s.len() as u32);
        for (i, c) in s.chars().enumerate() {
            if c == '1' {
                b.set(i as u32);
            }
        }
        b
    }

    fn none(_: BlockRef) -> bool {
        false
    }

    #[test]
    fn rarest_first() {
        let mut p = picker(4, 1);
        let mut rng = SmallRng::seed_from_u64(1);
        // Availability: piece 0 by 3 peers, 1 by 2, 2 by 1, 3 by 3.
        for s in ["1111", "1101", "1001"] {
            p.peer_bitfield(&bits(s));
        }
        let picked = p.pick(&bits("1111"), 1, true, &none, &mut rng);
        assert_eq!(picked, vec![BlockRef { piece: 2, block: 0 }]);
        // Piece 2 is partial now (its one block requested); next rarest is 1.
        p.peer_bitfield(&bits("0010"));
        let next = p.pick(&bits("1111"), 1, true, &none, &mut rng)[0].piece;
        assert_eq!(next, 1);
    }

    #[test]
    fn random_tie_break_spreads_choices() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..40 {
            let mut p = picker(8, 1);
            let mut rng = SmallRng::seed_from_u64(seed);
            seen.insert(p.pick(&bits("11111111"), 1, true, &none, &mut rng)[0].piece);
        }
        assert!(seen.len() >= 4, "picks: {seen:?}");
    }

    #[test]
    fn partial_pieces_first_and_only_what_the_peer_has() {
        let mut p = picker(3, 4);
        let mut rng = SmallRng::seed_from_u64(2);
        let first = p.pick(&bits("010"), 2, true, &none, &mut rng);
        assert_eq!(
            first,
            vec![
                BlockRef { piece: 1, block: 0 },
                BlockRef { piece: 1, block: 1 }
            ]
        );
        // Another peer with everything continues piece 1 before starting anew.
        let next = p.pick(&bits("111"), 3, true, &none, &mut rng);
        assert_eq!(next[0], BlockRef { piece: 1, block: 2 });
        assert_eq!(next[1], BlockRef { piece: 1, block: 3 });
        assert_ne!(next[2].piece, 1);
        // A peer with nothing we want gets nothing.
        assert!(p.pick(&bits("000"), 5, true, &none, &mut rng).is_empty());
    }

    #[test]
    fn piece_lifecycle_and_failure() {
        let mut p = picker(2, 2);
        let mut rng = SmallRng::seed_from_u64(3);
        let picked = p.pick(&bits("10"), 10, true, &none, &mut rng);
        assert_eq!(picked.len(), 2);
        assert_eq!(p.block_received(picked[0]), BlockReceived::Stored);
        assert_eq!(p.block_received(picked[0]), BlockReceived::Unwanted);
        assert_eq!(p.block_received(picked[1]), BlockReceived::PieceComplete);
        // Pending pieces are not picked again.
        assert!(p.pick(&bits("10"), 10, true, &none, &mut rng).is_empty());
        p.piece_failed(0);
        assert_eq!(p.pick(&bits("10"), 10, true, &none, &mut rng).len(), 2);
        p.block_received(BlockRef { piece: 0, block: 0 });
        p.block_received(BlockRef { piece: 0, block: 1 });
        p.piece_verified(0);
        assert!(p.have().get(0));
        assert!(!p.is_complete());
        assert!(!p.is_interesting(&bits("10")));
        assert!(p.is_interesting(&bits("01")));
    }

    #[test]
    fn dropped_requests_are_picked_again() {
        let mut p = picker(1, 2);
        let mut rng = SmallRng::seed_from_u64(4);
        let picked = p.pick(&bits("1"), 1, true, &none, &mut rng);
        p.request_dropped(picked[0]);
        assert_eq!(p.pick(&bits("1"), 1, true, &none, &mut rng), picked);
    }

    #[test]
    fn endgame_duplicates_but_never_to_the_same_peer() {
        let mut p = picker(1, 2);
        let mut rng = SmallRng::seed_from_u64(5);
        let a = p.pick(&bits("1"), 10, true, &none, &mut rng);
        assert_eq!(a.len(), 2);
        assert!(p.in_endgame());
        // The same peer (which has both outstanding) gets nothing more.
        let mine = |r: BlockRef| a.contains(&r);
        assert!(p.pick(&bits("1"), 10, true, &mine, &mut rng).is_empty());
        // Another peer gets duplicates.
        let b = p.pick(&bits("1"), 10, true, &none, &mut rng);
        assert_eq!(b.len(), 2);
        assert_eq!(p.outstanding_count(b[0]), 2);
        assert_eq!(p.block_received(b[0]), BlockReceived::Stored);
        assert_eq!(p.outstanding_count(b[0]), 0);
    }

    /// The pieces a new piece may come from, computed from scratch.
    fn startable(p: &PiecePicker) -> Vec<u32> {
        (0..p.layout.num_pieces())
            .filter(|&i| {
                !p.have.get(i) && !p.pending.get(i) && !p.skip.get(i) && !p.partial.contains_key(&i)
            })
            .collect()
    }

    proptest::proptest! {
        /// Under any sequence of events `fresh` is exactly the startable
        /// pieces, and a new piece is always one of the rarest the peer has.
        #[test]
        fn fresh_tracks_the_startable_pieces_and_picks_are_rarest(
            pieces in 1u32..70,
            have_seed in proptest::prelude::any::<u64>(),
            ops in proptest::collection::vec((0u8..6, proptest::prelude::any::<u64>()), 1..120),
        ) {
            let mut have = Bitfield::new(pieces);
            for i in 0..pieces {
                if (have_seed >> (i % 64)) & 1 == 1 && i % 3 == 0 {
                    have.set(i);
                }
            }
            let layout = Layout::new(16384, &[16384 * u64::from(pieces)]).unwrap();
            let mut p = PiecePicker::new(layout, have);
            let mut rng = SmallRng::seed_from_u64(have_seed);
            let mut requested: Vec<BlockRef> = Vec::new();
            for (op, x) in ops {
                let mut peer = Bitfield::new(pieces);
                for i in 0..pieces {
                    if (x >> (i % 64)) & 1 == 1 {
                        peer.set(i);
                    }
                }
                match op {
                    0 => p.peer_bitfield(&peer),
                    1 => {
                        // As in a swarm, the peer's own pieces count.
                        p.peer_bitfield(&peer);
                        let before = startable(&p);
                        let partial_before: Vec<u32> = p.partial.keys().copied().collect();
                        let rarest = before
                            .iter()
                            .filter(|&&i| peer.get(i))
                            .map(|&i| p.availability(i))
                            .min();
                        let got = p.pick(&peer, 1, true, &none, &mut rng);
                        if let Some(r) = got.first() {
                            proptest::prop_assert!(
                                before.contains(&r.piece) || partial_before.contains(&r.piece),
                                "picked piece {} was neither startable nor partial", r.piece
                            );
                            if before.contains(&r.piece) {
                                proptest::prop_assert_eq!(Some(p.availability(r.piece)), rarest);
                            }
                        }
                        requested.extend(got);
                    }
                    2 => {
                        if let Some(r) = requested.pop() {
                            if p.block_received(r) == BlockReceived::PieceComplete {
                                if x % 2 == 0 {
                                    p.piece_verified(r.piece);
                                } else {
                                    p.piece_failed(r.piece);
                                }
                            }
                        }
                    }
                    3 => p.set_skipped((x % u64::from(pieces)) as u32),
                    4 => {
                        if let Some(r) = requested.pop() {
                            p.request_dropped(r);
                        }
                    }
                    _ => p.piece_failed((x % u64::from(pieces)) as u32),
                }
                let fresh: Vec<u32> = p.fresh.iter_set().collect();
                proptest::prop_assert_eq!(fresh, startable(&p));
            }
        }
    }

    #[test]
    fn skipped_pieces_are_never_picked() {
        let mut p = picker(2, 1);
        let mut rng = SmallRng::seed_from_u64(6);
        p.set_skipped(0);
        let picked = p.pick(&bits("11"), 10, true, &none, &mut rng);
        assert_eq!(picked, vec![BlockRef { piece: 1, block: 0 }]);
        p.block_received(picked[0]);
        p.piece_verified(1);
        assert!(p.is_complete());
    }
}
