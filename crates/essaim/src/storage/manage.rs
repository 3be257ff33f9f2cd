//! A torrent's data as a whole: finding it gone, deleting it, moving it.
//!
//! Only the torrent's own files are touched: the paths its metainfo names
//! under the download folder (checked as everywhere in [`super::files`]),
//! and then the folders of a multi-file torrent that are left empty. Files
//! a user put beside them stay, and so does the download folder itself.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use essaim_core::{Info, InfoHash};

use super::files::safe_join;
use super::resume::Resume;
use super::{components, io_error, Storage, StorageError};

/// Whether resume data in `resume_dir` vouches for pieces of a file that
/// is not there at all: the drive holding the data is unmounted, or the
/// files were deleted. The engine then stops with an error instead of
/// laying out empty files and downloading everything again into what may
/// be an empty mount point. Answers before anything is created.
pub fn missing_data(
    root: &Path,
    info: &Info,
    resume_dir: &Path,
    info_hash: &InfoHash,
) -> Option<PathBuf> {
    let path = resume_dir.join(format!("{}.resume", info_hash.to_hex()));
    let bytes = crate::store::read_capped(&path, super::resume::MAX_RESUME_SIZE).ok()?;
    let resume = Resume::decode(&bytes)?;
    if resume.info_hash != *info_hash || resume.have.len() != info.layout.num_pieces() {
        return None;
    }
    for (i, f) in info.files.iter().enumerate() {
        if f.pad {
            continue;
        }
        let pieces = info.layout.file_pieces(i).unwrap_or(0..0);
        if !pieces
            .into_iter()
            .any(|p| resume.have.get(p) || resume.verify.get(p))
        {
            continue;
        }
        let Ok(path) = safe_join(root, &components(info, f)) else {
            return None; // Storage::open says why
        };
        if matches!(std::fs::symlink_metadata(&path), Err(e) if e.kind() == io::ErrorKind::NotFound)
        {
            return Some(path);
        }
    }
    None
}

impl Storage {
    /// The torrent's folders below the download folder, deepest first
    /// (empty for a single-file torrent).
    fn own_folders(&self) -> Vec<PathBuf> {
        let mut dirs = BTreeSet::new();
        for f in &self.files {
            for depth in 1..f.components.len() {
                if let Ok(d) = safe_join(&self.root, &f.components[..depth]) {
                    dirs.insert(d);
                }
            }
        }
        let mut dirs: Vec<PathBuf> = dirs.into_iter().collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        dirs
    }

    /// Removes the folders of the torrent that are empty.
    fn remove_empty_folders(&self) {
        for d in self.own_folders() {
            // Fails unless empty (and for a link: not a folder): kept.
            let _ = std::fs::remove_dir(&d);
        }
    }

    /// Deletes the torrent's files (regular files only: a link put in
    /// place of one is left alone) and then its folders left empty.
    pub fn delete_data(&self) -> Result<(), StorageError> {
        self.handles.clear();
        for path in self.files.iter().filter_map(|f| f.path.as_ref()) {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.is_file() => {
                    std::fs::remove_file(path).map_err(|e| io_error(path, e))?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(path, e)),
            }
        }
        self.remove_empty_folders();
        Ok(())
    }

    /// Moves the torrent's files under `new_root` (rename, or copy and
    /// delete across filesystems), refusing to overwrite anything there.
    /// On failure the files already moved go back. The storage must not be
    /// used afterwards: open a new one at `new_root`.
    pub fn move_data(&self, new_root: &Path) -> Result<(), StorageError> {
        self.handles.clear();
        let mut plan = Vec::new();
        for f in &self.files {
            let Some(from) = &f.path else { continue };
            let to = safe_join(new_root, &f.components)?;
            match std::fs::symlink_metadata(from) {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    return Err(StorageError::UnsafePath {
                        path: from.clone(),
                        why: "is not a regular file",
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(from, e)),
            }
            match std::fs::symlink_metadata(&to) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Ok(_) => {
                    return Err(StorageError::Conflict {
                        path: to,
                        why: "already exists at the destination",
                    })
                }
                Err(e) => return Err(io_error(&to, e)),
            }
            plan.push((from.clone(), to, f.components.clone()));
        }
        let mut done: Vec<(PathBuf, PathBuf)> = Vec::new();
        for (from, to, comps) in &plan {
            let res = prepare_parents(new_root, comps).and_then(|()| move_file(from, to));
            if let Err(e) = res {
                for (from, to) in done.iter().rev() {
                    let _ = move_file(to, from);
                }
                return Err(e);
            }
            done.push((from.clone(), to.clone()));
        }
        self.remove_empty_folders();
        Ok(())
    }
}

/// Creates the folders above a file under `root`, refusing links.
fn prepare_parents(root: &Path, comps: &[String]) -> Result<(), StorageError> {
    std::fs::create_dir_all(root).map_err(|e| io_error(root, e))?;
    for depth in 1..comps.len() {
        let d = safe_join(root, &comps[..depth])?;
        super::files::ensure_dir(&d)?;
    }
    Ok(())
}

/// Renames `from` to `to`, or copies it (synced) and deletes it when they
/// are on different filesystems.
fn move_file(from: &Path, to: &Path) -> Result<(), StorageError> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let copy = || -> io::Result<()> {
                std::fs::copy(from, to)?;
                std::fs::File::open(to)?.sync_all()?;
                let mtime = std::fs::metadata(from)?.modified()?;
                std::fs::File::options()
                    .write(true)
                    .open(to)?
                    .set_modified(mtime)?;
                std::fs::remove_file(from)
            };
            copy().map_err(|e| {
                let _ = std::fs::remove_file(to);
                io_error(to, e)
            })
        }
        Err(e) => Err(io_error(to, e)),
    }
}
