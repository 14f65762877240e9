//! Active subscriptions (`--mercure-subscriptions`): subscription events and the
//! subscriptions API.
//!
//! Each matcher of a new subscription is announced as a private update of the topic
//! `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}` (the variables
//! percent-encoded once), event type `mercure`, data
//! `{"id", "type": "subscription", "match_type", "match", "subscriber", "active": true}`; its end,
//! whatever ends it, the same way with `"active": false`. The events are records like every
//! update, so they reach subscribers on every node. The API lists the subscriptions of the node
//! that answers: a cluster's nodes each know their own.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::Json;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::access::{self, Identity};
use super::bearer::BearerError;
use super::token::Role;
use super::update::{PRIVATE_CHANNEL, StoredUpdate};
use crate::api::insert::store_records;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::NewRecord;

/// Path of the subscriptions collection.
pub const PATH: &str = "/.well-known/mercure/subscriptions";

/// This node's active subscriptions, by topic (the document's `id`).
#[derive(Default)]
pub struct Registry {
    active: Mutex<BTreeMap<String, Value>>,
}

impl Registry {
    fn insert(&self, docs: &[Value]) {
        if let Ok(mut active) = self.active.lock() {
            for doc in docs {
                if let Some(id) = doc["id"].as_str() {
                    active.insert(id.to_owned(), doc.clone());
                }
            }
        }
    }

    fn remove(&self, docs: &[Value]) {
        if let Ok(mut active) = self.active.lock() {
            for doc in docs {
                if let Some(id) = doc["id"].as_str() {
                    active.remove(id);
                }
            }
        }
    }

    /// The documents whose id is `path` or lies under it.
    fn under(&self, path: &str) -> Vec<Value> {
        let prefix = format!("{path}/");
        self.active.lock().map_or_else(
            |_| Vec::new(),
            |active| {
                active
                    .iter()
                    .filter(|(id, _)| *id == path || id.starts_with(&prefix))
                    .map(|(_, doc)| doc.clone())
                    .collect()
            },
        )
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

/// Announces the matchers (`(match_type, match)`) of a new subscription of `subscriber`.
///
/// # Errors
/// When the events cannot be stored.
pub async fn announce(
    state: &AppState,
    matchers: &[(&'static str, String)],
    subscriber: String,
) -> Result<Announced, ApiError> {
    let docs: Vec<Value> = matchers
        .iter()
        .map(|(match_type, matcher)| {
            json!({
                "id": topic(match_type, matcher, &subscriber),
                "type": "subscription",
                "match_type": match_type,
                "match": matcher,
                "subscriber": subscriber,
                "active": true,
            })
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
pub async fn subscriptions(
    State(state): State<AppState>,
    parts: Parts,
) -> Result<Response, BearerError> {
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
