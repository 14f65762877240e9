//! `GET /.well-known/mercure`: subscribe to topics over SSE.
//!
//! Query: any number of `match` / `match_exact` (exact), `match_urlpattern` (URL Pattern) and
//! the older `topic` (`*`, exact, or URI template); the resume point in `Last-Event-ID`, else
//! `last_event_id`, else the older `lastEventID`. Without a resume point only new updates are
//! sent. `earliest` and an id Broker does not know send every update Broker holds (it keeps
//! them all); a known id sends everything after it. The response names the update preceding
//! the first one sent, in `Mercure-Last-Event-ID` and (for older clients) `Last-Event-ID`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use url::Url;

use super::access::{self, MercureFilter};
use super::bearer::BearerError;
use super::matcher::{Matcher, has_forbidden_chars};
use super::token::Role;
use super::update::{self, PRIVATE_CHANNEL, PUBLIC_CHANNEL};
use crate::api::events::{admit, sse_response, stream_body};
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::sse::Format;
use crate::state::AppState;
use crate::stream::{ChannelFilter, Start, StreamOptions, Subscription};

/// Most matchers in one subscription.
pub const MAX_MATCHERS: usize = 100;

/// `GET /.well-known/mercure`.
pub async fn subscribe(
    State(state): State<AppState>,
    client_ip: ClientIp,
    parts: Parts,
) -> Response {
    let metadata = super::metadata::url(&state, &parts.headers, &parts.uri);
    open(state, client_ip, parts)
        .await
        .unwrap_or_else(|e| e.respond(&metadata))
}

/// Opens a subscription, or says why not.
async fn open(
    state: AppState,
    ClientIp(ip): ClientIp,
    parts: Parts,
) -> Result<Response, BearerError> {
    let base = super::hub_url(&parts.headers, &parts.uri, state.config.tls_enabled());
    let query = parts.uri.query().unwrap_or("");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| ApiError::bad_request("malformed query string"))?;
    let Parsed {
        selectors,
        described,
        cursor: query_cursor,
    } = parse_query(&pairs, &base)?;
    let identity = access::identify(&state, &parts, Role::Subscribe, &base).await?;
    let header_cursor = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let requested = header_cursor.or(query_cursor);
    let (start, preceding) = resume(&state, requested.as_deref()).await?;
    let (slot, per_ip) = admit(&state, ip)?;
    let caller = identity.caller();
    // Subscription events carry the payload the token gives each matcher.
    let described: Vec<_> = if state.mercure.active_subscriptions {
        described
            .into_iter()
            .map(|(kind, matcher)| {
                let payload = identity.payload_for(&matcher, &base);
                (kind, matcher, payload)
            })
            .collect()
    } else {
        Vec::new()
    };
    let options = StreamOptions {
        filter: ChannelFilter::new(None, caller),
        format: Format::Mercure,
        client_id: None,
        start,
        expires_at: identity.expires_at(),
        record_filter: Some(Arc::new(MercureFilter {
            selectors,
            identity,
            base,
        })),
    };
    let mut subscription = Subscription::new(&state, options, slot);
    if state.mercure.active_subscriptions {
        let subscriber = super::publish::generated_id();
        let announced = super::subscriptions::announce(&state, &described, subscriber).await?;
        subscription = subscription.with_guard(Box::new(announced));
    }
    let mut response = sse_response(stream_body(subscription.into_stream(), per_ip));
    if let Ok(value) = HeaderValue::from_str(&preceding) {
        let headers = response.headers_mut();
        if requested.is_some() {
            headers.insert("mercure-last-event-id", value.clone());
        }
        headers.insert("last-event-id", value);
    }
    response.headers_mut().insert(
        header::HeaderName::from_static("link"),
        HeaderValue::from_static("</.well-known/mercure>; rel=\"mercure\""),
    );
    Ok(response)
}

