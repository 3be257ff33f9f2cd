//! The hostile peer's toolbox: torrents on random data, essaim sessions on
//! 127.0.0.1, a raw-bytes peer connection ([`Wire`]) the test drives
//! message by message, and memory measurement (RSS and a counting global
//! allocator: the sessions run in this process).
//!
//! Every wait is bounded; a test that would hang fails instead.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use essaim::create::{create_torrent, CreateOptions};
use essaim::{AddOptions, AddSource, Session, SessionConfig, Settings, TorrentId, TorrentSummary};
use essaim_core::{InfoHash, Metainfo, PeerId, BLOCK_SIZE};
use essaim_wire::peer::{BlockRequest, Handshake, Message, MessageDecoder};
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};

/// A torrent of a session, as the tests follow it.
#[derive(Clone)]
pub struct TorrentHandle {
    pub id: TorrentId,
    rx: watch::Receiver<TorrentSummary>,
}

impl TorrentHandle {
    pub fn of(session: &Session, id: TorrentId) -> TorrentHandle {
        TorrentHandle {
            id,
            rx: session.watch(id).expect("the torrent is in the session"),
        }
    }
    /// The latest summary.
    pub fn status(&self) -> TorrentSummary {
        self.rx.borrow().clone()
    }
    pub fn watch(&self) -> watch::Receiver<TorrentSummary> {
        self.rx.clone()
    }
    /// Waits until `f` holds (or the torrent is gone).
    pub async fn wait_for(&self, f: impl Fn(&TorrentSummary) -> bool) -> TorrentSummary {
        let mut rx = self.rx.clone();
        loop {
            {
                let s = rx.borrow_and_update();
                if f(&s) {
                    return s.clone();
                }
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone();
            }
        }
    }
}

/// Adds a .torrent to a session, into `dir`, with these peers to dial.
pub async fn add(
    session: &Session,
    meta: &Metainfo,
    dir: PathBuf,
    peers: Vec<SocketAddr>,
) -> TorrentHandle {
    let id = session
        .add(
            AddSource::Torrent(meta.to_torrent_bytes()),
            AddOptions {
                save_path: Some(dir),
                peers,
                ..AddOptions::default()
            },
        )
        .await
        .expect("torrent added")
        .id;
    TorrentHandle::of(session, id)
}

/// The longest any single step may take.
pub const BOUND: Duration = Duration::from_secs(20);
/// How soon essaim must close a connection it refuses.
pub const PROMPTLY: Duration = Duration::from_secs(5);

/// Tests that measure memory take this exclusively; all others share it, so
/// nothing else runs in the process while memory is measured.
pub static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A session on 127.0.0.1 that finds no peers on its own (no local
/// service discovery): it meets only the peers a test gives it.
/// A session on 127.0.0.1 whose seeds are ordinary seeds: these peers ask
/// for blocks without waiting to be shown pieces, and an initial seed
/// (which reveals pieces one by one, `essaim_proto::super_seed`) would turn
/// them down.
pub fn local() -> SessionConfig {
    SessionConfig {
        listen_ip: [127, 0, 0, 1].into(),
        port: 0,
        lsd: false,
        settings: Settings {
            initial_seeding: false,
            ..Settings::default()
        },
        ..SessionConfig::default()
    }
}

pub fn random_peer_id() -> PeerId {
    PeerId::generate(rand::random())
}

/// A torrent of one file of random data, written under `dir/seed`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub meta: Metainfo,
    pub data: Vec<u8>,
}

pub const NAME: &str = "data.bin";

