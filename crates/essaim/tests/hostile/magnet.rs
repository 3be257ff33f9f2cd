//! Hostile peers against a magnet link's metadata fetch (BEP 9): essaim is
//! the leecher, a magnet link added to a session, and the test plays the
//! only peer.
//!
//! essaim's rules: a `metadata_size` of 0 or above 16 MiB is refused before
//! anything is allocated for it; a `data` message is accepted only for a
//! piece asked of that peer, with the announced total size and the exact
//! piece length; metadata that fails the infohash gets its senders dropped.
//! Each of these closes the connection, and the torrent, left without a
//! good peer, goes on fetching (it has no metadata).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use essaim::{AddOptions, AddSource, Session, TorrentState};
use essaim_core::Magnet;
use essaim_wire::extension::{ExtendedHandshake, MetadataMessage, UT_METADATA_ID};
use essaim_wire::peer::{Handshake, Message, MessageDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::timeout;

use crate::util::*;

/// The ut_metadata id the hostile peer asks essaim to use.
const THEIR_ID: u8 = 3;

#[derive(Debug, Clone, Copy)]
enum Lie {
    /// Announce this `metadata_size` in the extended handshake.
    Size(u64),
    /// Answer a request for piece p with piece p + 7.
    OtherPiece,
    /// Answer with one byte too few.
    Short,
    /// Answer with one byte too many.
    Long,
    /// Answer with a `total_size` one larger than announced.
    OtherTotal,
    /// Answer with the right length but every byte flipped.
    Corrupt,
}

/// What the hostile peer saw.
#[derive(Debug, Default)]
struct Seen {
    requests: usize,
    closed: bool,
}

fn magnet(fx: &Fixture) -> Magnet {
    Magnet::parse(&format!("magnet:?xt=urn:btih:{}", fx.info_hash().to_hex())).unwrap()
}

/// Orders a liar's answer after an honest peer's extended handshake: the
/// liar tells `asked` when essaim asks it for a piece, then answers once
/// `relayed` says the honest peer's extended handshake reached essaim.
#[derive(Clone, Default)]
struct Gate {
    asked: Arc<Notify>,
    relayed: Arc<Notify>,
}

/// Serves one connection with `lie`; reports what it saw once essaim
/// closes the connection (or after `BOUND`).
async fn lying_peer(
    fx: &Fixture,
    lie: Lie,
    gate: Option<Gate>,
) -> (SocketAddr, tokio::task::JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let info = Arc::new(fx.meta.info_bytes.clone());
    let info_hash = fx.info_hash();
    let task = tokio::spawn(async move {
        let mut seen = Seen::default();
        let Ok(Ok((stream, _))) = timeout(BOUND, listener.accept()).await else {
            return seen;
        };
        let mut w = Wire::new(stream);
        if w.read_handshake(BOUND).await.is_none() {
            seen.closed = true;
            return seen;
        }
        w.send_raw(&Handshake::new(info_hash, random_peer_id()).encode())
            .await;
        let size = match lie {
            Lie::Size(s) => s,
            _ => info.len() as u64,
        };
        let hs = ExtendedHandshake {
            extensions: vec![("ut_metadata".into(), THEIR_ID)],
            metadata_size: Some(size),
            ..ExtendedHandshake::default()
        };
        if !w
            .try_send_raw(&encode(&Message::Extended {
                id: 0,
                payload: Bytes::from(hs.encode()),
            }))
            .await
        {
            seen.closed = true;
            return seen;
        }
        loop {
            let payload = match w.recv(BOUND).await {
                Recv::Msg(Message::Extended { id, payload }) if id == THEIR_ID => payload,
                Recv::Msg(_) => continue,
                Recv::Closed => {
                    seen.closed = true;
                    return seen;
                }
                Recv::TimedOut => return seen,
            };
            let Ok(MetadataMessage::Request { piece }) = MetadataMessage::decode(&payload) else {
                continue;
            };
            seen.requests += 1;
            if let Some(g) = &gate {
                g.asked.notify_one();
                let _ = timeout(BOUND, g.relayed.notified()).await;
                // Let essaim take in the honest peer's handshake first (this
                // pause only decides whether the old stall could show; the
                // fetch must succeed in either order).
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let start = piece as usize * 16384;
            let good = &info[start.min(info.len())..(start + 16384).min(info.len())];
            let total = info.len() as u64;
            let (piece, total, data) = match lie {
                Lie::Size(_) => (piece, total, good.to_vec()),
                Lie::OtherPiece => (piece + 7, total, good.to_vec()),
                Lie::Short => (piece, total, good[..good.len() - 1].to_vec()),
                Lie::Long => (piece, total, [good, b"x"].concat()),
                Lie::OtherTotal => (piece, total + 1, good.to_vec()),
                Lie::Corrupt => (piece, total, good.iter().map(|b| !b).collect()),
            };
            let reply = MetadataMessage::Data {
                piece,
                total_size: total,
                data: Bytes::from(data),
            };
            let msg = Message::Extended {
                id: UT_METADATA_ID,
                payload: Bytes::from(reply.encode()),
            };
            let _ = w.try_send_raw(&encode(&msg)).await;
        }
    });
    (addr, task)
}

fn encode(m: &Message) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    m.encode(&mut out);
    out.to_vec()
}

/// A session fetching the fixture's magnet link from `peers`; the id.
async fn fetch(fx: &Fixture, peers: Vec<SocketAddr>) -> (Session, essaim::TorrentId) {
    let session = Session::new(local()).await.unwrap();
    let id = session
        .add(
            AddSource::Magnet(magnet(fx).to_uri()),
            AddOptions {
                save_path: Some(fx.leech_dir()),
                peers,
                ..AddOptions::default()
            },
        )
        .await
        .unwrap()
        .id;
    (session, id)
}

/// Fetches with `lie` as the only peer: essaim closes the connection
/// promptly and still has no metadata.
async fn fetch_from_liar(fx: &Fixture, lie: Lie) -> Seen {
    let (addr, peer) = lying_peer(fx, lie, None).await;
    let (session, id) = fetch(fx, vec![addr]).await;
    let seen = timeout(BOUND, peer).await.unwrap().unwrap();
    assert!(seen.closed, "{lie:?}: essaim kept the connection");
    let s = session.get(id).unwrap();
    assert!(!s.has_metadata, "{lie:?}: metadata accepted from a liar");
    assert_eq!(s.state, TorrentState::FetchingMetadata, "{lie:?}");
    session.shutdown().await;
    seen
}

/// A `metadata_size` above the 16 MiB limit (or absurd) is refused before
/// any metadata request, and nothing of that size is allocated: RSS and the
/// heap grow by less than 4 MiB and no allocation reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_metadata_size_is_refused() {
    let _alone = EXCLUSIVE.write().await;
    let fx = Fixture::new(64 * 1024, 16 * 1024);
    let before = Mem::now();
    let sizes = [(16 << 20) + 1, 1 << 40, i64::MAX as u64, 0];
    let fetches = sizes.map(|s| fetch_from_liar(&fx, Lie::Size(s)));
    for (seen, size) in futures_join_all(fetches).await.into_iter().zip(sizes) {
        assert_eq!(seen.requests, 0, "size {size}: metadata requested");
    }
    before.assert_growth_below(4 << 20, "huge metadata_size");
}

