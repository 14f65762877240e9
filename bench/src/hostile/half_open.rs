//! Half-open connections: each connects, sends one request line (`GET /health HTTP/1.1`)
//! and then nothing, and waits for the server to close it. The time from opening to the
//! server's close is recorded; a server without a header read timeout never closes them.
//!
//! One process may hold only 20,000 connections here, so they live in worker processes:
//! the tool itself started with `--half-open-worker`, which reports its counts as JSON lines
//! on stdout and stops on `stop` (or the end of its stdin) with a final line.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::config::Args;
use crate::raw_http::Target;
use crate::stats::histogram;

/// Connections being opened at once, per process.
const OPENING: usize = 256;
/// How long a connect may take (a server that no longer accepts leaves it pending).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A refilled connection is reopened no sooner than this after the last one opened.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// The source address of attacker connection `i`: 127.0.1.1, 127.0.1.2, ...
pub fn attack_addr(addrs: u8, i: usize) -> IpAddr {
    let k = (i % usize::from(addrs.max(1))) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + k))
}

/// Half-open connections, counted at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Connections tried.
    pub attempted: u64,
    /// Connected with the request line sent.
    pub opened: u64,
    /// Could not connect (or send) within 5 s.
    pub failed: u64,
    /// Open now.
    pub open_now: u64,
    /// Closed by the server.
    pub closed: u64,
    /// Closed by the server within the header timeout plus 5 s.
    pub closed_in_time: u64,
    /// Closed by the server after some bytes of answer (such as a 408).
    pub answered: u64,
}

impl Counts {
    /// The sum of two.
    pub fn add(self, o: Self) -> Self {
        Self {
            attempted: self.attempted + o.attempted,
            opened: self.opened + o.opened,
            failed: self.failed + o.failed,
            open_now: self.open_now + o.open_now,
            closed: self.closed + o.closed,
            closed_in_time: self.closed_in_time + o.closed_in_time,
            answered: self.answered + o.answered,
        }
    }
}

/// What a set of half-open connections hands back.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Final {
    /// The last counts.
    pub counts: Counts,
    /// Seconds from open to the server's close, as (µs, count) pairs.
    pub closes: Vec<(u64, u64)>,
    /// Why the first connection failed to open.
    pub first_error: Option<String>,
}

impl Final {
    /// Adds `other`'s results.
    pub fn merge(&mut self, other: Final) {
        self.counts = self.counts.add(other.counts);
        self.closes.extend(other.closes);
        self.first_error = self.first_error.take().or(other.first_error);
    }

    /// The close times as a histogram (µs).
    pub fn close_histogram(&self) -> Histogram<u64> {
        let mut h = histogram();
        for &(v, c) in &self.closes {
            let _ = h.record_n(v, c);
        }
        h
    }
}

#[derive(Default)]
struct Shared {
    attempted: AtomicU64,
    opened: AtomicU64,
    failed: AtomicU64,
    open_now: AtomicU64,
    closed: AtomicU64,
    closed_in_time: AtomicU64,
    answered: AtomicU64,
    closes: Mutex<Option<Histogram<u64>>>,
    first_error: OnceLock<String>,
}

impl Shared {
    fn counts(&self) -> Counts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            attempted: l(&self.attempted),
            opened: l(&self.opened),
            failed: l(&self.failed),
            open_now: l(&self.open_now),
            closed: l(&self.closed),
            closed_in_time: l(&self.closed_in_time),
            answered: l(&self.answered),
        }
    }

    fn fail(&self, e: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let _ = self.first_error.set(e);
    }
}

/// One process's share of the connections.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The server.
    pub target: Target,
    /// The bytes each connection sends (one request line).
    pub request: Vec<u8>,
    /// Connections this process holds.
    pub connections: usize,
    /// This process's index and the number of processes (connection `k` here is
    /// `index + k * groups` of the run, which picks its source address).
    pub index: usize,
    /// The number of processes.
    pub groups: usize,
    /// Attacker source addresses.
    pub addrs: u8,
    /// Reopen each connection the server closes, until the deadline.
    pub refill: bool,
    /// Closed within this counts as closed in time.
    pub in_time: Duration,
    /// No connection is opened after this.
    pub deadline: Instant,
}

