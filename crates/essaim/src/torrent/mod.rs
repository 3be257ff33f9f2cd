//! The torrent actor: one task per torrent owns everything about it (its
//! record, its data, its connections and protocol machine) from the
//! moment it is added until it is removed or the session ends.
//!
//! Design: the session's manager and the listener talk to it through one
//! command channel; it publishes a [`TorrentSummary`] on a watch channel,
//! reports to the manager what the queue needs ([`Report`]) and sends
//! [`Event`]s. Nothing else touches its state, so no lock guards it.
//!
//! Its life is a small set of facts, reconciled after every input
//! ([`Actor::reconcile`]):
//! - what the user wants: paused or not, forced or not (kept in its
//!   [`Record`], saved at once);
//! - what the session allows: a place in the queue (`admitted`);
//! - what it knows: the metadata (a magnet may not have it yet) and the
//!   pieces on disk (unknown until checked);
//! - whether it runs: a [`Net`] exists (connections, announcer, the magnet
//!   phase or the swarm).
//!
//! A torrent that wants to run but does not know its pieces checks them
//! first ([`check`]), keeping its place in the queue meanwhile (under the
//! kind it last had), and starts once checked and admitted; when the check
//! tells otherwise (a seed whose files lost pieces), it says so to the
//! manager. A magnet link runs in its magnet phase until the metadata is
//! in, checks what is already on disk while its peers stay connected, then
//! its swarm adopts those peers. Pausing, losing its place, an error or a
//! removal drop the `Net` (connections closed, `stopped` announced in the
//! background) and keep the pieces known.
//!
//! A paused or queued torrent costs no timer: the actor sleeps on its
//! channel. A running one ticks twice a second while it has peers or work
//! in flight, and otherwise only when something is due (a peer to retry,
//! resume data to save, a seed limit).
//!
//! Durability, as before the daemon: a piece counts once it is verified
//! and written; resume data is saved every [`RESUME_INTERVAL`] in the
//! background (data synced first), and at once on completion and when
//! stopping (pieces not yet synced then saved as "to verify").

mod check;
pub(crate) mod cmdq;
mod net;
mod status;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use essaim_core::{Bitfield, InfoHash, Magnet, Metainfo, PeerId};
use essaim_proto::magnet::{MagnetConfig, MagnetPhase};
use essaim_proto::queue::QueueKind;
use essaim_proto::seed_limits::{SeedLimitReached, SeedLimits, SeedProgress};
use essaim_proto::swarm::{Output, Swarm, SwarmConfig};
use essaim_wire::peer::Handshake;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use crate::events::Event;
use crate::peer_list::PeerSource;
use crate::rate_limit::{Limiter, Limits};
use crate::session::Shared;
use crate::storage::Storage;
use crate::store::Record;
use crate::tracker::AnnounceStats;
use crate::types::{
    FileStatus, OptionsPatch, PeerStatus, PieceMap, TorrentError, TorrentId, TorrentState,
    TorrentSummary, TrackerStatus,
};
use check::{CheckJob, Place};
use net::{Net, NetEvent, Phase};

pub const RESUME_INTERVAL: Duration = Duration::from_secs(10);
/// Totals and times are saved in the record at least this often while
/// they change (a crash loses at most this much of the statistics).
const RECORD_INTERVAL: Duration = Duration::from_secs(60);
/// The tick of a torrent with peers or work in flight.
const TICK: Duration = Duration::from_millis(500);

/// What the manager and the listener tell a torrent.
#[derive(Debug)]
pub(crate) enum TorrentCmd {
    /// An incoming connection whose handshake names this torrent; ours was
    /// already sent back.
    /// (Boxed, as the other large variant: every command slot of every
    /// torrent's channel is as large as the largest variant.)
    Incoming(Box<(TcpStream, SocketAddr, Handshake)>),
    AddPeers(Vec<SocketAddr>, PeerSource),
    Pause,
    Resume,
    /// A place in the queue, or none.
    Admit(bool),
    Force(bool),
    SetPosition(u64),
    Recheck,
    Reannounce,
    SetOptions(Box<OptionsPatch>, oneshot::Sender<Result<(), TorrentError>>),
    Query(Query),
    /// Removes the torrent (and its data with `true`), then ends.
    Remove(bool, oneshot::Sender<Result<(), TorrentError>>),
    /// The session ends: stop, save, end.
    Shutdown,
    /// The session's settings changed (caps, slots).
    SettingsChanged,
    /// Answered once every command sent before it is carried out.
    Sync(oneshot::Sender<()>),
}

/// Questions whose answers are too big to publish all the time.
#[derive(Debug)]
pub(crate) enum Query {
    Files(oneshot::Sender<Vec<FileStatus>>),
    Peers(oneshot::Sender<Vec<PeerStatus>>),
    Trackers(oneshot::Sender<Vec<TrackerStatus>>),
    Pieces(oneshot::Sender<Option<PieceMap>>),
    PeerTotals(oneshot::Sender<HashMap<PeerId, (u64, u64)>>),
    /// The .torrent file (once the metadata is known).
    Metainfo(oneshot::Sender<Option<Vec<u8>>>),
}

/// What the manager needs to know to run the queue.
#[derive(Debug)]
pub(crate) enum Report {
    /// The torrent's queue kind: `None` when it wants no place (paused,
    /// in error, checking).
    Kind {
        id: TorrentId,
        kind: Option<QueueKind>,
    },
    /// A seed limit was reached: the manager applies the session's action.
    SeedLimit {
        id: TorrentId,
        reached: SeedLimitReached,
    },
}

/// Everything a torrent starts from.
pub(crate) struct Spawn {
    pub id: TorrentId,
    pub info_hash: InfoHash,
    pub record: Record,
    pub meta: Option<Arc<Metainfo>>,
    pub magnet: Option<Magnet>,
    pub shared: Arc<Shared>,
}

