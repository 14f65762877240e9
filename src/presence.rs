//! Online presence: which clients are connected to which channels.
//!
//! A client is identified by its `clientId` (several connections, such as the tabs of one
//! person, may share one). It counts once, and leaves only when its last connection closes. A
//! `clientId` belongs to the user whose connection took it first, until all of that user's
//! connections with it are gone: another user cannot join under it ([`ClientIdTaken`]).
//!
//! Joins and leaves mark the registry as changed. A background task waits [`COALESCE`] after the
//! first change and then publishes one [`Snapshot`] through the hub, so a hundred connections
//! arriving at once make one event, not a hundred. Each stream writes from it an
//! `online-presence` frame listing only the clients on a channel its caller may read.
//!
//! In cluster mode ([`cluster`]) every node also shares its clients over NATS and lists the
//! other nodes' clients beside its own: a client connected to two nodes counts once, with the
//! channels of both.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

pub mod cluster;
mod snapshot;
pub use snapshot::Snapshot;

/// How long presence changes are gathered before one event announces them.
pub const COALESCE: Duration = Duration::from_millis(100);

/// A connected client as `GET /presence` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's id.
    pub client_id: String,
    /// The user it authenticated as (`null` in open mode).
    pub user: Option<String>,
    /// Channels it is subscribed to, over all its connections.
    pub channels: Vec<String>,
    /// When its first open connection was made, microseconds since the Unix epoch.
    pub connected_at: u64,
}

/// A connection asked for a `clientId` that another user's connections hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("clientId '{0}' is in use by another user")]
pub struct ClientIdTaken(pub String);

#[derive(Debug)]
struct Client {
    connections: usize,
    /// The owner: every connection of this client is this user's (`None`: anonymous).
    user: Option<String>,
    /// Channel → number of this client's connections subscribed to it.
    channels: BTreeMap<String, usize>,
    connected_at: u64,
}

/// A client of another node, as that node shares it ([`cluster`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shared {
    /// The user it authenticated as (`None` in open mode).
    pub user: Option<String>,
    /// Its channels on that node.
    pub channels: Vec<String>,
    /// When its first connection to that node was made, microseconds since the Unix epoch.
    pub connected_at: u64,
}

/// Each other node's clients, by node id.
type Remote = BTreeMap<u64, BTreeMap<String, Shared>>;

/// The registry of connected clients.
#[derive(Default)]
pub struct Presence {
    clients: Mutex<BTreeMap<String, Client>>,
    dirty: AtomicBool,
    changed: Notify,
    /// Cluster mode: local clients changed since they were last shared.
    unshared: cluster::Unshared,
    /// Cluster mode: the other nodes' clients.
    remote: Mutex<Remote>,
}

impl Presence {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers one connection of `client_id` for `user`; it leaves when the guard is dropped.
    ///
    /// # Errors
    /// [`ClientIdTaken`] when connections of another user hold `client_id`.
    pub fn join(
        self: &Arc<Self>,
        client_id: &str,
        user: Option<&str>,
        channels: &[String],
    ) -> Result<PresenceGuard, ClientIdTaken> {
        if let Ok(mut clients) = self.clients.lock() {
            if !clients.contains_key(client_id) && self.taken_elsewhere(client_id, user) {
                return Err(ClientIdTaken(client_id.to_owned()));
            }
            let client = clients
                .entry(client_id.to_owned())
                .or_insert_with(|| Client {
                    connections: 0,
                    user: user.map(str::to_owned),
                    channels: BTreeMap::new(),
                    connected_at: crate::store::now_micros(),
                });
            if client.user.as_deref() != user {
                return Err(ClientIdTaken(client_id.to_owned()));
            }
            client.connections += 1;
            for channel in channels {
                *client.channels.entry(channel.clone()).or_default() += 1;
            }
            self.mark_unshared(client_id);
        }
        self.mark_changed();
        Ok(PresenceGuard {
            presence: self.clone(),
            client_id: client_id.to_owned(),
            channels: channels.to_vec(),
        })
    }

    fn leave(&self, client_id: &str, channels: &[String]) {
        if let Ok(mut clients) = self.clients.lock()
            && let Some(client) = clients.get_mut(client_id)
        {
            client.connections = client.connections.saturating_sub(1);
            for channel in channels {
                if let Some(count) = client.channels.get_mut(channel) {
                    *count -= 1;
                    if *count == 0 {
                        client.channels.remove(channel);
                    }
                }
            }
            if client.connections == 0 {
                clients.remove(client_id);
            }
            self.mark_unshared(client_id);
        }
        self.mark_changed();
    }

