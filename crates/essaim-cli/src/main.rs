//! `essaim`: the command-line BitTorrent node.
//!
//! Subcommands: `create`, `info`, `get`, `seed`, `tracker`, `demo`,
//! `daemon`, and the remote control of a daemon: `add`, `list`, `show`,
//! `pause`, `resume`, `remove`.

mod config;
mod daemon;
mod demo;
mod progress;
mod remote;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use essaim::create::{create_torrent, parse_size, CreateOptions};
use essaim::{
    AddOptions, AddSource, Limit, Session, SessionConfig, Settings, TorrentId, TorrentOptions,
    TorrentState, TorrentSummary,
};
use essaim_core::{Magnet, Metainfo};

#[derive(Parser)]
#[command(
    name = "essaim",
    version,
    about = "A peer-to-peer file-sharing node (BitTorrent)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a .torrent of a file or a folder.
    Create {
        path: PathBuf,
        /// Tracker URL; repeat for several (one tier each).
        #[arg(short = 't', long = "tracker")]
        trackers: Vec<String>,
        /// Piece size: bytes or with a unit (256KiB, 1MiB). Default: from the total size.
        #[arg(long)]
        piece_size: Option<String>,
        /// Output file (default: NAME.torrent in the current folder).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        #[arg(long)]
        private: bool,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Show what a .torrent holds.
    Info {
        file: PathBuf,
        #[arg(long)]
        json: bool,
        /// Print only the magnet link.
        #[arg(long)]
        magnet: bool,
    },
    /// Download a torrent or magnet link, then seed it.
    Get {
        /// A .torrent file or a magnet link.
        source: String,
        /// Folder to download into (default: the current folder).
        #[arg(short = 'o', long, default_value = ".")]
        output: PathBuf,
        /// Stop as soon as all data is verified.
        #[arg(long)]
        no_seed: bool,
        /// Stop seeding at this upload/download ratio.
        #[arg(long)]
        seed_ratio: Option<f64>,
        /// Stop seeding after this long (90s, 30m, 2h).
        #[arg(long, value_parser = parse_duration)]
        seed_time: Option<Duration>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Check existing data and seed it.
    Seed {
        file: PathBuf,
        /// The folder holding the torrent's content.
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Run a small in-memory HTTP tracker.
    Tracker {
        #[arg(long, default_value = "0.0.0.0:6969")]
        listen: SocketAddr,
        /// The announce interval told to clients (90s, 30m, ...).
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        interval: Duration,
    },
    /// Run as a daemon: torrents kept across restarts, an HTTP API, a
    /// watch folder.
    Daemon(daemon::DaemonArgs),
    #[command(flatten)]
    Remote(remote::RemoteCommand),
    /// A local swarm on 127.0.0.1: one seeder, several leechers, no internet.
    Demo {
        /// Number of leechers.
        #[arg(long, default_value_t = 5)]
        leechers: usize,
        /// Size of the sample data (e.g. 32MiB).
        #[arg(long, default_value = "32MiB")]
        size: String,
        /// The seeder's upload cap (e.g. 8MiB), so that leechers must share.
        #[arg(long, default_value = "8MiB")]
        seed_upload: String,
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Args, Clone)]
struct NetArgs {
    /// A peer to connect to (IP:PORT); repeatable.
    #[arg(long = "peer")]
    peers: Vec<SocketAddr>,
    /// Listening port (if taken, the next free one; 0: any).
    #[arg(long, default_value_t = 6881)]
    port: u16,
    /// Address to listen on (127.0.0.1 keeps essaim, local discovery
    /// included, on this machine).
    #[arg(long, default_value = "0.0.0.0")]
    listen_ip: std::net::IpAddr,
    /// No local service discovery (BEP 14 multicast on the LAN).
    #[arg(long)]
    no_lsd: bool,
    /// No Mainline DHT (BEP 5).
    #[arg(long)]
    no_dht: bool,
    /// Seed complete data as an ordinary seed, showing every piece at once
    /// (by default a torrent that starts complete sends each piece once
    /// before any twice, like BEP 16 super-seeding).
    #[arg(long)]
    no_initial_seeding: bool,
    /// A DHT node to bootstrap from (HOST:PORT); repeatable. Default: the
    /// public routers (router.bittorrent.com:6881 and others), except with
    /// a loopback --listen-ip, where there is none.
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
    dht_bootstrap: Vec<String>,
    /// Where the DHT keeps its node id and routing table between runs.
    /// Default: $XDG_STATE_HOME/essaim/dht.dat (~/.local/state/...), not
    /// used with a loopback --listen-ip.
    #[arg(long, value_name = "FILE")]
    dht_state: Option<PathBuf>,
    /// Upload cap in bytes per second (e.g. 1MiB).
    #[arg(long)]
    upload_limit: Option<String>,
    /// Download cap in bytes per second.
    #[arg(long)]
    download_limit: Option<String>,
    /// Print only the essentials (no progress bar).
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("bad duration unit in {s:?} (use s, m, h or d)")),
    };
    n.checked_mul(unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

/// Keeps glibc's allocator from holding on to memory the client freed
/// (its one long-running use is piece buffers, 16 KiB–64 MiB each):
/// buffers from 256 KiB up are always mapped and unmapped, never cached in
/// an arena (glibc otherwise raises that threshold after the first free,
/// and the freed buffers stay resident), and two arenas serve all threads.
/// Peak RSS of `essaim get` of 1 GiB with 1 MiB pieces: 21.6–25.7 MiB
/// before, 17.3–21.8 MiB after (no change in CPU time).
///
/// The smaller allocations (the peers' 64 KiB read buffers, messages) come
/// and go by the thousand per second. With glibc's default trim threshold
/// (128 KiB) each arena gave its top back to the kernel (`brk`,
/// `madvise`) hundreds of times per download and faulted it in again:
/// keeping up to 4 MiB at the top of an arena, and growing it 2 MiB at a
/// time, took a 1 GiB download from 500–1100 such calls to 20–50 (with
/// the swarm's larger buffer pool: 2.0–2.1 s to 1.3–1.6 s by hand; peak
/// RSS went up by 2–3 MiB, which the torrent's shorter event queue took
/// back). Must run before any thread is started.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc's allocator parameters; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_TOP_PAD, 2 * 1024 * 1024);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ESSAIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Create {
            path,
            trackers,
            piece_size,
            output,
            private,
            comment,
        } => create(&path, trackers, piece_size, output, private, comment)
            .map(|()| ExitCode::SUCCESS),
        Command::Info { file, json, magnet } => {
            info(&file, json, magnet).map(|()| ExitCode::SUCCESS)
        }
        Command::Get {
            source,
            output,
            no_seed,
            seed_ratio,
            seed_time,
            net,
        } => {
            let source = load_source(&source)?;
            transfer(source, output, &net, !no_seed, seed_ratio, seed_time).await
        }
        Command::Seed { file, data, net } => {
            let bytes = read_capped(&file, 64 * 1024 * 1024)?;
            let metainfo = Metainfo::from_bytes(&bytes)
                .with_context(|| format!("{} is not a valid torrent", file.display()))?;
            let root = seed_root(&data, &metainfo)?;
            transfer(Source::Torrent(bytes), root, &net, true, None, None).await
        }
        Command::Tracker { listen, interval } => {
            let config = essaim::tracker_server::TrackerConfig {
                interval: interval.max(Duration::from_secs(1)),
                min_interval: interval
                    .max(Duration::from_secs(1))
                    .min(Duration::from_secs(10)),
                ..Default::default()
            };
            let server = essaim::tracker_server::TrackerServer::bind_with(listen, config)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!("tracker listening on {}", server.local_addr());
            println!("announce URL: {}", server.announce_url());
            tokio::signal::ctrl_c().await.ok();
            server.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon(args) => daemon::run(args).await,
        Command::Remote(cmd) => remote::run(cmd).await,
        Command::Demo {
            leechers,
            size,
            seed_upload,
            quiet,
        } => {
            let size = parse_size(&size).map_err(anyhow::Error::msg)?;
            let seed_upload = parse_size(&seed_upload).map_err(anyhow::Error::msg)?;
            demo::run(leechers, size, seed_upload, quiet).await
        }
    }
}

