//! The memory limit of the README's "Limits essaim enforces": a session
//! seeding one small torrent to 500 connected peers (the per-torrent and
//! session caps raised to 600) stays under [`PER_PEER`] bytes of resident
//! memory per peer.
//!
//! The 500 peers are raw TCP clients in this process, on 127.0.0.1: each
//! handshakes (fast extension on), sends `have_none`, `interested` and
//! [`REQUESTS`] requests, and reads until every request is answered (a
//! `piece` from the few unchoked, a `reject` from the rest, BEP 6). The
//! process RSS (`/proc/self/status` VmRSS) is read once the seeder is up and
//! again with all 500 connected and answered; the clients' own buffers are
//! counted too, so the bound is conservative. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use essaim::create::{create_torrent, CreateOptions};
use essaim::{AddOptions, AddSource, Session, SessionConfig, Settings, TorrentState};
use essaim_core::{InfoHash, Metainfo, PeerId, BLOCK_SIZE};
use essaim_wire::peer::{BlockRequest, Handshake, Message, MessageDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::time::timeout;

const PEERS: usize = 500;
/// Requests each peer sends.
const REQUESTS: usize = 8;
/// The bound stated in the README: resident memory per connected peer, on
/// average (about 25 KiB is measured; peers being served hold up to a
/// 256 KiB write batch, but only upload slots + 1 of them per torrent).
const PER_PEER: u64 = 128 * 1024;
/// The longest the whole test may take.
const BOUND: Duration = Duration::from_secs(90);

/// VmRSS of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Raises the soft limit on open files to the hard limit; returns it.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// One client's life: connect (again, if the seeder dropped the
/// connection while busy), ask, count the answers, report, then keep the
/// connection open, reading and discarding, until `stop`.
async fn client(
    n: usize,
    addr: SocketAddr,
    info_hash: InfoHash,
    pieces: u32,
    gate: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    answered: tokio::sync::mpsc::Sender<(usize, usize, usize)>,
) {
    let reqs: Vec<BlockRequest> = (0..REQUESTS)
        .map(|i| BlockRequest {
            piece: ((n * 7 + i * 13) % pieces as usize) as u32,
            begin: 0,
            length: BLOCK_SIZE,
        })
        .collect();
    let mut peer_id = [0u8; 20];
    peer_id[..8].copy_from_slice(b"-XX0001-");
    peer_id[8..16].copy_from_slice(&(n as u64).to_be_bytes());
    let hs = Handshake::new(info_hash, PeerId(peer_id));
    for _attempt in 0..50 {
        let permit = gate.acquire().await.unwrap();
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut theirs = [0u8; Handshake::LEN];
        let ok = stream.write_all(&hs.encode()).await.is_ok()
            && timeout(Duration::from_secs(10), stream.read_exact(&mut theirs))
                .await
                .is_ok_and(|r| r.is_ok());
        if !ok {
            continue; // dropped while the seeder was busy: again
        }
        let theirs = Handshake::decode(&theirs).expect("the seeder's handshake");
        assert_eq!(theirs.info_hash, info_hash);
        assert!(theirs.supports_fast());
        let mut out = BytesMut::new();
        Message::HaveNone.encode(&mut out);
        Message::Interested.encode(&mut out);
        for r in &reqs {
            Message::Request(*r).encode(&mut out);
        }
        if stream.write_all(&out).await.is_err() {
            continue;
        }
        let mut decoder = MessageDecoder::new(1 << 20);
        let mut buf = BytesMut::with_capacity(4096);
        let (mut pieces_got, mut rejects) = (0, 0);
        let mut dropped = false;
        while pieces_got + rejects < REQUESTS {
            match decoder.decode(&mut buf) {
                Ok(Some(Message::Piece { piece, begin, data })) => {
                    assert!(reqs.contains(&BlockRequest {
                        piece,
                        begin,
                        length: data.len() as u32
                    }));
                    pieces_got += 1;
                    continue;
                }
                Ok(Some(Message::Reject(r))) => {
                    assert!(reqs.contains(&r), "reject of a request never sent");
                    rejects += 1;
                    continue;
                }
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => panic!("client {n}: bad message from the seeder: {e}"),
            }
            match timeout(Duration::from_secs(30), stream.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    dropped = true;
                    break;
                }
                Ok(Ok(_)) => {}
                Err(_) => panic!("client {n}: requests unanswered for 30 s"),
            }
        }
        if dropped && pieces_got + rejects == 0 {
            continue; // closed before anything: the seeder shed load
        }
        assert!(!dropped, "client {n}: closed after some answers");
        drop(permit);
        answered.send((n, pieces_got, rejects)).await.unwrap();
        // Stay connected, reading what comes, until the test is over.
        let mut sink = [0u8; 4096];
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                r = stream.read(&mut sink) => match r {
                    Ok(0) | Err(_) => panic!("client {n}: the seeder closed the connection"),
                    Ok(_) => {}
                },
            }
        }
    }
    panic!("client {n}: could not connect in 50 attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_peers_stay_under_the_memory_bound() {
    let fds = raise_fd_limit();
    assert!(
        fds >= 2 * PEERS as u64 + 100,
        "the open-file limit ({fds}) is too low for {PEERS} peers in one process"
    );
    let t0 = Instant::now();
    // A 1 MiB torrent of 64 pieces.
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    let data: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(seed.join("data.bin"), &data).unwrap();
    let opts = CreateOptions {
        piece_length: Some(16 * 1024),
        ..CreateOptions::default()
    };
    let bytes = create_torrent(&seed.join("data.bin"), &opts, &|_, _| {}).unwrap();
    let meta = Metainfo::from_bytes(&bytes).unwrap();
    let pieces = meta.info.layout.num_pieces();

    let session = Session::new(SessionConfig {
        listen_ip: [127, 0, 0, 1].into(),
        port: 0,
        lsd: false,
        settings: Settings {
            max_peers_per_torrent: 600,
            max_peers: 600,
            // An ordinary seed: these raw peers ask for pieces at random,
            // and an initial seed rejects requests for pieces it has not
            // shown that peer, so whether any is served would depend on
            // timing.
            initial_seeding: false,
            ..Settings::default()
        },
        ..SessionConfig::default()
    })
    .await
    .unwrap();
    let id = session
        .add(
            AddSource::Torrent(bytes.clone()),
            AddOptions {
                save_path: Some(seed.clone()),
                ..AddOptions::default()
            },
        )
        .await
        .unwrap()
        .id;
    let status = timeout(
        BOUND,
        session.wait_for(id, |s| s.state == TorrentState::Seeding),
    )
    .await
    .expect("the seeder did not check its data in time")
    .unwrap();
    assert_eq!(status.state, TorrentState::Seeding);
    let connected = || session.get(id).map_or(0, |s| s.peers);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (ans_tx, mut ans_rx) = tokio::sync::mpsc::channel(PEERS);
    let gate = Arc::new(Semaphore::new(32));
    let spawn = |n: usize| {
        tokio::spawn(client(
            n,
            session.local_addr(),
            meta.info_hash,
            pieces,
            gate.clone(),
            stop_rx.clone(),
            ans_tx.clone(),
        ))
    };
    // Warm up with a few peers, so one-time allocations (runtime, pools,
    // first buffers) are not counted; then measure from here.
    const WARM: usize = 10;
    let mut tasks: Vec<_> = (0..WARM).map(spawn).collect();
    let (mut served, mut rejected) = (0, 0);
    for _ in 0..WARM {
        let (_, p, r) = timeout(BOUND, ans_rx.recv()).await.unwrap().unwrap();
        served += p;
        rejected += r;
    }
    let before = rss();

    tasks.extend((WARM..PEERS).map(spawn));
    for _ in WARM..PEERS {
        let (_, p, r) = timeout(BOUND, ans_rx.recv())
            .await
            .expect("the peers were not all answered in time")
            .unwrap();
        served += p;
        rejected += r;
    }
    timeout(BOUND, async {
        while connected() < PEERS {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {PEERS} peers connected", connected()));
    let after = rss();
    let growth = after.saturating_sub(before);
    println!(
        "{PEERS} peers: RSS {} -> {} KiB, {} KiB per peer; {served} blocks served, \
         {rejected} requests rejected; {:?}",
        before / 1024,
        after / 1024,
        growth / PEERS as u64 / 1024,
        t0.elapsed()
    );
    assert_eq!(connected(), PEERS);
    assert!(
        growth <= PER_PEER * PEERS as u64,
        "{PEERS} peers took {} KiB of memory, more than {} KiB each",
        growth / 1024,
        PER_PEER / 1024
    );
    assert!(served > 0, "no peer was served");
    assert_eq!(served + rejected, PEERS * REQUESTS);

    let _ = stop_tx.send(true);
    for t in tasks {
        timeout(BOUND, t).await.unwrap().unwrap();
    }
    timeout(BOUND, session.shutdown()).await.unwrap();
}
