//! A subscriber that misbehaves on purpose and then proves it lost nothing: it stops reading
//! after its first bytes ([`Mode::Stall`]) or drops its connection every few seconds and
//! resumes with `Last-Event-ID` ([`Mode::Reconnect`]). Once the publishers are done it is
//! told the last acknowledged id and reads until it has it, reconnecting with the last id it
//! fully received whenever the server ends its stream. Its [`Tally`] of event ids is then
//! compared with the acknowledged ones.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::hostile::tracker::{Event, Scanner, Tally};
use crate::profile;
use crate::raw_http::{self, RawStream, StreamOptions};

/// Bytes read per call once reading (large events).
const READ_SIZE: usize = 64 * 1024;
/// Receive buffer asked for when a stalled subscriber resumes.
const RESUMED_RCVBUF: usize = 4 << 20;
/// Wait before reconnecting after the server refused a stream.
const RETRY_AFTER_REFUSAL: Duration = Duration::from_secs(1);

/// How the subscriber misbehaves until the run ends.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Reads up to `$synced`, then nothing until the run ends, with this receive buffer.
    Stall {
        /// `SO_RCVBUF`, bytes.
        rcvbuf: u32,
    },
    /// Reads, and reconnects with `Last-Event-ID` every `every` (times 0.5 to 1.5).
    Reconnect {
        /// Mean time between reconnections.
        every: Duration,
    },
}

/// The run's phase, as the coordinator tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The publishers are at work.
    Run,
    /// Publishing is over: read until this id (the last acknowledged).
    Finish {
        /// The last acknowledged id.
        target: u64,
    },
}

/// What a tracked subscriber shares with the coordinator.
#[derive(Debug, Default)]
pub struct Progress {
    /// Its first `$synced` has arrived.
    pub synced: AtomicBool,
    /// The id of that `$synced`: it must receive every acknowledged id after it.
    pub start: AtomicU64,
    /// It has read up to the target.
    pub done: AtomicBool,
    /// It gave up (see `error`).
    pub failed: AtomicBool,
    /// Why it failed.
    pub error: OnceLock<String>,
    /// Reconnections it chose to make.
    pub reconnects: AtomicU64,
    /// Streams the server ended (or broke) before the target was reached.
    pub cut_off: AtomicU64,
    /// Stream openings the server refused.
    pub refused: AtomicU64,
    /// Why the last of them was refused.
    pub last_refusal: Mutex<Option<String>>,
    /// The ids of the events it received.
    pub tally: Mutex<Tally>,
}

impl Progress {
    /// Its tally now.
    pub fn tally(&self) -> Tally {
        self.tally.lock().map(|t| *t).unwrap_or_default()
    }
}

/// Everything a tracked subscriber needs.
pub struct Tracked {
    /// Stream URL (`/events?channels=...`).
    pub url: reqwest::Url,
    /// Bearer token.
    pub token: Option<String>,
    /// Source address.
    pub local: Option<IpAddr>,
    /// How it misbehaves.
    pub mode: Mode,
    /// Shared counters.
    pub progress: Arc<Progress>,
    /// The coordinator's phase.
    pub phase: watch::Receiver<Phase>,
    /// A seed for its reconnection jitter.
    pub seed: u64,
}

/// Where a subscriber is in its stream.
#[derive(Debug, Default)]
struct Cursor {
    scanner: Scanner,
    /// The last id of a complete event: the resume point.
    last_id: Option<u64>,
    /// The first `$synced` has been seen (events before it are the snapshot).
    synced: bool,
    start: u64,
    tally: Tally,
    reset: bool,
}

impl Cursor {
    /// A new connection: whatever event the last one was cut off in the middle of is dropped
    /// (an `EventSource` never dispatches it either), and parsing starts afresh.
    fn reconnected(&mut self) {
        self.scanner = Scanner::default();
    }

    fn feed(&mut self, bytes: &[u8]) {
        let mut events = Vec::new();
        self.scanner.feed(bytes, |e| events.push(e));
        for e in events {
            self.event(e);
        }
    }

    fn event(&mut self, e: Event) {
        if e.name == "$reset" {
            self.reset = true;
        }
        if !self.synced {
            if e.name == "$synced" {
                self.synced = true;
                self.start = e.id.unwrap_or(0);
            }
        } else if e.name == profile::EVENT
            && let Some(id) = e.id
        {
            self.tally.add(id);
        }
        if let Some(id) = e.id {
            self.last_id = Some(id);
        }
    }
}

impl Tracked {
    /// Runs until it has the target id, fails, or is aborted.
    pub async fn run(mut self) {
        match self.stream().await {
            Ok(()) => self.progress.done.store(true, Ordering::Release),
            Err(e) => {
                let _ = self.progress.error.set(e);
                self.progress.failed.store(true, Ordering::Release);
            }
        }
    }

