//! Server-Sent Events framing (WHATWG HTML, "Server-sent events").

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::store::Record;

/// How records are written on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `data:` is the record's data (`GET /events`).
    Native = 0,
    /// `data:` is `{"id","event","channel","timestamp","data"}` (`GET /events?envelope=true`).
    Envelope = 1,
    /// node-sse-server's `{"channelName","type","payload"}` (`GET /subscribe`).
    Compat = 2,
    /// The Mercure wire (`GET /.well-known/mercure`): see [`crate::mercure::update::frame`].
    Mercure = 3,
}

/// How many formats there are: the size of the per-record and per-commit frame caches.
pub const FORMATS: usize = 4;

/// The SSE frame of a record, encoded once per record and format and shared by every
/// subscriber.
pub fn record_frame(record: &Record, format: Format) -> &Bytes {
    record.frames[format as usize].get_or_init(|| encode_record(record, format))
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: String,
    event: &'a str,
    channel: &'a str,
    timestamp: u64,
    data: &'a RawValue,
}

fn encode_record(record: &Record, format: Format) -> Bytes {
    let id = record.id.to_string();
    match format {
        Format::Native => event(Some(&id), &record.event, record.data.get()),
        Format::Envelope => {
            let body = Envelope {
                id: id.clone(),
                event: &record.event,
                channel: &record.channel,
                timestamp: record.timestamp,
                data: &record.data,
            };
            let json = serde_json::to_string(&body).unwrap_or_else(|_| "null".into());
            event(Some(&id), &record.event, &json)
        }
        Format::Mercure => crate::mercure::update::frame(record),
        Format::Compat => {
            let payload = payload_string(&record.data);
            let data = compat_data(Some(&record.channel), &record.event, &payload);
            event(Some(&id), &record.event, &data)
        }
    }
}

/// A record's data as node-sse-server's string `payload`: a JSON string as its text, any other
/// value as its JSON.
pub fn payload_string(data: &RawValue) -> String {
    serde_json::from_str::<String>(data.get()).unwrap_or_else(|_| data.get().to_owned())
}

#[derive(Serialize)]
struct CompatData<'a> {
    #[serde(rename = "channelName", skip_serializing_if = "Option::is_none")]
    channel_name: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a str,
    payload: &'a str,
}

fn compat_data(channel: Option<&str>, kind: &str, payload: &str) -> String {
    let body = CompatData {
        channel_name: channel,
        kind,
        payload,
    };
    serde_json::to_string(&body).unwrap_or_else(|_| "{}".into())
}

/// A node-sse-server event: `event: <type>`, data `{"channelName","type","payload"}`, without
/// `channelName` when `channel` is `None` (`registered`, `online-presence`).
pub fn compat_event(channel: Option<&str>, kind: &str, payload: &str) -> Bytes {
    event(None, kind, &compat_data(channel, kind, payload))
}

/// node-sse-server's "last value" of a channel: `{"type":..,"payload":..}` as a string.
pub fn compat_last_value(record: &Record) -> String {
    serde_json::json!({ "type": record.event, "payload": payload_string(&record.data) }).to_string()
}

/// A frame with an optional `id:`, an `event:` and `data:` (one `data:` line per line).
pub fn event(id: Option<&str>, name: &str, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + name.len() + 32);
    if let Some(id) = id {
        buf.put_slice(b"id: ");
        buf.put_slice(id.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_slice(b"event: ");
    buf.put_slice(name.as_bytes());
    buf.put_u8(b'\n');
    for line in data.split('\n') {
        buf.put_slice(b"data: ");
        buf.put_slice(line.trim_end_matches('\r').as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// A frame that only sets the client's last event id: per the SSE rules it dispatches no
/// event, but a reconnecting `EventSource` sends this id as `Last-Event-ID`.
pub fn id_only(id: u64) -> Bytes {
    Bytes::from(format!("id: {id}\n\n"))
}

/// A comment line, ignored by clients (keep-alive).
pub fn comment(text: &str) -> Bytes {
    Bytes::from(format!(": {text}\n\n"))
}

/// The reconnection delay the client should use.
pub fn retry(millis: u64) -> Bytes {
    Bytes::from(format!("retry: {millis}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let data = RawValue::from_string(r#"{"name":"Ada"}"#.into()).expect("json");
        Record::new(42, "room1".into(), "user".into(), 7, None, data)
    }

    #[test]
    fn native_and_envelope_frames() {
        let record = record();
        assert_eq!(
            &record_frame(&record, Format::Native)[..],
            b"id: 42\nevent: user\ndata: {\"name\":\"Ada\"}\n\n"
        );
        assert_eq!(
            &record_frame(&record, Format::Envelope)[..],
            &b"id: 42\nevent: user\ndata: {\"id\":\"42\",\"event\":\"user\",\"channel\":\"room1\",\"timestamp\":7,\"data\":{\"name\":\"Ada\"}}\n\n"[..]
        );
    }

    #[test]
    fn compat_frames() {
        let record = record();
        let frame = record_frame(&record, Format::Compat);
        let text = std::str::from_utf8(frame).expect("utf-8");
        let data = text
            .lines()
            .nth(2)
            .and_then(|l| l.strip_prefix("data: "))
            .expect("data");
        let value: serde_json::Value = serde_json::from_str(data).expect("json");
        assert!(text.starts_with("id: 42\nevent: user\n"));
        assert_eq!(
            value,
            serde_json::json!({"channelName": "room1", "type": "user", "payload": "{\"name\":\"Ada\"}"})
        );
        assert_eq!(
            &compat_event(None, "registered", "{}")[..],
            b"event: registered\ndata: {\"type\":\"registered\",\"payload\":\"{}\"}\n\n"
        );
        let text = RawValue::from_string(r#""hi""#.into()).expect("json");
        assert_eq!(payload_string(&text), "hi");
        assert_eq!(
            compat_last_value(&record),
            r#"{"type":"user","payload":"{\"name\":\"Ada\"}"}"#
        );
    }

    #[test]
    fn other_frames() {
        assert_eq!(
            &event(None, "x", "a\nb")[..],
            b"event: x\ndata: a\ndata: b\n\n"
        );
        assert_eq!(&id_only(9)[..], b"id: 9\n\n");
        assert_eq!(&comment("keep-alive")[..], b": keep-alive\n\n");
        assert_eq!(&retry(2000)[..], b"retry: 2000\n\n");
    }
}
