//! A whole `Swarm` driven by arbitrary bytes, the way the engine drives it.
//!
//! The first bytes pick a small torrent (odd tails, piece lengths that are
//! not multiples of the block size), the pieces we already have, a skipped
//! piece, the upload slots, partial budget and initial seeding (super seed),
//! and 1–3 peers with their fast/extension bits. Every following byte is an operation:
//! - raw wire bytes for a peer, through that peer's `MessageDecoder` into
//!   `handle_message` (a framing error closes the connection);
//! - a well-formed message for a peer (so the fuzzer reaches deep states
//!   without having to learn the framing): have/bitfield/choke/interest,
//!   requests, rejects, allowed-fast, extended handshake, ut_metadata and
//!   ut_pex;
//! - the answer to one of our outstanding requests (right or corrupt data);
//! - `handle_tick` after advancing a virtual clock;
//! - `handle_block_sent` for a `Serve`, `handle_piece_checked` for a
//!   `CheckPiece` (the verdict from the input);
//! - a peer disconnecting or (re)connecting (dialled or incoming).
//!
//! After every step `poll_output` is drained and each output carried out as
//! the contract in `swarm.rs` says, checking:
//! - no `have`, `bitfield` or `have_all` claiming a piece we lack;
//! - no `Serve` for a piece we lack, for an invalid range, or to a peer we
//!   choke;
//! - no `CheckPiece` for a piece we have or one already being checked;
//! - requests only for blocks as we cut them, of pieces we lack and the
//!   peer has, and only while it unchokes us or for its allowed fast pieces;
//!   never a block twice at one peer, never more outstanding than its
//!   `reqq` (the driver tracks what is outstanding from what it delivers:
//!   pieces, rejects, a choke without the fast extension, our cancels);
//! - fast-extension messages only to peers with the fast bit, extended
//!   messages only to peers with the extension bit and only with ids the
//!   peer asked for; our ut_pex and ut_metadata messages decode, ut_pex
//!   within its limits;
//! - peers discovered through ut_pex are filtered (no port 0, unspecified,
//!   multicast, or loopback from a remote peer; one port per IP);
//! - `Completed` at most once; and the swarm's have set, counters,
//!   connections and unchoke slots agree with the driver's.
#![no_main]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use essaim_core::{Bitfield, InfoHash, Layout, BLOCK_SIZE};
use essaim_proto::peer_state::MAX_REQUEST_DEPTH;
use essaim_proto::pex::MAX_PER_MESSAGE;
use essaim_proto::swarm::{Output, PeerKey, Swarm, SwarmConfig};
use essaim_wire::extension::{ExtendedHandshake, MetadataMessage};
use essaim_wire::peer::{BlockRequest, Message, MessageDecoder};
use essaim_wire::pex::PexMessage;
use libfuzzer_sys::fuzz_target;

#[path = "common/input.rs"]
mod input;
use input::Input;

/// Torrents to play with: (piece length, total length).
const LAYOUTS: [(u64, u64); 4] = [
    (32 * 1024, 37 * 32 * 1024 + 20_001),
    (40_000, 5 * 40_000 + 7),
    (16 * 1024, 100),
    (64 * 1024, 3 * 64 * 1024),
];
const SLOTS: usize = 3;

/// The torrent's content: a fixed function of the offset.
fn content(offset: u64) -> u8 {
    (offset.wrapping_mul(7) ^ (offset >> 9)) as u8
}

struct Conn {
    key: PeerKey,
    fast: bool,
    extensions: bool,
    decoder: MessageDecoder,
    buf: BytesMut,
    /// Requests we sent this peer and did not cancel.
    requested: Vec<BlockRequest>,
    /// What the peer told us: its pieces, its choke, its allowed fast set.
    peer_has: Vec<bool>,
    peer_choking: bool,
    allowed_fast: Vec<u32>,
    /// Its extension ids (BEP 10 `m`) for ut_metadata and ut_pex.
    metadata_id: Option<u8>,
    pex_id: Option<u8>,
    /// Its `reqq` (BEP 10), as the swarm clamps it.
    reqq: u32,
    /// What we told the peer.
    am_choking: bool,
}

