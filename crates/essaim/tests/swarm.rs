//! In-process swarms on 127.0.0.1: several sessions in one test, real
//! sockets, every wait bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use essaim::create::{create_torrent, CreateOptions};
use essaim::tracker_server::TrackerServer;
use essaim::{
    AddOptions, AddSource, PeerSource, Session, SessionConfig, Settings, TorrentId, TorrentState,
    TorrentSummary,
};
use essaim_core::Metainfo;

const DEADLINE: Duration = Duration::from_secs(120);

/// A session on 127.0.0.1 with LSD off (each test says how peers meet).
fn local(upload_limit: Option<u64>) -> SessionConfig {
    SessionConfig {
        listen_ip: [127, 0, 0, 1].into(),
        port: 0,
        lsd: false,
        settings: Settings {
            upload_limit,
            ..Settings::default()
        },
        ..SessionConfig::default()
    }
}

/// Adds `meta` to `session`, into `dir`, dialling `peers`.
async fn add<'a>(
    session: &'a Session,
    meta: &Metainfo,
    dir: PathBuf,
    peers: Vec<SocketAddr>,
) -> Torrent<'a> {
    add_with(session, meta, dir, peers, None).await
}

async fn add_with<'a>(
    session: &'a Session,
    meta: &Metainfo,
    dir: PathBuf,
    peers: Vec<SocketAddr>,
    files: Option<Vec<usize>>,
) -> Torrent<'a> {
    let id = session
        .add(
            AddSource::Torrent(meta.to_torrent_bytes()),
            AddOptions {
                save_path: Some(dir),
                peers,
                files,
                ..AddOptions::default()
            },
        )
        .await
        .unwrap()
        .id;
    Torrent { session, id }
}

/// A torrent of a session.
struct Torrent<'a> {
    session: &'a Session,
    id: TorrentId,
}

impl Torrent<'_> {
    fn status(&self) -> TorrentSummary {
        self.session.get(self.id).expect("the torrent is there")
    }
    async fn wait_for(&self, f: impl Fn(&TorrentSummary) -> bool) -> TorrentSummary {
        self.session
            .wait_for(self.id, |s| {
                f(s) || matches!(s.state, TorrentState::Error(_))
            })
            .await
            .expect("the torrent is there")
    }
}

/// Known peers from `source`.
fn known(s: &TorrentSummary, source: PeerSource) -> usize {
    s.known_peers
        .iter()
        .find(|(p, _)| *p == source)
        .map_or(0, |(_, n)| *n)
}

/// Files with odd sizes, one empty; content from a seeded generator.
fn write_files(root: &Path, files: &[(&str, usize)], seed: u64) -> Vec<(PathBuf, Vec<u8>)> {
    let mut state = seed | 1;
    let mut out = Vec::new();
    for (name, len) in files {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut data = Vec::with_capacity(*len);
        while data.len() < *len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            data.extend_from_slice(&state.to_le_bytes());
        }
        data.truncate(*len);
        std::fs::write(&path, &data).unwrap();
        out.push((PathBuf::from(name), data));
    }
    out
}

