//! Live fan-out of committed records to every open stream.
//!
//! The hub is the store's [`CommitListener`]: each commit's records go, in id order and as one
//! message, into one bounded broadcast ring shared by all streams. A record is an `Arc` whose SSE
//! frame is encoded once and shared, and so is the whole commit's: a stream that may read every
//! record of a commit writes those shared bytes as they are, with no copy and no allocation.
//! One message per commit, not per record, matters at scale: every receive touches counters
//! that all subscribers share, so a commit of 20 records cost each of 10,000 subscribers 20
//! contended receives. A stream that falls more than the ring's capacity behind learns so from
//! the ring (`Lagged`) and catches up from the store; nobody waits for it, and it loses nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

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
    /// This user was revoked: their streams must end.
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
}

impl Hub {
    /// A hub whose ring holds `capacity` messages and which admits at most `max_streams` streams.
    pub fn new(capacity: usize, max_streams: u64) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            open_streams: Arc::new(AtomicU64::new(0)),
            max_streams,
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
}

impl CommitListener for Hub {
    fn committed(&self, records: &[Arc<Record>]) {
        if records.is_empty() {
            return;
        }
        // No receivers is fine: nobody is listening.
        let _ = self
            .tx
            .send(HubMessage::Records(Arc::new(Commit::new(records))));
    }
}

/// The records of one commit, in id order (never empty), with their frames joined once per
/// format for the streams that take them all.
#[derive(Debug)]
pub struct Commit {
    records: Box<[Arc<Record>]>,
    /// Whether every record is of the first record's channel.
    one_channel: bool,
    frames: [OnceLock<Bytes>; 3],
}

impl Commit {
    /// A commit of `records` (in id order).
    pub fn new(records: &[Arc<Record>]) -> Self {
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

    /// The id of the first record (0 for an empty commit).
    pub fn first_id(&self) -> u64 {
        self.records.first().map_or(0, |r| r.id)
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
        let commit = Commit::new(&[record(1, "a"), record(2, "a")]);
        assert_eq!(commit.channel(), Some("a"));
        assert_eq!(commit.first_id(), 1);
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

        let mixed = Commit::new(&[record(3, "a"), record(4, "b")]);
        assert_eq!(mixed.channel(), None);
        let single = Commit::new(&[record(5, "c")]);
        assert_eq!(single.channel(), Some("c"));
        assert_eq!(
            single.frames(Format::Native).as_ptr(),
            sse::record_frame(&single.records()[0], Format::Native).as_ptr(),
            "a commit of one record shares the record's frame"
        );
    }

    #[test]
    fn slots_are_bounded_and_released() {
        let hub = Hub::new(4, 2);
        let a = hub.open_stream().expect("first");
        let _b = hub.open_stream().expect("second");
        assert!(hub.open_stream().is_none());
        drop(a);
        assert_eq!(hub.open_streams(), 1);
        assert!(hub.open_stream().is_some());
    }
}
