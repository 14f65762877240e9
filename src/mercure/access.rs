//! Who is calling the hub, and what they may receive and publish.
//!
//! A request is authorized by, in this order:
//! 1. a token: `Authorization: Bearer`, else the `mercureAuthorization` (or
//!    `__Secure-mercure_access_token`) cookie, else the `authorization` query parameter. A
//!    token that the Mercure keys verify is a Mercure token ([`Identity::Token`]); one that
//!    Broker's own key verifies is a Broker user ([`Identity::Broker`]);
//! 2. Broker's other credentials: `Authorization: Basic`, the `broker_token` cookie;
//! 3. nothing: in `--no-auth` mode everyone may do everything; with `--mercure-anonymous` a
//!    subscriber without a token receives public updates.
//!
//! A Broker user's rights map from their channel grants: they may publish when they may write
//! the channel `$mercure`, receive Broker records (topics `broker://{channel}/{event}`) of the
//! channels they may read, and receive private Mercure updates only as an admin.

use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use url::Url;

use super::bearer::BearerError;
use super::matcher::{Matcher, any_matches};
use super::token::{Role, TokenGrants};
use super::update::{self, PUBLIC_CHANNEL, Update};
use crate::auth::{AuthError, Caller};
use crate::state::AppState;
use crate::store::Record;

/// The older cookie holding a Mercure token.
pub const COOKIE: &str = "mercureAuthorization";
/// The cookie the current specification recommends.
pub const SECURE_COOKIE: &str = "__Secure-mercure_access_token";

/// Who is calling the hub.
#[derive(Debug)]
pub enum Identity {
    /// A valid Mercure token and its rights.
    Token(TokenGrants),
    /// A Broker user (or the anonymous caller of `--no-auth`, allowed everything).
    Broker(Caller),
    /// A subscriber without a token (`--mercure-anonymous`): public updates only.
    Anonymous,
}

impl Identity {
    /// When the credentials expire (Unix seconds), if they do.
    pub fn expires_at(&self) -> Option<u64> {
        match self {
            Self::Token(grants) => Some(grants.exp),
            Self::Broker(caller) => caller.expires_at,
            Self::Anonymous => None,
        }
    }

    /// The payload of this subscriber's subscription with `matcher` (see
    /// [`TokenGrants::payload_for`]); only Mercure tokens carry payloads.
    pub fn payload_for(&self, matcher: &str, base: &Url) -> Option<serde_json::Value> {
        match self {
            Self::Token(grants) => grants.payload_for(matcher, base),
            Self::Broker(_) | Self::Anonymous => None,
        }
    }

    /// The Broker caller a stream runs as (one with no grants for a Mercure token).
    pub fn caller(&self) -> Caller {
        match self {
            Self::Broker(caller) => caller.clone(),
            _ => Caller {
                user: None,
                grants: crate::auth::Grants {
                    admin: false,
                    read: Vec::new(),
                    write: Vec::new(),
                },
                expires_at: self.expires_at(),
                generation: None,
            },
        }
    }

    /// Whether this subscriber may receive `update` (a record seen as an update).
    pub fn reads(&self, update: &Update, record: &Record, base: &Url) -> bool {
        if !update.private {
            return true;
        }
        match self {
            Self::Token(grants) => any_matches(&grants.subscribe, &update.topics, base),
            Self::Broker(caller) if update.stored.is_some() => caller.grants.admin,
            Self::Broker(caller) => caller.can_read(&record.channel),
            Self::Anonymous => false,
        }
    }

    /// 403 unless this caller may publish to every one of `topics`.
    ///
    /// # Errors
    /// `insufficient_scope`, or a missing token for the anonymous.
    pub fn may_publish(&self, topics: &[String], base: &Url) -> Result<(), BearerError> {
        let allowed = match self {
            Self::Token(grants) => topics
                .iter()
                .all(|t| grants.publish.iter().any(|m: &Matcher| m.matches(t, base))),
            Self::Broker(caller) => caller
                .grants
                .can_write(caller.user.as_deref(), PUBLIC_CHANNEL),
            Self::Anonymous => return Err(BearerError::Missing),
        };
        if allowed {
            Ok(())
        } else {
            Err(BearerError::InsufficientScope(
                "not allowed to publish to every topic of this update".into(),
            ))
        }
    }
}

/// Where a request's token was found.
enum Found {
    Header(String),
    Cookie(String),
    Query(String),
    /// Broker credentials other than a token (Basic, the `broker_token` cookie).
    BrokerCredentials,
    None,
}

