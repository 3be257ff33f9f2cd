//! Peer connections: the handshake, and the two tasks that move bytes
//! between a socket and the torrent's actor.
//!
//! - The reader frames messages with a [`MessageDecoder`] whose limit comes
//!   from the swarm (a length prefix above it drops the peer before anything
//!   is allocated) and forwards them on the torrent's bounded event channel:
//!   when the actor is busy, the reader stops reading and TCP pushes back.
//! - The writer takes [`WriterCmd`]s in order, batches what is queued into
//!   one buffer per system call, reads served blocks from storage on the
//!   blocking pool, and reports each served block back so the swarm can
//!   hand out the next (at most `MAX_SERVING` in flight per peer). Its
//!   queue is counted ([`writer_channel`]): a peer that keeps sending
//!   (requests, say) but never reads would make us queue answers (rejects)
//!   without bound, so at [`MAX_WRITE_BACKLOG`] commands waiting the actor
//!   drops it.
//! - The reader also reports the kernel's round-trip time of the
//!   connection ([`RTT_REPORT_INTERVAL`], Linux `TCP_INFO`), from which the
//!   swarm sizes our request pipeline to that peer.
//! - Timeouts: the handshake must complete in [`HANDSHAKE_TIMEOUT`]; a peer
//!   silent for [`IDLE_TIMEOUT`] (`SessionConfig::idle_timeout`) is dropped;
//!   we send a keep-alive after [`KEEPALIVE_INTERVAL`] of silence on our side.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use essaim_proto::swarm::PeerKey;
use essaim_wire::peer::{BlockRequest, Handshake, Message, MessageDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::rate_limit::Limits;
use crate::storage::Storage;

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(90);
/// How often a reader that is receiving reports the connection's RTT.
pub const RTT_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes gathered into one write at most.
const WRITE_BATCH: usize = 256 * 1024;
/// Commands waiting for one peer's writer, at most (about 450 KiB). An
/// honest peer stays far below: we queue at most 32 blocks to serve, our
/// requests (at most 1,000) and a `have` per verified piece, and its
/// writer drains them as fast as the peer reads.
pub const MAX_WRITE_BACKLOG: usize = 8192;

/// What a peer's tasks tell the torrent actor.
#[derive(Debug)]
pub enum PeerEvent {
    Message(PeerKey, Message),
    /// A block from `Serve` went out (or failed to: `bytes` is then 0).
    Sent(PeerKey, u32),
    /// The kernel's smoothed round-trip time of the connection.
    Rtt(PeerKey, Duration),
    Closed(PeerKey, String),
}

/// What the torrent actor tells a peer's writer.
#[derive(Debug)]
pub enum WriterCmd {
    Send(Message),
    Serve(BlockRequest),
}

/// A peer writer's queue: the actor's end counts what waits in it.
pub fn writer_channel() -> (WriterTx, WriterRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        WriterTx {
            tx,
            queued: queued.clone(),
        },
        WriterRx { rx, queued },
    )
}

/// The actor's end of a peer writer's queue.
#[derive(Debug)]
pub struct WriterTx {
    tx: mpsc::UnboundedSender<WriterCmd>,
    queued: Arc<AtomicUsize>,
}

impl WriterTx {
    /// Queues `cmd`; `false` if the writer is gone or already has
    /// [`MAX_WRITE_BACKLOG`] commands waiting (the peer does not read).
    pub fn send(&self, cmd: WriterCmd) -> bool {
        if self.queued.load(Ordering::Relaxed) >= MAX_WRITE_BACKLOG {
            return false;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(cmd).is_ok()
    }
}

/// The writer's end of its queue.
#[derive(Debug)]
pub struct WriterRx {
    rx: mpsc::UnboundedReceiver<WriterCmd>,
    queued: Arc<AtomicUsize>,
}

impl WriterRx {
    async fn recv(&mut self) -> Option<WriterCmd> {
        let cmd = self.rx.recv().await;
        if cmd.is_some() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        cmd
    }

    fn try_recv(&mut self) -> Option<WriterCmd> {
        let cmd = self.rx.try_recv().ok();
        if cmd.is_some() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        cmd
    }
}

/// Reads and checks the remote handshake.
pub async fn read_handshake(stream: &mut TcpStream) -> std::io::Result<Handshake> {
    let mut buf = [0u8; Handshake::LEN];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))??;
    Handshake::decode(&buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// Dials a peer, sends `ours`, and checks that the peer's handshake names
/// the same infohash and that the peer is not ourselves.
pub async fn connect(addr: SocketAddr, ours: Handshake) -> std::io::Result<(TcpStream, Handshake)> {
    let (info_hash, peer_id) = (ours.info_hash, ours.peer_id);
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    stream.write_all(&ours.encode()).await?;
    let theirs = read_handshake(&mut stream).await?;
    if theirs.info_hash != info_hash {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "peer answered with another infohash",
        ));
    }
    if theirs.peer_id == peer_id {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "connected to ourselves",
        ));
    }
    Ok((stream, theirs))
}

