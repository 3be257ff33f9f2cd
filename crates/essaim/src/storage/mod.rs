//! The disk side of a torrent: its files under a download folder, piece
//! reads and writes by positional I/O, hashing, and resume data.
//!
//! Layout on disk is the one Transmission and libtorrent use: a single-file
//! torrent is `root/NAME`, a multi-file torrent is `root/NAME/path/...`.
//! BEP 47 padding files never reach the disk: they read as zeros and writes
//! to them are dropped.
//!
//! The API is synchronous and [`Storage`] is `Send + Sync`: the engine shares
//! it in an `Arc` and calls it from blocking threads. Invariants:
//! - every path is under `root` and no symbolic link is followed in place of
//!   one of our files or folders (see [`files`]);
//! - files are never truncated; at most [`MAX_OPEN_FILES`] stay open;
//! - data that is missing (file deleted or shorter than the torrent says)
//!   is "not present", not an error, for [`Storage::verify_piece`] and
//!   [`Storage::recheck`]; [`Storage::read`] reports it as
//!   [`StorageError::NotPresent`].

mod files;
mod manage;
mod resume;

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use essaim_core::{Bitfield, Info, Layout};
use sha1::{Digest, Sha1};

pub use manage::missing_data;
pub use resume::{FileStamp, Resume};

/// Most data files kept open at once by one [`Storage`].
pub const MAX_OPEN_FILES: usize = 128;

