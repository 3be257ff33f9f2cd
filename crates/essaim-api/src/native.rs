//! The native API under `/api/v1/`: an adapter over [`essaim::Session`],
//! each handler one call of the library API. Its OpenAPI document is
//! [`crate::openapi`]; the tests hold the server to it.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, Multipart, Path, Query, Request, State,
};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use essaim::{
    AddOptions, AddSource, Event, OptionsPatch, QueueMove, SeedLimitAction, SettingsPatch,
    TorrentId, TorrentState,
};
use futures_util::stream::Stream;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::dto::*;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::Api;

/// Largest .torrent accepted in an upload.
pub const MAX_TORRENT_UPLOAD: usize = 16 * 1024 * 1024;

/// A JSON body whose every rejection is an [`ApiError`] (a JSON reply).
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(r) => Err(rejection(r.status(), r.body_text())),
        }
    }
}

/// A rejection of axum's extractors, as an [`ApiError`].
pub fn rejection(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::BadRequest(format!("{text} (send `Content-Type: application/json`)"))
        }
        _ => ApiError::BadRequest(text),
    }
}

/// The `{id}` of a path: a torrent's number or a prefix of its infohash.
pub struct TorrentRef(pub TorrentId);

impl FromRequestParts<Api> for TorrentRef {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Api,
    ) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, api)
            .await
            .map_err(|r| rejection(r.status(), r.body_text()))?;
        Ok(TorrentRef(api.session.resolve(&raw)?))
    }
}

