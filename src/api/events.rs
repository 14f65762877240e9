//! `GET /events` (alias `GET /sse`): the event stream.

use axum::body::Body;
use axum::extract::State;

use super::extract::Query;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::auth::StreamCaller;
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
    let slot = admit(&state)?;
    let options = StreamOptions {
        filter: ChannelFilter::new(channels, caller.clone()),
        format,
        client_id: None,
        start,
        expires_at: caller.expires_at,
    };
    let subscription = Subscription::new(&state, options, slot);
    Ok(sse_response(Body::from_stream(subscription.into_stream())))
}

/// Where a stream resumes: the `Last-Event-ID` header, else the `last_event_id` query value.
pub fn resume_point(headers: &HeaderMap, query_value: Option<&str>) -> Start {
    let header = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    Start::from_last_event_id(header.or(query_value))
}

/// Admits a new stream: 503 while shutting down or with `--max-streams` already open.
///
/// # Errors
/// 503 with the reason.
pub fn admit(state: &AppState) -> Result<StreamSlot, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::unavailable("shutting down"));
    }
    state.hub.open_stream().ok_or_else(|| {
        state.metrics.refused_streams.inc();
        ApiError::unavailable("too many open streams")
    })
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
