//! The session: one listening socket, one peer id, any number of torrents.
//!
//! The listener accepts a connection, reads the remote handshake (bounded by
//! a timeout), answers with ours if the infohash is one of our torrents and
//! hands the stream to that torrent's actor; unknown infohashes are dropped.
//! Accepted connections waiting for a handshake are capped by
//! [`MAX_HALF_OPEN`], so a flood of idle sockets cannot exhaust us; at the
//! cap a new connection takes the place of the oldest one, so idle sockets
//! cannot lock real peers out for the handshake timeout either.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use essaim_core::{InfoHash, Magnet, Metainfo, PeerId};
use essaim_wire::peer::Handshake;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::dht::{DhtConfig, DhtHandle};
use crate::peer;
use crate::peer_list::PeerSource;
use crate::rate_limit::Limiter;
use crate::torrent::{self, TorrentCmd, TorrentParams, TorrentState, TorrentStatus};

/// Incoming connections still in their handshake, at most.
pub const MAX_HALF_OPEN: usize = 256;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub listen_ip: IpAddr,
    /// 0 lets the OS choose.
    pub port: u16,
    /// If the port is taken, try the next ones (up to 100 further).
    pub port_search: bool,
    pub peer_id: Option<PeerId>,
    pub max_peers_per_torrent: usize,
    /// Connected peers across all torrents, at most.
    pub max_peers_total: usize,
    /// Regular upload slots per torrent.
    pub upload_slots: usize,
    /// A torrent that starts complete sends each piece once before any
    /// twice (`essaim_proto::super_seed`); off, it is an ordinary seed.
    pub initial_seeding: bool,
    /// Upload cap for the whole session, bytes per second.
    pub upload_limit: Option<u64>,
    /// Download cap for the whole session, bytes per second.
    pub download_limit: Option<u64>,
    /// A connected peer silent this long is dropped (default
    /// [`peer::IDLE_TIMEOUT`], 180 s; tests shorten it).
    pub idle_timeout: std::time::Duration,
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
}

/// The well-known public DHT routers, the default bootstrap.
pub const DHT_ROUTERS: &[&str] = &[
    "router.bittorrent.com:6881",
    "router.utorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
];

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 6881,
            port_search: true,
            peer_id: None,
            max_peers_per_torrent: 50,
            max_peers_total: 500,
            upload_slots: 4,
            initial_seeding: true,
            upload_limit: None,
            download_limit: None,
            idle_timeout: peer::IDLE_TIMEOUT,
            lsd: true,
            lsd_port: essaim_wire::lsd::PORT,
            dht: true,
            dht_bootstrap: None,
            dht_state: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("torrent {0} is already in the session")]
    Duplicate(InfoHash),
    #[error("cannot get the metadata: {0}")]
    Metadata(String),
}

/// What to add to a session.
#[derive(Debug, Clone)]
pub struct AddTorrent {
    pub metainfo: Metainfo,
    /// The folder the torrent's content goes in (its name is appended).
    pub output_dir: PathBuf,
    /// Peers to dial at once (`--peer`, `x.pe=`).
    pub peers: Vec<SocketAddr>,
}

/// How to run a torrent, beyond what it is and where.
#[derive(Debug, Clone, Default)]
pub struct TorrentOptions {
    /// Only these files (indices in the torrent's file list, as BEP 53's
    /// `so=`); `None`: all. Pieces that touch no selected file are never
    /// downloaded; files are still laid out (sparse), as other clients do.
    pub select_files: Option<Vec<usize>>,
}

struct Inner {
    peer_id: PeerId,
    port: u16,
    config: SessionConfig,
    torrents: Mutex<HashMap<InfoHash, mpsc::Sender<TorrentCmd>>>,
    /// Private torrents (BEP 27): never announced by LSD.
    private: Mutex<std::collections::HashSet<InfoHash>>,
    shutdown: watch::Sender<bool>,
    connections: Arc<crate::torrent::ConnectionCount>,
    upload_limit: Option<Arc<Limiter>>,
    download_limit: Option<Arc<Limiter>>,
    dht: Option<Arc<DhtHandle>>,
}

pub struct Session {
    inner: Arc<Inner>,
    local_addr: SocketAddr,
    listener: tokio::task::JoinHandle<()>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Session-wide services (LSD), stopped at shutdown.
    services: Vec<tokio::task::JoinHandle<()>>,
}

