//! Helpers shared by the integration tests that run real processes: the
//! `essaim` binary and other BitTorrent clients (Transmission, libtorrent via
//! `tests/interop/lt.py`, aria2).
//!
//! Invariants: every child process is owned by a [`Proc`] guard that kills it
//! when dropped (and the kernel kills it if the spawning thread dies first,
//! through `PR_SET_PDEATHSIG`); every wait has a deadline and polls, so a test
//! fails with a message instead of hanging. All traffic stays on 127.0.0.1.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::RngCore;

mod clients;
mod daemon;
#[allow(unused_imports)]
pub use clients::*;
#[allow(unused_imports)]
pub use daemon::*;

/// How long any single step (a check, a download, a process exit) may take.
pub const DEADLINE: Duration = Duration::from_secs(120);
/// Poll interval inside bounded wait loops.
pub const POLL: Duration = Duration::from_millis(100);

/// Path of the `essaim` binary built for this test run.
pub fn essaim_bin() -> &'static str {
    env!("CARGO_BIN_EXE_essaim")
}

/// The repository's `tests/interop` folder (lt.py lives there).
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a process that
/// must be told its port up front.
///
/// Ports come from below the kernel's ephemeral range
/// (`ip_local_port_range`, where bind-to-0 and outgoing connections take
/// theirs), so a client's tracker connection cannot grab one between now
/// and its bind; and this process never hands out the same port twice.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut given = GIVEN.lock().expect("ports lock");
    if ephemeral_low > 12000 {
        let mut rng = rand::thread_rng();
        for _ in 0..200 {
            let port = rand::Rng::gen_range(&mut rng, 10000..ephemeral_low);
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return port;
            }
        }
    }
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Fails the test with install instructions when a required program is not
/// on PATH. The test command (`./test.sh`) installs them.
pub fn require_programs(programs: &[&str], package_hint: &str) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for program in programs {
        let found = std::env::split_paths(&path).any(|dir| dir.join(program).is_file());
        assert!(
            found,
            "interop test needs `{program}`, which is not on PATH; install it with \
             `apt-get install -y {package_hint}` (./test.sh does this)"
        );
    }
}

/// Fails the test unless Debian's python3-libtorrent is importable by
/// /usr/bin/python3.
pub fn require_python_libtorrent() {
    let out = Command::new("/usr/bin/python3")
        .args(["-c", "import libtorrent; print(libtorrent.__version__)"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "interop test needs python3-libtorrent for /usr/bin/python3 (`import libtorrent` \
             failed: {}); install it with `apt-get install -y python3-libtorrent` \
             (./test.sh does this)",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "interop test needs /usr/bin/python3 with python3-libtorrent ({e}); install it \
             with `apt-get install -y python3-libtorrent` (./test.sh does this)"
        ),
    }
}

/// Polls `cond` every [`POLL`] until it is true; panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(POLL);
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_listener(what: &str, addr: SocketAddr, timeout: Duration) {
    wait_until(what, timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    });
}

