//! `essaim daemon` driven the way people drive it: the remote-control
//! subcommands, a watch folder, signals, configuration files; and
//! `essaim seed` given the content itself.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A small multi-file torrent under `dir/src/multi` (64 KiB pieces) and
/// an `essaim seed` of it; (seeder, its port, torrent path, files).
fn seeded(dir: &Path) -> (Proc, u16, std::path::PathBuf, Vec<(&'static str, usize)>) {
    let files = test_files(false);
    let src = dir.join("src");
    write_random_files(&src, &files);
    let torrent = dir.join("t.torrent");
    essaim_create(&src.join("multi"), None, 64 * 1024, &torrent);
    let (seeder, port) = essaim_seed(&torrent, &src, &[]);
    (seeder, port, torrent, files)
}

#[test]
fn the_remote_control_drives_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (_seeder, port, torrent, files) = seeded(dir.path());
    let d = Daemon::start(&dir.path().join("d"), "", &[]);
    let t = torrent.display().to_string();

    let seeder_addr = format!("127.0.0.1:{port}");
    let out = d.cli_ok(&["add", &t, "--paused", "--peer", &seeder_addr]);
    assert!(out.starts_with("added as 1 ("), "{out}");
    let again = d.cli_ok(&["add", &t]);
    assert!(again.starts_with("already there as 1"), "{again}");
    let list = d.cli_ok(&["list"]);
    assert!(list.contains("paused") && list.contains("multi"), "{list}");
    let json = d.list();
    assert_eq!(json.len(), 1);
    let ih = json[0]["info_hash"].as_str().unwrap().to_owned();

    // The seeder as a peer, then resume by infohash prefix.
    let (s, body) = d.http(
        "POST",
        "/api/v1/torrents/1/start",
        Some("{\"force\": false}"),
    );
    assert_eq!(s, 204, "{body}");
    let out = d.cli_ok(&["resume", &ih[..6]]);
    assert!(out.contains("resumed"), "{out}");
    let magnet_out = d.cli_ok(&[
        "add",
        &format!("magnet:?xt=urn:btih:{}&dn=nobody", "cd".repeat(20)),
        "-o",
        &d.dl.join("elsewhere").display().to_string(),
    ]);
    assert!(magnet_out.starts_with("added as 2"), "{magnet_out}");
    let m = d.torrent(2);
    assert!(m["save_path"].as_str().unwrap().ends_with("dl/elsewhere"));
    assert_eq!(m["state"], "fetching_metadata");

    // It downloads from the peer it was given.
    d.wait_torrent(1, "seeding", |t| t["state"] == "seeding");
    assert_same_files(&dir.path().join("src"), &d.dl, &files, false);
    let show = d.cli_ok(&["show", "1"]);
    assert!(
        show.contains("state:       seeding") && show.contains("100.0%"),
        "{show}"
    );
    assert!(show.contains("multi/"), "files listed: {show}");

    d.cli_ok(&["pause", "1"]);
    d.wait_torrent(1, "paused", |t| t["state"] == "paused");
    // Errors say what was wrong and fail the command.
    let out = d.cli(&["show", "99"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no torrent 99"));
    let out = d.cli(&["pause", "../x"]);
    assert!(!out.status.success());
    let out = d.cli(&["add", "/no/such/file.torrent"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.torrent"));

    d.cli_ok(&["remove", "2"]);
    let out = d.cli_ok(&["remove", "1", "--delete-data"]);
    assert!(out.contains("and its data"), "{out}");
    assert!(!d.dl.join("multi").exists(), "data deleted");
    assert!(d.list().is_empty());
    // Without the token (no state folder, no env): loopback needs none by
    // default.
    let out = run_bounded(
        essaim_bin(),
        &["list", "--api", &d.api, "--state-dir", "/nonexistent"],
        DEADLINE,
    );
    assert!(out.status.success());
}

#[test]
fn the_watch_folder_adds_torrents_and_sets_aside_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let watch = dir.path().join("watch");
    std::fs::create_dir_all(&watch).unwrap();
    let d = Daemon::start(
        &dir.path().join("d"),
        &format!("watch_dir = \"{}\"\nstart_paused = true", watch.display()),
        &[],
    );
    let src = dir.path().join("src");
    write_random_files(&src, &[("one.bin", 70_000)]);
    let torrent = dir.path().join("one.torrent");
    essaim_create(&src.join("one.bin"), None, 16 * 1024, &torrent);
    // Dropped the way tools do: written elsewhere, renamed in.
    std::fs::copy(&torrent, watch.join("one.torrent.part")).unwrap();
    std::fs::rename(watch.join("one.torrent.part"), watch.join("one.torrent")).unwrap();
    std::fs::write(watch.join("junk.torrent"), b"this is no torrent").unwrap();
    std::fs::write(watch.join("notes.txt"), b"not for us").unwrap();
    wait_until("the watch folder to be read", DEADLINE, || {
        watch.join("one.torrent.added").exists() && watch.join("junk.torrent.invalid").exists()
    });
    assert!(!watch.join("one.torrent").exists());
    assert!(
        watch.join("notes.txt").exists(),
        "other files are left alone"
    );
    let list = d.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "one.bin");
    assert_eq!(
        list[0]["state"], "paused",
        "start_paused from the configuration"
    );
}

#[test]
fn sigterm_stops_cleanly_sighup_reloads_and_everything_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_seeder, port, torrent, files) = seeded(dir.path());
    let mut d = Daemon::start(&dir.path().join("d"), "upload_limit = \"1MiB\"", &[]);
    let t = torrent.display().to_string();
    d.cli_ok(&["add", &t]);
    d.cli_ok(&[
        "add",
        &format!("magnet:?xt=urn:btih:{}", "ef".repeat(20)),
        "--paused",
    ]);
    // The seeder learns of the daemon and dials it.
    let mut dialer = Proc::spawn(
        "essaim-seed-2",
        Command::new(essaim_bin())
            .arg("seed")
            .arg(&torrent)
            .arg("--data")
            .arg(dir.path().join("src"))
            .args(["--port", "0", "--listen-ip", "127.0.0.1", "--peer"])
            .arg(d.peer_addr.to_string()),
    );
    dialer.wait_for_line("`seeding`", DEADLINE, |l| l.trim() == "seeding");
    d.wait_torrent(1, "seeding", |t| t["state"] == "seeding");
    assert_same_files(&dir.path().join("src"), &d.dl, &files, false);
    let _ = port;

    // SIGHUP: a setting that can change while running changes.
    let (_, body) = d.http("GET", "/api/v1/settings", None);
    assert!(body.contains("\"upload_limit\":1048576"), "{body}");
    d.set_config("upload_limit = \"2MiB\"\nmax_active_seeds = 3");
    d.signal(libc::SIGHUP);
    d.proc
        .wait_for_line("`configuration reloaded`", DEADLINE, |l| {
            l == "configuration reloaded"
        });
    let (_, body) = d.http("GET", "/api/v1/settings", None);
    assert!(body.contains("\"upload_limit\":2097152"), "{body}");
    assert!(body.contains("\"max_active_seeds\":3"), "{body}");

    // SIGTERM: a clean stop, within 10 s.
    let (status, took) = d.terminate();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Back: the same torrents, states and options; the seed is not
    // downloaded again.
    d.restart();
    let list = d.list();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["state"], "paused");
    let seed = d.wait_torrent(1, "seeding again", |t| t["state"] == "seeding");
    assert_eq!(seed["downloaded"], 0);
    let (_, body) = d.http("GET", "/api/v1/settings", None);
    assert!(body.contains("\"upload_limit\":2097152"), "{body}");
}

