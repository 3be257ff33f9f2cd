//! An in-memory HTTP tracker (BEP 3 §trackers, BEP 23 compact peers, BEP 7
//! `peers6`, BEP 48 scrape) for a LAN or test swarm: `essaim tracker
//! --listen ADDR:PORT` and the in-process demo.
//!
//! - `GET /announce`: the peer is the TCP source address with the announced
//!   `port`. The `ip` parameter is honoured only when the source is a
//!   loopback address (a client on the tracker's machine announcing its LAN
//!   address, and tests running several clients on 127.0.0.1); otherwise it
//!   could be used to point a swarm at a victim. `stopped` removes the peer
//!   (if its `peer_id` matches the one stored for that address);
//!   a peer not heard from for twice the interval expires. The reply holds
//!   up to `numwant` (default 50, at most 200) random other peers, compact
//!   unless `compact=0`.
//! - `GET /scrape`: the requested `info_hash`es (unknown ones with zero
//!   counts), or when none is given, up to `max_scrape_all` torrents.
//! - Errors are bencoded `failure reason` replies with status 200.
//!
//! Memory is bounded by [`TrackerConfig`]: torrents, peers per torrent and
//! peers in total are capped (a new torrent beyond the cap is refused; a new
//! peer beyond a cap still gets peers but is not stored), and queries longer
//! than [`MAX_QUERY_LEN`](essaim_wire::tracker::http::MAX_QUERY_LEN) are
//! refused. Torrents left without peers are
//! forgotten, their `downloaded` count with them.
//!
//! The state is a plain [`Swarms`] value behind a mutex never held across an
//! `.await`; it takes the time as an argument, so its rules are tested
//! without a clock or a socket.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use essaim_core::{InfoHash, PeerId};
use essaim_wire::tracker::http::{
    encode_announce_response, encode_failure, encode_scrape, parse_announce_query,
    parse_scrape_query, ScrapeEntry, ServerAnnounce,
};
use essaim_wire::tracker::Event;
use rand::seq::IteratorRandom;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

/// Tracker settings and limits.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// `interval` sent to clients; peers expire after twice this.
    pub interval: Duration,
    /// `min interval` sent to clients.
    pub min_interval: Duration,
    /// Peers returned when the client sends no `numwant`.
    pub default_numwant: usize,
    /// Most peers returned.
    pub max_numwant: usize,
    pub max_torrents: usize,
    pub max_peers_per_torrent: usize,
    pub max_total_peers: usize,
    /// Most torrents in a scrape without `info_hash`.
    pub max_scrape_all: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            interval: Duration::from_secs(60),
            min_interval: Duration::from_secs(10),
            default_numwant: 50,
            max_numwant: 200,
            max_torrents: 100_000,
            max_peers_per_torrent: 10_000,
            max_total_peers: 1_000_000,
            max_scrape_all: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct PeerEntry {
    peer_id: PeerId,
    seeder: bool,
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct Swarm {
    peers: HashMap<SocketAddr, PeerEntry>,
    /// `completed` events received (BEP 48 `downloaded`).
    downloaded: u32,
}

/// What an announce gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceReply {
    pub peers: Vec<SocketAddr>,
    pub complete: u32,
    pub incomplete: u32,
}

/// The tracker's state: every torrent's peers. Pure: time comes in as `now`.
#[derive(Debug)]
pub struct Swarms {
    config: TrackerConfig,
    torrents: HashMap<InfoHash, Swarm>,
    total_peers: usize,
}

impl Swarms {
    pub fn new(config: TrackerConfig) -> Self {
        Swarms {
            config,
            torrents: HashMap::new(),
            total_peers: 0,
        }
    }

    fn ttl(&self) -> Duration {
        self.config.interval.saturating_mul(2)
    }

