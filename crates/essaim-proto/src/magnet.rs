//! A magnet link's first phase: the torrent's connections while its info
//! dictionary is fetched from them (BEP 9, ut_metadata), around the
//! [`MetadataFetch`] machine.
//!
//! # Contract
//! The same as the [`Swarm`](crate::swarm::Swarm)'s: the driver reports
//! connections and messages through `handle_*`, calls
//! [`MagnetPhase::handle_tick`] about once a second, and drains
//! [`MagnetPhase::poll_output`] after each call. Outputs are the swarm's
//! [`Output`] (`Send`, `Disconnect`, `PeersDiscovered`, `DhtNode`), plus
//! [`Output::MetadataReceived`] once, when the info dictionary is complete
//! and its SHA-1 equals the infohash.
//!
//! The connections outlive the phase: when the driver knows what is on its
//! disk, it takes each peer with [`MagnetPhase::into_peers`] and hands it
//! to the new swarm ([`Swarm::handle_peer_adopted`](crate::swarm::Swarm::handle_peer_adopted)),
//! so the peers that gave the metadata are the first to give the data.
//!
//! # What a peer is told, and what is kept of it
//! We have nothing yet: a peer with the fast extension gets `have_none`,
//! the others no bitfield at all (BEP 3 allows skipping an empty one). Our
//! extended handshake offers ut_metadata (and ut_pex unless the torrent
//! forbids it) without a `metadata_size`. Everything a peer says of its
//! pieces (`bitfield`, `have`, `have_all`, `have_none`) is kept as sent, as
//! its choke and interest; the swarm checks it against the piece count,
//! which only the metadata tells. Memory per peer is bounded: a `have` may
//! name at most [`MAX_PIECES`] pieces (the most a 16 MiB info dictionary
//! holds), and a bitfield is as long as the framing limit allows
//! ([`MAX_MESSAGE_LEN`]). Requests for blocks are refused (rejected with the
//! fast extension); stray blocks are dropped.
//!
//! Metadata requests go to every peer that offers ut_metadata with a valid
//! size, at most [`REQUESTS_PER_PEER`] at a time each; a piece unanswered
//! for [`REQUEST_TIMEOUT`] is asked of another peer. A peer that rejects a
//! request is asked no more (BEP 9: it does not have the metadata); a peer
//! whose pieces fail the infohash is dropped and banned, and the fetch
//! starts over.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use essaim_core::{Bitfield, InfoHash};
use essaim_wire::extension::{self, ExtendedHandshake, MetadataMessage};
use essaim_wire::peer::Message;

use crate::metadata::{MetadataFetch, MAX_METADATA_SIZE, REQUEST_TIMEOUT};
use crate::peer_state::MAX_SERVE_QUEUE;
use crate::pex::filter_added;
use crate::swarm::{DisconnectReason, Output, PeerKey};

/// The most pieces a torrent whose info dictionary fits in
/// [`MAX_METADATA_SIZE`] can have (20 bytes of SHA-1 each).
pub const MAX_PIECES: u32 = (MAX_METADATA_SIZE / 20) as u32;
/// Largest message a peer may send while the piece count is unknown: a
/// bitfield of [`MAX_PIECES`], or a metadata piece with its header.
pub const MAX_MESSAGE_LEN: u32 = (MAX_PIECES / 8 + 2) + 64;
/// Metadata pieces asked of one peer at once.
pub const REQUESTS_PER_PEER: usize = 4;

/// How the phase presents us to peers.
#[derive(Debug, Clone)]
pub struct MagnetConfig {
    /// Our client name for the extended handshake (`v`).
    pub client: String,
    /// Our listening port for the extended handshake (`p`).
    pub listen_port: Option<u16>,
    /// Offer ut_pex and accept its peers (off for private torrents).
    pub pex: bool,
    /// Our DHT node's port, sent to peers that set the DHT bit.
    pub dht_port: Option<u16>,
}

/// What a peer said of its pieces before their number was known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EarlyPieces {
    /// Nothing yet.
    #[default]
    Unknown,
    /// `have_all`.
    All,
    /// `have_none`.
    None,
    /// A `bitfield`, as sent.
    Bitfield(Bytes),
}

