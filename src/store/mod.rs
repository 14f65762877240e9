//! Durable storage of records and users, behind the [`Store`] trait.
//!
//! The HTTP layer only ever talks to a `dyn Store`, so backends are interchangeable: today the
//! embedded `redb` store ([`embedded`]) and the NATS JetStream store of cluster mode
//! ([`jetstream`]). Every implementation must pass the conformance suite in
//! `conformance.rs`, and keep the rules stated on [`Store`].
//!
//! The backend owns the ordered feed of commits: the hub does not construct the store, it
//! consumes the store's feed ([`Store::feed`]). The embedded store delivers it in-process from
//! its writer thread, right after the appends are acknowledged, so a publisher's answer never
//! waits for the fan-out to thousands of streams; a shared backend delivers every node's commits
//! through one ordered reader per node. That single ordered feed is what the live streams are
//! built on; a stream that opens in between finds the record in the store instead.

pub mod embedded;
pub mod jetstream;

#[cfg(test)]
pub(crate) mod conformance;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One stored version of an event. Immutable once committed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    /// Position in the global commit order (strictly increasing, starts at 1).
    pub id: u64,
    /// Channel the record was published to.
    pub channel: String,
    /// Event name.
    pub event: String,
    /// Commit time in microseconds since the Unix epoch; unique per record.
    pub timestamp: u64,
    /// User who inserted it (`None` when authentication is off and the caller was anonymous).
    pub user: Option<String>,
    /// The event's data: compact JSON (one line).
    pub data: Box<RawValue>,
    /// SSE frames of this record, encoded at most once and shared by every subscriber, one per
    /// [`crate::sse::Format`].
    #[serde(skip)]
    pub(crate) frames: [OnceLock<Bytes>; crate::sse::FORMATS],
    /// The record seen as a Mercure update, decoded at most once ([`crate::mercure::update::of`]).
    #[serde(skip)]
    pub(crate) mercure: OnceLock<Arc<crate::mercure::update::Update>>,
}

impl Record {
    /// Roughly how many bytes the record holds in memory (its data, names and fixed fields):
    /// what byte-bounded pages and the hub's live window count.
    pub fn size(&self) -> usize {
        self.data.get().len() + self.channel.len() + self.event.len() + RECORD_OVERHEAD
    }

    /// A record as a store builds it after assigning id and timestamp.
    pub fn new(
        id: u64,
        channel: String,
        event: String,
        timestamp: u64,
        user: Option<String>,
        data: Box<RawValue>,
    ) -> Self {
        Self {
            id,
            channel,
            event,
            timestamp,
            user,
            data,
            frames: Default::default(),
            mercure: OnceLock::new(),
        }
    }
}

/// Bytes counted for a record beyond its data and names (id, timestamp, user, allocations).
const RECORD_OVERHEAD: usize = 128;

/// Which channels a read may return, as a caller's permissions decide.
pub type ChannelPredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Whether a page that holds `bytes` already is full: pages stop once they reach `max_bytes`,
/// but always hold at least one record, so that a record larger than the bound still moves.
pub fn page_full(records: usize, bytes: usize, max_bytes: usize) -> bool {
    records > 0 && bytes >= max_bytes
}

/// An event to append: the store assigns its id and timestamp.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Target channel (already validated).
    pub channel: String,
    /// Event name (already validated).
    pub event: String,
    /// Inserting user, if any.
    pub user: Option<String>,
    /// Compact JSON data.
    pub data: Box<RawValue>,
}

/// A user account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Unique name (`^[A-Za-z0-9_.@-]{1,64}$`).
    pub username: String,
    /// Argon2 hash in PHC string format.
    pub password_hash: String,
    /// Admins may do everything, including managing users.
    #[serde(default)]
    pub admin: bool,
    /// Channel patterns the user may read.
    pub read: Vec<String>,
    /// Channel patterns the user may write.
    pub write: Vec<String>,
    /// Creation time, microseconds since the Unix epoch.
    pub created_at: u64,
    /// A revoked user can no longer authenticate; the name stays taken.
    #[serde(default)]
    pub revoked: bool,
    /// Tokens carry the generation they were issued at and are accepted only while it is the
    /// user's current one: a password change or an `--admin` reset moves to the next.
    #[serde(default)]
    pub token_generation: u64,
    /// The optional second factor (TOTP), pending or active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<crate::auth::totp::TotpState>,
}

/// One channel as the admin API lists it (`GET /channels`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelSummary {
    /// Channel name.
    pub channel: String,
    /// Records stored in it, every version of every event.
    pub records: u64,
    /// Distinct event names in it.
    pub events: u64,
    /// Id of its newest record.
    pub last_id: u64,
    /// Timestamp of its newest record (microseconds since the Unix epoch): its last activity.
    pub last_timestamp: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing to create exists already.
    #[error("{0}")]
    Conflict(String),
    /// The store is closed (shutting down).
    #[error("store is closed")]
    Closed,
    /// The underlying storage failed.
    #[error("storage error: {0}")]
    Backend(String),
    /// The storage cannot be reached right now (cluster mode: NATS); worth retrying.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The consumer of a store's commit feed (the hub): receives every committed batch of records, in
/// id order, once they are durable (just after the appends are acknowledged).
pub trait CommitListener: Send + Sync + 'static {
    /// Called once per commit with the new records in id order.
    fn committed(&self, records: &[Arc<Record>]);
}

