//! The hostile-peer suite: a scripted peer on 127.0.0.1 (a plain tokio
//! socket speaking raw bytes) attacks a real essaim `Session` running in
//! this process, and each case asserts what essaim does: the connection
//! closed or kept, the torrent's status (wasted bytes, hash failures,
//! peers), the files on disk, and memory (RSS and a counting allocator).
//!
//! - `wire`: malformed frames and protocol violations, unrequested data,
//!   PEX floods and unknown extensions, bad and slow handshakes, idle peers;
//! - `liar`: corrupt piece data against a leecher with an honest seeder;
//! - `flood`: requests, have messages, keep-alives, half-open sockets;
//! - `magnet`: hostile ut_metadata peers against a magnet fetch.
//!
//! Every wait is bounded; tests that measure memory run alone (see
//! `util::EXCLUSIVE`). Tracker replies: `hostile_tracker.rs`.

#[path = "hostile/flood.rs"]
mod flood;
#[path = "hostile/liar.rs"]
mod liar;
#[path = "hostile/magnet.rs"]
mod magnet;
#[path = "hostile/util.rs"]
mod util;
#[path = "hostile/wire.rs"]
mod wire;

#[global_allocator]
static ALLOC: util::CountingAlloc = util::CountingAlloc;
