//! Active subscriptions (`--mercure-subscriptions`): subscription events and the
//! subscriptions API.
//!
//! Each matcher of a new subscription is announced as a private update of the topic
//! `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}` (the variables
//! percent-encoded once), event type `mercure`, data
//! `{"id", "type": "subscription", "match_type", "match", "subscriber", "active": true}` and the
//! `payload` its token gives it, if any; its end, whatever ends it, the same way with
//! `"active": false`. The events are records like every update, so they reach subscribers on
//! every node. In cluster mode each node shares its subscriptions with the others as it shares
//! presence ([`crate::presence::cluster`]), so the API of any node lists every node's; a node
//! that stops heartbeating has its subscriptions dropped from the list.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::Json;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::access::{self, Identity};
use super::bearer::BearerError;
use super::token::Role;
use super::update::{PRIVATE_CHANNEL, StoredUpdate};
use crate::api::insert::store_records;
use crate::error::ApiError;
use crate::presence::cluster::{SharedList, Unshared};
use crate::state::AppState;
use crate::store::NewRecord;

/// Path of the subscriptions collection.
pub const PATH: &str = "/.well-known/mercure/subscriptions";

/// Active subscriptions, by topic (the document's `id`): this node's, and in cluster mode the
/// other nodes'.
#[derive(Default)]
pub struct Registry {
    active: Mutex<BTreeMap<String, Value>>,
    /// Cluster mode: ids of local subscriptions changed since they were last shared.
    unshared: Unshared,
    /// Cluster mode: each other node's subscriptions, by node id.
    remote: Mutex<BTreeMap<u64, BTreeMap<String, Value>>>,
}

impl Registry {
    fn insert(&self, docs: &[Value]) {
        if let Ok(mut active) = self.active.lock() {
            for doc in docs {
                if let Some(id) = doc["id"].as_str() {
                    active.insert(id.to_owned(), doc.clone());
                    self.mark_unshared(id);
                }
            }
        }
    }

    fn remove(&self, docs: &[Value]) {
        if let Ok(mut active) = self.active.lock() {
            for doc in docs {
                if let Some(id) = doc["id"].as_str() {
                    active.remove(id);
                    self.mark_unshared(id);
                }
            }
        }
    }

    /// Notes a local change for the other nodes (cluster mode).
    fn mark_unshared(&self, id: &str) {
        self.unshared.mark(id);
    }

    /// The documents, of every node, whose id is `path` or lies under it, sorted by id.
    fn under(&self, path: &str) -> Vec<Value> {
        let prefix = format!("{path}/");
        let wanted = |id: &str| id == path || id.starts_with(&prefix);
        let mut found: BTreeMap<String, Value> = BTreeMap::new();
        if let Ok(active) = self.active.lock() {
            found.extend(
                active
                    .iter()
                    .filter(|(id, _)| wanted(id))
                    .map(|(id, doc)| (id.clone(), doc.clone())),
            );
        }
        if let Ok(remote) = self.remote.lock() {
            for node in remote.values() {
                found.extend(
                    node.iter()
                        .filter(|(id, _)| wanted(id))
                        .map(|(id, doc)| (id.clone(), doc.clone())),
                );
            }
        }
        found.into_values().collect()
    }
}

impl SharedList for Registry {
    type Item = Value;

    fn start_sharing(&self) {
        self.unshared.start();
    }

    fn local_changed(&self) -> &Notify {
        self.unshared.changed()
    }

    fn take_unshared(&self, all: bool) -> Vec<(String, Option<Value>)> {
        let Ok(active) = self.active.lock() else {
            return Vec::new();
        };
        let changed = self.unshared.take();
        if all {
            return active
                .iter()
                .map(|(id, doc)| (id.clone(), Some(doc.clone())))
                .collect();
        }
        changed
            .into_iter()
            .map(|id| {
                let now = active.get(&id).cloned();
                (id, now)
            })
            .collect()
    }

    fn set_node(&self, node: u64, entries: BTreeMap<String, Value>) {
        if let Ok(mut remote) = self.remote.lock() {
            remote.insert(node, entries);
        }
    }

    fn update_node(&self, node: u64, changes: Vec<(String, Option<Value>)>) {
        if let Ok(mut remote) = self.remote.lock() {
            let docs = remote.entry(node).or_default();
            for (id, now) in changes {
                match now {
                    Some(doc) => docs.insert(id, doc),
                    None => docs.remove(&id),
                };
            }
        }
    }

    fn drop_node(&self, node: u64) {
        if let Ok(mut remote) = self.remote.lock() {
            remote.remove(&node);
        }
    }
}

