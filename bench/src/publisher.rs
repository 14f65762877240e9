//! One publisher: sends samples at its share of the rate (or flat out) until the deadline,
//! recording the latency of each acknowledged publish.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::Wire;
use crate::profile::{self, Sample};
use crate::stats::{histogram, now_us};

/// What a publisher reports when it is done.
pub struct Outcome {
    /// Publishes acknowledged with 2xx.
    pub acknowledged: u64,
    /// Publishes that failed.
    pub errors: u64,
    /// Publish latency (µs) of the acknowledged ones.
    pub latency: Histogram<u64>,
}

/// Everything a publisher needs.
pub struct Publisher {
    /// Index, carried in every sample.
    pub index: usize,
    /// Wire profile.
    pub wire: Wire,
    /// Base URL.
    pub base: String,
    /// Channel.
    pub channel: String,
    /// Bearer token (broker profile).
    pub token: Option<String>,
    /// HTTP client.
    pub http: reqwest::Client,
    /// This publisher's rate in events/s; 0 for flat out.
    pub rate: f64,
    /// Padding put in every sample.
    pub pad: String,
    /// Shared count of acknowledged publishes (for the progress line).
    pub acked: Arc<AtomicU64>,
}

impl Publisher {
    /// Publishes until `deadline`.
    pub async fn run(self, deadline: Instant) -> Outcome {
        let mut outcome = Outcome {
            acknowledged: 0,
            errors: 0,
            latency: histogram(),
        };
        let mut ticker = (self.rate > 0.0).then(|| {
            let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate));
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        });
        let mut seq = 0;
        while Instant::now() < deadline {
            if let Some(t) = ticker.as_mut() {
                t.tick().await;
            }
            let sent_us = now_us();
            let data = profile::sample_data(
                Sample {
                    publisher: self.index,
                    seq,
                    sent_us,
                },
                &self.pad,
            );
            let (path, body) = profile::publish(self.wire, &self.channel, &data);
            let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
            if let Some(token) = &self.token {
                req = req.bearer_auth(token);
            }
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let _ = resp.bytes().await;
                    outcome.acknowledged += 1;
                    self.acked.fetch_add(1, Ordering::Relaxed);
                    let _ = outcome
                        .latency
                        .record(now_us().saturating_sub(sent_us).max(1));
                }
                _ => outcome.errors += 1,
            }
            seq += 1;
        }
        outcome
    }
}