/// Runs a short command to completion under `timeout` (via coreutils
/// `timeout`), returning its output; panics if it cannot be started.
pub fn run_bounded(program: &str, args: &[&str], timeout: Duration) -> Output {
    let secs = timeout.as_secs().max(1).to_string();
    Command::new("timeout")
        .args(["-k", "5", &secs, program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Lines a child wrote to one of its pipes, filled by a reader thread.
#[derive(Default)]
struct Lines {
    lines: Mutex<(Vec<String>, bool)>, // (lines so far, pipe closed)
    changed: Condvar,
}

impl Lines {
    fn spawn_reader(
        name: String,
        tag: &'static str,
        pipe: impl Read + Send + 'static,
    ) -> Arc<Self> {
        let lines = Arc::new(Lines::default());
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{name} {tag}] {line}");
                let mut guard = sink.lines.lock().expect("lines lock");
                guard.0.push(line);
                sink.changed.notify_all();
            }
            sink.lines.lock().expect("lines lock").1 = true;
            sink.changed.notify_all();
        });
        lines
    }

    fn tail(&self, n: usize) -> String {
        let guard = self.lines.lock().expect("lines lock");
        let lines = &guard.0;
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// A child process that is killed when this guard is dropped. Its stdout
/// and stderr are echoed to the test's output, prefixed with its name, and
/// stdout lines are kept for [`Proc::wait_for_line`].
pub struct Proc {
    name: String,
    child: Child,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with piped stdout/stderr and no stdin.
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; nothing else runs in the
        // child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        let stdout = Lines::spawn_reader(
            name.to_owned(),
            "out",
            child.stdout.take().expect("piped stdout"),
        );
        let stderr = Lines::spawn_reader(
            name.to_owned(),
            "err",
            child.stderr.take().expect("piped stderr"),
        );
        Proc {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Last lines of output, for failure messages.
    pub fn recent_output(&self) -> String {
        format!(
            "--- {} stdout (last lines) ---\n{}\n--- {} stderr (last lines) ---\n{}",
            self.name,
            self.stdout.tail(20),
            self.name,
            self.stderr.tail(40)
        )
    }

    /// Waits for a stdout line (already printed or yet to come) for which
    /// `pred` holds, and returns it. Panics on timeout, or if the process
    /// exits or closes stdout first.
    pub fn wait_for_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            {
                let guard = self.stdout.lines.lock().expect("lines lock");
                if let Some(line) = guard.0[seen..].iter().find(|l| pred(l)) {
                    return line.clone();
                }
                seen = guard.0.len();
                let closed = guard.1;
                let now = Instant::now();
                if !closed && now < deadline {
                    let wait = (deadline - now).min(POLL);
                    drop(self.stdout.changed.wait_timeout(guard, wait).expect("wait"));
                }
            }
            if let Some(status) = self.try_status() {
                // Let the reader threads drain what is left before judging.
                thread::sleep(POLL);
                let guard = self.stdout.lines.lock().expect("lines lock");
                if let Some(line) = guard.0.iter().find(|l| pred(l)) {
                    return line.clone();
                }
                drop(guard);
                panic!(
                    "{} exited ({status}) before printing {what}\n{}",
                    self.name,
                    self.recent_output()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {} to print {what}\n{}",
                    self.name,
                    self.recent_output()
                );
            }
        }
    }

    /// Waits for the `listening on IP:PORT` line and returns the address.
    pub fn wait_for_listen_addr(&mut self, timeout: Duration) -> SocketAddr {
        let line = self.wait_for_line("`listening on IP:PORT`", timeout, |l| {
            listen_addr(l).is_some()
        });
        listen_addr(&line).expect("checked by predicate")
    }

    /// Waits for the process to exit on its own; kills it and panics after
    /// `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit within {timeout:?}\n{}",
                    self.name,
                    self.recent_output()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Waits for a successful exit; panics with the output otherwise.
    pub fn expect_success(&mut self, timeout: Duration) {
        let status = self.wait_exit(timeout);
        if !status.success() {
            thread::sleep(POLL); // let the readers catch the last lines
            panic!("{} failed ({status})\n{}", self.name, self.recent_output());
        }
    }

    /// Panics if the process has already exited (e.g. a seeder that died).
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_status() {
            thread::sleep(POLL);
            panic!(
                "{} exited unexpectedly ({status})\n{}",
                self.name,
                self.recent_output()
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses `listening on 127.0.0.1:PORT` (anything after the address is
/// ignored).
pub fn listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.trim().strip_prefix("listening on ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The test content: a multi-file torrent folder named `multi` with an
/// odd-sized last piece (for 64 KiB pieces) and, optionally, a zero-length
/// file. Paths are relative to the folder that contains `multi`.
pub fn test_files(with_empty_file: bool) -> Vec<(&'static str, usize)> {
    let mut files = vec![
        ("multi/a.bin", 1024 * 1024 + 12345),
        ("multi/sub/b.bin", 700_000),
        ("multi/z.bin", 5),
    ];
    if with_empty_file {
        files.push(("multi/empty.txt", 0));
    }
    files
}

/// Writes `files` with random content under `root`.
pub fn write_random_files(root: &Path, files: &[(&str, usize)]) {
    let mut rng = rand::thread_rng();
    for (rel, len) in files {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("file has a parent")).expect("create dirs");
        let mut data = vec![0u8; *len];
        rng.fill_bytes(&mut data);
        fs::write(&path, &data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// Checks that every file of `files` under `out` is byte-for-byte the same
/// as under `src`. With `missing_empty_ok`, a zero-length file may be
/// absent from `out` (Transmission 3 does not create them).
pub fn assert_same_files(src: &Path, out: &Path, files: &[(&str, usize)], missing_empty_ok: bool) {
    for (rel, len) in files {
        let want = fs::read(src.join(rel)).expect("read source file");
        assert_eq!(want.len(), *len);
        let got_path = out.join(rel);
        if *len == 0 && missing_empty_ok && !got_path.exists() {
            eprintln!("note: zero-length {rel} was not created by the downloader");
            continue;
        }
        let got = fs::read(&got_path)
            .unwrap_or_else(|e| panic!("downloaded file {} missing: {e}", got_path.display()));
        if got != want {
            let first = got.iter().zip(&want).position(|(a, b)| a != b);
            panic!(
                "{rel} differs from the source: {} bytes downloaded, {} expected, first \
                 difference at byte {:?}",
                got.len(),
                want.len(),
                first.unwrap_or(got.len().min(want.len()))
            );
        }
    }
}

/// `essaim create PATH [-t URL] --piece-size N -o OUT`.
pub fn essaim_create(path: &Path, tracker: Option<&str>, piece_size: u32, out: &Path) {
    let mut cmd = Command::new(essaim_bin());
    cmd.arg("create").arg(path);
    if let Some(url) = tracker {
        cmd.args(["-t", url]);
    }
    cmd.args(["--piece-size", &piece_size.to_string()])
        .arg("-o")
        .arg(out);
    let mut p = Proc::spawn("essaim-create", &mut cmd);
    p.expect_success(DEADLINE);
    assert!(
        out.is_file(),
        "essaim create did not write {}",
        out.display()
    );
}

/// Starts `essaim tracker --listen 127.0.0.1:PORT` and returns it with its
/// announce URL once it accepts connections.
///
/// With `ESSAIM_INTEROP_TRACKER=python` in the environment, runs
/// `tests/interop/tracker.py` instead: a debugging aid to tell a tracker
/// problem from a peer-wire one.
pub fn essaim_tracker() -> (Proc, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let python = std::env::var("ESSAIM_INTEROP_TRACKER").is_ok_and(|v| v == "python");
    let mut p = if python {
        Proc::spawn(
            "py-tracker",
            Command::new("/usr/bin/python3")
                .arg(interop_dir().join("tracker.py"))
                .args(["--listen", &listen]),
        )
    } else {
        Proc::spawn(
            "essaim-tracker",
            Command::new(essaim_bin()).args(["tracker", "--listen", &listen]),
        )
    };
    let addr: SocketAddr = listen.parse().expect("addr");
    wait_until("the tracker to accept connections", DEADLINE, || {
        p.assert_running();
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    });
    (p, format!("http://{listen}/announce"))
}

/// Starts `essaim seed TORRENT --data DATA --port 0 [--peer ...]`, waits for
/// `listening on` and `seeding`, and returns it with its listening port.
pub fn essaim_seed(torrent: &Path, data: &Path, peers: &[SocketAddr]) -> (Proc, u16) {
    let mut cmd = Command::new(essaim_bin());
    cmd.arg("seed").arg(torrent).arg("--data").arg(data).args([
        "--port",
        "0",
        "--listen-ip",
        "127.0.0.1",
    ]);
    for peer in peers {
        cmd.args(["--peer", &peer.to_string()]);
    }
    let mut p = Proc::spawn("essaim-seed", &mut cmd);
    let addr = p.wait_for_listen_addr(DEADLINE);
    p.wait_for_line("`seeding`", DEADLINE, |l| l.trim() == "seeding");
    (p, addr.port())
}

/// `essaim get SOURCE -o OUT --port 0 --listen-ip 127.0.0.1 --no-seed
/// --quiet [--peer ...]` (SOURCE: a .torrent or a magnet link), for the
/// caller to add options to and run.
pub fn essaim_get_cmd(
    source: impl AsRef<std::ffi::OsStr>,
    out: &Path,
    peers: &[SocketAddr],
) -> Command {
    let mut cmd = Command::new(essaim_bin());
    cmd.arg("get").arg(source).arg("-o").arg(out).args([
        "--port",
        "0",
        "--listen-ip",
        "127.0.0.1",
        "--no-seed",
        "--quiet",
    ]);
    for peer in peers {
        cmd.args(["--peer", &peer.to_string()]);
    }
    cmd
}

/// Runs [`essaim_get_cmd`] to a successful exit.
pub fn essaim_get(torrent: &Path, out: &Path, peers: &[SocketAddr]) {
    let mut p = Proc::spawn("essaim-get", &mut essaim_get_cmd(torrent, out, peers));
    p.expect_success(DEADLINE);
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Pieces whose bytes on disk under `root` (the folder that holds the
/// torrent's file or folder) match their hash. Reads the files whole: for
/// the small torrents of the tests.
pub fn verified_pieces(
    meta: &essaim_core::Metainfo,
    root: &Path,
) -> std::collections::BTreeSet<u32> {
    use sha1::{Digest, Sha1};
    let layout = &meta.info.layout;
    let files: Vec<Option<Vec<u8>>> = meta
        .info
        .files
        .iter()
        .map(|f| {
            let mut p = root.join(&meta.info.name);
            if meta.info.multi_file {
                p.extend(&f.path);
            }
            fs::read(p).ok()
        })
        .collect();
    (0..layout.num_pieces())
        .filter(|&piece| {
            let (Some(offset), Some(size)) = (layout.piece_offset(piece), layout.piece_size(piece))
            else {
                return false;
            };
            let mut h = Sha1::new();
            for s in layout.slices(offset, u64::from(size)) {
                let Some(Some(data)) = files.get(s.file) else {
                    return false;
                };
                let Some(bytes) = data.get(s.offset as usize..(s.offset + s.length) as usize)
                else {
                    return false;
                };
                h.update(bytes);
            }
            h.finalize()[..] == meta.info.pieces[piece as usize][..]
        })
        .collect()
}

/// Bytes in `pieces` (pieces of `meta`).
pub fn bytes_of(meta: &essaim_core::Metainfo, pieces: impl IntoIterator<Item = u32>) -> u64 {
    pieces
        .into_iter()
        .map(|p| u64::from(meta.info.layout.piece_size(p).unwrap_or(0)))
        .sum()
}

/// The N of the `... this run downloaded N bytes ...` completion line.
pub fn downloaded_in(line: &str) -> u64 {
    line.split("this run downloaded ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the byte count in {line:?}"))
}

/// Fresh folders for one test: `src` holds `multi/...`, `out` receives it.
pub struct Dirs {
    tmp: tempfile::TempDir,
}

impl Dirs {
    pub fn new(with_empty_file: bool) -> (Dirs, Vec<(&'static str, usize)>) {
        let tmp = tempfile::Builder::new()
            .prefix("essaim-interop-")
            .tempdir()
            .expect("tempdir");
        let files = test_files(with_empty_file);
        write_random_files(&tmp.path().join("src"), &files);
        (Dirs { tmp }, files)
    }
    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.tmp.path().join(rel)
    }
    pub fn src(&self) -> std::path::PathBuf {
        self.path("src")
    }
    pub fn out(&self) -> std::path::PathBuf {
        self.path("out")
    }
    pub fn content(&self) -> std::path::PathBuf {
        self.path("src/multi")
    }
    pub fn torrent(&self) -> std::path::PathBuf {
        self.path("multi.torrent")
    }
}
