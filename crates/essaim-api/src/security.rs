//! Who may drive the node, and from where: one layer in front of every
//! adapter (the native API, metrics, and the adapters to come).
//!
//! In order, for each request:
//! 1. **Host** (DNS rebinding, Transmission's CVE-2018-5702): the `Host`
//!    header must name this node: `localhost`, an IP literal, or a name
//!    listed in the configuration; anything else gets 421. A page on
//!    `evil.example` that rebinds its name to 127.0.0.1 still sends
//!    `Host: evil.example`, which no browser lets it change.
//! 2. **Ban**: an address with [`MAX_FAILURES`] failed logins in a row is
//!    refused (403) for [`BAN_FOR`] (both configurable; 0 failures: never).
//! 3. **Cross-site requests** (CSRF): a request that changes state (any
//!    method but GET, HEAD, OPTIONS) whose `Origin`, or lacking one
//!    `Referer`, names another host than `Host`, or whose
//!    `Sec-Fetch-Site` is `cross-site`/`same-site`, gets 403. Tools that
//!    send none of these headers (curl, scripts, the remote-control
//!    subcommands) are not browsers and pass.
//! 4. **Credentials**: requests from a loopback address need none unless
//!    the configuration says so (as Transmission and qBittorrent default);
//!    from any other address, one of: the API token as
//!    `Authorization: Bearer`, the user and password as HTTP Basic, or the
//!    session cookie that `POST /api/v1/login` sets (HttpOnly,
//!    SameSite=Strict). Secrets are compared as SHA-256 digests in
//!    constant time. A wrong token, password or Basic pair counts as a
//!    failed login; a missing one does not.
//!
//! Every response also gets `X-Content-Type-Options: nosniff`,
//! `X-Frame-Options: DENY`, a CSP forbidding framing, and `Cache-Control:
//! no-store`; no response ever has `Access-Control-Allow-Origin`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::Api;

/// Failed logins in a row from one address before it is banned (default).
pub const MAX_FAILURES: u32 = 5;
/// How long a ban lasts (default).
pub const BAN_FOR: Duration = Duration::from_secs(15 * 60);
/// Login sessions kept at most (the oldest goes first).
const MAX_SESSIONS: usize = 1024;
/// Addresses whose failures are remembered at most.
const MAX_TRACKED: usize = 16 * 1024;
/// A login session's life.
pub const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// The login cookie's name.
pub const COOKIE: &str = "essaim_session";

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Equality of two digests in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    banned_until: Option<Instant>,
}

/// The credentials a node accepts, and its memory of logins.
pub struct Auth {
    token: Option<[u8; 32]>,
    user: Option<(String, [u8; 32])>,
    salt: [u8; 16],
    loopback_free: bool,
    /// Failures before a ban (0: never), and its length.
    ban_after: u32,
    ban_for: Duration,
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl Auth {
    pub fn new(
        token: Option<&str>,
        user: Option<(&str, &str)>,
        loopback_without_auth: bool,
    ) -> Auth {
        let salt: [u8; 16] = rand::random();
        Auth {
            token: token.map(|t| digest(t.as_bytes())),
            user: user.map(|(u, p)| (u.to_owned(), Self::hash(&salt, p))),
            salt,
            loopback_free: loopback_without_auth,
            ban_after: MAX_FAILURES,
            ban_for: BAN_FOR,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Bans after `failures` failed logins in a row (0: never) for `ban_for`.
    pub fn with_ban(mut self, failures: u32, ban_for: Duration) -> Auth {
        self.ban_after = failures;
        // Ten years is forever enough, and `Instant` arithmetic stays sound.
        self.ban_for = ban_for.min(Duration::from_secs(10 * 365 * 86_400));
        self
    }

    fn hash(salt: &[u8; 16], password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(salt);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether anyone can authenticate at all (a token or a user).
    pub fn has_credentials(&self) -> bool {
        self.token.is_some() || self.user.is_some()
    }

    pub fn has_login(&self) -> bool {
        self.user.is_some()
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds left of `ip`'s ban, if banned.
    pub fn banned(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let f = self.failures();
        let until = f.get(&ip)?.banned_until?;
        (until > now).then(|| until.saturating_duration_since(now).as_secs().max(1))
    }

    /// A failed login from `ip`; the fifth in a row bans it.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut f = self.failures();
        if f.len() >= MAX_TRACKED && !f.contains_key(&ip) {
            // Forget bans that are over, then anything if still full.
            f.retain(|_, v| v.banned_until.is_some_and(|u| u > now));
            if f.len() >= MAX_TRACKED {
                f.clear();
            }
        }
        let e = f.entry(ip).or_default();
        if e.banned_until.is_some_and(|u| u <= now) {
            *e = Failures::default();
        }
        e.count += 1;
        if self.ban_after > 0 && e.count >= self.ban_after {
            tracing::warn!(%ip, "{} failed logins: banned for {} s", e.count, self.ban_for.as_secs());
            e.banned_until = Some(now + self.ban_for);
        }
    }

    fn succeeded(&self, ip: IpAddr) {
        let mut f = self.failures();
        if f.get(&ip).is_some_and(|e| e.banned_until.is_none()) {
            f.remove(&ip);
        }
    }

    /// Checks a user and password (the login form, HTTP Basic).
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        match &self.user {
            Some((u, h)) => {
                let ok_pass = same(h, &Self::hash(&self.salt, password));
                let ok_user = same(&digest(u.as_bytes()), &digest(user.as_bytes()));
                ok_pass & ok_user
            }
            None => false,
        }
    }

    /// A new login session; its cookie value.
    pub fn new_session(&self, now: Instant) -> String {
        let raw: [u8; 32] = rand::random();
        let value: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|_, exp| *exp > now);
        if s.len() >= MAX_SESSIONS {
            if let Some(oldest) = s.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k) {
                s.remove(&oldest);
            }
        }
        s.insert(digest(value.as_bytes()), now + SESSION_TTL);
        value
    }

    pub fn end_session(&self, value: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&digest(value.as_bytes()));
    }

