//! The Mercure wire: Broker as a Mercure hub at `/.well-known/mercure`.
//!
//! Mercure updates are Broker records (see [`update`] for the mapping), so they are stored
//! durably, resumed with no gap, and served by every node of a cluster like any record. A
//! Mercure stream is a [`crate::stream::Subscription`] in [`crate::sse::Format::Mercure`]
//! with a [`access::MercureFilter`]: the same lean path and fan-out as `/events`.
//!
//! - [`config`]: the `--mercure-*` flags
//! - [`matcher`]: topic matchers (exact, URL Pattern, the older selectors and URI templates)
//! - [`token`]: Mercure tokens, both claim forms, HS256 / RS256 / ES256 keys
//! - [`access`]: who is calling (Mercure token, Broker credentials, anonymous), the filter
//! - [`bearer`]: RFC 6750 errors
//! - [`update`]: updates as records, records as Mercure frames
//! - [`subscribe`]: `GET /.well-known/mercure`
//! - [`publish`]: `POST /.well-known/mercure`
//! - [`subscriptions`]: active subscriptions (events and API)
//! - [`metadata`]: the protected resource metadata (RFC 9728)

pub mod access;
pub mod bearer;
pub mod config;
pub mod matcher;
pub mod metadata;
pub mod publish;
pub mod subscribe;
pub mod subscriptions;
pub mod token;
pub mod update;

use axum::http::HeaderMap;
use url::Url;

pub use config::MercureConfig;
use token::TokenKeys;

/// Path of the hub.
pub const HUB_PATH: &str = "/.well-known/mercure";
/// Path of the hub's protected resource metadata (RFC 9728: the well-known prefix, then the
/// hub's path).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource/.well-known/mercure";

/// The hub's settings, shared by its handlers.
pub struct Mercure {
    /// Keys verifying Mercure tokens.
    pub keys: TokenKeys,
    /// `--mercure-anonymous`.
    pub anonymous: bool,
    /// `--mercure-subscriptions`.
    pub active_subscriptions: bool,
    /// Active subscriptions (this node's, and the other nodes' in cluster mode).
    pub subscriptions: std::sync::Arc<subscriptions::Registry>,
    /// Held while a publish with its own id checks that the id is new and stores it, so two
    /// publishes of one id on this node cannot both pass the check.
    publish_ids: tokio::sync::Mutex<()>,
}

impl Mercure {
    /// The hub for these flags.
    ///
    /// # Errors
    /// A key that cannot be used.
    pub fn new(config: &MercureConfig) -> Result<Self, String> {
        Ok(Self {
            keys: TokenKeys::new(config)?,
            anonymous: config.mercure_anonymous,
            active_subscriptions: config.mercure_subscriptions,
            subscriptions: std::sync::Arc::default(),
            publish_ids: tokio::sync::Mutex::new(()),
        })
    }
}

impl Default for Mercure {
    fn default() -> Self {
        Self {
            keys: TokenKeys::default(),
            anonymous: false,
            active_subscriptions: false,
            subscriptions: std::sync::Arc::default(),
            publish_ids: tokio::sync::Mutex::new(()),
        }
    }
}

/// The hub's URL as the request names it (its `Host`), against which relative topics and
/// URL patterns resolve.
pub fn hub_url(headers: &HeaderMap, uri: &axum::http::Uri, tls: bool) -> Url {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let scheme = if tls { "https" } else { "http" };
    Url::parse(&format!("{scheme}://{host}{HUB_PATH}")).unwrap_or_else(|_| fallback_url())
}

/// `http://localhost/.well-known/mercure`, for a request whose `Host` is not a host.
fn fallback_url() -> Url {
    let mut url = Url::from_directory_path("/").unwrap_or_else(|()| unreachable!());
    url.set_path(HUB_PATH);
    url
}
