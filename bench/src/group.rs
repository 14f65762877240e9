//! Groups of subscribers: in this process, or in a worker process of their own.
//!
//! One process may hold only as many connections as its open-file limit allows (20,000 on the
//! reference machine), so large runs spread their subscribers over worker processes: the same
//! binary started with `--worker`, which takes `connect N` and `stop` on stdin and answers with
//! JSON lines on stdout. Subscriber `i` of a run belongs to group `i % groups`.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

use broker_bench::system;

use crate::config::{Args, Wire};
use crate::profile;
use crate::raw_http;
use crate::stats::histogram;
use crate::subscriber::{Conn, Progress, Subscriber};

/// The environment variable a worker reads its bearer token from (kept off the command line).
const TOKEN_VAR: &str = "BROKER_BENCH_TOKEN";

/// A group's subscribers, counted at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Subscribers started.
    pub started: usize,
    /// Subscribers whose initial phase is over.
    pub synced: usize,
    /// Subscribers whose stream failed or ended.
    pub failed: usize,
    /// Subscribers synced and not failed: the ones that must receive every event.
    pub live: usize,
    /// Distinct samples received, by all subscribers.
    pub received: u64,
    /// Distinct samples received by the live subscribers.
    pub live_received: u64,
    /// Samples received twice or out of order.
    pub duplicates: u64,
    /// Subscribers that opened their stream again after it ended (`--reconnect`).
    #[serde(default)]
    pub reconnected: usize,
    /// When the last of them was live again, µs since the Unix epoch (0: none).
    #[serde(default)]
    pub last_reconnect_us: u64,
}

impl Counts {
    /// The sum of two groups' counts.
    pub fn add(self, o: Self) -> Self {
        Self {
            started: self.started + o.started,
            synced: self.synced + o.synced,
            failed: self.failed + o.failed,
            live: self.live + o.live,
            received: self.received + o.received,
            live_received: self.live_received + o.live_received,
            duplicates: self.duplicates + o.duplicates,
            reconnected: self.reconnected + o.reconnected,
            last_reconnect_us: self.last_reconnect_us.max(o.last_reconnect_us),
        }
    }
}

/// What a group hands back when it stops.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Final {
    /// Its last counts.
    pub counts: Counts,
    /// Insert→delivery latency (µs) as (value, count) pairs.
    pub latency: Vec<(u64, u64)>,
    /// The first subscriber error, if any.
    pub first_error: Option<String>,
}

impl Final {
    /// Adds this group's latency samples to `into`.
    pub fn merge_latency(&self, into: &mut Histogram<u64>) {
        for &(value, count) in &self.latency {
            let _ = into.record_n(value, count);
        }
    }
}

/// A worker's line on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Report {
    Counts(Counts),
    Final(Final),
}

/// What every subscriber of a run shares.
#[derive(Clone)]
pub struct Spec {
    /// Wire profile.
    pub wire: Wire,
    /// Server base URL.
    pub url: String,
    /// Channel.
    pub channel: String,
    /// Bearer token.
    pub token: Option<String>,
    /// Publishers (for per-publisher order checks).
    pub publishers: usize,
    /// Loopback source addresses to spread over (0: the default address).
    pub source_addrs: u8,
    /// `--reconnect`: subscribers fail over to the other URLs.
    pub reconnect: bool,
}

impl Spec {
    /// The spec of a run.
    pub fn new(args: &Args, token: Option<String>) -> Self {
        Self {
            wire: args.profile,
            url: args.url.clone(),
            channel: args.channel.clone(),
            token,
            publishers: args.publishers,
            source_addrs: args.source_addrs,
            reconnect: args.reconnect,
        }
    }

    /// How subscriber `i` connects: the lean client for `http://`, and for `https://` with
    /// `--tls-ca`; reqwest for other `https://` URLs.
    fn conn(&self, i: usize, clients: &[reqwest::Client]) -> Conn {
        match clients.get(i % clients.len().max(1)) {
            Some(http) if !self.url.starts_with("http://") && !raw_http::tls_ready() => {
                Conn::Client(http.clone())
            }
            _ => Conn::Raw(system::source_addr(self.source_addrs, i)),
        }
    }
}

/// Subscribers running as tasks of this process.
pub struct LocalGroup {
    spec: Spec,
    clients: Vec<reqwest::Client>,
    /// This group's index and the number of groups: it holds subscribers `index + k * groups`.
    index: usize,
    groups: usize,
    progress: Vec<Arc<Progress>>,
    tasks: Vec<JoinHandle<()>>,
    latency: Arc<Mutex<Histogram<u64>>>,
}

impl LocalGroup {
    /// An empty group.
    pub fn new(spec: Spec, clients: Vec<reqwest::Client>, index: usize, groups: usize) -> Self {
        Self {
            spec,
            clients,
            index,
            groups: groups.max(1),
            progress: Vec::new(),
            tasks: Vec::new(),
            latency: Arc::new(Mutex::new(histogram())),
        }
    }