/// Starts a torrent's actor.
pub(crate) fn spawn(
    s: Spawn,
) -> (
    cmdq::Sender<TorrentCmd>,
    watch::Receiver<TorrentSummary>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = cmdq::channel(64);
    let actor = Box::new(Actor::new(s));
    let status = actor.status.subscribe();
    let span = tracing::info_span!("torrent", infohash = %actor.info_hash);
    let task = tokio::spawn(tracing::Instrument::instrument(actor.run(rx), span));
    (tx, status, task)
}

struct Actor {
    id: TorrentId,
    info_hash: InfoHash,
    shared: Arc<Shared>,
    record: Record,
    meta: Option<Arc<Metainfo>>,
    magnet: Option<Magnet>,
    magnet_uri: String,
    storage: Option<Arc<Storage>>,
    /// The pieces on disk while the swarm does not run (it keeps them
    /// while it does); `None` until checked.
    have: Option<Bitfield>,
    /// Pieces not wanted (unselected files); `None`: all wanted.
    skipped: Option<Bitfield>,
    check: Option<CheckJob>,
    /// The check in progress runs under a magnet phase's connections.
    check_keeps_net: bool,
    admitted: bool,
    /// Its queue kind was reported and the manager's answer has not come.
    awaiting_admission: bool,
    error: Option<TorrentError>,
    stopped_by: Option<SeedLimitReached>,
    net: Option<Net>,
    upload: Arc<Limiter>,
    download: Arc<Limiter>,
    status: watch::Sender<TorrentSummary>,
    /// The kind last reported to the manager.
    reported: Option<Option<QueueKind>>,
    /// The state last sent as an event.
    last_state: Option<TorrentState>,
    /// While running: since when, and since when seeding.
    running_since: Option<Instant>,
    seeding_since: Option<Instant>,
    /// The last time a payload byte went either way (for the idle limit).
    last_activity: Instant,
    last_totals: (u64, u64),
    record_dirty: bool,
    record_saved: Instant,
    resume_dirty: bool,
    last_resume: Instant,
    saving: Option<tokio::task::JoinHandle<Result<(), crate::storage::StorageError>>>,
    /// When the swarm last had its tick.
    last_swarm_tick: Instant,
    wake: Pin<Box<tokio::time::Sleep>>,
    wake_at: Option<Instant>,
}

/// What to do after a command.
enum Flow {
    Continue,
    Exit,
}

impl Actor {
    fn new(s: Spawn) -> Actor {
        let now = Instant::now();
        let magnet_uri = match (&s.meta, &s.magnet) {
            (Some(m), _) => m.magnet(),
            (None, Some(m)) => m.to_uri(),
            (None, None) => format!("magnet:?xt=urn:btih:{}", s.info_hash.to_hex()),
        };
        let summary = status::placeholder(s.id, s.info_hash, &s.record, &magnet_uri);
        let (status, _) = watch::channel(summary);
        let mut actor = Actor {
            id: s.id,
            info_hash: s.info_hash,
            shared: s.shared,
            upload: Arc::new(Limiter::new(s.record.options.upload_limit)),
            download: Arc::new(Limiter::new(s.record.options.download_limit)),
            record: s.record,
            meta: s.meta,
            magnet: s.magnet,
            magnet_uri,
            storage: None,
            have: None,
            skipped: None,
            check: None,
            check_keeps_net: false,
            admitted: false,
            awaiting_admission: false,
            error: None,
            stopped_by: None,
            net: None,
            status,
            reported: None,
            last_state: None,
            running_since: None,
            seeding_since: None,
            last_activity: now,
            last_totals: (0, 0),
            record_dirty: false,
            record_saved: now,
            resume_dirty: false,
            last_resume: now,
            saving: None,
            last_swarm_tick: now,
            wake: Box::pin(tokio::time::sleep(Duration::ZERO)),
            wake_at: None,
        };
        actor.update_skipped();
        actor
    }

    /// The actor's loop. The actor lives in a box of its own, so the task
    /// holds a pointer and this loop's small state, not a copy of it.
    async fn run(mut self: Box<Self>, mut cmds: cmdq::Receiver<TorrentCmd>) {
        Box::pin(self.reconcile()).await;
        self.publish();
        loop {
            self.arm_timer();
            tokio::select! {
                cmd = cmds.recv() => {
                    // The handlers are boxed: the task of a torrent that
                    // waits (most of them, most of the time) keeps only
                    // this loop's state, not the largest handler's.
                    let cmd = cmd.unwrap_or(TorrentCmd::Shutdown);
                    let flow = Box::pin(self.on_command(cmd)).await;
                    if let Flow::Exit = flow {
                        return;
                    }
                }
                ev = next_net(&mut self.net) => Box::pin(self.on_net(ev)).await,
                res = check_done(&mut self.check) => Box::pin(self.on_checked(res)).await,
                _ = &mut self.wake, if self.wake_at.is_some() => {
                    self.wake_at = None;
                    Box::pin(self.on_tick()).await;
                }
            }
            Box::pin(self.after_turn()).await;
        }
    }

    // ----- commands ---------------------------------------------------------

