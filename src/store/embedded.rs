//! The embedded store: one `redb` file, with group commit.
//!
//! A single writer thread owns every write transaction. It drains whatever appends are queued into
//! one transaction and one fsync, answers the callers, then reports the new records to the
//! [`CommitListener`] in id order: an acknowledged append is on disk, and every subscriber sees
//! records in commit order. Reads run on Tokio's blocking pool against MVCC snapshots and never
//! wait for the writer.
//!
//! Tables:
//! - `records`: id → record (JSON)
//! - `latest`: (channel, event) → id of the latest version
//! - `versions`: (channel, event, id) → () — every version, in order
//! - `users`: username → user (JSON)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::{
    ChannelPredicate, ChannelSummary, CommitListener, NewRecord, Record, Store, StoreError, User,
    now_micros, page_full,
};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const LATEST: TableDefinition<(&str, &str), u64> = TableDefinition::new("latest");
const VERSIONS: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("versions");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");

/// Most queued operations that share one commit.
const MAX_OPS_PER_COMMIT: usize = 4096;

/// The page cache of a database opened without a size: redb's own default is 1 GiB, which
/// a client inserting large events could fill, all of it resident.
pub const DEFAULT_CACHE: usize = 64 * 1024 * 1024;

/// File name of the database inside the `--db` directory.
pub const DB_FILE: &str = "broker.redb";

