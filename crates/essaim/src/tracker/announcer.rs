//! The announcer task: [`Schedule`] decides when to announce and with which
//! event (pure, time passed in); [`Announcer`] is its driver, announcing
//! through the BEP 12 [`Tiers`] and forwarding peers to the engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use essaim_wire::tracker::http::AnnounceResponse;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, Instrument};

use super::http::HttpTracker;
use super::{AnnounceParams, AnnounceStats, AnnouncerConfig, AnnouncerOptions, Event, Tiers};

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

/// [`spawn_announcer`] with explicit options.
pub fn spawn_announcer_with(
    cfg: AnnouncerConfig,
    options: AnnouncerOptions,
    stats: watch::Receiver<AnnounceStats>,
    peers: mpsc::Sender<Vec<SocketAddr>>,
    want_more: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let span = tracing::info_span!("tracker", infohash = %cfg.info_hash);
    let sockets = options.shared_udp.clone().unwrap_or_default();
    let (tiers, initial) = Tiers::new(&cfg.trackers, &options.udp, &sockets);
    if let Some(tx) = &options.status {
        tx.send_replace(initial);
    }
    let http = match options.shared_http.clone() {
        Some(h) => Some(h),
        None => HttpTracker::new(&options.http)
            .map_err(|e| debug!(error = %e, "no HTTP client"))
            .ok(),
    };
    let left = stats.borrow().left;
    let announcer = Announcer {
        schedule: Schedule::new(Instant::now(), left, &options),
        key: rand::random(),
        cfg,
        options,
        tiers,
        http,
        stats,
        stats_open: true,
        peers,
        want_more,
        shutdown,
    };
    tokio::spawn(announcer.run().instrument(span))
}

struct Announcer {
    cfg: AnnouncerConfig,
    options: AnnouncerOptions,
    schedule: Schedule,
    key: u32,
    tiers: Tiers,
    http: Option<HttpTracker>,
    stats: watch::Receiver<AnnounceStats>,
    stats_open: bool,
    peers: mpsc::Sender<Vec<SocketAddr>>,
    want_more: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
}

/// Resolves when shutdown is asked for or its sender is gone.
async fn shutdown_signal(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Announcer {
    fn params(&self, event: Option<Event>) -> AnnounceParams {
        AnnounceParams {
            info_hash: self.cfg.info_hash,
            peer_id: self.cfg.peer_id,
            port: self.cfg.port,
            stats: *self.stats.borrow(),
            event,
            numwant: self.cfg.numwant,
            key: self.key,
        }
    }

    async fn run(mut self) {
        if self.tiers.is_empty() {
            debug!("no usable tracker");
            shutdown_signal(&mut self.shutdown).await;
            return;
        }
        loop {
            let (at, event) = self.schedule.next();
            tokio::select! {
                biased;
                _ = shutdown_signal(&mut self.shutdown) => break,
                changed = self.stats.changed(), if self.stats_open => {
                    match changed {
                        Ok(()) => {
                            let left = self.stats.borrow_and_update().left;
                            self.schedule.handle_left(left);
                        }
                        Err(_) => self.stats_open = false,
                    }
                    continue;
                }
                _ = self.want_more.notified() => {
                    self.schedule.handle_want_more();
                    continue;
                }
                _ = sleep_until(at) => {}
            }
            let params = self.params(event);
            let status = self.options.status.as_ref();
            let result = tokio::select! {
                biased;
                _ = shutdown_signal(&mut self.shutdown) => break,
                r = self.tiers.announce(self.http.as_ref(), &params, status) => r,
            };
            let now = Instant::now();
            match result {
                Ok(reply) => {
                    self.schedule.handle_success(now, event, &reply);
                    if !reply.peers.is_empty() {
                        tokio::select! {
                            biased;
                            _ = shutdown_signal(&mut self.shutdown) => break,
                            _ = self.peers.send(reply.peers) => {}
                        }
                    }
                }
                Err(e) => {
                    debug!(error = %e, ?event, "every tracker failed");
                    self.schedule.handle_failure(now);
                }
            }
        }
        if self.schedule.ever_succeeded {
            let params = self.params(Some(Event::Stopped));
            let status = self.options.status.as_ref();
            let stop = self.tiers.announce(self.http.as_ref(), &params, status);
            match timeout(self.options.stop_timeout, stop).await {
                Ok(Ok(_)) => debug!("stopped announced"),
                Ok(Err(e)) => debug!(error = %e, "stopped announce failed"),
                Err(_) => debug!("stopped announce timed out"),
            }
        }
    }
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
