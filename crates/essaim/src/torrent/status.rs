//! What a torrent shows: its summary (published on every change of state
//! and on each tick while it runs) and the answers to queries about its
//! files, peers, trackers and pieces.

use std::time::{Duration, Instant};

use essaim_core::{InfoHash, Magnet, Metainfo};

use super::net::Phase;
use super::Actor;
use crate::store::Record;
use crate::types::{
    FileStatus, PeerStatus, PieceMap, TorrentId, TorrentState, TorrentSummary, TrackerStatus,
};

/// The name to show: the torrent's, a magnet link's `dn`, the name kept in
/// the record, or the infohash.
pub(super) fn name(
    meta: Option<&Metainfo>,
    magnet: Option<&Magnet>,
    record: &Record,
    info_hash: InfoHash,
) -> String {
    if let Some(m) = meta {
        return m.info.name.clone();
    }
    if let Some(n) = &record.name {
        return n.clone();
    }
    if let Some(dn) = magnet.and_then(|m| m.display_name.clone()) {
        return dn;
    }
    info_hash.to_hex()
}

/// The summary before the actor has looked at anything.
pub(super) fn placeholder(
    id: TorrentId,
    info_hash: InfoHash,
    record: &Record,
    magnet_uri: &str,
) -> TorrentSummary {
    TorrentSummary {
        id,
        info_hash,
        name: record.name.clone().unwrap_or_else(|| info_hash.to_hex()),
        state: if record.paused {
            TorrentState::Paused
        } else {
            TorrentState::Queued
        },
        has_metadata: false,
        private: false,
        total_size: 0,
        wanted_size: 0,
        wanted_verified: 0,
        verified: 0,
        piece_count: 0,
        piece_size: 0,
        pieces_have: 0,
        downloaded: 0,
        uploaded: 0,
        downloaded_total: record.downloaded_total,
        uploaded_total: record.uploaded_total,
        wasted: 0,
        hash_failures: 0,
        download_rate: 0,
        upload_rate: 0,
        peers: 0,
        seeds: 0,
        known_peers: Vec::new(),
        added_at: record.added_at,
        completed_at: record.completed_at,
        seeding_time: Duration::from_secs(record.seeding_secs),
        active_time: Duration::from_secs(record.active_secs),
        save_path: record.save_path.clone(),
        queue_position: record.queue_position,
        forced: record.forced,
        options: record.options.clone(),
        files: record.files.clone(),
        stopped_by: None,
        magnet: magnet_uri.to_owned(),
        comment: None,
        created_by: None,
        creation_date: None,
    }
}

impl Actor {
    pub(super) fn summary(&mut self) -> TorrentSummary {
        let now = Instant::now();
        let mut s = placeholder(self.id, self.info_hash, &self.record, &self.magnet_uri);
        s.name = self.name();
        s.state = self.state();
        s.stopped_by = self.stopped_by;
        if let Some(since) = self.seeding_since {
            s.seeding_time = s
                .seeding_time
                .saturating_add(now.saturating_duration_since(since));
        }
        if let Some(since) = self.running_since {
            s.active_time = s
                .active_time
                .saturating_add(now.saturating_duration_since(since));
        }
        if let Some(meta) = &self.meta {
            let layout = &meta.info.layout;
            s.has_metadata = true;
            s.private = meta.info.private;
            s.total_size = layout.total_length();
            s.piece_count = layout.num_pieces();
            s.piece_size = layout.piece_length();
            s.comment = meta.comment.clone();
            s.created_by = meta.created_by.clone();
            s.creation_date = meta.creation_date;
            s.wanted_size = self.wanted_size();
            if let Some(have) = self.current_have() {
                s.pieces_have = have.count();
                for p in have.iter_set() {
                    let size = u64::from(layout.piece_size(p).unwrap_or(0));
                    s.verified += size;
                    if !self.skipped.as_ref().is_some_and(|k| k.get(p)) {
                        s.wanted_verified += size;
                    }
                }
            }
        }
        if let Some(net) = &mut self.net {
            s.peers = net.peer_count();
            let mut known: Vec<_> = net.peer_list.counts().into_iter().collect();
            known.sort();
            s.known_peers = known;
            if let Phase::Swarm(sw) = &mut net.phase {
                let st = sw.stats(now);
                s.downloaded = st.downloaded;
                s.uploaded = st.uploaded;
                s.download_rate = st.download_rate;
                s.upload_rate = st.upload_rate;
                s.wasted = st.wasted;
                s.hash_failures = st.hash_failures;
                // What the record has not counted yet.
                s.downloaded_total += st.downloaded.saturating_sub(self.last_totals.0);
                s.uploaded_total += st.uploaded.saturating_sub(self.last_totals.1);
                s.seeds = sw.peer_stats(now).iter().filter(|p| p.is_seed).count();
            }
        }
        s
    }

