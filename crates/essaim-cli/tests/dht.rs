//! The Mainline DHT (BEP 5) with libtorrent, offline on 127.0.0.1.
//!
//! A test DHT of [`BED`] essaim nodes (in this process, each on its own UDP
//! port) bootstraps from one another; a libtorrent or essaim seeder joins
//! it and announces a torrent; the other client, given nothing but a bare
//! magnet link (`xt` only: no tracker, no peer) and one bootstrap address,
//! finds the seeder through the DHT, fetches the metadata from it (BEP 9)
//! and downloads. Each direction checks that the announce really reached
//! the DHT (a bed node's lookup returns the seeder) and prints the times to
//! the first peer and to the metadata (`DHT-TIMES ...` lines); essaim's
//! node saves its id and routing table at exit.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use essaim::dht::{decode_state, DhtConfig, DhtHandle};
use essaim_core::{InfoHash, Metainfo};

/// Nodes of the test DHT besides the two clients.
const BED: usize = 20;
const PIECE_SIZE: u32 = 64 * 1024;

struct Bed {
    rt: tokio::runtime::Runtime,
    nodes: Vec<DhtHandle>,
}

impl Bed {
    /// Starts the nodes (each bootstraps from the first and the one before
    /// it) and waits until every table holds a few nodes.
    fn new() -> Bed {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let nodes = rt.block_on(async {
            let mut nodes: Vec<DhtHandle> = Vec::new();
            for _ in 0..BED {
                let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
                    .await
                    .expect("bind UDP");
                let mut bootstrap: Vec<SocketAddr> = Vec::new();
                bootstrap.extend(nodes.first().and_then(|n| n.local_addr()));
                bootstrap.extend(nodes.last().and_then(|n| n.local_addr()));
                let config = DhtConfig {
                    bootstrap,
                    allow_local: true,
                    // One address for every node: no per-address budget.
                    replies_per_ip: 500,
                    reply_burst_per_ip: 500,
                    ..DhtConfig::default()
                };
                nodes.push(DhtHandle::spawn(socket, config, None));
            }
            nodes
        });
        wait_until("the test DHT's routing tables", DEADLINE, || {
            nodes.iter().all(|n| n.routing_table_len() >= 4)
        });
        Bed { rt, nodes }
    }

    /// A few bootstrap addresses from the middle of the bed.
    fn bootstrap(&self) -> Vec<SocketAddr> {
        self.nodes[BED / 2..BED / 2 + 2]
            .iter()
            .filter_map(|n| n.local_addr())
            .collect()
    }

    /// Looks `info_hash` up from the first node until `want` is among the
    /// peers: proof that the seeder's announce reached the DHT.
    fn wait_announced(&self, info_hash: InfoHash, want: SocketAddr) {
        let node = &self.nodes[0];
        let found = self.rt.block_on(async {
            tokio::time::timeout(DEADLINE, async {
                loop {
                    let mut rx = node.get_peers(info_hash, None).await;
                    let round = tokio::time::Instant::now() + Duration::from_secs(2);
                    while let Ok(Some(peers)) = tokio::time::timeout_at(round, rx.recv()).await {
                        if peers.contains(&want) {
                            return;
                        }
                    }
                }
            })
            .await
        });
        assert!(
            found.is_ok(),
            "{want} was not announced into the DHT within {DEADLINE:?}"
        );
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        self.rt.block_on(async {
            for n in nodes {
                let _ = tokio::time::timeout(Duration::from_secs(5), n.shutdown()).await;
            }
        });
    }
}

/// `magnet:?xt=urn:btih:HEX`: nothing but the infohash.
fn bare_magnet(torrent: &Path) -> (String, InfoHash) {
    let meta = Metainfo::from_bytes(&std::fs::read(torrent).expect("read torrent"))
        .expect("parse torrent");
    let hex: String = meta
        .info_hash
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (format!("magnet:?xt=urn:btih:{hex}"), meta.info_hash)
}

