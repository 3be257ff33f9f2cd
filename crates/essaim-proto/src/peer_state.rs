//! What the swarm knows of one connected peer (BEP 3 §"peer messages").
//!
//! Each side of a connection starts choked and not interested. We track both
//! directions: our requests to the peer (`outstanding`, answered in order by
//! well-behaved peers, so kept in a queue) and the peer's requests to us
//! (`serve_queue`, bounded by [`MAX_SERVE_QUEUE`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use essaim_core::Bitfield;
use essaim_wire::extension::ExtendedHandshake;
use essaim_wire::peer::BlockRequest;

use crate::choker::RateMeter;
use crate::piece_picker::BlockRef;

/// Most requests we queue from one peer (we advertise half of it as `reqq`).
pub const MAX_SERVE_QUEUE: usize = 500;
/// Most blocks being read and sent to one peer at once.
pub const MAX_SERVING: u32 = 32;
/// Fewest and most requests we keep outstanding at one peer.
pub const MIN_REQUEST_DEPTH: u32 = 4;
pub const MAX_REQUEST_DEPTH: u32 = 1000;
/// The rate the request pipeline is sized for at least (bytes/s): over the
/// default two-second horizon, 16 requests.
pub const FLOOR_RATE: u64 = 128 * 1024;
/// Time the request pipeline covers at least, once the round trip is known.
pub const MIN_REQUEST_HORIZON: Duration = Duration::from_millis(500);
/// ... at most.
pub const MAX_REQUEST_HORIZON: Duration = Duration::from_secs(10);
/// ... while the round trip is unknown.
pub const DEFAULT_REQUEST_HORIZON: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct PeerState {
    pub fast: bool,
    pub extensions: bool,
    /// Pieces the peer has.
    pub bitfield: Bitfield,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    /// Our requests to the peer, oldest first, with when they were sent.
    pub outstanding: VecDeque<(BlockRef, Instant)>,
    /// Pieces the peer allows us to request while choked (BEP 6).
    pub allowed_fast: Vec<u32>,
    /// The peer's requests to us, not yet handed to the driver.
    pub serve_queue: VecDeque<BlockRequest>,
    /// Blocks handed to the driver and not yet reported sent.
    pub serving: u32,
    /// The peer's extended handshake (BEP 10), if received.
    pub ext: Option<ExtendedHandshake>,
    pub download: RateMeter,
    pub upload: RateMeter,
    pub last_block_at: Instant,
    /// The connection's round-trip time, as the driver measured it.
    pub rtt: Option<Duration>,
    pub connected_at: Instant,
    pub unchoked_since: Option<Instant>,
    pub snubbed: bool,
    /// Pieces this peer contributed to that failed their hash check.
    pub hash_failures: u32,
    /// Number of pieces the peer has that we want (interest without rescans).
    pub wanted: u32,
    /// Last time either side was interested in the other.
    pub last_interest: Instant,
    /// The peer's IP, if the driver told us.
    pub ip: Option<std::net::IpAddr>,
    /// We dialled it (its address is reachable).
    pub dialled: bool,
    /// It sent its DHT port (BEP 5); later ones are ignored.
    pub dht_port_seen: bool,
}

impl PeerState {
    pub fn new(num_pieces: u32, fast: bool, extensions: bool, now: Instant) -> Self {
        PeerState {
            fast,
            extensions,
            bitfield: Bitfield::new(num_pieces),
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            outstanding: VecDeque::new(),
            allowed_fast: Vec::new(),
            serve_queue: VecDeque::new(),
            serving: 0,
            ext: None,
            download: RateMeter::default(),
            upload: RateMeter::default(),
            last_block_at: now,
            rtt: None,
            connected_at: now,
            unchoked_since: None,
            snubbed: false,
            hash_failures: 0,
            wanted: 0,
            last_interest: now,
            ip: None,
            dialled: false,
            dht_port_seen: false,
        }
    }

    /// The peer's `reqq` (BEP 10), or the common default of 250.
    pub fn reqq(&self) -> u32 {
        self.ext
            .as_ref()
            .and_then(|e| e.reqq)
            .unwrap_or(250)
            .clamp(1, MAX_REQUEST_DEPTH)
    }

    /// How many requests to keep outstanding: the measured rate over
    /// [`PeerState::request_horizon`], but never less than
    /// [`FLOOR_RATE`] over it (so that a new peer's pipeline starts wide
    /// enough to measure a rate at all) nor [`MIN_REQUEST_DEPTH`]; at most
    /// the peer's reqq.
    pub fn request_depth(&mut self, now: Instant) -> u32 {
        let rate = self.download.rate(now).max(FLOOR_RATE);
        let horizon = self.request_horizon().as_millis() as u64;
        let by_rate = (rate.saturating_mul(horizon) / 1000 / u64::from(essaim_core::BLOCK_SIZE))
            .min(u64::from(MAX_REQUEST_DEPTH)) as u32;
        by_rate.max(MIN_REQUEST_DEPTH).min(self.reqq())
    }

    /// How much time the requests outstanding at this peer should cover:
    /// three round trips, at least [`MIN_REQUEST_HORIZON`] (for the peer's
    /// disk and scheduling), or [`DEFAULT_REQUEST_HORIZON`] until the round
    /// trip is known. Always more than one round trip, so the pipeline
    /// cannot shrink itself: with fewer requests than a round trip's worth
    /// the rate falls, and the depth with it. No longer than needed: every
    /// request queued at a peer whose upload is shared waits behind the
    /// others, and a piece forwarded late slows the whole swarm (with a
    /// fixed two seconds, `bench/swarm.sh 20` ended at 1.10–1.13× the
    /// bound; with half a second at 1.05–1.08×, with one second at
    /// 1.06–1.10×).
    ///
    /// Known limit: the kernel's round trip leaves out the time the peer
    /// takes to answer (its disk, its queue). A peer that answers later
    /// than the horizon gets only the requests that fit in it, which its
    /// rate then shrinks towards [`FLOOR_RATE`] × horizon per answer.
    /// From this side, such a peer looks the same as our own requests
    /// queued at it; telling them apart takes probing (a deeper pipeline
    /// now and then, kept if the rate follows), not done yet. The fixed
    /// two seconds had the same limit for answers slower than that.
    pub fn request_horizon(&self) -> Duration {
        match self.rtt {
            Some(rtt) => rtt
                .saturating_mul(3)
                .clamp(MIN_REQUEST_HORIZON, MAX_REQUEST_HORIZON),
            None => DEFAULT_REQUEST_HORIZON,
        }
    }

    pub fn is_outstanding(&self, r: BlockRef) -> bool {
        self.outstanding.iter().any(|(o, _)| *o == r)
    }

    /// Removes an outstanding request; returns whether it was there.
    pub fn take_outstanding(&mut self, r: BlockRef) -> bool {
        // Answers usually come in order: look at the front first.
        if let Some(i) = self.outstanding.iter().position(|(o, _)| *o == r) {
            self.outstanding.remove(i);
            true
        } else {
            false
        }
    }

    pub fn is_seed(&self) -> bool {
        self.bitfield.is_full()
    }
}
