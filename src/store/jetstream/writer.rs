//! The node's writer: group commit into JetStream atomic batches under expected-last-sequence.
//!
//! The appends waiting for the writer are gathered (up to [`MAX_BATCH`] records) into one
//! atomic batch whose first message carries `Nats-Expected-Last-Sequence`, the last sequence the
//! writer knows: the batch is stored only if nothing else was written in between, so its
//! records take consecutive ids right after it, and their timestamps, `max(now, last timestamp
//! + 1)` counting up, are unique and increase with the id across the whole stream. When another
//! writer came first, the server refuses the batch ("wrong last sequence"); the writer re-reads
//! the stream's last record and sends the batch again. An append is answered only after its
//! batch's ack (stored by a quorum of the replicas), within [`REQUEST_TIMEOUT`]. Answers come
//! on one subscription, `<inbox>.<token>`, made once.
//!
//! One batch is in flight at a time, and that is what keeps the order safe. A second batch sent
//! before the first is answered could only expect the sequence the first would end at; if the
//! first were refused because another node wrote exactly as many records in between (a writer
//! whose connection dropped sends its buffered batches when it is back), the second would be
//! stored after that node's records with timestamps that may be older than theirs. JetStream
//! offers no check a chain of batches could carry against that (`Nats-Expected-Last-Msg-Id` and
//! per-subject expectations are refused or serialised in batches), and a second batch in
//! flight measured no faster (docs/BENCHMARKS.md): while one batch is out, the next gathers.
//! The writer lease ([`super::lease`]) is what keeps other nodes from writing at the same time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::patience::patiently;
use super::store::{MAX_BATCH, MAX_CONFLICTS, REQUEST_TIMEOUT, Wire, backend, decode, unavailable};
use super::subject;
use crate::store::{NewRecord, Record, StoreError, now_micros};

/// Pause before a batch that no one heard is sent again.
const NOT_HEARD_PAUSE: Duration = Duration::from_millis(50);

/// JetStream's error code for a failed `Nats-Expected-Last-Sequence`.
const WRONG_LAST_SEQUENCE: u64 = 10071;

/// An append waiting for the writer, and where its records (or the error) go.
pub struct Append {
    /// The records, stored as one batch with consecutive ids.
    pub batch: Vec<NewRecord>,
    /// Receives the stored records, in order, or why they were not stored.
    pub reply: oneshot::Sender<Result<Vec<Arc<Record>>, StoreError>>,
}

/// Appends written together as one atomic batch.
struct Group {
    appends: Vec<Append>,
    /// Records in all the appends.
    count: usize,
    /// Times a batch of this group was refused or not heard.
    refused: usize,
    /// When the group's answer is due.
    due: Instant,
}

impl Group {
    fn records(&self) -> impl Iterator<Item = &NewRecord> {
        self.appends.iter().flat_map(|a| &a.batch)
    }

    /// Answers every append with its records, the group's first record having id `first`.
    fn succeed(self, first: u64, stamps: &[u64]) {
        let mut first = first;
        let mut stamps = stamps.iter().copied();
        for append in self.appends {
            let count = append.batch.len();
            let records = stored(append.batch, first, stamps.by_ref().take(count));
            first += count as u64;
            let _ = append.reply.send(Ok(records));
        }
    }

    /// Answers every append with `error`.
    fn fail(self, error: &StoreError) {
        for append in self.appends {
            let _ = append.reply.send(Err(copy(error)));
        }
    }
}

/// The appends waiting, from `held` first and then `rx`, without waiting for more: up to
/// [`MAX_BATCH`] records in all (an append larger than that alone). An append that would go
/// past it is put back at the front of `held`. Also returns the number of records, and whether
/// `rx` has closed.
pub(super) fn gather(
    held: &mut VecDeque<Append>,
    rx: &mut mpsc::Receiver<Append>,
) -> (Vec<Append>, usize, bool) {
    let mut appends = Vec::new();
    let mut count = 0;
    let mut closed = false;
    loop {
        let next = match held.pop_front() {
            Some(append) => append,
            None => match rx.try_recv() {
                Ok(append) => append,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            },
        };
        if count > 0 && count + next.batch.len() > MAX_BATCH {
            held.push_front(next);
            break;
        }
        count += next.batch.len();
        appends.push(next);
    }
    (appends, count, closed)
}

