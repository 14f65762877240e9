//! `POST /users` (signup), `POST /login`, `DELETE /users/{username}` (revoke).

use axum::Json;
use axum::extract::State;

use super::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::JsonBody;
use crate::auth::caller::MaybeCaller;
use crate::auth::{AuthError, Caller, Grants};
use crate::client_ip::ClientIp;
use crate::config::Signup;
use crate::error::ApiError;
use crate::names;
use crate::state::AppState;
use crate::store::User;

/// Shortest accepted password.
const MIN_PASSWORD_LEN: usize = 8;
/// Longest accepted password (hashing cost grows with it).
const MAX_PASSWORD_LEN: usize = 1024;

/// 400 unless `password` has an accepted length.
///
/// # Errors
/// 400 naming the bounds.
pub fn check_password_len(password: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    if (MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&chars) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"
        )))
    }
}

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

/// `POST /users`. Rights (`admin`, `read`, `write`) can be given only by a signed-in admin,
/// in open mode (`--no-auth`) too.
pub async fn create_user(
    State(state): State<AppState>,
    MaybeCaller(caller): MaybeCaller,
    JsonBody(req): JsonBody<NewUser>,
) -> Result<Json<Value>, AuthError> {
    // The grants stored for the caller, not open mode's allow-all.
    let is_admin = caller.as_ref().is_some_and(|c| c.grants.admin);
    if state.auth.signup == Signup::Admin && !state.auth.no_auth && !is_admin {
        return Err(match caller {
            None => ApiError::unauthorized("signup is restricted: an admin must create users"),
            Some(_) => ApiError::forbidden("admin only: signup is restricted"),
        }
        .into());
    }
    names::check_username(&req.username).map_err(ApiError::bad_request)?;
    check_password_len(&req.password)?;
    let asks_grants = req.read.is_some() || req.write.is_some() || req.admin.is_some();
    if asks_grants && !is_admin {
        return Err(
            ApiError::forbidden("only a signed-in admin may set read, write or admin").into(),
        );
    }
    let defaults = &state.auth.default_grants;
    let grants = Grants {
        admin: req.admin.unwrap_or(false),
        read: req.read.unwrap_or_else(|| defaults.read.clone()),
        write: req.write.unwrap_or_else(|| defaults.write.clone()),
    };
    if state.store.user(&req.username).await?.is_some() {
        return Err(ApiError::conflict(format!("username '{}' is taken", req.username)).into());
    }
    let hash = state.auth.hash_password(req.password).await?;
    let user = User {
        username: req.username.clone(),
        password_hash: hash,
        admin: grants.admin,
        read: grants.read,
        write: grants.write,
        created_at: crate::store::now_micros(),
        revoked: false,
        token_generation: 0,
        totp: None,
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
    /// The one-time code, for a user with a second factor.
    #[serde(default)]
    pub code: Option<String>,
}

/// `POST /login`: a JWT in the body and in the `broker_token` cookie. Failed attempts are
/// throttled per client address and username (429 with `Retry-After`).
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<Login>,
) -> Result<Response, AuthError> {
    let user = state
        .auth
        .check_login(&req.username, &req.password, req.code.as_deref(), ip)
        .await?;
    with_token(&state, &user, json!({}))
}

/// `body` with a fresh token for `user` (`jwt`, `expires_at`), which the `broker_token` cookie
/// also carries.
///
/// # Errors
/// 500 if the token cannot be made.
pub fn with_token(state: &AppState, user: &User, mut body: Value) -> Result<Response, AuthError> {
    let (token, expires_at) = state.auth.issue(user)?;
    let cookie = state
        .auth
        .cookie
        .set(&token, state.auth.keys.expiry_secs())
        .ok_or_else(|| ApiError::internal("token is not a valid cookie value"))?;
    body["jwt"] = json!(token);
    body["expires_at"] = json!(expires_at);
    let mut response = Json(body).into_response();
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
    state.auth.forget(&username);
    state.hub.revoke(&username);
    tracing::info!(%username, "user revoked");
    Ok(Json(json!({ "username": username, "revoked": true })))
}

/// `DELETE /users/me`: the static route `/users/me` shadows `/users/{username}` for a user
/// named `me`, who is revoked here like any other.
pub async fn revoke_user_named_me(
    state: State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    revoke_user(state, caller, Path("me".to_owned())).await
}