/// The number after `key` in `line` ("first peer after 0.412 s").
fn seconds_after(line: &str, key: &str) -> f64 {
    let rest = &line[line.find(key).expect("key in line") + key.len()..];
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in {line:?}"))
}

#[test]
fn libtorrent_seeds_via_dht_essaim_gets_bare_magnet() {
    require_libtorrent();
    let bed = Bed::new();
    let (d, files) = Dirs::new(true);
    essaim_create(&d.content(), None, PIECE_SIZE, &d.torrent());
    let (magnet, info_hash) = bare_magnet(&d.torrent());
    let lt_port = free_port();
    let _seeder = lt_seed_dht(&d.torrent(), &d.src(), lt_port, &[], &bed.bootstrap());
    bed.wait_announced(info_hash, local(lt_port));

    let mut cmd = essaim_get_cmd(&magnet, &d.out(), &[]);
    cmd.args(["--no-lsd", "--dht-state"]);
    cmd.arg(d.path("dht.dat"));
    for b in bed.bootstrap().iter().rev() {
        cmd.args(["--dht-bootstrap", &b.to_string()]);
    }
    let mut get = Proc::spawn("essaim-get-dht", &mut cmd);
    let line = get.wait_for_line("`first peer after`", DEADLINE, |l| {
        l.starts_with("first peer after")
    });
    assert!(
        line.contains("(from dht)"),
        "the peer came from elsewhere: {line}"
    );
    get.expect_success(DEADLINE);
    assert!(
        d.out().join("multi.torrent").is_file(),
        "metadata not saved"
    );
    assert_same_files(&d.src(), &d.out(), &files, false);
    // At exit the node saved its id and table, for the next run.
    let state = decode_state(&std::fs::read(d.path("dht.dat")).expect("DHT state saved"))
        .expect("a DHT state file");
    assert!(state.id.is_some(), "node id saved");
    assert!(state.nodes.len() >= 8, "routing table saved: {state:?}");
    eprintln!(
        "DHT-TIMES essaim-finds-libtorrent first_peer={:.3} metadata={:.3}",
        seconds_after(&line, "first peer after"),
        seconds_after(&line, "metadata after")
    );
}

#[test]
fn essaim_seeds_via_dht_libtorrent_gets_bare_magnet() {
    require_libtorrent();
    let bed = Bed::new();
    let (d, files) = Dirs::new(true);
    essaim_create(&d.content(), None, PIECE_SIZE, &d.torrent());
    let (magnet, info_hash) = bare_magnet(&d.torrent());
    let mut cmd = std::process::Command::new(essaim_bin());
    cmd.arg("seed")
        .arg(d.torrent())
        .arg("--data")
        .arg(d.src())
        .args(["--port", "0", "--listen-ip", "127.0.0.1", "--no-lsd"]);
    for b in bed.bootstrap() {
        cmd.args(["--dht-bootstrap", &b.to_string()]);
    }
    let mut seeder = Proc::spawn("essaim-seed-dht", &mut cmd);
    let addr = seeder.wait_for_listen_addr(DEADLINE);
    seeder.wait_for_line("`seeding`", DEADLINE, |l| l.trim() == "seeding");
    bed.wait_announced(info_hash, addr);

    let mut get = lt_get_dht(&magnet, &d.out(), free_port(), &[], &bed.bootstrap());
    let first = get.wait_for_line("`first peer after`", DEADLINE, |l| {
        l.starts_with("first peer after")
    });
    let meta = get.wait_for_line("`metadata after`", DEADLINE, |l| {
        l.starts_with("metadata after")
    });
    get.expect_success(DEADLINE);
    seeder.assert_running();
    assert_same_files(&d.src(), &d.out(), &files, false);
    eprintln!(
        "DHT-TIMES libtorrent-finds-essaim first_peer={:.3} metadata={:.3}",
        seconds_after(&first, "first peer after"),
        seconds_after(&meta, "metadata after")
    );
}
