//! The no-gap state machine of a stream, driven step by step against both stores: the same
//! cases run on the embedded store (in a temporary directory) and on the JetStream store (one
//! nats-server, a fresh prefix per case).
//!
//! Each case opens a [`Subscription`] on a real [`App`] and reads its chunks in between the
//! writes it makes, so that inserts land exactly where the case wants them: before the
//! snapshot is taken, between its pages, while the stream is behind the hub, after a
//! revocation. What the stream delivered is then compared with what the store holds.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::value::RawValue;

use crate::auth::{Caller, Grants};
use crate::server::App;
use crate::sse::Format;
use crate::state::AppState;
use crate::store::jetstream::test_server::NatsServer;
use crate::store::{NewRecord, User};
use crate::stream::{ChannelFilter, Start, StreamOptions, Subscription};

/// Longest a case waits for the next chunk of a stream.
const WAIT: Duration = Duration::from_secs(10);

/// Which store the cases run on.
enum Backend {
    Embedded,
    JetStream(NatsServer, AtomicUsize),
}

impl Backend {
    /// A fresh, empty Broker on this backend with extra flags.
    async fn app(&self, extra: &[&str]) -> (App, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db").display().to_string();
        let nats = match self {
            Self::Embedded => None,
            Self::JetStream(server, next) => Some((
                server.url().to_owned(),
                format!("m{}", next.fetch_add(1, Ordering::Relaxed)),
            )),
        };
        let mut args = vec!["broker", "--no-auth", "--db", &db];
        if let Some((url, prefix)) = &nats {
            args.extend([
                "--nats",
                url,
                "--nats-prefix",
                prefix,
                "--nats-replicas",
                "1",
            ]);
        }
        args.extend(extra);
        let config = <crate::Config as clap::Parser>::try_parse_from(args).expect("flags");
        let app = App::open(config).await.expect("open");
        (app, dir)
    }
}

/// One SSE frame as read: its id line, event name and data.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    id: Option<u64>,
    event: String,
    data: String,
}

/// An open stream and everything it has written.
struct Reader {
    body: Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>,
    raw: String,
    ended: bool,
}

impl Reader {
    /// Opens a native stream for `caller` on `channels` (every readable one when `None`).
    fn open(state: &AppState, start: Start, channels: Option<Vec<&str>>, caller: Caller) -> Self {
        let expires_at = caller.expires_at;
        let options = StreamOptions {
            filter: ChannelFilter::new(
                channels.map(|c| c.into_iter().map(str::to_owned).collect()),
                caller,
            ),
            format: Format::Native,
            client_id: None,
            start,
            expires_at,
            record_filter: None,
        };
        let slot = state.hub.open_stream().expect("stream slot");
        Self {
            body: Subscription::new(state, options, slot)
                .into_stream()
                .boxed(),
            raw: String::new(),
            ended: false,
        }
    }

    /// Reads one chunk; `false` when the stream has ended.
    async fn chunk(&mut self) -> bool {
        if self.ended {
            return false;
        }
        match tokio::time::timeout(WAIT, self.body.next()).await {
            Ok(Some(Ok(chunk))) => {
                self.raw.push_str(&String::from_utf8_lossy(&chunk));
                true
            }
            Ok(None) => {
                self.ended = true;
                false
            }
            Err(_) => panic!("no chunk within {WAIT:?}; so far: {}", self.raw),
        }
    }

    /// Reads until a frame passes `done`, or the stream ends.
    async fn until(&mut self, done: impl Fn(&Frame) -> bool) {
        while !self.frames().iter().any(&done) && self.chunk().await {}
    }

    /// Reads until the record `id` has come.
    async fn until_record(&mut self, id: u64) {
        self.until(|f| f.id == Some(id) && !f.event.starts_with('$'))
            .await;
        assert!(
            self.records().contains(&id),
            "the stream ended before record {id}: {}",
            self.raw
        );
    }

    /// Reads to the end of the stream.
    async fn read_to_end(&mut self) {
        while self.chunk().await {}
    }