    fn session_valid(&self, value: &str, now: Instant) -> bool {
        let s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.get(&digest(value.as_bytes())).is_some_and(|e| *e > now)
    }

    /// Whether the request carries valid credentials (see the module doc).
    pub fn check(&self, headers: &HeaderMap, peer: IpAddr, now: Instant) -> Result<(), ApiError> {
        if self.loopback_free && peer.is_loopback() {
            return Ok(());
        }
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let auth = auth.to_str().unwrap_or_default();
            let (scheme, value) = auth.split_once(' ').unwrap_or((auth, ""));
            let ok = if scheme.eq_ignore_ascii_case("bearer") {
                self.token
                    .as_ref()
                    .is_some_and(|t| same(t, &digest(value.trim().as_bytes())))
            } else if scheme.eq_ignore_ascii_case("basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                match decoded.as_deref().and_then(|d| d.split_once(':')) {
                    Some((u, p)) => self.check_password(u, p),
                    None => false,
                }
            } else {
                false
            };
            if ok {
                self.succeeded(peer);
                return Ok(());
            }
            self.failed(peer, now);
            return Err(ApiError::Unauthorized(
                "wrong credentials in the Authorization header".into(),
            ));
        }
        if let Some(v) = cookie(headers, COOKIE) {
            if self.session_valid(&v, now) {
                return Ok(());
            }
            return Err(ApiError::Unauthorized(
                "the login session expired: log in again".into(),
            ));
        }
        Err(ApiError::Unauthorized(
            "credentials required: the API token as `Authorization: Bearer TOKEN`, \
             or log in (POST /api/v1/login)"
                .into(),
        ))
    }
}

/// A cookie's value.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The host part of a `Host` header or an origin's authority, lowercase,
/// without the port (brackets kept for IPv6).
fn host_part(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if a.starts_with('[') {
        return match a.find(']') {
            Some(end) => a[..=end].to_owned(),
            None => a,
        };
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
        _ => a,
    }
}

/// Whether a `Host` header names this node (see the module doc).
pub fn host_allowed(host: &str, extra: &[String]) -> bool {
    let h = host_part(host);
    if h.starts_with('[') && h.ends_with(']') {
        return h[1..h.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
    }
    if h.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    if h == "localhost" || h == "localhost." {
        return true;
    }
    extra.iter().any(|e| e.eq_ignore_ascii_case(&h))
}

/// The authority (`host:port`) of an origin or URL, if it has one.
fn authority_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Why a state-changing request is refused as cross-site, if it is.
pub fn cross_site(method: &Method, headers: &HeaderMap) -> Option<String> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if !matches!(site, "same-origin" | "none") {
            return Some(format!(
                "a request from another site (Sec-Fetch-Site: {site})"
            ));
        }
    }
    let from = text(header::ORIGIN).or_else(|| text(header::REFERER));
    if let Some(from) = from {
        match authority_of(from) {
            Some(a) if a.eq_ignore_ascii_case(&host) => {}
            _ => return Some(format!("a request from another origin ({from})")),
        }
    }
    None
}

