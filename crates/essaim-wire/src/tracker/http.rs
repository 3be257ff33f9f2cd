//! HTTP tracker formats: the announce query and its bencoded reply (BEP 3
//! §trackers), compact peers (BEP 23), `peers6` (BEP 7), and scrape (BEP 48),
//! for both sides: the client ([`AnnounceRequest::to_url`],
//! [`parse_announce_response`], [`scrape_url`], [`parse_scrape_response`])
//! and our own tracker ([`parse_announce_query`], [`parse_scrape_query`],
//! [`encode_announce_response`], [`encode_scrape`], [`encode_failure`]).
//!
//! Rules chosen for what the BEPs leave open, all lenient where leniency is
//! harmless and strict where it is not:
//! - trailing bytes after the reply's dictionary are ignored (some trackers
//!   append a newline); the reply must be a dictionary holding `interval` or
//!   `peers`, or a `failure reason`;
//! - `interval` is passed through [`sanitize_interval`]; `min interval` is
//!   kept only if non-negative and is capped at the interval;
//! - compact `peers`/`peers6` whose length is not a multiple of 6/18 keep
//!   their whole entries and ignore the partial tail; in the non-compact list,
//!   entries whose `ip` is not a literal address (a DNS name) are skipped;
//!   peers on port 0 or the unspecified address are dropped; at most
//!   [`MAX_PEERS`] are kept;
//! - in queries `+` is a literal plus (RFC 3986), not a space: binary
//!   info-hashes must not be mangled; queries longer than [`MAX_QUERY_LEN`]
//!   are refused before anything is decoded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use essaim_core::bencode::{self, DecodeError, OwnedValue, Value};
use essaim_core::magnet::percent_encode;
use essaim_core::{InfoHash, PeerId};

use super::{bounded_text, compact_v4, compact_v6, push_peer, sanitize_interval, Event};
use super::{MAX_PEERS, MAX_TEXT};

/// Longest announce or scrape query our tracker parses, in bytes.
pub const MAX_QUERY_LEN: usize = 8192;
/// Most info-hashes taken from one scrape query.
pub const MAX_SCRAPE_HASHES: usize = 100;
/// Most entries kept from one scrape reply.
pub const MAX_SCRAPE_ENTRIES: usize = 10_000;

