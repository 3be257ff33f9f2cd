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

/// Pause closes the connections and keeps the pieces; resume goes on;
/// a torrent's download cap applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_a_torrent_cap() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = content(&dir.path().join("seed"), "one", &[("x.bin", 1_000_000)], 2);
    let (seed, seed_id) = seeder(&bytes, &dir.path().join("seed")).await;
    let leech = Session::new(config(None, Settings::default()))
        .await
        .unwrap();
    let id = leech
        .add(
            AddSource::Torrent(bytes.clone()),
            AddOptions {
                save_path: Some(dir.path().join("leech")),
                peers: vec![seed.local_addr()],
                options: essaim::TorrentOptions {
                    download_limit: Some(200_000),
                    ..Default::default()
                },
                ..AddOptions::default()
            },
        )
        .await
        .unwrap()
        .id;
    wait(&leech, id, "some pieces", |s| s.pieces_have >= 3).await;
    leech.pause(id).await.unwrap();
    let paused = wait(&leech, id, "paused", is(TorrentState::Paused)).await;
    assert_eq!(paused.peers, 0);
    assert!(
        paused.pieces_have >= 3 && !paused.is_complete(),
        "{paused:?}"
    );
    // The seeder sees the connection go.
    timeout(BOUND, async {
        while !seed.peers(seed_id).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the connection stayed open");
    leech.resume(id).await.unwrap();
    let done = wait(&leech, id, "complete", is(TorrentState::Seeding)).await;
    // Capped at 200 kB/s (a quarter-second burst aside), a megabyte takes
    // seconds; uncapped, it takes milliseconds here.
    assert!(
        done.active_time >= Duration::from_secs(3),
        "took {:?}",
        done.active_time
    );
    leech.shutdown().await;
    seed.shutdown().await;
}

/// Removing keeps the data unless told; with the data, only the torrent's
/// own files and the folders left empty go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_with_and_without_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, bytes) = content(
        &dir.path().join("data"),
        "tree",
        &[("a.bin", 70_000), ("sub/b.bin", 50_000)],
        3,
    );
    let data = dir.path().join("data");
    let s = Session::new(config(None, Settings::default()))
        .await
        .unwrap();
    let mut events = s.subscribe();
    let id = add(&s, &bytes, &data, vec![]).await;
    wait(&s, id, "seeding", is(TorrentState::Seeding)).await;
    s.remove(id, false).await.unwrap();
    assert!(s.get(id).is_none() && s.list().is_empty());
    assert!(data.join("tree/sub/b.bin").exists(), "data kept");
    assert!(matches!(
        s.remove(id, false).await,
        Err(essaim::SessionError::NotFound(_))
    ));
    // Added again: its data is found, nothing to download.
    let id = add(&s, &bytes, &data, vec![]).await;
    let again = wait(&s, id, "seeding again", is(TorrentState::Seeding)).await;
    assert_eq!(
        (again.downloaded, again.pieces_have),
        (0, meta.info.pieces.len() as u32)
    );
    // A file of the user's in the torrent's folder stays, and the folder
    // with it.
    std::fs::write(data.join("tree/sub/mine.txt"), b"mine").unwrap();
    std::fs::write(data.join("beside.txt"), b"beside").unwrap();
    s.remove(id, true).await.unwrap();
    assert!(!data.join("tree/a.bin").exists());
    assert!(!data.join("tree/sub/b.bin").exists());
    assert!(data.join("tree/sub/mine.txt").exists());
    assert!(data.join("beside.txt").exists());
    std::fs::remove_file(data.join("tree/sub/mine.txt")).unwrap();
    let id2 = add(&s, &bytes, &data, vec![]).await;
    wait(&s, id2, "checked", |s| s.state == TorrentState::Downloading).await;
    s.remove(id2, true).await.unwrap();
    assert!(!data.join("tree").exists(), "empty folders go");
    assert!(data.exists(), "the download folder stays");
    let mut removed = 0;
    while let Ok(Some(Ok(e))) = timeout(Duration::from_millis(200), events.next()).await {
        if let Event::Removed { data_deleted, .. } = e {
            removed += 1 + usize::from(data_deleted) * 10;
        }
    }
    assert_eq!(
        removed,
        1 + 11 + 11,
        "one removal kept the data, two did not"
    );
    s.shutdown().await;
}

