//! Live fan-out of committed records to every open stream.
//!
//! The hub is the store's [`CommitListener`]: each commit's records go, in id order and as one
//! message, into one bounded broadcast ring shared by all streams. A record is an `Arc` whose SSE
//! frame is encoded once and shared. One message per commit, not per record, matters at scale:
//! every receive touches counters that all subscribers share, so a commit of 20 records cost
//! each of 10,000 subscribers 20 contended receives. A stream that falls more than
//! the ring's capacity behind learns so from the ring (`Lagged`) and catches up from the store;
//! nobody waits for it, and it loses nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::store::{CommitListener, Record};

/// What travels through the hub.
#[derive(Debug, Clone)]
pub enum HubMessage {
    /// The records of one commit, in id order (never empty).
    Records(Arc<[Arc<Record>]>),
    /// This user was revoked: their streams must end.
    Revoked(Arc<str>),
    /// An `online-presence` frame for the node-sse-server streams.
    Presence(Bytes),
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

    /// Announces the connected client ids (a JSON array) to the node-sse-server streams.
    pub fn presence(&self, client_ids_json: &str) {
        let frame = crate::sse::compat_event(None, "online-presence", client_ids_json);
        let _ = self.tx.send(HubMessage::Presence(frame));
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
        let _ = self.tx.send(HubMessage::Records(Arc::from(records)));
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
