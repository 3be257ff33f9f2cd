//! One error type for every HTTP adapter: each error becomes a status and
//! a JSON body `{"error": "<kind>", "message": "<what was wrong>"}`. Bad
//! input is always a 4xx; a 5xx means the node itself failed (a disk, the
//! session closing), never that a request was odd.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use essaim::SessionError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A short machine-readable kind: `bad_request`, `not_found`,
    /// `unauthorized`, `forbidden`, `banned`, `misdirected`,
    /// `too_large`, `timeout`, `conflict`, `unavailable`, `internal`.
    pub error: String,
    /// What was wrong, for a person.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// No credentials, or wrong ones.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed logins from this address.
    #[error("too many failed logins from this address; try again in {0} s")]
    Banned(u64),
    /// The Host header names no name of ours (DNS rebinding).
    #[error("{0}")]
    Misdirected(String),
    #[error("{0}")]
    TooLarge(String),
    /// The request was not over in time (a body sent too slowly, or a
    /// node too busy to answer).
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::Banned(_) => StatusCode::FORBIDDEN,
            ApiError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Banned(_) => "banned",
            ApiError::Misdirected(_) => "misdirected",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Timeout(_) => "timeout",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.kind().to_owned(),
            message: self.to_string(),
        };
        let mut r = (self.status(), axum::Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            // Bearer for scripts; no Basic challenge, so that a browser
            // never pops up its own login box for a page of ours.
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"essaim\""),
            );
        }
        r
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        let msg = e.to_string();
        match e {
            SessionError::NotFound(_) => ApiError::NotFound(msg),
            SessionError::InvalidTorrent(_)
            | SessionError::InvalidMagnet(_)
            | SessionError::Invalid(_) => ApiError::BadRequest(msg),
            SessionError::Torrent(t) => match t {
                essaim::TorrentError::Move(_) | essaim::TorrentError::UnsafePath { .. } => {
                    ApiError::Conflict(msg)
                }
                essaim::TorrentError::Other(_) => ApiError::BadRequest(msg),
                _ => ApiError::Internal(msg),
            },
            SessionError::Closed => ApiError::Unavailable(msg),
            _ => ApiError::Internal(msg),
        }
    }
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, ApiError>;
