//! A torrent's announces: [`Schedule`] decides when to announce and with
//! which event (pure, time passed in); [`Announces`] carries them out
//! through the BEP 12 [`Tiers`], one at a time, each in a task of its own
//! that lives only while the announce does. A torrent's actor drives
//! `Announces` itself (its timer includes [`Announces::next_due`]), so a
//! torrent waiting for its next announce keeps no task and no channel:
//! 10,000 idle seeds cost 10,000 small structs, not 10,000 tasks.
//! [`spawn_announcer`] wraps it in a task for code that wants one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use essaim_wire::tracker::http::AnnounceResponse;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, Instrument};

use super::http::HttpTracker;
use super::udp_socket::UdpSockets;
use super::{
    AnnounceError, AnnounceParams, AnnounceStats, AnnouncerConfig, AnnouncerOptions, Event, Tiers,
    TrackerStatus,
};

/// When to announce next, and with which event: a pure state machine.
#[derive(Debug, Clone)]
struct Schedule {
    /// A time already passed: "now" for anything due at once.
    epoch: Instant,
    default_min_interval: Duration,
    min_announce_gap: Duration,
    retry_base: Duration,
    retry_max: Duration,
    started_pending: bool,
    completed_pending: bool,
    completed_sent: bool,
    seen_incomplete: bool,
    ever_succeeded: bool,
    want_more: bool,
    last_success: Option<Instant>,
    next_regular: Instant,
    min_gap: Duration,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Schedule {
    fn new(now: Instant, left: u64, o: &AnnouncerOptions) -> Self {
        Schedule {
            epoch: now,
            default_min_interval: o.default_min_interval,
            min_announce_gap: o.min_announce_gap,
            retry_base: o.retry_base,
            retry_max: o.retry_max,
            started_pending: true,
            completed_pending: false,
            completed_sent: false,
            seen_incomplete: left > 0,
            ever_succeeded: false,
            want_more: false,
            last_success: None,
            next_regular: now,
            min_gap: o.default_min_interval.max(o.min_announce_gap),
            failures: 0,
            retry_at: None,
        }
    }

    /// The next announce: when, and with which event.
    fn next(&self) -> (Instant, Option<Event>) {
        let event = if self.started_pending {
            Some(Event::Started)
        } else if self.completed_pending {
            Some(Event::Completed)
        } else {
            None
        };
        let at = if let Some(retry) = self.retry_at {
            retry
        } else if event.is_some() {
            self.epoch
        } else if self.want_more {
            let earliest = self.last_success.map_or(self.epoch, |t| t + self.min_gap);
            earliest.min(self.next_regular)
        } else {
            self.next_regular
        };
        (at, event)
    }

    fn handle_left(&mut self, left: u64) {
        if left > 0 {
            self.seen_incomplete = true;
        } else if self.seen_incomplete && !self.completed_sent {
            self.completed_pending = true;
        }
    }

    fn handle_want_more(&mut self) {
        self.want_more = true;
    }

    fn handle_success(&mut self, now: Instant, event: Option<Event>, reply: &AnnounceResponse) {
        let interval = Duration::from_secs(u64::from(reply.interval));
        let min = reply.min_interval.map_or(self.default_min_interval, |m| {
            Duration::from_secs(u64::from(m))
        });
        self.min_gap = min.max(self.min_announce_gap).min(interval);
        self.next_regular = now + interval;
        self.last_success = Some(now);
        self.ever_succeeded = true;
        self.want_more = false;
        self.failures = 0;
        self.retry_at = None;
        match event {
            Some(Event::Started) => self.started_pending = false,
            Some(Event::Completed) => {
                self.completed_pending = false;
                self.completed_sent = true;
            }
            _ => {}
        }
    }

    fn handle_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(20);
        let delay = self
            .retry_base
            .saturating_mul(1 << doublings)
            .min(self.retry_max);
        self.retry_at = Some(now + delay);
    }
}

