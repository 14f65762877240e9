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

    /// Bytes of database pages kept in memory (redb's page cache). Reads of recent records
    /// (snapshots, replays) come from it; the rest of the file is read through the operating
    /// system's file cache. Small by default: it stays full once a burst has filled it, while
    /// the system's file cache serves the same pages and gives its memory back under pressure
    /// (inserts and snapshots measured as fast with 2 MiB as with 16; docs/BENCHMARKS.md).
    #[arg(long, env = "BROKER_DB_CACHE", default_value_t = 2 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_cache: u64,

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

    /// Get certificates for these domains from an ACME directory (repeatable, or
    /// comma-separated) and serve HTTPS with them: TLS-ALPN-01 on this port, renewed before
    /// expiry. Replaces `--tls-cert`/`--tls-key`.
    #[arg(long, env = "BROKER_ACME_DOMAIN", value_delimiter = ',')]
    pub acme_domain: Vec<String>,

    /// Contact address given to the ACME directory (expiry notices).
    #[arg(long, env = "BROKER_ACME_EMAIL")]
    pub acme_email: Option<String>,

    /// ACME directory URL. Default: Let's Encrypt (production; staging with `--acme-staging`).
    #[arg(long, env = "BROKER_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,

    /// Use Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
    #[arg(long, env = "BROKER_ACME_STAGING", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub acme_staging: bool,

    /// PEM file of the roots to trust for the ACME directory's own HTTPS (a private directory);
    /// default: the web's roots.
    #[arg(long, env = "BROKER_ACME_CA_ROOT")]
    pub acme_ca_root: Option<PathBuf>,

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

    /// Most bytes of live records the shared ring holds for streams that are behind. A stream
    /// that falls further behind than this is caught up from the store, losing nothing.
    #[arg(long, env = "BROKER_STREAM_BUFFER_BYTES", default_value_t = 32 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stream_buffer_bytes: u64,

    /// Seconds a stream may make no write progress (its client reads nothing) before it is
    /// closed; the client resumes with `Last-Event-ID`, losing nothing.
    #[arg(long, env = "BROKER_WRITE_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout: u64,

    /// Most concurrent event streams; further ones get 503.
    #[arg(long, env = "BROKER_MAX_STREAMS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_streams: u64,

    /// Seconds a connection may take to send a complete request head (and, over TLS, to finish
    /// its handshake) before it is closed.
    #[arg(long, env = "BROKER_HEADER_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,

    /// Seconds a request body may take to arrive in full; a slower one gets 408.
    #[arg(long, env = "BROKER_BODY_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout: u64,

    /// Seconds a keep-alive connection may wait for its next request before it is closed.
    #[arg(long, env = "BROKER_IDLE_TIMEOUT", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,

    /// Most open connections, event streams included (default: the open-file limit less 128).
    /// At the cap a new connection closes the oldest one still waiting for its request.
    #[arg(long, env = "BROKER_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Accept queues: listening sockets on the one port, each new connection waiting in the
    /// queue its source address hashes to. A flood of connections from a few addresses fills
    /// only their queues, so clients at other addresses are still accepted at once. 1 listens
    /// on one socket.
    #[arg(long, env = "BROKER_ACCEPT_QUEUES", default_value_t = 32,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub accept_queues: u16,

    /// Threads of the event-stream runtime: plain-HTTP streams are written there, apart from
    /// the runtime that accepts connections and answers requests, so a large fan-out never
    /// queues an insert's answer, a login or a health check behind its writes. Default: one
    /// per core. 0 serves streams on the request runtime.
    #[arg(long, env = "BROKER_STREAM_THREADS")]
    pub stream_threads: Option<usize>,

    /// Most open connections from one client address; further ones get 503 and are closed.
    /// Connections from a trusted proxy are not counted.
    #[arg(long, env = "BROKER_MAX_CONNECTIONS_PER_IP", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    pub max_connections_per_ip: u64,

    /// Most concurrent event streams from one client address; further ones get 429.
    #[arg(long, env = "BROKER_MAX_STREAMS_PER_IP", default_value_t = 2048,
          value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    pub max_streams_per_ip: u64,

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

    /// Failed logins one client address may make within `--login-window` before its attempts
    /// get 429 (0: no limit).
    #[arg(long, env = "BROKER_LOGIN_FAILURES_PER_IP", default_value_t = 30)]
    pub login_failures_per_ip: u32,

    /// Failed logins for one username, from addresses that have not signed in as that user in
    /// the last 7 days, within `--login-window` before such attempts get 429 (0: no limit).
    #[arg(long, env = "BROKER_LOGIN_FAILURES_PER_USER", default_value_t = 10)]
    pub login_failures_per_user: u32,

    /// Seconds a failed login counts against its address and username; also the longest a
    /// lockout lasts.
    #[arg(long, env = "BROKER_LOGIN_WINDOW", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub login_window: u64,

    /// Seconds verified `Authorization: Basic` credentials are remembered, so a polling client
    /// costs one password check per period (0: check every request).
    #[arg(long, env = "BROKER_BASIC_CACHE_TTL", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub basic_cache_ttl: u64,

    /// `SameSite` attribute of the login cookie: `strict`, `lax` or `none` (`none` needs
    /// `Secure`).
    #[arg(
        long,
        env = "BROKER_COOKIE_SAMESITE",
        value_enum,
        default_value = "lax"
    )]
    pub cookie_samesite: SameSite,

    /// Mark the login cookie `Secure` (HTTPS only). Default: on when serving TLS; set it behind
    /// a TLS-terminating proxy.
    #[arg(long, env = "BROKER_COOKIE_SECURE", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub cookie_secure: Option<bool>,

    /// Set when [`Config::seed_from_env`] turned authentication off because no authentication
    /// variable was set; the start-up warning then names the variable that turns it on.
    #[arg(skip)]
    pub open_by_default: bool,

    /// Let several processes listen on the same address and port (`SO_REUSEPORT`); the kernel
    /// spreads new connections over them. For several cluster nodes on one host.
    #[arg(long, env = "BROKER_REUSE_PORT", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub reuse_port: bool,

    /// Cluster mode: NATS server URLs, comma-separated (`nats://h1:4222,nats://h2:4222`).
    /// Records, users and the JWT secret then live in NATS JetStream (nats-server 2.12 or newer)
    /// instead of the embedded database.
    #[arg(long, env = "BROKER_NATS")]
    pub nats: Option<String>,

    /// User name for NATS (with `--nats-password`).
    #[arg(long, env = "BROKER_NATS_USER")]
    pub nats_user: Option<String>,

    /// Password for NATS (with `--nats-user`).
    #[arg(long, env = "BROKER_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// Token for NATS.
    #[arg(long, env = "BROKER_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,

    /// A NATS credentials file (`.creds`: user JWT and NKey seed).
    #[arg(long, env = "BROKER_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// Copies JetStream keeps of every record and user (1 for a single NATS server; an insert
    /// is acknowledged once a majority of them has it).
    #[arg(long, env = "BROKER_NATS_REPLICAS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=5))]
    pub nats_replicas: u64,

    /// Prefix of the JetStream stream and buckets, so that several deployments can share one
    /// NATS (letters, digits, `-` and `_`).
    #[arg(long, env = "BROKER_NATS_PREFIX", default_value = "broker")]
    pub nats_prefix: String,

    /// The Mercure hub's flags (`--mercure-*`).
    #[command(flatten)]
    pub mercure: crate::mercure::MercureConfig,
}