/// At most N downloads at once: the others wait, in order; a forced one
/// runs anyway; the queue can be reordered; a finished download frees its
/// place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_holds_back_downloads_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let seed_dir = dir.path().join("seed");
    let torrents: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let (_, b) = content(&seed_dir, &format!("t{i}"), &[("f.bin", 400_000)], 10 + i);
            b
        })
        .collect();
    let seed = Session::new(config(
        None,
        Settings {
            max_active_seeds: None,
            initial_seeding: false,
            ..Settings::default()
        },
    ))
    .await
    .unwrap();
    for b in &torrents {
        let id = add(&seed, b, &seed_dir, vec![]).await;
        wait(&seed, id, "seed", is(TorrentState::Seeding)).await;
    }
    let leech = Session::new(config(
        None,
        Settings {
            max_active_downloads: Some(1),
            ..Settings::default()
        },
    ))
    .await
    .unwrap();
    let mut ids = Vec::new();
    for b in &torrents {
        let id = leech
            .add(
                AddSource::Torrent(b.clone()),
                AddOptions {
                    save_path: Some(dir.path().join("leech")),
                    peers: vec![seed.local_addr()],
                    options: essaim::TorrentOptions {
                        download_limit: Some(150_000),
                        ..Default::default()
                    },
                    ..AddOptions::default()
                },
            )
            .await
            .unwrap()
            .id;
        ids.push(id);
    }
    wait(&leech, ids[0], "first runs", is(TorrentState::Downloading)).await;
    for &id in &ids[1..] {
        wait(&leech, id, "others wait", is(TorrentState::Queued)).await;
    }
    // The last moves to the top: it runs next; forced, the third runs now.
    leech.move_in_queue(ids[3], QueueMove::Top).await.unwrap();
    leech.force_start(ids[2], true).await.unwrap();
    wait(&leech, ids[2], "forced runs", is(TorrentState::Downloading)).await;
    assert_eq!(leech.get(ids[1]).unwrap().state, TorrentState::Queued);
    let list = leech.list();
    let order: Vec<u64> = ids
        .iter()
        .map(|id| list.iter().find(|s| s.id == *id).unwrap().queue_position)
        .collect();
    assert_eq!(order, [1, 2, 3, 0], "positions after the move");
    // When the first is done, the moved one (now first in line) starts.
    wait(&leech, ids[0], "first done", is(TorrentState::Seeding)).await;
    wait(&leech, ids[3], "moved one starts", |s| {
        s.state == TorrentState::Downloading || s.state == TorrentState::Seeding
    })
    .await;
    for &id in &ids {
        wait(&leech, id, "all done", is(TorrentState::Seeding)).await;
    }
    leech.shutdown().await;
    seed.shutdown().await;
}

/// Files chosen when adding, then all of them at run time: the torrent
/// seeds its selection, then downloads the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_selection_changes_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = content(
        &dir.path().join("seed"),
        "pick",
        &[("a.bin", 100_000), ("b.bin", 200_000)],
        4,
    );
    let (seed, _) = seeder(&bytes, &dir.path().join("seed")).await;
    let leech = Session::new(config(None, Settings::default()))
        .await
        .unwrap();
    let id = leech
        .add(
            AddSource::Torrent(bytes.clone()),
            AddOptions {
                save_path: Some(dir.path().join("leech")),
                peers: vec![seed.local_addr()],
                files: Some(vec![0]),
                ..AddOptions::default()
            },
        )
        .await
        .unwrap()
        .id;
    let part = wait(&leech, id, "selection done", is(TorrentState::Seeding)).await;
    assert!(part.wanted_size < part.total_size);
    let files = leech.files(id).await.unwrap();
    assert!(files[0].wanted && files[0].verified == files[0].size);
    assert!(!files[1].wanted && files[1].verified < files[1].size);
    let bad = leech
        .set_options(
            id,
            OptionsPatch {
                files: Some(Some(vec![7])),
                ..OptionsPatch::default()
            },
        )
        .await;
    assert!(bad.is_err(), "file 7 of 2 accepted");
    leech
        .set_options(
            id,
            OptionsPatch {
                files: Some(None),
                ..OptionsPatch::default()
            },
        )
        .await
        .unwrap();
    let all = wait(&leech, id, "everything", |s| {
        s.state == TorrentState::Seeding && s.wanted_size == s.total_size
    })
    .await;
    assert!(all.is_complete());
    same_tree(
        &dir.path().join("seed/pick"),
        &dir.path().join("leech/pick"),
    );
    leech.shutdown().await;
    seed.shutdown().await;
}

/// A seed limit pauses the torrent and says which limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_limit_pauses() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = content(&dir.path().join("d"), "s", &[("x", 50_000)], 5);
    let s = Session::new(config(None, Settings::default()))
        .await
        .unwrap();
    let id = s
        .add(
            AddSource::Torrent(bytes),
            AddOptions {
                save_path: Some(dir.path().join("d")),
                options: essaim::TorrentOptions {
                    seed_time: Limit::Value(1),
                    ..Default::default()
                },
                ..AddOptions::default()
            },
        )
        .await
        .unwrap()
        .id;
    let st = wait(&s, id, "paused by its limit", is(TorrentState::Paused)).await;
    assert_eq!(st.stopped_by, Some(essaim::SeedLimitReached::SeedingTime));
    assert!(st.seeding_time >= Duration::from_secs(1));
    s.shutdown().await;
}