/// An announce in flight: the tiers and status travel with it and come
/// back with its result.
type Outcome = (
    Tiers,
    TrackerStatus,
    Option<Event>,
    Result<AnnounceResponse, AnnounceError>,
);

/// What an announce in flight brought back (see [`Announces::finished`]).
pub(crate) struct Finished(Result<Outcome, oneshot::error::RecvError>);

/// A torrent's announces, driven from outside (see the module doc).
pub(crate) struct Announces {
    cfg: AnnouncerConfig,
    schedule: Schedule,
    key: u32,
    /// `None` while an announce has them.
    tiers: Option<Tiers>,
    status: TrackerStatus,
    http: Option<HttpTracker>,
    sockets: UdpSockets,
    udp: super::udp::UdpConfig,
    stop_timeout: Duration,
    stats: AnnounceStats,
    inflight: Option<(oneshot::Receiver<Outcome>, JoinHandle<()>)>,
}

impl Announces {
    pub fn new(cfg: AnnouncerConfig, options: AnnouncerOptions, stats: AnnounceStats) -> Announces {
        let sockets = options.shared_udp.clone().unwrap_or_default();
        let (tiers, status) = Tiers::new(&cfg.trackers, &options.udp, &sockets);
        let http = match options.shared_http.clone() {
            Some(h) => Some(h),
            None if tiers.is_empty() => None,
            None => HttpTracker::new(&options.http)
                .map_err(|e| debug!(error = %e, "no HTTP client"))
                .ok(),
        };
        Announces {
            schedule: Schedule::new(Instant::now(), stats.left, &options),
            key: rand::random(),
            cfg,
            tiers: (!tiers.is_empty()).then_some(tiers),
            status,
            http,
            sockets,
            udp: options.udp,
            stop_timeout: options.stop_timeout,
            stats,
            inflight: None,
        }
    }

    /// The trackers and what they last said.
    pub fn status(&self) -> &TrackerStatus {
        &self.status
    }

    /// Our totals changed (`left` reaching 0 makes a `completed` due).
    pub fn set_stats(&mut self, stats: AnnounceStats) {
        if stats != self.stats {
            self.stats = stats;
            self.schedule.handle_left(stats.left);
        }
    }

    /// Asks for peers early (never sooner than the tracker's min interval).
    pub fn want_more(&mut self) {
        self.schedule.handle_want_more();
    }

    /// When the next announce is due; `None` while one is in flight or
    /// when there is no usable tracker.
    pub fn next_due(&self) -> Option<Instant> {
        if self.inflight.is_some() || self.tiers.is_none() {
            return None;
        }
        Some(self.schedule.next().0)
    }

    fn params(&self, event: Option<Event>) -> AnnounceParams {
        AnnounceParams {
            info_hash: self.cfg.info_hash,
            peer_id: self.cfg.peer_id,
            port: self.cfg.port,
            stats: self.stats,
            event,
            numwant: self.cfg.numwant,
            key: self.key,
        }
    }

    /// Starts the announce that is due, if one is.
    pub fn start_due(&mut self, now: Instant) {
        let Some(at) = self.next_due() else { return };
        if at > now {
            return;
        }
        let Some(mut tiers) = self.tiers.take() else {
            return;
        };
        let event = self.schedule.next().1;
        let params = self.params(event);
        let mut status = std::mem::take(&mut self.status);
        let http = self.http.clone();
        let (tx, rx) = oneshot::channel();
        let span = tracing::info_span!("tracker", infohash = %self.cfg.info_hash);
        let task = tokio::spawn(
            async move {
                let r = tiers.announce(http.as_ref(), &params, &mut status).await;
                let _ = tx.send((tiers, status, event, r));
            }
            .instrument(span),
        );
        self.inflight = Some((rx, task));
    }