impl Fixture {
    pub fn new(len: usize, piece_length: u32) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        let mut data = vec![0u8; len];
        rand::rngs::SmallRng::from_entropy().fill_bytes(&mut data);
        std::fs::write(seed.join(NAME), &data).unwrap();
        let opts = CreateOptions {
            piece_length: Some(piece_length),
            ..CreateOptions::default()
        };
        let bytes = create_torrent(&seed.join(NAME), &opts, &|_, _| {}).unwrap();
        let meta = Metainfo::from_bytes(&bytes).unwrap();
        Fixture { dir, meta, data }
    }

    pub fn seed_dir(&self) -> PathBuf {
        self.dir.path().join("seed")
    }

    /// A fresh, empty download folder.
    pub fn leech_dir(&self) -> PathBuf {
        let n: u32 = rand::thread_rng().gen();
        let d = self.dir.path().join(format!("leech-{n}"));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn info_hash(&self) -> InfoHash {
        self.meta.info_hash
    }

    pub fn num_pieces(&self) -> u32 {
        self.meta.info.layout.num_pieces()
    }

    pub fn piece_length(&self) -> u32 {
        self.meta.info.layout.piece_length()
    }

    pub fn piece_size(&self, piece: u32) -> u32 {
        self.meta.info.layout.piece_size(piece).unwrap()
    }

    /// The bytes of a block of the content.
    pub fn block(&self, r: BlockRequest) -> Bytes {
        let start = u64::from(r.piece) * u64::from(self.piece_length()) + u64::from(r.begin);
        let start = start as usize;
        Bytes::copy_from_slice(&self.data[start..start + r.length as usize])
    }

    /// Every block of `piece`, as essaim cuts them.
    pub fn blocks(&self, piece: u32) -> Vec<BlockRequest> {
        let size = self.piece_size(piece);
        (0..size.div_ceil(BLOCK_SIZE))
            .map(|i| BlockRequest {
                piece,
                begin: i * BLOCK_SIZE,
                length: BLOCK_SIZE.min(size - i * BLOCK_SIZE),
            })
            .collect()
    }

    /// A session seeding the fixture (its data checked).
    pub async fn seeder(&self, config: SessionConfig) -> (Session, TorrentHandle) {
        let session = Session::new(config).await.unwrap();
        let handle = add(&session, &self.meta, self.seed_dir(), Vec::new()).await;
        let s = wait_status(&handle, |s| s.state == essaim::TorrentState::Seeding).await;
        assert!(s.is_complete(), "the seeder did not check its data");
        (session, handle)
    }

    /// A session downloading the fixture into a fresh folder from `peers`.
    pub async fn leecher(
        &self,
        config: SessionConfig,
        peers: Vec<SocketAddr>,
    ) -> (Session, TorrentHandle, PathBuf) {
        let session = Session::new(config).await.unwrap();
        let out = self.leech_dir();
        let handle = add(&session, &self.meta, out.clone(), peers).await;
        (session, handle, out.join(NAME))
    }
}

/// Waits (bounded) until `f` holds for the torrent's status; returns it.
pub async fn wait_status(
    handle: &TorrentHandle,
    f: impl Fn(&TorrentSummary) -> bool,
) -> TorrentSummary {
    timeout(BOUND, handle.wait_for(&f))
        .await
        .unwrap_or_else(|_| panic!("status not reached in time: {:?}", handle.status()))
}

/// The first status published from now on: it reflects everything the
/// torrent processed before this call (e.g. what a probe proved handled).
pub async fn fresh_status(handle: &TorrentHandle) -> TorrentSummary {
    let mut rx = handle.watch();
    rx.borrow_and_update();
    timeout(BOUND, rx.changed())
        .await
        .expect("a status within the bound")
        .expect("the torrent is running");
    let s = rx.borrow().clone();
    s
}

/// Downloads the fixture with a fresh essaim leecher from `seeder`, and
/// checks the bytes: the seeder still serves honest peers.
pub async fn honest_download(fx: &Fixture, seeder: SocketAddr) {
    let (session, handle, file) = fx.leecher(local(), vec![seeder]).await;
    let s = wait_status(&handle, |s| s.is_complete()).await;
    assert!(s.is_complete(), "honest download ended as {:?}", s.state);
    assert!(std::fs::read(file).unwrap() == fx.data, "wrong bytes");
    session.shutdown().await;
}