    pub(super) fn files(&self) -> Vec<FileStatus> {
        let Some(meta) = &self.meta else {
            return Vec::new();
        };
        let layout = &meta.info.layout;
        let have = self.current_have();
        let mut out = Vec::new();
        for (i, (f, extent)) in meta.info.files.iter().zip(layout.files()).enumerate() {
            if f.pad {
                continue;
            }
            let path = if meta.info.multi_file {
                std::iter::once(meta.info.name.as_str())
                    .chain(f.path.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join("/")
            } else {
                meta.info.name.clone()
            };
            let mut verified = 0u64;
            if let (Some(have), Some(range)) = (&have, layout.file_pieces(i)) {
                for p in range.filter(|&p| have.get(p)) {
                    // The part of piece p inside this file.
                    let (Some(start), Some(size)) = (layout.piece_offset(p), layout.piece_size(p))
                    else {
                        continue;
                    };
                    let end = start + u64::from(size);
                    let lo = start.max(extent.offset);
                    let hi = end.min(extent.offset + extent.length);
                    verified += hi.saturating_sub(lo);
                }
            }
            let wanted = self
                .record
                .files
                .as_ref()
                .is_none_or(|sel| sel.contains(&i));
            out.push(FileStatus {
                index: i,
                path,
                size: f.length,
                verified,
                wanted,
            });
        }
        out
    }

    pub(super) fn peers(&mut self) -> Vec<PeerStatus> {
        let Some(net) = &mut self.net else {
            return Vec::new();
        };
        let now = Instant::now();
        let sources: Vec<_> = net
            .conns
            .iter()
            .map(|(k, c)| {
                (
                    *k,
                    c.addr,
                    c.peer_id,
                    c.incoming,
                    net.peer_list.source(&c.addr),
                )
            })
            .collect();
        let mut out = Vec::with_capacity(sources.len());
        match &mut net.phase {
            Phase::Swarm(sw) => {
                let n = sw.layout().num_pieces().max(1);
                let stats = sw.peer_stats(now);
                let details = sw.peer_details();
                for (key, addr, peer_id, incoming, source) in sources {
                    let (Some(st), Some(d)) = (
                        stats.iter().find(|p| p.key == key),
                        details.iter().find(|p| p.key == key),
                    ) else {
                        continue;
                    };
                    out.push(PeerStatus {
                        addr,
                        peer_id,
                        client: d.client.clone(),
                        source,
                        incoming,
                        downloaded: st.downloaded,
                        uploaded: st.uploaded,
                        download_rate: st.download_rate,
                        upload_rate: st.upload_rate,
                        progress: f64::from(d.pieces) / f64::from(n),
                        am_choking: st.am_choking,
                        am_interested: st.am_interested,
                        peer_choking: st.peer_choking,
                        peer_interested: st.peer_interested,
                        snubbed: d.snubbed,
                        fast: d.fast,
                    });
                }
            }
            Phase::Magnet(_) => {
                for (_, addr, peer_id, incoming, source) in sources {
                    out.push(PeerStatus {
                        addr,
                        peer_id,
                        client: None,
                        source,
                        incoming,
                        downloaded: 0,
                        uploaded: 0,
                        download_rate: 0,
                        upload_rate: 0,
                        progress: 0.0,
                        am_choking: true,
                        am_interested: false,
                        peer_choking: true,
                        peer_interested: false,
                        snubbed: false,
                        fast: false,
                    });
                }
            }
        }
        out.sort_by_key(|p| p.addr);
        out
    }

    pub(super) fn tracker_list(&self) -> Vec<TrackerStatus> {
        let now = tokio::time::Instant::now();
        if let Some(a) = self.net.as_ref().and_then(|n| n.announcer.as_ref()) {
            let st = a.announces.status();
            return st
                .trackers
                .iter()
                .map(|t| TrackerStatus {
                    url: t.url.clone(),
                    tier: t.tier,
                    last_success_ago: t.last_success.map(|at| now.saturating_duration_since(at)),
                    last_error: t.last_error.clone(),
                    warning: t.warning.clone(),
                    seeders: t.seeders,
                    leechers: t.leechers,
                    successes: t.successes,
                    failures: t.failures,
                })
                .collect();
        }
        // Not running: the list, with nothing known.
        self.trackers()
            .iter()
            .enumerate()
            .flat_map(|(tier, urls)| {
                urls.iter().map(move |u| TrackerStatus {
                    url: u.clone(),
                    tier,
                    last_success_ago: None,
                    last_error: None,
                    warning: None,
                    seeders: None,
                    leechers: None,
                    successes: 0,
                    failures: 0,
                })
            })
            .collect()
    }

    pub(super) fn piece_map(&self) -> Option<PieceMap> {
        let meta = self.meta.as_ref()?;
        let n = meta.info.layout.num_pieces();
        let have = self.current_have();
        let states = (0..n)
            .map(|p| {
                if have.as_ref().is_some_and(|h| h.get(p)) {
                    b'1'
                } else if self.skipped.as_ref().is_some_and(|k| k.get(p)) {
                    b'-'
                } else {
                    b'0'
                }
            })
            .collect();
        Some(PieceMap { states })
    }
}
