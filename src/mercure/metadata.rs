//! `GET /.well-known/oauth-protected-resource/.well-known/mercure`: the hub's OAuth 2.0
//! protected resource metadata (RFC 9728), as the current specification suggests publishing.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::Uri;
use serde_json::{Value, json};

use super::token::DETAIL_TYPE;
use crate::state::AppState;

/// The metadata document: the resource identifier (`--mercure-audience`, else the hub's URL),
/// the authorization detail type understood, the bearer methods and the cookie accepted.
pub async fn metadata(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Json<Value> {
    let tls = state.config.tls_enabled();
    let resource = state
        .config
        .mercure
        .mercure_audience
        .clone()
        .unwrap_or_else(|| super::hub_url(&headers, &uri, tls).to_string());
    let cookie = if tls {
        super::access::SECURE_COOKIE
    } else {
        super::access::COOKIE
    };
    Json(json!({
        "resource": resource,
        "authorization_details_types_supported": [DETAIL_TYPE],
        "bearer_methods_supported": ["header"],
        "mercure_cookie": cookie,
        "mercure_matcher_types_supported": ["exact", "urlpattern"],
    }))
}