fn create(
    path: &Path,
    trackers: Vec<String>,
    piece_size: Option<String>,
    output: Option<PathBuf>,
    private: bool,
    comment: Option<String>,
) -> Result<()> {
    let piece_length = match piece_size {
        Some(s) => {
            let n = parse_size(&s).map_err(anyhow::Error::msg)?;
            Some(u32::try_from(n).context("piece size too large")?)
        }
        None => None,
    };
    let opts = CreateOptions {
        piece_length,
        trackers: trackers.into_iter().map(|t| vec![t]).collect(),
        private,
        comment,
        created_by: Some(concat!("essaim ", env!("CARGO_PKG_VERSION")).to_owned()),
        creation_date: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs() as i64),
    };
    let bar = progress::bytes_bar(0, false);
    let bytes = create_torrent(path, &opts, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("cannot make a torrent of {}", path.display()))?;
    bar.finish_and_clear();
    let meta = Metainfo::from_bytes(&bytes).context("the torrent made does not parse")?;
    let out = output.unwrap_or_else(|| PathBuf::from(format!("{}.torrent", meta.info.name)));
    std::fs::write(&out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "{}: {} in {} pieces of {}, infohash {}",
        out.display(),
        progress::human_bytes(meta.info.total_length()),
        meta.info.pieces.len(),
        progress::human_bytes(u64::from(meta.info.piece_length)),
        meta.info_hash
    );
    Ok(())
}

