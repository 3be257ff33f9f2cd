//! Fetching a magnet link's metadata from peers (BEP 9), around the pure
//! [`MetadataFetch`] machine.
//!
//! One task per peer: connect, handshake, extended handshake, then ask the
//! shared machine for a piece, request it, wait for the answer (bounded by
//! a timeout), and again until the machine has the whole verified info
//! dictionary. The machine sits behind a mutex held only for its short,
//! synchronous calls (never across an `.await`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use essaim_core::{InfoHash, PeerId};
use essaim_proto::metadata::{MetadataFetch, REQUEST_TIMEOUT};
use essaim_wire::extension::{self, ExtendedHandshake, MetadataMessage};
use essaim_wire::peer::{Handshake, Message, MessageDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::peer;

/// Peers asked at once.
const MAX_PEERS: usize = 20;
/// Largest message accepted while fetching metadata: a 16 KiB piece and its
/// header.
const MAX_MESSAGE: u32 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no peer sent the metadata within {0:?}")]
    TimedOut(Duration),
}

/// Fetches the info dictionary of `info_hash` from `peers` and from those
/// that arrive on `more_peers` (trackers), within `timeout`. The result's
/// SHA-1 equals the infohash.
pub async fn fetch_metadata(
    info_hash: InfoHash,
    peer_id: PeerId,
    listen_port: u16,
    peers: Vec<SocketAddr>,
    mut more_peers: mpsc::Receiver<Vec<SocketAddr>>,
    timeout: Duration,
) -> Result<Bytes, FetchError> {
    let machine = Arc::new(Mutex::new(MetadataFetch::new(info_hash)));
    let (done_tx, mut done_rx) = watch::channel(None::<Bytes>);
    let done_tx = Arc::new(done_tx);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut queue: Vec<SocketAddr> = peers;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut more_open = true;
    let result = loop {
        queue.retain(|a| !tried.contains(a));
        while tasks.len() < MAX_PEERS {
            let Some(addr) = queue.pop() else { break };
            tried.push(addr);
            let (machine, done_tx) = (machine.clone(), done_tx.clone());
            let key = tried.len() as u64;
            tasks.spawn(async move {
                if let Err(e) = fetch_from(
                    addr,
                    key,
                    info_hash,
                    peer_id,
                    listen_port,
                    &machine,
                    &done_tx,
                )
                .await
                {
                    tracing::debug!(%addr, "metadata fetch: {e}");
                }
                machine
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .release(key, None);
            });
        }
        tokio::select! {
            _ = done_rx.changed() => {
                if let Some(b) = done_rx.borrow().clone() {
                    break Ok(b);
                }
            }
            Some(addrs) = more_peers.recv(), if more_open => queue.extend(addrs),
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tokio::time::sleep_until(deadline) => break Err(FetchError::TimedOut(timeout)),
            // Retried peers: allow a second attempt at peers that failed.
            _ = tokio::time::sleep(Duration::from_secs(5)), if tasks.is_empty() && queue.is_empty() => {
                tried.clear();
            }
        }
        if more_peers.is_closed() {
            more_open = false;
        }
    };
    tasks.abort_all();
    result
}

