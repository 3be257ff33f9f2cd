//! The library API that the daemon, the CLI and the HTTP adapters drive:
//! adding (a .torrent or a magnet link), listing, pausing, resuming,
//! removing (with and without data), the queue, options at run time,
//! events, and a session that comes back from its state folder.
//!
//! Sessions run in this process on 127.0.0.1 with no DHT and no local
//! discovery; every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use essaim::create::{create_torrent, CreateOptions};
use essaim::{
    AddOptions, AddSource, Event, Limit, OptionsPatch, QueueMove, Session, SessionConfig, Settings,
    SettingsPatch, TorrentError, TorrentId, TorrentState, TorrentSummary,
};
use essaim_core::Metainfo;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(60);

fn config(state_dir: Option<PathBuf>, settings: Settings) -> SessionConfig {
    SessionConfig {
        listen_ip: [127, 0, 0, 1].into(),
        port: 0,
        lsd: false,
        dht: false,
        state_dir,
        settings,
        ..SessionConfig::default()
    }
}

/// `files` of random bytes (seeded) under `root`, and a torrent of them.
fn content(root: &Path, name: &str, files: &[(&str, usize)], seed: u64) -> (Metainfo, Vec<u8>) {
    let base = root.join(name);
    let mut state = seed | 1;
    for (f, len) in files {
        let path = base.join(f);
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
    }
    let opts = CreateOptions {
        piece_length: Some(16 * 1024),
        ..CreateOptions::default()
    };
    let bytes = create_torrent(&base, &opts, &|_, _| {}).unwrap();
    (Metainfo::from_bytes(&bytes).unwrap(), bytes)
}

async fn add(session: &Session, bytes: &[u8], dir: &Path, peers: Vec<SocketAddr>) -> TorrentId {
    session
        .add(
            AddSource::Torrent(bytes.to_vec()),
            AddOptions {
                save_path: Some(dir.to_path_buf()),
                peers,
                ..AddOptions::default()
            },
        )
        .await
        .unwrap()
        .id
}

async fn wait(
    session: &Session,
    id: TorrentId,
    what: &str,
    f: impl Fn(&TorrentSummary) -> bool,
) -> TorrentSummary {
    match timeout(BOUND, session.wait_for(id, f)).await {
        Ok(Some(s)) => s,
        Ok(None) => panic!("{what}: torrent {id} is gone"),
        Err(_) => panic!("{what}: not reached in time: {:?}", session.get(id)),
    }
}

fn is(state: TorrentState) -> impl Fn(&TorrentSummary) -> bool {
    move |s| s.state == state
}

/// A session seeding `bytes` from `dir`.
async fn seeder(bytes: &[u8], dir: &Path) -> (Session, TorrentId) {
    let s = Session::new(config(
        None,
        Settings {
            initial_seeding: false,
            ..Settings::default()
        },
    ))
    .await
    .unwrap();
    let id = add(&s, bytes, dir, vec![]).await;
    wait(&s, id, "seeder checked", is(TorrentState::Seeding)).await;
    (s, id)
}

fn same_tree(a: &Path, b: &Path) {
    for e in std::fs::read_dir(a).unwrap() {
        let p = e.unwrap().path();
        let q = b.join(p.file_name().unwrap());
        if p.is_dir() {
            same_tree(&p, &q);
        } else {
            assert!(
                std::fs::read(&p).unwrap() == std::fs::read(&q).unwrap(),
                "{} differs",
                q.display()
            );
        }
    }
}

/// A TCP relay to `to` that counts the connections it is given.
async fn counting_relay(
    to: SocketAddr,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut near, _)) = listener.accept().await {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut far) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut near, &mut far).await;
                }
            });
        }
    });
    (addr, count)
}

/// A magnet link: listed at once while it fetches its metadata; the
/// connection that gave the metadata carries the download (the seed sees
/// one connection from start to end); the events come in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magnet_becomes_a_download_over_the_same_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, bytes) = content(
        dir.path().join("seed").as_path(),
        "album",
        &[("a.bin", 300_000), ("b/c.bin", 123_457)],
        1,
    );
    let (seed, seed_id) = seeder(&bytes, &dir.path().join("seed")).await;
    let (relay, connections) = counting_relay(seed.local_addr()).await;
    let leech = Session::new(config(None, Settings::default()))
        .await
        .unwrap();
    let mut events = leech.subscribe();
    let added = leech
        .add(
            AddSource::Magnet(meta.magnet()),
            AddOptions {
                save_path: Some(dir.path().join("leech")),
                peers: vec![relay],
                ..AddOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(!added.existed);
    let first = leech.get(added.id).expect("listed at once");
    assert!(!first.has_metadata);
    assert_eq!(first.info_hash, meta.info_hash);
    let done = wait(&leech, added.id, "complete", is(TorrentState::Seeding)).await;
    assert_eq!(done.name, "album");
    assert!(done.is_complete());
    same_tree(
        &dir.path().join("seed/album"),
        &dir.path().join("leech/album"),
    );
    // One connection, ever: it carried the metadata and the data.
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    let totals = seed.peer_totals(seed_id).await.unwrap();
    assert_eq!(totals.len(), 1, "the seed saw one peer id: {totals:?}");
    assert_eq!(totals.values().next().unwrap().1, meta.info.total_length());
    // Adding it again answers with the same id.
    let again = leech
        .add(AddSource::Torrent(bytes.clone()), AddOptions::default())
        .await
        .unwrap();
    assert_eq!((again.id, again.existed), (added.id, true));
    // Events, in order, for this torrent.
    let mut seen = Vec::new();
    while let Ok(Some(Ok(e))) = timeout(Duration::from_millis(200), events.next()).await {
        if e.torrent() == Some(added.id) {
            seen.push(match e {
                Event::StateChanged { state, .. } => state.name().to_owned(),
                other => other.name().to_owned(),
            });
        }
    }
    let want = [
        "added",
        "fetching_metadata",
        "metadata_received",
        "checking",
        "downloading",
        "completed",
        "seeding",
    ];
    let mut it = seen.iter();
    for w in want {
        assert!(
            it.any(|s| s == w),
            "event {w} missing or out of order in {seen:?}"
        );
    }
    leech.shutdown().await;
    seed.shutdown().await;
}
