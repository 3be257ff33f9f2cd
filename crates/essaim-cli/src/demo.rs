//! `essaim demo`: a whole swarm on 127.0.0.1 in one process, no internet.
//!
//! It writes sample data (three files, odd sizes), starts an in-process
//! tracker, one seeder whose upload is capped (like a saturated server) and
//! several leechers, each its own session on its own port. When every
//! leecher has verified its copy, it compares each copy with the original
//! byte for byte and prints, per leecher, how much came from the seeder and
//! how much from other leechers: the point of peer-to-peer.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use essaim::create::{create_torrent, CreateOptions};
use essaim::tracker_server::TrackerServer;
use essaim::{AddOptions, AddSource, Session, SessionConfig, Settings, TorrentId, TorrentState};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::progress::human_bytes;

/// The whole demo must finish in this time, or it fails.
const DEADLINE: Duration = Duration::from_secs(600);

pub async fn run(leechers: usize, size: u64, seed_upload: u64, quiet: bool) -> Result<ExitCode> {
    if leechers == 0 {
        bail!("the demo needs at least one leecher");
    }
    let work = std::env::temp_dir().join(format!("essaim-demo-{}", std::process::id()));
    let result = run_in(&work, leechers, size, seed_upload, quiet).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn run_in(
    work: &Path,
    leechers: usize,
    size: u64,
    seed_upload: u64,
    quiet: bool,
) -> Result<ExitCode> {
    let source_dir = work.join("seeder");
    let content = source_dir.join("essaim-demo");
    write_sample(&content, size)?;
    println!(
        "sample data: {} in 3 files under {}",
        human_bytes(size),
        content.display()
    );

    let tracker = TrackerServer::bind(([127, 0, 0, 1], 0).into())
        .await
        .context("cannot start the demo tracker")?;
    println!("tracker: {}", tracker.announce_url());
    let opts = CreateOptions {
        piece_length: Some(256 * 1024),
        trackers: vec![vec![tracker.announce_url()]],
        created_by: Some("essaim demo".into()),
        ..CreateOptions::default()
    };
    let torrent = create_torrent(&content, &opts, &|_, _| {})?;

    // On 127.0.0.1, with peers from the demo's tracker only.
    let local = |upload_limit| SessionConfig {
        lsd: false,
        listen_ip: [127, 0, 0, 1].into(),
        port: 0,
        settings: Settings {
            upload_limit,
            ..Settings::default()
        },
        ..SessionConfig::default()
    };
    let add = |dir: PathBuf| AddOptions {
        save_path: Some(dir),
        ..AddOptions::default()
    };
    let seeder = Session::new(local(Some(seed_upload))).await?;
    let seeder_id = seeder.peer_id();
    let seed_id = seeder
        .add(AddSource::Torrent(torrent.clone()), add(source_dir.clone()))
        .await?
        .id;
    seeder
        .wait_for(seed_id, |s| {
            s.is_complete() || matches!(s.state, TorrentState::Error(_))
        })
        .await;
    println!(
        "seeder on {} (upload capped at {}/s)",
        seeder.local_addr(),
        human_bytes(seed_upload)
    );

    let bars = MultiProgress::new();
    if quiet {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix:>10} {bar:30} {percent:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let started = Instant::now();
    let mut sessions = Vec::new();
    for i in 0..leechers {
        let session = Session::new(local(None)).await?;
        let handle: TorrentId = session
            .add(
                AddSource::Torrent(torrent.clone()),
                add(work.join(format!("leecher-{}", i + 1))),
            )
            .await?
            .id;
        let bar = bars.add(ProgressBar::new(size));
        bar.set_style(style.clone());
        bar.set_prefix(format!("leecher {}", i + 1));
        sessions.push((session, handle, bar));
    }

    // Wait for every leecher, updating the bars.
    let mut finish_times = vec![None; leechers];
    loop {
        for (i, (session, handle, bar)) in sessions.iter().enumerate() {
            let Some(s) = session.get(*handle) else {
                bail!("leecher {}: its torrent is gone", i + 1);
            };
            bar.set_position(s.verified);
            bar.set_message(format!(
                "down {}/s up {}/s peers {}",
                human_bytes(s.download_rate),
                human_bytes(s.upload_rate),
                s.peers
            ));
            if let TorrentState::Error(e) = &s.state {
                bail!("leecher {}: {e}", i + 1);
            }
            if s.is_complete() && finish_times[i].is_none() {
                finish_times[i] = Some(started.elapsed());
                bar.finish();
            }
        }
        if finish_times.iter().all(Option::is_some) {
            break;
        }
        if started.elapsed() > DEADLINE {
            bail!("the swarm did not finish in {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = bars.clear();

    // Check every copy against the original, byte for byte.
    for i in 0..leechers {
        let copy = work.join(format!("leecher-{}", i + 1)).join("essaim-demo");
        compare_trees(&content, &copy)
            .with_context(|| format!("leecher {}'s copy differs", i + 1))?;
    }

    println!();
    println!(
        "{:<10} {:>10} {:>14} {:>16} {:>8} {:>12}",
        "leecher", "time", "from seeder", "from leechers", "p2p", "uploaded"
    );
    let mut seeder_total = 0;
    for (i, (session, handle, _)) in sessions.iter().enumerate() {
        let totals = session.peer_totals(*handle).await?;
        let (mut from_seed, mut from_peers, mut up) = (0u64, 0u64, 0u64);
        for (id, (down, upl)) in &totals {
            if *id == seeder_id {
                from_seed += down;
            } else {
                from_peers += down;
            }
            up += upl;
        }
        seeder_total += from_seed;
        let share = 100.0 * from_peers as f64 / (from_seed + from_peers).max(1) as f64;
        println!(
            "{:<10} {:>9.1}s {:>14} {:>16} {:>7.0}% {:>12}",
            format!("#{}", i + 1),
            finish_times[i].unwrap_or_default().as_secs_f64(),
            human_bytes(from_seed),
            human_bytes(from_peers),
            share,
            human_bytes(up)
        );
    }
    let total = started.elapsed().as_secs_f64();
    let server_time = (size as f64 * leechers as f64) / seed_upload as f64;
    println!();
    println!(
        "all {leechers} copies verified, byte for byte, in {total:.1}s; the seeder sent {} ({:.2} copies).",
        human_bytes(seeder_total),
        seeder_total as f64 / size as f64
    );
    println!(
        "a server capped like the seeder would need {server_time:.1}s to send {leechers} copies."
    );

    for (session, _, _) in sessions {
        session.shutdown().await;
    }
    seeder.shutdown().await;
    tracker.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Three files of odd sizes with pseudo-random content.
fn write_sample(dir: &Path, size: u64) -> Result<()> {
    std::fs::create_dir_all(dir.join("docs"))?;
    let a = size / 2 + 12_345.min(size / 4);
    let b = (size - a) * 2 / 3;
    let c = size - a - b;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for (name, len) in [
        ("video.bin", a),
        ("docs/notes.bin", b),
        ("docs/readme.bin", c),
    ] {
        let mut data = Vec::with_capacity(len as usize);
        while (data.len() as u64) < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            data.extend_from_slice(&state.to_le_bytes());
        }
        data.truncate(len as usize);
        std::fs::write(dir.join(name), data)?;
    }
    Ok(())
}

fn compare_trees(a: &Path, b: &Path) -> Result<()> {
    for entry in walk(a)? {
        let rel = entry.strip_prefix(a)?;
        let x = std::fs::read(&entry)?;
        let y =
            std::fs::read(b.join(rel)).with_context(|| format!("{} is missing", rel.display()))?;
        if x != y {
            bail!("{} differs", rel.display());
        }
    }
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}