/// `data` for a piece out of range, of the wrong length, with another
/// total size, or failing the infohash: the connection is closed and the
/// fetch fails. With an honest essaim seeder beside the liar, the fetch
/// succeeds (the control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metadata_pieces_are_refused() {
    let _shared = EXCLUSIVE.read().await;
    let fx = Fixture::new(64 * 1024, 16 * 1024);
    let lies = [
        Lie::OtherPiece,
        Lie::Short,
        Lie::Long,
        Lie::OtherTotal,
        Lie::Corrupt,
    ];
    let fetches = lies.map(|l| fetch_from_liar(&fx, l));
    for (seen, lie) in futures_join_all(fetches).await.into_iter().zip(lies) {
        assert_eq!(seen.requests, 1, "{lie:?}");
    }

    // The control, in the order that once stalled the fetch: essaim asks
    // the liar, the honest seeder's extended handshake arrives, then the
    // liar's corrupt piece. The honest peer must take over.
    let (seeder, _h) = fx.seeder(local()).await;
    let gate = Gate::default();
    let (liar, peer) = lying_peer(&fx, Lie::Corrupt, Some(gate.clone())).await;
    let honest = held_relay(seeder.local_addr(), gate).await;
    let (session, id) = fetch(&fx, vec![liar, honest]).await;
    timeout(BOUND, session.wait_for(id, |s| s.has_metadata))
        .await
        .expect("fetched from the honest seeder in time");
    let bytes = session.metainfo(id).await.unwrap().expect("metadata");
    let meta = essaim_core::Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(meta.info_hash, fx.info_hash());
    assert_eq!(meta.info_bytes, fx.meta.info_bytes);
    let seen = timeout(BOUND, peer).await.unwrap().unwrap();
    assert_eq!(seen.requests, 1, "the liar was asked first");
    assert!(seen.closed, "the liar was dropped");
    seeder.shutdown().await;
    session.shutdown().await;
}

/// A relay to `to` (one connection) that holds what `to` sends until the
/// liar was asked, then passes it on and tells `relayed` once `to`'s
/// extended handshake went through.
async fn held_relay(to: SocketAddr, gate: Gate) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok(Ok((mut near, _))) = timeout(BOUND, listener.accept()).await else {
            return;
        };
        let mut far = TcpStream::connect(to).await.unwrap();
        let (mut near_rd, mut near_wr) = near.split();
        let (mut far_rd, mut far_wr) = far.split();
        let up = tokio::io::copy(&mut near_rd, &mut far_wr);
        let down = async {
            let _ = timeout(BOUND, gate.asked.notified()).await;
            let mut seen = BytesMut::new();
            let mut decoder = MessageDecoder::new(1 << 20);
            let mut told = false;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = match far_rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if near_wr.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                if !told {
                    seen.extend_from_slice(&chunk[..n]);
                    if seen.len() >= Handshake::LEN {
                        let mut msgs = seen.split_off(Handshake::LEN);
                        while let Ok(Some(m)) = decoder.decode(&mut msgs) {
                            if matches!(m, Message::Extended { id: 0, .. }) {
                                told = true;
                                gate.relayed.notify_one();
                            }
                        }
                        seen.unsplit(msgs);
                    }
                }
            }
        };
        let _ = tokio::join!(up, down);
    });
    addr
}

/// Runs futures concurrently (no `futures` crate here).
async fn futures_join_all<F: std::future::Future, const N: usize>(fs: [F; N]) -> Vec<F::Output>
where
    F::Output: Send,
{
    let mut pinned: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..N).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}