    /// Every frame so far (comments and `retry` left out).
    fn frames(&self) -> Vec<Frame> {
        let mut frames = Vec::new();
        for block in self.raw.split("\n\n") {
            let mut frame = Frame {
                id: None,
                event: String::new(),
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    frame.id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    v.clone_into(&mut frame.event);
                } else if let Some(v) = line.strip_prefix("data: ") {
                    v.clone_into(&mut frame.data);
                }
            }
            if !frame.event.is_empty() {
                frames.push(frame);
            }
        }
        frames
    }

    /// Ids of the records sent so far, in the order sent.
    fn records(&self) -> Vec<u64> {
        self.frames()
            .iter()
            .filter(|f| !f.event.starts_with('$'))
            .filter_map(|f| f.id)
            .collect()
    }

    /// The control frames (`$reset`, `$synced`, `$error`) so far.
    fn control(&self) -> Vec<Frame> {
        self.frames()
            .into_iter()
            .filter(|f| f.event.starts_with('$'))
            .collect()
    }

    /// Ids of the records sent after `$synced`.
    fn after_synced(&self) -> Vec<u64> {
        self.frames()
            .iter()
            .skip_while(|f| f.event != "$synced")
            .filter(|f| !f.event.starts_with('$'))
            .filter_map(|f| f.id)
            .collect()
    }
}

/// What the store holds, as the cases know it: (id, channel, event).
#[derive(Default)]
struct Stored(Vec<(u64, String, String)>);

impl Stored {
    /// Appends one batch of (channel, event) records; their ids.
    async fn insert(&mut self, state: &AppState, batch: &[(&str, &str)]) -> Vec<u64> {
        let records = batch
            .iter()
            .map(|(channel, event)| NewRecord {
                channel: (*channel).to_owned(),
                event: (*event).to_owned(),
                user: None,
                data: RawValue::from_string("{\"v\":1}".to_owned()).expect("JSON"),
            })
            .collect();
        let out = state.store.append(records).await.expect("append");
        let ids: Vec<u64> = out.iter().map(|r| r.id).collect();
        for (id, (channel, event)) in ids.iter().zip(batch) {
            self.0
                .push((*id, (*channel).to_owned(), (*event).to_owned()));
        }
        ids
    }

    /// Inserts `n` single-record commits on `channel`, events `e0`, `e1`, ...; their ids.
    async fn commits(&mut self, state: &AppState, channel: &str, n: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        for i in 0..n {
            let event = format!("e{i}");
            ids.extend(self.insert(state, &[(channel, event.as_str())]).await);
        }
        ids
    }

    fn last(&self) -> u64 {
        self.0.last().map_or(0, |r| r.0)
    }

    /// The latest version of every (channel, event) of `wanted` channels among ids `<= cut`,
    /// in id order, then every record after `cut`: what a snapshot cut at `cut` delivers.
    fn snapshot(&self, cut: u64, wanted: impl Fn(&str) -> bool) -> Vec<u64> {
        let mut latest = BTreeMap::new();
        for (id, channel, event) in self.0.iter().filter(|r| r.0 <= cut && wanted(&r.1)) {
            latest.insert((channel.clone(), event.clone()), *id);
        }
        let mut ids: Vec<u64> = latest.into_values().collect();
        ids.sort_unstable();
        ids.extend(
            self.0
                .iter()
                .filter(|r| r.0 > cut && wanted(&r.1))
                .map(|r| r.0),
        );
        ids
    }

    /// Every record after `after` of `wanted` channels.
    fn after(&self, after: u64, wanted: impl Fn(&str) -> bool) -> Vec<u64> {
        self.0
            .iter()
            .filter(|r| r.0 > after && wanted(&r.1))
            .map(|r| r.0)
            .collect()
    }
}

/// A caller who may read `read` (channel patterns), anonymous or the user `user`.
fn caller(user: Option<&str>, read: &[&str]) -> Caller {
    Caller {
        user: user.map(str::to_owned),
        grants: Grants {
            admin: false,
            read: read.iter().map(|&c| c.to_owned()).collect(),
            write: Vec::new(),
        },
        expires_at: None,
        generation: user.map(|_| 0),
    }
}

fn account(name: &str) -> User {
    User {
        username: name.to_owned(),
        password_hash: "$argon2id$unused".to_owned(),
        admin: false,
        read: vec!["*".to_owned()],
        write: Vec::new(),
        created_at: 1,
        revoked: false,
        token_generation: 0,
        totp: None,
    }
}

