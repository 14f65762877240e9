//! `GET /channels` (every channel with its counts and last activity) and `GET /latest` (one
//! channel's latest version of each event), for the admin console and any reader.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::extract::Query;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::names;
use crate::state::AppState;
use crate::store::ChannelSummary;

/// Answer of `GET /channels`.
#[derive(Debug, Serialize)]
pub struct ChannelList {
    channels: Vec<ChannelSummary>,
}

/// `GET /channels`: the channels the caller may read that hold records, sorted by name, with
/// their record count, distinct events, newest id and last activity.
///
/// # Errors
/// 401 without credentials; a store failure.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ChannelList>, ApiError> {
    let mut channels = state.store.channels().await?;
    channels.retain(|c| caller.can_read(&c.channel));
    Ok(Json(ChannelList { channels }))
}

/// Query of `GET /latest`.
#[derive(Debug, Deserialize)]
pub struct LatestQuery {
    /// Channel (default `default`).
    pub channel: Option<String>,
}

/// One event's latest version in `GET /latest`.
#[derive(Debug, Serialize)]
pub struct LatestItem {
    id: String,
    event: String,
    timestamp: u64,
    user: Option<String>,
    data: Box<RawValue>,
}

/// Answer of `GET /latest`.
#[derive(Debug, Serialize)]
pub struct LatestList {
    channel: String,
    /// In id order, oldest first.
    items: Vec<LatestItem>,
}

/// `GET /latest?channel=`: the latest version of every event of one channel.
///
/// # Errors
/// 400 for a bad channel name; 403 when the caller may not read it; a store failure.
pub async fn latest(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<LatestQuery>,
) -> Result<Json<LatestList>, ApiError> {
    let channel = query
        .channel
        .unwrap_or_else(|| names::DEFAULT_CHANNEL.to_owned());
    names::check_channel(&channel).map_err(ApiError::bad_request)?;
    caller.require_read(&channel)?;
    let records = state.store.latest(Some(vec![channel.clone()])).await?;
    let items = records
        .iter()
        .map(|r| LatestItem {
            id: r.id.to_string(),
            event: r.event.clone(),
            timestamp: r.timestamp,
            user: r.user.clone(),
            data: r.data.clone(),
        })
        .collect();
    Ok(Json(LatestList { channel, items }))
}
