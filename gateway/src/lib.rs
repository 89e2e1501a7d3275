//! The gateway: the REST API and the compliance UI, in front of the four gRPC services.
//!
//! A request enters [`app`]'s router, gets a request id (`x-request-id`, echoed in the response
//! and logged) and a span continuing the caller's trace, and passes the body-size limit and the
//! security headers. An API handler authenticates the caller ([`auth`]: session token, cookie with
//! CSRF token, or Keystone token), checks the permission and project scope ([`rbac`]), calls the
//! services through [`upstream::Upstream`] and answers JSON, or an [`error::ApiError`] mapped from
//! the gRPC status in one place. Endpoints live by subject: [`policy_sets`], [`assignments`],
//! [`exclusions`], [`catalog`], [`rules`], [`evaluate`], [`runs`] (with run-now and Server-Sent
//! Events), [`records`] (with CSV export), [`compliance`] and [`forecast`]. [`pages`] renders the
//! UI server-side from the same calls; [`api_doc`] publishes the OpenAPI 3.1 document generated
//! from the handlers; [`health`] aggregates the services' health for `/healthz`; [`metrics`]
//! counts and times every routed request for Prometheus.

pub mod api_doc;
pub mod assignments;
pub mod auth;
pub mod catalog;
pub mod compliance;
pub mod config;
pub mod error;
pub mod evaluate;
pub mod exclusions;
pub mod forecast;
pub mod health;
pub mod metrics;
pub mod pages;
pub mod paging;
pub mod policy_sets;
pub mod rbac;
pub mod records;
pub mod rules;
pub mod runs;
pub mod throttle;
pub mod upstream;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::{HeaderName, HeaderValue, Response, header};
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

pub use config::Config;
use upstream::Upstream;

/// What can stop the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Starting a shared component failed.
    #[error(transparent)]
    Kit(#[from] service_kit::KitError),
    /// Authentication cannot be set up (signing key).
    #[error(transparent)]
    Auth(#[from] auth::AuthSetupError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
}

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    /// Clients of the four services.
    pub upstream: Upstream,
    /// Session signing, role mapping and login throttling.
    pub auth: Arc<auth::Auth>,
}

impl FromRef<AppState> for Upstream {
    fn from_ref(state: &AppState) -> Self {
        state.upstream.clone()
    }
}

/// Header carrying the request id.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Content Security Policy of every response: scripts and styles only from this origin, no
/// framing, no plugins.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// The whole HTTP surface for `config`: API, OpenAPI document and UI, traced and secured.
pub fn app(config: &Config) -> Result<Router, GatewayError> {
    let upstream = Upstream::connect(&config.services, &config.security)?;
    let auth = Arc::new(auth::Auth::new(&config.auth, config.listen, &upstream)?);
    let state = AppState { upstream, auth };
    Ok(router(state, config.max_body_bytes))
}

fn router(state: AppState, max_body_bytes: usize) -> Router {
    use utoipa_axum::routes;
    let (api, openapi) = OpenApiRouter::with_openapi(api_doc::base())
        .routes(routes!(health::healthz))
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::session))
        .routes(routes!(rules::get_rules, rules::replace_rules))
        .routes(routes!(rules::validate_rules))
        .routes(routes!(catalog::list_policies))
        .routes(routes!(policy_sets::list_policy_sets, policy_sets::create_policy_set))
        .routes(routes!(
            policy_sets::get_policy_set,
            policy_sets::update_policy_set,
            policy_sets::delete_policy_set
        ))
        .routes(routes!(assignments::list_assignments, assignments::create_assignment))
        .routes(routes!(
            assignments::get_assignment,
            assignments::update_assignment,
            assignments::delete_assignment
        ))
        .routes(routes!(exclusions::list_exclusions, exclusions::create_exclusion))
        .routes(routes!(exclusions::delete_exclusion))
        .routes(routes!(evaluate::evaluate))
        .routes(routes!(runs::list_runs))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::cancel_run))
        .routes(routes!(runs::active_progress))
        .routes(routes!(runs::run_progress))
        .routes(routes!(runs::run_events))
        .routes(routes!(runs::run_now))
        .routes(routes!(runs::run_now_status))
        .routes(routes!(records::list_records))
        .routes(routes!(records::export_records))
        .routes(routes!(compliance::get_compliance))
        .routes(routes!(compliance::compliance_trend))
        .routes(routes!(compliance::export_compliance))
        .routes(routes!(forecast::quota_forecast))
        .with_state(state.clone())
        .split_for_parts();
    let trace = TraceLayer::new_for_http()
        .make_span_with(service_kit::telemetry::http_server_span)
        .on_response(|response: &Response<_>, latency: Duration, span: &tracing::Span| {
            span.record("http.response.status_code", response.status().as_u16());
            let request_id =
                response.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
            tracing::info!(
                request_id,
                status = response.status().as_u16(),
                latency_ms = latency.as_millis() as u64,
                "request finished"
            );
        });
    let security_header = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    api.merge(api_doc::routes(openapi))
        .merge(pages::routes(state))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(security_header(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(security_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(security_header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(security_header(header::REFERRER_POLICY, "same-origin"))
        .layer(security_header(header::CACHE_CONTROL, "no-store"))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Serves the gateway on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let app = app(&config)?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "gateway listening");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
