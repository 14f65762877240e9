//! The node's own view of the record stream, kept current by its ordered consumer.
//!
//! Every node already reads every record once, in id order, through its one ordered consumer
//! (the live feed). [`LocalView`] keeps two things from that read, so that streams opening or
//! resuming by the thousand ask JetStream nothing:
//!
//! - **the latest id of every (channel, event)**: a snapshot is a lookup here, as of the last
//!   applied id `A`;
//! - **a window of the most recent records** (bounded in bytes): a replay from an id inside it
//!   is a copy of `Arc`s.
//!
//! Both are updated together, a whole commit at a time, *before* the commit is handed to the
//! hub. A stream registers with the hub before it reads here, so every record after the `A` it
//! read reaches it through the hub: the cut meets the live feed with no gap and no duplicate,
//! by construction. A view that finds a hole in the sequence stops answering (the store then
//! reads JetStream, as it does before the feed starts).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::store::{Record, page_full};

/// The view: see the module's documentation.
pub struct LocalView {
    state: RwLock<State>,
    /// The last applied id, for readers waiting for their own writes to arrive.
    applied: watch::Sender<u64>,
    /// Most bytes of records the window keeps.
    window_bytes: usize,
}

#[derive(Default)]
struct State {
    /// Whether the view answers: loaded, and no hole seen since.
    valid: bool,
    /// Every record up to this id has been applied.
    applied: u64,
    /// The latest id of every event, by channel.
    latest: HashMap<String, HashMap<String, u64>>,
    /// The most recent records, consecutive ids, oldest first, ending at `applied`.
    window: VecDeque<Arc<Record>>,
    /// Bytes of the records in `window` ([`Record::size`]).
    bytes: usize,
}

impl State {
    /// The id of the window's first record, or the next id to come when it is empty.
    fn window_start(&self) -> u64 {
        self.window.front().map_or(self.applied + 1, |r| r.id)
    }

    fn index(&mut self, record: &Record) {
        let events = self.latest.entry(record.channel.clone()).or_default();
        match events.get_mut(&record.event) {
            Some(id) => *id = (*id).max(record.id),
            None => {
                events.insert(record.event.clone(), record.id);
            }
        }
    }
}

