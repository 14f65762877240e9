//! `GET /audit/{event}` (every version as one object) and `GET /history/{event}` (paginated).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::extract::{Path, Query, page_limit};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::names;
use crate::state::AppState;
use crate::store::{Record, Store, page_full};

/// Largest page of `/history`.
const MAX_HISTORY_LIMIT: usize = 1000;
/// Versions read from the store per page of `/audit`.
const AUDIT_PAGE: usize = 1000;
/// Bytes of versions read per page of `/audit` and at most in one page of `/history` (a
/// single larger version still comes whole).
const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Query of `/audit`.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Channel (default `default`).
    pub channel: Option<String>,
}

/// The channel asked for, once the caller is allowed to read it. The Mercure hub's channels
/// (`$mercure`, `$mercure.private`) are readable here too: public updates by whoever may read
/// the channel, private ones by admins only.
fn channel_for(caller: &Caller, channel: Option<String>) -> Result<String, ApiError> {
    let channel = channel.unwrap_or_else(|| names::DEFAULT_CHANNEL.to_owned());
    if channel == crate::mercure::update::PRIVATE_CHANNEL {
        caller.require_admin()?;
        return Ok(channel);
    }
    if channel != crate::mercure::update::PUBLIC_CHANNEL {
        names::check_channel(&channel).map_err(ApiError::bad_request)?;
    }
    caller.require_read(&channel)?;
    Ok(channel)
}

/// `GET /audit/{event}`: every version as one JSON object, oldest first, keyed
/// `{event}_v_{timestamp}`. The object is streamed a page of versions at a time, so an event
/// with a long history never sits in memory whole.
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(event): Path<String>,
    Query(query): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let channel = channel_for(&caller, query.channel)?;
    let first = state
        .store
        .versions(&channel, &event, 0, AUDIT_PAGE, PAGE_BYTES)
        .await?;
    if first.is_empty() {
        return Err(ApiError::not_found(format!(
            "no event '{event}' in channel '{channel}'"
        )));
    }
    let pages = AuditPages {
        store: state.store.clone(),
        channel,
        event,
        next: Some(first),
        opened: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(pages, AuditPages::next_chunk));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The audit object being written: the page in hand, then the ones after it.
struct AuditPages {
    store: Arc<dyn Store>,
    channel: String,
    event: String,
    /// The page to write next; `None` once the closing brace is written.
    next: Option<Vec<Arc<Record>>>,
    /// Whether the opening brace (and so at least one entry) is written.
    opened: bool,
}

impl AuditPages {
    /// The next piece of the JSON object, reading the page after it meanwhile.
    async fn next_chunk(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        let page = self.next.take()?;
        let mut out = Vec::with_capacity(page.iter().map(|r| r.size()).sum::<usize>() + 2);
        for record in &page {
            out.push(if self.opened { b',' } else { b'{' });
            self.opened = true;
            let key = format!("{}_v_{}", record.event, record.timestamp);
            if let Err(e) = serde_json::to_writer(&mut out, &key) {
                return Some((Err(std::io::Error::other(e)), self));
            }
            out.push(b':');
            out.extend_from_slice(record.data.get().as_bytes());
        }
        let bytes: usize = page.iter().map(|r| r.size()).sum();
        let last = page.len() < AUDIT_PAGE && !page_full(page.len(), bytes, PAGE_BYTES);
        match page.last() {
            Some(record) if !last => {
                let after = record.id;
                match self
                    .store
                    .versions(&self.channel, &self.event, after, AUDIT_PAGE, PAGE_BYTES)
                    .await
                {
                    Ok(next) => self.next = Some(next),
                    Err(e) => {
                        // The status is sent already: cut the body so the client sees an
                        // incomplete object, never a complete-looking wrong one.
                        tracing::error!(error = %e, "audit log read failed");
                        return Some((Err(std::io::Error::other(e)), self));
                    }
                }
            }
            _ => out.push(b'}'),
        }
        Some((Ok(Bytes::from(out)), self))
    }
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
    let limit = page_limit(query.limit.as_deref(), 100, MAX_HISTORY_LIMIT)?;
    let mut versions = state
        .store
        .versions(&channel, &event, after, limit + 1, PAGE_BYTES)
        .await?;
    let bytes: usize = versions.iter().map(|r| r.size()).sum();
    // A page the byte bound cut short has more after it (or an empty page, at worst).
    let more = versions.len() > limit || page_full(versions.len(), bytes, PAGE_BYTES);
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
