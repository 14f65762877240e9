//! node-sse-server's wire protocol: `GET /subscribe`, `POST /publish`, `GET /lastEvent`, and
//! `GET /presence`. Same data as the native endpoints: a channel here is a channel there, a
//! published event is a stored record (channel = `channelName`, event = `type`,
//! data = `payload`), so it is durable, audited and visible on `/events` too.

use axum::Json;
use axum::extract::State;

use super::extract::Query;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::JsonBody;
use super::events::{admit, resume_point, sse_response, stream_body};
use super::insert::{compact, store_records};
use crate::auth::{Caller, StreamCaller};
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::names;
use crate::sse::{self, Format};
use crate::state::AppState;
use crate::store::NewRecord;
use crate::stream::{ChannelFilter, StreamOptions, Subscription};

/// Longest accepted `clientId`.
const MAX_CLIENT_ID: usize = 128;

/// Query of `/subscribe`.
#[derive(Debug, Deserialize)]
pub struct SubscribeQuery {
    /// Comma-separated channels (required).
    pub channels: Option<String>,
    /// The client's id; generated when absent.
    #[serde(rename = "clientId")]
    pub client_id: Option<String>,
    /// Resume point when the client cannot send the `Last-Event-ID` header.
    pub last_event_id: Option<String>,
}

/// `GET /subscribe?channels=a,b[&clientId=x]`.
pub async fn subscribe(
    State(state): State<AppState>,
    StreamCaller(caller): StreamCaller,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Query(query): Query<SubscribeQuery>,
) -> Result<Response, ApiError> {
    let list = query
        .channels
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("channels is required: /subscribe?channels=a,b"))?;
    let channels = names::parse_channel_list(list, state.config.max_channels())
        .map_err(ApiError::bad_request)?;
    for channel in &channels {
        caller.require_read(channel)?;
    }
    let client_id = match query.client_id.filter(|id| !id.is_empty()) {
        Some(id) if id.len() > MAX_CLIENT_ID || id.chars().any(char::is_control) => {
            return Err(ApiError::bad_request(
                "clientId must be 1 to 128 bytes without control characters",
            ));
        }
        Some(id) => id,
        None => format!("{:016x}", rand::random::<u64>()),
    };
    let start = resume_point(&headers, query.last_event_id.as_deref());
    let guard = state
        .presence
        .join(&client_id, caller.user.as_deref(), &channels)
        .map_err(|taken| ApiError::conflict(taken.to_string()))?;
    let (slot, per_ip) = admit(&state, ip)?;
    let options = StreamOptions {
        filter: ChannelFilter::new(Some(channels), caller.clone()),
        format: Format::Compat,
        client_id: Some(client_id),
        start,
        expires_at: caller.expires_at,
        record_filter: None,
    };
    let subscription = Subscription::new(&state, options, slot).with_presence(guard);
    Ok(sse_response(stream_body(
        subscription.into_stream(),
        per_ip,
    )))
}

/// Body of `POST /publish`.
#[derive(Debug, Deserialize)]
pub struct PublishRequest {
    /// The events to publish, all or none.
    pub events: Value,
}

/// Checks one entry of a publish batch and turns it into a record.
fn publish_entry(index: usize, entry: &Value, caller: &Caller) -> Result<NewRecord, ApiError> {
    let at = |msg: &str| ApiError::bad_request(format!("events[{index}]: {msg}"));
    let object = entry.as_object().ok_or_else(|| at("must be an object"))?;
    let field = |name: &str| object.get(name).filter(|v| !v.is_null());
    let channel = field("channelName")
        .ok_or_else(|| at("channelName is required"))?
        .as_str()
        .ok_or_else(|| at("channelName must be a string"))?;
    let kind = field("type")
        .ok_or_else(|| at("type is required"))?
        .as_str()
        .ok_or_else(|| at("type must be a string"))?;
    let payload = field("payload").ok_or_else(|| at("payload is required"))?;
    names::check_channel(channel).map_err(|e| at(&e))?;
    names::check_event(kind).map_err(|e| at(&e))?;
    caller.require_write(channel)?;
    Ok(NewRecord {
        channel: channel.to_owned(),
        event: kind.to_owned(),
        user: caller.user.clone(),
        data: compact(payload)?,
    })
}

/// Checks every entry of a publish request (names, fields, the caller's write permission) and
/// turns them into records, in order.
///
/// # Errors
/// 400 naming the first bad entry, 403 for a channel the caller may not write.
pub fn publish_batch(req: &PublishRequest, caller: &Caller) -> Result<Vec<NewRecord>, ApiError> {
    req.events
        .as_array()
        .ok_or_else(|| ApiError::bad_request("events must be an array"))?
        .iter()
        .enumerate()
        .map(|(i, entry)| publish_entry(i, entry, caller))
        .collect()
}

/// `POST /publish`: validates every event first, then stores them in one atomic commit.
pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<PublishRequest>,
) -> Result<Json<Value>, ApiError> {
    let batch = publish_batch(&req, &caller)?;
    let records = store_records(&state, batch).await?;
    let ids: Vec<String> = records.iter().map(|r| r.id.to_string()).collect();
    Ok(Json(json!({ "published": ids.len(), "ids": ids })))
}

/// Query naming one channel.
#[derive(Debug, Deserialize)]
pub struct ChannelQuery {
    /// The channel.
    pub channel: Option<String>,
}

/// `GET /lastEvent?channel=c` → `{"response": "<last value>"}` (`"{}"` for an empty channel).
pub async fn last_event(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ChannelQuery>,
) -> Result<Json<Value>, ApiError> {
    let channel = query
        .channel
        .ok_or_else(|| ApiError::bad_request("channel is required"))?;
    names::check_channel(&channel).map_err(ApiError::bad_request)?;
    caller.require_read(&channel)?;
    let latest = state.store.latest(Some(vec![channel])).await?;
    let value = latest
        .iter()
        .max_by_key(|r| r.id)
        .map_or_else(|| "{}".to_owned(), |r| sse::compat_last_value(r));
    Ok(Json(json!({ "response": value })))
}

/// `GET /presence[?channel=c]`: connected clients (of `c`, or of every channel the caller may
/// read), each with the channels the caller may see.
pub async fn presence(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ChannelQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(channel) = &query.channel {
        names::check_channel(channel).map_err(ApiError::bad_request)?;
        caller.require_read(channel)?;
    }
    let mut clients = state.presence.clients(query.channel.as_deref());
    for client in &mut clients {
        client.channels.retain(|c| caller.can_read(c));
    }
    clients.retain(|c| !c.channels.is_empty());
    Ok(Json(json!({ "clients": clients })))
}
