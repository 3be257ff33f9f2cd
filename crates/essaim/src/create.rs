//! Making .torrent files, for `essaim create`.
//!
//! [`create_torrent`] walks a file or a folder, hashes the content on all
//! cores and encodes a v1 torrent (BEP 3, BEP 12 tiers, BEP 27 `private`).
//! Choices, made to match what other clients produce:
//! - a folder gives a multi-file torrent named after the folder, with its
//!   files sorted by their `/`-joined path bytes (as mktorrent and
//!   Transmission do); hidden files are included; empty folders cannot be
//!   represented in a torrent and vanish; a folder with no file is refused;
//! - symbolic links and special files (fifos, sockets, devices) inside a
//!   folder are skipped with a warning: following links could pull in data
//!   from outside the folder or loop, and special files have no size. The
//!   PATH given on the command line itself is followed if it is a link;
//! - file names must be UTF-8 and acceptable to our own parser (a torrent
//!   we would refuse to load is refused here, naming the file);
//! - the piece length is [`auto_piece_length`] unless given; a given one must
//!   be a power of two from 16 KiB to 64 MiB.
//!
//! Hashing: pieces span file boundaries; threads take batches of pieces from
//! a shared counter, reading each batch with positional reads of up to
//! 128 KiB (`storage::READ_CHUNK`), so memory stays at one buffer per thread.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use essaim_core::layout::{auto_piece_length, LayoutError, MAX_PIECE_LENGTH};
use essaim_core::metainfo::{
    check_component, encode_info, encode_torrent, MetainfoError, NewInfo, MAX_FILES,
};
use essaim_core::{Layout, Metainfo};
use sha1::{Digest, Sha1};

/// Smallest piece length accepted (the block size).
pub const MIN_PIECE_LENGTH: u32 = 16 * 1024;

