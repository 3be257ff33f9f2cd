//! A peer that serves corrupt data: essaim as leecher, one lying seeder (the
//! test) and one honest essaim seeder.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use essaim_core::InfoHash;
use essaim_wire::peer::{Handshake, Message};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::util::*;

/// What the liar saw.
#[derive(Default)]
struct Liar {
    connections: AtomicUsize,
    blocks_sent: AtomicU64,
    closed: AtomicUsize,
}

/// A listener that allows a second socket bound to its address (so the
/// liar can later connect *from* the address essaim dialled).
fn reusable_listener() -> TcpListener {
    let s = TcpSocket::new_v4().unwrap();
    s.set_reuseaddr(true).unwrap();
    s.set_reuseport(true).unwrap();
    s.bind(([127, 0, 0, 1], 0).into()).unwrap();
    s.listen(64).unwrap()
}

/// Plays a seeder that answers every request at once with the right block
/// with every byte flipped.
async fn serve_lies(listener: TcpListener, fx: Arc<FixtureData>, liar: Arc<Liar>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        liar.connections.fetch_add(1, Ordering::SeqCst);
        let (fx, liar) = (fx.clone(), liar.clone());
        tokio::spawn(async move {
            let mut w = Wire::new(stream);
            if w.read_handshake(BOUND).await.is_none() {
                liar.closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
            let hs = Handshake::new(fx.info_hash, random_peer_id());
            w.send_raw(&hs.encode()).await;
            w.send(&[Message::HaveAll, Message::Unchoke]).await;
            loop {
                match w.recv(BOUND * 3).await {
                    Recv::Msg(Message::Request(r)) => {
                        let start = r.piece as usize * fx.piece_length + r.begin as usize;
                        let Some(good) = fx.data.get(start..start + r.length as usize) else {
                            continue;
                        };
                        let bad: Vec<u8> = good.iter().map(|b| !b).collect();
                        let piece = Message::Piece {
                            piece: r.piece,
                            begin: r.begin,
                            data: Bytes::from(bad),
                        };
                        let mut out = bytes::BytesMut::new();
                        piece.encode(&mut out);
                        if !w.try_send_raw(&out).await {
                            break;
                        }
                        liar.blocks_sent.fetch_add(1, Ordering::SeqCst);
                    }
                    Recv::Msg(_) => {}
                    Recv::Closed | Recv::TimedOut => break,
                }
            }
            liar.closed.fetch_add(1, Ordering::SeqCst);
        });
    }
}

struct FixtureData {
    info_hash: InfoHash,
    piece_length: usize,
    data: Vec<u8>,
}

/// The download completes with the right bytes from the honest seeder;
/// the hash failures are counted and the liar is disconnected and banned:
/// a new connection from its address is closed at once, before essaim says
/// anything (a connection from another address is served, the control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_data_is_refused_and_the_liar_banned() {
    let _shared = EXCLUSIVE.read().await;
    let fx = Fixture::new(32 * 32 * 1024 + 777, 32 * 1024);
    let (seeder, _seed_handle) = fx.seeder(local()).await;
    let listener = reusable_listener();
    let liar_addr: SocketAddr = listener.local_addr().unwrap();
    let liar = Arc::new(Liar::default());
    let data = Arc::new(FixtureData {
        info_hash: fx.info_hash(),
        piece_length: fx.piece_length() as usize,
        data: fx.data.clone(),
    });
    let lies = tokio::spawn(serve_lies(listener, data, liar.clone()));

    let (leecher, handle, file) = fx
        .leecher(local(), vec![liar_addr, seeder.local_addr()])
        .await;
    let s = wait_status(&handle, |s| s.is_complete()).await;
    assert!(s.is_complete(), "ended as {:?}", s.state);
    assert!(
        std::fs::read(&file).unwrap() == fx.data,
        "wrong bytes on disk"
    );
    assert!(
        liar.blocks_sent.load(Ordering::SeqCst) > 0,
        "the liar was never asked"
    );
    assert!(s.hash_failures >= 1, "{:?}", s);
    assert!(s.wasted >= u64::from(fx.piece_length()), "{:?}", s);
    // Disconnected: every connection the liar got was closed.
    let all_closed = tokio::time::timeout(BOUND, async {
        loop {
            let c = liar.connections.load(Ordering::SeqCst);
            if c > 0 && liar.closed.load(Ordering::SeqCst) == c {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(all_closed.is_ok(), "the liar is still connected");
    assert!(
        !leecher
            .peers(handle.id)
            .await
            .unwrap()
            .iter()
            .any(|p| p.addr == liar_addr),
        "the liar is still listed"
    );

    // Banned: a connection from the liar's address is dropped by the torrent
    // right after the session's handshake, before any message.
    let s = TcpSocket::new_v4().unwrap();
    s.set_reuseaddr(true).unwrap();
    s.set_reuseport(true).unwrap();
    s.bind(liar_addr).unwrap();
    let stream = s.connect(leecher.local_addr()).await.unwrap();
    let mut w = Wire::new(stream);
    w.send_raw(&Handshake::new(fx.info_hash(), random_peer_id()).encode())
        .await;
    assert!(w.read_handshake(BOUND).await.is_some());
    match w.recv(PROMPTLY).await {
        Recv::Closed => {}
        other => panic!("the banned address was served: {other:?}"),
    }
    // The control: the same from another address gets essaim's pieces.
    let stream = TcpStream::connect(leecher.local_addr()).await.unwrap();
    let mut w = Wire::new(stream);
    w.send_raw(&Handshake::new(fx.info_hash(), random_peer_id()).encode())
        .await;
    assert!(w.read_handshake(BOUND).await.is_some());
    w.expect("have_all", |m| *m == Message::HaveAll).await;

    lies.abort();
    leecher.shutdown().await;
    seeder.shutdown().await;
}
