//! One subscriber's event stream: history from the store, then live records from the hub.
//!
//! The order of operations is the heart of the server. The stream registers with the hub
//! *before* it reads the snapshot or the replay from the store, and afterwards drops every live
//! record whose id is not greater than the last one it has dealt with (its cursor). Whatever
//! commits while the store is being read is therefore in the hub's ring: nothing is missed and
//! nothing is sent twice. A stream that falls behind the ring goes back to reading the store from
//! its cursor, then rejoins the live feed the same way; so does one that reaches a commit whose
//! records the hub's byte bound has evicted.
//!
//! What a stream holds is bounded in bytes, however slow its client: a snapshot is a list of
//! ids fetched in pages, a replay reads pages from the store, and one write merges live commits
//! only up to [`MAX_WRITE`]. A stream that stops reading therefore pins at most about two
//! commits' frames, which the other streams share anyway.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};
use tokio_util::sync::CancellationToken;

use crate::hub::{CommitRecords, HubMessage, StreamSlot};
use crate::metrics::Metrics;
use crate::presence::PresenceGuard;
use crate::sse::{self, Format};
use crate::state::AppState;
use crate::store::{Record, Store};

mod gather;
#[cfg(test)]
mod model_tests;
mod options;

use gather::Gather;
pub use options::{ChannelFilter, RecordFilter, Start, StreamOptions};

/// Records read from the store per page of a replay.
const REPLAY_PAGE: usize = 1000;
/// Records encoded into one chunk of a snapshot.
const SNAPSHOT_CHUNK: usize = 512;
/// Bytes of records read from the store for one write of a snapshot or replay (a single larger
/// record still goes whole).
const PAGE_BYTES: usize = 256 * 1024;
/// Pages of snapshots and catch-ups read and framed at once, process-wide. A hundred streams
/// resuming together would otherwise each hold a page's records and frames at the same time;
/// this bounds that to a few pages, and the rest wait their turn.
const CATCH_UP_READS: usize = 4;
static CATCH_UP: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CATCH_UP_READS);
/// Live commits merged into one write when several are waiting.
const LIVE_BATCH: usize = 256;
/// Bytes after which a write takes no more live commits: what is still waiting goes in the
/// next write.
pub const MAX_WRITE: usize = 256 * 1024;

enum Phase {
    Start,
    Initial,
    /// The ids of the snapshot, and how many of them are done.
    Snapshot(Vec<u64>, usize),
    Replay {
        announce_synced: bool,
    },
    Live,
    Done,
}

/// What woke a live stream.
enum Wake {
    Expired,
    Message(Result<HubMessage, RecvError>),
    KeepAlive,
}

/// A subscriber's stream state. Create it in the request handler, so it registers with the hub
/// before anything is read from the store.
pub struct Subscription {
    rx: Receiver<HubMessage>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    options: StreamOptions,
    phase: Phase,
    retry_ms: u64,
    /// Every record with an id up to this one has been sent or deliberately skipped.
    cursor: u64,
    /// Id of the last record sent, for `$synced`.
    last_sent: Option<u64>,
    /// The last channel looked at and whether it passed the filter: a stream's records mostly
    /// come from one channel, so most deliveries skip the lookup and the permission check.
    last_channel: Option<(String, bool)>,
    /// Deliveries not yet added to the metrics (added once per write, not per record).
    unreported: u64,
    keepalive: Interval,
    /// Fires when the caller's credentials expire, for an idle stream.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The same moment, checked by a busy stream before it sends.
    expires: Option<Instant>,
    /// Set at shutdown. A live stream learns of shutdown from the hub instead
    /// ([`HubMessage::Shutdown`]): this flag is looked at only before and between replays.
    shutdown: CancellationToken,
    _slot: StreamSlot,
    /// Presence membership of a node-sse-server client, left when the stream is dropped.
    _presence: Option<PresenceGuard>,
    /// Anything else the stream keeps until it ends (a Mercure subscription's registration,
    /// whose drop announces the end of the subscription).
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// Frames of the last write gathered, after its first: the stream yields them one by one
    /// (each shared, never copied), and the writer joins those that are ready into one
    /// vectored write.
    queued: VecDeque<Bytes>,
}

