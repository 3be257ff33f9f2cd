//! Progress bars and human-readable figures.

use essaim::torrent::{TorrentState, TorrentStatus};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A plain bytes bar (used by `create`).
pub fn bytes_bar(total: u64, hidden: bool) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if hidden {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The live bar of `get` and `seed`: percent, rates, peers, ETA.
pub struct TorrentBar {
    bar: ProgressBar,
}

impl TorrentBar {
    pub fn new(total: u64, quiet: bool) -> Self {
        let bar = ProgressBar::new(total);
        if quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("{prefix:>9} {bar:30} {percent:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        TorrentBar { bar }
    }

    pub fn update(&self, s: &TorrentStatus) {
        let left = s.total_length.saturating_sub(s.stats.verified);
        let eta = if s.stats.download_rate > 0 && left > 0 {
            format!(" eta {}s", left / s.stats.download_rate)
        } else {
            String::new()
        };
        let mut sources: Vec<String> = s
            .known_peers
            .iter()
            .map(|(src, n)| format!("{src}:{n}"))
            .collect();
        sources.sort();
        let (prefix, pos) = match &s.state {
            TorrentState::Checking { checked, total } => (
                "checking",
                (s.total_length as u128 * u128::from(*checked) / u128::from((*total).max(1)))
                    as u64,
            ),
            TorrentState::Seeding => ("seeding", s.total_length),
            TorrentState::Error(_) => ("error", s.stats.verified),
            TorrentState::Stopped => ("stopped", s.stats.verified),
            TorrentState::Downloading => ("get", s.stats.verified),
        };
        self.bar.set_prefix(prefix);
        self.bar.set_position(pos);
        self.bar.set_message(format!(
            "down {}/s up {}/s peers {} [{}]{eta}",
            human_bytes(s.stats.download_rate),
            human_bytes(s.stats.upload_rate),
            s.stats.peers,
            sources.join(" ")
        ));
    }

    pub fn println(&self, line: &str) {
        // Always on stdout: scripts wait for lines such as `seeding`.
        self.bar.suspend(|| println!("{line}"));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