impl LocalView {
    /// An empty view that answers nothing until [`LocalView::load`], keeping at most
    /// `window_bytes` of recent records.
    pub fn new(window_bytes: usize) -> Self {
        Self {
            state: RwLock::new(State::default()),
            applied: watch::Sender::new(0),
            window_bytes,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the view from a cut read from JetStream: `latest` is the latest version of every
    /// event as of some id at least `applied`, and the consumer delivers from `applied + 1` on.
    /// Records of the cut newer than `applied` come again from the consumer; the index keeps
    /// the larger id, so applying them twice changes nothing.
    pub fn load(&self, latest: &[Arc<Record>], applied: u64) {
        let mut state = self.write();
        *state = State {
            valid: true,
            applied,
            ..State::default()
        };
        for record in latest {
            state.index(record);
        }
        drop(state);
        self.applied.send_replace(applied);
    }

    /// Applies one commit from the consumer (whole, in id order) and returns the records that
    /// are new to the view, for the hub. Records at or below the applied id are left out (a
    /// consumer that delivers one twice must not make the hub send it twice); a hole in the
    /// ids turns the view off for good.
    pub fn apply(&self, commit: &[Arc<Record>]) -> Vec<Arc<Record>> {
        let mut state = self.write();
        let fresh: Vec<Arc<Record>> = commit
            .iter()
            .filter(|r| r.id > state.applied)
            .cloned()
            .collect();
        for record in &fresh {
            if state.valid && record.id != state.applied + 1 {
                tracing::error!(
                    expected = state.applied + 1,
                    got = record.id,
                    "a hole in the record stream's ids: snapshots and replays read JetStream from now on"
                );
                state.valid = false;
                state.latest = HashMap::new();
                state.window.clear();
                state.bytes = 0;
            }
            state.applied = record.id;
            if !state.valid {
                continue;
            }
            state.index(record);
            state.bytes += record.size();
            state.window.push_back(record.clone());
            while state.window.len() > 1 && state.bytes > self.window_bytes {
                if let Some(old) = state.window.pop_front() {
                    state.bytes -= old.size();
                }
            }
        }
        let applied = state.applied;
        drop(state);
        self.applied.send_replace(applied);
        fresh
    }

    /// Waits until every id up to `id` has been applied, for at most `patience`. Returns
    /// whether it was, and the view answers.
    pub async fn caught_up(&self, id: u64, patience: Duration) -> bool {
        if !self.read().valid {
            return false;
        }
        let mut rx = self.applied.subscribe();
        let reached = tokio::time::timeout(patience, rx.wait_for(|a| *a >= id)).await;
        matches!(reached, Ok(Ok(_))) && self.read().valid
    }

    /// The last applied id, when the view answers.
    pub fn applied(&self) -> Option<u64> {
        let state = self.read();
        state.valid.then_some(state.applied)
    }

    /// The latest id of every event whose channel is in `channels` (when given) and passes
    /// `keep`, in id order, as of the last applied id; `None` when the view does not answer.
    pub fn latest_ids(
        &self,
        channels: Option<&[String]>,
        keep: impl Fn(&str) -> bool,
    ) -> Option<Vec<u64>> {
        let state = self.read();
        if !state.valid {
            return None;
        }
        let mut ids = Vec::new();
        let mut take = |channel: &str, events: &HashMap<String, u64>| {
            if keep(channel) {
                ids.extend(events.values().copied());
            }
        };
        match channels {
            Some(channels) => {
                let mut seen = std::collections::HashSet::new();
                for channel in channels {
                    if seen.insert(channel.as_str())
                        && let Some(events) = state.latest.get(channel)
                    {
                        take(channel, events);
                    }
                }
            }
            None => {
                for (channel, events) in &state.latest {
                    take(channel, events);
                }
            }
        }
        drop(state);
        ids.sort_unstable();
        Some(ids)
    }

    /// Up to `limit` records after `after`, in id order, within `max_bytes` ([`page_full`]),
    /// from the window: every record from `after + 1` to the last applied id. `None` when the
    /// window does not reach back to `after + 1` (or the view does not answer).
    pub fn since(&self, after: u64, limit: usize, max_bytes: usize) -> Option<Vec<Arc<Record>>> {
        let state = self.read();
        if !state.valid {
            return None;
        }
        if after >= state.applied {
            return Some(Vec::new());
        }
        if after + 1 < state.window_start() {
            return None;
        }
        let skip = usize::try_from(after + 1 - state.window_start()).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut bytes = 0;
        for record in state.window.iter().skip(skip) {
            if out.len() >= limit || page_full(out.len(), bytes, max_bytes) {
                break;
            }
            bytes += record.size();
            out.push(record.clone());
        }
        Some(out)
    }

    /// The record with this id, when the window holds it.
    pub fn get(&self, id: u64) -> Option<Arc<Record>> {
        let state = self.read();
        if !state.valid || id < state.window_start() {
            return None;
        }
        let at = usize::try_from(id - state.window_start()).ok()?;
        state.window.get(at).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, channel: &str, event: &str) -> Arc<Record> {
        Arc::new(Record::new(
            id,
            channel.to_owned(),
            event.to_owned(),
            id,
            None,
            serde_json::value::RawValue::from_string(id.to_string()).expect("JSON"),
        ))
    }

    fn ids(records: &[Arc<Record>]) -> Vec<u64> {
        records.iter().map(|r| r.id).collect()
    }

    #[test]
    fn answers_nothing_until_loaded() {
        let view = LocalView::new(usize::MAX);
        assert_eq!(view.latest_ids(None, |_| true), None);
        assert_eq!(view.since(0, 10, usize::MAX).map(|r| ids(&r)), None);
        assert_eq!(view.applied(), None);
    }

    #[test]
    fn snapshots_follow_the_commits_and_filter_channels() {
        let view = LocalView::new(usize::MAX);
        // The cut read at start: a.x at 2 and b.y at 4 as of 4; the consumer starts at 3.
        view.load(&[record(2, "a", "x"), record(4, "b", "y")], 2);
        assert_eq!(view.latest_ids(None, |_| true), Some(vec![2, 4]));
        // 3 and 4 come again from the consumer, then newer ones.
        let fresh = view.apply(&[record(3, "a", "z"), record(4, "b", "y")]);
        assert_eq!(ids(&fresh), [3, 4]);
        assert_eq!(ids(&view.apply(&[record(5, "a", "x")])), [5]);
        assert_eq!(view.latest_ids(None, |_| true), Some(vec![3, 4, 5]));
        assert_eq!(view.latest_ids(None, |c| c != "b"), Some(vec![3, 5]));
        let asked = ["b".to_owned(), "b".to_owned(), "none".to_owned()];
        assert_eq!(view.latest_ids(Some(&asked), |_| true), Some(vec![4]));
        assert_eq!(view.applied(), Some(5));
    }

    #[test]
    fn replays_come_from_the_window_and_stop_at_its_start() {
        let size = record(1, "a", "e").size();
        let view = LocalView::new(3 * size);
        view.load(&[], 0);
        for id in 1..=5 {
            view.apply(&[record(id, "a", "e")]);
        }
        // The window keeps the newest three: 3, 4, 5.
        assert_eq!(view.since(1, 10, usize::MAX).map(|r| ids(&r)), None);
        assert_eq!(
            view.since(2, 10, usize::MAX).map(|r| ids(&r)),
            Some(vec![3, 4, 5])
        );
        assert_eq!(view.since(3, 1, usize::MAX).map(|r| ids(&r)), Some(vec![4]));
        assert_eq!(view.since(3, 10, 1).map(|r| ids(&r)), Some(vec![4]));
        assert_eq!(view.since(5, 10, usize::MAX).map(|r| ids(&r)), Some(vec![]));
        assert_eq!(
            view.since(u64::MAX, 10, usize::MAX).map(|r| ids(&r)),
            Some(vec![])
        );
        assert_eq!(view.get(4).map(|r| r.id), Some(4));
        assert!(view.get(2).is_none() && view.get(6).is_none());
    }

    #[test]
    fn a_record_delivered_twice_goes_to_the_hub_once() {
        let view = LocalView::new(usize::MAX);
        view.load(&[], 0);
        assert_eq!(
            ids(&view.apply(&[record(1, "a", "e"), record(2, "a", "e")])),
            [1, 2]
        );
        assert_eq!(
            ids(&view.apply(&[record(2, "a", "e"), record(3, "a", "e")])),
            [3]
        );
        assert_eq!(
            view.since(0, 10, usize::MAX).map(|r| ids(&r)),
            Some(vec![1, 2, 3])
        );
    }

    #[test]
    fn a_hole_turns_the_view_off() {
        let view = LocalView::new(usize::MAX);
        view.load(&[], 0);
        view.apply(&[record(1, "a", "e")]);
        let fresh = view.apply(&[record(3, "a", "e")]);
        assert_eq!(ids(&fresh), [3], "the hub still gets what arrived");
        assert_eq!(view.latest_ids(None, |_| true), None);
        assert_eq!(view.since(0, 10, usize::MAX).map(|r| ids(&r)), None);
        assert_eq!(view.applied(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn readers_wait_for_their_own_writes() {
        let view = Arc::new(LocalView::new(usize::MAX));
        view.load(&[], 0);
        assert!(view.caught_up(0, Duration::ZERO).await);
        let applier = {
            let view = view.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                view.apply(&[record(1, "a", "e")]);
            })
        };
        assert!(view.caught_up(1, Duration::from_secs(1)).await);
        applier.await.expect("applier");
        assert!(!view.caught_up(2, Duration::from_millis(10)).await);
    }
}
