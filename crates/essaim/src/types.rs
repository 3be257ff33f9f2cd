//! The public vocabulary of the library API: what a [`Session`](crate::Session)
//! takes (sources, options, settings) and what it tells (states, errors,
//! snapshots of torrents, files, peers and trackers).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use essaim_core::{InfoHash, PeerId};
use serde::{Deserialize, Serialize};

pub use crate::peer_list::PeerSource;
pub use essaim_proto::queue::QueueKind;
pub use essaim_proto::seed_limits::SeedLimitReached;

/// A torrent's number in its session: given in order of addition, kept
/// across restarts (the list number of `essaim list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TorrentId(pub u64);

impl fmt::Display for TorrentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What to add: a .torrent file's bytes, or a magnet link.
#[derive(Debug, Clone)]
pub enum AddSource {
    /// The bytes of a .torrent file.
    Torrent(Vec<u8>),
    /// A `magnet:?xt=urn:btih:...` link.
    Magnet(String),
}

impl AddSource {
    /// A magnet link when `text` starts with `magnet:`, otherwise nothing
    /// (the caller reads the file).
    pub fn magnet(text: &str) -> Option<AddSource> {
        text.trim_start()
            .starts_with("magnet:")
            .then(|| AddSource::Magnet(text.trim().to_owned()))
    }
}

/// How to add a torrent.
#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    /// The folder its content goes in (its name is appended); default:
    /// the session's download folder.
    pub save_path: Option<PathBuf>,
    /// Added paused (default: the session's `start_paused` setting).
    pub paused: Option<bool>,
    /// Peers to dial at once (`--peer`; a magnet link's `x.pe` are added).
    pub peers: Vec<SocketAddr>,
    /// Only these files (indices in the torrent's file list); default: all
    /// (or a magnet link's BEP 53 `so=`).
    pub files: Option<Vec<usize>>,
    /// Options beyond the session's defaults.
    pub options: TorrentOptions,
}

/// A seed limit of a torrent: the session's default, none, or its own.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit<T> {
    /// The session's setting.
    #[default]
    Session,
    /// No limit for this torrent.
    Unlimited,
    /// This torrent's own limit.
    Value(T),
}

impl<T: Copy> Limit<T> {
    /// The limit in force, given the session's.
    pub fn resolve(&self, session: Option<T>) -> Option<T> {
        match self {
            Limit::Session => session,
            Limit::Unlimited => None,
            Limit::Value(v) => Some(*v),
        }
    }
}

/// A torrent's own options, changeable at run time and kept across
/// restarts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TorrentOptions {
    /// Upload cap for this torrent, bytes per second (the session's cap
    /// applies as well).
    pub upload_limit: Option<u64>,
    /// Download cap for this torrent, bytes per second.
    pub download_limit: Option<u64>,
    /// Connected peers at most; default: the session's setting.
    pub max_peers: Option<usize>,
    /// Stop seeding at this upload ratio.
    pub seed_ratio: Limit<f64>,
    /// Stop seeding after this much time seeding (seconds).
    pub seed_time: Limit<u64>,
    /// Stop seeding after this long without uploading (seconds).
    pub seed_idle_time: Limit<u64>,
}

/// Changes to a torrent's options; `None` fields are left alone.
#[derive(Debug, Clone, Default)]
pub struct OptionsPatch {
    pub upload_limit: Option<Option<u64>>,
    pub download_limit: Option<Option<u64>>,
    pub max_peers: Option<Option<usize>>,
    pub seed_ratio: Option<Limit<f64>>,
    pub seed_time: Option<Limit<u64>>,
    pub seed_idle_time: Option<Limit<u64>>,
    /// Only these files (indices); `Some(None)` selects every file.
    pub files: Option<Option<Vec<usize>>>,
    /// Moves the data to this folder (the torrent's name is appended).
    pub save_path: Option<PathBuf>,
}

