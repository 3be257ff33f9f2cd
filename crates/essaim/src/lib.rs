//! The essaim BitTorrent node: the async engine around the pure state
//! machines of `essaim-proto`, with storage, trackers and the public API.

pub mod create;
pub mod storage;
pub mod tracker;
pub mod tracker_server;
