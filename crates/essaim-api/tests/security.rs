//! Each rule of the API's security, attacked and refused: DNS rebinding,
//! cross-site requests, missing and wrong credentials, login brute force,
//! save paths escaping the allowed folders, framing and CORS headers, and
//! a binding beyond loopback without any way to authenticate.

mod common;

use std::sync::Arc;

use common::*;
use essaim_api::{Api, ApiConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn status_and_kind(r: reqwest::RequestBuilder) -> (StatusCode, String) {
    let r = r.send().await.unwrap();
    let s = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (s, v["error"].as_str().unwrap_or("").to_owned())
}

/// A page on another name that rebinds that name to 127.0.0.1 sends its
/// own name as Host: 421, before anything else happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_gets_421() {
    let n = Node::start(|c, _| c.allowed_hosts = vec!["nas.local".into()]).await;
    for host in [
        "evil.example",
        "evil.example:9080",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
    ] {
        for req in [
            n.http.get(n.url("/api/v1/torrents")),
            n.http
                .post(n.url("/api/v1/torrents"))
                .json(&json!({"magnet": magnet("aa")})),
            n.http.get(n.url("/metrics")),
        ] {
            let (s, kind) = status_and_kind(req.header("host", host)).await;
            assert_eq!(
                (s, kind.as_str()),
                (StatusCode::MISDIRECTED_REQUEST, "misdirected"),
                "{host}"
            );
        }
    }
    assert!(
        n.session.list().is_empty(),
        "a rebinding request added a torrent"
    );
    for host in ["localhost:1", "127.0.0.1", "[::1]:9", "nas.local:9080"] {
        let (s, _) =
            status_and_kind(n.http.get(n.url("/api/v1/torrents")).header("host", host)).await;
        assert_eq!(s, StatusCode::OK, "{host}");
    }
    n.stop().await;
}

