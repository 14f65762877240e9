//! `GET /audit/{event}` (every version as one object) and `GET /history/{event}` (paginated).

use axum::Json;
use axum::extract::State;

use super::extract::{Path, Query};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use std::sync::Arc;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::names;
use crate::state::AppState;
use crate::store::Record;

/// Largest page of `/history`.
const MAX_HISTORY_LIMIT: usize = 1000;

/// Query of `/audit`.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Channel (default `default`).
    pub channel: Option<String>,
}

/// Every version of an event, oldest first, keyed `{event}_v_{timestamp}`.
pub struct AuditLog(Vec<Arc<Record>>);

impl Serialize for AuditLog {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for record in &self.0 {
            map.serialize_entry(
                &format!("{}_v_{}", record.event, record.timestamp),
                &*record.data,
            )?;
        }
        map.end()
    }
}

fn channel_for(caller: &Caller, channel: Option<String>) -> Result<String, ApiError> {
    let channel = channel.unwrap_or_else(|| names::DEFAULT_CHANNEL.to_owned());
    names::check_channel(&channel).map_err(ApiError::bad_request)?;
    caller.require_read(&channel)?;
    Ok(channel)
}

/// `GET /audit/{event}`.
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(event): Path<String>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditLog>, ApiError> {
    let channel = channel_for(&caller, query.channel)?;
    let versions = state
        .store
        .versions(&channel, &event, 0, usize::MAX)
        .await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!(
            "no event '{event}' in channel '{channel}'"
        )));
    }
    Ok(Json(AuditLog(versions)))
}

/// Query of `/history`.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    /// Channel (default `default`).
    pub channel: Option<String>,
    /// Only versions with a greater id.
    pub after: Option<String>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<String>,
}

/// One version in `/history`.
#[derive(Debug, Serialize)]
pub struct HistoryItem {
    id: String,
    event: String,
    channel: String,
    timestamp: u64,
    user: Option<String>,
    data: Box<RawValue>,
}

/// A page of `/history`.
#[derive(Debug, Serialize)]
pub struct HistoryPage {
    items: Vec<HistoryItem>,
    /// Pass as `after` for the next page; `null` on the last page.
    next: Option<String>,
}

/// `GET /history/{event}`.
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(event): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let channel = channel_for(&caller, query.channel)?;
    let after = match query.after.as_deref() {
        None | Some("") => 0,
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::bad_request("after must be a record id"))?,
    };
    let limit = match query.limit.as_deref() {
        None | Some("") => 100,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_HISTORY_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "limit must be a number from 1 to 1000",
                ));
            }
        },
    };
    let mut versions = state
        .store
        .versions(&channel, &event, after, limit + 1)
        .await?;
    let more = versions.len() > limit;
    versions.truncate(limit);
    let next = if more {
        versions.last().map(|r| r.id.to_string())
    } else {
        None
    };
    let items = versions
        .iter()
        .map(|r| HistoryItem {
            id: r.id.to_string(),
            event: r.event.clone(),
            channel: r.channel.clone(),
            timestamp: r.timestamp,
            user: r.user.clone(),
            data: r.data.clone(),
        })
        .collect();
    Ok(Json(HistoryPage { items, next }))
}
