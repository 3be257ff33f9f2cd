//! Crash safety of the daemon: 20 torrents in every state (downloading
//! from a libtorrent seeder, queued, paused, seeding, fetching metadata),
//! each with options of its own, and the daemon killed with SIGKILL ten
//! times at seeded random moments (some during start-up and checks, most
//! while pieces arrive). After each restart: the same torrents with the
//! same ids, states, options and queue places; every piece that was on
//! disk is counted (none is fetched again). At the end every download
//! completes, byte for byte, having fetched exactly the bytes that were
//! missing.
//!
//! The moments come from a seeded generator; the seed is printed and can
//! be given back with `ESSAIM_CRASH_SEED=N`. The session's download cap
//! (512 KiB/s) keeps the downloads from finishing before the last kill, so
//! the queued torrents stay queued throughout.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use essaim_core::Metainfo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const KILLS: usize = 10;
const PIECE: u32 = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Downloading,
    Queued,
    Paused,
    Seeding,
    Magnet,
}

impl Kind {
    fn state(self) -> &'static str {
        match self {
            Kind::Downloading => "downloading",
            Kind::Queued => "queued",
            Kind::Paused => "paused",
            Kind::Seeding => "seeding",
            Kind::Magnet => "fetching_metadata",
        }
    }
}

struct T {
    kind: Kind,
    meta: Metainfo,
    torrent: PathBuf,
    id: u64,
    /// Pieces verified on disk at the last kill.
    on_disk: BTreeSet<u32>,
}

/// One file of `len` random bytes under `dir/NAME`, and a torrent of it.
fn make(dir: &Path, out: &Path, name: &str, len: usize) -> (Metainfo, PathBuf) {
    write_random_files(dir, &[(name, len)]);
    let torrent = out.join(format!("{name}.torrent"));
    essaim_create(&dir.join(name), None, PIECE, &torrent);
    let meta = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    (meta, torrent)
}

fn by_id(list: &[Value]) -> BTreeMap<u64, Value> {
    list.iter()
        .map(|t| (t["id"].as_u64().unwrap(), t.clone()))
        .collect()
}

/// Waits until no torrent is being checked; the list then.
fn settled(d: &Daemon) -> BTreeMap<u64, Value> {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let last = d.list();
        if last.len() == 20 && last.iter().all(|t| t["state"] != "checking") {
            return by_id(&last);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "checks did not end: {last:?}"
        );
        std::thread::sleep(POLL);
    }
}

