//! The admin API over users: `GET /users` (paged, searchable), `GET`/`PATCH /users/{username}`
//! (rights, revoke and restore, removing a second factor) and `POST /users/{username}/password`
//! (password reset). Every route is admin only; the stores list users the same way in cluster
//! mode, where a change reaches the other nodes through the users bucket.

use axum::Json;
use axum::extract::State;
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::body::JsonBody;
use super::extract::{Path, Query, page_limit};
use super::users::check_password_len;
use crate::auth::{AuthError, Caller};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::User;

/// Page size of `GET /users` when none is asked for.
const DEFAULT_LIMIT: usize = 50;
/// Largest page of `GET /users`.
const MAX_LIMIT: usize = 1000;
/// Most patterns in one of `read` and `write`.
const MAX_PATTERNS: usize = 256;
/// Longest pattern, in bytes.
const MAX_PATTERN_LEN: usize = 256;
/// User records read at once for a page.
const READ_CONCURRENCY: usize = 16;

/// A user as the admin API shows it: everything but the password hash and the TOTP secret.
#[derive(Debug, Serialize)]
pub struct UserView {
    username: String,
    admin: bool,
    read: Vec<String>,
    write: Vec<String>,
    /// Microseconds since the Unix epoch.
    created_at: u64,
    revoked: bool,
    /// Whether an active second factor guards the account.
    totp: bool,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        Self {
            username: user.username.clone(),
            admin: user.admin,
            read: user.read.clone(),
            write: user.write.clone(),
            created_at: user.created_at,
            revoked: user.revoked,
            totp: user.totp.as_ref().is_some_and(|t| t.active),
        }
    }
}

/// Query of `GET /users`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Page size, 1 to 1000 (default 50).
    pub limit: Option<String>,
    /// Only usernames after this one (the previous page's `next`).
    pub after: Option<String>,
    /// Only usernames containing this, ignoring case.
    pub search: Option<String>,
}

/// A page of `GET /users`.
#[derive(Debug, Serialize)]
pub struct UserPage {
    items: Vec<UserView>,
    /// Pass as `after` for the next page; `null` on the last page.
    next: Option<String>,
}

/// `GET /users` (admin): users sorted by name, a page at a time.
///
/// # Errors
/// 401/403 unless an admin calls; 400 for a bad `limit`; a store failure.
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<UserPage>, ApiError> {
    caller.require_admin()?;
    let limit = page_limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let after = query.after.unwrap_or_default();
    let search = query.search.unwrap_or_default().to_lowercase();
    let mut names: Vec<String> = state
        .store
        .usernames()
        .await?
        .into_iter()
        .filter(|name| *name > after && name.to_lowercase().contains(&search))
        .take(limit + 1)
        .collect();
    let more = names.len() > limit;
    names.truncate(limit);
    let store = state.store.clone();
    let users: Vec<Option<User>> = futures_util::stream::iter(names.into_iter().map(|name| {
        let store = store.clone();
        async move { store.user(&name).await }
    }))
    .buffered(READ_CONCURRENCY)
    .try_collect()
    .await?;
    let items: Vec<UserView> = users.iter().flatten().map(UserView::from).collect();
    let next = if more {
        items.last().map(|u| u.username.clone())
    } else {
        None
    };
    Ok(Json(UserPage { items, next }))
}

/// The stored user `username`, 404 when there is none.
async fn find(state: &AppState, username: &str) -> Result<User, ApiError> {
    state
        .store
        .user(username)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user '{username}'")))
}

/// `GET /users/{username}` (admin).
///
/// # Errors
/// 401/403 unless an admin calls; 404 for an unknown user.
pub async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    caller.require_admin()?;
    Ok(Json(UserView::from(&find(&state, &username).await?)))
}

/// Body of `PATCH /users/{username}`: each field present is changed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// The admin flag.
    pub admin: Option<bool>,
    /// Channel patterns the user may read.
    pub read: Option<Vec<String>>,
    /// Channel patterns the user may write.
    pub write: Option<Vec<String>>,
    /// `true` revokes the user, `false` restores them.
    pub revoked: Option<bool>,
    /// Only `false`: removes the user's second factor (a lost authenticator).
    pub totp: Option<bool>,
}

fn check_patterns(field: &str, patterns: &[String]) -> Result<(), ApiError> {
    let bad = patterns.len() > MAX_PATTERNS
        || patterns
            .iter()
            .any(|p| p.is_empty() || p.len() > MAX_PATTERN_LEN || p.chars().any(char::is_control));
    if bad {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {MAX_PATTERNS} patterns of 1 to {MAX_PATTERN_LEN} bytes \
             without control characters"
        )));
    }
    Ok(())
}

/// `PATCH /users/{username}` (admin): changes rights, revokes or restores, or removes the
/// second factor. A change of rights or a revocation ends the user's open streams (they
/// reconnect under the new rights); the next request of any token of theirs sees the change.
///
/// # Errors
/// 401/403 unless an admin calls; 404 for an unknown user; 400 for a bad body.
pub async fn patch_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    JsonBody(patch): JsonBody<UserPatch>,
) -> Result<Json<UserView>, ApiError> {
    caller.require_admin()?;
    if patch.totp == Some(true) {
        return Err(ApiError::bad_request(
            "totp can only be set to false: users enrol themselves with POST /users/me/totp",
        ));
    }
    if let Some(read) = &patch.read {
        check_patterns("read", read)?;
    }
    if let Some(write) = &patch.write {
        check_patterns("write", write)?;
    }
    let mut user = find(&state, &username).await?;
    let before = user.clone();
    if let Some(admin) = patch.admin {
        user.admin = admin;
    }
    if let Some(read) = patch.read {
        user.read = read;
    }
    if let Some(write) = patch.write {
        user.write = write;
    }
    if let Some(revoked) = patch.revoked {
        user.revoked = revoked;
    }
    if patch.totp == Some(false) {
        user.totp = None;
    }
    if user != before {
        state.store.put_user(user.clone()).await?;
        state.auth.forget(&username);
        let narrowed = user.revoked
            || user.admin != before.admin
            || user.read != before.read
            || user.write != before.write;
        if narrowed {
            state.hub.revoke(&username);
        }
        tracing::info!(%username, by = ?caller.user, "user changed by an admin");
    }
    Ok(Json(UserView::from(&user)))
}

/// Body of `POST /users/{username}/password`.
#[derive(Debug, Deserialize)]
pub struct PasswordReset {
    /// The new password (8 to 1024 characters).
    pub new_password: String,
}

/// `POST /users/{username}/password` (admin): sets a new password. As with a change by the
/// user, every token issued before stops working and the user's open streams end.
///
/// # Errors
/// 401/403 unless an admin calls; 404 for an unknown user; 400 for a bad password.
pub async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    JsonBody(req): JsonBody<PasswordReset>,
) -> Result<Json<Value>, AuthError> {
    caller.require_admin()?;
    check_password_len(&req.new_password)?;
    find(&state, &username).await?;
    let hash = state.auth.hash_password(req.new_password).await?;
    // Read again after hashing, so a change made meanwhile is not undone.
    let mut user = find(&state, &username).await?;
    user.password_hash = hash;
    user.token_generation = user.token_generation.wrapping_add(1);
    state.store.put_user(user).await?;
    state.auth.forget(&username);
    state.hub.revoke(&username);
    tracing::info!(%username, by = ?caller.user, "password reset by an admin");
    Ok(Json(json!({ "username": username })))
}
