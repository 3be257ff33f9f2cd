//! Hostile tracker replies, against essaim's HTTP and UDP tracker clients.
//!
//! Cases already covered next to the clients (`src/tracker/http.rs`,
//! `src/tracker/udp.rs`) and the codecs (`essaim-wire`): failure reasons and
//! HTML garbage, a 100 MB `Content-Length` and a 3 MiB streamed body,
//! endless redirects (3 followed) and a redirect to `ftp:`, a silent server;
//! UDP replies from another address, with another transaction id, or of 2
//! bytes; compact lists with a partial tail, intervals out of range. Here:
//! what those leave out, end to end through the clients.
//!
//! Limits asserted: a reply body is cut at 2 MiB while streaming (a 1 GiB
//! body is never held: memory grows by less than 16 MiB and the server
//! gets to write only a small part of it); gzip is never asked for nor
//! decoded (a gzip reply, even a bomb, is garbage); redirects go to `http`
//! and `https` only; intervals are clamped to 60 s..1 day (0 or negative
//! gives 30 min); a compact list's partial tail is ignored; UDP datagrams
//! that are too short are ignored, and error text is cut at 1 KiB.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use essaim::tracker::http::{HttpConfig, HttpTracker};
use essaim::tracker::udp::{UdpConfig, UdpTracker};
use essaim::tracker::{AnnounceError, AnnounceParams, AnnounceStats};
use essaim_core::{InfoHash, PeerId};
use essaim_wire::tracker::http::{AnnounceRequest, AnnounceResponse, TrackerError};
use essaim_wire::tracker::udp::{parse_request, UdpRequest, UdpResponse};
use essaim_wire::tracker::{DEFAULT_INTERVAL, MAX_INTERVAL, MAX_TEXT, MIN_INTERVAL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::{timeout, Instant};

const BOUND: Duration = Duration::from_secs(20);

/// Serves every HTTP connection with `reply(request_head)`.
async fn serve<F, Fut>(reply: F) -> String
where
    F: Fn(String, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                reply(head, stream).await;
            });
        }
    });
    base
}

/// A reply with `headers` and `body`, then the connection closes.
async fn respond(mut stream: TcpStream, headers: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

fn request() -> AnnounceRequest {
    AnnounceRequest {
        info_hash: InfoHash([7; 20]),
        peer_id: PeerId([b'p'; 20]),
        port: 6881,
        uploaded: 0,
        downloaded: 0,
        left: 10,
        event: None,
        numwant: Some(10),
        key: None,
        tracker_id: None,
        compact: true,
    }
}

async fn announce(base: &str) -> Result<AnnounceResponse, AnnounceError> {
    let tracker = HttpTracker::new(&HttpConfig::default()).unwrap();
    timeout(
        BOUND,
        tracker.announce(&format!("{base}/announce"), &request()),
    )
    .await
    .expect("the announce ends in time")
}

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib * 1024
}

/// `d8:intervali60e5:peers6:<127.0.0.1:6881>e`, gzipped (`gzip -n`).
const GZIPPED_REPLY: [u8; 51] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x4b, 0xb1, 0xb0, 0xca, 0xcc, 0x2b,
    0x49, 0x2d, 0x2a, 0x4b, 0xcc, 0xc9, 0x34, 0x33, 0x48, 0x35, 0xb5, 0x2a, 0x48, 0x4d, 0x2d, 0x2a,
    0x36, 0xb3, 0xaa, 0x67, 0x60, 0x60, 0x94, 0x7a, 0x98, 0x0a, 0x00, 0xe7, 0xf7, 0x3b, 0x2f, 0x1f,
    0x00, 0x00, 0x00,
];

/// A gzip member whose deflate stream (one fixed-Huffman block: a zero,
/// then `matches` copies of 258 bytes at distance 1, 13 bits each) inflates
/// to `1 + 258 * matches` zero bytes. The trailer's CRC is left 0: nobody
/// should get that far.
fn gzip_bomb(matches: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u32,
        n: u32,
    }
    impl Bits {
        fn put(&mut self, v: u32, n: u32) {
            self.acc |= v << self.n;
            self.n += n;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// A Huffman code, most significant bit first (RFC 1951 §3.1.1).
        fn code(&mut self, c: u32, n: u32) {
            for i in (0..n).rev() {
                self.put((c >> i) & 1, 1);
            }
        }
    }
    let mut b = Bits {
        out: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3],
        acc: 0,
        n: 0,
    };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // BTYPE 01: fixed Huffman codes
    b.code(0x30, 8); // literal 0
    for _ in 0..matches {
        b.code(0b1100_0101, 8); // length 258 (code 285)
        b.code(0, 5); // distance 1
    }
    b.code(0, 7); // end of block
    if b.n > 0 {
        b.out.push(b.acc as u8);
    }
    let size = (1 + 258 * matches as u64) as u32;
    b.out.extend_from_slice(&[0, 0, 0, 0]);
    b.out.extend_from_slice(&size.to_le_bytes());
    b.out
}