/// A torrent in a session.
#[derive(Clone)]
pub struct TorrentHandle {
    info_hash: InfoHash,
    status: watch::Receiver<TorrentStatus>,
    cmds: mpsc::Sender<TorrentCmd>,
}

impl TorrentHandle {
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }
    /// The latest status.
    pub fn status(&self) -> TorrentStatus {
        self.status.borrow().clone()
    }
    /// A receiver that wakes on every status change.
    pub fn watch(&self) -> watch::Receiver<TorrentStatus> {
        self.status.clone()
    }
    /// Waits until `f` holds for the status (or the torrent ends).
    pub async fn wait_for(&self, f: impl Fn(&TorrentStatus) -> bool) -> TorrentStatus {
        let mut rx = self.status.clone();
        loop {
            {
                let s = rx.borrow_and_update();
                if f(&s) || matches!(s.state, TorrentState::Error(_) | TorrentState::Stopped) {
                    return s.clone();
                }
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone();
            }
        }
    }
    pub async fn add_peers(&self, peers: Vec<SocketAddr>) {
        let _ = self
            .cmds
            .send(TorrentCmd::AddPeers(peers, PeerSource::Manual))
            .await;
    }
    /// Stops the torrent (resume data saved, trackers told) and waits for it.
    pub async fn stop(&self) {
        let _ = self.cmds.send(TorrentCmd::Stop).await;
        let mut rx = self.status.clone();
        while !matches!(
            rx.borrow_and_update().state,
            TorrentState::Stopped | TorrentState::Error(_)
        ) {
            if rx.changed().await.is_err() {
                break;
            }
        }
    }
}

impl Session {
    /// Binds the listening port and starts accepting peers.
    pub async fn new(config: SessionConfig) -> Result<Session, SessionError> {
        let listener = bind(&config).await?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| SessionError::Listen {
                addr: SocketAddr::new(config.listen_ip, config.port),
                source,
            })?;
        let peer_id = config
            .peer_id
            .unwrap_or_else(|| PeerId::generate(rand::random()));
        let (shutdown, _) = watch::channel(false);
        let dht = if config.dht {
            start_dht(&config, local_addr).await.map(Arc::new)
        } else {
            None
        };
        let inner = Arc::new(Inner {
            peer_id,
            port: local_addr.port(),
            torrents: Mutex::new(HashMap::new()),
            private: Mutex::new(std::collections::HashSet::new()),
            shutdown,
            connections: Arc::new(crate::torrent::ConnectionCount::new(config.max_peers_total)),
            upload_limit: config.upload_limit.map(|r| Arc::new(Limiter::new(r))),
            download_limit: config.download_limit.map(|r| Arc::new(Limiter::new(r))),
            dht,
            config,
        });
        let listener = tokio::spawn(accept_loop(listener, inner.clone()));
        let mut tasks = Vec::new();
        if inner.config.lsd {
            // Multicast where we listen: 127.0.0.1 keeps LSD on this machine.
            let interface = match inner.config.listen_ip {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            let lsd = crate::lsd::LsdConfig {
                port: inner.config.lsd_port,
                interface,
            };
            match crate::lsd::spawn(lsd, inner.port, inner.clone()) {
                Ok(task) => tasks.push(task),
                Err(e) => tracing::warn!("local service discovery is off: {e}"),
            }
        }
        Ok(Session {
            inner,
            local_addr,
            listener,
            tasks: Mutex::new(Vec::new()),
            services: tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
    pub fn port(&self) -> u16 {
        self.inner.port
    }
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }
    /// The DHT node, if the session runs one.
    pub fn dht(&self) -> Option<&Arc<DhtHandle>> {
        self.inner.dht.as_ref()
    }

    /// Adds a torrent: its data is checked, then it downloads and seeds.
    pub fn add_torrent(&self, add: AddTorrent) -> Result<TorrentHandle, SessionError> {
        self.add_torrent_with(add, TorrentOptions::default())
    }

    /// [`Session::add_torrent`] with options.
    pub fn add_torrent_with(
        &self,
        add: AddTorrent,
        options: TorrentOptions,
    ) -> Result<TorrentHandle, SessionError> {
        let info_hash = add.metainfo.info_hash;
        let (tx, rx) = mpsc::channel(64);
        {
            let mut torrents = self
                .inner
                .torrents
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if torrents.contains_key(&info_hash) {
                return Err(SessionError::Duplicate(info_hash));
            }
            torrents.insert(info_hash, tx.clone());
        }
        if add.metainfo.info.private {
            self.inner
                .private
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(info_hash);
        }
        let status = TorrentStatus {
            info_hash,
            name: add.metainfo.info.name.clone(),
            total_length: add.metainfo.info.total_length(),
            state: TorrentState::Checking {
                checked: 0,
                total: add.metainfo.info.layout.num_pieces(),
            },
            stats: Default::default(),
            peers: Vec::new(),
            known_peers: HashMap::new(),
            totals_by_peer: HashMap::new(),
        };
        let (status_tx, status_rx) = watch::channel(status);
        let params = TorrentParams {
            metainfo: Arc::new(add.metainfo),
            output_dir: add.output_dir,
            peers: add.peers,
            select_files: options.select_files,
            peer_id: self.inner.peer_id,
            listen_port: self.inner.port,
            max_peers: self.inner.config.max_peers_per_torrent,
            connections: self.inner.connections.clone(),
            upload_slots: self.inner.config.upload_slots,
            initial_seeding: self.inner.config.initial_seeding,
            upload_limit: self.inner.upload_limit.clone(),
            download_limit: self.inner.download_limit.clone(),
            idle_timeout: self.inner.config.idle_timeout,
            dht: self.inner.dht.clone(),
        };
        let inner = self.inner.clone();
        let shutdown = self.inner.shutdown.subscribe();
        let task = tokio::spawn(async move {
            torrent::run(params, rx, status_tx, shutdown).await;
            inner
                .torrents
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&info_hash);
            inner
                .private
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&info_hash);
        });
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        Ok(TorrentHandle {
            info_hash,
            status: status_rx,
            cmds: tx,
        })
    }

