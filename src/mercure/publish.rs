//! `POST /.well-known/mercure`: publish an update (`application/x-www-form-urlencoded`).
//!
//! Fields: `topic` (one or more: the canonical topic, then alternates), `data`, `private`
//! (present means private, whatever its value), `id`, `type`, `retry`; others are ignored.
//! The update is stored durably before the answer, `200 text/plain` with its id. A
//! publisher-supplied id is kept; one that an update already has gets `409`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::access::{self, Identity};
use super::bearer::BearerError;
use super::matcher::{MAX_MATCHER_LEN, has_forbidden_chars};
use super::token::Role;
use super::update::{BROKER_SCHEME, PRIVATE_CHANNEL, PUBLIC_CHANNEL, StoredUpdate};
use crate::api::insert::store_records;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::NewRecord;

/// Most topics in one update.
pub const MAX_TOPICS: usize = 100;
/// Longest update id, in bytes (a Broker event name).
pub const MAX_ID_LEN: usize = 256;

/// The fields of a publish request.
#[derive(Debug, Default)]
struct Form {
    topics: Vec<String>,
    data: Option<String>,
    private: bool,
    id: Option<String>,
    kind: Option<String>,
    retry: Option<u64>,
}

/// `POST /.well-known/mercure`.
pub async fn publish(State(state): State<AppState>, parts: Parts, body: Bytes) -> Response {
    let metadata = super::metadata::url(&state, &parts.headers, &parts.uri);
    store(state, parts, body)
        .await
        .unwrap_or_else(|e| e.respond(&metadata))
}

/// Stores an update and answers its id, or says why not.
async fn store(state: AppState, parts: Parts, body: Bytes) -> Result<Response, BearerError> {
    let form_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "publish with Content-Type: application/x-www-form-urlencoded",
        )
        .into());
    }
    let base = super::hub_url(&parts.headers, &parts.uri, state.config.tls_enabled());
    let form = parse_form(&body, &base)?;
    let identity = access::identify(&state, &parts, Role::Publish, &base).await?;
    identity.may_publish(&form.topics, &base)?;
    let user = match &identity {
        Identity::Broker(caller) => caller.user.clone(),
        _ => None,
    };
    let channel = if form.private {
        PRIVATE_CHANNEL
    } else {
        PUBLIC_CHANNEL
    };
    let stored = StoredUpdate {
        topics: form.topics,
        data: form.data.unwrap_or_default(),
        private: form.private,
        kind: form.kind,
        retry: form.retry,
    };
    let data = serde_json::value::to_raw_value(&stored).map_err(ApiError::internal)?;
    let id = match form.id {
        Some(id) => {
            let _one_at_a_time = state.mercure.publish_ids.lock().await;
            for existing in [PUBLIC_CHANNEL, PRIVATE_CHANNEL] {
                if state.store.latest_of(existing, &id).await?.is_some() {
                    return Err(
                        ApiError::conflict(format!("an update with id '{id}' exists")).into(),
                    );
                }
            }
            append(&state, channel, id, user, data).await?
        }
        None => append(&state, channel, generated_id(), user, data).await?,
    };
    let mut response = (StatusCode::OK, id).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

async fn append(
    state: &AppState,
    channel: &str,
    id: String,
    user: Option<String>,
    data: Box<serde_json::value::RawValue>,
) -> Result<String, ApiError> {
    let record = NewRecord {
        channel: channel.to_owned(),
        event: id.clone(),
        user,
        data,
    };
    store_records(state, vec![record]).await?;
    Ok(id)
}

