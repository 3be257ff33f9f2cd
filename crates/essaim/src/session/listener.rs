//! The session's listening socket: it accepts a connection, reads the
//! remote handshake (bounded by a timeout), answers with ours if the
//! infohash is one of our running torrents and hands the stream to that
//! torrent's actor; anything else is dropped without a word (a paused
//! torrent does not answer).
//!
//! Accepted connections waiting for a handshake are capped by
//! [`MAX_HALF_OPEN`], so a flood of idle sockets cannot exhaust us; at the
//! cap a new connection takes the place of the oldest one, so idle sockets
//! cannot lock real peers out for the handshake timeout either.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use essaim_wire::peer::Handshake;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::{SessionConfig, SessionError, Shared};
use crate::peer;
use crate::torrent::TorrentCmd;

/// Incoming connections still in their handshake, at most.
pub const MAX_HALF_OPEN: usize = 256;

pub(super) async fn bind(config: &SessionConfig) -> Result<TcpListener, SessionError> {
    let tries = if config.port_search && config.port != 0 {
        100
    } else {
        1
    };
    let mut last_err = None;
    for i in 0..tries {
        let Some(port) = config.port.checked_add(i) else {
            break;
        };
        let addr = SocketAddr::new(config.listen_ip, port);
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last_err = Some((addr, e)),
            Err(source) => return Err(SessionError::Listen { addr, source }),
        }
    }
    let (addr, source) = last_err.unwrap_or_else(|| {
        (
            SocketAddr::new(config.listen_ip, config.port),
            std::io::Error::from(std::io::ErrorKind::AddrInUse),
        )
    });
    Err(SessionError::Listen { addr, source })
}

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Handshakes in progress, oldest first.
    let mut half_open: VecDeque<tokio::task::AbortHandle> = VecDeque::new();
    loop {
        let (mut stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("accept failed: {e}");
                // Out of file descriptors and the like: don't spin.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        half_open.retain(|h| !h.is_finished());
        if half_open.len() >= MAX_HALF_OPEN {
            // The oldest has had the longest to speak: it gives way.
            if let Some(oldest) = half_open.pop_front() {
                oldest.abort();
            }
        }
        let shared = shared.clone();
        let task = tokio::spawn(async move {
            let res = async {
                let hs = peer::read_handshake(&mut stream).await.ok()?;
                if hs.peer_id == shared.peer_id {
                    return None; // ourselves
                }
                let (tx, private) = shared.route(&hs.info_hash)?;
                let dht = shared.dht.is_some() && !private;
                let ours = Handshake::new(hs.info_hash, shared.peer_id).with_dht(dht);
                stream.write_all(&ours.encode()).await.ok()?;
                Some((tx, hs))
            };
            let res = tokio::time::timeout(peer::HANDSHAKE_TIMEOUT, res).await;
            if let Ok(Some((tx, hs))) = res {
                let _ = tx.try_send(TorrentCmd::Incoming(Box::new((stream, addr, hs))));
            }
        });
        half_open.push_back(task.abort_handle());
    }
}