/// Database directory of [`crate::broker_run`], as in the original Broker ("`./tmp` of the
/// project root"); `BROKER_DB` overrides it.
pub const SEED_DB: &str = "./tmp";

/// Environment variables that configure authentication. When [`crate::broker_run`] starts with
/// none of them set, it runs in open mode as the original library did; any of them set (a JWT
/// secret, an admin, `BROKER_NO_AUTH=false`, ...) turns authentication back on.
pub const AUTH_ENV: &[&str] = &[
    "BROKER_NO_AUTH",
    "BROKER_JWT_SECRET",
    "BROKER_JWT_EXPIRY",
    "BROKER_ADMIN",
    "BROKER_SIGNUP",
    "BROKER_DEFAULT_READ",
    "BROKER_DEFAULT_WRITE",
];

/// The cookie's `SameSite` attribute (`--cookie-samesite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SameSite {
    /// Sent only on requests from the same site.
    Strict,
    /// Also sent on top-level navigations from other sites (the browsers' default).
    Lax,
    /// Sent on every request, cross-site included; browsers require `Secure` with it.
    None,
}

impl SameSite {
    /// The attribute's value as written in `Set-Cookie`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "Strict",
            Self::Lax => "Lax",
            Self::None => "None",
        }
    }
}

impl Config {
    /// Configuration from the environment alone (as if the binary ran with no flags).
    ///
    /// # Errors
    /// When an environment variable holds a bad value.
    pub fn from_env() -> Result<Self, clap::Error> {
        Self::try_parse_from(["broker"])
    }

