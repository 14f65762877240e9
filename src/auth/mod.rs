//! Who is calling, and what they may do.
//!
//! - [`jwt`]: issuing and verifying tokens, the generated secret
//! - [`password`]: Argon2id hashing
//! - [`hash_pool`]: the bound on concurrent Argon2 work (429 beyond it)
//! - [`throttle`]: failed-login limits per address and per username (429)
//! - [`totp`]: the optional second factor (RFC 6238 one-time codes)
//! - [`basic_cache`]: recently verified Basic credentials
//! - [`credentials`]: where a request's credentials are found
//! - [`csrf`]: what a write authenticated by the cookie must show
//! - [`cookie`]: the login cookie's attributes
//! - [`permissions`]: per-channel read/write grants
//! - [`caller`]: the axum extractors that authenticate a request
//! - [`rejection`]: the error of an authentication step, with `Retry-After`
//! - [`redact`]: request logs without tokens
//! - [`file_modes`]: the database directory made private at start

pub mod basic_cache;
pub mod caller;
pub mod cookie;
pub mod credentials;
pub mod csrf;
pub mod file_modes;
pub mod hash_pool;
pub mod jwt;
pub mod password;
pub mod permissions;
pub mod redact;
pub mod rejection;
pub mod throttle;
pub mod totp;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;

use crate::client_ip::{ClientIp, TrustedProxies};
use crate::config::{Config, Signup};
use crate::error::ApiError;
use crate::store::{Store, StoreError, User};
use basic_cache::BasicCache;
pub use caller::{Caller, StreamCaller};
use cookie::CookiePolicy;
use credentials::Credentials;
use csrf::CsrfPolicy;
use hash_pool::HashPool;
use jwt::Keys;
pub use permissions::Grants;
pub use rejection::AuthError;
use throttle::LoginThrottle;

/// Name of the cookie `POST /login` sets.
pub const COOKIE_NAME: &str = "broker_token";

/// Authentication settings and the means to check credentials.
pub struct Auth {
    /// Token keys and lifetime.
    pub keys: Keys,
    /// Open mode: everyone may do everything.
    pub no_auth: bool,
    /// Who may create users.
    pub signup: Signup,
    /// Grants of a newly signed-up user.
    pub default_grants: Grants,
    /// How the login cookie is written.
    pub cookie: CookiePolicy,
    /// Every Argon2 run goes through this bound.
    pub hashes: HashPool,
    throttle: LoginThrottle,
    basic_cache: BasicCache,
    csrf: CsrfPolicy,
    trusted_proxies: TrustedProxies,
    store: Arc<dyn Store>,
}

impl Auth {
    /// Authentication for `config`, with `secret` signing the tokens.
    pub fn new(config: &Config, secret: &[u8], store: Arc<dyn Store>) -> Self {
        Self {
            keys: Keys::new(secret, config.jwt_expiry),
            no_auth: config.no_auth,
            signup: config.signup,
            default_grants: Grants {
                admin: false,
                read: permissions::parse_patterns(&config.default_read),
                write: permissions::parse_patterns(&config.default_write),
            },
            cookie: CookiePolicy {
                same_site: config.cookie_samesite,
                secure: config.cookie_secure(),
            },
            hashes: HashPool::for_cores(),
            throttle: LoginThrottle::new(throttle::Limits {
                per_ip: config.login_failures_per_ip,
                per_user: config.login_failures_per_user,
                window: Duration::from_secs(config.login_window),
            }),
            basic_cache: BasicCache::new(Duration::from_secs(config.basic_cache_ttl)),
            csrf: CsrfPolicy::new(&config.origin),
            trusted_proxies: config.trusted_proxies.clone(),
            store,
        }
    }

    /// Identifies the caller of a request. `query_token` also accepts `?access_token=` (the SSE
    /// endpoints, since a browser `EventSource` cannot send headers). In open mode everyone is
    /// admitted with every grant.
    ///
    /// # Errors
    /// 401 for missing or bad credentials, 403 for a cross-site write with the cookie, 429 for
    /// throttled password checks (unless authentication is off).
    pub async fn authenticate(
        &self,
        parts: &Parts,
        query_token: bool,
    ) -> Result<Caller, AuthError> {
        match self.identify(parts, query_token).await {
            Ok(mut caller) => {
                if self.no_auth {
                    caller.grants = Grants::all();
                }
                Ok(caller)
            }
            Err(_) if self.no_auth => Ok(Caller::anonymous()),
            Err(e) => Err(e),
        }
    }

    /// The caller as their credentials show them, with the grants stored for them, in open
    /// mode too.
    ///
    /// # Errors
    /// As [`authenticate`](Self::authenticate), whatever the mode.
    pub async fn identify(&self, parts: &Parts, query_token: bool) -> Result<Caller, AuthError> {
        let query = query_token.then(|| parts.uri.query()).flatten();
        let credentials = credentials::find(&parts.headers, query)?
            .ok_or_else(|| ApiError::unauthorized("authentication required"))?;
        match credentials {
            Credentials::Cookie(token) => {
                self.csrf.check(parts)?;
                self.check_token(&token).await
            }
            Credentials::Bearer(token) | Credentials::Query(token) => {
                self.check_token(&token).await
            }
            Credentials::Basic(username, password) => {
                let ip = ClientIp::of(parts, &self.trusted_proxies).0;
                self.check_basic(&username, &password, ip).await
            }
        }
    }