/// A session with a state folder brings back every torrent with its id,
/// state and options; a seed comes back without rehashing; data gone
/// behind its back is an error, not a silent new download; moving the
/// data works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_comes_back_from_its_state_folder() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let data = dir.path().join("data");
    let (_, seed_bytes) = content(&data, "kept", &[("k.bin", 300_000)], 6);
    let (_, paused_bytes) = content(&dir.path().join("elsewhere"), "paused", &[("p", 1000)], 7);
    let (gone_meta, gone_bytes) = content(&data, "gone", &[("g.bin", 40_000)], 8);
    let settings = Settings {
        download_dir: data.clone(),
        ..Settings::default()
    };
    let s = Session::new(config(Some(state.clone()), settings.clone()))
        .await
        .unwrap();
    let seeding = add(&s, &seed_bytes, &data, vec![]).await;
    let paused = s
        .add(
            AddSource::Torrent(paused_bytes),
            AddOptions {
                paused: Some(true),
                options: essaim::TorrentOptions {
                    upload_limit: Some(12345),
                    seed_ratio: Limit::Value(2.5),
                    ..Default::default()
                },
                ..AddOptions::default()
            },
        )
        .await
        .unwrap()
        .id;
    let magnet = s
        .add(
            AddSource::Magnet(format!("magnet:?xt=urn:btih:{}&dn=nobody", "ab".repeat(20))),
            AddOptions::default(),
        )
        .await
        .unwrap()
        .id;
    let gone = add(&s, &gone_bytes, &data, vec![]).await;
    wait(&s, seeding, "seeding", is(TorrentState::Seeding)).await;
    wait(&s, gone, "seeding", is(TorrentState::Seeding)).await;
    wait(&s, magnet, "fetching", is(TorrentState::FetchingMetadata)).await;
    s.set_settings(SettingsPatch {
        upload_limit: Some(Some(999_999)),
        ..SettingsPatch::default()
    })
    .await
    .unwrap();
    let before = s.list();
    s.shutdown().await;
    std::fs::remove_dir_all(data.join("gone")).unwrap();

    let s = Session::new(config(Some(state.clone()), settings.clone()))
        .await
        .unwrap();
    assert_eq!(
        s.settings().upload_limit,
        Some(999_999),
        "run-time setting kept"
    );
    let after = s.list();
    let ids = |l: &[TorrentSummary]| l.iter().map(|t| (t.id, t.info_hash)).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before));
    let p = s.get(paused).unwrap();
    assert_eq!(p.state, TorrentState::Paused);
    assert_eq!(p.options.upload_limit, Some(12345));
    assert_eq!(p.options.seed_ratio, Limit::Value(2.5));
    assert_eq!(p.save_path, data, "default folder");
    let k = wait(&s, seeding, "seeding again", is(TorrentState::Seeding)).await;
    assert_eq!(k.downloaded, 0);
    wait(
        &s,
        magnet,
        "fetching again",
        is(TorrentState::FetchingMetadata),
    )
    .await;
    assert_eq!(s.get(magnet).unwrap().name, "nobody");
    let g = wait(&s, gone, "an error", |s| {
        matches!(s.state, TorrentState::Error(_))
    })
    .await;
    match g.state {
        TorrentState::Error(TorrentError::FilesMissing { path }) => {
            assert!(path.starts_with(data.join("gone")), "{path:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!data.join("gone").exists(), "nothing laid out in its place");
    // Recheck accepts what is left (nothing) and starts over.
    s.recheck(gone).await.unwrap();
    wait(&s, gone, "downloading from nothing", |s| {
        s.state == TorrentState::Downloading && s.pieces_have == 0
    })
    .await;
    assert_eq!(gone_meta.info.name, "gone");
    // Moving a seed's data.
    let moved_to = dir.path().join("moved");
    let m = s
        .set_options(
            seeding,
            OptionsPatch {
                save_path: Some(moved_to.clone()),
                ..OptionsPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(m.save_path, moved_to);
    assert!(moved_to.join("kept/k.bin").exists() && !data.join("kept").exists());
    wait(
        &s,
        seeding,
        "seeding after the move",
        is(TorrentState::Seeding),
    )
    .await;
    s.shutdown().await;
    // And after a restart, it is where it was moved.
    let s = Session::new(config(Some(state), settings)).await.unwrap();
    let k = wait(&s, seeding, "seeding moved", is(TorrentState::Seeding)).await;
    assert_eq!((k.save_path.clone(), k.downloaded), (moved_to, 0));
    s.shutdown().await;
}
