//! The daemon's configuration file (TOML, `$XDG_CONFIG_HOME/essaim/config.toml`
//! by default): every key optional, unknown keys an error that names them.
//! Flags override the file; the file overrides the defaults.
//!
//! ```toml
//! download_dir = "/srv/torrents"
//! state_dir = "/var/lib/essaim"
//! watch_dir = "/srv/torrents/watch"
//! listen_ip = "0.0.0.0"
//! port = 6881
//! dht = true
//! dht_bootstrap = ["router.bittorrent.com:6881"]
//! lsd = true
//! upload_limit = "2MiB"          # bytes per second; a number or with a unit
//! download_limit = "unlimited"
//! max_active_downloads = 5       # or "unlimited"
//! max_active_seeds = 10
//! seed_ratio = 2.0
//! seed_time = "7d"
//! seed_idle_time = "12h"
//! seed_limit_action = "pause"    # or "remove"
//! max_peers = 500
//! max_peers_per_torrent = 50
//! upload_slots = 4
//! start_paused = false
//! initial_seeding = true
//!
//! [api]
//! listen = "127.0.0.1:9080"
//! token = true                   # the token file in the state folder
//! username = "me"
//! password = "a long passphrase"
//! loopback_without_auth = true
//! allowed_hosts = ["nas.local"]
//! allowed_roots = ["/srv/more"]
//! ban_after = 5                  # failed logins; 0: never ban
//! ban_time = "15m"
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use essaim::{SeedLimitAction, Settings};
use serde::Deserialize;

/// A size or rate: a number of bytes, a string with a unit, or
/// `"unlimited"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Amount {
    Bytes(u64),
    Text(String),
}

impl Amount {
    /// `None` for "unlimited".
    pub fn bytes(&self, key: &str) -> Result<Option<u64>> {
        match self {
            Amount::Bytes(0) => {
                bail!("{key}: 0 would stop all traffic; use \"unlimited\" for no limit")
            }
            Amount::Bytes(n) => Ok(Some(*n)),
            Amount::Text(t) if t == "unlimited" => Ok(None),
            Amount::Text(t) => essaim::create::parse_size(t)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{key}: {e}")),
        }
    }
}

/// A count or `"unlimited"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Count {
    N(usize),
    Text(String),
}

impl Count {
    pub fn get(&self, key: &str) -> Result<Option<usize>> {
        match self {
            Count::N(n) => Ok(Some(*n)),
            Count::Text(t) if t == "unlimited" => Ok(None),
            Count::Text(t) => bail!("{key}: expected a number or \"unlimited\", found {t:?}"),
        }
    }
}

/// A duration: seconds, or a string like `90s`, `30m`, `2h`, `7d`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Span {
    Secs(u64),
    Text(String),
}

impl Span {
    pub fn secs(&self, key: &str) -> Result<Option<u64>> {
        match self {
            Span::Secs(s) => Ok(Some(*s)),
            Span::Text(t) if t == "unlimited" => Ok(None),
            Span::Text(t) => crate::parse_duration(t)
                .map(|d| Some(d.as_secs()))
                .map_err(|e| anyhow::anyhow!("{key}: {e}")),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub listen: Option<SocketAddr>,
    /// Use (and create at first start) the token file. Default true.
    pub token: Option<bool>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub loopback_without_auth: Option<bool>,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub allowed_roots: Vec<PathBuf>,
    /// Failed logins in a row that ban an address (0: never). Default 5.
    pub ban_after: Option<u32>,
    /// How long a ban lasts. Default 15 minutes.
    pub ban_time: Option<Span>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub download_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub watch_dir: Option<PathBuf>,
    pub listen_ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub dht: Option<bool>,
    pub dht_bootstrap: Option<Vec<String>>,
    pub lsd: Option<bool>,
    pub upload_limit: Option<Amount>,
    pub download_limit: Option<Amount>,
    pub max_active_downloads: Option<Count>,
    pub max_active_seeds: Option<Count>,
    pub seed_ratio: Option<f64>,
    pub seed_time: Option<Span>,
    pub seed_idle_time: Option<Span>,
    pub seed_limit_action: Option<String>,
    pub max_peers: Option<usize>,
    pub max_peers_per_torrent: Option<usize>,
    pub upload_slots: Option<usize>,
    pub start_paused: Option<bool>,
    pub initial_seeding: Option<bool>,
    #[serde(default)]
    pub api: ApiSection,
}

/// The default configuration file's place.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("essaim").join("config.toml"))
}

/// The default state folder: `$XDG_STATE_HOME/essaim` (or
/// `~/.local/state/essaim`).
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("essaim")
}

/// The default download folder: `~/Downloads`.
pub fn default_download_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join("Downloads"))
        .unwrap_or_else(|| PathBuf::from("downloads"))
}

