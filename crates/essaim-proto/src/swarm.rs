//! The swarm: one torrent's state machine over all its peer connections.
//!
//! # Contract
//! The driver owns the sockets, the disk and the clock. It tells the swarm
//! what happened through `handle_*` methods and then drains
//! [`Swarm::poll_output`] until it returns `None`, carrying out each
//! [`Output`] in order:
//! - `Send`: encode and write the message to that peer;
//! - `Serve`: read the block from disk and send it as a `piece` message,
//!   then call [`Swarm::handle_block_sent`];
//! - `CheckPiece`: hash the data; if it matches write it to disk; then call
//!   [`Swarm::handle_piece_checked`] (a piece counts as ours only then);
//! - `Disconnect`: close the connection (and call
//!   [`Swarm::handle_peer_disconnected`], as for any closed connection).
//!
//! [`Swarm::handle_tick`] should be called about once a second: it runs the
//! choker every 10 s and times out requests of snubbed peers.
//!
//! # Invariants
//! - a block is outstanding at a peer iff it is in that peer's
//!   `outstanding` queue, and the picker's request count for it equals the
//!   number of peers that have it outstanding;
//! - piece data is accepted only for blocks we requested from that peer
//!   (anything else is dropped, never written);
//! - memory for partial pieces is bounded by [`SwarmConfig::partial_budget`];
//! - no block is requested while the pieces waiting for their check reach
//!   [`SwarmConfig::check_budget`] (the disk holds back the network).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use essaim_core::{Bitfield, InfoHash, Layout, BLOCK_SIZE};
use essaim_wire::extension::{self, ExtendedHandshake, MetadataMessage};
use essaim_wire::peer::{BlockRequest, Message};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::choker::{ChokeMode, Choker, ChokerPeer, RECHOKE_INTERVAL};
use crate::peer_state::{PeerState, MAX_SERVE_QUEUE, MAX_SERVING};
use crate::pex::{filter_added, PexState};
use crate::piece_picker::{BlockReceived, BlockRef, PiecePicker};
use crate::super_seed::{Reveals, SuperSeed};

/// The driver's handle for one connection.
pub type PeerKey = u64;

/// A peer waiting this long on every request we sent it is snubbed.
pub const SNUB_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection where neither side wants anything for this long is closed.
pub const USELESS_AFTER: Duration = Duration::from_secs(300);
/// Pieces failed this many times by a peer get it disconnected and banned.
pub const MAX_HASH_FAILURES: u32 = 2;

#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Regular upload slots (one optimistic slot comes on top).
    pub upload_slots: usize,
    /// Bytes of partially downloaded pieces kept in memory at most.
    pub partial_budget: u64,
    /// Bytes of complete pieces handed to the driver ([`Output::CheckPiece`])
    /// and not yet checked past which no block is requested until a check
    /// comes back (at least two pieces): a disk slower than the network
    /// slows the download instead of filling memory. Blocks
    /// already requested still come, so this bounds the pieces waiting at
    /// this plus the requests in flight.
    pub check_budget: u64,
    /// Our client name for the extended handshake (`v`).
    pub client: String,
    /// Our listening port for the extended handshake (`p`).
    pub listen_port: Option<u16>,
    pub seed: u64,
    /// Start as an initial seed that reveals pieces one by one so that each
    /// goes out once before any twice ([`crate::super_seed`]).
    pub super_seed: bool,
    /// Peer exchange (BEP 11); off for private torrents (BEP 27).
    pub pex: bool,
    /// Our DHT node's UDP port, sent in a `port` message (BEP 5) to peers
    /// whose handshake has the DHT bit; `None`: no DHT.
    pub dht_port: Option<u16>,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            upload_slots: 4,
            partial_budget: 8 * 1024 * 1024,
            check_budget: 2 * 1024 * 1024,
            client: concat!("essaim ", env!("CARGO_PKG_VERSION")).to_owned(),
            listen_port: None,
            seed: 0,
            super_seed: true,
            pex: true,
            dht_port: None,
        }
    }
}

/// Why we close a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The peer broke the protocol (the text says how).
    Protocol(String),
    /// The peer sent data that failed hash checks: ban its address.
    Banned,
    /// Both sides are seeds, or neither wants anything: nothing to do.
    Useless,
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Output {
    Send {
        peer: PeerKey,
        msg: Message,
    },
    Serve {
        peer: PeerKey,
        req: BlockRequest,
    },
    CheckPiece {
        piece: u32,
        data: Vec<u8>,
    },
    Disconnect {
        peer: PeerKey,
        reason: DisconnectReason,
    },
    /// A piece was verified and is on disk.
    PieceVerified(u32),
    /// Every wanted piece is verified and on disk.
    Completed,
    /// Peers learnt through peer exchange (BEP 11), already filtered.
    PeersDiscovered(Vec<std::net::SocketAddr>),
    /// A peer's DHT node (its IP, the port of its `port` message, BEP 5):
    /// worth a ping. At most one per connection.
    DhtNode(std::net::SocketAddr),
    /// The info dictionary of a magnet link, complete and matching the
    /// infohash (from [`crate::magnet::MagnetPhase`] only).
    MetadataReceived(Bytes),
}

/// Counters for the user interface and trackers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SwarmStats {
    /// Payload bytes received in blocks we asked for.
    pub downloaded: u64,
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Bytes of verified pieces.
    pub verified: u64,
    pub pieces_have: u32,
    pub num_pieces: u32,
    pub peers: usize,
    pub download_rate: u64,
    pub upload_rate: u64,
    /// Bytes dropped: unrequested, duplicate, or failing the hash.
    pub wasted: u64,
    pub hash_failures: u32,
}

/// Per-peer figures, for the user interface and the demo's table.
#[derive(Debug, Clone, Copy)]
pub struct PeerStats {
    pub key: PeerKey,
    pub downloaded: u64,
    pub uploaded: u64,
    pub download_rate: u64,
    pub upload_rate: u64,
    pub am_choking: bool,
    pub peer_choking: bool,
    pub am_interested: bool,
    pub peer_interested: bool,
    pub is_seed: bool,
}

