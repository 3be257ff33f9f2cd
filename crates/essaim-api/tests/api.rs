//! The native HTTP API on 127.0.0.1, endpoint by endpoint, with its errors:
//! every error is a 4xx with a JSON body naming what was wrong.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = r.bytes().await.unwrap();
    let v = if body.is_empty() {
        Value::Null
    } else {
        assert!(ctype.starts_with("application/json"), "{status}: {ctype}");
        serde_json::from_slice(&body).unwrap()
    };
    (status, v)
}

/// An error reply: its status and `error` kind, with a message.
async fn error_of(r: reqwest::Response) -> (StatusCode, String) {
    let (status, v) = json_of(r).await;
    assert!(status.is_client_error(), "not a 4xx: {status} {v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {v}"
    );
    (status, v["error"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torrents_endpoints_and_their_errors() {
    let n = Node::start(|_, _| {}).await;
    let h = &n.http;
    let (s, v) = json_of(h.get(n.url("/api/v1/torrents")).send().await.unwrap()).await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));

    // Add a magnet (201), again (200, same id).
    let body = json!({"magnet": magnet("ab"), "paused": true});
    let (s, v) = json_of(
        h.post(n.url("/api/v1/torrents"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["existed"], false);
    let mid = v["id"].as_u64().unwrap();
    let (s, v) = json_of(
        h.post(n.url("/api/v1/torrents"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["id"].as_u64(), v["existed"].as_bool()),
        (StatusCode::OK, Some(mid), Some(true))
    );

    // Upload a .torrent (multipart), into a subfolder, with a selection.
    let bytes = torrent(n.dir.path(), "up", 3);
    let form = reqwest::multipart::Form::new()
        .part(
            "torrent",
            reqwest::multipart::Part::bytes(bytes.clone()).file_name("up.torrent"),
        )
        .text("save_path", "sub")
        .text("paused", "true")
        .text("files", "1");
    let (s, v) = json_of(
        h.post(n.url("/api/v1/torrents"))
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tid = v["id"].as_u64().unwrap();
    let ih = v["info_hash"].as_str().unwrap().to_owned();

    // By id and by infohash prefix.
    for key in [tid.to_string(), ih[..8].to_owned(), ih.to_uppercase()] {
        let (s, v) = json_of(
            h.get(n.url(&format!("/api/v1/torrents/{key}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["id"].as_u64(), Some(tid));
        assert_eq!(v["state"], "paused");
        assert_eq!(v["files"], json!([1]));
        assert!(v["save_path"].as_str().unwrap().ends_with("/dl/sub"), "{v}");
    }
    let (s, v) = json_of(h.get(n.url("/api/v1/torrents")).send().await.unwrap()).await;
    assert_eq!((s, v.as_array().unwrap().len()), (StatusCode::OK, 2));
    assert!(
        v[0].get("state").is_some() && v[0].get("options").is_none(),
        "list items"
    );
    let (_, full) = json_of(
        h.get(n.url("/api/v1/torrents?full=true"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(full[1]["options"].is_object(), "full records");
    assert_eq!(full[1]["id"], tid);
    let (s, _) = error_of(
        h.get(n.url("/api/v1/torrents?full=maybe"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Files, trackers, pieces, peers, the .torrent itself.
    let (_, files) = json_of(
        h.get(n.url(&format!("/api/v1/torrents/{tid}/files")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(files.as_array().unwrap().len(), 2);
    assert_eq!(files[0]["path"], "up/a.bin");
    assert_eq!(
        (files[0]["wanted"].as_bool(), files[1]["wanted"].as_bool()),
        (Some(false), Some(true))
    );
    let (_, pieces) = json_of(
        h.get(n.url(&format!("/api/v1/torrents/{tid}/pieces")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(pieces["count"], 4);
    let (_, pieces) = json_of(
        h.get(n.url(&format!("/api/v1/torrents/{mid}/pieces")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        pieces,
        json!({"count": 0, "states": ""}),
        "a magnet without metadata"
    );
    let (s, peers) = json_of(
        h.get(n.url(&format!("/api/v1/torrents/{tid}/peers")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, peers), (StatusCode::OK, json!([])));
    let (s, _) = json_of(
        h.get(n.url(&format!("/api/v1/torrents/{tid}/trackers")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let r = h
        .get(n.url(&format!("/api/v1/torrents/{tid}/torrent")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-bittorrent");
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
    let (s, kind) = error_of(
        h.get(n.url(&format!("/api/v1/torrents/{mid}/torrent")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, kind.as_str()), (StatusCode::NOT_FOUND, "not_found"));

    // Actions.
    for action in ["resume", "pause", "recheck", "reannounce"] {
        let r = h
            .post(n.url(&format!("/api/v1/torrents/{tid}/{action}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{action}");
    }
    let r = h
        .post(n.url(&format!("/api/v1/torrents/{tid}/start")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, v) = json_of(
        h.get(n.url(&format!("/api/v1/torrents/{tid}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["forced"], true);
    let r = h
        .post(n.url(&format!("/api/v1/torrents/{tid}/start")))
        .json(&json!({"force": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = h
        .post(n.url(&format!("/api/v1/torrents/{tid}/queue")))
        .json(&json!({"move": "top"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, v) = json_of(
        h.get(n.url(&format!("/api/v1/torrents/{tid}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (v["forced"].as_bool(), v["queue_position"].as_u64()),
        (Some(false), Some(0))
    );

    // Options.
    let (s, v) = json_of(
        h.patch(n.url(&format!("/api/v1/torrents/{tid}/options")))
            .json(&json!({"upload_limit": 50000, "seed_ratio": 2.5, "seed_time": "unlimited", "files": null}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["options"]["upload_limit"], 50000);
    assert_eq!(v["options"]["seed_ratio"], 2.5);
    assert_eq!(v["options"]["seed_time"], "unlimited");
    assert_eq!(v["options"]["seed_idle_time"], "session");
    assert_eq!(v["files"], Value::Null);
    let (s, v) = json_of(
        h.patch(n.url(&format!("/api/v1/torrents/{tid}/options")))
            .json(&json!({"upload_limit": null}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["options"]["upload_limit"].clone()),
        (StatusCode::OK, Value::Null)
    );
    for (bad, why) in [
        (json!({"upload_limt": 5}), "unknown field"),
        (json!({"upload_limit": 0}), "0"),
        (json!({"upload_limit": -1}), "invalid"),
        (json!({"seed_ratio": "lots"}), "variant"),
        (json!({"files": [9]}), "out of range"),
        (json!({"max_peers": 0}), "at least 1"),
    ] {
        let (s, _) = error_of(
            h.patch(n.url(&format!("/api/v1/torrents/{tid}/options")))
                .json(&bad)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad} ({why})");
    }

    // Input errors: each a 4xx with a JSON reason.
    let cases: Vec<(reqwest::RequestBuilder, StatusCode)> = vec![
        (h.get(n.url("/api/v1/torrents/99")), StatusCode::NOT_FOUND),
        (h.get(n.url("/api/v1/torrents/zz!")), StatusCode::NOT_FOUND),
        (h.get(n.url("/api/v1/nothing")), StatusCode::NOT_FOUND),
        (
            h.post(n.url("/api/v1/torrents"))
                .body("{not json")
                .header("content-type", "application/json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            h.post(n.url("/api/v1/torrents"))
                .body("x")
                .header("content-type", "text/plain"),
            StatusCode::BAD_REQUEST,
        ),
        (
            h.post(n.url("/api/v1/torrents"))
                .json(&json!({"magnet": "magnet:?xt=urn:btih:zz"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            h.post(n.url("/api/v1/torrents"))
                .json(&json!({"magnet": magnet("cd"), "peers": ["nope"]})),
            StatusCode::BAD_REQUEST,
        ),
        (
            h.post(n.url("/api/v1/torrents"))
                .json(&json!({"magnet": magnet("cd"), "colour": 1})),
            StatusCode::BAD_REQUEST,
        ),
        (
            h.post(n.url("/api/v1/torrents"))
                .multipart(reqwest::multipart::Form::new().text("paused", "true")),
            StatusCode::BAD_REQUEST,
        ),
        (
            h.post(n.url("/api/v1/torrents"))
                .multipart(reqwest::multipart::Form::new().part(
                    "torrent",
                    reqwest::multipart::Part::bytes(b"d4:spam".to_vec()),
                )),
            StatusCode::BAD_REQUEST,
        ),
        (
            h.post(n.url(&format!("/api/v1/torrents/{tid}/queue")))
                .json(&json!({"move": "sideways"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            h.delete(n.url(&format!("/api/v1/torrents/{tid}?delete_data=maybe"))),
            StatusCode::BAD_REQUEST,
        ),
        (
            h.post(n.url("/api/v1/torrents/1/pause"))
                .body("junk")
                .header("content-type", "application/json"),
            StatusCode::NO_CONTENT,
        ),
    ];
    for (req, want) in cases {
        let r = req.send().await.unwrap();
        if want.is_success() {
            assert_eq!(r.status(), want);
            continue;
        }
        let (s, _) = error_of(r).await;
        assert_eq!(s, want);
    }
    let r = h.put(n.url("/api/v1/torrents")).send().await.unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );

    // Session, settings.
    let (s, v) = json_of(h.get(n.url("/api/v1/session")).send().await.unwrap()).await;
    assert_eq!((s, v["torrents"].as_u64()), (StatusCode::OK, Some(2)));
    let (s, v) = json_of(
        h.patch(n.url("/api/v1/settings"))
            .json(&json!({"max_active_downloads": null, "upload_limit": 123456, "seed_limit_action": "remove"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["max_active_downloads"].clone(), v["upload_limit"].clone()),
        (Value::Null, json!(123456))
    );
    let (_, v) = json_of(h.get(n.url("/api/v1/settings")).send().await.unwrap()).await;
    assert_eq!(v["seed_limit_action"], "remove");
    for bad in [
        json!({"max_peers": 0}),
        json!({"seed_ratio": -1}),
        json!({"speed": 1}),
        json!({"upload_limit": 0}),
    ] {
        let (s, _) = error_of(
            h.patch(n.url("/api/v1/settings"))
                .json(&bad)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }

    // Remove: 204, then 404.
    let r = h
        .delete(n.url(&format!("/api/v1/torrents/{mid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (s, _) = error_of(
        h.delete(n.url(&format!("/api/v1/torrents/{mid}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let r = h
        .delete(n.url(&format!("/api/v1/torrents/{tid}?delete_data=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    n.stop().await;
}

/// Metrics in the Prometheus text format, and the OpenAPI document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_openapi() {
    let n = Node::start(|_, _| {}).await;
    let body = json!({"magnet": magnet("ef"), "paused": true});
    n.http
        .post(n.url("/api/v1/torrents"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let r = n.http.get(n.url("/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    for want in [
        "# TYPE essaim_torrents gauge",
        "essaim_torrents{state=\"paused\"} 1",
        "# TYPE essaim_downloaded_bytes_total counter",
        "essaim_torrent_state{id=\"1\",infohash=\"efefefefefefefefefefefefefefefefefefefef\",name=\"mef\",state=\"paused\"} 1",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // Every sample line is `name{labels} value` with a number.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(line.starts_with("essaim_"), "{line}");
    }
    let (s, doc) = json_of(
        n.http
            .get(n.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/v1/torrents",
        "/api/v1/torrents/{id}/options",
        "/api/v1/events",
        "/api/v1/settings",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
    // A path parameter is one the path template names; the rest are in
    // the query (a query parameter documented as in the path is one no
    // client can send).
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for param in op["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap();
                if param["in"] == "path" {
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: `{name}` in the path"
                    );
                }
            }
        }
    }
    n.stop().await;
}

/// Live events: a subscriber sees a torrent added and its state changes,
/// in order, as Server-Sent Events; one that does not read loses events
/// (and is told so) instead of making the node buffer them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events() {
    let n = Node::start(|_, _| {}).await;
    let mut r = n.http.get(n.url("/api/v1/events")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let body = json!({"magnet": magnet("12"), "paused": true});
    let (_, v) = json_of(
        n.http
            .post(n.url("/api/v1/torrents"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = v["id"].as_u64().unwrap();
    n.http
        .post(n.url(&format!("/api/v1/torrents/{id}/resume")))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let got = tokio::time::timeout(BOUND, async {
        while let Some(chunk) = r.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("\"state\":\"fetching_metadata\"") {
                return;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "events seen: {text}");
    let added = text.find("event: added").expect("added");
    let paused = text.find("\"state\":\"paused\"").expect("paused");
    let fetching = text.find("\"state\":\"fetching_metadata\"").unwrap();
    assert!(added < paused && paused < fetching, "{text}");
    drop(r);

    // A subscriber that does not read: a raw socket with a small receive
    // buffer, then many events.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(n.addr).await.unwrap();
    s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 256];
    let k = s.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..k]).starts_with("HTTP/1.1 200"));
    for i in 0..1500u32 {
        let m = format!("magnet:?xt=urn:btih:{:040x}", 0x1000 + i);
        let (_, v) = json_of(
            n.http
                .post(n.url("/api/v1/torrents"))
                .json(&json!({"magnet": m, "paused": true}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let id = v["id"].as_u64().unwrap();
        n.http
            .delete(n.url(&format!("/api/v1/torrents/{id}")))
            .send()
            .await
            .unwrap();
    }
    // Now read: somewhere the stream says events were lost.
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let found = tokio::time::timeout(BOUND, async {
        loop {
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0, "stream ended");
            all.extend_from_slice(&buf[..k]);
            if all.windows(13).any(|w| w == b"event: lagged") {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no `lagged` event after {} bytes", all.len());
    n.stop().await;
}

/// The status line a raw request head gets, the body never sent: the node
/// must answer from the declared length alone. (Sending the body too would
/// race the node closing the connection: a reset can destroy the answer.)
async fn status_of_head(addr: std::net::SocketAddr, head: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a head alone");
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// An upload over 16 MiB is refused with 413 (and a JSON reason), without
/// the node taking it all in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_upload() {
    let n = Node::start(|_, _| {}).await;
    // A body over the limit is refused from its declared length.
    let line = status_of_head(
        n.addr,
        &format!(
            "POST /api/v1/torrents HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Type: multipart/form-data; boundary=b\r\n\
             Content-Length: {}\r\n\r\n",
            17 * 1024 * 1024
        ),
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 413"), "{line}");
    let line = status_of_head(
        n.addr,
        &format!(
            "POST /api/v1/torrents/1/queue HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            2 * 1024 * 1024
        ),
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 413"), "{line}");
    // A body over the limit without a declared length (chunked) is cut off
    // while it streams in: 413 with a JSON reason.
    let mut big = b"--b\r\nContent-Disposition: form-data; name=\"torrent\"; \
                    filename=\"big.torrent\"\r\n\r\n"
        .to_vec();
    big.resize(big.len() + 17 * 1024 * 1024, b'x');
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = n
        .http
        .post(n.url("/api/v1/torrents"))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(body)
        .send()
        .await;
    // The node may close the connection before the client has written it
    // all; when the answer does arrive it must be the 413.
    if let Ok(r) = r {
        let (s, kind) = error_of(r).await;
        assert_eq!(
            (s, kind.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        );
    }
    // Request heads have a size limit too.
    let r = n
        .http
        .get(n.url("/api/v1/torrents"))
        .header("x-big", "y".repeat(100 * 1024))
        .send()
        .await;
    assert!(r.is_err() || r.unwrap().status().is_client_error());
    n.stop().await;
}

/// A request whose body does not come gets 408 with a JSON reason once the
/// request time is up, and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_times_out_with_a_reason() {
    let n = Node::start(|c, _| c.request_timeout = std::time::Duration::from_millis(500)).await;
    let mut s = tokio::net::TcpStream::connect(n.addr).await.unwrap();
    s.write_all(
        b"POST /api/v1/torrents HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(BOUND, s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "no answer to a request whose body never came");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    assert_eq!(v["error"], "timeout", "{text}");
    // The node still answers.
    let r = n.http.get(n.url("/api/v1/torrents")).send().await.unwrap();
    assert!(r.status().is_success());
    n.stop().await;
}
