//! DHT nodes on 127.0.0.1 with real UDP sockets: they bootstrap from one
//! another, one announces, another finds it; a node restarted from its
//! saved table needs no bootstrap.

use std::net::SocketAddr;
use std::time::Duration;

use essaim::dht::{decode_state, DhtConfig, DhtHandle};
use essaim_core::InfoHash;
use tokio::net::UdpSocket;
use tokio::time::{sleep, timeout, Instant};

async fn socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

fn config(bootstrap: Vec<SocketAddr>) -> DhtConfig {
    DhtConfig {
        bootstrap,
        allow_local: true,
        ..DhtConfig::default()
    }
}

async fn node(bootstrap: Vec<SocketAddr>) -> DhtHandle {
    DhtHandle::spawn(socket().await, config(bootstrap), None)
}

async fn wait_for(what: &str, max: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + max;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dht_loopback_nodes_find_an_announced_peer() {
    let a = node(Vec::new()).await;
    let boot = vec![a.local_addr().unwrap()];
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(node(boot.clone()).await);
    }
    wait_for("routing tables", Duration::from_secs(10), || {
        a.routing_table_len() >= 3 && others.iter().all(|n| n.routing_table_len() >= 3)
    })
    .await;
    // The second node announces; its own search finds nobody yet.
    let h = InfoHash([0x5a; 20]);
    let _announcing = others[0].get_peers(h, Some(7777)).await;
    let want: SocketAddr = "127.0.0.1:7777".parse().unwrap();
    // The last node looks until a lookup returns the announce.
    let found = timeout(Duration::from_secs(20), async {
        loop {
            let mut rx = others[3].get_peers(h, None).await;
            if let Ok(Some(peers)) = timeout(Duration::from_secs(1), rx.recv()).await {
                if peers.contains(&want) {
                    return peers;
                }
            }
            sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the announced peer is found");
    assert_eq!(found, vec![want], "only the announced peer");
    for n in others {
        n.shutdown().await.unwrap();
    }
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn dht_restart_needs_no_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dht.dat");
    let a = node(Vec::new()).await;
    let c = node(vec![a.local_addr().unwrap()]).await;
    let b = DhtHandle::spawn(
        socket().await,
        config(vec![a.local_addr().unwrap()]),
        Some(state.clone()),
    );
    wait_for("b's table", Duration::from_secs(10), || {
        b.routing_table_len() >= 2
    })
    .await;
    b.shutdown().await.unwrap();
    let saved = decode_state(&std::fs::read(&state).unwrap()).unwrap();
    assert!(saved.nodes.len() >= 2, "{saved:?}");
    assert!(saved
        .nodes
        .iter()
        .any(|(_, addr)| Some(*addr) == a.local_addr()));
    let id = saved.id.expect("the node id is saved");
    // Restarted with no bootstrap address, it reaches the saved nodes.
    let b2 = DhtHandle::spawn(socket().await, config(Vec::new()), Some(state.clone()));
    wait_for("b2's table", Duration::from_secs(10), || {
        b2.routing_table_len() >= 2
    })
    .await;
    // It kept its id: the state it saves again names the same one.
    b2.shutdown().await.unwrap();
    let again = decode_state(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(again.id, Some(id), "the node id survives a restart");
    let b2 = DhtHandle::spawn(socket().await, config(Vec::new()), Some(state.clone()));
    wait_for("b2's table again", Duration::from_secs(10), || {
        b2.routing_table_len() >= 2
    })
    .await;
    // And it is a full participant: c finds what b2 announces.
    let h = InfoHash([0x77; 20]);
    let _announcing = b2.get_peers(h, Some(4242)).await;
    let want: SocketAddr = "127.0.0.1:4242".parse().unwrap();
    timeout(Duration::from_secs(20), async {
        loop {
            let mut rx = c.get_peers(h, None).await;
            if let Ok(Some(peers)) = timeout(Duration::from_secs(1), rx.recv()).await {
                if peers.contains(&want) {
                    return;
                }
            }
            sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the announce of the restarted node is found");
    b2.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn dht_hostile_state_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dht.dat");
    std::fs::write(&state, b"not bencode at all").unwrap();
    let a = node(Vec::new()).await;
    let b = DhtHandle::spawn(
        socket().await,
        config(vec![a.local_addr().unwrap()]),
        Some(state.clone()),
    );
    wait_for("b's table", Duration::from_secs(10), || {
        b.routing_table_len() >= 1
    })
    .await;
    b.shutdown().await.unwrap();
    assert!(!decode_state(&std::fs::read(&state).unwrap())
        .unwrap()
        .nodes
        .is_empty());
    a.shutdown().await.unwrap();
}