/// What went wrong with a tracker message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// The tracker answered with a `failure reason` (BEP 3).
    #[error("tracker failure: {0}")]
    Failure(String),
    /// The reply is not bencode.
    #[error("tracker reply is not bencode: {0}")]
    Bencode(#[from] DecodeError),
    /// The reply is bencode but not a dictionary.
    #[error("tracker reply is not a dictionary")]
    NotADict,
    /// The reply lacks a required key.
    #[error("tracker reply lacks `{0}`")]
    MissingField(&'static str),
    /// The query is longer than [`MAX_QUERY_LEN`].
    #[error("query longer than {MAX_QUERY_LEN} bytes")]
    QueryTooLong,
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding in the query")]
    BadEncoding,
    /// A required query parameter is missing.
    #[error("query parameter `{0}` is missing")]
    MissingParam(&'static str),
    /// A query parameter has a value we cannot use.
    #[error("query parameter `{0}` is invalid")]
    InvalidParam(&'static str),
}

/// An announce, as a client sends it (BEP 3 §trackers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// The port we accept peer connections on.
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Option<Event>,
    pub numwant: Option<u32>,
    /// BEP 7 `key`: lets the tracker match our announces across addresses.
    pub key: Option<u32>,
    /// The `tracker id` a previous reply gave (BEP 3), sent back verbatim.
    pub tracker_id: Option<String>,
    /// Ask for the compact format (BEP 23; advisory, we parse both).
    pub compact: bool,
}

impl AnnounceRequest {
    /// The full GET URL: `announce_url` plus the query, joined with `&` if
    /// the URL already has a query. Binary fields are percent-encoded; a
    /// fragment in `announce_url` is dropped.
    pub fn to_url(&self, announce_url: &str) -> String {
        let base = announce_url.split('#').next().unwrap_or(announce_url);
        let mut url = String::with_capacity(base.len() + 256);
        url.push_str(base);
        match base.find('?') {
            None => url.push('?'),
            Some(_) if base.ends_with('?') || base.ends_with('&') => {}
            Some(_) => url.push('&'),
        }
        // `write!` into a String cannot fail.
        let _ = write!(
            url,
            "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact={}",
            percent_encode(&self.info_hash.0),
            percent_encode(&self.peer_id.0),
            self.port,
            self.uploaded,
            self.downloaded,
            self.left,
            u8::from(self.compact),
        );
        if let Some(event) = self.event {
            let _ = write!(url, "&event={}", event.as_str());
        }
        if let Some(n) = self.numwant {
            let _ = write!(url, "&numwant={n}");
        }
        if let Some(key) = self.key {
            let _ = write!(url, "&key={key:08X}");
        }
        if let Some(id) = &self.tracker_id {
            let _ = write!(url, "&trackerid={}", percent_encode(id.as_bytes()));
        }
        url
    }
}

/// A successful announce reply (BEP 3, BEP 23, BEP 7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceResponse {
    /// Seconds until the next regular announce, sanitized.
    pub interval: u32,
    /// Seconds the tracker wants between any two announces, ≤ `interval`.
    pub min_interval: Option<u32>,
    pub tracker_id: Option<String>,
    /// Seeders.
    pub complete: Option<u32>,
    /// Leechers.
    pub incomplete: Option<u32>,
    /// IPv4 and IPv6 peers, at most [`MAX_PEERS`].
    pub peers: Vec<SocketAddr>,
    pub warning: Option<String>,
}

/// Parses an announce reply body. A `failure reason` becomes
/// [`TrackerError::Failure`].
pub fn parse_announce_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let root = decode_dict(body)?;
    let interval_raw = root.get(b"interval").and_then(Value::as_int);
    if interval_raw.is_none() && root.get(b"peers").is_none() {
        return Err(TrackerError::MissingField("interval"));
    }
    let interval = sanitize_interval(interval_raw);
    let min_interval = root
        .get(b"min interval")
        .and_then(Value::as_int)
        .and_then(|m| u32::try_from(m).ok())
        .map(|m| m.min(interval));
    let text = |key: &[u8]| root.get(key).and_then(Value::as_bytes).map(bounded_text);
    let count = |key: &[u8]| {
        root.get(key)
            .and_then(Value::as_int)
            .and_then(|i| u32::try_from(i).ok())
    };
    let mut peers = Vec::new();
    if let Some(v) = root.get(b"peers") {
        if let Some(bytes) = v.as_bytes() {
            compact_v4(bytes, &mut peers, MAX_PEERS);
        } else if let Some(list) = v.as_list() {
            dict_peers(list, &mut peers);
        }
    }
    if let Some(bytes) = root.get(b"peers6").and_then(Value::as_bytes) {
        compact_v6(bytes, &mut peers, MAX_PEERS);
    }
    Ok(AnnounceResponse {
        interval,
        min_interval,
        tracker_id: text(b"tracker id"),
        complete: count(b"complete"),
        incomplete: count(b"incomplete"),
        peers,
        warning: text(b"warning message"),
    })
}

/// The non-compact peer list (BEP 3): dictionaries with `ip` and `port`.
fn dict_peers(list: &[Value<'_>], peers: &mut Vec<SocketAddr>) {
    for entry in list {
        if peers.len() >= MAX_PEERS {
            return;
        }
        let ip = entry.get(b"ip").and_then(Value::as_str).and_then(parse_ip);
        let port = entry
            .get(b"port")
            .and_then(Value::as_int)
            .and_then(|p| u16::try_from(p).ok());
        if let (Some(ip), Some(port)) = (ip, port) {
            push_peer(peers, ip, port);
        }
    }
}

/// Decodes the reply's root dictionary, turning `failure reason` into an error.
fn decode_dict(body: &[u8]) -> Result<Value<'_>, TrackerError> {
    let (root, _trailing) = bencode::decode_prefix(body)?;
    if root.as_dict().is_none() {
        return Err(TrackerError::NotADict);
    }
    if let Some(reason) = root.get(b"failure reason") {
        let text = match reason.as_bytes() {
            Some(b) => bounded_text(b),
            None => "(failure reason is not a string)".to_owned(),
        };
        return Err(TrackerError::Failure(text));
    }
    Ok(root)
}

