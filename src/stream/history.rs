//! A stream's history from the store: where it starts, the snapshot's pages and the replay's.
//!
//! A snapshot is the ids of the latest version of every event the stream may read, as of one
//! point in time (rule 5 of [`Store`]), sent page by page; a replay is every record after an
//! id, read page by page in id order with nothing skipped (rule 6). Both are bounded in bytes
//! per page, and the pages of every stream together are bounded by a process-wide permit, so
//! that a hundred streams resuming at once hold a few pages, not a hundred.

use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::store::{Record, Store, StoreError};

use super::options::{ChannelFilter, Start};

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
static CATCH_UP: Semaphore = Semaphore::const_new(CATCH_UP_READS);

/// How a native stream's history begins.
pub(super) enum Opening {
    /// Every record after this known id.
    Replay(u64),
    /// A snapshot, after a `$reset` for the unknown `Last-Event-ID` when there is one.
    Snapshot {
        /// The `Last-Event-ID` the store does not know.
        unknown: Option<String>,
        /// The snapshot.
        snapshot: Snapshot,
    },
}

/// Decides between replay and snapshot for a stream starting at `start`, and takes the
/// snapshot's ids when it is one. An id newer than the store's last, or older than the history
/// it holds, is unknown.
pub(super) async fn open(
    store: &dyn Store,
    start: &Start,
    filter: &ChannelFilter,
) -> Result<Opening, StoreError> {
    let unknown = match start {
        Start::Snapshot => None,
        Start::Unknown(raw) => Some(raw.clone()),
        Start::After(id) => {
            if known(store, *id).await? {
                return Ok(Opening::Replay(*id));
            }
            Some(id.to_string())
        }
    };
    let readable = filter.clone();
    let ids = store
        .latest_ids(
            filter.requested(),
            Arc::new(move |channel| readable.allows(channel)),
        )
        .await?;
    Ok(Opening::Snapshot {
        unknown,
        snapshot: Snapshot { ids, done: 0 },
    })
}

/// Whether the store can replay everything after `id`: not newer than its last record, and
/// not older than the history it still holds.
async fn known(store: &dyn Store, id: u64) -> Result<bool, StoreError> {
    Ok(id <= store.last_id().await? && id.saturating_add(1) >= store.oldest_id().await?)
}

/// How a node-sse-server stream's history begins: the newest record of each channel asked
/// for, then either every record after a known `Last-Event-ID` or live from those newest.
pub(super) struct CompatOpening {
    /// The newest record of each channel that has one.
    pub(super) latest: Vec<Arc<Record>>,
    /// The known `Last-Event-ID` to replay after, if any.
    pub(super) replay_after: Option<u64>,
}

/// Reads what a node-sse-server stream of `channels` starting at `start` opens with.
pub(super) async fn open_compat(
    store: &dyn Store,
    channels: Vec<String>,
    start: &Start,
) -> Result<CompatOpening, StoreError> {
    let latest = store.latest(Some(channels)).await?;
    let replay_after = match *start {
        Start::After(id) => known(store, id).await?.then_some(id),
        _ => None,
    };
    Ok(CompatOpening {
        latest,
        replay_after,
    })
}

/// The ids of a snapshot, and how many of them are sent.
pub(super) struct Snapshot {
    ids: Vec<u64>,
    done: usize,
}

impl Snapshot {
    /// Reads the next page: the records of the next ids in order (ids that name no record
    /// are skipped), at most [`SNAPSHOT_CHUNK`] of them and about [`PAGE_BYTES`]. The page is
    /// the last one when every id has been read.
    pub(super) async fn next_page(&mut self, store: &dyn Store) -> Result<Page, StoreError> {
        let reading = CATCH_UP.acquire().await.ok();
        let rest = &self.ids[self.done..];
        let wanted = rest.iter().take(SNAPSHOT_CHUNK).copied().collect();
        let page = store.records(wanted, PAGE_BYTES).await?;
        // The page is a prefix of the ids asked for (missing ones skipped).
        self.done = match page.last() {
            Some(last) => rest
                .iter()
                .position(|&id| id == last.id)
                .map_or(self.ids.len(), |at| self.done + at + 1),
            None => (self.done + SNAPSHOT_CHUNK).min(self.ids.len()),
        };
        Ok(Page {
            records: page,
            last: self.done >= self.ids.len(),
            _reading: reading,
        })
    }
}

/// One page of a snapshot or a replay, holding its share of [`CATCH_UP_READS`] until it is
/// dropped (after its records are framed).
pub(super) struct Page {
    /// The records, in id order.
    pub(super) records: Vec<Arc<Record>>,
    /// Whether nothing comes after it (a full replay page may have more after it).
    pub(super) last: bool,
    /// The permit (never closed, so acquiring it only waits).
    _reading: Option<SemaphorePermit<'static>>,
}

/// Reads the page of records after `after`, every channel.
pub(super) async fn replay_page(store: &dyn Store, after: u64) -> Result<Page, StoreError> {
    let reading = CATCH_UP.acquire().await.ok();
    let records = store.since(after, REPLAY_PAGE, PAGE_BYTES).await?;
    let bytes: usize = records.iter().map(|r| r.size()).sum();
    let last =
        records.len() < REPLAY_PAGE && !crate::store::page_full(records.len(), bytes, PAGE_BYTES);
    Ok(Page {
        records,
        last,
        _reading: reading,
    })
}
