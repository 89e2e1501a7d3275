//! Server-rendered pages (askama templates in `templates/`, no build step for the browser).

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// The page frame: navigation and an empty main area that later pages fill.
#[derive(Template, WebTemplate)]
#[template(path = "shell.html")]
struct ShellPage {
    title: &'static str,
}

async fn shell() -> ShellPage {
    ShellPage { title: "Compliance" }
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../static/snapkeeper.css"))
}

/// The UI's routes.
pub(crate) fn routes() -> Router {
    Router::new().route("/", get(shell)).route("/static/snapkeeper.css", get(stylesheet))
}