async fn wait_complete(handle: &Torrent<'_>) {
    let status = tokio::time::timeout(
        DEADLINE,
        handle.wait_for(|s| s.state == TorrentState::Seeding),
    )
    .await
    .expect("torrent did not complete in time");
    assert_eq!(
        status.state,
        TorrentState::Seeding,
        "ended as {:?}",
        status.state
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seeder_five_leechers_share_among_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("seed").join("album");
    // 64 KiB pieces; total 3 MiB + 4321 bytes: the last piece is odd-sized.
    let files = write_files(
        &content,
        &[
            ("a.bin", 2 * 1024 * 1024 + 1000),
            ("empty.txt", 0),
            ("sub/b.bin", 1024 * 1024 + 3321),
        ],
        7,
    );
    let tracker = TrackerServer::bind(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let opts = CreateOptions {
        piece_length: Some(64 * 1024),
        trackers: vec![vec![tracker.announce_url()]],
        ..CreateOptions::default()
    };
    let meta = Metainfo::from_bytes(&create_torrent(&content, &opts, &|_, _| {}).unwrap()).unwrap();
    assert_ne!(meta.info.total_length() % 65536, 0);

    // The seeder's upload is capped so that the leechers must share.
    let seeder = Session::new(local(Some(1024 * 1024))).await.unwrap();
    let seed = add(&seeder, &meta, dir.path().join("seed"), vec![]).await;
    wait_complete(&seed).await;

    let mut leechers = Vec::new();
    for i in 0..5 {
        let s = Session::new(local(None)).await.unwrap();
        let id = add(&s, &meta, dir.path().join(format!("l{i}")), vec![])
            .await
            .id;
        leechers.push((s, id));
    }
    for (s, id) in &leechers {
        wait_complete(&Torrent {
            session: s,
            id: *id,
        })
        .await;
    }
    for (i, (s, id)) in leechers.iter().enumerate() {
        for (name, data) in &files {
            let copy = std::fs::read(dir.path().join(format!("l{i}/album")).join(name)).unwrap();
            assert!(copy == *data, "leecher {i}: {} differs", name.display());
        }
        let totals = s.peer_totals(*id).await.unwrap();
        let from_others: u64 = totals
            .iter()
            .filter(|(id, _)| **id != seeder.peer_id())
            .map(|(_, (down, _))| down)
            .sum();
        assert!(
            from_others > 0,
            "leecher {i} got nothing from other leechers: {totals:?}"
        );
    }
    for (s, _) in leechers {
        s.shutdown().await;
    }
    seeder.shutdown().await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_leecher_keeps_verified_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("seed").join("one.bin");
    std::fs::create_dir_all(content.parent().unwrap()).unwrap();
    write_files(content.parent().unwrap(), &[("one.bin", 700_001)], 3);
    let opts = CreateOptions {
        piece_length: Some(32 * 1024),
        ..CreateOptions::default()
    };
    let meta = Metainfo::from_bytes(&create_torrent(&content, &opts, &|_, _| {}).unwrap()).unwrap();
    let seeder = Session::new(local(None)).await.unwrap();
    let seed = add(&seeder, &meta, dir.path().join("seed"), vec![]).await;
    wait_complete(&seed).await;

    let out = dir.path().join("leech");
    let first = Session::new(local(None)).await.unwrap();
    let h = add(&first, &meta, out.clone(), vec![seeder.local_addr()]).await;
    wait_complete(&h).await;
    first.shutdown().await;

    // A new session over the same folder: resume data says all is there,
    // nothing is downloaded again.
    let second = Session::new(local(None)).await.unwrap();
    let h = add(&second, &meta, out.clone(), vec![seeder.local_addr()]).await;
    wait_complete(&h).await;
    assert_eq!(h.status().downloaded, 0);
    second.shutdown().await;
    seeder.shutdown().await;
}

/// Peer exchange (BEP 11): C knows only B; B is connected to A; C learns of
/// A from B's ut_pex message and connects to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_peer_learns_of_the_first_through_pex() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("a").join("pex.bin");
    std::fs::create_dir_all(content.parent().unwrap()).unwrap();
    write_files(content.parent().unwrap(), &[("pex.bin", 2_000_000)], 11);
    let opts = CreateOptions {
        piece_length: Some(32 * 1024),
        ..CreateOptions::default()
    };
    let meta = Metainfo::from_bytes(&create_torrent(&content, &opts, &|_, _| {}).unwrap()).unwrap();
    // A's upload is slow, so that C is still downloading when it hears of A.
    let a = Session::new(local(Some(256 * 1024))).await.unwrap();
    let ha = add(&a, &meta, dir.path().join("a"), vec![]).await;
    wait_complete(&ha).await;
    let b = Session::new(local(None)).await.unwrap();
    let _hb = add(&b, &meta, dir.path().join("b"), vec![a.local_addr()]).await;
    let c = Session::new(local(None)).await.unwrap();
    let hc = add(&c, &meta, dir.path().join("c"), vec![b.local_addr()]).await;
    let status = tokio::time::timeout(DEADLINE, async {
        loop {
            let totals = c.peer_totals(hc.id).await.unwrap();
            if totals.contains_key(&a.peer_id()) {
                return hc.status();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("C never connected to A");
    let from_pex = known(&status, PeerSource::Pex);
    assert!(from_pex >= 1, "known peers: {:?}", status.known_peers);
    wait_complete(&hc).await;
    for s in [c, b, a] {
        s.shutdown().await;
    }
}

/// Local service discovery (BEP 14): two nodes with no tracker, no DHT and
/// no peer given find each other through multicast (on the loopback
/// interface, on a group port of the test's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_find_each_other_through_lsd() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("a").join("lsd.bin");
    std::fs::create_dir_all(content.parent().unwrap()).unwrap();
    let files = write_files(content.parent().unwrap(), &[("lsd.bin", 300_000)], 5);
    let meta = Metainfo::from_bytes(
        &create_torrent(&content, &CreateOptions::default(), &|_, _| {}).unwrap(),
    )
    .unwrap();
    let lsd_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = || SessionConfig {
        lsd: true,
        lsd_port,
        ..local(None)
    };
    let a = Session::new(config()).await.unwrap();
    let ha = add(&a, &meta, dir.path().join("a"), vec![]).await;
    wait_complete(&ha).await;
    let b = Session::new(config()).await.unwrap();
    let hb = add(&b, &meta, dir.path().join("b"), vec![]).await;
    wait_complete(&hb).await;
    // Whoever announced last was heard by the other, which dialled it.
    let lsd = |h: &Torrent<'_>| known(&h.status(), PeerSource::Lsd);
    assert!(
        lsd(&ha) + lsd(&hb) >= 1,
        "neither found the other through LSD: {:?} {:?}",
        ha.status().known_peers,
        hb.status().known_peers
    );
    assert!(std::fs::read(dir.path().join("b/lsd.bin")).unwrap() == files[0].1);
    b.shutdown().await;
    a.shutdown().await;
}

/// BEP 53 file selection: only the pieces of the selected file are
/// fetched; the torrent counts as complete without the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selected_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("seed").join("pick");
    let files = write_files(
        &content,
        &[("a.bin", 200_000), ("b.bin", 300_000), ("c.bin", 250_000)],
        21,
    );
    let opts = CreateOptions {
        piece_length: Some(16 * 1024),
        ..CreateOptions::default()
    };
    let meta = Metainfo::from_bytes(&create_torrent(&content, &opts, &|_, _| {}).unwrap()).unwrap();
    let seeder = Session::new(local(None)).await.unwrap();
    let seed = add(&seeder, &meta, dir.path().join("seed"), vec![]).await;
    wait_complete(&seed).await;
    let leecher = Session::new(local(None)).await.unwrap();
    let h = add_with(
        &leecher,
        &meta,
        dir.path().join("l"),
        vec![seeder.local_addr()],
        Some(vec![0]),
    )
    .await;
    wait_complete(&h).await;
    let got_a = std::fs::read(dir.path().join("l/pick/a.bin")).unwrap();
    assert!(got_a == files[0].1, "the selected file is wrong");
    // c.bin shares no piece with a.bin: none of it was fetched.
    let got_c = std::fs::read(dir.path().join("l/pick/c.bin")).unwrap_or_default();
    assert!(
        got_c.iter().all(|&b| b == 0),
        "an unselected file was downloaded"
    );
    let status = h.status();
    assert!(
        status.downloaded < 250_000,
        "downloaded {}",
        status.downloaded
    );
    leecher.shutdown().await;
    seeder.shutdown().await;
}
