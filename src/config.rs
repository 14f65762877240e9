//! Command-line and environment configuration.
//!
//! Every flag also reads an environment variable, and the spellings of the original Broker's command
//! line (`--jwt_secret`, `--key_path`, `--secure="true"`, ...) are accepted as aliases so that its
//! documented invocation starts this server unchanged.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::BoolishValueParser;

use crate::client_ip::TrustedProxies;

/// Who may create users with `POST /users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Signup {
    /// Anyone may sign up (the default, as in the original Broker).
    Open,
    /// Only an authenticated admin may create users.
    Admin,
}

/// The whole configuration of a Broker server.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "broker",
    version,
    about = "Real-time event server: insert JSON events, stream them over SSE"
)]
pub struct Config {
    /// TCP port to listen on (0 picks a free port and logs it).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "BROKER_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Directory of the embedded database (created if missing).
    #[arg(long, env = "BROKER_DB", default_value = "./data")]
    pub db: PathBuf,

    /// Allowed CORS origin(s): `*` or a comma-separated list of origins.
    #[arg(long, env = "BROKER_ORIGIN", default_value = "*")]
    pub origin: String,

    /// Secret that signs the JWTs (HS256). When absent a random one is generated once and kept in
    /// the database directory.
    #[arg(
        long,
        env = "BROKER_JWT_SECRET",
        alias = "jwt_secret",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,

    /// Lifetime of an issued JWT, in seconds.
    #[arg(long, env = "BROKER_JWT_EXPIRY", alias = "jwt_expiry", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub jwt_expiry: u64,

    /// Serve TLS (needs `--tls-cert` and `--tls-key`). Implied when both are given.
    #[arg(long, env = "BROKER_SECURE", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub secure: bool,

    /// PEM certificate chain for TLS.
    #[arg(long, env = "BROKER_TLS_CERT", alias = "cert_path")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for TLS (PKCS#1, PKCS#8 or SEC1).
    #[arg(long, env = "BROKER_TLS_KEY", alias = "key_path")]
    pub tls_key: Option<PathBuf>,

    /// Turn authentication off: every endpoint is open to everyone (local development, demos).
    #[arg(long, env = "BROKER_NO_AUTH", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub no_auth: bool,

    /// Who may create users: `open` (anyone) or `admin` (an admin's token is required).
    #[arg(long, env = "BROKER_SIGNUP", value_enum, default_value = "open")]
    pub signup: Signup,

    /// An admin account `username:password`, created (or its password reset) at start-up.
    #[arg(long, env = "BROKER_ADMIN", hide_env_values = true)]
    pub admin: Option<String>,

    /// Channels a new user may read: comma-separated names or patterns (`*`, `prefix*`, `{user}`).
    #[arg(long, env = "BROKER_DEFAULT_READ", default_value = "*")]
    pub default_read: String,

    /// Channels a new user may write: comma-separated names or patterns (`*`, `prefix*`, `{user}`).
    #[arg(long, env = "BROKER_DEFAULT_WRITE", default_value = "*")]
    pub default_write: String,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "BROKER_MAX_BODY", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body: u64,

    /// Seconds between keep-alive comments on open streams.
    #[arg(long, env = "BROKER_KEEPALIVE", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive: u64,

    /// Reconnection delay advertised to SSE clients (`retry:`), in milliseconds.
    #[arg(long, env = "BROKER_RETRY_MS", default_value_t = 2_000)]
    pub retry_ms: u64,

    /// Live commits (each the one or more records that shared an fsync) a stream may fall
    /// behind before it is caught up from the store.
    #[arg(long, env = "BROKER_STREAM_BUFFER", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub stream_buffer: u64,

    /// Most concurrent event streams; further ones get 503.
    #[arg(long, env = "BROKER_MAX_STREAMS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_streams: u64,

    /// Most distinct channels one stream may name in `channels=`; more get 400.
    #[arg(long, env = "BROKER_MAX_CHANNELS", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_channels: u64,

    /// Serve the two-window demo page at `/demo`.
    #[arg(long, env = "BROKER_DEMO", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub demo: bool,

    /// Seconds that shutdown waits for in-flight requests before closing connections.
    #[arg(long, env = "BROKER_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,

    /// Reverse proxies whose `X-Forwarded-For` names the client (comma-separated IPs or CIDR
    /// networks). Per-IP limits key on that client address; from anyone else the header is
    /// ignored.
    #[arg(long, env = "BROKER_TRUSTED_PROXIES", default_value = "",
          value_parser = clap::value_parser!(TrustedProxies))]
    pub trusted_proxies: TrustedProxies,
}

impl Config {
    /// Configuration from the environment alone (as if the binary ran with no flags).
    ///
    /// # Errors
    /// When an environment variable holds a bad value.
    pub fn from_env() -> Result<Self, clap::Error> {
        Self::try_parse_from(["broker"])
    }

    /// Whether TLS is served.
    pub fn tls_enabled(&self) -> bool {
        self.secure || (self.tls_cert.is_some() && self.tls_key.is_some())
    }

    /// Interval between keep-alive comments.
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_secs(self.keepalive)
    }

    /// The `--max-channels` cap as a count.
    pub fn max_channels(&self) -> usize {
        usize::try_from(self.max_channels).unwrap_or(usize::MAX)
    }

    /// Checks combinations of flags that each look fine alone.
    ///
    /// # Errors
    /// A message naming the flag at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.tls_enabled() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err(
                "--secure needs --tls-cert (--cert_path) and --tls-key (--key_path)".into(),
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key must be given together".into());
        }
        if let Some(secret) = &self.jwt_secret
            && secret.is_empty()
        {
            return Err("--jwt-secret must not be empty".into());
        }
        if let Some(admin) = &self.admin {
            match admin.split_once(':') {
                Some((user, pass)) if !user.is_empty() && pass.len() >= 8 => {}
                _ => {
                    return Err(
                        "--admin must be username:password with a password of at least 8 characters".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_command_line_parses() {
        let c = Config::try_parse_from([
            "broker",
            "--db=tmp",
            "--port=8443",
            "--secure=true",
            "--origin=*",
            "--jwt_expiry=86400",
            "--jwt_secret=secret",
            "--key_path=broker.rsa",
            "--cert_path=broker.pem",
        ])
        .expect("seed command line");
        assert_eq!(c.port, 8443);
        assert!(c.secure && c.tls_enabled());
        assert_eq!(c.jwt_secret.as_deref(), Some("secret"));
        assert_eq!(c.tls_key, Some(PathBuf::from("broker.rsa")));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn secure_without_files_is_refused() {
        let c = Config::try_parse_from(["broker", "--secure"]).expect("parses");
        assert!(c.validate().unwrap_err().contains("--tls-cert"));
    }

    #[test]
    fn bad_value_names_the_flag() {
        let err = Config::try_parse_from(["broker", "--port", "http"]).unwrap_err();
        assert!(err.to_string().contains("--port"));
    }
}