fn load_torrent(path: &Path) -> Result<Metainfo> {
    let bytes = read_capped(path, 64 * 1024 * 1024)?;
    Metainfo::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid torrent", path.display()))
}

/// Reads a file, refusing one larger than `cap` (a .torrent is small).
pub(crate) fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(cap + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if buf.len() as u64 > cap {
        bail!(
            "{} is larger than {} bytes: not a torrent",
            path.display(),
            cap
        );
    }
    Ok(buf)
}

enum Source {
    /// The file's bytes (checked to be a torrent).
    Torrent(Vec<u8>),
    Magnet(String, Magnet),
}

fn load_source(source: &str) -> Result<Source> {
    if source.starts_with("magnet:") {
        let magnet = Magnet::parse(source).context("bad magnet link")?;
        return Ok(Source::Magnet(source.to_owned(), magnet));
    }
    let path = Path::new(source);
    let bytes = read_capped(path, 64 * 1024 * 1024)?;
    Metainfo::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid torrent", path.display()))?;
    Ok(Source::Torrent(bytes))
}

/// The folder `seed --data PATH` seeds from: PATH when it holds the
/// torrent's file or folder, or PATH's parent when PATH is that file or
/// folder itself.
fn seed_root(data: &Path, meta: &Metainfo) -> Result<PathBuf> {
    let name = &meta.info.name;
    let kind = if meta.info.multi_file {
        "folder"
    } else {
        "file"
    };
    let is_it = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => m.is_dir() == meta.info.multi_file,
        Err(_) => false,
    };
    if is_it(&data.join(name)) {
        return Ok(data.to_path_buf());
    }
    if data.file_name().is_some_and(|f| f == name.as_str()) && is_it(data) {
        let parent = data.parent().filter(|p| !p.as_os_str().is_empty());
        return Ok(parent.unwrap_or(Path::new(".")).to_path_buf());
    }
    bail!(
        "--data {}: expected the torrent's {kind} `{name}`, or the folder that holds it; \
         found neither",
        data.display()
    )
}

