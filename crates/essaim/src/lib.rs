//! The essaim BitTorrent node: the async engine around the pure state
//! machines of `essaim-proto`, with storage, trackers and the one public
//! API that the daemon, the CLI, the HTTP adapters and the tests drive.
//!
//! Start with [`Session`]: it listens for peers, keeps its torrents (in a
//! state folder, if given) and runs them; [`Session::add`] takes a
//! .torrent's bytes or a magnet link and returns a [`TorrentId`], and
//! everything else (list, pause, resume, remove, options, queue, events)
//! goes by that id.
//!
//! The other public modules are building blocks that stand on their own:
//! making torrents ([`create`]), a small tracker ([`tracker_server`]),
//! tracker clients ([`tracker`]), a torrent's files on disk ([`storage`])
//! and the DHT node ([`dht`]).

pub mod create;
pub mod dht;
pub mod events;
mod lsd;
mod peer;
mod peer_list;
mod rate_limit;
mod session;
pub mod storage;
mod store;
mod torrent;
pub mod tracker;
pub mod tracker_server;
mod types;

pub use events::{Event, EventStream, Lagged, TorrentStats};
pub use peer::{HANDSHAKE_TIMEOUT, IDLE_TIMEOUT};
pub use peer_list::MAX_KNOWN as MAX_KNOWN_PEERS;
pub use session::{
    Added, Session, SessionConfig, SessionError, SettingsPatch, DHT_ROUTERS, MAX_DIALING,
    MAX_HALF_OPEN,
};
pub use torrent::RESUME_INTERVAL;
pub use types::{
    AddOptions, AddSource, FileStatus, Limit, OptionsPatch, PeerSource, PeerStatus, PieceMap,
    QueueKind, QueueMove, SeedLimitAction, SeedLimitReached, SessionStats, Settings, TorrentError,
    TorrentId, TorrentOptions, TorrentState, TorrentSummary, TrackerStatus,
};