    /// Starts subscribers until the group holds `n`.
    pub fn connect(&mut self, n: usize) {
        for k in self.progress.len()..n {
            let i = self.index + k * self.groups;
            let p = Arc::new(Progress::default());
            self.progress.push(p.clone());
            let sub = Subscriber {
                wire: self.spec.wire,
                url: profile::stream_url(
                    self.spec.wire,
                    crate::config::pick_url(&self.spec.url, i),
                    &self.spec.channel,
                    i,
                ),
                fallbacks: if self.spec.reconnect {
                    // The other nodes, in an order that alternates between the subscribers
                    // of a node, so that a dead node's subscribers spread over the others as
                    // behind a load balancer, instead of all trying the next node first.
                    let n = self.spec.url.split(',').count();
                    (1..n)
                        .map(|j| {
                            let other = 1 + (j - 1 + i / n) % (n - 1);
                            profile::stream_url(
                                self.spec.wire,
                                crate::config::pick_url(&self.spec.url, i + other),
                                &self.spec.channel,
                                i,
                            )
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                token: self.spec.token.clone(),
                conn: self.spec.conn(i, &self.clients),
                publishers: self.spec.publishers,
                progress: p,
                latency: self.latency.clone(),
            };
            self.tasks.push(tokio::spawn(sub.run()));
        }
    }

    /// Stops the subscribers that have not synced yet, so that none joins once publishing has
    /// begun (it would miss the first events and count them as lost).
    pub fn settle(&mut self) {
        for (p, task) in self.progress.iter().zip(&self.tasks) {
            if !p.synced.load(Ordering::Acquire) && !p.failed.load(Ordering::Relaxed) {
                task.abort();
            }
        }
    }

    /// The group's counts now.
    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            started: self.progress.len(),
            ..Counts::default()
        };
        for p in &self.progress {
            let synced = p.synced.load(Ordering::Acquire);
            let failed = p.failed.load(Ordering::Relaxed);
            let received = p.received.load(Ordering::Relaxed);
            c.synced += usize::from(synced);
            c.failed += usize::from(failed);
            c.received += received;
            c.duplicates += p.duplicates.load(Ordering::Relaxed);
            if p.reconnects.load(Ordering::Relaxed) > 0 {
                c.reconnected += 1;
                c.last_reconnect_us = c
                    .last_reconnect_us
                    .max(p.reconnected_us.load(Ordering::Relaxed));
            }
            if synced && !failed {
                c.live += 1;
                c.live_received += received;
            }
        }
        c
    }

    /// Stops every subscriber and hands back the counts and latencies.
    pub fn finish(self) -> Final {
        for task in &self.tasks {
            task.abort();
        }
        let latency = self
            .latency
            .lock()
            .map(|h| {
                h.iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))
                    .collect()
            })
            .unwrap_or_default();
        Final {
            counts: self.counts(),
            latency,
            first_error: self.progress.iter().find_map(|p| p.error.get().cloned()),
        }
    }
}

/// Subscribers in a worker process.
pub struct WorkerGroup {
    child: Child,
    stdin: ChildStdin,
    counts: Arc<Mutex<Counts>>,
    reader: JoinHandle<Result<Final, String>>,
}

impl WorkerGroup {
    /// Starts worker `index` of `groups` for the run `args`.
    pub fn spawn(
        args: &Args,
        token: Option<&str>,
        index: usize,
        groups: usize,
    ) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("--worker")
            .args(["--worker-index", &index.to_string()])
            .args(["--worker-groups", &groups.to_string()])
            .args(["--url", &args.url])
            .args([
                "--profile",
                match args.profile {
                    Wire::Broker => "broker",
                    Wire::NodeSse => "node-sse",
                    Wire::Mercure => "mercure",
                },
            ])
            .args(["--channel", &args.channel])
            .args(["--publishers", &args.publishers.to_string()])
            .args(["--source-addrs", &args.source_addrs.to_string()])
            .args(args.reconnect.then_some("--reconnect"))
            .args(args.h2.then_some("--h2"))
            .args(
                args.tls_ca
                    .iter()
                    .flat_map(|ca| [std::ffi::OsStr::new("--tls-ca"), ca.as_os_str()]),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(t) = token {
            cmd.env(TOKEN_VAR, t);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let stdin = child.stdin.take().ok_or("worker without stdin")?;
        let stdout = child.stdout.take().ok_or("worker without stdout")?;
        let counts = Arc::new(Mutex::new(Counts::default()));
        let shared = counts.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
                match serde_json::from_str(&line) {
                    Ok(Report::Counts(c)) => {
                        if let Ok(mut slot) = shared.lock() {
                            *slot = c;
                        }
                    }
                    Ok(Report::Final(f)) => return Ok(f),
                    Err(e) => return Err(format!("worker {index} said {line:?}: {e}")),
                }
            }
            Err(format!("worker {index} ended without its results"))
        });
        Ok(Self {
            child,
            stdin,
            counts,
            reader,
        })
    }

    async fn command(&mut self, line: &str) -> Result<(), String> {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| format!("worker gone: {e}"))
    }

    /// The worker's last reported counts.
    pub fn counts(&self) -> Counts {
        self.counts.lock().map(|c| *c).unwrap_or_default()
    }

    /// Stops the worker and collects its results.
    pub async fn finish(mut self) -> Result<Final, String> {
        self.command("stop").await?;
        let result = self.reader.await.map_err(|e| e.to_string())?;
        let _ = self.child.wait().await;
        result
    }
}

