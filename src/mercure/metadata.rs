//! `GET /.well-known/oauth-protected-resource/.well-known/mercure`: the hub's OAuth 2.0
//! protected resource metadata (RFC 9728), as the current specification suggests publishing.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::Uri;
use serde_json::{Value, json};
use url::Url;

use super::token::DETAIL_TYPE;
use crate::state::AppState;

/// The hub's resource identifier: `--mercure-audience`, else the hub's URL as the request
/// names it.
fn resource(state: &AppState, headers: &HeaderMap, uri: &Uri) -> String {
    state
        .config
        .mercure
        .mercure_audience
        .clone()
        .unwrap_or_else(|| super::hub_url(headers, uri, state.config.tls_enabled()).to_string())
}

/// The URL of the metadata document, as RFC 9728 section 3.1 derives it from the resource
/// identifier: the well-known path inserted between its host and its path
/// (`https://host/.well-known/oauth-protected-resource/.well-known/mercure`). A
/// `--mercure-audience` that is not an `http(s)` URL leaves the hub's URL to derive it from.
pub fn url(state: &AppState, headers: &HeaderMap, uri: &Uri) -> String {
    let resource = Url::parse(&resource(state, headers, uri))
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .unwrap_or_else(|| super::hub_url(headers, uri, state.config.tls_enabled()));
    let path = resource.path().trim_end_matches('/');
    let mut url = resource.clone();
    url.set_path(&format!("/.well-known/oauth-protected-resource{path}"));
    url.set_fragment(None);
    url.to_string()
}

/// The metadata document: the resource identifier (`--mercure-audience`, else the hub's URL),
/// the authorization detail type understood, the bearer methods and the cookie accepted, and
/// whether active subscriptions are on.
pub async fn metadata(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Json<Value> {
    let cookie = if state.config.tls_enabled() {
        super::access::SECURE_COOKIE
    } else {
        super::access::COOKIE
    };
    let mut doc = json!({
        "resource": resource(&state, &headers, &uri),
        "authorization_details_types_supported": [DETAIL_TYPE],
        "bearer_methods_supported": ["header"],
        "mercure_cookie": cookie,
        "mercure_matcher_types_supported": ["exact", "urlpattern"],
    });
    if state.mercure.active_subscriptions {
        doc["mercure_subscriptions"] = json!(true);
    }
    Json(doc)
}
