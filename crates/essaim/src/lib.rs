//! The essaim BitTorrent node: the async engine around the pure state
//! machines of `essaim-proto`, with storage, trackers and the public API.
//!
//! Start with [`session::Session`]: it listens for peers and runs torrents
//! added with [`session::Session::add_torrent`].

pub mod create;
pub mod dht;
pub mod lsd;
pub mod metadata;
pub mod peer;
pub mod peer_list;
pub mod rate_limit;
pub mod session;
pub mod storage;
pub mod torrent;
pub mod tracker;
pub mod tracker_server;