/// Size of the positional reads done when hashing many pieces (recheck,
/// and `create`). 128 KiB: each read is hashed while it is still in the
/// core's L2 cache (1 MiB per core here). Two threads reading a 4 GiB file
/// from the page cache and hashing it ran at 3.15 GB/s with 128 KiB reads,
/// 2.9–3.0 GB/s with 1 MiB reads, and 3.85 GB/s hashing without reading.
pub(crate) const READ_CHUNK: usize = 128 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no space left on device writing {}", path.display())]
    NoSpace { path: PathBuf },
    #[error("refusing unsafe path {}: {why}", path.display())]
    UnsafePath { path: PathBuf, why: &'static str },
    #[error("cannot use {}: {why}", path.display())]
    Conflict { path: PathBuf, why: &'static str },
    #[error("piece {piece}, bytes {begin}+{len}: outside the torrent")]
    OutOfRange { piece: u32, begin: u32, len: u32 },
    #[error("piece {piece} is {expected} bytes, got {got}")]
    WrongSize {
        piece: u32,
        expected: u32,
        got: usize,
    },
    #[error("{} is missing or shorter than the torrent says", path.display())]
    NotPresent { path: PathBuf },
    #[error("inconsistent torrent info: {0}")]
    BadInfo(&'static str),
}

/// Maps an I/O error on `path` to a [`StorageError`] that says what happened.
pub(crate) fn io_error(path: &Path, e: io::Error) -> StorageError {
    let path = path.to_path_buf();
    match e.raw_os_error() {
        Some(libc::ENOSPC) => StorageError::NoSpace { path },
        Some(libc::ELOOP) => StorageError::UnsafePath {
            path,
            why: "is a symbolic link",
        },
        _ => StorageError::Io { path, source: e },
    }
}

/// The path components of a file under the download folder: the
/// torrent's name, then (multi-file) the file's own path.
fn components(info: &Info, f: &essaim_core::metainfo::FileInfo) -> Vec<String> {
    if info.multi_file {
        std::iter::once(info.name.clone())
            .chain(f.path.iter().cloned())
            .collect()
    } else {
        vec![info.name.clone()]
    }
}

/// One file of the torrent.
#[derive(Debug)]
struct DiskFile {
    /// `None` for a padding file.
    path: Option<PathBuf>,
    /// Path components relative to `root`.
    components: Vec<String>,
    length: u64,
}

/// A torrent's files on disk.
#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
    files: Vec<DiskFile>,
    layout: Layout,
    pieces: Vec<[u8; 20]>,
    handles: files::Handles,
    /// Pieces written since the last successful [`Storage::sync`]: in the
    /// page cache, maybe not yet on the disk.
    unsynced: std::sync::Mutex<Bitfield>,
    /// Held while a piece is written. Buffered writes to one file take its
    /// inode lock anyway; two threads writing at once made the kernel spin
    /// on that lock (up to 7% of a download's CPU in `perf`), where waiting
    /// here sleeps.
    write_lock: std::sync::Mutex<()>,
    /// Where the resume data goes: `root/.essaim` by default, a session's
    /// state folder when it has one.
    resume_dir: PathBuf,
}

impl Storage {
    /// Lays the torrent out under `root` (created if absent), as other
    /// clients do: single-file → `root/NAME`, multi-file →
    /// `root/NAME/path/components`. Creates folders and files (zero-length
    /// ones too), never truncates, extends shorter files to their length
    /// (sparse). Padding files are not created. Refuses, naming the path,
    /// any path that would leave `root` and any symbolic link found in
    /// place of one of our files or folders.
    pub fn open(root: &Path, info: &Info) -> Result<Storage, StorageError> {
        Storage::open_with(root, info, None)
    }

    /// [`Storage::open`], keeping resume data in `resume_dir` instead of
    /// `root/.essaim`.
    pub fn open_with(
        root: &Path,
        info: &Info,
        resume_dir: Option<PathBuf>,
    ) -> Result<Storage, StorageError> {
        if info.files.len() != info.layout.files().len() {
            return Err(StorageError::BadInfo("file list and layout differ"));
        }
        if info.pieces.len() != info.layout.num_pieces() as usize {
            return Err(StorageError::BadInfo("piece hashes and layout differ"));
        }
        if info.name == files::STATE_DIR {
            return Err(StorageError::UnsafePath {
                path: root.join(&info.name),
                why: "name reserved for essaim's resume data",
            });
        }
        std::fs::create_dir_all(root).map_err(|e| io_error(root, e))?;
        let mut known_dirs = HashSet::new();
        let mut out = Vec::with_capacity(info.files.len());
        for (f, extent) in info.files.iter().zip(info.layout.files()) {
            if info.multi_file && f.path.is_empty() {
                // It would name the torrent's folder itself.
                return Err(StorageError::UnsafePath {
                    path: root.join(&info.name),
                    why: "empty path",
                });
            }
            let components = components(info, f);
            let path = if f.pad {
                None
            } else {
                Some(files::prepare_file(
                    root,
                    &components,
                    extent.length,
                    &mut known_dirs,
                )?)
            };
            out.push(DiskFile {
                path,
                components,
                length: extent.length,
            });
        }
        Ok(Storage {
            root: root.to_path_buf(),
            files: out,
            layout: info.layout.clone(),
            pieces: info.pieces.clone(),
            handles: files::Handles::new(MAX_OPEN_FILES),
            unsynced: std::sync::Mutex::new(Bitfield::new(info.layout.num_pieces())),
            write_lock: std::sync::Mutex::new(()),
            resume_dir: resume_dir.unwrap_or_else(|| root.join(files::STATE_DIR)),
        })
    }

    /// The torrent's geometry.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Writes a whole piece (`data.len()` must be the piece's size).
    pub fn write_piece(&self, piece: u32, data: &[u8]) -> Result<(), StorageError> {
        let size = self
            .layout
            .piece_size(piece)
            .ok_or(StorageError::OutOfRange {
                piece,
                begin: 0,
                len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            })?;
        if data.len() != size as usize {
            return Err(StorageError::WrongSize {
                piece,
                expected: size,
                got: data.len(),
            });
        }
        let offset = self.piece_start(piece)?;
        let _writing = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut pos = 0usize;
        for s in self.layout.slices(offset, u64::from(size)) {
            let len = s.length as usize;
            let chunk = data
                .get(pos..pos + len)
                .ok_or(StorageError::BadInfo("layout slices exceed the piece"))?;
            pos += len;
            let Some(f) = self.files.get(s.file) else {
                return Err(StorageError::BadInfo("layout names an unknown file"));
            };
            let Some(path) = &f.path else { continue }; // padding: dropped
            let file = match self.handles.get(s.file, path, true) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Deleted behind our back: lay it out again, then retry.
                    let mut known = HashSet::new();
                    files::prepare_file(&self.root, &f.components, f.length, &mut known)?;
                    self.handles.get(s.file, path, true)
                }
                other => other,
            }
            .map_err(|e| io_error(path, e))?;
            if let Err(e) = file.write_all_at(chunk, s.offset) {
                self.handles.forget(s.file);
                return Err(io_error(path, e));
            }
            self.handles.mark_dirty(s.file);
        }
        self.unsynced().set(piece);
        Ok(())
    }

    fn unsynced(&self) -> std::sync::MutexGuard<'_, Bitfield> {
        self.unsynced.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `pieces` as not known to be on the disk (pieces re-verified
    /// from resume data's `verify` set: maybe only in the page cache).
    pub fn mark_unsynced(&self, pieces: &Bitfield) {
        let mut u = self.unsynced();
        for p in pieces.iter_set() {
            u.set(p);
        }
    }

    /// Pieces written since the last successful sync.
    pub fn unsynced_pieces(&self) -> Bitfield {
        self.unsynced().clone()
    }

    /// Checks the SHA-1 of each piece in `which` (one thread; for the few
    /// pieces resume data asks to verify); returns those that pass.
    pub fn verify_pieces(&self, which: &Bitfield) -> Result<Bitfield, StorageError> {
        let mut good = Bitfield::new(self.layout.num_pieces());
        let mut buf = Vec::new();
        for p in which.iter_set() {
            let Some(size) = self.layout.piece_size(p) else {
                continue;
            };
            if self.hash_one(p, size, &mut buf)? {
                good.set(p);
            }
        }
        Ok(good)
    }

    /// Reads `len` bytes at `begin` within `piece` (for serving peers).
    pub fn read(&self, piece: u32, begin: u32, len: u32) -> Result<bytes::Bytes, StorageError> {
        if !self.layout.is_valid_request(piece, begin, len, u32::MAX) {
            return Err(StorageError::OutOfRange { piece, begin, len });
        }
        let offset = self.piece_start(piece)? + u64::from(begin);
        let mut buf = bytes::BytesMut::zeroed(len as usize);
        self.read_at(offset, &mut buf)?;
        Ok(buf.freeze())
    }

    /// Reads several blocks (for serving a peer's queue), one result per
    /// request: requests that follow each other on disk are read with one
    /// positional read and split without copying.
    pub fn read_many(
        &self,
        reqs: &[essaim_wire::peer::BlockRequest],
    ) -> Vec<Result<bytes::Bytes, StorageError>> {
        let mut out = Vec::with_capacity(reqs.len());
        let mut i = 0;
        while i < reqs.len() {
            let r = reqs[i];
            if !self
                .layout
                .is_valid_request(r.piece, r.begin, r.length, u32::MAX)
            {
                out.push(Err(StorageError::OutOfRange {
                    piece: r.piece,
                    begin: r.begin,
                    len: r.length,
                }));
                i += 1;
                continue;
            }
            let start = match self.piece_start(r.piece) {
                Ok(o) => o + u64::from(r.begin),
                Err(e) => {
                    out.push(Err(e));
                    i += 1;
                    continue;
                }
            };
            // The run of valid requests that continue this one on disk.
            let mut end = start + u64::from(r.length);
            let mut j = i + 1;
            while let Some(n) = reqs.get(j) {
                let next = self
                    .layout
                    .is_valid_request(n.piece, n.begin, n.length, u32::MAX)
                    .then(|| self.piece_start(n.piece).ok())
                    .flatten()
                    .map(|o| o + u64::from(n.begin));
                if next != Some(end) {
                    break;
                }
                end += u64::from(n.length);
                j += 1;
            }
            let mut buf = bytes::BytesMut::zeroed((end - start) as usize);
            match self.read_at(start, &mut buf) {
                Ok(()) => {
                    for n in &reqs[i..j] {
                        out.push(Ok(buf.split_to(n.length as usize).freeze()));
                    }
                }
                Err(e) => {
                    // One failure for the run; each request gets it.
                    let msg = e.to_string();
                    out.push(Err(e));
                    for _ in i + 1..j {
                        out.push(Err(StorageError::Io {
                            path: self.root.clone(),
                            source: io::Error::other(msg.clone()),
                        }));
                    }
                }
            }
            i = j;
        }
        out
    }

    /// Reads the piece and checks its SHA-1. Missing data is `Ok(false)`.
    pub fn verify_piece(&self, piece: u32) -> Result<bool, StorageError> {
        let size = self
            .layout
            .piece_size(piece)
            .ok_or(StorageError::OutOfRange {
                piece,
                begin: 0,
                len: 0,
            })?;
        let mut buf = Vec::new();
        self.hash_one(piece, size, &mut buf)
    }

    /// Checks every piece, hashing on all cores; `progress(done)` is called
    /// (from any thread) as pieces finish. Missing or short files make their
    /// pieces absent; other I/O errors stop the check and are returned.
    /// Open handles are dropped first, so the files are looked at by path.
    pub fn recheck(&self, progress: &(dyn Fn(u32) + Sync)) -> Result<Bitfield, StorageError> {
        self.recheck_until(progress, &AtomicBool::new(false))
    }

    /// [`Storage::recheck`] that gives up (with the pieces found so far)
    /// once `cancel` is set.
    pub fn recheck_until(
        &self,
        progress: &(dyn Fn(u32) + Sync),
        cancel: &AtomicBool,
    ) -> Result<Bitfield, StorageError> {
        let n = self.layout.num_pieces();
        let mut have = Bitfield::new(n);
        // Look at the files as they are now: a file deleted or replaced
        // since it was opened must not be read through an old handle.
        self.handles.clear();
        if n == 0 {
            return Ok(have);
        }
        let piece_len = self.layout.piece_length().max(1) as usize;
        // Small pieces are read several at a time, so every read is large.
        let batch = u32::try_from((READ_CHUNK / piece_len).max(1)).unwrap_or(1);
        let threads = std::thread::available_parallelism()
            .map(|t| t.get())
            .unwrap_or(1)
            .min(n.div_ceil(batch) as usize)
            .max(1);
        let next = AtomicU32::new(0);
        let done = AtomicU32::new(0);
        let stop = AtomicBool::new(false);
        let results: Vec<Result<Vec<u32>, StorageError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut good = Vec::new();
                        let mut buf = Vec::new();
                        while !stop.load(Ordering::Relaxed) && !cancel.load(Ordering::Relaxed) {
                            let first = next.fetch_add(batch, Ordering::Relaxed);
                            if first >= n {
                                break;
                            }
                            let end = first.saturating_add(batch).min(n);
                            let r = self.hash_batch(first, end, &mut buf, &mut |p, ok| {
                                if ok {
                                    good.push(p);
                                }
                                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                            });
                            if let Err(e) = r {
                                stop.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                        Ok(good)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or(Err(StorageError::BadInfo("a hashing thread panicked")))
                })
                .collect()
        });
        for r in results {
            for p in r? {
                have.set(p);
            }
        }
        Ok(have)
    }

    /// fdatasyncs every file written since the last sync.
    pub fn sync(&self) -> Result<(), StorageError> {
        // Pieces whose writes finished before the files are taken below:
        // their bytes are in the files synced now.
        let synced = std::mem::replace(
            &mut *self.unsynced(),
            Bitfield::new(self.layout.num_pieces()),
        );
        let res = self.sync_files();
        if res.is_err() {
            let mut u = self.unsynced();
            for p in synced.iter_set() {
                u.set(p);
            }
        }
        res
    }

    fn sync_files(&self) -> Result<(), StorageError> {
        let dirty: Vec<usize> = self.handles.take_dirty().into_iter().collect();
        for (k, &i) in dirty.iter().enumerate() {
            let Some(path) = self.files.get(i).and_then(|f| f.path.as_ref()) else {
                continue;
            };
            match self.handles.get(i, path, false).and_then(|f| f.sync_data()) {
                Ok(()) => {}
                // Deleted behind our back: nothing left to sync (and resume
                // data never vouches for pieces of an absent file).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Keep the files not yet synced for the next attempt.
                    for &j in &dirty[k..] {
                        self.handles.mark_dirty(j);
                    }
                    return Err(io_error(path, e));
                }
            }
        }
        Ok(())
    }

    /// The paths of the files on disk, in torrent order (padding files,
    /// which are not on disk, left out).
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.files.iter().filter_map(|f| f.path.clone()).collect()
    }

    /// The download folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn piece_start(&self, piece: u32) -> Result<u64, StorageError> {
        self.layout
            .piece_offset(piece)
            .ok_or(StorageError::OutOfRange {
                piece,
                begin: 0,
                len: 0,
            })
    }

    /// Fills `buf` from torrent offset `offset`; padding reads as zeros.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let mut pos = 0usize;
        for s in self.layout.slices(offset, buf.len() as u64) {
            let len = s.length as usize;
            let chunk = buf
                .get_mut(pos..pos + len)
                .ok_or(StorageError::BadInfo("layout slices exceed the read"))?;
            pos += len;
            let Some(f) = self.files.get(s.file) else {
                return Err(StorageError::BadInfo("layout names an unknown file"));
            };
            let Some(path) = &f.path else {
                chunk.fill(0);
                continue;
            };
            let not_present = || StorageError::NotPresent { path: path.clone() };
            let file = match self.handles.get(s.file, path, false) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_present()),
                Err(e) => return Err(io_error(path, e)),
            };
            match file.read_exact_at(chunk, s.offset) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(not_present()),
                Err(e) => {
                    self.handles.forget(s.file);
                    return Err(io_error(path, e));
                }
            }
        }
        if pos != buf.len() {
            return Err(StorageError::BadInfo("read past the end of the torrent"));
        }
        Ok(())
    }

    /// Hashes pieces `first..end`, calling `report(piece, ok)` for each.
    /// Several small pieces are read at once; a big piece in chunks.
    fn hash_batch(
        &self,
        first: u32,
        end: u32,
        buf: &mut Vec<u8>,
        report: &mut dyn FnMut(u32, bool),
    ) -> Result<(), StorageError> {
        let start = self.piece_start(first)?;
        let stop = match self.layout.piece_offset(end) {
            Some(o) => o,
            None => self.layout.total_length(),
        };
        let total = (stop - start) as usize;
        // Nothing was ever written there (a fresh or sparse file): absent,
        // without reading and hashing zeros.
        if self.is_hole(start, stop - start) {
            for p in first..end {
                report(p, false);
            }
            return Ok(());
        }
        if end - first > 1 && total <= READ_CHUNK {
            buf.resize(total, 0);
            match self.read_at(start, buf) {
                Ok(()) => {
                    let mut pos = 0usize;
                    for p in first..end {
                        let size = self.layout.piece_size(p).unwrap_or(0) as usize;
                        let data = buf.get(pos..pos + size).unwrap_or(&[]);
                        pos += size;
                        report(p, self.hash_matches(p, data));
                    }
                    return Ok(());
                }
                // Some file is missing: sort it out piece by piece.
                Err(StorageError::NotPresent { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for p in first..end {
            let size = self.layout.piece_size(p).unwrap_or(0);
            // A batch of one piece was just asked about as a whole.
            let hole = end - first > 1
                && self
                    .layout
                    .piece_offset(p)
                    .is_some_and(|o| self.is_hole(o, u64::from(size)));
            let ok = !hole && self.hash_one(p, size, buf)?;
            report(p, ok);
        }
        Ok(())
    }

    /// Whether `len` bytes at torrent offset `offset` lie entirely in holes
    /// of sparse files (or in missing files), asked with `lseek(SEEK_DATA)`.
    /// Any doubt (an error, a filesystem without SEEK_DATA) answers `false`,
    /// so the data is read and hashed as usual.
    fn is_hole(&self, offset: u64, len: u64) -> bool {
        use std::os::fd::AsRawFd;
        let mut stored = false;
        for slice in self.layout.slices(offset, len) {
            let Some(file) = self.files.get(slice.file) else {
                return false;
            };
            let Some(path) = file.path.as_ref() else {
                continue; // padding: zeros by definition, not stored
            };
            stored = true;
            let handle = match self.handles.get(slice.file, path, false) {
                Ok(h) => h,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => return false,
            };
            let Ok(start) = libc::off_t::try_from(slice.offset) else {
                return false;
            };
            // SAFETY: lseek on a file descriptor we own; no memory is passed.
            let next = unsafe { libc::lseek(handle.as_raw_fd(), start, libc::SEEK_DATA) };
            if next < 0 {
                // ENXIO: no data at or after `start`; anything else: unknown.
                if std::io::Error::last_os_error().raw_os_error() != Some(libc::ENXIO) {
                    return false;
                }
            } else if (next as u64) < slice.offset + slice.length {
                return false;
            }
        }
        stored
    }

    /// Hashes one piece, reading it in chunks; missing data is `Ok(false)`.
    fn hash_one(&self, piece: u32, size: u32, buf: &mut Vec<u8>) -> Result<bool, StorageError> {
        let start = self.piece_start(piece)?;
        let mut hasher = Sha1::new();
        let mut done = 0u64;
        let size = u64::from(size);
        while done < size {
            let n = (size - done).min(READ_CHUNK as u64) as usize;
            buf.resize(n, 0);
            match self.read_at(start + done, buf) {
                Ok(()) => hasher.update(&buf[..]),
                Err(StorageError::NotPresent { .. }) => return Ok(false),
                Err(e) => return Err(e),
            }
            done += n as u64;
        }
        let digest: [u8; 20] = hasher.finalize().into();
        Ok(self.pieces.get(piece as usize) == Some(&digest))
    }

    fn hash_matches(&self, piece: u32, data: &[u8]) -> bool {
        let digest: [u8; 20] = Sha1::digest(data).into();
        self.pieces.get(piece as usize) == Some(&digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Storage>();
        check::<std::sync::Arc<Storage>>();
    }

    #[test]
    fn enospc_is_named() {
        let e = io_error(
            Path::new("/data/x.bin"),
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(e.to_string(), "no space left on device writing /data/x.bin");
        let e = io_error(Path::new("/a"), io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(e, StorageError::Io { .. }));
        assert!(e.to_string().starts_with("/a: "));
    }
}
