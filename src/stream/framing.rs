//! The frames a stream writes besides the records' own shared ones: the opening `retry`,
//! `$reset`, `$synced`, node-sse-server's opening, the keep-alive comment and the last frame
//! of a stream that ends, for each wire ([`Format`]).

use bytes::Bytes;

use crate::sse::{self, Format};
use crate::store::Record;

/// The first frame of every stream: the client's reconnection delay.
pub(super) fn retry(millis: u64) -> Bytes {
    sse::retry(millis)
}

/// `$reset`: the client named an id Broker does not know; a snapshot follows.
pub(super) fn reset(last_event_id: &str) -> Bytes {
    let data = serde_json::json!({ "reason": "unknown event id", "last_event_id": last_event_id })
        .to_string();
    sse::event(None, "$reset", &data)
}

/// `$synced` after the history, with `last_sent` (0 when nothing was sent) as its id, so that
/// it is the resume point even when nothing was sent: a client that reconnects with it gets
/// every record committed since, not just a snapshot. `None` on the node-sse-server and
/// Mercure wires, which have no such event.
pub(super) fn synced(format: Format, last_sent: u64) -> Option<Bytes> {
    if matches!(format, Format::Compat | Format::Mercure) {
        return None;
    }
    let id = last_sent.to_string();
    Some(sse::event(
        Some(&id),
        "$synced",
        &serde_json::json!({ "id": id }).to_string(),
    ))
}

/// A record's frame in `format`, shared with every other stream of that format.
pub(super) fn record(record: &Record, format: Format) -> Bytes {
    sse::record_frame(record, format).clone()
}

/// The last frame of a stream ended for `reason`: `$error`, or on a Mercure stream (which has
/// no such event) a comment.
pub(super) fn end(format: Format, reason: &str) -> Bytes {
    if format == Format::Mercure {
        sse::comment(reason)
    } else {
        sse::event(
            None,
            "$error",
            &serde_json::json!({ "error": reason }).to_string(),
        )
    }
}

/// The comment an idle stream writes every keep-alive period.
pub(super) fn keepalive() -> Bytes {
    sse::comment("keep-alive")
}

/// node-sse-server's `registered` frame, announcing the client id.
pub(super) fn registered(client_id: &str) -> Bytes {
    let registered = serde_json::json!({ "clientId": client_id }).to_string();
    sse::compat_event(None, "registered", &registered)
}

/// node-sse-server's `lastEvent` frame of `channel`: its newest record, or `{}` when it has
/// none.
pub(super) fn last_event(channel: &str, newest: Option<&Record>) -> Bytes {
    let value = newest.map_or_else(|| "{}".to_owned(), sse::compat_last_value);
    sse::compat_event(Some(channel), "lastEvent", &value)
}

/// A frame that only moves the client's resume point to `id` (node-sse-server streams, after
/// the `lastEvent`s that sum up everything up to it).
pub(super) fn resume_point(id: u64) -> Bytes {
    sse::id_only(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_carries_the_resume_point_on_the_native_wires_only() {
        let frame = synced(Format::Native, 7).map(|b| String::from_utf8_lossy(&b).into_owned());
        assert_eq!(
            frame.as_deref(),
            Some("id: 7\nevent: $synced\ndata: {\"id\":\"7\"}\n\n")
        );
        assert!(synced(Format::Envelope, 0).is_some());
        assert!(synced(Format::Compat, 7).is_none());
        assert!(synced(Format::Mercure, 7).is_none());
    }

    #[test]
    fn end_is_an_error_event_or_a_mercure_comment() {
        assert_eq!(
            &end(Format::Native, "user revoked")[..],
            b"event: $error\ndata: {\"error\":\"user revoked\"}\n\n"
        );
        assert_eq!(
            &end(Format::Mercure, "token expired")[..],
            b": token expired\n\n"
        );
    }

    #[test]
    fn reset_names_the_unknown_id() {
        assert_eq!(
            &reset("abc")[..],
            b"event: $reset\ndata: {\"reason\":\"unknown event id\",\"last_event_id\":\"abc\"}\n\n"
        );
    }
}
