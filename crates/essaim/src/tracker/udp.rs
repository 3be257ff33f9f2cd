//! UDP tracker client (BEP 15).
//!
//! One [`UdpTracker`] per `udp://host:port` URL. It resolves the host on each
//! request (`tokio::net::lookup_host`, IPv4 preferred), sends through the
//! sockets it is given ([`UdpSockets`]: a session's, shared by all its
//! trackers), and caches the connection id for
//! [`UdpConfig::connection_ttl`] (BEP 15: usable for one minute).
//!
//! Retransmission follows BEP 15: after sending, wait `base * 2^n` (15 s
//! doubling by default), then resend, `n` growing across the connect and
//! the request alike, and reconnecting first when the connection id has
//! expired. BEP 15 lets `n` reach 8 (an hour); we stop after
//! [`UdpConfig::max_retransmits`] (3: 15+30+60+120 s) so that a dead tracker
//! gives its tier's next tracker a turn.
//!
//! Only datagrams from the tracker's address carrying the transaction id of
//! the request in flight are considered (see [`super::udp_socket`]);
//! anything else is dropped, so a spoofer must guess a random 32-bit id.

use std::net::SocketAddr;
use std::time::Duration;

use essaim_core::InfoHash;
use essaim_wire::tracker::http::AnnounceResponse;
use essaim_wire::tracker::udp::{
    encode_connect, encode_scrape, parse_response, parse_response_v6, UdpAnnounce, UdpResponse,
};
use essaim_wire::tracker::{sanitize_interval, Event};
use tokio::time::Instant;
use tracing::debug;

use super::udp_socket::UdpSockets;
use super::{AnnounceError, AnnounceParams};

/// Timing of the UDP client.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// First retransmission timeout; doubles after each. BEP 15: 15 s.
    pub timeout_base: Duration,
    /// Highest `n` in `base * 2^n` before giving up. Default 3.
    pub max_retransmits: u32,
    /// How long a connection id is reused. BEP 15: one minute.
    pub connection_ttl: Duration,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            timeout_base: Duration::from_secs(15),
            max_retransmits: 3,
            connection_ttl: Duration::from_secs(60),
        }
    }
}

/// A client for one UDP tracker.
#[derive(Debug)]
pub struct UdpTracker {
    /// `host:port`, as given to the resolver.
    authority: String,
    config: UdpConfig,
    sockets: UdpSockets,
    /// Connection id, the address it is valid for, and when it was received.
    connection: Option<(SocketAddr, u64, Instant)>,
}

impl UdpTracker {
    /// A client for `url` (`udp://host:port`, an optional path ignored),
    /// with sockets of its own.
    pub fn new(url: &str, config: UdpConfig) -> Result<Self, AnnounceError> {
        Self::with_sockets(url, config, UdpSockets::default())
    }

    /// [`UdpTracker::new`] sending through `sockets` (shared).
    pub fn with_sockets(
        url: &str,
        config: UdpConfig,
        sockets: UdpSockets,
    ) -> Result<Self, AnnounceError> {
        let bad = || AnnounceError::UnsupportedUrl(url.to_owned());
        let rest = url.strip_prefix("udp://").ok_or_else(bad)?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        // A port is required: after the last ':' that is not inside brackets.
        let port = authority.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
        if port.parse::<u16>().is_err() || authority.ends_with(']') {
            return Err(bad());
        }
        Ok(UdpTracker {
            authority: authority.to_owned(),
            config,
            sockets,
            connection: None,
        })
    }

    /// Announces (BEP 15 action 1).
    pub async fn announce(
        &mut self,
        params: &AnnounceParams,
    ) -> Result<AnnounceResponse, AnnounceError> {
        let build = |connection_id, transaction_id| {
            UdpAnnounce {
                connection_id,
                transaction_id,
                info_hash: params.info_hash,
                peer_id: params.peer_id,
                downloaded: params.stats.downloaded,
                left: params.stats.left,
                uploaded: params.stats.uploaded,
                event: params.event,
                ip: None,
                key: params.key,
                num_want: Some(if params.event == Some(Event::Stopped) {
                    0
                } else {
                    params.numwant
                }),
                port: params.port,
            }
            .encode()
            .to_vec()
        };
        match self.request(build).await? {
            UdpResponse::Announce {
                interval,
                leechers,
                seeders,
                peers,
                ..
            } => Ok(AnnounceResponse {
                interval: sanitize_interval(Some(i64::from(interval))),
                complete: Some(seeders),
                incomplete: Some(leechers),
                peers,
                ..AnnounceResponse::default()
            }),
            _ => Err(AnnounceError::UnexpectedReply),
        }
    }

