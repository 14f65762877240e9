//! The command line of the hostile scenarios (flattened into the tool's own).

/// Settings of the half-open, stalled, login-flood and soak scenarios.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct HostileArgs {
    /// Half-open connections: each sends one request line and then nothing (half-open:
    /// 25,000 by default; soak: 2,000, held in the background and reopened when closed).
    #[arg(long)]
    pub half_open: Option<usize>,
    /// The path in the half-open connections' request line (`GET <path> HTTP/1.1`).
    #[arg(long, default_value = "/health")]
    pub half_open_path: String,
    /// The server's header read timeout as expected, in seconds: a half-open connection
    /// counts as closed in time when the server closes it within this plus 5 s.
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Worker processes holding the half-open connections.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub attack_workers: u64,
    /// Loopback source addresses of the attackers (127.0.1.1, 127.0.1.2, ...), apart from
    /// the probes' and legitimate client's 127.0.0.1 and the subscribers' 127.0.0.2 and up.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub attack_addrs: u8,
    /// Seconds between probes of `/health` and `/insert`, each on a new connection.
    #[arg(long, default_value_t = 0.1)]
    pub probe_interval: f64,
    /// Seconds a probe may wait for its answer before it counts as unanswered.
    #[arg(long, default_value_t = 2.0)]
    pub probe_timeout: f64,
    /// Subscribers that stop reading (stalled scenario).
    #[arg(long, default_value_t = 100)]
    pub stalled: usize,
    /// Events inserted while they are stalled.
    #[arg(long, default_value_t = 4096)]
    pub events: u64,
    /// Bytes of padding in each of those events.
    #[arg(long, default_value_t = 1 << 20)]
    pub event_bytes: usize,
    /// Receive buffer (`SO_RCVBUF`) of a stalled subscriber's socket, in bytes.
    #[arg(long, default_value_t = 4096)]
    pub stalled_rcvbuf: u32,
    /// Stop inserting once the server's RSS passes this many MiB: a server that keeps every
    /// event a stalled reader has not taken would otherwise take the machine.
    #[arg(long, default_value_t = 8192)]
    pub rss_stop_mib: u64,
    /// Kill the server (SIGKILL to `--server-pid`) if its RSS passes this many MiB, read
    /// every 100 ms in every hostile scenario; 0: never. Keeps a runaway server from taking
    /// the machine.
    #[arg(long, default_value_t = 12288)]
    pub rss_kill_mib: u64,
    /// Seconds the resumed subscribers have to receive every event.
    #[arg(long, default_value_t = 900.0)]
    pub resume_timeout: f64,
    /// Concurrent attackers sending wrong passwords for the run's user.
    #[arg(long, default_value_t = 300)]
    pub login_clients: usize,
    /// Wrong-password logins in all (login-flood).
    #[arg(long, default_value_t = 3000)]
    pub wrong_logins: u64,
    /// Wrong-password logins per second (login-flood: flat out by default; soak: 10).
    #[arg(long)]
    pub login_rate: Option<f64>,
    /// Seconds between the legitimate client's logins (right password, new connection).
    #[arg(long, default_value_t = 0.1)]
    pub legit_interval: f64,
    /// Seconds a login, the attackers' or the legitimate one's, may wait for its answer.
    #[arg(long, default_value_t = 30.0)]
    pub request_timeout: f64,
    /// Percent of the soak's subscribers that stop reading until the end.
    #[arg(long, default_value_t = 5.0)]
    pub stalled_percent: f64,
    /// Percent of the soak's subscribers that reconnect with `Last-Event-ID` every
    /// `--reconnect-every` seconds.
    #[arg(long, default_value_t = 1.0)]
    pub reconnecting_percent: f64,
    /// Seconds between a reconnecting subscriber's reconnections (each waits 0.5 to 1.5
    /// times this, so they do not all go at once).
    #[arg(long, default_value_t = 5.0)]
    pub reconnect_every: f64,
    /// Seconds between readings of the server's RSS in the soak (the other scenarios read
    /// it every 0.25 s).
    #[arg(long, default_value_t = 5.0)]
    pub sample_every: f64,
    /// Seconds at the start of the soak's load left out of the RSS flatness figure (which
    /// ends with the publishing).
    #[arg(long, default_value_t = 300.0)]
    pub warmup: f64,
    /// Internal: run as a worker process holding half-open connections.
    #[arg(long, hide = true)]
    pub half_open_worker: bool,
    /// Internal: a half-open worker reopens each connection the server closes.
    #[arg(long, hide = true)]
    pub refill: bool,
}

impl HostileArgs {
    /// Seconds within which a half-open connection must be closed to count as closed in time.
    pub fn close_deadline(&self) -> f64 {
        self.header_timeout + 5.0
    }
}
