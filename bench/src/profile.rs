//! What differs between the two wires: URLs, publish bodies, and how a delivery is read.

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

/// The stream URL of a subscriber.
pub fn stream_url(wire: Wire, base: &str, channel: &str, client: usize) -> String {
    match wire {
        Wire::Broker => format!("{base}/events?channels={channel}"),
        Wire::NodeSse => format!("{base}/subscribe?channels={channel}&clientId=bench-{client}"),
    }
}

/// The data of one sample, padded.
pub fn sample_data(sample: Sample, pad: &str) -> Value {
    json!({"p": sample.publisher, "s": sample.seq, "t": sample.sent_us, "pad": pad})
}

/// The publish request (path, body) for a batch of samples: one `/insert` for a single
/// sample on the broker wire, else one `/publish` of them all (batch publish, on both wires).
pub fn publish(wire: Wire, channel: &str, batch: &[Value]) -> (&'static str, Value) {
    match (wire, batch) {
        (Wire::Broker, [data]) => (
            "/insert",
            json!({"event": EVENT, "channel": channel, "data": data}),
        ),
        _ => {
            let events: Vec<Value> = batch
                .iter()
                .map(|data| {
                    // node-sse-server carries payloads as strings; Broker takes any JSON.
                    let payload = match wire {
                        Wire::Broker => data.clone(),
                        Wire::NodeSse => Value::String(data.to_string()),
                    };
                    json!({"channelName": channel, "type": EVENT, "payload": payload})
                })
                .collect();
            ("/publish", json!({ "events": events }))
        }
    }
}

/// Whether this event ends the subscriber's initial phase.
pub fn is_synced(wire: Wire, event: &str) -> bool {
    match wire {
        Wire::Broker => event == "$synced",
        Wire::NodeSse => event == "lastEvent",
    }
}

/// The fields of a sample as delivered; other fields (the padding) are skipped unread.
#[derive(serde::Deserialize)]
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
pub fn parse(wire: Wire, event: &str, data: &str) -> Option<Sample> {
    if event != EVENT {
        return None;
    }
    let fields: Fields = match wire {
        Wire::Broker => serde_json::from_str(data).ok()?,
        Wire::NodeSse => {
            let outer: CompatDelivery<'_> = serde_json::from_str(data).ok()?;
            serde_json::from_str(&outer.payload).ok()?
        }
    };
    Some(Sample {
        publisher: fields.p,
        seq: fields.s,
        sent_us: fields.t,
    })
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
        assert_eq!(parse(Wire::Broker, EVENT, &data.to_string()), Some(sample));
        let (path, body) = publish(Wire::NodeSse, "c", std::slice::from_ref(&data));
        assert_eq!(path, "/publish");
        let delivered =
            json!({"channelName": "c", "type": EVENT, "payload": body["events"][0]["payload"]});
        assert_eq!(
            parse(Wire::NodeSse, EVENT, &delivered.to_string()),
            Some(sample)
        );
        assert_eq!(parse(Wire::Broker, "other", &data.to_string()), None);
        let (path, body) = publish(Wire::Broker, "c", &[data.clone(), data.clone()]);
        assert_eq!(path, "/publish");
        assert_eq!(
            body["events"][1]["payload"], data,
            "Broker stores the object"
        );
        assert_eq!(publish(Wire::Broker, "c", &[data]).0, "/insert");
    }
}
