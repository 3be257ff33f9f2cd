//! A running torrent's network side: its connections, the dialer, the
//! announcer and the DHT search, around its protocol machine ([`Phase`]:
//! the magnet phase while the metadata is fetched, then the swarm).
//!
//! One peer path: every connection, dialled or accepted, in the magnet
//! phase or later, gets the same reader and writer tasks ([`crate::peer`])
//! feeding one event channel; when the metadata is in and the data
//! checked, the swarm adopts the magnet phase's connections as they are
//! ([`Net::adopt`]).
//!
//! A `Net` lives while the torrent runs and is dropped when it stops
//! (paused, queued, removed): dropping a connection ends both its tasks,
//! and the announcer, told to stop, sends `stopped` on its own (bounded).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use essaim_core::{InfoHash, Metainfo, PeerId};
use essaim_proto::magnet::MagnetPhase;
use essaim_proto::swarm::{DisconnectReason, Output, PeerKey, Swarm};
use essaim_wire::peer::Handshake;
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::peer::{self, PeerEvent, WriterCmd, WriterTx};
use crate::peer_list::{PeerList, PeerSource};
use crate::rate_limit::Limits;
use crate::session::{ConnSlot, Shared};
use crate::storage::Storage;
use crate::tracker::{AnnounceStats, AnnouncerConfig, AnnouncerOptions, Announces, Finished};

/// Dials in progress at once per torrent.
const MAX_DIALING: usize = 8;
/// Events (mostly received blocks) the peers' readers may queue for the
/// torrent before they wait (plus one more per reader, waiting to be
/// queued). A queued 16 KiB block keeps its reader's whole 64 KiB read
/// buffer alive, so this bounds memory: with 128, a 1 GiB download from
/// one fast peer peaked at 13–14 MiB of anonymous memory; with 32, at
/// 9–11 MiB (peak RSS 19.8–20.9 MiB against 15.6–18.2 MiB), at the same
/// speed.
const PEER_EVENT_QUEUE: usize = 32;
/// A leecher with fewer connected peers than this searches the DHT again,
/// first after [`DHT_RESEARCH_FIRST`], then twice as long each time up to
/// [`DHT_RESEARCH_MAX`] (the node itself repeats every search every 15 to
/// 30 minutes, announcing).
const DHT_WANT_PEERS: usize = 5;
const DHT_RESEARCH_FIRST: Duration = Duration::from_secs(5);
const DHT_RESEARCH_MAX: Duration = Duration::from_secs(15 * 60);

/// The protocol machine of a running torrent.
pub(super) enum Phase {
    Magnet(Box<MagnetPhase>),
    Swarm(Box<Swarm>),
}

impl Phase {
    fn poll_output(&mut self) -> Option<Output> {
        match self {
            Phase::Magnet(m) => m.poll_output(),
            Phase::Swarm(s) => s.poll_output(),
        }
    }
}

/// A checked piece: whether it passed (and was written), and its data.
pub(super) type DiskResult = (u32, Result<bool, crate::storage::StorageError>, Vec<u8>);

pub(super) struct Conn {
    _slot: ConnSlot,
    pub addr: SocketAddr,
    pub peer_id: PeerId,
    pub incoming: bool,
    writer: WriterTx,
    reader: tokio::task::JoinHandle<()>,
    writer_task: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    /// A connection leaves `conns` only to close: both tasks end now, and
    /// with them the socket. (A writer blocked on a peer that does not read
    /// would otherwise hold the socket forever.)
    fn drop(&mut self) {
        self.reader.abort();
        self.writer_task.abort();
    }
}

pub(super) enum DialResult {
    Connected(SocketAddr, TcpStream, Handshake),
    Failed(SocketAddr, String),
}

/// The announces of a running torrent, and what was last reported of
/// them as events.
pub(super) struct Announcer {
    pub announces: Announces,
    /// Per tracker, the (successes, failures) last reported as events.
    pub seen: Vec<(u64, u64)>,
}

/// Something that happened on the network side.
pub(super) enum NetEvent {
    Peer(PeerEvent),
    Dial(DialResult),
    Disk(DiskResult),
    /// An announce ended.
    Announced(Finished),
    DhtPeers(Vec<SocketAddr>),
}