/// The records of `batch` as stored: ids from `first` on, each with its timestamp.
pub(super) fn stored(
    batch: Vec<NewRecord>,
    first: u64,
    stamps: impl IntoIterator<Item = u64>,
) -> Vec<Arc<Record>> {
    batch
        .into_iter()
        .zip(stamps)
        .zip(first..)
        .map(|((r, stamp), id)| {
            Arc::new(Record::new(id, r.channel, r.event, stamp, r.user, r.data))
        })
        .collect()
}

/// The same error again, for each of the appends it answers.
pub(super) fn copy(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
        StoreError::Closed => StoreError::Closed,
        StoreError::Backend(why) => StoreError::Backend(why.clone()),
        other => StoreError::Backend(other.to_string()),
    }
}

/// How the server answered a batch.
enum Outcome {
    /// Stored; the sequence of its last message.
    Stored(u64),
    /// Refused: the stream's last sequence was not the one expected.
    Conflict,
    /// Nothing listened on the subject (the stream's leader is moving): nothing was stored.
    NotHeard,
}

/// A batch sent, waiting for its answer.
struct InFlight {
    group: Group,
    /// The stream's last sequence the batch expects.
    expected: u64,
    stamps: Vec<u64>,
    /// The last token of the subject its answer comes on.
    token: u64,
}

/// The answer to a batch commit.
#[derive(Deserialize)]
struct BatchAck {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: u64,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// What the writer waits for next.
enum Event {
    /// A message on the answers subscription (`None`: it ended).
    Answer(Option<async_nats::Message>),
    /// The answer to the batch in flight is overdue.
    Overdue,
    /// An append (`None`: the channel closed).
    Received(Option<Append>),
}

/// The node's one writer task (see the module docs).
pub struct Writer {
    client: async_nats::Client,
    stream: stream::Stream,
    subject_prefix: String,
    /// The prefix of the subjects batch answers come on: `<inbox>.<token>`.
    inbox: String,
    /// The one subscription to `<inbox>.*` (made when the first batch goes out).
    answers: Option<async_nats::Subscriber>,
    /// The token of the next batch.
    token: u64,
    /// The last sequence and timestamp of the stream as this writer knows it, counting the
    /// batch in flight; `None` when it must be read again.
    tip: Option<(u64, u64)>,
    /// The batch sent and not yet settled.
    inflight: Option<InFlight>,
    /// Groups to send again, first.
    retries: VecDeque<Group>,
    /// Appends received but not yet in a group.
    waiting: VecDeque<Append>,
    /// Whether the next batch waits [`NOT_HEARD_PAUSE`] first.
    pause: bool,
    /// Whether the append channel has closed.
    closed: bool,
}

impl Writer {
    /// A writer for `stream`, whose record subjects start with `subject_prefix`.
    pub fn new(client: async_nats::Client, stream: stream::Stream, subject_prefix: String) -> Self {
        let inbox = client.new_inbox();
        Self {
            client,
            stream,
            subject_prefix,
            inbox,
            answers: None,
            token: 0,
            tip: None,
            inflight: None,
            retries: VecDeque::new(),
            waiting: VecDeque::new(),
            pause: false,
            closed: false,
        }
    }