    async fn on_command(&mut self, cmd: TorrentCmd) -> Flow {
        match cmd {
            TorrentCmd::Incoming(incoming) => {
                let (stream, addr, hs) = *incoming;
                let max = self.max_peers();
                if let Some(net) = &mut self.net {
                    net.on_connected(stream, addr, hs, true, max);
                }
            }
            TorrentCmd::AddPeers(addrs, source) => {
                let max = self.max_peers();
                if let Some(net) = &mut self.net {
                    net.add_peers(addrs, source);
                    net.dial_more(max);
                }
            }
            TorrentCmd::Pause => {
                // A check in progress is dropped; it starts again on resume.
                self.check = None;
                self.check_keeps_net = false;
                if !self.record.paused {
                    self.record.paused = true;
                    self.save_record().await;
                }
            }
            TorrentCmd::Resume => {
                let was = self.record.paused || self.error.is_some();
                self.record.paused = false;
                self.stopped_by = None;
                if self.error.take().is_some() {
                    // Try again from what is on disk.
                    self.have = None;
                }
                if was {
                    self.save_record().await;
                }
            }
            TorrentCmd::Admit(yes) => {
                self.admitted = yes;
                self.awaiting_admission = false;
            }
            TorrentCmd::Force(yes) => {
                if self.record.forced != yes {
                    self.record.forced = yes;
                    self.save_record().await;
                }
            }
            TorrentCmd::SetPosition(p) => {
                if self.record.queue_position != p {
                    self.record.queue_position = p;
                    self.save_record().await;
                }
            }
            TorrentCmd::Recheck => Box::pin(self.recheck()).await,
            TorrentCmd::Reannounce => {
                if let Some(net) = &mut self.net {
                    net.want_more();
                    net.announce_due(Instant::now());
                }
            }
            TorrentCmd::SetOptions(patch, reply) => {
                let res = Box::pin(self.set_options(*patch)).await;
                let _ = reply.send(res);
            }
            TorrentCmd::Query(q) => self.answer(q),
            TorrentCmd::Remove(delete_data, reply) => {
                let res = Box::pin(self.remove(delete_data)).await;
                let _ = reply.send(res);
                return Flow::Exit;
            }
            TorrentCmd::Shutdown => {
                Box::pin(self.shutdown()).await;
                return Flow::Exit;
            }
            TorrentCmd::SettingsChanged => {}
            TorrentCmd::Sync(done) => {
                let _ = done.send(());
                return Flow::Continue;
            }
        }
        Box::pin(self.reconcile()).await;
        self.publish();
        Flow::Continue
    }

    /// Brings what runs in line with what is wanted and allowed.
    async fn reconcile(&mut self) {
        let wants = !self.record.paused && self.error.is_none();
        // What is on disk, if unknown (a running swarm knows; a magnet
        // phase checks once its metadata is in).
        if wants
            && self.meta.is_some()
            && self.have.is_none()
            && self.check.is_none()
            && self.net.is_none()
        {
            self.start_check(false);
        }
        let kind = self.kind();
        if self.reported != Some(kind) {
            self.reported = Some(kind);
            if kind.is_none() {
                // The place is given back; a new one is needed.
                self.admitted = false;
            }
            self.awaiting_admission = kind.is_some();
            let _ = self.shared.reports.send(Report::Kind { id: self.id, kind });
        }
        let run = kind.is_some() && (self.admitted || self.record.forced);
        if run && self.net.is_none() {
            Box::pin(self.start_net()).await;
        } else if !run && self.net.is_some() {
            Box::pin(self.stop_net(false)).await;
        }
        self.publish_state();
    }

    /// The queue kind (see [`Report::Kind`]). While its data is checked,
    /// a torrent keeps its place in the queue under the kind it last had
    /// (complete once: a seed), so that after a restart the queue order
    /// holds while torrents finish their checks in any order; it starts
    /// only once checked.
    fn kind(&self) -> Option<QueueKind> {
        if self.record.paused || self.error.is_some() {
            return None;
        }
        if self.meta.is_none() {
            return Some(QueueKind::Download);
        }
        if let Some(s) = self.net.as_ref().and_then(|n| n.swarm_ref()) {
            return Some(if s.is_complete() {
                QueueKind::Seed
            } else {
                QueueKind::Download
            });
        }
        if self.check_keeps_net {
            return Some(QueueKind::Download);
        }
        Some(match &self.have {
            Some(have) if self.wanted_complete(have) => QueueKind::Seed,
            Some(_) => QueueKind::Download,
            None if self.record.completed_at.is_some() => QueueKind::Seed,
            None => QueueKind::Download,
        })
    }

    fn wanted_complete(&self, have: &Bitfield) -> bool {
        match &self.skipped {
            None => have.is_full(),
            Some(skip) => (0..have.len()).all(|p| have.get(p) || skip.get(p)),
        }
    }

    fn max_peers(&self) -> usize {
        self.record
            .options
            .max_peers
            .unwrap_or_else(|| self.shared.settings().max_peers_per_torrent)
    }

    /// The caps a running torrent's peers go through: (upload, download).
    fn limits(&self) -> (Limits, Limits) {
        (
            Limits(vec![self.shared.upload.clone(), self.upload.clone()]),
            Limits(vec![self.shared.download.clone(), self.download.clone()]),
        )
    }

    fn place(&self) -> Place {
        Place {
            root: self.record.save_path.clone(),
            resume_dir: self.shared.store.as_ref().map(|s| s.resume_dir()),
        }
    }

    fn start_check(&mut self, full: bool) {
        let Some(meta) = self.meta.clone() else {
            return;
        };
        self.check = Some(check::start(
            meta,
            self.place(),
            full,
            self.shared.check_slots.clone(),
        ));
        self.check_keeps_net = self.net.is_some();
    }

    async fn recheck(&mut self) {
        if self.meta.is_none() {
            return;
        }
        if matches!(self.net.as_ref().map(|n| &n.phase), Some(Phase::Magnet(_))) {
            return; // checks anyway once the metadata is in
        }
        if self.net.is_some() {
            self.stop_net(false).await;
        }
        self.error = None;
        self.have = None;
        self.storage = None;
        self.start_check(true);
    }

    /// A check finished.
    async fn on_checked(&mut self, res: check::Checked) {
        let keeps_net = std::mem::take(&mut self.check_keeps_net);
        self.check = None;
        match res {
            Ok((storage, have, from_resume)) => {
                self.storage = Some(storage);
                // What a full check found is saved soon; resume data taken
                // as it was needs no rewrite.
                if !from_resume {
                    self.resume_dirty = true;
                }
                if keeps_net && self.net.is_some() {
                    self.adopt(have);
                } else {
                    self.have = Some(have);
                }
            }
            Err(e) => self.fail(e).await,
        }
        self.reconcile().await;
    }

    // ----- running ----------------------------------------------------------

    fn swarm_config(&self, have_full: bool) -> SwarmConfig {
        let settings = self.shared.settings();
        let private = self.meta.as_ref().is_some_and(|m| m.info.private);
        SwarmConfig {
            upload_slots: settings.upload_slots,
            super_seed: settings.initial_seeding && have_full,
            listen_port: Some(self.shared.port),
            seed: rand::random(),
            pex: !private,
            dht_port: self.dht_port(private),
            ..SwarmConfig::default()
        }
    }

