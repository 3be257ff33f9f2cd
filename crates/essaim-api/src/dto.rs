//! The JSON of the native API: what it sends and takes, each type with its
//! OpenAPI schema. Sizes are bytes, rates bytes per second, times Unix
//! seconds or durations in seconds. Request bodies refuse unknown fields,
//! so a typo is an error that names it, not a silent no-op.

use std::collections::BTreeMap;

use essaim::{
    FileStatus, Limit, PeerStatus, SeedLimitAction, SessionStats, Settings, TorrentError,
    TorrentState, TorrentSummary, TrackerStatus,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// `null` in JSON becomes `Some(None)`; an absent field stays `None`.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A non-negative integer of a request body. JSON Schema calls `2.0` an
/// integer too, so an integral number written with a fraction is taken;
/// anything above `i64::MAX` (the schema's `int64`) or negative is
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Int(pub u64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number from 0 to 9223372036854775807")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Int, E> {
                if v > i64::MAX as u64 {
                    return Err(E::custom(format!("{v} is too large")));
                }
                Ok(Int(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Int, E> {
                u64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Int, E> {
                if v.fract() == 0.0 && (0.0..=i64::MAX as f64).contains(&v) {
                    Ok(Int(v as u64))
                } else {
                    Err(E::custom(format!("{v} is not a whole number in range")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Int {
    pub fn usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Why a torrent stopped.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDto {
    /// `disk_full`, `permission_denied`, `files_missing`, `unsafe_path`,
    /// `io`, `invalid_metadata`, `move`, `other`.
    pub kind: String,
    pub message: String,
    /// The file or folder it is about, if any.
    pub path: Option<String>,
}

impl From<&TorrentError> for ErrorDto {
    fn from(e: &TorrentError) -> Self {
        ErrorDto {
            kind: e.kind().to_owned(),
            message: e.to_string(),
            path: e.path().map(|p| p.display().to_string()),
        }
    }
}

/// Hashing progress while checking.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckingDto {
    pub checked: u32,
    pub total: u32,
}

/// A seed limit mode: the session's, or none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    Session,
    Unlimited,
}

/// A seed ratio limit: `"session"` (the session's), `"unlimited"`, or a
/// ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RatioLimit {
    Mode(LimitMode),
    Value(f64),
}

/// A time limit: `"session"`, `"unlimited"`, or seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TimeLimit {
    Mode(LimitMode),
    #[schema(value_type = i64)]
    Seconds(Int),
}

impl From<Limit<f64>> for RatioLimit {
    fn from(l: Limit<f64>) -> Self {
        match l {
            Limit::Session => RatioLimit::Mode(LimitMode::Session),
            Limit::Unlimited => RatioLimit::Mode(LimitMode::Unlimited),
            Limit::Value(v) => RatioLimit::Value(v),
        }
    }
}

impl From<Limit<u64>> for TimeLimit {
    fn from(l: Limit<u64>) -> Self {
        match l {
            Limit::Session => TimeLimit::Mode(LimitMode::Session),
            Limit::Unlimited => TimeLimit::Mode(LimitMode::Unlimited),
            Limit::Value(v) => TimeLimit::Seconds(Int(v)),
        }
    }
}

impl RatioLimit {
    pub fn to_limit(self) -> Result<Limit<f64>, String> {
        Ok(match self {
            RatioLimit::Mode(LimitMode::Session) => Limit::Session,
            RatioLimit::Mode(LimitMode::Unlimited) => Limit::Unlimited,
            RatioLimit::Value(v) if v.is_finite() && v >= 0.0 => Limit::Value(v),
            RatioLimit::Value(v) => return Err(format!("seed_ratio {v} is not a ratio")),
        })
    }
}

impl TimeLimit {
    pub fn to_limit(self) -> Limit<u64> {
        match self {
            TimeLimit::Mode(LimitMode::Session) => Limit::Session,
            TimeLimit::Mode(LimitMode::Unlimited) => Limit::Unlimited,
            TimeLimit::Seconds(s) => Limit::Value(s.0),
        }
    }
}

/// A torrent's own options.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OptionsDto {
    pub upload_limit: Option<u64>,
    pub download_limit: Option<u64>,
    pub max_peers: Option<usize>,
    pub seed_ratio: RatioLimit,
    pub seed_time: TimeLimit,
    pub seed_idle_time: TimeLimit,
}

/// Changes to a torrent's options. Absent fields stay; `null` clears a
/// cap (no limit) or selects every file.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptionsPatchDto {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub upload_limit: Option<Option<Int>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub download_limit: Option<Option<Int>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub max_peers: Option<Option<Int>>,
    pub seed_ratio: Option<RatioLimit>,
    pub seed_time: Option<TimeLimit>,
    pub seed_idle_time: Option<TimeLimit>,
    /// File indices to download; `null` for all.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<i64>>)]
    pub files: Option<Option<Vec<Int>>>,
    /// Moves the data to this folder (it must be an allowed one).
    pub save_path: Option<String>,
}

/// One torrent, as a list shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TorrentDto {
    pub id: u64,
    /// 40 hex digits.
    pub info_hash: String,
    pub name: String,
    /// `fetching_metadata`, `checking`, `queued`, `downloading`,
    /// `seeding`, `paused` or `error`.
    pub state: String,
    pub error: Option<ErrorDto>,
    pub checking: Option<CheckingDto>,
    pub has_metadata: bool,
    pub private: bool,
    /// Verified share of the wanted bytes, 0 to 1.
    pub progress: f64,
    pub total_size: u64,
    pub wanted_size: u64,
    pub wanted_verified: u64,
    pub verified: u64,
    pub piece_count: u32,
    pub piece_size: u32,
    pub pieces_have: u32,
    /// Since the torrent last started.
    pub downloaded: u64,
    pub uploaded: u64,
    /// Over its whole life.
    pub downloaded_total: u64,
    pub uploaded_total: u64,
    pub wasted: u64,
    pub hash_failures: u32,
    pub download_rate: u64,
    pub upload_rate: u64,
    pub ratio: f64,
    pub eta_seconds: Option<u64>,
    pub peers: usize,
    pub seeds: usize,
    /// Known peer addresses by source (`tracker`, `dht`, `pex`, `lsd`,
    /// `incoming`, `manual`).
    pub known_peers: BTreeMap<String, usize>,
    pub added_at: u64,
    pub completed_at: Option<u64>,
    pub seeding_seconds: u64,
    pub active_seconds: u64,
    pub save_path: String,
    pub queue_position: u64,
    pub forced: bool,
    /// The seed limit that paused it: `ratio`, `seeding_time`, `idle_time`.
    pub stopped_by: Option<String>,
    pub options: OptionsDto,
    /// Selected file indices (`null`: all).
    pub files: Option<Vec<usize>>,
    pub magnet: String,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
}

impl From<&TorrentSummary> for TorrentDto {
    fn from(s: &TorrentSummary) -> Self {
        let (error, checking) = match &s.state {
            TorrentState::Error(e) => (Some(ErrorDto::from(e)), None),
            TorrentState::Checking { checked, total } => (
                None,
                Some(CheckingDto {
                    checked: *checked,
                    total: *total,
                }),
            ),
            _ => (None, None),
        };
        TorrentDto {
            id: s.id.0,
            info_hash: s.info_hash.to_hex(),
            name: s.name.clone(),
            state: s.state.name().to_owned(),
            error,
            checking,
            has_metadata: s.has_metadata,
            private: s.private,
            progress: s.progress(),
            total_size: s.total_size,
            wanted_size: s.wanted_size,
            wanted_verified: s.wanted_verified,
            verified: s.verified,
            piece_count: s.piece_count,
            piece_size: s.piece_size,
            pieces_have: s.pieces_have,
            downloaded: s.downloaded,
            uploaded: s.uploaded,
            downloaded_total: s.downloaded_total,
            uploaded_total: s.uploaded_total,
            wasted: s.wasted,
            hash_failures: s.hash_failures,
            download_rate: s.download_rate,
            upload_rate: s.upload_rate,
            ratio: s.ratio(),
            eta_seconds: s.eta().map(|d| d.as_secs()),
            peers: s.peers,
            seeds: s.seeds,
            known_peers: s
                .known_peers
                .iter()
                .map(|(src, n)| (src.to_string(), *n))
                .collect(),
            added_at: s.added_at,
            completed_at: s.completed_at,
            seeding_seconds: s.seeding_time.as_secs(),
            active_seconds: s.active_time.as_secs(),
            save_path: s.save_path.display().to_string(),
            queue_position: s.queue_position,
            forced: s.forced,
            stopped_by: s.stopped_by.map(|r| {
                match r {
                    essaim::SeedLimitReached::Ratio => "ratio",
                    essaim::SeedLimitReached::SeedingTime => "seeding_time",
                    essaim::SeedLimitReached::IdleTime => "idle_time",
                }
                .to_owned()
            }),
            options: OptionsDto {
                upload_limit: s.options.upload_limit,
                download_limit: s.options.download_limit,
                max_peers: s.options.max_peers,
                seed_ratio: s.options.seed_ratio.into(),
                seed_time: s.options.seed_time.into(),
                seed_idle_time: s.options.seed_idle_time.into(),
            },
            files: s.files.clone(),
            magnet: s.magnet.clone(),
            comment: s.comment.clone(),
            created_by: s.created_by.clone(),
            creation_date: s.creation_date,
        }
    }
}

/// One torrent as a list shows it: what a list view needs (the whole
/// [`TorrentDto`] with `?full=true`, or per torrent).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TorrentItemDto {
    pub id: u64,
    pub info_hash: String,
    pub name: String,
    /// As [`TorrentDto::state`].
    pub state: String,
    pub error: Option<ErrorDto>,
    pub has_metadata: bool,
    pub progress: f64,
    pub total_size: u64,
    pub wanted_size: u64,
    pub download_rate: u64,
    pub upload_rate: u64,
    pub downloaded_total: u64,
    pub uploaded_total: u64,
    pub ratio: f64,
    pub eta_seconds: Option<u64>,
    pub peers: usize,
    pub seeds: usize,
    pub added_at: u64,
    pub completed_at: Option<u64>,
    pub queue_position: u64,
    pub save_path: String,
}

impl From<&TorrentSummary> for TorrentItemDto {
    fn from(s: &TorrentSummary) -> Self {
        TorrentItemDto {
            id: s.id.0,
            info_hash: s.info_hash.to_hex(),
            name: s.name.clone(),
            state: s.state.name().to_owned(),
            error: match &s.state {
                TorrentState::Error(e) => Some(ErrorDto::from(e)),
                _ => None,
            },
            has_metadata: s.has_metadata,
            progress: s.progress(),
            total_size: s.total_size,
            wanted_size: s.wanted_size,
            download_rate: s.download_rate,
            upload_rate: s.upload_rate,
            downloaded_total: s.downloaded_total,
            uploaded_total: s.uploaded_total,
            ratio: s.ratio(),
            eta_seconds: s.eta().map(|d| d.as_secs()),
            peers: s.peers,
            seeds: s.seeds,
            added_at: s.added_at,
            completed_at: s.completed_at,
            queue_position: s.queue_position,
            save_path: s.save_path.display().to_string(),
        }
    }
}

/// A magnet link to add (a .torrent file goes as multipart/form-data: a
/// `torrent` file part, and these fields as text parts).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDto {
    /// `magnet:?xt=urn:btih:...`
    pub magnet: String,
    /// The folder its content goes in (default: the download folder).
    pub save_path: Option<String>,
    pub paused: Option<bool>,
    /// File indices to download (default: all, or the link's `so=`).
    #[schema(value_type = Option<Vec<i64>>)]
    pub files: Option<Vec<Int>>,
    /// Peers to dial, `IP:PORT`.
    pub peers: Option<Vec<String>>,
}

/// A torrent added.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddedDto {
    pub id: u64,
    pub info_hash: String,
    /// It was already there (its existing id).
    pub existed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileDto {
    pub index: usize,
    pub path: String,
    pub size: u64,
    pub verified: u64,
    pub progress: f64,
    pub wanted: bool,
}

impl From<&FileStatus> for FileDto {
    fn from(f: &FileStatus) -> Self {
        FileDto {
            index: f.index,
            path: f.path.clone(),
            size: f.size,
            verified: f.verified,
            progress: if f.size == 0 {
                1.0
            } else {
                f.verified as f64 / f.size as f64
            },
            wanted: f.wanted,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PeerDto {
    pub address: String,
    /// The peer id, printable characters kept, others as `.`.
    pub peer_id: String,
    pub client: Option<String>,
    pub source: String,
    pub incoming: bool,
    pub downloaded: u64,
    pub uploaded: u64,
    pub download_rate: u64,
    pub upload_rate: u64,
    pub progress: f64,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    pub snubbed: bool,
    pub fast: bool,
}

impl From<&PeerStatus> for PeerDto {
    fn from(p: &PeerStatus) -> Self {
        PeerDto {
            address: p.addr.to_string(),
            peer_id: p
                .peer_id
                .0
                .iter()
                .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
                .collect(),
            client: p.client.clone(),
            source: p.source.to_string(),
            incoming: p.incoming,
            downloaded: p.downloaded,
            uploaded: p.uploaded,
            download_rate: p.download_rate,
            upload_rate: p.upload_rate,
            progress: p.progress,
            am_choking: p.am_choking,
            am_interested: p.am_interested,
            peer_choking: p.peer_choking,
            peer_interested: p.peer_interested,
            snubbed: p.snubbed,
            fast: p.fast,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrackerDto {
    pub url: String,
    pub tier: usize,
    pub last_success_seconds_ago: Option<u64>,
    pub last_error: Option<String>,
    pub warning: Option<String>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    pub successes: u64,
    pub failures: u64,
}

impl From<&TrackerStatus> for TrackerDto {
    fn from(t: &TrackerStatus) -> Self {
        TrackerDto {
            url: t.url.clone(),
            tier: t.tier,
            last_success_seconds_ago: t.last_success_ago.map(|d| d.as_secs()),
            last_error: t.last_error.clone(),
            warning: t.warning.clone(),
            seeders: t.seeders,
            leechers: t.leechers,
            successes: t.successes,
            failures: t.failures,
        }
    }
}

/// The piece map.
#[derive(Debug, Serialize, ToSchema)]
pub struct PiecesDto {
    pub count: usize,
    /// One character per piece: `1` verified, `0` missing, `-` not wanted.
    /// Empty while a magnet link has no metadata.
    pub states: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsDto {
    pub torrents: usize,
    pub downloading: usize,
    pub seeding: usize,
    pub paused: usize,
    pub queued: usize,
    pub checking: usize,
    pub errors: usize,
    pub download_rate: u64,
    pub upload_rate: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub downloaded_total: u64,
    pub uploaded_total: u64,
    pub peers: usize,
    pub dht_nodes: Option<usize>,
    pub uptime_seconds: u64,
    pub port: u16,
    pub version: String,
}

impl StatsDto {
    pub fn new(s: &SessionStats, port: u16) -> Self {
        StatsDto {
            torrents: s.torrents,
            downloading: s.downloading,
            seeding: s.seeding,
            paused: s.paused,
            queued: s.queued,
            checking: s.checking,
            errors: s.errors,
            download_rate: s.download_rate,
            upload_rate: s.upload_rate,
            downloaded: s.downloaded,
            uploaded: s.uploaded,
            downloaded_total: s.downloaded_total,
            uploaded_total: s.uploaded_total,
            peers: s.peers,
            dht_nodes: s.dht_nodes,
            uptime_seconds: s.uptime.as_secs(),
            port,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// What happens when a torrent reaches its seed limit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeedActionDto {
    Pause,
    Remove,
}

impl From<SeedLimitAction> for SeedActionDto {
    fn from(a: SeedLimitAction) -> Self {
        match a {
            SeedLimitAction::Pause => SeedActionDto::Pause,
            SeedLimitAction::Remove => SeedActionDto::Remove,
        }
    }
}

/// The session's settings that may change at run time.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsDto {
    pub download_dir: String,
    pub upload_limit: Option<u64>,
    pub download_limit: Option<u64>,
    pub max_active_downloads: Option<usize>,
    pub max_active_seeds: Option<usize>,
    pub seed_ratio: Option<f64>,
    pub seed_time: Option<u64>,
    pub seed_idle_time: Option<u64>,
    pub seed_limit_action: SeedActionDto,
    pub max_peers_per_torrent: usize,
    pub max_peers: usize,
    pub upload_slots: usize,
    pub start_paused: bool,
    pub initial_seeding: bool,
    /// Folders a download may go in (read only: from the configuration).
    pub allowed_roots: Vec<String>,
}

impl SettingsDto {
    pub fn new(s: &Settings, roots: &[std::path::PathBuf]) -> Self {
        SettingsDto {
            download_dir: s.download_dir.display().to_string(),
            upload_limit: s.upload_limit,
            download_limit: s.download_limit,
            max_active_downloads: s.max_active_downloads,
            max_active_seeds: s.max_active_seeds,
            seed_ratio: s.seed_ratio,
            seed_time: s.seed_time,
            seed_idle_time: s.seed_idle_time,
            seed_limit_action: s.seed_limit_action.into(),
            max_peers_per_torrent: s.max_peers_per_torrent,
            max_peers: s.max_peers,
            upload_slots: s.upload_slots,
            start_paused: s.start_paused,
            initial_seeding: s.initial_seeding,
            allowed_roots: roots.iter().map(|r| r.display().to_string()).collect(),
        }
    }
}

/// Changes to the settings: absent fields stay, `null` clears a limit.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatchDto {
    pub download_dir: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub upload_limit: Option<Option<Int>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub download_limit: Option<Option<Int>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub max_active_downloads: Option<Option<Int>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub max_active_seeds: Option<Option<Int>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<f64>, minimum = 0)]
    pub seed_ratio: Option<Option<f64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub seed_time: Option<Option<Int>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub seed_idle_time: Option<Option<Int>>,
    pub seed_limit_action: Option<SeedActionDto>,
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub max_peers_per_torrent: Option<Int>,
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub max_peers: Option<Int>,
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub upload_slots: Option<Int>,
    pub start_paused: Option<bool>,
    pub initial_seeding: Option<bool>,
}

/// A queue move.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueDto {
    /// `top`, `up`, `down` or `bottom`.
    #[serde(rename = "move")]
    pub to: QueueMoveDto,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueMoveDto {
    Top,
    Up,
    Down,
    Bottom,
}

/// Peers to dial.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeersDto {
    /// `IP:PORT` each.
    pub peers: Vec<String>,
}

/// Credentials for the login form.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginDto {
    pub username: String,
    pub password: String,
}

/// `POST /torrents/{id}/start`: start now whatever the queue says, or
/// give the torrent back to the queue.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct StartDto {
    /// `true` (default): run now; `false`: back to the queue.
    pub force: Option<bool>,
}
