//! Progress bars and human-readable figures.

use essaim::{TorrentState, TorrentSummary};
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

    pub fn update(&self, s: &TorrentSummary) {
        let total = s.wanted_size;
        if self.bar.length() != Some(total) {
            self.bar.set_length(total);
        }
        let eta = match s.eta() {
            Some(d) => format!(" eta {}s", d.as_secs()),
            None => String::new(),
        };
        let sources: Vec<String> = s
            .known_peers
            .iter()
            .map(|(src, n)| format!("{src}:{n}"))
            .collect();
        let (prefix, pos) = match &s.state {
            TorrentState::Checking { checked, total: n } => (
                "checking",
                (total as u128 * u128::from(*checked) / u128::from((*n).max(1))) as u64,
            ),
            TorrentState::FetchingMetadata => ("metadata", 0),
            TorrentState::Seeding => ("seeding", total),
            TorrentState::Error(_) => ("error", s.wanted_verified),
            TorrentState::Paused => ("paused", s.wanted_verified),
            TorrentState::Queued => ("queued", s.wanted_verified),
            _ => ("get", s.wanted_verified),
        };
        self.bar.set_prefix(prefix);
        self.bar.set_position(pos);
        self.bar.set_message(format!(
            "down {}/s up {}/s peers {} [{}]{eta}",
            human_bytes(s.download_rate),
            human_bytes(s.upload_rate),
            s.peers,
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
