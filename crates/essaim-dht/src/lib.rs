//! A Mainline DHT node (BEP 5) as a pure state machine: no socket, no
//! clock, no tokio. Time is passed in; datagrams go in through
//! [`Dht::handle_packet`] and come out of [`Dht::poll_transmit`]. See
//! [`node`] for the contract and the invariants.
//!
//! | module | owns |
//! |---|---|
//! | [`id`] | node ids, the XOR metric, BEP 42 ids |
//! | [`krpc`] | the KRPC codec: queries, responses, errors, compact info |
//! | [`routing`] | the routing table: k-buckets, node states, eviction |
//! | [`lookup`] | one iterative lookup (α = 3, converging on the k closest) |
//! | [`token`] | write tokens for announce_peer |
//! | [`peer_store`] | the peers announced to us |
//! | [`rate`] | token buckets against amplification |
//! | [`node`] | the node: [`Dht`], its config and events |
//! | `searches` | running lookups and searches, banning liars |
//! | `server` | answering queries |
//!
//! Also implemented: BEP 32 (IPv6: `nodes6`, `want`, 18-byte values; one
//! address family per node), BEP 42 (ids from the external IP; not
//! enforced) and BEP 43 (read-only nodes).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod id;
pub mod krpc;
pub mod lookup;
pub mod node;
pub mod peer_store;
pub mod rate;
pub mod routing;
mod searches;
mod server;
pub mod token;

pub use id::NodeId;
pub use lookup::LookupStats;
pub use node::{Dht, DhtConfig, DhtEvent, DhtStats};
pub use routing::K;
