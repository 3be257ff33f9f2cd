//! Disk full: `essaim get` into a 2 MiB tmpfs of a 4 MiB torrent must stop
//! with a clear "no space left" error naming the file and a non-zero exit;
//! once the filesystem is made larger, the same `get` resumes, keeps every
//! piece verified before, fetches only what is missing and completes.
//!
//! Needs root (to mount a tmpfs); otherwise, or if mounting fails, the test
//! prints `skipped: <why>` and passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use essaim_core::Metainfo;

const PIECE: u32 = 64 * 1024;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "essaim-test"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy: detach it so the temporary folder can go.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn get_cmd(torrent: &Path, out: &Path, seeder: u16) -> Command {
    essaim_get_cmd(torrent, out, &[local(seeder)])
}

#[test]
fn disk_full_stops_with_a_clear_error_then_resumes() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: not root, cannot mount a tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let fs = match Tmpfs::mount(&mnt, "2m") {
        Ok(fs) => fs,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };

    let src = dir.path().join("src");
    let files = [("big/a.bin", 2_600_000usize), ("big/b.bin", 1_700_000)];
    write_random_files(&src, &files);
    let torrent = dir.path().join("t.torrent");
    essaim_create(&src.join("big"), None, PIECE, &torrent);
    let meta = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    let n = meta.info.pieces.len();
    let (_seeder, port) = essaim_seed(&torrent, &src, &[]);

    // 1. Runs out of space: stops, says so, names the file.
    let mut full = Proc::spawn("get-full", &mut get_cmd(&torrent, &mnt, port));
    let status = full.wait_exit(DEADLINE);
    std::thread::sleep(POLL); // let the readers catch the last lines
    let output = full.recent_output();
    assert!(
        !status.success(),
        "get into a full disk succeeded\n{output}"
    );
    assert!(
        output.contains("no space left on device"),
        "the error does not say the disk is full\n{output}"
    );
    let named = output.lines().any(|l| {
        l.contains("error:") && l.contains("no space left") && l.contains(&*mnt.to_string_lossy())
    });
    assert!(named, "the error line does not name the file\n{output}");
    drop(full);
    let before = verified_pieces(&meta, &mnt);
    println!(
        "{} of {n} pieces verified when the disk was full",
        before.len()
    );
    assert!(
        !before.is_empty() && before.len() < n,
        "{} of {n} pieces verified on a 2 MiB disk",
        before.len()
    );

    // 2. More room: the same command resumes and completes.
    fs.resize("16m");
    let mut again = Proc::spawn("get-again", &mut get_cmd(&torrent, &mnt, port));
    let line = again.wait_for_line("the completion line", DEADLINE, |l| {
        l.contains("this run downloaded")
    });
    again.expect_success(Duration::from_secs(30));
    drop(again);
    assert_same_files(&src, &mnt, &files, false);
    let after = verified_pieces(&meta, &mnt);
    assert!(before.is_subset(&after));
    assert_eq!(after.len(), n);
    let downloaded = downloaded_in(&line);
    let missing = meta.info.total_length() - bytes_of(&meta, before.iter().copied());
    assert!(
        downloaded >= missing && downloaded <= missing + 2 * u64::from(PIECE),
        "the second run downloaded {downloaded} bytes, {missing} were missing: \
         pieces verified before the disk filled up were fetched again"
    );
    drop(fs);
}
