//! Magnet links (BEP 9 §"Magnet URI format"): `xt=urn:btih:` with a hex or
//! base32 infohash, `dn` (name), `tr` (trackers), `x.pe` (peer addresses,
//! BEP 9) and `so` (select only, BEP 53).

use crate::types::InfoHash;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("not a magnet link (it must start with `magnet:?`)")]
    NotMagnet,
    #[error("the magnet link has no `xt=urn:btih:` infohash")]
    NoInfoHash,
    #[error("the magnet link's infohash {0:?} is neither 40 hex nor 32 base32 characters")]
    BadInfoHash(String),
    #[error("bad percent-encoding in the magnet link")]
    BadEncoding,
    #[error("bad `so` file selection {0:?}")]
    BadSelection(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    pub display_name: Option<String>,
    pub trackers: Vec<String>,
    /// `x.pe` peer addresses as given (`host:port`).
    pub peers: Vec<String>,
    /// BEP 53 `so`: file indices to download (ranges expanded).
    pub select_only: Option<Vec<usize>>,
}

/// Most files a `so` selection may name (a range like `0-4000000000` would
/// otherwise allocate without bound).
const MAX_SELECTED: usize = 1_000_000;

impl Magnet {
    pub fn parse(uri: &str) -> Result<Self, MagnetError> {
        let query = uri.strip_prefix("magnet:?").ok_or(MagnetError::NotMagnet)?;
        let mut info_hash = None;
        let mut m = Magnet {
            info_hash: InfoHash([0; 20]),
            display_name: None,
            trackers: Vec::new(),
            peers: Vec::new(),
            select_only: None,
        };
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match key {
                "xt" => {
                    if let Some(h) = value.strip_prefix("urn:btih:") {
                        info_hash = Some(
                            InfoHash::from_text(h)
                                .ok_or_else(|| MagnetError::BadInfoHash(h.to_owned()))?,
                        );
                    }
                }
                "dn" => m.display_name = Some(value),
                k if k == "tr" || k.starts_with("tr.") => m.trackers.push(value),
                "x.pe" => m.peers.push(value),
                "so" => m.select_only = Some(parse_selection(&value)?),
                _ => {}
            }
        }
        m.info_hash = info_hash.ok_or(MagnetError::NoInfoHash)?;
        Ok(m)
    }

    pub fn to_uri(&self) -> String {
        let mut s = format!("magnet:?xt=urn:btih:{}", self.info_hash.to_hex());
        if let Some(dn) = &self.display_name {
            s.push_str("&dn=");
            s.push_str(&percent_encode(dn.as_bytes()));
        }
        for t in &self.trackers {
            s.push_str("&tr=");
            s.push_str(&percent_encode(t.as_bytes()));
        }
        for p in &self.peers {
            s.push_str("&x.pe=");
            s.push_str(&percent_encode(p.as_bytes()));
        }
        s
    }
}

fn parse_selection(s: &str) -> Result<Vec<usize>, MagnetError> {
    let bad = || MagnetError::BadSelection(s.to_owned());
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a.parse().map_err(|_| bad())?;
        let b: usize = b.parse().map_err(|_| bad())?;
        if b < a || out.len() + (b - a) >= MAX_SELECTED {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// Percent-decodes (and `+` as space, as query strings do), into UTF-8 lossily.
fn percent_decode(s: &str) -> Result<String, MagnetError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(MagnetError::BadEncoding)?;
                let hex = std::str::from_utf8(hex).map_err(|_| MagnetError::BadEncoding)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| MagnetError::BadEncoding)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_link() {
        let m = Magnet::parse(
            "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=My+File%21\
             &tr=http%3A%2F%2Ft%2Fannounce&tr.1=udp://u:1&x.pe=127.0.0.1:6881&so=0,2-4",
        )
        .unwrap();
        assert_eq!(
            m.info_hash.to_hex(),
            "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
        );
        assert_eq!(m.display_name.as_deref(), Some("My File!"));
        assert_eq!(m.trackers, vec!["http://t/announce", "udp://u:1"]);
        assert_eq!(m.peers, vec!["127.0.0.1:6881"]);
        assert_eq!(m.select_only, Some(vec![0, 2, 3, 4]));
        let again = Magnet::parse(&m.to_uri()).unwrap();
        assert_eq!(again.trackers, m.trackers);
        assert_eq!(again.display_name, m.display_name);
    }

    #[test]
    fn base32_and_errors() {
        let m = Magnet::parse("magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK").unwrap();
        assert_eq!(
            m.info_hash.to_hex(),
            "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
        );
        assert_eq!(Magnet::parse("http://x"), Err(MagnetError::NotMagnet));
        assert_eq!(Magnet::parse("magnet:?dn=x"), Err(MagnetError::NoInfoHash));
        assert!(matches!(
            Magnet::parse("magnet:?xt=urn:btih:abc"),
            Err(MagnetError::BadInfoHash(_))
        ));
        assert_eq!(
            Magnet::parse("magnet:?xt=urn:btih:%zz"),
            Err(MagnetError::BadEncoding)
        );
        assert_eq!(
            Magnet::parse("magnet:?xt=urn:btih:%"),
            Err(MagnetError::BadEncoding)
        );
        assert!(Magnet::parse(
            "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&so=0-99999999999"
        )
        .is_err());
        assert!(Magnet::parse(
            "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&so=5-2"
        )
        .is_err());
    }
}