    /// Fetches a magnet link's info dictionary from its peers (`x.pe`,
    /// `peers`), its trackers (`tr`) and the DHT, checked against the
    /// infohash (BEP 9).
    pub async fn fetch_magnet(
        &self,
        magnet: &Magnet,
        peers: Vec<SocketAddr>,
        timeout: std::time::Duration,
    ) -> Result<Metainfo, SessionError> {
        self.fetch_magnet_timed(magnet, peers, timeout)
            .await
            .map(|(meta, _)| meta)
    }

    /// [`Session::fetch_magnet`], with how long it took to hear of a first
    /// peer and to get the metadata.
    pub async fn fetch_magnet_timed(
        &self,
        magnet: &Magnet,
        peers: Vec<SocketAddr>,
        timeout: std::time::Duration,
    ) -> Result<(Metainfo, MagnetTimes), SessionError> {
        let start = tokio::time::Instant::now();
        let mut all: Vec<SocketAddr> = magnet.peers.iter().filter_map(|p| p.parse().ok()).collect();
        all.extend(peers);
        let first_peer = Arc::new(Mutex::new(
            (!all.is_empty()).then_some((std::time::Duration::ZERO, PeerSource::Manual)),
        ));
        let trackers: Vec<Vec<String>> = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
        // Peers from every source go to the fetch through `tx`; each
        // source's forwarder notes the first one.
        let (tx, rx) = mpsc::channel(16);
        let (tracker_tx, tracker_rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut helpers = Vec::new();
        let announcer = crate::torrent::start_magnet_announcer(
            magnet.info_hash,
            self.inner.peer_id,
            self.inner.port,
            &trackers,
            tracker_tx,
            stop_rx,
        );
        helpers.push(tokio::spawn(forward_peers(
            tracker_rx,
            tx.clone(),
            PeerSource::Tracker,
            start,
            first_peer.clone(),
        )));
        if let Some(dht) = &self.inner.dht {
            helpers.push(tokio::spawn(dht_search(
                dht.clone(),
                magnet.info_hash,
                tx.clone(),
                start,
                first_peer.clone(),
            )));
        }
        drop(tx);
        let res = crate::metadata::fetch_metadata(
            magnet.info_hash,
            self.inner.peer_id,
            self.inner.port,
            all,
            rx,
            timeout,
        )
        .await;
        let _ = stop_tx.send(true);
        if let Some(a) = announcer {
            a.abort();
        }
        for h in helpers {
            h.abort();
        }
        let info = res.map_err(|e| SessionError::Metadata(e.to_string()))?;
        let mut meta = Metainfo::from_info_bytes(&info, trackers)
            .map_err(|e| SessionError::Metadata(e.to_string()))?;
        if meta.info_hash != magnet.info_hash {
            return Err(SessionError::Metadata(
                "metadata does not match the infohash".into(),
            ));
        }
        meta.created_by = None;
        let times = MagnetTimes {
            first_peer: *first_peer.lock().unwrap_or_else(|e| e.into_inner()),
            metadata: start.elapsed(),
        };
        Ok((meta, times))
    }

    /// Stops every torrent (saving resume data, telling trackers), the
    /// listener and the DHT (saving its state).
    pub async fn shutdown(self) {
        let _ = self.inner.shutdown.send(true);
        self.listener.abort();
        for s in &self.services {
            s.abort();
        }
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for t in tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), t).await;
        }
        if let Some(dht) = &self.inner.dht {
            let saved =
                tokio::time::timeout(std::time::Duration::from_secs(5), dht.shutdown()).await;
            if let Ok(Err(e)) = saved {
                tracing::warn!("cannot save the DHT state: {e}");
            }
        }
    }
}

