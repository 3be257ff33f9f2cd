//! `essaim daemon` as the tests drive it: started on 127.0.0.1 with its own
//! state and download folders, reached through the remote-control
//! subcommands and, for what they do not cover, plain HTTP requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use super::*;

pub struct Daemon {
    pub proc: Proc,
    pub dir: PathBuf,
    pub state: PathBuf,
    pub dl: PathBuf,
    pub config: PathBuf,
    /// The API, `http://127.0.0.1:PORT`.
    pub api: String,
    pub api_addr: SocketAddr,
    /// Where it listens for peers.
    pub peer_addr: SocketAddr,
    /// Its config.toml's extra lines and extra flags, to start it again.
    extra: String,
    args: Vec<String>,
}

impl Daemon {
    /// Starts a daemon under `dir` (state in `dir/state`, downloads in
    /// `dir/dl`), its config.toml the defaults for a test plus `extra`.
    pub fn start(dir: &Path, extra: &str, args: &[&str]) -> Daemon {
        let port = free_port();
        Self::start_on(dir, port, extra, args)
    }

    fn start_on(dir: &Path, port: u16, extra: &str, args: &[&str]) -> Daemon {
        let config = dir.join("config.toml");
        std::fs::create_dir_all(dir).unwrap();
        write_config(&config, port, extra);
        let state = dir.join("state");
        let dl = dir.join("dl");
        let mut cmd = Command::new(essaim_bin());
        cmd.arg("daemon")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .arg("--download-dir")
            .arg(&dl)
            .args(args);
        let mut proc = Proc::spawn("essaim-daemon", &mut cmd);
        let peer_addr = proc.wait_for_listen_addr(DEADLINE);
        proc.wait_for_line("`API on`", DEADLINE, |l| l.starts_with("API on"));
        let api_addr = SocketAddr::from(([127, 0, 0, 1], port));
        Daemon {
            proc,
            dir: dir.to_path_buf(),
            state,
            dl,
            config,
            api: format!("http://{api_addr}"),
            api_addr,
            peer_addr,
            extra: extra.to_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Starts it again (same folders, same API port, same configuration).
    pub fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let next = Self::start_on(&self.dir, self.api_addr.port(), &self.extra, &args);
        *self = next;
    }

    /// Rewrites its config.toml with other extra lines (for SIGHUP).
    pub fn set_config(&mut self, extra: &str) {
        self.extra = extra.to_owned();
        write_config(&self.config, self.api_addr.port(), extra);
    }

    /// Runs `essaim ARGS --api URL --state-dir STATE` to its end.
    pub fn cli(&self, args: &[&str]) -> Output {
        let state = self.state.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--api", &self.api, "--state-dir", &state]);
        run_bounded(essaim_bin(), &all, DEADLINE)
    }

    /// [`Daemon::cli`], which must succeed; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "essaim {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every torrent, as `essaim list --json` gives them.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let out = self.cli_ok(&["list", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out)
            .expect("list --json is JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// One torrent's JSON, by id.
    pub fn torrent(&self, id: u64) -> serde_json::Value {
        let (status, body) = self.http("GET", &format!("/api/v1/torrents/{id}"), None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// Waits until torrent `id` satisfies `f`; returns its JSON.
    pub fn wait_torrent(
        &self,
        id: u64,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let (status, body) = self.http("GET", &format!("/api/v1/torrents/{id}"), None);
            if status == 200 {
                last = serde_json::from_str(&body).expect("JSON");
                if f(&last) {
                    return last;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "torrent {id}: {what} not reached: {last}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// A plain HTTP/1.1 request with the token; (status, body).
    pub fn http(&self, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
        let token = std::fs::read_to_string(self.state.join("api-token")).unwrap_or_default();
        http(self.api_addr, method, path, json, Some(token.trim()))
    }

    /// SIGTERM, and the exit (which must come within 10 s).
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let started = std::time::Instant::now();
        // SAFETY: kill(2) on our child's pid.
        unsafe {
            libc::kill(self.proc.pid() as i32, libc::SIGTERM);
        }
        let status = self.proc.wait_exit(Duration::from_secs(15));
        (status, started.elapsed())
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our child's pid.
        unsafe {
            libc::kill(self.proc.pid() as i32, sig);
        }
    }

    /// SIGKILL, at once.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.proc.wait_exit(DEADLINE);
    }
}

fn write_config(path: &Path, api_port: u16, extra: &str) {
    let text = format!("dht = false\nlsd = false\nlisten_ip = \"127.0.0.1\"\nport = 0\n{extra}\n");
    // [api] may come in `extra`; add ours if not.
    let text = if extra.contains("[api]") {
        text.replace(
            "[api]",
            &format!("[api]\nlisten = \"127.0.0.1:{api_port}\""),
        )
    } else {
        format!("{text}[api]\nlisten = \"127.0.0.1:{api_port}\"\n")
    };
    std::fs::write(path, text).unwrap();
}

/// A plain HTTP/1.1 request; (status, body). Enough for JSON replies with a
/// length.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the API");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = json.unwrap_or("");
    if json.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