/// Reads messages until the connection ends, breaks the protocol or stays
/// silent for `idle_timeout` ([`IDLE_TIMEOUT`] by default).
pub async fn run_reader(
    key: PeerKey,
    mut read: OwnedReadHalf,
    max_message_len: u32,
    idle_timeout: Duration,
    events: mpsc::Sender<PeerEvent>,
    limits: Limits,
) {
    let mut decoder = MessageDecoder::new(max_message_len);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut rtt_at = tokio::time::Instant::now();
    let reason = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(msg)) => {
                if events.send(PeerEvent::Message(key, msg)).await.is_err() {
                    return; // the torrent is gone
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => break format!("protocol error: {e}"),
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match tokio::time::timeout(idle_timeout, read.read_buf(&mut buf)).await {
            Err(_) => break "idle timeout".to_owned(),
            Ok(Ok(0)) => break "closed by peer".to_owned(),
            Ok(Ok(n)) => {
                limits.acquire(n).await;
                if rtt_at.elapsed() >= RTT_REPORT_INTERVAL {
                    rtt_at = tokio::time::Instant::now();
                    if let Some(rtt) = tcp_rtt(&read) {
                        if events.send(PeerEvent::Rtt(key, rtt)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Ok(Err(e)) => break format!("read error: {e}"),
        }
    };
    let _ = events.send(PeerEvent::Closed(key, reason)).await;
}

/// The kernel's smoothed round-trip time of the connection, from Linux's
/// `TCP_INFO` (`tcpi_rtt`); `None` elsewhere or if the kernel has none yet.
/// It leaves out the time the peer's client takes to answer: that is the
/// path our requests must cover, not our queue at the peer.
#[cfg(target_os = "linux")]
fn tcp_rtt(read: &OwnedReadHalf) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    let fd = read.as_ref().as_raw_fd();
    // SAFETY: an all-zero `tcp_info` is a valid value (plain integers).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is the open socket `read` holds; `info` is writable and
    // `len` is its size, so the kernel writes at most that many bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (r == 0 && info.tcpi_rtt > 0).then(|| Duration::from_micros(u64::from(info.tcpi_rtt)))
}

#[cfg(not(target_os = "linux"))]
fn tcp_rtt(_: &OwnedReadHalf) -> Option<Duration> {
    None
}

/// Writes what the actor sends, serving blocks from storage.
pub async fn run_writer(
    key: PeerKey,
    mut write: OwnedWriteHalf,
    mut cmds: WriterRx,
    storage: Arc<std::sync::OnceLock<Arc<Storage>>>,
    events: mpsc::Sender<PeerEvent>,
    limits: Limits,
) {
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    let mut pending: Option<WriterCmd> = None;
    loop {
        let first = match pending.take() {
            Some(cmd) => Some(cmd),
            None => match tokio::time::timeout(KEEPALIVE_INTERVAL, cmds.recv()).await {
                Err(_) => Some(WriterCmd::Send(Message::KeepAlive)),
                Ok(cmd) => cmd,
            },
        };
        let Some(cmd) = first else {
            break;
        };
        let mut served: Vec<u32> = Vec::new();
        let mut next = Some(cmd);
        while let Some(cmd) = next.take() {
            match cmd {
                WriterCmd::Send(msg) => msg.encode(&mut buf),
                WriterCmd::Serve(req) => {
                    // Take the requests queued behind this one too (up to a
                    // batch): one trip to the blocking pool, and reads of
                    // consecutive blocks merged.
                    let mut reqs = vec![req];
                    let mut bytes = buf.len() + req.length as usize;
                    while bytes < WRITE_BATCH {
                        match cmds.try_recv() {
                            Some(WriterCmd::Serve(r)) => {
                                bytes += r.length as usize;
                                reqs.push(r);
                            }
                            Some(other) => {
                                next = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    let data = match storage.get().cloned() {
                        Some(storage) => {
                            let batch = reqs.clone();
                            tokio::task::spawn_blocking(move || storage.read_many(&batch)).await
                        }
                        // No data yet (a magnet's first phase never serves).
                        None => Ok(Vec::new()),
                    };
                    let data = match data {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!("cannot read blocks to serve: {e}");
                            Vec::new()
                        }
                    };
                    for (i, req) in reqs.iter().enumerate() {
                        match data.get(i) {
                            Some(Ok(block)) => {
                                Message::Piece {
                                    piece: req.piece,
                                    begin: req.begin,
                                    data: block.clone(),
                                }
                                .encode(&mut buf);
                                served.push(req.length);
                            }
                            other => {
                                tracing::warn!(?req, "cannot read block to serve: {other:?}");
                                served.push(0);
                            }
                        }
                    }
                }
            }
            if buf.len() >= WRITE_BATCH {
                break;
            }
            if next.is_none() {
                next = cmds.try_recv();
            }
        }
        if let Some(cmd) = next {
            // Came after a full batch: first in the next round.
            pending = Some(cmd);
        }
        if !buf.is_empty() {
            limits.acquire(buf.len()).await;
            if let Err(e) = write.write_all(&buf).await {
                let _ = events
                    .send(PeerEvent::Closed(key, format!("write error: {e}")))
                    .await;
                break;
            }
            buf.clear();
        }
        for bytes in served {
            if events.send(PeerEvent::Sent(key, bytes)).await.is_err() {
                return;
            }
        }
    }
    let _ = write.shutdown().await;
}