use crate::storage::READ_CHUNK;

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// `None`: picked from the total size ([`auto_piece_length`]).
    pub piece_length: Option<u32>,
    /// Tiers of tracker URLs (BEP 12); the first URL is also `announce`.
    pub trackers: Vec<Vec<String>>,
    pub private: bool,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is neither a file nor a folder", .0.display())]
    NotFileOrFolder(PathBuf),
    #[error("{} holds no file", .0.display())]
    EmptyFolder(PathBuf),
    #[error("{} holds no data (all files are empty)", .0.display())]
    NoData(PathBuf),
    #[error("cannot put {} in a torrent: {why}", path.display())]
    BadName { path: PathBuf, why: String },
    #[error("more than {MAX_FILES} files")]
    TooManyFiles,
    #[error("piece size {0} is not a power of two between 16 KiB and 64 MiB")]
    PieceLength(u32),
    #[error("{0}")]
    Layout(#[from] LayoutError),
    #[error("{} changed while it was being hashed", .0.display())]
    Changed(PathBuf),
    #[error("the torrent made does not parse back: {0}")]
    Invalid(#[from] MetainfoError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CreateError + '_ {
    move |source| CreateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A file going into the torrent.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    /// Path below the torrent's folder (multi-file), or just the name.
    components: Vec<String>,
    length: u64,
}

/// Makes a .torrent of `path` (a file, or a folder → multi-file torrent),
/// calling `progress(bytes_hashed, total)` from the hashing threads.
pub fn create_torrent(
    path: &Path,
    opts: &CreateOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Vec<u8>, CreateError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let name = torrent_name(path)?;
    let (files, multi_file) = if meta.is_dir() {
        let files = walk(path)?;
        if files.is_empty() {
            return Err(CreateError::EmptyFolder(path.to_path_buf()));
        }
        (files, true)
    } else if meta.is_file() {
        let single = Source {
            path: path.to_path_buf(),
            components: vec![name.clone()],
            length: meta.len(),
        };
        (vec![single], false)
    } else {
        return Err(CreateError::NotFileOrFolder(path.to_path_buf()));
    };
    let lengths: Vec<u64> = files.iter().map(|f| f.length).collect();
    let total = lengths
        .iter()
        .try_fold(0u64, |a, &l| a.checked_add(l))
        .ok_or(CreateError::Layout(LayoutError::Overflow))?;
    if total == 0 {
        return Err(CreateError::NoData(path.to_path_buf()));
    }
    let piece_length = match opts.piece_length {
        Some(p) => check_piece_length(p)?,
        None => auto_piece_length(total),
    };
    let layout = Layout::new(u64::from(piece_length), &lengths)?;
    let pieces = hash_pieces(&files, &layout, progress)?;
    let new = NewInfo {
        name,
        piece_length,
        pieces,
        files: multi_file.then(|| {
            files
                .iter()
                .map(|f| (f.components.clone(), f.length))
                .collect()
        }),
        length: total,
        private: opts.private,
    };
    let info = encode_info(&new);
    let bytes = encode_torrent(
        &info,
        &opts.trackers,
        opts.comment.as_deref(),
        opts.created_by.as_deref(),
        opts.creation_date,
    );
    // Never hand out a torrent we would refuse to load.
    Metainfo::from_bytes(&bytes)?;
    Ok(bytes)
}

/// Checks a piece length given by the user.
pub fn check_piece_length(p: u32) -> Result<u32, CreateError> {
    if p.is_power_of_two() && (MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&p) {
        Ok(p)
    } else {
        Err(CreateError::PieceLength(p))
    }
}

/// The torrent's name: the last component of `path` (resolved when `path`
/// ends in `.` or `..`).
fn torrent_name(path: &Path) -> Result<String, CreateError> {
    let resolved;
    let last = match path.file_name() {
        Some(n) => n,
        None => {
            resolved = std::fs::canonicalize(path).map_err(io_err(path))?;
            resolved.file_name().ok_or_else(|| CreateError::BadName {
                path: path.to_path_buf(),
                why: "it has no name to give the torrent".into(),
            })?
        }
    };
    component(last, path)
}

/// A file name as a torrent path component, or the reason it cannot be one.
fn component(name: &std::ffi::OsStr, path: &Path) -> Result<String, CreateError> {
    let s = name.to_str().ok_or_else(|| CreateError::BadName {
        path: path.to_path_buf(),
        why: "the name is not UTF-8".into(),
    })?;
    check_component(s, s).map_err(|e| CreateError::BadName {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    Ok(s.to_owned())
}

/// The regular files below `root`, sorted by `/`-joined path bytes.
fn walk(root: &Path) -> Result<Vec<Source>, CreateError> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, Vec<String>)> = vec![(root.to_path_buf(), Vec::new())];
    let mut folders_seen = 0usize;
    while let Some((dir, prefix)) = stack.pop() {
        folders_seen += 1;
        if folders_seen > MAX_FILES {
            return Err(CreateError::TooManyFiles);
        }
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io_err(&path))?;
            if kind.is_symlink() {
                tracing::warn!(path = %path.display(), "skipping symbolic link");
                continue;
            }
            if !kind.is_dir() && !kind.is_file() {
                tracing::warn!(path = %path.display(), "skipping special file");
                continue;
            }
            let mut components = prefix.clone();
            components.push(component(&entry.file_name(), &path)?);
            if kind.is_dir() {
                stack.push((path, components));
            } else {
                let length = entry.metadata().map_err(io_err(&path))?.len();
                out.push(Source {
                    path,
                    components,
                    length,
                });
                if out.len() > MAX_FILES {
                    return Err(CreateError::TooManyFiles);
                }
            }
        }
    }
    out.sort_by_cached_key(|f| f.components.join("/").into_bytes());
    Ok(out)
}

/// Hashes every piece on all cores.
fn hash_pieces(
    files: &[Source],
    layout: &Layout,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Vec<[u8; 20]>, CreateError> {
    let n = layout.num_pieces();
    let total = layout.total_length();
    let piece_len = layout.piece_length().max(1) as usize;
    let batch = u32::try_from((READ_CHUNK / piece_len).max(1)).unwrap_or(1);
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(n.div_ceil(batch) as usize)
        .max(1);
    let next = AtomicU32::new(0);
    let hashed = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    type Hashes = Vec<(u32, [u8; 20])>;
    let results: Vec<Result<Hashes, CreateError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut reader = Reader {
                        files,
                        layout,
                        open: None,
                    };
                    let mut out = Vec::new();
                    let mut buf = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let first = next.fetch_add(batch, Ordering::Relaxed);
                        if first >= n {
                            break;
                        }
                        let end = first.saturating_add(batch).min(n);
                        let mut on_bytes = |len: u64| {
                            let done = hashed.fetch_add(len, Ordering::Relaxed) + len;
                            progress(done, total);
                        };
                        let r = reader.hash_batch(first, end, &mut buf, &mut out, &mut on_bytes);
                        if let Err(e) = r {
                            stop.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(CreateError::Io {
                        path: PathBuf::new(),
                        source: io::Error::other("a hashing thread panicked"),
                    })
                })
            })
            .collect()
    });
    let mut pieces = vec![[0u8; 20]; n as usize];
    let mut filled = 0usize;
    for r in results {
        for (p, h) in r? {
            if let Some(slot) = pieces.get_mut(p as usize) {
                *slot = h;
                filled += 1;
            }
        }
    }
    if filled != pieces.len() {
        return Err(CreateError::Invalid(MetainfoError::PieceCount {
            expected: n,
            got: filled,
        }));
    }
    Ok(pieces)
}