/// An IP literal, IPv6 possibly in brackets.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// The scrape URL for an announce URL (BEP 48): the last path segment must
/// begin with `announce`, which is replaced by `scrape`; otherwise the
/// tracker has no scrape and this is `None`. The query is kept.
pub fn scrape_url(announce_url: &str) -> Option<String> {
    let after_scheme = announce_url.find("://")? + 3;
    let end = announce_url[after_scheme..]
        .find(['?', '#'])
        .map_or(announce_url.len(), |i| after_scheme + i);
    let path_start = after_scheme + announce_url[after_scheme..end].find('/')?;
    let seg_start = path_start + announce_url[path_start..end].rfind('/')? + 1;
    if !announce_url[seg_start..end].starts_with("announce") {
        return None;
    }
    let mut url = String::with_capacity(announce_url.len());
    url.push_str(&announce_url[..seg_start]);
    url.push_str("scrape");
    url.push_str(&announce_url[seg_start + "announce".len()..]);
    Some(url)
}

/// The GET URL for a scrape of `hashes` at `scrape_url` (BEP 48).
pub fn scrape_request_url(scrape_url: &str, hashes: &[InfoHash]) -> String {
    let mut url = scrape_url.to_owned();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for hash in hashes {
        url.push(sep);
        url.push_str("info_hash=");
        url.push_str(&percent_encode(&hash.0));
        sep = '&';
    }
    url
}

/// One torrent's counts in a scrape reply (BEP 48).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrapeEntry {
    /// Peers that have the whole torrent (seeders).
    pub complete: u32,
    /// Peers still downloading (leechers).
    pub incomplete: u32,
    /// Peers that ever completed the download.
    pub downloaded: u32,
}

/// Parses a scrape reply: `files` maps 20-byte info-hashes to counts. Keys of
/// another length are skipped; missing or negative counts read as 0; at most
/// [`MAX_SCRAPE_ENTRIES`] entries are kept.
pub fn parse_scrape_response(body: &[u8]) -> Result<Vec<(InfoHash, ScrapeEntry)>, TrackerError> {
    let root = decode_dict(body)?;
    let files = root
        .get(b"files")
        .and_then(Value::as_dict)
        .ok_or(TrackerError::MissingField("files"))?;
    let mut out = Vec::with_capacity(files.len().min(MAX_SCRAPE_ENTRIES));
    for (key, counts) in files.iter().take(MAX_SCRAPE_ENTRIES) {
        let Ok(hash) = <[u8; 20]>::try_from(*key) else {
            continue;
        };
        let count = |k: &[u8]| {
            counts
                .get(k)
                .and_then(Value::as_int)
                .map_or(0, |i| u32::try_from(i.max(0)).unwrap_or(u32::MAX))
        };
        let entry = ScrapeEntry {
            complete: count(b"complete"),
            incomplete: count(b"incomplete"),
            downloaded: count(b"downloaded"),
        };
        out.push((InfoHash(hash), entry));
    }
    Ok(out)
}

/// An announce as our tracker receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAnnounce {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Option<Event>,
    /// Compact reply wanted; BEP 23 suggests compact when `compact` is absent.
    pub compact: bool,
    /// `numwant`, if given and non-negative.
    pub numwant: Option<u32>,
    /// The `ip` parameter, if it is an IP literal (DNS names are ignored).
    pub ip: Option<IpAddr>,
}

/// Parses an announce query (the part after `?`). `info_hash`, `peer_id`
/// (20 bytes each) and a non-zero `port` are required; `uploaded`,
/// `downloaded` and `left` default to 0; the first occurrence of a key wins;
/// unknown keys are ignored.
pub fn parse_announce_query(query: &str) -> Result<ServerAnnounce, TrackerError> {
    let pairs = query_pairs(query)?;
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    };
    let id20 = |name: &'static str| -> Result<[u8; 20], TrackerError> {
        get(name)
            .ok_or(TrackerError::MissingParam(name))?
            .try_into()
            .map_err(|_| TrackerError::InvalidParam(name))
    };
    let number = |name: &'static str| -> Result<Option<u64>, TrackerError> {
        get(name)
            .map(|v| parse_u64(v).ok_or(TrackerError::InvalidParam(name)))
            .transpose()
    };
    let port = number("port")?.ok_or(TrackerError::MissingParam("port"))?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(TrackerError::InvalidParam("port"))?;
    let event = match get("event") {
        Some(v) => Event::from_query(v).map_err(|_| TrackerError::InvalidParam("event"))?,
        None => None,
    };
    let numwant = get("numwant")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    Ok(ServerAnnounce {
        info_hash: InfoHash(id20("info_hash")?),
        peer_id: PeerId(id20("peer_id")?),
        port,
        uploaded: number("uploaded")?.unwrap_or(0),
        downloaded: number("downloaded")?.unwrap_or(0),
        left: number("left")?.unwrap_or(0),
        event,
        compact: get("compact") != Some(b"0"),
        numwant,
        ip: get("ip")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(parse_ip),
    })
}