/// What a read from essaim gave.
#[derive(Debug)]
pub enum Recv {
    Msg(Message),
    Closed,
    TimedOut,
}

/// A peer connection the test drives byte by byte.
pub struct Wire {
    pub stream: TcpStream,
    buf: BytesMut,
    decoder: MessageDecoder,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            decoder: MessageDecoder::new(1 << 20),
        }
    }

    /// Connects to `addr`, sends our handshake (fast and extension bits
    /// set) and reads essaim's.
    pub async fn connect(
        addr: SocketAddr,
        info_hash: InfoHash,
        peer_id: PeerId,
    ) -> (Wire, Handshake) {
        let stream = timeout(BOUND, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut wire = Wire::new(stream);
        wire.send_raw(&Handshake::new(info_hash, peer_id).encode())
            .await;
        let hs = wire
            .read_handshake(BOUND)
            .await
            .expect("essaim's handshake");
        (wire, hs)
    }

    /// Reads a 68-byte handshake; `None` if the connection closed first.
    pub async fn read_handshake(&mut self, within: Duration) -> Option<Handshake> {
        let mut hs = [0u8; Handshake::LEN];
        match timeout(within, self.stream.read_exact(&mut hs)).await {
            Ok(Ok(_)) => Some(Handshake::decode(&hs).expect("a valid handshake")),
            Ok(Err(_)) => None,
            Err(_) => panic!("no handshake nor close within {within:?}"),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to essaim");
    }

    /// Writes, and tells whether the write went through (essaim may have
    /// closed the connection already).
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    pub async fn send(&mut self, msgs: &[Message]) {
        let mut out = BytesMut::new();
        for m in msgs {
            m.encode(&mut out);
        }
        self.send_raw(&out).await;
    }

    /// The next message, until `deadline`.
    pub async fn recv_until(&mut self, deadline: Instant) -> Recv {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(m)) => return Recv::Msg(m),
                Ok(None) => {}
                Err(e) => panic!("essaim sent an invalid message: {e}"),
            }
            self.buf.reserve(64 * 1024);
            match timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Recv::TimedOut,
                Ok(Ok(0)) | Ok(Err(_)) => return Recv::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    pub async fn recv(&mut self, within: Duration) -> Recv {
        self.recv_until(Instant::now() + within).await
    }

    /// Whether essaim closes the connection within `within` (messages
    /// before the close are skipped).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            match self.recv_until(deadline).await {
                Recv::Msg(_) => continue,
                Recv::Closed => return true,
                Recv::TimedOut => return false,
            }
        }
    }

    /// The first message for which `f` holds (others are skipped); panics
    /// if the connection closes or nothing comes in time.
    pub async fn expect(&mut self, what: &str, f: impl Fn(&Message) -> bool) -> Message {
        let deadline = Instant::now() + BOUND;
        loop {
            match self.recv_until(deadline).await {
                Recv::Msg(m) if f(&m) => return m,
                Recv::Msg(_) => {}
                other => panic!("waiting for {what}: {other:?}"),
            }
        }
    }

    /// Writes `bytes` while reading what essaim answers, handing each
    /// message to `f` until it returns true (all bounded by [`BOUND`]).
    pub async fn flood(&mut self, bytes: &[u8], mut f: impl FnMut(&Message) -> bool) {
        let Wire {
            stream,
            buf,
            decoder,
        } = self;
        let (mut rd, mut wr) = stream.split();
        let write = async { wr.write_all(bytes).await.expect("write the flood") };
        let read = async {
            loop {
                while let Some(m) = decoder.decode(buf).expect("essaim sends valid messages") {
                    if f(&m) {
                        return;
                    }
                }
                buf.reserve(64 * 1024);
                match rd.read_buf(buf).await {
                    Ok(0) | Err(_) => panic!("essaim closed the connection during the flood"),
                    Ok(_) => {}
                }
            }
        };
        timeout(BOUND, async { tokio::join!(write, read) })
            .await
            .expect("the flood answered in time");
    }

    /// Proves the connection is alive and essaim has processed everything
    /// sent before: a valid request is answered (BEP 6: with the fast
    /// extension a refused request is rejected, so there is always an
    /// answer), in order.
    pub async fn probe(&mut self, r: BlockRequest) {
        self.send(&[Message::Request(r)]).await;
        self.expect("the probe's answer", |m| match m {
            Message::Reject(x) => *x == r,
            Message::Piece { piece, begin, .. } => (*piece, *begin) == (r.piece, r.begin),
            _ => false,
        })
        .await;
    }
}

