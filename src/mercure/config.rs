//! The Mercure flags, flattened into [`crate::Config`].

use clap::Args;

/// How the Mercure hub at `/.well-known/mercure` checks its tokens and whom it serves.
#[derive(Debug, Clone, Default, Args)]
pub struct MercureConfig {
    /// Key verifying both publishers' and subscribers' Mercure tokens: an HS256 secret, or a
    /// PEM public key (RSA for RS256, P-256 for ES256).
    #[arg(
        long,
        env = "BROKER_MERCURE_JWT_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub mercure_jwt_key: Option<String>,

    /// Key verifying publishers' tokens (instead of `--mercure-jwt-key`).
    #[arg(
        long,
        env = "BROKER_MERCURE_PUBLISHER_JWT_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub mercure_publisher_jwt_key: Option<String>,

    /// Key verifying subscribers' tokens (instead of `--mercure-jwt-key`).
    #[arg(
        long,
        env = "BROKER_MERCURE_SUBSCRIBER_JWT_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub mercure_subscriber_jwt_key: Option<String>,

    /// When set, Mercure tokens must carry this `iss`.
    #[arg(long, env = "BROKER_MERCURE_ISSUER")]
    pub mercure_issuer: Option<String>,

    /// When set, Mercure tokens must carry this `aud` (a string, or an array holding it).
    #[arg(long, env = "BROKER_MERCURE_AUDIENCE")]
    pub mercure_audience: Option<String>,

    /// Active subscriptions: subscription events on
    /// `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}` topics and the
    /// subscriptions API (every node's subscriptions in cluster mode).
    #[arg(long, env = "BROKER_MERCURE_SUBSCRIPTIONS", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub mercure_subscriptions: bool,

    /// Subscribers without a token may subscribe, and receive public updates.
    #[arg(long, env = "BROKER_MERCURE_ANONYMOUS", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub mercure_anonymous: bool,
}
