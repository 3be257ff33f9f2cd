//! The UDP sockets of a session's trackers (BEP 15): one per address
//! family, shared by every UDP tracker of every torrent, so 10,000 torrents
//! announce through two sockets, not 10,000.
//!
//! Each socket has a task that reads replies and hands each to the request
//! waiting for its transaction id, if it came from the address that
//! request went to and parses as a reply; anything else is dropped (a
//! spoofer must guess a random 32-bit id among those in flight, and a
//! garbled datagram does not stand in for the real reply). Transaction ids are unique among
//! the requests waiting on a socket. The sockets are bound on first use and
//! closed (their tasks ended) when the last handle goes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{oneshot, OnceCell};
use tracing::debug;

/// Largest datagram read; a longer one is truncated by the kernel and its
/// partial last peer ignored by the parser.
const RECV_BUF: usize = 16 * 1024;
/// Requests waiting on one socket at most (a bound on the table).
const MAX_WAITING: usize = 65_536;

type Waiting = Mutex<HashMap<u32, (SocketAddr, oneshot::Sender<Vec<u8>>)>>;

struct Endpoint {
    socket: Arc<UdpSocket>,
    waiting: Arc<Waiting>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[derive(Default)]
struct Inner {
    v4: OnceCell<Option<Arc<Endpoint>>>,
    v6: OnceCell<Option<Arc<Endpoint>>>,
}

/// A handle on the shared sockets (cheap to clone).
#[derive(Clone, Default)]
pub struct UdpSockets(Arc<Inner>);

impl std::fmt::Debug for UdpSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UdpSockets")
    }
}

/// A request in flight: its transaction id, and where its reply comes.
pub(crate) struct Pending {
    pub tid: u32,
    reply: oneshot::Receiver<Vec<u8>>,
    waiting: Arc<Waiting>,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Answered or not, the id is free again.
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.tid);
    }
}

impl Pending {
    /// Sends the request (built with this transaction id).
    pub async fn send(&self, packet: &[u8]) -> std::io::Result<()> {
        self.socket.send_to(packet, self.to).await.map(|_| ())
    }

    /// The reply, or `None` after `wait`.
    pub async fn reply(&mut self, wait: Duration) -> Option<Vec<u8>> {
        tokio::time::timeout(wait, &mut self.reply).await.ok()?.ok()
    }
}

impl UdpSockets {
    async fn endpoint(&self, v4: bool) -> std::io::Result<Arc<Endpoint>> {
        let cell = if v4 { &self.0.v4 } else { &self.0.v6 };
        let ep = cell
            .get_or_init(|| async {
                let local = if v4 { "0.0.0.0:0" } else { "[::]:0" };
                match UdpSocket::bind(local).await {
                    Ok(s) => {
                        let socket = Arc::new(s);
                        let waiting: Arc<Waiting> = Arc::default();
                        let reader = tokio::spawn(read(socket.clone(), waiting.clone(), v4));
                        Some(Arc::new(Endpoint {
                            socket,
                            waiting,
                            reader,
                        }))
                    }
                    Err(e) => {
                        debug!("cannot bind a UDP tracker socket on {local}: {e}");
                        None
                    }
                }
            })
            .await;
        ep.clone().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                "no UDP socket for trackers of this address family",
            )
        })
    }

    /// A new request to `to`, with a transaction id of its own.
    pub(crate) async fn start(&self, to: SocketAddr) -> std::io::Result<Pending> {
        let ep = self.endpoint(to.is_ipv4()).await?;
        let (tx, rx) = oneshot::channel();
        let mut w = ep.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() >= MAX_WAITING {
            return Err(std::io::Error::other(
                "too many UDP tracker requests at once",
            ));
        }
        let tid = loop {
            let t: u32 = rand::random();
            if !w.contains_key(&t) {
                break t;
            }
        };
        w.insert(tid, (to, tx));
        drop(w);
        Ok(Pending {
            tid,
            reply: rx,
            waiting: ep.waiting.clone(),
            socket: ep.socket.clone(),
            to,
        })
    }
}

/// Reads replies and hands each to its request.
async fn read(socket: Arc<UdpSocket>, waiting: Arc<Waiting>, v4: bool) {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                debug!("UDP tracker socket: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(tid) = buf
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
        else {
            continue;
        };
        let datagram = &buf[..len];
        let parses = if v4 {
            essaim_wire::tracker::udp::parse_response(datagram).is_ok()
        } else {
            essaim_wire::tracker::udp::parse_response_v6(datagram).is_ok()
        };
        let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
        match w.get(&tid) {
            Some((to, _)) if *to == from && !parses => {
                debug!(%from, "bad UDP tracker packet ignored");
            }
            Some((to, _)) if *to == from => {
                if let Some((_, tx)) = w.remove(&tid) {
                    let _ = tx.send(datagram.to_vec());
                }
            }
            Some(_) => debug!(%from, "UDP tracker reply from another address ignored"),
            None => debug!(%from, "UDP tracker reply for no request ignored"),
        }
    }
}