/// A connection of the magnet phase, as handed to the swarm.
#[derive(Debug, Clone)]
pub struct EarlyPeer {
    pub fast: bool,
    pub extensions: bool,
    pub ip: Option<IpAddr>,
    /// The address we dialled (reachable, so shared by peer exchange);
    /// `None` for an incoming connection.
    pub dialled: Option<SocketAddr>,
    pub ext: Option<ExtendedHandshake>,
    /// Its last `bitfield`, `have_all` or `have_none`...
    pub pieces: EarlyPieces,
    /// ... and the pieces it announced with `have` since (a bit vector,
    /// BEP 3 layout, as long as the highest piece named needs).
    pub haves: Vec<u8>,
    pub peer_choking: bool,
    pub peer_interested: bool,
    pub dht_port_seen: bool,
}

impl EarlyPeer {
    /// The peer's pieces for a torrent of `n` pieces; an error says how it
    /// broke the protocol (a bitfield of the wrong length, a `have` out of
    /// range). `None` if it said nothing of its pieces.
    pub fn bitfield(&self, n: u32) -> Result<Option<Bitfield>, String> {
        let mut bits = match &self.pieces {
            EarlyPieces::Unknown => None,
            EarlyPieces::All => Some(Bitfield::full(n)),
            EarlyPieces::None => Some(Bitfield::new(n)),
            EarlyPieces::Bitfield(b) => {
                Some(Bitfield::from_bytes(b, n).map_err(|e| e.to_string())?)
            }
        };
        for (i, byte) in self.haves.iter().enumerate() {
            for bit in 0..8u32 {
                if byte & (0x80 >> bit) == 0 {
                    continue;
                }
                let piece = (i as u32) * 8 + bit;
                if piece >= n {
                    return Err(format!("have for piece {piece} of {n}"));
                }
                bits.get_or_insert_with(|| Bitfield::new(n)).set(piece);
            }
        }
        Ok(bits)
    }
}

#[derive(Debug)]
struct MagnetPeer {
    early: EarlyPeer,
    /// The peer's ut_metadata id, once it offered one with a valid size.
    metadata_id: Option<u8>,
    /// Its `metadata_size`, offered again when a fetch starts over.
    metadata_size: Option<u64>,
    /// Metadata pieces asked of it and not answered, with when.
    requested: Vec<(u32, Instant)>,
    /// It rejected a request: it does not have the metadata.
    refused: bool,
}

/// The magnet phase of one torrent.
#[derive(Debug)]
pub struct MagnetPhase {
    info_hash: InfoHash,
    config: MagnetConfig,
    fetch: MetadataFetch,
    peers: BTreeMap<PeerKey, MagnetPeer>,
    out: VecDeque<Output>,
    /// Reported with `MetadataReceived`; then served to peers that ask.
    done: Option<Bytes>,
}

