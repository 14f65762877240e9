//! Which node writes: the deployment's writer lease.
//!
//! One node at a time holds the lease, key [`KEY`] of the meta bucket, whose value is the
//! holder's node id. The holder renews it every [`RENEW`] with a compare-and-set on the key's
//! revision. The other nodes forward their appends to it ([`super::forward`]), so that the
//! stream has one writer, gathering every node's appends into its batches ([`super::writer`])
//! instead of taking turns with the others under "wrong last sequence". A node that sees the
//! same revision for [`STALE`] takes the lease over with a compare-and-set on that revision,
//! which one node wins; a holder that could not renew for [`HOLD`] (well under [`STALE`])
//! steps down first. While no node holds it, or the holder does not answer, each node writes
//! its own appends, which is safe with any number of writers, only slower. A node shutting down
//! hands the lease back at once.

use std::time::Duration;

use async_nats::jetstream::{kv, stream};
use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::store::kv_entry;

/// The lease's key in the meta bucket.
pub const KEY: &str = "writer";

/// How often the holder renews the lease, and the others look at it.
pub const RENEW: Duration = Duration::from_millis(500);

/// How long a holder that cannot renew keeps the lease.
pub const HOLD: Duration = Duration::from_millis(1500);

/// How long a lease must go unrenewed before another node takes it over.
pub const STALE: Duration = Duration::from_secs(3);

/// Who holds the lease, as this node last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// No one, or not known yet.
    Nobody,
    /// This node.
    Me,
    /// The node with this id.
    Other(String),
}

/// This node's part in the lease: a task that holds, renews or watches it.
pub struct Lease {
    holder: watch::Receiver<Holder>,
    release: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Lease {
    /// Starts taking part, as node `me`, in the lease kept in `meta` (the bucket named
    /// `bucket`, whose stream is `meta_stream`).
    pub fn start(meta: kv::Store, meta_stream: stream::Stream, bucket: &str, me: String) -> Self {
        let (tx, holder) = watch::channel(Holder::Nobody);
        let (release, released) = oneshot::channel();
        let subject = format!("$KV.{bucket}.{KEY}");
        let task = tokio::spawn(keep(meta, meta_stream, subject, me, tx, released));
        Self {
            holder,
            release: std::sync::Mutex::new(Some(release)),
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Whether another node holds the lease now (read on every append: no copy of its id).
    pub fn held_elsewhere(&self) -> bool {
        matches!(*self.holder.borrow(), Holder::Other(_))
    }

    /// Follows who holds the lease.
    pub fn watch(&self) -> watch::Receiver<Holder> {
        self.holder.clone()
    }

    /// Hands the lease back if this node holds it, and stops taking part.
    pub async fn release(&self) {
        let release = self.release.lock().ok().and_then(|mut r| r.take());
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(release) = release {
            let _ = release.send(());
        }
        if let Some(task) = task
            && tokio::time::timeout(RENEW, task).await.is_err()
        {
            tracing::warn!("could not hand the writer lease back in time");
        }
    }
}

/// The lease task: renews while holding, otherwise watches and takes over a stale or free
/// lease, until `released`.
async fn keep(
    meta: kv::Store,
    meta_stream: stream::Stream,
    subject: String,
    me: String,
    tx: watch::Sender<Holder>,
    mut released: oneshot::Receiver<()>,
) {
    let mine = Bytes::from(me.clone());
    // The revision held and when it was last renewed.
    let mut held: Option<(u64, Instant)> = None;
    // The revision last seen held by another node, and since when.
    let mut seen: Option<(u64, Instant)> = None;
    let mut ticks = tokio::time::interval(RENEW);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut released => {
                if let Some((revision, _)) = held {
                    // An empty value marks the lease free: the next node takes it at once.
                    let hand_back = meta.update(KEY, Bytes::new(), revision);
                    let _ = tokio::time::timeout(RENEW, hand_back).await;
                }
                tx.send_replace(Holder::Nobody);
                return;
            }
        }
        let now = Instant::now();
        if let Some((revision, renewed)) = held {
            match tokio::time::timeout(RENEW, meta.update(KEY, mine.clone(), revision)).await {
                Ok(Ok(revision)) => held = Some((revision, now)),
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!("another node took the writer lease");
                    held = None;
                    tx.send_replace(Holder::Nobody);
                }
                _ if now.duration_since(renewed) >= HOLD => {
                    tracing::warn!("cannot renew the writer lease; stepping down");
                    held = None;
                    tx.send_replace(Holder::Nobody);
                }
                _ => {}
            }
            continue;
        }
        let current = match tokio::time::timeout(RENEW, kv_entry(&meta_stream, &subject)).await {
            Ok(Ok(current)) => current,
            _ => continue,
        };
        let claim = match &current {
            None => tokio::time::timeout(RENEW, meta.create(KEY, mine.clone()))
                .await
                .ok()
                .and_then(Result::ok),
            // Ours already: a renewal that timed out was stored after all.
            Some((value, revision)) if *value == mine => Some(*revision),
            Some((value, revision)) => {
                let stale = match seen {
                    Some((r, since)) if r == *revision => now.duration_since(since) >= STALE,
                    _ => {
                        seen = Some((*revision, now));
                        false
                    }
                };
                if value.is_empty() || stale {
                    tokio::time::timeout(RENEW, meta.update(KEY, mine.clone(), *revision))
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                }
            }
        };
        if let Some(revision) = claim {
            tracing::info!(node = %me, "holding the writer lease");
            held = Some((revision, now));
            seen = None;
            tx.send_replace(Holder::Me);
            continue;
        }
        let holder = match current {
            Some((value, _)) if !value.is_empty() => {
                Holder::Other(String::from_utf8_lossy(&value).into_owned())
            }
            _ => Holder::Nobody,
        };
        tx.send_if_modified(|h| {
            let changed = *h != holder;
            *h = holder;
            changed
        });
    }
}