impl ConfigFile {
    /// Reads `path`; a missing file at the default place is no error (an
    /// empty configuration), one given explicitly is.
    pub fn load(path: Option<&Path>) -> Result<ConfigFile> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => match default_path() {
                Some(p) => (p, false),
                None => return Ok(ConfigFile::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(ConfigFile::default())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<ConfigFile> {
        let c: ConfigFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        // Values checked now, so a bad file fails at start, naming the key.
        c.settings(Settings::default())?;
        if let Some(t) = &c.api.ban_time {
            t.secs("api.ban_time")?;
        }
        Ok(c)
    }

    /// The settings the file gives, over `base`.
    pub fn settings(&self, base: Settings) -> Result<Settings> {
        let mut s = base;
        if let Some(d) = &self.download_dir {
            s.download_dir = d.clone();
        }
        if let Some(a) = &self.upload_limit {
            s.upload_limit = a.bytes("upload_limit")?;
        }
        if let Some(a) = &self.download_limit {
            s.download_limit = a.bytes("download_limit")?;
        }
        if let Some(c) = &self.max_active_downloads {
            s.max_active_downloads = c.get("max_active_downloads")?;
        }
        if let Some(c) = &self.max_active_seeds {
            s.max_active_seeds = c.get("max_active_seeds")?;
        }
        if let Some(r) = self.seed_ratio {
            if !r.is_finite() || r < 0.0 {
                bail!("seed_ratio: {r} is not a ratio");
            }
            s.seed_ratio = Some(r);
        }
        if let Some(t) = &self.seed_time {
            s.seed_time = t.secs("seed_time")?;
        }
        if let Some(t) = &self.seed_idle_time {
            s.seed_idle_time = t.secs("seed_idle_time")?;
        }
        if let Some(a) = &self.seed_limit_action {
            s.seed_limit_action = match a.as_str() {
                "pause" => SeedLimitAction::Pause,
                "remove" => SeedLimitAction::Remove,
                other => {
                    bail!("seed_limit_action: expected \"pause\" or \"remove\", found {other:?}")
                }
            };
        }
        let positive = |v: Option<usize>, key: &str| -> Result<Option<usize>> {
            match v {
                Some(0) => bail!("{key} must be at least 1"),
                v => Ok(v),
            }
        };
        if let Some(n) = positive(self.max_peers, "max_peers")? {
            s.max_peers = n;
        }
        if let Some(n) = positive(self.max_peers_per_torrent, "max_peers_per_torrent")? {
            s.max_peers_per_torrent = n;
        }
        if let Some(n) = positive(self.upload_slots, "upload_slots")? {
            s.upload_slots = n;
        }
        if let Some(b) = self.start_paused {
            s.start_paused = b;
        }
        if let Some(b) = self.initial_seeding {
            s.initial_seeding = b;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_and_its_errors() {
        let c = ConfigFile::parse(
            r#"
            download_dir = "/srv/t"
            port = 7000
            upload_limit = "2MiB"
            download_limit = "unlimited"
            max_active_downloads = 3
            max_active_seeds = "unlimited"
            seed_ratio = 1.5
            seed_time = "2h"
            seed_limit_action = "remove"
            [api]
            listen = "0.0.0.0:9091"
            username = "me"
            password = "pw"
            allowed_hosts = ["nas.local"]
            "#,
        )
        .unwrap();
        let s = c.settings(Settings::default()).unwrap();
        assert_eq!(s.download_dir, PathBuf::from("/srv/t"));
        assert_eq!(s.upload_limit, Some(2 * 1024 * 1024));
        assert_eq!(s.download_limit, None);
        assert_eq!(
            (s.max_active_downloads, s.max_active_seeds),
            (Some(3), None)
        );
        assert_eq!((s.seed_ratio, s.seed_time), (Some(1.5), Some(7200)));
        assert_eq!(s.seed_limit_action, SeedLimitAction::Remove);
        assert_eq!(c.port, Some(7000));
        assert_eq!(c.api.listen, Some("0.0.0.0:9091".parse().unwrap()));

        let err = |text: &str| format!("{:#}", ConfigFile::parse(text).unwrap_err());
        assert!(err("prot = 1").contains("prot"), "{}", err("prot = 1"));
        assert!(err("[api]\nlisten_on = \"x\"").contains("listen_on"));
        assert!(err("upload_limit = \"fast\"").contains("upload_limit"));
        assert!(err("upload_limit = 0").contains("upload_limit"));
        assert!(err("max_peers = 0").contains("max_peers"));
        assert!(err("seed_limit_action = \"delete\"").contains("seed_limit_action"));
        assert!(err("seed_time = \"5y\"").contains("seed_time"));
        assert!(err("port = \"x\"").contains("port") || err("port = \"x\"").contains("invalid"));
    }
}