    /// Scrapes up to 74 hashes (BEP 15 action 2); returns
    /// `(seeders, completed, leechers)` in the order of `hashes`.
    pub async fn scrape(
        &mut self,
        hashes: &[InfoHash],
    ) -> Result<Vec<(u32, u32, u32)>, AnnounceError> {
        match self.request(|c, t| encode_scrape(c, t, hashes)).await? {
            UdpResponse::Scrape { entries, .. } => Ok(entries),
            _ => Err(AnnounceError::UnexpectedReply),
        }
    }

    /// Runs one request with connect, retransmission and id caching.
    async fn request(
        &mut self,
        build: impl Fn(u64, u32) -> Vec<u8>,
    ) -> Result<UdpResponse, AnnounceError> {
        let addr = self.resolve().await?;
        let mut n = 0u32;
        loop {
            if n > self.config.max_retransmits {
                return Err(AnnounceError::Timeout);
            }
            let wait = self.config.timeout_base.saturating_mul(1 << n.min(8));
            let connection_id = match self.connection {
                Some((a, id, at)) if a == addr && at.elapsed() < self.config.connection_ttl => id,
                _ => {
                    self.connection = None;
                    match self
                        .exchange(addr, |t| encode_connect(t).to_vec(), wait)
                        .await?
                    {
                        None => {
                            n += 1;
                            continue;
                        }
                        Some(UdpResponse::Connect { connection_id, .. }) => {
                            self.connection = Some((addr, connection_id, Instant::now()));
                            connection_id
                        }
                        Some(UdpResponse::Error { message, .. }) => {
                            return Err(AnnounceError::Failure(message))
                        }
                        Some(_) => return Err(AnnounceError::UnexpectedReply),
                    }
                }
            };
            match self
                .exchange(addr, |tid| build(connection_id, tid), wait)
                .await?
            {
                None => n += 1,
                Some(UdpResponse::Error { message, .. }) => {
                    // Often "connection id mismatch": reconnect next time.
                    self.connection = None;
                    return Err(AnnounceError::Failure(message));
                }
                Some(reply) => return Ok(reply),
            }
        }
    }

