//! Where a torrent's files live on disk, and the open handles to them.
//!
//! Paths: every on-disk path is `root` joined with components that were each
//! checked to be one plain name (no `.`, `..`, separator, NUL or drive
//! letter), and is checked again to lie under `root`. While laying files out,
//! [`prepare_file`] looks at every folder and file with `symlink_metadata`
//! and refuses a symbolic link where one of ours should be; every later open
//! uses `O_NOFOLLOW`, so a link swapped in for a file afterwards is refused
//! too (`ELOOP`).
//!
//! Handles: [`Handles`] keeps at most `capacity` files open, evicting the
//! least recently used. Handles are `Arc<File>`, so I/O runs without the lock
//! held and an evicted file stays open until its last reader is done. It also
//! remembers which files were written since the last [`Handles::take_dirty`],
//! so a sync covers files whose handle was evicted meanwhile.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{io_error, StorageError};

/// Folder under the root that holds resume data; no torrent may be named so.
pub(crate) const STATE_DIR: &str = ".essaim";

/// Joins `components` under `root`, refusing anything that is not a plain
/// name or that would not stay under `root`.
pub(crate) fn safe_join(root: &Path, components: &[String]) -> Result<PathBuf, StorageError> {
    let mut path = root.to_path_buf();
    let shown = || root.join(components.join("/"));
    if components.is_empty() {
        return Err(StorageError::UnsafePath {
            path: shown(),
            why: "empty path",
        });
    }
    for c in components {
        if let Err(e) = essaim_core::metainfo::check_component(c, c) {
            let why = match e {
                essaim_core::metainfo::MetainfoError::UnsafePath { why, .. } => why,
                _ => "invalid component",
            };
            return Err(StorageError::UnsafePath { path: shown(), why });
        }
        let mut parts = Path::new(c).components();
        let plain = matches!(parts.next(), Some(Component::Normal(n)) if n == c.as_str())
            && parts.next().is_none();
        if !plain {
            return Err(StorageError::UnsafePath {
                path: shown(),
                why: "component is not a plain name",
            });
        }
        path.push(c);
    }
    // Belt and braces: the result must be root followed by exactly our names.
    let under = path
        .strip_prefix(root)
        .map(|rest| {
            rest.components().all(|c| matches!(c, Component::Normal(_)))
                && rest.components().count() == components.len()
        })
        .unwrap_or(false);
    if !under {
        return Err(StorageError::UnsafePath {
            path,
            why: "would leave the download folder",
        });
    }
    Ok(path)
}

/// Opens a data file without following a symbolic link at its last
/// component; read-write, or read-only when writing is refused and
/// `write` is false (seeding from read-only media). Returns the file and
/// whether it is writable.
pub(crate) fn open_data_file(path: &Path, write: bool) -> io::Result<(File, bool)> {
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    match rw {
        Ok(f) => Ok((f, true)),
        Err(e) if !write && is_write_refused(&e) => OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map(|f| (f, false)),
        Err(e) => Err(e),
    }
}

fn is_write_refused(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS)
}

/// Creates the folders leading to `components` (relative to `root`) and the
/// file itself, and extends the file to `length` when it is shorter (sparse,
/// never truncating). `known_dirs` caches folders already checked.
pub(crate) fn prepare_file(
    root: &Path,
    components: &[String],
    length: u64,
    known_dirs: &mut HashSet<PathBuf>,
) -> Result<PathBuf, StorageError> {
    let path = safe_join(root, components)?;
    let mut dir = root.to_path_buf();
    for c in components.iter().take(components.len().saturating_sub(1)) {
        dir.push(c);
        if known_dirs.contains(&dir) {
            continue;
        }
        ensure_dir(&dir)?;
        known_dirs.insert(dir.clone());
    }
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => Err(StorageError::UnsafePath {
            path,
            why: "is a symbolic link",
        }),
        Ok(m) if !m.is_file() => Err(StorageError::Conflict {
            path,
            why: "exists and is not a regular file",
        }),
        Ok(m) => {
            if m.len() < length {
                let (f, _) = open_data_file(&path, true).map_err(|e| io_error(&path, e))?;
                f.set_len(length).map_err(|e| io_error(&path, e))?;
            }
            Ok(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| io_error(&path, e))?;
            if length > 0 {
                f.set_len(length).map_err(|e| io_error(&path, e))?;
            }
            Ok(path)
        }
        Err(e) => Err(io_error(&path, e)),
    }
}

