//! One publisher: sends samples at its share of the rate (or flat out) until the deadline,
//! recording the latency of each acknowledged publish.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::{Instant, MissedTickBehavior};

use serde_json::Value;

use crate::config::Wire;
use crate::profile::{self, Sample};
use crate::raw_http::RawClient;
use crate::stats::{histogram, now_us};

/// What a publisher reports when it is done.
pub struct Outcome {
    /// Samples acknowledged with 2xx.
    pub acknowledged: u64,
    /// Samples whose publish failed.
    pub errors: u64,
    /// Publish latency (µs) of the acknowledged requests.
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
    pub http: Client,
    /// This publisher's rate in events/s; 0 for flat out.
    pub rate: f64,
    /// Samples per publish request (batch publish when more than 1).
    pub batch: usize,
    /// Padding put in every sample.
    pub pad: String,
    /// Shared count of acknowledged samples (for the progress line).
    pub acked: Arc<AtomicU64>,
}

/// How long a publish may take before it counts as an error.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// A publisher's HTTP client.
pub enum Client {
    /// `http://`: a lean kept-alive connection of its own.
    Raw(RawClient),
    /// `https://`: reqwest.
    Reqwest(reqwest::Client),
}

impl Client {
    /// The client for publishing to `base`, connected now: before the subscribers, so a
    /// server that stops accepting at its connection limit still takes the publishes.
    pub async fn for_url(base: &str, http: &reqwest::Client) -> Result<Self, String> {
        let url = reqwest::Url::parse(base).map_err(|e| e.to_string())?;
        if url.scheme() == "http" {
            Ok(Self::Raw(RawClient::connect(&url, None).await?))
        } else {
            Ok(Self::Reqwest(http.clone()))
        }
    }

    /// POSTs a JSON body; whether the server answered 2xx within [`PUBLISH_TIMEOUT`].
    async fn post(&mut self, base: &str, path: &str, token: Option<&str>, body: &Value) -> bool {
        tokio::time::timeout(PUBLISH_TIMEOUT, self.send(base, path, token, body))
            .await
            .unwrap_or(false)
    }

    async fn send(&mut self, base: &str, path: &str, token: Option<&str>, body: &Value) -> bool {
        match self {
            Self::Raw(client) => {
                let Ok(bytes) = serde_json::to_vec(body) else {
                    return false;
                };
                client
                    .post_json(path, token, &bytes)
                    .await
                    .is_ok_and(|status| (200..300).contains(&status))
            }
            Self::Reqwest(http) => {
                let mut req = http.post(format!("{base}{path}")).json(body);
                if let Some(token) = token {
                    req = req.bearer_auth(token);
                }
                match req.send().await {
                    Ok(resp) if resp.status().is_success() => resp.bytes().await.is_ok(),
                    _ => false,
                }
            }
        }
    }
}

impl Publisher {
    /// Publishes until `deadline`.
    pub async fn run(mut self, deadline: Instant) -> Outcome {
        let mut outcome = Outcome {
            acknowledged: 0,
            errors: 0,
            latency: histogram(),
        };
        let batch = self.batch.max(1);
        let mut ticker = (self.rate > 0.0).then(|| {
            let period = batch as f64 / self.rate;
            let mut t = tokio::time::interval(Duration::from_secs_f64(period));
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        });
        let mut seq = 0;
        while Instant::now() < deadline {
            if let Some(t) = ticker.as_mut() {
                t.tick().await;
            }
            let sent_us = now_us();
            let samples: Vec<_> = (seq..seq + batch as u64)
                .map(|seq| {
                    let sample = Sample {
                        publisher: self.index,
                        seq,
                        sent_us,
                    };
                    profile::sample_data(sample, &self.pad)
                })
                .collect();
            let (path, body) = profile::publish(self.wire, &self.channel, &samples);
            let acknowledged = self
                .http
                .post(&self.base, path, self.token.as_deref(), &body)
                .await;
            if acknowledged {
                outcome.acknowledged += batch as u64;
                self.acked.fetch_add(batch as u64, Ordering::Relaxed);
                let _ = outcome
                    .latency
                    .record(now_us().saturating_sub(sent_us).max(1));
            } else {
                outcome.errors += batch as u64;
            }
            seq += batch as u64;
        }
        outcome
    }
}