    /// The announce in flight, once it ends; pending forever without one.
    pub async fn finished(&mut self) -> Finished {
        match &mut self.inflight {
            Some((rx, _)) => Finished(rx.await),
            None => std::future::pending().await,
        }
    }

    /// Takes back what an announce brought; the peers it got, if any.
    pub fn handle_finished(&mut self, f: Finished, now: Instant) -> Option<Vec<SocketAddr>> {
        self.inflight = None;
        let Ok((tiers, status, event, result)) = f.0 else {
            // The task died: start over with fresh tiers, after a back-off.
            let (tiers, status) = Tiers::new(&self.cfg.trackers, &self.udp, &self.sockets);
            self.tiers = Some(tiers);
            self.status = status;
            self.schedule.handle_failure(now);
            return None;
        };
        self.tiers = Some(tiers);
        self.status = status;
        match result {
            Ok(reply) => {
                self.schedule.handle_success(now, event, &reply);
                (!reply.peers.is_empty()).then_some(reply.peers)
            }
            Err(e) => {
                debug!(error = %e, ?event, "every tracker failed");
                self.schedule.handle_failure(now);
                None
            }
        }
    }

    /// Stops: an announce in flight is dropped; `stopped` is sent (if an
    /// announce ever succeeded) by the task returned, bounded by the stop
    /// timeout. The task hands back the status.
    pub fn stop(mut self) -> Option<JoinHandle<TrackerStatus>> {
        if let Some((_, task)) = self.inflight.take() {
            task.abort();
        }
        if !self.schedule.ever_succeeded {
            return None;
        }
        let params = self.params(Some(Event::Stopped));
        let mut status = std::mem::take(&mut self.status);
        let (mut tiers, _) = match self.tiers.take() {
            Some(t) => (t, TrackerStatus::default()),
            // Aborted mid-announce: the tiers went with it.
            None => Tiers::new(&self.cfg.trackers, &self.udp, &self.sockets),
        };
        let http = self.http.clone();
        let limit = self.stop_timeout;
        let span = tracing::info_span!("tracker", infohash = %self.cfg.info_hash);
        Some(tokio::spawn(
            async move {
                let stop = tiers.announce(http.as_ref(), &params, &mut status);
                match timeout(limit, stop).await {
                    Ok(Ok(_)) => debug!("stopped announced"),
                    Ok(Err(e)) => debug!(error = %e, "stopped announce failed"),
                    Err(_) => debug!("stopped announce timed out"),
                }
                status
            }
            .instrument(span),
        ))
    }
}

/// Spawns the announcer with the default [`AnnouncerOptions`]: announces
/// `started` at once, then re-announces every `interval`, `completed` once
/// when `stats.left` becomes 0 after having been above 0, and `stopped`
/// (bounded by 5 s) when `shutdown` becomes true or its sender is dropped,
/// then ends. Every non-empty peer list received is sent on `peers` (dropped
/// if the channel is closed). `want_more` (use `notify_one`, whose permit is
/// kept) asks for an early announce, never sooner than `min interval`.
pub fn spawn_announcer(
    cfg: AnnouncerConfig,
    stats: watch::Receiver<AnnounceStats>,
    peers: mpsc::Sender<Vec<SocketAddr>>,
    want_more: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_announcer_with(
        cfg,
        AnnouncerOptions::default(),
        stats,
        peers,
        want_more,
        shutdown,
    )
}