    fn dht_port(&self, private: bool) -> Option<u16> {
        if private {
            return None;
        }
        self.shared
            .dht
            .as_ref()
            .and_then(|d| d.local_addr())
            .map(|a| a.port())
    }

    /// A swarm over `have`, with unselected files skipped.
    fn new_swarm(&self, meta: &Metainfo, have: Bitfield) -> Swarm {
        let full = have.is_full();
        let mut swarm = Swarm::new(
            meta.info_hash,
            meta.info.layout.clone(),
            have,
            Some(bytes::Bytes::from(meta.info_bytes.clone())),
            self.swarm_config(full),
        );
        if let Some(skip) = &self.skipped {
            swarm.set_skipped(skip, Instant::now());
            // A `Completed` here is no news: the pieces were there.
            while swarm.poll_output().is_some() {}
        }
        swarm
    }

    async fn start_net(&mut self) {
        let private = self.meta.as_ref().is_some_and(|m| m.info.private);
        let phase = match (&self.meta, &self.have) {
            (Some(meta), Some(have)) => Phase::Swarm(Box::new(self.new_swarm(meta, have.clone()))),
            (Some(_), None) => return, // checked first
            (None, _) => Phase::Magnet(Box::new(MagnetPhase::new(
                self.info_hash,
                MagnetConfig {
                    client: concat!("essaim ", env!("CARGO_PKG_VERSION")).to_owned(),
                    listen_port: Some(self.shared.port),
                    pex: true,
                    dht_port: self.dht_port(false),
                },
            ))),
        };
        let mut net = Net::new(
            phase,
            self.info_hash,
            self.shared.clone(),
            self.meta.clone(),
            self.storage.clone(),
            self.limits(),
            private,
        );
        let mut peers = self.record.peers.clone();
        if let Some(m) = &self.magnet {
            peers.extend(m.peers.iter().filter_map(|p| p.parse::<SocketAddr>().ok()));
        }
        net.add_peers(peers, PeerSource::Manual);
        let trackers = self.trackers();
        net.start_discovery(&trackers, self.announce_stats_with(None));
        net.announce_due(Instant::now());
        net.start_dht().await;
        net.dial_more(self.max_peers());
        self.net = Some(net);
        self.shared.set_active(self.info_hash, true);
        let now = Instant::now();
        self.running_since = Some(now);
        self.last_activity = now;
        self.last_totals = (0, 0);
        self.note_seeding(now);
    }

    /// The tracker tiers: the torrent's, or a magnet link's (one tier
    /// each, as libtorrent does).
    fn trackers(&self) -> Vec<Vec<String>> {
        match (&self.meta, &self.magnet) {
            (Some(m), _) if !m.trackers.is_empty() => m.trackers.clone(),
            (_, Some(mg)) => mg.trackers.iter().map(|t| vec![t.clone()]).collect(),
            _ => Vec::new(),
        }
    }

    /// Stops running: connections closed, `stopped` announced, totals and
    /// resume data saved. When the session `ending`, the announce is
    /// awaited, and the record is written only if bytes moved: its clocks
    /// keep running in it until the session's end ([`crate::store::RunLog`]).
    async fn stop_net(&mut self, ending: bool) {
        let Some(mut net) = self.net.take() else {
            return;
        };
        self.shared.set_active(self.info_hash, false);
        let now = Instant::now();
        self.account(now, &mut net);
        if let Some(s) = net.swarm() {
            self.have = Some(s.have().clone());
        }
        let announcer = net.stop();
        self.save_resume_now().await;
        if ending {
            if self.record_dirty {
                self.save_record().await;
            }
        } else {
            self.running_since = None;
            self.seeding_since = None;
            self.save_record().await;
        }
        if let (true, Some(task)) = (ending, announcer) {
            let _ = tokio::time::timeout(Duration::from_secs(7), task).await;
        }
    }

    /// Whether the record's clock flags ([`Record::running`],
    /// [`Record::seeding`]) say otherwise than the torrent's clocks. Not
    /// while it checks or waits for its place (a restart would otherwise
    /// write every record, only to write it back).
    fn clocks_stale(&self, strict: bool) -> bool {
        if !strict && (self.check.is_some() || self.awaiting_admission) {
            return false;
        }
        (self.running_since.is_some(), self.seeding_since.is_some())
            != (self.record.running, self.record.seeding)
    }

    /// Moves the whole seconds of the running clocks to the record (the
    /// clocks keep the rest).
    fn sync_clocks(&mut self, now: Instant) {
        if let Some(since) = self.running_since {
            let secs = now.saturating_duration_since(since).as_secs();
            // Time alone does not make the record worth a write: it goes
            // to disk with the next one (bytes moved, a state change, the
            // stop).
            if secs > 0 {
                self.record.active_secs = self.record.active_secs.saturating_add(secs);
                self.running_since = Some(since + Duration::from_secs(secs));
            }
        }
        if let Some(since) = self.seeding_since {
            let secs = now.saturating_duration_since(since).as_secs();
            if secs > 0 {
                self.record.seeding_secs = self.record.seeding_secs.saturating_add(secs);
                self.seeding_since = Some(since + Duration::from_secs(secs));
            }
        }
    }

    /// Adds the time and bytes of the run so far to the record.
    fn account(&mut self, now: Instant, net: &mut Net) {
        self.sync_clocks(now);
        if let Some(s) = net.swarm() {
            let st = s.stats(now);
            let (d, u) = (st.downloaded, st.uploaded);
            self.record.downloaded_total += d.saturating_sub(self.last_totals.0);
            self.record.uploaded_total += u.saturating_sub(self.last_totals.1);
            if (d, u) != self.last_totals {
                self.last_activity = now;
                self.record_dirty = true;
            }
            self.last_totals = (d, u);
        }
    }

