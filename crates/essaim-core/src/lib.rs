//! Pure BitTorrent building blocks, with no I/O: bencode, identifiers,
//! bitfields, piece/block/file layout, metainfo (.torrent) and magnet links.
//!
//! Everything here takes untrusted bytes and answers with a value or an
//! error, never a panic; nothing is allocated in proportion to a length the
//! input claims, only to what it actually contains.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod bencode;
pub mod bitfield;
pub mod layout;
pub mod magnet;
pub mod metainfo;
pub mod types;

pub use bencode::OwnedValue;
pub use bitfield::Bitfield;
pub use layout::{Layout, BLOCK_SIZE};
pub use magnet::Magnet;
pub use metainfo::{Info, Metainfo};
pub use types::{InfoHash, PeerId};