/// [`spawn_announcer`] with explicit options (per-tracker status published
/// on `options.status` after each announce).
pub fn spawn_announcer_with(
    cfg: AnnouncerConfig,
    mut options: AnnouncerOptions,
    mut stats: watch::Receiver<AnnounceStats>,
    peers: mpsc::Sender<Vec<SocketAddr>>,
    want_more: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let publish = options.status.take();
    let initial = *stats.borrow();
    let mut a = Announces::new(cfg, options, initial);
    if let Some(tx) = &publish {
        tx.send_replace(a.status().clone());
    }
    tokio::spawn(async move {
        let mut stats_open = true;
        loop {
            let due = a.next_due();
            tokio::select! {
                biased;
                _ = shutdown_signal(&mut shutdown) => break,
                changed = stats.changed(), if stats_open => match changed {
                    Ok(()) => {
                        let s = *stats.borrow_and_update();
                        a.set_stats(s);
                    }
                    Err(_) => stats_open = false,
                },
                _ = want_more.notified() => a.want_more(),
                f = a.finished() => {
                    let got = a.handle_finished(f, Instant::now());
                    if let Some(tx) = &publish {
                        tx.send_replace(a.status().clone());
                    }
                    if let Some(p) = got {
                        tokio::select! {
                            biased;
                            _ = shutdown_signal(&mut shutdown) => break,
                            _ = peers.send(p) => {}
                        }
                    }
                }
                _ = sleep_until(due.unwrap_or_else(far_future)), if due.is_some() => {
                    a.start_due(Instant::now());
                }
            }
        }
        if let Some(stop) = a.stop() {
            if let Ok(status) = stop.await {
                if let Some(tx) = &publish {
                    tx.send_replace(status);
                }
            }
        }
    })
}

/// A time that never comes (for a timer that is not armed).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Resolves when shutdown is asked for or its sender is gone.
async fn shutdown_signal(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(interval: u32, min_interval: Option<u32>) -> AnnounceResponse {
        AnnounceResponse {
            interval,
            min_interval,
            ..AnnounceResponse::default()
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn started_then_regular_then_want_more() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 100, &AnnouncerOptions::default());
        assert_eq!(s.next(), (t0, Some(Event::Started)));
        s.handle_success(t0, Some(Event::Started), &reply(900, Some(60)));
        assert_eq!(s.next(), (t0 + secs(900), None));
        s.handle_want_more();
        assert_eq!(s.next(), (t0 + secs(60), None), "min interval respected");
        s.handle_success(t0 + secs(60), None, &reply(900, None));
        assert_eq!(s.next(), (t0 + secs(960), None), "want_more satisfied");
        s.handle_want_more();
        assert_eq!(s.next().0, t0 + secs(90), "30 s default min interval");
        s.handle_success(t0 + secs(90), None, &reply(900, Some(0)));
        s.handle_want_more();
        assert_eq!(s.next().0, t0 + secs(100), "10 s floor under min interval");
    }

    #[test]
    fn completed_once_and_only_after_downloading() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 100, &AnnouncerOptions::default());
        s.handle_left(0);
        assert_eq!(s.next().1, Some(Event::Started), "started goes first");
        s.handle_success(t0, Some(Event::Started), &reply(900, None));
        assert_eq!(
            s.next(),
            (t0, Some(Event::Completed)),
            "events are due at once"
        );
        s.handle_success(t0 + secs(1), Some(Event::Completed), &reply(900, None));
        assert_eq!(s.next(), (t0 + secs(901), None));
        s.handle_left(5);
        s.handle_left(0);
        assert_eq!(s.next().1, None, "completed is sent once");

        let mut seed = Schedule::new(t0, 0, &AnnouncerOptions::default());
        seed.handle_success(t0, Some(Event::Started), &reply(900, None));
        seed.handle_left(0);
        assert_eq!(seed.next().1, None, "no completed when complete at start");
    }

    #[test]
    fn failures_back_off_and_keep_the_event() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 1, &AnnouncerOptions::default());
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            s.handle_failure(now);
            let (at, event) = s.next();
            assert_eq!(event, Some(Event::Started));
            delays.push((at - now).as_secs());
            now = at;
        }
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1800, 1800]);
        s.handle_failure(now);
        s.handle_want_more();
        assert_eq!(
            s.next().0,
            now + secs(1800),
            "want_more does not skip a back-off"
        );
        s.handle_success(now, Some(Event::Started), &reply(300, None));
        assert_eq!(s.next(), (now + secs(300), None));
    }
}
