//! The behaviour every [`Store`] implementation must have. Each implementation's tests call
//! [`run_all`] with a factory that makes a fresh, empty store.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::watch;

use super::{CommitListener, NewRecord, Record, Store, StoreError, User};

/// A listener that remembers every committed id, in the order it was told.
pub struct Recorder {
    /// Ids in the order the store reported them.
    ids: watch::Sender<Vec<u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            ids: watch::Sender::new(Vec::new()),
        }
    }
}

impl Recorder {
    /// The ids reported so far, once there are at least `n` of them. A store tells its listener
    /// right after it acknowledges a commit, so the last few may arrive just after `append`.
    pub async fn ids_once(&self, n: usize) -> Vec<u64> {
        let mut rx = self.ids.subscribe();
        let ready =
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|ids| ids.len() >= n));
        match ready.await {
            Ok(Ok(ids)) => ids.clone(),
            _ => panic!(
                "listener was told of {} ids, not {n}",
                self.ids.borrow().len()
            ),
        }
    }
}

impl CommitListener for Recorder {
    fn committed(&self, records: &[Arc<Record>]) {
        self.ids
            .send_modify(|ids| ids.extend(records.iter().map(|r| r.id)));
    }
}

/// A new record with JSON `data`.
pub fn new_record(channel: &str, event: &str, data: &str) -> NewRecord {
    NewRecord {
        channel: channel.into(),
        event: event.into(),
        user: Some("tester".into()),
        data: RawValue::from_string(data.into()).expect("valid JSON"),
    }
}

fn user(name: &str) -> User {
    User {
        username: name.into(),
        password_hash: "$argon2id$fake".into(),
        admin: false,
        read: vec!["*".into()],
        write: vec!["*".into()],
        created_at: 1,
        revoked: false,
        token_generation: 0,
        totp: None,
    }
}

/// Runs every check, each on a fresh store from `make`. `G` keeps whatever backs the store alive.
pub async fn run_all<G>(make: impl Fn(Arc<dyn CommitListener>) -> (Box<dyn Store>, G)) {
    ids_increase_and_are_reported_in_order(&make).await;
    latest_holds_only_the_newest_version(&make).await;
    since_pages_through_everything(&make).await;
    versions_are_oldest_first_and_paginate(&make).await;
    pages_stop_at_their_byte_bound(&make).await;
    latest_ids_are_one_cut_in_id_order(&make).await;
    batches_are_atomic_and_contiguous(&make).await;
    concurrent_appends_are_all_kept(&make).await;
    users_are_created_once(&make).await;
    usernames_and_channels_are_listed(&make).await;
    closed_store_refuses_writes(&make).await;
}

async fn ids_increase_and_are_reported_in_order<G>(
    make: &impl Fn(Arc<dyn CommitListener>) -> (Box<dyn Store>, G),
) {
    let recorder = Arc::new(Recorder::default());
    let (store, _guard) = make(recorder.clone());
    assert_eq!(store.last_id().await.expect("last_id"), 0);
    let mut ids = Vec::new();
    let mut stamps = Vec::new();
    for i in 0..5 {
        let r = store
            .append(vec![new_record("c", "e", &i.to_string())])
            .await
            .expect("append");
        ids.push(r[0].id);
        stamps.push(r[0].timestamp);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "timestamps unique and increasing"
    );
    assert_eq!(store.last_id().await.expect("last_id"), ids[4]);
    assert_eq!(
        recorder.ids_once(ids.len()).await,
        ids,
        "listener told every id, in order"
    );
    store.close().await;
}

async fn latest_holds_only_the_newest_version<G>(
    make: &impl Fn(Arc<dyn CommitListener>) -> (Box<dyn Store>, G),
) {
    let (store, _guard) = make(Arc::new(Recorder::default()));
    store
        .append(vec![new_record("a", "x", "1")])
        .await
        .expect("append");
    store
        .append(vec![new_record("a", "y", "1")])
        .await
        .expect("append");
    store
        .append(vec![new_record("b", "x", "1")])
        .await
        .expect("append");
    store
        .append(vec![new_record("a", "x", "2")])
        .await
        .expect("append");
    let all = store.latest(None).await.expect("latest");
    let summary: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|r| (r.channel.as_str(), r.event.as_str(), r.data.get()))
        .collect();
    assert_eq!(
        summary,
        vec![("a", "y", "1"), ("b", "x", "1"), ("a", "x", "2")],
        "id order, newest only"
    );
    let only_a = store
        .latest(Some(vec!["a".into()]))
        .await
        .expect("latest a");
    assert_eq!(only_a.len(), 2);
    assert!(only_a.iter().all(|r| r.channel == "a"));
    assert!(
        store
            .latest(Some(vec!["zzz".into()]))
            .await
            .expect("latest")
            .is_empty()
    );
    let one = store
        .latest_of("a", "x")
        .await
        .expect("latest_of")
        .expect("exists");
    assert_eq!(one.data.get(), "2");
    assert!(
        store
            .latest_of("a", "nope")
            .await
            .expect("latest_of")
            .is_none()
    );
    store.close().await;
}

