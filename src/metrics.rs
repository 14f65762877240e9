//! Prometheus metrics, exposed as text at `GET /metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric Broker exports.
pub struct Metrics {
    registry: Registry,
    /// Open event streams.
    pub subscribers: Gauge,
    /// Records stored.
    pub inserts: Counter,
    /// Records written to streams (one per record per subscriber).
    pub deliveries: Counter,
    /// Times a slow stream fell behind its buffer and was caught up from the store.
    pub slow_subscribers: Counter,
    /// Streams refused because `--max-streams` were open.
    pub refused_streams: Counter,
    /// Streams refused because their client address had `--max-streams-per-ip` open.
    pub refused_streams_per_ip: Counter,
    /// Open client connections (event streams included).
    pub connections: Gauge,
    /// Connections refused: over `--max-connections-per-ip`, or no room at `--max-connections`.
    pub refused_connections: Counter,
    /// Connections waiting for their client, closed to make room at `--max-connections`.
    pub evicted_connections: Counter,
    /// Connections closed by `--header-timeout`, `--idle-timeout` or a body that stopped.
    pub timed_out_connections: Counter,
    /// Time from handing an append to the store until it is durable.
    pub commit_seconds: Histogram,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("broker");
        let subscribers = Gauge::default();
        let inserts = Counter::default();
        let deliveries = Counter::default();
        let slow_subscribers = Counter::default();
        let refused_streams = Counter::default();
        let refused_streams_per_ip = Counter::default();
        let connections = Gauge::default();
        let refused_connections = Counter::default();
        let evicted_connections = Counter::default();
        let timed_out_connections = Counter::default();
        let commit_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 14));
        registry.register("subscribers", "Open event streams", subscribers.clone());
        registry.register("inserts", "Records stored", inserts.clone());
        registry.register(
            "deliveries",
            "Records written to event streams",
            deliveries.clone(),
        );
        registry.register(
            "slow_subscribers",
            "Slow streams that fell behind their buffer and were caught up from the store",
            slow_subscribers.clone(),
        );
        registry.register(
            "refused_streams",
            "Streams refused at --max-streams",
            refused_streams.clone(),
        );
        registry.register(
            "refused_streams_per_ip",
            "Streams refused at --max-streams-per-ip",
            refused_streams_per_ip.clone(),
        );
        registry.register(
            "connections",
            "Open client connections, event streams included",
            connections.clone(),
        );
        registry.register(
            "refused_connections",
            "Connections refused at --max-connections-per-ip, or with every connection busy",
            refused_connections.clone(),
        );
        registry.register(
            "evicted_connections",
            "Connections still waiting for their client, closed to make room for new ones",
            evicted_connections.clone(),
        );
        registry.register(
            "timed_out_connections",
            "Connections closed by the header, body or idle timeout",
            timed_out_connections.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Time until an append is durable",
            commit_seconds.clone(),
        );
        Self {
            registry,
            subscribers,
            inserts,
            deliveries,
            slow_subscribers,
            refused_streams,
            refused_streams_per_ip,
            connections,
            refused_connections,
            evicted_connections,
            timed_out_connections,
            commit_seconds,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