impl OptionsPatch {
    pub(crate) fn apply_to(&self, o: &mut TorrentOptions) {
        if let Some(v) = self.upload_limit {
            o.upload_limit = v;
        }
        if let Some(v) = self.download_limit {
            o.download_limit = v;
        }
        if let Some(v) = self.max_peers {
            o.max_peers = v;
        }
        if let Some(v) = self.seed_ratio {
            o.seed_ratio = v;
        }
        if let Some(v) = self.seed_time {
            o.seed_time = v;
        }
        if let Some(v) = self.seed_idle_time {
            o.seed_idle_time = v;
        }
    }
}

/// What a session does when a torrent reaches its seed limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedLimitAction {
    /// Pause it (the data stays, the torrent too).
    #[default]
    Pause,
    /// Remove the torrent, keeping its data.
    Remove,
}

/// The session's settings that may change at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where torrents go unless told otherwise.
    pub download_dir: PathBuf,
    /// Upload cap of the whole session, bytes per second.
    pub upload_limit: Option<u64>,
    /// Download cap of the whole session, bytes per second.
    pub download_limit: Option<u64>,
    /// Torrents downloading at once at most (`None`: no limit).
    pub max_active_downloads: Option<usize>,
    /// Torrents seeding at once at most (`None`: no limit).
    pub max_active_seeds: Option<usize>,
    /// Default upload ratio at which seeding stops.
    pub seed_ratio: Option<f64>,
    /// Default seeding time after which seeding stops (seconds).
    pub seed_time: Option<u64>,
    /// Default idle seeding time after which seeding stops (seconds).
    pub seed_idle_time: Option<u64>,
    pub seed_limit_action: SeedLimitAction,
    /// Connected peers per torrent at most (unless a torrent says).
    pub max_peers_per_torrent: usize,
    /// Connected peers of the whole session at most.
    pub max_peers: usize,
    /// Regular upload slots per torrent.
    pub upload_slots: usize,
    /// New torrents are added paused.
    pub start_paused: bool,
    /// A torrent that starts complete sends each piece once before any
    /// twice (initial seeding); off, it is an ordinary seed.
    pub initial_seeding: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            download_dir: PathBuf::from("."),
            upload_limit: None,
            download_limit: None,
            max_active_downloads: Some(5),
            max_active_seeds: Some(10),
            seed_ratio: None,
            seed_time: None,
            seed_idle_time: None,
            seed_limit_action: SeedLimitAction::Pause,
            max_peers_per_torrent: 50,
            max_peers: 500,
            upload_slots: 4,
            start_paused: false,
            initial_seeding: true,
        }
    }
}

/// Where a torrent is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TorrentState {
    /// A magnet link whose info dictionary is being fetched from peers.
    FetchingMetadata,
    /// Hashing the data on disk (`checked` of `total` pieces; 0 while
    /// waiting for its turn).
    Checking {
        checked: u32,
        total: u32,
    },
    /// Waits for a place in the download or seed queue.
    Queued,
    Downloading,
    Seeding,
    /// Paused by the user (or by a seed limit).
    Paused,
    /// Stopped by an error; resume or recheck to try again.
    Error(TorrentError),
}

impl TorrentState {
    /// A short lowercase name (`fetching_metadata`, `checking`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            TorrentState::FetchingMetadata => "fetching_metadata",
            TorrentState::Checking { .. } => "checking",
            TorrentState::Queued => "queued",
            TorrentState::Downloading => "downloading",
            TorrentState::Seeding => "seeding",
            TorrentState::Paused => "paused",
            TorrentState::Error(_) => "error",
        }
    }
}

impl fmt::Display for TorrentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TorrentState::Checking { checked, total } => write!(f, "checking {checked}/{total}"),
            TorrentState::Error(e) => write!(f, "error: {e}"),
            other => f.write_str(other.name()),
        }
    }
}