    /// The caller a Broker token names, with their current grants (the Mercure hub accepts
    /// Broker's tokens too).
    ///
    /// # Errors
    /// 401 for a bad, expired or revoked token.
    pub async fn caller_from_token(&self, token: &str) -> Result<Caller, AuthError> {
        self.check_token(token).await
    }

    async fn check_token(&self, token: &str) -> Result<Caller, AuthError> {
        let claims = self.keys.verify(token).map_err(ApiError::unauthorized)?;
        let user = self.active_user(&claims.sub).await?;
        if claims.generation != user.token_generation {
            return Err(ApiError::unauthorized(
                "token revoked: the password was changed after it was issued",
            )
            .into());
        }
        Ok(Caller::user(&user, Some(claims.exp)))
    }

    async fn check_basic(
        &self,
        username: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<Caller, AuthError> {
        if self.basic_cache.has(username)
            && let Some(user) = self.store.user(username).await?
            && self.basic_cache.hit(&user, password)
        {
            refuse_second_factor(&user)?;
            return Ok(Caller::user(&user, None));
        }
        let user = self.check_password(username, password, ip).await?;
        refuse_second_factor(&user)?;
        self.basic_cache.remember(&user, password);
        Ok(Caller::user(&user, None))
    }

    /// The user `username` unless they are unknown or revoked.
    ///
    /// # Errors
    /// 401 saying which; a store failure.
    pub async fn active_user(&self, username: &str) -> Result<User, ApiError> {
        match self.store.user(username).await? {
            Some(user) if !user.revoked => Ok(user),
            Some(_) => Err(ApiError::unauthorized("user revoked")),
            None => Err(ApiError::unauthorized("unknown user")),
        }
    }

    /// Checks a username and password from client address `ip`; the same 401 for an unknown
    /// user and a wrong password. Throttled per address and username, and bounded with every
    /// other Argon2 run. The second factor is not asked for: callers are either already signed
    /// in (a password change) or refuse users who have one (Basic credentials).
    ///
    /// # Errors
    /// 401 `invalid credentials`; 429 with `Retry-After` when throttled or when too many
    /// password checks are under way; a store failure.
    pub async fn check_password(
        &self,
        username: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<User, AuthError> {
        self.check_credentials(username, password, None, ip).await
    }

    /// Checks a login: the password as [`check_password`](Self::check_password) does and,
    /// for a user with an active second factor, the one-time `code`. A wrong code counts as a
    /// failed attempt; an accepted one cannot be used again.
    ///
    /// # Errors
    /// As [`check_password`](Self::check_password); 401 `two-factor code required` when the
    /// user has a second factor and no code was sent; 401 `invalid two-factor code`.
    pub async fn check_login(
        &self,
        username: &str,
        password: &str,
        code: Option<&str>,
        ip: IpAddr,
    ) -> Result<User, AuthError> {
        self.check_credentials(username, password, Some(code), ip)
            .await
    }

    /// The password check; `second` is `Some(code)` when an active second factor must be
    /// checked too.
    async fn check_credentials(
        &self,
        username: &str,
        password: &str,
        second: Option<Option<&str>>,
        ip: IpAddr,
    ) -> Result<User, AuthError> {
        let ticket = self.hashes.ticket()?;
        let valid_name = crate::names::check_username(username).is_ok();
        let attempt = self.throttle.begin(ip, valid_name.then_some(username))?;
        let user = if valid_name {
            self.store.user(username).await?
        } else {
            None
        };
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let password = password.to_owned();
        let ok = ticket
            .run(move || match hash {
                Some(hash) => password::verify(&password, &hash),
                None => password::verify(&password, password::dummy_hash()),
            })
            .await?;
        tracing::debug!(%ip, username, ok, "password checked with Argon2");
        let mut user = match user {
            Some(user) if ok && !user.revoked => user,
            _ => {
                attempt.failed();
                return Err(ApiError::unauthorized("invalid credentials").into());
            }
        };
        let factor = user.totp.as_ref().filter(|t| t.active);
        if let (Some(code), Some(factor)) = (second, factor) {
            let Some(code) = code else {
                // The usual first half of a two-step sign-in: not a failure.
                attempt.succeeded();
                return Err(ApiError::unauthorized("two-factor code required").into());
            };
            let Some(step) = factor.check(code, jwt::now_secs()) else {
                attempt.failed();
                return Err(ApiError::unauthorized("invalid two-factor code").into());
            };
            if let Some(totp) = user.totp.as_mut() {
                totp.last_step = step;
            }
            self.store.put_user(user.clone()).await?;
        }
        attempt.succeeded();
        Ok(user)
    }

    /// Hashes a new password (bounded like every Argon2 run).
    ///
    /// # Errors
    /// 429 when too many password checks are under way; 500 if hashing fails.
    pub async fn hash_password(&self, password: String) -> Result<String, AuthError> {
        let hash = self.hashes.run(move || password::hash(&password)).await?;
        Ok(hash.map_err(ApiError::internal)?)
    }

    /// Issues a token for `user` at their current token generation.
    ///
    /// # Errors
    /// 500 if encoding fails.
    pub fn issue(&self, user: &User) -> Result<(String, u64), ApiError> {
        let grants = Grants {
            admin: user.admin,
            read: user.read.clone(),
            write: user.write.clone(),
        };
        self.keys
            .issue(&user.username, user.token_generation, grants)
            .map_err(ApiError::internal)
    }

    /// Sets `username`'s password to `new_password` and moves them to the next token
    /// generation: tokens and remembered Basic credentials from before stop working. The
    /// caller ends the user's open streams.
    ///
    /// # Errors
    /// 401 if the user is gone or revoked; 429 or 500 from hashing; a store failure.
    pub async fn change_password(
        &self,
        username: &str,
        new_password: String,
    ) -> Result<User, AuthError> {
        let hash = self.hash_password(new_password).await?;
        let mut user = self.active_user(username).await?;
        user.password_hash = hash;
        user.token_generation = user.token_generation.wrapping_add(1);
        self.store.put_user(user.clone()).await?;
        self.basic_cache.forget(username);
        Ok(user)
    }

    /// Whether `caller`'s credentials still hold: the user exists, is not revoked, and is at
    /// the token generation the credentials were checked at (no password change or `--admin`
    /// reset since). For long-lived requests (streams) that check again later; the anonymous
    /// caller always holds.
    ///
    /// # Errors
    /// 401 saying why the credentials no longer hold; a store failure.
    pub async fn recheck(&self, caller: &Caller) -> Result<(), ApiError> {
        let Some(username) = caller.user.as_deref() else {
            return Ok(());
        };
        let user = self.active_user(username).await?;
        if caller
            .generation
            .is_some_and(|g| g != user.token_generation)
        {
            return Err(ApiError::unauthorized(
                "credentials revoked: the password was changed",
            ));
        }
        Ok(())
    }

    /// Forgets `username`'s remembered Basic credentials (after a revocation).
    pub fn forget(&self, username: &str) {
        self.basic_cache.forget(username);
    }

    /// Creates the `--admin username:password` account, or resets its password and admin flag;
    /// a reset moves it to the next token generation, so tokens issued before stop working.
    ///
    /// # Errors
    /// When hashing or the store fails.
    pub async fn ensure_admin(&self, spec: &str) -> Result<(), StoreError> {
        let Some((username, pass)) = spec.split_once(':') else {
            return Err(StoreError::Backend(
                "--admin must be username:password".into(),
            ));
        };
        let hash = self
            .hash_password(pass.to_owned())
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let existing = self.store.user(username).await?;
        let user = User {
            username: username.to_owned(),
            password_hash: hash,
            admin: true,
            read: vec!["*".into()],
            write: vec!["*".into()],
            created_at: existing
                .as_ref()
                .map_or_else(crate::store::now_micros, |u| u.created_at),
            revoked: false,
            token_generation: existing
                .as_ref()
                .map_or(0, |u| u.token_generation.wrapping_add(1)),
            // A reset is also the way back in for an admin who lost their authenticator.
            totp: None,
        };
        self.store.put_user(user).await?;
        self.basic_cache.forget(username);
        Ok(())
    }
}

/// Basic credentials carry no one-time code: a user with an active second factor signs in with
/// `POST /login` and uses the token.
fn refuse_second_factor(user: &User) -> Result<(), ApiError> {
    if user.totp.as_ref().is_some_and(|t| t.active) {
        return Err(ApiError::unauthorized(
            "this account has a second factor: sign in with POST /login and use the token",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use clap::Parser;

    #[tokio::test]
    async fn recheck_follows_password_changes_and_revocation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = Arc::new(crate::hub::Hub::new(16, usize::MAX, 16));
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open_feeding(dir.path(), hub).expect("store"));
        let config = Config::try_parse_from(["broker"]).expect("config");
        let auth = Auth::new(&config, b"0123456789abcdef0123456789abcdef", store.clone());
        let mut ada = User {
            username: "ada".into(),
            password_hash: "$argon2id$not-a-real-hash".into(),
            admin: false,
            read: vec![],
            write: vec![],
            created_at: 0,
            revoked: false,
            token_generation: 0,
            totp: None,
        };
        store.put_user(ada.clone()).await.expect("put");
        let before = Caller::user(&ada, None);
        assert!(auth.recheck(&before).await.is_ok());
        assert!(auth.recheck(&Caller::anonymous()).await.is_ok());

        ada = auth
            .change_password("ada", "a new password".into())
            .await
            .expect("change");
        assert_eq!(ada.token_generation, 1);
        assert!(auth.recheck(&before).await.is_err(), "older credentials");
        let after = Caller::user(&ada, None);
        assert!(auth.recheck(&after).await.is_ok());

        ada.revoked = true;
        store.put_user(ada).await.expect("put");
        assert!(auth.recheck(&after).await.is_err(), "revoked");
        store.close().await;
    }
}