    /// The configuration of the original library entry point ([`crate::broker_run`]): the
    /// environment's, with the database in [`SEED_DB`] unless `BROKER_DB` is set, open mode
    /// unless one of [`AUTH_ENV`] is set, and `origin` as the CORS origin.
    ///
    /// # Errors
    /// When an environment variable holds a bad value.
    pub fn seed_from_env(origin: String) -> Result<Self, clap::Error> {
        let mut config = Self::from_env()?;
        config.apply_seed_defaults(|name| std::env::var_os(name).is_some());
        config.origin = origin;
        Ok(config)
    }

    /// The seed's defaults where `is_set` says the environment leaves them open.
    fn apply_seed_defaults(&mut self, is_set: impl Fn(&str) -> bool) {
        if !is_set("BROKER_DB") {
            self.db = PathBuf::from(SEED_DB);
        }
        if !AUTH_ENV.iter().any(|name| is_set(name)) {
            self.no_auth = true;
            self.open_by_default = true;
        }
    }

    /// Whether TLS is served (from files or with ACME).
    pub fn tls_enabled(&self) -> bool {
        self.secure || (self.tls_cert.is_some() && self.tls_key.is_some()) || self.acme_enabled()
    }

    /// Whether certificates come from ACME (`--acme-domain`).
    pub fn acme_enabled(&self) -> bool {
        !self.acme_domain.is_empty()
    }

    /// Whether the login cookie is marked `Secure`: `--cookie-secure`, else whether TLS is served.
    pub fn cookie_secure(&self) -> bool {
        self.cookie_secure.unwrap_or_else(|| self.tls_enabled())
    }