impl Conn {
    /// Records what a message the peer sends says, if the message is valid
    /// (an invalid one closes the connection, and the record with it).
    fn learn(&mut self, msg: &Message) {
        let n = self.peer_has.len() as u32;
        match msg {
            Message::Have { piece } if *piece < n => self.peer_has[*piece as usize] = true,
            Message::Bitfield(b) => {
                if let Ok(bits) = Bitfield::from_bytes(b, n) {
                    for (p, h) in self.peer_has.iter_mut().enumerate() {
                        *h = bits.get(p as u32);
                    }
                }
            }
            Message::HaveAll if self.fast => self.peer_has.fill(true),
            Message::HaveNone if self.fast => self.peer_has.fill(false),
            Message::Choke => {
                self.peer_choking = true;
                // BEP 3: a choke discards our requests (BEP 6: they are
                // rejected one by one instead).
                if !self.fast {
                    self.requested.clear();
                }
            }
            Message::Reject(r) if self.fast => self.requested.retain(|x| x != r),
            Message::Piece { piece, begin, data } => {
                let r = BlockRequest {
                    piece: *piece,
                    begin: *begin,
                    length: data.len() as u32,
                };
                self.requested.retain(|x| *x != r);
            }
            Message::Unchoke => self.peer_choking = false,
            Message::Extended { id: 0, payload } if self.extensions => {
                if let Ok(hs) = ExtendedHandshake::decode(payload) {
                    self.metadata_id = hs.extension_id("ut_metadata");
                    self.pex_id = hs.extension_id("ut_pex");
                    self.reqq = hs.reqq.unwrap_or(250).clamp(1, MAX_REQUEST_DEPTH);
                }
            }
            Message::AllowedFast { piece }
                if self.fast
                    && *piece < n
                    && !self.allowed_fast.contains(piece)
                    && self.allowed_fast.len() < 64 =>
            {
                self.allowed_fast.push(*piece)
            }
            _ => {}
        }
    }
}

#[derive(Debug, Default)]
struct Trace {
    requests: u32,
    haves: u32,
    cancels: u32,
    unchokes: u32,
    extended: u32,
    serves: u32,
    checks: u32,
    verified: u32,
    disconnects: u32,
    discovered: usize,
}

fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SWARM_FUZZ_TRACE").is_some())
}

struct Driver {
    swarm: Swarm,
    layout: Layout,
    slots: usize,
    have: Vec<bool>,
    conns: [Option<Conn>; SLOTS],
    generation: u64,
    serves: VecDeque<(PeerKey, BlockRequest)>,
    checks: Vec<(u32, Vec<u8>)>,
    completed: u32,
    /// We run a DHT node (`port` messages go out, peers' ones come in).
    dht: bool,
    /// What happened, for `SWARM_FUZZ_TRACE` (to see how deep inputs go).
    trace: Trace,
    now: Instant,
}