#[test]
fn ten_sigkills_keep_every_torrent_its_state_and_its_pieces() {
    require_libtorrent();
    let seed: u64 = std::env::var("ESSAIM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("daemon crash test seed {seed} (replay with ESSAIM_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let tor = dir.path().join("torrents");
    std::fs::create_dir_all(&tor).unwrap();
    let ddir = dir.path().join("daemon");
    let dl = ddir.join("dl");
    let mut ts: Vec<T> = Vec::new();
    let mut plan = Vec::new();
    for i in 0..6 {
        plan.push((
            Kind::Downloading,
            format!("down{i}.bin"),
            3_000_000 + i * 7919,
        ));
    }
    for i in 0..3 {
        plan.push((Kind::Magnet, format!("magnet{i}.bin"), 200_000 + i * 13));
    }
    for i in 0..3 {
        plan.push((Kind::Queued, format!("queued{i}.bin"), 1_000_000 + i * 101));
    }
    for i in 0..4 {
        plan.push((Kind::Paused, format!("paused{i}.bin"), 250_000 + i * 17));
    }
    for i in 0..4 {
        plan.push((Kind::Seeding, format!("seeding{i}.bin"), 300_000 + i * 19));
    }
    for (kind, name, len) in &plan {
        // Seeds' data is where the daemon downloads; the others' data is
        // the libtorrent seeder's.
        let at = if *kind == Kind::Seeding { &dl } else { &src };
        let (meta, torrent) = make(at, &tor, name, *len);
        ts.push(T {
            kind: *kind,
            meta,
            torrent,
            id: 0,
            on_disk: BTreeSet::new(),
        });
    }
    let port = free_port();
    let seeded: Vec<PathBuf> = ts
        .iter()
        .filter(|t| t.kind != Kind::Seeding)
        .map(|t| t.torrent.clone())
        .collect();
    let _lt = lt_seed_many(&src, &seeded, port);
    let lt_addr = format!("127.0.0.1:{port}");

    let mut d = Daemon::start(
        &ddir,
        "max_active_downloads = 9\nmax_active_seeds = \"unlimited\"\ndownload_limit = \"512KiB\"",
        &[],
    );
    for t in ts.iter_mut() {
        let path = t.torrent.display().to_string();
        let out = match t.kind {
            Kind::Magnet => d.cli_ok(&["add", &t.meta.magnet()]),
            Kind::Paused => d.cli_ok(&["add", &path, "--paused", "--peer", &lt_addr]),
            Kind::Seeding => d.cli_ok(&["add", &path]),
            _ => d.cli_ok(&["add", &path, "--peer", &lt_addr]),
        };
        t.id = out
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no id in {out:?}"));
        // Options of its own, to find again after every crash.
        let (s, body) = d.http(
            "PATCH",
            &format!("/api/v1/torrents/{}/options", t.id),
            Some(
                &json!({
                    "upload_limit": 10_000 + t.id * 1000,
                    "seed_ratio": 1.0 + t.id as f64 / 10.0,
                    "max_peers": 20 + t.id,
                })
                .to_string(),
            ),
        );
        assert_eq!(s, 200, "{body}");
    }
    let check_round = |d: &Daemon, ts: &[T], round: usize| -> BTreeMap<u64, Value> {
        let list = settled(d);
        for t in ts {
            let got = &list[&t.id];
            let state = got["state"].as_str().unwrap();
            assert_eq!(
                state,
                t.kind.state(),
                "round {round}: torrent {} ({:?}): {got}",
                t.id,
                t.kind
            );
            assert_eq!(
                got["options"]["upload_limit"],
                10_000 + t.id * 1000,
                "round {round}"
            );
            assert_eq!(got["options"]["max_peers"], 20 + t.id, "round {round}");
            assert_eq!(
                got["options"]["seed_ratio"].as_f64(),
                Some(1.0 + t.id as f64 / 10.0)
            );
            assert_eq!(
                got["queue_position"],
                t.id - 1,
                "round {round}: queue place"
            );
            if t.kind == Kind::Seeding {
                assert_eq!(got["downloaded"], 0, "round {round}: a seed downloaded");
            }
            if matches!(t.kind, Kind::Downloading | Kind::Queued) {
                let (_, body) = d.http("GET", &format!("/api/v1/torrents/{}/pieces", t.id), None);
                let map: Value = serde_json::from_str(&body).unwrap();
                let states = map["states"].as_str().unwrap().as_bytes();
                for &p in &t.on_disk {
                    assert_eq!(
                        states[p as usize], b'1',
                        "round {round}: torrent {}: piece {p} was on disk and is not counted",
                        t.id
                    );
                }
            }
        }
        list
    };
    check_round(&d, &ts, 0);

    for round in 1..=KILLS {
        let moment = if rng.gen_bool(0.3) {
            Duration::from_millis(rng.gen_range(0..150))
        } else {
            Duration::from_millis(rng.gen_range(300..1500))
        };
        // The moment of the crash is what this test is about.
        std::thread::sleep(moment);
        d.kill9();
        for t in ts.iter_mut() {
            if matches!(t.kind, Kind::Downloading | Kind::Queued) {
                let now = verified_pieces(&t.meta, &dl);
                assert!(
                    now.is_superset(&t.on_disk),
                    "round {round}: torrent {} lost pieces on disk",
                    t.id
                );
                t.on_disk = now;
            }
        }
        let have: usize = ts.iter().map(|t| t.on_disk.len()).sum();
        println!("kill {round} after {moment:?}: {have} pieces on disk");
        d.restart();
        check_round(&d, &ts, round);
        let leftovers: Vec<_> = std::fs::read_dir(d.state.join("torrents"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".invalid"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "a state file was unreadable after a crash"
        );
    }

    // The end: no cap, the paused resumed, the magnets given the peer.
    let (s, _) = d.http(
        "PATCH",
        "/api/v1/settings",
        Some("{\"download_limit\": null}"),
    );
    assert_eq!(s, 200);
    for t in &ts {
        match t.kind {
            Kind::Paused => {
                d.cli_ok(&["resume", &t.id.to_string()]);
            }
            Kind::Magnet => {
                let (s, body) = d.http(
                    "POST",
                    &format!("/api/v1/torrents/{}/peers", t.id),
                    Some(&json!({ "peers": [lt_addr] }).to_string()),
                );
                assert_eq!(s, 204, "{body}");
            }
            _ => {}
        }
    }
    for t in &ts {
        let done = d.wait_torrent(t.id, "complete", |v| v["state"] == "seeding");
        let size = t.meta.info.total_length();
        let data = std::fs::read(dl.join(&t.meta.info.name)).unwrap();
        assert_eq!(data.len() as u64, size);
        let from = if t.kind == Kind::Seeding { &dl } else { &src };
        assert!(
            data == std::fs::read(from.join(&t.meta.info.name)).unwrap(),
            "torrent {}: bytes differ",
            t.id
        );
        if matches!(t.kind, Kind::Downloading | Kind::Queued) {
            let missing = size - bytes_of(&t.meta, t.on_disk.iter().copied());
            let useful = done["downloaded"].as_u64().unwrap() - done["wasted"].as_u64().unwrap();
            assert_eq!(
                useful, missing,
                "torrent {}: the last run fetched {useful} useful bytes, {missing} were missing",
                t.id
            );
        }
    }
    d.terminate();
}
