//! The JetStream-backed [`Store`]: records in one stream, users and the JWT secret in key-value
//! buckets. See the README's "Cluster" section for the layout and its guarantees.
//!
//! - **Records**: stream `<prefix>_records`, subjects `<prefix>.r.<channel>.<event>` (names
//!   encoded by [`super::subject`]). The record id is the stream sequence.
//! - **Writes**: one node at a time holds the writer lease ([`super::lease`]) and writes for
//!   the deployment; the others forward their appends to it ([`super::forward`]). Its writer
//!   ([`super::writer`]) gathers the appends waiting (group commit, up to [`MAX_BATCH`]
//!   records) into one JetStream atomic batch under `Nats-Expected-Last-Sequence`, so that a
//!   batch takes consecutive ids right after the last one the writer knows, and timestamps,
//!   `max(now, last timestamp + 1)` counting up, are unique and increase with the id across the
//!   whole stream. An append is answered only after its batch's ack (stored by a quorum of the
//!   replicas).
//! - **Feed**: one ordered consumer per node, from the sequence after the last one at attach
//!   time, hands each JetStream batch to the hub as one commit (each message carries its
//!   batch's size and its index in it).
//! - **Reads for streams** ask JetStream nothing in the usual case, so that tens of thousands
//!   of streams opening (or resuming) at once cost no more requests than one: snapshots come
//!   from the node's own index of the latest id of every event and replays from its window of
//!   recent records ([`super::local`]), both kept by the feed; snapshot records outside the
//!   window are read once and shared ([`super::record_cache`]); the stream's last id and the
//!   users are read with fresh reads shared between concurrent callers ([`super::fresh`]).
//!   Before the feed starts, or if it ever finds a hole in the ids, reads go to JetStream:
//!   snapshots are then one cut made as [`JetStreamStore::latest_cut`] says.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::forward;
use super::fresh::FreshReads;
use super::lease::Lease;
use super::local::LocalView;
use super::patience::{patiently, while_starting};
use super::record_cache::RecordCache;
use super::subject;
use super::writer::{Append, Writer};
use super::{NatsOptions, connect};
use crate::store::{
    ChannelPredicate, ChannelSummary, CommitListener, NewRecord, Record, Store, StoreError, User,
    page_full,
};

/// Most records in one atomic batch (nats-server's default `max_msgs` of a batch).
pub const MAX_BATCH: usize = 1000;

/// How long a JetStream request may take before the operation fails as unavailable.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long start-up waits for JetStream's stream and buckets to answer.
const STARTUP_PATIENCE: Duration = Duration::from_secs(30);

/// How many times a writer retries a batch that another node's write overtook.
pub(super) const MAX_CONFLICTS: usize = 64;

/// Parallel single-message reads of one page.
const READ_CONCURRENCY: usize = 32;

/// Most bytes of recent records a node keeps for replays ([`LocalView`]): a stream resuming
/// from an id within them replays from memory.
const WINDOW_BYTES: usize = 64 * 1024 * 1024;

/// Most bytes of older records kept once read for snapshots ([`RecordCache`]).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// A record as stored in a stream message (the id is the message's sequence).
#[derive(Serialize, Deserialize)]
pub(super) struct Wire<'a> {
    /// Channel.
    pub(super) c: std::borrow::Cow<'a, str>,
    /// Event.
    pub(super) e: std::borrow::Cow<'a, str>,
    /// Inserting user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) u: Option<std::borrow::Cow<'a, str>>,
    /// Timestamp, microseconds.
    pub(super) t: u64,
    /// Size of the JetStream batch the record was written in, and its index there.
    pub(super) n: usize,
    pub(super) i: usize,
    /// The event's data.
    #[serde(borrow)]
    pub(super) d: &'a RawValue,
}

/// The stream and buckets as start-up finds them.
struct Layout {
    stream: stream::Stream,
    users: kv::Store,
    meta: kv::Store,
    users_stream: stream::Stream,
    meta_stream: stream::Stream,
}

