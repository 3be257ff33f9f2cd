//! The announcer against our tracker server and a fake UDP tracker, all on
//! 127.0.0.1, every wait bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use essaim::tracker::http::{HttpConfig, HttpTracker};
use essaim::tracker::udp::UdpConfig;
use essaim::tracker::{
    spawn_announcer_with, AnnounceStats, AnnouncerConfig, AnnouncerOptions, Event, TrackerStatus,
};
use essaim::tracker_server::{TrackerConfig, TrackerServer};
use essaim_core::{InfoHash, PeerId};
use essaim_wire::tracker::http::{
    parse_announce_response, parse_scrape_response, AnnounceRequest, ScrapeEntry, TrackerError,
};
use essaim_wire::tracker::udp::{parse_request, UdpRequest, UdpResponse};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(10);
const HASH: InfoHash = InfoHash([0x42; 20]);

/// One announcer and the handles a test drives it with.
struct Node {
    peers: mpsc::Receiver<Vec<SocketAddr>>,
    stats: watch::Sender<AnnounceStats>,
    want_more: Arc<Notify>,
    shutdown: watch::Sender<bool>,
    status: watch::Receiver<TrackerStatus>,
    task: JoinHandle<()>,
}

impl Node {
    fn start(port: u16, left: u64, trackers: Vec<Vec<String>>) -> Node {
        let (status_tx, status) = watch::channel(TrackerStatus::default());
        let options = AnnouncerOptions {
            udp: UdpConfig {
                timeout_base: Duration::from_millis(200),
                max_retransmits: 2,
                ..UdpConfig::default()
            },
            http: HttpConfig {
                timeout: Duration::from_secs(5),
                ..HttpConfig::default()
            },
            default_min_interval: Duration::ZERO,
            min_announce_gap: Duration::ZERO,
            retry_base: Duration::from_millis(100),
            status: Some(status_tx),
            ..AnnouncerOptions::default()
        };
        let cfg = AnnouncerConfig {
            info_hash: HASH,
            peer_id: PeerId::generate([port as u8; 12]),
            port,
            trackers,
            numwant: 50,
        };
        let (stats, stats_rx) = watch::channel(AnnounceStats {
            left,
            ..AnnounceStats::default()
        });
        let (peers_tx, peers) = mpsc::channel(8);
        let want_more = Arc::new(Notify::new());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = spawn_announcer_with(
            cfg,
            options,
            stats_rx,
            peers_tx,
            want_more.clone(),
            shutdown_rx,
        );
        Node {
            peers,
            stats,
            want_more,
            shutdown,
            status,
            task,
        }
    }

    async fn next_peers(&mut self) -> Vec<SocketAddr> {
        timeout(BOUND, self.peers.recv())
            .await
            .expect("peers in time")
            .expect("announcer alive")
    }

    /// Waits until the tracker at `index` has `n` successful announces.
    async fn successes(&mut self, index: usize, n: u64) {
        let ok = |s: &TrackerStatus| s.trackers.get(index).is_some_and(|t| t.successes >= n);
        timeout(BOUND, self.status.wait_for(ok))
            .await
            .expect("announce in time")
            .unwrap();
    }

    async fn stop(self) -> TrackerStatus {
        self.shutdown.send(true).unwrap();
        timeout(BOUND, self.task)
            .await
            .expect("ends in time")
            .unwrap();
        let status = self.status.borrow().clone();
        status
    }
}

