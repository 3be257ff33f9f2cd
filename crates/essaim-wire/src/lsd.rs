//! Local service discovery announces (BEP 14): HTTP-like datagrams sent to
//! the multicast group `239.192.152.143:6771`.
//!
//! ```text
//! BT-SEARCH * HTTP/1.1\r\n
//! Host: 239.192.152.143:6771\r\n
//! Port: <port>\r\n
//! Infohash: <40 hex>\r\n      (one or more)
//! cookie: <opaque>\r\n        (optional, to recognise our own announces)
//! \r\n
//! \r\n
//! ```
//! Parsing is lenient about header case and unknown headers (BEP 14: they
//! are ignored) and strict about size: at most [`MAX_PACKET`] bytes and
//! [`MAX_INFOHASHES`] infohashes are read.

use essaim_core::InfoHash;

/// The IPv4 multicast group and port of BEP 14.
pub const GROUP_V4: [u8; 4] = [239, 192, 152, 143];
pub const PORT: u16 = 6771;
/// Largest announce read or written (BEP 14: stay under 1400 bytes).
pub const MAX_PACKET: usize = 1400;
/// Infohashes in one announce at most (fits in [`MAX_PACKET`]).
pub const MAX_INFOHASHES: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub port: u16,
    pub info_hashes: Vec<InfoHash>,
    pub cookie: Option<String>,
}

impl Announce {
    /// The datagram, with `host` as the `Host` header (`239.192.152.143:6771`).
    /// Infohashes past [`MAX_INFOHASHES`] are left out.
    pub fn encode(&self, host: &str) -> Vec<u8> {
        let mut s = format!(
            "BT-SEARCH * HTTP/1.1\r\nHost: {host}\r\nPort: {}\r\n",
            self.port
        );
        for h in self.info_hashes.iter().take(MAX_INFOHASHES) {
            s.push_str(&format!("Infohash: {}\r\n", h.to_hex()));
        }
        if let Some(c) = &self.cookie {
            s.push_str(&format!("cookie: {c}\r\n"));
        }
        s.push_str("\r\n\r\n");
        s.into_bytes()
    }

    /// Parses an announce; `None` if it is not one (or has no valid port or
    /// infohash).
    pub fn decode(packet: &[u8]) -> Option<Announce> {
        if packet.len() > MAX_PACKET {
            return None;
        }
        let text = std::str::from_utf8(packet).ok()?;
        let mut lines = text.split("\r\n");
        if lines.next()?.trim() != "BT-SEARCH * HTTP/1.1" {
            return None;
        }
        let mut port = None;
        let mut info_hashes = Vec::new();
        let mut cookie = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "port" => port = value.parse::<u16>().ok().filter(|&p| p != 0),
                "infohash" if info_hashes.len() < MAX_INFOHASHES => {
                    if let Some(h) = InfoHash::from_text(value) {
                        info_hashes.push(h);
                    }
                }
                // Cut, then trim: a cut inside a run of spaces must not
                // leave a cookie that changes when sent again (found by
                // fuzzing: decode(encode(a)) != a).
                "cookie" => {
                    let cut: String = value.chars().take(64).collect();
                    cookie = Some(cut.trim().to_owned());
                }
                _ => {}
            }
        }
        if info_hashes.is_empty() {
            return None;
        }
        Some(Announce {
            port: port?,
            info_hashes,
            cookie,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_the_bep_format() {
        let a = Announce {
            port: 6881,
            info_hashes: vec![InfoHash([0xab; 20]), InfoHash([1; 20])],
            cookie: Some("c00k1e".into()),
        };
        let bytes = a.encode("239.192.152.143:6771");
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text
            .starts_with("BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n"));
        assert!(text.ends_with("\r\n\r\n\r\n"));
        assert_eq!(Announce::decode(&bytes), Some(a));
    }

    #[test]
    fn lenient_headers_strict_sizes() {
        let p = b"BT-SEARCH * HTTP/1.1\r\nhost: x\r\nPORT: 51413\r\nX-Other: y\r\n\
                  infohash: ABABABABABABABABABABABABABABABABABABABAB\r\n\r\n\r\n";
        let a = Announce::decode(p).unwrap();
        assert_eq!(a.port, 51413);
        assert_eq!(a.info_hashes, vec![InfoHash([0xab; 20])]);
        assert_eq!(a.cookie, None);
        // No port, port 0, no infohash, not an announce, too big: refused.
        assert!(Announce::decode(
            b"BT-SEARCH * HTTP/1.1\r\nInfohash: ABABABABABABABABABABABABABABABABABABABAB\r\n"
        )
        .is_none());
        assert!(Announce::decode(b"BT-SEARCH * HTTP/1.1\r\nPort: 0\r\nInfohash: ABABABABABABABABABABABABABABABABABABABAB\r\n").is_none());
        assert!(Announce::decode(b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n").is_none());
        assert!(Announce::decode(b"GET / HTTP/1.1\r\nPort: 1\r\n").is_none());
        assert!(Announce::decode(&vec![b'a'; MAX_PACKET + 1]).is_none());
    }

    #[test]
    fn a_cookie_cut_inside_whitespace_round_trips() {
        // The fuzzer's input: a cookie whose 64th character falls inside a
        // run of vertical tabs.
        let input = include_bytes!("lsd_cookie_regression.bin");
        let a = Announce::decode(input).unwrap();
        let again = Announce::decode(&a.encode("239.192.152.143:6771"));
        assert_eq!(again, Some(a));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Announce::decode(&bytes);
        }
    }
}
