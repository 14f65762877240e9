//! Probes: what a well-behaved client sees while the server is attacked. Each probe is one
//! request on a new connection (as a new visitor's would be), fired on a fixed schedule
//! whether or not the previous one has been answered, and given a time limit.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use crate::raw_client::RawClient;
use crate::raw_http::Target;
use crate::stats::{Summary, histogram};

/// What a probe asks.
#[derive(Debug, Clone)]
pub enum Kind {
    /// `GET /health`.
    Health,
    /// `POST /insert` of a small event on `channel`, with a bearer token.
    Insert {
        /// Bearer token.
        token: String,
        /// Channel of the probe's events.
        channel: String,
    },
    /// `POST /login` with these credentials.
    Login {
        /// Username.
        user: String,
        /// Password.
        password: String,
    },
}

impl Kind {
    /// The request: method, path, headers, body.
    fn request(&self, n: u64) -> (&'static str, &'static str, String, Option<Vec<u8>>) {
        const CLOSE: &str = "connection: close\r\n";
        let json = "content-type: application/json\r\n";
        match self {
            Self::Health => ("GET", "/health", CLOSE.to_owned(), None),
            Self::Insert { token, channel } => (
                "POST",
                "/insert",
                format!("{CLOSE}{json}authorization: Bearer {token}\r\n"),
                Some(
                    json!({"event": "probe", "channel": channel, "data": {"n": n}})
                        .to_string()
                        .into_bytes(),
                ),
            ),
            Self::Login { user, password } => (
                "POST",
                "/login",
                format!("{CLOSE}{json}"),
                Some(
                    json!({"username": user, "password": password})
                        .to_string()
                        .into_bytes(),
                ),
            ),
        }
    }
}

/// One second of probes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Window {
    /// Seconds since the prober started, at the window's start.
    pub t_s: u64,
    /// Probes sent in it.
    pub sent: u64,
    /// Of those, unanswered within the time limit.
    pub unanswered: u64,
    /// The slowest answer, ms.
    pub max_ms: f64,
}

/// What a prober saw.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// What was probed (`health`, `insert`, `login`).
    pub name: String,
    /// Seconds between probes.
    pub interval_s: f64,
    /// Seconds a probe could wait.
    pub timeout_s: f64,
    /// Probes sent.
    pub sent: u64,
    /// Probes answered in time (any status).
    pub answered: u64,
    /// Probes with no answer in time, or whose connection failed.
    pub unanswered: u64,
    /// Why the first unanswered one failed.
    pub first_error: Option<String>,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Answers that carried `Retry-After`.
    pub with_retry_after: u64,
    /// Latency of the answered probes.
    pub latency: Summary,
    /// Per second.
    pub windows: Vec<Window>,
}

impl ProbeReport {
    /// "p50 / p99 / max ms, n unanswered of m" for a Markdown row.
    pub fn row(&self) -> String {
        format!(
            "{:.2} / {:.2} / {:.2} ms; {} of {} unanswered within {} s; statuses {}",
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.unanswered,
            self.sent,
            self.timeout_s,
            statuses(&self.statuses)
        )
    }

    /// Answers with this status.
    pub fn status(&self, code: u16) -> u64 {
        self.statuses.get(&code).copied().unwrap_or(0)
    }
}

/// "200: 5, 401: 2" (or "none").
pub fn statuses(counts: &BTreeMap<u16, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug)]
struct State {
    sent: u64,
    answered: u64,
    unanswered: u64,
    first_error: Option<String>,
    statuses: BTreeMap<u16, u64>,
    with_retry_after: u64,
    latency: Histogram<u64>,
    windows: Vec<Window>,
}

impl State {
    fn new() -> Self {
        Self {
            sent: 0,
            answered: 0,
            unanswered: 0,
            first_error: None,
            statuses: BTreeMap::new(),
            with_retry_after: 0,
            latency: histogram(),
            windows: Vec::new(),
        }
    }
}

/// Probes running on a schedule until [`Prober::finish`].
pub struct Prober {
    name: &'static str,
    interval: Duration,
    timeout: Duration,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    state: Arc<Mutex<State>>,
}

impl Prober {
    /// Starts probing `target` from `local` every `interval`; each probe may take `timeout`.
    pub fn start(
        name: &'static str,
        kind: Kind,
        target: Target,
        local: IpAddr,
        interval: Duration,
        timeout: Duration,
    ) -> Self {
        let state = Arc::new(Mutex::new(State::new()));
        let (stop, mut stopped) = watch::channel(false);
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut running = JoinSet::new();
            let mut n = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                n += 1;
                let (kind, target, state) = (kind.clone(), target.clone(), shared.clone());
                running.spawn(async move {
                    let sent_at = Instant::now();
                    let window = sent_at.duration_since(started).as_secs();
                    let (method, path, headers, body) = kind.request(n);
                    let mut client = RawClient::lazy(target, Some(local));
                    let outcome = tokio::time::timeout(
                        timeout,
                        client.request(method, path, &headers, body.as_deref()),
                    )
                    .await;
                    let elapsed = sent_at.elapsed();
                    record(&state, window, outcome, elapsed);
                });
                while running.try_join_next().is_some() {}
            }
            while running.join_next().await.is_some() {}
        });
        Self {
            name,
            interval,
            timeout,
            stop,
            task,
            state,
        }
    }

    /// Stops probing, waits for the probes in flight (each within its time limit), and
    /// reports.
    pub async fn finish(self) -> ProbeReport {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let s = {
            let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *guard, State::new())
        };
        ProbeReport {
            name: self.name.to_owned(),
            interval_s: self.interval.as_secs_f64(),
            timeout_s: self.timeout.as_secs_f64(),
            sent: s.sent,
            answered: s.answered,
            unanswered: s.unanswered,
            first_error: s.first_error,
            statuses: s.statuses,
            with_retry_after: s.with_retry_after,
            latency: Summary::of(&s.latency),
            windows: s.windows,
        }
    }
}

type Outcome = Result<Result<crate::raw_client::Response, String>, tokio::time::error::Elapsed>;

fn record(state: &Mutex<State>, window: u64, outcome: Outcome, elapsed: Duration) {
    let Ok(mut s) = state.lock() else {
        return;
    };
    let index = usize::try_from(window).unwrap_or(usize::MAX);
    while s.windows.len() <= index && s.windows.len() < 1_000_000 {
        let t_s = s.windows.len() as u64;
        s.windows.push(Window {
            t_s,
            ..Window::default()
        });
    }
    s.sent += 1;
    let answered = match outcome {
        Ok(Ok(response)) => {
            *s.statuses.entry(response.status).or_default() += 1;
            s.with_retry_after += u64::from(response.retry_after.is_some());
            true
        }
        Ok(Err(e)) => {
            s.first_error.get_or_insert(e);
            false
        }
        Err(_) => {
            s.first_error
                .get_or_insert_with(|| "no answer in time".into());
            false
        }
    };
    let ms = elapsed.as_secs_f64() * 1000.0;
    if answered {
        s.answered += 1;
        let _ = s.latency.record(
            u64::try_from(elapsed.as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        );
    } else {
        s.unanswered += 1;
    }
    if let Some(w) = s.windows.get_mut(index) {
        w.sent += 1;
        w.unanswered += u64::from(!answered);
        if answered {
            w.max_ms = w.max_ms.max(ms);
        }
    }
}
