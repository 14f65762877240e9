//! `POST /insert`: store an event durably, then publish it.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::body::JsonBody;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::names;
use crate::state::AppState;
use crate::store::{NewRecord, Record};

/// The body of `POST /insert`.
#[derive(Debug, Deserialize)]
pub struct InsertRequest {
    /// Event name.
    pub event: String,
    /// Any JSON value.
    pub data: serde_json::Value,
    /// Target channel; `default` when absent.
    #[serde(default)]
    pub channel: Option<String>,
}

/// The answer to a successful insert.
#[derive(Debug, Serialize)]
pub struct Inserted {
    /// Record id (decimal string).
    pub id: String,
    /// Event name.
    pub event: String,
    /// Channel.
    pub channel: String,
    /// Microseconds since the Unix epoch.
    pub timestamp: u64,
}

impl From<&Record> for Inserted {
    fn from(r: &Record) -> Self {
        Self {
            id: r.id.to_string(),
            event: r.event.clone(),
            channel: r.channel.clone(),
            timestamp: r.timestamp,
        }
    }
}

/// Serializes `data` to compact JSON (one line, as SSE `data:` needs).
pub fn compact(data: &serde_json::Value) -> Result<Box<RawValue>, ApiError> {
    serde_json::value::to_raw_value(data).map_err(ApiError::internal)
}

/// Appends records and counts them; the single way every endpoint stores events.
///
/// # Errors
/// 503 when shutting down, 500 on a storage failure.
pub async fn store_records(
    state: &AppState,
    batch: Vec<NewRecord>,
) -> Result<Vec<Arc<Record>>, ApiError> {
    let started = Instant::now();
    let records = state.store.append(batch).await?;
    state
        .metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    state.metrics.inserts.inc_by(records.len() as u64);
    Ok(records)
}

/// `POST /insert`.
pub async fn insert(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<InsertRequest>,
) -> Result<Json<Inserted>, ApiError> {
    names::check_event(&req.event).map_err(ApiError::bad_request)?;
    let channel = req
        .channel
        .unwrap_or_else(|| names::DEFAULT_CHANNEL.to_owned());
    names::check_channel(&channel).map_err(ApiError::bad_request)?;
    caller.require_write(&channel)?;
    let record = NewRecord {
        channel,
        event: req.event,
        user: caller.user,
        data: compact(&req.data)?,
    };
    let records = store_records(&state, vec![record]).await?;
    let record = records
        .first()
        .ok_or_else(|| ApiError::internal("store returned no record"))?;
    Ok(Json(Inserted::from(record.as_ref())))
}