/// Why a torrent stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TorrentError {
    #[error("no space left on the device writing {}", path.display())]
    DiskFull { path: PathBuf },
    #[error("permission denied: {}", path.display())]
    PermissionDenied { path: PathBuf },
    /// Files that held verified data are gone (a drive unmounted, files
    /// deleted): recheck to start over from what is there.
    #[error("files are missing: {} (recheck to accept what is left, or bring them back)", path.display())]
    FilesMissing { path: PathBuf },
    #[error("refusing unsafe path {}: {why}", path.display())]
    UnsafePath { path: PathBuf, why: String },
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// The fetched info dictionary matches the infohash but is not a valid
    /// torrent.
    #[error("invalid metadata: {0}")]
    InvalidMetadata(String),
    #[error("cannot move the data: {0}")]
    Move(String),
    #[error("{0}")]
    Other(String),
}

impl TorrentError {
    /// A short lowercase name (`disk_full`, `files_missing`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            TorrentError::DiskFull { .. } => "disk_full",
            TorrentError::PermissionDenied { .. } => "permission_denied",
            TorrentError::FilesMissing { .. } => "files_missing",
            TorrentError::UnsafePath { .. } => "unsafe_path",
            TorrentError::Io { .. } => "io",
            TorrentError::InvalidMetadata(_) => "invalid_metadata",
            TorrentError::Move(_) => "move",
            TorrentError::Other(_) => "other",
        }
    }

    /// The path it is about, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            TorrentError::DiskFull { path }
            | TorrentError::PermissionDenied { path }
            | TorrentError::FilesMissing { path }
            | TorrentError::UnsafePath { path, .. }
            | TorrentError::Io { path, .. } => Some(path),
            _ => None,
        }
    }
}

impl From<crate::storage::StorageError> for TorrentError {
    fn from(e: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError as S;
        match e {
            S::NoSpace { path } => TorrentError::DiskFull { path },
            S::UnsafePath { path, why } => TorrentError::UnsafePath {
                path,
                why: why.to_owned(),
            },
            S::Io { path, source } => match source.kind() {
                std::io::ErrorKind::PermissionDenied => TorrentError::PermissionDenied { path },
                _ if source.raw_os_error() == Some(libc::EROFS) => {
                    TorrentError::PermissionDenied { path }
                }
                _ => TorrentError::Io {
                    path,
                    message: source.to_string(),
                },
            },
            S::NotPresent { path } => TorrentError::FilesMissing { path },
            S::Conflict { path, why } => TorrentError::Io {
                path,
                message: why.to_owned(),
            },
            other => TorrentError::Other(other.to_string()),
        }
    }
}

/// A snapshot of one torrent: everything a list view shows, refreshed
/// about once a second while it runs and at once on every change of
/// state.
#[derive(Debug, Clone)]
pub struct TorrentSummary {
    pub id: TorrentId,
    pub info_hash: InfoHash,
    /// The torrent's name; a magnet link's `dn` (or the infohash) until
    /// its metadata comes.
    pub name: String,
    pub state: TorrentState,
    /// Its info dictionary is known (always, but for a magnet link still
    /// fetching it).
    pub has_metadata: bool,
    pub private: bool,
    /// Bytes of all its files (0 until the metadata is known).
    pub total_size: u64,
    /// Bytes of the selected files' pieces.
    pub wanted_size: u64,
    /// Bytes of the verified pieces among those.
    pub wanted_verified: u64,
    /// Bytes of every verified piece.
    pub verified: u64,
    pub piece_count: u32,
    pub piece_size: u32,
    pub pieces_have: u32,
    /// Payload bytes received and sent since the torrent last started.
    pub downloaded: u64,
    pub uploaded: u64,
    /// ... and over the torrent's whole life.
    pub downloaded_total: u64,
    pub uploaded_total: u64,
    /// Bytes dropped (unrequested, duplicates, failed hashes).
    pub wasted: u64,
    pub hash_failures: u32,
    pub download_rate: u64,
    pub upload_rate: u64,
    /// Connected peers, and how many of them are seeds.
    pub peers: usize,
    pub seeds: usize,
    /// Known peer addresses, by where they came from.
    pub known_peers: Vec<(PeerSource, usize)>,
    /// Unix times (seconds).
    pub added_at: u64,
    pub completed_at: Option<u64>,
    /// Time spent seeding and running (downloading or seeding), all runs.
    pub seeding_time: Duration,
    pub active_time: Duration,
    /// The folder its content is in (its name is appended).
    pub save_path: PathBuf,
    pub queue_position: u64,
    /// Started by force: runs whatever the queue says.
    pub forced: bool,
    pub options: TorrentOptions,
    /// Only these files are wanted (`None`: all).
    pub files: Option<Vec<usize>>,
    /// Why it was last paused by the session, if by a seed limit.
    pub stopped_by: Option<SeedLimitReached>,
    pub magnet: String,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
}

