//! Server-Sent Events framing (WHATWG HTML, "Server-sent events").

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::store::Record;

/// The SSE frame of a record, encoded once per record and shared by every subscriber.
/// `envelope` selects `data: {"id",..,"data":..}` instead of the bare data.
pub fn record_frame(record: &Record, envelope: bool) -> Bytes {
    record.frames[usize::from(envelope)]
        .get_or_init(|| encode_record(record, envelope))
        .clone()
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: String,
    event: &'a str,
    channel: &'a str,
    timestamp: u64,
    data: &'a RawValue,
}

fn encode_record(record: &Record, envelope: bool) -> Bytes {
    let id = record.id.to_string();
    if envelope {
        let body = Envelope {
            id: id.clone(),
            event: &record.event,
            channel: &record.channel,
            timestamp: record.timestamp,
            data: &record.data,
        };
        let json = serde_json::to_string(&body).unwrap_or_else(|_| "null".into());
        event(Some(&id), &record.event, &json)
    } else {
        event(Some(&id), &record.event, record.data.get())
    }
}

/// A frame with an optional `id:`, an `event:` and `data:` (split into one `data:` line per line).
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

    #[test]
    fn frames() {
        let data = RawValue::from_string(r#"{"name":"Ada"}"#.into()).expect("json");
        let record = Record::new(42, "room1".into(), "user".into(), 7, None, data);
        assert_eq!(
            &record_frame(&record, false)[..],
            b"id: 42\nevent: user\ndata: {\"name\":\"Ada\"}\n\n"
        );
        assert_eq!(
            &record_frame(&record, true)[..],
            &b"id: 42\nevent: user\ndata: {\"id\":\"42\",\"event\":\"user\",\"channel\":\"room1\",\"timestamp\":7,\"data\":{\"name\":\"Ada\"}}\n\n"[..]
        );
        assert_eq!(
            &event(None, "x", "a\nb")[..],
            b"event: x\ndata: a\ndata: b\n\n"
        );
        assert_eq!(&comment("keep-alive")[..], b": keep-alive\n\n");
        assert_eq!(&retry(2000)[..], b"retry: 2000\n\n");
    }
}
