//! The caller's second factor: `POST /users/me/totp` (enrol), `POST /users/me/totp/confirm`,
//! `POST /users/me/totp/disable`. See [`crate::auth::totp`].

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::JsonBody;
use crate::auth::totp::TotpState;
use crate::auth::{Caller, jwt};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::User;

/// Body of the confirm and disable requests.
#[derive(Debug, Deserialize)]
pub struct Code {
    /// The 6-digit code the authenticator app shows now.
    pub code: String,
}

/// The signed-in caller's stored account (401 for the anonymous caller of open mode).
async fn own_account(state: &AppState, caller: &Caller) -> Result<User, ApiError> {
    let username = caller
        .user
        .as_deref()
        .ok_or_else(|| ApiError::unauthorized("sign in to manage your second factor"))?;
    state.auth.active_user(username).await
}

/// `POST /users/me/totp`: a new secret, pending until confirmed with a code; answers
/// `{"secret", "otpauth_uri"}`. Enrolling again before confirming replaces the pending secret.
///
/// # Errors
/// 401 when not signed in; 409 when a second factor is active already.
pub async fn enrol(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let mut user = own_account(&state, &caller).await?;
    if user.totp.as_ref().is_some_and(|t| t.active) {
        return Err(ApiError::conflict(
            "a second factor is active already: disable it first",
        ));
    }
    let totp = TotpState::generate();
    let uri = totp.uri(&user.username).map_err(ApiError::internal)?;
    let secret = totp.secret.clone();
    user.totp = Some(totp);
    state.store.put_user(user).await?;
    Ok(Json(json!({ "secret": secret, "otpauth_uri": uri })))
}

/// `POST /users/me/totp/confirm` `{"code"}`: activates the pending second factor; from now on
/// `POST /login` needs a `code` and Basic credentials are refused for this user.
///
/// # Errors
/// 401 when not signed in; 409 when nothing is pending; 400 for a wrong code.
pub async fn confirm(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<Code>,
) -> Result<Json<Value>, ApiError> {
    let mut user = own_account(&state, &caller).await?;
    let Some(totp) = user.totp.as_mut().filter(|t| !t.active) else {
        return Err(ApiError::conflict(
            "no pending second factor: enrol with POST /users/me/totp first",
        ));
    };
    let step = totp
        .check(&req.code, jwt::now_secs())
        .ok_or_else(|| ApiError::bad_request("invalid two-factor code"))?;
    totp.active = true;
    totp.last_step = step;
    let username = user.username.clone();
    state.store.put_user(user).await?;
    state.auth.forget(&username);
    tracing::info!(%username, "second factor enabled");
    Ok(Json(json!({ "username": username, "totp": true })))
}

/// `POST /users/me/totp/disable` `{"code"}`: removes the second factor, given a current code.
///
/// # Errors
/// 401 when not signed in; 409 when no second factor is active; 400 for a wrong code.
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<Code>,
) -> Result<Json<Value>, ApiError> {
    let mut user = own_account(&state, &caller).await?;
    let Some(totp) = user.totp.as_ref().filter(|t| t.active) else {
        return Err(ApiError::conflict("no second factor is active"));
    };
    if totp.check(&req.code, jwt::now_secs()).is_none() {
        return Err(ApiError::bad_request("invalid two-factor code"));
    }
    user.totp = None;
    let username = user.username.clone();
    state.store.put_user(user).await?;
    tracing::info!(%username, "second factor disabled");
    Ok(Json(json!({ "username": username, "totp": false })))
}