    /// Writes the appends received on `rx` until it closes and everything is answered.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Append>) {
        loop {
            if self.inflight.is_none()
                && let Some(group) = self.next_group(&mut rx)
            {
                if std::mem::take(&mut self.pause) {
                    tokio::time::sleep(NOT_HEARD_PAUSE).await;
                }
                self.send(group).await;
                continue;
            }
            let event = match &self.inflight {
                None if self.closed => return,
                None => Event::Received(rx.recv().await),
                Some(batch) => {
                    let due = batch.group.due;
                    let answers = self.answers.as_mut();
                    tokio::select! {
                        biased;
                        message = next_answer(answers) => Event::Answer(message),
                        () = tokio::time::sleep_until(due) => Event::Overdue,
                    }
                }
            };
            match event {
                Event::Answer(Some(message)) => {
                    // Late answers, to batches already settled as overdue, are dropped.
                    let token = token_of(&message);
                    if let Some(done) = self.inflight.take_if(|b| Some(b.token) == token) {
                        let outcome = outcome(&message, done.group.count);
                        self.settle(done, outcome);
                    }
                }
                Event::Answer(None) => {
                    self.answers = None;
                    if let Some(done) = self.inflight.take() {
                        self.settle(done, Err(unavailable("the connection to NATS closed")));
                    }
                }
                Event::Overdue => {
                    if let Some(done) = self.inflight.take() {
                        self.settle(done, Err(unavailable("no answer from JetStream")));
                    }
                }
                Event::Received(Some(append)) => self.waiting.push_back(append),
                Event::Received(None) => self.closed = true,
            }
        }
    }

    /// The next group to send: a refused one first, else the waiting appends, up to
    /// [`MAX_BATCH`] records (an append larger than that alone).
    fn next_group(&mut self, rx: &mut mpsc::Receiver<Append>) -> Option<Group> {
        if let Some(group) = self.retries.pop_front() {
            return Some(group);
        }
        let (appends, count, closed) = gather(&mut self.waiting, rx);
        self.closed |= closed;
        (!appends.is_empty()).then(|| Group {
            appends,
            count,
            refused: 0,
            due: Instant::now() + REQUEST_TIMEOUT,
        })
    }

    /// Re-reads the stream's last sequence and the last record's timestamp.
    async fn refresh(&mut self) -> Result<(u64, u64), StoreError> {
        let info = patiently(|| self.stream.get_info())
            .await
            .map_err(unavailable)?;
        let seq = info.state.last_sequence;
        let ts = if seq == 0 {
            0
        } else {
            let message = patiently(|| self.stream.get_raw_message(seq))
                .await
                .map_err(backend)?;
            decode(seq, &message.payload)?.timestamp
        };
        self.tip = Some((seq, ts));
        Ok((seq, ts))
    }

    /// Sends `group` as one atomic batch after the tip, or answers it with the error.
    async fn send(&mut self, group: Group) {
        if group.count > MAX_BATCH {
            let error = backend(format!(
                "a batch holds at most {MAX_BATCH} records in cluster mode"
            ));
            group.fail(&error);
            return;
        }
        let (seq, ts) = match self.tip {
            Some(tip) => tip,
            None => match tokio::time::timeout_at(group.due, self.refresh()).await {
                Ok(Ok(tip)) => tip,
                result => {
                    // JetStream does not answer: so are answered all the appends waiting.
                    let error = match result {
                        Ok(Err(e)) => e,
                        _ => unavailable("no answer from JetStream"),
                    };
                    group.fail(&error);
                    for group in std::mem::take(&mut self.retries) {
                        group.fail(&error);
                    }
                    for append in std::mem::take(&mut self.waiting) {
                        let _ = append.reply.send(Err(copy(&error)));
                    }
                    return;
                }
            },
        };
        let first_stamp = now_micros().max(ts + 1);
        let stamps: Vec<u64> = (first_stamp..).take(group.count).collect();
        let messages = match self.messages(&group, &stamps) {
            Ok(messages) => messages,
            Err(e) => {
                group.fail(&e);
                return;
            }
        };
        self.token += 1;
        let reply = format!("{}.{}", self.inbox, self.token);
        let sent = match self.subscribe_answers().await {
            Ok(()) => publish(&self.client, seq, messages, reply).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => {
                self.tip = stamps.last().map(|&t| (seq + group.count as u64, t));
                self.inflight = Some(InFlight {
                    group,
                    expected: seq,
                    stamps,
                    token: self.token,
                });
            }
            Err(e) => {
                self.tip = None;
                group.fail(&e);
            }
        }
    }

    /// Makes the one subscription batch answers come on, unless it is there.
    async fn subscribe_answers(&mut self) -> Result<(), StoreError> {
        if self.answers.is_none() {
            let answers = self.client.subscribe(format!("{}.*", self.inbox)).await;
            self.answers = Some(answers.map_err(unavailable)?);
        }
        Ok(())
    }