fn torrent(api: &Api, id: TorrentId) -> ApiResult<TorrentDto> {
    api.session
        .get(id)
        .map(|s| TorrentDto::from(&s))
        .ok_or_else(|| ApiError::NotFound(format!("no torrent {id}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Every field of every torrent (as `GET /torrents/{id}`), not only
    /// those a list view shows.
    #[serde(default)]
    pub full: bool,
}

/// Every torrent, with the fields a list view shows (all of them with
/// `full=true`).
#[utoipa::path(get, path = "/api/v1/torrents", tag = "torrents", params(ListParams),
    responses((status = 200, body = [TorrentItemDto]), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(api): State<Api>,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(p) = query.map_err(|r| rejection(r.status(), r.body_text()))?;
    let list = api.session.list();
    Ok(if p.full {
        Json(list.iter().map(TorrentDto::from).collect::<Vec<_>>()).into_response()
    } else {
        Json(list.iter().map(TorrentItemDto::from).collect::<Vec<_>>()).into_response()
    })
}

/// Adds a torrent: a magnet link as JSON, or a .torrent file (at most
/// 16 MiB) as multipart/form-data with a `torrent` part and optional
/// `save_path`, `paused`, `files` (comma-separated indices) and `peers`
/// (comma-separated `IP:PORT`) parts. 201 when added, 200 when it was
/// already there.
#[utoipa::path(post, path = "/api/v1/torrents", tag = "torrents",
    request_body(content(
        (AddDto = "application/json"),
        (AddFormDto = "multipart/form-data")
    )),
    responses(
        (status = 201, body = AddedDto, description = "added"),
        (status = 200, body = AddedDto, description = "already there"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn add(State(api): State<Api>, req: Request) -> ApiResult<Response> {
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (source, fields) = if ctype.starts_with("multipart/form-data") {
        let mp = Multipart::from_request(req, &api)
            .await
            .map_err(|r| rejection(r.status(), r.body_text()))?;
        read_form(mp).await?
    } else {
        let Body(dto) = Body::<AddDto>::from_request(req, &api).await?;
        let fields = AddFields {
            save_path: dto.save_path,
            paused: dto.paused,
            files: dto.files.map(|f| f.into_iter().map(Int::usize).collect()),
            peers: dto.peers.unwrap_or_default(),
        };
        (AddSource::Magnet(dto.magnet), fields)
    };
    let save_path = match &fields.save_path {
        Some(p) => Some(api.roots.confine(p)?),
        None => None,
    };
    let mut peers = Vec::new();
    for p in &fields.peers {
        peers.push(
            p.trim()
                .parse::<SocketAddr>()
                .map_err(|_| ApiError::BadRequest(format!("peer {p:?} is not IP:PORT")))?,
        );
    }
    let added = api
        .session
        .add(
            source,
            AddOptions {
                save_path,
                paused: fields.paused,
                peers,
                files: fields.files,
                options: Default::default(),
            },
        )
        .await?;
    let info_hash = api
        .session
        .get(added.id)
        .map(|s| s.info_hash.to_hex())
        .unwrap_or_default();
    let status = if added.existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(AddedDto {
            id: added.id.0,
            info_hash,
            existed: added.existed,
        }),
    )
        .into_response())
}

/// The multipart form of an upload (documentation only).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AddFormDto {
    /// The .torrent file.
    #[schema(value_type = String, format = Binary)]
    torrent: Vec<u8>,
    save_path: Option<String>,
    paused: Option<bool>,
    /// Comma-separated file indices.
    files: Option<String>,
    /// Comma-separated `IP:PORT`.
    peers: Option<String>,
}

struct AddFields {
    save_path: Option<String>,
    paused: Option<bool>,
    files: Option<Vec<usize>>,
    peers: Vec<String>,
}

/// Small text fields of the form, at most.
const MAX_FIELD: usize = 64 * 1024;

async fn read_form(mut mp: Multipart) -> ApiResult<(AddSource, AddFields)> {
    let mut torrent: Option<Vec<u8>> = None;
    let mut f = AddFields {
        save_path: None,
        paused: None,
        files: None,
        peers: Vec::new(),
    };
    let bad = |e: axum::extract::multipart::MultipartError| rejection(e.status(), e.body_text());
    while let Some(mut field) = mp.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        let cap = if name == "torrent" {
            MAX_TORRENT_UPLOAD
        } else {
            MAX_FIELD
        };
        let mut data = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            if data.len() + chunk.len() > cap {
                return Err(ApiError::TooLarge(format!(
                    "the `{name}` part is larger than {cap} bytes"
                )));
            }
            data.extend_from_slice(&chunk);
        }
        let text = || {
            String::from_utf8(data.clone())
                .map_err(|_| ApiError::BadRequest(format!("the `{name}` part is not UTF-8")))
        };
        if name != "torrent" && data.iter().all(u8::is_ascii_whitespace) {
            continue; // an empty field is one not given
        }
        match name.as_str() {
            "torrent" => torrent = Some(data),
            "save_path" => f.save_path = Some(text()?),
            "paused" => {
                f.paused = Some(match text()?.trim() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "paused must be true or false, not {other:?}"
                        )))
                    }
                })
            }
            "files" => {
                let t = text()?;
                let mut v = Vec::new();
                for x in t.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                    v.push(x.parse::<usize>().map_err(|_| {
                        ApiError::BadRequest(format!("file index {x:?} is not a number"))
                    })?);
                }
                f.files = Some(v);
            }
            "peers" => {
                f.peers = text()?
                    .split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                "unknown form part `{other}` (expected torrent, save_path, paused, files, peers)"
            )))
            }
        }
    }
    let torrent = torrent.ok_or_else(|| {
        ApiError::BadRequest("no `torrent` part: send the .torrent file in it".into())
    })?;
    Ok((AddSource::Torrent(torrent), f))
}

/// One torrent.
#[utoipa::path(get, path = "/api/v1/torrents/{id}", tag = "torrents",
    params(("id" = String, Path, description = "the torrent's number or an infohash prefix (4+ hex digits)", example = "1")),
    responses((status = 200, body = TorrentDto), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(api): State<Api>,
    TorrentRef(id): TorrentRef,
) -> ApiResult<Json<TorrentDto>> {
    torrent(&api, id).map(Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RemoveParams {
    /// Delete the torrent's files too.
    #[serde(default)]
    pub delete_data: bool,
}

/// Removes a torrent (with `delete_data=true`, its files too: only those
/// it names, and its folders left empty).
#[utoipa::path(delete, path = "/api/v1/torrents/{id}", tag = "torrents",
    params(("id" = String, Path, description = "number or infohash prefix", example = "1"), RemoveParams),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(api): State<Api>,
    TorrentRef(id): TorrentRef,
    query: Result<Query<RemoveParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(p) = query.map_err(|r| rejection(r.status(), r.body_text()))?;
    api.session.remove(id, p.delete_data).await?;
    Ok(StatusCode::NO_CONTENT)
}

macro_rules! action {
    ($name:ident, $path:literal, $doc:literal, $call:ident) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "torrents",
                    params(("id" = String, Path, description = "number or infohash prefix", example = "1")),
                    responses((status = 204), (status = 404, body = ErrorBody)))]
        pub async fn $name(
            State(api): State<Api>,
            TorrentRef(id): TorrentRef,
        ) -> ApiResult<StatusCode> {
            api.session.$call(id).await?;
            Ok(StatusCode::NO_CONTENT)
        }
    };
}

