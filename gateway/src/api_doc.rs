//! The OpenAPI 3.1 document, generated from the handlers' annotations and served at
//! `/api/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

/// Document-level information; paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Snapkeeper API",
        description = "Policy-driven Cinder snapshots: rules, runs, audit records and compliance."
    ),
    modifiers(&Security),
    security(("bearer" = []), ("keystone" = [])),
    tags(
        (name = "operations", description = "Health and service information"),
        (name = "auth", description = "Sign-in with Keystone credentials; sessions"),
        (name = "policies", description = "Rules, policy catalog, policy sets, assignments, exclusions, evaluation"),
        (name = "runs", description = "Runs, live progress, Sync & Snapshot Now, quota forecast"),
        (name = "audit", description = "Snapshot records and compliance")
    )
)]
struct ApiDoc;

/// Declares how callers authenticate (session token or Keystone token).
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
        components.add_security_scheme(
            "keystone",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Auth-Token"))),
        );
    }
}

/// The document before paths are added.
pub(crate) fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Serves `document` at `/api/openapi.json`.
pub(crate) fn routes(document: utoipa::openapi::OpenApi) -> Router {
    Router::new().route("/api/openapi.json", get(move || async move { Json(document) }))
}
