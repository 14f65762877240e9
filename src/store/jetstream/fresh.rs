//! Fresh reads shared between concurrent callers.
//!
//! A thousand streams opening at once all ask JetStream the same questions (the stream's last
//! sequence, one user's account). [`FreshReads`] lets them share the answer without ever giving
//! a caller an answer older than its call: a caller may reuse a read only if that read *started
//! after the caller arrived*, so it reflects every write completed before the call, exactly as
//! a read of its own would. Reads of one key run one at a time; everyone who arrives while one
//! is in flight shares the next. However many callers arrive, a key costs at most one request
//! per round trip. Waiters are woken all at once when a read ends (a watch channel), not one
//! after another, so a thousand of them do not queue behind each other's wake-ups.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The last read of one key: the ticket taken when it started, and its answer.
type Last<V> = Option<(u64, Result<V, String>)>;

/// One key's reads.
struct Slot<V> {
    /// Whether a read is in flight.
    running: AtomicBool,
    /// The last read's answer; every waiter is woken at once when it changes.
    last: watch::Sender<Last<V>>,
}

/// Coalesced fresh reads, by key.
pub struct FreshReads<K, V> {
    /// Tickets order arrivals and read starts.
    tickets: AtomicU64,
    /// One slot per key being read; a slot is removed when its last caller leaves.
    slots: Mutex<HashMap<K, Arc<Slot<V>>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Default for FreshReads<K, V> {
    fn default() -> Self {
        Self {
            tickets: AtomicU64::new(0),
            slots: Mutex::new(HashMap::new()),
        }
    }
}

/// Lets the other callers of a key take over when a read in flight is dropped unfinished.
struct Running<'a, V>(&'a Slot<V>);

impl<V> Drop for Running<'_, V> {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
        // Wakes the waiters whether or not an answer was stored.
        self.0.last.send_modify(|_| {});
    }
}

impl<K: Eq + Hash + Clone, V: Clone> FreshReads<K, V> {
    /// The answer of a read of `key` that started after this call: `read` runs now, or
    /// another caller's run is shared. A failed read's error is shared the same way (as text).
    ///
    /// # Errors
    /// The error of the read whose answer this call takes.
    pub async fn read<F, Fut, E>(&self, key: K, read: F) -> Result<V, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: std::fmt::Display,
    {
        let arrived = self.tickets.fetch_add(1, Ordering::AcqRel);
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    running: AtomicBool::new(false),
                    last: watch::Sender::new(None),
                })
            })
            .clone();
        let mut rx = slot.last.subscribe();
        let answer = loop {
            if let Some((started, answer)) = &*rx.borrow_and_update()
                && *started > arrived
            {
                break answer.clone();
            }
            let lead = slot
                .running
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if lead {
                let running = Running(&slot);
                let started = self.tickets.fetch_add(1, Ordering::AcqRel);
                let answer = read().await.map_err(|e| e.to_string());
                slot.last.send_replace(Some((started, answer.clone())));
                drop(running);
                break answer;
            }
            // A read is in flight: wait for it (any change since the borrow above counts),
            // then take its answer if it started after this call, or lead the next one.
            if rx.changed().await.is_err() {
                break Err("the read was abandoned".to_owned());
            }
        };
        drop(rx);
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The map's reference and this caller's: nobody else waits on the slot.
        if Arc::strong_count(&slot) == 2 {
            slots.remove(&key);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn callers_arriving_together_share_reads_that_started_after_them() {
        let reads = Arc::new(FreshReads::<&str, u64>::default());
        // The value as of now: a read returns what `value` held when it started.
        let value = Arc::new(AtomicU64::new(0));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut callers = Vec::new();
        for i in 0..200u64 {
            let (reads, value, runs) = (reads.clone(), value.clone(), runs.clone());
            callers.push(tokio::spawn(async move {
                // Callers arrive over 100 ms; each write before a call must be seen by it.
                tokio::time::sleep(Duration::from_millis(i / 2)).await;
                value.fetch_add(1, Ordering::SeqCst);
                let written = value.load(Ordering::SeqCst);
                let got = reads
                    .read("k", || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let seen = value.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Ok::<_, String>(seen)
                    })
                    .await
                    .expect("read");
                assert!(
                    got >= written,
                    "a read older than the call: {got} < {written}"
                );
            }));
        }
        for caller in callers {
            caller.await.expect("caller");
        }
        let runs = runs.load(Ordering::SeqCst);
        assert!(
            runs <= 25,
            "200 callers over 100 ms with 10 ms reads take about one read per 10 ms, not {runs}"
        );
        assert!(reads.slots.lock().expect("slots").is_empty(), "slots freed");
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_shared_and_not_kept() {
        let reads = Arc::new(FreshReads::<u8, u8>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let slow_failure = {
            let (reads, runs) = (reads.clone(), runs.clone());
            tokio::spawn(async move {
                reads
                    .read(1, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Err::<u8, _>("timed out")
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Arrived during the failing read: waits for it, then reads afresh.
        let next = reads
            .read(1, || async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<u8, String>(7)
            })
            .await;
        assert_eq!(slow_failure.await.expect("task"), Err("timed out".into()));
        assert_eq!(next, Ok(7));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_dropped_unfinished_lets_a_waiter_read() {
        let reads = Arc::new(FreshReads::<u8, u8>::default());
        let leader = {
            let reads = reads.clone();
            tokio::spawn(async move {
                reads
                    .read(1, || async {
                        std::future::pending::<()>().await;
                        Ok::<u8, String>(0)
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        let waiter = {
            let reads = reads.clone();
            tokio::spawn(async move { reads.read(1, || async { Ok::<u8, String>(9) }).await })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        leader.abort();
        assert_eq!(waiter.await.expect("waiter"), Ok(9));
    }
}
