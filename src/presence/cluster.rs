//! Presence, and other per-node lists, across cluster nodes over core NATS (not JetStream:
//! they are not kept).
//!
//! A [`SharedList`] is a list of entries by id that each node holds for itself (the clients
//! connected to it, its active Mercure subscriptions) and that every node lists for all. Every
//! node has a random id for its lifetime and publishes on the list's subject:
//!
//! - `delta`: the local entries that were added, changed or removed since the last message,
//!   gathered for [`COALESCE`](super::COALESCE) like the local announcements;
//! - `full`: every local entry, every [`HEARTBEAT`] (in parts of at most [`MAX_MESSAGE`]
//!   bytes), which doubles as the node's heartbeat;
//! - `hello` when it starts (the others answer with a `full` at once) and `bye` when it shuts
//!   down (the others drop its entries at once).
//!
//! Messages of one node carry consecutive sequence numbers. A node applies another's `delta`
//! only when it follows the last message it applied; after a gap (a message lost while NATS
//! reconnected) it keeps that node's last known list until the next `full` replaces it. A node
//! not heard from for [`EXPIRY`] (killed, or cut off from NATS) is forgotten: its entries leave
//! within `EXPIRY` plus [`SWEEP`] and the coalescing delay, about 9 s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{COALESCE, Presence, Shared};
use crate::store::StoreError;

/// How often a node repeats its full list.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a silent node's entries stay listed.
pub const EXPIRY: Duration = Duration::from_secs(8);
/// How often silent nodes are looked for.
pub const SWEEP: Duration = Duration::from_secs(1);
/// Largest message (bytes of JSON) a node publishes; longer lists go in several.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// The keys of a node's local entries changed since they were last shared: noted only once
/// sharing has started (cluster mode), with a wake-up for the task that shares them.
#[derive(Debug, Default)]
pub struct Unshared {
    keys: Mutex<Option<BTreeSet<String>>>,
    changed: Notify,
}

impl Unshared {
    /// Starts noting changes.
    pub fn start(&self) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.get_or_insert_with(BTreeSet::new);
        }
    }

    /// Notes that `key` changed, if sharing has started, and wakes the sharing task.
    pub fn mark(&self, key: &str) {
        if let Ok(mut keys) = self.keys.lock()
            && let Some(keys) = keys.as_mut()
        {
            keys.insert(key.to_owned());
            self.changed.notify_one();
        }
    }

    /// The keys noted since the last call.
    pub fn take(&self) -> BTreeSet<String> {
        self.keys
            .lock()
            .ok()
            .and_then(|mut keys| keys.as_mut().map(std::mem::take))
            .unwrap_or_default()
    }

    /// Notified when a key is noted.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }
}

/// A list each node holds for itself and shares with the others, which it lists beside its
/// own entries.
pub trait SharedList: Send + Sync + 'static {
    /// One entry as the nodes exchange it.
    type Item: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Starts noting local changes for [`SharedList::take_unshared`].
    fn start_sharing(&self);
    /// Notified when local entries change.
    fn local_changed(&self) -> &Notify;
    /// The local entries changed since the last call, each as it is now (`None`: removed);
    /// with `all`, every local entry instead (covering the pending changes).
    fn take_unshared(&self, all: bool) -> Vec<(String, Option<Self::Item>)>;
    /// Replaces node `node`'s entries.
    fn set_node(&self, node: u64, entries: BTreeMap<String, Self::Item>);
    /// Applies node `node`'s changes (`None`: removed).
    fn update_node(&self, node: u64, changes: Vec<(String, Option<Self::Item>)>);
    /// Forgets node `node` and its entries.
    fn drop_node(&self, node: u64);
}

impl SharedList for Presence {
    type Item = Shared;

    fn start_sharing(&self) {
        Presence::start_sharing(self);
    }

    fn local_changed(&self) -> &Notify {
        self.unshared.changed()
    }