impl Driver {
    fn connected(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    fn slot_of(&self, key: PeerKey) -> Option<usize> {
        self.conns
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.key == key))
    }

    fn connect(&mut self, slot: usize, fast: bool, extensions: bool, dialled: bool) {
        if self.conns[slot].is_some() {
            return;
        }
        self.generation += 1;
        let key = self.generation * SLOTS as u64 + slot as u64;
        self.conns[slot] = Some(Conn {
            key,
            fast,
            extensions,
            decoder: MessageDecoder::new(self.swarm.max_message_len()),
            buf: BytesMut::new(),
            requested: Vec::new(),
            peer_has: vec![false; self.layout.num_pieces() as usize],
            peer_choking: true,
            allowed_fast: Vec::new(),
            metadata_id: None,
            pex_id: None,
            reqq: 250,
            am_choking: true,
        });
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, slot as u8 + 1));
        self.swarm
            .handle_peer_connected(key, fast, extensions, Some(ip), self.now);
        if dialled {
            self.swarm
                .handle_peer_address(key, SocketAddr::new(ip, 6881 + slot as u16));
        }
        self.swarm.handle_peer_dht(key);
    }

    fn disconnect(&mut self, slot: usize) {
        if let Some(c) = self.conns[slot].take() {
            self.swarm.handle_peer_disconnected(c.key, self.now);
        }
    }

    fn message(&mut self, slot: usize, msg: Message) {
        if let Some(c) = &mut self.conns[slot] {
            c.learn(&msg);
            let key = c.key;
            self.swarm.handle_message(key, msg, self.now);
        }
    }

    /// Raw bytes from the peer in `slot`, framed by its decoder.
    fn bytes(&mut self, slot: usize, bytes: &[u8]) {
        let Some(c) = &mut self.conns[slot] else {
            return;
        };
        c.buf.extend_from_slice(bytes);
        let key = c.key;
        let mut msgs = Vec::new();
        let mut broken = false;
        loop {
            match c.decoder.decode(&mut c.buf) {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        for m in msgs {
            match &mut self.conns[slot] {
                Some(c) if c.key == key => c.learn(&m),
                _ => return,
            }
            self.swarm.handle_message(key, m, self.now);
            // Stop delivering once the swarm closed the connection.
            self.drain();
            if self.slot_of(key).is_none() {
                return;
            }
        }
        if broken {
            self.disconnect(slot);
        }
    }

    /// Carries out every output, checking it.
    fn drain(&mut self) {
        while let Some(o) = self.swarm.poll_output() {
            self.output(o);
        }
        self.check_invariants();
    }

    fn output(&mut self, o: Output) {
        match o {
            Output::Send { peer, msg } => {
                match &msg {
                    Message::Request(_) => self.trace.requests += 1,
                    Message::Have { .. } => self.trace.haves += 1,
                    Message::Cancel(_) => self.trace.cancels += 1,
                    Message::Unchoke => self.trace.unchokes += 1,
                    Message::Extended { id, .. } if *id != 0 => self.trace.extended += 1,
                    _ => {}
                }
                if let Message::Port(port) = &msg {
                    assert!(self.dht && *port == 6881, "port message without a DHT");
                }
                match &msg {
                    Message::Request(r) => {
                        assert!(
                            self.layout.is_our_block(r.piece, r.begin, r.length),
                            "request for a block we never cut: {r:?}"
                        );
                        assert!(
                            !self.have[r.piece as usize],
                            "request for piece {} we have",
                            r.piece
                        );
                        assert!(
                            !self.checks.iter().any(|(p, _)| *p == r.piece),
                            "request for piece {} being checked",
                            r.piece
                        );
                    }
                    Message::Have { piece } => {
                        assert!(self.have[*piece as usize], "have for a piece we lack")
                    }
                    // What we announce is a subset of what we have (an
                    // initial seed hides pieces and reveals them later).
                    Message::Bitfield(b) => {
                        let bits = Bitfield::from_bytes(b, self.layout.num_pieces())
                            .expect("our bitfield is valid");
                        for (p, &h) in self.have.iter().enumerate() {
                            assert!(h || !bits.get(p as u32), "bitfield claims piece {p}");
                        }
                    }
                    Message::HaveAll => assert!(self.have.iter().all(|&h| h)),
                    Message::KeepAlive => panic!("the swarm sent a keep-alive"),
                    _ => {}
                }
                let Some(slot) = self.slot_of(peer) else {
                    return;
                };
                let Some(c) = self.conns[slot].as_mut() else {
                    return;
                };
                if matches!(
                    msg,
                    Message::HaveAll
                        | Message::HaveNone
                        | Message::Reject(_)
                        | Message::Suggest { .. }
                        | Message::AllowedFast { .. }
                ) {
                    assert!(c.fast, "fast extension message to a peer without it");
                }
                if let Message::Extended { id, payload } = &msg {
                    assert!(c.extensions, "extended message to a peer without BEP 10");
                    if *id != 0 && Some(*id) == c.pex_id && c.pex_id != c.metadata_id {
                        let pex = PexMessage::decode(payload).expect("our ut_pex decodes");
                        assert!(pex.added.len() <= MAX_PER_MESSAGE);
                        assert!(pex.dropped.len() <= MAX_PER_MESSAGE);
                        for (a, _) in &pex.added {
                            assert!(a.port() != 0, "ut_pex with port 0");
                            assert!(!pex.dropped.contains(a), "{a} added and dropped");
                        }
                    } else if *id != 0 && Some(*id) == c.metadata_id && c.pex_id != c.metadata_id {
                        MetadataMessage::decode(payload).expect("our ut_metadata decodes");
                    } else if *id != 0 {
                        assert!(
                            Some(*id) == c.pex_id || Some(*id) == c.metadata_id,
                            "extended id {id} the peer did not ask for"
                        );
                    }
                }
                if let Message::Request(r) = &msg {
                    assert!(
                        c.peer_has[r.piece as usize],
                        "request for piece {} the peer does not have",
                        r.piece
                    );
                    assert!(
                        !c.peer_choking || c.allowed_fast.contains(&r.piece),
                        "request for piece {} while choked, not allowed fast",
                        r.piece
                    );
                }
                match msg {
                    Message::Choke => c.am_choking = true,
                    Message::Unchoke => c.am_choking = false,
                    Message::Request(r) => {
                        assert!(
                            !c.requested.contains(&r),
                            "{r:?} requested twice from one peer"
                        );
                        c.requested.push(r);
                        assert!(
                            c.requested.len() as u32 <= c.reqq,
                            "{} requests outstanding, the peer's reqq is {}",
                            c.requested.len(),
                            c.reqq
                        );
                    }
                    Message::Cancel(r) => {
                        if let Some(i) = c.requested.iter().position(|x| *x == r) {
                            c.requested.swap_remove(i);
                        }
                    }
                    _ => {}
                }
            }
            Output::Serve { peer, req } => {
                self.trace.serves += 1;
                assert!(
                    self.have[req.piece as usize] && self.swarm.have().get(req.piece),
                    "serve of piece {} we lack",
                    req.piece
                );
                assert!(
                    self.layout
                        .is_valid_request(req.piece, req.begin, req.length, BLOCK_SIZE),
                    "serve of an invalid range {req:?}"
                );
                if let Some(slot) = self.slot_of(peer) {
                    let c = self.conns[slot].as_ref().expect("slot_of found it");
                    assert!(!c.am_choking, "serve to a peer we choke");
                }
                self.serves.push_back((peer, req));
            }
            Output::CheckPiece { piece, data } => {
                self.trace.checks += 1;
                assert!(
                    !self.have[piece as usize] && !self.swarm.have().get(piece),
                    "check of piece {piece} we have"
                );
                assert!(
                    !self.checks.iter().any(|(p, _)| *p == piece),
                    "check of piece {piece} already being checked"
                );
                assert_eq!(
                    Some(data.len() as u32),
                    self.layout.piece_size(piece),
                    "check of piece {piece} with the wrong length"
                );
                self.checks.push((piece, data));
            }
            Output::Disconnect { peer, .. } => {
                self.trace.disconnects += 1;
                if let Some(slot) = self.slot_of(peer) {
                    self.disconnect(slot);
                }
            }
            Output::PieceVerified(p) => {
                self.trace.verified += 1;
                assert!(self.have[p as usize], "verified piece {p} not checked ok");
                assert!(self.swarm.have().get(p));
            }
            Output::Completed => {
                self.completed += 1;
                assert_eq!(self.completed, 1, "Completed twice");
                assert!(self.swarm.is_complete());
            }
            Output::DhtNode(addr) => {
                // Only with a DHT of ours, never port 0, a peer's own IP.
                assert!(self.dht, "DHT node reported without a DHT");
                assert!(addr.port() != 0);
                assert!(!addr.ip().is_loopback(), "loopback address from a remote peer");
            }
            Output::MetadataReceived(_) => panic!("a swarm never fetches metadata"),
            Output::PeersDiscovered(addrs) => {
                self.trace.discovered += addrs.len();
                // Our peers are on 10.0.0.x: no loopback address may come
                // through, and one port per IP.
                let mut ips = std::collections::BTreeSet::new();
                for a in &addrs {
                    let ip = a.ip();
                    assert!(a.port() != 0 && !ip.is_unspecified() && !ip.is_multicast());
                    assert!(!ip.is_loopback(), "loopback address from a remote peer");
                    assert!(ips.insert(ip), "two ports for {ip}");
                }
            }
        }
    }

    fn check_invariants(&mut self) {
        let have = self.swarm.have();
        for (p, &h) in self.have.iter().enumerate() {
            assert_eq!(have.get(p as u32), h, "have set disagrees on piece {p}");
        }
        let count = have.count();
        let stats = self.swarm.stats(self.now);
        assert_eq!(stats.pieces_have, count);
        assert_eq!(stats.num_pieces, self.layout.num_pieces());
        assert_eq!(self.swarm.peer_count(), self.connected());
        let unchoked = self
            .swarm
            .peer_stats(self.now)
            .iter()
            .filter(|p| !p.am_choking)
            .count();
        assert!(unchoked <= self.slots + 1, "{unchoked} peers unchoked");
    }

    fn block_data(&self, piece: u32, begin: u32, len: u32) -> Vec<u8> {
        let start = self.layout.piece_offset(piece).unwrap_or(0) + u64::from(begin);
        (0..u64::from(len)).map(|i| content(start + i)).collect()
    }
}

/// A well-formed message, chosen by the input.
fn structured(input: &mut Input<'_>, layout: &Layout) -> Message {
    let n = layout.num_pieces();
    let kind = input.byte_or0();
    // Mostly valid indices, sometimes one past the end.
    let piece = u32::from(input.byte_or0()) % (n + 1);
    let block = |input: &mut Input<'_>, piece: u32| {
        let blocks = layout.blocks_in_piece(piece).unwrap_or(1);
        let b = u32::from(input.byte_or0()) % blocks.max(1);
        let (begin, length) = layout.block(piece, b).unwrap_or((0, BLOCK_SIZE));
        BlockRequest {
            piece,
            begin,
            length,
        }
    };
    match kind % 21 {
        0 => Message::Choke,
        1 => Message::Unchoke,
        2 => Message::Interested,
        3 => Message::NotInterested,
        4 => Message::Have { piece },
        5 => {
            let mut bits = Bitfield::new(n);
            let mask = input.u32_or0();
            for p in 0..n {
                if mask & (1 << (p % 32)) != 0 {
                    bits.set(p);
                }
            }
            Message::Bitfield(Bytes::copy_from_slice(bits.as_bytes()))
        }
        6 => Message::HaveAll,
        7 => Message::HaveNone,
        8 => Message::Request(block(input, piece)),
        9 => Message::Request(BlockRequest {
            piece,
            begin: input.u32_or0(),
            length: input.u32_or0(),
        }),
        10 => Message::Cancel(block(input, piece)),
        11 => Message::Reject(block(input, piece)),
        12 => Message::AllowedFast { piece },
        13 => Message::Suggest { piece },
        14 => Message::Extended {
            id: 0,
            payload: Bytes::from(
                ExtendedHandshake {
                    extensions: vec![
                        ("ut_metadata".into(), input.byte_or0() % 4),
                        ("ut_pex".into(), input.byte_or0() % 8),
                    ],
                    reqq: Some(u32::from(input.byte_or0())),
                    listen_port: Some(u16::from(input.byte_or0()) + 6000),
                    ..ExtendedHandshake::default()
                }
                .encode(),
            ),
        },
        15 => Message::Extended {
            id: 1,
            payload: Bytes::from(
                MetadataMessage::Request {
                    piece: u32::from(input.byte_or0() % 4),
                }
                .encode(),
            ),
        },
        16 => Message::Port(6881),
        17 => Message::KeepAlive,
        18 => {
            let b = block(input, piece);
            Message::Piece {
                piece: b.piece,
                begin: b.begin,
                data: Bytes::from(vec![0u8; b.length as usize]),
            }
        }
        19 => Message::Unknown { id: 99 },
        _ => {
            // ut_pex (our id is 2): a few addresses, some of them junk.
            let mut pex = PexMessage::default();
            for _ in 0..input.byte_or0() % 8 {
                let b = input.byte_or0();
                let ip = match b % 4 {
                    0 => IpAddr::V4(Ipv4Addr::new(10, 1, 0, b)),
                    1 => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    2 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    _ => IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                };
                let addr = SocketAddr::new(ip, u16::from(b >> 2));
                if b & 0x80 == 0 {
                    pex.added.push((addr, b & 0x12));
                } else {
                    pex.dropped.push(addr);
                }
            }
            Message::Extended {
                id: 2,
                payload: Bytes::from(pex.encode()),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let setup = input.byte_or0();
    let (piece_length, total) = LAYOUTS[usize::from(setup & 3)];
    let layout = Layout::new(piece_length, &[total]).expect("layout");
    let n = layout.num_pieces();
    let peers = usize::from((setup >> 2) & 3) % SLOTS + 1;
    let upload_slots = usize::from((setup >> 4) & 3);
    let small_budget = setup & 0x40 != 0;
    let metadata = (setup & 0x80 != 0).then(|| Bytes::from(vec![b'x'; 20_000]));

    // Pieces already had: one input bit each.
    let mut have = Bitfield::new(n);
    let have_bytes = input.take(Bitfield::byte_len(n));
    for p in 0..n {
        let byte = have_bytes.get((p / 8) as usize).copied().unwrap_or(0);
        if byte & (0x80 >> (p % 8)) != 0 {
            have.set(p);
        }
    }
    let seed = input.byte_or0();
    let config = SwarmConfig {
        upload_slots,
        partial_budget: if small_budget { 1 } else { 64 << 20 },
        seed: u64::from(seed),
        super_seed: seed & 0x80 != 0,
        dht_port: (seed & 0x40 != 0).then_some(6881),
        ..SwarmConfig::default()
    };
    let dht = config.dht_port.is_some();
    let now = Instant::now();
    let mut d = Driver {
        have: (0..n).map(|p| have.get(p)).collect(),
        swarm: Swarm::new(InfoHash([7; 20]), layout.clone(), have, metadata, config),
        layout,
        slots: upload_slots,
        conns: [None, None, None],
        generation: 0,
        serves: VecDeque::new(),
        checks: Vec::new(),
        completed: 0,
        dht,
        trace: Trace::default(),
        now,
    };
    let skip = input.byte_or0();
    if skip & 0x80 != 0 {
        d.swarm.skip_piece(u32::from(skip & 0x7f) % n);
    }
    d.drain();
    for slot in 0..peers {
        let bits = input.byte_or0();
        d.connect(slot, bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
        d.drain();
    }

    while let Some(op) = input.byte() {
        let slot = usize::from(op >> 3) % SLOTS;
        match op & 7 {
            0 | 1 => {
                let len = usize::from(input.byte_or0()) + 1;
                let bytes = input.take(len);
                d.bytes(slot, bytes);
            }
            2 => {
                let msg = structured(&mut input, &d.layout);
                d.message(slot, msg);
            }
            3 => {
                // Answer one of our requests to that peer.
                let pick = usize::from(input.byte_or0());
                let how = input.byte_or0();
                let Some(c) = d.conns[slot].as_mut() else {
                    continue;
                };
                if c.requested.is_empty() {
                    continue;
                }
                let r = c.requested.swap_remove(pick % c.requested.len());
                let fast = c.fast;
                let msg = if how & 3 == 3 && fast {
                    Message::Reject(r)
                } else {
                    let mut data = d.block_data(r.piece, r.begin, r.length);
                    if how & 3 == 1 {
                        let at = usize::from(how >> 2) % data.len();
                        data[at] ^= 0xff;
                    }
                    Message::Piece {
                        piece: r.piece,
                        begin: r.begin,
                        data: Bytes::from(data),
                    }
                };
                d.message(slot, msg);
            }
            4 => {
                let step = u64::from(input.byte_or0());
                d.now += Duration::from_millis(step * step * 4);
                d.swarm.handle_tick(d.now);
            }
            5 => {
                let pick = usize::from(input.byte_or0());
                if !d.serves.is_empty() {
                    let i = pick % d.serves.len();
                    if let Some((peer, req)) = d.serves.remove(i) {
                        d.swarm.handle_block_sent(peer, req.length, d.now);
                    }
                }
            }
            6 => {
                let pick = input.byte_or0();
                if !d.checks.is_empty() {
                    let i = usize::from(pick >> 1) % d.checks.len();
                    let (piece, data) = d.checks.swap_remove(i);
                    let ok = pick & 1 == 0;
                    if ok {
                        d.have[piece as usize] = true;
                    }
                    d.swarm.handle_piece_checked(piece, ok, &data, d.now);
                }
            }
            _ => {
                if d.conns[slot].is_some() {
                    d.disconnect(slot);
                } else {
                    d.connect(slot, op & 0x20 != 0, op & 0x40 != 0, op & 0x80 != 0);
                }
            }
        }
        d.drain();
    }
    if tracing() {
        eprintln!(
            "TRACE completed={} super_seed={} {:?}",
            d.completed,
            seed & 0x80 != 0,
            d.trace
        );
    }
});