/// What a user interface shows of a peer beyond its figures.
#[derive(Debug, Clone)]
pub struct PeerDetail {
    pub key: PeerKey,
    /// The client name of its extended handshake (`v`).
    pub client: Option<String>,
    /// Pieces it has.
    pub pieces: u32,
    pub snubbed: bool,
    pub fast: bool,
}

struct PieceBuffer {
    data: Vec<u8>,
    /// Who sent each block.
    senders: Vec<Option<PeerKey>>,
}

/// A failed download of a piece: who sent each block, and the block's
/// SHA-1. When the piece later passes, every sender whose block differs
/// from the good data lied (libtorrent calls this smart ban).
type FailedAttempt = Vec<(Option<PeerKey>, [u8; 20])>;
/// Bytes of piece buffers kept for reuse, at most (and at least two
/// buffers). The number of buffers in use swings by a few as pieces
/// complete and come back from their check; with only two kept, every
/// swing freed buffers and mapped new ones, whose pages the kernel then
/// faulted in and zeroed again (60–100 thousand page faults in a 1 GiB
/// download with 1 MiB pieces, against 3–20 thousand with 4 MiB kept).
const SPARE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Failed attempts remembered per piece.
const MAX_FAILED_ATTEMPTS: usize = 4;

pub struct Swarm {
    info_hash: InfoHash,
    layout: Layout,
    /// Raw `info` bytes, served to peers over ut_metadata (BEP 9).
    metadata: Option<Bytes>,
    picker: PiecePicker,
    /// Ordered, so that iteration (rechoke, slot filling, request filling)
    /// and with it the whole machine is deterministic for a given seed.
    peers: BTreeMap<PeerKey, PeerState>,
    buffers: HashMap<u32, PieceBuffer>,
    /// Piece buffers handed back by the driver ([`Swarm::recycle_buffer`]),
    /// reused so that a download does not allocate (and zero) a buffer per
    /// piece: at most [`SPARE_BUFFER_BYTES`] (or two buffers), and none
    /// once complete.
    spare_buffers: Vec<Vec<u8>>,
    /// Who sent the blocks of pieces being checked (to blame on a bad hash).
    pending_senders: HashMap<u32, Vec<Option<PeerKey>>>,
    failed_attempts: HashMap<u32, Vec<FailedAttempt>>,
    choker: Choker,
    config: SwarmConfig,
    rng: SmallRng,
    out: VecDeque<Output>,
    stats: SwarmStats,
    last_rechoke: Option<Instant>,
    completed: bool,
    /// Initial seeding, while it lasts.
    super_seed: Option<SuperSeed>,
    pex: Option<PexState>,
}

impl Swarm {
    /// `have` are the pieces already verified on disk.
    pub fn new(
        info_hash: InfoHash,
        layout: Layout,
        have: Bitfield,
        metadata: Option<Bytes>,
        config: SwarmConfig,
    ) -> Self {
        let completed = have.is_full();
        let config_super_seed = config.super_seed;
        let config_pex = config.pex;
        let num_pieces = layout.num_pieces();
        let stats = SwarmStats {
            num_pieces: layout.num_pieces(),
            pieces_have: have.count(),
            verified: have
                .iter_set()
                .map(|p| u64::from(layout.piece_size(p).unwrap_or(0)))
                .sum(),
            ..SwarmStats::default()
        };
        Swarm {
            info_hash,
            picker: PiecePicker::new(layout.clone(), have),
            layout,
            metadata,
            peers: BTreeMap::new(),
            buffers: HashMap::new(),
            spare_buffers: Vec::new(),
            pending_senders: HashMap::new(),
            failed_attempts: HashMap::new(),
            choker: Choker::new(config.upload_slots),
            rng: SmallRng::seed_from_u64(config.seed),
            config,
            out: VecDeque::new(),
            stats,
            last_rechoke: None,
            super_seed: (completed && config_super_seed).then(|| SuperSeed::new(num_pieces)),
            pex: config_pex.then(PexState::default),
            completed,
        }
    }

    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn have(&self) -> &Bitfield {
        self.picker.have()
    }
    pub fn is_complete(&self) -> bool {
        self.picker.is_complete()
    }
    /// Excludes a piece from downloading (unselected files).
    pub fn skip_piece(&mut self, piece: u32) {
        let was_wanted = self.picker.wants(piece);
        self.picker.set_skipped(piece);
        self.completed = self.picker.is_complete();
        if was_wanted {
            // Peers' `wanted` counts skipped pieces no more.
            let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
            for key in keys {
                if let Some(p) = self.peers.get_mut(&key) {
                    if p.bitfield.get(piece) {
                        p.wanted = p.wanted.saturating_sub(1);
                    }
                }
                self.update_interest(key);
            }
        }
    }

