//! One SSE subscriber: connects, waits for the end of its initial phase, then counts every
//! delivery, checks for loss and duplicates, and records insert→delivery latency.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use hdrhistogram::Histogram;

use crate::config::Wire;
use crate::profile;
use crate::raw_http::{self, RawStream};
use crate::stats::now_us;

/// Counters a subscriber shares with the coordinator while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Set once its snapshot (or `lastEvent`) has arrived, or its Mercure stream is open.
    pub synced: AtomicBool,
    /// Distinct samples received.
    pub received: AtomicU64,
    /// Samples received more than once (or out of a publisher's order).
    pub duplicates: AtomicU64,
    /// Set if the stream failed or ended early.
    pub failed: AtomicBool,
    /// Why it failed.
    pub error: std::sync::OnceLock<String>,
    /// Times its stream was opened again after it ended (`--reconnect`).
    pub reconnects: AtomicU64,
    /// When it was last opened again, or caught up again after that (the resumed stream's
    /// `$synced`), µs since the Unix epoch (0: never).
    pub reconnected_us: AtomicU64,
}

/// Everything a subscriber needs.
pub struct Subscriber {
    /// Wire profile.
    pub wire: Wire,
    /// Stream URL.
    pub url: String,
    /// With `--reconnect`: the stream URLs of the other nodes, tried in turn after `url`
    /// (empty: no reconnecting).
    pub fallbacks: Vec<String>,
    /// Bearer token (broker profile).
    pub token: Option<String>,
    /// How to connect.
    pub conn: Conn,
    /// Number of publishers (for per-publisher order checks).
    pub publishers: usize,
    /// Shared counters.
    pub progress: Arc<Progress>,
    /// Shared latency histogram (µs), fed in batches.
    pub latency: Arc<Mutex<Histogram<u64>>>,
}

/// How a subscriber connects.
#[derive(Clone)]
pub enum Conn {
    /// `http://` (and `https://` with `--tls-ca`): the lean client of [`raw_http`], from this
    /// source address.
    Raw(Option<IpAddr>),
    /// Other `https://` URLs: reqwest (bound to its source address).
    Client(reqwest::Client),
}

/// An open stream's body, whichever client opened it.
enum Body {
    Raw(RawStream),
    Client(
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    ),
}

impl Body {
    /// Appends the next body bytes to `buf`; `false` once the stream has ended.
    async fn read_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, String> {
        match self {
            Self::Raw(raw) => raw.read_into(buf).await,
            Self::Client(body) => match body.next().await {
                Some(chunk) => {
                    buf.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
                    Ok(true)
                }
                None => Ok(false),
            },
        }
    }
}

impl Subscriber {
    /// Runs until the stream ends or the task is aborted.
    pub async fn run(self) {
        if let Err(e) = self.stream().await {
            let _ = self.progress.error.set(e);
            self.progress.failed.store(true, Ordering::Relaxed);
        }
    }

    async fn open(&self, url: &str, last_id: Option<&str>) -> Result<Body, String> {
        let url = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
        let http = match &self.conn {
            Conn::Raw(local) => {
                let options = raw_http::StreamOptions {
                    last_event_id: last_id.map(str::to_owned),
                    ..Default::default()
                };
                let raw =
                    raw_http::open_with(&url, *local, self.token.as_deref(), &options).await?;
                return Ok(Body::Raw(raw));
            }
            Conn::Client(http) => http,
        };
        let mut req = http.get(url).header("accept", "text/event-stream");
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!(
                "{} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            ));
        }
        Ok(Body::Client(Box::pin(resp.bytes_stream())))
    }

