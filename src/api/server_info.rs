//! `GET /server` (admin): the version, uptime, store backend and the limits in force, for the
//! console's Server page.

use std::sync::LazyLock;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// When the router was first built: the start of the uptime.
static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Starts the uptime clock (called when the router is built).
pub fn mark_start() {
    LazyLock::force(&STARTED);
}

/// `host:port` of a NATS URL, without its scheme or any credentials in it.
fn nats_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.rsplit_once('@').map_or(rest, |(_, host)| host)
}

/// `GET /server` (admin).
///
/// # Errors
/// 401/403 unless an admin calls.
pub async fn server(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let config = &state.config;
    let store = match &config.nats {
        Some(urls) => json!({
            "backend": "cluster",
            "nats": urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(nats_host).collect::<Vec<_>>(),
        }),
        None => json!({ "backend": "embedded", "path": config.db.display().to_string() }),
    };
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": STARTED.elapsed().as_secs(),
        "store": store,
        "tls": config.tls_enabled(),
        "auth": !config.no_auth,
        "limits": {
            "max_body": config.max_body,
            "max_streams": config.max_streams,
            "max_streams_per_ip": config.max_streams_per_ip,
            "max_connections_per_ip": config.max_connections_per_ip,
            "max_channels": config.max_channels,
            "keepalive": config.keepalive,
            "jwt_expiry": config.jwt_expiry,
        },
    })))
}

#[cfg(test)]
mod tests {
    #[test]
    fn nats_hosts_lose_their_credentials() {
        assert_eq!(super::nats_host("nats://u:p@host:4222"), "host:4222");
        assert_eq!(super::nats_host("host:4222"), "host:4222");
        assert_eq!(super::nats_host("tls://a@b@host:1"), "host:1");
    }
}