    /// Starts or stops the seeding clock as the swarm is complete or not.
    fn note_seeding(&mut self, now: Instant) {
        let seeding = self
            .net
            .as_ref()
            .and_then(|n| n.swarm_ref())
            .is_some_and(|s| s.is_complete());
        match (seeding, self.seeding_since) {
            (true, None) => self.seeding_since = Some(now),
            (false, Some(since)) => {
                self.record.seeding_secs = self
                    .record
                    .seeding_secs
                    .saturating_add(now.saturating_duration_since(since).as_secs());
                self.seeding_since = None;
            }
            _ => {}
        }
    }

    /// The metadata is in and the data checked: the swarm takes over the
    /// magnet phase's connections.
    fn adopt(&mut self, have: Bitfield) {
        let (Some(meta), Some(storage)) = (self.meta.clone(), self.storage.clone()) else {
            return;
        };
        let swarm = self.new_swarm(&meta, have);
        let stats = self.announce_stats_with(Some(&swarm));
        if let Some(net) = &mut self.net {
            net.adopt(swarm, meta, storage);
            net.update_announce(stats);
        }
        self.note_seeding(Instant::now());
    }

    async fn on_net(&mut self, ev: NetEvent) {
        let Some(net) = &mut self.net else {
            return;
        };
        match ev {
            NetEvent::Peer(ev) => {
                net.on_peer_event(ev);
                // Take what else is queued before the outputs go out.
                for _ in 0..256 {
                    match net.try_peer_event() {
                        Some(ev) => net.on_peer_event(ev),
                        None => break,
                    }
                }
            }
            NetEvent::Disk((piece, res, data)) => {
                net.on_disk(piece, res, &data);
                if let Some(s) = net.swarm() {
                    s.recycle_buffer(data);
                }
            }
            NetEvent::Dial(res) => {
                let max = self.max_peers();
                if let Some(net) = &mut self.net {
                    net.on_dial(res, max);
                }
            }
            NetEvent::Announced(f) => {
                let got = net
                    .announcer
                    .as_mut()
                    .and_then(|a| a.announces.handle_finished(f, tokio::time::Instant::now()));
                if let Some(addrs) = got {
                    net.add_peers(addrs, PeerSource::Tracker);
                    let max = self.max_peers();
                    if let Some(net) = &mut self.net {
                        net.dial_more(max);
                    }
                }
                self.tracker_events();
            }
            NetEvent::DhtPeers(addrs) => {
                net.add_peers(addrs, PeerSource::Dht);
                let max = self.max_peers();
                if let Some(net) = &mut self.net {
                    net.dial_more(max);
                }
            }
        }
    }

    /// Events for the announces that ended since the last look.
    fn tracker_events(&mut self) {
        let Some(a) = self.net.as_mut().and_then(|n| n.announcer.as_mut()) else {
            return;
        };
        let st = a.announces.status();
        a.seen.resize(st.trackers.len(), (0, 0));
        for (t, seen) in st.trackers.iter().zip(a.seen.iter_mut()) {
            if (t.successes, t.failures) == *seen {
                continue;
            }
            let failed = t.failures > seen.1;
            *seen = (t.successes, t.failures);
            let _ = self.shared.events.send(Event::TrackerReply {
                id: self.id,
                url: t.url.clone(),
                error: if failed {
                    t.last_error.clone()
                } else {
                    t.warning.clone()
                },
                seeders: t.seeders,
                leechers: t.leechers,
            });
        }
    }

    /// After every input: the machine's outputs, completion, errors,
    /// the status.
    async fn after_turn(&mut self) {
        let mut outs = Vec::new();
        if let Some(net) = &mut self.net {
            net.drain_outputs(&mut outs);
        }
        for o in outs {
            match o {
                Output::PieceVerified(_) => self.resume_dirty = true,
                Output::Completed => Box::pin(self.on_completed()).await,
                Output::MetadataReceived(info) => Box::pin(self.on_metadata(info)).await,
                _ => {}
            }
        }
        let disk_error = self.net.as_mut().and_then(|n| n.disk_error.take());
        if let Some(e) = disk_error {
            Box::pin(self.fail(e.into())).await;
            Box::pin(self.reconcile()).await;
        }
        let kind = self.kind();
        if self.reported != Some(kind) {
            Box::pin(self.reconcile()).await;
        }
        if self.shared.store.is_some() && self.clocks_stale(false) {
            Box::pin(self.save_record()).await;
        }
        self.publish_state();
    }

    async fn on_completed(&mut self) {
        tracing::info!(name = %self.name(), "download complete");
        self.resume_dirty = true;
        // Resume saved before anyone hears of it.
        self.save_resume_now().await;
        if self.record.completed_at.is_none() {
            self.record.completed_at = Some(unix_now());
        }
        let now = Instant::now();
        self.note_seeding(now);
        self.save_record().await;
        let _ = self.shared.events.send(Event::Completed { id: self.id });
        let stats = self.announce_stats();
        if let Some(net) = &mut self.net {
            net.update_announce(stats);
        }
    }

    /// A magnet's info dictionary arrived (verified against the infohash).
    async fn on_metadata(&mut self, info: bytes::Bytes) {
        let trackers = self
            .magnet
            .as_ref()
            .map(|m| m.trackers.iter().map(|t| vec![t.clone()]).collect())
            .unwrap_or_default();
        let meta = match Metainfo::from_info_bytes(&info, trackers) {
            Ok(m) => m,
            Err(e) => {
                self.fail(TorrentError::InvalidMetadata(e.to_string()))
                    .await;
                self.reconcile().await;
                return;
            }
        };
        let meta = Arc::new(meta);
        tracing::info!(name = %meta.info.name, "metadata received");
        if let Some(store) = self.shared.store.clone() {
            let res = store
                .save_torrent(&self.info_hash, meta.to_torrent_bytes())
                .await;
            if res.is_err() {
                tracing::warn!("cannot save the torrent's metainfo: {res:?}");
            }
        }
        self.record.name = Some(meta.info.name.clone());
        self.meta = Some(meta.clone());
        self.magnet_uri = meta.magnet();
        // A magnet's `so=` (or files chosen when adding) now has a meaning.
        self.update_skipped();
        self.save_record().await;
        let _ = self.shared.events.send(Event::MetadataReceived {
            id: self.id,
            name: meta.info.name.clone(),
        });
        // Check what is already there while the peers stay connected.
        self.start_check(false);
    }