fn backend(err: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(err.into().to_string())
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Work for the writer thread.
enum Op {
    Append {
        batch: Vec<NewRecord>,
        reply: Reply<Vec<Arc<Record>>>,
    },
    PutUser {
        user: User,
        create: bool,
        reply: Reply<()>,
    },
}

/// The redb-backed [`Store`].
pub struct EmbeddedStore {
    /// `None` once closed, so the file is released and can be reopened.
    db: std::sync::RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    writer: Mutex<Option<std_mpsc::Sender<Op>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    users: UserCache,
    feed: Feed,
}

/// The consumer of the commit feed, once attached: the writer thread tells it of each commit
/// in-process, at the cost of one atomic load.
type Feed = Arc<OnceLock<Arc<dyn CommitListener>>>;

/// Users already read or written, so authenticating a request needs no database read.
/// Only existing users are kept (bounded by the accounts there are). The writer puts every
/// committed user in; a reader only adds one that is missing, so a read that raced a commit
/// can never replace the newer version.
type UserCache = Arc<std::sync::RwLock<HashMap<String, User>>>;

impl EmbeddedStore {
    /// Opens (or creates) the database in directory `dir` and starts its writer thread.
    ///
    /// # Errors
    /// When the directory cannot be created, the file is locked by another process, or is corrupt.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE)
    }

    /// Opens the database like [`EmbeddedStore::open`], with a page cache of `cache_bytes`.
    ///
    /// # Errors
    /// As [`EmbeddedStore::open`].
    pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create database directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(DB_FILE);
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Backend(format!(
                    "database {} is already in use by another process",
                    path.display()
                )),
                other => {
                    StoreError::Backend(format!("cannot open database {}: {other}", path.display()))
                }
            })?;
        let txn = db.begin_write().map_err(backend)?;
        {
            txn.open_table(RECORDS).map_err(backend)?;
            txn.open_table(LATEST).map_err(backend)?;
            txn.open_table(VERSIONS).map_err(backend)?;
            txn.open_table(USERS).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        let db = Arc::new(db);
        let users = UserCache::default();
        let feed = Feed::default();
        let mut writer = Writer::load(db.clone(), feed.clone(), users.clone())?;
        let (tx, rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("broker-store-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            db: std::sync::RwLock::new(Some(db)),
            path,
            writer: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            users,
            feed,
        })
    }

    /// Attaches the consumer of the commit feed ([`Store::feed`]) without awaiting anything.
    ///
    /// # Errors
    /// When a consumer is attached already.
    pub fn attach_feed(&self, sink: Arc<dyn CommitListener>) -> Result<(), StoreError> {
        self.feed
            .set(sink)
            .map_err(|_| StoreError::Backend("the commit feed has a consumer already".into()))
    }

    /// Opens the database like [`EmbeddedStore::open`] with `sink` consuming its commit feed.
    ///
    /// # Errors
    /// As [`EmbeddedStore::open`].
    pub fn open_feeding(dir: &Path, sink: Arc<dyn CommitListener>) -> Result<Self, StoreError> {
        let store = Self::open(dir)?;
        store.attach_feed(sink)?;
        Ok(store)
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        let guard = self.writer.lock().map_err(|_| StoreError::Closed)?;
        guard
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(op)
            .map_err(|_| StoreError::Closed)
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self
            .db
            .read()
            .ok()
            .and_then(|db| db.clone())
            .ok_or(StoreError::Closed)?;
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

fn decode_record(bytes: &[u8]) -> Result<Arc<Record>, StoreError> {
    serde_json::from_slice::<Record>(bytes)
        .map(Arc::new)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The records `found` yields until the page is full ([`page_full`]). The iterator is lazy,
/// so nothing past the page is read or decoded.
fn collect_page(
    mut found: impl Iterator<Item = Result<Arc<Record>, StoreError>>,
    max_bytes: usize,
) -> Result<Vec<Arc<Record>>, StoreError> {
    let (mut page, mut bytes) = (Vec::new(), 0);
    while !page_full(page.len(), bytes, max_bytes) {
        let Some(record) = found.next() else { break };
        let record = record?;
        bytes += record.size();
        page.push(record);
    }
    Ok(page)
}

fn get_record(
    table: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Arc<Record>, StoreError> {
    let guard = table
        .get(id)
        .map_err(backend)?
        .ok_or_else(|| StoreError::Corrupt(format!("record {id} is indexed but missing")))?;
    decode_record(guard.value())
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn feed(&self, sink: Arc<dyn CommitListener>) -> Result<(), StoreError> {
        self.attach_feed(sink)
    }

    async fn append(&self, batch: Vec<NewRecord>) -> Result<Vec<Arc<Record>>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.send(Op::Append { batch, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn last_id(&self) -> Result<u64, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(RECORDS).map_err(backend)?;
            Ok(table.last().map_err(backend)?.map_or(0, |(k, _)| k.value()))
        })
        .await
    }

    async fn latest(&self, channels: Option<Vec<String>>) -> Result<Vec<Arc<Record>>, StoreError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let latest = txn.open_table(LATEST).map_err(backend)?;
            let records = txn.open_table(RECORDS).map_err(backend)?;
            let mut ids = Vec::new();
            match channels {
                None => {
                    for entry in latest.iter().map_err(backend)? {
                        ids.push(entry.map_err(backend)?.1.value());
                    }
                }
                Some(channels) => {
                    for channel in &channels {
                        for entry in latest.range((channel.as_str(), "")..).map_err(backend)? {
                            let (key, id) = entry.map_err(backend)?;
                            if key.value().0 != channel.as_str() {
                                break;
                            }
                            ids.push(id.value());
                        }
                    }
                }
            }
            ids.sort_unstable();
            ids.dedup();
            ids.into_iter().map(|id| get_record(&records, id)).collect()
        })
        .await
    }

    async fn latest_of(
        &self,
        channel: &str,
        event: &str,
    ) -> Result<Option<Arc<Record>>, StoreError> {
        let (channel, event) = (channel.to_owned(), event.to_owned());
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let latest = txn.open_table(LATEST).map_err(backend)?;
            let records = txn.open_table(RECORDS).map_err(backend)?;
            let id = latest
                .get((channel.as_str(), event.as_str()))
                .map_err(backend)?
                .map(|g| g.value());
            id.map(|id| get_record(&records, id)).transpose()
        })
        .await
    }

    async fn latest_ids(
        &self,
        channels: Option<Vec<String>>,
        readable: ChannelPredicate,
    ) -> Result<Vec<u64>, StoreError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let latest = txn.open_table(LATEST).map_err(backend)?;
            let mut ids = Vec::new();
            // Keys are sorted by channel: the permission check runs once per channel.
            let mut last: Option<(String, bool)> = None;
            let mut take = |channel: &str, id: u64| {
                let allowed = match &last {
                    Some((name, allowed)) if name == channel => *allowed,
                    _ => {
                        let allowed = readable(channel);
                        last = Some((channel.to_owned(), allowed));
                        allowed
                    }
                };
                if allowed {
                    ids.push(id);
                }
            };
            match channels {
                None => {
                    for entry in latest.iter().map_err(backend)? {
                        let (key, id) = entry.map_err(backend)?;
                        take(key.value().0, id.value());
                    }
                }
                Some(channels) => {
                    for channel in &channels {
                        for entry in latest.range((channel.as_str(), "")..).map_err(backend)? {
                            let (key, id) = entry.map_err(backend)?;
                            if key.value().0 != channel.as_str() {
                                break;
                            }
                            take(channel, id.value());
                        }
                    }
                }
            }
            ids.sort_unstable();
            ids.dedup();
            Ok(ids)
        })
        .await
    }

    async fn records(
        &self,
        ids: Vec<u64>,
        max_bytes: usize,
    ) -> Result<Vec<Arc<Record>>, StoreError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let records = txn.open_table(RECORDS).map_err(backend)?;
            let found = ids.into_iter().filter_map(|id| match records.get(id) {
                Ok(Some(guard)) => Some(decode_record(guard.value())),
                Ok(None) => None,
                Err(e) => Some(Err(backend(e))),
            });
            collect_page(found, max_bytes)
        })
        .await
    }

    async fn since(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Arc<Record>>, StoreError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let records = txn.open_table(RECORDS).map_err(backend)?;
            let Some(start) = after.checked_add(1) else {
                return Ok(Vec::new());
            };
            let range = records.range(start..).map_err(backend)?.take(limit);
            collect_page(
                range.map(|entry| decode_record(entry.map_err(backend)?.1.value())),
                max_bytes,
            )
        })
        .await
    }

    async fn versions(
        &self,
        channel: &str,
        event: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Arc<Record>>, StoreError> {
        let (channel, event) = (channel.to_owned(), event.to_owned());
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let versions = txn.open_table(VERSIONS).map_err(backend)?;
            let records = txn.open_table(RECORDS).map_err(backend)?;
            let Some(start) = after.checked_add(1) else {
                return Ok(Vec::new());
            };
            let range = (channel.as_str(), event.as_str(), start)
                ..=(channel.as_str(), event.as_str(), u64::MAX);
            let found = versions.range(range).map_err(backend)?.take(limit);
            collect_page(
                found.map(|entry| get_record(&records, entry.map_err(backend)?.0.value().2)),
                max_bytes,
            )
        })
        .await
    }

    async fn create_user(&self, user: User) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::PutUser {
            user,
            create: true,
            reply,
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn put_user(&self, user: User) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::PutUser {
            user,
            create: false,
            reply,
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        if let Some(user) = self
            .users
            .read()
            .ok()
            .and_then(|c| c.get(username).cloned())
        {
            return Ok(Some(user));
        }
        let username = username.to_owned();
        let cache = self.users.clone();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let users = txn.open_table(USERS).map_err(backend)?;
            let Some(guard) = users.get(username.as_str()).map_err(backend)? else {
                return Ok(None);
            };
            let user: User = serde_json::from_slice(guard.value())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if let Ok(mut cache) = cache.write() {
                cache.entry(username).or_insert_with(|| user.clone());
            }
            Ok(Some(user))
        })
        .await
    }

    async fn usernames(&self) -> Result<Vec<String>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let users = txn.open_table(USERS).map_err(backend)?;
            let mut names = Vec::new();
            for entry in users.iter().map_err(backend)? {
                names.push(entry.map_err(backend)?.0.value().to_owned());
            }
            Ok(names)
        })
        .await
    }

    async fn channels(&self) -> Result<Vec<ChannelSummary>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let latest = txn.open_table(LATEST).map_err(backend)?;
            let versions = txn.open_table(VERSIONS).map_err(backend)?;
            let records = txn.open_table(RECORDS).map_err(backend)?;
            let mut out: Vec<ChannelSummary> = Vec::new();
            // Keys are sorted by (channel, event): one summary per run of a channel.
            for entry in latest.iter().map_err(backend)? {
                let (key, id) = entry.map_err(backend)?;
                let (channel, event) = key.value();
                let id = id.value();
                let range = (channel, event, 0)..=(channel, event, u64::MAX);
                let count = versions.range(range).map_err(backend)?.count() as u64;
                match out.last_mut().filter(|s| s.channel == channel) {
                    Some(summary) => {
                        summary.records += count;
                        summary.events += 1;
                        summary.last_id = summary.last_id.max(id);
                    }
                    None => out.push(ChannelSummary {
                        channel: channel.to_owned(),
                        records: count,
                        events: 1,
                        last_id: id,
                        last_timestamp: 0,
                    }),
                }
            }
            for summary in &mut out {
                summary.last_timestamp = get_record(&records, summary.last_id)?.timestamp;
            }
            Ok(out)
        })
        .await
    }

    async fn close(&self) {
        // Dropping the sender lets the writer finish what is queued, then exit.
        if let Ok(mut sender) = self.writer.lock() {
            sender.take();
        }
        if let Ok(mut db) = self.db.write() {
            db.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("store writer thread ended abnormally");
            }
        }
    }
}

