//! A property test of the stream state machine against a model.
//!
//! Random interleavings of inserts (single records and batches over a few channels and
//! events), subscribers opening with a snapshot, a `Last-Event-ID` or an unknown id, with
//! channel requests and read grants of their own, and partial reads, run against a real
//! embedded store and hub whose ring is tiny in messages and in bytes, so that streams lag,
//! meet evicted commits and catch up from the store all the time. Each stream must then have
//! delivered exactly what the model says: every record after its start point, or the latest
//! version of every key as of one cut and everything after it, in id order, with no gap, no
//! duplicate and nothing beyond the caller's permissions.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use proptest::prelude::*;
use serde_json::value::RawValue;

use crate::auth::{Caller, Grants};
use crate::server::App;
use crate::sse::Format;
use crate::store::NewRecord;
use crate::stream::{ChannelFilter, Start, StreamOptions, Subscription};

const CHANNELS: [&str; 3] = ["a", "b", "c"];
const EVENTS: [&str; 2] = ["x", "y"];
/// Added to a `Last-Event-ID` beyond the last record, so that no record of a run reaches it.
const UNKNOWN: u64 = 1_000_000;
/// Every stream asks for and may read this channel: the final marker goes there.
const MARKER_CHANNEL: &str = "z";

/// One step of a scenario.
#[derive(Debug, Clone)]
enum Step {
    /// Insert a batch of (channel, event) records.
    Insert(Vec<(usize, usize)>),
    /// Open a stream.
    Open {
        start: StartKind,
        /// Channels asked for (`None`: every readable one).
        channels: Option<Vec<usize>>,
        /// Channels the caller may read.
        read: Vec<usize>,
    },
    /// Let stream `n % open streams` read whatever is waiting.
    Read(usize),
}

#[derive(Debug, Clone, Copy)]
enum StartKind {
    Snapshot,
    /// `Last-Event-ID` of this id (possibly beyond the last one: unknown).
    After(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let channel = 0..CHANNELS.len();
    let insert =
        prop::collection::vec((channel.clone(), 0..EVENTS.len()), 1..4).prop_map(Step::Insert);
    let start = prop_oneof![
        Just(StartKind::Snapshot),
        (0u64..30).prop_map(StartKind::After)
    ];
    let subset = prop::collection::vec(channel, 0..3);
    let open =
        (start, prop::option::of(subset.clone()), subset).prop_map(|(start, channels, read)| {
            Step::Open {
                start,
                channels,
                read,
            }
        });
    prop_oneof![3 => insert, 1 => open, 2 => (0usize..8).prop_map(Step::Read)]
}

/// A record as the model knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    id: u64,
    channel: usize,
    event: usize,
}

/// An open stream and what it has delivered.
struct Open {
    body: Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>,
    raw: Vec<u8>,
    start: StartKind,
    channels: Option<Vec<usize>>,
    read: Vec<usize>,
    /// The last id when the stream registered.
    opened_at: u64,
}

impl Open {
    fn wants(&self, channel: usize) -> bool {
        self.read.contains(&channel) && self.channels.as_ref().is_none_or(|c| c.contains(&channel))
    }

    /// Reads whatever comes within `wait` per chunk, up to `chunks` chunks.
    async fn read(&mut self, chunks: usize, wait: Duration) {
        for _ in 0..chunks {
            match tokio::time::timeout(wait, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.raw.extend_from_slice(&chunk),
                _ => return,
            }
        }
    }

    /// The records delivered so far (id, channel name) and whether a `$reset` came.
    fn delivered(&self) -> (Vec<(u64, String)>, bool) {
        let text = String::from_utf8_lossy(&self.raw);
        let mut out = Vec::new();
        let mut reset = false;
        for frame in text.split("\n\n") {
            let mut event = "";
            let mut data = "";
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v;
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v;
                }
            }
            if event == "$reset" {
                reset = true;
            }
            if event.starts_with('$') || event.is_empty() {
                continue;
            }
            let Ok(envelope) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            let id = envelope["id"].as_str().and_then(|s| s.parse().ok());
            let channel = envelope["channel"].as_str().map(str::to_owned);
            if let (Some(id), Some(channel)) = (id, channel) {
                out.push((id, channel));
            }
        }
        (out, reset)
    }
}

fn channel_name(channel: usize) -> &'static str {
    CHANNELS.get(channel).copied().unwrap_or(MARKER_CHANNEL)
}

