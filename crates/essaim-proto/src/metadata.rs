//! Fetching a torrent's info dictionary from peers (BEP 9, ut_metadata),
//! for magnet links.
//!
//! The metadata is cut in 16 KiB pieces. The size comes from the first
//! peer's extended handshake (`metadata_size`), refused above
//! [`MAX_METADATA_SIZE`] or at 0, so a peer cannot make us allocate without
//! bound. Pieces are requested from any peer that has the extension; a
//! `data` message is accepted only for a piece we asked that peer for, with
//! the announced total size and the exact piece length. When all pieces are
//! in, the SHA-1 of the whole must equal the infohash; if it does not, every
//! piece is dropped, the peers that sent them are reported as liars, and the
//! fetch starts over (with the size from the next peer).

use std::time::{Duration, Instant};

use bytes::Bytes;
use essaim_core::InfoHash;
use sha1::{Digest, Sha1};

use crate::swarm::PeerKey;

/// Largest info dictionary accepted (libtorrent's default limit is lower
/// still for most torrents; 16 MiB holds a torrent of a million files).
pub const MAX_METADATA_SIZE: u64 = 16 * 1024 * 1024;
/// A piece requested this long ago without an answer is asked again.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const PIECE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Missing,
    Requested(PeerKey, Instant),
    Have(PeerKey),
}

/// Why a peer's metadata message was refused: the caller drops that peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("peer does not offer ut_metadata")]
    NoExtension,
    #[error("metadata size {0} is out of range (1 to {MAX_METADATA_SIZE})")]
    BadSize(u64),
    #[error("metadata size {got} differs from {expected}")]
    SizeMismatch { got: u64, expected: u64 },
    #[error("metadata piece {0} was not requested from this peer")]
    Unrequested(u32),
    #[error("metadata piece {piece} has {got} bytes, expected {expected}")]
    BadPieceLength {
        piece: u32,
        got: usize,
        expected: usize,
    },
}

#[derive(Debug)]
pub struct MetadataFetch {
    info_hash: InfoHash,
    size: Option<usize>,
    buf: Vec<u8>,
    slots: Vec<Slot>,
    done: Option<Bytes>,
    /// Peers whose data failed the hash check (the caller bans them).
    liars: Vec<PeerKey>,
}

impl MetadataFetch {
    pub fn new(info_hash: InfoHash) -> Self {
        MetadataFetch {
            info_hash,
            size: None,
            buf: Vec::new(),
            slots: Vec::new(),
            done: None,
            liars: Vec::new(),
        }
    }

    /// The verified info dictionary, once complete.
    pub fn result(&self) -> Option<&Bytes> {
        self.done.as_ref()
    }

    /// Peers whose pieces made a hash check fail, since the last call.
    pub fn take_liars(&mut self) -> Vec<PeerKey> {
        std::mem::take(&mut self.liars)
    }

    /// A peer's extended handshake: its `metadata_size` and whether it
    /// offers ut_metadata.
    pub fn handle_peer(
        &mut self,
        has_extension: bool,
        metadata_size: Option<u64>,
    ) -> Result<(), MetadataError> {
        if !has_extension {
            return Err(MetadataError::NoExtension);
        }
        let size = metadata_size.ok_or(MetadataError::NoExtension)?;
        if size == 0 || size > MAX_METADATA_SIZE {
            return Err(MetadataError::BadSize(size));
        }
        match self.size {
            Some(s) if s as u64 != size => Err(MetadataError::SizeMismatch {
                got: size,
                expected: s as u64,
            }),
            Some(_) => Ok(()),
            None => {
                let size = size as usize;
                self.size = Some(size);
                self.buf = vec![0; size];
                self.slots = vec![Slot::Missing; size.div_ceil(PIECE)];
                Ok(())
            }
        }
    }

    /// The next piece to ask `peer` for, marked as requested from it.
    pub fn next_request(&mut self, peer: PeerKey, now: Instant) -> Option<u32> {
        if self.done.is_some() {
            return None;
        }
        let i = self.slots.iter().position(|s| match s {
            Slot::Missing => true,
            Slot::Requested(_, at) => now.saturating_duration_since(*at) >= REQUEST_TIMEOUT,
            Slot::Have(_) => false,
        })?;
        self.slots[i] = Slot::Requested(peer, now);
        Some(i as u32)
    }

