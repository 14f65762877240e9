//! How a Mercure update is kept as a Broker record, and how records look on a Mercure stream.
//!
//! An update is one record:
//! - channel `$mercure`, or `$mercure.private` for a private update (names no Broker client
//!   can write or subscribe to: `$` is not a channel character);
//! - event name: the update's id (the publisher's `id`, or a generated `urn:uuid:`), so a
//!   duplicate id is found with one lookup and a `Last-Event-ID` naming it resolves to the
//!   record's place in the global order;
//! - data: `{"topics": [...], "data": "...", "private": true, "type": "...", "retry": 1000}`
//!   (`private`, `type` and `retry` only when given).
//!
//! Any other record reaches Mercure subscribers as an update of the topic
//! `broker://{channel}/{event}`, with the record's id as its id and its JSON data as `data`.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::store::Record;

/// Channel of public Mercure updates.
pub const PUBLIC_CHANNEL: &str = "$mercure";
/// Channel of private Mercure updates.
pub const PRIVATE_CHANNEL: &str = "$mercure.private";
/// Scheme of the topics Broker's own records are published under.
pub const BROKER_SCHEME: &str = "broker://";

/// Whether `channel` holds Mercure updates.
pub fn is_mercure_channel(channel: &str) -> bool {
    channel == PUBLIC_CHANNEL || channel == PRIVATE_CHANNEL
}

/// A Mercure update as stored in a record's data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredUpdate {
    /// The canonical topic first, then the alternate ones.
    pub topics: Vec<String>,
    /// The update's content.
    #[serde(default)]
    pub data: String,
    /// Whether only authorized subscribers may receive it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    /// The SSE `event` type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The SSE `retry` value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
}

/// What a record is to a Mercure subscriber: its topics and whether it is private.
#[derive(Debug)]
pub struct Update {
    /// The update's topics (`broker://{channel}/{event}` for a Broker record).
    pub topics: Vec<String>,
    /// Private: only subscribers allowed one of the topics receive it. Broker records are
    /// private to the readers of their channel.
    pub private: bool,
    /// The stored update, for records of the Mercure channels.
    pub stored: Option<StoredUpdate>,
}

/// The record seen as a Mercure update, decoded once per record and shared. Borrowed, not
/// cloned: every Mercure stream asks for every record it is offered, from both cores, and a
/// reference count touched by all of them would bounce between the cores.
pub fn of(record: &Record) -> &Update {
    record.mercure.get_or_init(|| Arc::new(decode(record)))
}

fn decode(record: &Record) -> Update {
    if is_mercure_channel(&record.channel)
        && let Ok(stored) = serde_json::from_str::<StoredUpdate>(record.data.get())
    {
        return Update {
            topics: stored.topics.clone(),
            private: stored.private || record.channel == PRIVATE_CHANNEL,
            stored: Some(stored),
        };
    }
    Update {
        topics: vec![broker_topic(&record.channel, &record.event)],
        private: true,
        stored: None,
    }
}

/// The topic of a Broker record: `broker://{channel}/{event}`.
pub fn broker_topic(channel: &str, event: &str) -> String {
    format!("{BROKER_SCHEME}{channel}/{event}")
}

/// The id a Mercure subscriber sees for a record: the update's id (its event name) for a
/// Mercure update, the record id for a Broker record.
pub fn mercure_id(record: &Record) -> String {
    if is_mercure_channel(&record.channel) {
        record.event.clone()
    } else {
        record.id.to_string()
    }
}

/// The SSE frame of a record on a Mercure stream.
pub fn frame(record: &Record) -> Bytes {
    let update = of(record);
    let id = mercure_id(record);
    let (kind, retry, data) = match &update.stored {
        Some(stored) => (stored.kind.as_deref(), stored.retry, stored.data.as_str()),
        None => (None, None, record.data.get()),
    };
    let mut buf = BytesMut::with_capacity(data.len() + id.len() + 64);
    buf.put_slice(b"id: ");
    buf.put_slice(id.as_bytes());
    buf.put_u8(b'\n');
    if let Some(kind) = kind {
        buf.put_slice(b"event: ");
        buf.put_slice(kind.as_bytes());
        buf.put_u8(b'\n');
    }
    if let Some(retry) = retry {
        buf.put_slice(format!("retry: {retry}\n").as_bytes());
    }
    // One `data:` line per line, split on CR, LF or CRLF.
    for line in data.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        buf.put_slice(b"data: ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn record(channel: &str, event: &str, data: &str) -> Record {
        let data = RawValue::from_string(data.into()).expect("json");
        Record::new(7, channel.into(), event.into(), 1, None, data)
    }

    #[test]
    fn mercure_update_frames() {
        let r = record(
            PRIVATE_CHANNEL,
            "urn:uuid:1",
            r#"{"topics":["https://e/1"],"data":"a\r\nb\rc","private":true,"type":"t","retry":5}"#,
        );
        assert_eq!(
            &frame(&r)[..],
            b"id: urn:uuid:1\nevent: t\nretry: 5\ndata: a\ndata: b\ndata: c\n\n"
        );
        assert!(of(&r).private);
    }

    #[test]
    fn broker_record_frames() {
        let r = record("room1", "user", r#"{"name":"Ada"}"#);
        assert_eq!(&frame(&r)[..], b"id: 7\ndata: {\"name\":\"Ada\"}\n\n");
        assert_eq!(of(&r).topics, vec!["broker://room1/user".to_owned()]);
    }
}
