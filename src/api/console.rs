//! The admin console at `/admin`: static files compiled into the binary (plain JS, no build
//! step), which sign in with an admin account and use the admin API.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

const PAGE: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");

/// The console's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(page))
        .route("/admin/console.js", get(script))
        .route("/admin/console.css", get(style))
}

/// Answers with `body` as `content_type`; the console may not be framed by other sites.
fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

async fn page() -> impl IntoResponse {
    file("text/html; charset=utf-8", PAGE)
}

async fn script() -> impl IntoResponse {
    file("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> impl IntoResponse {
    file("text/css; charset=utf-8", STYLE)
}
