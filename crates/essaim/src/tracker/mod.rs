//! Tracker clients ([`http`], [`udp`]) and the announcer task the engine
//! runs per torrent ([`spawn_announcer`]).
//!
//! The announcer owns the torrent's tracker list, as BEP 12 tiers: each
//! tier is shuffled once at start; an announce tries a tier's trackers in
//! order, moves the one that answers to the front of its tier, and goes on to
//! the next tier only when every tracker of a tier failed. URLs other than
//! `http`, `https` and `udp` are skipped, as are duplicates; at most
//! [`MAX_TRACKERS`] are kept.
//!
//! When to announce is decided by `announcer::Schedule`, a pure state machine fed
//! with the time (`handle`-style methods, `next()` to poll): `started` at
//! once, then every `interval` (sanitized, see
//! [`sanitize_interval`](essaim_wire::tracker::sanitize_interval)); `completed`
//! once when `left` drops to 0 after having been above 0 (never when the
//! torrent was complete from the start, BEP 3); an early announce when the
//! engine wants peers, but never sooner than `min interval` after the last
//! one; after a failure of every tracker, a retry after a back-off (30 s
//! doubling to 30 min by default) that also holds back events. `stopped` is
//! sent on shutdown if an announce ever succeeded, bounded by a timeout.

mod announcer;
pub mod http;
pub mod udp;
pub mod udp_socket;

pub use announcer::{spawn_announcer, spawn_announcer_with};
pub(crate) use announcer::{Announces, Finished};
pub use udp_socket::UdpSockets;

use std::time::Duration;

use essaim_core::{InfoHash, PeerId};
use essaim_wire::tracker::http::{AnnounceRequest, AnnounceResponse, TrackerError};
use essaim_wire::tracker::udp::UdpError;
pub use essaim_wire::tracker::Event;
use rand::seq::SliceRandom;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info};

use self::http::{HttpConfig, HttpTracker};
use self::udp::{UdpConfig, UdpTracker};

/// Most trackers used by one announcer; the rest of a longer list is ignored.
pub const MAX_TRACKERS: usize = 64;

/// Transfer totals reported in announces (BEP 3 `uploaded`, `downloaded`,
/// `left`), in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnnounceStats {
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
}

/// What the announcer announces, and where.
#[derive(Debug, Clone)]
pub struct AnnouncerConfig {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// Our listening port for peer connections.
    pub port: u16,
    /// BEP 12 tiers (`announce-list`, or `[[announce]]`).
    pub trackers: Vec<Vec<String>>,
    /// Peers asked for per announce.
    pub numwant: u32,
}

/// Timing, limits and status reporting of an announcer. The defaults follow
/// the BEPs; tests shorten them.
#[derive(Debug)]
pub struct AnnouncerOptions {
    pub http: HttpConfig,
    pub udp: UdpConfig,
    /// Minimum gap between announces when the tracker gives no `min interval`.
    pub default_min_interval: Duration,
    /// Floor under any tracker's `min interval` (protects against 0).
    pub min_announce_gap: Duration,
    /// First retry delay after every tracker failed; doubles per failure.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Bound on the `stopped` announce at shutdown.
    pub stop_timeout: Duration,
    /// Where per-tracker status (errors, warnings, counts) is published.
    pub status: Option<watch::Sender<TrackerStatus>>,
    /// An HTTP client shared with other announcers (a session's: one
    /// connection pool for all its torrents); `None`: one of its own,
    /// built from `http`.
    pub shared_http: Option<HttpTracker>,
    /// UDP sockets shared with other announcers; `None`: its own.
    pub shared_udp: Option<UdpSockets>,
}

impl Default for AnnouncerOptions {
    fn default() -> Self {
        AnnouncerOptions {
            http: HttpConfig::default(),
            udp: UdpConfig::default(),
            default_min_interval: Duration::from_secs(30),
            min_announce_gap: Duration::from_secs(10),
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(30 * 60),
            stop_timeout: Duration::from_secs(5),
            status: None,
            shared_http: None,
            shared_udp: None,
        }
    }
}

/// The trackers of an announcer, in configuration order (not tier order).
#[derive(Debug, Clone, Default)]
pub struct TrackerStatus {
    pub trackers: Vec<TrackerState>,
}

