//! HTTP(S) tracker client (BEP 3 §trackers, BEP 23, BEP 48) on reqwest.
//!
//! Hostile trackers are expected. Every request is bounded: one total
//! timeout (connect, headers and body), at most [`HttpConfig::max_redirects`]
//! redirects and only to `http`/`https`, a body cap checked against the
//! announced `Content-Length` and again while streaming (a body is never
//! buffered past the cap), and no transparent decompression (no gzip bombs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use essaim_core::InfoHash;
use essaim_wire::tracker::http::{
    parse_announce_response, parse_scrape_response, scrape_request_url, scrape_url,
    AnnounceRequest, AnnounceResponse, ScrapeEntry, TrackerError,
};

use super::AnnounceError;

/// Limits of the HTTP client.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Whole-request timeout (connect, send, headers and body). Default 15 s.
    pub timeout: Duration,
    /// Largest reply body accepted. Default 2 MiB.
    pub max_body: usize,
    /// Most redirects followed (http and https only). Default 3.
    pub max_redirects: usize,
    /// Most requests in flight at once to one tracker host (host and
    /// port); the others to it wait their turn. Ten thousand torrents
    /// starting at once would otherwise open ten thousand connections, each
    /// with its buffers, to the same tracker. Per host, so that a tracker
    /// that never answers holds up only its own announces. Default 50
    /// (libtorrent's `max_concurrent_http_announces`, there for all hosts).
    pub max_concurrent: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(15),
            max_body: 2 << 20,
            max_redirects: 3,
            max_concurrent: 50,
        }
    }
}

/// A redirect the policy refused.
#[derive(Debug, thiserror::Error)]
enum RedirectError {
    #[error("more than {0} redirects")]
    TooMany(usize),
    #[error("redirect to a `{0}` URL")]
    Scheme(String),
}

/// An HTTP client for trackers; one is shared by all the HTTP trackers of an
/// announcer (its connection pool with them).
#[derive(Debug, Clone)]
pub struct HttpTracker {
    client: reqwest::Client,
    max_body: usize,
    slots: Slots,
}

/// The requests in flight per tracker host ([`HttpConfig::max_concurrent`]).
/// A host's entry lives only while requests to it are in flight or
/// waiting, so the map is bounded by them.
#[derive(Debug, Clone)]
struct Slots {
    max: usize,
    hosts: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// A place in a host's queue; gives it back, and the host's entry once
/// nobody else holds or waits for it, when dropped.
struct Slot {
    slots: Slots,
    host: String,
    sem: Arc<Semaphore>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Slots {
    async fn take(&self, url: &str) -> Slot {
        let host = match reqwest::Url::parse(url) {
            Ok(u) => format!(
                "{}:{}",
                u.host_str().unwrap_or_default(),
                u.port_or_known_default().unwrap_or(0)
            ),
            Err(_) => String::new(),
        };
        let sem = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            hosts
                .entry(host.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.max)))
                .clone()
        };
        // Never closed: the wait ends with a permit.
        let permit = sem.clone().acquire_owned().await.ok();
        Slot {
            slots: self.clone(),
            host,
            sem,
            permit,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.permit = None;
        let mut hosts = self.slots.hosts.lock().unwrap_or_else(|e| e.into_inner());
        // Clones are made under this lock: the map's and ours mean nobody
        // else holds or waits for this host.
        if Arc::strong_count(&self.sem) == 2 {
            hosts.remove(&self.host);
        }
    }
}