    /// The batch's messages: each record's subject and payload.
    fn messages(&self, group: &Group, stamps: &[u64]) -> Result<Vec<(String, Bytes)>, StoreError> {
        let mut messages = Vec::with_capacity(group.count);
        for (i, (record, &stamp)) in group.records().zip(stamps).enumerate() {
            let wire = Wire {
                c: record.channel.as_str().into(),
                e: record.event.as_str().into(),
                u: record.user.as_deref().map(Into::into),
                t: stamp,
                n: group.count,
                i,
                d: &record.data,
            };
            let payload = serde_json::to_vec(&wire).map_err(backend)?;
            let subject = subject::record(&self.subject_prefix, &record.channel, &record.event);
            messages.push((subject, Bytes::from(payload)));
        }
        Ok(messages)
    }

    /// Answers a batch's appends from the server's answer, or queues them to be sent again.
    fn settle(&mut self, done: InFlight, outcome: Result<Outcome, StoreError>) {
        let InFlight {
            mut group,
            expected,
            stamps,
            ..
        } = done;
        match outcome {
            Ok(Outcome::Stored(last)) => {
                let first = (last + 1).saturating_sub(group.count as u64);
                if first == expected + 1 {
                    group.succeed(first, &stamps);
                } else {
                    self.tip = None;
                    let error = backend(format!(
                        "batch stored at {first}, expected {}",
                        expected + 1
                    ));
                    group.fail(&error);
                }
            }
            Ok(outcome) => {
                self.tip = None;
                self.pause |= matches!(outcome, Outcome::NotHeard);
                group.refused += 1;
                if group.refused >= MAX_CONFLICTS {
                    group.fail(&backend("too many concurrent writers; try again"));
                } else {
                    self.retries.push_back(group);
                }
            }
            Err(e) => {
                self.tip = None;
                group.fail(&e);
            }
        }
    }
}

/// The token a batch answer's subject ends with.
fn token_of(answer: &async_nats::Message) -> Option<u64> {
    answer.subject.rsplit('.').next()?.parse().ok()
}

/// The next message on the answers subscription; never, without one.
async fn next_answer(answers: Option<&mut async_nats::Subscriber>) -> Option<async_nats::Message> {
    match answers {
        Some(answers) => answers.next().await,
        None => std::future::pending().await,
    }
}

/// Publishes one atomic batch expecting `last` as the stream's last sequence, its commit
/// answered on `reply`.
async fn publish(
    client: &async_nats::Client,
    last: u64,
    messages: Vec<(String, Bytes)>,
    reply: String,
) -> Result<(), StoreError> {
    let id = super::random_token(22);
    let total = messages.len();
    if total == 0 {
        return Err(backend("empty batch"));
    }
    let mut reply = Some(reply);
    for (i, (subject, payload)) in messages.into_iter().enumerate() {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Batch-Id", id.as_str());
        headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        if i == 0 {
            headers.insert("Nats-Expected-Last-Sequence", last.to_string().as_str());
        }
        let commit = if i + 1 == total { reply.take() } else { None };
        match commit {
            None => client.publish_with_headers(subject, headers, payload).await,
            Some(reply) => {
                headers.insert("Nats-Batch-Commit", "1");
                client
                    .publish_with_reply_and_headers(subject, reply, headers, payload)
                    .await
            }
        }
        .map_err(unavailable)?;
    }
    Ok(())
}

/// What the answer to a batch of `count` messages says.
fn outcome(answer: &async_nats::Message, count: usize) -> Result<Outcome, StoreError> {
    if answer.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        return Ok(Outcome::NotHeard);
    }
    let ack: BatchAck = serde_json::from_slice(&answer.payload)
        .map_err(|e| backend(format!("unreadable batch ack: {e}")))?;
    if let Some(error) = ack.error {
        if error.err_code == WRONG_LAST_SEQUENCE
            || error.description.contains("wrong last sequence")
        {
            return Ok(Outcome::Conflict);
        }
        return Err(backend(format!("batch refused: {}", error.description)));
    }
    if ack.count != count as u64 {
        return Err(backend("batch ack counts another size"));
    }
    Ok(Outcome::Stored(ack.seq))
}
