//! What differs between the wires: URLs, publish bodies, and how a delivery is read.

use serde_json::{Value, json};

use crate::config::Wire;

/// One delivered sample: publisher, sequence number, send time (µs since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Publisher index.
    pub publisher: usize,
    /// Sequence number within that publisher.
    pub seq: u64,
    /// When the publisher sent it.
    pub sent_us: u64,
}

/// The event name (broker) or type (node-sse) the tool publishes.
pub const EVENT: &str = "bench";

/// Path of the Mercure hub.
pub const MERCURE_PATH: &str = "/.well-known/mercure";

/// The Mercure topic standing for `channel`.
pub fn topic(channel: &str) -> String {
    format!("https://broker-bench.example/{channel}")
}

/// The stream URL of a subscriber.
pub fn stream_url(wire: Wire, base: &str, channel: &str, client: usize) -> String {
    match wire {
        Wire::Broker => format!("{base}/events?channels={channel}"),
        Wire::NodeSse => format!("{base}/subscribe?channels={channel}&clientId=bench-{client}"),
        Wire::Mercure => {
            let query = form(&[("topic", &topic(channel))]);
            format!("{base}{MERCURE_PATH}?{query}")
        }
    }
}

/// `name=value&...`, form-encoded.
fn form(pairs: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params("http://x/", pairs)
        .ok()
        .and_then(|u| u.query().map(str::to_owned))
        .unwrap_or_default()
}

/// A publish request's body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// `application/json`.
    Json(Value),
    /// `application/x-www-form-urlencoded`.
    Form(String),
}

impl Body {
    /// Its content type.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Json(_) => "application/json",
            Self::Form(_) => "application/x-www-form-urlencoded",
        }
    }

    /// Its bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Json(value) => serde_json::to_vec(value).unwrap_or_default(),
            Self::Form(form) => form.as_bytes().to_vec(),
        }
    }
}

/// The data of one sample, padded.
pub fn sample_data(sample: Sample, pad: &str) -> Value {
    json!({"p": sample.publisher, "s": sample.seq, "t": sample.sent_us, "pad": pad})
}

/// The publish request (path, body) for a batch of samples: one `/insert` for a single
/// sample on the broker wire, one form-encoded update of type [`EVENT`] per sample on the
/// Mercure wire (which has no batch publish: only the first sample is sent), else one
/// `/publish` of them all (batch publish).
pub fn publish(wire: Wire, channel: &str, batch: &[Value]) -> (&'static str, Body) {
    match (wire, batch) {
        (Wire::Broker, [data]) => (
            "/insert",
            Body::Json(json!({"event": EVENT, "channel": channel, "data": data})),
        ),
        (Wire::Mercure, batch) => {
            let data = batch.first().map(Value::to_string).unwrap_or_default();
            let body = form(&[("topic", &topic(channel)), ("type", EVENT), ("data", &data)]);
            (MERCURE_PATH, Body::Form(body))
        }
        _ => {
            let events: Vec<Value> = batch
                .iter()
                .map(|data| {
                    // node-sse-server carries payloads as strings; Broker takes any JSON.
                    let payload = match wire {
                        Wire::NodeSse => Value::String(data.to_string()),
                        Wire::Broker | Wire::Mercure => data.clone(),
                    };
                    json!({"channelName": channel, "type": EVENT, "payload": payload})
                })
                .collect();
            ("/publish", Body::Json(json!({ "events": events })))
        }
    }
}

/// Whether this event ends the subscriber's initial phase. A Mercure stream opened without
/// a resume point has none: it is live once the hub answered.
pub fn is_synced(wire: Wire, event: &[u8]) -> bool {
    match wire {
        Wire::Broker => event == b"$synced",
        Wire::NodeSse => event == b"lastEvent",
        Wire::Mercure => false,
    }
}

/// Whether a stream of this wire is live as soon as it is open.
pub fn live_on_open(wire: Wire) -> bool {
    wire == Wire::Mercure
}

/// The fields of a sample as delivered; other fields (the padding) are skipped unread.
#[derive(Debug, PartialEq, Eq, serde::Deserialize)]
struct Fields {
    p: usize,
    s: u64,
    t: u64,
}

/// A node-sse-server delivery: the sample is the JSON text in `payload`.
#[derive(serde::Deserialize)]
struct CompatDelivery<'a> {
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
}

/// Reads a sample out of an SSE event, if it is one. Typed parsing keeps the tool's own
/// cost per delivery low: it shares the machine with the server it measures.
pub fn parse(wire: Wire, event: &[u8], data: &[u8]) -> Option<Sample> {
    if event != EVENT.as_bytes() {
        return None;
    }
    let fields: Fields = match wire {
        // A Mercure update's data is the sample as published.
        Wire::Broker | Wire::Mercure => match compact_fields(data) {
            Some(fields) => fields,
            None => serde_json::from_slice(data).ok()?,
        },
        Wire::NodeSse => {
            let outer: CompatDelivery<'_> = serde_json::from_slice(data).ok()?;
            serde_json::from_str(&outer.payload).ok()?
        }
    };
    Some(Sample {
        publisher: fields.p,
        seq: fields.s,
        sent_us: fields.t,
    })
}

