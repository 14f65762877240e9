//! One publisher: sends samples at its share of the rate (or flat out) until the deadline,
//! recording the latency of each acknowledged publish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::Wire;
use crate::profile::{self, Body, Sample};
use crate::raw_client::RawClient;
use crate::raw_http;
use crate::stats::{histogram, now_us};

/// What a publisher reports when it is done.
pub struct Outcome {
    /// Samples acknowledged with 2xx.
    pub acknowledged: u64,
    /// Samples whose publish failed.
    pub errors: u64,
    /// Publish latency (µs) of the acknowledged requests.
    pub latency: Histogram<u64>,
    /// The ids the server gave the acknowledged inserts (with [`Publisher::record_ids`]).
    pub ids: Vec<u64>,
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
    /// Keep the id of every acknowledged insert (single events on the broker wire).
    pub record_ids: bool,
    /// Events left to publish between all publishers that share it; `None`: no limit.
    pub budget: Option<Arc<AtomicU64>>,
    /// Set to stop publishing at once.
    pub stop: Option<Arc<AtomicBool>>,
}

/// How long a publish may take before it counts as an error.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// A publisher's HTTP client.
pub enum Client {
    /// `http://` (and `https://` with `--tls-ca`): a lean kept-alive connection of its own.
    Raw(RawClient),
    /// Other `https://` URLs: reqwest.
    Reqwest(reqwest::Client),
}

impl Client {
    /// The client for publishing to `base`, connected now: before the subscribers, so a
    /// server that stops accepting at its connection limit still takes the publishes.
    pub async fn for_url(base: &str, http: &reqwest::Client) -> Result<Self, String> {
        let url = reqwest::Url::parse(base).map_err(|e| e.to_string())?;
        if url.scheme() == "http" || raw_http::tls_ready() {
            Ok(Self::Raw(RawClient::connect(&url, None).await?))
        } else {
            Ok(Self::Reqwest(http.clone()))
        }
    }

    /// POSTs a body; the response body when the server answered 2xx within
    /// [`PUBLISH_TIMEOUT`].
    async fn post(
        &mut self,
        base: &str,
        path: &str,
        token: Option<&str>,
        body: &Body,
    ) -> Option<Vec<u8>> {
        tokio::time::timeout(PUBLISH_TIMEOUT, self.send(base, path, token, body))
            .await
            .ok()
            .flatten()
    }

    async fn send(
        &mut self,
        base: &str,
        path: &str,
        token: Option<&str>,
        body: &Body,
    ) -> Option<Vec<u8>> {
        match self {
            Self::Raw(client) => {
                let response = client
                    .post(path, token, body.content_type(), &body.to_bytes())
                    .await
                    .ok()?;
                (200..300)
                    .contains(&response.status)
                    .then_some(response.body)
            }
            Self::Reqwest(http) => {
                let mut req = http
                    .post(format!("{base}{path}"))
                    .header("content-type", body.content_type())
                    .body(body.to_bytes());
                if let Some(token) = token {
                    req = req.bearer_auth(token);
                }
                match req.send().await {
                    Ok(resp) if resp.status().is_success() => {
                        resp.bytes().await.ok().map(|b| b.to_vec())
                    }
                    _ => None,
                }
            }
        }
    }
}

/// The `id` of an insert's answer (`{"id":"42",...}`).
pub fn insert_id(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Inserted<'a> {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
    }
    serde_json::from_slice::<Inserted<'_>>(body)
        .ok()?
        .id
        .parse()
        .ok()
}

impl Publisher {
    /// Publishes until `deadline`.
    pub async fn run(mut self, deadline: Instant) -> Outcome {
        let mut outcome = Outcome {
            acknowledged: 0,
            errors: 0,
            latency: histogram(),
            ids: Vec::new(),
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
            if self
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
            {
                break;
            }
            if let Some(left) = &self.budget
                && left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        n.checked_sub(batch as u64)
                    })
                    .is_err()
            {
                break;
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
            let answer = self
                .http
                .post(&self.base, path, self.token.as_deref(), &body)
                .await;
            if let Some(answer) = answer {
                if self.record_ids
                    && let Some(id) = insert_id(&answer)
                {
                    outcome.ids.push(id);
                }
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