async fn since_pages_through_everything<G>(
    make: &impl Fn(Arc<dyn CommitListener>) -> (Box<dyn Store>, G),
) {
    let (store, _guard) = make(Arc::new(Recorder::default()));
    let batch = (0..25)
        .map(|i| new_record(if i % 2 == 0 { "a" } else { "b" }, "e", &i.to_string()))
        .collect();
    let written = store.append(batch).await.expect("append");
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store.since(after, 10, usize::MAX).await.expect("since");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        after = page.last().map(|r| r.id).unwrap_or(after);
        seen.extend(page.iter().map(|r| r.id));
    }
    assert_eq!(
        seen,
        written.iter().map(|r| r.id).collect::<Vec<_>>(),
        "every record once, in order"
    );
    // Nothing was removed: the whole history is there to replay from the start.
    assert_eq!(store.oldest_id().await.expect("oldest id"), 1);
    assert!(
        store
            .since(u64::MAX, 10, usize::MAX)
            .await
            .expect("since max")
            .is_empty()
    );
    store.close().await;
}

async fn versions_are_oldest_first_and_paginate<G>(
    make: &impl Fn(Arc<dyn CommitListener>) -> (Box<dyn Store>, G),
) {
    let (store, _guard) = make(Arc::new(Recorder::default()));
    for i in 0..7 {
        store
            .append(vec![new_record("c", "v", &i.to_string())])
            .await
            .expect("append");
        store
            .append(vec![new_record("c", "other", "0")])
            .await
            .expect("append");
        store
            .append(vec![new_record("d", "v", "0")])
            .await
            .expect("append");
    }
    let all = store
        .versions("c", "v", 0, 100, usize::MAX)
        .await
        .expect("versions");
    let data: Vec<&str> = all.iter().map(|r| r.data.get()).collect();
    assert_eq!(data, vec!["0", "1", "2", "3", "4", "5", "6"]);
    let page = store
        .versions("c", "v", all[2].id, 2, usize::MAX)
        .await
        .expect("page");
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![all[3].id, all[4].id]
    );
    assert!(
        store
            .versions("c", "missing", 0, 100, usize::MAX)
            .await
            .expect("none")
            .is_empty()
    );
    store.close().await;
}

async fn pages_stop_at_their_byte_bound<G>(
    make: &impl Fn(Arc<dyn CommitListener>) -> (Box<dyn Store>, G),
) {
    let (store, _guard) = make(Arc::new(Recorder::default()));
    let big = format!("\"{}\"", "x".repeat(1000));
    let written = store
        .append((0..10).map(|_| new_record("c", "e", &big)).collect())
        .await
        .expect("append");
    let size = written[0].size();
    let page = store.since(0, 100, 3 * size).await.expect("since");
    assert_eq!(page.len(), 3, "a page stops once it holds the bound");
    let one = store.since(0, 100, 1).await.expect("since");
    assert_eq!(one.len(), 1, "a record larger than the bound still moves");
    let versions = store.versions("c", "e", 0, 100, 2 * size).await.expect("v");
    assert_eq!(versions.len(), 2);
    let ids: Vec<u64> = written.iter().map(|r| r.id).collect();
    let fetched = store.records(ids.clone(), 4 * size).await.expect("records");
    assert_eq!(
        fetched.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[..4].to_vec(),
        "records come in the order asked, a prefix within the bound"
    );
    let all = store.records(ids.clone(), usize::MAX).await.expect("all");
    assert_eq!(all.len(), 10);
    store.close().await;
}

async fn latest_ids_are_one_cut_in_id_order<G>(
    make: &impl Fn(Arc<dyn CommitListener>) -> (Box<dyn Store>, G),
) {
    let (store, _guard) = make(Arc::new(Recorder::default()));
    let mut last = std::collections::HashMap::new();
    for (channel, event, data) in [
        ("b", "x", "1"),
        ("a", "y", "2"),
        ("b", "x", "3"),
        ("c", "z", "4"),
        ("a", "w", "5"),
    ] {
        let r = store
            .append(vec![new_record(channel, event, data)])
            .await
            .expect("append");
        last.insert((channel, event), r[0].id);
    }
    let everything: super::ChannelPredicate = Arc::new(|_| true);
    let ids = store
        .latest_ids(None, everything.clone())
        .await
        .expect("ids");
    let mut expected: Vec<u64> = last.values().copied().collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "one id per (channel, event), in id order");
    let not_b: super::ChannelPredicate = Arc::new(|c| c != "b");
    let ids = store.latest_ids(None, not_b).await.expect("ids");
    assert_eq!(ids.len(), 3, "the predicate filters channels");
    let only_ab = store
        .latest_ids(Some(vec!["b".into(), "a".into()]), everything)
        .await
        .expect("ids");
    let mut ab = vec![last[&("b", "x")], last[&("a", "y")], last[&("a", "w")]];
    ab.sort_unstable();
    assert_eq!(only_ab, ab);
    store.close().await;
}

