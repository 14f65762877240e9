//! `POST /users` (signup), `POST /login`, `DELETE /users/{username}` (revoke).

use axum::Json;
use axum::extract::State;

use super::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::body::JsonBody;
use crate::auth::caller::MaybeCaller;
use crate::auth::{COOKIE_NAME, Caller, Grants, password};
use crate::config::Signup;
use crate::error::ApiError;
use crate::names;
use crate::state::AppState;
use crate::store::User;

/// Shortest accepted password.
const MIN_PASSWORD_LEN: usize = 8;
/// Longest accepted password (hashing cost grows with it).
const MAX_PASSWORD_LEN: usize = 1024;

/// Body of `POST /users`.
#[derive(Debug, Deserialize)]
pub struct NewUser {
    /// `^[A-Za-z0-9_.@-]{1,64}$`.
    pub username: String,
    /// At least 8 characters.
    pub password: String,
    /// Admin only: channel patterns the user may read.
    pub read: Option<Vec<String>>,
    /// Admin only: channel patterns the user may write.
    pub write: Option<Vec<String>>,
    /// Admin only: make the user an admin.
    pub admin: Option<bool>,
}

/// `POST /users`.
pub async fn create_user(
    State(state): State<AppState>,
    MaybeCaller(caller): MaybeCaller,
    JsonBody(req): JsonBody<NewUser>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let is_admin = state.auth.no_auth || caller.as_ref().is_some_and(|c| c.grants.admin);
    if state.auth.signup == Signup::Admin && !is_admin {
        return Err(match caller {
            None => ApiError::unauthorized("signup is restricted: an admin must create users"),
            Some(_) => ApiError::forbidden("admin only: signup is restricted"),
        });
    }
    names::check_username(&req.username).map_err(ApiError::bad_request)?;
    let chars = req.password.chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&chars) {
        return Err(ApiError::bad_request(format!(
            "password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"
        )));
    }
    let asks_grants = req.read.is_some() || req.write.is_some() || req.admin.is_some();
    if asks_grants && !is_admin {
        return Err(ApiError::forbidden(
            "only an admin may set read, write or admin",
        ));
    }
    let defaults = &state.auth.default_grants;
    let grants = Grants {
        admin: req.admin.unwrap_or(false),
        read: req.read.unwrap_or_else(|| defaults.read.clone()),
        write: req.write.unwrap_or_else(|| defaults.write.clone()),
    };
    if state.store.user(&req.username).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "username '{}' is taken",
            req.username
        )));
    }
    let pass = req.password;
    let hash = tokio::task::spawn_blocking(move || password::hash(&pass))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let user = User {
        username: req.username.clone(),
        password_hash: hash,
        admin: grants.admin,
        read: grants.read,
        write: grants.write,
        created_at: crate::store::now_micros(),
        revoked: false,
    };
    state.store.create_user(user).await?;
    tracing::info!(username = %req.username, "user created");
    Ok(Json(json!({ "username": req.username })))
}

/// Body of `POST /login`.
#[derive(Debug, Deserialize)]
pub struct Login {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

/// `POST /login`: a JWT in the body and in the `broker_token` cookie.
pub async fn login(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<Login>,
) -> Result<Response, ApiError> {
    let user = state
        .auth
        .check_password(&req.username, &req.password)
        .await?;
    let grants = Grants {
        admin: user.admin,
        read: user.read,
        write: user.write,
    };
    let (token, expires_at) = state
        .auth
        .keys
        .issue(&user.username, grants)
        .map_err(ApiError::internal)?;
    let secure = if state.config.tls_enabled() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE_NAME}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        state.auth.keys.expiry_secs()
    );
    let mut response = Json(json!({ "jwt": token, "expires_at": expires_at })).into_response();
    let cookie = HeaderValue::from_str(&cookie).map_err(ApiError::internal)?;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `DELETE /users/{username}` (admin): revokes the user; their tokens stop working and their
/// open streams end.
pub async fn revoke_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_admin()?;
    let mut user = state
        .store
        .user(&username)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user '{username}'")))?;
    user.revoked = true;
    state.store.put_user(user).await?;
    state.hub.revoke(&username);
    tracing::info!(%username, "user revoked");
    Ok(Json(json!({ "username": username, "revoked": true })))
}
