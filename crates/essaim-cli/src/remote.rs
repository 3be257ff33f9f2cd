//! The remote control: `essaim add`, `list`, `show`, `pause`, `resume`,
//! `remove`, talking to a daemon's native API (`--api URL`, default
//! `http://127.0.0.1:9080`). An ID is a torrent's list number or a prefix
//! of its infohash. Credentials: `ESSAIM_API_TOKEN`, else the token file
//! of the state folder (`--state-dir`, default `$XDG_STATE_HOME/essaim`),
//! sent as `Authorization: Bearer`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::progress::human_bytes;

#[derive(Args, Clone, Debug)]
pub struct RemoteArgs {
    /// The daemon's API.
    #[arg(long, default_value = "http://127.0.0.1:9080")]
    pub api: String,
    /// The daemon's state folder, for its token file (default:
    /// $XDG_STATE_HOME/essaim).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Subcommand, Clone, Debug)]
pub enum RemoteCommand {
    /// Add a .torrent file or a magnet link to a running daemon.
    Add {
        #[command(flatten)]
        remote: RemoteArgs,
        /// A .torrent file or a magnet link.
        source: String,
        /// Add it paused.
        #[arg(long)]
        paused: bool,
        /// The folder its content goes in (an allowed one of the daemon).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// A peer to dial (IP:PORT); repeatable.
        #[arg(long = "peer")]
        peers: Vec<std::net::SocketAddr>,
    },
    /// List the daemon's torrents.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show one torrent, its files and trackers.
    Show {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
    },
    /// Pause a torrent.
    Pause {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
    },
    /// Resume a torrent.
    Resume {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
    },
    /// Remove a torrent (and with --delete-data its files).
    Remove {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
        #[arg(long)]
        delete_data: bool,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(args: &RemoteArgs) -> Result<Client> {
        let token = match std::env::var("ESSAIM_API_TOKEN") {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
            _ => {
                let dir = args
                    .state_dir
                    .clone()
                    .unwrap_or_else(crate::config::default_state_dir);
                std::fs::read_to_string(dir.join(crate::daemon::TOKEN_FILE))
                    .ok()
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
            }
        };
        let base = args.api.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--api {base:?}: expected an http:// or https:// URL");
        }
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            base,
            token,
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends, and turns an error reply into its message.
    async fn send(&self, r: reqwest::RequestBuilder) -> Result<Option<Value>> {
        let resp = r.send().await.with_context(|| {
            format!(
                "cannot reach the daemon at {} (is `essaim daemon` running?)",
                self.base
            )
        })?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        if body.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_slice(&body).context("the daemon's reply is not JSON")?,
        ))
    }
}

fn id_path(id: &str) -> Result<String> {
    let id = id.trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("{id:?} is not a torrent id (a list number or an infohash prefix)");
    }
    Ok(format!("/torrents/{id}"))
}