/// A generated update id: `urn:uuid:` and a random (version 4) UUID.
pub fn generated_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn parse_form(body: &[u8], base: &url::Url) -> Result<Form, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| ApiError::bad_request("malformed form body"))?;
    let mut form = Form::default();
    for (name, value) in pairs {
        match name.as_str() {
            "topic" => {
                check_topic(&value, base)?;
                form.topics.push(value);
                if form.topics.len() > MAX_TOPICS {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("at most {MAX_TOPICS} topics per update"),
                    ));
                }
            }
            "data" => form.data = Some(value),
            "private" => form.private = true,
            "id" => form.id = Some(check_id(value)?),
            "type" => {
                if has_forbidden_chars(&value) || value == "mercure" || value.is_empty() {
                    return Err(ApiError::bad_request(
                        "type must be non-empty, not 'mercure', without control characters",
                    ));
                }
                form.kind = Some(value);
            }
            "retry" => {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ApiError::bad_request("retry must be ASCII digits"));
                }
                let retry = value
                    .parse()
                    .map_err(|_| ApiError::bad_request("retry is too large"))?;
                form.retry = Some(retry);
            }
            _ => {}
        }
    }
    if form.topics.is_empty() {
        return Err(ApiError::bad_request("at least one topic is required"));
    }
    Ok(form)
}

fn check_topic(topic: &str, base: &url::Url) -> Result<(), ApiError> {
    if topic.is_empty() || topic.len() > MAX_MATCHER_LEN || has_forbidden_chars(topic) {
        return Err(ApiError::bad_request(format!(
            "a topic must be 1 to {MAX_MATCHER_LEN} bytes without control or format characters"
        )));
    }
    if topic == "*" {
        return Err(ApiError::bad_request(
            "the topic '*' is reserved for the wildcard",
        ));
    }
    if topic.starts_with(BROKER_SCHEME) {
        return Err(ApiError::bad_request(
            "broker:// topics are Broker's own records: insert them with POST /insert",
        ));
    }
    if addresses_hub(topic, base) {
        return Err(ApiError::bad_request(
            "topics under /.well-known/mercure are reserved for the hub",
        ));
    }
    Ok(())
}

/// Whether `topic`, resolved against the hub's URL, names the hub's path or one below it
/// (dot-segments removed and percent-encoded unreserved characters decoded first).
fn addresses_hub(topic: &str, base: &url::Url) -> bool {
    let Ok(url) = base.join(topic) else {
        return false;
    };
    let decoded = decode_unreserved(url.path());
    let path = base.join(&decoded).map_or(decoded, |u| u.path().to_owned());
    path == super::HUB_PATH || path.starts_with(&format!("{}/", super::HUB_PATH))
}

/// `path` with `%XX` escapes of unreserved characters (letters, digits, `-._~`) decoded.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = path.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
            && (byte.is_ascii_alphanumeric() || b"-._~".contains(&byte))
        {
            out.push(char::from(byte));
            i += 3;
            continue;
        }
        let ch = path[i..].chars().next().unwrap_or('\u{FFFD}');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

fn check_id(id: String) -> Result<String, ApiError> {
    if id.starts_with('#') || id == "earliest" || has_forbidden_chars(&id) {
        return Err(ApiError::bad_request(
            "id must not start with '#', be 'earliest' or contain control characters",
        ));
    }
    crate::names::check_event(&id)
        .map_err(|e| ApiError::bad_request(format!("id is not usable: {e}")))?;
    if id.len() > MAX_ID_LEN {
        return Err(ApiError::bad_request("id longer than 256 bytes"));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_namespace() {
        let base = url::Url::parse("https://hub.example/.well-known/mercure").expect("url");
        assert!(addresses_hub("/.well-known/mercure/subscriptions/x", &base));
        assert!(addresses_hub(
            "https://other.example/.well-known/mercure",
            &base
        ));
        assert!(addresses_hub("/.well-known/%6Dercure/x", &base));
        assert!(addresses_hub("/.well-known/x/../mercure/y", &base));
        assert!(!addresses_hub("https://example.com/books/1", &base));
        assert!(!addresses_hub("/.well-known/mercurey", &base));
    }

    #[test]
    fn generated_ids_are_uuids() {
        let id = generated_id();
        assert_eq!(id.len(), "urn:uuid:".len() + 36);
        assert_eq!(&id[23..24], "4");
    }
}