/// The first block of piece 0: what [`Wire::probe`] asks for.
pub fn probe_req(fx: &Fixture) -> BlockRequest {
    BlockRequest {
        piece: 0,
        begin: 0,
        length: BLOCK_SIZE.min(fx.piece_size(0)),
    }
}

/// A connection essaim closes before its handshake: `true` if it closed
/// without sending a single byte, within [`PROMPTLY`].
pub async fn refused_before_handshake(addr: SocketAddr, handshake: &[u8]) -> bool {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(handshake).await;
    let mut buf = [0u8; 68];
    match timeout(PROMPTLY, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => false,
    }
}

/// Whether the file's bytes in `range` are absent or all zero (never written).
pub fn unwritten(file: &Path, range: std::ops::Range<usize>) -> bool {
    match std::fs::read(file) {
        Ok(b) => b.get(range).unwrap_or_default().iter().all(|&x| x == 0),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Raises the soft limit on open files to the hard limit (for tests that
/// hold many sockets); returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max.min(65536),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    let soft = lim.rlim_cur as u64;
    soft
}

// ---------------------------------------------------------------- memory

/// Counts heap bytes live in the whole process and the largest single
/// allocation, so that "nothing was allocated for it" is checked exactly
/// (an untouched 2 GiB allocation would not show in RSS).
pub struct CountingAlloc;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
            LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
            LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, l, new_size);
        if !q.is_null() {
            LIVE.fetch_add(new_size as isize - l.size() as isize, Ordering::Relaxed);
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        q
    }
}

/// Memory at one moment: resident set (from /proc) and live heap bytes.
#[derive(Debug, Clone, Copy)]
pub struct Mem {
    pub rss: u64,
    pub heap: i64,
}

impl Mem {
    /// Now; also restarts the largest-allocation record.
    pub fn now() -> Mem {
        LARGEST.store(0, Ordering::Relaxed);
        Mem {
            rss: rss_bytes(),
            heap: LIVE.load(Ordering::Relaxed) as i64,
        }
    }

    /// Asserts that RSS and the live heap grew by less than `limit` bytes
    /// since `self`, and that no single allocation reached `limit`.
    pub fn assert_growth_below(&self, limit: u64, what: &str) {
        let rss = rss_bytes();
        let heap = LIVE.load(Ordering::Relaxed) as i64;
        let largest = LARGEST.load(Ordering::Relaxed) as u64;
        let rss_growth = rss.saturating_sub(self.rss);
        let heap_growth = heap.saturating_sub(self.heap).max(0) as u64;
        eprintln!(
            "{what}: RSS +{} KiB, heap +{} KiB, largest allocation {} KiB",
            rss_growth / 1024,
            heap_growth / 1024,
            largest / 1024
        );
        assert!(rss_growth < limit, "{what}: RSS grew by {rss_growth} bytes");
        assert!(
            heap_growth < limit,
            "{what}: heap grew by {heap_growth} bytes"
        );
        assert!(largest < limit, "{what}: one allocation of {largest} bytes");
    }
}

/// VmRSS of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}