    /// A `data` message from `peer`.
    pub fn handle_data(
        &mut self,
        peer: PeerKey,
        piece: u32,
        total_size: u64,
        data: &[u8],
    ) -> Result<(), MetadataError> {
        let Some(size) = self.size else {
            return Err(MetadataError::Unrequested(piece));
        };
        if total_size != size as u64 {
            return Err(MetadataError::SizeMismatch {
                got: total_size,
                expected: size as u64,
            });
        }
        let i = piece as usize;
        match self.slots.get(i) {
            Some(Slot::Requested(p, _)) if *p == peer => {}
            _ => return Err(MetadataError::Unrequested(piece)),
        }
        let start = i * PIECE;
        let expected = (size - start).min(PIECE);
        if data.len() != expected {
            return Err(MetadataError::BadPieceLength {
                piece,
                got: data.len(),
                expected,
            });
        }
        self.buf[start..start + expected].copy_from_slice(data);
        self.slots[i] = Slot::Have(peer);
        if self.slots.iter().all(|s| matches!(s, Slot::Have(_))) {
            if InfoHash(Sha1::digest(&self.buf).into()) == self.info_hash {
                self.done = Some(Bytes::from(std::mem::take(&mut self.buf)));
            } else {
                for s in &self.slots {
                    if let Slot::Have(p) = s {
                        if !self.liars.contains(p) {
                            self.liars.push(*p);
                        }
                    }
                }
                self.size = None;
                self.buf = Vec::new();
                self.slots = Vec::new();
            }
        }
        Ok(())
    }

    /// A `reject`, or the peer left: its requested pieces are free again.
    pub fn release(&mut self, peer: PeerKey, piece: Option<u32>) {
        for (i, s) in self.slots.iter_mut().enumerate() {
            if let Slot::Requested(p, _) = s {
                if *p == peer && piece.is_none_or(|x| x as usize == i) {
                    *s = Slot::Missing;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(len: usize) -> (Vec<u8>, MetadataFetch) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let hash = InfoHash(Sha1::digest(&data).into());
        (data, MetadataFetch::new(hash))
    }

    #[test]
    fn fetches_from_two_peers() {
        let (data, mut f) = setup(40_000);
        let now = Instant::now();
        f.handle_peer(true, Some(40_000)).unwrap();
        let a = f.next_request(1, now).unwrap();
        let b = f.next_request(2, now).unwrap();
        let c = f.next_request(1, now).unwrap();
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(f.next_request(2, now), None);
        for (peer, p) in [(1, 0usize), (2, 1), (1, 2)] {
            let end = ((p + 1) * PIECE).min(data.len());
            f.handle_data(peer, p as u32, 40_000, &data[p * PIECE..end])
                .unwrap();
        }
        assert_eq!(f.result().map(|b| b.to_vec()), Some(data));
    }

    #[test]
    fn refuses_bad_sizes_and_unrequested_data() {
        let (data, mut f) = setup(100);
        assert_eq!(
            f.handle_peer(false, Some(100)),
            Err(MetadataError::NoExtension)
        );
        assert_eq!(f.handle_peer(true, Some(0)), Err(MetadataError::BadSize(0)));
        assert_eq!(
            f.handle_peer(true, Some(1 << 40)),
            Err(MetadataError::BadSize(1 << 40))
        );
        f.handle_peer(true, Some(100)).unwrap();
        assert!(matches!(
            f.handle_peer(true, Some(101)),
            Err(MetadataError::SizeMismatch { .. })
        ));
        assert_eq!(
            f.handle_data(1, 0, 100, &data),
            Err(MetadataError::Unrequested(0))
        );
        let now = Instant::now();
        assert_eq!(f.next_request(1, now), Some(0));
        assert_eq!(
            f.handle_data(2, 0, 100, &data),
            Err(MetadataError::Unrequested(0))
        );
        assert!(matches!(
            f.handle_data(1, 0, 100, &data[..50]),
            Err(MetadataError::BadPieceLength { .. })
        ));
        assert!(matches!(
            f.handle_data(1, 0, 99, &data),
            Err(MetadataError::SizeMismatch { .. })
        ));
        assert_eq!(
            f.handle_data(1, 7, 100, &data),
            Err(MetadataError::Unrequested(7))
        );
        f.handle_data(1, 0, 100, &data).unwrap();
        assert!(f.result().is_some());
    }

    #[test]
    fn a_wrong_hash_starts_over_and_names_the_liar() {
        let (data, mut f) = setup(100);
        let now = Instant::now();
        f.handle_peer(true, Some(100)).unwrap();
        f.next_request(9, now);
        f.handle_data(9, 0, 100, &[0u8; 100]).unwrap();
        assert!(f.result().is_none());
        assert_eq!(f.take_liars(), vec![9]);
        // Starts over with the next peer's size.
        f.handle_peer(true, Some(100)).unwrap();
        assert_eq!(f.next_request(1, now), Some(0));
        f.handle_data(1, 0, 100, &data).unwrap();
        assert!(f.result().is_some());
    }

    #[test]
    fn timeouts_and_rejects_free_pieces() {
        let (_, mut f) = setup(100);
        let now = Instant::now();
        f.handle_peer(true, Some(100)).unwrap();
        assert_eq!(f.next_request(1, now), Some(0));
        assert_eq!(f.next_request(2, now), None);
        assert_eq!(f.next_request(2, now + REQUEST_TIMEOUT), Some(0));
        f.release(2, Some(0));
        assert_eq!(f.next_request(3, now + REQUEST_TIMEOUT), Some(0));
    }
}