/// Half-open connections held by tasks of this process until stopped.
pub struct Holder {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Holder {
    /// Starts opening the connections of `spec`.
    pub fn start(spec: Spec) -> Self {
        let shared = Arc::new(Shared::default());
        if let Ok(mut h) = shared.closes.lock() {
            *h = Some(histogram());
        }
        let (stop, stopped) = watch::channel(false);
        let opening = Arc::new(Semaphore::new(OPENING));
        let state = shared.clone();
        let task = tokio::spawn(async move {
            let mut slots = JoinSet::new();
            for k in 0..spec.connections {
                let addr = attack_addr(spec.addrs, spec.index + k * spec.groups.max(1));
                slots.spawn(slot(
                    spec.clone(),
                    addr,
                    state.clone(),
                    opening.clone(),
                    stopped.clone(),
                ));
            }
            while slots.join_next().await.is_some() {}
        });
        Self { shared, stop, task }
    }

    /// The counts now.
    pub fn counts(&self) -> Counts {
        self.shared.counts()
    }

    /// Closes every connection still open and reports.
    pub async fn finish(self) -> Final {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let closes = self
            .shared
            .closes
            .lock()
            .ok()
            .and_then(|mut h| h.take())
            .map(|h| {
                h.iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))
                    .collect()
            })
            .unwrap_or_default();
        Final {
            counts: self.shared.counts(),
            closes,
            first_error: self.shared.first_error.get().cloned(),
        }
    }
}

async fn connect(target: &Target, local: IpAddr, request: &[u8]) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(local, 0))
        .map_err(|e| format!("cannot bind {local}: {e}"))?;
    let mut tcp = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target.server()))
        .await
        .map_err(|_| "no connection within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    tcp.write_all(request).await.map_err(|e| e.to_string())?;
    Ok(tcp)
}

/// One connection: opened, held until the server closes it (then reopened when refilling)
/// or until stopped.
async fn slot(
    spec: Spec,
    local: IpAddr,
    shared: Arc<Shared>,
    opening: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() || Instant::now() >= spec.deadline {
            return;
        }
        shared.attempted.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = opening.acquire().await else {
            return;
        };
        let opened_at = Instant::now();
        let connected = tokio::select! {
            c = connect(&spec.target, local, &spec.request) => c,
            _ = stop.changed() => return,
        };
        drop(permit);
        let mut tcp = match connected {
            Ok(tcp) => tcp,
            Err(e) => {
                shared.fail(e);
                if !spec.refill || !pause(&mut stop, opened_at + REOPEN_AFTER).await {
                    return;
                }
                continue;
            }
        };
        shared.opened.fetch_add(1, Ordering::Relaxed);
        shared.open_now.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 512];
        let mut got_bytes = false;
        let closed_by_server = loop {
            tokio::select! {
                read = tcp.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break true,
                    Ok(_) => got_bytes = true,
                },
                _ = stop.changed() => break false,
            }
        };
        shared.open_now.fetch_sub(1, Ordering::Relaxed);
        if !closed_by_server {
            return;
        }
        let held = opened_at.elapsed();
        shared.closed.fetch_add(1, Ordering::Relaxed);
        shared
            .answered
            .fetch_add(u64::from(got_bytes), Ordering::Relaxed);
        if held <= spec.in_time {
            shared.closed_in_time.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut h) = shared.closes.lock()
            && let Some(h) = h.as_mut()
        {
            let _ = h.record(u64::try_from(held.as_micros()).unwrap_or(u64::MAX).max(1));
        }
        if !spec.refill || !pause(&mut stop, opened_at + REOPEN_AFTER).await {
            return;
        }
    }
}