pub(super) struct Net {
    pub phase: Phase,
    info_hash: InfoHash,
    shared: Arc<Shared>,
    /// Set once the data is known (for serving and writing).
    storage: Arc<OnceLock<Arc<Storage>>>,
    meta: Option<Arc<Metainfo>>,
    /// Upload caps (the writers), download caps (the readers).
    limits: (Limits, Limits),
    private: bool,
    pub conns: HashMap<PeerKey, Conn>,
    next_key: PeerKey,
    pub peer_list: PeerList,
    dialing: usize,
    events: LazyChan<PeerEvent>,
    disk: LazyChan<DiskResult>,
    dials: LazyChan<DialResult>,
    pub announcer: Option<Announcer>,
    dht_peers: Option<mpsc::Receiver<Vec<SocketAddr>>>,
    dht_next_search: Instant,
    dht_wait: Duration,
    /// Totals of peers that disconnected, by peer id.
    pub history: HashMap<PeerId, (u64, u64)>,
    /// Pieces handed to the disk and not yet back.
    pub disk_pending: usize,
    /// A fatal disk error, to stop the torrent with.
    pub disk_error: Option<crate::storage::StorageError>,
}

impl Net {
    pub fn new(
        phase: Phase,
        info_hash: InfoHash,
        shared: Arc<Shared>,
        meta: Option<Arc<Metainfo>>,
        storage: Option<Arc<Storage>>,
        limits: (Limits, Limits),
        private: bool,
    ) -> Net {
        let slot = Arc::new(OnceLock::new());
        if let Some(s) = storage {
            let _ = slot.set(s);
        }
        Net {
            phase,
            info_hash,
            shared,
            storage: slot,
            meta,
            limits,
            private,
            conns: HashMap::new(),
            next_key: 1,
            peer_list: PeerList::default(),
            dialing: 0,
            events: LazyChan::new(PEER_EVENT_QUEUE),
            // Pieces waiting for their check are bounded by the swarm's
            // check budget, far below this.
            disk: LazyChan::new(256),
            dials: LazyChan::new(64),
            announcer: None,
            dht_peers: None,
            dht_next_search: Instant::now() + DHT_RESEARCH_FIRST,
            dht_wait: DHT_RESEARCH_FIRST,
            history: HashMap::new(),
            disk_pending: 0,
            disk_error: None,
        }
    }