    /// Handles an announce from `source` (the TCP peer address's IP).
    pub fn announce(
        &mut self,
        req: &ServerAnnounce,
        source: IpAddr,
        now: Instant,
    ) -> Result<AnnounceReply, &'static str> {
        let source = source.to_canonical();
        let ip = match req.ip {
            Some(ip) if source.is_loopback() => ip.to_canonical(),
            _ => source,
        };
        let addr = SocketAddr::new(ip, req.port);
        let ttl = self.ttl();
        if !self.torrents.contains_key(&req.info_hash) {
            if req.event == Some(Event::Stopped) {
                return Ok(AnnounceReply {
                    peers: Vec::new(),
                    complete: 0,
                    incomplete: 0,
                });
            }
            if self.torrents.len() >= self.config.max_torrents {
                return Err("tracker is full");
            }
        }
        let room_total = self.total_peers < self.config.max_total_peers;
        let swarm = self.torrents.entry(req.info_hash).or_default();
        let before = swarm.peers.len();
        if req.event == Some(Event::Stopped) {
            // Only the peer itself may take its entry away.
            if swarm
                .peers
                .get(&addr)
                .is_some_and(|p| p.peer_id == req.peer_id)
            {
                swarm.peers.remove(&addr);
            }
        } else {
            let seeder = req.left == 0;
            match swarm.peers.get_mut(&addr) {
                Some(entry) => {
                    if req.event == Some(Event::Completed) && !entry.seeder {
                        swarm.downloaded = swarm.downloaded.saturating_add(1);
                    }
                    *entry = PeerEntry {
                        peer_id: req.peer_id,
                        seeder,
                        last_seen: now,
                    };
                }
                None => {
                    if swarm.peers.len() >= self.config.max_peers_per_torrent {
                        swarm
                            .peers
                            .retain(|_, p| now.saturating_duration_since(p.last_seen) <= ttl);
                    }
                    if room_total && swarm.peers.len() < self.config.max_peers_per_torrent {
                        if req.event == Some(Event::Completed) {
                            swarm.downloaded = swarm.downloaded.saturating_add(1);
                        }
                        let entry = PeerEntry {
                            peer_id: req.peer_id,
                            seeder,
                            last_seen: now,
                        };
                        swarm.peers.insert(addr, entry);
                    }
                }
            }
        }
        let numwant = req
            .numwant
            .map_or(self.config.default_numwant, |n| n as usize)
            .min(self.config.max_numwant);
        let live = swarm
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_seen) <= ttl);
        let (complete, incomplete) = counts(live.clone().map(|(_, p)| p));
        let peers = live
            .filter(|(a, _)| **a != addr)
            .map(|(a, _)| *a)
            .choose_multiple(&mut rand::thread_rng(), numwant);
        let after = swarm.peers.len();
        if after == 0 {
            self.torrents.remove(&req.info_hash);
        }
        self.total_peers = (self.total_peers + after).saturating_sub(before);
        Ok(AnnounceReply {
            peers,
            complete,
            incomplete,
        })
    }

    /// Counts for `hashes` (zeros for unknown ones), or for up to
    /// `max_scrape_all` torrents when `hashes` is empty (BEP 48).
    pub fn scrape(&self, hashes: &[InfoHash], now: Instant) -> Vec<(InfoHash, ScrapeEntry)> {
        let ttl = self.ttl();
        let entry = |swarm: &Swarm| {
            let live = swarm
                .peers
                .values()
                .filter(|p| now.saturating_duration_since(p.last_seen) <= ttl);
            let (complete, incomplete) = counts(live);
            ScrapeEntry {
                complete,
                incomplete,
                downloaded: swarm.downloaded,
            }
        };
        if hashes.is_empty() {
            return self
                .torrents
                .iter()
                .take(self.config.max_scrape_all)
                .map(|(h, s)| (*h, entry(s)))
                .collect();
        }
        hashes
            .iter()
            .map(|h| (*h, self.torrents.get(h).map(entry).unwrap_or_default()))
            .collect()
    }

    /// Forgets expired peers and empty torrents.
    pub fn purge(&mut self, now: Instant) {
        let ttl = self.ttl();
        for swarm in self.torrents.values_mut() {
            swarm
                .peers
                .retain(|_, p| now.saturating_duration_since(p.last_seen) <= ttl);
        }
        self.torrents.retain(|_, s| !s.peers.is_empty());
        self.total_peers = self.torrents.values().map(|s| s.peers.len()).sum();
    }

    /// Peers stored, expired or not.
    pub fn peer_count(&self) -> usize {
        self.total_peers
    }
}

/// (seeders, leechers), saturating.
fn counts<'a>(peers: impl Iterator<Item = &'a PeerEntry>) -> (u32, u32) {
    let (mut seeders, mut leechers) = (0u32, 0u32);
    for p in peers {
        let n = if p.seeder {
            &mut seeders
        } else {
            &mut leechers
        };
        *n = n.saturating_add(1);
    }
    (seeders, leechers)
}

type Shared = Arc<Mutex<Swarms>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Swarms> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running tracker.
#[derive(Debug)]
pub struct TrackerServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    sweeper: JoinHandle<()>,
}