    /// Changes which pieces are wanted at run time (file selection):
    /// `skipped` holds the pieces not to download. Peers' interest follows;
    /// a torrent that wants nothing more it lacks completes
    /// ([`Output::Completed`]), and one that wants pieces again is no longer
    /// complete ([`Swarm::is_complete`]).
    pub fn set_skipped(&mut self, skipped: &Bitfield, now: Instant) {
        let n = self.layout.num_pieces();
        for piece in 0..n {
            match (skipped.get(piece), self.picker.is_skipped(piece)) {
                (true, false) => self.picker.set_skipped(piece),
                (false, true) => self.picker.set_unskipped(piece),
                _ => {}
            }
        }
        let picker = &self.picker;
        for p in self.peers.values_mut() {
            p.wanted = p.bitfield.iter_set().filter(|&i| picker.wants(i)).count() as u32;
        }
        let complete = self.picker.is_complete();
        if complete && !self.completed {
            self.completed = true;
            self.spare_buffers = Vec::new();
            self.out.push_back(Output::Completed);
        } else if !complete {
            self.completed = false;
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in keys {
            self.update_interest(key);
            self.fill_requests(key, now);
        }
    }

    /// Largest message a peer may send us, for the framing decoder.
    pub fn max_message_len(&self) -> u32 {
        let bitfield = Bitfield::byte_len(self.layout.num_pieces()) as u32 + 1;
        bitfield.max(BLOCK_SIZE + 13).max(64 * 1024)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn stats(&mut self, now: Instant) -> SwarmStats {
        let mut s = self.stats;
        s.peers = self.peers.len();
        s.download_rate = self.peers.values_mut().map(|p| p.download.rate(now)).sum();
        s.upload_rate = self.peers.values_mut().map(|p| p.upload.rate(now)).sum();
        s
    }

    pub fn peer_stats(&mut self, now: Instant) -> Vec<PeerStats> {
        self.peers
            .iter_mut()
            .map(|(&key, p)| PeerStats {
                key,
                downloaded: p.download.total(),
                uploaded: p.upload.total(),
                download_rate: p.download.rate(now),
                upload_rate: p.upload.rate(now),
                am_choking: p.am_choking,
                peer_choking: p.peer_choking,
                am_interested: p.am_interested,
                peer_interested: p.peer_interested,
                is_seed: p.is_seed(),
            })
            .collect()
    }

    pub fn peer_details(&self) -> Vec<PeerDetail> {
        self.peers
            .iter()
            .map(|(&key, p)| PeerDetail {
                key,
                client: p.ext.as_ref().and_then(|e| e.client.clone()),
                pieces: p.bitfield.count(),
                snubbed: p.snubbed,
                fast: p.fast,
            })
            .collect()
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    fn send(&mut self, peer: PeerKey, msg: Message) {
        self.out.push_back(Output::Send { peer, msg });
    }

    fn disconnect(&mut self, peer: PeerKey, reason: DisconnectReason) {
        self.out.push_back(Output::Disconnect { peer, reason });
    }

    /// The peer's handshake has the DHT bit (BEP 5): if we run a DHT
    /// node, tell it our port. Call right after
    /// [`Swarm::handle_peer_connected`], so the bitfield goes first.
    pub fn handle_peer_dht(&mut self, peer: PeerKey) {
        if let (Some(port), true) = (self.config.dht_port, self.peers.contains_key(&peer)) {
            self.send(peer, Message::Port(port));
        }
    }

    /// A connection finished its handshake. `fast` and `extensions` are the
    /// BEP 6 and BEP 10 bits both sides set; `peer_ip` is echoed as `yourip`.
    pub fn handle_peer_connected(
        &mut self,
        peer: PeerKey,
        fast: bool,
        extensions: bool,
        peer_ip: Option<std::net::IpAddr>,
        now: Instant,
    ) {
        let mut state = PeerState::new(self.layout.num_pieces(), fast, extensions, now);
        state.ip = peer_ip;
        self.peers.insert(peer, state);
        if let Some(pex) = self.pex.as_mut() {
            pex.peer_connected(peer, now);
        }
        self.send_bitfield(peer, fast);
        if extensions {
            self.send_extended_handshake(peer, peer_ip);
        }
        if let Some(ss) = self.super_seed.as_mut() {
            // Shown pieces once unchoked: a free slot is its at once.
            ss.peer_connected(peer, now);
            self.fill_slots(now);
        }
    }

    /// A connection of a magnet link's first phase
    /// ([`crate::magnet::MagnetPhase`]), now that the torrent's pieces are
    /// known: what it said of its pieces, choke and interest counts as if
    /// said now. It was told we had nothing (`have_none`, or no bitfield),
    /// so the pieces we have since found on disk are announced with `have`
    /// (a bitfield may only open a connection), and our extended handshake
    /// goes again, now with the metadata size. A peer whose early bitfield
    /// or `have` does not fit the piece count is disconnected.
    pub fn handle_peer_adopted(
        &mut self,
        peer: PeerKey,
        early: crate::magnet::EarlyPeer,
        now: Instant,
    ) {
        let n = self.layout.num_pieces();
        let bits = match early.bitfield(n) {
            Ok(b) => b,
            Err(why) => {
                self.disconnect(peer, DisconnectReason::Protocol(why));
                return;
            }
        };
        let mut state = PeerState::new(n, early.fast, early.extensions, now);
        state.ip = early.ip;
        state.ext = early.ext;
        state.peer_choking = early.peer_choking;
        state.peer_interested = early.peer_interested;
        state.dht_port_seen = early.dht_port_seen;
        let listen = match (early.dialled, early.ip, state.ext.as_ref()) {
            (None, Some(ip), Some(ext)) => {
                ext.listen_port.map(|p| std::net::SocketAddr::new(ip, p))
            }
            _ => None,
        };
        self.peers.insert(peer, state);
        if let Some(pex) = self.pex.as_mut() {
            pex.peer_connected(peer, now);
            if let Some(addr) = listen {
                pex.peer_address(peer, addr, 0);
            }
        }
        if let Some(addr) = early.dialled {
            self.handle_peer_address(peer, addr);
        }
        if self.super_seed.is_none() {
            let pieces: Vec<u32> = self.picker.have().iter_set().collect();
            for piece in pieces {
                self.send(peer, Message::Have { piece });
            }
        }
        if early.extensions {
            self.send_extended_handshake(peer, early.ip);
        }
        if let Some(ss) = self.super_seed.as_mut() {
            ss.peer_connected(peer, now);
        }
        match bits {
            Some(bits) => self.set_peer_bitfield(peer, bits, now),
            None => self.update_interest(peer),
        }
        if self
            .peers
            .get(&peer)
            .is_some_and(|p| p.peer_interested && p.am_choking)
            || self.super_seed.is_some()
        {
            self.fill_slots(now);
        }
    }

    /// Our opening statement of what we have (BEP 3 bitfield, or BEP 6
    /// `have_all`/`have_none`).
    fn send_bitfield(&mut self, peer: PeerKey, fast: bool) {
        let have = self.picker.have();
        let hiding = self.super_seed.is_some();
        let msg = if hiding {
            // Initial seeding: we look empty, then reveal piece by piece.
            if fast {
                Message::HaveNone
            } else {
                Message::KeepAlive
            }
        } else if fast && have.is_full() {
            Message::HaveAll
        } else if fast && have.none_set() {
            Message::HaveNone
        } else if have.none_set() {
            // Without BEP 6 a peer with nothing may skip the bitfield.
            Message::KeepAlive
        } else {
            Message::Bitfield(Bytes::copy_from_slice(have.as_bytes()))
        };
        if msg != Message::KeepAlive {
            self.send(peer, msg);
        }
    }

    /// Our extended handshake (BEP 10).
    fn send_extended_handshake(&mut self, peer: PeerKey, peer_ip: Option<std::net::IpAddr>) {
        {
            let mut m = vec![("ut_metadata".to_owned(), extension::UT_METADATA_ID)];
            if self.pex.is_some() {
                m.push(("ut_pex".to_owned(), extension::UT_PEX_ID));
            }
            let hs = ExtendedHandshake {
                extensions: m,
                client: Some(self.config.client.clone()),
                listen_port: self.config.listen_port,
                reqq: Some((MAX_SERVE_QUEUE / 2) as u32),
                your_ip: peer_ip,
                metadata_size: self.metadata.as_ref().map(|m| m.len() as u64),
            };
            self.send(
                peer,
                Message::Extended {
                    id: 0,
                    payload: Bytes::from(hs.encode()),
                },
            );
        }
    }

    /// The address of a connection we dialled: it is reachable, so peer
    /// exchange may share it (BEP 11). Incoming connections are shared with
    /// the listen port of their extended handshake instead.
    pub fn handle_peer_address(&mut self, peer: PeerKey, addr: std::net::SocketAddr) {
        let seed = self.peers.get(&peer).is_some_and(|p| p.is_seed());
        if let (Some(pex), Some(p)) = (self.pex.as_mut(), self.peers.get_mut(&peer)) {
            p.dialled = true;
            let flags = essaim_wire::pex::FLAG_REACHABLE
                | if seed { essaim_wire::pex::FLAG_SEED } else { 0 };
            pex.peer_address(peer, addr, flags);
        }
    }

    /// Announces pieces chosen by the initial seeding; when it ends,
    /// announces everything that was still hidden.
    fn reveal(&mut self, reveals: Reveals) {
        for (peer, piece) in reveals {
            self.send(peer, Message::Have { piece });
        }
        let Some(ss) = self.super_seed.take() else {
            return;
        };
        if ss.is_active() {
            self.super_seed = Some(ss);
            return;
        }
        let n = self.layout.num_pieces();
        let mut msgs = Vec::new();
        for (&key, p) in &self.peers {
            for piece in 0..n {
                if !ss.was_revealed(key, piece) && !p.bitfield.get(piece) {
                    msgs.push((key, piece));
                }
            }
        }
        for (key, piece) in msgs {
            self.send(key, Message::Have { piece });
        }
    }

    /// Initial seeding: of the pieces in `maybe`, those no connected peer
    /// holds any more are not out after all.
    fn super_seed_pieces_lost(&mut self, maybe: &Bitfield) {
        let Some(ss) = self.super_seed.as_mut() else {
            return;
        };
        for piece in maybe.iter_set() {
            if self.picker.availability(piece) == 0 {
                ss.piece_lost(piece);
            }
        }
    }

    /// Tells the initial seeding that `peer`'s pieces changed.
    fn super_seed_peer_has(&mut self, peer: PeerKey, now: Instant) {
        let (Some(ss), Some(p)) = (self.super_seed.as_mut(), self.peers.get(&peer)) else {
            return;
        };
        let reveals = ss.peer_has(peer, &p.bitfield, now, &mut self.rng);
        self.reveal(reveals);
    }

    /// A connection closed, for whatever reason.
    pub fn handle_peer_disconnected(&mut self, peer: PeerKey, now: Instant) {
        let Some(state) = self.peers.remove(&peer) else {
            return;
        };
        if let Some(pex) = self.pex.as_mut() {
            pex.peer_gone(peer);
        }
        if let Some(ss) = self.super_seed.as_mut() {
            ss.peer_gone(peer, &state.bitfield);
            // What it held goes to the others.
            let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
            for key in keys {
                self.super_seed_peer_has(key, now);
            }
        }
        self.picker.peer_gone(&state.bitfield);
        self.super_seed_pieces_lost(&state.bitfield);
        for (r, _) in state.outstanding {
            self.picker.request_dropped(r);
        }
        if !state.am_choking {
            // A slot came free.
            self.fill_slots(now);
        }
    }

    /// The driver measured the connection's round-trip time (the kernel's
    /// estimate: it leaves out the peer's own queue). Sizes the requests
    /// we keep outstanding there ([`PeerState::request_horizon`]).
    pub fn handle_peer_rtt(&mut self, peer: PeerKey, rtt: Duration) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.rtt = Some(rtt);
        }
    }

    /// A block we handed out with `Serve` was written to the peer's socket
    /// (or could not be: the driver reports it all the same).
    pub fn handle_block_sent(&mut self, peer: PeerKey, bytes: u32, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.serving = p.serving.saturating_sub(1);
            p.upload.add(u64::from(bytes), now);
            self.stats.uploaded += u64::from(bytes);
            if let Some(ss) = self.super_seed.as_mut() {
                ss.peer_served(peer, now);
            }
        }
        self.pump_serving(peer);
    }

