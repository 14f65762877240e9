//! Live fan-out of committed records to every open stream.
//!
//! The hub consumes the store's ordered commit feed as its [`CommitListener`]
//! ([`Store::feed`](crate::store::Store::feed)): each commit's records go, in id order and as one
//! message, into one bounded broadcast ring shared by all streams. A record is an `Arc` whose SSE
//! frame is encoded once and shared, and so is the whole commit's: a stream that may read every
//! record of a commit writes those shared bytes as they are, with no copy and no allocation.
//! One message per commit, not per record, matters at scale: every receive touches counters
//! that all subscribers share, so a commit of 20 records cost each of 10,000 subscribers 20
//! contended receives. A stream that falls more than the ring's capacity behind learns so from
//! the ring (`Lagged`) and catches up from the store; nobody waits for it, and it loses nothing.
//!
//! The ring is bounded in bytes too. A ring slot keeps its message until every stream has
//! taken it, so one stream that stops reading would otherwise pin the whole ring: 4,096
//! commits of 1 MiB each is 4 GiB. The hub remembers the sizes of the most recent commits, and
//! once more than `max_bytes` have been published after a commit, it drops that commit's
//! records ([`Commit::evict`]). The slot keeps only the commit's ids; a stream that reaches an
//! evicted commit catches up from the store from its cursor, exactly as after `Lagged`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};
use tokio::sync::broadcast;

use crate::presence::Snapshot;
use crate::sse::{self, Format};
use crate::store::{CommitListener, Record};

/// What travels through the hub.
#[derive(Debug, Clone)]
pub enum HubMessage {
    /// The records of one commit.
    Records(Arc<Commit>),
    /// This user's credentials changed (revoked, password changed): their streams must end.
    Revoked(Arc<str>),
    /// Who is connected, for the `online-presence` frames of the node-sse-server streams.
    Presence(Arc<Snapshot>),
    /// The server is shutting down: every stream ends.
    Shutdown,
}

/// The broadcast ring and the count of open streams.
pub struct Hub {
    tx: broadcast::Sender<HubMessage>,
    open_streams: Arc<AtomicU64>,
    max_streams: u64,
    /// The ring's capacity in messages.
    capacity: usize,
    /// Most bytes of records the ring may hold.
    max_bytes: usize,
    /// The most recent commits, newest last, for the byte bound.
    window: Mutex<Window>,
}

/// The commits that may still sit in ring slots, with their sizes.
#[derive(Default)]
struct Window {
    /// Weak: the window never keeps a commit alive by itself.
    commits: VecDeque<(Weak<Commit>, usize)>,
    bytes: usize,
}

impl Hub {
    /// A hub whose ring holds `capacity` messages and at most about `max_bytes` of records, and
    /// which admits at most `max_streams` streams.
    pub fn new(capacity: usize, max_bytes: usize, max_streams: u64) -> Self {
        let capacity = capacity.max(1);
        let (tx, _) = broadcast::channel(capacity);
        Self {
            tx,
            open_streams: Arc::new(AtomicU64::new(0)),
            max_streams,
            capacity,
            max_bytes,
            window: Mutex::new(Window::default()),
        }
    }