impl TrackerServer {
    /// Binds and starts serving with the default [`TrackerConfig`]; returns
    /// once listening.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<TrackerServer> {
        Self::bind_with(addr, TrackerConfig::default()).await
    }

    /// Binds and starts serving with `config`.
    pub async fn bind_with(
        addr: SocketAddr,
        config: TrackerConfig,
    ) -> std::io::Result<TrackerServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let sweep_every = config.interval.max(Duration::from_secs(1));
        let shared: Shared = Arc::new(Mutex::new(Swarms::new(config)));
        let app = Router::new()
            .route("/announce", get(announce))
            .route("/scrape", get(scrape))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            let serving = axum::serve(listener, service).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serving.await {
                debug!(error = %e, "tracker server ended");
            }
        });
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(sweep_every);
            loop {
                tick.tick().await;
                lock(&shared).purge(Instant::now());
            }
        });
        Ok(TrackerServer {
            addr,
            stop: Some(stop),
            server,
            sweeper,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/announce`.
    pub fn announce_url(&self) -> String {
        format!("http://{}/announce", self.addr)
    }

    /// Stops accepting, lets requests in flight finish for up to 5 s, then
    /// ends every task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
        }
    }
}

impl Drop for TrackerServer {
    fn drop(&mut self) {
        self.server.abort();
        self.sweeper.abort();
    }
}

fn bencoded(body: Vec<u8>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain")], body)
}

async fn announce(
    State(shared): State<Shared>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
) -> impl IntoResponse {
    let query = query.unwrap_or_default();
    let body = match parse_announce_query(&query) {
        Err(e) => {
            debug!(%from, error = %e, "bad announce");
            encode_failure(&e.to_string())
        }
        Ok(req) => {
            let mut swarms = lock(&shared);
            let (interval, min) = (swarms.config.interval, swarms.config.min_interval);
            match swarms.announce(&req, from.ip(), Instant::now()) {
                Err(reason) => encode_failure(reason),
                Ok(r) => encode_announce_response(
                    u32::try_from(interval.as_secs()).unwrap_or(u32::MAX),
                    Some(u32::try_from(min.as_secs()).unwrap_or(u32::MAX)),
                    r.complete,
                    r.incomplete,
                    &r.peers,
                    req.compact,
                ),
            }
        }
    };
    bencoded(body)
}

async fn scrape(State(shared): State<Shared>, RawQuery(query): RawQuery) -> impl IntoResponse {
    let body = match parse_scrape_query(&query.unwrap_or_default()) {
        Err(e) => encode_failure(&e.to_string()),
        Ok(hashes) => encode_scrape(&lock(&shared).scrape(&hashes, Instant::now())),
    };
    bencoded(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(hash: u8, port: u16, left: u64, event: Option<Event>) -> ServerAnnounce {
        ServerAnnounce {
            info_hash: InfoHash([hash; 20]),
            peer_id: PeerId([port as u8; 20]),
            port,
            uploaded: 0,
            downloaded: 0,
            left,
            event,
            compact: true,
            numwant: None,
            ip: None,
        }
    }

    fn lan() -> IpAddr {
        "192.168.1.9".parse().unwrap()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::new(lan(), port)
    }

    #[test]
    fn peers_see_each_other_and_stopped_removes() {
        let mut s = Swarms::new(TrackerConfig::default());
        let t = Instant::now();
        let a = s
            .announce(&req(1, 1000, 5, Some(Event::Started)), lan(), t)
            .unwrap();
        assert_eq!(
            a,
            AnnounceReply {
                peers: vec![],
                complete: 0,
                incomplete: 1
            }
        );
        let b = s
            .announce(&req(1, 2000, 0, Some(Event::Started)), lan(), t)
            .unwrap();
        assert_eq!(b.peers, vec![addr(1000)]);
        assert_eq!((b.complete, b.incomplete), (1, 1));
        let a = s.announce(&req(1, 1000, 5, None), lan(), t).unwrap();
        assert_eq!(a.peers, vec![addr(2000)], "not itself");
        assert_eq!(s.peer_count(), 2);
        let mut spoofed = req(1, 2000, 0, Some(Event::Stopped));
        spoofed.peer_id = PeerId([0; 20]);
        s.announce(&spoofed, lan(), t).unwrap();
        assert_eq!(s.peer_count(), 2, "another peer id cannot remove a peer");
        s.announce(&req(1, 2000, 0, Some(Event::Stopped)), lan(), t)
            .unwrap();
        let a = s.announce(&req(1, 1000, 5, None), lan(), t).unwrap();
        assert!(a.peers.is_empty());
        assert_eq!(s.peer_count(), 1);
        s.announce(&req(1, 1000, 5, Some(Event::Stopped)), lan(), t)
            .unwrap();
        assert_eq!(s.peer_count(), 0);
        assert!(s.torrents.is_empty(), "an empty torrent is forgotten");
        // Another torrent is another swarm.
        s.announce(&req(1, 1000, 5, None), lan(), t).unwrap();
        assert!(s
            .announce(&req(2, 2000, 5, None), lan(), t)
            .unwrap()
            .peers
            .is_empty());
    }

    #[test]
    fn peers_expire_after_two_intervals() {
        let mut s = Swarms::new(TrackerConfig::default());
        let t = Instant::now();
        s.announce(&req(1, 1000, 5, None), lan(), t).unwrap();
        let later = t + Duration::from_secs(119);
        assert_eq!(
            s.announce(&req(1, 2000, 5, None), lan(), later)
                .unwrap()
                .peers
                .len(),
            1
        );
        let expired = t + Duration::from_secs(121);
        let r = s.announce(&req(1, 3000, 5, None), lan(), expired).unwrap();
        assert_eq!(r.peers, vec![addr(2000)]);
        assert_eq!(r.incomplete, 2, "the expired peer is not counted");
        assert_eq!(s.peer_count(), 3);
        s.purge(expired);
        assert_eq!(s.peer_count(), 2);
        s.purge(expired + Duration::from_secs(1000));
        assert_eq!((s.peer_count(), s.torrents.len()), (0, 0));
    }

    #[test]
    fn ip_param_only_from_loopback() {
        let mut s = Swarms::new(TrackerConfig::default());
        let t = Instant::now();
        let mut r = req(1, 1000, 5, None);
        r.ip = Some("10.0.0.7".parse().unwrap());
        s.announce(&r, lan(), t).unwrap();
        s.announce(&r, "::1".parse().unwrap(), t).unwrap();
        let mapped: IpAddr = "::ffff:192.168.1.20".parse().unwrap();
        let got = s.announce(&req(1, 3000, 5, None), mapped, t).unwrap();
        let mut peers = got.peers;
        peers.sort();
        assert_eq!(peers, vec!["10.0.0.7:1000".parse().unwrap(), addr(1000)]);
        let got = s.announce(&req(1, 1000, 5, None), lan(), t).unwrap();
        assert!(
            got.peers.contains(&"192.168.1.20:3000".parse().unwrap()),
            "canonical IPv4"
        );
    }

    #[test]
    fn caps_and_numwant() {
        let config = TrackerConfig {
            max_torrents: 2,
            max_peers_per_torrent: 300,
            ..TrackerConfig::default()
        };
        let mut s = Swarms::new(config);
        let t = Instant::now();
        for port in 1..=300 {
            s.announce(&req(1, port, 5, None), lan(), t).unwrap();
        }
        let r = s.announce(&req(1, 9999, 5, None), lan(), t).unwrap();
        assert_eq!(r.peers.len(), 50, "default numwant");
        assert_eq!(s.peer_count(), 300, "a full swarm stores no new peer");
        let mut big = req(1, 1, 5, None);
        big.numwant = Some(u32::MAX);
        let r = s.announce(&big, lan(), t).unwrap();
        assert_eq!(r.peers.len(), 200, "numwant is capped");
        assert!(!r.peers.contains(&addr(1)));
        let mut distinct = r.peers.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 200);
        s.announce(&req(2, 1, 5, None), lan(), t).unwrap();
        assert_eq!(
            s.announce(&req(3, 1, 5, None), lan(), t),
            Err("tracker is full")
        );
        let mut total = Swarms::new(TrackerConfig {
            max_total_peers: 1,
            ..TrackerConfig::default()
        });
        total.announce(&req(1, 1, 5, None), lan(), t).unwrap();
        total.announce(&req(2, 2, 5, None), lan(), t).unwrap();
        assert_eq!(total.peer_count(), 1);
    }

    #[test]
    fn completed_and_scrape() {
        let mut s = Swarms::new(TrackerConfig::default());
        let t = Instant::now();
        s.announce(&req(1, 1000, 5, Some(Event::Started)), lan(), t)
            .unwrap();
        s.announce(&req(1, 1000, 0, Some(Event::Completed)), lan(), t)
            .unwrap();
        s.announce(&req(1, 1000, 0, Some(Event::Completed)), lan(), t)
            .unwrap();
        s.announce(&req(1, 2000, 5, None), lan(), t).unwrap();
        let unknown = InfoHash([9; 20]);
        let got = s.scrape(&[InfoHash([1; 20]), unknown], t);
        let one = ScrapeEntry {
            complete: 1,
            incomplete: 1,
            downloaded: 1,
        };
        assert_eq!(
            got,
            vec![(InfoHash([1; 20]), one), (unknown, ScrapeEntry::default())]
        );
        assert_eq!(s.scrape(&[], t), vec![(InfoHash([1; 20]), one)]);
    }
}