async fn server() -> TrackerServer {
    let config = TrackerConfig {
        min_interval: Duration::ZERO,
        ..TrackerConfig::default()
    };
    TrackerServer::bind_with("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

async fn scrape(server: &TrackerServer) -> ScrapeEntry {
    let http = HttpTracker::new(&HttpConfig::default()).unwrap();
    let got = timeout(BOUND, http.scrape(&server.announce_url(), &[HASH]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    got[0].1
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A URL where nothing listens.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}/announce", listener.local_addr().unwrap())
}

#[tokio::test]
async fn announcers_find_each_other_and_stopped_removes() {
    let server = server().await;
    let tiers = vec![vec![server.announce_url()]];
    let mut a = Node::start(1111, 100, tiers.clone());
    a.successes(0, 1).await;
    let mut b = Node::start(2222, 100, tiers);
    assert_eq!(b.next_peers().await, vec![local(1111)]);
    a.want_more.notify_one();
    assert_eq!(a.next_peers().await, vec![local(2222)]);
    assert_eq!(scrape(&server).await.incomplete, 2);

    let b_status = b.stop().await;
    assert_eq!(b_status.trackers[0].successes, 2, "started and stopped");
    assert_eq!(scrape(&server).await.incomplete, 1, "stopped removed B");
    a.stop().await;
    assert_eq!(scrape(&server).await, ScrapeEntry::default());
    timeout(BOUND, server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn completed_is_announced_when_left_reaches_zero() {
    let server = server().await;
    let mut a = Node::start(1111, 100, vec![vec![server.announce_url()]]);
    a.successes(0, 1).await;
    assert_eq!(scrape(&server).await.incomplete, 1);
    a.stats
        .send(AnnounceStats {
            uploaded: 0,
            downloaded: 100,
            left: 0,
        })
        .unwrap();
    a.successes(0, 2).await;
    let entry = scrape(&server).await;
    assert_eq!(
        (entry.complete, entry.incomplete, entry.downloaded),
        (1, 0, 1)
    );
    a.stop().await;
}

#[tokio::test]
async fn tiers_fall_back_and_promote_the_working_tracker() {
    let server = server().await;
    // A peer already in the swarm, so that announces return something.
    let http = HttpTracker::new(&HttpConfig::default()).unwrap();
    let seed = AnnounceRequest {
        info_hash: HASH,
        peer_id: PeerId([b's'; 20]),
        port: 5555,
        uploaded: 0,
        downloaded: 0,
        left: 0,
        event: Some(Event::Started),
        numwant: None,
        key: None,
        tracker_id: None,
        compact: true,
    };
    timeout(BOUND, http.announce(&server.announce_url(), &seed))
        .await
        .unwrap()
        .unwrap();

    // Dead first tier, working second tier.
    let dead = dead_url().await;
    let mut a = Node::start(
        1111,
        1,
        vec![vec![dead.clone()], vec![server.announce_url()]],
    );
    assert_eq!(a.next_peers().await, vec![local(5555)]);
    {
        let status = a.status.borrow();
        assert_eq!(status.trackers[0].failures, 1);
        assert!(status.trackers[0].last_error.is_some());
        assert_eq!(status.trackers[1].successes, 1);
        assert_eq!(status.trackers[1].seeders, Some(1));
    }
    a.stop().await;

    // Same tier: whichever comes first after the shuffle, the working
    // tracker is moved to the front, so the dead one is tried at most once.
    let mut b = Node::start(2222, 1, vec![vec![dead, server.announce_url()]]);
    b.next_peers().await;
    let failures = b.status.borrow().trackers[0].failures;
    assert!(failures <= 1);
    for n in 2..=3 {
        b.want_more.notify_one();
        b.successes(1, n).await;
    }
    assert_eq!(b.status.borrow().trackers[0].failures, failures);
    b.stop().await;
}

#[tokio::test]
async fn udp_announcer_started_then_stopped() {
    let fake = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let url = format!("udp://{}", fake.local_addr().unwrap());
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let fake_task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((len, from)) = fake.recv_from(&mut buf).await {
            let reply = match parse_request(&buf[..len]) {
                Ok(UdpRequest::Connect { transaction_id }) => UdpResponse::Connect {
                    transaction_id,
                    connection_id: 99,
                },
                Ok(UdpRequest::Announce(a)) => {
                    assert_eq!((a.connection_id, a.port), (99, 3333));
                    let _ = events_tx.send(a.event);
                    UdpResponse::Announce {
                        transaction_id: a.transaction_id,
                        interval: 1800,
                        leechers: 1,
                        seeders: 0,
                        peers: vec![local(4444)],
                    }
                }
                other => panic!("unexpected {other:?}"),
            };
            let _ = fake.send_to(&reply.encode(false), from).await;
        }
    });
    let mut a = Node::start(3333, 10, vec![vec![url]]);
    assert_eq!(a.next_peers().await, vec![local(4444)]);
    a.stop().await;
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert_eq!(seen, vec![Some(Event::Started), Some(Event::Stopped)]);
    fake_task.abort();
}

#[tokio::test]
async fn shutdown_is_prompt_without_a_working_tracker() {
    let mut a = Node::start(1111, 10, vec![vec![dead_url().await]]);
    let failed = |s: &TrackerStatus| s.trackers[0].failures >= 2;
    timeout(BOUND, a.status.wait_for(failed))
        .await
        .unwrap()
        .unwrap();
    let peers = std::mem::replace(&mut a.peers, mpsc::channel(1).1);
    drop(peers);
    let status = a.stop().await;
    assert_eq!(status.trackers[0].successes, 0, "no stopped was attempted");

    let none = Node::start(1111, 10, vec![vec!["wss://x/announce".into()]]);
    assert!(none.status.borrow().trackers.is_empty());
    none.stop().await;
}

#[tokio::test]
async fn server_speaks_http() {
    let server = TrackerServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = server.announce_url();
    assert_eq!(url, format!("http://{}/announce", server.local_addr()));
    let client = reqwest::Client::new();
    let get = |u: String| {
        let client = client.clone();
        async move {
            let fetch = async { client.get(u).send().await?.bytes().await };
            timeout(BOUND, fetch).await.expect("bounded").unwrap()
        }
    };
    let hash = "%01".repeat(20);
    let query = |port: u16, extra: &str| {
        let id = "p".repeat(20);
        format!("{url}?info_hash={hash}&peer_id={id}&port={port}&left=1{extra}")
    };
    // From loopback, `ip` is honoured.
    get(query(1000, "&ip=10.9.9.9")).await;
    let r = parse_announce_response(&get(query(2000, "&compact=0")).await).unwrap();
    assert_eq!(r.peers, vec!["10.9.9.9:1000".parse().unwrap()]);
    assert_eq!(
        (r.interval, r.min_interval, r.incomplete),
        (60, Some(10), Some(2))
    );
    let scrape = format!("http://{}/scrape?info_hash={hash}", server.local_addr());
    let files = parse_scrape_response(&get(scrape).await).unwrap();
    assert_eq!(files[0].1.incomplete, 2);
    let all = format!("http://{}/scrape", server.local_addr());
    assert_eq!(parse_scrape_response(&get(all).await).unwrap(), files);
    let bad = parse_announce_response(&get(format!("{url}?port=1")).await);
    assert!(matches!(bad, Err(TrackerError::Failure(m)) if m.contains("info_hash")));
    let long = format!("{url}?{}", "x".repeat(9000));
    let bad = parse_announce_response(&get(long).await);
    assert!(matches!(bad, Err(TrackerError::Failure(m)) if m.contains("longer")));
    timeout(BOUND, server.shutdown()).await.expect("bounded");
}