    /// Stops on an error: it is kept until the user resumes or rechecks.
    async fn fail(&mut self, e: TorrentError) {
        tracing::warn!(name = %self.name(), "stopped: {e}");
        if self.net.is_some() {
            self.stop_net(false).await;
        }
        self.check = None;
        self.check_keeps_net = false;
        let _ = self.shared.events.send(Event::Error {
            id: self.id,
            error: e.clone(),
        });
        self.error = Some(e);
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let max = self.max_peers();
        if let Some(net) = &mut self.net {
            if now.saturating_duration_since(self.last_swarm_tick) >= Duration::from_secs(1) {
                self.last_swarm_tick = now;
                match &mut net.phase {
                    Phase::Swarm(s) => s.handle_tick(now),
                    Phase::Magnet(m) => m.handle_tick(now),
                }
            }
            net.dial_more(max);
            let complete = net.swarm_ref().is_some_and(|s| s.is_complete());
            net.maybe_search_dht(now, complete).await;
            // A leecher short of peers asks the trackers again (never
            // more often than their min interval). A seed waits for its
            // regular announce: thousands of idle seeds must not hammer a
            // tracker (leechers find seeds, not the other way round).
            let few = net.peer_count() < max / 2;
            if few && !complete {
                net.want_more();
            }
            net.announce_due(now);
        }
        if let Some(mut net) = self.net.take() {
            self.account(now, &mut net);
            self.net = Some(net);
            let stats = self.announce_stats();
            if let Some(net) = &mut self.net {
                net.update_announce(stats);
            }
            self.check_seed_limits();
        }
        if self.saving.as_ref().is_some_and(|h| h.is_finished()) {
            self.finish_save().await;
        }
        if self.resume_dirty
            && self.saving.is_none()
            && now.saturating_duration_since(self.last_resume) >= RESUME_INTERVAL
        {
            self.start_durable_save();
        }
        if self.record_dirty && now.saturating_duration_since(self.record_saved) >= RECORD_INTERVAL
        {
            self.save_record().await;
        }
        self.publish();
    }

    /// Reports a reached seed limit to the manager (which pauses or
    /// removes the torrent).
    fn check_seed_limits(&mut self) {
        let Some(since) = self.seeding_since else {
            return;
        };
        if self.stopped_by.is_some() {
            return;
        }
        let now = Instant::now();
        let limits = self.seed_limits();
        let progress = self.seed_progress(now, since);
        if let Some(reached) = limits.reached(&progress) {
            tracing::info!(name = %self.name(), "{reached}");
            self.stopped_by = Some(reached);
            let _ = self.shared.reports.send(Report::SeedLimit {
                id: self.id,
                reached,
            });
        }
    }

    fn seed_limits(&self) -> SeedLimits {
        let s = self.shared.settings();
        let o = &self.record.options;
        SeedLimits {
            ratio: o.seed_ratio.resolve(s.seed_ratio),
            seeding_time: o.seed_time.resolve(s.seed_time).map(Duration::from_secs),
            idle_time: o
                .seed_idle_time
                .resolve(s.seed_idle_time)
                .map(Duration::from_secs),
        }
    }

    fn seed_progress(&self, now: Instant, seeding_since: Instant) -> SeedProgress {
        SeedProgress {
            uploaded: self.record.uploaded_total,
            downloaded: self.record.downloaded_total,
            size: self.wanted_size(),
            seeding_time: Duration::from_secs(self.record.seeding_secs)
                .saturating_add(now.saturating_duration_since(seeding_since)),
            idle_time: now.saturating_duration_since(self.last_activity),
        }
    }

    /// When the actor must wake next, if nothing happens before.
    fn next_wakeup(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut at: Option<Instant> = None;
        let mut soon = |t: Instant| {
            at = Some(at.map_or(t, |a| a.min(t)));
        };
        if self.check.is_some() {
            soon(now + TICK); // progress
        }
        if let Some(net) = &self.net {
            if let Some(t) = net.announce_at() {
                soon(t.max(now));
            }
            if net.busy() {
                soon(now + TICK);
            } else {
                let complete = net.swarm_ref().is_some_and(|s| s.is_complete());
                if let Some(t) = net.next_dial(complete) {
                    soon(t.max(now + TICK));
                }
                if let Some(t) = net.dht_due(complete) {
                    soon(t.max(now + TICK));
                }
            }
            if let Some(since) = self.seeding_since {
                if let Some(d) = self
                    .seed_limits()
                    .next_check(&self.seed_progress(now, since))
                {
                    soon(now + d.max(Duration::from_secs(1)));
                }
            }
        }
        if self.resume_dirty || self.saving.is_some() {
            soon((self.last_resume + RESUME_INTERVAL).max(now + TICK));
        }
        if self.record_dirty {
            soon((self.record_saved + RECORD_INTERVAL).max(now + TICK));
        }
        at
    }

    /// Arms the timer for the next wakeup; an earlier one already armed
    /// stays (so a stream of events cannot keep pushing the tick away).
    fn arm_timer(&mut self) {
        let Some(at) = self.next_wakeup() else {
            return;
        };
        if self.wake_at.is_none_or(|armed| at < armed) {
            self.wake.as_mut().reset(tokio::time::Instant::from_std(at));
            self.wake_at = Some(at);
        }
    }

    // ----- options, removal, shutdown ---------------------------------------

