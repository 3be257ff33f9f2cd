//! KRPC, the DHT's message format (BEP 5 §"KRPC Protocol"): one bencoded
//! dictionary per UDP packet, a query (`y` = `q`), a response (`r`) or an
//! error (`e`), echoing the transaction id `t`.
//!
//! Decoding is strict, as for every input from the network:
//! - the packet must be at most [`MAX_PACKET_LEN`] bytes and a single valid
//!   bencoded dictionary (the policy of `essaim_core::bencode`: depth,
//!   lengths, integers, repeated keys);
//! - every field we read is checked for its type and size (ids 20 bytes,
//!   `nodes` a multiple of 26, `values` entries 6 or 18 bytes, ports in
//!   range, transaction ids and tokens short); a wrong field makes the whole
//!   packet invalid — there is no partial reading;
//! - unknown keys are ignored (extensions add keys), unknown query methods
//!   are an error the caller may answer with 204.
//!
//! When a packet is a query whose envelope (`t`, `y`) is valid but whose
//! arguments are not, the error carries the transaction id so the node can
//! answer with error 203.
//!
//! Extensions read and written here: `v` (client version), `ro` (BEP 43
//! read-only), top-level `ip` (BEP 42), `nodes6` and `want` (BEP 32), and
//! 18-byte IPv6 entries in `values`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use essaim_core::bencode::{self, DecodeError, Value};
use essaim_core::{InfoHash, OwnedValue};

use crate::id::NodeId;

/// Largest packet decoded; anything longer is dropped unread.
pub const MAX_PACKET_LEN: usize = 2048;
/// Longest transaction id accepted (ours are 4 bytes, most clients use 2).
pub const MAX_TID_LEN: usize = 16;
/// Longest write token accepted (ours are 8 bytes).
pub const MAX_TOKEN_LEN: usize = 64;
/// Longest `v` accepted (BEP 5: two bytes of client id, two of version).
pub const MAX_VERSION_LEN: usize = 16;
/// Bytes of one IPv4 "compact node info".
pub const COMPACT_NODE_V4: usize = 26;
/// Bytes of one IPv6 compact node info (BEP 32).
pub const COMPACT_NODE_V6: usize = 38;

/// The error codes of BEP 5 §"Errors".
pub mod error_code {
    pub const GENERIC: i64 = 201;
    pub const SERVER: i64 = 202;
    pub const PROTOCOL: i64 = 203;
    pub const METHOD_UNKNOWN: i64 = 204;
}

/// One KRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `t`: chosen by the querier, echoed in the response.
    pub tid: Vec<u8>,
    /// `v`: the sender's client and version, when it says.
    pub version: Option<Vec<u8>>,
    /// `ro` = 1: the querier is a read-only node (BEP 43).
    pub read_only: bool,
    /// Top-level `ip` (BEP 42): the address the responder saw us at.
    pub ip: Option<SocketAddr>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Query(Query),
    Response(Response),
    Error(KrpcError),
}

/// The four queries of BEP 5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Ping {
        id: NodeId,
    },
    FindNode {
        id: NodeId,
        target: NodeId,
        want: Option<Want>,
    },
    GetPeers {
        id: NodeId,
        info_hash: InfoHash,
        want: Option<Want>,
    },
    AnnouncePeer {
        id: NodeId,
        info_hash: InfoHash,
        port: u16,
        /// Use the packet's source port instead of `port`.
        implied_port: bool,
        token: Vec<u8>,
    },
}

impl Query {
    /// The querying node's id.
    pub fn id(&self) -> NodeId {
        match self {
            Query::Ping { id }
            | Query::FindNode { id, .. }
            | Query::GetPeers { id, .. }
            | Query::AnnouncePeer { id, .. } => *id,
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            Query::Ping { .. } => "ping",
            Query::FindNode { .. } => "find_node",
            Query::GetPeers { .. } => "get_peers",
            Query::AnnouncePeer { .. } => "announce_peer",
        }
    }
}

/// BEP 32 `want`: which node lists the querier asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    pub n4: bool,
    pub n6: bool,
}

/// A response. KRPC responses do not name their query, so this holds the
/// union of the fields; the querier knows what it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: NodeId,
    /// `nodes`: IPv4 compact node info.
    pub nodes: Vec<NodeInfo>,
    /// `nodes6`: IPv6 compact node info (BEP 32).
    pub nodes6: Vec<NodeInfo>,
    /// `values`: compact peer info (6 or 18 bytes each).
    pub values: Vec<SocketAddr>,
    pub token: Option<Vec<u8>>,
}

