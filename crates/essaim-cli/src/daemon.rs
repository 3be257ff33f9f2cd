//! `essaim daemon`: a node people leave running. One session with a state
//! folder (every torrent comes back after a restart or a crash), the HTTP
//! API, a watch folder, and signals: SIGTERM and SIGINT stop it cleanly
//! (trackers told, state saved) within [`STOP_WITHIN`]; SIGHUP reads the
//! configuration again and applies the settings that can change while it
//! runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Args;
use essaim::{AddOptions, AddSource, Session, SessionConfig, SessionError, Settings};
use essaim_api::{Api, ApiConfig};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::{self, ConfigFile};

/// The daemon exits this long after SIGTERM at most.
pub const STOP_WITHIN: Duration = Duration::from_secs(9);
/// How often the watch folder is looked at.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// A file in the watch folder is left alone until it has not changed for
/// this long (it may still be being written).
const WATCH_SETTLE: Duration = Duration::from_secs(1);
/// The token file in the state folder.
pub const TOKEN_FILE: &str = "api-token";

#[derive(Args, Clone, Debug)]
pub struct DaemonArgs {
    /// The configuration file (default: $XDG_CONFIG_HOME/essaim/config.toml, if present).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the HTTP API listens (default 127.0.0.1:9080).
    #[arg(long, value_name = "ADDR:PORT")]
    pub api: Option<std::net::SocketAddr>,
    /// Where torrents, resume data and the DHT table are kept
    /// (default: $XDG_STATE_HOME/essaim).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where downloads go unless told otherwise (default: ~/Downloads).
    #[arg(long, value_name = "DIR")]
    pub download_dir: Option<PathBuf>,
    /// A folder where a .torrent dropped is added (then renamed .added,
    /// or .invalid).
    #[arg(long, value_name = "DIR")]
    pub watch_dir: Option<PathBuf>,
    /// Peer port (if taken, the next free one; 0: any). Default 6881.
    #[arg(long)]
    pub port: Option<u16>,
    /// Address for peers (default 0.0.0.0).
    #[arg(long)]
    pub listen_ip: Option<std::net::IpAddr>,
    #[arg(long)]
    pub no_dht: bool,
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
    pub dht_bootstrap: Vec<String>,
    #[arg(long)]
    pub no_lsd: bool,
    /// Upload cap for the session (e.g. 1MiB), bytes per second.
    #[arg(long)]
    pub upload_limit: Option<String>,
    /// Download cap for the session, bytes per second.
    #[arg(long)]
    pub download_limit: Option<String>,
}

/// The settings to start from: defaults, then the file, then the flags.
fn base_settings(file: &ConfigFile, args: &DaemonArgs) -> Result<Settings> {
    let mut s = file.settings(Settings {
        download_dir: config::default_download_dir(),
        ..Settings::default()
    })?;
    if let Some(d) = &args.download_dir {
        s.download_dir = d.clone();
    }
    let limit = |v: &Option<String>| -> Result<Option<Option<u64>>> {
        v.as_deref()
            .map(|t| config::Amount::Text(t.to_owned()).bytes("limit"))
            .transpose()
    };
    if let Some(l) = limit(&args.upload_limit)? {
        s.upload_limit = l;
    }
    if let Some(l) = limit(&args.download_limit)? {
        s.download_limit = l;
    }
    // A relative folder is taken from where the daemon started, once.
    if s.download_dir.is_relative() {
        s.download_dir = std::env::current_dir()?.join(&s.download_dir);
    }
    Ok(s)
}

/// Reads the API token from the state folder, creating it (mode 0600) at
/// the first start.
pub fn read_or_create_token(state_dir: &Path) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = state_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => {
            if let Ok(m) = std::fs::metadata(&path) {
                if m.mode() & 0o077 != 0 {
                    tracing::warn!(
                        "{} can be read by other users: chmod 600 it",
                        path.display()
                    );
                }
            }
            return Ok(t.trim().to_owned());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let raw: [u8; 32] = rand::random();
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(token)
}

