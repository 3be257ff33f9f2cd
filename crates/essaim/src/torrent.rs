//! The torrent actor: one task per torrent owns its [`Swarm`] state machine
//! and carries out what it asks for.
//!
//! Design: everything that touches the torrent's state happens on this
//! task; peers, the dialer, the tracker announcer and disk jobs talk to it
//! through channels, so no lock guards engine state. The actor:
//! 1. opens the storage and loads resume data, or rechecks the files;
//! 2. loops over peer events, dial results, tracker peers, disk results,
//!    commands and a one-second tick, feeding each to the swarm and then
//!    draining the swarm's outputs;
//! 3. on shutdown saves resume data and closes its peers.
//!
//! Disk work runs on the blocking pool: a completed piece is hashed and, if
//! the hash matches, written there; only then is the swarm told, so a piece
//! counts only once it is verified and written. Resume data is saved every
//! [`RESUME_INTERVAL`] in the background, syncing the data first; on
//! completion and on shutdown it is saved at once without waiting for the
//! disk, the pieces not yet synced marked to be verified again at the next
//! start (see `storage/resume.rs`), so a download is not held up by a
//! flush that the OS does anyway, and a power cut still cannot make a
//! piece count that is not on the disk.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use essaim_core::{Bitfield, InfoHash, Metainfo, PeerId};
use essaim_proto::swarm::{DisconnectReason, Output, PeerKey, Swarm, SwarmConfig, SwarmStats};
use essaim_wire::peer::Handshake;
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};

use crate::dht::DhtHandle;
use crate::peer::{self, PeerEvent, WriterCmd, WriterTx};
use crate::peer_list::{PeerList, PeerSource};
use crate::rate_limit::Limiter;
use crate::storage::Storage;
use crate::tracker::{spawn_announcer, AnnounceStats, AnnouncerConfig};

pub const RESUME_INTERVAL: Duration = Duration::from_secs(10);
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

/// Where a torrent is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TorrentState {
    /// Hashing the data already on disk.
    Checking {
        checked: u32,
        total: u32,
    },
    Downloading,
    Seeding,
    /// Stopped by an error (the text says what and where).
    Error(String),
    Stopped,
}

/// One connected peer, as shown to the user.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    pub peer_id: PeerId,
    pub client: Option<String>,
    pub source: PeerSource,
    pub downloaded: u64,
    pub uploaded: u64,
    pub download_rate: u64,
    pub upload_rate: u64,
}

/// A snapshot of a torrent, refreshed about twice a second.
#[derive(Debug, Clone)]
pub struct TorrentStatus {
    pub info_hash: InfoHash,
    pub name: String,
    pub total_length: u64,
    pub state: TorrentState,
    pub stats: SwarmStats,
    pub peers: Vec<PeerInfo>,
    /// Known peer addresses by source.
    pub known_peers: HashMap<PeerSource, usize>,
    /// Bytes exchanged with each peer id since the torrent started,
    /// including peers no longer connected: (downloaded, uploaded).
    pub totals_by_peer: HashMap<PeerId, (u64, u64)>,
}

impl TorrentStatus {
    pub fn is_complete(&self) -> bool {
        self.state == TorrentState::Seeding
    }
}

/// Commands to a torrent's actor.
#[derive(Debug)]
pub enum TorrentCmd {
    /// An incoming connection whose handshake names this torrent; ours was
    /// already sent back.
    Incoming(TcpStream, SocketAddr, Handshake),
    AddPeers(Vec<SocketAddr>, PeerSource),
    Stop,
}

pub(crate) struct TorrentParams {
    pub metainfo: Arc<Metainfo>,
    pub output_dir: PathBuf,
    pub peers: Vec<SocketAddr>,
    pub select_files: Option<Vec<usize>>,
    pub peer_id: PeerId,
    pub listen_port: u16,
    pub max_peers: usize,
    /// Connections of the whole session, shared by its torrents.
    pub connections: Arc<ConnectionCount>,
    pub upload_slots: usize,
    pub initial_seeding: bool,
    pub upload_limit: Option<Arc<Limiter>>,
    pub download_limit: Option<Arc<Limiter>>,
    pub idle_timeout: Duration,
    /// The session's DHT node, if it runs one.
    pub dht: Option<Arc<DhtHandle>>,
}

