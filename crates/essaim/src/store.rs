//! The session's state on disk, in its state folder, so that a restart
//! (or a crash, or a power cut) brings every torrent back with its state
//! and options:
//!
//! ```text
//! STATE/settings.json          settings changed at run time (see `Session`)
//! STATE/runs.json              when the session ran (see [`RunLog`])
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
/// The session's runs ([`RunLog`]).
const RUNS_FILE: &str = "runs.json";
/// Largest .torrent read back (as accepted when adding).
pub(crate) const MAX_TORRENT: u64 = 64 * 1024 * 1024;

/// Writes `bytes` to `path` atomically and durably: a temporary file in
/// the same folder, fsynced, renamed over `path`, then the folder fsynced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let f = write_tmp(path, bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(tmp_path(path), path)?;
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// Files written together at most (one batch of [`Committer`]).
const COMMIT_BATCH: usize = 4096;
/// From this many files in a batch, one `syncfs` replaces an `fsync` per
/// file.
const SYNCFS_FROM: usize = 16;

/// One file to write atomically and durably.
struct CommitJob {
    path: PathBuf,
    bytes: Vec<u8>,
    done: tokio::sync::oneshot::Sender<io::Result<()>>,
}

/// Group commit: writes files as [`write_atomic`] does, but many at a
/// time, on a thread of its own. An `fsync` costs a journal commit, so
/// 10,000 records saved when the daemon stops took 8 s one by one (two
/// syncs each); a batch instead writes every temporary file, syncs them
/// all at once (one `syncfs` for a large batch, an `fsync` each for a
/// small one), renames each over its file, and syncs each folder once.
/// After a crash each file is its old or its new version, as before.
/// Calls made while a batch is written wait for the next one, so a lone
/// save costs what it cost before and a burst costs a few syncs.
#[derive(Debug)]
struct Committer {
    tx: std::sync::Mutex<std::sync::mpsc::Sender<CommitJob>>,
}