    /// The tracker's address, IPv4 preferred.
    async fn resolve(&self) -> Result<SocketAddr, AnnounceError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(self.authority.as_str())
            .await
            .map_err(|e| AnnounceError::Resolve(self.authority.clone(), e))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| {
                let e = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
                AnnounceError::Resolve(self.authority.clone(), e)
            })
    }

    /// Sends the packet `build` makes with a fresh transaction id to
    /// `addr` and waits up to `wait` for the reply; `Ok(None)` on timeout
    /// or an unreadable reply.
    async fn exchange(
        &self,
        addr: SocketAddr,
        build: impl FnOnce(u32) -> Vec<u8>,
        wait: Duration,
    ) -> Result<Option<UdpResponse>, AnnounceError> {
        let mut pending = self.sockets.start(addr).await?;
        let tid = pending.tid;
        pending.send(&build(tid)).await?;
        let Some(datagram) = pending.reply(wait).await else {
            return Ok(None);
        };
        let parsed = if addr.is_ipv4() {
            parse_response(&datagram)
        } else {
            parse_response_v6(&datagram)
        };
        match parsed {
            Ok(reply) if reply.transaction_id() == tid => Ok(Some(reply)),
            Ok(_) => Ok(None),
            Err(e) => {
                debug!(tracker = %addr, error = %e, "bad UDP tracker packet ignored");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against a fake UDP tracker on 127.0.0.1 built from the wire codec.
    use super::*;
    use crate::tracker::AnnounceStats;
    use essaim_core::PeerId;
    use essaim_wire::tracker::udp::{parse_request, UdpRequest};
    use tokio::net::UdpSocket;
    use tokio::time::timeout;

    const BOUND: Duration = Duration::from_secs(10);

    fn params(event: Option<Event>) -> AnnounceParams {
        AnnounceParams {
            info_hash: InfoHash([9; 20]),
            peer_id: PeerId([b'q'; 20]),
            port: 7000,
            stats: AnnounceStats {
                uploaded: 1,
                downloaded: 2,
                left: 3,
            },
            event,
            numwant: 25,
            key: 0x1234,
        }
    }

    fn config(base_ms: u64, max_retransmits: u32) -> UdpConfig {
        UdpConfig {
            timeout_base: Duration::from_millis(base_ms),
            max_retransmits,
            ..UdpConfig::default()
        }
    }

    /// The fake tracker's socket and a client pointed at it.
    async fn setup(config: UdpConfig) -> (UdpSocket, UdpTracker) {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let url = format!("udp://{}/announce", server.local_addr().unwrap());
        (server, UdpTracker::new(&url, config).unwrap())
    }

    async fn recv(server: &UdpSocket) -> (UdpRequest, SocketAddr) {
        let mut buf = [0u8; 2048];
        let (len, from) = timeout(BOUND, server.recv_from(&mut buf))
            .await
            .expect("a request")
            .unwrap();
        (parse_request(&buf[..len]).unwrap(), from)
    }

    async fn reply(server: &UdpSocket, to: SocketAddr, r: UdpResponse) {
        server.send_to(&r.encode(false), to).await.unwrap();
    }

    fn announce_reply(tid: u32, peer: &str) -> UdpResponse {
        UdpResponse::Announce {
            transaction_id: tid,
            interval: 900,
            leechers: 4,
            seeders: 5,
            peers: vec![peer.parse().unwrap()],
        }
    }

    /// Answers a connect with `conn`; returns the next (announce) request.
    async fn accept_connect(server: &UdpSocket, conn: u64) -> (UdpAnnounce, SocketAddr) {
        let (UdpRequest::Connect { transaction_id }, from) = recv(server).await else {
            panic!("expected a connect")
        };
        let r = UdpResponse::Connect {
            transaction_id,
            connection_id: conn,
        };
        reply(server, from, r).await;
        let (UdpRequest::Announce(a), from) = recv(server).await else {
            panic!("expected an announce")
        };
        (a, from)
    }

    /// Two trackers of two torrents on one shared socket, announcing at
    /// once: each gets its own reply, and the tracker sees one source port.
    #[tokio::test]
    async fn trackers_share_one_socket() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let url = format!("udp://{}/announce", server.local_addr().unwrap());
        let shared = UdpSockets::default();
        let mut a = UdpTracker::with_sockets(&url, config(2000, 2), shared.clone()).unwrap();
        let mut b = UdpTracker::with_sockets(&url, config(2000, 2), shared).unwrap();
        let fake = async {
            // Two connects, then two announces, answered in reverse order.
            let mut conns = Vec::new();
            for _ in 0..2 {
                let (UdpRequest::Connect { transaction_id }, from) = recv(&server).await else {
                    panic!("expected a connect")
                };
                conns.push((transaction_id, from));
            }
            assert_eq!(conns[0].1, conns[1].1, "one socket");
            assert_ne!(conns[0].0, conns[1].0, "distinct transaction ids");
            for (i, (tid, from)) in conns.iter().enumerate() {
                let r = UdpResponse::Connect {
                    transaction_id: *tid,
                    connection_id: 100 + i as u64,
                };
                reply(&server, *from, r).await;
            }
            let mut anns = Vec::new();
            for _ in 0..2 {
                let (UdpRequest::Announce(x), from) = recv(&server).await else {
                    panic!("expected an announce")
                };
                anns.push((x, from));
            }
            for (x, from) in anns.iter().rev() {
                let peer = format!("10.0.0.{}:1", x.connection_id - 99);
                reply(&server, *from, announce_reply(x.transaction_id, &peer)).await;
            }
        };
        let clients = async {
            let p = params(None);
            let (ra, rb) = tokio::join!(a.announce(&p), b.announce(&p));
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            let mut got = vec![ra.peers[0], rb.peers[0]];
            got.sort();
            let want: Vec<SocketAddr> =
                vec!["10.0.0.1:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap()];
            assert_eq!(got, want, "each got the reply to its own connection");
            assert_ne!(ra.peers, rb.peers);
        };
        timeout(BOUND, async { tokio::join!(fake, clients) })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn connect_announce_and_connection_reuse() {
        let (server, mut client) = setup(config(2000, 2)).await;
        let fake = async {
            let (a, from) = accept_connect(&server, 77).await;
            assert_eq!(a.connection_id, 77);
            assert_eq!(
                (a.info_hash, a.port, a.key),
                (InfoHash([9; 20]), 7000, 0x1234)
            );
            assert_eq!((a.uploaded, a.downloaded, a.left), (1, 2, 3));
            assert_eq!((a.event, a.num_want), (Some(Event::Started), Some(25)));
            reply(
                &server,
                from,
                announce_reply(a.transaction_id, "10.0.0.1:1"),
            )
            .await;
            // The second announce reuses the connection id: no connect.
            let (UdpRequest::Announce(a), from) = recv(&server).await else {
                panic!("expected an announce without a new connect")
            };
            assert_eq!((a.connection_id, a.event), (77, Some(Event::Stopped)));
            assert_eq!(a.num_want, Some(0));
            let err = UdpResponse::Error {
                transaction_id: a.transaction_id,
                message: "go away".into(),
            };
            reply(&server, from, err).await;
        };
        let client_side = async {
            let r = client
                .announce(&params(Some(Event::Started)))
                .await
                .unwrap();
            assert_eq!(r.peers, vec!["10.0.0.1:1".parse().unwrap()]);
            assert_eq!(
                (r.interval, r.complete, r.incomplete),
                (900, Some(5), Some(4))
            );
            let e = client.announce(&params(Some(Event::Stopped))).await;
            assert!(matches!(e, Err(AnnounceError::Failure(m)) if m == "go away"));
        };
        timeout(BOUND, async { tokio::join!(fake, client_side) })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn foreign_and_mismatched_replies_are_ignored() {
        let (server, mut client) = setup(config(2000, 2)).await;
        let intruder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let fake = async {
            let (a, from) = accept_connect(&server, 5).await;
            let tid = a.transaction_id;
            // Right id from the wrong address, wrong id from the right one,
            // garbage, then the genuine reply.
            let spoof = announce_reply(tid, "6.6.6.6:6");
            intruder.send_to(&spoof.encode(false), from).await.unwrap();
            reply(
                &server,
                from,
                announce_reply(tid.wrapping_add(1), "7.7.7.7:7"),
            )
            .await;
            server.send_to(b"\x00\x00", from).await.unwrap();
            reply(&server, from, announce_reply(tid, "8.8.8.8:8")).await;
        };
        let client_side = async {
            let r = client.announce(&params(None)).await.unwrap();
            assert_eq!(r.peers, vec!["8.8.8.8:8".parse().unwrap()]);
        };
        timeout(BOUND, async { tokio::join!(fake, client_side) })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn lost_packets_are_retransmitted() {
        let (server, mut client) = setup(config(100, 3)).await;
        let fake = async {
            // Drop the first connect; answer the retransmitted one.
            let (first, _) = recv(&server).await;
            let (second, from) = recv(&server).await;
            let (
                UdpRequest::Connect { transaction_id: t1 },
                UdpRequest::Connect { transaction_id: t2 },
            ) = (first, second)
            else {
                panic!("expected two connects")
            };
            assert_ne!(t1, t2, "a fresh transaction id per send");
            let c = UdpResponse::Connect {
                transaction_id: t2,
                connection_id: 1,
            };
            reply(&server, from, c).await;
            // Drop the first announce too.
            let _ = recv(&server).await;
            let (UdpRequest::Announce(a), from) = recv(&server).await else {
                panic!("expected a retransmitted announce")
            };
            reply(&server, from, announce_reply(a.transaction_id, "1.1.1.1:1")).await;
        };
        let client_side = async {
            let started = Instant::now();
            let r = client.announce(&params(None)).await.unwrap();
            assert_eq!(r.peers.len(), 1);
            // 100 ms for the first connect, 200 ms for the first announce.
            assert!(started.elapsed() >= Duration::from_millis(300));
        };
        timeout(BOUND, async { tokio::join!(fake, client_side) })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_dead_tracker_is_given_up() {
        let (server, mut client) = setup(config(50, 2)).await;
        let started = Instant::now();
        let r = timeout(BOUND, client.announce(&params(None)))
            .await
            .unwrap();
        assert!(matches!(r, Err(AnnounceError::Timeout)));
        // 50 + 100 + 200 ms, three connects.
        assert!(started.elapsed() >= Duration::from_millis(350));
        for _ in 0..3 {
            assert!(matches!(recv(&server).await.0, UdpRequest::Connect { .. }));
        }
        let mut buf = [0u8; 64];
        assert!(server.try_recv_from(&mut buf).is_err(), "no fourth send");
    }

    #[test]
    fn urls() {
        assert!(UdpTracker::new("udp://t.example:6969/announce", UdpConfig::default()).is_ok());
        assert!(UdpTracker::new("udp://[::1]:6969", UdpConfig::default()).is_ok());
        for bad in ["udp://t.example", "udp://[::1]", "http://t:1", "udp://t:x/"] {
            assert!(UdpTracker::new(bad, UdpConfig::default()).is_err(), "{bad}");
        }
    }
}