    /// Whether another node lists `client_id` for another user. (Two nodes admitting the same
    /// id for two users at the same moment both succeed; the id then lists the first user.)
    fn taken_elsewhere(&self, client_id: &str, user: Option<&str>) -> bool {
        self.remote.lock().is_ok_and(|remote| {
            remote
                .values()
                .filter_map(|node| node.get(client_id))
                .any(|shared| shared.user.as_deref() != user)
        })
    }

    /// Notes a local change for the other nodes (cluster mode); called under the clients lock.
    fn mark_unshared(&self, client_id: &str) {
        self.unshared.mark(client_id);
    }

    fn mark_changed(&self) {
        self.dirty.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// Ids of every connected client, sorted.
    pub fn client_ids(&self) -> Vec<String> {
        self.clients
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Connected clients (of every node in cluster mode), restricted to those subscribed to
    /// `channel` when given.
    pub fn clients(&self, channel: Option<&str>) -> Vec<ClientInfo> {
        if let Some(merged) = self.merged() {
            return merged
                .into_iter()
                .filter(|c| channel.is_none_or(|ch| c.channels.iter().any(|c| c == ch)))
                .collect();
        }
        let Ok(clients) = self.clients.lock() else {
            return Vec::new();
        };
        clients
            .iter()
            .filter(|(_, c)| channel.is_none_or(|ch| c.channels.contains_key(ch)))
            .map(|(id, c)| ClientInfo {
                client_id: id.clone(),
                user: c.user.clone(),
                channels: c.channels.keys().cloned().collect(),
                connected_at: c.connected_at,
            })
            .collect()
    }

    /// Local and other nodes' clients in one list sorted by id, `None` when no other node
    /// has any. A client on several nodes is listed once: the user and connection time of its
    /// earliest connection, the channels of all.
    fn merged(&self) -> Option<Vec<ClientInfo>> {
        let clients = self.clients.lock().ok()?;
        let remote = self.remote.lock().ok()?;
        if remote.values().all(BTreeMap::is_empty) {
            return None;
        }
        let mut all: BTreeMap<&str, (Option<&str>, BTreeSet<&str>, u64)> = BTreeMap::new();
        let local = clients.iter().map(|(id, c)| {
            (
                id.as_str(),
                c.user.as_deref(),
                c.channels.keys().map(String::as_str).collect::<Vec<_>>(),
                c.connected_at,
            )
        });
        let others = remote.values().flat_map(|node| {
            node.iter().map(|(id, c)| {
                (
                    id.as_str(),
                    c.user.as_deref(),
                    c.channels.iter().map(String::as_str).collect(),
                    c.connected_at,
                )
            })
        });
        for (id, user, channels, at) in local.chain(others) {
            let entry = all.entry(id).or_insert((user, BTreeSet::new(), at));
            if at < entry.2 {
                (entry.0, entry.2) = (user, at);
            }
            entry.1.extend(channels);
        }
        Some(
            all.into_iter()
                .map(|(id, (user, channels, at))| ClientInfo {
                    client_id: id.to_owned(),
                    user: user.map(str::to_owned),
                    channels: channels.into_iter().map(str::to_owned).collect(),
                    connected_at: at,
                })
                .collect(),
        )
    }

    /// Who is connected now (on every node in cluster mode), on which channels.
    pub fn snapshot(&self) -> Snapshot {
        if let Some(merged) = self.merged() {
            let mut members: HashMap<String, Vec<u32>> = HashMap::new();
            let mut ids = Vec::with_capacity(merged.len());
            for (index, client) in merged.into_iter().enumerate() {
                let Ok(index) = u32::try_from(index) else {
                    break;
                };
                for channel in client.channels {
                    members.entry(channel).or_default().push(index);
                }
                ids.push(client.client_id);
            }
            let channels = members
                .into_iter()
                .map(|(channel, clients)| (channel, clients.into_boxed_slice()))
                .collect();
            return Snapshot::new(ids, channels);
        }
        let mut ids = Vec::new();
        let mut channels = Vec::new();
        if let Ok(clients) = self.clients.lock() {
            let mut members: HashMap<&str, Vec<u32>> = HashMap::new();
            for (index, (id, client)) in clients.iter().enumerate() {
                let Ok(index) = u32::try_from(index) else {
                    break;
                };
                ids.push(id.clone());
                for channel in client.channels.keys() {
                    members.entry(channel).or_default().push(index);
                }
            }
            channels = members
                .into_iter()
                .map(|(channel, clients)| (channel.to_owned(), clients.into_boxed_slice()))
                .collect();
        }
        Snapshot::new(ids, channels)
    }

    /// Starts noting local changes for [`Presence::take_unshared`] (cluster mode).
    fn start_sharing(&self) {
        self.unshared.start();
    }

    /// Local clients changed since the last call, each with its state now (`None`: it left).
    /// With `all`, every local client instead (and the pending changes are covered by it).
    fn take_unshared(&self, all: bool) -> Vec<(String, Option<Shared>)> {
        let Ok(clients) = self.clients.lock() else {
            return Vec::new();
        };
        let changed = self.unshared.take();
        let shared = |c: &Client| Shared {
            user: c.user.clone(),
            channels: c.channels.keys().cloned().collect(),
            connected_at: c.connected_at,
        };
        if all {
            return clients
                .iter()
                .map(|(id, c)| (id.clone(), Some(shared(c))))
                .collect();
        }
        changed
            .into_iter()
            .map(|id| {
                let now = clients.get(&id).map(shared);
                (id, now)
            })
            .collect()
    }

    /// Replaces what node `node` lists with `clients`; announced only if that changes it
    /// (a node repeats its full list as a heartbeat).
    fn set_node(&self, node: u64, clients: BTreeMap<String, Shared>) {
        let changed = self.remote.lock().is_ok_and(|mut remote| {
            let same = remote.get(&node) == Some(&clients);
            remote.insert(node, clients);
            !same
        });
        if changed {
            self.mark_changed();
        }
    }

    /// Applies node `node`'s changes: a client with `None` left it.
    fn update_node(&self, node: u64, changes: Vec<(String, Option<Shared>)>) {
        let changed = self.remote.lock().is_ok_and(|mut remote| {
            let clients = remote.entry(node).or_default();
            let mut changed = false;
            for (id, now) in changes {
                changed |= match now {
                    Some(client) => clients.insert(id, client.clone()).as_ref() != Some(&client),
                    None => clients.remove(&id).is_some(),
                };
            }
            changed
        });
        if changed {
            self.mark_changed();
        }
    }

    /// Forgets node `node` (it said goodbye or went silent): its clients leave.
    fn drop_node(&self, node: u64) {
        let had = self
            .remote
            .lock()
            .is_ok_and(|mut remote| remote.remove(&node).is_some_and(|c| !c.is_empty()));
        if had {
            self.mark_changed();
        }
    }

    /// Publishes one `online-presence` snapshot per burst of changes until `shutdown`.
    pub async fn announce(self: Arc<Self>, hub: Arc<Hub>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.changed.notified() => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(COALESCE) => {}
            }
            if self.dirty.swap(false, Ordering::AcqRel) {
                hub.presence(Arc::new(self.snapshot()));
            }
        }
    }
}