    async fn stream(&self) -> Result<(), String> {
        let mut last_seq: Vec<Option<u64>> = vec![None; self.publishers];
        let mut last_id: Option<String> = None;
        let urls: Vec<&str> = std::iter::once(self.url.as_str())
            .chain(self.fallbacks.iter().map(String::as_str))
            .collect();
        let mut at = 0;
        let mut body = self.open(urls[0], None).await?;
        if profile::live_on_open(self.wire) {
            self.progress.synced.store(true, Ordering::Release);
        }
        loop {
            let ended = self.read(&mut body, &mut last_seq, &mut last_id).await;
            if self.fallbacks.is_empty() {
                return ended;
            }
            // Failover: the next node, with Last-Event-ID, until one answers (for a minute).
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            body = loop {
                at = (at + 1) % urls.len();
                match self.open(urls[at], last_id.as_deref()).await {
                    Ok(body) => break body,
                    Err(e) if tokio::time::Instant::now() > deadline => {
                        return Err(format!("no node took the stream back: {e}"));
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            };
            self.progress.reconnects.fetch_add(1, Ordering::Relaxed);
            self.progress
                .reconnected_us
                .fetch_max(now_us(), Ordering::Relaxed);
        }
    }

    /// Reads one opened stream until it ends, keeping the last event id.
    async fn read(
        &self,
        body: &mut Body,
        last_seq: &mut [Option<u64>],
        last_id: &mut Option<String>,
    ) -> Result<(), String> {
        let mut buf: Vec<u8> = Vec::new();
        let mut pending: Vec<u64> = Vec::with_capacity(256);
        while body.read_into(&mut buf).await? {
            // Everything in one read arrived at once: one clock reading serves all its events.
            let now = now_us();
            let mut start = 0;
            while let Some((event, data, id, len)) = next_event(&buf[start..]) {
                if !id.is_empty() {
                    *last_id = Some(String::from_utf8_lossy(id).into_owned());
                }
                if profile::is_synced(self.wire, event) {
                    self.progress.synced.store(true, Ordering::Release);
                    if self.progress.reconnects.load(Ordering::Relaxed) > 0 {
                        // A resumed stream's `$synced` follows its replay: it is current again.
                        self.progress
                            .reconnected_us
                            .fetch_max(now, Ordering::Relaxed);
                    }
                } else if !self.progress.synced.load(Ordering::Relaxed) {
                    // Snapshot (or lastEvent) of earlier runs: not part of this one.
                } else if let Some(sample) = profile::parse(self.wire, event, data) {
                    self.count(sample, now, last_seq, &mut pending);
                }
                start += len;
            }
            buf.drain(..start);
            self.flush(&mut pending);
        }
        self.flush(&mut pending);
        Err("stream ended".into())
    }

    fn count(
        &self,
        sample: profile::Sample,
        now: u64,
        last_seq: &mut [Option<u64>],
        pending: &mut Vec<u64>,
    ) {
        let Some(last) = last_seq.get_mut(sample.publisher) else {
            return;
        };
        if last.is_some_and(|l| sample.seq <= l) {
            self.progress.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(sample.seq);
        self.progress.received.fetch_add(1, Ordering::Relaxed);
        pending.push(now.saturating_sub(sample.sent_us).max(1));
    }

    fn flush(&self, pending: &mut Vec<u64>) {
        if pending.is_empty() {
            return;
        }
        if let Ok(mut h) = self.latency.lock() {
            for &us in pending.iter() {
                let _ = h.record(us);
            }
        }
        pending.clear();
    }
}

/// An SSE event's `event`, `data` and `id` field values, and its length in bytes.
type EventParts<'a> = (&'a [u8], &'a [u8], &'a [u8], usize);

/// The first complete SSE event in `buf`: its `event`, (last) `data` and `id` field values,
/// and the bytes it takes up to and including the blank line that ends it. `None` until one is
/// whole. Comments and other fields are skipped; a block without fields (a keep-alive) has an
/// empty event name.
fn next_event(buf: &[u8]) -> Option<EventParts<'_>> {
    let (mut event, mut data, mut id): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
    let mut at = 0;
    loop {
        let end = at + memchr::memchr(b'\n', &buf[at..])?;
        let line = &buf[at..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at = end + 1;
        if line.is_empty() {
            return Some((event, data, id, at));
        }
        if let Some(v) = line.strip_prefix(b"id: ") {
            id = v;
        } else if let Some(v) = line.strip_prefix(b"event: ") {
            event = v;
        } else if let Some(v) = line.strip_prefix(b"data: ") {
            data = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_event;

    #[test]
    fn events_are_read_whole_and_in_place() {
        let buf = b": keep-alive\n\nid: 7\r\nevent: bench\r\ndata: {\"p\":0}\r\n\r\nevent: x\n";
        let (event, data, _, len) = next_event(buf).expect("the comment block");
        assert_eq!((event, data, len), (&b""[..], &b""[..], 14));
        let (event, data, id, second) = next_event(&buf[len..]).expect("the event");
        assert_eq!((event, data), (&b"bench"[..], &b"{\"p\":0}"[..]));
        assert_eq!(id, b"7");
        assert_eq!(
            next_event(&buf[len + second..]),
            None,
            "an unfinished event waits"
        );
    }
}