#[test]
fn bad_configurations_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let run = |config: &str, extra: &[&str]| {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, config).unwrap();
        let state = dir.path().join("state").display().to_string();
        let dl = dir.path().join("dl").display().to_string();
        let p = path.display().to_string();
        let mut args = vec![
            "daemon",
            "--config",
            &p,
            "--state-dir",
            &state,
            "--download-dir",
            &dl,
        ];
        args.extend(extra);
        let out = run_bounded(essaim_bin(), &args, DEADLINE);
        assert!(!out.status.success(), "{config}: started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("dht = false\nspeed = 3\n", &[]);
    assert!(err.contains("speed"), "{err}");
    let err = run("[api]\nlisten_on = \"127.0.0.1:1\"\n", &[]);
    assert!(err.contains("listen_on"), "{err}");
    let err = run("upload_limit = \"fast\"\n", &[]);
    assert!(err.contains("upload_limit"), "{err}");
    // An API beyond loopback with no way to authenticate.
    let port = free_port().to_string();
    let err = run(
        "dht = false\nlsd = false\nport = 0\n[api]\ntoken = false\n",
        &["--api", &format!("0.0.0.0:{port}")],
    );
    assert!(err.contains("no way to authenticate"), "{err}");
    let missing = run_bounded(
        essaim_bin(),
        &["daemon", "--config", "/no/such/config.toml"],
        DEADLINE,
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/config.toml"));
}

/// `seed --data` takes the folder holding the content, or the content
/// itself; anything else is an error saying what was expected.
#[test]
fn seed_takes_the_content_itself() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_random_files(&src, &[("x.iso", 50_000)]);
    let torrent = dir.path().join("x.torrent");
    essaim_create(&src.join("x.iso"), None, 16 * 1024, &torrent);
    let (mut seeder, _) = essaim_seed(&torrent, &src.join("x.iso"), &[]);
    seeder.assert_running();
    drop(seeder);
    let out = run_bounded(
        essaim_bin(),
        &[
            "seed",
            &torrent.display().to_string(),
            "--data",
            &dir.path().join("nowhere").display().to_string(),
            "--port",
            "0",
            "--listen-ip",
            "127.0.0.1",
        ],
        DEADLINE,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected the torrent's file `x.iso`"), "{err}");
}