/// The writer thread's state: the next id and the last timestamp handed out.
struct Writer {
    db: Arc<Database>,
    feed: Feed,
    next_id: u64,
    last_timestamp: u64,
    users: UserCache,
    /// Users written by the commit in progress, cached once it is durable.
    written_users: Vec<User>,
}

/// Outcome of one queued operation inside a commit, answered after the commit.
enum Pending {
    Append(Reply<Vec<Arc<Record>>>, Vec<Arc<Record>>),
    User(Reply<()>, Result<(), StoreError>),
}

impl Writer {
    fn load(db: Arc<Database>, feed: Feed, users: UserCache) -> Result<Self, StoreError> {
        let mut writer = Self {
            db,
            feed,
            next_id: 1,
            last_timestamp: 0,
            users,
            written_users: Vec::new(),
        };
        writer.reload()?;
        Ok(writer)
    }

    /// Re-reads the counters from disk (at start, and after a failed commit).
    fn reload(&mut self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let records = txn.open_table(RECORDS).map_err(backend)?;
        match records.last().map_err(backend)? {
            Some((id, bytes)) => {
                self.next_id = id.value() + 1;
                self.last_timestamp = decode_record(bytes.value())?.timestamp;
            }
            None => {
                self.next_id = 1;
                self.last_timestamp = 0;
            }
        }
        Ok(())
    }