/// Where records and users live. Implementations must be safe to share between tasks.
///
/// # The rules every backend keeps
/// The streams' no-gap, no-duplicate promise rests on these; the conformance suite checks them.
///
/// 1. **Ids are one global order.** A record's id is its position in the commit order of the
///    whole deployment (every node of a cluster agrees on it), strictly increasing from 1, so a
///    `Last-Event-ID` issued by one node resumes on any other.
/// 2. **A batch is atomic and contiguous.** [`Store::append`] stores all of a batch or none of
///    it, and its records get consecutive ids: no other record ever falls between them, and no
///    reader (page, snapshot, feed) ever sees part of a batch.
/// 3. **Timestamps are unique.** Per (channel, event) a record's timestamp is unique and
///    increases with its id (the audit log's keys `{event}_v_{timestamp}` depend on it).
/// 4. **Durable before answered.** `append` returns only once the records survive a crash of
///    this process (the embedded store: fsync; a replicated backend: the quorum's ack).
/// 5. **A snapshot is one point in time.** [`Store::latest_ids`] (and [`Store::latest`]) describe
///    the store as of a single id `N`: the latest version of each event among records `<= N`,
///    with nothing newer mixed in, so that the live feed from `N + 1` on meets it with no gap
///    and no duplicate.
/// 6. **`since` never skips.** [`Store::since`] returns the records after `after` with no id
///    left out. A backend that no longer holds the history after `after` must not return the
///    ids after the hole as if nothing were missing: it must tell its caller, so that the stream
///    sends `$reset` and a fresh snapshot instead of a replay with a gap. A cursor older than
///    [`Store::oldest_id`] (history removed, say by a JetStream purge or age limit) or newer
///    than [`Store::last_id`] is unknown, and answered with `$reset`; a hole found during a
///    replay is an error, never skipped.
/// 7. **The feed sees every commit, in id order, once.** The [`CommitListener`] given to
///    [`Store::feed`] is told of every commit made after it was attached, by any node of the
///    deployment, each record once, in id order and with batches whole; a record is
///    readable from the store before (or as) the feed reports it.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Attaches the one consumer of the ordered commit feed (the hub): every commit from now on
    /// is reported to it as rule 7 says. Called once, before the store takes writes.
    ///
    /// # Errors
    /// When a consumer is attached already, or the backend cannot start its reader.
    async fn feed(&self, sink: Arc<dyn CommitListener>) -> Result<(), StoreError>;

    /// Appends a batch atomically (all or none) and returns the records once they are durable.
    async fn append(&self, batch: Vec<NewRecord>) -> Result<Vec<Arc<Record>>, StoreError>;

    /// Id of the newest record, 0 when empty.
    async fn last_id(&self) -> Result<u64, StoreError>;

    /// Id of the oldest record the store still holds the history from: a replay may start
    /// after any id from `oldest_id() - 1` on, and an older `Last-Event-ID` is unknown (rule
    /// 6). 1, the default, for a store that keeps every record ever written.
    async fn oldest_id(&self) -> Result<u64, StoreError> {
        Ok(1)
    }

    /// Latest version of every (channel, event), restricted to `channels` when given, in id order.
    async fn latest(&self, channels: Option<Vec<String>>) -> Result<Vec<Arc<Record>>, StoreError>;

    /// Latest version of one (channel, event).
    async fn latest_of(
        &self,
        channel: &str,
        event: &str,
    ) -> Result<Option<Arc<Record>>, StoreError>;

    /// Ids of the latest version of every (channel, event) whose channel is in `channels` (when
    /// given) and passes `readable`, in id order, as of one point in time. Ids rather than
    /// records, so that a snapshot of many events costs 8 bytes each until it is sent, page by
    /// page, with [`Store::records`].
    async fn latest_ids(
        &self,
        channels: Option<Vec<String>>,
        readable: ChannelPredicate,
    ) -> Result<Vec<u64>, StoreError>;

    /// The records with these ids, in the order given, stopping once the page holds `max_bytes`
    /// ([`page_full`]): a prefix of `ids`. Ids that name no record are skipped.
    async fn records(
        &self,
        ids: Vec<u64>,
        max_bytes: usize,
    ) -> Result<Vec<Arc<Record>>, StoreError>;

    /// Up to `limit` records with an id greater than `after`, in id order, every channel, and
    /// no more than `max_bytes` ([`page_full`]).
    async fn since(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Arc<Record>>, StoreError>;

    /// Up to `limit` versions of one (channel, event) with an id greater than `after`, oldest
    /// first, and no more than `max_bytes` ([`page_full`]).
    async fn versions(
        &self,
        channel: &str,
        event: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Arc<Record>>, StoreError>;

    /// Creates a user; [`StoreError::Conflict`] when the name is taken.
    async fn create_user(&self, user: User) -> Result<(), StoreError>;

    /// Creates or replaces a user.
    async fn put_user(&self, user: User) -> Result<(), StoreError>;

    /// Looks a user up by name.
    async fn user(&self, username: &str) -> Result<Option<User>, StoreError>;

    /// Every username, sorted (revoked users too): the admin API pages through them.
    async fn usernames(&self) -> Result<Vec<String>, StoreError>;

    /// Every channel that holds a record, sorted by name, with its counts and last activity.
    async fn channels(&self) -> Result<Vec<ChannelSummary>, StoreError>;

    /// Whether the backend is reachable now (`/ready` answers 503 when it is not).
    fn healthy(&self) -> bool {
        true
    }

    /// Finishes queued writes and closes; later calls fail with [`StoreError::Closed`].
    async fn close(&self);
}