    async fn open(&self, cursor: &Cursor, rcvbuf: Option<u32>) -> Result<RawStream, String> {
        let options = StreamOptions {
            recv_buffer: rcvbuf,
            read_size: READ_SIZE,
            last_event_id: cursor.last_id.map(|id| id.to_string()),
        };
        loop {
            match raw_http::open_with(&self.url, self.local, self.token.as_deref(), &options).await
            {
                Ok(stream) => return Ok(stream),
                Err(e) if cursor.synced => {
                    // Refused (a 503 or 429 under attack): try again; the run's time limit
                    // ends the attempts.
                    self.progress.refused.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut last) = self.progress.last_refusal.lock() {
                        *last = Some(e);
                    }
                    tokio::time::sleep(RETRY_AFTER_REFUSAL).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads once into the cursor; `false` when the stream ended.
    async fn read(&self, stream: &mut RawStream, cursor: &mut Cursor) -> bool {
        let mut buf = Vec::new();
        let more = stream.read_into(&mut buf).await.unwrap_or(false);
        cursor.feed(&buf);
        if let Ok(mut t) = self.progress.tally.lock() {
            *t = cursor.tally;
        }
        more
    }

    async fn stream(&mut self) -> Result<(), String> {
        let rcvbuf = match self.mode {
            Mode::Stall { rcvbuf } => Some(rcvbuf),
            Mode::Reconnect { .. } => None,
        };
        let mut cursor = Cursor::default();
        let mut stream = self.open(&cursor, rcvbuf).await?;
        while !cursor.synced {
            if !self.read(&mut stream, &mut cursor).await {
                return Err("stream ended before $synced".into());
            }
        }
        self.progress.start.store(cursor.start, Ordering::Relaxed);
        self.progress.synced.store(true, Ordering::Release);
        match self.mode {
            Mode::Stall { .. } => {
                let _ = self
                    .phase
                    .wait_for(|p| matches!(p, Phase::Finish { .. }))
                    .await;
                let _ = stream.set_recv_buffer(RESUMED_RCVBUF);
            }
            Mode::Reconnect { every } => {
                let mut jitter = self.seed | 1;
                while *self.phase.borrow() == Phase::Run {
                    jitter ^= jitter << 13;
                    jitter ^= jitter >> 7;
                    jitter ^= jitter << 17;
                    let share = 0.5 + (jitter % 1000) as f64 / 1000.0;
                    let until = Instant::now() + every.mul_f64(share);
                    if !self.read_until(&mut stream, &mut cursor, until).await {
                        self.progress.cut_off.fetch_add(1, Ordering::Relaxed);
                    } else if *self.phase.borrow() != Phase::Run {
                        break;
                    } else {
                        self.progress.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(stream);
                    stream = self.open(&cursor, None).await?;
                    cursor.reconnected();
                }
            }
        }
        let target = match *self.phase.borrow() {
            Phase::Finish { target } => target,
            Phase::Run => return Err("no target".into()),
        };
        while cursor.last_id.is_none_or(|id| id < target) {
            if cursor.reset {
                return Err("the server sent $reset".into());
            }
            if !self.read(&mut stream, &mut cursor).await {
                self.progress.cut_off.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                stream = self.open(&cursor, None).await?;
                cursor.reconnected();
            }
        }
        if cursor.reset {
            return Err("the server sent $reset".into());
        }
        Ok(())
    }

    /// Reads until `until`, or the phase changes; `false` when the stream ended first.
    async fn read_until(
        &mut self,
        stream: &mut RawStream,
        cursor: &mut Cursor,
        until: Instant,
    ) -> bool {
        let mut phase = self.phase.clone();
        // Only a change from now on ends the wait: a phase set before this reconnection
        // (the run's start) must not end every wait at once.
        phase.borrow_and_update();
        loop {
            tokio::select! {
                more = self.read(stream, cursor) => if !more { return false },
                _ = tokio::time::sleep_until(until) => return true,
                _ = phase.changed() => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_cut_off_by_the_connection_is_not_counted() {
        let mut cursor = Cursor::default();
        cursor.feed(b"event: $synced\ndata: {\"id\":\"0\"}\nid: 0\n\n");
        cursor.feed(b"id: 1\nevent: bench\ndata: {}\n\nid: 2\nevent: bench\ndata: {\"lo");
        assert_eq!(cursor.last_id, Some(1));
        // The server closed mid-event; the client resumes from 1 on a new connection.
        cursor.reconnected();
        cursor.feed(b"retry: 2000\n\nid: 2\nevent: bench\ndata: {}\n\n");
        assert_eq!(cursor.tally.count, 2);
        assert_eq!(cursor.tally.out_of_order, 0, "event 2 counted once");
        assert_eq!(cursor.last_id, Some(2));
    }
}