fn strictly_increasing(ids: &[u64]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

/// Snapshot, then live, with inserts before the snapshot is taken, between its pages and
/// after it: the latest version of every event as of the cut, then everything after it, with
/// no gap and nothing twice at the seam.
async fn snapshot_then_live_with_inserts_racing_the_snapshot(backend: &Backend) {
    let (app, _dir) = backend.app(&[]).await;
    let state = app.state().clone();
    let mut stored = Stored::default();
    // More events than one snapshot page holds, so that inserts land between pages.
    for block in 0..7 {
        let names: Vec<String> = (0..100).map(|i| format!("e{}", block * 100 + i)).collect();
        let batch: Vec<(&str, &str)> = names.iter().map(|n| ("a", n.as_str())).collect();
        stored.insert(&state, &batch).await;
    }
    stored.insert(&state, &[("a", "e1"), ("b", "e1")]).await;

    let mut reader = Reader::open(&state, Start::Snapshot, None, caller(None, &["a", "b"]));
    assert!(reader.chunk().await, "retry first");
    // Committed after the stream registered, before it takes its snapshot: in the snapshot
    // and in the hub's ring.
    stored
        .insert(&state, &[("a", "e2"), ("a", "e650"), ("c", "e1")])
        .await;
    let cut = stored.last();
    assert!(reader.chunk().await, "the first page");
    assert!(
        reader.control().is_empty(),
        "the snapshot is longer than one page"
    );
    // Between pages: a new version of an event already sent and of one still to come.
    stored.insert(&state, &[("a", "e3"), ("a", "e690")]).await;
    reader.until(|f| f.event == "$synced").await;
    let live = stored.insert(&state, &[("b", "e2"), ("a", "e0")]).await;
    reader.until_record(live[1]).await;

    let readable = |c: &str| c != "c";
    let expected = stored.snapshot(cut, readable);
    assert_eq!(
        reader.records(),
        expected,
        "snapshot cut at {cut}, then live"
    );
    let synced = reader
        .control()
        .into_iter()
        .find(|f| f.event == "$synced")
        .and_then(|f| f.id);
    let last_of_snapshot = expected.iter().copied().filter(|&id| id <= cut).max();
    assert_eq!(
        synced, last_of_snapshot,
        "$synced names the last record of the snapshot"
    );
    drop(reader);
    app.close().await;
}

/// Inserts from another task while a stream takes its snapshot and goes live: whatever the
/// interleaving, one cut explains what it delivered.
async fn snapshot_against_concurrent_inserts(backend: &Backend) {
    let (app, _dir) = backend.app(&[]).await;
    let state = app.state().clone();
    let mut stored = Stored::default();
    stored.commits(&state, "a", 40).await;
    let opened_at = stored.last();
    let writer = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut stored = Stored::default();
            for i in 0..60 {
                let event = format!("e{}", i % 50);
                let channel = if i % 3 == 0 { "b" } else { "a" };
                stored.insert(&state, &[(channel, event.as_str())]).await;
            }
            stored
        })
    };
    let mut reader = Reader::open(&state, Start::Snapshot, None, caller(None, &["a"]));
    reader.until(|f| f.event == "$synced").await;
    let written = writer.await.expect("writer");
    stored.0.extend(written.0);
    stored.0.sort_unstable();
    let marker = stored.insert(&state, &[("a", "end")]).await;
    reader.until_record(marker[0]).await;
    let ids = reader.records();
    assert!(strictly_increasing(&ids), "in order, none twice: {ids:?}");
    let fits = (opened_at..=stored.last()).any(|cut| stored.snapshot(cut, |c| c == "a") == ids);
    assert!(fits, "no cut explains {ids:?}");
    drop(reader);
    app.close().await;
}

/// `Last-Event-ID` in the middle: every readable record after it, `$synced`, then live.
async fn resume_from_last_event_id_in_the_middle(backend: &Backend) {
    let (app, _dir) = backend.app(&[]).await;
    let state = app.state().clone();
    let mut stored = Stored::default();
    for i in 0..10 {
        let event = format!("e{i}");
        stored
            .insert(
                &state,
                &[("a", event.as_str()), ("b", event.as_str()), ("a", "x")],
            )
            .await;
    }
    let middle = 14;
    let mut reader = Reader::open(
        &state,
        Start::After(middle),
        Some(vec!["a", "b"]),
        caller(None, &["a"]),
    );
    reader.until(|f| f.event == "$synced").await;
    let live = stored.insert(&state, &[("b", "z"), ("a", "z")]).await;
    reader.until_record(live[1]).await;

    assert_eq!(reader.records(), stored.after(middle, |c| c == "a"));
    let control = reader.control();
    assert!(control.iter().all(|f| f.event != "$reset"), "{control:?}");
    let synced = control
        .iter()
        .find(|f| f.event == "$synced")
        .and_then(|f| f.id);
    let last_replayed = stored
        .after(middle, |c| c == "a")
        .into_iter()
        .filter(|&id| id < live[0])
        .max();
    assert_eq!(
        synced, last_replayed,
        "$synced names the last record replayed"
    );
    drop(reader);
    app.close().await;
}

