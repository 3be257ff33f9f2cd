//! Prometheus metrics at `/metrics` (text exposition format 0.0.4), named
//! by Prometheus conventions: `essaim_` prefix, base units (bytes,
//! seconds), `_total` for counters.
//!
//! Session: `essaim_torrents{state}`, `essaim_peers`,
//! `essaim_download_rate_bytes`, `essaim_upload_rate_bytes`,
//! `essaim_downloaded_bytes_total`, `essaim_uploaded_bytes_total` (over
//! every torrent's life), `essaim_dht_nodes`, `essaim_uptime_seconds`.
//! Per torrent, labelled `id`, `infohash` and `name`:
//! `essaim_torrent_size_bytes`, `essaim_torrent_progress_ratio`,
//! `essaim_torrent_downloaded_bytes_total`,
//! `essaim_torrent_uploaded_bytes_total`,
//! `essaim_torrent_download_rate_bytes`, `essaim_torrent_upload_rate_bytes`,
//! `essaim_torrent_peers`, `essaim_torrent_state{state}` (1 for its state).

use std::fmt::Write;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::Api;

/// A label value, escaped as the format wants (`\`, `"`, newline).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

const STATES: [&str; 7] = [
    "fetching_metadata",
    "checking",
    "queued",
    "downloading",
    "seeding",
    "paused",
    "error",
];

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// The metrics text.
pub fn render(api: &Api) -> String {
    let stats = api.session.stats();
    let list = api.session.list();
    let mut o = String::with_capacity(512 + list.len() * 900);
    head(&mut o, "essaim_torrents", "gauge", "Torrents, by state.");
    for s in STATES {
        let n = list.iter().filter(|t| t.state.name() == s).count();
        let _ = writeln!(o, "essaim_torrents{{state=\"{s}\"}} {n}");
    }
    let simple: [(&str, &str, &str, String); 7] = [
        (
            "essaim_peers",
            "gauge",
            "Connected peers.",
            stats.peers.to_string(),
        ),
        (
            "essaim_download_rate_bytes",
            "gauge",
            "Download rate, bytes per second.",
            stats.download_rate.to_string(),
        ),
        (
            "essaim_upload_rate_bytes",
            "gauge",
            "Upload rate, bytes per second.",
            stats.upload_rate.to_string(),
        ),
        (
            "essaim_downloaded_bytes_total",
            "counter",
            "Payload bytes downloaded over every torrent's life.",
            stats.downloaded_total.to_string(),
        ),
        (
            "essaim_uploaded_bytes_total",
            "counter",
            "Payload bytes uploaded over every torrent's life.",
            stats.uploaded_total.to_string(),
        ),
        (
            "essaim_dht_nodes",
            "gauge",
            "Nodes in the DHT routing table.",
            stats.dht_nodes.unwrap_or(0).to_string(),
        ),
        (
            "essaim_uptime_seconds",
            "counter",
            "Seconds since the session started.",
            stats.uptime.as_secs().to_string(),
        ),
    ];
    for (name, kind, help, value) in simple {
        head(&mut o, name, kind, help);
        let _ = writeln!(o, "{name} {value}");
    }
    type Get = fn(&essaim::TorrentSummary) -> String;
    let per: [(&str, &str, &str, Get); 7] = [
        (
            "essaim_torrent_size_bytes",
            "gauge",
            "Size of the wanted files.",
            |t| t.wanted_size.to_string(),
        ),
        (
            "essaim_torrent_progress_ratio",
            "gauge",
            "Verified share of the wanted bytes.",
            |t| format!("{:.6}", t.progress()),
        ),
        (
            "essaim_torrent_downloaded_bytes_total",
            "counter",
            "Payload bytes downloaded over the torrent's life.",
            |t| t.downloaded_total.to_string(),
        ),
        (
            "essaim_torrent_uploaded_bytes_total",
            "counter",
            "Payload bytes uploaded over the torrent's life.",
            |t| t.uploaded_total.to_string(),
        ),
        (
            "essaim_torrent_download_rate_bytes",
            "gauge",
            "Download rate, bytes per second.",
            |t| t.download_rate.to_string(),
        ),
        (
            "essaim_torrent_upload_rate_bytes",
            "gauge",
            "Upload rate, bytes per second.",
            |t| t.upload_rate.to_string(),
        ),
        ("essaim_torrent_peers", "gauge", "Connected peers.", |t| {
            t.peers.to_string()
        }),
    ];
    let labels: Vec<String> = list
        .iter()
        .map(|t| {
            format!(
                "id=\"{}\",infohash=\"{}\",name=\"{}\"",
                t.id,
                t.info_hash.to_hex(),
                label(&t.name)
            )
        })
        .collect();
    for (name, kind, help, get) in per {
        head(&mut o, name, kind, help);
        for (t, l) in list.iter().zip(&labels) {
            let _ = writeln!(o, "{name}{{{l}}} {}", get(t));
        }
    }
    head(
        &mut o,
        "essaim_torrent_state",
        "gauge",
        "1 for the torrent's state.",
    );
    for (t, l) in list.iter().zip(&labels) {
        let _ = writeln!(
            o,
            "essaim_torrent_state{{{l},state=\"{}\"}} 1",
            t.state.name()
        );
    }
    o
}

/// `GET /metrics`.
pub async fn metrics(State(api): State<Api>) -> Response {
    let mut r = render(&api).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
