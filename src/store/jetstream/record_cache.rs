//! Records read from JetStream by id, shared between the streams that need them.
//!
//! A record never changes once stored, so a read of it can be shared without any question of
//! freshness: when a thousand new streams send the same snapshot, the first one to ask for a
//! record reads it, the others wait for that read, and later ones find it here. Older records
//! make way for newer ones once the cache holds more than its bound in bytes.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::store::{Record, StoreError};

type Cell = Arc<OnceCell<Option<Arc<Record>>>>;

/// The cache: see the module's documentation.
pub struct RecordCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

#[derive(Default)]
struct Inner {
    cells: HashMap<u64, Cell>,
    /// Ids in the order they were added, for eviction (oldest first).
    order: VecDeque<u64>,
    /// Bytes of the records held ([`Record::size`]).
    bytes: usize,
}

impl Inner {
    fn evict(&mut self, max_bytes: usize) {
        while self.bytes > max_bytes {
            let Some(id) = self.order.pop_front() else {
                break;
            };
            if let Some(cell) = self.cells.remove(&id)
                && let Some(Some(record)) = cell.get()
            {
                self.bytes -= record.size();
            }
        }
    }
}

impl RecordCache {
    /// A cache that keeps about `max_bytes` of records.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds records already read (the cut read when the feed starts).
    pub fn put(&self, records: &[Arc<Record>]) {
        let mut inner = self.lock();
        for record in records {
            if inner.cells.contains_key(&record.id) {
                continue;
            }
            let cell = Arc::new(OnceCell::new_with(Some(Some(record.clone()))));
            inner.cells.insert(record.id, cell);
            inner.order.push_back(record.id);
            inner.bytes += record.size();
        }
        inner.evict(self.max_bytes);
    }

    /// The record with `id`: from the cache, from a read in flight, or read now with `read`.
    /// A failed read is not kept; the next caller tries again.
    ///
    /// # Errors
    /// The read's.
    pub async fn get<F, Fut>(&self, id: u64, read: F) -> Result<Option<Arc<Record>>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Arc<Record>>, StoreError>>,
    {
        let cell = {
            let mut inner = self.lock();
            match inner.cells.get(&id) {
                Some(cell) => cell.clone(),
                None => {
                    let cell = Cell::default();
                    inner.cells.insert(id, cell.clone());
                    inner.order.push_back(id);
                    cell
                }
            }
        };
        let record = cell
            .get_or_try_init(|| async {
                let record = read().await?;
                if let Some(record) = &record {
                    let mut inner = self.lock();
                    // Counted only while the cache still holds this cell.
                    if inner.cells.get(&id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                        inner.bytes += record.size();
                        inner.evict(self.max_bytes);
                    }
                }
                Ok::<_, StoreError>(record)
            })
            .await?;
        Ok(record.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn record(id: u64) -> Arc<Record> {
        Arc::new(Record::new(
            id,
            "c".into(),
            "e".into(),
            id,
            None,
            serde_json::value::RawValue::from_string(id.to_string()).expect("JSON"),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_readers_of_one_record_share_one_read() {
        let cache = Arc::new(RecordCache::new(usize::MAX));
        let reads = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..100)
            .map(|_| {
                let (cache, reads) = (cache.clone(), reads.clone());
                tokio::spawn(async move {
                    cache
                        .get(7, || async {
                            reads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            Ok(Some(record(7)))
                        })
                        .await
                })
            })
            .collect();
        for reader in readers {
            let got = reader.await.expect("reader").expect("read");
            assert_eq!(got.map(|r| r.id), Some(7));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failures_are_not_kept_and_old_records_make_way() {
        let size = record(1).size();
        let cache = RecordCache::new(2 * size);
        let failed = cache
            .get(1, || async { Err(StoreError::Unavailable("down".into())) })
            .await;
        assert!(failed.is_err());
        let got = cache.get(1, || async { Ok(Some(record(1))) }).await;
        assert_eq!(got.expect("read").map(|r| r.id), Some(1));
        cache.put(&[record(2), record(3)]);
        // 1 was the oldest: read again.
        let reads = AtomicUsize::new(0);
        let again = cache
            .get(1, || async {
                reads.fetch_add(1, Ordering::SeqCst);
                Ok(Some(record(1)))
            })
            .await;
        assert!(again.is_ok());
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        let kept = cache
            .get(3, || async {
                Err(StoreError::Backend("3 is cached".into()))
            })
            .await
            .expect("cached");
        assert_eq!(kept.map(|r| r.id), Some(3));
    }
}
