//! HTTP adapters over the essaim library API: the native REST API with
//! live events ([`native`]), Prometheus metrics ([`metrics`]), and in one
//! place for all of them the rules of who may drive the node
//! ([`security`]: Host and Origin checks, credentials, bans) and where its
//! data may go ([`paths`]). An adapter never runs its own engine: every
//! handler calls [`essaim::Session`].
//!
//! Start with [`Api::new`] and [`Api::serve`].

pub mod dto;
pub mod error;
pub mod metrics;
pub mod native;
pub mod openapi;
pub mod paths;
pub mod security;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use essaim::Session;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::{ApiError, ErrorBody};

/// How the API is served and guarded.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Where to listen (default 127.0.0.1:9080).
    pub listen: SocketAddr,
    /// The API token (`Authorization: Bearer`), if any.
    pub token: Option<String>,
    /// A user and password (login form, HTTP Basic), if any.
    pub user: Option<(String, String)>,
    /// Requests from loopback need no credentials (default true).
    pub loopback_without_auth: bool,
    /// Host names this node answers to besides `localhost` and IP literals.
    pub allowed_hosts: Vec<String>,
    /// Download folders besides the configured one.
    pub allowed_roots: Vec<PathBuf>,
    /// Failed logins in a row that ban an address (0: never; default 5).
    pub ban_after: u32,
    /// How long a ban lasts (default 15 minutes).
    pub ban_for: Duration,
    /// How long a request may take until its answer starts (default 60 s;
    /// then 408 with a JSON reason). An event stream is not cut by it.
    pub request_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9080)),
            token: None,
            user: None,
            loopback_without_auth: true,
            allowed_hosts: Vec::new(),
            allowed_roots: Vec::new(),
            ban_after: security::MAX_FAILURES,
            ban_for: security::BAN_FOR,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to serve the API on {0}, which is not a loopback address, with no way to \
         authenticate: set an API token or a user and password, or listen on 127.0.0.1"
    )]
    NoAuth(SocketAddr),
    #[error("refusing to serve the API on {0} with `loopback_without_auth` and no credentials")]
    Unreachable(SocketAddr),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("the download folders cannot be set up: {0}")]
    Roots(std::io::Error),
}

/// What every handler shares.
#[derive(Clone)]
pub struct Api {
    pub session: Arc<Session>,
    pub auth: Arc<security::Auth>,
    pub roots: Arc<paths::Roots>,
    pub config: Arc<ApiConfig>,
}

impl Api {
    /// Checks the configuration (a non-loopback address needs a way to
    /// authenticate) and resolves the download roots.
    pub fn new(session: Arc<Session>, config: ApiConfig) -> Result<Api, StartError> {
        let auth = security::Auth::new(
            config.token.as_deref(),
            config.user.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
            config.loopback_without_auth,
        )
        .with_ban(config.ban_after, config.ban_for);
        if !config.listen.ip().is_loopback() && !auth.has_credentials() {
            return Err(StartError::NoAuth(config.listen));
        }
        let roots = paths::Roots::new(&session.settings().download_dir, &config.allowed_roots)
            .map_err(StartError::Roots)?;
        Ok(Api {
            session,
            auth: Arc::new(auth),
            roots: Arc::new(roots),
            config: Arc::new(config),
        })
    }

    /// The routes, with the security layer in front.
    pub fn router(&self) -> Router {
        const UPLOAD_MAX: usize = native::MAX_TORRENT_UPLOAD + 64 * 1024;
        const BODY_MAX: usize = 1024 * 1024;
        let torrents = Router::new()
            .route("/api/v1/torrents", get(native::list).post(native::add))
            .layer(DefaultBodyLimit::max(UPLOAD_MAX))
            .layer(axum::middleware::from_fn(|r, n| {
                declared_limit(UPLOAD_MAX, r, n)
            }));
        let rest = Router::new()
            .route(
                "/api/v1/torrents/{id}",
                get(native::get).delete(native::remove),
            )
            .route("/api/v1/torrents/{id}/pause", post(native::pause))
            .route("/api/v1/torrents/{id}/resume", post(native::resume))
            .route("/api/v1/torrents/{id}/recheck", post(native::recheck))
            .route("/api/v1/torrents/{id}/reannounce", post(native::reannounce))
            .route("/api/v1/torrents/{id}/start", post(native::start))
            .route("/api/v1/torrents/{id}/queue", post(native::queue))
            .route(
                "/api/v1/torrents/{id}/options",
                axum::routing::patch(native::options),
            )
            .route("/api/v1/torrents/{id}/files", get(native::files))
            .route(
                "/api/v1/torrents/{id}/peers",
                get(native::peers).post(native::add_peers),
            )
            .route("/api/v1/torrents/{id}/trackers", get(native::trackers))
            .route("/api/v1/torrents/{id}/pieces", get(native::pieces))
            .route("/api/v1/torrents/{id}/torrent", get(native::metainfo))
            .route("/api/v1/session", get(native::session))
            .route(
                "/api/v1/settings",
                get(native::settings).patch(native::set_settings),
            )
            .route("/api/v1/events", get(native::events))
            .route("/api/v1/login", post(native::login))
            .route("/api/v1/logout", post(native::logout))
            .route("/api/v1/openapi.json", get(openapi_doc))
            .route("/metrics", get(metrics::metrics))
            .layer(DefaultBodyLimit::max(BODY_MAX))
            .layer(axum::middleware::from_fn(|r, n| {
                declared_limit(BODY_MAX, r, n)
            }));
        torrents
            .merge(rest)
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(
                self.config.request_timeout,
                time_limit,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                security::guard,
            ))
            .with_state(self.clone())
    }

    /// Binds and serves until `stop` turns true; returns the address.
    pub async fn serve(
        &self,
        stop: watch::Receiver<bool>,
    ) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), StartError> {
        let listener = TcpListener::bind(self.config.listen)
            .await
            .map_err(|e| StartError::Listen(self.config.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Listen(self.config.listen, e))?;
        let router = self.router();
        Ok((addr, tokio::spawn(server::serve(listener, router, stop))))
    }
}

/// The default of [`ApiConfig::request_timeout`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Answers 408 with a JSON reason when a request (its body included) is not
/// answered within `limit`. What it asked of the session may still happen:
/// the handler is dropped, not the command it sent.
async fn time_limit(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(format!(
            "the request was not over within {} s (its body came too slowly, or the node \
             is busy); what it asked may still be done",
            limit.as_secs_f64()
        ))
        .into_response(),
    }
}

/// Refuses a body whose declared `Content-Length` is over `max` before a
/// byte of it is read (a body without a declared length is cut off by
/// `DefaultBodyLimit` as it streams in).
async fn declared_limit(
    max: usize,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > max as u64 => ApiError::TooLarge(format!(
            "a request body of {len} bytes is over the limit of {max} bytes"
        ))
        .into_response(),
        _ => next.run(request).await,
    }
}

async fn openapi_doc(
    axum::extract::State(api): axum::extract::State<Api>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
) -> impl IntoResponse {
    let anonymous = api.config.loopback_without_auth && peer.ip().is_loopback();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        openapi::json(anonymous),
    )
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> impl IntoResponse {
    let body = ErrorBody {
        error: "method_not_allowed".into(),
        message: format!("{method} is not allowed on {}", uri.path()),
    };
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body))
}
