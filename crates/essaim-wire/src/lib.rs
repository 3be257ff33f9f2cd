//! Pure BitTorrent wire formats, with no I/O: the peer protocol (BEP 3, BEP 6
//! fast extension), the extension protocol (BEP 10), and tracker messages
//! (HTTP, BEP 3/23; UDP, BEP 15). Decoders take untrusted bytes and answer
//! with a value or an error, never a panic, and never allocate more than the
//! protocol allows before checking a length.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod extension;
pub mod lsd;
pub mod peer;
pub mod pex;
pub mod tracker;