pub async fn run(cmd: RemoteCommand) -> Result<ExitCode> {
    let args = match &cmd {
        RemoteCommand::Add { remote, .. }
        | RemoteCommand::List { remote, .. }
        | RemoteCommand::Show { remote, .. }
        | RemoteCommand::Pause { remote, .. }
        | RemoteCommand::Resume { remote, .. }
        | RemoteCommand::Remove { remote, .. } => remote.clone(),
    };
    let c = Client::new(&args)?;
    use reqwest::Method as M;
    match cmd {
        RemoteCommand::Add {
            source,
            paused,
            output,
            peers,
            ..
        } => {
            let output = match output {
                Some(o) if o.is_relative() => Some(std::env::current_dir()?.join(o)),
                o => o,
            };
            let reply = if source.trim_start().starts_with("magnet:") {
                let mut body = serde_json::json!({ "magnet": source.trim() });
                if paused {
                    body["paused"] = true.into();
                }
                if let Some(o) = &output {
                    body["save_path"] = o.display().to_string().into();
                }
                if !peers.is_empty() {
                    body["peers"] = peers.iter().map(|p| p.to_string()).collect();
                }
                c.send(c.req(M::POST, "/torrents").json(&body)).await?
            } else {
                let path = Path::new(&source);
                let bytes = crate::read_capped(path, 16 * 1024 * 1024)?;
                let part = reqwest::multipart::Part::bytes(bytes)
                    .file_name(
                        path.file_name()
                            .map(|f| f.to_string_lossy().into_owned())
                            .unwrap_or_else(|| "x.torrent".into()),
                    )
                    .mime_str("application/x-bittorrent")?;
                let mut form = reqwest::multipart::Form::new().part("torrent", part);
                if paused {
                    form = form.text("paused", "true");
                }
                if let Some(o) = &output {
                    form = form.text("save_path", o.display().to_string());
                }
                if !peers.is_empty() {
                    let list: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
                    form = form.text("peers", list.join(","));
                }
                c.send(c.req(M::POST, "/torrents").multipart(form)).await?
            };
            let reply = reply.unwrap_or_default();
            let id = &reply["id"];
            if reply["existed"].as_bool() == Some(true) {
                println!(
                    "already there as {id} ({})",
                    reply["info_hash"].as_str().unwrap_or("")
                );
            } else {
                println!(
                    "added as {id} ({})",
                    reply["info_hash"].as_str().unwrap_or("")
                );
            }
        }
        RemoteCommand::List { json, .. } => {
            // Scripts get whole records; the table needs the list's.
            let path = if json {
                "/torrents?full=true"
            } else {
                "/torrents"
            };
            let list = c.send(c.req(M::GET, path)).await?.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            let items = list.as_array().cloned().unwrap_or_default();
            println!(
                "{:>4}  {:<17} {:>6} {:>10} {:>11} {:>11} {:>6}  name",
                "id", "state", "done", "size", "down", "up", "ratio"
            );
            for t in &items {
                println!(
                    "{:>4}  {:<17} {:>5.1}% {:>10} {:>9}/s {:>9}/s {:>6.2}  {}",
                    t["id"].as_u64().unwrap_or(0),
                    t["state"].as_str().unwrap_or("?"),
                    t["progress"].as_f64().unwrap_or(0.0) * 100.0,
                    human_bytes(t["wanted_size"].as_u64().unwrap_or(0)),
                    human_bytes(t["download_rate"].as_u64().unwrap_or(0)),
                    human_bytes(t["upload_rate"].as_u64().unwrap_or(0)),
                    t["ratio"].as_f64().unwrap_or(0.0),
                    t["name"].as_str().unwrap_or("")
                );
            }
            if items.is_empty() {
                println!("(no torrents)");
            }
        }
        RemoteCommand::Show { id, .. } => {
            let p = id_path(&id)?;
            let t = c.send(c.req(M::GET, &p)).await?.unwrap_or_default();
            let files = c
                .send(c.req(M::GET, &format!("{p}/files")))
                .await?
                .unwrap_or_default();
            let trackers = c
                .send(c.req(M::GET, &format!("{p}/trackers")))
                .await?
                .unwrap_or_default();
            show(&t, &files, &trackers);
        }
        RemoteCommand::Pause { id, .. } => {
            c.send(c.req(M::POST, &format!("{}/pause", id_path(&id)?)))
                .await?;
            println!("paused {id}");
        }
        RemoteCommand::Resume { id, .. } => {
            c.send(c.req(M::POST, &format!("{}/resume", id_path(&id)?)))
                .await?;
            println!("resumed {id}");
        }
        RemoteCommand::Remove {
            id, delete_data, ..
        } => {
            let q = if delete_data { "?delete_data=true" } else { "" };
            c.send(c.req(M::DELETE, &format!("{}{q}", id_path(&id)?)))
                .await?;
            println!(
                "removed {id}{}",
                if delete_data { " and its data" } else { "" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(t: &Value, files: &Value, trackers: &Value) {
    let s = |k: &str| t[k].as_str().unwrap_or("").to_owned();
    let n = |k: &str| t[k].as_u64().unwrap_or(0);
    println!("id:          {}", t["id"]);
    println!("name:        {}", s("name"));
    println!("infohash:    {}", s("info_hash"));
    let mut state = s("state");
    if let Some(e) = t["error"]["message"].as_str() {
        state = format!("{state}: {e}");
    }
    println!("state:       {state}");
    println!(
        "progress:    {:.1}% of {}",
        t["progress"].as_f64().unwrap_or(0.0) * 100.0,
        human_bytes(n("wanted_size"))
    );
    println!(
        "transfer:    down {}/s, up {}/s, {} peers ({} seeds)",
        human_bytes(n("download_rate")),
        human_bytes(n("upload_rate")),
        n("peers"),
        n("seeds")
    );
    println!(
        "totals:      downloaded {}, uploaded {}, ratio {:.2}",
        human_bytes(n("downloaded_total")),
        human_bytes(n("uploaded_total")),
        t["ratio"].as_f64().unwrap_or(0.0)
    );
    println!("folder:      {}", s("save_path"));
    println!("queue:       {}", n("queue_position"));
    println!("magnet:      {}", s("magnet"));
    if let Some(fs) = files.as_array() {
        println!("files:");
        for f in fs {
            println!(
                "  {:>5.1}% {}{} ({})",
                f["progress"].as_f64().unwrap_or(0.0) * 100.0,
                f["path"].as_str().unwrap_or(""),
                if f["wanted"].as_bool() == Some(false) {
                    " [skipped]"
                } else {
                    ""
                },
                human_bytes(f["size"].as_u64().unwrap_or(0))
            );
        }
    }
    if let Some(ts) = trackers.as_array() {
        if !ts.is_empty() {
            println!("trackers:");
        }
        for tr in ts {
            let status = match tr["last_error"].as_str() {
                Some(e) => format!("error: {e}"),
                None if tr["successes"].as_u64().unwrap_or(0) > 0 => {
                    format!("ok, {} seeders, {} leechers", tr["seeders"], tr["leechers"])
                }
                None => "not yet announced".into(),
            };
            println!(
                "  tier {} {}: {status}",
                tr["tier"],
                tr["url"].as_str().unwrap_or("")
            );
        }
    }
}