/// We never ask for compression (no `Accept-Encoding`) and never decode
/// it: a gzipped reply, valid inside, is garbage to us, and so is a gzip
/// bomb of 1 MiB that would inflate to 166 MB.
#[tokio::test]
async fn gzip_replies_are_never_decoded() {
    let base = serve(|head, stream| async move {
        assert!(
            !head.to_ascii_lowercase().contains("accept-encoding"),
            "{head}"
        );
        respond(stream, "Content-Encoding: gzip\r\n", &GZIPPED_REPLY).await
    })
    .await;
    let err = announce(&base).await.unwrap_err();
    assert!(
        matches!(err, AnnounceError::Reply(TrackerError::Bencode(_))),
        "{err}"
    );

    let matches = (1 << 20) * 8 / 13;
    let bomb = Arc::new(gzip_bomb(matches));
    assert!(bomb.len() < (1 << 20) + 32);
    let before = rss();
    let base = serve(move |_, stream| {
        let bomb = bomb.clone();
        async move {
            respond(
                stream,
                "Content-Encoding: gzip\r\nContent-Type: text/plain\r\n",
                &bomb,
            )
            .await
        }
    })
    .await;
    let started = Instant::now();
    let err = announce(&base).await.unwrap_err();
    assert!(
        matches!(err, AnnounceError::Reply(TrackerError::Bencode(_))),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let growth = rss().saturating_sub(before);
    assert!(growth < 16 << 20, "RSS grew by {growth} bytes");
}

/// A body of 1 GiB, streamed without a length: cut at the 2 MiB cap while
/// streaming. The server gets to write only a small part of it (what the
/// cap and the socket buffers take), and memory grows by less than 16 MiB.
#[tokio::test]
async fn gigabyte_body_is_cut_at_the_cap() {
    const GIB: u64 = 1 << 30;
    let written = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let done_tx = Arc::new(std::sync::Mutex::new(Some(done_tx)));
    let counter = written.clone();
    let base = serve(move |_, mut stream| {
        let (counter, done_tx) = (counter.clone(), done_tx.clone());
        async move {
            let head = format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nd5:peers{GIB}:");
            let _ = stream.write_all(head.as_bytes()).await;
            let chunk = vec![0u8; 64 * 1024];
            while counter.load(Ordering::SeqCst) < GIB {
                if stream.write_all(&chunk).await.is_err() {
                    break;
                }
                counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            if let Some(tx) = done_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    })
    .await;
    let before = rss();
    let started = Instant::now();
    let err = announce(&base).await.unwrap_err();
    assert!(
        matches!(err, AnnounceError::BodyTooLarge { limit } if limit == 2 << 20),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    timeout(BOUND, done_rx)
        .await
        .expect("the server sees the connection dropped")
        .unwrap();
    let sent = written.load(Ordering::SeqCst);
    assert!(sent < 64 << 20, "the server wrote {sent} bytes");
    let growth = rss().saturating_sub(before);
    assert!(growth < 16 << 20, "RSS grew by {growth} bytes");
}

/// Redirects to `file:`, `udp:` or `data:` URLs are not followed.
#[tokio::test]
async fn redirects_to_other_schemes_are_refused() {
    for to in [
        "file:///etc/passwd",
        "udp://127.0.0.1:1/announce",
        "data:text/plain,d8:intervali60e5:peers0:e",
    ] {
        let base = serve(move |_, mut stream| async move {
            let r = format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n");
            let _ = stream.write_all(r.as_bytes()).await;
        })
        .await;
        // Refused by our redirect policy, or not even taken for one (the
        // 302 is then the answer): either way an error, nothing followed.
        let err = announce(&base).await.unwrap_err();
        assert!(
            matches!(&err, AnnounceError::Http(e) if e.is_redirect())
                || matches!(err, AnnounceError::Status(302)),
            "{to}: {err}"
        );
    }
}

/// Compact lists whose length is not a multiple of 6 (18 for `peers6`):
/// the whole entries are kept, the tail ignored. Intervals of 0, negative,
/// 1 s or absurdly long are clamped.
#[tokio::test]
async fn odd_peer_lists_and_absurd_intervals() {
    let cases: [(&str, u32); 5] = [
        ("0", DEFAULT_INTERVAL),
        ("-7", DEFAULT_INTERVAL),
        ("1", MIN_INTERVAL),
        ("99999999999999", MAX_INTERVAL),
        ("900", 900),
    ];
    for (interval, want) in cases {
        let mut body = format!("d8:intervali{interval}e5:peers13:").into_bytes();
        body.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1, 127, 0, 0, 2, 0, 80, 9]);
        body.extend_from_slice(b"6:peers620:");
        let mut v6 = [0u8; 20];
        v6[15] = 1;
        v6[16..18].copy_from_slice(&[0, 7]);
        body.extend_from_slice(&v6);
        body.push(b'e');
        let base = serve(move |_, stream| {
            let body = body.clone();
            async move { respond(stream, "", &body).await }
        })
        .await;
        let r = announce(&base).await.unwrap();
        assert_eq!(r.interval, want, "interval {interval}");
        let want_peers: Vec<SocketAddr> = vec![
            "127.0.0.1:6881".parse().unwrap(),
            "127.0.0.2:80".parse().unwrap(),
            "[::1]:7".parse().unwrap(),
        ];
        assert_eq!(r.peers, want_peers, "interval {interval}");
    }
}

fn params() -> AnnounceParams {
    AnnounceParams {
        info_hash: InfoHash([7; 20]),
        peer_id: PeerId([b'p'; 20]),
        port: 6881,
        stats: AnnounceStats::default(),
        event: None,
        numwant: 25,
        key: 1,
    }
}

/// A fake UDP tracker on 127.0.0.1 and a client pointed at it.
async fn udp_setup() -> (UdpSocket, UdpTracker) {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let url = format!("udp://{}/announce", server.local_addr().unwrap());
    let config = UdpConfig {
        timeout_base: Duration::from_secs(3),
        max_retransmits: 1,
        ..UdpConfig::default()
    };
    (server, UdpTracker::new(&url, config).unwrap())
}

async fn udp_recv(server: &UdpSocket) -> (UdpRequest, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (len, from) = timeout(BOUND, server.recv_from(&mut buf))
        .await
        .expect("a request")
        .unwrap();
    (parse_request(&buf[..len]).unwrap(), from)
}

/// Answers the connect; returns the announce's transaction id and sender.
async fn udp_connect(server: &UdpSocket) -> (u32, SocketAddr) {
    let (UdpRequest::Connect { transaction_id }, from) = udp_recv(server).await else {
        panic!("expected a connect");
    };
    let r = UdpResponse::Connect {
        transaction_id,
        connection_id: 42,
    };
    server.send_to(&r.encode(false), from).await.unwrap();
    let (UdpRequest::Announce(a), from) = udp_recv(server).await else {
        panic!("expected an announce");
    };
    (a.transaction_id, from)
}

/// Datagrams with the right transaction id but too short (a header cut
/// anywhere) are ignored; the real reply, whose peer list has a partial
/// tail and whose interval is 0, is taken with the tail dropped and the
/// interval clamped.
#[tokio::test]
async fn udp_short_datagrams_and_odd_peer_lists() {
    let (server, mut client) = udp_setup().await;
    let tracker = async {
        let (tid, from) = udp_connect(&server).await;
        let mut good = Vec::new();
        good.extend_from_slice(&1u32.to_be_bytes()); // announce
        good.extend_from_slice(&tid.to_be_bytes());
        for n in [0u32, 3, 4] {
            good.extend_from_slice(&n.to_be_bytes()); // interval, leechers, seeders
        }
        good.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1, 127, 0, 0, 2, 0, 80, 1, 2, 3]);
        for cut in [4, 8, 12, 19] {
            server.send_to(&good[..cut], from).await.unwrap();
        }
        server.send_to(&good, from).await.unwrap();
    };
    let client_side = async {
        let r = client.announce(&params()).await.unwrap();
        assert_eq!(r.interval, DEFAULT_INTERVAL);
        let want: Vec<SocketAddr> = vec![
            "127.0.0.1:6881".parse().unwrap(),
            "127.0.0.2:80".parse().unwrap(),
        ];
        assert_eq!(r.peers, want);
    };
    timeout(BOUND, async { tokio::join!(tracker, client_side) })
        .await
        .expect("bounded");
}

/// An error reply with 64 KiB of text: a failure, its text cut at 1 KiB.
#[tokio::test]
async fn udp_error_text_is_bounded() {
    let (server, mut client) = udp_setup().await;
    let tracker = async {
        let (tid, from) = udp_connect(&server).await;
        let r = UdpResponse::Error {
            transaction_id: tid,
            message: "x".repeat(60_000),
        };
        server.send_to(&r.encode(false), from).await.unwrap();
    };
    let client_side = async {
        match client.announce(&params()).await {
            Err(AnnounceError::Failure(text)) => assert!(text.len() <= MAX_TEXT),
            other => panic!("{other:?}"),
        }
    };
    timeout(BOUND, async { tokio::join!(tracker, client_side) })
        .await
        .expect("bounded");
}