    /// Gives back the buffer of a [`Output::CheckPiece`] once the driver is
    /// done with it (after [`Swarm::handle_piece_checked`]); a few are kept
    /// for the next pieces, none once the download is complete.
    pub fn recycle_buffer(&mut self, buf: Vec<u8>) {
        if self.completed {
            return;
        }
        let keep = self.whole_pieces(SPARE_BUFFER_BYTES as u64, 2);
        if self.spare_buffers.len() < keep && buf.capacity() >= self.layout.piece_length() as usize
        {
            // Its length is kept: `resize` then zeroes nothing.
            self.spare_buffers.push(buf);
        }
    }

    /// The driver hashed a piece from `CheckPiece`: `ok` means the hash
    /// matched and the data is on disk. `data` is the piece's data as it was
    /// checked (used to find who lied when a piece fails). Every peer's
    /// request queue is filled again, as of `now`.
    pub fn handle_piece_checked(&mut self, piece: u32, ok: bool, data: &[u8], now: Instant) {
        let senders = self.pending_senders.remove(&piece).unwrap_or_default();
        if ok {
            self.convict_liars(piece, data);
            self.picker.piece_verified(piece);
            self.stats.pieces_have += 1;
            self.stats.verified += u64::from(self.layout.piece_size(piece).unwrap_or(0));
            self.out.push_back(Output::PieceVerified(piece));
            let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
            for key in keys {
                let Some(p) = self.peers.get_mut(&key) else {
                    continue;
                };
                let has = p.bitfield.get(piece);
                if has && !self.picker.is_skipped(piece) {
                    p.wanted = p.wanted.saturating_sub(1);
                }
                // Also to peers that have the piece (all but seeds): an
                // initial seed learns from our `have` that its piece
                // arrived (BEP 16 relies on it).
                if !p.is_seed() {
                    self.send(key, Message::Have { piece });
                }
                self.update_interest(key);
            }
            if self.picker.is_complete() && !self.completed {
                self.completed = true;
                // A seed needs no piece buffers.
                self.spare_buffers = Vec::new();
                self.out.push_back(Output::Completed);
                let seeds: Vec<PeerKey> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.is_seed())
                    .map(|(k, _)| *k)
                    .collect();
                for k in seeds {
                    self.disconnect(k, DisconnectReason::Useless);
                }
            }
        } else {
            self.picker.piece_failed(piece);
            self.stats.hash_failures += 1;
            self.stats.wasted += u64::from(self.layout.piece_size(piece).unwrap_or(0));
            let attempt: FailedAttempt = senders
                .iter()
                .enumerate()
                .map(|(i, s)| (*s, self.block_digest(piece, i as u32, data)))
                .collect();
            let attempts = self.failed_attempts.entry(piece).or_default();
            if attempts.len() < MAX_FAILED_ATTEMPTS {
                attempts.push(attempt);
            }
            // A peer that sent the whole piece alone is surely to blame;
            // with several senders we wait until the piece passes to know.
            let mut distinct: Vec<PeerKey> = senders.iter().flatten().copied().collect();
            distinct.sort_unstable();
            distinct.dedup();
            if let [only] = distinct[..] {
                if let Some(p) = self.peers.get_mut(&only) {
                    p.hash_failures += 1;
                    if p.hash_failures >= MAX_HASH_FAILURES {
                        self.disconnect(only, DisconnectReason::Banned);
                    }
                }
            }
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in keys {
            self.fill_requests(key, now);
        }
    }