    async fn set_options(&mut self, patch: OptionsPatch) -> Result<(), TorrentError> {
        if let Some(files) = &patch.files {
            if let (Some(meta), Some(list)) = (&self.meta, files) {
                let n = meta.info.files.len();
                if let Some(bad) = list.iter().find(|&&i| i >= n) {
                    return Err(TorrentError::Other(format!(
                        "file index {bad} is out of range (the torrent has {n} files)"
                    )));
                }
            }
        }
        patch.apply_to(&mut self.record.options);
        self.upload.set_rate(self.record.options.upload_limit);
        self.download.set_rate(self.record.options.download_limit);
        if let Some(files) = patch.files {
            self.record.files = files;
            self.update_skipped();
            let now = Instant::now();
            let skip = self.skipped.clone().unwrap_or_else(|| {
                Bitfield::new(self.meta.as_ref().map_or(0, |m| m.info.layout.num_pieces()))
            });
            if let Some(s) = self.net.as_mut().and_then(|n| n.swarm()) {
                s.set_skipped(&skip, now);
            }
            self.note_seeding(now);
        }
        // A limit raised past what was reached lets it seed again.
        self.stopped_by = None;
        if let Some(path) = patch.save_path {
            if path != self.record.save_path {
                self.move_data(path).await?;
            }
        }
        self.save_record().await;
        Ok(())
    }

    /// Moves the data to `path` (the torrent stops meanwhile).
    async fn move_data(&mut self, path: PathBuf) -> Result<(), TorrentError> {
        let was_running = self.net.is_some();
        if was_running {
            self.stop_net(false).await;
        }
        self.check = None;
        if let (Some(storage), Some(meta)) = (self.storage.take(), self.meta.clone()) {
            let to = path.clone();
            let res = tokio::task::spawn_blocking(move || storage.move_data(&to))
                .await
                .map_err(|e| TorrentError::Move(e.to_string()))?;
            if let Err(e) = res {
                // The files are where they were.
                self.have = None;
                return Err(TorrentError::Move(e.to_string()));
            }
            // Reopened at the new place; resume data rewritten for it.
            self.record.save_path = path;
            let place = self.place();
            let have = self.have.clone();
            let ih = self.info_hash;
            let res = tokio::task::spawn_blocking(move || {
                let s = Storage::open_with(&place.root, &meta.info, place.resume_dir)?;
                if let Some(have) = &have {
                    s.save_resume(&ih, have, true)?;
                }
                Ok::<_, crate::storage::StorageError>(Arc::new(s))
            })
            .await
            .map_err(|e| TorrentError::Move(e.to_string()))?;
            match res {
                Ok(s) => self.storage = Some(s),
                Err(e) => {
                    self.have = None;
                    return Err(e.into());
                }
            }
        } else {
            self.record.save_path = path;
            self.have = None;
        }
        Ok(())
    }