async fn fetch_from(
    addr: SocketAddr,
    key: u64,
    info_hash: InfoHash,
    peer_id: PeerId,
    listen_port: u16,
    machine: &Mutex<MetadataFetch>,
    done: &watch::Sender<Option<Bytes>>,
) -> Result<(), String> {
    let (mut stream, hs) = peer::connect(addr, Handshake::new(info_hash, peer_id))
        .await
        .map_err(|e| e.to_string())?;
    if !hs.supports_extensions() {
        return Err("peer does not support the extension protocol".into());
    }
    let mut out = BytesMut::new();
    if hs.supports_fast() {
        Message::HaveNone.encode(&mut out);
    }
    let ours = ExtendedHandshake {
        extensions: vec![("ut_metadata".to_owned(), extension::UT_METADATA_ID)],
        client: Some(concat!("essaim ", env!("CARGO_PKG_VERSION")).to_owned()),
        listen_port: Some(listen_port),
        reqq: Some(250),
        your_ip: Some(addr.ip()),
        metadata_size: None,
    };
    Message::Extended {
        id: 0,
        payload: Bytes::from(ours.encode()),
    }
    .encode(&mut out);
    stream.write_all(&out).await.map_err(|e| e.to_string())?;

    let mut conn = Conn {
        stream,
        buf: BytesMut::with_capacity(32 * 1024),
        decoder: MessageDecoder::new(MAX_MESSAGE),
    };
    // Their extended handshake.
    let (their_id, their_size) = loop {
        if let Message::Extended { id: 0, payload } = conn.next(peer::HANDSHAKE_TIMEOUT).await? {
            let theirs = ExtendedHandshake::decode(&payload).map_err(|e| e.to_string())?;
            let id = theirs.extension_id("ut_metadata");
            machine
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .handle_peer(id.is_some(), theirs.metadata_size)
                .map_err(|e| e.to_string())?;
            break (id.ok_or("no ut_metadata")?, theirs.metadata_size);
        }
    };
    loop {
        let next = {
            let mut m = machine.lock().unwrap_or_else(|e| e.into_inner());
            // After a hash failure the fetch starts over without a size: a
            // peer still here offers its own again (a no-op while the size
            // stands), or it would wait for a size forever.
            m.handle_peer(true, their_size).map_err(|e| e.to_string())?;
            m.next_request(key, Instant::now())
        };
        let Some(piece) = next else {
            // Nothing left for us; wait in case others fail, or end.
            if done.borrow().is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut out = BytesMut::new();
        Message::Extended {
            id: their_id,
            payload: Bytes::from(MetadataMessage::Request { piece }.encode()),
        }
        .encode(&mut out);
        conn.stream
            .write_all(&out)
            .await
            .map_err(|e| e.to_string())?;
        // Wait for the answer to that piece.
        loop {
            let msg = conn.next(REQUEST_TIMEOUT).await?;
            let Message::Extended { id, payload } = msg else {
                continue;
            };
            if id != extension::UT_METADATA_ID {
                continue;
            }
            let reply = match MetadataMessage::decode(&payload) {
                Ok(r) => r,
                Err(extension::ExtensionError::UnknownMessageType(_)) => continue,
                Err(e) => return Err(e.to_string()),
            };
            let mut m = machine.lock().unwrap_or_else(|e| e.into_inner());
            match reply {
                MetadataMessage::Data {
                    piece: p,
                    total_size,
                    data,
                } => {
                    m.handle_data(key, p, total_size, &data)
                        .map_err(|e| e.to_string())?;
                    if m.take_liars().contains(&key) {
                        return Err("sent metadata that fails the infohash".into());
                    }
                    if let Some(b) = m.result() {
                        done.send_replace(Some(b.clone()));
                        return Ok(());
                    }
                    if p == piece {
                        break;
                    }
                }
                MetadataMessage::Reject { piece: p } => {
                    m.release(key, Some(p));
                    return Err("peer rejected a metadata request".into());
                }
                MetadataMessage::Request { piece: p } => {
                    drop(m);
                    // We have nothing to give yet: reject (BEP 9).
                    let mut out = BytesMut::new();
                    Message::Extended {
                        id: their_id,
                        payload: Bytes::from(MetadataMessage::Reject { piece: p }.encode()),
                    }
                    .encode(&mut out);
                    conn.stream
                        .write_all(&out)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: MessageDecoder,
}

impl Conn {
    async fn next(&mut self, timeout: Duration) -> Result<Message, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| e.to_string())?
            {
                return Ok(m);
            }
            self.buf.reserve(16 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err("timed out".into()),
                Ok(Ok(0)) => return Err("closed".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
            }
        }
    }
}