action!(
    pause,
    "/api/v1/torrents/{id}/pause",
    "Pauses a torrent.",
    pause
);
action!(
    resume,
    "/api/v1/torrents/{id}/resume",
    "Resumes a torrent (one in error tries again).",
    resume
);
action!(
    recheck,
    "/api/v1/torrents/{id}/recheck",
    "Hashes every piece on disk again.",
    recheck
);
action!(
    reannounce,
    "/api/v1/torrents/{id}/reannounce",
    "Asks the trackers for peers (as soon as they allow).",
    reannounce
);

/// Starts a torrent now whatever the queue says (`{"force": false}`
/// gives it back to the queue).
#[utoipa::path(post, path = "/api/v1/torrents/{id}/start", tag = "torrents",
    params(("id" = String, Path, description = "number or infohash prefix", example = "1")),
    request_body(content = Option<StartDto>, content_type = "application/json"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn start(
    State(api): State<Api>,
    TorrentRef(id): TorrentRef,
    req: Request,
) -> ApiResult<StatusCode> {
    let dto = optional_body::<StartDto>(req, &api).await?;
    api.session
        .force_start(id, dto.force.unwrap_or(true))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A JSON body that may be absent (empty).
async fn optional_body<T: serde::de::DeserializeOwned + Default>(
    req: Request,
    api: &Api,
) -> ApiResult<T> {
    let empty = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
        || req.headers().get(header::CONTENT_TYPE).is_none();
    if empty {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_FIELD)
            .await
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        return serde_json::from_slice::<Option<T>>(&bytes)
            .map(Option::unwrap_or_default)
            .map_err(|e| ApiError::BadRequest(e.to_string()));
    }
    Body::<Option<T>>::from_request(req, api)
        .await
        .map(|Body(v)| v.unwrap_or_default())
}

/// Moves a torrent in the queue.
#[utoipa::path(post, path = "/api/v1/torrents/{id}/queue", tag = "torrents",
    params(("id" = String, Path, description = "number or infohash prefix", example = "1")),
    request_body = QueueDto,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn queue(
    State(api): State<Api>,
    TorrentRef(id): TorrentRef,
    Body(dto): Body<QueueDto>,
) -> ApiResult<StatusCode> {
    let to = match dto.to {
        QueueMoveDto::Top => QueueMove::Top,
        QueueMoveDto::Up => QueueMove::Up,
        QueueMoveDto::Down => QueueMove::Down,
        QueueMoveDto::Bottom => QueueMove::Bottom,
    };
    api.session.move_in_queue(id, to).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes a torrent's options (caps, peers, seed limits, files, folder).
#[utoipa::path(patch, path = "/api/v1/torrents/{id}/options", tag = "torrents",
    params(("id" = String, Path, description = "number or infohash prefix", example = "1")),
    request_body = OptionsPatchDto,
    responses((status = 200, body = TorrentDto), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn options(
    State(api): State<Api>,
    TorrentRef(id): TorrentRef,
    Body(dto): Body<OptionsPatchDto>,
) -> ApiResult<Json<TorrentDto>> {
    let zero = |v: Option<Option<Int>>, what: &str| -> ApiResult<()> {
        if v == Some(Some(Int(0))) {
            return Err(ApiError::BadRequest(format!(
                "{what} of 0 would stop all traffic: pause instead, or send null for no cap"
            )));
        }
        Ok(())
    };
    zero(dto.upload_limit, "upload_limit")?;
    zero(dto.download_limit, "download_limit")?;
    if dto.max_peers == Some(Some(Int(0))) {
        return Err(ApiError::BadRequest("max_peers must be at least 1".into()));
    }
    let save_path = match &dto.save_path {
        Some(p) => Some(api.roots.confine(p)?),
        None => None,
    };
    let patch = OptionsPatch {
        upload_limit: dto.upload_limit.map(|v| v.map(|i| i.0)),
        download_limit: dto.download_limit.map(|v| v.map(|i| i.0)),
        max_peers: dto.max_peers.map(|v| v.map(Int::usize)),
        seed_ratio: dto
            .seed_ratio
            .map(|r| r.to_limit())
            .transpose()
            .map_err(ApiError::BadRequest)?,
        seed_time: dto.seed_time.map(TimeLimit::to_limit),
        seed_idle_time: dto.seed_idle_time.map(TimeLimit::to_limit),
        files: dto
            .files
            .map(|v| v.map(|f| f.into_iter().map(Int::usize).collect())),
        save_path,
    };
    let s = api.session.set_options(id, patch).await?;
    Ok(Json(TorrentDto::from(&s)))
}

/// A torrent's files.
#[utoipa::path(get, path = "/api/v1/torrents/{id}/files", tag = "torrents",
    params(("id" = String, Path, description = "number or infohash prefix", example = "1")),
    responses((status = 200, body = [FileDto]), (status = 404, body = ErrorBody)))]
pub async fn files(
    State(api): State<Api>,
    TorrentRef(id): TorrentRef,
) -> ApiResult<Json<Vec<FileDto>>> {
    Ok(Json(
        api.session
            .files(id)
            .await?
            .iter()
            .map(FileDto::from)
            .collect(),
    ))
}

/// A torrent's connected peers.
#[utoipa::path(get, path = "/api/v1/torrents/{id}/peers", tag = "torrents",
    params(("id" = String, Path, description = "number or infohash prefix", example = "1")),
    responses((status = 200, body = [PeerDto]), (status = 404, body = ErrorBody)))]