    /// Unique, increasing timestamps: wall-clock microseconds, bumped past the previous one.
    fn next_timestamp(&mut self) -> u64 {
        self.last_timestamp = now_micros().max(self.last_timestamp + 1);
        self.last_timestamp
    }

    fn run(&mut self, rx: &std_mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut ops = vec![first];
            while ops.len() < MAX_OPS_PER_COMMIT {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            self.commit(ops);
        }
    }

    fn commit(&mut self, ops: Vec<Op>) {
        let (next_id, last_timestamp) = (self.next_id, self.last_timestamp);
        let mut pending = Vec::with_capacity(ops.len());
        let outcome = self.write(ops, &mut pending);
        let outcome = outcome.and_then(|txn| txn.commit().map_err(backend));
        let written_users = std::mem::take(&mut self.written_users);
        match outcome {
            Ok(()) => {
                if let Ok(mut cache) = self.users.write() {
                    for user in written_users {
                        cache.insert(user.username.clone(), user);
                    }
                }
                let committed: Vec<Arc<Record>> = pending
                    .iter()
                    .flat_map(|p| match p {
                        Pending::Append(_, records) => records.clone(),
                        Pending::User(..) => Vec::new(),
                    })
                    .collect();
                // Callers first: telling the hub wakes every live stream, and a reply woken
                // after them would wait for the whole fan-out before its response went out.
                for p in pending {
                    match p {
                        Pending::Append(reply, records) => {
                            let _ = reply.send(Ok(records));
                        }
                        Pending::User(reply, result) => {
                            let _ = reply.send(result);
                        }
                    }
                }
                if !committed.is_empty()
                    && let Some(sink) = self.feed.get()
                {
                    sink.committed(&committed);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "store commit failed");
                self.next_id = next_id;
                self.last_timestamp = last_timestamp;
                if let Err(e) = self.reload() {
                    tracing::error!(error = %e, "cannot re-read store counters");
                }
                for p in pending {
                    match p {
                        Pending::Append(reply, _) => {
                            let _ = reply.send(Err(StoreError::Backend(err.to_string())));
                        }
                        Pending::User(reply, _) => {
                            let _ = reply.send(Err(StoreError::Backend(err.to_string())));
                        }
                    }
                }
            }
        }
    }