impl Committer {
    fn start() -> io::Result<Committer> {
        let (tx, rx) = std::sync::mpsc::channel::<CommitJob>();
        std::thread::Builder::new()
            .name("essaim-commit".into())
            .spawn(move || {
                let mut next: Option<CommitJob> = None;
                loop {
                    let first = match next.take() {
                        Some(j) => j,
                        None => match rx.recv() {
                            Ok(j) => j,
                            Err(_) => break,
                        },
                    };
                    let mut batch = vec![first];
                    while batch.len() < COMMIT_BATCH {
                        match rx.try_recv() {
                            // A second write of one file waits for the
                            // next batch (both would rename one tmp file).
                            Ok(j) if batch.iter().any(|b| b.path == j.path) => {
                                next = Some(j);
                                break;
                            }
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    commit_batch(batch);
                }
            })?;
        Ok(Committer {
            tx: std::sync::Mutex::new(tx),
        })
    }

    async fn write(&self, path: PathBuf, bytes: Vec<u8>) -> io::Result<()> {
        let (done, rx) = tokio::sync::oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(CommitJob { path, bytes, done });
        if sent.is_err() {
            return Err(io::Error::other("the state writer has stopped"));
        }
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the state writer has stopped")))
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    dir.join(tmp_name)
}

/// Writes `bytes` to `path`'s temporary file (not synced yet).
fn write_tmp(path: &Path, bytes: &[u8]) -> io::Result<File> {
    let tmp = tmp_path(path);
    remove_if_present(&tmp)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(bytes)?;
    Ok(f)
}

fn commit_batch(batch: Vec<CommitJob>) {
    // For a large batch, one `syncfs` per folder's file system instead of
    // a fsync per file. The folders are opened before anything is written:
    // `syncfs` reports a write-back error only to descriptors opened
    // before it happened.
    let fs_handles: Option<Vec<io::Result<File>>> = (batch.len() >= SYNCFS_FROM).then(|| {
        let mut dirs: Vec<&Path> = Vec::new();
        for job in &batch {
            let d = job.path.parent().unwrap_or(Path::new("."));
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        dirs.into_iter().map(File::open).collect()
    });
    let mut written = Vec::with_capacity(batch.len());
    for job in batch {
        match write_tmp(&job.path, &job.bytes) {
            Ok(f) => written.push((job, f)),
            Err(e) => {
                let _ = remove_if_present(&tmp_path(&job.path));
                let _ = job.done.send(Err(e));
            }
        }
    }
    if written.is_empty() {
        return;
    }
    // Every temporary file on the disk before any rename.
    let synced: Vec<io::Result<()>> = if let Some(handles) = fs_handles {
        let all = handles.into_iter().try_for_each(|d| {
            use std::os::fd::AsRawFd;
            let d = d?;
            // SAFETY: syncfs on a descriptor we own; no memory involved.
            match unsafe { libc::syncfs(d.as_raw_fd()) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        });
        written
            .iter()
            .map(|_| all.as_ref().map(|_| ()).map_err(clone_error))
            .collect()
    } else {
        written.iter().map(|(_, f)| f.sync_all()).collect()
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut renamed = Vec::with_capacity(written.len());
    for ((job, f), sync) in written.into_iter().zip(synced) {
        drop(f);
        let res = sync.and_then(|()| std::fs::rename(tmp_path(&job.path), &job.path));
        match res {
            Ok(()) => {
                let dir = job.path.parent().unwrap_or(Path::new(".")).to_path_buf();
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
                renamed.push(job);
            }
            Err(e) => {
                let _ = remove_if_present(&tmp_path(&job.path));
                let _ = job.done.send(Err(e));
            }
        }
    }
    // The renames on the disk: each folder once.
    let dir_sync: Vec<(PathBuf, io::Result<()>)> = dirs
        .into_iter()
        .map(|d| {
            let r = File::open(&d).and_then(|f| f.sync_all());
            (d, r)
        })
        .collect();
    for job in renamed {
        let dir = job.path.parent().unwrap_or(Path::new("."));
        let res = dir_sync
            .iter()
            .find(|(d, _)| d == dir)
            .map(|(_, r)| r.as_ref().map(|_| ()).map_err(clone_error))
            .unwrap_or(Ok(()));
        let _ = job.done.send(res);
    }
}

fn clone_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
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
    /// When this record was written (Unix seconds); `seeding_secs` and
    /// `active_secs` count up to then.
    #[serde(default)]
    pub saved_at: u64,
    /// Whether the torrent ran, and seeded, when this record was written:
    /// its clocks went on from `saved_at` for as long as the session ran
    /// (see [`RunLog`]).
    #[serde(default)]
    pub running: bool,
    #[serde(default)]
    pub seeding: bool,
}

pub(crate) const RECORD_VERSION: u32 = 1;

impl Record {
    pub fn info_hash(&self) -> Option<InfoHash> {
        InfoHash::from_text(&self.info_hash)
    }

    /// Adds to its clocks the time the session ran since the record was
    /// written, if they were running then.
    fn catch_up(&mut self, runs: &RunLog) {
        if self.saved_at == 0 || !(self.running || self.seeding) {
            return;
        }
        let extra = runs.alive_since(self.saved_at);
        if self.running {
            self.active_secs = self.active_secs.saturating_add(extra);
        }
        if self.seeding {
            self.seeding_secs = self.seeding_secs.saturating_add(extra);
        }
    }
}

/// When the session ran: `[started, alive]` in Unix seconds, one pair per
/// run, the last one this run's (`STATE/runs.json`). `alive` is `started`
/// plus the time the run lasted on the monotonic clock, so a wall clock
/// set or stepped while the daemon runs (a board without a real-time clock
/// booting in 1970) never turns into seeding time.
///
/// Why: a torrent's seeding and active time go on while it runs, and
/// writing 10,000 records when the daemon stops, only for their clocks,
/// took seconds (a new file each). So a record says when it was written
/// and whether its clocks were running ([`Record::saved_at`]); it is
/// written again when that changes (the torrent stops, pauses, finishes,
/// ...), and otherwise the session's runs, kept here and brought up to
/// date once a minute and when the session stops, give the time since: a
/// crash loses at most a minute of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunLog {
    runs: Vec<(u64, u64)>,
}

/// Runs kept at most (the oldest are dropped first).
const MAX_RUNS: usize = 1000;

impl RunLog {
    /// Seconds the session was alive from `since` on.
    fn alive_since(&self, since: u64) -> u64 {
        self.runs
            .iter()
            .map(|&(start, alive)| alive.saturating_sub(start.max(since)))
            .fold(0, u64::saturating_add)
    }

    /// A log read from disk, made sane: pairs that end before they start
    /// go, and only the last [`MAX_RUNS`] stay (the file is input like
    /// any other: it bounds the work of every record's catch-up).
    fn sanitized(mut self) -> RunLog {
        self.runs.retain(|&(start, alive)| start <= alive);
        if self.runs.len() > MAX_RUNS {
            self.runs.drain(..self.runs.len() - MAX_RUNS);
        }
        self
    }

    /// A new run starting at `now`; runs that ended before `oldest` (the
    /// oldest record's time) are no longer needed.
    fn start(&mut self, now: u64, oldest: u64) {
        self.runs.retain(|&(_, alive)| alive >= oldest);
        if self.runs.len() >= MAX_RUNS {
            self.runs.drain(..self.runs.len() + 1 - MAX_RUNS);
        }
        self.runs.push((now, now));
    }

    fn touch(&mut self, now: u64) {
        if let Some(last) = self.runs.last_mut() {
            last.1 = last.1.max(now);
        }
    }
}

/// The state folder of a session.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
    committer: std::sync::Arc<Committer>,
    runs: std::sync::Arc<std::sync::Mutex<Runs>>,
}

/// The runs, and when this one began on the monotonic clock.
#[derive(Debug, Default)]
struct Runs {
    log: RunLog,
    began: Option<(u64, std::time::Instant)>,
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
            committer: std::sync::Arc::new(Committer::start()?),
            runs: Default::default(),
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

    /// Saves a record, atomically and durably, in a batch with the other
    /// saves of the moment ([`Committer`]).
    pub async fn save_record(&self, r: &Record) -> io::Result<()> {
        let ih = r
            .info_hash()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad infohash"))?;
        let bytes = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
        self.committer.write(self.path(&ih, "json"), bytes).await
    }

    /// This run is alive now ([`RunLog`]); saved as a record is.
    pub async fn touch_run(&self) -> io::Result<()> {
        let bytes = {
            let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((wall, began)) = runs.began {
                runs.log
                    .touch(wall.saturating_add(began.elapsed().as_secs()));
            }
            serde_json::to_vec(&runs.log).map_err(io::Error::other)?
        };
        self.committer.write(self.dir.join(RUNS_FILE), bytes).await
    }

    /// Saves a .torrent, as [`Store::save_record`].
    pub async fn save_torrent(&self, info_hash: &InfoHash, bytes: Vec<u8>) -> io::Result<()> {
        self.committer
            .write(self.path(info_hash, "torrent"), bytes)
            .await
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
        // The clocks of the records, brought up to the end of the last
        // run; then this run begins.
        let mut runs = self.load_runs();
        for r in &mut records {
            r.catch_up(&runs);
        }
        let now = crate::torrent::unix_now();
        let oldest = records.iter().map(|r| r.saved_at).min().unwrap_or(now);
        runs.start(now, oldest);
        // Not written (a full disk): the torrents still come back; this
        // run's time is written with the next touch, or lost (the records'
        // clocks then lag behind, they never run ahead).
        let written = serde_json::to_vec(&runs)
            .map_err(io::Error::other)
            .and_then(|b| write_atomic(&self.dir.join(RUNS_FILE), &b));
        if let Err(e) = written {
            tracing::warn!(path = %self.dir.join(RUNS_FILE).display(), "cannot write the session clock: {e}");
        }
        *self.runs.lock().unwrap_or_else(|e| e.into_inner()) = Runs {
            log: runs,
            began: Some((now, std::time::Instant::now())),
        };
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

    fn load_runs(&self) -> RunLog {
        let path = self.dir.join(RUNS_FILE);
        match read_capped(&path, MAX_RECORD) {
            Ok(b) => serde_json::from_slice::<RunLog>(&b)
                .map(RunLog::sanitized)
                .unwrap_or_else(|e| {
                    set_aside(&path, &e.to_string());
                    RunLog::default()
                }),
            Err(_) => RunLog::default(),
        }
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
            saved_at: 0,
            running: false,
            seeding: false,
        }
    }

    #[tokio::test]
    async fn records_round_trip_and_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (record(2, 'a'), record(1, 'b'));
        store.save_record(&a).await.unwrap();
        store.save_record(&b).await.unwrap();
        let ih_a = a.info_hash().unwrap();
        store
            .save_torrent(&ih_a, b"d4:infod".to_vec())
            .await
            .unwrap();
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

    /// Saves made at once are written in batches (large ones synced with
    /// one `syncfs`), each file whole, no temporary file left; a save that
    /// cannot be written fails alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_saves_is_written_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut records = Vec::new();
        for i in 0..300u64 {
            let mut r = record(i, 'a');
            r.info_hash = format!("{i:040x}");
            records.push(r);
        }
        // One whose temporary file cannot be made: a folder is in its way.
        let blocked = format!("{:040x}", 999);
        std::fs::create_dir_all(
            dir.path()
                .join("torrents")
                .join(format!("{blocked}.json.tmp/x")),
        )
        .unwrap();
        let mut bad = record(999, 'a');
        bad.info_hash = blocked;
        let tasks: Vec<_> = records
            .iter()
            .chain([&bad])
            .map(|r| {
                let (store, r) = (store.clone(), r.clone());
                tokio::spawn(async move { store.save_record(&r).await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let one = results.pop().unwrap();
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        assert!(one.is_err());
        let loaded = store.load().unwrap();
        assert_eq!(loaded.len(), 300);
        for (l, r) in loaded.iter().zip(&records) {
            assert_eq!(&l.record, r);
        }
        let tmp = std::fs::read_dir(dir.path().join("torrents"))
            .unwrap()
            .filter(|e| {
                let e = e.as_ref().unwrap();
                e.file_type().unwrap().is_file()
                    && e.file_name().to_string_lossy().ends_with(".tmp")
            })
            .count();
        assert_eq!(tmp, 0);
    }

    /// A record's clocks go on for the time the session ran after it was
    /// written, not for the time the session was down.
    #[test]
    fn clocks_catch_up_with_the_runs_only() {
        let runs = RunLog {
            runs: vec![(100, 200), (500, 530), (900, 1000)],
        };
        let mut r = record(1, 'a');
        (r.saved_at, r.running, r.seeding) = (150, true, true);
        (r.active_secs, r.seeding_secs) = (10, 5);
        r.catch_up(&runs);
        // 50 (150..200) + 30 + 100.
        assert_eq!((r.active_secs, r.seeding_secs), (190, 185));
        let mut idle = record(2, 'b');
        (idle.saved_at, idle.running, idle.seeding) = (150, true, false);
        idle.active_secs = 0;
        idle.seeding_secs = 0;
        idle.catch_up(&runs);
        assert_eq!((idle.active_secs, idle.seeding_secs), (180, 0));
        let mut stopped = record(3, 'c');
        (stopped.saved_at, stopped.running) = (150, false);
        let before = stopped.clone();
        stopped.catch_up(&runs);
        assert_eq!(stopped, before);
        let mut late = record(4, 'd');
        (late.saved_at, late.running, late.active_secs) = (1200, true, 0);
        late.catch_up(&runs);
        assert_eq!(late.active_secs, 0, "saved after the last run's end");
        // A new run drops runs that ended before the oldest record.
        let mut log = runs.clone();
        log.start(2000, 520);
        assert_eq!(log.runs, [(500, 530), (900, 1000), (2000, 2000)]);
        log.touch(2060);
        assert_eq!(log.runs.last(), Some(&(2000, 2060)));
    }

    /// `runs.json` is input like any file: pairs that end before they
    /// start, values at the top of the range, thousands of runs; and it
    /// cannot be written again. Every torrent still comes back, its clocks
    /// saturate instead of wrapping, and the log kept is bounded.
    #[tokio::test]
    async fn a_hostile_or_unwritable_session_clock_costs_no_torrent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut r = record(1, 'a');
        (r.saved_at, r.running, r.seeding) = (10, true, true);
        r.seeding_secs = u64::MAX - 5;
        store.save_record(&r).await.unwrap();
        let mut runs: Vec<(u64, u64)> = (0..5000).map(|i| (i, i + 1)).collect();
        runs.push((20, u64::MAX));
        runs.push((u64::MAX, 3));
        let json = serde_json::to_vec(&serde_json::json!({ "runs": runs })).unwrap();
        std::fs::write(dir.path().join(RUNS_FILE), json).unwrap();
        std::fs::create_dir(dir.path().join("runs.json.tmp")).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].record.seeding_secs, u64::MAX);
        assert!(loaded[0].record.active_secs > 0);
        let runs = store.runs.lock().unwrap();
        assert!(runs.log.runs.len() <= MAX_RUNS);
        assert!(runs.log.runs.iter().all(|&(s, a)| s <= a));
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