impl Response {
    /// A response carrying only the responder's id (ping, announce_peer).
    pub fn id_only(id: NodeId) -> Self {
        Response {
            id,
            nodes: Vec::new(),
            nodes6: Vec::new(),
            values: Vec::new(),
            token: None,
        }
    }
}

/// An error message (`e`: code and text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KrpcError {
    pub code: i64,
    pub message: Vec<u8>,
}

/// A node's id and address ("compact node info").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// Why a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("packet of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error(transparent)]
    Bencode(#[from] DecodeError),
    #[error("field `{field}`: {problem}")]
    Field {
        field: &'static str,
        problem: &'static str,
    },
    #[error("unknown query method")]
    UnknownMethod,
}

/// A refused packet. `query_tid` is set when the packet was recognisably a
/// query (valid `t` and `y` = `q`), so that an error can be sent back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid KRPC message: {kind}")]
pub struct KrpcDecodeError {
    pub kind: ErrorKind,
    pub query_tid: Option<Vec<u8>>,
}

impl From<ErrorKind> for KrpcDecodeError {
    fn from(kind: ErrorKind) -> Self {
        KrpcDecodeError {
            kind,
            query_tid: None,
        }
    }
}

fn bad(field: &'static str, problem: &'static str) -> ErrorKind {
    ErrorKind::Field { field, problem }
}

type Dict<'v, 'a> = &'v [(&'a [u8], Value<'a>)];

fn lookup<'v, 'a>(dict: Dict<'v, 'a>, key: &[u8]) -> Option<&'v Value<'a>> {
    dict.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn opt_bytes<'a>(dict: Dict<'_, 'a>, key: &'static str) -> Result<Option<&'a [u8]>, ErrorKind> {
    match lookup(dict, key.as_bytes()) {
        None => Ok(None),
        Some(v) => v
            .as_bytes()
            .map(Some)
            .ok_or_else(|| bad(key, "not a string")),
    }
}

fn req_bytes<'a>(dict: Dict<'_, 'a>, key: &'static str) -> Result<&'a [u8], ErrorKind> {
    opt_bytes(dict, key)?.ok_or_else(|| bad(key, "missing"))
}

fn opt_int(dict: Dict<'_, '_>, key: &'static str) -> Result<Option<i64>, ErrorKind> {
    match lookup(dict, key.as_bytes()) {
        None => Ok(None),
        Some(v) => v
            .as_int()
            .map(Some)
            .ok_or_else(|| bad(key, "not an integer")),
    }
}

fn req_id(dict: Dict<'_, '_>, key: &'static str) -> Result<NodeId, ErrorKind> {
    NodeId::from_bytes(req_bytes(dict, key)?).ok_or_else(|| bad(key, "not 20 bytes"))
}

fn bounded(b: &[u8], max: usize, field: &'static str) -> Result<Vec<u8>, ErrorKind> {
    if b.is_empty() || b.len() > max {
        return Err(bad(field, "empty or too long"));
    }
    Ok(b.to_vec())
}

/// Decodes one packet.
pub fn decode(packet: &[u8]) -> Result<Message, KrpcDecodeError> {
    if packet.len() > MAX_PACKET_LEN {
        return Err(ErrorKind::TooLarge(packet.len()).into());
    }
    let value = bencode::decode(packet).map_err(ErrorKind::from)?;
    let dict = value.as_dict().ok_or(bad("message", "not a dictionary"))?;
    let tid = bounded(req_bytes(dict, "t")?, MAX_TID_LEN, "t")?;
    let y = req_bytes(dict, "y")?;
    let is_query = y == b"q";
    decode_fields(dict, tid.clone(), y).map_err(|kind| KrpcDecodeError {
        kind,
        query_tid: is_query.then_some(tid),
    })
}

fn decode_fields(dict: Dict<'_, '_>, tid: Vec<u8>, y: &[u8]) -> Result<Message, ErrorKind> {
    let version = opt_bytes(dict, "v")?
        .map(|v| bounded(v, MAX_VERSION_LEN, "v"))
        .transpose()?;
    let read_only = opt_int(dict, "ro")?.is_some_and(|ro| ro != 0);
    let ip = opt_bytes(dict, "ip")?
        .map(|b| decode_peer(b).ok_or(bad("ip", "not 6 or 18 bytes")))
        .transpose()?;
    let body = match y {
        b"q" => Body::Query(decode_query(dict)?),
        b"r" => Body::Response(decode_response(dict)?),
        b"e" => Body::Error(decode_error(dict)?),
        _ => return Err(bad("y", "not q, r or e")),
    };
    Ok(Message {
        tid,
        version,
        read_only,
        ip,
        body,
    })
}

