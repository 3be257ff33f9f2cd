//! Piece, block and file geometry of a torrent (BEP 3: the content is the
//! concatenation of the files in order, cut into pieces of `piece length`
//! bytes, the last one shorter; pieces are requested in blocks).
//!
//! All arithmetic is checked when building a [`Layout`]; afterwards every
//! method takes indices and answers `None` when they are out of range, so a
//! value from a peer can be passed straight in.

/// Block size every client requests (BEP 3 recommends 2^14; most clients
/// refuse larger requests).
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// Largest piece length accepted (larger pieces would need huge buffers).
pub const MAX_PIECE_LENGTH: u32 = 64 * 1024 * 1024;

/// A file's place in the torrent's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileExtent {
    /// Offset of the file's first byte in the torrent.
    pub offset: u64,
    pub length: u64,
}

/// A contiguous range of one file that a piece range maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSlice {
    pub file: usize,
    /// Offset within that file.
    pub offset: u64,
    pub length: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("piece length {0} is out of range (1 to {MAX_PIECE_LENGTH})")]
    PieceLength(u64),
    #[error("total size overflows 64 bits")]
    Overflow,
    #[error("torrent has {0} pieces, more than 2^32 - 1")]
    TooManyPieces(u64),
}

/// Geometry of a torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    piece_length: u32,
    total_length: u64,
    num_pieces: u32,
    files: Vec<FileExtent>,
}

impl Layout {
    /// Builds the layout from the piece length and the file lengths in order.
    pub fn new(piece_length: u64, file_lengths: &[u64]) -> Result<Self, LayoutError> {
        let piece_length = u32::try_from(piece_length)
            .ok()
            .filter(|&p| p > 0 && p <= MAX_PIECE_LENGTH)
            .ok_or(LayoutError::PieceLength(piece_length))?;
        let mut files = Vec::with_capacity(file_lengths.len());
        let mut offset: u64 = 0;
        for &length in file_lengths {
            files.push(FileExtent { offset, length });
            offset = offset.checked_add(length).ok_or(LayoutError::Overflow)?;
        }
        let pieces = offset.div_ceil(u64::from(piece_length));
        let num_pieces = u32::try_from(pieces).map_err(|_| LayoutError::TooManyPieces(pieces))?;
        Ok(Layout {
            piece_length,
            total_length: offset,
            num_pieces,
            files,
        })
    }

    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }
    pub fn total_length(&self) -> u64 {
        self.total_length
    }
    pub fn num_pieces(&self) -> u32 {
        self.num_pieces
    }
    pub fn files(&self) -> &[FileExtent] {
        &self.files
    }

    /// Offset of piece `piece` in the torrent.
    pub fn piece_offset(&self, piece: u32) -> Option<u64> {
        (piece < self.num_pieces).then(|| u64::from(piece) * u64::from(self.piece_length))
    }

    /// Length of piece `piece` (the last may be shorter).
    pub fn piece_size(&self, piece: u32) -> Option<u32> {
        let offset = self.piece_offset(piece)?;
        let left = self.total_length - offset;
        Some(left.min(u64::from(self.piece_length)) as u32)
    }

    /// Number of blocks in piece `piece`.
    pub fn blocks_in_piece(&self, piece: u32) -> Option<u32> {
        Some(self.piece_size(piece)?.div_ceil(BLOCK_SIZE))
    }

    /// `(begin, length)` of block `block` of piece `piece`.
    pub fn block(&self, piece: u32, block: u32) -> Option<(u32, u32)> {
        let size = self.piece_size(piece)?;
        let begin = block.checked_mul(BLOCK_SIZE).filter(|&b| b < size)?;
        Some((begin, (size - begin).min(BLOCK_SIZE)))
    }

    /// Whether `(piece, begin, length)` is a block as we cut them: aligned,
    /// inside the piece, and of the exact length of that block.
    pub fn is_our_block(&self, piece: u32, begin: u32, length: u32) -> bool {
        begin.is_multiple_of(BLOCK_SIZE)
            && self.block(piece, begin / BLOCK_SIZE) == Some((begin, length))
    }

    /// Whether `(piece, begin, length)` is a valid range to serve: non-empty,
    /// at most `max_len` bytes, inside the piece.
    pub fn is_valid_request(&self, piece: u32, begin: u32, length: u32, max_len: u32) -> bool {
        match self.piece_size(piece) {
            Some(size) => {
                length > 0
                    && length <= max_len
                    && u64::from(begin) + u64::from(length) <= u64::from(size)
            }
            None => false,
        }
    }

    /// The file ranges covering `length` bytes from torrent offset `offset`.
    /// Zero-length files are skipped. Ranges past the end are cut off.
    pub fn slices(&self, offset: u64, length: u64) -> Vec<FileSlice> {
        let end = offset.saturating_add(length).min(self.total_length);
        let mut out = Vec::new();
        // First file whose end is past `offset`.
        let first = self
            .files
            .partition_point(|f| f.offset + f.length <= offset);
        for (i, f) in self.files.iter().enumerate().skip(first) {
            if f.offset >= end {
                break;
            }
            if f.length == 0 {
                continue;
            }
            let start = offset.max(f.offset);
            let stop = end.min(f.offset + f.length);
            if stop > start {
                out.push(FileSlice {
                    file: i,
                    offset: start - f.offset,
                    length: stop - start,
                });
            }
        }
        out
    }

    /// Pieces that hold at least one byte of file `file`, as a range.
    pub fn file_pieces(&self, file: usize) -> Option<std::ops::Range<u32>> {
        let f = self.files.get(file)?;
        if f.length == 0 {
            return Some(0..0);
        }
        let pl = u64::from(self.piece_length);
        let first = (f.offset / pl) as u32;
        let last = ((f.offset + f.length - 1) / pl) as u32;
        Some(first..last + 1)
    }
}