/// A stream that falls behind the hub, by its ring (`Lagged`) or by its byte bound (evicted
/// commits), catches up from the store from its cursor: no gap, nothing twice, then live.
async fn lag_past_the_live_buffer_catches_up_from_the_store(backend: &Backend) {
    for flags in [
        ["--stream-buffer", "4", "--stream-buffer-bytes", "1000000"],
        ["--stream-buffer", "1000", "--stream-buffer-bytes", "600"],
    ] {
        let (app, _dir) = backend.app(&flags).await;
        let state = app.state().clone();
        let mut stored = Stored::default();
        stored.commits(&state, "a", 3).await;
        let mut reader = Reader::open(&state, Start::Snapshot, None, caller(None, &["*"]));
        reader.until(|f| f.event == "$synced").await;
        let slow_before = state.metrics.slow_subscribers.get();
        // The stream reads nothing while these commit.
        let behind = stored.commits(&state, "a", 30).await;
        stored.insert(&state, &[("b", "x"), ("a", "y")]).await;
        let last = stored.last();
        reader.until_record(last).await;
        let live = stored.insert(&state, &[("a", "z")]).await;
        reader.until_record(live[0]).await;

        assert_eq!(
            reader.after_synced(),
            stored.after(behind[0] - 1, |_| true),
            "caught up with {flags:?}"
        );
        assert!(
            state.metrics.slow_subscribers.get() > slow_before,
            "counted as slow ({flags:?})"
        );
        drop(reader);
        app.close().await;
    }
}

/// A `Last-Event-ID` the store does not know (newer than its history, or not an id): `$reset`
/// first, then the snapshot.
async fn unknown_history_gets_reset_and_a_snapshot(backend: &Backend) {
    let (app, _dir) = backend.app(&[]).await;
    let state = app.state().clone();
    let mut stored = Stored::default();
    stored.commits(&state, "a", 3).await;
    stored.insert(&state, &[("a", "e0")]).await;
    for (start, named) in [
        (Start::After(1000), "1000"),
        (Start::Unknown("abc".to_owned()), "abc"),
    ] {
        let mut reader = Reader::open(&state, start, None, caller(None, &["*"]));
        reader.until(|f| f.event == "$synced").await;
        let frames = reader.frames();
        let first = frames.first().expect("a frame");
        assert_eq!(first.event, "$reset");
        let reset: serde_json::Value = serde_json::from_str(&first.data).expect("JSON");
        assert_eq!(reset["last_event_id"], named);
        assert_eq!(reader.records(), stored.snapshot(stored.last(), |_| true));
    }
    app.close().await;
}

/// A revocation ends the stream: from the hub when live, and before the first page of a
/// catch-up when the stream lagged past the hub's notice; new credentials likewise.
async fn revocation_noticed_live_and_after_catch_up(backend: &Backend) {
    let (app, _dir) = backend.app(&["--stream-buffer", "4"]).await;
    let state = app.state().clone();
    let mut stored = Stored::default();
    for name in ["ann", "bob", "cy"] {
        state.store.create_user(account(name)).await.expect("user");
    }

    // Live: the hub's notice.
    let mut live = Reader::open(&state, Start::Snapshot, None, caller(Some("ann"), &["*"]));
    live.until(|f| f.event == "$synced").await;
    let mut revoked = account("ann");
    revoked.revoked = true;
    state.store.put_user(revoked).await.expect("revoke");
    state.hub.revoke("ann");
    live.read_to_end().await;
    assert_eq!(
        live.control().last().map(|f| f.data.as_str()),
        Some("{\"error\":\"user revoked\"}")
    );

    // Behind: the notice is gone from the ring by the time the stream reads again.
    for (name, change) in [("bob", "user revoked"), ("cy", "credentials changed")] {
        let mut reader = Reader::open(&state, Start::Snapshot, None, caller(Some(name), &["*"]));
        reader.until(|f| f.event == "$synced").await;
        stored.commits(&state, "a", 5).await;
        let mut user = account(name);
        if name == "bob" {
            user.revoked = true;
        } else {
            user.token_generation = 1;
        }
        state.store.put_user(user).await.expect("change");
        state.hub.revoke(name);
        stored.commits(&state, "a", 10).await;
        reader.read_to_end().await;
        let end = reader.control().last().cloned().expect("a last frame");
        assert_eq!(end.event, "$error");
        assert_eq!(end.data, format!("{{\"error\":\"{change}\"}}"));
        assert_eq!(
            reader.after_synced(),
            Vec::<u64>::new(),
            "nothing after falling behind"
        );
    }
    app.close().await;
}

