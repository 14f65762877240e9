//! When a stream must end because its caller may no longer read: credentials that expire,
//! and an account revoked or given new credentials.
//!
//! Every path that sends records checks them. An idle live stream wakes at the expiry
//! ([`Expiry::fired`]); a busy one compares the clock before it sends ([`Expiry::expired`]); a
//! revocation reaches a live stream through the hub ([`revokes`]); and a stream reading its
//! history from the store checks both before every page ([`Expiry::check`]), since a stream
//! that lagged may have missed the hub's notice, and its credentials may have expired while it
//! was behind.

use std::pin::Pin;

use tokio::time::{Instant, Sleep};

use crate::auth::Caller;
use crate::store::Store;

/// Why a stream whose credentials expired ends.
pub(super) const EXPIRED: &str = "token expired";
/// Why a stream of a revoked (or deleted) account ends.
pub(super) const REVOKED: &str = "user revoked";

/// The moment the caller's credentials expire, if they do.
pub(super) struct Expiry {
    /// Fires at that moment, for an idle stream.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The same moment, checked by a busy stream before it sends.
    expires: Option<Instant>,
}

impl Expiry {
    /// The expiry of credentials valid until `expires_at` (Unix seconds), or none.
    pub(super) fn new(expires_at: Option<u64>) -> Self {
        let expires = expires_at.map(|exp| Instant::now() + crate::auth::jwt::time_until(exp));
        let deadline = expires.map(|at| Box::pin(tokio::time::sleep_until(at)));
        Self { deadline, expires }
    }

    /// Whether the credentials have expired.
    pub(super) fn expired(&self) -> bool {
        self.expires.is_some_and(|at| Instant::now() >= at)
    }

    /// Completes when the credentials expire; never, when they do not.
    pub(super) async fn fired(&mut self) {
        match &mut self.deadline {
            Some(sleep) => sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }

    /// Whether `caller` may still read, before a page from the store: the credentials have not
    /// expired, the account exists, is not revoked, and the credentials are of its current
    /// generation (no password change or reset since). The reason to end the stream otherwise.
    pub(super) async fn check(
        &self,
        store: &dyn Store,
        caller: &Caller,
    ) -> Result<(), &'static str> {
        if self.expired() {
            return Err(EXPIRED);
        }
        let Some(name) = caller.user.as_deref() else {
            return Ok(());
        };
        match store.user(name).await {
            Ok(Some(user)) if user.revoked => Err(REVOKED),
            Ok(Some(user))
                if caller
                    .generation
                    .is_some_and(|g| g != user.token_generation) =>
            {
                Err("credentials changed")
            }
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(REVOKED),
            Err(_) => Err("internal error"),
        }
    }
}

/// Whether the hub's revocation notice for `user` ends the stream of `caller`.
pub(super) fn revokes(caller: &Caller, user: &str) -> bool {
    caller.user.as_deref() == Some(user)
}
