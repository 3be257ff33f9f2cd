//! The session's state on disk, in its state folder, so that a restart
//! (or a crash, or a power cut) brings every torrent back with its state
//! and options:
//!
//! ```text
//! STATE/settings.json          settings changed at run time (see `Session`)
//! STATE/torrents/HEX.json      one record per torrent: id, save path,
//!                              paused, queue position, options, totals
//! STATE/torrents/HEX.torrent   its metainfo (once known, for a magnet)
//! STATE/torrents/HEX.resume    its resume data (see `storage/resume.rs`)
//! ```
//!
//! Why files and not an embedded database: each torrent's state is one
//! small document written whole when it changes (a user action, a
//! completion, totals once a minute), never a transaction across torrents;
//! files need no dependency (redb wants a newer Rust than ours), stay
//! readable with `cat`, and a restart of 10,000 torrents reads them in well
//! under a second (`bench/daemon.sh`).
//!
//! Crash safety: every file is written whole to `NAME.tmp`, fsynced, renamed
//! over `NAME`, and the folder fsynced ([`write_atomic`]), so after a crash
//! each file is its old or its new version, never a mix. A record is
//! written (and synced) before `Session::add` answers, and deleted first on
//! removal; a `.torrent` or `.resume` without a record is a leftover of an
//! interrupted add or removal and is deleted at start. Loading is
//! defensive: files are read up to a size cap, and a record that does not
//! parse is set aside (renamed `.json.invalid`, logged), never a panic.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use essaim_core::InfoHash;
use serde::{Deserialize, Serialize};

use crate::types::TorrentOptions;

/// Largest record read (a record is a few hundred bytes; a file list of a
/// million selected indices stays under this).
const MAX_RECORD: u64 = 16 * 1024 * 1024;
/// Largest .torrent read back (as accepted when adding).
pub(crate) const MAX_TORRENT: u64 = 64 * 1024 * 1024;

/// Writes `bytes` to `path` atomically and durably: a temporary file in
/// the same folder, fsynced, renamed over `path`, then the folder fsynced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Reads a whole file of at most `cap` bytes, not following a link.
pub(crate) fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let len = f.metadata()?.len();
    if len > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {cap} bytes"),
        ));
    }
    let mut out = Vec::with_capacity(len as usize);
    f.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {cap} bytes"),
        ));
    }
    Ok(out)
}

/// Deletes a file; an absent one is no error.
pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What is kept of one torrent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub version: u32,
    pub id: u64,
    /// 40 hex digits.
    pub info_hash: String,
    /// The torrent's name once known (shown while its files are checked).
    #[serde(default)]
    pub name: Option<String>,
    /// The magnet link it was added from (its trackers, peers and name are
    /// used until the metadata comes).
    #[serde(default)]
    pub magnet: Option<String>,
    pub save_path: PathBuf,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub forced: bool,
    pub queue_position: u64,
    #[serde(default)]
    pub options: TorrentOptions,
    /// Selected files (`None`: all).
    #[serde(default)]
    pub files: Option<Vec<usize>>,
    /// Peers given when it was added.
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    pub added_at: u64,
    #[serde(default)]
    pub completed_at: Option<u64>,
    #[serde(default)]
    pub downloaded_total: u64,
    #[serde(default)]
    pub uploaded_total: u64,
    #[serde(default)]
    pub seeding_secs: u64,
    #[serde(default)]
    pub active_secs: u64,
}

pub(crate) const RECORD_VERSION: u32 = 1;

impl Record {
    pub fn info_hash(&self) -> Option<InfoHash> {
        InfoHash::from_text(&self.info_hash)
    }
}

/// The state folder of a session.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
}

/// A torrent found at start.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub record: Record,
    /// Its .torrent, if saved (absent for a magnet still fetching).
    pub torrent: Option<Vec<u8>>,
}

impl Store {
    /// Opens (creating) the state folder, private to its owner.
    pub fn open(dir: &Path) -> io::Result<Store> {
        use std::os::unix::fs::DirBuilderExt;
        let torrents = dir.join("torrents");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&torrents)?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the resume data of the torrents lives.
    pub fn resume_dir(&self) -> PathBuf {
        self.dir.join("torrents")
    }

    fn path(&self, info_hash: &InfoHash, ext: &str) -> PathBuf {
        self.dir
            .join("torrents")
            .join(format!("{}.{ext}", info_hash.to_hex()))
    }

    pub fn save_record(&self, r: &Record) -> io::Result<()> {
        let ih = r
            .info_hash()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad infohash"))?;
        let bytes = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
        write_atomic(&self.path(&ih, "json"), &bytes)
    }