fn info(path: &Path, json: bool, magnet_only: bool) -> Result<()> {
    let m = load_torrent(path)?;
    if magnet_only {
        println!("{}", m.magnet());
        return Ok(());
    }
    let files: Vec<(String, u64)> = m
        .info
        .files
        .iter()
        .filter(|f| !f.pad)
        .map(|f| {
            let p = f.path.join("/");
            (
                if m.info.multi_file {
                    format!("{}/{p}", m.info.name)
                } else {
                    p
                },
                f.length,
            )
        })
        .collect();
    if json {
        let v = serde_json::json!({
            "name": m.info.name,
            "info_hash": m.info_hash.to_hex(),
            "total_size": m.info.total_length(),
            "piece_size": m.info.piece_length,
            "piece_count": m.info.pieces.len(),
            "private": m.info.private,
            "files": files.iter().map(|(p, l)| serde_json::json!({"path": p, "size": l})).collect::<Vec<_>>(),
            "trackers": m.trackers,
            "creation_date": m.creation_date,
            "created_by": m.created_by,
            "comment": m.comment,
            "magnet": m.magnet(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("name:        {}", m.info.name);
    println!("infohash:    {}", m.info_hash);
    println!(
        "size:        {} ({} bytes)",
        progress::human_bytes(m.info.total_length()),
        m.info.total_length()
    );
    println!(
        "pieces:      {} of {}",
        m.info.pieces.len(),
        progress::human_bytes(u64::from(m.info.piece_length))
    );
    if m.info.private {
        println!("private:     yes");
    }
    if let Some(d) = m.creation_date {
        println!("created:     {}", utc_date(d));
    }
    if let Some(c) = &m.created_by {
        println!("created by:  {c}");
    }
    if let Some(c) = &m.comment {
        println!("comment:     {c}");
    }
    for (i, tier) in m.trackers.iter().enumerate() {
        println!("tracker {}:   {}", i + 1, tier.join(", "));
    }
    println!("files:");
    for (p, l) in &files {
        println!("  {p} ({})", progress::human_bytes(*l));
    }
    println!("magnet:      {}", m.magnet());
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a unix time (the civil-from-days
/// algorithm of Howard Hinnant's date library, proleptic Gregorian).
fn utc_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn session_config(net: &NetArgs) -> Result<SessionConfig> {
    let limit = |s: &Option<String>| -> Result<Option<u64>> {
        s.as_deref()
            .map(|s| parse_size(s).map_err(anyhow::Error::msg))
            .transpose()
    };
    for b in &net.dht_bootstrap {
        // HOST:PORT with a port, names resolved later.
        let port_ok = b
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if !port_ok {
            bail!("--dht-bootstrap {b:?}: expected HOST:PORT");
        }
    }
    let dht_state = net.dht_state.clone().or_else(|| {
        if net.listen_ip.is_loopback() {
            return None;
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
        Some(base.join("essaim").join("dht.dat"))
    });
    Ok(SessionConfig {
        listen_ip: net.listen_ip,
        lsd: !net.no_lsd,
        dht: !net.no_dht,
        dht_bootstrap: (!net.dht_bootstrap.is_empty()).then(|| net.dht_bootstrap.clone()),
        dht_state,
        port: net.port,
        settings: Settings {
            initial_seeding: !net.no_initial_seeding,
            upload_limit: limit(&net.upload_limit)?,
            download_limit: limit(&net.download_limit)?,
            max_active_downloads: None,
            max_active_seeds: None,
            ..Settings::default()
        },
        ..SessionConfig::default()
    })
}

/// `get` and `seed`: run one torrent until done (see the flags).
async fn transfer(
    source: Source,
    output: PathBuf,
    net: &NetArgs,
    seed: bool,
    seed_ratio: Option<f64>,
    seed_time: Option<Duration>,
) -> Result<ExitCode> {
    std::fs::create_dir_all(&output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    let mut config = session_config(net)?;
    config.settings.download_dir = output.clone();
    let session = Session::new(config).await?;
    println!("listening on {}", session.local_addr());
    let (add, magnet) = match source {
        Source::Torrent(bytes) => (AddSource::Torrent(bytes), None),
        Source::Magnet(text, magnet) => {
            if magnet.trackers.is_empty()
                && magnet.peers.is_empty()
                && net.peers.is_empty()
                && net.no_dht
            {
                bail!("this magnet link names no tracker (tr=) and no peer (x.pe=), and the DHT is off (--no-dht): give --peer");
            }
            if !net.quiet {
                match &magnet.display_name {
                    Some(dn) => println!("fetching metadata for {dn} ({})", magnet.info_hash),
                    None => println!("fetching metadata for {}", magnet.info_hash),
                }
            }
            (AddSource::Magnet(text), Some(magnet))
        }
    };
    let options = AddOptions {
        save_path: Some(output.clone()),
        paused: Some(false),
        peers: net.peers.clone(),
        files: None,
        options: TorrentOptions {
            seed_ratio: seed_ratio.map_or(Limit::Unlimited, Limit::Value),
            seed_time: seed_time.map_or(Limit::Unlimited, |d| Limit::Value(d.as_secs())),
            ..TorrentOptions::default()
        },
    };
    let id = session.add(add, options).await?.id;
    let bar = progress::TorrentBar::new(0, net.quiet);
    let outcome = tokio::select! {
        o = drive(&session, id, &bar, seed, magnet.is_some(), &output) => o,
        _ = tokio::signal::ctrl_c() => Outcome::Interrupted,
    };
    bar.finish();
    let status = session.get(id);
    session.shutdown().await;
    let Some(status) = status else {
        bail!("the torrent is gone");
    };
    let name = status.name.clone();
    match outcome {
        Outcome::Done => {
            println!(
                "{name}: complete, {} verified; this run downloaded {} bytes, uploaded {} bytes",
                progress::human_bytes(status.wanted_verified),
                status.downloaded,
                status.uploaded
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Interrupted => {
            let complete = status.is_complete();
            eprintln!(
                "interrupted: {}/{} pieces verified; this run downloaded {} bytes, uploaded {} bytes",
                status.pieces_have, status.piece_count, status.downloaded, status.uploaded
            );
            Ok(if complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(130)
            })
        }
        Outcome::Failed(e) => bail!("{name}: {e}"),
    }
}

enum Outcome {
    Done,
    Interrupted,
    Failed(String),
}

/// Follows the torrent until it is done: complete (without `seed`), or
/// paused by its seed limit; prints the milestones scripts wait for.
async fn drive(
    session: &Session,
    id: TorrentId,
    bar: &progress::TorrentBar,
    seed: bool,
    magnet: bool,
    output: &Path,
) -> Outcome {
    let Some(mut rx) = session.watch(id) else {
        return Outcome::Failed("the torrent is gone".into());
    };
    let started = std::time::Instant::now();
    let mut first_peer: Option<(Duration, String)> = None;
    let mut metadata_shown = !magnet;
    let mut announced_seeding = false;
    loop {
        let status: TorrentSummary = rx.borrow_and_update().clone();
        bar.update(&status);
        if first_peer.is_none() {
            if let Some((src, _)) = status.known_peers.iter().find(|(_, n)| *n > 0) {
                first_peer = Some((started.elapsed(), src.to_string()));
            }
        }
        if !metadata_shown && status.has_metadata {
            metadata_shown = true;
            let elapsed = started.elapsed();
            let saved = output.join(format!("{}.torrent", status.name));
            match session.metainfo(id).await {
                Ok(Some(bytes)) => {
                    if let Err(e) = std::fs::write(&saved, bytes) {
                        return Outcome::Failed(format!("cannot write {}: {e}", saved.display()));
                    }
                }
                _ => return Outcome::Failed("the metadata is gone".into()),
            }
            let files = session.files(id).await.map(|f| f.len()).unwrap_or(0);
            bar.println(&format!(
                "metadata received: {} ({files} files), saved to {}",
                status.name,
                saved.display()
            ));
            if let Some((after, source)) = &first_peer {
                bar.println(&format!(
                    "first peer after {:.3} s (from {source}), metadata after {:.3} s",
                    after.as_secs_f64(),
                    elapsed.as_secs_f64()
                ));
            }
        }
        match &status.state {
            TorrentState::Error(e) => return Outcome::Failed(e.to_string()),
            TorrentState::Paused if status.stopped_by.is_some() => return Outcome::Done,
            TorrentState::Paused => return Outcome::Failed("paused".into()),
            TorrentState::Seeding => {
                if !seed {
                    return Outcome::Done;
                }
                if !announced_seeding {
                    announced_seeding = true;
                    bar.println("seeding");
                }
            }
            _ => {}
        }
        if rx.changed().await.is_err() {
            return Outcome::Failed("the torrent is gone".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_durations() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_date(1_795_259_038), "2026-11-21 11:03:58 UTC");
        assert_eq!(utc_date(-86_400), "1969-12-31 00:00:00 UTC");
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("9999999999999999999h").is_err());
        assert!(parse_duration("99999999999999999h").is_err());
    }
}
