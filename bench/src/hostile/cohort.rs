//! A cohort of [`Tracked`] subscribers that misbehave the same way, run together and judged
//! together against the acknowledged ids.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::hostile::tracked::{Mode, Phase, Progress, Tracked};
use crate::hostile::tracker::Expected;

/// Subscribers of one kind.
pub struct Cohort {
    mode: Mode,
    progress: Vec<Arc<Progress>>,
    tasks: Vec<JoinHandle<()>>,
    phase: watch::Sender<Phase>,
}

/// How a cohort ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CohortReport {
    /// Subscribers.
    pub subscribers: usize,
    /// Whose stream got to `$synced`.
    pub synced: usize,
    /// That received every acknowledged event after their start, in order, none twice.
    pub complete: usize,
    /// That got to the last acknowledged id but whose ids do not match the acknowledged ones.
    pub mismatched: usize,
    /// That did not get to the last acknowledged id in time.
    pub unfinished: usize,
    /// That failed (see `first_error`).
    pub failed: usize,
    /// Why the first of them failed.
    pub first_error: Option<String>,
    /// Acknowledged events the subscribers should have received, in all.
    pub expected: u64,
    /// Events they received, in all.
    pub received: u64,
    /// Events received out of order or twice, in all.
    pub out_of_order: u64,
    /// Reconnections the subscribers chose to make.
    pub reconnects: u64,
    /// Streams the server ended or broke before the subscriber had everything.
    pub cut_off: u64,
    /// Stream openings the server refused (each retried).
    pub refused: u64,
    /// Why the last of them was refused.
    pub last_refusal: Option<String>,
}

impl CohortReport {
    /// Every subscriber complete.
    pub fn all_complete(&self) -> bool {
        self.complete == self.subscribers && self.out_of_order == 0
    }

    /// "n of N complete (...)" for a Markdown row.
    pub fn row(&self) -> String {
        format!(
            "{} of {} complete; {} mismatched, {} unfinished, {} failed; {} of {} events \
             received, {} out of order or twice; {} reconnections, {} streams cut off, {} refused",
            self.complete,
            self.subscribers,
            self.mismatched,
            self.unfinished,
            self.failed,
            self.received,
            self.expected,
            self.out_of_order,
            self.reconnects,
            self.cut_off,
            self.refused
        )
    }
}

impl Cohort {
    /// An empty cohort.
    pub fn new(mode: Mode) -> Self {
        let (phase, _) = watch::channel(Phase::Run);
        Self {
            mode,
            progress: Vec::new(),
            tasks: Vec::new(),
            phase,
        }
    }

    /// Starts one more subscriber on `url` from `local`.
    pub fn spawn(&mut self, url: &reqwest::Url, token: &str, local: Option<IpAddr>) {
        let progress = Arc::new(Progress::default());
        let seed = 0x2545_f491_4f6c_dd1d_u64.wrapping_mul(self.progress.len() as u64 + 1);
        let tracked = Tracked {
            url: url.clone(),
            token: Some(token.to_owned()),
            local,
            mode: self.mode,
            progress: progress.clone(),
            phase: self.phase.subscribe(),
            seed,
        };
        self.progress.push(progress);
        self.tasks.push(tokio::spawn(tracked.run()));
    }

    /// Subscribers.
    pub fn len(&self) -> usize {
        self.progress.len()
    }

    fn count(&self, f: impl Fn(&Progress) -> bool) -> usize {
        self.progress.iter().filter(|p| f(p)).count()
    }

    /// Subscribers past `$synced`.
    pub fn synced(&self) -> usize {
        self.count(|p| p.synced.load(Ordering::Acquire))
    }

    /// Subscribers finished (done or failed).
    pub fn ended(&self) -> usize {
        self.count(|p| p.done.load(Ordering::Acquire) || p.failed.load(Ordering::Acquire))
    }

    /// Events received by all of them so far.
    pub fn received(&self) -> u64 {
        self.progress.iter().map(|p| p.tally().count).sum()
    }

    /// Waits until every subscriber is past `$synced` (or failed), at most `timeout`.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let failed = self.count(|p| p.failed.load(Ordering::Acquire));
            if self.synced() + failed >= self.len() {
                return failed == 0;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Tells the subscribers publishing is over: they read up to `target`.
    pub fn finish(&self, target: u64) {
        self.phase.send_replace(Phase::Finish { target });
    }

    /// Stops them all and judges each against `expected`.
    pub fn report(&self, expected: &Expected) -> CohortReport {
        for task in &self.tasks {
            task.abort();
        }
        let mut r = CohortReport {
            subscribers: self.len(),
            ..CohortReport::default()
        };
        for p in &self.progress {
            let tally = p.tally();
            let verdict = expected.verdict(p.start.load(Ordering::Relaxed), &tally);
            let done = p.done.load(Ordering::Acquire);
            let failed = p.failed.load(Ordering::Acquire);
            r.synced += usize::from(p.synced.load(Ordering::Acquire));
            r.expected += verdict.expected;
            r.received += verdict.received;
            r.out_of_order += verdict.out_of_order;
            r.reconnects += p.reconnects.load(Ordering::Relaxed);
            r.cut_off += p.cut_off.load(Ordering::Relaxed);
            r.refused += p.refused.load(Ordering::Relaxed);
            if let Ok(last) = p.last_refusal.lock()
                && last.is_some()
            {
                r.last_refusal.clone_from(&last);
            }
            if failed {
                r.failed += 1;
                if r.first_error.is_none() {
                    r.first_error = p.error.get().cloned();
                }
            } else if !done {
                r.unfinished += 1;
            } else if verdict.complete {
                r.complete += 1;
            } else {
                r.mismatched += 1;
            }
        }
        r
    }
}

impl Drop for Cohort {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
