//! The session: one listening socket, one peer id, one DHT node, any
//! number of torrents, and the one public API that the daemon, the CLI,
//! the HTTP adapters and the tests all drive.
//!
//! Design: each torrent is an actor ([`crate::torrent`]); a manager task
//! ([`manager`]) owns the list of torrents and the queue, adds and removes
//! torrents and applies the queue's decisions. Reading (list, get, stats)
//! needs neither: each torrent publishes its summary on a watch channel
//! that the [`Session`] reads directly. Commands to one torrent go to its
//! actor; those that change the list or the queue go through the manager.
//!
//! With a state folder ([`SessionConfig::state_dir`]) the session keeps
//! every torrent, its options and its state there ([`crate::store`]) and
//! brings them back when it starts again; without one (`essaim get`), only
//! resume data is kept, next to the data.

mod dht;
mod listener;
mod manager;
mod settings;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use essaim_core::{InfoHash, PeerId};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Semaphore};

pub use dht::DHT_ROUTERS;
pub use listener::MAX_HALF_OPEN;
pub use settings::SettingsPatch;

use crate::dht::DhtHandle;
use crate::events::{Event, EventStream, EVENT_QUEUE};
use crate::rate_limit::Limiter;
use crate::store::Store;
use crate::torrent::{Query, Report, TorrentCmd};
use crate::tracker::http::{HttpConfig, HttpTracker};
use crate::types::{
    AddOptions, AddSource, FileStatus, OptionsPatch, PeerStatus, PieceMap, QueueMove, SessionStats,
    Settings, TorrentId, TorrentState, TorrentSummary, TrackerStatus,
};
use manager::{Manager, ManagerCmd};

/// Dials in progress at once in the whole session (half-open outgoing
/// connections).
pub const MAX_DIALING: usize = 64;
/// Full checks (every piece hashed) at once: one, as hashing already uses
/// every core.
const CHECKS_AT_ONCE: usize = 1;

/// How a session runs: what is fixed for its life. What may change at run
/// time is in [`Settings`].
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub listen_ip: IpAddr,
    /// 0 lets the OS choose.
    pub port: u16,
    /// If the port is taken, try the next ones (up to 100 further).
    pub port_search: bool,
    pub peer_id: Option<PeerId>,
    /// A connected peer silent this long is dropped (default
    /// [`crate::peer::IDLE_TIMEOUT`], 180 s; tests shorten it).
    pub idle_timeout: Duration,
    /// Local service discovery (BEP 14) on the multicast group, on the
    /// interface of `listen_ip` (the default one for 0.0.0.0).
    pub lsd: bool,
    /// The group's UDP port (BEP 14: 6771; tests use their own).
    pub lsd_port: u16,
    /// The Mainline DHT (BEP 5): a full node on the listening port (UDP).
    pub dht: bool,
    /// DHT bootstrap nodes, `HOST:PORT` (names resolved in the
    /// background). `None`: the public routers ([`DHT_ROUTERS`]), except
    /// when `listen_ip` is loopback, where there is no default: a node on
    /// 127.0.0.1 never talks to the internet.
    pub dht_bootstrap: Option<Vec<String>>,
    /// Where the DHT keeps its node id and routing table between runs.
    pub dht_state: Option<PathBuf>,
    /// Where the session keeps its torrents between runs; `None`: nowhere
    /// (resume data only, next to each torrent's data).
    pub state_dir: Option<PathBuf>,
    /// The settings to start with (those changed at run time and saved in
    /// the state folder win over these while these stay the same; see
    /// [`Session::set_settings`]).
    pub settings: Settings,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 6881,
            port_search: true,
            peer_id: None,
            idle_timeout: crate::peer::IDLE_TIMEOUT,
            lsd: true,
            lsd_port: essaim_wire::lsd::PORT,
            dht: true,
            dht_bootstrap: None,
            dht_state: None,
            state_dir: None,
            settings: Settings::default(),
        }
    }
}

