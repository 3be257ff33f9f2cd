//! The OpenAPI 3.1 document of the native API, served at
//! `/api/v1/openapi.json`, generated from the handlers' annotations and
//! the DTOs' types (so the two cannot drift apart by hand), and checked
//! against the running server by the tests (`schemathesis`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dto::*;
use crate::error::ErrorBody;
use crate::native;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "essaim",
        description = "The native HTTP API of an essaim node. Loopback requests need no \
            credentials by default; others need the API token (`Authorization: Bearer`), \
            HTTP Basic with the configured user, or the login cookie.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        native::list,
        native::add,
        native::get,
        native::remove,
        native::pause,
        native::resume,
        native::recheck,
        native::reannounce,
        native::start,
        native::queue,
        native::options,
        native::files,
        native::peers,
        native::add_peers,
        native::trackers,
        native::pieces,
        native::metainfo,
        native::session,
        native::settings,
        native::set_settings,
        native::events,
        native::login,
        native::logout,
    ),
    components(schemas(
        ErrorBody, TorrentDto, TorrentItemDto, ErrorDto, CheckingDto, OptionsDto, RatioLimit, TimeLimit,
        LimitMode, OptionsPatchDto, AddDto, native::AddFormDto, AddedDto, FileDto, PeerDto,
        TrackerDto, PiecesDto, StatsDto, SettingsDto, SettingsPatchDto, SeedActionDto,
        QueueDto, QueueMoveDto, LoginDto, StartDto, PeersDto
    )),
    modifiers(&Security, &GuardReplies),
    security(("token" = []), ("basic" = []))
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The replies the security layer may give to any request (see
/// [`crate::security`]), added to every operation.
struct GuardReplies;

impl Modify for GuardReplies {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let reply = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let common = [
            ("401", "credentials missing or wrong"),
            (
                "403",
                "a cross-site request, or an address banned after failed logins",
            ),
            ("421", "the Host header names another host (DNS rebinding)"),
        ];
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (code, what) in common {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| reply(what).into());
                }
            }
        }
    }
}

/// The document, as JSON. `anonymous`: requests need no credentials
/// (loopback, the default), which the document then says too.
pub fn json(anonymous: bool) -> String {
    let mut doc = ApiDoc::openapi();
    if anonymous {
        if let Some(s) = doc.security.as_mut() {
            s.push(utoipa::openapi::security::SecurityRequirement::default());
        }
    }
    doc.to_pretty_json().unwrap_or_else(|_| "{}".to_owned())
}
