//! What a session tells its subscribers ([`Session::subscribe`](crate::Session::subscribe)):
//! typed events in the order they happened for each torrent, and once a
//! second the statistics of the session and of its torrents that moved.
//!
//! Delivery is bounded: each subscriber has a queue of [`EVENT_QUEUE`]
//! events; one that falls further behind loses the oldest and is told how
//! many ([`EventStream::next`] returns `Err(Lagged)`), so a subscriber that
//! does not read (a stalled HTTP client) cannot make the session buffer
//! without bound.

use std::time::Duration;

use essaim_core::InfoHash;
use tokio::sync::broadcast;

use crate::types::{SessionStats, TorrentError, TorrentId, TorrentState};

/// Events queued per subscriber at most.
pub const EVENT_QUEUE: usize = 1024;

/// Something that happened in a session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A torrent was added (not sent for torrents restored at start).
    Added {
        id: TorrentId,
        info_hash: InfoHash,
        name: String,
    },
    /// A magnet link's info dictionary arrived and was verified.
    MetadataReceived { id: TorrentId, name: String },
    /// A torrent's state changed (checking progress is not an event; it
    /// comes with the statistics).
    StateChanged { id: TorrentId, state: TorrentState },
    /// Every wanted piece is verified and on disk.
    Completed { id: TorrentId },
    /// A torrent stopped on an error.
    Error { id: TorrentId, error: TorrentError },
    Removed {
        id: TorrentId,
        info_hash: InfoHash,
        data_deleted: bool,
    },
    /// A tracker answered an announce, or failed to.
    TrackerReply {
        id: TorrentId,
        url: String,
        /// The error or warning it gave, if any.
        error: Option<String>,
        seeders: Option<u32>,
        leechers: Option<u32>,
    },
    /// Once a second: the session's figures and those of the torrents
    /// whose figures changed.
    Stats {
        session: SessionStats,
        torrents: Vec<TorrentStats>,
    },
}

impl Event {
    /// A short lowercase name (`added`, `state_changed`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Added { .. } => "added",
            Event::MetadataReceived { .. } => "metadata_received",
            Event::StateChanged { .. } => "state_changed",
            Event::Completed { .. } => "completed",
            Event::Error { .. } => "error",
            Event::Removed { .. } => "removed",
            Event::TrackerReply { .. } => "tracker_reply",
            Event::Stats { .. } => "stats",
        }
    }

    /// The torrent it is about, if one.
    pub fn torrent(&self) -> Option<TorrentId> {
        match self {
            Event::Added { id, .. }
            | Event::MetadataReceived { id, .. }
            | Event::StateChanged { id, .. }
            | Event::Completed { id }
            | Event::Error { id, .. }
            | Event::Removed { id, .. }
            | Event::TrackerReply { id, .. } => Some(*id),
            Event::Stats { .. } => None,
        }
    }
}

/// A torrent's moving figures.
#[derive(Debug, Clone, PartialEq)]
pub struct TorrentStats {
    pub id: TorrentId,
    pub state: TorrentState,
    pub progress: f64,
    pub download_rate: u64,
    pub upload_rate: u64,
    pub downloaded_total: u64,
    pub uploaded_total: u64,
    pub peers: usize,
    pub eta: Option<Duration>,
}

/// A subscriber fell behind and lost this many events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} events were lost: the subscriber read too slowly")]
pub struct Lagged(pub u64);

/// A session's events, for one subscriber.
#[derive(Debug)]
pub struct EventStream(pub(crate) broadcast::Receiver<Event>);

impl EventStream {
    /// The next event; `None` once the session is gone.
    pub async fn next(&mut self) -> Option<Result<Event, Lagged>> {
        match self.0.recv().await {
            Ok(e) => Some(Ok(e)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(Lagged(n))),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