/// One connection's membership; leaving happens on drop (however the connection ended).
pub struct PresenceGuard {
    presence: Arc<Presence>,
    client_id: String,
    channels: Vec<String>,
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        self.presence.leave(&self.client_id, &self.channels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_counts_once_and_leaves_with_its_last_connection() {
        let presence = Presence::new();
        let tab1 = presence.join("x", Some("ada"), &["a".into()]).expect("x");
        let tab2 = presence.join("x", Some("ada"), &["b".into()]).expect("x");
        let other = presence.join("y", None, &["a".into()]).expect("y");
        assert_eq!(presence.client_ids(), vec!["x", "y"]);
        let x = &presence.clients(Some("b"))[0];
        assert_eq!(
            (x.client_id.as_str(), x.channels.clone()),
            ("x", vec!["a".to_owned(), "b".to_owned()])
        );
        drop(tab1);
        assert_eq!(
            presence.clients(Some("a")).len(),
            1,
            "x left channel a with its first tab"
        );
        assert_eq!(presence.client_ids(), vec!["x", "y"]);
        drop(tab2);
        drop(other);
        assert!(presence.client_ids().is_empty());
    }

    #[test]
    fn a_client_id_belongs_to_its_first_user_until_they_leave() {
        let presence = Presence::new();
        let tab1 = presence.join("x", Some("ada"), &["a".into()]).expect("ada");
        let tab2 = presence.join("x", Some("ada"), &["a".into()]).expect("ada");
        let taken = presence.join("x", Some("bob"), &["a".into()]);
        assert_eq!(taken.err(), Some(ClientIdTaken("x".into())));
        assert!(presence.join("x", None, &["a".into()]).is_err());
        drop(tab1);
        assert!(presence.join("x", Some("bob"), &[]).is_err(), "ada's tab2");
        drop(tab2);
        let bob = presence
            .join("x", Some("bob"), &["b".into()])
            .expect("free");
        assert_eq!(presence.clients(None)[0].user.as_deref(), Some("bob"));
        drop(bob);
        // In open mode everyone is the same anonymous user.
        let _one = presence.join("y", None, &[]).expect("anonymous");
        let _two = presence.join("y", None, &[]).expect("anonymous again");
    }
}