pub async fn peers(
    State(api): State<Api>,
    TorrentRef(id): TorrentRef,
) -> ApiResult<Json<Vec<PeerDto>>> {
    Ok(Json(
        api.session
            .peers(id)
            .await?
            .iter()
            .map(PeerDto::from)
            .collect(),
    ))
}

/// Peers for a torrent to dial (`IP:PORT`).
#[utoipa::path(post, path = "/api/v1/torrents/{id}/peers", tag = "torrents",
    params(("id" = String, Path, description = "number or infohash prefix", example = "1")),
    request_body = PeersDto,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_peers(
    State(api): State<Api>,
    TorrentRef(id): TorrentRef,
    Body(dto): Body<PeersDto>,
) -> ApiResult<StatusCode> {
    if dto.peers.len() > 1000 {
        return Err(ApiError::BadRequest("at most 1000 peers at once".into()));
    }
    let mut peers = Vec::new();
    for p in &dto.peers {
        peers.push(
            p.trim()
                .parse::<SocketAddr>()
                .map_err(|_| ApiError::BadRequest(format!("peer {p:?} is not IP:PORT")))?,
        );
    }
    api.session.add_peers(id, peers).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A torrent's trackers and what they last said.
#[utoipa::path(get, path = "/api/v1/torrents/{id}/trackers", tag = "torrents",
    params(("id" = String, Path, description = "number or infohash prefix", example = "1")),
    responses((status = 200, body = [TrackerDto]), (status = 404, body = ErrorBody)))]
pub async fn trackers(
    State(api): State<Api>,
    TorrentRef(id): TorrentRef,
) -> ApiResult<Json<Vec<TrackerDto>>> {
    Ok(Json(
        api.session
            .trackers(id)
            .await?
            .iter()
            .map(TrackerDto::from)
            .collect(),
    ))
}

