//! The load tool's command line.

use clap::{Parser, ValueEnum};

/// Which server wire to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wire {
    /// Broker's native wire: login, `GET /events`, `POST /insert`.
    Broker,
    /// node-sse-server's wire: `GET /subscribe`, `POST /publish` (Broker serves it too).
    NodeSse,
}

/// A load run: N subscribers on one channel, P publishers, for a duration.
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(
    name = "broker-bench",
    version,
    about = "Load tool for Broker and node-sse-server"
)]
pub struct Args {
    /// Base URL of the server under test.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Wire profile.
    #[arg(long, value_enum, default_value = "broker")]
    pub profile: Wire,
    /// Concurrent SSE subscribers.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Total publish rate in events/s over all publishers; 0 publishes flat out.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Events per publish request: more than 1 uses batch publish (`POST /publish`), stored
    /// in one commit and delivered to each subscriber in one write.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait after publishing for every delivery to arrive.
    #[arg(long, default_value_t = 15.0)]
    pub drain: f64,
    /// Extra bytes of padding in each event's data.
    #[arg(long, default_value_t = 0)]
    pub payload: usize,
    /// Spread subscribers over this many loopback source addresses (127.0.0.2, 127.0.0.3, ...)
    /// so that many connections do not exhaust ephemeral ports; 0 uses the default address.
    #[arg(long, default_value_t = 0)]
    pub source_addrs: u8,
    /// Pid of the server, to read its resident memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Before the run, time a new subscriber's snapshot of this many distinct events
    /// (broker profile).
    #[arg(long, default_value_t = 0)]
    pub snapshot_events: usize,
    /// Username for the broker profile (signed up if missing).
    #[arg(long, default_value = "bench")]
    pub user: String,
    /// Password for the broker profile.
    #[arg(long, default_value = "bench-password")]
    pub password: String,
    /// Channel used for the run.
    #[arg(long, default_value = "bench")]
    pub channel: String,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// A label for this run in the report.
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Name of the server under test, for the plots (`broker`, `node-sse-server`).
    #[arg(long, default_value = "broker")]
    pub server_name: String,
    /// Connect subscribers in steps of this many and read the server's memory after each
    /// step (needs `--server-pid`); 0 connects them all at once.
    #[arg(long, default_value_t = 0)]
    pub memory_step: usize,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Worker processes to hold the subscribers (each within its own open-file limit);
    /// by default the tool starts them only when one process may not hold them all.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Seconds to wait for a step of subscribers to connect; a run that cannot connect them
    /// all in time goes on with those it has and says so.
    #[arg(long, default_value_t = 120.0)]
    pub connect_timeout: f64,
    /// Internal: run as a worker process of another broker-bench.
    #[arg(long, hide = true)]
    pub worker: bool,
    /// Internal: this worker's group index.
    #[arg(long, hide = true, default_value_t = 0)]
    pub worker_index: usize,
    /// Internal: the number of groups.
    #[arg(long, hide = true, default_value_t = 1)]
    pub worker_groups: usize,
}
