//! Drivers for the other BitTorrent clients, each confined to 127.0.0.1:
//! Transmission 3 (transmission-daemon + transmission-remote), libtorrent
//! 2.0 (through `tests/interop/lt.py`) and aria2 (`aria2c`). The flags and
//! the reasons for them are in `tests/interop/README.md`.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::{
    free_port, interop_dir, local, require_programs, require_python_libtorrent, run_bounded,
    wait_until, Proc, DEADLINE,
};

const TRANSMISSION_PACKAGES: &str = "transmission-daemon transmission-cli";

/// Fails the test unless Transmission's daemon, remote and creator are
/// installed.
pub fn require_transmission() {
    require_programs(
        &[
            "transmission-daemon",
            "transmission-remote",
            "transmission-create",
        ],
        TRANSMISSION_PACKAGES,
    );
}

/// Fails the test unless /usr/bin/python3 can import libtorrent.
pub fn require_libtorrent() {
    require_python_libtorrent();
}

/// Fails the test unless aria2c is installed.
pub fn require_aria2() {
    require_programs(&["aria2c"], "aria2");
}

/// A transmission-daemon with its own config folder, RPC on 127.0.0.1 and
/// peer port on 127.0.0.1. It holds at most one torrent (id 1).
///
/// Transmission 3 never dials peers on 127.0.0.0/8 that a tracker (or PEX)
/// hands it, so whoever it trades with must connect to `peer_port`.
pub struct Transmission {
    pub rpc_port: u16,
    pub peer_port: u16,
    proc: Proc,
}

impl Transmission {
    /// Writes `settings.json` into `config_dir` and starts the daemon, with
    /// `download_dir` as the folder torrents are saved to (and, for
    /// seeding, the folder that already holds the torrent's content).
    pub fn start(config_dir: &Path, download_dir: &Path) -> Transmission {
        require_programs(
            &[
                "transmission-daemon",
                "transmission-remote",
                "transmission-create",
            ],
            TRANSMISSION_PACKAGES,
        );
        fs::create_dir_all(config_dir).expect("create transmission config dir");
        fs::create_dir_all(download_dir).expect("create transmission download dir");
        let rpc_port = free_port();
        let peer_port = free_port();
        let settings = serde_json::json!({
            "bind-address-ipv4": "127.0.0.1",
            "bind-address-ipv6": "::1",
            "dht-enabled": false,
            "lpd-enabled": false,
            "pex-enabled": false,
            "utp-enabled": false,
            "port-forwarding-enabled": false,
            "peer-port": peer_port,
            "peer-port-random-on-start": false,
            "rpc-enabled": true,
            "rpc-bind-address": "127.0.0.1",
            "rpc-port": rpc_port,
            "rpc-authentication-required": false,
            "rpc-whitelist-enabled": true,
            "rpc-whitelist": "127.0.0.1",
            "rpc-host-whitelist-enabled": false,
            "download-dir": download_dir,
            "incomplete-dir-enabled": false,
            // 0 = prefer plain text: accept both plain and encrypted peers.
            "encryption": 0,
            "speed-limit-down-enabled": false,
            "speed-limit-up-enabled": false,
            "alt-speed-enabled": false,
            "download-queue-enabled": false,
            "seed-queue-enabled": false,
            "queue-stalled-enabled": false,
            "ratio-limit-enabled": false,
            "idle-seeding-limit-enabled": false,
            "blocklist-enabled": false,
            "start-added-torrents": true,
            "message-level": 2
        });
        fs::write(
            config_dir.join("settings.json"),
            serde_json::to_vec_pretty(&settings).expect("settings json"),
        )
        .expect("write settings.json");
        let proc = Proc::spawn(
            "transmission",
            Command::new("transmission-daemon")
                .arg("-f")
                .arg("-g")
                .arg(config_dir),
        );
        let mut tr = Transmission {
            rpc_port,
            peer_port,
            proc,
        };
        wait_until("transmission-daemon RPC to answer", DEADLINE, || {
            tr.proc.assert_running();
            tr.try_remote(&["-l"]).is_ok()
        });
        tr
    }

    pub fn peer_addr(&self) -> SocketAddr {
        local(self.peer_port)
    }