    fn take_unshared(&self, all: bool) -> Vec<(String, Option<Shared>)> {
        Presence::take_unshared(self, all)
    }

    fn set_node(&self, node: u64, entries: BTreeMap<String, Shared>) {
        Presence::set_node(self, node, entries);
    }

    fn update_node(&self, node: u64, changes: Vec<(String, Option<Shared>)>) {
        Presence::update_node(self, node, changes);
    }

    fn drop_node(&self, node: u64) {
        Presence::drop_node(self, node);
    }
}

/// One entry in a message: its state now, or `None` when it left the node. (The wire names,
/// `client` and `clients`, are presence's, the first list shared.)
#[derive(Debug, Serialize, Deserialize)]
struct Entry<T> {
    id: String,
    #[serde(
        default = "none",
        skip_serializing_if = "Option::is_none",
        rename = "client"
    )]
    item: Option<T>,
}

fn none<T>() -> Option<T> {
    None
}

/// What nodes say to each other on a list's subject.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Message<T> {
    /// Part `part` of `parts` of every entry of the node.
    Full {
        node: u64,
        seq: u64,
        part: u32,
        parts: u32,
        #[serde(rename = "clients")]
        entries: Vec<Entry<T>>,
    },
    /// Entries that changed since the node's previous message.
    Delta {
        node: u64,
        seq: u64,
        #[serde(rename = "clients")]
        entries: Vec<Entry<T>>,
    },
    /// The node started: send it your full list.
    Hello { node: u64 },
    /// The node is shutting down: its entries left.
    Bye { node: u64 },
}

impl<T> Message<T> {
    fn node(&self) -> u64 {
        match self {
            Self::Full { node, .. }
            | Self::Delta { node, .. }
            | Self::Hello { node }
            | Self::Bye { node } => *node,
        }
    }
}

/// Shares `presence` with the other nodes on `client` under `prefix` (subject
/// `<prefix>.presence`) and lists theirs, until `shutdown`.
///
/// # Errors
/// When the subscription cannot be made.
pub async fn share(
    presence: Arc<Presence>,
    client: async_nats::Client,
    prefix: &str,
    shutdown: CancellationToken,
) -> Result<(), StoreError> {
    share_list(presence, client, format!("{prefix}.presence"), shutdown).await
}

/// Shares `list` with the other nodes on `subject` and lists theirs, until `shutdown`.
///
/// # Errors
/// When the subscription cannot be made.
pub async fn share_list<L: SharedList>(
    list: Arc<L>,
    client: async_nats::Client,
    subject: String,
    shutdown: CancellationToken,
) -> Result<(), StoreError> {
    let subscriber = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| StoreError::Backend(format!("cannot subscribe to {subject}: {e}")))?;
    list.start_sharing();
    let node = rand::random::<u64>();
    let max_message = client
        .server_info()
        .max_payload
        .saturating_sub(1024)
        .clamp(1024, MAX_MESSAGE);
    let asked = Arc::new(Notify::new());
    tokio::spawn(listen(
        list.clone(),
        subscriber,
        node,
        asked.clone(),
        shutdown.clone(),
    ));
    let sender = Sender {
        list,
        client,
        subject,
        node,
        seq: 0,
        max_message,
    };
    tokio::spawn(sender.run(asked, shutdown));
    Ok(())
}

/// Publishes this node's entries.
struct Sender<L: SharedList> {
    list: Arc<L>,
    client: async_nats::Client,
    subject: String,
    node: u64,
    seq: u64,
    max_message: usize,
}

