//! A node (session + API) on 127.0.0.1 for the HTTP tests, and a torrent
//! to feed it. Every wait is bounded.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use essaim::create::{create_torrent, CreateOptions};
use essaim::{Session, SessionConfig, Settings};
use essaim_api::{Api, ApiConfig};
use tokio::sync::watch;

pub const BOUND: Duration = Duration::from_secs(30);

pub struct Node {
    pub session: Arc<Session>,
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// A node whose API config is `cfg` applied to the defaults (on
    /// 127.0.0.1, port chosen by the OS, a token `secret`).
    pub async fn start(cfg: impl FnOnce(&mut ApiConfig, &std::path::Path)) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let session = Session::new(SessionConfig {
            listen_ip: [127, 0, 0, 1].into(),
            port: 0,
            lsd: false,
            dht: false,
            state_dir: Some(dir.path().join("state")),
            settings: Settings {
                download_dir: dir.path().join("dl"),
                ..Settings::default()
            },
            ..SessionConfig::default()
        })
        .await
        .unwrap();
        let mut config = ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: Some("secret".into()),
            ..ApiConfig::default()
        };
        cfg(&mut config, dir.path());
        let session = Arc::new(session);
        let api = Api::new(session.clone(), config).unwrap();
        let (stop, rx) = watch::channel(false);
        let (addr, task) = api.serve(rx).await.unwrap();
        Node {
            session,
            base: format!("http://{addr}"),
            addr,
            dir,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(BOUND, self.task).await;
        self.session.shutdown().await;
    }
}

/// A two-file torrent of random data under `root/NAME`; its bytes.
pub fn torrent(root: &std::path::Path, name: &str, seed: u8) -> Vec<u8> {
    let base = root.join(name);
    std::fs::create_dir_all(&base).unwrap();
    for (f, len) in [("a.bin", 40_000usize), ("b.bin", 25_000)] {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
            .collect();
        std::fs::write(base.join(f), data).unwrap();
    }
    let opts = CreateOptions {
        piece_length: Some(16 * 1024),
        ..CreateOptions::default()
    };
    create_torrent(&base, &opts, &|_, _| {}).unwrap()
}

pub fn magnet(hex_byte: &str) -> String {
    format!("magnet:?xt=urn:btih:{}&dn=m{hex_byte}", hex_byte.repeat(20))
}

pub fn some_path(p: PathBuf) -> String {
    p.display().to_string()
}
