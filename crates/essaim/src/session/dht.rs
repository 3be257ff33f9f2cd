//! The session's DHT node (BEP 5) on its listening address.

use std::net::{IpAddr, SocketAddr};

use super::SessionConfig;
use crate::dht::{DhtConfig, DhtHandle};

/// The well-known public DHT routers, the default bootstrap.
pub const DHT_ROUTERS: &[&str] = &[
    "router.bittorrent.com:6881",
    "router.utorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
];

/// Starts the session's DHT node on the listening address (UDP, same port
/// if free). `None` (with a warning) if no UDP socket can be had.
pub(super) async fn start_dht(config: &SessionConfig, listen: SocketAddr) -> Option<DhtHandle> {
    let socket = match tokio::net::UdpSocket::bind(listen).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("DHT: cannot bind UDP {listen} ({e}); using another port");
            match tokio::net::UdpSocket::bind(SocketAddr::new(listen.ip(), 0)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("the DHT is off: cannot bind a UDP socket: {e}");
                    return None;
                }
            }
        }
    };
    let loopback = config.listen_ip.is_loopback();
    let names: Vec<String> = match &config.dht_bootstrap {
        Some(list) => list.clone(),
        None if loopback => Vec::new(),
        None => DHT_ROUTERS.iter().map(|s| s.to_string()).collect(),
    };
    // Addresses now; names in the background (DNS may be slow or absent).
    let mut bootstrap: Vec<SocketAddr> = Vec::new();
    let mut names_to_resolve = Vec::new();
    for n in names {
        match n.parse() {
            Ok(addr) => bootstrap.push(addr),
            Err(_) => names_to_resolve.push(n),
        }
    }
    let names = names_to_resolve;
    let local = |ip: IpAddr| essaim_dht::id::is_local(ip);
    let mut dht_config = DhtConfig {
        // Loopback and LAN nodes are used when we listen on such an
        // address or were told to bootstrap from one.
        allow_local: (!config.listen_ip.is_unspecified() && local(config.listen_ip))
            || bootstrap.iter().any(|a| local(a.ip())),
        ipv6: listen.is_ipv6(),
        bootstrap,
        ..DhtConfig::default()
    };
    if loopback {
        // Every node here shares one address: a per-address reply budget
        // would starve them.
        dht_config.replies_per_ip = dht_config.replies_per_sec;
        dht_config.reply_burst_per_ip = dht_config.replies_per_sec;
    }
    let handle = DhtHandle::spawn(socket, dht_config, config.dht_state.clone());
    if !names.is_empty() {
        let commands = handle.bootstrap_sender();
        let v6 = listen.is_ipv6();
        tokio::spawn(async move {
            let mut found = Vec::new();
            for name in names {
                match tokio::net::lookup_host(name.as_str()).await {
                    Ok(addrs) => found.extend(addrs.filter(|a| a.is_ipv6() == v6)),
                    Err(e) => tracing::debug!("DHT bootstrap {name}: {e}"),
                }
            }
            if !found.is_empty() {
                commands(found);
            }
        });
    }
    Some(handle)
}