impl<L: SharedList> Sender<L> {
    async fn run(mut self, asked: Arc<Notify>, shutdown: CancellationToken) {
        self.publish(&Message::<L::Item>::Hello { node: self.node })
            .await;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = heartbeat.tick() => self.full().await,
                () = asked.notified() => self.full().await,
                () = self.list.local_changed().notified() => {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(COALESCE) => {}
                    }
                    self.delta().await;
                }
            }
        }
        self.publish(&Message::<L::Item>::Bye { node: self.node })
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.flush()).await;
    }

    /// Every local entry, in as many parts as needed.
    async fn full(&mut self) {
        let entries = self.list.take_unshared(true);
        let parts = chunks(entries, self.max_message);
        let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        self.seq += 1;
        for (part, entries) in (0..count).zip(parts) {
            let message = Message::Full {
                node: self.node,
                seq: self.seq,
                part,
                parts: count,
                entries,
            };
            self.publish(&message).await;
        }
    }

    /// The local entries changed since the last message, if any.
    async fn delta(&mut self) {
        let changes = self.list.take_unshared(false);
        if changes.is_empty() {
            return;
        }
        for entries in chunks(changes, self.max_message) {
            self.seq += 1;
            let message = Message::Delta {
                node: self.node,
                seq: self.seq,
                entries,
            };
            self.publish(&message).await;
        }
    }

    async fn publish(&self, message: &Message<L::Item>) {
        let Ok(json) = serde_json::to_vec(message) else {
            return;
        };
        // A message lost here (NATS unreachable) is made up for by the next full list.
        if let Err(e) = self
            .client
            .publish(self.subject.clone(), Bytes::from(json))
            .await
        {
            tracing::debug!(error = %e, subject = %self.subject, "cannot share a node's list");
        }
    }
}