    fn block_digest(&self, piece: u32, block: u32, data: &[u8]) -> [u8; 20] {
        use sha1::{Digest, Sha1};
        let range = self
            .layout
            .block(piece, block)
            .map(|(b, l)| b as usize..(b + l) as usize);
        let bytes = range.and_then(|r| data.get(r)).unwrap_or_default();
        Sha1::digest(bytes).into()
    }

    /// A piece that failed before has passed: whoever sent a block that
    /// differs from the good one is banned.
    fn convict_liars(&mut self, piece: u32, good: &[u8]) {
        let Some(attempts) = self.failed_attempts.remove(&piece) else {
            return;
        };
        let mut liars = Vec::new();
        for attempt in &attempts {
            for (i, (sender, digest)) in attempt.iter().enumerate() {
                if let Some(sender) = sender {
                    if *digest != self.block_digest(piece, i as u32, good)
                        && !liars.contains(sender)
                    {
                        liars.push(*sender);
                    }
                }
            }
        }
        for key in liars {
            if self.peers.contains_key(&key) {
                self.disconnect(key, DisconnectReason::Banned);
            }
        }
    }

    /// A message arrived from a peer.
    pub fn handle_message(&mut self, peer: PeerKey, msg: Message, now: Instant) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        if let Err(why) = self.on_message(peer, msg, now) {
            self.disconnect(peer, DisconnectReason::Protocol(why));
        }
    }

    fn on_message(&mut self, peer: PeerKey, msg: Message, now: Instant) -> Result<(), String> {
        let n = self.layout.num_pieces();
        let Some(p) = self.peers.get_mut(&peer) else {
            return Ok(());
        };
        let fast = p.fast;
        let need_fast = |name: &str| {
            if fast {
                Ok(())
            } else {
                Err(format!("{name} without the fast extension"))
            }
        };
        match msg {
            Message::KeepAlive | Message::Unknown { .. } => {}
            Message::Port(port) => {
                // BEP 5: the peer runs a DHT node there. One per
                // connection, so a flood of them is no flood of pings.
                if !p.dht_port_seen && port != 0 && self.config.dht_port.is_some() {
                    p.dht_port_seen = true;
                    if let Some(ip) = p.ip {
                        self.out
                            .push_back(Output::DhtNode(std::net::SocketAddr::new(ip, port)));
                    }
                }
            }
            Message::Choke => {
                p.peer_choking = true;
                if !fast {
                    // BEP 3: a choke discards all pending requests.
                    let dropped: Vec<BlockRef> = p.outstanding.drain(..).map(|(r, _)| r).collect();
                    for r in dropped {
                        self.picker.request_dropped(r);
                    }
                }
            }
            Message::Unchoke => {
                p.peer_choking = false;
                p.last_block_at = now;
                self.fill_requests(peer, now);
            }
            Message::Interested => {
                p.peer_interested = true;
                if p.am_choking {
                    self.fill_slots(now);
                }
            }
            Message::NotInterested => {
                p.peer_interested = false;
                p.serve_queue.clear();
                // Its slot would sit idle until the next rechoke: it goes
                // to a peer that wants it. (While a hidden initial seed
                // steers the peer, it is not interested until shown pieces.)
                if !p.am_choking
                    && !self
                        .peers
                        .get(&peer)
                        .is_some_and(|p| self.wants_upload(peer, p))
                {
                    self.set_choke(peer, true, now);
                    self.fill_slots(now);
                }
            }
            Message::Have { piece } => {
                if piece >= n {
                    return Err(format!("have for piece {piece} of {n}"));
                }
                if p.bitfield.set(piece) {
                    if let Some(ss) = self.super_seed.as_mut() {
                        ss.piece_held(piece);
                    }
                    self.picker.peer_has(piece);
                    if self.picker.wants(piece) {
                        p.wanted += 1;
                    }
                    self.after_pieces_changed(peer, now);
                }
            }
            // BEP 3 wants the bitfield first, but clients (aria2) send one
            // later too: a late one replaces what we knew of the peer.
            Message::Bitfield(bytes) => {
                let bits = Bitfield::from_bytes(&bytes, n).map_err(|e| e.to_string())?;
                self.set_peer_bitfield(peer, bits, now);
            }
            Message::HaveAll => {
                need_fast("have_all")?;
                self.set_peer_bitfield(peer, Bitfield::full(n), now);
            }
            Message::HaveNone => {
                need_fast("have_none")?;
                self.set_peer_bitfield(peer, Bitfield::new(n), now);
            }
            Message::Request(req) => self.on_request(peer, req, now)?,
            Message::Cancel(req) => {
                p.serve_queue.retain(|r| *r != req);
            }
            Message::Piece { piece, begin, data } => {
                self.on_piece(peer, piece, begin, data, now)?
            }
            Message::Reject(req) => {
                need_fast("reject")?;
                let r = block_ref(&self.layout, req).ok_or("reject of a block we never cut")?;
                if p.take_outstanding(r) {
                    self.picker.request_dropped(r);
                }
                self.fill_requests(peer, now);
            }
            Message::AllowedFast { piece } => {
                need_fast("allowed_fast")?;
                if piece < n && !p.allowed_fast.contains(&piece) && p.allowed_fast.len() < 64 {
                    p.allowed_fast.push(piece);
                    self.fill_requests(peer, now);
                }
            }
            Message::Suggest { .. } => need_fast("suggest")?,
            Message::Extended { id, payload } => self.on_extended(peer, id, payload)?,
        }
        Ok(())
    }

    fn set_peer_bitfield(&mut self, peer: PeerKey, bits: Bitfield, now: Instant) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        self.picker.peer_gone(&p.bitfield);
        self.picker.peer_bitfield(&bits);
        let picker = &self.picker;
        p.wanted = bits.iter_set().filter(|&i| picker.wants(i)).count() as u32;
        let old = std::mem::replace(&mut p.bitfield, bits);
        if self.completed && p.is_seed() {
            // Dropped: its pieces count for nobody (an initial seed must
            // not think them out).
            self.disconnect(peer, DisconnectReason::Useless);
            return;
        }
        if let (Some(ss), Some(p)) = (self.super_seed.as_mut(), self.peers.get(&peer)) {
            ss.pieces_held(&p.bitfield);
        }
        self.super_seed_pieces_lost(&old);
        self.after_pieces_changed(peer, now);
    }

    fn after_pieces_changed(&mut self, peer: PeerKey, now: Instant) {
        self.super_seed_peer_has(peer, now);
        self.update_interest(peer);
        self.fill_requests(peer, now);
    }

    fn update_interest(&mut self, peer: PeerKey) {
        let complete = self.picker.is_complete();
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let want = p.wanted > 0 && !complete;
        if want != p.am_interested {
            p.am_interested = want;
            let msg = if want {
                Message::Interested
            } else {
                Message::NotInterested
            };
            self.send(peer, msg);
        }
    }

    fn on_request(&mut self, peer: PeerKey, req: BlockRequest, now: Instant) -> Result<(), String> {
        if !self
            .layout
            .is_valid_request(req.piece, req.begin, req.length, BLOCK_SIZE)
        {
            return Err(format!(
                "request out of range: piece {} begin {} length {}",
                req.piece, req.begin, req.length
            ));
        }
        // While initial seeding, a piece not shown to this peer is not ours
        // to give it (it could not know we have it; serving it would send
        // the piece twice).
        let have = self.picker.have().get(req.piece)
            && self
                .super_seed
                .as_ref()
                .is_none_or(|ss| ss.was_revealed(peer, req.piece));
        let Some(p) = self.peers.get_mut(&peer) else {
            return Ok(());
        };
        let refuse = !have || p.am_choking || p.serve_queue.len() >= MAX_SERVE_QUEUE;
        if refuse {
            // BEP 6: with the fast extension every refused request is rejected.
            if p.fast {
                self.send(peer, Message::Reject(req));
            }
            return Ok(());
        }
        p.serve_queue.push_back(req);
        if let Some(ss) = self.super_seed.as_mut() {
            let reveals = ss.peer_requested(peer, req.piece, &p.bitfield, now, &mut self.rng);
            self.reveal(reveals);
        }
        self.pump_serving(peer);
        Ok(())
    }

    fn pump_serving(&mut self, peer: PeerKey) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        while p.serving < MAX_SERVING && !p.am_choking {
            let Some(req) = p.serve_queue.pop_front() else {
                break;
            };
            p.serving += 1;
            self.out.push_back(Output::Serve { peer, req });
        }
    }

    fn on_piece(
        &mut self,
        peer: PeerKey,
        piece: u32,
        begin: u32,
        data: Bytes,
        now: Instant,
    ) -> Result<(), String> {
        let n = self.layout.num_pieces();
        if piece >= n {
            // No piece of ours: a protocol violation like `have` or
            // `request` out of range, not data that came late.
            return Err(format!("piece message for piece {piece} of {n}"));
        }
        let len = data.len() as u32;
        let Some(r) = block_ref(
            &self.layout,
            BlockRequest {
                piece,
                begin,
                length: len,
            },
        ) else {
            // Not a block as we cut them: we never asked for it.
            self.stats.wasted += u64::from(len);
            return Ok(());
        };
        let Some(p) = self.peers.get_mut(&peer) else {
            return Ok(());
        };
        if !p.take_outstanding(r) {
            // Unrequested (or already cancelled): dropped, never written.
            self.stats.wasted += u64::from(len);
            return Ok(());
        }
        p.download.add(u64::from(len), now);
        p.last_block_at = now;
        p.snubbed = false;
        self.stats.downloaded += u64::from(len);
        let duplicates = self.picker.outstanding_count(r) > 1;
        match self.picker.block_received(r) {
            BlockReceived::Unwanted => {
                self.stats.wasted += u64::from(len);
            }
            outcome => {
                let piece_size = self.layout.piece_size(piece).unwrap_or(0) as usize;
                let blocks = self.layout.blocks_in_piece(piece).unwrap_or(0) as usize;
                let spare = &mut self.spare_buffers;
                let buf = self.buffers.entry(piece).or_insert_with(|| {
                    // Every block is written before the piece is checked,
                    // so a reused buffer's old bytes never reach the hash.
                    // A new buffer comes zeroed from the allocator; a large
                    // one (from 256 KiB, see the CLI's `tune_allocator`) is
                    // a fresh mapping whose pages are touched only as the
                    // blocks arrive.
                    let data = match spare.pop() {
                        Some(mut d) => {
                            d.resize(piece_size, 0);
                            d
                        }
                        None => vec![0u8; piece_size],
                    };
                    PieceBuffer {
                        data,
                        senders: vec![None; blocks],
                    }
                });
                let start = begin as usize;
                if let Some(dst) = buf.data.get_mut(start..start + data.len()) {
                    dst.copy_from_slice(&data);
                }
                if let Some(s) = buf.senders.get_mut(r.block as usize) {
                    *s = Some(peer);
                }
                if duplicates {
                    self.cancel_elsewhere(r, peer);
                }
                if outcome == BlockReceived::PieceComplete {
                    if let Some(buf) = self.buffers.remove(&piece) {
                        self.pending_senders.insert(piece, buf.senders);
                        self.out.push_back(Output::CheckPiece {
                            piece,
                            data: buf.data,
                        });
                    }
                }
            }
        }
        self.fill_requests(peer, now);
        Ok(())
    }

    /// Endgame: the block came from `from`; cancel it at everyone else.
    fn cancel_elsewhere(&mut self, r: BlockRef, from: PeerKey) {
        let Some((begin, length)) = self.layout.block(r.piece, r.block) else {
            return;
        };
        let mut cancels = Vec::new();
        for (&key, p) in self.peers.iter_mut() {
            if key != from && p.take_outstanding(r) {
                cancels.push(key);
            }
        }
        for key in cancels {
            self.send(
                key,
                Message::Cancel(BlockRequest {
                    piece: r.piece,
                    begin,
                    length,
                }),
            );
        }
    }

    fn on_extended(&mut self, peer: PeerKey, id: u8, payload: Bytes) -> Result<(), String> {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Ok(());
        };
        if !p.extensions {
            return Err("extended message without the extension bit".into());
        }
        if id == 0 {
            let hs = ExtendedHandshake::decode(&payload).map_err(|e| e.to_string())?;
            let listen = match (p.dialled, p.ip, hs.listen_port) {
                (false, Some(ip), Some(port)) => Some(std::net::SocketAddr::new(ip, port)),
                _ => None,
            };
            p.ext = Some(hs);
            if let (Some(addr), Some(pex)) = (listen, self.pex.as_mut()) {
                pex.peer_address(peer, addr, 0);
            }
            return Ok(());
        }
        if id == extension::UT_PEX_ID {
            // Untrusted hints: a bad message is ignored, not a violation.
            if self.pex.is_some() {
                if let Ok(msg) = essaim_wire::pex::PexMessage::decode(&payload) {
                    let found = filter_added(&msg, p.ip);
                    if !found.is_empty() {
                        self.out.push_back(Output::PeersDiscovered(found));
                    }
                }
            }
            return Ok(());
        }
        if id == extension::UT_METADATA_ID {
            let their_id = p.ext.as_ref().and_then(|e| e.extension_id("ut_metadata"));
            let msg = MetadataMessage::decode(&payload).map_err(|e| e.to_string())?;
            if let (MetadataMessage::Request { piece }, Some(their_id)) = (msg, their_id) {
                let reply = crate::magnet::metadata_answer(self.metadata.as_ref(), piece);
                self.send(
                    peer,
                    Message::Extended {
                        id: their_id,
                        payload: Bytes::from(reply.encode()),
                    },
                );
            }
        }
        // Other extensions we did not advertise: ignored.
        Ok(())
    }

    /// How many whole pieces fit in `bytes`, but at least `at_least`.
    fn whole_pieces(&self, bytes: u64, at_least: usize) -> usize {
        // The layout refuses a zero piece length; `max(1)` only keeps this
        // total.
        let per_piece = u64::from(self.layout.piece_length()).max(1);
        usize::try_from(bytes / per_piece)
            .unwrap_or(usize::MAX)
            .max(at_least)
    }

    /// Tops up the requests outstanding at `peer`.
    fn fill_requests(&mut self, peer: PeerKey, now: Instant) {
        let check_pieces = self.whole_pieces(self.config.check_budget, 2);
        if self.pending_senders.len() >= check_pieces {
            // `handle_piece_checked` fills every peer's queue again.
            return;
        }
        let budget_pieces = self.whole_pieces(self.config.partial_budget, 4);
        let over_budget = self.picker.partial_count() >= budget_pieces;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if !p.am_interested {
            return;
        }
        // A snubbed peer keeps one request: its answer lifts the snub (never
        // asked again, it could never redeem itself, even as our only source).
        let depth = if p.snubbed {
            1
        } else {
            p.request_depth(now) as usize
        };
        let restricted;
        let pieces: &Bitfield = if p.peer_choking {
            if p.allowed_fast.is_empty() {
                return;
            }
            let mut b = Bitfield::new(p.bitfield.len());
            for &a in &p.allowed_fast {
                if p.bitfield.get(a) {
                    b.set(a);
                }
            }
            restricted = b;
            &restricted
        } else {
            &p.bitfield
        };
        let want = depth.saturating_sub(p.outstanding.len());
        if want == 0 {
            return;
        }
        let outstanding = &p.outstanding;
        let is_mine = |r: BlockRef| outstanding.iter().any(|(o, _)| *o == r);
        let picked = self
            .picker
            .pick(pieces, want, !over_budget, &is_mine, &mut self.rng);
        if p.outstanding.is_empty() && !picked.is_empty() {
            // We were not waiting on this peer (the check budget may have
            // held its queue empty for a long while): the snub clock
            // starts now, not at its last block.
            p.last_block_at = now;
        }
        let mut msgs = Vec::with_capacity(picked.len());
        for r in picked {
            if let Some((begin, length)) = self.layout.block(r.piece, r.block) {
                p.outstanding.push_back((r, now));
                msgs.push(Message::Request(BlockRequest {
                    piece: r.piece,
                    begin,
                    length,
                }));
            }
        }
        for m in msgs {
            self.send(peer, m);
        }
    }

    /// Unchokes interested peers while slots are free, without waiting for
    /// the next rechoke (a newcomer should not wait ten seconds).
    fn fill_slots(&mut self, now: Instant) {
        let unchoked = self.peers.values().filter(|p| !p.am_choking).count();
        let mut free = (self.config.upload_slots + 1).saturating_sub(unchoked);
        let waiting: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(k, p)| p.am_choking && self.wants_upload(**k, p))
            .map(|(k, _)| *k)
            .collect();
        for key in waiting {
            if free == 0 {
                break;
            }
            self.set_choke(key, false, now);
            free -= 1;
        }
    }

    /// Whether `p` would use an upload slot: it is interested, or, while
    /// the initial seeding hides our pieces, it lacks some.
    fn wants_upload(&self, key: PeerKey, p: &PeerState) -> bool {
        p.peer_interested
            || (!p.is_seed()
                && self
                    .super_seed
                    .as_ref()
                    .is_some_and(|ss| ss.wants_slot(key)))
    }

    fn set_choke(&mut self, peer: PeerKey, choke: bool, now: Instant) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.am_choking == choke {
            return;
        }
        p.am_choking = choke;
        if choke {
            p.unchoked_since = None;
            let rejected: Vec<BlockRequest> = p.serve_queue.drain(..).collect();
            let fast = p.fast;
            self.send(peer, Message::Choke);
            if fast {
                for r in rejected {
                    self.send(peer, Message::Reject(r));
                }
            }
            if let (Some(ss), Some(p)) = (self.super_seed.as_mut(), self.peers.get(&peer)) {
                ss.peer_choked(peer, &p.bitfield);
            }
        } else {
            p.unchoked_since = Some(now);
            self.send(peer, Message::Unchoke);
            if let (Some(ss), Some(p)) = (self.super_seed.as_mut(), self.peers.get(&peer)) {
                let reveals = ss.peer_unchoked(peer, &p.bitfield, now, &mut self.rng);
                self.reveal(reveals);
            }
        }
    }

    /// Periodic work: rechoke every 10 s, snub detection.
    pub fn handle_tick(&mut self, now: Instant) {
        // Peer exchange, to the peers that speak it.
        if self.pex.is_some() {
            let keys: Vec<(PeerKey, u8)> = self
                .peers
                .iter()
                .filter_map(|(k, p)| Some((*k, p.ext.as_ref()?.extension_id("ut_pex")?)))
                .collect();
            for (key, their_id) in keys {
                let msg = self.pex.as_mut().and_then(|x| x.due(key, now));
                if let Some(msg) = msg {
                    self.send(
                        key,
                        Message::Extended {
                            id: their_id,
                            payload: Bytes::from(msg.encode()),
                        },
                    );
                }
            }
        }
        // Initial seeding: reveals nobody took go stale and are replaced.
        if self.super_seed.is_some() {
            let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
            for key in keys {
                self.super_seed_peer_has(key, now);
            }
        }
        // Peers that stay useless: neither side interested for USELESS_AFTER.
        let mut useless = Vec::new();
        for (&key, p) in self.peers.iter_mut() {
            if p.am_interested || p.peer_interested {
                p.last_interest = now;
            } else if now.saturating_duration_since(p.last_interest) >= USELESS_AFTER {
                useless.push(key);
            }
        }
        for key in useless {
            self.disconnect(key, DisconnectReason::Useless);
        }
        // Snubbed peers: requests outstanding and nothing for SNUB_TIMEOUT.
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in &keys {
            let Some(p) = self.peers.get_mut(key) else {
                continue;
            };
            if !p.snubbed
                && !p.outstanding.is_empty()
                && now.saturating_duration_since(p.last_block_at) > SNUB_TIMEOUT
            {
                p.snubbed = true;
                let dropped: Vec<BlockRef> = p.outstanding.drain(..).map(|(r, _)| r).collect();
                let mut cancels = Vec::new();
                for r in dropped {
                    self.picker.request_dropped(r);
                    if let Some((begin, length)) = self.layout.block(r.piece, r.block) {
                        cancels.push(Message::Cancel(BlockRequest {
                            piece: r.piece,
                            begin,
                            length,
                        }));
                    }
                }
                for c in cancels {
                    self.send(*key, c);
                }
            }
        }
        for key in &keys {
            self.fill_requests(*key, now);
        }
        let due = self
            .last_rechoke
            .is_none_or(|t| now.saturating_duration_since(t) >= RECHOKE_INTERVAL);
        if due {
            self.last_rechoke = Some(now);
            self.rechoke(now);
        }
    }

    fn rechoke(&mut self, now: Instant) {
        let mode = if self.super_seed.is_some() {
            ChokeMode::InitialSeeding
        } else if self.picker.is_complete() {
            ChokeMode::Seeding
        } else {
            ChokeMode::Leeching
        };
        let wants: Vec<bool> = self
            .peers
            .iter()
            .map(|(&key, p)| self.wants_upload(key, p))
            .collect();
        let candidates: Vec<ChokerPeer> = self
            .peers
            .iter_mut()
            .zip(wants)
            .map(|((&key, p), interested)| ChokerPeer {
                key,
                interested,
                download_rate: p.download.rate(now),
                upload_rate: p.upload.rate(now),
                snubbed: p.snubbed,
                unchoked_since: p.unchoked_since,
            })
            .collect();
        let unchoke = self.choker.decide(&candidates, mode, now, &mut self.rng);
        for c in candidates {
            self.set_choke(c.key, !unchoke.contains(&c.key), now);
        }
    }
}

/// The block `req` names, if it is a block as we cut them.
fn block_ref(layout: &Layout, req: BlockRequest) -> Option<BlockRef> {
    layout
        .is_our_block(req.piece, req.begin, req.length)
        .then_some(BlockRef {
            piece: req.piece,
            block: req.begin / BLOCK_SIZE,
        })
}
