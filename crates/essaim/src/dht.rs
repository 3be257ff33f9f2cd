//! The DHT driver: one tokio task owns a pure [`Dht`] node (crate
//! `essaim-dht`) and its UDP socket, and plays the contract documented in
//! `essaim_dht::node`: every datagram goes to `handle_packet`, timers to
//! `handle_timeout`, and after each input the task drains the datagrams to
//! send and the events to deliver.
//!
//! [`DhtHandle`] talks to the task over a channel; nothing is shared but a
//! counter of routing table nodes. `get_peers` hands back a channel on which
//! the peers of every lookup arrive (the node repeats the search, and the
//! announce, every 15 to 30 minutes); dropping the receiver ends the search.
//!
//! The node id and routing table are saved on shutdown (and every
//! [`SAVE_EVERY`], so that a kill loses little) to `state_path`: a bencoded
//! dictionary `{"id": 20 bytes, "nodes": [compact node info, ...]}` (26
//! bytes per IPv4 node, 38 per IPv6). They are read at start, so a restart
//! keeps its id (other nodes' tables stay right) and needs no bootstrap. The
//! file is written to a temporary name and renamed, and read with a size
//! limit; entries that do not parse are skipped, and a file that does not
//! parse at all is ignored.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use essaim_core::bencode;
use essaim_core::{InfoHash, OwnedValue};
use essaim_dht::krpc::{decode_nodes, encode_nodes, NodeInfo};
use essaim_dht::{Dht, DhtEvent};
pub use essaim_dht::{DhtConfig, NodeId};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::debug;

/// Largest state file read.
const MAX_STATE_FILE: u64 = 1024 * 1024;
/// Nodes read from the state file, at most.
const MAX_SAVED_NODES: usize = 2000;
/// Batches of peers buffered per `get_peers` receiver; more are dropped
/// while the receiver does not read.
const PEER_BATCHES: usize = 64;
/// The state file is also written this often while the node runs.
pub const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

enum Command {
    GetPeers {
        info_hash: InfoHash,
        announce: Option<u16>,
        tx: mpsc::Sender<Vec<SocketAddr>>,
    },
    AddNode(SocketAddr),
    AddBootstrap(Vec<SocketAddr>),
    Shutdown(oneshot::Sender<io::Result<()>>),
}