fn decode_query(dict: Dict<'_, '_>) -> Result<Query, ErrorKind> {
    let method = req_bytes(dict, "q")?;
    let args = lookup(dict, b"a")
        .ok_or(bad("a", "missing"))?
        .as_dict()
        .ok_or(bad("a", "not a dictionary"))?;
    let id = req_id(args, "id")?;
    Ok(match method {
        b"ping" => Query::Ping { id },
        b"find_node" => Query::FindNode {
            id,
            target: req_id(args, "target")?,
            want: decode_want(args)?,
        },
        b"get_peers" => Query::GetPeers {
            id,
            info_hash: InfoHash(req_id(args, "info_hash")?.0),
            want: decode_want(args)?,
        },
        b"announce_peer" => {
            let implied_port = opt_int(args, "implied_port")?.is_some_and(|i| i != 0);
            let port = opt_int(args, "port")?.ok_or(bad("port", "missing"))?;
            let port = u16::try_from(port).map_err(|_| bad("port", "out of range"))?;
            if port == 0 && !implied_port {
                return Err(bad("port", "zero"));
            }
            Query::AnnouncePeer {
                id,
                info_hash: InfoHash(req_id(args, "info_hash")?.0),
                port,
                implied_port,
                token: bounded(req_bytes(args, "token")?, MAX_TOKEN_LEN, "token")?,
            }
        }
        _ => return Err(ErrorKind::UnknownMethod),
    })
}

fn decode_want(args: Dict<'_, '_>) -> Result<Option<Want>, ErrorKind> {
    let Some(v) = lookup(args, b"want") else {
        return Ok(None);
    };
    let list = v.as_list().ok_or(bad("want", "not a list"))?;
    let mut want = Want::default();
    for item in list {
        match item.as_bytes().ok_or(bad("want", "entry not a string"))? {
            b"n4" => want.n4 = true,
            b"n6" => want.n6 = true,
            _ => {} // BEP 32: other strings are ignored.
        }
    }
    Ok(Some(want))
}

fn decode_response(dict: Dict<'_, '_>) -> Result<Response, ErrorKind> {
    let r = lookup(dict, b"r")
        .ok_or(bad("r", "missing"))?
        .as_dict()
        .ok_or(bad("r", "not a dictionary"))?;
    let nodes = match opt_bytes(r, "nodes")? {
        Some(b) => decode_nodes(b, false).ok_or(bad("nodes", "not a multiple of 26 bytes"))?,
        None => Vec::new(),
    };
    let nodes6 = match opt_bytes(r, "nodes6")? {
        Some(b) => decode_nodes(b, true).ok_or(bad("nodes6", "not a multiple of 38 bytes"))?,
        None => Vec::new(),
    };
    let values = match lookup(r, b"values") {
        None => Vec::new(),
        Some(v) => v
            .as_list()
            .ok_or(bad("values", "not a list"))?
            .iter()
            .map(|p| {
                p.as_bytes()
                    .and_then(decode_peer)
                    .ok_or(bad("values", "entry not 6 or 18 bytes"))
            })
            .collect::<Result<_, _>>()?,
    };
    let token = opt_bytes(r, "token")?
        .map(|t| bounded(t, MAX_TOKEN_LEN, "token"))
        .transpose()?;
    Ok(Response {
        id: req_id(r, "id")?,
        nodes,
        nodes6,
        values,
        token,
    })
}

fn decode_error(dict: Dict<'_, '_>) -> Result<KrpcError, ErrorKind> {
    let list = lookup(dict, b"e")
        .ok_or(bad("e", "missing"))?
        .as_list()
        .ok_or(bad("e", "not a list"))?;
    match list {
        [code, message] => Ok(KrpcError {
            code: code.as_int().ok_or(bad("e", "code not an integer"))?,
            message: message
                .as_bytes()
                .ok_or(bad("e", "message not a string"))?
                .to_vec(),
        }),
        _ => Err(bad("e", "not [code, message]")),
    }
}