    /// Registers a new receiver; it sees every message published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HubMessage> {
        self.tx.subscribe()
    }

    /// Ends the open streams of `user`.
    pub fn revoke(&self, user: &str) {
        let _ = self.tx.send(HubMessage::Revoked(Arc::from(user)));
    }

    /// Ends every open stream. Streams learn it from the ring, in order after the records
    /// committed before it; one that has lagged past it sees the shutdown flag in its replay.
    pub fn shutdown(&self) {
        let _ = self.tx.send(HubMessage::Shutdown);
    }

    /// Announces who is connected to the node-sse-server streams.
    pub fn presence(&self, snapshot: Arc<Snapshot>) {
        let _ = self.tx.send(HubMessage::Presence(snapshot));
    }

    /// Reserves a stream slot, or `None` at `max_streams`. The slot frees itself when dropped.
    pub fn open_stream(&self) -> Option<StreamSlot> {
        let counter = self.open_streams.clone();
        let admitted = counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_streams).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| StreamSlot { counter })
    }

    /// Number of open streams.
    pub fn open_streams(&self) -> u64 {
        self.open_streams.load(Ordering::Acquire)
    }

    /// Adds `commit` to the window and evicts the records of the commits that the byte bound
    /// no longer covers. Returns how many were evicted.
    fn remember(&self, commit: &Arc<Commit>) -> usize {
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        window
            .commits
            .push_back((Arc::downgrade(commit), commit.bytes));
        window.bytes += commit.bytes;
        let mut evicted = 0;
        while window.commits.len() > 1
            && (window.commits.len() > self.capacity || window.bytes > self.max_bytes)
        {
            let Some((old, bytes)) = window.commits.pop_front() else {
                break;
            };
            window.bytes -= bytes;
            // Past the ring's capacity the slot is overwritten already; within it, the
            // records go and the slot keeps the ids.
            if let Some(old) = old.upgrade()
                && old.evict()
            {
                evicted += 1;
            }
        }
        evicted
    }
}

impl CommitListener for Hub {
    fn committed(&self, records: &[Arc<Record>]) {
        if records.is_empty() {
            return;
        }
        let commit = Arc::new(Commit::new(records));
        self.remember(&commit);
        // No receivers is fine: nobody is listening.
        let _ = self.tx.send(HubMessage::Records(commit));
    }
}

/// One commit as the ring carries it: its ids and size for good, its records until the byte
/// bound evicts them.
#[derive(Debug)]
pub struct Commit {
    first_id: u64,
    last_id: u64,
    bytes: usize,
    records: ArcSwapOption<CommitRecords>,
}

/// What [`Commit::load`] gives: the records, or `None` once evicted.
pub type LoadedRecords = arc_swap::Guard<Option<Arc<CommitRecords>>>;

impl Commit {
    /// A commit of `records` (in id order).
    pub fn new(records: &[Arc<Record>]) -> Self {
        let bytes = records.iter().map(|r| r.size()).sum();
        Self {
            first_id: records.first().map_or(0, |r| r.id),
            last_id: records.last().map_or(0, |r| r.id),
            bytes,
            records: ArcSwapOption::from_pointee(CommitRecords::new(records)),
        }
    }

    /// The id of the first record (0 for an empty commit).
    pub fn first_id(&self) -> u64 {
        self.first_id
    }

    /// The id of the last record (0 for an empty commit).
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// About how many bytes the records hold ([`Record::size`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The records, or `None` when the byte bound has evicted them: the reader must then catch
    /// up from the store.
    pub fn load(&self) -> LoadedRecords {
        self.records.load()
    }

    /// Drops the records (readers holding them keep theirs). Returns whether they were there.
    pub fn evict(&self) -> bool {
        self.records.swap(None).is_some()
    }
}

/// The records of one commit, in id order (never empty), with their frames joined once per
/// format for the streams that take them all.
#[derive(Debug)]
pub struct CommitRecords {
    records: Box<[Arc<Record>]>,
    /// Whether every record is of the first record's channel.
    one_channel: bool,
    frames: [OnceLock<Bytes>; crate::sse::FORMATS],
}

impl CommitRecords {
    fn new(records: &[Arc<Record>]) -> Self {
        let one_channel = records
            .windows(2)
            .all(|pair| pair[0].channel == pair[1].channel);
        Self {
            records: records.into(),
            one_channel,
            frames: Default::default(),
        }
    }

    /// The records, in id order.
    pub fn records(&self) -> &[Arc<Record>] {
        &self.records
    }

    /// The channel of every record, when they share one.
    pub fn channel(&self) -> Option<&str> {
        self.one_channel
            .then(|| self.records.first().map(|r| r.channel.as_str()))
            .flatten()
    }