    async fn remove(&mut self, delete_data: bool) -> Result<(), TorrentError> {
        self.check = None;
        if let Some(mut net) = self.net.take() {
            self.shared.set_active(self.info_hash, false);
            if let Some(s) = net.swarm() {
                self.have = Some(s.have().clone());
            }
            drop(net.stop()); // `stopped` goes out in the background
        }
        self.finish_save().await;
        if let Some(store) = self.shared.store.clone() {
            let ih = self.info_hash;
            let res = tokio::task::spawn_blocking(move || store.remove(&ih)).await;
            if !matches!(res, Ok(Ok(()))) {
                tracing::warn!("cannot delete the torrent's state files: {res:?}");
            }
        }
        if !delete_data {
            return Ok(());
        }
        let storage = match (&self.storage, &self.meta) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(meta)) => {
                let (place, meta) = (self.place(), meta.clone());
                // Opened only to know the paths; nothing is created for a
                // torrent whose files are gone.
                tokio::task::spawn_blocking(move || {
                    Storage::open_with(&place.root, &meta.info, place.resume_dir).ok()
                })
                .await
                .ok()
                .flatten()
                .map(Arc::new)
            }
            (None, None) => None,
        };
        if let Some(storage) = storage {
            tokio::task::spawn_blocking(move || storage.delete_data())
                .await
                .map_err(|e| TorrentError::Other(e.to_string()))??;
        }
        if self.shared.store.is_none() {
            // Resume data next to the data (no state folder).
            if let Some(meta) = &self.meta {
                let p = self
                    .record
                    .save_path
                    .join(".essaim")
                    .join(format!("{}.resume", meta.info_hash.to_hex()));
                let _ = crate::store::remove_if_present(&p);
            }
        }
        Ok(())
    }

    async fn shutdown(&mut self) {
        self.check = None;
        self.stop_net(true).await;
        self.finish_save().await;
        if self.resume_dirty {
            self.save_resume_now().await;
        }
        if self.record_dirty || self.clocks_stale(true) {
            self.save_record().await;
        }
        self.publish();
    }

    // ----- persistence ------------------------------------------------------

    /// Saves the record now (when the session has a state folder).
    async fn save_record(&mut self) {
        self.record_saved = Instant::now();
        self.record_dirty = false;
        let Some(store) = self.shared.store.clone() else {
            return;
        };
        self.sync_clocks(Instant::now());
        self.record.saved_at = unix_now();
        self.record.running = self.running_since.is_some();
        self.record.seeding = self.seeding_since.is_some();
        let res = store.save_record(&self.record).await;
        if res.is_err() {
            tracing::warn!("cannot save the torrent's record: {res:?}");
            self.record_dirty = true;
        }
    }

    fn current_have(&self) -> Option<Bitfield> {
        match self.net.as_ref().and_then(|n| n.swarm_ref()) {
            Some(s) => Some(s.have().clone()),
            None => self.have.clone(),
        }
    }

    /// Starts a durable save (data synced first) on the blocking pool;
    /// the loop goes on meanwhile.
    fn start_durable_save(&mut self) {
        let (Some(storage), Some(have)) = (self.storage.clone(), self.current_have()) else {
            return;
        };
        let info_hash = self.info_hash;
        self.resume_dirty = false;
        self.last_resume = Instant::now();
        self.saving = Some(tokio::task::spawn_blocking(move || {
            storage.save_resume(&info_hash, &have, true)
        }));
    }

    /// Waits for the save in progress, if any; a failed one is retried later.
    async fn finish_save(&mut self) {
        if let Some(h) = self.saving.take() {
            let failed = match h.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = failed {
                tracing::warn!("cannot save resume data: {e}");
                self.resume_dirty = true;
            }
        }
    }

    /// Saves now, without waiting for the data to reach the disk (pieces
    /// not yet synced are saved as to be verified).
    async fn save_resume_now(&mut self) {
        self.finish_save().await;
        if !self.resume_dirty {
            return;
        }
        let (Some(storage), Some(have)) = (self.storage.clone(), self.current_have()) else {
            return;
        };
        let info_hash = self.info_hash;
        let res = tokio::task::spawn_blocking(move || {
            storage
                .save_resume(&info_hash, &have, false)
                .map(|()| !storage.unsynced_pieces().none_set())
        })
        .await;
        match res {
            Ok(Ok(unsynced)) => {
                // Pieces still only in the page cache: a durable save
                // follows in the background after the usual interval.
                self.resume_dirty = unsynced;
                self.last_resume = Instant::now();
            }
            Ok(Err(e)) => tracing::warn!("cannot save resume data: {e}"),
            Err(e) => tracing::warn!("cannot save resume data: {e}"),
        }
    }

    // ----- what is shown ----------------------------------------------------

    fn name(&self) -> String {
        status::name(
            self.meta.as_deref(),
            self.magnet.as_ref(),
            &self.record,
            self.info_hash,
        )
    }

    /// Recomputes the unselected pieces from the record's file list.
    fn update_skipped(&mut self) {
        self.skipped = match (&self.meta, &self.record.files) {
            (Some(meta), Some(files)) => {
                let layout = &meta.info.layout;
                let mut wanted = Bitfield::new(layout.num_pieces());
                for range in files.iter().filter_map(|&f| layout.file_pieces(f)) {
                    for p in range {
                        wanted.set(p);
                    }
                }
                let mut skip = Bitfield::new(layout.num_pieces());
                for p in 0..layout.num_pieces() {
                    if !wanted.get(p) {
                        skip.set(p);
                    }
                }
                Some(skip)
            }
            _ => None,
        };
    }

    fn wanted_size(&self) -> u64 {
        let Some(meta) = &self.meta else { return 0 };
        let layout = &meta.info.layout;
        match &self.skipped {
            None => layout.total_length(),
            Some(skip) => (0..layout.num_pieces())
                .filter(|&p| !skip.get(p))
                .map(|p| u64::from(layout.piece_size(p).unwrap_or(0)))
                .sum(),
        }
    }

    fn state(&self) -> TorrentState {
        if let Some(e) = &self.error {
            return TorrentState::Error(e.clone());
        }
        if let Some(c) = &self.check {
            return TorrentState::Checking {
                checked: c.checked(),
                total: c.total,
            };
        }
        if self.record.paused {
            return TorrentState::Paused;
        }
        match self.net.as_ref().map(|n| &n.phase) {
            Some(Phase::Magnet(_)) => TorrentState::FetchingMetadata,
            Some(Phase::Swarm(s)) => {
                if s.is_complete() {
                    TorrentState::Seeding
                } else {
                    TorrentState::Downloading
                }
            }
            None => TorrentState::Queued,
        }
    }

    /// An event when the state changed (progress of a check aside).
    fn publish_state(&mut self) {
        let state = self.state();
        let same = match (&self.last_state, &state) {
            (Some(TorrentState::Checking { .. }), TorrentState::Checking { .. }) => true,
            (Some(a), b) => a == b,
            (None, _) => false,
        };
        if !same {
            self.last_state = Some(state.clone());
            let _ = self
                .shared
                .events
                .send(Event::StateChanged { id: self.id, state });
            self.publish();
        }
    }

    fn announce_stats(&self) -> AnnounceStats {
        self.announce_stats_with(self.net.as_ref().and_then(|n| n.swarm_ref()))
    }

    fn announce_stats_with(&self, swarm: Option<&Swarm>) -> AnnounceStats {
        let left = match (&self.meta, swarm) {
            (Some(meta), Some(s)) => {
                let layout = &meta.info.layout;
                let verified: u64 = s
                    .have()
                    .iter_set()
                    .map(|p| u64::from(layout.piece_size(p).unwrap_or(0)))
                    .sum();
                layout.total_length().saturating_sub(verified)
            }
            // Unknown size (a magnet): 1, not 0, which would claim a seed.
            (None, _) => 1,
            (Some(meta), None) => meta.info.total_length(),
        };
        AnnounceStats {
            uploaded: self.record.uploaded_total,
            downloaded: self.record.downloaded_total,
            left,
        }
    }

    fn publish(&mut self) {
        let summary = self.summary();
        self.status.send_replace(summary);
    }

    fn answer(&mut self, q: Query) {
        match q {
            Query::Files(tx) => {
                let _ = tx.send(self.files());
            }
            Query::Peers(tx) => {
                let _ = tx.send(self.peers());
            }
            Query::Trackers(tx) => {
                let _ = tx.send(self.tracker_list());
            }
            Query::Pieces(tx) => {
                let _ = tx.send(self.piece_map());
            }
            Query::Metainfo(tx) => {
                let _ = tx.send(self.meta.as_ref().map(|m| m.to_torrent_bytes()));
            }
            Query::PeerTotals(tx) => {
                let totals = self
                    .net
                    .as_mut()
                    .map(|n| n.peer_totals())
                    .unwrap_or_default();
                let _ = tx.send(totals);
            }
        }
    }
}

/// The next event of a running torrent; pending forever when it does not run.
async fn next_net(net: &mut Option<Net>) -> NetEvent {
    match net {
        Some(n) => n.next().await,
        None => std::future::pending().await,
    }
}

/// The result of the check in progress; pending forever without one.
async fn check_done(check: &mut Option<CheckJob>) -> check::Checked {
    match check {
        Some(c) => match (&mut c.done).await {
            Ok(r) => r,
            Err(_) => Err(TorrentError::Other("the check stopped".into())),
        },
        None => std::future::pending().await,
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