/// `entries` as message entries, split into lists of at most `max` bytes of JSON each (at
/// least one list, maybe empty).
fn chunks<T: Serialize>(entries: Vec<(String, Option<T>)>, max: usize) -> Vec<Vec<Entry<T>>> {
    let mut lists = vec![Vec::new()];
    let mut size = 0;
    for (id, item) in entries {
        let entry = Entry { id, item };
        let len = serde_json::to_vec(&entry).map_or(0, |v| v.len()) + 1;
        if size + len > max
            && let Some(last) = lists.last()
            && !last.is_empty()
        {
            lists.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(last) = lists.last_mut() {
            last.push(entry);
        }
    }
    lists
}

/// What this node knows of another.
struct Peer<T> {
    heard: Instant,
    /// Sequence of the last message applied; `None` until a full list arrived (or after a gap).
    applied: Option<u64>,
    /// A full list being received: its sequence, the next part expected, and the entries so far.
    assembling: Option<(u64, u32, BTreeMap<String, T>)>,
}

/// Applies the other nodes' messages to `list` and forgets silent nodes, until `shutdown`.
async fn listen<L: SharedList>(
    list: Arc<L>,
    mut subscriber: async_nats::Subscriber,
    own: u64,
    asked: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut peers: HashMap<u64, Peer<L::Item>> = HashMap::new();
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = sweep.tick() => {
                let now = Instant::now();
                peers.retain(|node, peer| {
                    let alive = now.duration_since(peer.heard) < EXPIRY;
                    if !alive {
                        tracing::info!(node, "a cluster node went silent; its entries left");
                        list.drop_node(*node);
                    }
                    alive
                });
                continue;
            }
            message = subscriber.next() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let Ok(message) = serde_json::from_slice::<Message<L::Item>>(&message.payload) else {
            continue;
        };
        let node = message.node();
        if node == own {
            continue;
        }
        let peer = peers.entry(node).or_insert(Peer {
            heard: Instant::now(),
            applied: None,
            assembling: None,
        });
        peer.heard = Instant::now();
        match message {
            Message::Hello { .. } => asked.notify_one(),
            Message::Bye { .. } => {
                peers.remove(&node);
                list.drop_node(node);
            }
            Message::Delta { seq, entries, .. } => {
                if peer.applied.is_some_and(|applied| seq == applied + 1) {
                    peer.applied = Some(seq);
                    let changes = entries.into_iter().map(|e| (e.id, e.item)).collect();
                    list.update_node(node, changes);
                } else {
                    // A gap: wait for the next full list.
                    peer.applied = None;
                }
            }
            Message::Full {
                seq,
                part,
                parts,
                entries,
                ..
            } => {
                let mut assembling = match peer.assembling.take() {
                    _ if part == 0 => (seq, 0, BTreeMap::new()),
                    Some(current) if current.0 == seq && current.1 == part => current,
                    _ => continue,
                };
                assembling
                    .2
                    .extend(entries.into_iter().filter_map(|e| Some((e.id, e.item?))));
                assembling.1 += 1;
                if assembling.1 >= parts {
                    peer.applied = Some(seq);
                    list.set_node(node, assembling.2);
                } else {
                    peer.assembling = Some(assembling);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(channels: &[&str]) -> Option<Shared> {
        Some(Shared {
            user: None,
            channels: channels.iter().map(|c| c.to_string()).collect(),
            connected_at: 1,
        })
    }

    #[test]
    fn long_lists_are_split_and_short_ones_are_one_message() {
        let many: Vec<_> = (0..1000)
            .map(|i| (format!("c{i:04}"), client(&["a"])))
            .collect();
        let lists = chunks(many, 4096);
        assert!(lists.len() > 1);
        assert!(
            lists.iter().all(|l| {
                serde_json::to_vec(l).expect("json").len() <= 4096 + 2 && !l.is_empty()
            })
        );
        assert_eq!(lists.iter().map(Vec::len).sum::<usize>(), 1000);
        assert_eq!(
            chunks::<Shared>(Vec::new(), 4096).len(),
            1,
            "an empty list is one message"
        );
    }

    #[test]
    fn messages_round_trip() {
        let message = Message::Delta {
            node: 7,
            seq: 3,
            entries: vec![
                Entry {
                    id: "x".into(),
                    item: client(&["a"]),
                },
                Entry {
                    id: "gone".into(),
                    item: None,
                },
            ],
        };
        let json = serde_json::to_string(&message).expect("json");
        assert!(json.contains(r#""kind":"delta""#), "{json}");
        assert!(
            json.contains(r#""clients":[{"id":"x","client":{"#),
            "{json}"
        );
        let back: Message<Shared> = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.node(), 7);
        let Message::Delta { entries, .. } = back else {
            panic!("a delta")
        };
        assert_eq!(entries[1].item, None);
    }

    #[test]
    fn other_nodes_clients_merge_with_local_ones_and_leave_with_their_node() {
        let presence = Presence::new();
        presence.start_sharing();
        let _local = presence.join("x", None, &["a".into()]).expect("x");
        let remote: BTreeMap<String, Shared> = [
            ("x".to_owned(), client(&["b"]).expect("x")),
            ("y".to_owned(), client(&["b"]).expect("y")),
        ]
        .into();
        presence.set_node(9, remote);
        let all = presence.clients(None);
        assert_eq!(all.len(), 2, "x counts once: {all:?}");
        assert_eq!(all[0].channels, ["a", "b"]);
        assert_eq!(presence.clients(Some("b")).len(), 2);
        presence.update_node(9, vec![("y".into(), None)]);
        let ids: Vec<String> = presence
            .clients(None)
            .into_iter()
            .map(|c| c.client_id)
            .collect();
        assert_eq!(ids, ["x"]);
        presence.drop_node(9);
        assert_eq!(presence.clients(None)[0].channels, ["a"]);
        // The local join was noted for the other nodes.
        let unshared = presence.take_unshared(false);
        assert_eq!(unshared.len(), 1);
        assert_eq!(unshared[0].0, "x");
    }

    #[test]
    fn a_client_id_another_node_gives_another_user_is_taken() {
        let presence = Presence::new();
        let mut shared = client(&["a"]).expect("client");
        shared.user = Some("ada".into());
        presence.set_node(1, [("x".to_owned(), shared)].into());
        assert!(presence.join("x", Some("bob"), &[]).is_err());
        assert!(presence.join("x", Some("ada"), &[]).is_ok());
    }
}