/// Makes sure `dir` is a real folder (not a link), creating it if absent.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), StorageError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(StorageError::UnsafePath {
            path: dir.to_path_buf(),
            why: "is a symbolic link",
        }),
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StorageError::Conflict {
            path: dir.to_path_buf(),
            why: "exists and is not a folder",
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(dir) {
            Ok(()) => Ok(()),
            // Created meanwhile by someone else: check what it is.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match std::fs::symlink_metadata(dir) {
                    Ok(m) if m.is_dir() => Ok(()),
                    _ => Err(StorageError::Conflict {
                        path: dir.to_path_buf(),
                        why: "exists and is not a folder",
                    }),
                }
            }
            Err(e) => Err(io_error(dir, e)),
        },
        Err(e) => Err(io_error(dir, e)),
    }
}

struct Entry {
    file: Arc<File>,
    writable: bool,
    last_use: u64,
}

#[derive(Default)]
struct Inner {
    open: HashMap<usize, Entry>,
    tick: u64,
    dirty: BTreeSet<usize>,
}

/// A bounded cache of open files, keyed by file index.
pub(crate) struct Handles {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handles({} open)", self.open_count())
    }
}

impl Handles {
    pub(crate) fn new(capacity: usize) -> Self {
        Handles {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update of
        // a cache; the map itself is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open file `index` at `path`, opening it (and evicting the least
    /// recently used handle) when needed. `write` asks for a writable handle.
    pub(crate) fn get(&self, index: usize, path: &Path, write: bool) -> io::Result<Arc<File>> {
        {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(e) = inner.open.get_mut(&index) {
                if e.writable || !write {
                    e.last_use = tick;
                    return Ok(Arc::clone(&e.file));
                }
            }
        }
        // Open without holding the lock: opening may be slow.
        let (file, writable) = open_data_file(path, write)?;
        let file = Arc::new(file);
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        inner.open.insert(
            index,
            Entry {
                file: Arc::clone(&file),
                writable,
                last_use: tick,
            },
        );
        while inner.open.len() > self.capacity {
            let oldest = inner
                .open
                .iter()
                .min_by_key(|(_, e)| e.last_use)
                .map(|(&i, _)| i);
            match oldest {
                Some(i) => {
                    inner.open.remove(&i);
                }
                None => break,
            }
        }
        Ok(file)
    }

    /// Forgets the handle of file `index` (after an error on it).
    pub(crate) fn forget(&self, index: usize) {
        self.lock().open.remove(&index);
    }

    /// Closes every handle (files are opened again by path when next used).
    pub(crate) fn clear(&self) {
        self.lock().open.clear();
    }

    pub(crate) fn mark_dirty(&self, index: usize) {
        self.lock().dirty.insert(index);
    }

    /// The files written since the last call, clearing the set.
    pub(crate) fn take_dirty(&self) -> BTreeSet<usize> {
        std::mem::take(&mut self.lock().dirty)
    }

    /// Number of handles currently open.
    pub(crate) fn open_count(&self) -> usize {
        self.lock().open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn safe_join_refuses_escapes() {
        let root = Path::new("/tmp/essaim-root");
        assert_eq!(
            safe_join(root, &names(&["a", "b.txt"])).unwrap(),
            root.join("a").join("b.txt")
        );
        for bad in [
            vec![".."],
            vec!["a", ".."],
            vec!["."],
            vec!["a/b"],
            vec!["/etc"],
            vec![""],
            vec!["a\0b"],
            vec![],
        ] {
            let err = safe_join(root, &names(&bad)).unwrap_err();
            assert!(
                matches!(err, StorageError::UnsafePath { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn handles_stay_bounded_and_lru() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..5)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, b"x").unwrap();
                p
            })
            .collect();
        let h = Handles::new(2);
        h.get(0, &paths[0], false).unwrap();
        h.get(1, &paths[1], false).unwrap();
        h.get(0, &paths[0], false).unwrap(); // 0 is now the most recent
        h.get(2, &paths[2], true).unwrap(); // evicts 1
        assert_eq!(h.open_count(), 2);
        let inner = h.lock();
        assert!(inner.open.contains_key(&0));
        assert!(inner.open.contains_key(&2));
        assert!(!inner.open.contains_key(&1));
        assert!(inner.open[&2].writable);
        drop(inner);
        assert!(h.get(9, &dir.path().join("missing"), false).is_err());
        assert_eq!(h.open_count(), 2);
        h.mark_dirty(3);
        h.mark_dirty(1);
        assert_eq!(h.take_dirty().into_iter().collect::<Vec<_>>(), vec![1, 3]);
        assert!(h.take_dirty().is_empty());
    }

    #[test]
    fn open_refuses_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"secret").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_data_file(&link, false).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    }
}
