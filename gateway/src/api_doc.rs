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
    tags(
        (name = "operations", description = "Health and service information"),
        (name = "policies", description = "Rules, policy catalog, assignments and exclusions")
    )
)]
struct ApiDoc;

/// The document before paths are added.
pub(crate) fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Serves `document` at `/api/openapi.json`.
pub(crate) fn routes(document: utoipa::openapi::OpenApi) -> Router {
    Router::new().route("/api/openapi.json", get(move || async move { Json(document) }))
}
