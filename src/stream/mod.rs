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
//! ids fetched in pages, a replay reads pages from the store, and one write takes live commits
//! only up to [`MAX_WRITE`], as handles to their shared frames. A stream that stops reading
//! therefore pins at most one write's frames, which the other streams share anyway.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::hub::{HubMessage, StreamSlot};
use crate::metrics::Metrics;
use crate::presence::PresenceGuard;
use crate::sse::Format;
use crate::state::AppState;
use crate::store::{Record, Store};

mod admit;
mod cursor;
mod expiry;
mod framing;
mod gather;
mod history;
mod keepalive;
#[cfg(test)]
mod machine_tests;
#[cfg(test)]
mod model_tests;
mod options;

use admit::Admission;
use cursor::{Cursor, Seam};
use expiry::{EXPIRED, Expiry};
use gather::Gather;
use history::{Opening, Snapshot};
use keepalive::KeepAlive;
pub use options::{ChannelFilter, RecordFilter, Start, StreamOptions};

/// Live commits merged into one write when several are waiting.
const LIVE_BATCH: usize = 256;
/// Bytes after which a write takes no more live commits: what is still waiting goes in the
/// next write.
pub const MAX_WRITE: usize = 256 * 1024;

/// Where a stream is: its opening, its history from the store, live, or ended.
enum Phase {
    /// Nothing written yet: `retry` comes first.
    Start,
    /// History not chosen yet ([`history::open`]).
    Initial,
    /// Sending a snapshot, page by page.
    Snapshot(Snapshot),
    /// Reading every record after the cursor from the store, page by page (a replay, or a
    /// catch-up after falling behind the hub).
    Replay {
        /// Whether `$synced` follows the last page (a replay asked for with `Last-Event-ID`).
        announce_synced: bool,
    },
    /// Taking commits from the hub.
    Live,
    /// Ended.
    Done,
}

/// What woke a live stream.
enum Wake {
    Expired,
    Message(Result<HubMessage, RecvError>),
    KeepAlive,
}

