//! Wrong-password logins for one user from many concurrent attackers, each on a kept-alive
//! connection of its own from the attackers' addresses: flat out up to a total, or at a
//! fixed rate until stopped. `Retry-After` is not honoured: an attacker does not wait.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use crate::hostile::half_open::attack_addr;
use crate::hostile::probe::statuses;
use crate::raw_client::RawClient;
use crate::raw_http::Target;
use crate::stats::{Summary, histogram};

/// How the attack goes.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The server.
    pub target: Target,
    /// The user attacked.
    pub user: String,
    /// Concurrent attackers.
    pub clients: usize,
    /// Attempts in all; `None`: until stopped.
    pub total: Option<u64>,
    /// Attempts per second over all attackers; `None`: flat out.
    pub rate: Option<f64>,
    /// Attacker source addresses.
    pub addrs: u8,
    /// How long an attempt may wait for its answer.
    pub timeout: Duration,
    /// No attempt starts after this.
    pub deadline: Instant,
}

/// What the attackers saw.
#[derive(Debug, Clone, Serialize)]
pub struct AttackReport {
    /// Attempts sent.
    pub sent: u64,
    /// Attempts answered (any status).
    pub answered: u64,
    /// Attempts with no answer in time, or whose connection failed.
    pub unanswered: u64,
    /// Why the first unanswered one failed.
    pub first_error: Option<String>,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Answers that carried `Retry-After`.
    pub with_retry_after: u64,
    /// Time to an answer.
    pub latency: Summary,
    /// Seconds from the first attempt to the last answer.
    pub seconds: f64,
}

impl AttackReport {
    /// Answers with this status.
    pub fn status(&self, code: u16) -> u64 {
        self.statuses.get(&code).copied().unwrap_or(0)
    }

    /// The status counts as "200: a, 401: b, 429: c, other: d, no answer: e".
    pub fn row(&self) -> String {
        let known = self.status(200) + self.status(401) + self.status(429);
        format!(
            "200: {}, 401: {}, 429: {} ({} with Retry-After), other: {}, no answer: {} (all: {})",
            self.status(200),
            self.status(401),
            self.status(429),
            self.with_retry_after,
            self.answered - known,
            self.unanswered,
            statuses(&self.statuses)
        )
    }
}

struct State {
    unanswered: u64,
    first_error: Option<String>,
    statuses: BTreeMap<u16, u64>,
    with_retry_after: u64,
    latency: Histogram<u64>,
}

/// A running attack.
pub struct LoginAttack {
    started: Instant,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl LoginAttack {
    /// Starts the attack.
    pub fn start(spec: Spec) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let state = Arc::new(Mutex::new(State {
            unanswered: 0,
            first_error: None,
            statuses: BTreeMap::new(),
            with_retry_after: 0,
            latency: histogram(),
        }));
        let tickets = Arc::new(AtomicU64::new(0));
        // At a fixed rate, a ticker hands out permits (never more than one per attacker
        // waiting, so a slow server does not build a burst).
        let permits = spec.rate.map(|_| Arc::new(Semaphore::new(0)));
        let (s, st, a, stt) = (stop.clone(), sent.clone(), answered.clone(), state.clone());
        let task = tokio::spawn(async move {
            let mut attackers = JoinSet::new();
            for i in 0..spec.clients {
                let attacker = Attacker {
                    spec: spec.clone(),
                    client: RawClient::lazy(spec.target.clone(), Some(attack_addr(spec.addrs, i))),
                    stop: s.clone(),
                    tickets: tickets.clone(),
                    permits: permits.clone(),
                    sent: st.clone(),
                    answered: a.clone(),
                    state: stt.clone(),
                };
                attackers.spawn(attacker.run());
            }
            if let (Some(rate), Some(permits)) = (spec.rate, &permits) {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1e-3)));
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                while !attackers.is_empty() {
                    tokio::select! {
                        _ = tick.tick() => {
                            if permits.available_permits() < spec.clients {
                                permits.add_permits(1);
                            }
                        }
                        _ = attackers.join_next() => {}
                    }
                    if s.load(Ordering::Relaxed) || Instant::now() >= spec.deadline {
                        s.store(true, Ordering::Relaxed);
                        permits.close();
                    }
                }
            }
            while attackers.join_next().await.is_some() {}
        });
        Self {
            started: Instant::now(),
            stop,
            sent,
            answered,
            state,
            task,
        }
    }

    /// Attempts sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Attempts answered so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Whether every attacker is done (the total reached, or the deadline passed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the attack (attempts in flight are awaited, each within its time limit).
    pub async fn finish(self) -> AttackReport {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let seconds = self.started.elapsed().as_secs_f64();
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        AttackReport {
            sent: self.sent.load(Ordering::Relaxed),
            answered: self.answered.load(Ordering::Relaxed),
            unanswered: s.unanswered,
            first_error: s.first_error.clone(),
            statuses: s.statuses.clone(),
            with_retry_after: s.with_retry_after,
            latency: Summary::of(&s.latency),
            seconds,
        }
    }
}

struct Attacker {
    spec: Spec,
    client: RawClient,
    stop: Arc<AtomicBool>,
    tickets: Arc<AtomicU64>,
    permits: Option<Arc<Semaphore>>,
    sent: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    state: Arc<Mutex<State>>,
}

impl Attacker {
    async fn run(mut self) {
        loop {
            if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.spec.deadline {
                return;
            }
            if let Some(permits) = &self.permits {
                match permits.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => return,
                }
            }
            let n = self.tickets.fetch_add(1, Ordering::Relaxed);
            if self.spec.total.is_some_and(|total| n >= total) {
                return;
            }
            self.sent.fetch_add(1, Ordering::Relaxed);
            let body =
                json!({"username": self.spec.user, "password": format!("wrong-{n}")}).to_string();
            let started = Instant::now();
            let outcome = tokio::time::timeout(
                self.spec.timeout,
                self.client.post_json("/login", None, body.as_bytes()),
            )
            .await;
            let elapsed = started.elapsed();
            let Ok(mut s) = self.state.lock() else {
                return;
            };
            match outcome {
                Ok(Ok(response)) => {
                    self.answered.fetch_add(1, Ordering::Relaxed);
                    *s.statuses.entry(response.status).or_default() += 1;
                    s.with_retry_after += u64::from(response.retry_after.is_some());
                    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                    let _ = s.latency.record(us.max(1));
                }
                failed => {
                    s.unanswered += 1;
                    let e = match failed {
                        Ok(Err(e)) => e,
                        _ => "no answer in time".into(),
                    };
                    s.first_error.get_or_insert(e);
                    drop(s);
                    // The connection may be mid-answer: start afresh.
                    self.client = RawClient::lazy(self.spec.target.clone(), self.client.local());
                }
            }
        }
    }
}
