//! The authenticated caller of a request, as axum extractors.
//!
//! The extractors work with any router state that hands out the [`Auth`] (`FromRef`), so
//! authentication does not depend on the application state that holds it.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use super::{Auth, AuthError, Grants};
use crate::error::ApiError;
use crate::store::User;

/// Who is calling and what they may do. Extracting it authenticates the request (401 on failure).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Username; `None` for the anonymous caller of open mode.
    pub user: Option<String>,
    /// Permissions.
    pub grants: Grants,
    /// When the credentials expire (Unix seconds), for tokens.
    pub expires_at: Option<u64>,
    /// The user's token generation when the credentials were checked (`None` when anonymous):
    /// a password change or an `--admin` reset moves past it.
    pub generation: Option<u64>,
}

impl Caller {
    /// The anonymous caller of `--no-auth` mode: allowed everything.
    pub fn anonymous() -> Self {
        Self {
            user: None,
            grants: Grants::all(),
            expires_at: None,
            generation: None,
        }
    }

    /// A signed-in user with the grants currently stored for them.
    pub fn user(user: &User, expires_at: Option<u64>) -> Self {
        Self {
            user: Some(user.username.clone()),
            grants: Grants {
                admin: user.admin,
                read: user.read.clone(),
                write: user.write.clone(),
            },
            expires_at,
            generation: Some(user.token_generation),
        }
    }

    /// Whether the caller may read `channel`.
    pub fn can_read(&self, channel: &str) -> bool {
        self.grants.can_read(self.user.as_deref(), channel)
    }

    /// 403 unless the caller may read `channel`.
    ///
    /// # Errors
    /// 403 naming the channel.
    pub fn require_read(&self, channel: &str) -> Result<(), ApiError> {
        if self.can_read(channel) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "not allowed to read channel '{channel}'"
            )))
        }
    }

    /// 403 unless the caller may write `channel`.
    ///
    /// # Errors
    /// 403 naming the channel.
    pub fn require_write(&self, channel: &str) -> Result<(), ApiError> {
        if self.grants.can_write(self.user.as_deref(), channel) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "not allowed to write channel '{channel}'"
            )))
        }
    }

    /// 403 unless the caller is an admin.
    ///
    /// # Errors
    /// 403.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.grants.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("admin only"))
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Arc::<Auth>::from_ref(state)
            .authenticate(parts, false)
            .await
    }
}

/// A [`Caller`] on an SSE endpoint, where `?access_token=` is also accepted.
#[derive(Debug, Clone)]
pub struct StreamCaller(pub Caller);

impl<S> FromRequestParts<S> for StreamCaller
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Arc::<Auth>::from_ref(state)
            .authenticate(parts, true)
            .await
            .map(StreamCaller)
    }
}

/// The caller if valid credentials were sent, `None` otherwise: for public endpoints that
/// behave differently for admins (signup). Stale credentials (an old cookie) do not block them.
/// The grants are the ones stored for the user, in open mode too (where every request may do
/// everything, but only a real admin may grant rights).
#[derive(Debug, Clone)]
pub struct MaybeCaller(pub Option<Caller>);

impl<S> FromRequestParts<S> for MaybeCaller
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Arc::<Auth>::from_ref(state)
            .identify(parts, false)
            .await
            .ok();
        Ok(Self(caller.filter(|c| c.user.is_some())))
    }
}