/// Parses a scrape query: every `info_hash` (20 bytes each, at most
/// [`MAX_SCRAPE_HASHES`], the rest ignored). Empty means "all torrents".
pub fn parse_scrape_query(query: &str) -> Result<Vec<InfoHash>, TrackerError> {
    let mut hashes = Vec::new();
    for (k, v) in query_pairs(query)? {
        if k == b"info_hash" && hashes.len() < MAX_SCRAPE_HASHES {
            let hash = <[u8; 20]>::try_from(v.as_slice())
                .map_err(|_| TrackerError::InvalidParam("info_hash"))?;
            hashes.push(InfoHash(hash));
        }
    }
    Ok(hashes)
}

/// Decoded `key=value` pairs of a query, in order.
type QueryPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Splits and percent-decodes a query, after checking its length.
fn query_pairs(query: &str) -> Result<QueryPairs, TrackerError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(TrackerError::QueryTooLong);
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// Percent-decodes; `+` stays a plus.
fn percent_decode(s: &str) -> Result<Vec<u8>, TrackerError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = |j: usize| {
                bytes
                    .get(j)
                    .and_then(|c| char::from(*c).to_digit(16))
                    .ok_or(TrackerError::BadEncoding)
            };
            let value = hex(i + 1)? * 16 + hex(i + 2)?;
            out.push(u8::try_from(value).map_err(|_| TrackerError::BadEncoding)?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

/// Decimal ASCII digits only (no sign, no spaces), as BEP 3 sends numbers.
fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Our tracker's announce reply. Compact (BEP 23): IPv4 peers packed in
/// `peers`, IPv6 ones in `peers6` (BEP 7, only when there are any).
/// Otherwise (BEP 3) `peers` is a list of `{ip, port}` dictionaries.
pub fn encode_announce_response(
    interval: u32,
    min_interval: Option<u32>,
    complete: u32,
    incomplete: u32,
    peers: &[SocketAddr],
    compact: bool,
) -> Vec<u8> {
    let mut reply = OwnedValue::dict()
        .with("interval", i64::from(interval))
        .with("complete", i64::from(complete))
        .with("incomplete", i64::from(incomplete));
    if let Some(min) = min_interval {
        reply.insert("min interval", i64::from(min));
    }
    if compact {
        let mut v4 = Vec::with_capacity(peers.len() * 6);
        let mut v6 = Vec::new();
        for peer in peers {
            let out = match peer.ip() {
                IpAddr::V4(ip) => {
                    v4.extend_from_slice(&ip.octets());
                    &mut v4
                }
                IpAddr::V6(ip) => {
                    v6.extend_from_slice(&ip.octets());
                    &mut v6
                }
            };
            out.extend_from_slice(&peer.port().to_be_bytes());
        }
        reply.insert("peers", v4);
        if !v6.is_empty() {
            reply.insert("peers6", v6);
        }
    } else {
        let list: Vec<OwnedValue> = peers
            .iter()
            .map(|p| {
                OwnedValue::dict()
                    .with("ip", p.ip().to_string())
                    .with("port", i64::from(p.port()))
            })
            .collect();
        reply.insert("peers", list);
    }
    reply.encode()
}

/// A `failure reason` reply (BEP 3), the reason cut at [`MAX_TEXT`] bytes.
pub fn encode_failure(reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_TEXT);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    OwnedValue::dict()
        .with("failure reason", &reason[..end])
        .encode()
}

/// A scrape reply (BEP 48).
pub fn encode_scrape(entries: &[(InfoHash, ScrapeEntry)]) -> Vec<u8> {
    let files: BTreeMap<Vec<u8>, OwnedValue> = entries
        .iter()
        .map(|(hash, e)| {
            let counts = OwnedValue::dict()
                .with("complete", i64::from(e.complete))
                .with("incomplete", i64::from(e.incomplete))
                .with("downloaded", i64::from(e.downloaded));
            (hash.0.to_vec(), counts)
        })
        .collect();
    OwnedValue::dict()
        .with("files", OwnedValue::Dict(files))
        .encode()
}

// Unit tests for this module live in `super::tests::http` (beside the
// property tests that cover HTTP and UDP together).