/// A torrent's piece map.
#[utoipa::path(get, path = "/api/v1/torrents/{id}/pieces", tag = "torrents",
    params(("id" = String, Path, description = "number or infohash prefix", example = "1")),
    responses((status = 200, body = PiecesDto), (status = 404, body = ErrorBody)))]
pub async fn pieces(
    State(api): State<Api>,
    TorrentRef(id): TorrentRef,
) -> ApiResult<Json<PiecesDto>> {
    let map = api.session.pieces(id).await?;
    let states = map
        .map(|m| String::from_utf8_lossy(&m.states).into_owned())
        .unwrap_or_default();
    Ok(Json(PiecesDto {
        count: states.len(),
        states,
    }))
}

/// The torrent's .torrent file (404 while a magnet link has no metadata).
#[utoipa::path(get, path = "/api/v1/torrents/{id}/torrent", tag = "torrents",
    params(("id" = String, Path, description = "number or infohash prefix", example = "1")),
    responses((status = 200, content_type = "application/x-bittorrent", body = Vec<u8>),
        (status = 404, body = ErrorBody)))]
pub async fn metainfo(State(api): State<Api>, TorrentRef(id): TorrentRef) -> ApiResult<Response> {
    let bytes = api
        .session
        .metainfo(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("torrent {id} has no metadata yet")))?;
    let mut r = bytes.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-bittorrent"),
    );
    Ok(r)
}

/// The session's figures.
#[utoipa::path(get, path = "/api/v1/session", tag = "session",
    responses((status = 200, body = StatsDto)))]
pub async fn session(State(api): State<Api>) -> Json<StatsDto> {
    Json(StatsDto::new(&api.session.stats(), api.session.port()))
}

/// The settings.
#[utoipa::path(get, path = "/api/v1/settings", tag = "session",
    responses((status = 200, body = SettingsDto)))]
pub async fn settings(State(api): State<Api>) -> Json<SettingsDto> {
    Json(SettingsDto::new(&api.session.settings(), api.roots.list()))
}

/// Changes settings (kept across restarts).
#[utoipa::path(patch, path = "/api/v1/settings", tag = "session",
    request_body = SettingsPatchDto,
    responses((status = 200, body = SettingsDto), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn set_settings(
    State(api): State<Api>,
    Body(dto): Body<SettingsPatchDto>,
) -> ApiResult<Json<SettingsDto>> {
    let download_dir = match &dto.download_dir {
        Some(p) => Some(api.roots.confine(p)?),
        None => None,
    };
    let u = |v: Option<Option<Int>>| v.map(|v| v.map(|i| i.0));
    let z = |v: Option<Option<Int>>| v.map(|v| v.map(Int::usize));
    let patch = SettingsPatch {
        download_dir,
        upload_limit: u(dto.upload_limit),
        download_limit: u(dto.download_limit),
        max_active_downloads: z(dto.max_active_downloads),
        max_active_seeds: z(dto.max_active_seeds),
        seed_ratio: dto.seed_ratio,
        seed_time: u(dto.seed_time),
        seed_idle_time: u(dto.seed_idle_time),
        seed_limit_action: dto.seed_limit_action.map(|a| match a {
            SeedActionDto::Pause => SeedLimitAction::Pause,
            SeedActionDto::Remove => SeedLimitAction::Remove,
        }),
        max_peers_per_torrent: dto.max_peers_per_torrent.map(Int::usize),
        max_peers: dto.max_peers.map(Int::usize),
        upload_slots: dto.upload_slots.map(Int::usize),
        start_paused: dto.start_paused,
        initial_seeding: dto.initial_seeding,
    };
    let s = api.session.set_settings(patch).await?;
    Ok(Json(SettingsDto::new(&s, api.roots.list())))
}

/// Live events as Server-Sent Events: `added`, `metadata_received`,
/// `state_changed`, `completed`, `error`, `removed`, `tracker_reply`,
/// `stats` (once a second), and `lagged` when this client read too slowly
/// and events were dropped for it. Each `data:` is one JSON object.
#[utoipa::path(get, path = "/api/v1/events", tag = "session",
    responses((status = 200, content_type = "text/event-stream", body = String)))]