/// The fields of a sample in the exact compact form the tool publishes and Broker delivers
/// (`{"p":1,"s":2,"t":3,...`), read without a JSON parser: at ten thousand subscribers the
/// tool parses every delivery, and its CPU is taken from the server it measures. Anything
/// else (other spacing or key order) is left to the full parser.
fn compact_fields(data: &[u8]) -> Option<Fields> {
    let rest = data.strip_prefix(b"{\"p\":")?;
    let (p, rest) = leading_number(rest)?;
    let rest = rest.strip_prefix(b",\"s\":")?;
    let (s, rest) = leading_number(rest)?;
    let rest = rest.strip_prefix(b",\"t\":")?;
    let (t, rest) = leading_number(rest)?;
    if !matches!(rest.first(), Some(b',' | b'}')) {
        return None;
    }
    Some(Fields {
        p: usize::try_from(p).ok()?,
        s,
        t,
    })
}

/// The unsigned decimal at the start of `bytes` (at most 19 digits) and what follows it.
fn leading_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    let mut digits = 0;
    for &b in bytes.iter().take(20) {
        if !b.is_ascii_digit() {
            break;
        }
        value = value.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
        digits += 1;
    }
    if digits == 0 || digits > 19 {
        return None;
    }
    Some((value, &bytes[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_wires_round_trip() {
        let sample = Sample {
            publisher: 3,
            seq: 9,
            sent_us: 1234,
        };
        let data = sample_data(sample, "xx");
        assert_eq!(
            parse(Wire::Broker, EVENT.as_bytes(), data.to_string().as_bytes()),
            Some(sample)
        );
        let (path, Body::Json(body)) = publish(Wire::NodeSse, "c", std::slice::from_ref(&data))
        else {
            panic!("JSON")
        };
        assert_eq!(path, "/publish");
        let delivered =
            json!({"channelName": "c", "type": EVENT, "payload": body["events"][0]["payload"]});
        assert_eq!(
            parse(
                Wire::NodeSse,
                EVENT.as_bytes(),
                delivered.to_string().as_bytes()
            ),
            Some(sample)
        );
        assert_eq!(
            parse(Wire::Broker, b"other", data.to_string().as_bytes()),
            None
        );
        let (path, Body::Json(body)) = publish(Wire::Broker, "c", &[data.clone(), data.clone()])
        else {
            panic!("JSON")
        };
        assert_eq!(path, "/publish");
        assert_eq!(
            body["events"][1]["payload"], data,
            "Broker stores the object"
        );
        assert_eq!(
            publish(Wire::Broker, "c", std::slice::from_ref(&data)).0,
            "/insert"
        );
        let (path, Body::Form(form)) = publish(Wire::Mercure, "c", std::slice::from_ref(&data))
        else {
            panic!("a form")
        };
        assert_eq!(path, MERCURE_PATH);
        let fields: Vec<(String, String)> = reqwest::Url::parse(&format!("http://x/?{form}"))
            .expect("url")
            .query_pairs()
            .into_owned()
            .collect();
        assert_eq!(fields[0], ("topic".into(), topic("c")));
        assert_eq!(fields[1], ("type".into(), EVENT.into()));
        assert_eq!(
            parse(Wire::Mercure, EVENT.as_bytes(), fields[2].1.as_bytes()),
            Some(sample),
            "a Mercure update's data is the sample"
        );
        assert!(
            stream_url(Wire::Mercure, "http://h", "c", 0)
                .ends_with("/.well-known/mercure?topic=https%3A%2F%2Fbroker-bench.example%2Fc")
        );
    }

    #[test]
    fn the_compact_form_and_any_other_agree() {
        let compact = br#"{"p":3,"s":9,"t":1234,"pad":"xx"}"#;
        let spaced = br#"{ "t": 1234, "s": 9, "p": 3 }"#;
        let expected = Some(Sample {
            publisher: 3,
            seq: 9,
            sent_us: 1234,
        });
        assert!(compact_fields(compact).is_some());
        assert!(compact_fields(spaced).is_none(), "left to serde");
        assert_eq!(parse(Wire::Broker, EVENT.as_bytes(), compact), expected);
        assert_eq!(parse(Wire::Broker, EVENT.as_bytes(), spaced), expected);
        assert_eq!(compact_fields(br#"{"p":3,"s":9,"t":12x}"#), None);
        assert_eq!(
            compact_fields(br#"{"p":3,"s":99999999999999999999,"t":1}"#),
            None
        );
    }
}