/// Credentials that expire end the stream: an idle one at the moment they expire, and one
/// that was behind when they did before it catches up.
async fn expiry_idle_and_during_catch_up(backend: &Backend) {
    let (app, _dir) = backend.app(&["--stream-buffer", "4"]).await;
    let state = app.state().clone();
    let mut stored = Stored::default();
    stored.commits(&state, "a", 2).await;

    let soon = crate::auth::jwt::now_secs() + 2;
    let mut idle_caller = caller(None, &["*"]);
    idle_caller.expires_at = Some(soon);
    let mut idle = Reader::open(&state, Start::Snapshot, None, idle_caller.clone());
    let mut behind = Reader::open(&state, Start::Snapshot, None, idle_caller);
    idle.until(|f| f.event == "$synced").await;
    behind.until(|f| f.event == "$synced").await;
    idle.read_to_end().await;
    assert_eq!(
        idle.control().last().map(|f| f.data.as_str()),
        Some("{\"error\":\"token expired\"}")
    );
    // Past the expiry now; `behind` was not polled, so it has not noticed. Commits push it
    // past the ring.
    stored.commits(&state, "a", 10).await;
    behind.read_to_end().await;
    assert_eq!(
        behind.control().last().map(|f| f.data.as_str()),
        Some("{\"error\":\"token expired\"}")
    );
    assert_eq!(
        behind.after_synced(),
        Vec::<u64>::new(),
        "no record after the credentials expired"
    );
    app.close().await;
}

/// Every case, on one backend.
async fn run_all(backend: &Backend) {
    snapshot_then_live_with_inserts_racing_the_snapshot(backend).await;
    snapshot_against_concurrent_inserts(backend).await;
    resume_from_last_event_id_in_the_middle(backend).await;
    lag_past_the_live_buffer_catches_up_from_the_store(backend).await;
    unknown_history_gets_reset_and_a_snapshot(backend).await;
    revocation_noticed_live_and_after_catch_up(backend).await;
    expiry_idle_and_during_catch_up(backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_machine_on_the_embedded_store() {
    run_all(&Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_machine_on_the_jetstream_store() {
    let server = NatsServer::start().await;
    run_all(&Backend::JetStream(server, AtomicUsize::new(0))).await;
}

/// History removed from JetStream (a purge, an age limit): a `Last-Event-ID` from before what
/// the stream still holds is unknown (`$reset`, then the snapshot), never a replay with a gap;
/// one from the edge of what it holds replays as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_removed_from_jetstream_gets_reset() {
    let server = NatsServer::start().await;
    let url = server.url().to_owned();
    let backend = Backend::JetStream(server, AtomicUsize::new(0));
    let (app, _dir) = backend.app(&[]).await;
    let state = app.state().clone();
    let mut stored = Stored::default();
    stored.commits(&state, "a", 6).await;
    let client = async_nats::connect(url).await.expect("connect");
    let records = async_nats::jetstream::new(client)
        .get_stream("m0_records")
        .await
        .expect("the records stream");
    records.purge().sequence(4).await.expect("purge 1..=3");
    assert_eq!(state.store.oldest_id().await.expect("oldest"), 4);

    let mut gone = Reader::open(&state, Start::After(2), None, caller(None, &["*"]));
    gone.until(|f| f.event == "$synced").await;
    let first = gone.frames().into_iter().next().expect("a frame");
    assert_eq!(first.event, "$reset");

    let mut held = Reader::open(&state, Start::After(3), None, caller(None, &["*"]));
    held.until(|f| f.event == "$synced").await;
    assert!(held.control().iter().all(|f| f.event != "$reset"));
    assert_eq!(held.records(), stored.after(3, |_| true));
    app.close().await;
}