    fn try_remote(&self, args: &[&str]) -> Result<String, String> {
        let host = format!("127.0.0.1:{}", self.rpc_port);
        let mut all = vec![host.as_str()];
        all.extend_from_slice(args);
        let out = run_bounded("transmission-remote", &all, Duration::from_secs(30));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "transmission-remote {args:?} failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Runs `transmission-remote 127.0.0.1:RPC ARGS...`; panics on failure.
    pub fn remote(&self, args: &[&str]) -> String {
        self.try_remote(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Adds a .torrent file; Transmission starts it at once, verifying any
    /// data already in the download folder first.
    pub fn add(&self, torrent: &Path) {
        let out = self.remote(&["-a", torrent.to_str().expect("utf-8 path")]);
        assert!(
            out.contains("success"),
            "transmission refused the torrent: {out}"
        );
    }

    /// Adds a magnet link: Transmission fetches the metadata from peers.
    pub fn add_magnet(&self, uri: &str) {
        let out = self.remote(&["-a", uri]);
        assert!(
            out.contains("success"),
            "transmission refused the magnet link: {out}"
        );
    }

    /// `transmission-remote -t 1 -i`.
    pub fn info(&self) -> String {
        self.remote(&["-t", "1", "-i"])
    }

    /// Waits until torrent 1 is 100% done and verified (not checking).
    pub fn wait_complete(&mut self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.proc.assert_running();
            let info = self.info();
            if info.contains("Percent Done: 100%") && !info.contains("Verif") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; transmission says:\n{info}"
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until torrent 1 is running: checked (if there was anything to
    /// check) and accepting peers. Transmission drops incoming connections
    /// for a torrent that is still queued for verification or verifying.
    pub fn wait_running(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.proc.assert_running();
            let info = self.info();
            let state = info
                .lines()
                .find_map(|l| l.trim().strip_prefix("State: "))
                .unwrap_or("");
            if ["Idle", "Downloading", "Seeding", "Up & Down"].contains(&state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for transmission to start the \
                 torrent; transmission says:\n{info}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks the daemon to quit (which flushes its cache to disk) and waits
    /// for it to exit.
    pub fn quit(&mut self) {
        self.remote(&["--exit"]);
        self.proc.wait_exit(DEADLINE);
    }
}

/// `transmission-create [-t URL] -s KIB -o OUT PATH`. Note: it leaves
/// zero-length files out of the torrent.
pub fn transmission_create(path: &Path, tracker: Option<&str>, piece_kib: u32, out: &Path) {
    require_transmission();
    let mut cmd = Command::new("transmission-create");
    if let Some(url) = tracker {
        cmd.args(["-t", url]);
    }
    cmd.args(["-s", &piece_kib.to_string()])
        .arg("-o")
        .arg(out)
        .arg(path);
    Proc::spawn("transmission-create", &mut cmd).expect_success(DEADLINE);
}

fn lt_py(mode: &str) -> Command {
    require_python_libtorrent();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(interop_dir().join("lt.py")).arg(mode);
    cmd
}

/// `lt.py create PATH OUT [--tracker URL] --piece-size N` (a v1-only torrent
/// made by libtorrent; keeps zero-length files).
pub fn lt_create(path: &Path, tracker: Option<&str>, piece_size: u32, out: &Path) {
    let mut cmd = lt_py("create");
    cmd.arg(path).arg(out);
    if let Some(url) = tracker {
        cmd.args(["--tracker", url]);
    }
    cmd.args(["--piece-size", &piece_size.to_string()]);
    Proc::spawn("lt-create", &mut cmd).expect_success(DEADLINE);
}

/// Starts a libtorrent seeder on 127.0.0.1:`port` and waits until it has
/// checked the data and is seeding.
pub fn lt_seed(torrent: &Path, data: &Path, port: u16, peers: &[SocketAddr]) -> Proc {
    lt_seed_dht(torrent, data, port, peers, &[])
}

/// [`lt_seed`] with libtorrent's DHT on, bootstrapped from `dht` only (no
/// DHT when empty).
pub fn lt_seed_dht(
    torrent: &Path,
    data: &Path,
    port: u16,
    peers: &[SocketAddr],
    dht: &[SocketAddr],
) -> Proc {
    let mut cmd = lt_py("seed");
    cmd.arg(torrent)
        .arg(data)
        .args(["--port", &port.to_string()]);
    for peer in peers {
        cmd.args(["--peer", &peer.to_string()]);
    }
    for node in dht {
        cmd.args(["--dht-bootstrap", &node.to_string()]);
    }
    let mut p = Proc::spawn("lt-seed", &mut cmd);
    p.wait_for_line("`ready`", DEADLINE, |l| l.trim() == "ready");
    p
}

/// Starts one libtorrent session seeding every torrent of `torrents` from
/// `data`, and waits until all are checked and seeding.
pub fn lt_seed_many(data: &Path, torrents: &[std::path::PathBuf], port: u16) -> Proc {
    let mut cmd = lt_py("seed-many");
    cmd.arg(data)
        .args(torrents)
        .args(["--port", &port.to_string()]);
    let mut p = Proc::spawn("lt-seed-many", &mut cmd);
    p.wait_for_line("`ready`", DEADLINE, |l| l.trim() == "ready");
    p
}

/// Downloads with libtorrent into `out`, to a successful exit (lt.py exits 0
/// only when every piece passed its hash check and the session is closed).
pub fn lt_get(torrent: impl AsRef<std::ffi::OsStr>, out: &Path, port: u16, peers: &[SocketAddr]) {
    lt_get_dht(torrent, out, port, peers, &[]).expect_success(DEADLINE);
}

/// Starts `lt.py get` with libtorrent's DHT bootstrapped from `dht` only
/// (none when empty); the caller waits for it. It prints `first peer
/// after S s` and, for a magnet, `metadata after S s`.
pub fn lt_get_dht(
    torrent: impl AsRef<std::ffi::OsStr>,
    out: &Path,
    port: u16,
    peers: &[SocketAddr],
    dht: &[SocketAddr],
) -> Proc {
    let mut cmd = lt_py("get");
    cmd.arg(torrent)
        .arg(out)
        .args(["--port", &port.to_string()])
        .args(["--timeout", &(DEADLINE.as_secs() - 10).to_string()]);
    for peer in peers {
        cmd.args(["--peer", &peer.to_string()]);
    }
    for node in dht {
        cmd.args(["--dht-bootstrap", &node.to_string()]);
    }
    Proc::spawn("lt-get", &mut cmd)
}

/// aria2 has no way to be told a peer: it learns peers from trackers only
/// (DHT, LPD and PEX are off here), so its torrents need a tracker.
fn aria2c(dir: &Path, port: u16) -> Command {
    require_aria2();
    let mut cmd = Command::new("aria2c");
    cmd.args([
        "--no-conf",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        "--interface=127.0.0.1",
        "--bt-tracker-interval=5",
        "--file-allocation=none",
        "--summary-interval=0",
        "--bt-save-metadata=false",
        "--auto-save-interval=0",
        "--console-log-level=notice",
        "--bt-min-crypto-level=plain",
        "--bt-require-crypto=false",
        "--max-overall-upload-limit=0",
        "--max-overall-download-limit=0",
    ])
    .arg(format!("--stop-with-process={}", std::process::id()))
    .arg(format!("--listen-port={port}"))
    .arg(format!("--dir={}", dir.display()));
    cmd
}

/// Starts aria2 seeding `torrent` from `data` (checked first) on
/// 127.0.0.1:`port`; it seeds until killed.
pub fn aria2_seed(torrent: &Path, data: &Path, port: u16) -> Proc {
    let mut cmd = aria2c(data, port);
    cmd.args([
        "--check-integrity=true",
        "--bt-seed-unverified=false",
        "--seed-ratio=0.0",
    ])
    .arg(torrent);
    let mut p = Proc::spawn("aria2-seed", &mut cmd);
    // aria2 opens its BitTorrent port once the data check is over.
    p.wait_for_line("`listening on TCP port`", DEADLINE, |l| {
        l.contains("listening on TCP port")
    });
    p
}

/// Downloads with aria2 into `out`, to a successful exit.
pub fn aria2_get(torrent: &Path, out: &Path, port: u16) {
    let mut cmd = aria2c(out, port);
    cmd.args([
        "--seed-time=0",
        &format!("--bt-stop-timeout={}", DEADLINE.as_secs() - 10),
    ])
    .arg(torrent);
    Proc::spawn("aria2-get", &mut cmd).expect_success(DEADLINE);
}
