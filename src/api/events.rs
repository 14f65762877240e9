//! `GET /events` (alias `GET /sse`): the event stream.

use std::convert::Infallible;
use std::net::IpAddr;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use super::extract::Query;
use crate::auth::StreamCaller;
use crate::client_ip::ClientIp;
use crate::conn::IpSlot;
use crate::error::ApiError;
use crate::hub::StreamSlot;
use crate::names;
use crate::sse::Format;
use crate::state::AppState;
use crate::stream::{ChannelFilter, Start, StreamOptions, Subscription};

/// Query parameters of the stream.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// Comma-separated channels; default every channel the caller may read.
    pub channels: Option<String>,
    /// Resume point when the client cannot send the `Last-Event-ID` header.
    pub last_event_id: Option<String>,
    /// `true` for the JSON envelope.
    pub envelope: Option<String>,
}

/// `GET /events`.
pub async fn events(
    State(state): State<AppState>,
    StreamCaller(caller): StreamCaller,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let channels = match query.channels.as_deref() {
        Some(list) => {
            let channels = names::parse_channel_list(list, state.config.max_channels())
                .map_err(ApiError::bad_request)?;
            for channel in &channels {
                caller.require_read(channel)?;
            }
            Some(channels)
        }
        None => None,
    };
    let format = match query.envelope.as_deref() {
        None | Some("false" | "0" | "") => Format::Native,
        Some("true" | "1") => Format::Envelope,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "envelope must be true or false, got '{other}'"
            )));
        }
    };
    let start = resume_point(&headers, query.last_event_id.as_deref());
    let (slot, per_ip) = admit(&state, ip)?;
    let options = StreamOptions {
        filter: ChannelFilter::new(channels, caller.clone()),
        format,
        client_id: None,
        start,
        expires_at: caller.expires_at,
        record_filter: None,
    };
    let subscription = Subscription::new(&state, options, slot);
    Ok(sse_response(stream_body(
        subscription.into_stream(),
        per_ip,
    )))
}

/// Where a stream resumes: the `Last-Event-ID` header, else the `last_event_id` query value.
pub fn resume_point(headers: &HeaderMap, query_value: Option<&str>) -> Start {
    let header = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    Start::from_last_event_id(header.or(query_value))
}

/// Admits a new stream from the client address `ip`: 503 while shutting down or with
/// `--max-streams` already open, 429 with `--max-streams-per-ip` open from `ip`. Both slots
/// free themselves when dropped; keep the second with the body ([`stream_body`]). An unknown
/// address (`0.0.0.0`: the router is served without connection info) is not capped.
///
/// # Errors
/// 503 or 429 with the reason.
pub fn admit(state: &AppState, ip: IpAddr) -> Result<(StreamSlot, Option<IpSlot>), ApiError> {
    if !state.is_ready() {
        return Err(ApiError::unavailable("shutting down"));
    }
    let per_ip = if ip.is_unspecified() {
        None
    } else {
        let slot = state.streams_per_ip.slot(ip).ok_or_else(|| {
            state.metrics.refused_streams_per_ip.inc();
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many streams from your address",
            )
        })?;
        Some(slot)
    };
    let slot = state.hub.open_stream().ok_or_else(|| {
        state.metrics.refused_streams.inc();
        ApiError::unavailable("too many open streams")
    })?;
    Ok((slot, per_ip))
}

/// A stream's response body, holding its address's stream slot until the stream ends.
pub fn stream_body<S>(stream: S, per_ip: Option<IpSlot>) -> Body
where
    S: Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    Body::from_stream(stream.map(move |item| {
        let _held = &per_ip;
        item
    }))
}

/// Wraps a stream body with the headers an SSE response needs.
pub fn sse_response(body: Body) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell reverse proxies (nginx) not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