/// A running DHT node, shared by a session's torrents (`Arc<DhtHandle>`).
/// Dropping it stops the node (and saves its table);
/// [`DhtHandle::shutdown`] does the same and waits.
pub struct DhtHandle {
    commands: mpsc::Sender<Command>,
    table_len: Arc<AtomicUsize>,
    local_addr: Option<SocketAddr>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl DhtHandle {
    /// Starts a node on `socket`. Nodes saved in `state_path` (if it exists)
    /// are added to `config.nodes`.
    pub fn spawn(socket: UdpSocket, config: DhtConfig, state_path: Option<PathBuf>) -> DhtHandle {
        let (commands, rx) = mpsc::channel(256);
        let table_len = Arc::new(AtomicUsize::new(0));
        let local_addr = socket.local_addr().ok();
        let task = tokio::spawn(run(socket, config, state_path, rx, table_len.clone()));
        DhtHandle {
            commands,
            table_len,
            local_addr,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Looks up peers for `info_hash` (and with a port, announces us as a
    /// peer on it). Peers arrive in batches as lookups find them; the
    /// search repeats every 15 to 30 minutes while the receiver lives.
    pub async fn get_peers(
        &self,
        info_hash: InfoHash,
        announce_port: Option<u16>,
    ) -> mpsc::Receiver<Vec<SocketAddr>> {
        let (tx, rx) = mpsc::channel(PEER_BATCHES);
        let _ = self
            .commands
            .send(Command::GetPeers {
                info_hash,
                announce: announce_port,
                tx,
            })
            .await;
        rx
    }

    /// Pings a node (from a PORT message, say); it joins the routing table
    /// if it answers.
    pub fn add_node(&self, addr: SocketAddr) {
        let _ = self.commands.try_send(Command::AddNode(addr));
    }

    /// More bootstrap addresses (resolved late, say): the node bootstraps
    /// from them if its table is short.
    pub fn add_bootstrap(&self, addrs: Vec<SocketAddr>) {
        let _ = self.commands.try_send(Command::AddBootstrap(addrs));
    }

    /// [`DhtHandle::add_bootstrap`] as a function that can outlive a
    /// borrow of the handle (for a task resolving router names).
    pub fn bootstrap_sender(&self) -> impl Fn(Vec<SocketAddr>) + Send + 'static {
        let tx = self.commands.clone();
        move |addrs| {
            let _ = tx.try_send(Command::AddBootstrap(addrs));
        }
    }

    /// Nodes in the routing table.
    pub fn routing_table_len(&self) -> usize {
        self.table_len.load(Ordering::Relaxed)
    }

    /// The socket's address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Stops the node after saving its routing table to the state path.
    pub async fn shutdown(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        let result = if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            rx.await.unwrap_or(Ok(()))
        } else {
            Ok(())
        };
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        result
    }
}

async fn run(
    socket: UdpSocket,
    mut config: DhtConfig,
    state_path: Option<PathBuf>,
    mut commands: mpsc::Receiver<Command>,
    table_len: Arc<AtomicUsize>,
) {
    if let Some(path) = &state_path {
        match load_state(path).await {
            Ok(state) => {
                debug!(path = %path.display(), nodes = state.nodes.len(), "DHT state loaded");
                // Only nodes this socket can reach: a state file written
                // by a node on the internet is not used on 127.0.0.1.
                let local = socket.local_addr().ok();
                let family_ok = |a: &SocketAddr| {
                    local.is_none_or(|l| {
                        a.is_ipv6() == l.is_ipv6()
                            && (!l.ip().is_loopback() || a.ip().is_loopback())
                    })
                };
                config
                    .nodes
                    .extend(state.nodes.into_iter().filter(|(_, a)| family_ok(a)));
                if config.id.is_none() {
                    config.id = state.id;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => debug!(path = %path.display(), "cannot read DHT state: {e}"),
        }
    }
    let mut dht = Dht::new(config, Instant::now(), rand::random());
    let mut subscribers: HashMap<InfoHash, Vec<mpsc::Sender<Vec<SocketAddr>>>> = HashMap::new();
    // Larger than any packet the node accepts, so an oversized one is seen
    // whole and refused rather than cut.
    let mut buf = vec![0u8; 4096];
    let mut next_save = tokio::time::Instant::now() + SAVE_EVERY;
    loop {
        drain(&mut dht, &socket, &mut subscribers).await;
        table_len.store(dht.table().len(), Ordering::Relaxed);
        let deadline = dht
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(60));
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => dht.handle_packet(from, &buf[..n], Instant::now()),
                Err(e) => {
                    // ICMP errors surface here on some systems; they say
                    // nothing the timeouts do not.
                    debug!("DHT socket: {e}");
                }
            },
            command = commands.recv() => match command {
                Some(Command::GetPeers { info_hash, announce, tx }) => {
                    subscribers.entry(info_hash).or_default().push(tx);
                    dht.get_peers(info_hash, announce, Instant::now());
                }
                Some(Command::AddNode(addr)) => dht.add_node(addr, Instant::now()),
                Some(Command::AddBootstrap(addrs)) => dht.add_bootstrap(addrs, Instant::now()),
                Some(Command::Shutdown(reply)) => {
                    let _ = reply.send(save(&dht, state_path.as_deref()).await);
                    return;
                }
                None => {
                    if let Err(e) = save(&dht, state_path.as_deref()).await {
                        debug!("cannot save DHT state: {e}");
                    }
                    return;
                }
            },
            _ = tokio::time::sleep_until(deadline) => dht.handle_timeout(Instant::now()),
            _ = tokio::time::sleep_until(next_save), if state_path.is_some() => {
                next_save = tokio::time::Instant::now() + SAVE_EVERY;
                if let Err(e) = save(&dht, state_path.as_deref()).await {
                    debug!("cannot save DHT state: {e}");
                }
            }
        }
    }
}

/// Sends what the node wants sent and delivers its events.
async fn drain(
    dht: &mut Dht,
    socket: &UdpSocket,
    subscribers: &mut HashMap<InfoHash, Vec<mpsc::Sender<Vec<SocketAddr>>>>,
) {
    while let Some((to, bytes)) = dht.poll_transmit() {
        if let Err(e) = socket.send_to(&bytes, to).await {
            debug!(%to, "DHT send failed: {e}");
        }
    }
    while let Some(event) = dht.poll_event() {
        match event {
            DhtEvent::Peers { info_hash, peers } => {
                if let Some(subs) = subscribers.get_mut(&info_hash) {
                    // A full receiver misses this batch; a closed one is gone.
                    subs.retain(|tx| {
                        !matches!(
                            tx.try_send(peers.clone()),
                            Err(mpsc::error::TrySendError::Closed(_))
                        )
                    });
                }
                forget_if_unwanted(dht, subscribers, info_hash);
            }
            DhtEvent::LookupDone {
                info_hash,
                stats,
                announced,
            } => {
                debug!(%info_hash, ?stats, announced, "DHT lookup done");
                if let Some(subs) = subscribers.get_mut(&info_hash) {
                    subs.retain(|tx| !tx.is_closed());
                }
                forget_if_unwanted(dht, subscribers, info_hash);
            }
            DhtEvent::Bootstrapped { nodes } => debug!(nodes, "DHT bootstrapped"),
        }
    }
}

/// Ends the search for `info_hash` when nobody listens any more.
fn forget_if_unwanted(
    dht: &mut Dht,
    subscribers: &mut HashMap<InfoHash, Vec<mpsc::Sender<Vec<SocketAddr>>>>,
    info_hash: InfoHash,
) {
    if subscribers.get(&info_hash).is_some_and(Vec::is_empty) {
        subscribers.remove(&info_hash);
        dht.stop_get_peers(&info_hash);
    }
}

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DhtState {
    pub id: Option<NodeId>,
    pub nodes: Vec<(NodeId, SocketAddr)>,
}

/// Encodes a node id and nodes as the state file holds them.
pub fn encode_state(state: &DhtState) -> Vec<u8> {
    let list = state
        .nodes
        .iter()
        .map(|&(id, addr)| {
            let n = NodeInfo { id, addr };
            OwnedValue::Bytes(encode_nodes(&[n], addr.is_ipv6()))
        })
        .collect::<Vec<_>>();
    let mut dict = std::collections::BTreeMap::new();
    if let Some(id) = state.id {
        dict.insert(b"id".to_vec(), OwnedValue::Bytes(id.0.to_vec()));
    }
    dict.insert(b"nodes".to_vec(), OwnedValue::List(list));
    OwnedValue::Dict(dict).encode()
}

/// Reads a state file: `None` if it is not a bencoded dictionary (or the
/// bare list of nodes older versions wrote); node entries that are not 26
/// or 38 bytes are skipped, an id that is not 20 bytes is ignored.
pub fn decode_state(bytes: &[u8]) -> Option<DhtState> {
    let value = bencode::decode(bytes).ok()?;
    let (id, list) = match value.as_list() {
        Some(list) => (None, list),
        None => {
            let id = value
                .get(b"id")
                .and_then(|v| v.as_bytes())
                .and_then(|b| <[u8; 20]>::try_from(b).ok())
                .map(NodeId);
            (id, value.get(b"nodes")?.as_list()?)
        }
    };
    let nodes = list
        .iter()
        .filter_map(|v| {
            let b = v.as_bytes()?;
            let n = decode_nodes(b, b.len() == 38)?;
            n.first().map(|n| (n.id, n.addr))
        })
        .take(MAX_SAVED_NODES)
        .collect();
    Some(DhtState { id, nodes })
}

async fn load_state(path: &Path) -> io::Result<DhtState> {
    let meta = tokio::fs::metadata(path).await?;
    if meta.len() > MAX_STATE_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_STATE_FILE} bytes"),
        ));
    }
    let bytes = tokio::fs::read(path).await?;
    decode_state(&bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a DHT state file"))
}