/// The session's connection count against its cap.
#[derive(Debug)]
pub struct ConnectionCount {
    count: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl ConnectionCount {
    pub fn new(max: usize) -> Self {
        ConnectionCount {
            count: std::sync::atomic::AtomicUsize::new(0),
            max,
        }
    }

    /// Takes a slot if one is free; it is given back when the slot drops.
    fn take(self: &Arc<Self>) -> Option<ConnSlot> {
        use std::sync::atomic::Ordering;
        let prev = self.count.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnSlot(self.clone()))
    }

    pub fn current(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Acquire)
    }
}

struct ConnSlot(Arc<ConnectionCount>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A checked piece: whether it passed (and was written), and its data.
type DiskResult = (u32, Result<bool, String>, Vec<u8>);

struct Conn {
    _slot: ConnSlot,
    addr: SocketAddr,
    peer_id: PeerId,
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

enum DialResult {
    Connected(SocketAddr, TcpStream, Handshake),
    Failed(SocketAddr, String),
}

pub(crate) async fn run(
    params: TorrentParams,
    mut cmds: mpsc::Receiver<TorrentCmd>,
    status_tx: watch::Sender<TorrentStatus>,
    shutdown: watch::Receiver<bool>,
) {
    let meta = params.metainfo.clone();
    let set_state = |state: TorrentState| {
        status_tx.send_modify(|s| s.state = state);
    };
    // 1. Storage and the pieces already there.
    let storage = {
        let (root, meta) = (params.output_dir.clone(), meta.clone());
        match tokio::task::spawn_blocking(move || Storage::open(&root, &meta.info)).await {
            Ok(Ok(s)) => Arc::new(s),
            Ok(Err(e)) => return set_state(TorrentState::Error(e.to_string())),
            Err(e) => return set_state(TorrentState::Error(e.to_string())),
        }
    };
    let have = {
        let storage = storage.clone();
        let info_hash = meta.info_hash;
        let total = meta.info.layout.num_pieces();
        set_state(TorrentState::Checking { checked: 0, total });
        let progress_tx = status_tx.clone();
        let res = tokio::task::spawn_blocking(move || {
            if let Some((mut have, verify)) = storage.load_resume(&info_hash) {
                if !verify.none_set() {
                    // Written but maybe not flushed when saved: hash again.
                    let good = storage.verify_pieces(&verify)?;
                    storage.mark_unsynced(&good);
                    for p in good.iter_set() {
                        have.set(p);
                    }
                }
                return Ok(have);
            }
            let counter = std::sync::atomic::AtomicU32::new(0);
            storage.recheck(&|_| {
                let done = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if done.is_multiple_of(16) || done == total {
                    progress_tx.send_modify(|s| {
                        s.state = TorrentState::Checking {
                            checked: done,
                            total,
                        }
                    });
                }
            })
        })
        .await;
        match res {
            Ok(Ok(have)) => have,
            Ok(Err(e)) => return set_state(TorrentState::Error(e.to_string())),
            Err(e) => return set_state(TorrentState::Error(e.to_string())),
        }
    };
    let mut actor = Actor::new(params, storage, have, status_tx.clone());
    actor.run(&mut cmds, shutdown).await;
}

struct Actor {
    meta: Arc<Metainfo>,
    swarm: Swarm,
    storage: Arc<Storage>,
    peer_id: PeerId,
    max_peers: usize,
    connections: Arc<ConnectionCount>,
    conns: HashMap<PeerKey, Conn>,
    next_key: PeerKey,
    peer_list: PeerList,
    dialing: usize,
    events_tx: mpsc::Sender<PeerEvent>,
    events_rx: mpsc::Receiver<PeerEvent>,
    disk_tx: mpsc::UnboundedSender<DiskResult>,
    disk_rx: mpsc::UnboundedReceiver<DiskResult>,
    dial_tx: mpsc::Sender<DialResult>,
    dial_rx: mpsc::Receiver<DialResult>,
    status_tx: watch::Sender<TorrentStatus>,
    announce_tx: watch::Sender<AnnounceStats>,
    resume_dirty: bool,
    last_resume: Instant,
    /// A durable resume save running on the blocking pool.
    saving: Option<tokio::task::JoinHandle<Result<(), crate::storage::StorageError>>>,
    error: Option<String>,
    listen_port: u16,
    upload_limit: Option<Arc<Limiter>>,
    download_limit: Option<Arc<Limiter>>,
    idle_timeout: Duration,
    /// Totals of peers that disconnected, by peer id.
    history: HashMap<PeerId, (u64, u64)>,
    /// The swarm reported completion since the last loop turn.
    just_completed: bool,
    /// The DHT node (`None` for private torrents, BEP 27), the peers of
    /// our search, and when to search again if short of peers.
    dht: Option<Arc<DhtHandle>>,
    dht_peers: Option<mpsc::Receiver<Vec<SocketAddr>>>,
    dht_next_search: Instant,
    dht_wait: Duration,
}

impl Actor {
    fn new(
        params: TorrentParams,
        storage: Arc<Storage>,
        have: Bitfield,
        status_tx: watch::Sender<TorrentStatus>,
    ) -> Self {
        let meta = params.metainfo.clone();
        // BEP 27: private torrents get peers from their tracker only.
        let dht = params.dht.clone().filter(|_| !meta.info.private);
        let config = SwarmConfig {
            upload_slots: params.upload_slots,
            super_seed: params.initial_seeding,
            listen_port: Some(params.listen_port),
            seed: rand::random(),
            // BEP 27: private torrents get peers from their tracker only.
            pex: !meta.info.private,
            dht_port: dht.as_ref().and_then(|d| d.local_addr()).map(|a| a.port()),
            ..SwarmConfig::default()
        };
        let mut swarm = Swarm::new(
            meta.info_hash,
            meta.info.layout.clone(),
            have,
            Some(bytes::Bytes::from(meta.info_bytes.clone())),
            config,
        );
        if let Some(selected) = &params.select_files {
            // BEP 53: pieces that touch no selected file are not wanted.
            let layout = &meta.info.layout;
            let mut wanted = Bitfield::new(layout.num_pieces());
            for range in selected.iter().filter_map(|&f| layout.file_pieces(f)) {
                for p in range {
                    wanted.set(p);
                }
            }
            for p in 0..layout.num_pieces() {
                if !wanted.get(p) {
                    swarm.skip_piece(p);
                }
            }
        }
        let (events_tx, events_rx) = mpsc::channel(PEER_EVENT_QUEUE);
        let (disk_tx, disk_rx) = mpsc::unbounded_channel();
        let (dial_tx, dial_rx) = mpsc::channel(64);
        let (announce_tx, _) = watch::channel(AnnounceStats::default());
        let mut peer_list = PeerList::default();
        for addr in &params.peers {
            peer_list.add(*addr, PeerSource::Manual);
        }
        Actor {
            meta,
            swarm,
            storage,
            peer_id: params.peer_id,
            max_peers: params.max_peers,
            connections: params.connections,
            conns: HashMap::new(),
            next_key: 1,
            peer_list,
            dialing: 0,
            events_tx,
            events_rx,
            disk_tx,
            disk_rx,
            dial_tx,
            dial_rx,
            status_tx,
            announce_tx,
            resume_dirty: false,
            last_resume: Instant::now(),
            saving: None,
            error: None,
            listen_port: params.listen_port,
            upload_limit: params.upload_limit,
            download_limit: params.download_limit,
            idle_timeout: params.idle_timeout,
            history: HashMap::new(),
            just_completed: false,
            dht,
            dht_peers: None,
            dht_next_search: Instant::now() + DHT_RESEARCH_FIRST,
            dht_wait: DHT_RESEARCH_FIRST,
        }
    }

    fn left(&self) -> u64 {
        self.meta.info.total_length() - self.swarm_verified()
    }

    fn swarm_verified(&self) -> u64 {
        let layout = self.swarm.layout();
        self.swarm
            .have()
            .iter_set()
            .map(|p| u64::from(layout.piece_size(p).unwrap_or(0)))
            .sum()
    }

    async fn run(
        &mut self,
        cmds: &mut mpsc::Receiver<TorrentCmd>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // Trackers.
        let (peers_tx, mut peers_rx) = mpsc::channel::<Vec<SocketAddr>>(16);
        let want_more = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        self.announce_tx.send_replace(AnnounceStats {
            uploaded: 0,
            downloaded: 0,
            left: self.left(),
        });
        let announcer = start_announcer(
            &self.meta,
            self.peer_id,
            self.listen_port,
            self.announce_tx.subscribe(),
            peers_tx,
            want_more.clone(),
            stop_rx,
        );
        if let Some(dht) = &self.dht {
            // Find peers, and announce us (BEP 5): the node repeats both.
            self.dht_peers = Some(
                dht.get_peers(self.meta.info_hash, Some(self.listen_port))
                    .await,
            );
        }
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        self.publish_status();
        loop {
            tokio::select! {
                Some(ev) = self.events_rx.recv() => {
                    self.on_peer_event(ev);
                    // Drain what else is queued before the outputs go out.
                    for _ in 0..256 {
                        match self.events_rx.try_recv() {
                            Ok(ev) => self.on_peer_event(ev),
                            Err(_) => break,
                        }
                    }
                }
                Some((piece, res, data)) = self.disk_rx.recv() => {
                    self.on_disk(piece, res, &data);
                    self.swarm.recycle_buffer(data);
                }
                Some(res) = self.dial_rx.recv() => self.on_dial(res),
                Some(addrs) = peers_rx.recv() => {
                    for a in addrs { self.peer_list.add(a, PeerSource::Tracker); }
                }
                found = recv_opt(&mut self.dht_peers) => match found {
                    Some(addrs) => {
                        for a in addrs { self.peer_list.add(a, PeerSource::Dht); }
                    }
                    None => self.dht_peers = None,
                },
                cmd = cmds.recv() => match cmd {
                    Some(TorrentCmd::Incoming(stream, addr, hs)) => self.on_connected(stream, addr, hs, PeerSource::Incoming),
                    Some(TorrentCmd::AddPeers(addrs, source)) => {
                        for a in addrs { self.peer_list.add(a, source); }
                    }
                    Some(TorrentCmd::Stop) | None => break,
                },
                _ = tick.tick() => {
                    ticks += 1;
                    let now = Instant::now();
                    if ticks.is_multiple_of(2) {
                        self.swarm.handle_tick(now);
                    }
                    self.dial_more();
                    self.maybe_search_dht(now).await;
                    // A leecher short of peers, or a seed with nobody to
                    // serve, asks the trackers again (never more often
                    // than their min interval).
                    let few = self.conns.len() < self.max_peers / 2;
                    if few && (!self.swarm.is_complete() || self.conns.is_empty()) {
                        want_more.notify_one();
                    }
                    if self.saving.as_ref().is_some_and(|h| h.is_finished()) {
                        self.finish_save().await;
                    }
                    if self.resume_dirty
                        && self.saving.is_none()
                        && now.duration_since(self.last_resume) >= RESUME_INTERVAL
                    {
                        self.start_durable_save();
                    }
                    self.publish_status();
                }
                _ = shutdown.changed() => break,
            }
            self.drain_outputs();
            if self.error.is_some() {
                break;
            }
            if std::mem::take(&mut self.just_completed) {
                // Resume saved before anyone hears of it.
                self.save_resume_now().await;
                self.publish_status();
            }
        }
        // Shutdown: close peers, save resume data, tell the trackers.
        self.conns.clear();
        self.finish_save().await;
        if self.resume_dirty {
            self.save_resume_now().await;
        }
        let _ = stop_tx.send(true);
        if let Some(a) = announcer {
            let _ = tokio::time::timeout(Duration::from_secs(6), a).await;
        }
        let final_state = match self.error.take() {
            Some(e) => TorrentState::Error(e),
            None => TorrentState::Stopped,
        };
        self.publish_status();
        self.status_tx.send_modify(|s| s.state = final_state);
    }

    fn publish_status(&mut self) {
        let now = Instant::now();
        let stats = self.swarm.stats(now);
        let per_peer = self.swarm.peer_stats(now);
        let mut totals = self.history.clone();
        for ps in &per_peer {
            if let Some(c) = self.conns.get(&ps.key) {
                let t = totals.entry(c.peer_id).or_insert((0, 0));
                t.0 += ps.downloaded;
                t.1 += ps.uploaded;
            }
        }
        let peers = per_peer
            .iter()
            .filter_map(|ps| {
                let c = self.conns.get(&ps.key)?;
                Some(PeerInfo {
                    addr: c.addr,
                    peer_id: c.peer_id,
                    client: None,
                    source: self.peer_list.source(&c.addr),
                    downloaded: ps.downloaded,
                    uploaded: ps.uploaded,
                    download_rate: ps.download_rate,
                    upload_rate: ps.upload_rate,
                })
            })
            .collect();
        let state = if self.swarm.is_complete() {
            TorrentState::Seeding
        } else {
            TorrentState::Downloading
        };
        let known = self.peer_list.counts();
        self.status_tx.send_modify(|s| {
            s.state = state;
            s.stats = stats;
            s.peers = peers;
            s.known_peers = known;
            s.totals_by_peer = totals;
        });
        self.announce_tx.send_replace(AnnounceStats {
            uploaded: stats.uploaded,
            downloaded: stats.downloaded,
            left: self.left(),
        });
    }

    /// Starts a durable save (data synced first) on the blocking pool;
    /// the loop goes on meanwhile.
    fn start_durable_save(&mut self) {
        let storage = self.storage.clone();
        let have = self.swarm.have().clone();
        let info_hash = self.meta.info_hash;
        self.resume_dirty = false;
        self.last_resume = Instant::now();
        self.saving = Some(tokio::task::spawn_blocking(move || {
            storage.save_resume(&info_hash, &have, true)
        }));
    }

    /// Waits for the save in progress, if any; a failed one is retried later.
    async fn finish_save(&mut self) {
        if let Some(h) = self.saving.take() {
            let failed = match h.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = failed {
                tracing::warn!("cannot save resume data: {e}");
                self.resume_dirty = true;
            }
        }
    }

    /// Saves now, without waiting for the data to reach the disk (pieces
    /// not yet synced are saved as to be verified).
    async fn save_resume_now(&mut self) {
        self.finish_save().await;
        let storage = self.storage.clone();
        let have = self.swarm.have().clone();
        let info_hash = self.meta.info_hash;
        let res = tokio::task::spawn_blocking(move || {
            storage
                .save_resume(&info_hash, &have, false)
                .map(|()| !storage.unsynced_pieces().none_set())
        })
        .await;
        match res {
            Ok(Ok(unsynced)) => {
                // Pieces still only in the page cache: a durable save
                // follows in the background after the usual interval.
                self.resume_dirty = unsynced;
                self.last_resume = Instant::now();
            }
            Ok(Err(e)) => tracing::warn!("cannot save resume data: {e}"),
            Err(e) => tracing::warn!("cannot save resume data: {e}"),
        }
    }

    /// A leecher short of peers asks the DHT again (with backoff).
    async fn maybe_search_dht(&mut self, now: Instant) {
        let Some(dht) = &self.dht else { return };
        if self.swarm.is_complete()
            || self.conns.len() >= DHT_WANT_PEERS
            || now < self.dht_next_search
        {
            return;
        }
        self.dht_wait = (self.dht_wait * 2).min(DHT_RESEARCH_MAX);
        self.dht_next_search = now + self.dht_wait;
        // A new receiver; the node starts a lookup unless one runs.
        self.dht_peers = Some(
            dht.get_peers(self.meta.info_hash, Some(self.listen_port))
                .await,
        );
    }

    fn dial_more(&mut self) {
        let now = Instant::now();
        let seeding = self.swarm.is_complete();
        while self.dialing < MAX_DIALING && self.conns.len() + self.dialing < self.max_peers {
            let connected: Vec<SocketAddr> = self.conns.values().map(|c| c.addr).collect();
            let Some(addr) = self.peer_list.next_to_dial(now, &connected, seeding) else {
                break;
            };
            self.dialing += 1;
            let tx = self.dial_tx.clone();
            let ours = self.handshake();
            tokio::spawn(async move {
                let res = match peer::connect(addr, ours).await {
                    Ok((stream, hs)) => DialResult::Connected(addr, stream, hs),
                    Err(e) => DialResult::Failed(addr, e.to_string()),
                };
                let _ = tx.send(res).await;
            });
        }
    }

    fn on_dial(&mut self, res: DialResult) {
        self.dialing = self.dialing.saturating_sub(1);
        match res {
            DialResult::Connected(addr, stream, hs) => {
                self.peer_list.connected(addr);
                self.on_connected(stream, addr, hs, PeerSource::Manual);
            }
            DialResult::Failed(addr, why) => {
                tracing::debug!(%addr, "dial failed: {why}");
                self.peer_list.failed(addr, Instant::now());
            }
        }
    }

    fn on_connected(
        &mut self,
        stream: TcpStream,
        addr: SocketAddr,
        hs: Handshake,
        source: PeerSource,
    ) {
        if self.conns.len() >= self.max_peers {
            tracing::debug!(%addr, "peer limit reached, dropping connection");
            return;
        }
        if hs.peer_id == self.peer_id || self.conns.values().any(|c| c.peer_id == hs.peer_id) {
            tracing::debug!(%addr, "already connected to this peer id");
            return;
        }
        if self.peer_list.is_banned(&addr) {
            return;
        }
        let Some(slot) = self.connections.take() else {
            tracing::debug!(%addr, "session connection limit reached, dropping connection");
            return;
        };
        if source == PeerSource::Incoming {
            self.peer_list.add(addr, PeerSource::Incoming);
            self.peer_list.connected(addr);
        }
        let _ = stream.set_nodelay(true);
        let key = self.next_key;
        self.next_key += 1;
        let (read, write) = stream.into_split();
        let (wtx, wrx) = peer::writer_channel();
        let reader = tokio::spawn(peer::run_reader(
            key,
            read,
            self.swarm.max_message_len(),
            self.idle_timeout,
            self.events_tx.clone(),
            self.download_limit.clone(),
        ));
        let writer_task = tokio::spawn(peer::run_writer(
            key,
            write,
            wrx,
            self.storage.clone(),
            self.events_tx.clone(),
            self.upload_limit.clone(),
        ));
        self.conns.insert(
            key,
            Conn {
                _slot: slot,
                addr,
                peer_id: hs.peer_id,
                writer: wtx,
                reader,
                writer_task,
            },
        );
        let ours = self.handshake();
        let fast = hs.supports_fast() && ours.supports_fast();
        let ext = hs.supports_extensions() && ours.supports_extensions();
        tracing::debug!(%addr, key, "peer connected");
        self.swarm
            .handle_peer_connected(key, fast, ext, Some(addr.ip()), Instant::now());
        if hs.supports_dht() {
            self.swarm.handle_peer_dht(key);
        }
        if source != PeerSource::Incoming {
            self.swarm.handle_peer_address(key, addr);
        }
    }

    /// Our handshake: the DHT bit when we run a node.
    fn handshake(&self) -> Handshake {
        Handshake::new(self.meta.info_hash, self.peer_id).with_dht(self.dht.is_some())
    }

    fn on_peer_event(&mut self, ev: PeerEvent) {
        let now = Instant::now();
        match ev {
            PeerEvent::Message(key, msg) => self.swarm.handle_message(key, msg, now),
            PeerEvent::Sent(key, bytes) => self.swarm.handle_block_sent(key, bytes, now),
            PeerEvent::Rtt(key, rtt) => self.swarm.handle_peer_rtt(key, rtt),
            PeerEvent::Closed(key, why) => {
                if let Some(c) = self.conns.remove(&key) {
                    tracing::debug!(addr = %c.addr, "peer closed: {why}");
                    self.remember(key, c.peer_id, now);
                    self.peer_list.disconnected(c.addr, now);
                    self.swarm.handle_peer_disconnected(key, now);
                }
            }
        }
    }

    /// Keeps a leaving peer's byte counts in the history.
    fn remember(&mut self, key: PeerKey, peer_id: PeerId, now: Instant) {
        if let Some(ps) = self
            .swarm
            .peer_stats(now)
            .into_iter()
            .find(|p| p.key == key)
        {
            let t = self.history.entry(peer_id).or_insert((0, 0));
            t.0 += ps.downloaded;
            t.1 += ps.uploaded;
        }
    }

    fn on_disk(&mut self, piece: u32, res: Result<bool, String>, data: &[u8]) {
        match res {
            Ok(ok) => {
                if !ok {
                    tracing::debug!(piece, "piece failed its hash check");
                }
                self.swarm
                    .handle_piece_checked(piece, ok, data, Instant::now());
            }
            Err(e) => {
                tracing::error!("{e}");
                self.error = Some(e);
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
            self.swarm.handle_peer_disconnected(peer, now);
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

    fn drain_outputs(&mut self) {
        while let Some(out) = self.swarm.poll_output() {
            match out {
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
                    } else {
                        self.swarm.handle_block_sent(peer, 0, Instant::now());
                    }
                }
                Output::CheckPiece { piece, data } => {
                    let storage = self.storage.clone();
                    let expected = self.meta.info.pieces.get(piece as usize).copied();
                    let tx = self.disk_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let ok = expected.is_some_and(|h| Sha1::digest(&data)[..] == h[..]);
                        let res = if ok {
                            storage
                                .write_piece(piece, &data)
                                .map(|()| true)
                                .map_err(|e| e.to_string())
                        } else {
                            Ok(false)
                        };
                        let _ = tx.send((piece, res, data));
                    });
                }
                Output::Disconnect { peer, reason } => self.disconnect(peer, reason),
                Output::PieceVerified(_) => self.resume_dirty = true,
                Output::PeersDiscovered(addrs) => {
                    for a in addrs {
                        self.peer_list.add(a, PeerSource::Pex);
                    }
                }
                Output::DhtNode(addr) => {
                    if let Some(dht) = &self.dht {
                        dht.add_node(addr);
                    }
                }
                Output::MetadataReceived(_) => {}
                Output::Completed => {
                    tracing::info!(name = %self.meta.info.name, "download complete");
                    self.resume_dirty = true;
                    self.just_completed = true;
                }
            }
        }
    }
}

fn start_announcer(
    meta: &Metainfo,
    peer_id: PeerId,
    port: u16,
    stats: watch::Receiver<AnnounceStats>,
    peers: mpsc::Sender<Vec<SocketAddr>>,
    want_more: Arc<Notify>,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if meta.trackers.is_empty() {
        return None;
    }
    let cfg = AnnouncerConfig {
        info_hash: meta.info_hash,
        peer_id,
        port,
        trackers: meta.trackers.clone(),
        numwant: 50,
    };
    Some(spawn_announcer(cfg, stats, peers, want_more, stop))
}

/// The announcer used while fetching a magnet link's metadata: the size is
/// unknown, so `left` is reported as 1 (not 0, which would claim a seed).
pub(crate) fn start_magnet_announcer(
    info_hash: InfoHash,
    peer_id: PeerId,
    port: u16,
    trackers: &[Vec<String>],
    peers: mpsc::Sender<Vec<SocketAddr>>,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if trackers.is_empty() {
        return None;
    }
    let cfg = AnnouncerConfig {
        info_hash,
        peer_id,
        port,
        trackers: trackers.to_vec(),
        numwant: 50,
    };
    let (stats_tx, stats) = watch::channel(AnnounceStats {
        left: 1,
        ..AnnounceStats::default()
    });
    let handle = spawn_announcer(cfg, stats, peers, Arc::new(Notify::new()), stop);
    // The sender must outlive the task: it ends with the task.
    tokio::spawn(async move {
        stats_tx.closed().await;
    });
    Some(handle)
}

/// Receives from an optional channel; pending forever without one.
async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