/// A group of either kind.
pub enum Group {
    /// In this process.
    Local(LocalGroup),
    /// In a worker process.
    Worker(WorkerGroup),
}

impl Group {
    /// Grows the group to `n` subscribers.
    pub async fn connect(&mut self, n: usize) -> Result<(), String> {
        match self {
            Self::Local(g) => {
                g.connect(n);
                Ok(())
            }
            Self::Worker(g) => g.command(&format!("connect {n}")).await,
        }
    }

    /// The worker's process id (`None` in this process).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Local(_) => None,
            Self::Worker(g) => g.child.id(),
        }
    }

    /// Stops its subscribers that have not synced (see [`LocalGroup::settle`]).
    pub async fn settle(&mut self) -> Result<(), String> {
        match self {
            Self::Local(g) => {
                g.settle();
                Ok(())
            }
            Self::Worker(g) => g.command("settle").await,
        }
    }

    /// Its counts now.
    pub fn counts(&self) -> Counts {
        match self {
            Self::Local(g) => g.counts(),
            Self::Worker(g) => g.counts(),
        }
    }

    /// Stops it and collects its results.
    pub async fn finish(self) -> Result<Final, String> {
        match self {
            Self::Local(g) => Ok(g.finish()),
            Self::Worker(g) => g.finish().await,
        }
    }
}

/// How many of the first `total` subscribers belong to group `index` of `groups`.
pub fn share(total: usize, index: usize, groups: usize) -> usize {
    let groups = groups.max(1);
    total / groups + usize::from(index < total % groups)
}

/// Runs this process as a worker: `connect N` grows its group, `settle` stops the subscribers
/// not yet synced, `stop` ends it with a [`Final`] line; its counts go to stdout every 100 ms
/// meanwhile.
pub async fn serve_worker(args: &Args, clients: Vec<reqwest::Client>) -> Result<(), String> {
    let token = std::env::var(TOKEN_VAR).ok();
    let mut group = LocalGroup::new(
        Spec::new(args, token),
        clients,
        args.worker_index,
        args.worker_groups,
    );
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last = None;
    loop {
        tokio::select! {
            line = commands.next_line() => {
                let line = line.map_err(|e| e.to_string())?.unwrap_or_else(|| "stop".into());
                let mut words = line.split_whitespace();
                match (words.next(), words.next().and_then(|n| n.parse().ok())) {
                    (Some("connect"), Some(n)) => group.connect(n),
                    (Some("settle"), _) => group.settle(),
                    (Some("stop"), _) => break,
                    _ => return Err(format!("worker: unknown command {line:?}")),
                }
            }
            _ = tick.tick() => {
                let counts = group.counts();
                if last != Some(counts) {
                    last = Some(counts);
                    write_line(&mut out, &Report::Counts(counts)).await?;
                }
            }
        }
    }
    write_line(&mut out, &Report::Final(group.finish())).await
}

async fn write_line(out: &mut tokio::io::Stdout, report: &Report) -> Result<(), String> {
    let mut text = serde_json::to_string(report).map_err(|e| e.to_string())?;
    text.push('\n');
    out.write_all(text.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    out.flush().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_match_the_round_robin() {
        for total in [0, 1, 7, 100, 19_001] {
            for groups in 1..9 {
                let sum: usize = (0..groups).map(|g| share(total, g, groups)).sum();
                assert_eq!(sum, total);
                for g in 0..groups {
                    let owned = (0..total).filter(|i| i % groups == g).count();
                    assert_eq!(share(total, g, groups), owned);
                }
            }
        }
    }

    #[test]
    fn worker_lines_round_trip() {
        let f = Final {
            counts: Counts {
                started: 3,
                live: 2,
                ..Counts::default()
            },
            latency: vec![(10, 2), (500, 1)],
            first_error: Some("401".into()),
        };
        let line = serde_json::to_string(&Report::Final(f)).expect("serializes");
        let Ok(Report::Final(back)) = serde_json::from_str(&line) else {
            panic!("not a final line: {line}");
        };
        assert_eq!(back.counts.live, 2);
        let mut h = histogram();
        back.merge_latency(&mut h);
        assert_eq!(h.len(), 3);
    }
}
