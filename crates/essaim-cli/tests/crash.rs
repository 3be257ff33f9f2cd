//! Crash safety under repeated SIGKILL: `essaim get` of a multi-file torrent
//! is killed 20 times at random moments (some during start-up and recheck,
//! most while pieces arrive), restarted each time, and must end with the
//! right bytes. A piece verified on disk is never lost by a later run, and
//! the last run fetches only what was still missing.
//!
//! The moments come from a seeded generator; the seed is printed and can be
//! given back with `ESSAIM_CRASH_SEED=N` to replay a run. Each moment is
//! either a time since the start of the run (0–150 ms: start-up, recheck,
//! connecting, first blocks) or a number of pieces verified on disk, polled;
//! every run is stopped before 90% so that the download never finishes
//! early. `--download-limit 1MiB` keeps the download slow enough to be
//! caught: its burst (a quarter second, 8 pieces) is less than the average
//! progress between two kills.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use essaim_core::Metainfo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KILLS: usize = 20;
const PIECE: u32 = 32 * 1024;

fn get_cmd(torrent: &Path, out: &Path, seeder: u16) -> Command {
    let mut cmd = essaim_get_cmd(torrent, out, &[local(seeder)]);
    cmd.args(["--download-limit", "1MiB"]);
    cmd
}

#[derive(Debug, Clone, Copy)]
enum Moment {
    /// This long after the process started.
    Elapsed(Duration),
    /// Once this many pieces are verified on disk.
    Pieces(usize),
}

#[test]
fn twenty_sigkills_lose_no_piece_and_refetch_none() {
    let seed: u64 = std::env::var("ESSAIM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test seed {seed} (replay with ESSAIM_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = [
        ("multi/a.bin", 3_500_000usize),
        ("multi/sub/b.bin", 3_200_001),
        ("multi/sub/c.bin", 1_300_000),
        ("multi/z.bin", 5),
    ];
    write_random_files(&src, &files);
    let torrent = dir.path().join("t.torrent");
    essaim_create(&src.join("multi"), None, PIECE, &torrent);
    let meta = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    let n = meta.info.pieces.len();
    let (mut seeder, port) = essaim_seed(&torrent, &src, &[]);
    let out = dir.path().join("out");
    let cap = n * 9 / 10;

    let started = Instant::now();
    let mut verified: BTreeSet<u32> = BTreeSet::new();
    let mut kills = 0;
    for run in 0..KILLS {
        let have = verified.len();
        let moment = if rng.gen_bool(0.3) {
            Moment::Elapsed(Duration::from_millis(rng.gen_range(0..150)))
        } else {
            // Spread the remaining progress over the remaining runs.
            let step = (2 * cap.saturating_sub(have) / (KILLS - run)).max(1);
            Moment::Pieces((have + rng.gen_range(1..=step)).min(cap))
        };
        let mut get = Proc::spawn(&format!("get-{run}"), &mut get_cmd(&torrent, &out, port));
        let t0 = Instant::now();
        loop {
            if let Some(status) = get.try_status() {
                panic!(
                    "run {run} exited ({status}) before it was killed at {moment:?}\n{}",
                    get.recent_output()
                );
            }
            let now = verified_pieces(&meta, &out).len();
            let due = match moment {
                Moment::Elapsed(d) => t0.elapsed() >= d,
                Moment::Pieces(k) => now >= k,
            };
            if due || now >= cap {
                break;
            }
            assert!(
                t0.elapsed() < DEADLINE,
                "run {run}: {moment:?} not reached in {DEADLINE:?} ({now} of {n} pieces)\n{}",
                get.recent_output()
            );
            seeder.assert_running();
            std::thread::sleep(Duration::from_millis(5));
        }
        let at = t0.elapsed();
        drop(get); // SIGKILL, then reaped
        kills += 1;
        let after = verified_pieces(&meta, &out);
        let lost: Vec<u32> = verified.difference(&after).copied().collect();
        assert!(
            lost.is_empty(),
            "run {run} (killed at {moment:?}, after {at:?}) lost pieces verified before: {lost:?}"
        );
        println!(
            "run {run:2}: killed after {:4} ms ({moment:?}): {} -> {} of {n} pieces verified",
            at.as_millis(),
            verified.len(),
            after.len()
        );
        verified = after;
    }
    assert_eq!(kills, KILLS);
    assert!(
        verified.len() < n,
        "the download finished before the last kill"
    );

    // The last run completes, fetching only what was missing.
    let mut last = Proc::spawn("get-last", &mut get_cmd(&torrent, &out, port));
    let line = last.wait_for_line("the completion line", DEADLINE, |l| {
        l.contains("this run downloaded")
    });
    last.expect_success(Duration::from_secs(30));
    assert_same_files(&src, &out, &files, false);
    let downloaded = downloaded_in(&line);
    let missing = meta.info.total_length() - bytes_of(&meta, verified.iter().copied());
    assert!(
        downloaded >= missing,
        "the last run downloaded {downloaded} bytes but {missing} were missing"
    );
    assert!(
        downloaded <= missing + 2 * u64::from(PIECE),
        "the last run downloaded {downloaded} bytes, but only {missing} were missing: \
         verified pieces were fetched again"
    );
    println!(
        "{KILLS} kills, then {downloaded} bytes for the {missing} missing, in {:?}",
        started.elapsed()
    );
}