impl MagnetPhase {
    pub fn new(info_hash: InfoHash, config: MagnetConfig) -> Self {
        MagnetPhase {
            info_hash,
            config,
            fetch: MetadataFetch::new(info_hash),
            peers: BTreeMap::new(),
            out: VecDeque::new(),
            done: None,
        }
    }

    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// The verified info dictionary, once fetched.
    pub fn metadata(&self) -> Option<&Bytes> {
        self.done.as_ref()
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Connected peers that offer the metadata (ut_metadata with a size).
    pub fn metadata_peers(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.metadata_id.is_some() && !p.refused)
            .count()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Hands every connection over, for the swarm to adopt.
    pub fn into_peers(self) -> Vec<(PeerKey, EarlyPeer)> {
        self.peers.into_iter().map(|(k, p)| (k, p.early)).collect()
    }

    fn send(&mut self, peer: PeerKey, msg: Message) {
        self.out.push_back(Output::Send { peer, msg });
    }

    fn disconnect(&mut self, peer: PeerKey, reason: DisconnectReason) {
        self.out.push_back(Output::Disconnect { peer, reason });
    }

    /// A connection finished its handshake (see
    /// [`Swarm::handle_peer_connected`](crate::swarm::Swarm::handle_peer_connected)).
    pub fn handle_peer_connected(
        &mut self,
        peer: PeerKey,
        fast: bool,
        extensions: bool,
        peer_ip: Option<IpAddr>,
    ) {
        self.peers.insert(
            peer,
            MagnetPeer {
                early: EarlyPeer {
                    fast,
                    extensions,
                    ip: peer_ip,
                    dialled: None,
                    ext: None,
                    pieces: EarlyPieces::Unknown,
                    haves: Vec::new(),
                    peer_choking: true,
                    peer_interested: false,
                    dht_port_seen: false,
                },
                metadata_id: None,
                metadata_size: None,
                requested: Vec::new(),
                refused: false,
            },
        );
        if fast {
            self.send(peer, Message::HaveNone);
        }
        if extensions {
            let mut m = vec![("ut_metadata".to_owned(), extension::UT_METADATA_ID)];
            if self.config.pex {
                m.push(("ut_pex".to_owned(), extension::UT_PEX_ID));
            }
            let hs = ExtendedHandshake {
                extensions: m,
                client: Some(self.config.client.clone()),
                listen_port: self.config.listen_port,
                reqq: Some((MAX_SERVE_QUEUE / 2) as u32),
                your_ip: peer_ip,
                metadata_size: self.done.as_ref().map(|m| m.len() as u64),
            };
            self.send(
                peer,
                Message::Extended {
                    id: 0,
                    payload: Bytes::from(hs.encode()),
                },
            );
        }
    }

    /// The peer's handshake has the DHT bit: tell it our DHT port.
    pub fn handle_peer_dht(&mut self, peer: PeerKey) {
        if let (Some(port), true) = (self.config.dht_port, self.peers.contains_key(&peer)) {
            self.send(peer, Message::Port(port));
        }
    }

    /// The address of a connection we dialled.
    pub fn handle_peer_address(&mut self, peer: PeerKey, addr: SocketAddr) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.early.dialled = Some(addr);
        }
    }

    /// A connection closed: its metadata requests go to others.
    pub fn handle_peer_disconnected(&mut self, peer: PeerKey, now: Instant) {
        if self.peers.remove(&peer).is_some() {
            self.fetch.release(peer, None);
            self.request_all(now);
        }
    }

    /// Periodic work: pieces whose request timed out are asked again.
    pub fn handle_tick(&mut self, now: Instant) {
        // A piece asked long ago counts as lost at its peer (the fetch
        // hands it to whoever asks next).
        for p in self.peers.values_mut() {
            p.requested
                .retain(|(_, at)| now.saturating_duration_since(*at) < REQUEST_TIMEOUT);
        }
        self.request_all(now);
    }

    /// A message arrived from a peer.
    pub fn handle_message(&mut self, peer: PeerKey, msg: Message, now: Instant) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        if let Err(why) = self.on_message(peer, msg, now) {
            self.peers.remove(&peer);
            self.fetch.release(peer, None);
            self.disconnect(peer, DisconnectReason::Protocol(why));
            self.request_all(now);
        }
    }

    fn on_message(&mut self, peer: PeerKey, msg: Message, now: Instant) -> Result<(), String> {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Ok(());
        };
        let fast = p.early.fast;
        let need_fast = |name: &str| {
            if fast {
                Ok(())
            } else {
                Err(format!("{name} without the fast extension"))
            }
        };
        match msg {
            Message::KeepAlive
            | Message::Unknown { .. }
            | Message::Cancel(_)
            | Message::Piece { .. } => {}
            Message::Port(port) => {
                if !p.early.dht_port_seen && port != 0 && self.config.dht_port.is_some() {
                    p.early.dht_port_seen = true;
                    if let Some(ip) = p.early.ip {
                        self.out
                            .push_back(Output::DhtNode(SocketAddr::new(ip, port)));
                    }
                }
            }
            Message::Choke => p.early.peer_choking = true,
            Message::Unchoke => p.early.peer_choking = false,
            Message::Interested => p.early.peer_interested = true,
            Message::NotInterested => p.early.peer_interested = false,
            Message::Have { piece } => {
                if piece >= MAX_PIECES {
                    return Err(format!("have for piece {piece}: no torrent has that many"));
                }
                let byte = (piece / 8) as usize;
                if p.early.haves.len() <= byte {
                    p.early.haves.resize(byte + 1, 0);
                }
                p.early.haves[byte] |= 0x80 >> (piece % 8);
            }
            Message::Bitfield(bytes) => {
                p.early.pieces = EarlyPieces::Bitfield(bytes);
                p.early.haves = Vec::new();
            }
            Message::HaveAll => {
                need_fast("have_all")?;
                p.early.pieces = EarlyPieces::All;
                p.early.haves = Vec::new();
            }
            Message::HaveNone => {
                need_fast("have_none")?;
                p.early.pieces = EarlyPieces::None;
                p.early.haves = Vec::new();
            }
            Message::Request(req) => {
                // We have nothing; BEP 6 wants a refusal said.
                if fast {
                    self.send(peer, Message::Reject(req));
                }
            }
            Message::Reject(_) => need_fast("reject")?,
            Message::AllowedFast { .. } | Message::Suggest { .. } => {
                need_fast("allowed_fast or suggest")?
            }
            Message::Extended { id, payload } => self.on_extended(peer, id, payload, now)?,
        }
        Ok(())
    }

    fn on_extended(
        &mut self,
        peer: PeerKey,
        id: u8,
        payload: Bytes,
        now: Instant,
    ) -> Result<(), String> {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Ok(());
        };
        if !p.early.extensions {
            return Err("extended message without the extension bit".into());
        }
        if id == 0 {
            let hs = ExtendedHandshake::decode(&payload).map_err(|e| e.to_string())?;
            let their_id = hs.extension_id("ut_metadata");
            let size = hs.metadata_size;
            p.early.ext = Some(hs);
            p.metadata_id = None;
            if let (Some(their_id), Some(size)) = (their_id, size) {
                p.metadata_size = Some(size);
                if self.done.is_none() {
                    // A size out of range, or other than the one the fetch
                    // took from an earlier peer: dropped (if that earlier
                    // peer lied, the hash tells, and the fetch starts over
                    // with the sizes of the peers still here).
                    self.fetch
                        .handle_peer(true, Some(size))
                        .map_err(|e| e.to_string())?;
                }
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.metadata_id = Some(their_id);
                }
                self.request_from(peer, now);
            }
            return Ok(());
        }
        if id == extension::UT_PEX_ID {
            if self.config.pex {
                if let Ok(msg) = essaim_wire::pex::PexMessage::decode(&payload) {
                    let found = filter_added(&msg, p.early.ip);
                    if !found.is_empty() {
                        self.out.push_back(Output::PeersDiscovered(found));
                    }
                }
            }
            return Ok(());
        }
        if id != extension::UT_METADATA_ID {
            return Ok(()); // not advertised: ignored
        }
        let reply = match MetadataMessage::decode(&payload) {
            Ok(r) => r,
            Err(extension::ExtensionError::UnknownMessageType(_)) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        match reply {
            MetadataMessage::Request { piece } => {
                let their_id = p
                    .early
                    .ext
                    .as_ref()
                    .and_then(|e| e.extension_id("ut_metadata"));
                if let Some(their_id) = their_id {
                    let answer = metadata_answer(self.done.as_ref(), piece);
                    self.send(
                        peer,
                        Message::Extended {
                            id: their_id,
                            payload: Bytes::from(answer.encode()),
                        },
                    );
                }
            }
            MetadataMessage::Reject { piece } => {
                p.refused = true;
                p.requested.retain(|(x, _)| *x != piece);
                self.fetch.release(peer, Some(piece));
                self.request_all(now);
            }
            MetadataMessage::Data {
                piece,
                total_size,
                data,
            } => {
                if self.done.is_some() {
                    return Ok(()); // late: another peer's copy won
                }
                p.requested.retain(|(x, _)| *x != piece);
                self.fetch
                    .handle_data(peer, piece, total_size, &data)
                    .map_err(|e| e.to_string())?;
                let liars = self.fetch.take_liars();
                if !liars.is_empty() {
                    for liar in liars {
                        if self.peers.remove(&liar).is_some() {
                            self.disconnect(liar, DisconnectReason::Banned);
                        }
                    }
                    // The fetch starts over with the size of the peers left.
                    let sizes: Vec<u64> = self
                        .peers
                        .values()
                        .filter(|p| p.metadata_id.is_some())
                        .filter_map(|p| p.metadata_size)
                        .collect();
                    for size in sizes {
                        let _ = self.fetch.handle_peer(true, Some(size));
                    }
                } else if let Some(done) = self.fetch.result().cloned() {
                    self.done = Some(done.clone());
                    self.out.push_back(Output::MetadataReceived(done));
                    return Ok(());
                }
                self.request_all(now);
            }
        }
        Ok(())
    }

    fn request_all(&mut self, now: Instant) {
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.request_from(k, now);
        }
    }

    /// Asks `peer` for metadata pieces, up to [`REQUESTS_PER_PEER`].
    fn request_from(&mut self, peer: PeerKey, now: Instant) {
        if self.done.is_some() {
            return;
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(their_id) = p.metadata_id.filter(|_| !p.refused) else {
            return;
        };
        let mut msgs = Vec::new();
        while p.requested.len() < REQUESTS_PER_PEER {
            let Some(piece) = self.fetch.next_request(peer, now) else {
                break;
            };
            p.requested.push((piece, now));
            msgs.push(Message::Extended {
                id: their_id,
                payload: Bytes::from(MetadataMessage::Request { piece }.encode()),
            });
        }
        for m in msgs {
            self.send(peer, m);
        }
    }
}