impl HttpTracker {
    /// Builds the client with `config`'s limits.
    pub fn new(config: &HttpConfig) -> Result<Self, AnnounceError> {
        let max_redirects = config.max_redirects;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let scheme = attempt.url().scheme();
            if scheme != "http" && scheme != "https" {
                let scheme = scheme.to_owned();
                attempt.error(RedirectError::Scheme(scheme))
            } else if attempt.previous().len() > max_redirects {
                attempt.error(RedirectError::TooMany(max_redirects))
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("essaim/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .redirect(policy)
            .build()
            .map_err(AnnounceError::Http)?;
        Ok(HttpTracker {
            client,
            max_body: config.max_body,
            slots: Slots {
                max: config.max_concurrent.max(1),
                hosts: Arc::default(),
            },
        })
    }

    /// Announces to `announce_url` (BEP 3).
    pub async fn announce(
        &self,
        announce_url: &str,
        request: &AnnounceRequest,
    ) -> Result<AnnounceResponse, AnnounceError> {
        let body = self.get(&request.to_url(announce_url)).await?;
        parse_announce_response(&body).map_err(AnnounceError::from)
    }

    /// Scrapes `hashes` at the scrape URL derived from `announce_url`
    /// (BEP 48); [`AnnounceError::NoScrape`] if there is none.
    pub async fn scrape(
        &self,
        announce_url: &str,
        hashes: &[InfoHash],
    ) -> Result<Vec<(InfoHash, ScrapeEntry)>, AnnounceError> {
        let url = scrape_url(announce_url).ok_or(AnnounceError::NoScrape)?;
        let body = self.get(&scrape_request_url(&url, hashes)).await?;
        parse_scrape_response(&body).map_err(AnnounceError::from)
    }

    /// GETs `url` and returns the body, at most `max_body` bytes. A non-2xx
    /// status is an error, unless its body is a bencoded `failure reason`
    /// (some trackers send those with a 4xx status).
    async fn get(&self, url: &str) -> Result<Vec<u8>, AnnounceError> {
        let _slot = self.slots.take(url).await;
        let mut response = self.client.get(url).send().await?;
        let status = response.status();
        let too_large = AnnounceError::BodyTooLarge {
            limit: self.max_body,
        };
        if response
            .content_length()
            .is_some_and(|len| len > self.max_body as u64)
        {
            return Err(too_large);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if chunk.len() > self.max_body - body.len() {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            if let Err(TrackerError::Failure(reason)) = parse_announce_response(&body) {
                return Err(AnnounceError::Failure(reason));
            }
            return Err(AnnounceError::Status(status.as_u16()));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    //! Against hostile HTTP servers made of a bare `TcpListener`.
    use super::*;
    use essaim_core::PeerId;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::time::timeout;

    const BOUND: Duration = Duration::from_secs(10);

    /// Serves every connection with `reply(request_head)`, counting requests.
    async fn serve<F>(reply: F) -> (String, Arc<AtomicUsize>)
    where
        F: Fn(&str, &str) -> Vec<u8> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let (reply, count2, base2) = (Arc::new(reply), count.clone(), base.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (reply, count, base) = (reply.clone(), count2.clone(), base2.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let _ = stream.write_all(&reply(&head, &base)).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        (base, count)
    }

    /// A tracker that accepts connections and never answers: its announce
    /// URL, and the task holding the connections (abort it at the end).
    async fn silent() -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/announce", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                conns.push(s);
            }
        });
        (url, held)
    }

    fn ok(body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn redirect(to: &str) -> Vec<u8> {
        format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n").into_bytes()
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

    fn tracker(timeout: Duration) -> HttpTracker {
        HttpTracker::new(&HttpConfig {
            timeout,
            ..HttpConfig::default()
        })
        .unwrap()
    }

    async fn announce(base: &str) -> Result<AnnounceResponse, AnnounceError> {
        let url = format!("{base}/announce");
        timeout(BOUND, tracker(BOUND).announce(&url, &request()))
            .await
            .expect("bounded")
    }

    #[tokio::test]
    async fn failure_reason_and_garbage() {
        let (base, _) = serve(|_, _| ok(b"d14:failure reason6:bannede")).await;
        assert!(matches!(announce(&base).await, Err(AnnounceError::Failure(r)) if r == "banned"));
        let (base, _) = serve(|_, _| {
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 26\r\n\r\nd14:failure reason5:nope!e"
                .to_vec()
        })
        .await;
        assert!(matches!(announce(&base).await, Err(AnnounceError::Failure(r)) if r == "nope!"));
        let (base, _) = serve(|_, _| ok(b"<html>502 Bad Gateway</html>")).await;
        assert!(matches!(
            announce(&base).await,
            Err(AnnounceError::Reply(TrackerError::Bencode(_)))
        ));
        let (base, _) =
            serve(|_, _| b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
        assert!(matches!(
            announce(&base).await,
            Err(AnnounceError::Status(500))
        ));
    }

    #[tokio::test]
    async fn request_carries_the_query_and_reply_parses() {
        let (base, count) = serve(|head, _| {
            let line = head.lines().next().unwrap_or_default().to_owned();
            assert!(line.starts_with("GET /announce?info_hash=%07%07"), "{line}");
            assert!(line.contains("&left=10&compact=1&numwant=10 "), "{line}");
            ok(b"d8:intervali120e5:peers6:\x7f\x00\x00\x01\x1a\xe1e")
        })
        .await;
        let r = announce(&base).await.unwrap();
        assert_eq!(r.interval, 120);
        assert_eq!(r.peers, vec!["127.0.0.1:6881".parse().unwrap()]);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn huge_bodies_are_capped() {
        // Announced length too large: refused before reading the body.
        let (base, _) = serve(|_, _| {
            b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\nd8:interval".to_vec()
        })
        .await;
        assert!(matches!(
            announce(&base).await,
            Err(AnnounceError::BodyTooLarge { limit }) if limit == 2 << 20
        ));
        // No length, 3 MiB streamed until the connection closes.
        let (base, _) = serve(|_, _| {
            let mut r = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nd5:peers".to_vec();
            r.extend_from_slice(b"3145728:");
            r.resize(r.len() + (3 << 20), b'x');
            r
        })
        .await;
        assert!(matches!(
            announce(&base).await,
            Err(AnnounceError::BodyTooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn redirects_are_bounded() {
        let (base, count) = serve(|_, base| redirect(&format!("{base}/announce"))).await;
        let err = announce(&base).await.unwrap_err();
        assert!(
            matches!(&err, AnnounceError::Http(e) if e.is_redirect()),
            "{err}"
        );
        assert_eq!(
            count.load(Ordering::SeqCst),
            4,
            "the request and 3 redirects"
        );

        let (base, count) = serve(|_, _| redirect("ftp://127.0.0.1/announce")).await;
        let err = announce(&base).await.unwrap_err();
        assert!(
            matches!(&err, AnnounceError::Http(e) if e.is_redirect()),
            "{err}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 1);

        // A single redirect to a working tracker is followed.
        let (good, _) = serve(|_, _| ok(b"d8:intervali60e5:peers0:e")).await;
        let (base, _) = serve(move |_, _| redirect(&format!("{good}/announce"))).await;
        assert_eq!(announce(&base).await.unwrap().interval, 60);
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let (url, held) = silent().await;
        let started = tokio::time::Instant::now();
        let err = timeout(
            BOUND,
            tracker(Duration::from_millis(300)).announce(&url, &request()),
        )
        .await
        .expect("bounded")
        .unwrap_err();
        assert!(
            matches!(&err, AnnounceError::Http(e) if e.is_timeout()),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        held.abort();
    }

    /// Requests wait for one of `max_concurrent` slots: the server holds
    /// each request until the test lets one go, and never sees more than
    /// two at once from ten announces.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_in_flight_are_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/announce", listener.local_addr().unwrap());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (f, m, g) = (in_flight.clone(), most.clone(), gate.clone());
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (f, m, g) = (f.clone(), m.clone(), g.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    g.acquire().await.unwrap().forget();
                    f.fetch_sub(1, Ordering::SeqCst);
                    let _ = stream.write_all(&ok(b"d8:intervali60e5:peers0:e")).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        let t = HttpTracker::new(&HttpConfig {
            max_concurrent: 2,
            ..HttpConfig::default()
        })
        .unwrap();
        let mut all = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (t, url) = (t.clone(), url.clone());
            all.spawn(async move { t.announce(&url, &request()).await });
        }
        let ran = timeout(BOUND, async {
            for left in (1..=10usize).rev() {
                // Wait (bounded by BOUND) until the slots are full, then let
                // one request go.
                while in_flight.load(Ordering::SeqCst) < left.min(2) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                gate.add_permits(1);
            }
            while let Some(r) = all.join_next().await {
                assert_eq!(r.unwrap().unwrap().interval, 60);
            }
        })
        .await;
        assert!(ran.is_ok(), "announces did not all finish");
        assert_eq!(most.load(Ordering::SeqCst), 2);
        server.abort();
    }

    /// The bound is per tracker host: a tracker that holds every slot does
    /// not hold up another one, and its entry goes once it is idle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_tracker_holds_up_only_its_own_announces() {
        let (silent_url, held) = silent().await;
        let (base, _) = serve(|_, _| ok(b"d8:intervali60e5:peers0:e")).await;
        let t = HttpTracker::new(&HttpConfig {
            max_concurrent: 1,
            timeout: Duration::from_secs(60),
            ..HttpConfig::default()
        })
        .unwrap();
        let stuck = {
            let (t, url) = (t.clone(), silent_url.clone());
            tokio::spawn(async move { t.announce(&url, &request()).await })
        };
        // The silent host's one slot is taken (bounded wait).
        timeout(BOUND, async {
            loop {
                let taken = t
                    .slots
                    .hosts
                    .lock()
                    .unwrap()
                    .values()
                    .any(|s| s.available_permits() == 0);
                if taken {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("the silent tracker was never asked");
        let r = timeout(BOUND, t.announce(&format!("{base}/announce"), &request()))
            .await
            .expect("held up by another tracker");
        assert_eq!(r.unwrap().interval, 60);
        assert_eq!(t.slots.hosts.lock().unwrap().len(), 1, "idle host kept");
        stuck.abort();
        held.abort();
    }

    #[tokio::test]
    async fn scrape_uses_the_bep48_url() {
        let (base, _) = serve(|head, _| {
            assert!(head.starts_with("GET /scrape?info_hash=%07"), "{head}");
            let mut body = b"d5:filesd20:".to_vec();
            body.extend_from_slice(&[7; 20]);
            body.extend_from_slice(b"d8:completei2e10:downloadedi5e10:incompletei1eeee");
            ok(&body)
        })
        .await;
        let t = tracker(BOUND);
        let got = timeout(
            BOUND,
            t.scrape(&format!("{base}/announce"), &[InfoHash([7; 20])]),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            vec![(
                InfoHash([7; 20]),
                ScrapeEntry {
                    complete: 2,
                    incomplete: 1,
                    downloaded: 5
                }
            )]
        );
        assert!(matches!(
            t.scrape(&format!("{base}/a"), &[]).await,
            Err(AnnounceError::NoScrape)
        ));
    }
}