/// Reads the torrent's byte stream from the source files, keeping the last
/// file it used open.
struct Reader<'a> {
    files: &'a [Source],
    layout: &'a Layout,
    open: Option<(usize, File)>,
}

impl Reader<'_> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), CreateError> {
        let mut pos = 0usize;
        for s in self.layout.slices(offset, buf.len() as u64) {
            let len = s.length as usize;
            let (Some(src), Some(chunk)) = (self.files.get(s.file), buf.get_mut(pos..pos + len))
            else {
                return Err(CreateError::Layout(LayoutError::Overflow));
            };
            pos += len;
            if self.open.as_ref().map(|(i, _)| *i) != Some(s.file) {
                let f = File::open(&src.path).map_err(io_err(&src.path))?;
                self.open = Some((s.file, f));
            }
            let Some((_, f)) = &self.open else { continue };
            f.read_exact_at(chunk, s.offset).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    CreateError::Changed(src.path.clone())
                } else {
                    io_err(&src.path)(e)
                }
            })?;
        }
        Ok(())
    }

    /// Hashes pieces `first..end` into `out`; reports bytes as they are read.
    fn hash_batch(
        &mut self,
        first: u32,
        end: u32,
        buf: &mut Vec<u8>,
        out: &mut Vec<(u32, [u8; 20])>,
        on_bytes: &mut dyn FnMut(u64),
    ) -> Result<(), CreateError> {
        let layout = self.layout;
        if end - first > 1 {
            // Small pieces: one large read for the batch, then hash each.
            let (Some(start), Some(stop)) = (
                layout.piece_offset(first),
                layout.piece_offset(end).or(Some(layout.total_length())),
            ) else {
                return Ok(());
            };
            let len = usize::try_from(stop.saturating_sub(start)).unwrap_or(0);
            buf.resize(len, 0);
            self.read_at(start, buf)?;
            on_bytes(len as u64);
            let mut pos = 0usize;
            for p in first..end {
                let size = layout.piece_size(p).unwrap_or(0) as usize;
                let data = buf.get(pos..pos + size).unwrap_or(&[]);
                pos += size;
                out.push((p, Sha1::digest(data).into()));
            }
            return Ok(());
        }
        // A big piece: hash it in chunks.
        let (Some(start), Some(size)) = (layout.piece_offset(first), layout.piece_size(first))
        else {
            return Ok(());
        };
        let size = u64::from(size);
        let mut hasher = Sha1::new();
        let mut done = 0u64;
        while done < size {
            let n = (size - done).min(READ_CHUNK as u64) as usize;
            buf.resize(n, 0);
            self.read_at(start + done, buf)?;
            hasher.update(&buf[..]);
            done += n as u64;
            on_bytes(n as u64);
        }
        out.push((first, hasher.finalize().into()));
        Ok(())
    }
}

/// Parses a size such as `262144`, `256KiB`, `256k`, `1MiB`, `1 MB`, `2G`.
/// Units are case-insensitive and all binary, as most CLI tools read them:
/// `K`/`KB`/`KiB` = 1024, `M`/`MB`/`MiB` = 1024², `G`/`GB`/`GiB` = 1024³;
/// a bare number or `B` is bytes. Fractions are refused.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!("{s:?} is not a size (try 262144, 256KiB or 1MiB)"));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is too large a size"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use B, KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("{s:?} is too large a size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("262144"), Ok(262144));
        assert_eq!(parse_size("256KiB"), Ok(262144));
        assert_eq!(parse_size("256k"), Ok(262144));
        assert_eq!(parse_size("16KB"), Ok(16384));
        assert_eq!(parse_size(" 1 MiB "), Ok(1 << 20));
        assert_eq!(parse_size("1mb"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("7B"), Ok(7));
        for bad in [
            "",
            "KiB",
            "1.5MiB",
            "-1",
            "1TiB",
            "12x",
            "99999999999999999999",
            "17179869184GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn piece_length_rules() {
        assert_eq!(check_piece_length(16384).unwrap(), 16384);
        assert_eq!(check_piece_length(64 << 20).unwrap(), 64 << 20);
        for bad in [0, 8192, 16385, 3 << 14, 128 << 20] {
            assert!(
                matches!(check_piece_length(bad), Err(CreateError::PieceLength(p)) if p == bad)
            );
        }
    }
}
