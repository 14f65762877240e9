//! Half-open connections: each connects, sends one request line (`GET /health HTTP/1.1`)
//! and then nothing, and waits for the server to close it. The time from opening to the
//! server's close is recorded; a server without a header read timeout never closes them.
//!
//! [`Holder`] keeps them in tasks of this process; [`crate::hostile::half_open_workers`]
//! spreads them over worker processes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

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

/// The request line of the run's half-open connections.
pub fn request_line(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\n").into_bytes()
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