    /// Every record's frame in `format`, joined: encoded by the first stream that asks and
    /// shared by the rest.
    pub fn frames(&self, format: Format) -> &Bytes {
        self.frames[format as usize].get_or_init(|| {
            if let [only] = &*self.records {
                return sse::record_frame(only, format).clone();
            }
            let frames: Vec<&Bytes> = self
                .records
                .iter()
                .map(|r| sse::record_frame(r, format))
                .collect();
            let mut joined = BytesMut::with_capacity(frames.iter().map(|f| f.len()).sum());
            for frame in frames {
                joined.extend_from_slice(frame);
            }
            joined.freeze()
        })
    }
}

/// A reserved stream slot, released on drop.
#[derive(Debug)]
pub struct StreamSlot {
    counter: Arc<AtomicU64>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, channel: &str) -> Arc<Record> {
        Arc::new(Record::new(
            id,
            channel.to_owned(),
            "e".to_owned(),
            id,
            None,
            serde_json::value::RawValue::from_string(format!("{id}")).expect("JSON"),
        ))
    }

    #[test]
    fn a_commit_joins_its_frames_once_per_format() {
        let whole = Commit::new(&[record(1, "a"), record(2, "a")]);
        assert_eq!((whole.first_id(), whole.last_id()), (1, 2));
        let loaded = whole.load();
        let commit = loaded.as_deref().expect("records");
        assert_eq!(commit.channel(), Some("a"));
        let joined = commit.frames(Format::Native);
        let expected = [
            sse::record_frame(&commit.records()[0], Format::Native).clone(),
            sse::record_frame(&commit.records()[1], Format::Native).clone(),
        ]
        .concat();
        assert_eq!(&joined[..], &expected[..]);
        assert_eq!(
            commit.frames(Format::Native).as_ptr(),
            joined.as_ptr(),
            "encoded once, then shared"
        );
        assert_ne!(commit.frames(Format::Envelope), joined);

        let mixed = CommitRecords::new(&[record(3, "a"), record(4, "b")]);
        assert_eq!(mixed.channel(), None);
        let single = CommitRecords::new(&[record(5, "c")]);
        assert_eq!(single.channel(), Some("c"));
        assert_eq!(
            single.frames(Format::Native).as_ptr(),
            sse::record_frame(&single.records()[0], Format::Native).as_ptr(),
            "a commit of one record shares the record's frame"
        );
    }

    #[test]
    fn the_ring_is_bounded_in_bytes() {
        let size = record(1, "a").size();
        let hub = Hub::new(100, 3 * size, 10);
        let mut rx = hub.subscribe();
        for id in 1..=5 {
            hub.committed(&[record(id, "a")]);
        }
        let mut kept = Vec::new();
        while let Ok(HubMessage::Records(commit)) = rx.try_recv() {
            kept.push((commit.first_id(), commit.load().is_some()));
        }
        assert_eq!(
            kept,
            vec![(1, false), (2, false), (3, true), (4, true), (5, true)],
            "only the newest 3 records' worth is kept; older slots keep just their ids"
        );
        // One commit larger than the bound is still published whole.
        let hub = Hub::new(100, 1, 10);
        let mut rx = hub.subscribe();
        hub.committed(&[record(1, "a"), record(2, "a")]);
        match rx.try_recv() {
            Ok(HubMessage::Records(commit)) => assert!(commit.load().is_some()),
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[test]
    fn the_window_does_not_keep_commits_alive() {
        let hub = Hub::new(100, usize::MAX, 10);
        let mut rx = hub.subscribe();
        let record = record(1, "a");
        hub.committed(std::slice::from_ref(&record));
        assert_eq!(
            Arc::strong_count(&record),
            2,
            "the test's and the ring slot's"
        );
        drop(rx.try_recv().expect("the commit"));
        assert_eq!(
            Arc::strong_count(&record),
            1,
            "once every receiver has taken it, only the window remembers it, weakly"
        );
    }

    #[test]
    fn slots_are_bounded_and_released() {
        let hub = Hub::new(4, usize::MAX, 2);
        let a = hub.open_stream().expect("first");
        let _b = hub.open_stream().expect("second");
        assert!(hub.open_stream().is_none());
        drop(a);
        assert_eq!(hub.open_streams(), 1);
        assert!(hub.open_stream().is_some());
    }
}
