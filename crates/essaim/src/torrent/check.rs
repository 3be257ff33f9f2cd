//! Finding out what a torrent has on disk, off the actor's task.
//!
//! A check first looks for resume data (cheap: one small file and a
//! `stat` per data file) and trusts it when every file still has the size
//! and time it had when saved; pieces saved as possibly not yet on the
//! disk are hashed again. Only without usable resume data (or when the
//! user asks for a recheck) is every piece hashed; such a full check waits
//! for the session's check slot, so that many torrents restarting at once
//! do not thrash the disk: they take turns.
//!
//! Before anything is created on disk, resume data that vouches for
//! pieces of a file that is not there at all stops the torrent with
//! [`TorrentError::FilesMissing`] (see [`crate::storage::missing_data`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use essaim_core::{Bitfield, InfoHash, Metainfo};
use tokio::sync::{oneshot, Semaphore};

use crate::storage::{missing_data, Storage};
use crate::types::TorrentError;

/// What a check found: the storage, the pieces on disk, and whether they
/// are the resume data's as saved (nothing to save again).
pub(super) type Checked = Result<(Arc<Storage>, Bitfield, bool), TorrentError>;

/// A check in progress.
pub(super) struct CheckJob {
    pub done: oneshot::Receiver<Checked>,
    progress: Arc<AtomicU32>,
    pub total: u32,
    cancel: Arc<AtomicBool>,
}

impl CheckJob {
    /// Pieces hashed so far (0 while waiting for the check slot).
    pub fn checked(&self) -> u32 {
        self.progress.load(Ordering::Relaxed)
    }
}

impl Drop for CheckJob {
    /// A check no longer wanted (paused, removed) stops hashing.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// Where a torrent's data and resume data are.
pub(super) struct Place {
    pub root: PathBuf,
    /// `None`: `root/.essaim`.
    pub resume_dir: Option<PathBuf>,
}

/// Starts a check of `meta` at `place`; `full` hashes every piece whatever
/// the resume data says.
pub(super) fn start(
    meta: Arc<Metainfo>,
    place: Place,
    full: bool,
    slots: Arc<Semaphore>,
) -> CheckJob {
    let (tx, rx) = oneshot::channel();
    let progress = Arc::new(AtomicU32::new(0));
    let cancel = Arc::new(AtomicBool::new(false));
    let total = meta.info.layout.num_pieces();
    let job = CheckJob {
        done: rx,
        progress: progress.clone(),
        total,
        cancel: cancel.clone(),
    };
    tokio::spawn(async move {
        let res = run(meta, place, full, slots, progress, cancel).await;
        let _ = tx.send(res);
    });
    job
}

async fn run(
    meta: Arc<Metainfo>,
    place: Place,
    full: bool,
    slots: Arc<Semaphore>,
    progress: Arc<AtomicU32>,
    cancel: Arc<AtomicBool>,
) -> Checked {
    let info_hash = meta.info_hash;
    let m = meta.clone();
    let quick = tokio::task::spawn_blocking(move || quick(&m, &place, full))
        .await
        .map_err(|e| TorrentError::Other(e.to_string()))??;
    let storage = match quick {
        (storage, Some((have, as_saved))) => return Ok((storage, have, as_saved)),
        (storage, None) => storage,
    };
    // A full check: one torrent at a time.
    let _turn = slots
        .acquire_owned()
        .await
        .map_err(|_| TorrentError::Other("the session is closing".into()))?;
    if cancel.load(Ordering::Relaxed) {
        return Err(TorrentError::Other("check cancelled".into()));
    }
    let s = storage.clone();
    let have = tokio::task::spawn_blocking(move || {
        s.recheck_until(
            &|_| {
                progress.fetch_add(1, Ordering::Relaxed);
            },
            &cancel,
        )
    })
    .await
    .map_err(|e| TorrentError::Other(e.to_string()))??;
    tracing::debug!(%info_hash, pieces = have.count(), "check done");
    Ok((storage, have, false))
}

/// Opens the storage and reads resume data: the pieces it vouches for
/// (and whether none had to be hashed again), or `None` when every piece
/// must be hashed.
#[allow(clippy::type_complexity)]
fn quick(
    meta: &Metainfo,
    place: &Place,
    full: bool,
) -> Result<(Arc<Storage>, Option<(Bitfield, bool)>), TorrentError> {
    let info_hash: InfoHash = meta.info_hash;
    if !full {
        let resume_dir = place
            .resume_dir
            .clone()
            .unwrap_or_else(|| place.root.join(".essaim"));
        if let Some(path) = missing_data(&place.root, &meta.info, &resume_dir, &info_hash) {
            return Err(TorrentError::FilesMissing { path });
        }
    }
    let storage = Arc::new(Storage::open_with(
        &place.root,
        &meta.info,
        place.resume_dir.clone(),
    )?);
    if full {
        return Ok((storage, None));
    }
    let Some((mut have, verify)) = storage.load_resume(&info_hash) else {
        return Ok((storage, None));
    };
    let as_saved = verify.none_set();
    if !as_saved {
        // Written but maybe not flushed when saved: hash again.
        let good = storage.verify_pieces(&verify)?;
        storage.mark_unsynced(&good);
        for p in good.iter_set() {
            have.set(p);
        }
    }
    Ok((storage, Some((have, as_saved))))
}