/// How a magnet fetch went.
#[derive(Debug, Clone, Copy)]
pub struct MagnetTimes {
    /// When the first peer was known (zero for `x.pe` and given peers),
    /// and where it came from; `None` if peers came from nowhere.
    pub first_peer: Option<(std::time::Duration, PeerSource)>,
    /// When the metadata was complete and verified.
    pub metadata: std::time::Duration,
}

type FirstPeer = Arc<Mutex<Option<(std::time::Duration, PeerSource)>>>;

fn note_first(first: &FirstPeer, start: tokio::time::Instant, source: PeerSource) {
    let mut f = first.lock().unwrap_or_else(|e| e.into_inner());
    if f.is_none() {
        *f = Some((start.elapsed(), source));
    }
}

/// Passes a batch of peers on to a fetch, noting the first; `false` once
/// the fetch is gone.
async fn pass_on(
    peers: Vec<SocketAddr>,
    to: &mpsc::Sender<Vec<SocketAddr>>,
    source: PeerSource,
    start: tokio::time::Instant,
    first: &FirstPeer,
) -> bool {
    if peers.is_empty() {
        return true;
    }
    note_first(first, start, source);
    to.send(peers).await.is_ok()
}

/// Passes a source's peers on to a fetch.
async fn forward_peers(
    mut from: mpsc::Receiver<Vec<SocketAddr>>,
    to: mpsc::Sender<Vec<SocketAddr>>,
    source: PeerSource,
    start: tokio::time::Instant,
    first: FirstPeer,
) {
    while let Some(peers) = from.recv().await {
        if !pass_on(peers, &to, source, start, &first).await {
            return;
        }
    }
}

/// Searches the DHT for a magnet's peers (no announce: we have nothing
/// yet), again and again while none come: after 5 s, 10 s, 20 s... up to
/// a minute between searches.
async fn dht_search(
    dht: Arc<DhtHandle>,
    info_hash: InfoHash,
    to: mpsc::Sender<Vec<SocketAddr>>,
    start: tokio::time::Instant,
    first: FirstPeer,
) {
    let mut wait = std::time::Duration::from_secs(5);
    loop {
        let mut rx = dht.get_peers(info_hash, None).await;
        let until = tokio::time::Instant::now() + wait;
        while let Ok(Some(peers)) = tokio::time::timeout_at(until, rx.recv()).await {
            if !pass_on(peers, &to, PeerSource::Dht, start, &first).await {
                return;
            }
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(60));
    }
}

