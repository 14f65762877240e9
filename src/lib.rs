//! Broker: a real-time event server.
//!
//! Clients insert JSON events (`POST /insert`); Broker stores every version durably in its
//! embedded database and publishes each one over Server-Sent Events (`GET /events`). A new
//! subscriber first receives the latest version of every event it may read, then every new one
//! live, and can resume after a disconnection with `Last-Event-ID` without losing anything.
//!
//! # Layout
//! - [`config`]: the command line and environment ([`Config`])
//! - [`server`]: opening an [`App`], serving it (HTTP or TLS), graceful shutdown
//! - [`acme`]: automatic HTTPS: certificates from an ACME directory, renewed in place
//! - [`api`]: the HTTP endpoints, one module per resource, and the router
//! - [`auth`]: JWTs, password hashing, permissions, the caller extractor
//! - [`client_ip`]: the client's address (peer, or `X-Forwarded-For` of a trusted proxy)
//! - [`conn`]: connection admission: caps (total, per address), header/body/idle timeouts,
//!   eviction of the oldest waiting connection
//! - [`limits`]: the open-file limit and the connection and stream caps below it
//! - [`store`]: the [`Store`](store::Store) trait and the embedded `redb` store (group commit)
//! - [`mercure`]: the Mercure hub at `/.well-known/mercure` (its updates are records)
//! - [`hub`]: live fan-out of committed records to the streams
//! - [`presence`]: who is connected (node-sse-server's online presence), coalesced announcements
//! - [`stream`]: one subscriber's stream: snapshot or replay, then live, with no gap
//! - [`sse`]: SSE frame encoding
//! - [`names`]: the naming rules for events, channels and users
//! - [`metrics`]: Prometheus metrics
//! - [`error`]: the JSON error type
//! - [`shutdown`]: SIGTERM / SIGINT
//!
//! # Use as a library
//! ```no_run
//! # async fn run() -> Result<(), broker::Error> {
//! let config = broker::Config::from_env().map_err(|e| broker::Error::Config(e.to_string()))?;
//! broker::Broker::new(config).serve().await
//! # }
//! ```

pub mod acme;
pub mod api;
pub mod auth;
pub mod client_ip;
pub mod config;
pub mod conn;
pub mod error;
pub mod hub;
pub mod limits;
pub mod mercure;
pub mod metrics;
pub mod names;
pub mod presence;
pub mod server;
pub mod shutdown;
pub mod sse;
pub mod state;
pub mod store;
pub mod stream;
pub mod stream_conn;
pub mod stream_runtime;
pub mod tls_conn;

use std::future::Future;
use std::net::SocketAddr;

pub use config::Config;
pub use server::App;

/// Why a Broker could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag or flag combination.
    #[error("{0}")]
    Config(String),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The listener failed (address in use, permission denied).
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// A Broker server to start from Rust.
pub struct Broker {
    config: Config,
}

impl Broker {
    /// A server with this configuration; nothing is opened until it is served.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn serve(self) -> Result<(), Error> {
        server::serve(self.config, shutdown::signal()).await
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn serve_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        server::serve(self.config, signal).await
    }

    /// Opens the store without listening, to mount [`App::router`] into another axum app.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn open(self) -> Result<App, Error> {
        App::open(self.config).await
    }
}

/// Installs the default log output (`RUST_LOG`, default `info`) on standard error, unless the
/// application has installed its own subscriber.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The original Broker's entry point: serves on `PORT` with `origin` as the CORS origin (`"*"`
/// for any), in open mode with the database in `./tmp`, as the original library did.
///
/// Every other setting comes from the environment as for the binary. `BROKER_DB` moves the
/// database, and any authentication variable ([`config::AUTH_ENV`]: `BROKER_JWT_SECRET`,
/// `BROKER_NO_AUTH=false`, ...) turns authentication back on; without one, a warning at start
/// says that it is off.
///
/// # Errors
/// Any start-up failure, as an I/O error.
pub async fn broker_run(origin: String) -> std::io::Result<()> {
    init_logging();
    let config = Config::seed_from_env(origin).map_err(std::io::Error::other)?;
    Broker::new(config)
        .serve()
        .await
        .map_err(std::io::Error::other)
}