async fn batches_are_atomic_and_contiguous<G>(
    make: &impl Fn(Arc<dyn CommitListener>) -> (Box<dyn Store>, G),
) {
    let recorder = Arc::new(Recorder::default());
    let (store, _guard) = make(recorder.clone());
    let out = store
        .append(vec![
            new_record("a", "1", "1"),
            new_record("b", "2", "2"),
            new_record("a", "3", "3"),
        ])
        .await
        .expect("append");
    let ids: Vec<u64> = out.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        vec![ids[0], ids[0] + 1, ids[0] + 2],
        "a batch takes consecutive ids"
    );
    assert_eq!(out[1].channel, "b");
    assert_eq!(recorder.ids_once(ids.len()).await, ids);
    store.close().await;
}

async fn concurrent_appends_are_all_kept<G>(
    make: &impl Fn(Arc<dyn CommitListener>) -> (Box<dyn Store>, G),
) {
    let recorder = Arc::new(Recorder::default());
    let (store, _guard) = make(recorder.clone());
    let store: Arc<dyn Store> = Arc::from(store);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..50 {
                let r = store
                    .append(vec![new_record("c", &format!("t{t}"), &i.to_string())])
                    .await;
                ids.push(r.expect("append")[0].id);
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let ids = task.await.expect("task");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "one writer's appends keep their order"
        );
        all.extend(ids);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 400, "no id handed out twice");
    let reported = recorder.ids_once(all.len()).await;
    assert_eq!(reported, all, "listener saw all of them in id order");
    assert_eq!(
        store.since(0, 1000, usize::MAX).await.expect("since").len(),
        400
    );
    store.close().await;
}

async fn users_are_created_once<G>(make: &impl Fn(Arc<dyn CommitListener>) -> (Box<dyn Store>, G)) {
    let (store, _guard) = make(Arc::new(Recorder::default()));
    assert!(store.user("ada").await.expect("lookup").is_none());
    store.create_user(user("ada")).await.expect("create");
    assert!(matches!(
        store.create_user(user("ada")).await,
        Err(StoreError::Conflict(_))
    ));
    let mut ada = store.user("ada").await.expect("lookup").expect("exists");
    assert_eq!(ada, user("ada"));
    ada.revoked = true;
    store.put_user(ada.clone()).await.expect("put");
    assert!(
        store
            .user("ada")
            .await
            .expect("lookup")
            .expect("exists")
            .revoked
    );
    store.close().await;
}

async fn closed_store_refuses_writes<G>(
    make: &impl Fn(Arc<dyn CommitListener>) -> (Box<dyn Store>, G),
) {
    let (store, _guard) = make(Arc::new(Recorder::default()));
    store
        .append(vec![new_record("c", "e", "1")])
        .await
        .expect("append");
    store.close().await;
    assert!(matches!(
        store.append(vec![new_record("c", "e", "2")]).await,
        Err(StoreError::Closed)
    ));
}

async fn usernames_and_channels_are_listed<G>(
    make: &impl Fn(Arc<dyn CommitListener>) -> (Box<dyn Store>, G),
) {
    let (store, _guard) = make(Arc::new(Recorder::default()));
    assert!(store.usernames().await.expect("names").is_empty());
    assert!(store.channels().await.expect("channels").is_empty());
    for name in ["bob", "ada", "c.d@e"] {
        store.create_user(user(name)).await.expect("create");
    }
    let mut revoked = user("bob");
    revoked.revoked = true;
    store.put_user(revoked).await.expect("put");
    assert_eq!(
        store.usernames().await.expect("names"),
        vec!["ada", "bob", "c.d@e"]
    );
    store
        .append(vec![
            new_record("room/1", "x", "1"),
            new_record("room/1", "x", "2"),
            new_record("a:b", "y", "3"),
        ])
        .await
        .expect("append");
    let last = store
        .append(vec![new_record("room/1", "z", "4")])
        .await
        .expect("append");
    let channels = store.channels().await.expect("channels");
    let names: Vec<&str> = channels.iter().map(|c| c.channel.as_str()).collect();
    assert_eq!(names, vec!["a:b", "room/1"], "sorted by name");
    let room = &channels[1];
    assert_eq!((room.records, room.events), (3, 2));
    assert_eq!(room.last_id, last[0].id);
    assert_eq!(room.last_timestamp, last[0].timestamp);
    assert_eq!((channels[0].records, channels[0].events), (1, 1));
    store.close().await;
}