async fn save(dht: &Dht, path: Option<&Path>) -> io::Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let state = DhtState {
        id: Some(dht.id()),
        nodes: dht.routing_table(),
    };
    let bytes = encode_state(&state);
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            tokio::fs::create_dir_all(dir).await?;
        }
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    tokio::fs::write(&tmp, &bytes).await?;
    tokio::fs::rename(&tmp, path).await?;
    debug!(path = %path.display(), nodes = state.nodes.len(), "DHT state saved");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_and_hostile_files() {
        let nodes = vec![
            (NodeId([1; 20]), "1.2.3.4:6881".parse().unwrap()),
            (NodeId([2; 20]), "[2001:db8::1]:6882".parse().unwrap()),
        ];
        let state = DhtState {
            id: Some(NodeId([9; 20])),
            nodes: nodes.clone(),
        };
        let bytes = encode_state(&state);
        assert_eq!(decode_state(&bytes).unwrap(), state);
        assert!(decode_state(b"garbage").is_none());
        assert!(decode_state(b"d1:ai1ee").is_none());
        // A bad id is ignored, bad entries are skipped.
        let odd = b"d2:id3:abc5:nodesl3:abci5eee";
        assert_eq!(decode_state(odd).unwrap(), DhtState::default());
        // The bare list of older versions still reads.
        let mut list = b"l3:abci5e".to_vec();
        let one = encode_nodes(
            &[NodeInfo {
                id: nodes[0].0,
                addr: nodes[0].1,
            }],
            false,
        );
        list.extend_from_slice(format!("{}:", one.len()).as_bytes());
        list.extend_from_slice(&one);
        list.push(b'e');
        assert_eq!(
            decode_state(&list).unwrap(),
            DhtState {
                id: None,
                nodes: nodes[..1].to_vec()
            }
        );
    }
}