/// Identifies the caller of a hub request made for `role`.
///
/// # Errors
/// The RFC 6750 error to answer.
pub async fn identify(
    state: &AppState,
    parts: &Parts,
    role: Role,
    base: &Url,
) -> Result<Identity, BearerError> {
    let found = find_token(parts)?;
    let no_auth = state.auth.no_auth;
    let token = match found {
        Found::Header(token) | Found::Query(token) => token,
        Found::Cookie(token) => {
            if role == Role::Publish {
                same_origin(parts)?;
            }
            token
        }
        Found::BrokerCredentials => {
            return match state.auth.authenticate(parts, false).await {
                Ok(caller) => Ok(Identity::Broker(caller)),
                Err(e) => Err(broker_rejection(e)),
            };
        }
        Found::None if no_auth => return Ok(Identity::Broker(Caller::anonymous())),
        Found::None if role == Role::Subscribe && state.mercure.anonymous => {
            return Ok(Identity::Anonymous);
        }
        Found::None => return Err(BearerError::Missing),
    };
    let mercure_error = if state.mercure.keys.has(role) {
        match state.mercure.keys.verify(&token, role, base) {
            Ok(grants) => return Ok(Identity::Token(grants)),
            Err(why) => why,
        }
    } else {
        "no Mercure key configured for this role".to_owned()
    };
    match state.auth.caller_from_token(&token).await {
        Ok(mut caller) => {
            if no_auth {
                caller.grants = crate::auth::Grants::all();
            }
            Ok(Identity::Broker(caller))
        }
        Err(_) if no_auth => Ok(Identity::Broker(Caller::anonymous())),
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
            tracing::debug!(reason = %mercure_error, "Mercure token refused");
            Err(BearerError::InvalidToken("invalid token".into()))
        }
        Err(e) => Err(broker_rejection(e)),
    }
}

fn broker_rejection(e: AuthError) -> BearerError {
    if e.status() == StatusCode::UNAUTHORIZED {
        BearerError::InvalidToken(e.error.message)
    } else {
        BearerError::Other(e.error)
    }
}

/// Finds the token: the `Authorization` header, then the cookies, then `?authorization=`.
fn find_token(parts: &Parts) -> Result<Found, BearerError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| BearerError::InvalidRequest("malformed Authorization header".into()))?;
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
            return Ok(Found::Header(rest.trim().to_owned()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            return Ok(Found::BrokerCredentials);
        }
        return Err(BearerError::InvalidRequest(
            "unsupported Authorization scheme: use Bearer".into(),
        ));
    }
    let mut broker_cookie = false;
    for cookies in parts.headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for pair in cookies.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=')
                && !value.is_empty()
            {
                if name == COOKIE || name == SECURE_COOKIE {
                    return Ok(Found::Cookie(value.to_owned()));
                }
                broker_cookie |= name == crate::auth::COOKIE_NAME;
            }
        }
    }
    if let Some(query) = parts.uri.query() {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        if let Some((_, token)) = pairs
            .into_iter()
            .find(|(name, value)| name == "authorization" && !value.is_empty())
        {
            return Ok(Found::Query(token));
        }
    }
    Ok(if broker_cookie {
        Found::BrokerCredentials
    } else {
        Found::None
    })
}

/// A publish authorized by a cookie must come from a page of the hub's own origin: a
/// form-encoded POST needs no CORS preflight, so any site could otherwise publish with a
/// visitor's cookie.
fn same_origin(parts: &Parts) -> Result<(), BearerError> {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .or_else(|| parts.headers.get(header::REFERER))
        .and_then(|o| o.to_str().ok())
        .and_then(|o| Url::parse(o).ok());
    let matches = match (host, origin) {
        (Some(host), Some(origin)) => {
            let authority = match (origin.host_str(), origin.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_owned(),
                _ => String::new(),
            };
            authority.eq_ignore_ascii_case(host)
        }
        _ => false,
    };
    if matches {
        Ok(())
    } else {
        Err(BearerError::InsufficientScope(
            "a publish authorized by a cookie must come from the hub's own origin".into(),
        ))
    }
}

/// The records a Mercure stream carries: those whose topics one of its matchers selects and
/// that its subscriber may read.
#[derive(Debug)]
pub struct MercureFilter {
    /// The subscription's matchers (`match`, `match_urlpattern`, `topic`).
    pub selectors: Vec<Matcher>,
    /// Who subscribed.
    pub identity: Identity,
    /// The hub's URL, against which relative topics and patterns resolve.
    pub base: Url,
}

impl crate::stream::RecordFilter for MercureFilter {
    fn admits(&self, record: &Record) -> bool {
        let update = update::of(record);
        any_matches(&self.selectors, &update.topics, &self.base)
            && self.identity.reads(update, record, &self.base)
    }
}