/// Starts the session's DHT node on the listening address (UDP, same port
/// if free). `None` (with a warning) if no UDP socket can be had.
async fn start_dht(config: &SessionConfig, listen: SocketAddr) -> Option<DhtHandle> {
    let socket = match tokio::net::UdpSocket::bind(listen).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("DHT: cannot bind UDP {listen} ({e}); using another port");
            match tokio::net::UdpSocket::bind(SocketAddr::new(listen.ip(), 0)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("the DHT is off: cannot bind a UDP socket: {e}");
                    return None;
                }
            }
        }
    };
    let loopback = config.listen_ip.is_loopback();
    let names: Vec<String> = match &config.dht_bootstrap {
        Some(list) => list.clone(),
        None if loopback => Vec::new(),
        None => DHT_ROUTERS.iter().map(|s| s.to_string()).collect(),
    };
    // Addresses now; names in the background (DNS may be slow or absent).
    let mut bootstrap: Vec<SocketAddr> = Vec::new();
    let mut names_to_resolve = Vec::new();
    for n in names {
        match n.parse() {
            Ok(addr) => bootstrap.push(addr),
            Err(_) => names_to_resolve.push(n),
        }
    }
    let names = names_to_resolve;
    let local = |ip: IpAddr| essaim_dht::id::is_local(ip);
    let mut dht_config = DhtConfig {
        // Loopback and LAN nodes are used when we listen on such an
        // address or were told to bootstrap from one.
        allow_local: (!config.listen_ip.is_unspecified() && local(config.listen_ip))
            || bootstrap.iter().any(|a| local(a.ip())),
        ipv6: listen.is_ipv6(),
        bootstrap,
        ..DhtConfig::default()
    };
    if loopback {
        // Every node here shares one address: a per-address reply budget
        // would starve them.
        dht_config.replies_per_ip = dht_config.replies_per_sec;
        dht_config.reply_burst_per_ip = dht_config.replies_per_sec;
    }
    let handle = DhtHandle::spawn(socket, dht_config, config.dht_state.clone());
    if !names.is_empty() {
        let commands = handle.bootstrap_sender();
        let v6 = listen.is_ipv6();
        tokio::spawn(async move {
            let mut found = Vec::new();
            for name in names {
                match tokio::net::lookup_host(name.as_str()).await {
                    Ok(addrs) => found.extend(addrs.filter(|a| a.is_ipv6() == v6)),
                    Err(e) => tracing::debug!("DHT bootstrap {name}: {e}"),
                }
            }
            if !found.is_empty() {
                commands(found);
            }
        });
    }
    Some(handle)
}

impl crate::lsd::Registry for Inner {
    fn info_hashes(&self) -> Vec<InfoHash> {
        let private = self
            .private
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.torrents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|h| !private.contains(h))
            .copied()
            .collect()
    }

    fn deliver(&self, info_hash: InfoHash, addr: SocketAddr) {
        let tx = self
            .torrents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&info_hash)
            .cloned();
        if let Some(tx) = tx {
            let _ = tx.try_send(TorrentCmd::AddPeers(vec![addr], PeerSource::Lsd));
        }
    }
}

async fn bind(config: &SessionConfig) -> Result<TcpListener, SessionError> {
    let tries = if config.port_search && config.port != 0 {
        100
    } else {
        1
    };
    let mut last_err = None;
    for i in 0..tries {
        let Some(port) = config.port.checked_add(i) else {
            break;
        };
        let addr = SocketAddr::new(config.listen_ip, port);
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last_err = Some((addr, e)),
            Err(source) => return Err(SessionError::Listen { addr, source }),
        }
    }
    let (addr, source) = last_err.unwrap_or_else(|| {
        (
            SocketAddr::new(config.listen_ip, config.port),
            std::io::Error::from(std::io::ErrorKind::AddrInUse),
        )
    });
    Err(SessionError::Listen { addr, source })
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    // Handshakes in progress, oldest first.
    let mut half_open: VecDeque<tokio::task::AbortHandle> = VecDeque::new();
    loop {
        let (mut stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("accept failed: {e}");
                // Out of file descriptors and the like: don't spin.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        half_open.retain(|h| !h.is_finished());
        if half_open.len() >= MAX_HALF_OPEN {
            // The oldest has had the longest to speak: it gives way.
            if let Some(oldest) = half_open.pop_front() {
                oldest.abort();
            }
        }
        let inner = inner.clone();
        let task = tokio::spawn(async move {
            let res = async {
                let hs = peer::read_handshake(&mut stream).await.ok()?;
                if hs.peer_id == inner.peer_id {
                    return None; // ourselves
                }
                let tx = inner
                    .torrents
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&hs.info_hash)
                    .cloned()?;
                let ours =
                    Handshake::new(hs.info_hash, inner.peer_id).with_dht(inner.dht.is_some());
                stream.write_all(&ours.encode()).await.ok()?;
                Some((tx, hs))
            };
            let res = tokio::time::timeout(peer::HANDSHAKE_TIMEOUT, res).await;
            if let Ok(Some((tx, hs))) = res {
                let _ = tx.try_send(TorrentCmd::Incoming(stream, addr, hs));
            }
        });
        half_open.push_back(task.abort_handle());
    }
}