    /// The next thing that happened (pending forever if nothing can).
    pub async fn next(&mut self) -> NetEvent {
        loop {
            let announced = async {
                match self.announcer.as_mut() {
                    Some(a) => a.announces.finished().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(ev) = self.events.recv() => return NetEvent::Peer(ev),
                Some(d) = self.disk.recv() => return NetEvent::Disk(d),
                Some(r) = self.dials.recv() => return NetEvent::Dial(r),
                f = announced => return NetEvent::Announced(f),
                found = recv_opt(self.dht_peers.as_mut()) => match found {
                    Some(addrs) => return NetEvent::DhtPeers(addrs),
                    None => {
                        self.dht_peers = None;
                        continue;
                    }
                },
            }
        }
    }

    /// A peer event already queued, if any (to take several per turn).
    pub fn try_peer_event(&mut self) -> Option<PeerEvent> {
        self.events.try_recv()
    }

    /// Sets up the announces to `trackers` (the first is due at once).
    pub fn start_discovery(&mut self, trackers: &[Vec<String>], stats: AnnounceStats) {
        let options = AnnouncerOptions {
            shared_http: self.shared.http_tracker.clone(),
            shared_udp: Some(self.shared.udp_trackers.clone()),
            ..AnnouncerOptions::default()
        };
        let cfg = AnnouncerConfig {
            info_hash: self.info_hash,
            peer_id: self.shared.peer_id,
            port: self.shared.port,
            trackers: trackers.to_vec(),
            numwant: 50,
        };
        self.announcer = Some(Announcer {
            announces: Announces::new(cfg, options, stats),
            seen: Vec::new(),
        });
    }

    /// Starts the announce that is due, if any.
    pub fn announce_due(&mut self, now: Instant) {
        if let Some(a) = &mut self.announcer {
            a.announces.start_due(tokio::time::Instant::from_std(now));
        }
    }

    /// When the next announce is due.
    pub fn announce_at(&self) -> Option<Instant> {
        self.announcer
            .as_ref()
            .and_then(|a| a.announces.next_due())
            .map(|t| t.into_std())
    }

    /// Asks the trackers for peers early.
    pub fn want_more(&mut self) {
        if let Some(a) = &mut self.announcer {
            a.announces.want_more();
        }
    }

    /// Starts the DHT search for peers (announcing us, BEP 5).
    pub async fn start_dht(&mut self) {
        if let Some(dht) = self.dht() {
            self.dht_peers = Some(dht.get_peers(self.info_hash, Some(self.shared.port)).await);
        }
    }

    /// The session's DHT node, unless the torrent is private (BEP 27).
    fn dht(&self) -> Option<Arc<crate::dht::DhtHandle>> {
        self.shared.dht.clone().filter(|_| !self.private)
    }

    /// Tells the announces our totals.
    pub fn update_announce(&mut self, stats: AnnounceStats) {
        if let Some(a) = &mut self.announcer {
            a.announces.set_stats(stats);
        }
    }

    /// Closes every connection and stops the announces; returns the task
    /// that sends `stopped` (bounded by its timeout), if one is due.
    pub fn stop(mut self) -> Option<tokio::task::JoinHandle<crate::tracker::TrackerStatus>> {
        self.conns.clear();
        self.announcer.take()?.announces.stop()
    }

    /// The swarm, when past the magnet phase.
    pub fn swarm(&mut self) -> Option<&mut Swarm> {
        match &mut self.phase {
            Phase::Swarm(s) => Some(s),
            Phase::Magnet(_) => None,
        }
    }

    pub fn swarm_ref(&self) -> Option<&Swarm> {
        match &self.phase {
            Phase::Swarm(s) => Some(s),
            Phase::Magnet(_) => None,
        }
    }

    /// The magnet phase is over: `swarm` adopts its connections. The data
    /// is now known (`storage`, `meta`).
    pub fn adopt(&mut self, swarm: Swarm, meta: Arc<Metainfo>, storage: Arc<Storage>) {
        let _ = self.storage.set(storage);
        self.meta = Some(meta.clone());
        self.private = meta.info.private;
        let now = Instant::now();
        if let Phase::Magnet(m) = std::mem::replace(&mut self.phase, Phase::Swarm(Box::new(swarm)))
        {
            if let Phase::Swarm(s) = &mut self.phase {
                for (key, early) in m.into_peers() {
                    s.handle_peer_adopted(key, early, now);
                }
            }
        }
    }

    /// Connected peers.
    pub fn peer_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether anything is going on that needs the periodic tick.
    pub fn busy(&self) -> bool {
        !self.conns.is_empty() || self.dialing > 0 || self.disk_pending > 0
    }

    /// When a known peer is next due for a dial, if any.
    pub fn next_dial(&self, seeding: bool) -> Option<Instant> {
        self.peer_list.next_retry(seeding)
    }

    pub fn add_peers(&mut self, addrs: impl IntoIterator<Item = SocketAddr>, source: PeerSource) {
        for a in addrs {
            if !self.is_us(&a) {
                self.peer_list.add(a, source);
            }
        }
    }

    /// Our own listening address as a tracker, PEX or LSD may hand it back
    /// (a tracker keeps a daemon killed before its `stopped` announce): not
    /// dialled, since the handshake would only find ourselves.
    fn is_us(&self, a: &SocketAddr) -> bool {
        a.port() == self.shared.port && a.ip().to_canonical().is_loopback()
    }

    /// Dials known peers while below the limits.
    pub fn dial_more(&mut self, max_peers: usize) {
        let now = Instant::now();
        let seeding = self.swarm_ref().is_some_and(|s| s.is_complete());
        while self.dialing < MAX_DIALING && self.conns.len() + self.dialing < max_peers {
            // A session-wide cap on dials in progress (half-open).
            let Ok(permit) = self.shared.dial_slots.clone().try_acquire_owned() else {
                break;
            };
            let connected: Vec<SocketAddr> = self.conns.values().map(|c| c.addr).collect();
            let Some(addr) = self.peer_list.next_to_dial(now, &connected, seeding) else {
                break;
            };
            self.dialing += 1;
            let tx = self.dials.sender();
            let ours = self.handshake();
            tokio::spawn(async move {
                let _permit: OwnedSemaphorePermit = permit;
                let res = match peer::connect(addr, ours).await {
                    Ok((stream, hs)) => DialResult::Connected(addr, stream, hs),
                    Err(e) => DialResult::Failed(addr, e.to_string()),
                };
                let _ = tx.send(res).await;
            });
        }
    }

    /// A leecher short of peers asks the DHT again (with backoff).
    pub async fn maybe_search_dht(&mut self, now: Instant, complete: bool) {
        let Some(dht) = self.dht() else { return };
        if complete || self.conns.len() >= DHT_WANT_PEERS || now < self.dht_next_search {
            return;
        }
        self.dht_wait = (self.dht_wait * 2).min(DHT_RESEARCH_MAX);
        self.dht_next_search = now + self.dht_wait;
        // A new receiver; the node starts a lookup unless one runs.
        self.dht_peers = Some(dht.get_peers(self.info_hash, Some(self.shared.port)).await);
    }

    /// When the next DHT search of a leecher short of peers is due.
    pub fn dht_due(&self, complete: bool) -> Option<Instant> {
        (self.dht().is_some() && !complete && self.conns.len() < DHT_WANT_PEERS)
            .then_some(self.dht_next_search)
    }

    pub fn on_dial(&mut self, res: DialResult, max_peers: usize) {
        self.dialing = self.dialing.saturating_sub(1);
        match res {
            DialResult::Connected(addr, stream, hs) => {
                self.peer_list.connected(addr);
                self.on_connected(stream, addr, hs, false, max_peers);
            }
            DialResult::Failed(addr, why) => {
                tracing::debug!(%addr, "dial failed: {why}");
                self.peer_list.failed(addr, Instant::now());
            }
        }
    }

    /// A connection whose handshake is done (ours sent, theirs read).
    pub fn on_connected(
        &mut self,
        stream: TcpStream,
        addr: SocketAddr,
        hs: Handshake,
        incoming: bool,
        max_peers: usize,
    ) {
        if self.conns.len() >= max_peers {
            tracing::debug!(%addr, "peer limit reached, dropping connection");
            return;
        }
        if hs.peer_id == self.shared.peer_id || self.conns.values().any(|c| c.peer_id == hs.peer_id)
        {
            tracing::debug!(%addr, "already connected to this peer id");
            return;
        }
        if self.peer_list.is_banned(&addr) {
            return;
        }
        let Some(slot) = self.shared.connections.take() else {
            tracing::debug!(%addr, "session connection limit reached, dropping connection");
            return;
        };
        if incoming {
            self.peer_list.add(addr, PeerSource::Incoming);
            self.peer_list.connected(addr);
        }
        let _ = stream.set_nodelay(true);
        let key = self.next_key;
        self.next_key += 1;
        let (read, write) = stream.into_split();
        let (wtx, wrx) = peer::writer_channel();
        let max_message = match &self.phase {
            Phase::Swarm(s) => s.max_message_len(),
            Phase::Magnet(_) => essaim_proto::magnet::MAX_MESSAGE_LEN,
        };
        let reader = tokio::spawn(peer::run_reader(
            key,
            read,
            max_message,
            self.shared.idle_timeout,
            self.events.sender(),
            self.limits.1.clone(),
        ));
        let writer_task = tokio::spawn(peer::run_writer(
            key,
            write,
            wrx,
            self.storage.clone(),
            self.events.sender(),
            self.limits.0.clone(),
        ));
        self.conns.insert(
            key,
            Conn {
                _slot: slot,
                addr,
                peer_id: hs.peer_id,
                incoming,
                writer: wtx,
                reader,
                writer_task,
            },
        );
        let ours = self.handshake();
        let fast = hs.supports_fast() && ours.supports_fast();
        let ext = hs.supports_extensions() && ours.supports_extensions();
        let dht = hs.supports_dht();
        tracing::debug!(%addr, key, "peer connected");
        let now = Instant::now();
        match &mut self.phase {
            Phase::Swarm(s) => {
                s.handle_peer_connected(key, fast, ext, Some(addr.ip()), now);
                if dht {
                    s.handle_peer_dht(key);
                }
                if !incoming {
                    s.handle_peer_address(key, addr);
                }
            }
            Phase::Magnet(m) => {
                m.handle_peer_connected(key, fast, ext, Some(addr.ip()));
                if dht {
                    m.handle_peer_dht(key);
                }
                if !incoming {
                    m.handle_peer_address(key, addr);
                }
            }
        }
    }

    /// Our handshake: the DHT bit when we run a node for this torrent.
    fn handshake(&self) -> Handshake {
        Handshake::new(self.info_hash, self.shared.peer_id).with_dht(self.dht().is_some())
    }

    pub fn on_peer_event(&mut self, ev: PeerEvent) {
        let now = Instant::now();
        match ev {
            PeerEvent::Message(key, msg) => match &mut self.phase {
                Phase::Swarm(s) => s.handle_message(key, msg, now),
                Phase::Magnet(m) => m.handle_message(key, msg, now),
            },
            PeerEvent::Sent(key, bytes) => {
                if let Phase::Swarm(s) = &mut self.phase {
                    s.handle_block_sent(key, bytes, now);
                }
            }
            PeerEvent::Rtt(key, rtt) => {
                if let Phase::Swarm(s) = &mut self.phase {
                    s.handle_peer_rtt(key, rtt);
                }
            }
            PeerEvent::Closed(key, why) => {
                if let Some(c) = self.conns.remove(&key) {
                    tracing::debug!(addr = %c.addr, "peer closed: {why}");
                    self.remember(key, c.peer_id, now);
                    self.peer_list.disconnected(c.addr, now);
                    match &mut self.phase {
                        Phase::Swarm(s) => s.handle_peer_disconnected(key, now),
                        Phase::Magnet(m) => m.handle_peer_disconnected(key, now),
                    }
                }
            }
        }
    }

    /// Keeps a leaving peer's byte counts in the history.
    fn remember(&mut self, key: PeerKey, peer_id: PeerId, now: Instant) {
        let Phase::Swarm(s) = &mut self.phase else {
            return;
        };
        if let Some(ps) = s.peer_stats(now).into_iter().find(|p| p.key == key) {
            let t = self.history.entry(peer_id).or_insert((0, 0));
            t.0 += ps.downloaded;
            t.1 += ps.uploaded;
        }
    }

    /// A checked piece came back from the disk.
    pub fn on_disk(
        &mut self,
        piece: u32,
        res: Result<bool, crate::storage::StorageError>,
        data: &[u8],
    ) {
        self.disk_pending = self.disk_pending.saturating_sub(1);
        match res {
            Ok(ok) => {
                if !ok {
                    tracing::debug!(piece, "piece failed its hash check");
                }
                if let Phase::Swarm(s) = &mut self.phase {
                    s.handle_piece_checked(piece, ok, data, Instant::now());
                }
            }
            Err(e) => {
                tracing::error!("{e}");
                self.disk_error = Some(e);
            }
        }
    }

    fn disconnect(&mut self, peer: PeerKey, reason: DisconnectReason) {
        if let Some(c) = self.conns.remove(&peer) {
            tracing::debug!(addr = %c.addr, ?reason, "disconnecting peer");
            let now = Instant::now();
            self.remember(peer, c.peer_id, now);
            match reason {
                DisconnectReason::Banned => self.peer_list.ban(c.addr),
                DisconnectReason::Useless => self.peer_list.useless(c.addr),
                DisconnectReason::Protocol(_) => self.peer_list.failed(c.addr, now),
            }
            match &mut self.phase {
                Phase::Swarm(s) => s.handle_peer_disconnected(peer, now),
                Phase::Magnet(m) => m.handle_peer_disconnected(peer, now),
            }
        }
    }

    /// The peer's writer queue is full or gone: it does not read what we
    /// send (or its connection broke); drop it.
    fn drop_unread(&mut self, peer: PeerKey) {
        let why = format!(
            "{} messages wait for it (it does not read), or its writer is gone",
            peer::MAX_WRITE_BACKLOG
        );
        self.disconnect(peer, DisconnectReason::Protocol(why));
    }

    /// Carries out the machine's outputs; returns those for the torrent
    /// itself (verified pieces, completion, metadata).
    pub fn drain_outputs(&mut self, out: &mut Vec<Output>) {
        while let Some(o) = self.phase.poll_output() {
            match o {
                Output::Send { peer, msg } => {
                    if let Some(c) = self.conns.get(&peer) {
                        if !c.writer.send(WriterCmd::Send(msg)) {
                            self.drop_unread(peer);
                        }
                    }
                }
                Output::Serve { peer, req } => {
                    if let Some(c) = self.conns.get(&peer) {
                        if !c.writer.send(WriterCmd::Serve(req)) {
                            self.drop_unread(peer);
                        }
                    } else if let Phase::Swarm(s) = &mut self.phase {
                        s.handle_block_sent(peer, 0, Instant::now());
                    }
                }
                Output::CheckPiece { piece, data } => self.check_piece(piece, data),
                Output::Disconnect { peer, reason } => self.disconnect(peer, reason),
                Output::PeersDiscovered(addrs) => {
                    self.add_peers(addrs, PeerSource::Pex);
                }
                Output::DhtNode(addr) => {
                    if let Some(dht) = self.dht() {
                        dht.add_node(addr);
                    }
                }
                other @ (Output::PieceVerified(_)
                | Output::Completed
                | Output::MetadataReceived(_)) => out.push(other),
            }
        }
    }

    /// Hashes a complete piece on the blocking pool and, if it matches,
    /// writes it; the result comes back as [`NetEvent::Disk`].
    fn check_piece(&mut self, piece: u32, data: Vec<u8>) {
        let (Some(storage), Some(meta)) = (self.storage.get().cloned(), self.meta.clone()) else {
            return;
        };
        let expected = meta.info.pieces.get(piece as usize).copied();
        let tx = self.disk.sender();
        self.disk_pending += 1;
        tokio::task::spawn_blocking(move || {
            let ok = expected.is_some_and(|h| Sha1::digest(&data)[..] == h[..]);
            let res = if ok {
                storage.write_piece(piece, &data).map(|()| true)
            } else {
                Ok(false)
            };
            let _ = tx.blocking_send((piece, res, data));
        });
    }

    /// Each connected peer's totals with the history of those gone, by
    /// peer id: (downloaded, uploaded).
    pub fn peer_totals(&mut self) -> HashMap<PeerId, (u64, u64)> {
        let mut totals = self.history.clone();
        let now = Instant::now();
        if let Phase::Swarm(s) = &mut self.phase {
            for ps in s.peer_stats(now) {
                if let Some(c) = self.conns.get(&ps.key) {
                    let t = totals.entry(c.peer_id).or_insert((0, 0));
                    t.0 += ps.downloaded;
                    t.1 += ps.uploaded;
                }
            }
        }
        totals
    }
}

/// A channel made on first use: an idle torrent (a seed nobody asks for)
/// keeps none (each costs a block of slots).
struct LazyChan<T> {
    cap: usize,
    pair: Option<(mpsc::Sender<T>, mpsc::Receiver<T>)>,
}

impl<T> LazyChan<T> {
    fn new(cap: usize) -> Self {
        LazyChan { cap, pair: None }
    }

    fn sender(&mut self) -> mpsc::Sender<T> {
        let cap = self.cap;
        self.pair
            .get_or_insert_with(|| mpsc::channel(cap))
            .0
            .clone()
    }

    /// The next message; pending forever before the channel exists.
    async fn recv(&mut self) -> Option<T> {
        let got = match &mut self.pair {
            Some((_, rx)) => rx.recv().await,
            None => std::future::pending().await,
        };
        self.release_if_idle();
        got
    }

    fn try_recv(&mut self) -> Option<T> {
        let got = self.pair.as_mut()?.1.try_recv().ok();
        self.release_if_idle();
        got
    }

    /// Gives the channel back once nothing can come through it (no sender
    /// but ours, nothing queued): a seed that dialled a peer once, or had
    /// peers for a while, does not keep a block of slots for ever. Only
    /// `sender` (with `&mut self`) makes new senders, so none can appear
    /// between the check and the drop.
    fn release_if_idle(&mut self) {
        if let Some((tx, rx)) = &self.pair {
            if tx.strong_count() == 1 && rx.is_empty() {
                self.pair = None;
            }
        }
    }
}

/// Receives from an optional channel; pending forever without one.
async fn recv_opt<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