/// Compact peer info: 4-byte IPv4 or 16-byte IPv6 address, then the port,
/// all big-endian.
pub fn encode_peer(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Reads 6 bytes (IPv4) or 18 bytes (IPv6) of compact peer info.
pub fn decode_peer(b: &[u8]) -> Option<SocketAddr> {
    let port = |p: &[u8]| u16::from_be_bytes([p[0], p[1]]);
    match b.len() {
        6 => {
            let ip: [u8; 4] = b[..4].try_into().ok()?;
            Some(SocketAddr::new(Ipv4Addr::from(ip).into(), port(&b[4..])))
        }
        18 => {
            let ip: [u8; 16] = b[..16].try_into().ok()?;
            Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port(&b[16..])))
        }
        _ => None,
    }
}

/// Concatenated compact node info; `v6` selects 38-byte entries (the
/// addresses of the other family are left out).
pub fn encode_nodes(nodes: &[NodeInfo], v6: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(nodes.len() * COMPACT_NODE_V6);
    for n in nodes.iter().filter(|n| n.addr.is_ipv6() == v6) {
        out.extend_from_slice(&n.id.0);
        encode_peer(&n.addr, &mut out);
    }
    out
}

/// Splits a `nodes` (26-byte entries) or `nodes6` (38-byte) string; `None`
/// when its length is not a multiple of the entry size.
pub fn decode_nodes(b: &[u8], v6: bool) -> Option<Vec<NodeInfo>> {
    let size = if v6 { COMPACT_NODE_V6 } else { COMPACT_NODE_V4 };
    if !b.len().is_multiple_of(size) {
        return None;
    }
    b.chunks_exact(size)
        .map(|c| {
            Some(NodeInfo {
                id: NodeId::from_bytes(&c[..20])?,
                addr: decode_peer(&c[20..])?,
            })
        })
        .collect()
}

impl Message {
    /// Encodes the message (keys sorted, as bencode requires).
    pub fn encode(&self) -> Vec<u8> {
        let mut d = OwnedValue::dict().with("t", self.tid.clone());
        if let Some(v) = &self.version {
            d.insert("v", v.clone());
        }
        if self.read_only {
            d.insert("ro", 1);
        }
        if let Some(ip) = &self.ip {
            let mut b = Vec::new();
            encode_peer(ip, &mut b);
            d.insert("ip", b);
        }
        match &self.body {
            Body::Query(q) => {
                d.insert("y", "q");
                d.insert("q", q.method());
                d.insert("a", encode_args(q));
            }
            Body::Response(r) => {
                d.insert("y", "r");
                d.insert("r", encode_response(r));
            }
            Body::Error(e) => {
                d.insert("y", "e");
                d.insert(
                    "e",
                    vec![
                        OwnedValue::Int(e.code),
                        OwnedValue::Bytes(e.message.clone()),
                    ],
                );
            }
        }
        d.encode()
    }
}

fn encode_want(a: &mut OwnedValue, want: &Option<Want>) {
    if let Some(w) = want {
        let mut l = Vec::new();
        if w.n4 {
            l.push(OwnedValue::from("n4"));
        }
        if w.n6 {
            l.push(OwnedValue::from("n6"));
        }
        a.insert("want", l);
    }
}

fn encode_args(q: &Query) -> OwnedValue {
    let mut a = OwnedValue::dict().with("id", &q.id().0[..]);
    match q {
        Query::Ping { .. } => {}
        Query::FindNode { target, want, .. } => {
            a.insert("target", &target.0[..]);
            encode_want(&mut a, want);
        }
        Query::GetPeers {
            info_hash, want, ..
        } => {
            a.insert("info_hash", &info_hash.0[..]);
            encode_want(&mut a, want);
        }
        Query::AnnouncePeer {
            info_hash,
            port,
            implied_port,
            token,
            ..
        } => {
            a.insert("info_hash", &info_hash.0[..]);
            a.insert("port", i64::from(*port));
            if *implied_port {
                a.insert("implied_port", 1);
            }
            a.insert("token", token.clone());
        }
    }
    a
}

fn encode_response(r: &Response) -> OwnedValue {
    let mut d = OwnedValue::dict().with("id", &r.id.0[..]);
    if !r.nodes.is_empty() {
        d.insert("nodes", encode_nodes(&r.nodes, false));
    }
    if !r.nodes6.is_empty() {
        d.insert("nodes6", encode_nodes(&r.nodes6, true));
    }
    if !r.values.is_empty() {
        let values = r
            .values
            .iter()
            .map(|p| {
                let mut b = Vec::with_capacity(18);
                encode_peer(p, &mut b);
                OwnedValue::Bytes(b)
            })
            .collect::<Vec<_>>();
        d.insert("values", values);
    }
    if let Some(t) = &r.token {
        d.insert("token", t.clone());
    }
    d
}