    /// Interval between keep-alive comments.
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_secs(self.keepalive)
    }

    /// Time to send a complete request head.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout)
    }

    /// Time to send a request body.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout)
    }

    /// Time a keep-alive connection may stay idle.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout)
    }

    /// The `--max-channels` cap as a count.
    pub fn max_channels(&self) -> usize {
        usize::try_from(self.max_channels).unwrap_or(usize::MAX)
    }

    /// The NATS connection of cluster mode, `None` without `--nats` (the embedded store).
    pub fn nats_options(&self) -> Option<crate::store::jetstream::NatsOptions> {
        let urls: Vec<String> = self
            .nats
            .as_deref()?
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        Some(crate::store::jetstream::NatsOptions {
            urls,
            user_password: self.nats_user.clone().zip(self.nats_password.clone()),
            token: self.nats_token.clone(),
            creds: self.nats_creds.clone(),
            replicas: usize::try_from(self.nats_replicas).unwrap_or(1),
            prefix: self.nats_prefix.clone(),
        })
    }

    /// Checks the NATS flags: URLs present, one kind of credential, a usable prefix.
    fn validate_nats(&self) -> Result<(), String> {
        let Some(options) = self.nats_options() else {
            if self.nats_user.is_some()
                || self.nats_password.is_some()
                || self.nats_token.is_some()
                || self.nats_creds.is_some()
            {
                return Err("NATS credentials (--nats-user, --nats-password, --nats-token,                             --nats-creds) need --nats"
                    .into());
            }
            return Ok(());
        };
        if options.urls.is_empty() {
            return Err("--nats needs at least one URL (nats://host:4222)".into());
        }
        if self.nats_user.is_some() != self.nats_password.is_some() {
            return Err("--nats-user and --nats-password must be given together".into());
        }
        let kinds = usize::from(self.nats_user.is_some())
            + usize::from(self.nats_token.is_some())
            + usize::from(self.nats_creds.is_some());
        if kinds > 1 {
            return Err("give one NATS credential: --nats-user/--nats-password, --nats-token                         or --nats-creds"
                .into());
        }
        let prefix = &self.nats_prefix;
        if prefix.is_empty()
            || prefix.len() > 32
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "--nats-prefix {prefix:?} must be 1 to 32 letters, digits, '-' or '_'"
            ));
        }
        Ok(())
    }

    /// Checks the ACME flags: domains given only with the others, and not with TLS files.
    fn validate_acme(&self) -> Result<(), String> {
        if !self.acme_enabled() {
            let set = self.acme_email.is_some()
                || self.acme_directory.is_some()
                || self.acme_staging
                || self.acme_ca_root.is_some();
            if set {
                return Err(
                    "--acme-email, --acme-directory, --acme-staging and --acme-ca-root need \
                     --acme-domain"
                        .into(),
                );
            }
            return Ok(());
        }
        if self.tls_cert.is_some() || self.tls_key.is_some() {
            return Err(
                "--acme-domain replaces --tls-cert and --tls-key: give one or the other".into(),
            );
        }
        if self.acme_staging && self.acme_directory.is_some() {
            return Err("--acme-staging and --acme-directory name different directories".into());
        }
        if let Some(bad) = self.acme_domain.iter().find(|d| {
            d.is_empty()
                || d.len() > 253
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*')
        }) {
            return Err(format!("--acme-domain {bad:?} is not a domain name"));
        }
        Ok(())
    }

    /// Checks combinations of flags that each look fine alone.
    ///
    /// # Errors
    /// A message naming the flag at fault.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_nats()?;
        self.validate_acme()?;
        if self.tls_enabled()
            && !self.acme_enabled()
            && (self.tls_cert.is_none() || self.tls_key.is_none())
        {
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
        if self.cookie_samesite == SameSite::None && !self.cookie_secure() {
            return Err(
                "--cookie-samesite none needs --cookie-secure (browsers drop SameSite=None \
                 cookies that are not Secure)"
                    .into(),
            );
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
    fn acme_flags() {
        let parse = |args: &[&str]| {
            let mut all = vec!["broker"];
            all.extend_from_slice(args);
            Config::try_parse_from(all).expect("parses")
        };
        let c = parse(&[
            "--acme-domain",
            "a.example",
            "--acme-domain",
            "b.example,c.example",
        ]);
        assert_eq!(c.acme_domain, ["a.example", "b.example", "c.example"]);
        assert!(c.acme_enabled() && c.tls_enabled() && c.cookie_secure());
        assert!(c.validate().is_ok());
        assert_eq!(crate::acme::directory(&c), crate::acme::LETS_ENCRYPT);
        let c = parse(&["--acme-domain", "a.example", "--acme-staging"]);
        assert_eq!(
            crate::acme::directory(&c),
            crate::acme::LETS_ENCRYPT_STAGING
        );
        for (args, says) in [
            (&["--acme-email", "x@y.z"][..], "need --acme-domain"),
            (
                &[
                    "--acme-domain",
                    "a.example",
                    "--tls-cert",
                    "c",
                    "--tls-key",
                    "k",
                ],
                "replaces",
            ),
            (
                &[
                    "--acme-domain",
                    "a.example",
                    "--acme-staging",
                    "--acme-directory",
                    "u",
                ],
                "different directories",
            ),
            (&["--acme-domain", "a b"], "not a domain"),
        ] {
            let err = parse(args).validate().unwrap_err();
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }

    #[test]
    fn cookie_flags() {
        let c = Config::try_parse_from(["broker"]).expect("defaults");
        assert_eq!(c.cookie_samesite, SameSite::Lax);
        assert!(!c.cookie_secure(), "plain HTTP");
        let c = Config::try_parse_from(["broker", "--cookie-samesite", "none"]).expect("parses");
        assert!(c.validate().unwrap_err().contains("--cookie-secure"));
        let c = Config::try_parse_from(["broker", "--cookie-samesite", "none", "--cookie-secure"])
            .expect("parses");
        assert!(c.cookie_secure() && c.validate().is_ok());
        let c = Config::try_parse_from(["broker", "--cookie-secure=false"]).expect("parses");
        assert_eq!(c.cookie_secure, Some(false));
    }

    #[test]
    fn seed_defaults_follow_the_environment() {
        let seed = |set: &[&str]| {
            let mut c = Config::try_parse_from(["broker"]).expect("defaults");
            c.apply_seed_defaults(|name| set.contains(&name));
            c
        };
        let open = seed(&[]);
        assert!(open.no_auth && open.open_by_default);
        assert_eq!(open.db, PathBuf::from(SEED_DB));
        for name in AUTH_ENV {
            let c = seed(&[name]);
            assert!(!c.no_auth && !c.open_by_default, "{name} turns auth on");
        }
        let c = seed(&["BROKER_DB", "PORT", "BROKER_ORIGIN"]);
        assert_eq!(c.db, PathBuf::from("./data"), "BROKER_DB is left as parsed");
        assert!(c.no_auth, "other variables leave open mode");
    }

    #[test]
    fn nats_flags() {
        let c = Config::try_parse_from(["broker"]).expect("defaults");
        assert!(c.nats_options().is_none(), "embedded store by default");
        assert_eq!((c.nats_replicas, c.nats_prefix.as_str()), (3, "broker"));
        let c = Config::try_parse_from([
            "broker",
            "--nats",
            "nats://a:4222, nats://b:4222",
            "--nats-user",
            "u",
            "--nats-password",
            "p",
            "--nats-replicas",
            "1",
            "--nats-prefix",
            "staging",
        ])
        .expect("parses");
        assert!(c.validate().is_ok());
        let options = c.nats_options().expect("cluster mode");
        assert_eq!(options.urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(options.user_password, Some(("u".into(), "p".into())));
        assert_eq!((options.replicas, options.prefix.as_str()), (1, "staging"));
        for (args, says) in [
            (&["--nats-token", "t"][..], "need --nats"),
            (&["--nats", " , "], "at least one URL"),
            (&["--nats", "nats://a", "--nats-user", "u"], "together"),
            (
                &[
                    "--nats",
                    "nats://a",
                    "--nats-token",
                    "t",
                    "--nats-creds",
                    "c",
                ],
                "one NATS",
            ),
            (
                &["--nats", "nats://a", "--nats-prefix", "a.b"],
                "--nats-prefix",
            ),
        ] {
            let c = Config::try_parse_from(std::iter::once("broker").chain(args.iter().copied()))
                .expect("parses");
            let err = c.validate().unwrap_err();
            assert!(err.contains(says), "{args:?}: {err}");
        }
        let err = Config::try_parse_from(["broker", "--nats-replicas", "0"]).unwrap_err();
        assert!(err.to_string().contains("--nats-replicas"));
    }

    #[test]
    fn bad_value_names_the_flag() {
        let err = Config::try_parse_from(["broker", "--port", "http"]).unwrap_err();
        assert!(err.to_string().contains("--port"));
    }
}
