//! The HTTP API: one module per resource, assembled into a [`Router`] here.
//!
//! - [`insert`]: `POST /insert`
//! - [`events`]: `GET /events`, `GET /sse`
//! - [`audit`]: `GET /audit/{event}`, `GET /history/{event}`
//! - [`users`]: `POST /users`, `POST /login`, `DELETE /users/{username}`
//! - [`account`]: `GET /users/me`, `POST /users/me/password`, `POST /logout`
//! - [`admin`]: `GET /users`, `GET`/`PATCH /users/{username}`, `POST /users/{username}/password`
//! - [`channels`]: `GET /channels`, `GET /latest`
//! - [`totp`]: `POST /users/me/totp`, `.../confirm`, `.../disable` (the second factor)
//! - [`health`]: `GET /health`, `GET /ready`, `GET /metrics`, `GET /openapi.json`
//! - [`compat`]: node-sse-server's `GET /subscribe`, `POST /publish`, `GET /lastEvent`,
//!   `GET /presence`
//! - [`crate::mercure`]: the Mercure hub, `GET` and `POST /.well-known/mercure`
//! - [`demo`]: the demo page at `/demo` (with `--demo`)
//! - [`console`]: the admin console at `/admin`; [`server_info`]: `GET /server` for it
//! - [`body`]: the JSON body extractor shared by the POST endpoints

pub mod account;
pub mod admin;
pub mod audit;
pub mod body;
pub mod channels;
pub mod compat;
pub mod console;
pub mod demo;
pub mod events;
pub mod extract;
pub mod health;
pub mod insert;
pub mod server_info;
pub mod totp;
pub mod users;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::AppState;

/// Every route of Broker with its middleware, ready to serve or to nest into another app.
pub fn router(state: AppState) -> Router {
    let body_limit = usize::try_from(state.config.max_body).unwrap_or(usize::MAX);
    let cors = cors(&state.config.origin);
    let demo = if state.config.demo {
        demo::routes()
    } else {
        Router::new()
    };
    // `/users/me` shadows `/users/{username}` for a user named `me`.
    let me = get(account::me).delete(users::revoke_user_named_me);
    let mercure = get(crate::mercure::subscribe::subscribe).post(crate::mercure::publish::publish);
    let metadata = get(crate::mercure::metadata::metadata);
    let subscriptions = get(crate::mercure::subscriptions::subscriptions);
    let user = get(admin::get_user)
        .patch(admin::patch_user)
        .delete(users::revoke_user);
    server_info::mark_start();
    Router::new()
        .merge(demo)
        .merge(console::routes())
        .route("/", get(health::health).head(health::health))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(health::openapi))
        .route("/users", get(admin::list_users).post(users::create_user))
        .route("/users/{username}", user)
        .route("/users/{username}/password", post(admin::reset_password))
        .route("/channels", get(channels::list))
        .route("/latest", get(channels::latest))
        .route("/server", get(server_info::server))
        .route("/login", post(users::login))
        .route("/logout", post(account::logout))
        .route("/users/me", me)
        .route("/users/me/password", post(account::change_password))
        .route("/users/me/totp", post(totp::enrol))
        .route("/users/me/totp/confirm", post(totp::confirm))
        .route("/users/me/totp/disable", post(totp::disable))
        .route("/insert", post(insert::insert))
        .route("/events", get(events::events))
        .route("/sse", get(events::events))
        .route("/audit/{event}", get(audit::audit))
        .route("/history/{event}", get(audit::history))
        .route("/subscribe", get(compat::subscribe))
        .route("/publish", post(compat::publish))
        .route("/lastEvent", get(compat::last_event))
        .route("/presence", get(compat::presence))
        .route("/.well-known/mercure", mercure)
        .route("/.well-known/mercure/subscriptions", subscriptions.clone())
        .route(
            "/.well-known/mercure/subscriptions/{match_type}/{match}",
            subscriptions.clone(),
        )
        .route(
            "/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}",
            subscriptions,
        )
        .route(
            "/.well-known/oauth-protected-resource/.well-known/mercure",
            metadata,
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors)
        .layer(TraceLayer::new_for_http().make_span_with(crate::auth::redact::make_span))
        .with_state(state)
}

/// CORS from `--origin`: `*` allows any origin (without credentials); a list of origins allows
/// those, with credentials (the login cookie).
fn cors(origin: &str) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(std::time::Duration::from_secs(3600));
    let origins: Vec<HeaderValue> = origin
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty() && *o != "*")
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origin.split(',').any(|o| o.trim() == "*") || origins.is_empty() {
        layer.allow_origin(AllowOrigin::any())
    } else {
        layer.allow_origin(origins).allow_credentials(true)
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

#[cfg(test)]
mod tests {
    /// Every route of the router is described in the OpenAPI document, and nothing else is.
    #[test]
    fn openapi_describes_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(super::health::OPENAPI).expect("valid JSON");
        let mut documented: Vec<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        documented.sort();
        // The router's source, without these tests (which name `.route(` themselves).
        let source = include_str!("mod.rs");
        let source = source.split("#[cfg(test)]").next().unwrap_or(source);
        // A route's path is the string literal right after `.route(`, on its line or the next.
        let mut routed: Vec<String> = source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"'))
            .filter_map(|l| l.split('"').next())
            .map(str::to_owned)
            .collect();
        routed.sort();
        assert_eq!(documented, routed);
    }
}