/// A subscriber's stream state: the composition of its history ([`history`]), its cursor at
/// the seam with the live feed ([`cursor`]), its frames ([`framing`]), its expiry and
/// revocation ([`expiry`]) and its keep-alive ([`keepalive`]). Create it in the request
/// handler, so it registers with the hub before anything is read from the store.
pub struct Subscription {
    rx: Receiver<HubMessage>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    options: StreamOptions,
    phase: Phase,
    retry_ms: u64,
    cursor: Cursor,
    admission: Admission,
    /// Deliveries not yet added to the metrics (added once per write, not per record).
    unreported: u64,
    keepalive: KeepAlive,
    expiry: Expiry,
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
        let keepalive = KeepAlive::new(state.config.keepalive_interval());
        let expiry = Expiry::new(options.expires_at);
        state.metrics.subscribers.inc();
        Self {
            rx,
            store: state.store.clone(),
            metrics: state.metrics.clone(),
            options,
            phase: Phase::Start,
            retry_ms: state.config.retry_ms,
            cursor: Cursor::default(),
            admission: Admission::default(),
            unreported: 0,
            keepalive,
            expiry,
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
            if !matches!(self.phase, Phase::Live) && self.shutdown.is_cancelled() {
                self.phase = Phase::Done;
            }
            let mut chunk = Gather::default();
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return None,
                Phase::Start => {
                    self.phase = Phase::Initial;
                    return Some(framing::retry(self.retry_ms));
                }
                Phase::Initial => {
                    if let Err(e) = self.begin(&mut chunk).await {
                        return Some(self.fail(&e));
                    }
                }
                Phase::Snapshot(mut snapshot) => {
                    if self.expiry.expired() {
                        return Some(self.end(EXPIRED));
                    }
                    let page = match snapshot.next_page(&*self.store).await {
                        Ok(page) => page,
                        Err(e) => return Some(self.fail(&e.to_string())),
                    };
                    for record in &page.records {
                        self.cursor.snapshot_seen(record.id);
                        self.send(record, &mut chunk);
                    }
                    if page.last {
                        self.put_synced(&mut chunk);
                        self.phase = Phase::Live;
                    } else {
                        self.phase = Phase::Snapshot(snapshot);
                    }
                }
                Phase::Replay { announce_synced } => {
                    // The caller must still be allowed: a stream that lagged past a revocation
                    // notice, or past its expiry, learns of it here, before any record
                    // committed after it.
                    let caller = &self.options.filter.caller;
                    if let Err(reason) = self.expiry.check(&*self.store, caller).await {
                        return Some(self.end_after(chunk, reason));
                    }
                    let page = match history::replay_page(&*self.store, self.cursor.at()).await {
                        Ok(page) => page,
                        Err(e) => return Some(self.fail(&e.to_string())),
                    };
                    for record in &page.records {
                        if self.cursor.pass(record.id)
                            && self.admission.record(&self.options, record)
                        {
                            self.send(record, &mut chunk);
                        }
                    }
                    if page.last {
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
                        Wake::Expired => return Some(self.end(EXPIRED)),
                        Wake::Message(Ok(_)) if self.expiry.expired() => {
                            return Some(self.end(EXPIRED));
                        }
                        Wake::KeepAlive => return Some(framing::keepalive()),
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
        let opening = history::open(&*self.store, &self.options.start, &self.options.filter)
            .await
            .map_err(|e| e.to_string())?;
        self.phase = match opening {
            Opening::Replay(after) => {
                self.cursor.resume_after(after);
                Phase::Replay {
                    announce_synced: true,
                }
            }
            Opening::Snapshot { unknown, snapshot } => {
                if let Some(raw) = unknown {
                    chunk.put(framing::reset(&raw));
                }
                Phase::Snapshot(snapshot)
            }
        };
        Ok(())
    }

    /// node-sse-server's opening: `registered`, one `lastEvent` per channel in the order asked
    /// for, then live (or, with a known `Last-Event-ID`, everything missed since, then live).
    async fn begin_compat(&mut self, chunk: &mut Gather) -> Result<(), String> {
        let channels = self.options.filter.requested().unwrap_or_default();
        let opening = history::open_compat(&*self.store, channels.clone(), &self.options.start)
            .await
            .map_err(|e| e.to_string())?;
        let client_id = self.options.client_id.as_deref().unwrap_or_default();
        chunk.put(framing::registered(client_id));
        let latest = &opening.latest;
        for channel in &channels {
            let newest = latest
                .iter()
                .filter(|r| &r.channel == channel)
                .max_by_key(|r| r.id);
            chunk.put(framing::last_event(channel, newest.map(|r| &**r)));
        }
        if let Some(after) = opening.replay_after {
            self.cursor.skip_to(after);
            self.phase = Phase::Replay {
                announce_synced: false,
            };
        } else {
            // Everything in these channels up to `seen` is summed up by the lastEvents; a
            // reconnecting EventSource resumes from there.
            let seen = latest.iter().map(|r| r.id).max().unwrap_or(0);
            self.cursor.skip_to(seen);
            chunk.put(framing::resume_point(seen));
            self.phase = Phase::Live;
        }
        Ok(())
    }

    /// Waits for the next hub message, the keep-alive period or the credentials' expiry.
    ///
    /// The hub comes first: a woken stream takes its message without touching its timers,
    /// which at ten thousand streams per commit is a measurable part of the fan-out. A busy
    /// stream checks its expiry with [`Expiry::expired`] instead.
    async fn wait(&mut self) -> Wake {
        let Self {
            rx,
            keepalive,
            expiry,
            ..
        } = self;
        tokio::select! {
            biased;
            message = rx.recv() => Wake::Message(message),
            () = expiry.fired() => Wake::Expired,
            () = keepalive.tick() => Wake::KeepAlive,
        }
    }

    /// Handles a hub message; returns a reason when the stream must end with an error frame
    /// (at shutdown it ends without one: the phase becomes [`Phase::Done`]).
    fn accept(&mut self, message: HubMessage, chunk: &mut Gather) -> Option<&'static str> {
        match message {
            HubMessage::Records(commit) => {
                if self.cursor.has_seen(&commit) {
                    // Already sent from the store (a replay ran ahead of the ring).
                    return None;
                }
                let loaded = commit.load();
                let records = loaded.as_deref();
                let seam = self.cursor.meet(&commit, records);
                let Some(records) = records else {
                    // Evicted by the hub's byte bound: this stream fell too far behind.
                    self.lagged();
                    return None;
                };
                if seam == Seam::Whole && self.admission.all(&self.options, records) {
                    // Caught up and allowed every record (the usual case): the commit's
                    // frames, joined once for every stream, go out as they are.
                    chunk.put(records.frames(self.options.format).clone());
                    self.cursor.sent_through(commit.last_id());
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
                    if self.cursor.pass(record.id) && self.admission.record(&self.options, record) {
                        self.send(record, chunk);
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
                expiry::revokes(&self.options.filter.caller, &user).then_some(expiry::REVOKED)
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
                        chunk.put(framing::end(self.options.format, reason));
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

    /// The stream fell behind the hub: it catches up from the store from its cursor.
    fn lagged(&mut self) {
        self.metrics.slow_subscribers.inc();
        self.phase = Phase::Replay {
            announce_synced: false,
        };
    }

    fn send(&mut self, record: &Record, chunk: &mut Gather) {
        chunk.put(framing::record(record, self.options.format));
        self.cursor.sent(record.id);
        self.unreported += 1;
    }

    fn report_deliveries(&mut self) {
        if self.unreported > 0 {
            self.metrics.deliveries.inc_by(self.unreported);
            self.unreported = 0;
        }
    }

    fn put_synced(&self, chunk: &mut Gather) {
        if let Some(frame) = framing::synced(self.options.format, self.cursor.last_sent()) {
            chunk.put(frame);
        }
    }

    fn end(&mut self, reason: &str) -> Bytes {
        self.phase = Phase::Done;
        framing::end(self.options.format, reason)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What every open stream holds must not grow unnoticed: 592 bytes on 64-bit targets
    /// before and after the state machine was split into its parts.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_stream_holds_no_more_than_before() {
        let size = std::mem::size_of::<Subscription>();
        assert!(size <= 592, "a Subscription grew to {size} bytes");
    }

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
