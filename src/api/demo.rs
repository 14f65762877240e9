//! `broker --demo`: the two-window demo page at `/demo`, with the JS client it uses. Both are
//! compiled into the binary, so the demo needs nothing but `broker`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

const PAGE: &str = include_str!("../../examples/demo/index.html");
const CLIENT: &str = include_str!("../../clients/js/src/index.js");
const CLIENT_SSE: &str = include_str!("../../clients/js/src/sse.js");

/// The demo's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/demo", get(page))
        .route("/demo/broker-client.js", get(client))
        .route("/demo/sse.js", get(client_sse))
        .route("/demo/config.json", get(config))
}

async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

async fn client() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        CLIENT,
    )
}

async fn client_sse() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        CLIENT_SSE,
    )
}

/// Tells the page whether it must offer signup and login.
async fn config(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "auth": !state.auth.no_auth }))
}