/// The JetStream [`Store`].
pub struct JetStreamStore {
    client: async_nats::Client,
    stream: stream::Stream,
    filter: String,
    subject_prefix: String,
    users: kv::Store,
    meta: kv::Store,
    /// The streams under the buckets, read through their leaders (see [`read_key`]).
    users_stream: stream::Stream,
    meta_stream: stream::Stream,
    prefix: String,
    writer: mpsc::Sender<Append>,
    /// This node's id, under which it takes forwarded appends.
    node: String,
    /// Who writes for the deployment.
    lease: Lease,
    /// Where appends go while another node holds the lease.
    forwarder: mpsc::Sender<Append>,
    /// The task answering forwarded appends.
    forwards: tokio::task::JoinHandle<()>,
    closed: Arc<AtomicBool>,
    feed: OnceLock<tokio::task::JoinHandle<()>>,
    /// The node's index and recent records, kept by the feed.
    local: Arc<LocalView>,
    /// The highest id this node has written: a local read first waits until the feed has
    /// applied it, so that a node always reads its own writes.
    acked: AtomicU64,
    /// Snapshot records read from JetStream, shared.
    cache: RecordCache,
    /// The stream's first and last sequences, read afresh and shared.
    last_reads: FreshReads<(), (u64, u64)>,
    /// Users' stored values, read afresh and shared, by key.
    user_reads: FreshReads<String, Option<Bytes>>,
}

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A failed request to NATS: the store is unreachable for now.
pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl JetStreamStore {
    /// Connects (checking the server version), creates the stream and buckets if missing, and
    /// starts the writer task.
    ///
    /// # Errors
    /// When NATS cannot be reached or refuses the stream or bucket configuration.
    pub async fn open(options: &NatsOptions) -> Result<Self, StoreError> {
        let client = connect(options).await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        let prefix = &options.prefix;
        let filter = format!("{prefix}.r.>");
        // Right after NATS itself (re)starts, the stream's and buckets' replica groups may
        // still be electing leaders: keep asking for a while before giving up.
        let Layout {
            stream,
            users,
            meta,
            users_stream,
            meta_stream,
        } = while_starting(STARTUP_PATIENCE, || Self::layout(&js, options, &filter)).await?;
        let (tx, rx) = mpsc::channel(4096);
        let closed = Arc::new(AtomicBool::new(false));
        let node = super::random_token(16);
        let lease = Lease::start(
            meta.clone(),
            meta_stream.clone(),
            &format!("{prefix}_meta"),
            node.clone(),
        );
        let writer = Writer::new(client.clone(), stream.clone(), format!("{prefix}.r"));
        tokio::spawn(writer.run(rx));
        let forwarder = forward::start(client.clone(), prefix.clone(), lease.watch(), tx.clone());
        let forwards =
            forward::serve(client.clone(), forward::subject(prefix, &node), tx.clone()).await?;
        Ok(Self {
            client,
            stream,
            filter,
            subject_prefix: format!("{prefix}.r"),
            users,
            meta,
            users_stream,
            meta_stream,
            prefix: prefix.clone(),
            writer: tx,
            node,
            lease,
            forwarder,
            forwards,
            closed,
            feed: OnceLock::new(),
            local: Arc::new(LocalView::new(WINDOW_BYTES)),
            acked: AtomicU64::new(0),
            cache: RecordCache::new(CACHE_BYTES),
            last_reads: FreshReads::default(),
            user_reads: FreshReads::default(),
        })
    }

    /// Creates (or finds) the stream and the two buckets, and fails while any of their replica
    /// groups has no leader yet.
    async fn layout(
        js: &jetstream::Context,
        options: &NatsOptions,
        filter: &str,
    ) -> Result<Layout, StoreError> {
        let prefix = &options.prefix;
        let stream = js
            .get_or_create_stream(stream::Config {
                name: format!("{prefix}_records"),
                subjects: vec![filter.to_owned()],
                num_replicas: options.replicas,
                storage: stream::StorageType::File,
                allow_atomic_publish: true,
                ..Default::default()
            })
            .await
            .map_err(|e| backend(format!("cannot create stream {prefix}_records: {e}")))?;
        led(&stream)?;
        let users = key_value(js, format!("{prefix}_users"), options.replicas).await?;
        let meta = key_value(js, format!("{prefix}_meta"), options.replicas).await?;
        let users_stream = js
            .get_stream(format!("KV_{prefix}_users"))
            .await
            .map_err(unavailable)?;
        led(&users_stream)?;
        let meta_stream = js
            .get_stream(format!("KV_{prefix}_meta"))
            .await
            .map_err(unavailable)?;
        led(&meta_stream)?;
        Ok(Layout {
            stream,
            users,
            meta,
            users_stream,
            meta_stream,
        })
    }

    /// The JWT secret all nodes share: created once (create-only, so two nodes starting
    /// together agree on the first one written), then read.
    ///
    /// # Errors
    /// When the bucket cannot be reached.
    pub async fn jwt_secret(&self) -> Result<Vec<u8>, StoreError> {
        const KEY: &str = "jwt_secret";
        let mut fresh = [0u8; 32];
        rand::fill(&mut fresh);
        let hex: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
        match patiently(|| self.meta.create(KEY, Bytes::from(hex.clone()))).await {
            Ok(_) => return Ok(hex.into_bytes()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(backend(format!("cannot create the JWT secret: {e}"))),
        }
        read_key(&self.meta_stream, &format!("{}_meta", self.prefix), KEY)
            .await?
            .map(|v| v.to_vec())
            .ok_or_else(|| backend("the JWT secret vanished from the meta bucket"))
    }

    /// Calls `changed` with the name of every user whose revocation, token generation,
    /// permissions or admin flag changes, on any node, as the users bucket reports it (well
    /// within a second). The watch resumes by itself after a lost connection.
    ///
    /// # Errors
    /// When the watch cannot start.
    pub async fn watch_users(
        &self,
        changed: impl Fn(&str) + Send + Sync + 'static,
    ) -> Result<(), StoreError> {
        let users = self.users.clone();
        // Called as the node starts: a busy cluster may let the first try time out.
        let mut watch = while_starting(STARTUP_PATIENCE, || users.watch_all())
            .await
            .map_err(backend)?;
        tokio::spawn(async move {
            let mut known: std::collections::HashMap<String, User> = Default::default();
            loop {
                while let Some(entry) = watch.next().await {
                    let Ok(entry) = entry else { continue };
                    let Ok(user) = serde_json::from_slice::<User>(&entry.value) else {
                        continue;
                    };
                    let name = user.username.clone();
                    let differs = known.get(&name).is_some_and(|old| {
                        old.revoked != user.revoked
                            || old.token_generation != user.token_generation
                            || old.read != user.read
                            || old.write != user.write
                            || old.admin != user.admin
                    });
                    known.insert(name.clone(), user);
                    if differs {
                        changed(&name);
                    }
                }
                tracing::warn!("the users watch ended; starting it again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                match users.watch_all().await {
                    Ok(w) => watch = w,
                    Err(e) => tracing::warn!(error = %e, "cannot watch users"),
                }
            }
        });
        Ok(())
    }

    /// The connection to NATS, for what cluster mode shares outside JetStream (presence).
    pub fn client(&self) -> async_nats::Client {
        self.client.clone()
    }

    /// This node's id: the value of the writer lease while it holds it, and the last token of
    /// the subject on which it takes forwarded appends.
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// `--nats-prefix`: every stream, bucket and subject name starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn subject(&self, channel: &str, event: &str) -> String {
        subject::record(&self.subject_prefix, channel, event)
    }

    /// The channel of a record subject.
    fn channel_of(&self, subject: &str) -> Option<String> {
        let rest = subject
            .strip_prefix(&self.subject_prefix)?
            .strip_prefix('.')?;
        subject::decode(rest.split('.').next()?)
    }

    /// The record with sequence `id`, `None` when there is none.
    async fn get(&self, id: u64) -> Result<Option<Arc<Record>>, StoreError> {
        match patiently(|| self.stream.get_raw_message(id)).await {
            Ok(message) => decode(message.sequence, &message.payload).map(Some),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    /// Whether the node's view answers and holds every record this node has written.
    async fn local_ready(&self) -> bool {
        self.local
            .caught_up(self.acked.load(Ordering::Acquire), REQUEST_TIMEOUT)
            .await
    }

    /// The stream's first and last sequences (JetStream says first = last + 1 once everything
    /// was removed), read afresh, one read shared by concurrent callers.
    async fn bounds(&self) -> Result<(u64, u64), StoreError> {
        self.last_reads
            .read((), || async {
                patiently(|| self.stream.get_info())
                    .await
                    .map(|info| (info.state.first_sequence, info.state.last_sequence))
            })
            .await
            .map_err(unavailable)
    }

    /// Notes the highest id this node has written (see `acked`) and passes the records on.
    fn acknowledge(&self, records: Vec<Arc<Record>>) -> Result<Vec<Arc<Record>>, StoreError> {
        if let Some(last) = records.last() {
            self.acked.fetch_max(last.id, Ordering::AcqRel);
        }
        Ok(records)
    }

    /// The record with sequence `id`: from the recent window, the shared cache, or JetStream.
    async fn shared_get(&self, id: u64) -> Result<Option<Arc<Record>>, StoreError> {
        match self.local.get(id) {
            Some(record) => Ok(Some(record)),
            None => self.cache.get(id, || self.get(id)).await,
        }
    }

    /// The last record of a subject, `None` when it has none.
    async fn last_of_subject(&self, subject: &str) -> Result<Option<Arc<Record>>, StoreError> {
        match patiently(|| self.stream.get_last_raw_message_by_subject(subject)).await {
            Ok(message) => decode(message.sequence, &message.payload).map(Some),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    /// Records with ids `from..=to`, in id order, up to `limit` and `max_bytes`.
    async fn range(
        &self,
        from: u64,
        to: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Arc<Record>>, StoreError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut next = from;
        while next <= to && out.len() < limit && !page_full(out.len(), bytes, max_bytes) {
            let end = to.min(next + READ_CONCURRENCY as u64 - 1);
            let page: Vec<Option<Arc<Record>>> =
                futures_util::stream::iter((next..=end).map(|id| self.get(id)))
                    .buffered(READ_CONCURRENCY)
                    .try_collect()
                    .await?;
            for record in page.into_iter().flatten() {
                if out.len() >= limit || page_full(out.len(), bytes, max_bytes) {
                    break;
                }
                bytes += record.size();
                out.push(record);
            }
            next = end + 1;
        }
        Ok(out)
    }

    /// The latest version of every (channel, event) whose channel passes `keep`, as of one
    /// point in time, in id order.
    ///
    /// Per-subject "last message" reads are not atomic with each other, so the cut is made
    /// like this: read the stream's last sequence `N0`, then the last message of each subject,
    /// and call the largest sequence seen `N` (at least `N0`). A subject whose latest version
    /// at `N` is at most `N0` was read after `N0` and before anything above `N` could be seen
    /// (its read returned at most `N`), so its read is that version. A version in `N0+1..=N`
    /// is found by reading that (short) range and folded in. The result is exactly the state
    /// at `N`; the live feed supplies everything after it.
    async fn latest_cut(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<Arc<Record>>, StoreError> {
        let n0 = self.last_id().await?;
        let subjects: Vec<String> = {
            let info = self
                .stream
                .info_with_subjects(&self.filter)
                .await
                .map_err(backend)?;
            info.map_ok(|(subject, _)| subject)
                .try_collect()
                .await
                .map_err(backend)?
        };
        let wanted: Vec<String> = subjects
            .into_iter()
            .filter(|s| self.channel_of(s).is_some_and(|c| keep(&c)))
            .collect();
        let lasts: Vec<Option<Arc<Record>>> = futures_util::stream::iter(
            wanted
                .into_iter()
                .map(|s| async move { self.last_of_subject(&s).await }),
        )
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
        let mut latest: std::collections::HashMap<(String, String), Arc<Record>> = lasts
            .into_iter()
            .flatten()
            .map(|r| ((r.channel.clone(), r.event.clone()), r))
            .collect();
        let n = latest.values().map(|r| r.id).max().unwrap_or(0).max(n0);
        if n > n0 {
            for record in self.range(n0 + 1, n, usize::MAX, usize::MAX).await? {
                if !keep(&record.channel) {
                    continue;
                }
                let key = (record.channel.clone(), record.event.clone());
                let newer = latest.get(&key).is_none_or(|r| r.id < record.id);
                if newer {
                    latest.insert(key, record);
                }
            }
        }
        let mut out: Vec<Arc<Record>> = latest.into_values().filter(|r| r.id <= n).collect();
        out.sort_unstable_by_key(|r| r.id);
        Ok(out)
    }
}

/// Fails when the stream's replica group had no leader as of the info it was fetched with (a
/// stream on a single, unclustered server has no group and is always ready).
fn led(stream: &stream::Stream) -> Result<(), StoreError> {
    let info = stream.cached_info();
    match &info.cluster {
        Some(cluster) if cluster.leader.is_none() => Err(unavailable(format!(
            "stream {} has no leader yet",
            info.config.name
        ))),
        _ => Ok(()),
    }
}

async fn key_value(
    js: &jetstream::Context,
    bucket: String,
    replicas: usize,
) -> Result<kv::Store, StoreError> {
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: bucket.clone(),
        history: 1,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| backend(format!("cannot create bucket {bucket}: {e}")))
}

/// The current value of `key` in a bucket, read from the leader of the bucket's stream: a
/// key-value `get` may be answered by a replica that has not applied the latest write yet
/// (direct get), and a user created on one node must be able to log in on the next at once.
async fn read_key(
    stream: &stream::Stream,
    bucket: &str,
    key: &str,
) -> Result<Option<Bytes>, StoreError> {
    let subject = format!("$KV.{bucket}.{key}");
    patiently(|| kv_entry(stream, &subject))
        .await
        .map(|entry| entry.map(|(value, _)| value))
        .map_err(unavailable)
}

/// The value and revision of key-value subject `subject` (`$KV.<bucket>.<key>`), read from the
/// leader of the bucket's stream; `None` when the key has none (never written, or deleted).
pub(super) async fn kv_entry(
    stream: &stream::Stream,
    subject: &str,
) -> Result<Option<(Bytes, u64)>, stream::LastRawMessageError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) if message.headers.get("KV-Operation").is_some() => Ok(None),
        Ok(message) => Ok(Some((message.payload, message.sequence))),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A stored message's record.
pub(super) fn decode(id: u64, payload: &[u8]) -> Result<Arc<Record>, StoreError> {
    decode_wire(id, payload).map(|(record, _, _)| record)
}

/// A stored message's record, its batch's size and its index in the batch.
fn decode_wire(id: u64, payload: &[u8]) -> Result<(Arc<Record>, usize, usize), StoreError> {
    let wire: Wire<'_> = serde_json::from_slice(payload)
        .map_err(|e| StoreError::Corrupt(format!("record {id}: {e}")))?;
    let data = wire.d.to_owned();
    Ok((
        Arc::new(Record::new(
            id,
            wire.c.into_owned(),
            wire.e.into_owned(),
            wire.t,
            wire.u.map(std::borrow::Cow::into_owned),
            data,
        )),
        wire.n,
        wire.i,
    ))
}

#[async_trait]
impl Store for JetStreamStore {
    async fn feed(&self, sink: Arc<dyn CommitListener>) -> Result<(), StoreError> {
        // Attached as the node starts: a busy cluster may let the first reads time out.
        let after = while_starting(STARTUP_PATIENCE, || self.last_id()).await?;
        // The node's view starts from a cut read now (as of `after` or later); the consumer
        // brings everything after `after`.
        let cut = while_starting(STARTUP_PATIENCE, || self.latest_cut(|_| true)).await?;
        self.local.load(&cut, after);
        self.cache.put(&cut);
        let local = self.local.clone();
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.filter.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| backend(format!("cannot create the ordered consumer: {e}")))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| backend(format!("cannot read the ordered consumer: {e}")))?;
        let task = tokio::spawn(async move {
            // The view first, then the hub: a record is readable before the feed reports it.
            let deliver = |commit: Vec<Arc<Record>>| {
                let fresh = local.apply(&commit);
                if !fresh.is_empty() {
                    sink.committed(&fresh);
                }
            };
            let mut pending: Vec<Arc<Record>> = Vec::new();
            while let Some(message) = messages.next().await {
                let message = match message {
                    Ok(message) => message,
                    Err(e) => {
                        tracing::warn!(error = %e, "ordered consumer");
                        continue;
                    }
                };
                let Ok(info) = message.info() else { continue };
                let seq = info.stream_sequence;
                match decode_wire(seq, &message.payload) {
                    Ok((record, n, i)) => {
                        if i == 0 && !pending.is_empty() {
                            deliver(std::mem::take(&mut pending));
                        }
                        pending.push(record);
                        if i + 1 >= n {
                            deliver(std::mem::take(&mut pending));
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "undecodable record in the stream"),
                }
            }
            tracing::error!("the ordered consumer ended: no more live records on this node");
        });
        self.feed
            .set(task)
            .map_err(|_| backend("the commit feed has a consumer already"))
    }

    async fn append(&self, batch: Vec<NewRecord>) -> Result<Vec<Arc<Record>>, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // The lease holder writes for everyone; without one, or when it does not listen, this
        // node writes itself.
        let queue = if self.lease.held_elsewhere() {
            &self.forwarder
        } else {
            &self.writer
        };
        let (reply, rx) = oneshot::channel();
        queue
            .send(Append { batch, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        let records = rx.await.map_err(|_| StoreError::Closed)??;
        self.acknowledge(records)
    }

    async fn last_id(&self) -> Result<u64, StoreError> {
        self.bounds().await.map(|(_, last)| last)
    }

    async fn oldest_id(&self) -> Result<u64, StoreError> {
        self.bounds().await.map(|(first, _)| first.max(1))
    }

    async fn latest(&self, channels: Option<Vec<String>>) -> Result<Vec<Arc<Record>>, StoreError> {
        if self.local_ready().await
            && let Some(ids) = self.local.latest_ids(channels.as_deref(), |_| true)
        {
            return self.records(ids, usize::MAX).await;
        }
        self.latest_cut(|c| channels.as_ref().is_none_or(|cs| cs.iter().any(|x| x == c)))
            .await
    }

    async fn latest_of(
        &self,
        channel: &str,
        event: &str,
    ) -> Result<Option<Arc<Record>>, StoreError> {
        self.last_of_subject(&self.subject(channel, event)).await
    }

    async fn latest_ids(
        &self,
        channels: Option<Vec<String>>,
        readable: ChannelPredicate,
    ) -> Result<Vec<u64>, StoreError> {
        if self.local_ready().await
            && let Some(ids) = self.local.latest_ids(channels.as_deref(), |c| readable(c))
        {
            return Ok(ids);
        }
        let records = self
            .latest_cut(|c| {
                channels.as_ref().is_none_or(|cs| cs.iter().any(|x| x == c)) && readable(c)
            })
            .await?;
        Ok(records.iter().map(|r| r.id).collect())
    }

    async fn records(
        &self,
        ids: Vec<u64>,
        max_bytes: usize,
    ) -> Result<Vec<Arc<Record>>, StoreError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for chunk in ids.chunks(READ_CONCURRENCY) {
            let page: Vec<Option<Arc<Record>>> =
                futures_util::stream::iter(chunk.iter().copied().map(|id| self.shared_get(id)))
                    .buffered(READ_CONCURRENCY)
                    .try_collect()
                    .await?;
            for record in page.into_iter().flatten() {
                if page_full(out.len(), bytes, max_bytes) {
                    return Ok(out);
                }
                bytes += record.size();
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn since(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Arc<Record>>, StoreError> {
        if self.local_ready().await
            && let Some(page) = self.local.since(after, limit, max_bytes)
        {
            return Ok(page);
        }
        let last = self.last_id().await?;
        if after >= last {
            return Ok(Vec::new());
        }
        let page = self.range(after + 1, last, limit, max_bytes).await?;
        // Rule 6: a record removed from the stream (a purge, an age limit) is never skipped.
        if let Some(missing) = (after + 1..)
            .zip(&page)
            .find_map(|(id, record)| (record.id != id).then_some(id))
            .or_else(|| page.is_empty().then_some(after + 1))
        {
            return Err(backend(format!(
                "the history after {after} is no longer complete: record {missing} was removed"
            )));
        }
        Ok(page)
    }

    async fn versions(
        &self,
        channel: &str,
        event: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Arc<Record>>, StoreError> {
        let subject = self.subject(channel, event);
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut next = after + 1;
        while out.len() < limit && !page_full(out.len(), bytes, max_bytes) {
            let found = patiently(|| {
                self.stream
                    .raw_message_builder()
                    .sequence(next)
                    .next_by_subject(subject.clone())
                    .send()
            })
            .await;
            let message = match found {
                Ok(message) => message,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(backend(e)),
            };
            let record = decode(message.sequence, &message.payload)?;
            next = record.id + 1;
            bytes += record.size();
            out.push(record);
        }
        Ok(out)
    }

    async fn create_user(&self, user: User) -> Result<(), StoreError> {
        let key = subject::encode(&user.username);
        let value = serde_json::to_vec(&user).map_err(backend)?;
        let value = Bytes::from(value);
        match patiently(|| self.users.create(&key, value.clone())).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(StoreError::Conflict(
                format!("user {} already exists", user.username),
            )),
            Err(e) => Err(backend(e)),
        }
    }

    async fn put_user(&self, user: User) -> Result<(), StoreError> {
        let key = subject::encode(&user.username);
        let value = serde_json::to_vec(&user).map_err(backend)?;
        let value = Bytes::from(value);
        patiently(|| self.users.put(&key, value.clone()))
            .await
            .map(|_| ())
            .map_err(backend)
    }

    async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let bucket = format!("{}_users", self.prefix);
        let key = subject::encode(username);
        let value = self
            .user_reads
            .read(key.clone(), || read_key(&self.users_stream, &bucket, &key))
            .await
            .map_err(unavailable)?;
        value
            .map(|v| serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn usernames(&self) -> Result<Vec<String>, StoreError> {
        let keys = patiently(|| self.users.keys()).await.map_err(backend)?;
        let keys: Vec<String> = keys.try_collect().await.map_err(backend)?;
        let mut names: Vec<String> = keys.iter().filter_map(|k| subject::decode(k)).collect();
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    async fn channels(&self) -> Result<Vec<ChannelSummary>, StoreError> {
        let counts: Vec<(String, usize)> = {
            let info = patiently(|| self.stream.info_with_subjects(&self.filter))
                .await
                .map_err(unavailable)?;
            info.try_collect().await.map_err(backend)?
        };
        // The newest record of each subject gives the channel's last id and activity.
        let lasts: Vec<Option<Arc<Record>>> = futures_util::stream::iter(
            counts
                .iter()
                .map(|(subject, _)| subject.clone())
                .collect::<Vec<_>>()
                .into_iter()
                .map(|s| async move { self.last_of_subject(&s).await }),
        )
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
        let mut by_channel: std::collections::BTreeMap<String, ChannelSummary> =
            std::collections::BTreeMap::new();
        for ((subject, count), last) in counts.iter().zip(lasts) {
            let (Some(channel), Some(last)) = (self.channel_of(subject), last) else {
                continue;
            };
            let summary = by_channel
                .entry(channel.clone())
                .or_insert_with(|| ChannelSummary {
                    channel,
                    records: 0,
                    events: 0,
                    last_id: 0,
                    last_timestamp: 0,
                });
            summary.records += *count as u64;
            summary.events += 1;
            if last.id > summary.last_id {
                summary.last_id = last.id;
                summary.last_timestamp = last.timestamp;
            }
        }
        Ok(by_channel.into_values().collect())
    }

    fn healthy(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.forwards.abort();
        self.lease.release().await;
        if let Some(task) = self.feed.get() {
            task.abort();
        }
        let _ = self.client.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;
    use crate::store::jetstream::lease::Holder;
    use crate::store::jetstream::test_server::NatsServer;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jetstream_store_passes_the_conformance_suite() {
        let server = NatsServer::start().await;
        let next = AtomicUsize::new(0);
        conformance::run_all(|listener| {
            // A fresh, empty store per check: its own prefix on the shared server.
            let prefix = format!("t{}", next.fetch_add(1, Ordering::Relaxed));
            let options = server.options(prefix);
            let store = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    let store = JetStreamStore::open(&options).await.expect("open");
                    store.feed(listener).await.expect("feed");
                    store
                })
            });
            (Box::new(store) as Box<dyn Store>, ())
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_share_one_secret_and_interleave_writes() {
        let server = NatsServer::start().await;
        let a = JetStreamStore::open(&server.options("shared".into()))
            .await
            .expect("open a");
        let b = JetStreamStore::open(&server.options("shared".into()))
            .await
            .expect("open b");
        let (sa, sb) = tokio::join!(a.jwt_secret(), b.jwt_secret());
        assert_eq!(sa.expect("secret a"), sb.expect("secret b"));
        let mut ids = Vec::new();
        for i in 0..10 {
            let store = if i % 2 == 0 { &a } else { &b };
            let r = store
                .append(vec![conformance::new_record("c", "e", &i.to_string())])
                .await
                .expect("append");
            ids.push((r[0].id, r[0].timestamp));
        }
        assert!(
            ids.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
            "ids and timestamps increase across both writers: {ids:?}"
        );
        let versions = b
            .versions("c", "e", 0, 100, usize::MAX)
            .await
            .expect("versions");
        assert_eq!(versions.len(), 10);
    }

    /// Waits (up to 10 s) until `store`'s view of the writer lease passes `ok`.
    async fn lease_until(store: &JetStreamStore, ok: impl Fn(&Holder) -> bool) {
        let mut watch = store.lease.watch();
        tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|h| ok(h)))
            .await
            .expect("the lease settles within 10 s")
            .expect("the lease task runs");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_node_writes_for_all_and_another_takes_over_when_it_stops() {
        let server = NatsServer::start().await;
        let a = JetStreamStore::open(&server.options("lease".into()))
            .await
            .expect("open a");
        lease_until(&a, |h| *h == Holder::Me).await;
        let b = JetStreamStore::open(&server.options("lease".into()))
            .await
            .expect("open b");
        let holder = Holder::Other(a.node_id().to_owned());
        lease_until(&b, |h| *h == holder).await;
        // Concurrent appends on both nodes, single records and batches of three: all stored,
        // b's through a, with consecutive ids and timestamps increasing with them.
        let appends = (0..120).map(|i| {
            let store = if i % 2 == 0 { &a } else { &b };
            let size = 1 + i % 3;
            let batch = (0..size)
                .map(|j| {
                    conformance::new_record("c", &format!("e{}", i % 5), &format!("[{i},{j}]"))
                })
                .collect();
            async move { (size, store.append(batch).await.expect("append")) }
        });
        let mut records = Vec::new();
        for (size, batch) in futures_util::future::join_all(appends).await {
            assert_eq!(batch.len(), size);
            assert!(
                batch.windows(2).all(|w| w[1].id == w[0].id + 1),
                "a batch has consecutive ids"
            );
            records.extend(batch);
        }
        records.sort_unstable_by_key(|r| r.id);
        let ids: Vec<u64> = records.iter().map(|r| r.id).collect();
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
        assert!(
            records.windows(2).all(|w| w[0].timestamp < w[1].timestamp),
            "timestamps increase with the id"
        );
        // a hands the lease back as it closes; b takes it and writes on.
        a.close().await;
        lease_until(&b, |h| *h == Holder::Me).await;
        let after = b
            .append(vec![conformance::new_record("c", "e0", "\"after\"")])
            .await
            .expect("append after the takeover");
        assert_eq!(after[0].id, ids.len() as u64 + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn since_reports_removed_history_instead_of_skipping_it() {
        let server = NatsServer::start().await;
        // No feed: reads go to JetStream, not to the node's window.
        let store = JetStreamStore::open(&server.options("holes".into()))
            .await
            .expect("open");
        for i in 0..5 {
            store
                .append(vec![conformance::new_record("c", "e", &i.to_string())])
                .await
                .expect("append");
        }
        store.stream.purge().sequence(3).await.expect("purge 1..=2");
        assert_eq!(store.oldest_id().await.expect("oldest"), 3);
        let error = store
            .since(0, 100, usize::MAX)
            .await
            .expect_err("records 1 and 2 are gone");
        assert!(error.to_string().contains("no longer complete"), "{error}");
        let after = store.since(2, 100, usize::MAX).await.expect("since 2");
        let ids: Vec<u64> = after.iter().map(|r| r.id).collect();
        assert_eq!(ids, [3, 4, 5]);
    }
}
