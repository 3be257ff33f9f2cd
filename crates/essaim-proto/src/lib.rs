//! The engine's pure state machines: piece picker, choker, and the
//! per-torrent swarm that drives peers. No I/O, no clock: time is passed in,
//! inputs arrive through `handle_*` methods, outputs leave through `poll_*`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod choker;
pub mod magnet;
pub mod metadata;
pub mod peer_state;
pub mod pex;
pub mod piece_picker;
pub mod queue;
pub mod rate_limit;
pub mod seed_limits;
pub mod super_seed;
pub mod swarm;