pub async fn run(args: DaemonArgs) -> Result<ExitCode> {
    let file = ConfigFile::load(args.config.as_deref())?;
    let settings = base_settings(&file, &args)?;
    let state_dir = args
        .state_dir
        .clone()
        .or_else(|| file.state_dir.clone())
        .unwrap_or_else(config::default_state_dir);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state_dir)
            .with_context(|| format!("cannot create the state folder {}", state_dir.display()))?;
    }
    std::fs::create_dir_all(&settings.download_dir).with_context(|| {
        format!(
            "cannot create the download folder {}",
            settings.download_dir.display()
        )
    })?;
    let api_listen = args
        .api
        .or(file.api.listen)
        .unwrap_or_else(|| ApiConfig::default().listen);
    let token = if file.api.token.unwrap_or(true) {
        Some(read_or_create_token(&state_dir)?)
    } else {
        None
    };
    let user = match (&file.api.username, &file.api.password) {
        (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some((u.clone(), p.clone())),
        (None, None) => None,
        _ => bail!("[api]: username and password go together, and neither may be empty"),
    };
    let api_config = ApiConfig {
        listen: api_listen,
        token,
        user,
        loopback_without_auth: file.api.loopback_without_auth.unwrap_or(true),
        allowed_hosts: file.api.allowed_hosts.clone(),
        allowed_roots: file.api.allowed_roots.clone(),
        ban_after: file
            .api
            .ban_after
            .unwrap_or(essaim_api::security::MAX_FAILURES),
        ban_for: match &file.api.ban_time {
            Some(t) => Duration::from_secs(t.secs("api.ban_time")?.unwrap_or(u64::MAX / 4)),
            None => essaim_api::security::BAN_FOR,
        },
        request_timeout: essaim_api::REQUEST_TIMEOUT,
    };
    if !api_listen.ip().is_loopback() && api_config.token.is_none() && api_config.user.is_none() {
        bail!(
            "refusing to serve the API on {api_listen}, which is not a loopback address, with no \
             way to authenticate: keep the API token (`token = true` in [api]), or set a \
             username and password, or listen on 127.0.0.1"
        );
    }
    let listen_ip = args
        .listen_ip
        .or(file.listen_ip)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let dht_bootstrap = if !args.dht_bootstrap.is_empty() {
        Some(args.dht_bootstrap.clone())
    } else {
        file.dht_bootstrap.clone()
    };
    let session_config = SessionConfig {
        listen_ip,
        port: args.port.or(file.port).unwrap_or(6881),
        dht: !args.no_dht && file.dht.unwrap_or(true),
        dht_bootstrap,
        dht_state: Some(state_dir.join("dht.dat")),
        lsd: !args.no_lsd && file.lsd.unwrap_or(true),
        state_dir: Some(state_dir.clone()),
        settings: settings.clone(),
        ..SessionConfig::default()
    };
    let session = Arc::new(Session::new(session_config).await?);
    println!("listening on {}", session.local_addr());
    println!("state in {}", state_dir.display());
    let api = Api::new(session.clone(), api_config)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (api_addr, api_task) = api.serve(stop_rx.clone()).await?;
    println!("API on http://{api_addr}/api/v1/");
    println!("{} torrents", session.list().len());
    let watch_dir = args.watch_dir.clone().or_else(|| file.watch_dir.clone());
    let watcher = watch_dir.map(|dir| {
        println!("watching {}", dir.display());
        tokio::spawn(watch_folder(dir, session.clone(), stop_rx.clone()))
    });

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&args, &session, &file).await,
        }
    }
    println!("stopping");
    let _ = stop_tx.send(true);
    let stopped = tokio::time::timeout(STOP_WITHIN, async {
        session.shutdown().await;
        let _ = api_task.await;
        if let Some(w) = watcher {
            let _ = w.await;
        }
    })
    .await;
    if stopped.is_err() {
        eprintln!("warning: not everything stopped in {STOP_WITHIN:?}; the state on disk is safe");
    }
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP: the configuration again. Settings that can change while
/// running take their new values; the others (ports, folders of state)
/// wait for a restart, with a warning.
async fn reload(args: &DaemonArgs, session: &Session, old: &ConfigFile) {
    let file = match ConfigFile::load(args.config.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("warning: configuration not reloaded: {e:#}");
            return;
        }
    };
    let base = match base_settings(&file, args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("warning: configuration not reloaded: {e:#}");
            return;
        }
    };
    let fixed = [
        ("port", old.port != file.port),
        ("listen_ip", old.listen_ip != file.listen_ip),
        ("state_dir", old.state_dir != file.state_dir),
        ("dht", old.dht != file.dht),
        ("lsd", old.lsd != file.lsd),
        ("api.listen", old.api.listen != file.api.listen),
        ("api.username", old.api.username != file.api.username),
        ("api.password", old.api.password != file.api.password),
    ];
    for (key, changed) in fixed {
        if changed {
            eprintln!("warning: {key} changed: it takes effect at the next start");
        }
    }
    session.reload_settings(base).await;
    println!("configuration reloaded");
}

/// Adds every .torrent dropped in `dir`, then renames it `.added`, or
/// `.invalid` (the reason logged) when it is no torrent.
async fn watch_folder(dir: PathBuf, session: Arc<Session>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned: std::collections::HashSet<PathBuf> = Default::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut stop) => return,
        }
        let d = dir.clone();
        let found = tokio::task::spawn_blocking(move || dropped_torrents(&d))
            .await
            .unwrap_or_default();
        for path in found {
            let bytes = match read_torrent(&path) {
                Ok(b) => b,
                Err(why) => {
                    set_aside(&path, "invalid", &why);
                    continue;
                }
            };
            match session
                .add(AddSource::Torrent(bytes), AddOptions::default())
                .await
            {
                Ok(added) => {
                    let verb = if added.existed {
                        "already there"
                    } else {
                        "added"
                    };
                    println!("watch folder: {} {verb} as {}", path.display(), added.id);
                    set_aside(&path, "added", "");
                }
                Err(SessionError::InvalidTorrent(why)) => set_aside(&path, "invalid", &why),
                Err(e) => {
                    if warned.insert(path.clone()) {
                        eprintln!(
                            "warning: watch folder: cannot add {}: {e} (will retry)",
                            path.display()
                        );
                    }
                }
            }
        }
    }
}

/// The settled, visible `.torrent` files of `dir`.
fn dropped_torrents(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.to_ascii_lowercase().ends_with(".torrent") {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let settled = m
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age >= WATCH_SETTLE);
        if m.is_file() && settled {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

fn read_torrent(path: &Path) -> Result<Vec<u8>, String> {
    crate::read_capped(path, 16 * 1024 * 1024).map_err(|e| format!("{e:#}"))
}

/// Renames `path` to `path.SUFFIX`, logging `why` for an invalid one.
fn set_aside(path: &Path, suffix: &str, why: &str) {
    let mut to = path.as_os_str().to_os_string();
    to.push(".");
    to.push(suffix);
    if suffix == "invalid" {
        eprintln!(
            "warning: watch folder: {} is not a valid torrent: {why}",
            path.display()
        );
    }
    if let Err(e) = std::fs::rename(path, &to) {
        eprintln!(
            "warning: watch folder: cannot rename {}: {e}",
            path.display()
        );
    }
}

/// Resolves once `stop` turns true.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