/// What is known of one tracker.
#[derive(Debug, Clone, Default)]
pub struct TrackerState {
    pub url: String,
    /// Its BEP 12 tier, from 0.
    pub tier: usize,
    pub last_success: Option<Instant>,
    /// The error of the last failed announce, cleared by a success.
    pub last_error: Option<String>,
    /// The last `warning message` (BEP 3 extension) received.
    pub warning: Option<String>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    pub successes: u64,
    pub failures: u64,
}

/// Why an announce (or scrape) to one tracker failed.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("tracker failure: {0}")]
    Failure(String),
    #[error("unsupported tracker URL `{0}`")]
    UnsupportedUrl(String),
    #[error("HTTP error: {0}")]
    Http(#[from] reqwest::Error),
    #[error("tracker answered HTTP status {0}")]
    Status(u16),
    #[error("tracker reply larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("bad tracker reply: {0}")]
    Reply(TrackerError),
    #[error("bad UDP tracker packet: {0}")]
    Udp(#[from] UdpError),
    #[error("UDP tracker reply of the wrong kind")]
    UnexpectedReply,
    #[error("no reply from the tracker")]
    Timeout,
    #[error("cannot resolve `{0}`: {1}")]
    Resolve(String, std::io::Error),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("tracker has no scrape URL (BEP 48)")]
    NoScrape,
    #[error("no HTTP client available")]
    NoHttpClient,
}

impl From<TrackerError> for AnnounceError {
    fn from(e: TrackerError) -> Self {
        match e {
            TrackerError::Failure(reason) => AnnounceError::Failure(reason),
            other => AnnounceError::Reply(other),
        }
    }
}

/// One announce, whatever the tracker's protocol.
#[derive(Debug, Clone)]
pub struct AnnounceParams {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub port: u16,
    pub stats: AnnounceStats,
    pub event: Option<Event>,
    pub numwant: u32,
    /// BEP 7 / BEP 15 `key`, fixed for the announcer's life.
    pub key: u32,
}

enum Client {
    /// Remembers the `tracker id` to send back (BEP 3).
    Http {
        tracker_id: Option<String>,
    },
    Udp(Box<UdpTracker>),
}

struct Tracker {
    url: String,
    client: Client,
    /// Index in [`TrackerStatus::trackers`].
    index: usize,
    ever_ok: bool,
}

impl Tracker {
    async fn announce(
        &mut self,
        http: Option<&HttpTracker>,
        p: &AnnounceParams,
    ) -> Result<AnnounceResponse, AnnounceError> {
        match &mut self.client {
            Client::Udp(udp) => udp.announce(p).await,
            Client::Http { tracker_id } => {
                let request = AnnounceRequest {
                    info_hash: p.info_hash,
                    peer_id: p.peer_id,
                    port: p.port,
                    uploaded: p.stats.uploaded,
                    downloaded: p.stats.downloaded,
                    left: p.stats.left,
                    event: p.event,
                    numwant: Some(if p.event == Some(Event::Stopped) {
                        0
                    } else {
                        p.numwant
                    }),
                    key: Some(p.key),
                    tracker_id: tracker_id.clone(),
                    compact: true,
                };
                let http = http.ok_or(AnnounceError::NoHttpClient)?;
                let reply = http.announce(&self.url, &request).await?;
                if reply.tracker_id.is_some() {
                    tracker_id.clone_from(&reply.tracker_id);
                }
                Ok(reply)
            }
        }
    }
}

/// BEP 12 tiers of trackers.
struct Tiers {
    tiers: Vec<Vec<Tracker>>,
}

impl Tiers {
    /// Filters, deduplicates and shuffles the configured tiers.
    fn new(lists: &[Vec<String>], udp: &UdpConfig, sockets: &UdpSockets) -> (Tiers, TrackerStatus) {
        let mut status = TrackerStatus::default();
        let mut tiers = Vec::new();
        let mut rng = rand::thread_rng();
        for (tier_index, list) in lists.iter().enumerate() {
            let mut tier = Vec::new();
            for url in list.iter().map(|u| u.trim()) {
                if status.trackers.len() >= MAX_TRACKERS {
                    break;
                }
                if status.trackers.iter().any(|t| t.url == url) {
                    continue;
                }
                let client = if url.starts_with("http://") || url.starts_with("https://") {
                    Client::Http { tracker_id: None }
                } else {
                    match UdpTracker::with_sockets(url, udp.clone(), sockets.clone()) {
                        Ok(t) => Client::Udp(Box::new(t)),
                        Err(e) => {
                            debug!(%url, error = %e, "tracker skipped");
                            continue;
                        }
                    }
                };
                let index = status.trackers.len();
                status.trackers.push(TrackerState {
                    url: url.to_owned(),
                    tier: tier_index,
                    ..TrackerState::default()
                });
                tier.push(Tracker {
                    url: url.to_owned(),
                    client,
                    index,
                    ever_ok: false,
                });
            }
            if !tier.is_empty() {
                tier.shuffle(&mut rng);
                tiers.push(tier);
            }
        }
        (Tiers { tiers }, status)
    }

    fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// One announce through the tiers (BEP 12 order); the last error if all
    /// trackers failed.
    async fn announce(
        &mut self,
        http: Option<&HttpTracker>,
        p: &AnnounceParams,
        status: &mut TrackerStatus,
    ) -> Result<AnnounceResponse, AnnounceError> {
        let mut last = AnnounceError::Timeout;
        for tier in &mut self.tiers {
            for i in 0..tier.len() {
                let Some(tracker) = tier.get_mut(i) else {
                    break;
                };
                let result = tracker.announce(http, p).await;
                let now = Instant::now();
                update(status, tracker.index, |s| match &result {
                    Ok(r) => {
                        s.last_success = Some(now);
                        s.last_error = None;
                        s.successes += 1;
                        if r.warning.is_some() {
                            s.warning.clone_from(&r.warning);
                        }
                        (s.seeders, s.leechers) = (r.complete, r.incomplete);
                    }
                    Err(e) => {
                        s.last_error = Some(e.to_string());
                        s.failures += 1;
                    }
                });
                match result {
                    Ok(reply) => {
                        if !tracker.ever_ok {
                            tracker.ever_ok = true;
                            info!(url = %tracker.url, peers = reply.peers.len(), "tracker answered");
                        }
                        if let Some(w) = &reply.warning {
                            debug!(url = %tracker.url, warning = %w, "tracker warning");
                        }
                        promote(tier, i);
                        return Ok(reply);
                    }
                    Err(e) => {
                        debug!(url = %tracker.url, error = %e, event = ?p.event, "announce failed");
                        last = e;
                    }
                }
            }
        }
        Err(last)
    }
}

/// Moves the tracker at `i` to the front of its tier, keeping the others'
/// order (BEP 12).
fn promote<T>(tier: &mut [T], i: usize) {
    if let Some(head) = tier.get_mut(..=i) {
        head.rotate_right(1);
    }
}

fn update(status: &mut TrackerStatus, index: usize, f: impl FnOnce(&mut TrackerState)) {
    if let Some(t) = status.trackers.get_mut(index) {
        f(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_filter_dedupe_and_promote() {
        let lists = vec![
            vec!["http://a/announce".to_owned(), " udp://b:1 ".to_owned()],
            vec![
                "wss://c".to_owned(),
                "http://a/announce".to_owned(),
                "udp://noport".to_owned(),
            ],
            vec!["https://d/announce".to_owned()],
        ];
        let (tiers, status) = Tiers::new(&lists, &UdpConfig::default(), &UdpSockets::default());
        let urls: Vec<(&str, usize)> = status
            .trackers
            .iter()
            .map(|t| (t.url.as_str(), t.tier))
            .collect();
        assert_eq!(
            urls,
            [
                ("http://a/announce", 0),
                ("udp://b:1", 0),
                ("https://d/announce", 2)
            ]
        );
        assert_eq!(tiers.tiers.len(), 2, "the empty tier is dropped");
        let mut first: Vec<&str> = tiers.tiers[0].iter().map(|t| t.url.as_str()).collect();
        first.sort_unstable();
        assert_eq!(first, ["http://a/announce", "udp://b:1"]);

        let mut tier = [1, 2, 3, 4];
        promote(&mut tier, 2);
        assert_eq!(
            tier,
            [3, 1, 2, 4],
            "BEP 12 example: tracker3 moves to the front"
        );
        promote(&mut tier, 9);
        assert_eq!(tier, [3, 1, 2, 4], "out of range is a no-op");

        let many = vec![(0..100).map(|i| format!("http://t{i}/announce")).collect()];
        assert_eq!(
            Tiers::new(&many, &UdpConfig::default(), &UdpSockets::default())
                .1
                .trackers
                .len(),
            MAX_TRACKERS
        );
    }
}
