//! Who is calling, and what they may do.
//!
//! - [`jwt`]: issuing and verifying tokens, the generated secret
//! - [`password`]: Argon2id hashing
//! - [`permissions`]: per-channel read/write grants
//! - [`caller`]: the axum extractors that authenticate a request

pub mod caller;
pub mod jwt;
pub mod password;
pub mod permissions;

use std::sync::Arc;

use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine;

use crate::config::{Config, Signup};
use crate::error::ApiError;
use crate::store::{Store, StoreError, User};
pub use caller::{Caller, StreamCaller};
use jwt::Keys;
pub use permissions::Grants;

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
            store,
        }
    }

    /// Identifies the caller of a request. `query_token` also accepts `?access_token=` (the SSE
    /// endpoints, since a browser `EventSource` cannot send headers).
    ///
    /// # Errors
    /// 401 for missing or bad credentials (unless authentication is off).
    pub async fn authenticate(&self, parts: &Parts, query_token: bool) -> Result<Caller, ApiError> {
        let credentials = credentials(
            &parts.headers,
            query_token.then(|| parts.uri.query()).flatten(),
        );
        let result = match credentials {
            Ok(Some(credentials)) => self.check(credentials).await,
            Ok(None) => Err(ApiError::unauthorized("authentication required")),
            Err(e) => Err(e),
        };
        match result {
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

    async fn check(&self, credentials: Credentials) -> Result<Caller, ApiError> {
        match credentials {
            Credentials::Token(token) => {
                let claims = self.keys.verify(&token).map_err(ApiError::unauthorized)?;
                let user = self.active_user(&claims.sub).await?;
                Ok(Caller::user(&user, Some(claims.exp)))
            }
            Credentials::Basic(username, password) => {
                let user = self.check_password(&username, &password).await?;
                Ok(Caller::user(&user, None))
            }
        }
    }

    async fn active_user(&self, username: &str) -> Result<User, ApiError> {
        match self.store.user(username).await? {
            Some(user) if !user.revoked => Ok(user),
            Some(_) => Err(ApiError::unauthorized("user revoked")),
            None => Err(ApiError::unauthorized("unknown user")),
        }
    }

    /// Checks a username and password; the same 401 for an unknown user and a wrong password.
    ///
    /// # Errors
    /// 401 `invalid credentials`, or a store failure.
    pub async fn check_password(&self, username: &str, password: &str) -> Result<User, ApiError> {
        let user = self.store.user(username).await?;
        let hash = user.as_ref().map_or_else(
            || password::dummy_hash().to_owned(),
            |u| u.password_hash.clone(),
        );
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || password::verify(&password, &hash))
            .await
            .map_err(ApiError::internal)?;
        match user {
            Some(user) if ok && !user.revoked => Ok(user),
            _ => Err(ApiError::unauthorized("invalid credentials")),
        }
    }

    /// Creates the `--admin username:password` account, or resets its password and admin flag.
    ///
    /// # Errors
    /// When hashing or the store fails.
    pub async fn ensure_admin(&self, spec: &str) -> Result<(), StoreError> {
        let Some((username, pass)) = spec.split_once(':') else {
            return Err(StoreError::Backend(
                "--admin must be username:password".into(),
            ));
        };
        let pass = pass.to_owned();
        let hash = tokio::task::spawn_blocking(move || password::hash(&pass))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .map_err(StoreError::Backend)?;
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
        };
        self.store.put_user(user).await
    }
}

/// Credentials found on a request.
enum Credentials {
    Token(String),
    Basic(String, String),
}

/// Finds credentials: `Authorization` header, then the cookie, then (if allowed) `access_token`.
fn credentials(headers: &HeaderMap, query: Option<&str>) -> Result<Option<Credentials>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        return if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            Ok(Some(Credentials::Token(rest.to_owned())))
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
            Ok(Some(Credentials::Basic(user.to_owned(), pass.to_owned())))
        } else {
            Err(ApiError::unauthorized(
                "unsupported Authorization scheme: use Bearer or Basic",
            ))
        };
    }
    for cookies in headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for pair in cookies.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=')
                && name == COOKIE_NAME
                && !value.is_empty()
            {
                return Ok(Some(Credentials::Token(value.to_owned())));
            }
        }
    }
    if let Some(query) = query {
        for (name, value) in form_pairs(query) {
            if name == "access_token" && !value.is_empty() {
                return Ok(Some(Credentials::Token(value)));
            }
        }
    }
    Ok(None)
}

/// Decodes `a=b&c=d` query pairs.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
}
