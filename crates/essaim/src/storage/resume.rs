//! Resume data: which pieces were verified, so a restart need not rehash.
//!
//! Saved as bencode at `root/.essaim/<infohash hex>.resume`:
//!
//! ```text
//! { "version": 1, "info-hash": <20 bytes>, "pieces": <count>,
//!   "have": <bitfield, BEP 3 wire layout>,
//!   "verify": <bitfield> (optional),
//!   "files": [ { "size": n, "mtime": s, "mtime-ns": ns } | {} (absent), ... ] }
//! ```
//!
//! with one `files` entry per non-padding file, in torrent order, stamped at
//! save time. The data is trusted only when every file still has the same
//! size and mtime: pieces written after the last save change their files'
//! mtimes, so after a crash the resume data is stale and the engine rechecks
//! — always correct, at the cost of one hash pass.
//!
//! `have` holds pieces whose bytes were fdatasynced before the file was
//! written; `verify` holds pieces verified and written but maybe still only
//! in the page cache (a quick save at exit does not wait for the disk).
//! Loading trusts `have` and hands `verify` back to be hashed again, so a
//! power cut that lost those bytes costs a re-download, never a corrupt
//! piece counted as good. The resume file itself is always written to a
//! temporary file, fsynced and renamed over the old one, so a crash leaves
//! either the old or the new version.
//!
//! Loading is defensive: the file is read only up to [`MAX_RESUME_SIZE`],
//! any malformed or inconsistent content yields `None`, never a panic.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use essaim_core::bencode::{self, Value};
use essaim_core::{Bitfield, InfoHash, OwnedValue};

use super::files::{ensure_dir, STATE_DIR};
use super::{io_error, Storage, StorageError};

/// Largest resume file read (a bitfield for 2^32 pieces is 512 MiB, but no
/// real torrent comes close; 64 MiB covers hundreds of millions of pieces).
pub const MAX_RESUME_SIZE: u64 = 64 * 1024 * 1024;

/// Size and modification time of a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
}