/// Waits until `until`; `false` when stopped meanwhile.
async fn pause(stop: &mut watch::Receiver<bool>, until: Instant) -> bool {
    tokio::select! {
        _ = tokio::time::sleep_until(until) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// A worker's line on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Report {
    Counts(Counts),
    Final(Final),
}

/// The request line of the run's half-open connections.
pub fn request_line(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\n").into_bytes()
}

/// Runs this process as a half-open worker (see the module doc).
pub async fn serve_worker(args: &Args) -> Result<(), String> {
    let url = reqwest::Url::parse(&args.url).map_err(|e| e.to_string())?;
    let h = &args.hostile;
    let spec = Spec {
        target: Target::resolve(&url).await?,
        request: request_line(&h.half_open_path),
        connections: h.half_open.unwrap_or(0),
        index: args.worker_index,
        groups: args.worker_groups,
        addrs: h.attack_addrs,
        refill: h.refill,
        in_time: Duration::from_secs_f64(h.close_deadline()),
        deadline: Instant::now() + Duration::from_secs_f64(args.duration_or(60.0)),
    };
    let holder = Holder::start(spec);
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut last = None;
    loop {
        tokio::select! {
            line = commands.next_line() => match line.map_err(|e| e.to_string())?.as_deref() {
                None | Some("stop") => break,
                Some(other) => return Err(format!("half-open worker: unknown command {other:?}")),
            },
            _ = tick.tick() => {
                let counts = holder.counts();
                if last != Some(counts) {
                    last = Some(counts);
                    write_line(&mut out, &Report::Counts(counts)).await?;
                }
            }
        }
    }
    let done = holder.finish().await;
    write_line(&mut out, &Report::Final(done)).await
}

async fn write_line(out: &mut tokio::io::Stdout, report: &Report) -> Result<(), String> {
    let mut text = serde_json::to_string(report).map_err(|e| e.to_string())?;
    text.push('\n');
    out.write_all(text.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    out.flush().await.map_err(|e| e.to_string())
}

/// Half-open connections held by worker processes.
pub struct Attack {
    workers: Vec<Worker>,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    counts: Arc<Mutex<Counts>>,
    reader: JoinHandle<Result<Final, String>>,
}

impl Attack {
    /// Starts `args.hostile.attack_workers` processes holding `total` connections between
    /// them for at most `seconds`, reopening closed ones when `refill`.
    pub fn spawn(args: &Args, total: usize, refill: bool, seconds: f64) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let groups = usize::try_from(args.hostile.attack_workers).unwrap_or(1);
        let mut workers = Vec::with_capacity(groups);
        for index in 0..groups {
            let mut cmd = Command::new(&exe);
            cmd.arg("--half-open-worker")
                .args(["--url", &args.url])
                .args([
                    "--half-open",
                    &crate::group::share(total, index, groups).to_string(),
                ])
                .args(["--half-open-path", &args.hostile.half_open_path])
                .args(["--header-timeout", &args.hostile.header_timeout.to_string()])
                .args(["--attack-addrs", &args.hostile.attack_addrs.to_string()])
                .args(["--worker-index", &index.to_string()])
                .args(["--worker-groups", &groups.to_string()])
                .args(["--duration", &seconds.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            if refill {
                cmd.arg("--refill");
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("cannot start a half-open worker: {e}"))?;
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
                        Err(e) => return Err(format!("half-open worker said {line:?}: {e}")),
                    }
                }
                Err(format!(
                    "half-open worker {index} ended without its results"
                ))
            });
            workers.push(Worker {
                child,
                stdin,
                counts,
                reader,
            });
        }
        Ok(Self { workers })
    }

    /// The workers' last reported counts, summed.
    pub fn counts(&self) -> Counts {
        self.workers
            .iter()
            .map(|w| w.counts.lock().map(|c| *c).unwrap_or_default())
            .fold(Counts::default(), Counts::add)
    }

    /// Stops the workers (closing their connections) and merges their results. Every worker
    /// is told first: one that closes its connections frees the server's descriptors, and
    /// the others' pending connections would then open and count.
    pub async fn finish(mut self) -> Result<Final, String> {
        for w in &mut self.workers {
            w.stdin
                .write_all(b"stop\n")
                .await
                .map_err(|e| format!("half-open worker gone: {e}"))?;
        }
        let mut all = Final::default();
        for mut w in self.workers {
            let done = w.reader.await.map_err(|e| e.to_string())??;
            let _ = w.child.wait().await;
            all.merge(done);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closes_are_timed_and_connections_refilled() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let server = listener.local_addr().expect("address");
        // A server that reads the request line and closes each connection after 300 ms.
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut line = [0u8; 64];
                    let _ = tcp.read(&mut line).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                });
            }
        });
        let spec = |refill, deadline| Spec {
            target: Target::at(server),
            request: request_line("/health"),
            connections: 6,
            index: 0,
            groups: 1,
            addrs: 2,
            refill,
            in_time: Duration::from_secs(5),
            deadline,
        };
        let once = Holder::start(spec(false, Instant::now() + Duration::from_secs(10)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while once.counts().closed < 6 {
            assert!(
                Instant::now() < deadline,
                "closes seen: {:?}",
                once.counts()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let done = once.finish().await;
        assert_eq!(done.counts.opened, 6);
        assert_eq!(done.counts.closed_in_time, 6);
        assert_eq!(done.counts.open_now, 0);
        let h = done.close_histogram();
        assert_eq!(h.len(), 6);
        assert!(h.min() >= 250_000, "held about 300 ms: {} µs", h.min());

        let refilled = Holder::start(spec(true, Instant::now() + Duration::from_secs(10)));
        while refilled.counts().opened < 12 {
            assert!(
                Instant::now() < deadline,
                "reopened: {:?}",
                refilled.counts()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let done = refilled.finish().await;
        assert!(done.counts.opened >= 12);
        assert_eq!(done.counts.open_now, 0, "stopping closes them all");
        accepting.abort();
    }
}
