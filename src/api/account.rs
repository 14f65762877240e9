//! The caller's own account: `GET /users/me`, `POST /users/me/password`, `POST /logout`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::JsonBody;
use super::users::{check_password_len, with_token};
use crate::auth::{AuthError, Caller};
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /users/me`: who the caller is, what they may do, and whether they have an active
/// second factor (`username` is `null` for the anonymous caller of open mode).
///
/// # Errors
/// A store failure.
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let totp = match caller.user.as_deref() {
        Some(username) => state
            .store
            .user(username)
            .await?
            .and_then(|u| u.totp)
            .is_some_and(|t| t.active),
        None => false,
    };
    Ok(Json(json!({
        "username": caller.user,
        "admin": caller.grants.admin,
        "read": caller.grants.read,
        "write": caller.grants.write,
        "totp": totp,
    })))
}

/// Body of `POST /users/me/password`.
#[derive(Debug, Deserialize)]
pub struct PasswordChange {
    /// The current password.
    pub old_password: String,
    /// The new one (8 to 1024 characters).
    pub new_password: String,
}

/// `POST /users/me/password`: checks the old password, sets the new one, and ends everything
/// issued before: tokens, remembered Basic credentials, open streams. Answers with a fresh
/// token (also set as the cookie), as `/login` does.
pub async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    caller: Caller,
    JsonBody(req): JsonBody<PasswordChange>,
) -> Result<Response, AuthError> {
    let username = caller
        .user
        .ok_or_else(|| ApiError::unauthorized("sign in to change your password"))?;
    check_password_len(&req.new_password)?;
    state
        .auth
        .check_password(&username, &req.old_password, ip)
        .await
        .map_err(|e| {
            if e.status() == axum::http::StatusCode::UNAUTHORIZED {
                ApiError::forbidden("old_password is not the current password").into()
            } else {
                e
            }
        })?;
    let user = state
        .auth
        .change_password(&username, req.new_password)
        .await?;
    state.hub.revoke(&username);
    tracing::info!(%username, "password changed; earlier tokens revoked");
    with_token(&state, &user, json!({ "username": username }))
}

/// `POST /logout`: clears the `broker_token` cookie. The token itself stays valid until it
/// expires; a password change ends every token of the user.
pub async fn logout(State(state): State<AppState>) -> Response {
    let mut response = Json(json!({ "logged_out": true })).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, state.auth.cookie.clear());
    response
}