/// What a stream starting with a snapshot cut at `cut` must deliver.
fn snapshot_model(stored: &[Stored], open: &Open, cut: u64) -> Vec<u64> {
    let mut latest: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    for r in stored
        .iter()
        .filter(|r| r.id <= cut && open.wants(r.channel))
    {
        latest.insert((r.channel, r.event), r.id);
    }
    let mut ids: Vec<u64> = latest.into_values().collect();
    ids.sort_unstable();
    ids.extend(
        stored
            .iter()
            .filter(|r| r.id > cut && open.wants(r.channel))
            .map(|r| r.id),
    );
    ids
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let db = dir.path().display().to_string();
    let config = <crate::Config as clap::Parser>::try_parse_from([
        "broker",
        "--no-auth",
        "--db",
        &db,
        "--stream-buffer",
        "2",
        "--stream-buffer-bytes",
        "400",
    ])
    .map_err(fail)?;
    let app = App::open(config)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let state = app.state().clone();
    let mut stored: Vec<Stored> = Vec::new();
    let mut streams: Vec<Open> = Vec::new();
    let wait = Duration::from_millis(5);

    for step in steps {
        match step {
            Step::Insert(batch) => {
                let records = batch
                    .iter()
                    .map(|&(channel, event)| new_record(channel_name(channel), EVENTS[event]))
                    .collect();
                let out = state.store.append(records).await.map_err(fail)?;
                for (record, &(channel, event)) in out.iter().zip(&batch) {
                    stored.push(Stored {
                        id: record.id,
                        channel,
                        event,
                    });
                }
            }
            Step::Open {
                start,
                channels,
                mut read,
            } => {
                let opened_at = stored.last().map_or(0, |r| r.id);
                // An id beyond the last one is made one no later record can take, so that
                // it stays unknown whenever the stream starts.
                let start = match start {
                    StartKind::After(id) if id > opened_at => StartKind::After(id + UNKNOWN),
                    other => other,
                };
                read.push(CHANNELS.len());
                let channels = channels.map(|mut c| {
                    c.push(CHANNELS.len());
                    c
                });
                let caller = Caller {
                    user: None,
                    grants: Grants {
                        admin: false,
                        read: read.iter().map(|&c| channel_name(c).to_owned()).collect(),
                        write: Vec::new(),
                    },
                    expires_at: None,
                    generation: None,
                };
                let requested = channels
                    .as_ref()
                    .map(|c| c.iter().map(|&c| channel_name(c).to_owned()).collect());
                let options = StreamOptions {
                    filter: ChannelFilter::new(requested, caller),
                    format: Format::Envelope,
                    client_id: None,
                    start: match start {
                        StartKind::Snapshot => Start::Snapshot,
                        StartKind::After(id) => Start::After(id),
                    },
                    expires_at: None,
                    record_filter: None,
                };
                let slot = state
                    .hub
                    .open_stream()
                    .ok_or_else(|| fail("no stream slot"))?;
                let body = Subscription::new(&state, options, slot)
                    .into_stream()
                    .boxed();
                streams.push(Open {
                    body,
                    raw: Vec::new(),
                    start,
                    channels,
                    read,
                    opened_at,
                });
            }
            Step::Read(n) => {
                let count = streams.len();
                if let Some(open) = streams.get_mut(n % count.max(1)) {
                    open.read(3, wait).await;
                }
            }
        }
    }

    // A marker every stream reads: once it has arrived, everything before it has too.
    let marker = state
        .store
        .append(vec![new_record(MARKER_CHANNEL, "end")])
        .await
        .map_err(fail)?;
    let marker_id = marker.first().map_or(0, |r| r.id);
    stored.push(Stored {
        id: marker_id,
        channel: CHANNELS.len(),
        event: 0,
    });

    for open in &mut streams {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !open.delivered().0.iter().any(|(id, _)| *id == marker_id) {
            prop_assert!(
                tokio::time::Instant::now() < deadline,
                "the marker never reached a stream ({:?})",
                open.start
            );
            open.read(16, Duration::from_millis(200)).await;
        }
        let (delivered, reset) = open.delivered();
        let ids: Vec<u64> = delivered.iter().map(|(id, _)| *id).collect();
        prop_assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids in order, none twice: {ids:?}"
        );
        let allowed: HashSet<&str> = open.read.iter().map(|&c| channel_name(c)).collect();
        for (id, channel) in &delivered {
            prop_assert!(
                allowed.contains(channel.as_str()),
                "record {id} of channel {channel} is beyond the caller's grants"
            );
        }
        match open.start {
            StartKind::After(after) if after <= open.opened_at => {
                prop_assert!(!reset, "no $reset for a known id {after}");
                let expected: Vec<u64> = stored
                    .iter()
                    .filter(|r| r.id > after && open.wants(r.channel))
                    .map(|r| r.id)
                    .collect();
                prop_assert_eq!(ids, expected, "a replay from {} is complete", after);
            }
            start => {
                if let StartKind::After(after) = start {
                    prop_assert!(reset, "an unknown id {after} gets $reset");
                }
                let fits = (open.opened_at..=marker_id)
                    .any(|cut| snapshot_model(&stored, open, cut) == ids);
                prop_assert!(
                    fits,
                    "no cut explains the snapshot stream {ids:?} (opened at {})",
                    open.opened_at
                );
            }
        }
    }
    drop(streams);
    app.close().await;
    Ok(())
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn new_record(channel: &str, event: &str) -> NewRecord {
    NewRecord {
        channel: channel.to_owned(),
        event: event.to_owned(),
        user: None,
        data: RawValue::from_string("{\"pad\":\"0123456789\"}".to_owned()).expect("constant JSON"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn streams_match_the_model(steps in prop::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(fail)?;
        runtime.block_on(run(steps))?;
    }
}