/// The layer in front of every route (see the module doc).
pub async fn guard(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let now = Instant::now();
    let res = check_request(&api, peer.ip(), &req, now);
    let mut resp = match res {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    resp
}

fn check_request(api: &Api, ip: IpAddr, req: &Request, now: Instant) -> Result<(), ApiError> {
    let headers = req.headers();
    if let Some(host) = headers.get(header::HOST) {
        let host = host.to_str().unwrap_or_default();
        if !host_allowed(host, &api.config.allowed_hosts) {
            return Err(ApiError::Misdirected(format!(
                "this node does not answer to the name {host:?} (add it to allowed_hosts \
                 in the configuration if it is really its name)"
            )));
        }
    }
    if let Some(secs) = api.auth.banned(ip, now) {
        return Err(ApiError::Banned(secs));
    }
    if let Some(why) = cross_site(req.method(), headers) {
        return Err(ApiError::Forbidden(format!(
            "refused {why}: state-changing requests must come from this node's own pages"
        )));
    }
    // Logging in is how credentials are made; everything else needs them.
    if req.uri().path() == "/api/v1/login" {
        return Ok(());
    }
    api.auth.check(headers, ip, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let extra = vec!["nas.local".to_owned()];
        for ok in [
            "localhost",
            "localhost:9080",
            "LOCALHOST.",
            "127.0.0.1:9080",
            "10.1.2.3",
            "[::1]:9080",
            "[fe80::1]",
            "nas.local:9080",
        ] {
            assert!(host_allowed(ok, &extra), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "[not-v6]",
            "",
            "nas.local.evil",
        ] {
            assert!(!host_allowed(bad, &extra), "{bad}");
        }
    }

    #[test]
    fn cross_site_requests() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        let host = ("host", "127.0.0.1:9080");
        assert!(cross_site(&Method::POST, &h(&[host])).is_none(), "curl");
        assert!(cross_site(
            &Method::POST,
            &h(&[host, ("origin", "http://127.0.0.1:9080")])
        )
        .is_none());
        assert!(cross_site(
            &Method::POST,
            &h(&[host, ("origin", "http://evil.example")])
        )
        .is_some());
        assert!(cross_site(&Method::POST, &h(&[host, ("origin", "null")])).is_some());
        assert!(cross_site(
            &Method::DELETE,
            &h(&[host, ("referer", "http://evil.example/x")])
        )
        .is_some());
        assert!(cross_site(
            &Method::POST,
            &h(&[host, ("referer", "http://127.0.0.1:9080/page")])
        )
        .is_none());
        assert!(cross_site(&Method::POST, &h(&[host, ("sec-fetch-site", "cross-site")])).is_some());
        assert!(cross_site(&Method::POST, &h(&[host, ("sec-fetch-site", "same-site")])).is_some());
        assert!(cross_site(&Method::GET, &h(&[host, ("origin", "http://evil.example")])).is_none());
    }

    #[test]
    fn credentials_and_bans() {
        let a = Auth::new(Some("tok"), Some(("me", "pw")), true);
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        let now = Instant::now();
        let hm = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(a
            .check(&HeaderMap::new(), "127.0.0.1".parse().unwrap(), now)
            .is_ok());
        assert!(matches!(
            a.check(&HeaderMap::new(), remote, now),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(a.check(&hm("Bearer tok"), remote, now).is_ok());
        assert!(a.check(&hm("Basic bWU6cHc="), remote, now).is_ok()); // me:pw
        for _ in 0..MAX_FAILURES - 1 {
            assert!(a.check(&hm("Bearer nope"), remote, now).is_err());
            assert!(a.banned(remote, now).is_none());
        }
        assert!(a.check(&hm("Basic bWU6bm8="), remote, now).is_err()); // me:no
        assert!(a.banned(remote, now).is_some());
        assert!(a.banned(remote, now + BAN_FOR).is_none(), "bans end");
        let s = a.new_session(now);
        let mut c = HeaderMap::new();
        c.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={s}")).unwrap(),
        );
        assert!(a.check(&c, remote, now).is_ok());
        assert!(a.check(&c, remote, now + SESSION_TTL).is_err(), "expired");
        a.end_session(&s);
        assert!(a.check(&c, remote, now).is_err());
        let strict = Auth::new(Some("tok"), None, false);
        assert!(strict
            .check(&HeaderMap::new(), "127.0.0.1".parse().unwrap(), now)
            .is_err());
    }
}