/// What went wrong with a session call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no torrent {0}")]
    NotFound(String),
    #[error("not a valid torrent: {0}")]
    InvalidTorrent(String),
    #[error("not a valid magnet link: {0}")]
    InvalidMagnet(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Torrent(#[from] crate::types::TorrentError),
    #[error("cannot save the session's state in {}: {source}", path.display())]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the session is shutting down")]
    Closed,
}

/// A torrent added: its id, and whether it was there already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    pub id: TorrentId,
    /// It was already in the session (the id is the existing one).
    pub existed: bool,
}

/// The session's connection count against its cap.
#[derive(Debug)]
pub(crate) struct ConnectionCount {
    count: AtomicUsize,
    max: AtomicUsize,
}

impl ConnectionCount {
    fn new(max: usize) -> Self {
        ConnectionCount {
            count: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        }
    }

    fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Takes a slot if one is free; it is given back when the slot drops.
    pub fn take(self: &Arc<Self>) -> Option<ConnSlot> {
        let prev = self.count.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max.load(Ordering::Relaxed) {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnSlot(self.clone()))
    }
}

/// One connection's place in the session's cap.
#[derive(Debug)]
pub(crate) struct ConnSlot(Arc<ConnectionCount>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A torrent in the session's table.
pub(crate) struct Entry {
    pub info_hash: InfoHash,
    pub tx: crate::torrent::cmdq::Sender<TorrentCmd>,
    pub status: watch::Receiver<TorrentSummary>,
    pub private: bool,
    /// It runs: incoming connections and LSD peers are for it.
    pub active: bool,
}

/// The torrents, by id and by infohash.
#[derive(Default)]
pub(crate) struct Table {
    pub by_id: BTreeMap<TorrentId, Entry>,
    pub by_hash: HashMap<InfoHash, TorrentId>,
}

/// What the torrents of a session share.
pub(crate) struct Shared {
    pub peer_id: PeerId,
    pub port: u16,
    pub dht: Option<Arc<DhtHandle>>,
    pub connections: Arc<ConnectionCount>,
    /// Dials in progress, session-wide ([`MAX_DIALING`]).
    pub dial_slots: Arc<Semaphore>,
    pub upload: Arc<Limiter>,
    pub download: Arc<Limiter>,
    /// One HTTP client (one connection pool) for every announce.
    pub http_tracker: Option<HttpTracker>,
    /// One UDP socket per address family for every UDP announce.
    pub udp_trackers: crate::tracker::UdpSockets,
    /// Full checks take turns.
    pub check_slots: Arc<Semaphore>,
    pub events: broadcast::Sender<Event>,
    settings: RwLock<Arc<Settings>>,
    pub idle_timeout: Duration,
    pub store: Option<Store>,
    pub table: Mutex<Table>,
    pub reports: mpsc::UnboundedSender<Report>,
}

impl Shared {
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_settings(&self, s: Settings) {
        self.upload.set_rate(s.upload_limit);
        self.download.set_rate(s.download_limit);
        self.connections.set_max(s.max_peers);
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
    }

    pub fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A torrent runs or stops (for incoming connections and LSD).
    pub fn set_active(&self, info_hash: InfoHash, active: bool) {
        let mut t = self.table();
        if let Some(id) = t.by_hash.get(&info_hash).copied() {
            if let Some(e) = t.by_id.get_mut(&id) {
                e.active = active;
            }
        }
    }

    /// Where an incoming connection for `info_hash` goes, if that torrent
    /// runs; and whether it is private.
    pub fn route(
        &self,
        info_hash: &InfoHash,
    ) -> Option<(crate::torrent::cmdq::Sender<TorrentCmd>, bool)> {
        let t = self.table();
        let e = t.by_id.get(t.by_hash.get(info_hash)?)?;
        e.active.then(|| (e.tx.clone(), e.private))
    }
}

impl crate::lsd::Registry for Shared {
    fn info_hashes(&self) -> Vec<InfoHash> {
        self.table()
            .by_id
            .values()
            .filter(|e| e.active && !e.private)
            .map(|e| e.info_hash)
            .collect()
    }

    fn deliver(&self, info_hash: InfoHash, addr: SocketAddr) {
        if let Some((tx, _)) = self.route(&info_hash) {
            let _ = tx.try_send(TorrentCmd::AddPeers(
                vec![addr],
                crate::peer_list::PeerSource::Lsd,
            ));
        }
    }
}

/// A running session. Dropping it stops nothing cleanly: call
/// [`Session::shutdown`].
pub struct Session {
    shared: Arc<Shared>,
    manager: mpsc::Sender<ManagerCmd>,
    local_addr: SocketAddr,
    started: Instant,
    settings: tokio::sync::Mutex<settings::SettingsState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    manager_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Session {
    /// Binds the listening port, starts the DHT and LSD, and brings back
    /// the torrents of the state folder (if any).
    pub async fn new(config: SessionConfig) -> Result<Session, SessionError> {
        let store = match &config.state_dir {
            Some(dir) => Some(Store::open(dir).map_err(|source| SessionError::State {
                path: dir.clone(),
                source,
            })?),
            None => None,
        };
        let settings_state = settings::SettingsState::load(config.settings.clone(), store.as_ref());
        let listener = listener::bind(&config).await?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| SessionError::Listen {
                addr: SocketAddr::new(config.listen_ip, config.port),
                source,
            })?;
        let peer_id = config
            .peer_id
            .unwrap_or_else(|| PeerId::generate(rand::random()));
        let dht = if config.dht {
            dht::start_dht(&config, local_addr).await.map(Arc::new)
        } else {
            None
        };
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let current = settings_state.current.clone();
        let shared = Arc::new(Shared {
            peer_id,
            port: local_addr.port(),
            dht,
            connections: Arc::new(ConnectionCount::new(current.max_peers)),
            dial_slots: Arc::new(Semaphore::new(MAX_DIALING)),
            upload: Arc::new(Limiter::new(None)),
            download: Arc::new(Limiter::new(None)),
            http_tracker: HttpTracker::new(&HttpConfig::default()).ok(),
            udp_trackers: crate::tracker::UdpSockets::default(),
            check_slots: Arc::new(Semaphore::new(CHECKS_AT_ONCE)),
            events,
            settings: RwLock::new(Arc::new(current.clone())),
            idle_timeout: config.idle_timeout,
            store,
            table: Mutex::new(Table::default()),
            reports: reports_tx,
        });
        shared.set_settings(current);
        let mut tasks = vec![tokio::spawn(listener::accept_loop(
            listener,
            shared.clone(),
        ))];
        if config.lsd {
            // Multicast where we listen: 127.0.0.1 keeps LSD on this machine.
            let interface = match config.listen_ip {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            let lsd = crate::lsd::LsdConfig {
                port: config.lsd_port,
                interface,
            };
            match crate::lsd::spawn(lsd, local_addr.port(), shared.clone()) {
                Ok(task) => tasks.push(task),
                Err(e) => tracing::warn!("local service discovery is off: {e}"),
            }
        }
        let (manager_tx, manager_rx) = mpsc::channel(64);
        let mut manager = Manager::new(shared.clone(), reports_rx);
        manager.restore().await;
        let manager_task = tokio::spawn(manager.run(manager_rx));
        tasks.push(tokio::spawn(stats_loop(shared.clone())));
        if let Some(store) = shared.store.clone() {
            tasks.push(tokio::spawn(run_log_loop(store)));
        }
        Ok(Session {
            shared,
            manager: manager_tx,
            local_addr,
            started: Instant::now(),
            settings: tokio::sync::Mutex::new(settings_state),
            tasks,
            manager_task: Mutex::new(Some(manager_task)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
    pub fn port(&self) -> u16 {
        self.shared.port
    }
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }
    /// The session's state folder, if it has one.
    pub fn state_dir(&self) -> Option<&std::path::Path> {
        self.shared.store.as_ref().map(|s| s.dir())
    }
    /// Nodes in the DHT routing table, if the session runs a DHT node.
    pub fn dht_nodes(&self) -> Option<usize> {
        self.shared.dht.as_ref().map(|d| d.routing_table_len())
    }
    /// The DHT node's UDP address, if the session runs one.
    pub fn dht_addr(&self) -> Option<SocketAddr> {
        self.shared.dht.as_ref().and_then(|d| d.local_addr())
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> ManagerCmd,
    ) -> Result<T, SessionError> {
        let (tx, rx) = oneshot::channel();
        self.manager
            .send(make(tx))
            .await
            .map_err(|_| SessionError::Closed)?;
        rx.await.map_err(|_| SessionError::Closed)
    }

    /// Adds a torrent (a .torrent file's bytes or a magnet link) and
    /// returns its id at once; its data is checked, then it downloads and
    /// seeds as the queue allows. A torrent already in the session is not
    /// added again: its id comes back with `existed`.
    pub async fn add(&self, source: AddSource, options: AddOptions) -> Result<Added, SessionError> {
        self.ask(|reply| ManagerCmd::Add {
            source,
            options,
            reply,
        })
        .await?
    }

    /// Every torrent, by id.
    pub fn list(&self) -> Vec<TorrentSummary> {
        self.shared
            .table()
            .by_id
            .values()
            .map(|e| e.status.borrow().clone())
            .collect()
    }

    pub fn get(&self, id: TorrentId) -> Option<TorrentSummary> {
        self.shared
            .table()
            .by_id
            .get(&id)
            .map(|e| e.status.borrow().clone())
    }

    /// The torrent of an infohash.
    pub fn find(&self, info_hash: &InfoHash) -> Option<TorrentId> {
        self.shared.table().by_hash.get(info_hash).copied()
    }

    /// A torrent named by its id (`12`) or by a prefix of its infohash in
    /// hex (at least 4 digits, one torrent only).
    pub fn resolve(&self, text: &str) -> Result<TorrentId, SessionError> {
        let text = text.trim();
        let t = self.shared.table();
        if let Ok(n) = text.parse::<u64>() {
            if t.by_id.contains_key(&TorrentId(n)) {
                return Ok(TorrentId(n));
            }
        }
        let lower = text.to_ascii_lowercase();
        if lower.len() >= 4 && lower.len() <= 40 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            let found: Vec<TorrentId> = t
                .by_id
                .iter()
                .filter(|(_, e)| e.info_hash.to_hex().starts_with(&lower))
                .map(|(id, _)| *id)
                .collect();
            match found[..] {
                [one] => return Ok(one),
                [] => {}
                _ => {
                    return Err(SessionError::Invalid(format!(
                        "{text:?} names {} torrents: give more of the infohash",
                        found.len()
                    )))
                }
            }
        }
        Err(SessionError::NotFound(text.to_owned()))
    }

    /// A receiver of a torrent's summary, woken on every change.
    pub fn watch(&self, id: TorrentId) -> Option<watch::Receiver<TorrentSummary>> {
        self.shared.table().by_id.get(&id).map(|e| e.status.clone())
    }

    /// Waits until `f` holds for the torrent's summary; `None` if the
    /// torrent is removed (or the session ends) first.
    pub async fn wait_for(
        &self,
        id: TorrentId,
        f: impl Fn(&TorrentSummary) -> bool,
    ) -> Option<TorrentSummary> {
        let mut rx = self.watch(id)?;
        loop {
            {
                let s = rx.borrow_and_update();
                if f(&s) {
                    return Some(s.clone());
                }
            }
            rx.changed().await.ok()?;
        }
    }

    fn sender(
        &self,
        id: TorrentId,
    ) -> Result<crate::torrent::cmdq::Sender<TorrentCmd>, SessionError> {
        self.shared
            .table()
            .by_id
            .get(&id)
            .map(|e| e.tx.clone())
            .ok_or_else(|| SessionError::NotFound(id.to_string()))
    }

    /// Sends `cmd` to a torrent and waits until it has carried it out
    /// (and saved what changed).
    async fn tell(&self, id: TorrentId, cmd: TorrentCmd) -> Result<(), SessionError> {
        let tx = self.sender(id)?;
        tx.send(cmd)
            .await
            .map_err(|_| SessionError::NotFound(id.to_string()))?;
        let (done, rx) = oneshot::channel();
        tx.send(TorrentCmd::Sync(done))
            .await
            .map_err(|_| SessionError::NotFound(id.to_string()))?;
        rx.await.map_err(|_| SessionError::NotFound(id.to_string()))
    }

    async fn query<T>(
        &self,
        id: TorrentId,
        q: impl FnOnce(oneshot::Sender<T>) -> Query,
    ) -> Result<T, SessionError> {
        let tx = self.sender(id)?;
        let (reply, rx) = oneshot::channel();
        tx.send(TorrentCmd::Query(q(reply)))
            .await
            .map_err(|_| SessionError::NotFound(id.to_string()))?;
        rx.await.map_err(|_| SessionError::NotFound(id.to_string()))
    }

    /// Pauses a torrent: its connections close, it keeps its place.
    pub async fn pause(&self, id: TorrentId) -> Result<(), SessionError> {
        self.tell(id, TorrentCmd::Pause).await
    }

    /// Resumes a paused torrent (or one stopped by an error: it tries
    /// again); it runs when the queue lets it.
    pub async fn resume(&self, id: TorrentId) -> Result<(), SessionError> {
        self.tell(id, TorrentCmd::Resume).await
    }

    /// Starts a torrent now whatever the queue says (`true`), or gives it
    /// back to the queue (`false`). A paused torrent is resumed.
    pub async fn force_start(&self, id: TorrentId, force: bool) -> Result<(), SessionError> {
        self.ask(|reply| ManagerCmd::Force { id, force, reply })
            .await??;
        if force {
            self.resume(id).await?;
        }
        Ok(())
    }

    /// Removes a torrent; with `delete_data` its files too (only those the
    /// torrent names, and its folders left empty).
    pub async fn remove(&self, id: TorrentId, delete_data: bool) -> Result<(), SessionError> {
        self.ask(|reply| ManagerCmd::Remove {
            id,
            delete_data,
            reply,
        })
        .await?
    }

    /// Hashes every piece on disk again (the torrent stops meanwhile).
    pub async fn recheck(&self, id: TorrentId) -> Result<(), SessionError> {
        self.tell(id, TorrentCmd::Recheck).await
    }

    /// Asks the trackers for peers now (never sooner than they allow).
    pub async fn reannounce(&self, id: TorrentId) -> Result<(), SessionError> {
        self.tell(id, TorrentCmd::Reannounce).await
    }

    /// Peers for a torrent to dial.
    pub async fn add_peers(
        &self,
        id: TorrentId,
        peers: Vec<SocketAddr>,
    ) -> Result<(), SessionError> {
        self.tell(
            id,
            TorrentCmd::AddPeers(peers, crate::peer_list::PeerSource::Manual),
        )
        .await
    }

    /// Changes a torrent's options; returns its summary after the change.
    pub async fn set_options(
        &self,
        id: TorrentId,
        patch: OptionsPatch,
    ) -> Result<TorrentSummary, SessionError> {
        let tx = self.sender(id)?;
        let (reply, rx) = oneshot::channel();
        tx.send(TorrentCmd::SetOptions(Box::new(patch), reply))
            .await
            .map_err(|_| SessionError::NotFound(id.to_string()))?;
        rx.await
            .map_err(|_| SessionError::NotFound(id.to_string()))??;
        self.tell(id, TorrentCmd::SettingsChanged).await?;
        self.get(id)
            .ok_or_else(|| SessionError::NotFound(id.to_string()))
    }

    /// Moves a torrent in the queue.
    pub async fn move_in_queue(&self, id: TorrentId, to: QueueMove) -> Result<(), SessionError> {
        self.ask(|reply| ManagerCmd::Move { id, to, reply })
            .await??;
        // Every torrent has taken its new place before this returns.
        let txs: Vec<_> = self
            .shared
            .table()
            .by_id
            .values()
            .map(|e| e.tx.clone())
            .collect();
        for tx in txs {
            let (done, rx) = oneshot::channel();
            if tx.send(TorrentCmd::Sync(done)).await.is_ok() {
                let _ = rx.await;
            }
        }
        Ok(())
    }

    pub async fn files(&self, id: TorrentId) -> Result<Vec<FileStatus>, SessionError> {
        self.query(id, Query::Files).await
    }

    pub async fn peers(&self, id: TorrentId) -> Result<Vec<PeerStatus>, SessionError> {
        self.query(id, Query::Peers).await
    }

    pub async fn trackers(&self, id: TorrentId) -> Result<Vec<TrackerStatus>, SessionError> {
        self.query(id, Query::Trackers).await
    }

    /// The piece map (`None` while a magnet link has no metadata).
    pub async fn pieces(&self, id: TorrentId) -> Result<Option<PieceMap>, SessionError> {
        self.query(id, Query::Pieces).await
    }

    /// The torrent's .torrent file (`None` while a magnet link has no
    /// metadata).
    pub async fn metainfo(&self, id: TorrentId) -> Result<Option<Vec<u8>>, SessionError> {
        self.query(id, Query::Metainfo).await
    }

    /// Bytes exchanged with each peer id since the torrent last started,
    /// including peers gone: (downloaded, uploaded).
    pub async fn peer_totals(
        &self,
        id: TorrentId,
    ) -> Result<HashMap<PeerId, (u64, u64)>, SessionError> {
        self.query(id, Query::PeerTotals).await
    }

    /// The settings in force.
    pub fn settings(&self) -> Settings {
        (*self.shared.settings()).clone()
    }

    /// Changes settings at run time. With a state folder the change is
    /// kept across restarts, as long as the starting value it replaced
    /// (from the configuration) stays the same: editing the configuration
    /// file later wins.
    pub async fn set_settings(&self, patch: SettingsPatch) -> Result<Settings, SessionError> {
        let mut st = self.settings.lock().await;
        let new = st.apply(&patch)?;
        st.save(self.shared.store.as_ref());
        self.install(new.clone()).await;
        Ok(new)
    }

    /// New starting settings (the configuration was read again): each
    /// setting whose starting value changed takes it, whatever was set at
    /// run time; the others keep their value.
    pub async fn reload_settings(&self, base: Settings) -> Settings {
        let mut st = self.settings.lock().await;
        let new = st.rebase(base);
        st.save(self.shared.store.as_ref());
        self.install(new.clone()).await;
        new
    }

    async fn install(&self, new: Settings) {
        self.shared.set_settings(new);
        let _ = self.manager.send(ManagerCmd::LimitsChanged).await;
        let txs: Vec<_> = self
            .shared
            .table()
            .by_id
            .values()
            .map(|e| e.tx.clone())
            .collect();
        for tx in txs {
            let _ = tx.send(TorrentCmd::SettingsChanged).await;
        }
    }

    /// Figures of the whole session.
    pub fn stats(&self) -> SessionStats {
        let mut s = session_stats(&self.shared);
        s.uptime = self.started.elapsed();
        s
    }

    /// The session's events from now on (see [`crate::events`]).
    pub fn subscribe(&self) -> EventStream {
        EventStream(self.shared.events.subscribe())
    }

    /// Stops every torrent (saving resume data and records, telling
    /// trackers, within 10 s), the listener and the DHT (saving its
    /// state).
    /// Later calls do nothing; the session answers no more commands.
    pub async fn shutdown(&self) {
        let Some(manager_task) = self
            .manager_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        if self.manager.send(ManagerCmd::Shutdown(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(12), rx).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), manager_task).await;
        for t in &self.tasks {
            t.abort();
        }
        if let Some(store) = &self.shared.store {
            // The torrents' clocks ran until now.
            if let Err(e) = store.touch_run().await {
                tracing::warn!("cannot save the session's run log: {e}");
            }
        }
        if let Some(dht) = &self.shared.dht {
            let saved = tokio::time::timeout(Duration::from_secs(5), dht.shutdown()).await;
            if let Ok(Err(e)) = saved {
                tracing::warn!("cannot save the DHT state: {e}");
            }
        }
    }
}

/// How often the session notes that it is alive ([`crate::store::RunLog`]):
/// a crash loses at most this much of the torrents' seeding time.
const RUN_LOG_EVERY: Duration = Duration::from_secs(60);

async fn run_log_loop(store: Store) {
    let mut tick = tokio::time::interval(RUN_LOG_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = store.touch_run().await {
            tracing::warn!("cannot save the session's run log: {e}");
        }
    }
}

/// The figures of every torrent, summed.
fn session_stats(shared: &Shared) -> SessionStats {
    let mut s = SessionStats::default();
    let t = shared.table();
    for e in t.by_id.values() {
        let ts = e.status.borrow();
        s.torrents += 1;
        match &ts.state {
            TorrentState::Downloading | TorrentState::FetchingMetadata => s.downloading += 1,
            TorrentState::Seeding => s.seeding += 1,
            TorrentState::Paused => s.paused += 1,
            TorrentState::Queued => s.queued += 1,
            TorrentState::Checking { .. } => s.checking += 1,
            TorrentState::Error(_) => s.errors += 1,
        }
        s.download_rate += ts.download_rate;
        s.upload_rate += ts.upload_rate;
        s.downloaded += ts.downloaded;
        s.uploaded += ts.uploaded;
        s.downloaded_total += ts.downloaded_total;
        s.uploaded_total += ts.uploaded_total;
        s.peers += ts.peers;
    }
    drop(t);
    s.dht_nodes = shared.dht.as_ref().map(|d| d.routing_table_len());
    s
}

/// Once a second, while anyone listens: the session's statistics and those
/// of the torrents whose figures moved.
async fn stats_loop(shared: Arc<Shared>) {
    let started = Instant::now();
    let mut last: HashMap<TorrentId, crate::events::TorrentStats> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if shared.events.receiver_count() == 0 {
            last.clear();
            continue;
        }
        let mut session = session_stats(&shared);
        session.uptime = started.elapsed();
        let mut torrents = Vec::new();
        let now: Vec<crate::events::TorrentStats> = shared
            .table()
            .by_id
            .iter()
            .map(|(id, e)| {
                let s = e.status.borrow();
                crate::events::TorrentStats {
                    id: *id,
                    state: s.state.clone(),
                    progress: s.progress(),
                    download_rate: s.download_rate,
                    upload_rate: s.upload_rate,
                    downloaded_total: s.downloaded_total,
                    uploaded_total: s.uploaded_total,
                    peers: s.peers,
                    eta: s.eta(),
                }
            })
            .collect();
        let ids: std::collections::HashSet<TorrentId> = now.iter().map(|t| t.id).collect();
        last.retain(|id, _| ids.contains(id));
        for t in now {
            if last.get(&t.id) != Some(&t) {
                last.insert(t.id, t.clone());
                torrents.push(t);
            }
        }
        let _ = shared.events.send(Event::Stats { session, torrents });
    }
}
