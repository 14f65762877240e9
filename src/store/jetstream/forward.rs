//! Appends forwarded to the node holding the writer lease ([`super::lease`]), over NATS
//! request/reply.
//!
//! Every node answers on `<prefix>.w.<node id>`. A request carries the appends that were
//! waiting on the forwarding node, gathered like the writer gathers its own (a JSON array of
//! appends, each an array of records: `c` channel, `e` event, `u` user, `d` data); the node
//! hands each to its writer and answers, for each, with the id of the first record stored and
//! the timestamp of every record, or the error. Up to [`IN_FLIGHT`] requests are out at once.
//! Appends too large for one NATS message, or for a holder that no longer listens, are written
//! by the node itself.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use async_nats::Request;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use super::lease::Holder;
use super::patience::no_responders;
use super::store::{REQUEST_TIMEOUT, backend, unavailable};
use super::writer::{Append, copy, gather, stored};
use crate::store::{NewRecord, StoreError};

/// Most forwarding requests out at once.
pub const IN_FLIGHT: usize = 8;

/// A record of a forwarded append.
#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    c: Cow<'a, str>,
    #[serde(borrow)]
    e: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    u: Option<Cow<'a, str>>,
    #[serde(borrow)]
    d: &'a RawValue,
}

/// The writer node's answer for one append.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    /// Stored: the first record's id and every record's timestamp.
    Stored { first: u64, stamps: Vec<u64> },
    /// The store could not be reached; worth trying again.
    Unavailable(String),
    /// Not stored, for this reason.
    Failed(String),
}

/// The subject on which node `node` takes forwarded appends.
pub fn subject(prefix: &str, node: &str) -> String {
    format!("{prefix}.w.{node}")
}

/// Answers the appends forwarded on `subject` by handing them to `writer`.
///
/// # Errors
/// When the subscription cannot be made.
pub async fn serve(
    client: async_nats::Client,
    subject: String,
    writer: mpsc::Sender<Append>,
) -> Result<tokio::task::JoinHandle<()>, StoreError> {
    let mut requests = client.subscribe(subject).await.map_err(unavailable)?;
    Ok(tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply else { continue };
            let (client, writer) = (client.clone(), writer.clone());
            tokio::spawn(async move {
                let answers = write_all(&writer, &request.payload).await;
                match serde_json::to_vec(&answers) {
                    Ok(payload) => {
                        if let Err(e) = client.publish(reply, payload.into()).await {
                            tracing::warn!(error = %e, "cannot answer forwarded appends");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot encode a forwarded answer"),
                }
            });
        }
    }))
}

/// Writes the appends of one forwarding request, each as it would be written here.
async fn write_all(writer: &mpsc::Sender<Append>, payload: &[u8]) -> Vec<Answer> {
    let appends: Vec<Vec<Entry<'_>>> = match serde_json::from_slice(payload) {
        Ok(appends) => appends,
        Err(e) => return vec![Answer::Failed(format!("unreadable forwarded appends: {e}"))],
    };
    let mut stored = Vec::with_capacity(appends.len());
    for entries in appends {
        let batch = entries
            .into_iter()
            .map(|e| NewRecord {
                channel: e.c.into_owned(),
                event: e.e.into_owned(),
                user: e.u.map(Cow::into_owned),
                data: e.d.to_owned(),
            })
            .collect();
        let (reply, rx) = oneshot::channel();
        let _ = writer.send(Append { batch, reply }).await;
        stored.push(rx);
    }
    let mut answers = Vec::with_capacity(stored.len());
    for rx in stored {
        answers.push(match rx.await {
            Ok(Ok(records)) => Answer::Stored {
                first: records.first().map_or(0, |r| r.id),
                stamps: records.iter().map(|r| r.timestamp).collect(),
            },
            Ok(Err(StoreError::Unavailable(why))) => Answer::Unavailable(why),
            Ok(Err(StoreError::Backend(why))) => Answer::Failed(why),
            Ok(Err(e)) => Answer::Failed(e.to_string()),
            Err(_) => Answer::Unavailable("the writer node is shutting down".into()),
        });
    }
    answers
}

/// Starts the task that forwards the appends sent to the returned channel to the lease
/// holder, or hands them to `writer` when this node holds the lease, no one does, or the
/// holder does not listen.
pub fn start(
    client: async_nats::Client,
    prefix: String,
    holder: watch::Receiver<Holder>,
    writer: mpsc::Sender<Append>,
) -> mpsc::Sender<Append> {
    let (tx, mut rx) = mpsc::channel::<Append>(4096);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut held = VecDeque::new();
        loop {
            if held.is_empty() {
                match rx.recv().await {
                    Some(append) => held.push_back(append),
                    None => return,
                }
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            // Whatever else waits by now goes in the same request.
            let (group, _, _) = gather(&mut held, &mut rx);
            let node = match &*holder.borrow() {
                Holder::Other(node) => Some(node.clone()),
                _ => None,
            };
            let (client, writer, prefix) = (client.clone(), writer.clone(), prefix.clone());
            tokio::spawn(async move {
                let unheard = match node {
                    Some(node) => forward(&client, subject(&prefix, &node), group).await,
                    None => group,
                };
                for append in unheard {
                    if let Err(refused) = writer.send(append).await {
                        let _ = refused.0.reply.send(Err(StoreError::Closed));
                    }
                }
                drop(slot);
            });
        }
    });
    tx
}

/// Forwards `group` to the node listening on `subject` and answers its appends; those not
/// heard (no listener, or too large to send) come back, unanswered and unstored.
async fn forward(client: &async_nats::Client, subject: String, group: Vec<Append>) -> Vec<Append> {
    let appends: Vec<Vec<Entry<'_>>> = group
        .iter()
        .map(|append| {
            append
                .batch
                .iter()
                .map(|r| Entry {
                    c: r.channel.as_str().into(),
                    e: r.event.as_str().into(),
                    u: r.user.as_deref().map(Into::into),
                    d: &r.data,
                })
                .collect()
        })
        .collect();
    let payload = match serde_json::to_vec(&appends) {
        Ok(payload) if payload.len() < client.server_info().max_payload => payload,
        _ => return group,
    };
    drop(appends);
    let request = Request::new()
        .payload(payload.into())
        .timeout(Some(REQUEST_TIMEOUT));
    let answers = match client.send_request(subject, request).await {
        Ok(answer) => serde_json::from_slice::<Vec<Answer>>(&answer.payload)
            .ok()
            .filter(|answers| answers.len() == group.len()),
        Err(e) if no_responders(&e) => return group,
        Err(e) => {
            let error = unavailable(e);
            for append in group {
                let _ = append.reply.send(Err(copy(&error)));
            }
            return Vec::new();
        }
    };
    let Some(answers) = answers else {
        for append in group {
            let _ = append
                .reply
                .send(Err(backend("unreadable answer from the writer node")));
        }
        return Vec::new();
    };
    for (append, answer) in group.into_iter().zip(answers) {
        let result = match answer {
            Answer::Stored { first, stamps } if stamps.len() == append.batch.len() => {
                Ok(stored(append.batch, first, stamps))
            }
            Answer::Stored { .. } => Err(backend("the writer node stored another count")),
            Answer::Unavailable(why) => Err(StoreError::Unavailable(why)),
            Answer::Failed(why) => Err(StoreError::Backend(why)),
        };
        let _ = append.reply.send(result);
    }
    Vec::new()
}