    pub fn save_torrent(&self, info_hash: &InfoHash, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.path(info_hash, "torrent"), bytes)
    }

    /// Deletes a torrent's files: its record first (from then on it is
    /// gone, even if the rest fails), then its .torrent and resume data.
    pub fn remove(&self, info_hash: &InfoHash) -> io::Result<()> {
        remove_if_present(&self.path(info_hash, "json"))?;
        File::open(self.dir.join("torrents"))?.sync_all()?;
        remove_if_present(&self.path(info_hash, "torrent"))?;
        remove_if_present(&self.path(info_hash, "resume"))?;
        Ok(())
    }

    /// Every torrent in the folder, by id; leftovers (files without a
    /// record) deleted, unreadable records set aside.
    pub fn load(&self) -> io::Result<Vec<Loaded>> {
        let dir = self.dir.join("torrents");
        let mut records = Vec::new();
        let mut others = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if let Some(hex) = name.strip_suffix(".json") {
                match read_capped(&path, MAX_RECORD)
                    .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(io::Error::other))
                {
                    Ok(r) if r.info_hash().is_some() && r.info_hash.eq_ignore_ascii_case(hex) => {
                        records.push(r)
                    }
                    Ok(_) => set_aside(&path, "record for another infohash"),
                    Err(e) => set_aside(&path, &e.to_string()),
                }
            } else if name.ends_with(".tmp") {
                // An interrupted write: the file it was for is intact.
                let _ = remove_if_present(&path);
            } else if name.ends_with(".torrent") || name.ends_with(".resume") {
                others.push((name, path));
            }
        }
        let known: std::collections::HashSet<String> =
            records.iter().map(|r| r.info_hash.to_lowercase()).collect();
        for (name, path) in others {
            let hex = name.split('.').next().unwrap_or_default().to_lowercase();
            if !known.contains(&hex) {
                tracing::info!(path = %path.display(), "deleting a leftover of a torrent removed or not fully added");
                let _ = remove_if_present(&path);
            }
        }
        records.sort_by_key(|r| r.id);
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let Some(ih) = record.info_hash() else {
                continue;
            };
            let torrent = match read_capped(&self.path(&ih, "torrent"), MAX_TORRENT) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::warn!(infohash = %ih, "cannot read its .torrent: {e}");
                    None
                }
            };
            out.push(Loaded { record, torrent });
        }
        Ok(out)
    }

    /// The settings saved at run time, if any.
    pub fn load_settings(&self) -> Option<serde_json::Value> {
        let path = self.dir.join("settings.json");
        let bytes = read_capped(&path, MAX_RECORD).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                set_aside(&path, &e.to_string());
                None
            }
        }
    }

    pub fn save_settings(&self, v: &serde_json::Value) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(v).map_err(io::Error::other)?;
        write_atomic(&self.dir.join("settings.json"), &bytes)
    }
}

/// Renames an unreadable file to `NAME.invalid`, so it is neither lost nor
/// read again.
fn set_aside(path: &Path, why: &str) {
    let mut to = path.as_os_str().to_os_string();
    to.push(".invalid");
    tracing::warn!(path = %path.display(), "unreadable state file set aside as .invalid: {why}");
    let _ = std::fs::rename(path, to);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, hex: char) -> Record {
        Record {
            version: RECORD_VERSION,
            id,
            info_hash: std::iter::repeat_n(hex, 40).collect(),
            name: Some("x".into()),
            magnet: None,
            save_path: "/data".into(),
            paused: id.is_multiple_of(2),
            forced: false,
            queue_position: id,
            options: TorrentOptions::default(),
            files: Some(vec![1, 3]),
            peers: vec!["127.0.0.1:1".parse().unwrap()],
            added_at: 1,
            completed_at: None,
            downloaded_total: 5,
            uploaded_total: 6,
            seeding_secs: 7,
            active_secs: 8,
        }
    }

    #[test]
    fn records_round_trip_and_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (record(2, 'a'), record(1, 'b'));
        store.save_record(&a).unwrap();
        store.save_record(&b).unwrap();
        let ih_a = a.info_hash().unwrap();
        store.save_torrent(&ih_a, b"d4:infod").unwrap();
        // Leftovers: a .torrent with no record, a torn temporary file, a
        // record that does not parse.
        let t = dir.path().join("torrents");
        std::fs::write(t.join(format!("{}.torrent", "c".repeat(40))), b"x").unwrap();
        std::fs::write(t.join(format!("{}.json.tmp", "a".repeat(40))), b"{").unwrap();
        std::fs::write(t.join(format!("{}.json", "d".repeat(40))), b"{not json").unwrap();
        std::fs::write(t.join(format!("{}.json", "e".repeat(40))), b"[]").unwrap();
        let loaded = store.load().unwrap();
        let ids: Vec<u64> = loaded.iter().map(|l| l.record.id).collect();
        assert_eq!(ids, [1, 2], "sorted by id, bad records left out");
        assert_eq!(loaded[1].record, a);
        assert_eq!(loaded[1].torrent.as_deref(), Some(&b"d4:infod"[..]));
        assert_eq!(loaded[0].torrent, None);
        let mut names: Vec<String> = std::fs::read_dir(&t)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let expect = [
            format!("{}.json", "a".repeat(40)),
            format!("{}.torrent", "a".repeat(40)),
            format!("{}.json", "b".repeat(40)),
            format!("{}.json.invalid", "d".repeat(40)),
            format!("{}.json.invalid", "e".repeat(40)),
        ];
        assert_eq!(names, expect);
        store.remove(&ih_a).unwrap();
        assert_eq!(store.load().unwrap().len(), 1);
        assert!(!t.join(format!("{}.torrent", "a".repeat(40))).exists());
    }

    #[test]
    fn a_record_from_a_newer_version_with_unknown_fields_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let json = format!(
            r#"{{"version":1,"id":4,"info_hash":"{}","save_path":"/d","queue_position":0,
               "added_at":0,"some_future_field":[1,2]}}"#,
            "f".repeat(40)
        );
        std::fs::write(
            dir.path()
                .join("torrents")
                .join(format!("{}.json", "f".repeat(40))),
            json,
        )
        .unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert!(!loaded[0].record.paused);
    }
}