impl FileStamp {
    /// The stamp of the file at `path`; `None` when it is absent or not a
    /// regular file (a link is never one of ours).
    pub fn of(path: &Path) -> io::Result<Option<FileStamp>> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_file() => Ok(Some(FileStamp {
                size: m.len(),
                mtime_secs: m.mtime(),
                mtime_nanos: u32::try_from(m.mtime_nsec()).unwrap_or(0),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The content of a resume file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub info_hash: InfoHash,
    /// Pieces verified and synced to the disk at save time.
    pub have: Bitfield,
    /// Pieces verified and written, not known to be on the disk: hash
    /// them again before trusting them.
    pub verify: Bitfield,
    /// One stamp per non-padding file, `None` for a file absent at save time.
    pub files: Vec<Option<FileStamp>>,
}

impl Resume {
    pub fn encode(&self) -> Vec<u8> {
        let files: Vec<OwnedValue> = self
            .files
            .iter()
            .map(|s| match s {
                None => OwnedValue::dict(),
                Some(s) => OwnedValue::dict()
                    .with("size", i64::try_from(s.size).unwrap_or(i64::MAX))
                    .with("mtime", s.mtime_secs)
                    .with("mtime-ns", i64::from(s.mtime_nanos)),
            })
            .collect();
        OwnedValue::dict()
            .with("version", 1)
            .with("info-hash", &self.info_hash.0[..])
            .with("pieces", i64::from(self.have.len()))
            .with("have", self.have.as_bytes())
            .with("verify", self.verify.as_bytes())
            .with("files", files)
            .encode()
    }

    /// Parses a resume file; `None` when anything is malformed.
    pub fn decode(bytes: &[u8]) -> Option<Resume> {
        let root = bencode::decode(bytes).ok()?;
        if root.get(b"version")?.as_int()? != 1 {
            return None;
        }
        let info_hash = InfoHash(root.get(b"info-hash")?.as_bytes()?.try_into().ok()?);
        let pieces = u32::try_from(root.get(b"pieces")?.as_int()?).ok()?;
        let have = Bitfield::from_bytes(root.get(b"have")?.as_bytes()?, pieces).ok()?;
        let verify = match root.get(b"verify") {
            Some(v) => Bitfield::from_bytes(v.as_bytes()?, pieces).ok()?,
            None => Bitfield::new(pieces),
        };
        let files = root
            .get(b"files")?
            .as_list()?
            .iter()
            .map(decode_stamp)
            .collect::<Option<Vec<_>>>()?;
        Some(Resume {
            info_hash,
            have,
            verify,
            files,
        })
    }
}

/// `Some(None)` for an absent file, `None` when malformed.
fn decode_stamp(v: &Value<'_>) -> Option<Option<FileStamp>> {
    if v.as_dict()?.is_empty() {
        return Some(None);
    }
    let size = u64::try_from(v.get(b"size")?.as_int()?).ok()?;
    let mtime_secs = v.get(b"mtime")?.as_int()?;
    let mtime_nanos = u32::try_from(v.get(b"mtime-ns")?.as_int()?)
        .ok()
        .filter(|&n| n < 1_000_000_000)?;
    Some(Some(FileStamp {
        size,
        mtime_secs,
        mtime_nanos,
    }))
}

impl Storage {
    /// Where the resume data of `info_hash` lives.
    pub fn resume_path(&self, info_hash: &InfoHash) -> PathBuf {
        self.resume_dir
            .join(format!("{}.resume", info_hash.to_hex()))
    }

    /// Stamps of the non-padding files as they are now.
    fn stamps(&self) -> Result<Vec<Option<FileStamp>>, StorageError> {
        self.files
            .iter()
            .filter_map(|f| f.path.as_ref())
            .map(|p| FileStamp::of(p).map_err(|e| io_error(p, e)))
            .collect()
    }

    /// Whether every file holding a piece of `have` is on disk at its full
    /// length (`stamps` as from [`Storage::stamps`]).
    fn files_hold(&self, have: &Bitfield, stamps: &[Option<FileStamp>]) -> bool {
        let mut stamps = stamps.iter();
        for (i, f) in self.files.iter().enumerate() {
            if f.path.is_none() {
                continue;
            }
            let stamp = stamps.next().copied().flatten();
            if stamp.is_some_and(|s| s.size >= f.length) {
                continue;
            }
            let pieces = self.layout.file_pieces(i).unwrap_or(0..0);
            if pieces.into_iter().any(|p| have.get(p)) {
                return false;
            }
        }
        true
    }

    /// Saves `have` atomically: with `durable`, syncs the data files first
    /// (every piece of `have` is then on the disk); without, pieces written
    /// since the last sync are saved as to be verified. Then writes a
    /// temporary file, fsyncs it, renames it over the old one and fsyncs
    /// the folder.
    pub fn save_resume(
        &self,
        info_hash: &InfoHash,
        have: &Bitfield,
        durable: bool,
    ) -> Result<(), StorageError> {
        if have.len() != self.layout.num_pieces() {
            return Err(StorageError::BadInfo(
                "bitfield length differs from the torrent",
            ));
        }
        if durable {
            self.sync()?;
        }
        let unsynced = self.unsynced_pieces();
        let mut trusted = have.clone();
        let mut verify = Bitfield::new(have.len());
        for p in unsynced.iter_set() {
            if have.get(p) {
                trusted.clear(p);
                verify.set(p);
            }
        }
        let resume = Resume {
            info_hash: *info_hash,
            have: trusted,
            verify,
            files: self.stamps()?,
        };
        if self.resume_dir == self.root.join(STATE_DIR) {
            ensure_dir(&self.resume_dir)?;
        }
        let path = self.resume_path(info_hash);
        crate::store::write_atomic(&path, &resume.encode()).map_err(|e| io_error(&path, e))
    }

    /// The saved pieces, if the resume file exists, parses, is for this
    /// torrent and every file still has the size and mtime it had at save
    /// time: those on the disk, and those to hash again before trusting
    /// them. `None` otherwise: the engine should recheck.
    pub fn load_resume(&self, info_hash: &InfoHash) -> Option<(Bitfield, Bitfield)> {
        let path = self.resume_path(info_hash);
        let bytes = match crate::store::read_capped(&path, MAX_RESUME_SIZE) {
            Ok(b) => b,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(path = %path.display(), error = %e, "resume data unreadable");
                }
                return None;
            }
        };
        let Some(resume) = Resume::decode(&bytes) else {
            tracing::debug!(path = %path.display(), "resume data malformed");
            return None;
        };
        if resume.info_hash != *info_hash
            || resume.have.len() != self.layout.num_pieces()
            || resume.verify.len() != self.layout.num_pieces()
        {
            tracing::debug!(path = %path.display(), "resume data is for another torrent");
            return None;
        }
        let now = self.stamps().ok()?;
        if now != resume.files {
            tracing::debug!(path = %path.display(), "files changed since resume data was saved");
            return None;
        }
        if !self.files_hold(&resume.have, &now) || !self.files_hold(&resume.verify, &now) {
            tracing::debug!(path = %path.display(), "resume data claims pieces of missing files");
            return None;
        }
        Some((resume.have, resume.verify))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Resume {
        let mut have = Bitfield::new(11);
        have.set(0);
        have.set(10);
        let mut verify = Bitfield::new(11);
        verify.set(4);
        Resume {
            info_hash: InfoHash([7; 20]),
            have,
            verify,
            files: vec![
                Some(FileStamp {
                    size: 5,
                    mtime_secs: -3,
                    mtime_nanos: 999_999_999,
                }),
                None,
            ],
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        assert_eq!(Resume::decode(&r.encode()), Some(r.clone()));
        // Without `verify` (older files): nothing to verify.
        let old = OwnedValue::dict()
            .with("version", 1)
            .with("info-hash", &r.info_hash.0[..])
            .with("pieces", 11)
            .with("have", r.have.as_bytes())
            .with("files", Vec::<OwnedValue>::new())
            .encode();
        let d = Resume::decode(&old).unwrap();
        assert!(d.verify.none_set() && d.have == r.have);
        // A `verify` of the wrong length: refused.
        let bad = OwnedValue::dict()
            .with("version", 1)
            .with("info-hash", &r.info_hash.0[..])
            .with("pieces", 11)
            .with("have", r.have.as_bytes())
            .with("verify", &b"\x00\x00\x00"[..])
            .with("files", Vec::<OwnedValue>::new())
            .encode();
        assert_eq!(Resume::decode(&bad), None);
    }

    /// The bencode policy (see `essaim_core::bencode`) holds for resume
    /// files: hostile values anywhere are refused, keys out of order are
    /// accepted, a repeated key and trailing bytes are refused. Refused
    /// means `None`: the engine then rechecks, which is always correct.
    #[test]
    fn bencode_policy_at_the_resume_entry_point() {
        let good = sample().encode();
        assert!(Resume::decode(&good).is_some());
        let cat = |parts: &[&[u8]]| parts.concat();
        let replace = |from: &[u8], to: &[u8]| {
            let at = good.windows(from.len()).position(|w| w == from).unwrap();
            cat(&[&good[..at], to, &good[at + from.len()..]])
        };
        let body = &good[1..good.len() - 1]; // the entries, without d...e
        let mut deep = "l".repeat(100_000);
        deep.push_str(&"e".repeat(100_000));
        for value in [
            deep.as_str(),
            "9223372036854775808:x",
            "18446744073709551617:x",
            "i03e",
            "i-0e",
        ] {
            let extra = cat(&[b"d", body, b"1:z", value.as_bytes(), b"e"]);
            assert!(bencode::decode(&extra).is_err());
            assert_eq!(Resume::decode(&extra), None, "{:.40}", value);
            // In place of a value that is read.
            let swapped = replace(b"7:versioni1e", &cat(&[b"7:version", value.as_bytes()]));
            assert_eq!(Resume::decode(&swapped), None, "{:.40}", value);
        }
        // A repeated key: a second `have` must not be able to win.
        let dup = cat(&[b"d", body, b"4:have2:\xff\xe0e"]);
        assert_eq!(Resume::decode(&dup), None);
        let dup = replace(b"7:versioni1e", b"7:versioni1e7:versioni1e");
        assert_eq!(Resume::decode(&dup), None);
        // Out of order: accepted.
        let moved = cat(&[b"d7:versioni1e", &replace(b"7:versioni1e", b"")[1..]]);
        assert_ne!(moved, good);
        assert_eq!(Resume::decode(&moved), Some(sample()));
        // Trailing bytes: refused (a torn or appended file is not trusted).
        assert_eq!(Resume::decode(&cat(&[&good, b"\n"])), None);
        assert_eq!(Resume::decode(&cat(&[&good, &good])), None);
    }

    #[test]
    fn refuses_malformed() {
        let good = sample().encode();
        // Every truncation is malformed.
        for cut in 0..good.len() {
            assert_eq!(Resume::decode(&good[..cut]), None, "cut at {cut}");
        }
        let text = String::from_utf8_lossy(&good).into_owned();
        for (from, to) in [
            ("6:piecesi11e", "6:piecesi12e"), // bitfield length wrong
            ("6:piecesi11e", "6:piecesi-1e"), // negative count
            ("7:versioni1e", "7:versioni2e"), // unknown version
            ("8:mtime-nsi999999999e", "8:mtime-nsi1000000000e"),
            ("4:sizei5e", "4:sizei-5e"),
        ] {
            assert!(text.contains(from), "{from}");
            let bad = text.replacen(from, to, 1);
            assert_eq!(Resume::decode(bad.as_bytes()), None, "{to}");
        }
        // Spare bits set in the bitfield.
        let mut r = sample();
        r.have = Bitfield::from_bytes(&[0x80, 0x20], 11).unwrap();
        let mut bytes = r.encode();
        let key = b"4:have2:";
        let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        assert_eq!(&bytes[at..at + 2], &[0x80, 0x20]);
        assert!(Resume::decode(&bytes).is_some());
        bytes[at + 1] = 0x21; // piece 11 of 11: a spare bit
        assert_eq!(Resume::decode(&bytes), None);
    }
}