pub async fn events(
    State(api): State<Api>,
) -> Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let sub = api.session.subscribe();
    let port = api.session.port();
    let stream = futures_util::stream::unfold(sub, move |mut sub| async move {
        let ev = match sub.next().await? {
            Ok(e) => event_json(&e, port),
            Err(lagged) => SseEvent::default()
                .event("lagged")
                .data(serde_json::json!({ "missed": lagged.0 }).to_string()),
        };
        Some((Ok(ev), sub))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn state_json(state: &TorrentState) -> serde_json::Value {
    match state {
        TorrentState::Error(e) => serde_json::json!({"state": "error", "error": ErrorDto::from(e)}),
        TorrentState::Checking { checked, total } => {
            serde_json::json!({"state": "checking", "checked": checked, "total": total})
        }
        s => serde_json::json!({ "state": s.name() }),
    }
}

/// One event as SSE.
fn event_json(e: &Event, port: u16) -> SseEvent {
    let data = match e {
        Event::Added {
            id,
            info_hash,
            name,
        } => {
            serde_json::json!({"id": id.0, "info_hash": info_hash.to_hex(), "name": name})
        }
        Event::MetadataReceived { id, name } => serde_json::json!({"id": id.0, "name": name}),
        Event::StateChanged { id, state } => {
            let mut v = state_json(state);
            v["id"] = id.0.into();
            v
        }
        Event::Completed { id } => serde_json::json!({ "id": id.0 }),
        Event::Error { id, error } => {
            serde_json::json!({"id": id.0, "error": ErrorDto::from(error)})
        }
        Event::Removed {
            id,
            info_hash,
            data_deleted,
        } => serde_json::json!({
            "id": id.0, "info_hash": info_hash.to_hex(), "data_deleted": data_deleted
        }),
        Event::TrackerReply {
            id,
            url,
            error,
            seeders,
            leechers,
        } => serde_json::json!({
            "id": id.0, "url": url, "error": error, "seeders": seeders, "leechers": leechers
        }),
        Event::Stats { session, torrents } => serde_json::json!({
            "session": StatsDto::new(session, port),
            "torrents": torrents.iter().map(|t| serde_json::json!({
                "id": t.id.0,
                "state": t.state.name(),
                "progress": t.progress,
                "download_rate": t.download_rate,
                "upload_rate": t.upload_rate,
                "downloaded_total": t.downloaded_total,
                "uploaded_total": t.uploaded_total,
                "peers": t.peers,
                "eta_seconds": t.eta.map(|d| d.as_secs()),
            })).collect::<Vec<_>>(),
        }),
        _ => serde_json::json!({}),
    };
    SseEvent::default().event(e.name()).data(data.to_string())
}

/// Logs in with the user and password of the configuration: sets the
/// session cookie (HttpOnly, SameSite=Strict). Five failures in a row ban
/// the address for a while.
#[utoipa::path(post, path = "/api/v1/login", tag = "auth",
    request_body = LoginDto,
    responses((status = 204, description = "logged in; the cookie is set"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn login(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(dto): Body<LoginDto>,
) -> ApiResult<Response> {
    if !api.auth.has_login() {
        return Err(ApiError::Unauthorized(
            "no user is configured: use the API token (Authorization: Bearer)".into(),
        ));
    }
    let now = Instant::now();
    if !api.auth.check_password(&dto.username, &dto.password) {
        api.auth.failed(peer.ip(), now);
        return Err(ApiError::Unauthorized("wrong user or password".into()));
    }
    let value = api.auth.new_session(now);
    let cookie = format!(
        "{}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        crate::security::COOKIE,
        crate::security::SESSION_TTL.as_secs()
    );
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(r)
}

/// Ends the login session.
#[utoipa::path(post, path = "/api/v1/logout", tag = "auth", responses((status = 204)))]
pub async fn logout(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(v) = crate::security::cookie(&headers, crate::security::COOKIE) {
        api.auth.end_session(&v);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    let expire = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        crate::security::COOKIE
    );
    if let Ok(v) = HeaderValue::from_str(&expire) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