/// Percent-encodes everything but the unreserved characters (RFC 6570 simple expansion).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The topic of one subscription.
pub fn topic(match_type: &str, matcher: &str, subscriber: &str) -> String {
    format!(
        "{PATH}/{}/{}/{}",
        encode(match_type),
        encode(matcher),
        encode(subscriber)
    )
}

/// Announces a subscription's end when dropped (kept by its stream).
pub struct Announced {
    state: AppState,
    docs: Vec<Value>,
}

impl Drop for Announced {
    fn drop(&mut self) {
        self.state.mercure.subscriptions.remove(&self.docs);
        let mut docs = std::mem::take(&mut self.docs);
        for doc in &mut docs {
            doc["active"] = json!(false);
        }
        let state = self.state.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = publish(&state, &docs).await {
                    tracing::debug!(error = %e, "subscription end not announced");
                }
            });
        }
    }
}

/// Announces the matchers (`(match_type, match, payload)`) of a new subscription of
/// `subscriber`.
///
/// # Errors
/// When the events cannot be stored.
pub async fn announce(
    state: &AppState,
    matchers: &[(&'static str, String, Option<Value>)],
    subscriber: String,
) -> Result<Announced, ApiError> {
    let docs: Vec<Value> = matchers
        .iter()
        .map(|(match_type, matcher, payload)| {
            let mut doc = json!({
                "id": topic(match_type, matcher, &subscriber),
                "type": "subscription",
                "match_type": match_type,
                "match": matcher,
                "subscriber": subscriber,
                "active": true,
            });
            if let Some(payload) = payload {
                doc["payload"] = payload.clone();
            }
            doc
        })
        .collect();
    state.mercure.subscriptions.insert(&docs);
    let announced = Announced {
        state: state.clone(),
        docs,
    };
    publish(state, &announced.docs).await?;
    Ok(announced)
}

/// Stores one private update of type `mercure` per document.
async fn publish(state: &AppState, docs: &[Value]) -> Result<(), ApiError> {
    let mut batch = Vec::with_capacity(docs.len());
    for doc in docs {
        let stored = StoredUpdate {
            topics: vec![doc["id"].as_str().unwrap_or_default().to_owned()],
            data: doc.to_string(),
            private: true,
            kind: Some("mercure".to_owned()),
            retry: None,
        };
        batch.push(NewRecord {
            channel: PRIVATE_CHANNEL.to_owned(),
            event: super::publish::generated_id(),
            user: None,
            data: serde_json::value::to_raw_value(&stored).map_err(ApiError::internal)?,
        });
    }
    if !batch.is_empty() {
        store_records(state, batch).await?;
    }
    Ok(())
}

/// `GET /.well-known/mercure/subscriptions[/{match_type}/{match}[/{subscriber}]]`.
pub async fn subscriptions(State(state): State<AppState>, parts: Parts) -> Response {
    let metadata = super::metadata::url(&state, &parts.headers, &parts.uri);
    list(state, parts)
        .await
        .unwrap_or_else(|e| e.respond(&metadata))
}

/// The subscriptions under the requested path, or why not.
async fn list(state: AppState, parts: Parts) -> Result<Response, BearerError> {
    if !state.mercure.active_subscriptions {
        return Err(
            ApiError::not_found("active subscriptions are off (--mercure-subscriptions)").into(),
        );
    }
    let base = super::hub_url(&parts.headers, &parts.uri, state.config.tls_enabled());
    let path = parts.uri.path().trim_end_matches('/').to_owned();
    let identity = access::identify(&state, &parts, Role::Subscribe, &base).await?;
    let allowed = match &identity {
        Identity::Token(grants) => grants.subscribe.iter().any(|m| m.matches(&path, &base)),
        Identity::Broker(caller) => caller.grants.admin,
        Identity::Anonymous => return Err(BearerError::Missing),
    };
    if !allowed {
        return Err(BearerError::InsufficientScope(
            "no subscribe grant on this subscriptions URL".into(),
        ));
    }
    let docs = state.mercure.subscriptions.under(&path);
    let single = path
        .strip_prefix(PATH)
        .map(|rest| rest.matches('/').count())
        == Some(3);
    let body = if single {
        docs.into_iter()
            .find(|d| d["id"] == path.as_str())
            .ok_or_else(|| ApiError::not_found("no such subscription"))?
    } else {
        json!({"id": path, "type": "subscriptions", "subscriptions": docs})
    };
    let last = super::subscribe::newest_id(&state).await?;
    let mut response = Json(body).into_response();
    let link = format!(
        "<{base}>; rel=\"mercure\"; last-event-id=\"{last}\"; type=\"mercure\"; content-type=\"application/json\""
    );
    if let Ok(value) = HeaderValue::from_str(&link) {
        response.headers_mut().insert(header::LINK, value);
    }
    Ok(response)
}