/// A state-changing request from another origin (a form or fetch on some
/// web page) gets 403, whatever credentials it carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_get_403() {
    let n = Node::start(|_, _| {}).await;
    let own = format!("http://{}", n.addr);
    let add = || {
        n.http
            .post(n.url("/api/v1/torrents"))
            .json(&json!({"magnet": magnet("bb")}))
    };
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("referer", "http://evil.example/page.html"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let (s, kind) = status_and_kind(add().header(name, value).bearer_auth("secret")).await;
        assert_eq!(
            (s, kind.as_str()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{name}: {value}"
        );
    }
    assert!(n.session.list().is_empty());
    // From our own origin, or from a tool that sends none of these: fine.
    let (s, _) = status_and_kind(
        add()
            .header("origin", own.as_str())
            .header("sec-fetch-site", "same-origin"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = status_and_kind(n.http.delete(n.url("/api/v1/torrents/1"))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    n.stop().await;
}

/// Without loopback's free pass, every request needs credentials; wrong
/// ones five times ban the address; the token, HTTP Basic and the login
/// cookie each work; the cookie is HttpOnly and SameSite=Strict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_brute_force() {
    let n = Node::start(|c, _| {
        c.loopback_without_auth = false;
        c.user = Some(("me".into(), "pass phrase".into()));
    })
    .await;
    let list = || n.http.get(n.url("/api/v1/torrents"));
    let (s, kind) = status_and_kind(list()).await;
    assert_eq!(
        (s, kind.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let r = list().send().await.unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(
        status_and_kind(list().bearer_auth("secret")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status_and_kind(list().basic_auth("me", Some("pass phrase")))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        status_and_kind(n.http.get(n.url("/metrics"))).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Login: a cookie for a browser.
    let r = n
        .http
        .post(n.url("/api/v1/login"))
        .json(&json!({"username": "me", "password": "pass phrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(
        status_and_kind(list().header("cookie", pair.as_str()))
            .await
            .0,
        StatusCode::OK
    );
    let r = n
        .http
        .post(n.url("/api/v1/logout"))
        .header("cookie", pair.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status_and_kind(list().header("cookie", pair.as_str()))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // Brute force: four wrong attempts of any kind are refused...
    let wrong = [
        n.http
            .post(n.url("/api/v1/login"))
            .json(&json!({"username": "me", "password": "guess"})),
        list().bearer_auth("guess"),
        list().basic_auth("me", Some("guess")),
        n.http
            .post(n.url("/api/v1/login"))
            .json(&json!({"username": "admin", "password": "pass phrase"})),
    ];
    for w in wrong {
        let (s, kind) = status_and_kind(w).await;
        assert_eq!(
            (s, kind.as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
    }
    // ...the fifth bans the address: even the right token is refused now.
    let (s, _) = status_and_kind(list().bearer_auth("guess again")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, kind) = status_and_kind(list().bearer_auth("secret")).await;
    assert_eq!((s, kind.as_str()), (StatusCode::FORBIDDEN, "banned"));
    let (s, kind) = status_and_kind(
        n.http
            .post(n.url("/api/v1/login"))
            .json(&json!({"username": "me", "password": "pass phrase"})),
    )
    .await;
    assert_eq!((s, kind.as_str()), (StatusCode::FORBIDDEN, "banned"));
    n.stop().await;
}

/// Download folders outside the allowed roots are refused, whether by
/// `..`, an absolute path elsewhere, or a symbolic link inside a root that
/// points out of it; the same for moving data and for the default folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_paths_are_confined() {
    let n = Node::start(|c, dir| c.allowed_roots = vec![dir.join("extra")]).await;
    let dl = n.dir.path().join("dl");
    let outside = n.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, dl.join("escape")).unwrap();
    let add = |p: String| {
        n.http
            .post(n.url("/api/v1/torrents"))
            .json(&json!({"magnet": magnet("cc"), "save_path": p, "paused": true}))
    };
    for (p, want) in [
        ("../outside".to_owned(), StatusCode::BAD_REQUEST),
        (
            some_path(dl.join("a/../../outside")),
            StatusCode::BAD_REQUEST,
        ),
        (some_path(outside.clone()), StatusCode::FORBIDDEN),
        ("/etc".to_owned(), StatusCode::FORBIDDEN),
        (some_path(dl.join("escape")), StatusCode::FORBIDDEN),
        (
            some_path(dl.join("escape/new/deeper")),
            StatusCode::FORBIDDEN,
        ),
        ("".to_owned(), StatusCode::BAD_REQUEST),
    ] {
        let (s, _) = status_and_kind(add(p.clone())).await;
        assert_eq!(s, want, "{p}");
    }
    assert!(n.session.list().is_empty(), "a torrent was added");
    // Multipart too.
    let form = reqwest::multipart::Form::new()
        .part(
            "torrent",
            reqwest::multipart::Part::bytes(torrent(n.dir.path(), "t", 5)),
        )
        .text("save_path", some_path(outside.clone()));
    let (s, _) = status_and_kind(n.http.post(n.url("/api/v1/torrents")).multipart(form)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Allowed: under the download folder, or the extra root.
    let (s, _) = status_and_kind(add(some_path(n.dir.path().join("extra/x")))).await;
    assert_eq!(s, StatusCode::CREATED);
    let moved = |p: String| {
        n.http
            .patch(n.url("/api/v1/torrents/1/options"))
            .json(&json!({"save_path": p}))
    };
    assert_eq!(
        status_and_kind(moved(some_path(outside.clone()))).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status_and_kind(moved("../x".into())).await.0,
        StatusCode::BAD_REQUEST
    );
    let settings = |p: String| {
        n.http
            .patch(n.url("/api/v1/settings"))
            .json(&json!({"download_dir": p}))
    };
    assert_eq!(
        status_and_kind(settings(some_path(outside.clone())))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status_and_kind(settings("/".into())).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status_and_kind(settings(some_path(dl.join("sub")))).await.0,
        StatusCode::OK
    );
    assert!(!outside.join("mcc").exists() && std::fs::read_dir(&outside).unwrap().next().is_none());
    n.stop().await;
}

/// Framing and sniffing are forbidden on every reply, errors included, and
/// no reply allows other origins to read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_headers_on_every_reply() {
    let n = Node::start(|_, _| {}).await;
    for req in [
        n.http.get(n.url("/api/v1/torrents")),
        n.http.get(n.url("/api/v1/torrents/7")),
        n.http.get(n.url("/metrics")),
        n.http
            .get(n.url("/api/v1/torrents"))
            .header("host", "evil.example"),
        n.http
            .get(n.url("/api/v1/torrents"))
            .header("origin", "http://evil.example"),
    ] {
        let r = req.send().await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        assert!(!h.contains_key("access-control-allow-origin"));
    }
    n.stop().await;
}

/// Listening beyond loopback with no token and no user is refused at
/// start, with a message saying what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_open_api_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let session = Arc::new(
        essaim::Session::new(essaim::SessionConfig {
            listen_ip: [127, 0, 0, 1].into(),
            port: 0,
            lsd: false,
            dht: false,
            settings: essaim::Settings {
                download_dir: dir.path().to_path_buf(),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    let open = ApiConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        token: None,
        user: None,
        ..ApiConfig::default()
    };
    let err = Api::new(session.clone(), open).err().expect("refused");
    assert!(err.to_string().contains("no way to authenticate"), "{err}");
    let with_token = ApiConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        token: Some("t".into()),
        ..ApiConfig::default()
    };
    assert!(Api::new(session.clone(), with_token).is_ok());
    session.shutdown().await;
}
