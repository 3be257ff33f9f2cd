//! Crash safety of `essaim get`: killed with SIGKILL halfway, started again,
//! it completes with the right bytes and does not fetch again the pieces it
//! had verified on disk.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use essaim_core::Metainfo;
use sha1::{Digest, Sha1};

/// Pieces whose bytes on disk under `root` match their hash.
fn verified_pieces(meta: &Metainfo, root: &Path) -> Vec<u32> {
    let layout = &meta.info.layout;
    let paths: Vec<_> = meta
        .info
        .files
        .iter()
        .map(|f| {
            let mut p = root.join(&meta.info.name);
            if meta.info.multi_file {
                for c in &f.path {
                    p.push(c);
                }
            }
            p
        })
        .collect();
    let files: Vec<Option<Vec<u8>>> = paths.iter().map(|p| std::fs::read(p).ok()).collect();
    (0..layout.num_pieces())
        .filter(|&piece| {
            let offset = layout.piece_offset(piece).unwrap();
            let size = u64::from(layout.piece_size(piece).unwrap());
            let mut h = Sha1::new();
            for s in layout.slices(offset, size) {
                let Some(Some(data)) = files.get(s.file) else {
                    return false;
                };
                let (a, b) = (s.offset as usize, (s.offset + s.length) as usize);
                let Some(bytes) = data.get(a..b) else {
                    return false;
                };
                h.update(bytes);
            }
            h.finalize()[..] == meta.info.pieces[piece as usize][..]
        })
        .collect()
}

fn get_cmd(torrent: &Path, out: &Path, seeder: u16) -> Command {
    let mut cmd = essaim_get_cmd(torrent, out, &[local(seeder)]);
    // Slow enough to stop it halfway.
    cmd.args(["--download-limit", "3MiB"]);
    cmd
}

#[test]
fn killed_download_resumes_without_refetching_verified_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = [
        ("multi/a.bin", 5_000_000usize),
        ("multi/b/c.bin", 1_234_567),
    ];
    write_random_files(&src, &files);
    let torrent = dir.path().join("t.torrent");
    essaim_create(&src.join("multi"), None, 64 * 1024, &torrent);
    let meta = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    let piece_len = u64::from(meta.info.piece_length);
    let total = meta.info.total_length();
    let (_seeder, port) = essaim_seed(&torrent, &src, &[]);
    let out = dir.path().join("out");

    // First run: kill -9 once about 40% is verified on disk.
    let mut first = Proc::spawn("essaim-get-1", &mut get_cmd(&torrent, &out, port));
    let n = meta.info.pieces.len();
    wait_until("40% of the pieces verified on disk", DEADLINE, || {
        first.assert_running();
        verified_pieces(&meta, &out).len() * 10 >= n * 4
    });
    drop(first); // SIGKILL, then reaped
    let kept = verified_pieces(&meta, &out);
    assert!(
        kept.len() < n,
        "the download finished before it could be killed"
    );

    // Second run: completes, fetching only what was missing.
    let mut second = Proc::spawn("essaim-get-2", &mut get_cmd(&torrent, &out, port));
    let line = second.wait_for_line("the completion line", DEADLINE, |l| {
        l.contains("this run downloaded")
    });
    second.expect_success(Duration::from_secs(30));
    assert_same_files(&src, &out, &files, false);
    let downloaded: u64 = line
        .split("this run downloaded ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the byte count in {line:?}"));
    let missing = total - kept.len() as u64 * piece_len;
    assert!(
        downloaded <= missing + piece_len * 4,
        "second run downloaded {downloaded} bytes, but only about {missing} were missing: \
         verified pieces were fetched again"
    );
    assert!(
        downloaded + piece_len >= missing,
        "{downloaded} < {missing}"
    );
}