impl Subscription {
    /// Registers with the hub now; nothing is read until the stream is polled.
    pub fn new(state: &AppState, options: StreamOptions, slot: StreamSlot) -> Self {
        let rx = state.hub.subscribe();
        let period = state.config.keepalive_interval();
        let mut keepalive = tokio::time::interval_at(Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let expires = options
            .expires_at
            .map(|exp| Instant::now() + crate::auth::jwt::time_until(exp));
        let deadline = expires.map(|at| Box::pin(tokio::time::sleep_until(at)));
        state.metrics.subscribers.inc();
        Self {
            rx,
            store: state.store.clone(),
            metrics: state.metrics.clone(),
            options,
            phase: Phase::Start,
            retry_ms: state.config.retry_ms,
            cursor: 0,
            last_sent: None,
            last_channel: None,
            unreported: 0,
            keepalive,
            deadline,
            expires,
            shutdown: state.shutdown.clone(),
            _slot: slot,
            _presence: None,
            _guard: None,
            queued: VecDeque::new(),
        }
    }

    /// Keeps `guard` until the stream is dropped.
    pub fn with_guard(mut self, guard: Box<dyn std::any::Any + Send + Sync>) -> Self {
        self._guard = Some(guard);
        self
    }

    /// Keeps the client in the presence registry for as long as the stream lives.
    pub fn with_presence(mut self, guard: PresenceGuard) -> Self {
        self._presence = Some(guard);
        self
    }

    /// The stream of SSE bytes, ending at shutdown, credential expiry or revocation.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
        futures_util::stream::unfold(self, |mut sub| async move {
            sub.next_chunk().await.map(|chunk| (Ok(chunk), sub))
        })
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(out) = self.queued.pop_front() {
            if self.queued.is_empty() {
                // Give the buffer back: an idle stream holds none.
                self.queued = VecDeque::new();
            }
            return Some(out);
        }
        loop {
            if !matches!(self.phase, Phase::Live) && self.shutting_down() {
                self.phase = Phase::Done;
            }
            let mut chunk = Gather::default();
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return None,
                Phase::Start => {
                    self.phase = Phase::Initial;
                    return Some(sse::retry(self.retry_ms));
                }
                Phase::Initial => match self.begin(&mut chunk).await {
                    Ok(()) => {}
                    Err(e) => return Some(self.fail(&e)),
                },
                Phase::Snapshot(ids, done) => {
                    // Never closed, so acquiring only waits.
                    let _reading = CATCH_UP.acquire().await;
                    let wanted = ids[done..].iter().take(SNAPSHOT_CHUNK).copied().collect();
                    let page = match self.store.records(wanted, PAGE_BYTES).await {
                        Ok(page) => page,
                        Err(e) => return Some(self.fail(&e.to_string())),
                    };
                    // The page is a prefix of the ids asked for (missing ones skipped).
                    let done = match page.last() {
                        Some(last) => ids[done..]
                            .iter()
                            .position(|&id| id == last.id)
                            .map_or(ids.len(), |at| done + at + 1),
                        None => (done + SNAPSHOT_CHUNK).min(ids.len()),
                    };
                    for record in &page {
                        self.cursor = self.cursor.max(record.id);
                        self.send(record, &mut chunk);
                    }
                    if done >= ids.len() {
                        self.put_synced(&mut chunk);
                        self.phase = Phase::Live;
                    } else {
                        self.phase = Phase::Snapshot(ids, done);
                    }
                }
                Phase::Replay { announce_synced } => {
                    // The caller must still be allowed: a stream that lagged past a revocation
                    // notice learns of it here, before any record committed after it.
                    if let Err(reason) = self.still_authorized().await {
                        return Some(self.end_after(chunk, reason));
                    }
                    let _reading = CATCH_UP.acquire().await;
                    let page = match self.store.since(self.cursor, REPLAY_PAGE, PAGE_BYTES).await {
                        Ok(page) => page,
                        Err(e) => return Some(self.fail(&e.to_string())),
                    };
                    let bytes: usize = page.iter().map(|r| r.size()).sum();
                    for record in &page {
                        self.cursor = record.id;
                        if self.admits_record(record) {
                            self.send(record, &mut chunk);
                        }
                    }
                    let last_page = page.len() < REPLAY_PAGE
                        && !crate::store::page_full(page.len(), bytes, PAGE_BYTES);
                    if last_page {
                        if announce_synced {
                            self.put_synced(&mut chunk);
                        }
                        self.phase = Phase::Live;
                    } else {
                        self.phase = Phase::Replay { announce_synced };
                    }
                }
                Phase::Live => {
                    self.phase = Phase::Live;
                    match self.wait().await {
                        Wake::Expired => return Some(self.end("token expired")),
                        Wake::Message(Ok(_)) if self.expired() => {
                            return Some(self.end("token expired"));
                        }
                        Wake::KeepAlive => return Some(sse::comment("keep-alive")),
                        Wake::Message(Err(RecvError::Closed)) => self.phase = Phase::Done,
                        Wake::Message(Err(RecvError::Lagged(_))) => self.lagged(),
                        Wake::Message(Ok(message)) => {
                            if let Some(reason) = self.accept(message, &mut chunk) {
                                return Some(self.end_after(chunk, reason));
                            }
                            if matches!(self.phase, Phase::Live) {
                                self.drain(&mut chunk);
                            }
                        }
                    }
                }
            }
            if !chunk.is_empty() {
                self.report_deliveries();
                return Some(self.emit(chunk));
            }
        }
    }

    /// Decides between snapshot and replay and queues the first frames (`$reset`).
    async fn begin(&mut self, chunk: &mut Gather) -> Result<(), String> {
        if self.options.format == Format::Compat {
            return self.begin_compat(chunk).await;
        }
        let start = match self.options.start.clone() {
            Start::After(id) => {
                let last = self.store.last_id().await.map_err(|e| e.to_string())?;
                if id <= last {
                    self.cursor = id;
                    self.last_sent = Some(id);
                    self.phase = Phase::Replay {
                        announce_synced: true,
                    };
                    return Ok(());
                }
                Start::Unknown(id.to_string())
            }
            other => other,
        };
        if let Start::Unknown(raw) = start {
            let data = serde_json::json!({ "reason": "unknown event id", "last_event_id": raw })
                .to_string();
            chunk.put(sse::event(None, "$reset", &data));
        }
        let filter = self.options.filter.clone();
        let ids = self
            .store
            .latest_ids(
                self.options.filter.requested(),
                Arc::new(move |channel| filter.allows(channel)),
            )
            .await
            .map_err(|e| e.to_string())?;
        self.phase = Phase::Snapshot(ids, 0);
        Ok(())
    }

    /// node-sse-server's opening: `registered`, one `lastEvent` per channel in the order asked
    /// for, then live (or, with a known `Last-Event-ID`, everything missed since, then live).
    async fn begin_compat(&mut self, chunk: &mut Gather) -> Result<(), String> {
        let client_id = self.options.client_id.clone().unwrap_or_default();
        let registered = serde_json::json!({ "clientId": client_id }).to_string();
        chunk.put(sse::compat_event(None, "registered", &registered));
        let channels = self.options.filter.requested().unwrap_or_default();
        let latest = self
            .store
            .latest(Some(channels.clone()))
            .await
            .map_err(|e| e.to_string())?;
        for channel in &channels {
            let last = latest
                .iter()
                .filter(|r| &r.channel == channel)
                .max_by_key(|r| r.id);
            let value = last.map_or_else(|| "{}".to_owned(), |r| sse::compat_last_value(r));
            chunk.put(sse::compat_event(Some(channel), "lastEvent", &value));
        }
        let seen = latest.iter().map(|r| r.id).max().unwrap_or(0);
        if let Start::After(id) = self.options.start
            && id <= self.store.last_id().await.map_err(|e| e.to_string())?
        {
            self.cursor = id;
            self.phase = Phase::Replay {
                announce_synced: false,
            };
        } else {
            // Everything in these channels up to `seen` is summed up by the lastEvents; a
            // reconnecting EventSource resumes from there.
            self.cursor = seen;
            chunk.put(sse::id_only(seen));
            self.phase = Phase::Live;
        }
        Ok(())
    }

    /// Waits for the next hub message, the keep-alive period or the credentials' expiry.
    ///
    /// The hub comes first: a woken stream takes its message without touching its timers,
    /// which at ten thousand streams per commit is a measurable part of the fan-out. A busy
    /// stream checks its expiry with [`Self::expired`] instead.
    async fn wait(&mut self) -> Wake {
        let Self {
            rx,
            keepalive,
            deadline,
            ..
        } = self;
        tokio::select! {
            biased;
            message = rx.recv() => Wake::Message(message),
            () = until(deadline) => Wake::Expired,
            _ = keepalive.tick() => Wake::KeepAlive,
        }
    }

    /// Whether the caller's credentials have expired.
    fn expired(&self) -> bool {
        self.expires.is_some_and(|at| Instant::now() >= at)
    }

    /// Whether shutdown has begun (a live stream learns it from the hub).
    fn shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Handles a hub message; returns a reason when the stream must end with an error frame
    /// (at shutdown it ends without one: the phase becomes [`Phase::Done`]).
    fn accept(&mut self, message: HubMessage, chunk: &mut Gather) -> Option<&'static str> {
        match message {
            HubMessage::Records(commit) => {
                if commit.last_id() <= self.cursor {
                    // Already sent from the store (a replay ran ahead of the ring).
                    return None;
                }
                let loaded = commit.load();
                let Some(records) = loaded.as_deref() else {
                    // Evicted by the hub's byte bound: this stream fell too far behind.
                    self.lagged();
                    return None;
                };
                if commit.first_id() > self.cursor && self.admits_all(records) {
                    // Caught up and allowed every record (the usual case): the commit's
                    // frames, joined once for every stream, go out as they are.
                    chunk.put(records.frames(self.options.format).clone());
                    self.cursor = commit.last_id();
                    self.last_sent = Some(commit.last_id());
                    self.unreported += records.records().len() as u64;
                    return None;
                }
                if commit.bytes() > MAX_WRITE {
                    // Some records of a large commit: copying them would be a large private
                    // buffer; the store pages them instead.
                    self.phase = Phase::Replay {
                        announce_synced: false,
                    };
                    return None;
                }
                for record in records.records() {
                    if record.id > self.cursor {
                        self.cursor = record.id;
                        if self.admits_record(record) {
                            self.send(record, chunk);
                        }
                    }
                }
                None
            }
            HubMessage::Presence(snapshot) => {
                if self.options.format == Format::Compat {
                    chunk.put(snapshot.frame_for(&self.options.filter.caller));
                }
                None
            }
            HubMessage::Revoked(user) => {
                let mine = self.options.filter.caller.user.as_deref() == Some(&*user);
                mine.then_some("user revoked")
            }
            HubMessage::Shutdown => {
                self.phase = Phase::Done;
                None
            }
        }
    }

    /// Merges whatever else is already waiting into the same write.
    fn drain(&mut self, chunk: &mut Gather) {
        for _ in 0..LIVE_BATCH {
            if chunk.len() >= MAX_WRITE {
                return;
            }
            match self.rx.try_recv() {
                Ok(message) => {
                    if let Some(reason) = self.accept(message, chunk) {
                        chunk.put(self.end_frame(reason));
                        self.phase = Phase::Done;
                        return;
                    }
                    if !matches!(self.phase, Phase::Live) {
                        return;
                    }
                }
                Err(TryRecvError::Lagged(_)) => {
                    self.lagged();
                    return;
                }
                Err(_) => return,
            }
        }
    }

    fn lagged(&mut self) {
        self.metrics.slow_subscribers.inc();
        self.phase = Phase::Replay {
            announce_synced: false,
        };
    }

    /// Whether the caller may still read: their account exists, is not revoked, and their
    /// credentials are of its current generation (no password change or reset since).
    /// Checked before every page of a catch-up from the store, since a stream that lagged may
    /// have missed the hub's notice.
    async fn still_authorized(&self) -> Result<(), &'static str> {
        let caller = &self.options.filter.caller;
        let Some(name) = caller.user.as_deref() else {
            return Ok(());
        };
        match self.store.user(name).await {
            Ok(Some(user)) if user.revoked => Err("user revoked"),
            Ok(Some(user))
                if caller
                    .generation
                    .is_some_and(|g| g != user.token_generation) =>
            {
                Err("credentials changed")
            }
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("user revoked"),
            Err(_) => Err("internal error"),
        }
    }

    /// Whether every record of `commit` goes to this stream.
    fn admits_all(&mut self, commit: &CommitRecords) -> bool {
        if let Some(filter) = &self.options.record_filter {
            return commit.records().iter().all(|r| filter.admits(r));
        }
        match commit.channel() {
            Some(channel) => self.admits(channel),
            None => commit.records().iter().all(|r| self.admits(&r.channel)),
        }
    }

    /// Whether `record` goes to this stream: its record filter decides when it has one, else
    /// its channel.
    fn admits_record(&mut self, record: &Record) -> bool {
        match &self.options.record_filter {
            Some(filter) => filter.admits(record),
            None => self.admits(&record.channel),
        }
    }

    /// Whether records of `channel` go to this stream, remembering the last answer.
    fn admits(&mut self, channel: &str) -> bool {
        if let Some((last, allowed)) = &self.last_channel
            && last == channel
        {
            return *allowed;
        }
        let allowed = self.options.filter.allows(channel);
        self.last_channel = Some((channel.to_owned(), allowed));
        allowed
    }

    fn send(&mut self, record: &Record, chunk: &mut Gather) {
        chunk.put(sse::record_frame(record, self.options.format).clone());
        self.last_sent = Some(record.id);
        self.unreported += 1;
    }

    fn report_deliveries(&mut self) {
        if self.unreported > 0 {
            self.metrics.deliveries.inc_by(self.unreported);
            self.unreported = 0;
        }
    }

    fn put_synced(&self, chunk: &mut Gather) {
        if matches!(self.options.format, Format::Compat | Format::Mercure) {
            return;
        }
        // The id line makes `$synced` the resume point even when nothing was sent: a client
        // that reconnects with it gets every record committed since, not just a snapshot.
        let id = self.last_sent.unwrap_or(0).to_string();
        chunk.put(sse::event(
            Some(&id),
            "$synced",
            &serde_json::json!({ "id": id }).to_string(),
        ));
    }

    fn end(&mut self, reason: &str) -> Bytes {
        self.phase = Phase::Done;
        self.end_frame(reason)
    }

    /// The last frame of a stream ended for `reason`: `$error`, or on a Mercure stream (which
    /// has no such event) a comment.
    fn end_frame(&self, reason: &str) -> Bytes {
        if self.options.format == Format::Mercure {
            sse::comment(reason)
        } else {
            end_frame(reason)
        }
    }

    fn end_after(&mut self, mut chunk: Gather, reason: &str) -> Bytes {
        chunk.put(self.end(reason));
        self.emit(chunk)
    }

    /// The first frame of `chunk`, queueing the rest to follow it.
    fn emit(&mut self, chunk: Gather) -> Bytes {
        let (first, rest) = chunk.into_frames();
        if !rest.is_empty() {
            self.queued = rest;
        }
        first
    }

    fn fail(&mut self, error: &str) -> Bytes {
        tracing::error!(error, "event stream failed");
        self.end("internal error")
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.report_deliveries();
        self.metrics.subscribers.dec();
    }
}

fn end_frame(reason: &str) -> Bytes {
    sse::event(
        None,
        "$error",
        &serde_json::json!({ "error": reason }).to_string(),
    )
}

async fn until(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_values() {
        assert_eq!(Start::from_last_event_id(None), Start::Snapshot);
        assert_eq!(Start::from_last_event_id(Some(" ")), Start::Snapshot);
        assert_eq!(Start::from_last_event_id(Some("42")), Start::After(42));
        assert_eq!(
            Start::from_last_event_id(Some("abc")),
            Start::Unknown("abc".into())
        );
    }
}