/// The matchers and the query's resume point (`last_event_id`, else `lastEventID`).
fn parse_query(pairs: &[(String, String)], base: &Url) -> Result<Parsed, ApiError> {
    let mut selectors = Vec::new();
    let mut described = Vec::new();
    let mut cursor = None;
    let mut legacy_cursor = None;
    for (name, value) in pairs {
        let (kind, matcher) = match name.as_str() {
            "match" | "match_exact" => ("exact", Matcher::exact(value)),
            "match_urlpattern" => ("urlpattern", Matcher::url_pattern(value, base)),
            "topic" => ("exact", Matcher::selector(value)),
            "last_event_id" => {
                cursor.get_or_insert_with(|| value.clone());
                continue;
            }
            "lastEventID" => {
                legacy_cursor.get_or_insert_with(|| value.clone());
                continue;
            }
            other if other.len() >= 5 && other[..5].eq_ignore_ascii_case("match") => {
                return Err(ApiError::bad_request(format!(
                    "unsupported matcher type '{other}': use match, match_exact or match_urlpattern"
                )));
            }
            _ => continue,
        };
        selectors.push(matcher.map_err(ApiError::bad_request)?);
        described.push((kind, value.clone()));
        if selectors.len() > MAX_MATCHERS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_MATCHERS} topic matchers per subscription"
            )));
        }
    }
    if selectors.is_empty() {
        return Err(ApiError::bad_request(
            "at least one match, match_urlpattern or topic parameter is required",
        ));
    }
    Ok(Parsed {
        selectors,
        described,
        cursor: cursor.or(legacy_cursor),
    })
}

/// A subscription's query: its matchers, each as `(match_type, match)`, and its resume point.
struct Parsed {
    selectors: Vec<Matcher>,
    described: Vec<(&'static str, String)>,
    cursor: Option<String>,
}

/// The id of the newest update, as a Mercure client names it; `earliest` when there is none.
///
/// # Errors
/// A store failure.
pub async fn newest_id(state: &AppState) -> Result<String, ApiError> {
    let last = state.store.last_id().await?;
    newest_id_of(state, last).await
}

/// The Mercure id of record `last`: a public update's own id, otherwise the record id (which
/// names no private update's id).
async fn newest_id_of(state: &AppState, last: u64) -> Result<String, ApiError> {
    if last == 0 {
        return Ok("earliest".to_owned());
    }
    let records = state.store.records(vec![last], 64 * 1024).await?;
    Ok(records
        .first()
        .filter(|r| r.channel == PUBLIC_CHANNEL)
        .map_or_else(|| last.to_string(), |r| update::mercure_id(r)))
}

/// Where the stream starts for a requested resume point, and the id of the update preceding
/// the first one it sends (`earliest` when none does).
async fn resume(state: &AppState, requested: Option<&str>) -> Result<(Start, String), ApiError> {
    let earliest = || (Start::After(0), "earliest".to_owned());
    let Some(value) = requested.map(str::trim) else {
        // Only new updates: the newest record is the one preceding them. Read before the
        // stream registers with the hub, it is where the stream's replay starts, so nothing
        // committed in between is missed.
        let last = state.store.last_id().await?;
        return Ok((Start::After(last), newest_id_of(state, last).await?));
    };
    if value.is_empty() || value == "earliest" || has_forbidden_chars(value) {
        return Ok(earliest());
    }
    if crate::names::check_event(value).is_ok() {
        // The earliest update with this id, should two nodes have stored it at once.
        let mut found = None;
        for channel in [PUBLIC_CHANNEL, PRIVATE_CHANNEL] {
            let first = state
                .store
                .versions(channel, value, 0, 1, 64 * 1024)
                .await?;
            if let Some(record) = first.first() {
                found = Some(found.map_or(record.id, |id: u64| id.min(record.id)));
            }
        }
        if let Some(id) = found {
            return Ok((Start::After(id), value.to_owned()));
        }
    }
    if let Ok(id) = value.parse::<u64>()
        && id <= state.store.last_id().await?
    {
        return Ok((Start::After(id), value.to_owned()));
    }
    // An id Broker does not know: everything it holds (and it holds everything).
    Ok(earliest())
}