/// The piece length `essaim create` picks for a total size: the power of two
/// that gives about 1,000–2,000 pieces, between 16 KiB and 16 MiB (as
/// libtorrent, Transmission and mktorrent aim for).
pub fn auto_piece_length(total: u64) -> u32 {
    let target = total / 1500;
    let mut p: u32 = 16 * 1024;
    while u64::from(p) < target && p < 16 * 1024 * 1024 {
        p *= 2;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn odd_last_piece() {
        let l = Layout::new(32768, &[40000, 0, 10000]).unwrap();
        assert_eq!(l.total_length(), 50000);
        assert_eq!(l.num_pieces(), 2);
        assert_eq!(l.piece_size(0), Some(32768));
        assert_eq!(l.piece_size(1), Some(50000 - 32768));
        assert_eq!(l.piece_size(2), None);
        assert_eq!(l.blocks_in_piece(1), Some(2));
        assert_eq!(l.block(1, 1), Some((16384, 50000 - 32768 - 16384)));
        assert_eq!(l.block(1, 2), None);
        assert!(l.is_our_block(1, 16384, 848));
        assert!(!l.is_our_block(1, 16384, 16384));
    }

    #[test]
    fn slices_span_files_and_skip_empty() {
        let l = Layout::new(32768, &[40000, 0, 10000]).unwrap();
        let s = l.slices(32768, 17232);
        assert_eq!(
            s,
            vec![
                FileSlice {
                    file: 0,
                    offset: 32768,
                    length: 7232
                },
                FileSlice {
                    file: 2,
                    offset: 0,
                    length: 10000
                },
            ]
        );
        assert_eq!(l.file_pieces(2), Some(1..2));
        assert_eq!(l.file_pieces(1), Some(0..0));
    }

    #[test]
    fn rejects_bad_geometry() {
        assert_eq!(Layout::new(0, &[1]), Err(LayoutError::PieceLength(0)));
        assert_eq!(
            Layout::new(16384, &[u64::MAX, 1]),
            Err(LayoutError::Overflow)
        );
        assert!(matches!(
            Layout::new(1, &[u64::MAX]),
            Err(LayoutError::TooManyPieces(_))
        ));
    }

    #[test]
    fn auto_piece_sizes() {
        assert_eq!(auto_piece_length(0), 16384);
        assert_eq!(auto_piece_length(1 << 30), 1 << 20);
        assert_eq!(auto_piece_length(1 << 50), 16 << 20);
    }

    proptest! {
        #[test]
        fn slices_cover_exactly(
            piece_len in 1u64..100_000,
            files in proptest::collection::vec(0u64..200_000, 1..8),
            a in any::<u64>(), b in any::<u64>(),
        ) {
            let l = Layout::new(piece_len, &files).unwrap();
            let total = l.total_length();
            prop_assume!(total > 0);
            let off = a % total;
            let len = b % (total - off + 1);
            let s = l.slices(off, len);
            prop_assert_eq!(s.iter().map(|x| x.length).sum::<u64>(), len);
            let mut pos = off;
            for x in &s {
                prop_assert_eq!(l.files()[x.file].offset + x.offset, pos);
                prop_assert!(x.offset + x.length <= l.files()[x.file].length);
                pos += x.length;
            }
            let sizes: u64 = (0..l.num_pieces()).map(|p| u64::from(l.piece_size(p).unwrap())).sum();
            prop_assert_eq!(sizes, total);
        }
    }
}
