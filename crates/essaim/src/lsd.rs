//! Local service discovery (BEP 14) for a session: announces our torrents
//! to the LAN's multicast group and hands the peers it hears of to the
//! torrents concerned.
//!
//! Design: one task per session owns one UDP socket bound to the group's
//! port with `SO_REUSEADDR` (several clients on a machine share it) and
//! joined to the group on one interface: the session's listening address
//! when it is a specific IPv4 address (127.0.0.1 keeps everything on this
//! machine), else the system's default. Each torrent is announced when it
//! appears and then every [`ANNOUNCE_INTERVAL`]; infohashes due together go
//! in one datagram, and at most one datagram leaves per [`MIN_GAP`].
//! Announces carrying our own random cookie are ignored (multicast loops
//! back to us).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use essaim_core::InfoHash;
use essaim_wire::lsd::{Announce, GROUP_V4, MAX_INFOHASHES, MAX_PACKET};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// BEP 14: "a client should send a LSD announce every 5 minutes".
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(300);
/// Datagrams sent at most this often.
pub const MIN_GAP: Duration = Duration::from_secs(5);

/// What the LSD task needs from the session.
pub(crate) trait Registry: Send + Sync + 'static {
    /// The infohashes of the session's public torrents (BEP 27: private
    /// torrents are not announced).
    fn info_hashes(&self) -> Vec<InfoHash>;
    /// A peer announced `info_hash` from `addr`.
    fn deliver(&self, info_hash: InfoHash, addr: SocketAddr);
}

#[derive(Debug, Clone)]
pub struct LsdConfig {
    /// The UDP port of the group (BEP 14: 6771; tests use their own).
    pub port: u16,
    /// The interface to multicast on (unspecified: the default one).
    pub interface: Ipv4Addr,
}

/// Binds the socket and starts the task. Errors (no multicast on this
/// machine) are returned so the session can run without LSD.
pub(crate) fn spawn(
    config: LsdConfig,
    listen_port: u16,
    registry: Arc<dyn Registry>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let group = Ipv4Addr::from(GROUP_V4);
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, config.port).into())?;
    socket.join_multicast_v4(&group, &config.interface)?;
    if !config.interface.is_unspecified() {
        socket.set_multicast_if_v4(&config.interface)?;
    }
    socket.set_multicast_loop_v4(true)?;
    let socket = UdpSocket::from_std(socket.into())?;
    let cookie = format!("{:016x}", rand::random::<u64>());
    let host = format!("{group}:{}", config.port);
    let target = SocketAddr::V4(SocketAddrV4::new(group, config.port));
    Ok(tokio::spawn(run(
        socket,
        host,
        target,
        cookie,
        listen_port,
        registry,
    )))
}

async fn run(
    socket: UdpSocket,
    host: String,
    target: SocketAddr,
    cookie: String,
    listen_port: u16,
    registry: Arc<dyn Registry>,
) {
    let mut last_announced: HashMap<InfoHash, Instant> = HashMap::new();
    let mut last_sent: Option<Instant> = None;
    let mut buf = vec![0u8; MAX_PACKET + 1];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            res = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = res else { continue };
                let Some(a) = Announce::decode(&buf[..n]) else { continue };
                if a.cookie.as_deref() == Some(cookie.as_str()) {
                    continue; // our own, looped back
                }
                let ours = registry.info_hashes();
                for h in a.info_hashes.iter().filter(|h| ours.contains(h)) {
                    registry.deliver(*h, SocketAddr::new(from.ip(), a.port));
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if last_sent.is_some_and(|t| now.duration_since(t) < MIN_GAP) {
                    continue;
                }
                let ours = registry.info_hashes();
                last_announced.retain(|h, _| ours.contains(h));
                let due: Vec<InfoHash> = ours
                    .into_iter()
                    .filter(|h| last_announced.get(h).is_none_or(|t| now.duration_since(*t) >= ANNOUNCE_INTERVAL))
                    .take(MAX_INFOHASHES)
                    .collect();
                if due.is_empty() {
                    continue;
                }
                let packet = Announce {
                    port: listen_port,
                    info_hashes: due.clone(),
                    cookie: Some(cookie.clone()),
                }
                .encode(&host);
                match socket.send_to(&packet, target).await {
                    Ok(_) => {
                        for h in due {
                            last_announced.insert(h, now);
                        }
                    }
                    Err(e) => tracing::debug!("LSD announce failed: {e}"),
                }
                last_sent = Some(now);
            }
        }
    }
}
