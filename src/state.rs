//! What every request handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::FromRef;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::config::Config;
use crate::conn::PerIp;
use crate::hub::Hub;
use crate::mercure::Mercure;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::store::Store;

/// Shared state of a running Broker, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The configuration it was started with.
    pub config: Arc<Config>,
    /// Durable records and users.
    pub store: Arc<dyn Store>,
    /// Live fan-out.
    pub hub: Arc<Hub>,
    /// Credentials and tokens.
    pub auth: Arc<Auth>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Connected node-sse-server clients.
    pub presence: Arc<Presence>,
    /// The Mercure hub's keys and settings.
    pub mercure: Arc<Mercure>,
    /// Open event streams per client address (`--max-streams-per-ip`).
    pub streams_per_ip: Arc<PerIp>,
    /// Cancelled when shutdown begins: streams end, `/ready` turns 503.
    pub shutdown: CancellationToken,
    ready: Arc<AtomicBool>,
}

impl AppState {
    /// State over an open store.
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        auth: Arc<Auth>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let per_ip = u32::try_from(config.max_streams_per_ip).unwrap_or(u32::MAX);
        Self {
            streams_per_ip: Arc::new(PerIp::new(per_ip)),
            config,
            store,
            hub,
            auth,
            metrics,
            presence: Presence::new(),
            mercure: Arc::new(Mercure::default()),
            shutdown: CancellationToken::new(),
            ready: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Whether the server accepts work (store open, not shutting down).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.shutdown.is_cancelled()
    }

    /// Starts shutting down: `/ready` answers 503 and open streams end.
    pub fn begin_shutdown(&self) {
        self.ready.store(false, Ordering::Release);
        // The flag first: a stream that subscribes after the hub's message sees the flag.
        self.shutdown.cancel();
        self.hub.shutdown();
    }
}

/// The extractors of [`crate::auth`] take the [`Auth`] from the state this way.
impl FromRef<AppState> for Arc<Auth> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}