    /// Applies `ops` to one write transaction, returning it uncommitted. Operations not reached
    /// because of an error are answered with that error when the caller fails the commit.
    fn write(
        &mut self,
        ops: Vec<Op>,
        pending: &mut Vec<Pending>,
    ) -> Result<redb::WriteTransaction, StoreError> {
        let mut ops = ops.into_iter();
        let txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                ops.for_each(|op| pending.push(Self::unreached(op)));
                return Err(backend(e));
            }
        };
        let result = (|| -> Result<(), StoreError> {
            let mut records = txn.open_table(RECORDS).map_err(backend)?;
            let mut latest = txn.open_table(LATEST).map_err(backend)?;
            let mut versions = txn.open_table(VERSIONS).map_err(backend)?;
            let mut users = txn.open_table(USERS).map_err(backend)?;
            for op in ops.by_ref() {
                match op {
                    Op::Append { batch, reply } => {
                        let mut out = Vec::with_capacity(batch.len());
                        for new in batch {
                            let record = Record::new(
                                self.next_id,
                                new.channel,
                                new.event,
                                self.next_timestamp(),
                                new.user,
                                new.data,
                            );
                            self.next_id += 1;
                            let bytes = serde_json::to_vec(&record)
                                .map_err(|e| StoreError::Backend(e.to_string()))?;
                            records
                                .insert(record.id, bytes.as_slice())
                                .map_err(backend)?;
                            let key = (record.channel.as_str(), record.event.as_str());
                            latest.insert(key, record.id).map_err(backend)?;
                            versions
                                .insert((key.0, key.1, record.id), ())
                                .map_err(backend)?;
                            out.push(Arc::new(record));
                        }
                        pending.push(Pending::Append(reply, out));
                    }
                    Op::PutUser {
                        user,
                        create,
                        reply,
                    } => {
                        let name = user.username.as_str();
                        let taken = users.get(name).map_err(backend)?.is_some();
                        let result = if create && taken {
                            Err(StoreError::Conflict(format!("username '{name}' is taken")))
                        } else {
                            let bytes = serde_json::to_vec(&user)
                                .map_err(|e| StoreError::Backend(e.to_string()))?;
                            users.insert(name, bytes.as_slice()).map_err(backend)?;
                            self.written_users.push(user.clone());
                            Ok(())
                        };
                        pending.push(Pending::User(reply, result));
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(txn),
            Err(e) => {
                ops.for_each(|op| pending.push(Self::unreached(op)));
                Err(e)
            }
        }
    }

    fn unreached(op: Op) -> Pending {
        match op {
            Op::Append { reply, .. } => Pending::Append(reply, Vec::new()),
            Op::PutUser { reply, .. } => Pending::User(reply, Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store_passes_the_conformance_suite() {
        conformance::run_all(|listener| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = EmbeddedStore::open_feeding(dir.path(), listener).expect("open");
            (Box::new(store) as Box<dyn Store>, dir)
        })
        .await;
    }

    #[tokio::test]
    async fn reopening_keeps_records_and_counters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = Arc::new(conformance::Recorder::default());
        let store = EmbeddedStore::open_feeding(dir.path(), listener.clone()).expect("open");
        let first = store
            .append(vec![conformance::new_record("c", "e", "1")])
            .await
            .expect("append");
        store.close().await;
        let store = EmbeddedStore::open_feeding(dir.path(), listener).expect("reopen");
        let second = store
            .append(vec![conformance::new_record("c", "e", "2")])
            .await
            .expect("append");
        assert_eq!(second[0].id, first[0].id + 1);
        assert!(second[0].timestamp > first[0].timestamp);
        assert_eq!(
            store
                .versions("c", "e", 0, 10, usize::MAX)
                .await
                .expect("versions")
                .len(),
            2
        );
        store.close().await;
    }

    /// A listener that holds the writer until the test says the append was answered, and
    /// records whether that came first.
    struct AfterAnswer {
        answered: Mutex<std_mpsc::Receiver<()>>,
        answered_first: Mutex<Option<bool>>,
    }

    impl CommitListener for AfterAnswer {
        fn committed(&self, _records: &[Arc<Record>]) {
            let first = self
                .answered
                .lock()
                .is_ok_and(|rx| rx.recv_timeout(std::time::Duration::from_secs(5)).is_ok());
            if let Ok(mut seen) = self.answered_first.lock() {
                seen.get_or_insert(first);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inserts_are_answered_before_the_hub_is_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (answered, rx) = std_mpsc::channel();
        let listener = Arc::new(AfterAnswer {
            answered: Mutex::new(rx),
            answered_first: Mutex::new(None),
        });
        let store = EmbeddedStore::open_feeding(dir.path(), listener.clone()).expect("open");
        store
            .append(vec![conformance::new_record("c", "e", "1")])
            .await
            .expect("append");
        answered.send(()).expect("listener waiting");
        store.close().await;
        assert_eq!(
            *listener.answered_first.lock().expect("lock"),
            Some(true),
            "the listener was told before the append was answered"
        );
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_same_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = Arc::new(conformance::Recorder::default());
        let store = EmbeddedStore::open_feeding(dir.path(), listener.clone()).expect("open");
        let err = EmbeddedStore::open_feeding(dir.path(), listener)
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("in use"), "{err}");
        store.close().await;
    }
}
