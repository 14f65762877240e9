//! The load tool's command line.

use clap::{Parser, ValueEnum};

use crate::hostile::args::HostileArgs;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Subscribers and publishers: fan-out latency, throughput, loss, memory.
    Load,
    /// Connections that send one request line and then nothing, while probes time
    /// `/health` and `/insert`; when does the server close them?
    HalfOpen,
    /// Subscribers that stop reading while large events are inserted: the server's memory,
    /// then whether each receives every event in order once it resumes.
    Stalled,
    /// Concurrent wrong-password logins for one user while a legitimate client logs in.
    LoginFlood,
    /// Live, stalled and reconnecting subscribers with the half-open and login attacks in
    /// the background, for a long time: server memory over time, nothing lost.
    Soak,
}

/// Which server wire to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wire {
    /// Broker's native wire: login, `GET /events`, `POST /insert`.
    Broker,
    /// node-sse-server's wire: `GET /subscribe`, `POST /publish` (Broker serves it too).
    NodeSse,
    /// The Mercure wire: `GET /.well-known/mercure?topic=...`, `POST /.well-known/mercure`
    /// form-encoded, one update per request.
    Mercure,
}

/// A load run: N subscribers on one channel, P publishers, for a duration.
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(
    name = "broker-bench",
    version,
    about = "Load tool for Broker and node-sse-server"
)]
pub struct Args {
    /// Base URL of the server under test; for the load scenario, several comma-separated
    /// URLs (the nodes of a cluster): subscriber and publisher `i` use URL `i mod n`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// What to run (`load`: the fan-out benchmark; the others are hostile clients, broker
    /// profile only).
    #[arg(long, value_enum, default_value = "load")]
    pub scenario: Scenario,
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
    /// Seconds of publishing (load: 10 by default), or the time bound of a hostile scenario
    /// (half-open: --header-timeout + 10; stalled and login-flood: 300; soak: 1800).
    #[arg(long)]
    pub duration: Option<f64>,
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
    /// A subscriber whose stream ends or fails opens it again, on another URL of `--url`,
    /// with `Last-Event-ID` (a cluster's failover); the subscribers of one URL alternate
    /// between the others, as behind a load balancer. The run reports when the last one was
    /// live again.
    #[arg(long)]
    pub reconnect: bool,
    /// Kill this process (SIGKILL) `--kill-after` seconds after publishing starts (a cluster
    /// node, for the failover measure).
    #[arg(long)]
    pub kill_pid: Option<u32>,
    /// Seconds into publishing when `--kill-pid` is killed.
    #[arg(long, default_value_t = 5.0)]
    pub kill_after: f64,
    /// URLs the publishers use (comma-separated) instead of `--url`'s.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Pids of the other nodes of a cluster (comma-separated), in `--url` order after
    /// `--server-pid` (the first URL's): their memory is read and reported beside
    /// `--server-pid`'s, one line per node.
    #[arg(long, value_delimiter = ',')]
    pub node_pids: Vec<u32>,
    /// Before the run, time a new subscriber's snapshot of this many distinct events
    /// (broker profile).
    #[arg(long, default_value_t = 0)]
    pub snapshot_events: usize,
    /// How many subscribers take the `--snapshot-events` snapshot at once; the time is until
    /// the last of them has it.
    #[arg(long, default_value_t = 1)]
    pub snapshot_readers: usize,
    /// Username for the broker profile (signed up if missing).
    #[arg(long, default_value = "bench")]
    pub user: String,
    /// Password for the broker profile.
    #[arg(long, default_value = "bench-password")]
    pub password: String,
    /// Channel used for the run (the mercure profile's topic is
    /// `https://broker-bench.example/{channel}`).
    #[arg(long, default_value = "bench")]
    pub channel: String,
    /// Mercure profile: sign subscribers' and publishers' Mercure tokens (HS256, every topic)
    /// with this key, the hub's `--mercure-jwt-key`. Without it subscribers go without a token
    /// (the hub needs `--mercure-anonymous`) and publishers use the Broker login.
    #[arg(long, env = "BENCH_MERCURE_JWT_KEY", hide_env_values = true)]
    pub mercure_jwt_key: Option<String>,
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
    /// PEM certificates trusted for `https://` URLs (the server's self-signed certificate,
    /// say), by the lean client and reqwest alike. With it, `https://` subscribers and
    /// publishers use the lean client over rustls rather than reqwest.
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// With `--tls-ca`: `https://` subscribers and publishers go through reqwest instead, which
    /// offers HTTP/2 and multiplexes every stream of one source address on one connection.
    #[arg(long)]
    pub h2: bool,
    /// Internal: run as a worker process of another broker-bench.
    #[arg(long, hide = true)]
    pub worker: bool,
    /// Internal: this worker's group index.
    #[arg(long, hide = true, default_value_t = 0)]
    pub worker_index: usize,
    /// Internal: the number of groups.
    #[arg(long, hide = true, default_value_t = 1)]
    pub worker_groups: usize,
    /// The hostile scenarios' settings.
    #[command(flatten)]
    pub hostile: HostileArgs,
}

/// URL `i mod n` of the comma-separated `urls`.
pub fn pick_url(urls: &str, i: usize) -> &str {
    let count = urls.split(',').count().max(1);
    urls.split(',').nth(i % count).unwrap_or(urls).trim()
}

impl Args {
    /// The URL for subscriber or publisher `i` (see `--url`).
    pub fn url_for(&self, i: usize) -> &str {
        pick_url(&self.url, i)
    }

    /// The URL for publisher `i` (`--publish-url`, else `--url`).
    pub fn publish_url_for(&self, i: usize) -> &str {
        pick_url(self.publish_url.as_deref().unwrap_or(&self.url), i)
    }

    /// Every node's pid: `--server-pid`, then `--node-pids`.
    pub fn all_pids(&self) -> Vec<u32> {
        self.server_pid
            .iter()
            .chain(&self.node_pids)
            .copied()
            .collect()
    }

    /// `--duration`, or this scenario's default.
    pub fn duration_or(&self, default: f64) -> f64 {
        self.duration.unwrap_or(default)
    }
}
