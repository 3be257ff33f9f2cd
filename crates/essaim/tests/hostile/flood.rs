//! Floods: of requests, have messages, keep-alives, and half-open
//! connections. essaim must stay up, keep its memory bounded (these tests
//! run alone in the process and measure RSS and the live heap), and still
//! serve an honest peer afterwards.

use bytes::BytesMut;
use essaim::MAX_HALF_OPEN;
use essaim_core::BLOCK_SIZE;
use essaim_wire::peer::{BlockRequest, Message};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::util::*;

/// Every block of the torrent, cycled `n` times over, as requests.
fn requests(fx: &Fixture, n: usize) -> Vec<BlockRequest> {
    let all: Vec<BlockRequest> = (0..fx.num_pieces()).flat_map(|p| fx.blocks(p)).collect();
    all.iter().copied().cycle().take(n).collect()
}

fn encode_all(msgs: impl IntoIterator<Item = Message>) -> Vec<u8> {
    let mut out = BytesMut::new();
    for m in msgs {
        m.encode(&mut out);
    }
    out.to_vec()
}

/// Limit on memory growth during a flood.
const FLOOD_MEMORY: u64 = 4 << 20;

/// 5,000 requests while choked: each is rejected (BEP 6), none served. Then
/// unchoked, 5,000 more: at most 500 wait in essaim's queue at any time
/// (served, with the right bytes), the rest are rejected; every request gets
/// exactly one answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_flood_choked_and_unchoked() {
    let _alone = EXCLUSIVE.write().await;
    let fx = Fixture::new(64 * 32 * 1024, 32 * 1024);
    let (session, _handle) = fx.seeder(local()).await;
    let (mut w, _) = Wire::connect(session.local_addr(), fx.info_hash(), random_peer_id()).await;
    w.probe(probe_req(&fx)).await;
    let before = Mem::now();

    const N: usize = 5000;
    let reqs = requests(&fx, N);
    let (mut pieces, mut rejects) = (0, 0);
    w.flood(
        &encode_all(reqs.iter().map(|r| Message::Request(*r))),
        |m| {
            match m {
                Message::Reject(_) => rejects += 1,
                Message::Piece { .. } => pieces += 1,
                _ => {}
            }
            pieces + rejects == N
        },
    )
    .await;
    assert_eq!((pieces, rejects), (0, N), "choked: every request rejected");
    before.assert_growth_below(FLOOD_MEMORY, "5,000 requests while choked");

    w.send(&[Message::Interested]).await;
    w.expect("unchoke", |m| *m == Message::Unchoke).await;
    let before = Mem::now();
    let (mut pieces, mut rejects, mut bad) = (0, 0, 0);
    w.flood(
        &encode_all(reqs.iter().map(|r| Message::Request(*r))),
        |m| {
            match m {
                Message::Reject(_) => rejects += 1,
                Message::Piece { piece, begin, data } => {
                    pieces += 1;
                    let r = BlockRequest {
                        piece: *piece,
                        begin: *begin,
                        length: data.len() as u32,
                    };
                    if fx.block(r) != *data || data.len() as u32 != BLOCK_SIZE {
                        bad += 1;
                    }
                }
                _ => {}
            }
            pieces + rejects == N
        },
    )
    .await;
    eprintln!("unchoked: {pieces} served, {rejects} rejected");
    assert_eq!(bad, 0, "served blocks with wrong bytes");
    // Requests come far faster than blocks go out: the queue fills and the
    // rest is rejected.
    assert!(
        pieces >= 32 && rejects > 0,
        "{pieces} served, {rejects} rejected"
    );
    before.assert_growth_below(FLOOD_MEMORY, "5,000 requests while unchoked");

    w.probe(probe_req(&fx)).await;
    honest_download(&fx, session.local_addr()).await;
    session.shutdown().await;
}

/// A peer that floods requests and never reads its socket: each refused
/// request makes a reject essaim cannot send. What essaim queues for such a
/// peer must stay bounded: 2,000,000 requests (34 MB on the wire, far more
/// than the socket buffers hold) grow memory by less than 4 MiB; essaim
/// drops the peer when 8,192 messages wait for it (`MAX_WRITE_BACKLOG`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_flood_without_reading_is_bounded() {
    let _alone = EXCLUSIVE.write().await;
    let fx = Fixture::new(64 * 32 * 1024, 32 * 1024);
    let (session, _handle) = fx.seeder(local()).await;
    let (mut w, _) = Wire::connect(session.local_addr(), fx.info_hash(), random_peer_id()).await;
    w.probe(probe_req(&fx)).await;
    let flood = encode_all(requests(&fx, 2_000_000).into_iter().map(Message::Request));
    let before = Mem::now();
    // essaim drops the peer once its answers pile up, and closes the
    // socket: the flood cannot be written to the end.
    let sent = timeout(BOUND, w.stream.write_all(&flood)).await;
    assert!(matches!(sent, Ok(Err(_))), "flood written: {sent:?}");
    before.assert_growth_below(FLOOD_MEMORY, "2,000,000 requests, never read");
    drop(w);
    drop(flood);
    honest_download(&fx, session.local_addr()).await;
    session.shutdown().await;
}

/// Thousands of `have` messages (every piece, 50 times over) and 100,000
/// keep-alives: ignored at no cost, and the peer is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn have_and_keepalive_floods() {
    let _alone = EXCLUSIVE.write().await;
    let fx = Fixture::new(64 * 32 * 1024, 32 * 1024);
    let (session, handle) = fx.seeder(local()).await;
    let (mut w, _) = Wire::connect(session.local_addr(), fx.info_hash(), random_peer_id()).await;
    w.probe(probe_req(&fx)).await;
    let before = Mem::now();
    let n = fx.num_pieces();
    let haves = encode_all((0..50 * n).map(|i| Message::Have { piece: i % n }));
    w.send_raw(&haves).await;
    w.probe(probe_req(&fx)).await;
    before.assert_growth_below(FLOOD_MEMORY, "3,200 have messages");
    let before = Mem::now();
    w.send_raw(&vec![0u8; 4 * 100_000]).await;
    w.probe(probe_req(&fx)).await;
    before.assert_growth_below(FLOOD_MEMORY, "100,000 keep-alives");
    wait_status(&handle, |s| s.peers == 1).await;
    honest_download(&fx, session.local_addr()).await;
    session.shutdown().await;
}

/// Sockets that connect and send nothing: the session caps handshakes in
/// progress at [`MAX_HALF_OPEN`] (256), each for at most 10 s. While 1,000
/// such sockets are held open (400 if the file limit is low), a real peer is
/// still accepted at once and an honest leecher downloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_flood_does_not_lock_out_real_peers() {
    let _alone = EXCLUSIVE.write().await;
    let fds = raise_fd_limit();
    let held_n = if fds >= 4096 { 1000 } else { 400 };
    assert!(held_n > MAX_HALF_OPEN);
    let fx = Fixture::new(16 * 32 * 1024, 32 * 1024);
    let (session, _handle) = fx.seeder(local()).await;
    let addr = session.local_addr();
    let before = Mem::now();
    let mut held = Vec::with_capacity(held_n);
    for _ in 0..held_n {
        let s = timeout(BOUND, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        held.push(s);
    }
    let (mut w, _) = timeout(
        PROMPTLY,
        Wire::connect(addr, fx.info_hash(), random_peer_id()),
    )
    .await
    .expect("a real peer is answered at once");
    w.probe(probe_req(&fx)).await;
    honest_download(&fx, addr).await;
    before.assert_growth_below(8 << 20, "1,000 half-open connections");
    drop(held);
    session.shutdown().await;
}