/// Our answer to a metadata request (BEP 9): the piece, or a reject when we
/// have no metadata or the piece is past its end.
pub(crate) fn metadata_answer(metadata: Option<&Bytes>, piece: u32) -> MetadataMessage {
    let Some(m) = metadata else {
        return MetadataMessage::Reject { piece };
    };
    let start = piece as usize * extension::METADATA_PIECE_SIZE;
    if start >= m.len() {
        return MetadataMessage::Reject { piece };
    }
    let end = (start + extension::METADATA_PIECE_SIZE).min(m.len());
    MetadataMessage::Data {
        piece,
        total_size: m.len() as u64,
        data: m.slice(start..end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    fn config() -> MagnetConfig {
        MagnetConfig {
            client: "test".into(),
            listen_port: Some(6881),
            pex: true,
            dht_port: Some(6881),
        }
    }

    fn info(len: usize) -> (Bytes, InfoHash) {
        let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
        let hash = InfoHash(Sha1::digest(&data).into());
        (Bytes::from(data), hash)
    }

    fn drain(m: &mut MagnetPhase) -> Vec<Output> {
        std::iter::from_fn(|| m.poll_output()).collect()
    }

    fn ext_hs(size: Option<u64>) -> Message {
        let hs = ExtendedHandshake {
            extensions: vec![("ut_metadata".into(), 7)],
            metadata_size: size,
            ..ExtendedHandshake::default()
        };
        Message::Extended {
            id: 0,
            payload: Bytes::from(hs.encode()),
        }
    }

    /// The pieces requested in `outs`, per peer.
    fn requests(outs: &[Output]) -> Vec<(PeerKey, u32)> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Send {
                    peer,
                    msg: Message::Extended { id: 7, payload },
                } => match MetadataMessage::decode(payload) {
                    Ok(MetadataMessage::Request { piece }) => Some((*peer, piece)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn data(info: &Bytes, piece: u32) -> Message {
        let start = piece as usize * extension::METADATA_PIECE_SIZE;
        let end = (start + extension::METADATA_PIECE_SIZE).min(info.len());
        Message::Extended {
            id: extension::UT_METADATA_ID,
            payload: Bytes::from(
                MetadataMessage::Data {
                    piece,
                    total_size: info.len() as u64,
                    data: info.slice(start..end),
                }
                .encode(),
            ),
        }
    }

    #[test]
    fn opening_says_we_have_nothing() {
        let (_, hash) = info(10);
        let mut m = MagnetPhase::new(hash, config());
        m.handle_peer_connected(1, true, true, None);
        m.handle_peer_connected(2, false, false, None);
        m.handle_peer_dht(2);
        let outs = drain(&mut m);
        assert!(matches!(
            &outs[0],
            Output::Send {
                peer: 1,
                msg: Message::HaveNone
            }
        ));
        match &outs[1] {
            Output::Send {
                peer: 1,
                msg: Message::Extended { id: 0, payload },
            } => {
                let hs = ExtendedHandshake::decode(payload).unwrap();
                assert_eq!(hs.extension_id("ut_metadata"), Some(1));
                assert_eq!(hs.extension_id("ut_pex"), Some(2));
                assert_eq!(hs.metadata_size, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &outs[2],
            Output::Send {
                peer: 2,
                msg: Message::Port(6881)
            }
        ));
        assert_eq!(outs.len(), 3, "no bitfield without the fast extension");
    }

    #[test]
    fn fetches_from_several_peers_and_keeps_what_they_said() {
        let (info, hash) = info(70_000); // 5 pieces
        let now = Instant::now();
        let mut m = MagnetPhase::new(hash, config());
        for k in [1, 2] {
            m.handle_peer_connected(k, true, true, None);
        }
        drain(&mut m);
        m.handle_message(1, Message::Bitfield(Bytes::from_static(&[0xff, 0xc0])), now);
        m.handle_message(1, Message::Have { piece: 9 }, now);
        m.handle_message(2, Message::HaveAll, now);
        m.handle_message(2, Message::Unchoke, now);
        m.handle_message(1, ext_hs(Some(70_000)), now);
        m.handle_message(2, ext_hs(Some(70_000)), now);
        let reqs = requests(&drain(&mut m));
        assert_eq!(reqs, [(1, 0), (1, 1), (1, 2), (1, 3), (2, 4)]);
        for (peer, piece) in reqs {
            m.handle_message(peer, data(&info, piece), now);
        }
        let outs = drain(&mut m);
        assert!(
            matches!(&outs[..], [Output::MetadataReceived(b)] if *b == info),
            "{outs:?}"
        );
        assert_eq!(m.metadata(), Some(&info));
        let peers = m.into_peers();
        let (k1, p1) = &peers[0];
        assert_eq!(*k1, 1);
        let bits = p1.bitfield(10).unwrap().unwrap();
        assert!(bits.is_full());
        assert!(p1.bitfield(8).is_err(), "bitfield of the wrong length");
        assert!(p1.bitfield(9).is_err(), "spare bits set");
        let (_, p2) = &peers[1];
        assert!(!p2.peer_choking);
        assert!(p2.bitfield(3).unwrap().unwrap().is_full());
        // The `have` counts on top of the bitfield; alone it makes one.
        let mut with_have = p1.clone();
        with_have.pieces = EarlyPieces::Unknown;
        let got = with_have.bitfield(12).unwrap().unwrap();
        assert_eq!(got.iter_set().collect::<Vec<_>>(), [9]);
        assert!(with_have.bitfield(9).is_err(), "have 9 of 9 pieces");
        with_have.haves.clear();
        assert_eq!(with_have.bitfield(9), Ok(None), "said nothing");
    }

    #[test]
    fn liars_are_banned_and_the_fetch_starts_over() {
        let (info, hash) = info(20_000); // 2 pieces
        let now = Instant::now();
        let mut m = MagnetPhase::new(hash, config());
        m.handle_peer_connected(1, false, true, None);
        m.handle_peer_connected(2, false, true, None);
        m.handle_message(1, ext_hs(Some(20_000)), now);
        let reqs = requests(&drain(&mut m));
        assert_eq!(reqs, [(1, 0), (1, 1)]);
        m.handle_message(2, ext_hs(Some(20_000)), now);
        assert!(requests(&drain(&mut m)).is_empty(), "all asked of peer 1");
        // Peer 1 sends garbage of the right length.
        let bad = Bytes::from(vec![0u8; 20_000]);
        for p in [0, 1] {
            m.handle_message(1, data(&bad, p), now);
        }
        let outs = drain(&mut m);
        assert!(outs.iter().any(|o| matches!(
            o,
            Output::Disconnect {
                peer: 1,
                reason: DisconnectReason::Banned
            }
        )));
        let reqs = requests(&outs);
        assert_eq!(reqs, [(2, 0), (2, 1)], "peer 2 is asked now");
        for (peer, piece) in reqs {
            m.handle_message(peer, data(&info, piece), now);
        }
        assert!(drain(&mut m)
            .iter()
            .any(|o| matches!(o, Output::MetadataReceived(_))));
        assert_eq!(m.peer_count(), 1);
    }

    #[test]
    fn hostile_sizes_and_haves_drop_the_peer() {
        let (_, hash) = info(100);
        let now = Instant::now();
        let mut m = MagnetPhase::new(hash, config());
        for k in 1..=4 {
            m.handle_peer_connected(k, false, true, None);
        }
        m.handle_message(1, ext_hs(Some(0)), now);
        m.handle_message(2, ext_hs(Some(MAX_METADATA_SIZE + 1)), now);
        m.handle_message(3, Message::Have { piece: MAX_PIECES }, now);
        m.handle_message(4, Message::HaveAll, now);
        let dropped: Vec<PeerKey> = drain(&mut m)
            .into_iter()
            .filter_map(|o| match o {
                Output::Disconnect { peer, .. } => Some(peer),
                _ => None,
            })
            .collect();
        assert_eq!(dropped, [1, 2, 3, 4]);
        assert_eq!(m.peer_count(), 0);
    }

    #[test]
    fn a_reject_sends_the_piece_elsewhere_and_timeouts_retry() {
        let (info, hash) = info(100);
        let now = Instant::now();
        let mut m = MagnetPhase::new(hash, config());
        m.handle_peer_connected(1, false, true, None);
        m.handle_peer_connected(2, false, true, None);
        m.handle_message(1, ext_hs(Some(100)), now);
        m.handle_message(2, ext_hs(Some(100)), now);
        assert_eq!(requests(&drain(&mut m)), [(1, 0)]);
        let reject = Message::Extended {
            id: extension::UT_METADATA_ID,
            payload: Bytes::from(MetadataMessage::Reject { piece: 0 }.encode()),
        };
        m.handle_message(1, reject, now);
        assert_eq!(requests(&drain(&mut m)), [(2, 0)]);
        // Peer 2 never answers: after the timeout, nobody else is left
        // who has it but peer 2 itself, asked again.
        m.handle_tick(now + REQUEST_TIMEOUT);
        assert_eq!(requests(&drain(&mut m)), [(2, 0)]);
        m.handle_message(2, data(&info, 0), now + REQUEST_TIMEOUT);
        assert!(m.metadata().is_some());
        assert!(matches!(&drain(&mut m)[..], [Output::MetadataReceived(_)]));
        // Now we serve it.
        m.handle_peer_connected(3, false, true, None);
        let outs = drain(&mut m);
        match &outs[0] {
            Output::Send {
                msg: Message::Extended { id: 0, payload },
                ..
            } => {
                let hs = ExtendedHandshake::decode(payload).unwrap();
                assert_eq!(hs.metadata_size, Some(100));
            }
            other => panic!("{other:?}"),
        }
        m.handle_message(3, ext_hs(None), now);
        let ask = Message::Extended {
            id: extension::UT_METADATA_ID,
            payload: Bytes::from(MetadataMessage::Request { piece: 0 }.encode()),
        };
        m.handle_message(3, ask, now);
        let outs = drain(&mut m);
        match &outs[..] {
            [Output::Send {
                peer: 3,
                msg: Message::Extended { id: 7, payload },
            }] => assert!(matches!(
                MetadataMessage::decode(payload),
                Ok(MetadataMessage::Data { piece: 0, .. })
            )),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn block_requests_are_refused_while_we_have_nothing() {
        let (_, hash) = info(100);
        let now = Instant::now();
        let mut m = MagnetPhase::new(hash, config());
        m.handle_peer_connected(1, true, false, None);
        m.handle_peer_connected(2, false, false, None);
        drain(&mut m);
        let req = essaim_wire::peer::BlockRequest {
            piece: 0,
            begin: 0,
            length: 16384,
        };
        m.handle_message(1, Message::Request(req), now);
        m.handle_message(2, Message::Request(req), now);
        let outs = drain(&mut m);
        assert!(matches!(
            &outs[..],
            [Output::Send {
                peer: 1,
                msg: Message::Reject(_)
            }]
        ));
        m.handle_message(2, ext_hs(Some(100)), now);
        assert!(
            matches!(&drain(&mut m)[..], [Output::Disconnect { peer: 2, .. }]),
            "extended message without the bit"
        );
    }
}