impl TorrentSummary {
    /// Fraction of the wanted bytes verified, 0.0 to 1.0.
    pub fn progress(&self) -> f64 {
        if self.wanted_size == 0 {
            return if self.has_metadata { 1.0 } else { 0.0 };
        }
        self.wanted_verified as f64 / self.wanted_size as f64
    }

    /// Upload ratio over the torrent's life (see
    /// [`essaim_proto::seed_limits::ratio`]).
    pub fn ratio(&self) -> f64 {
        essaim_proto::seed_limits::ratio(
            self.uploaded_total,
            self.downloaded_total,
            self.wanted_size,
        )
    }

    /// Time left at the current rate, while downloading.
    pub fn eta(&self) -> Option<Duration> {
        let left = self.wanted_size.saturating_sub(self.wanted_verified);
        (self.state == TorrentState::Downloading && self.download_rate > 0 && left > 0)
            .then(|| Duration::from_secs(left / self.download_rate))
    }

    /// Every wanted piece is verified.
    pub fn is_complete(&self) -> bool {
        self.has_metadata && self.wanted_verified >= self.wanted_size
    }
}

/// One file of a torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    pub index: usize,
    /// Relative to the save path, with `/` between components (the
    /// torrent's folder first for a multi-file torrent).
    pub path: String,
    pub size: u64,
    /// Bytes of it in verified pieces.
    pub verified: u64,
    pub wanted: bool,
}

/// One connected peer.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub addr: SocketAddr,
    pub peer_id: PeerId,
    /// The client name of its extended handshake (`v`), if it sent one.
    pub client: Option<String>,
    pub source: PeerSource,
    /// It dialled us.
    pub incoming: bool,
    pub downloaded: u64,
    pub uploaded: u64,
    pub download_rate: u64,
    pub upload_rate: u64,
    /// Fraction of the pieces it has, 0.0 to 1.0.
    pub progress: f64,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    pub snubbed: bool,
    pub fast: bool,
}

/// One tracker of a torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerStatus {
    pub url: String,
    /// BEP 12 tier, from 0.
    pub tier: usize,
    /// How long ago the last announce succeeded.
    pub last_success_ago: Option<Duration>,
    /// The error of the last failed announce (cleared by a success).
    pub last_error: Option<String>,
    /// The last warning message it sent.
    pub warning: Option<String>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    pub successes: u64,
    pub failures: u64,
}

/// The pieces of a torrent, one state each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceMap {
    /// One byte per piece: b'1' verified, b'0' missing, b'-' not wanted.
    pub states: Vec<u8>,
}

/// Figures of the whole session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionStats {
    pub torrents: usize,
    pub downloading: usize,
    pub seeding: usize,
    pub paused: usize,
    pub queued: usize,
    pub checking: usize,
    pub errors: usize,
    pub download_rate: u64,
    pub upload_rate: u64,
    /// Payload bytes since the session started.
    pub downloaded: u64,
    pub uploaded: u64,
    /// Payload bytes over every torrent's life.
    pub downloaded_total: u64,
    pub uploaded_total: u64,
    pub peers: usize,
    pub dht_nodes: Option<usize>,
    pub uptime: Duration,
}

/// Moves in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueMove {
    Top,
    Up,
    Down,
    Bottom,
}
