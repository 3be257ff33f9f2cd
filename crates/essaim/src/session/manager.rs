//! The session's manager: one task that owns the list of torrents and the
//! queue. It adds torrents (saving their record before it answers),
//! restores them at start, removes them, and after every change works out
//! which may run ([`essaim_proto::queue::admitted`]) and tells those whose
//! place changed.
//!
//! Torrents tell it their queue kind ([`Report::Kind`]) whenever it
//! changes, and when a seed limit is reached ([`Report::SeedLimit`]); it
//! never waits on a torrent except to remove it or to end the session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use essaim_core::{InfoHash, Magnet, Metainfo};
use essaim_proto::queue::{admitted, QueueEntry, QueueKind, QueueLimits};
use tokio::sync::{mpsc, oneshot};

use super::{Added, Entry, SessionError, Shared};
use crate::events::Event;
use crate::store::{Record, MAX_TORRENT, RECORD_VERSION};
use crate::torrent::{self, Report, Spawn, TorrentCmd};
use crate::types::{AddOptions, AddSource, QueueMove, SeedLimitAction, TorrentId};

pub(super) enum ManagerCmd {
    Add {
        source: AddSource,
        options: AddOptions,
        reply: oneshot::Sender<Result<Added, SessionError>>,
    },
    Remove {
        id: TorrentId,
        delete_data: bool,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    Force {
        id: TorrentId,
        force: bool,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    Move {
        id: TorrentId,
        to: QueueMove,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    /// The queue limits may have changed.
    LimitsChanged,
    Shutdown(oneshot::Sender<()>),
}

/// What the queue knows of a torrent.
struct Queued {
    position: u64,
    forced: bool,
    /// `None`: wants no place (paused, in error, checking).
    kind: Option<QueueKind>,
    /// What it was last told.
    admitted: bool,
    /// Its state changed: tell it again, whatever it was told.
    stale: bool,
    /// Scratch for [`Manager::recompute`].
    next: bool,
}

/// Reports taken in at most before the queue is worked out again.
const REPORT_BATCH: usize = 4096;

pub(super) struct Manager {
    shared: Arc<Shared>,
    reports: mpsc::UnboundedReceiver<Report>,
    queue: HashMap<TorrentId, Queued>,
    tasks: HashMap<TorrentId, tokio::task::JoinHandle<()>>,
    next_id: u64,
    next_position: u64,
}

impl Manager {
    pub fn new(shared: Arc<Shared>, reports: mpsc::UnboundedReceiver<Report>) -> Manager {
        Manager {
            shared,
            reports,
            queue: HashMap::new(),
            tasks: HashMap::new(),
            next_id: 1,
            next_position: 0,
        }
    }

    /// Brings back the torrents of the state folder.
    pub async fn restore(&mut self) {
        let Some(store) = self.shared.store.clone() else {
            return;
        };
        let loaded = match tokio::task::spawn_blocking(move || store.load()).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::error!("cannot read the saved torrents: {e}");
                return;
            }
            Err(e) => {
                tracing::error!("cannot read the saved torrents: {e}");
                return;
            }
        };
        for l in loaded {
            let r = l.record;
            let Some(ih) = r.info_hash() else { continue };
            let meta = l.torrent.as_deref().and_then(|b| match Metainfo::from_bytes(b) {
                Ok(m) if m.info_hash == ih => Some(Arc::new(m)),
                Ok(_) => {
                    tracing::warn!(infohash = %ih, "its saved .torrent is for another infohash");
                    None
                }
                Err(e) => {
                    tracing::warn!(infohash = %ih, "its saved .torrent does not parse: {e}");
                    None
                }
            });
            let magnet = r.magnet.as_deref().and_then(|m| Magnet::parse(m).ok());
            if meta.is_none() && magnet.is_none() {
                tracing::warn!(infohash = %ih, "neither a .torrent nor a magnet link is saved: left out");
                continue;
            }
            if self.shared.table().by_hash.contains_key(&ih) {
                continue;
            }
            self.next_id = self.next_id.max(r.id + 1);
            self.next_position = self.next_position.max(r.queue_position + 1);
            self.spawn(r, ih, meta, magnet);
        }
        self.recompute().await;
    }

    pub async fn run(mut self, mut cmds: mpsc::Receiver<ManagerCmd>) {
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(ManagerCmd::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    // The session was dropped without a shutdown.
                    None => {
                        self.shutdown().await;
                        return;
                    }
                    Some(cmd) => self.on_command(cmd).await,
                },
                Some(r) = self.reports.recv() => {
                    // Reports come in bursts (10,000 torrents checked at
                    // start): the queue is worked out once for the whole
                    // burst, not once per report (which made a start
                    // quadratic in the number of torrents).
                    let mut changed = self.on_report(r).await;
                    let mut batch = 0;
                    while batch < REPORT_BATCH {
                        let Ok(r) = self.reports.try_recv() else { break };
                        changed |= self.on_report(r).await;
                        batch += 1;
                    }
                    if changed {
                        self.recompute().await;
                    }
                }
            }
        }
    }

    async fn on_command(&mut self, cmd: ManagerCmd) {
        match cmd {
            ManagerCmd::Add {
                source,
                options,
                reply,
            } => {
                let res = self.add(source, options).await;
                let _ = reply.send(res);
            }
            ManagerCmd::Remove {
                id,
                delete_data,
                reply,
            } => {
                let res = self.remove(id, delete_data).await;
                let _ = reply.send(res);
            }
            ManagerCmd::Force { id, force, reply } => {
                let res = match self.queue.get_mut(&id) {
                    Some(q) => {
                        q.forced = force;
                        self.send(id, TorrentCmd::Force(force)).await;
                        Ok(())
                    }
                    None => Err(SessionError::NotFound(id.to_string())),
                };
                self.recompute().await;
                let _ = reply.send(res);
            }
            ManagerCmd::Move { id, to, reply } => {
                let res = self.move_in_queue(id, to).await;
                let _ = reply.send(res);
            }
            ManagerCmd::LimitsChanged => self.recompute().await,
            ManagerCmd::Shutdown(_) => {}
        }
    }

    /// Takes a report in; `true` when the queue must be worked out again.
    async fn on_report(&mut self, r: Report) -> bool {
        match r {
            Report::Kind { id, kind } => {
                if let Some(q) = self.queue.get_mut(&id) {
                    q.kind = kind;
                    if kind.is_none() {
                        q.admitted = false; // it gave its place back
                    } else {
                        q.stale = true;
                    }
                }
                return true;
            }
            Report::SeedLimit { id, reached } => match self.shared.settings().seed_limit_action {
                SeedLimitAction::Pause => {
                    tracing::info!("torrent {id}: {reached}, pausing it");
                    self.send(id, TorrentCmd::Pause).await
                }
                SeedLimitAction::Remove => {
                    tracing::info!("torrent {id}: {reached}, removing it");
                    if let Err(e) = self.remove(id, false).await {
                        tracing::warn!("cannot remove torrent {id} at its seed limit: {e}");
                    }
                }
            },
        }
        false
    }

    async fn send(&self, id: TorrentId, cmd: TorrentCmd) {
        let tx = self.shared.table().by_id.get(&id).map(|e| e.tx.clone());
        if let Some(tx) = tx {
            let _ = tx.send(cmd).await;
        }
    }

    /// Works out who may run, and tells those whose place changed.
    async fn recompute(&mut self) {
        let s = self.shared.settings();
        let limits = QueueLimits {
            downloads: s.max_active_downloads,
            seeds: s.max_active_seeds,
        };
        let entries: Vec<QueueEntry<TorrentId>> = self
            .queue
            .iter()
            .filter_map(|(id, q)| {
                Some(QueueEntry {
                    key: *id,
                    position: q.position,
                    kind: q.kind?,
                    force: q.forced,
                })
            })
            .collect();
        let yes = admitted(&entries, limits);
        for q in self.queue.values_mut() {
            q.next = false;
        }
        for id in yes {
            if let Some(q) = self.queue.get_mut(&id) {
                q.next = true;
            }
        }
        let mut changes = Vec::new();
        for (id, q) in self.queue.iter_mut() {
            if q.next != q.admitted || q.stale {
                q.admitted = q.next;
                q.stale = false;
                changes.push((*id, q.next));
            }
        }
        // Places given back first, so a limit is never passed.
        changes.sort_by_key(|(_, admit)| *admit);
        for (id, admit) in changes {
            self.send(id, TorrentCmd::Admit(admit)).await;
        }
    }

    fn spawn(
        &mut self,
        record: Record,
        info_hash: InfoHash,
        meta: Option<Arc<Metainfo>>,
        magnet: Option<Magnet>,
    ) -> TorrentId {
        let id = TorrentId(record.id);
        let private = meta.as_ref().is_some_and(|m| m.info.private);
        self.queue.insert(
            id,
            Queued {
                position: record.queue_position,
                forced: record.forced,
                kind: None,
                admitted: false,
                stale: false,
                next: false,
            },
        );
        let (tx, status, task) = torrent::spawn(Spawn {
            id,
            info_hash,
            record,
            meta,
            magnet,
            shared: self.shared.clone(),
        });
        let mut t = self.shared.table();
        t.by_hash.insert(info_hash, id);
        t.by_id.insert(
            id,
            Entry {
                info_hash,
                tx,
                status,
                private,
                active: false,
            },
        );
        drop(t);
        self.tasks.insert(id, task);
        id
    }

    async fn add(&mut self, source: AddSource, options: AddOptions) -> Result<Added, SessionError> {
        let (meta, magnet, bytes, uri) = match source {
            AddSource::Torrent(bytes) => {
                if bytes.len() as u64 > MAX_TORRENT {
                    return Err(SessionError::InvalidTorrent(format!(
                        "larger than {MAX_TORRENT} bytes"
                    )));
                }
                let meta = Metainfo::from_bytes(&bytes)
                    .map_err(|e| SessionError::InvalidTorrent(e.to_string()))?;
                (Some(Arc::new(meta)), None, Some(bytes), None)
            }
            AddSource::Magnet(text) => {
                let m = Magnet::parse(text.trim())
                    .map_err(|e| SessionError::InvalidMagnet(e.to_string()))?;
                let uri = m.to_uri();
                (None, Some(m), None, Some(uri))
            }
        };
        let info_hash = match (&meta, &magnet) {
            (Some(m), _) => m.info_hash,
            (None, Some(m)) => m.info_hash,
            (None, None) => return Err(SessionError::Invalid("nothing to add".into())),
        };
        if let Some(id) = self.shared.table().by_hash.get(&info_hash).copied() {
            return Ok(Added { id, existed: true });
        }
        let files = options
            .files
            .clone()
            .or_else(|| magnet.as_ref().and_then(|m| m.select_only.clone()));
        if let (Some(meta), Some(files)) = (&meta, &files) {
            let n = meta.info.files.len();
            if let Some(bad) = files.iter().find(|&&i| i >= n) {
                return Err(SessionError::Invalid(format!(
                    "file index {bad} is out of range (the torrent has {n} files)"
                )));
            }
        }
        let settings = self.shared.settings();
        let name = meta
            .as_ref()
            .map(|m| m.info.name.clone())
            .or_else(|| magnet.as_ref().and_then(|m| m.display_name.clone()));
        let record = Record {
            version: RECORD_VERSION,
            id: self.next_id,
            info_hash: info_hash.to_hex(),
            name: name.clone(),
            magnet: uri,
            save_path: options
                .save_path
                .clone()
                .unwrap_or_else(|| settings.download_dir.clone()),
            paused: options.paused.unwrap_or(settings.start_paused),
            forced: false,
            queue_position: self.next_position,
            options: options.options.clone(),
            files,
            peers: options.peers.clone(),
            added_at: torrent::unix_now(),
            completed_at: None,
            downloaded_total: 0,
            uploaded_total: 0,
            seeding_secs: 0,
            active_secs: 0,
            saved_at: torrent::unix_now(),
            running: false,
            seeding: false,
        };
        if let Some(store) = self.shared.store.clone() {
            let res = async {
                if let Some(b) = bytes {
                    store.save_torrent(&info_hash, b).await?;
                }
                store.save_record(&record).await
            }
            .await;
            let dir = || {
                self.shared
                    .store
                    .as_ref()
                    .map(|s| s.dir().to_path_buf())
                    .unwrap_or_default()
            };
            if let Err(source) = res {
                return Err(SessionError::State {
                    path: dir(),
                    source,
                });
            }
        }
        self.next_id += 1;
        self.next_position += 1;
        let _ = self.shared.events.send(Event::Added {
            id: TorrentId(record.id),
            info_hash,
            name: name.unwrap_or_else(|| info_hash.to_hex()),
        });
        let id = self.spawn(record, info_hash, meta, magnet);
        Ok(Added { id, existed: false })
    }

    async fn remove(&mut self, id: TorrentId, delete_data: bool) -> Result<(), SessionError> {
        let entry = {
            let mut t = self.shared.table();
            let e = t
                .by_id
                .remove(&id)
                .ok_or_else(|| SessionError::NotFound(id.to_string()))?;
            t.by_hash.remove(&e.info_hash);
            e
        };
        self.queue.remove(&id);
        let (tx, rx) = oneshot::channel();
        let res = if entry
            .tx
            .send(TorrentCmd::Remove(delete_data, tx))
            .await
            .is_ok()
        {
            rx.await.unwrap_or(Ok(()))
        } else {
            Ok(())
        };
        if let Some(task) = self.tasks.remove(&id) {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let _ = self.shared.events.send(Event::Removed {
            id,
            info_hash: entry.info_hash,
            data_deleted: delete_data && res.is_ok(),
        });
        self.recompute().await;
        res.map_err(SessionError::Torrent)
    }

    async fn move_in_queue(&mut self, id: TorrentId, to: QueueMove) -> Result<(), SessionError> {
        if !self.queue.contains_key(&id) {
            return Err(SessionError::NotFound(id.to_string()));
        }
        let mut order: Vec<TorrentId> = self.queue.keys().copied().collect();
        order.sort_by_key(|i| (self.queue.get(i).map(|q| q.position), *i));
        let Some(at) = order.iter().position(|&i| i == id) else {
            return Ok(());
        };
        order.remove(at);
        let to = match to {
            QueueMove::Top => 0,
            QueueMove::Up => at.saturating_sub(1),
            QueueMove::Down => (at + 1).min(order.len()),
            QueueMove::Bottom => order.len(),
        };
        order.insert(to, id);
        // Positions 0..n in the new order; only those that moved are told.
        for (pos, tid) in order.into_iter().enumerate() {
            let pos = pos as u64;
            if let Some(q) = self.queue.get_mut(&tid) {
                if q.position != pos {
                    q.position = pos;
                    self.send(tid, TorrentCmd::SetPosition(pos)).await;
                }
            }
        }
        self.next_position = self.queue.len() as u64;
        self.recompute().await;
        Ok(())
    }

    async fn shutdown(&mut self) {
        let txs: Vec<_> = self
            .shared
            .table()
            .by_id
            .values()
            .map(|e| e.tx.clone())
            .collect();
        for tx in txs {
            let _ = tx.send(TorrentCmd::Shutdown).await;
        }
        let tasks: Vec<_> = self.tasks.drain().map(|(_, t)| t).collect();
        let all = futures_join_all(tasks);
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!("some torrents did not stop within 10 s");
        }
    }
}

/// Waits for every task.
async fn futures_join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
