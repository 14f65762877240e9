//! The event stream: snapshot, live delivery, replay by `Last-Event-ID`, filters, envelope,
//! keep-alive, slow subscribers.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::sse::SseItem;
use common::{Server, TIMEOUT};
use serde_json::json;

#[tokio::test]
async fn stream_starts_with_retry_and_snapshot_holds_only_latest_versions() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    api.insert(&token, "user", json!({"name": "Ada"}), None)
        .await;
    api.insert(&token, "user", json!({"name": "Grace"}), None)
        .await;
    api.insert(&token, "title", json!("Hello"), Some("room1"))
        .await;
    let last = api
        .insert(&token, "user", json!({"name": "Linus"}), None)
        .await;

    let mut stream = api.stream("/events", Some(&token), None).await;
    assert_eq!(
        stream.next_item().await,
        Some(SseItem::Retry(2000)),
        "stream opens with retry:"
    );
    let (events, synced) = stream.until_synced().await;
    let seen: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e.id.clone().unwrap_or_default(),
                e.event.clone(),
                e.data.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("3".into(), "title".into(), "\"Hello\"".into()),
            ("4".into(), "user".into(), r#"{"name":"Linus"}"#.into()),
        ],
        "latest version of each (channel, event), in id order"
    );
    assert_eq!(synced, last["id"].as_str().unwrap());
}

#[tokio::test]
async fn live_records_follow_the_snapshot() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    api.insert(&token, "user", json!({"name": "Ada"}), None)
        .await;
    let mut stream = api.stream("/sse", Some(&token), None).await;
    let (snapshot, _) = stream.until_synced().await;
    assert_eq!(snapshot.len(), 1);
    let inserted = api
        .insert(&token, "user", json!({"name": "Grace"}), None)
        .await;
    let live = stream.next_event().await;
    assert_eq!(live.id.as_deref(), inserted["id"].as_str());
    assert_eq!(live.event, "user");
    assert_eq!(live.json(), json!({"name": "Grace"}));
}

/// Inserts `count` versions of `event`, data `{"n": i}`; returns their ids.
async fn insert_versions(api: &common::Api, token: &str, event: &str, count: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for n in 0..count {
        let answer = api.insert(token, event, json!({"n": n}), None).await;
        ids.push(answer["id"].as_str().unwrap().parse().unwrap());
    }
    ids
}

fn ids_of(events: &[common::sse::SseEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            e.id.as_deref()
                .expect("record has an id")
                .parse()
                .expect("numeric id")
        })
        .collect()
}

#[tokio::test]
async fn last_event_id_replays_every_missed_version_without_gap_or_duplicate() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    insert_versions(&api, &token, "counter", 3).await;
    let mut stream = api.stream("/events", Some(&token), None).await;
    let (snapshot, synced) = stream.until_synced().await;
    assert_eq!(ids_of(&snapshot), vec![3]);
    drop(stream);

    // While disconnected: many versions of two events, interleaved.
    let mut missed = Vec::new();
    for round in 0..60 {
        missed.extend(
            insert_versions(
                &api,
                &token,
                if round % 2 == 0 { "counter" } else { "other" },
                1,
            )
            .await,
        );
    }
    for (header, query) in [(Some(synced.as_str()), ""), (None, "?last_event_id=3")] {
        let mut resumed = api
            .stream(&format!("/events{query}"), Some(&token), header)
            .await;
        let (replayed, synced_again) = resumed.until_synced().await;
        assert_eq!(
            ids_of(&replayed),
            missed,
            "every missed version, in order, once"
        );
        assert_eq!(synced_again, missed.last().unwrap().to_string());
        let live = api
            .insert(&token, "counter", json!({"n": "live"}), None)
            .await;
        let next = resumed.next_event().await;
        assert_eq!(
            next.id.as_deref(),
            live["id"].as_str(),
            "live continues right after the replay"
        );
        missed.push(next.id.unwrap().parse().unwrap());
    }
}

#[tokio::test]
async fn unknown_last_event_id_resets_to_the_snapshot() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    insert_versions(&api, &token, "counter", 2).await;
    for bad in ["999", "not-a-number"] {
        let mut stream = api.stream("/events", Some(&token), Some(bad)).await;
        let first = stream.next_event().await;
        assert_eq!(first.event, "$reset");
        assert_eq!(first.json()["last_event_id"], json!(bad));
        let (snapshot, synced) = stream.until_synced().await;
        assert_eq!(ids_of(&snapshot), vec![2]);
        assert_eq!(synced, "2");
    }
    // An id that is current is not a reset: nothing to replay.
    let mut stream = api.stream("/events", Some(&token), Some("2")).await;
    let (replayed, synced) = stream.until_synced().await;
    assert!(replayed.is_empty());
    assert_eq!(synced, "2");
}

#[tokio::test]
async fn concurrent_publishers_reach_one_subscriber_exactly_once_in_id_order() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    let mut stream = api.stream("/events", Some(&token), None).await;
    stream.until_synced().await;
    let publishers = 8;
    let per_publisher = 40;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (api, token) = (api.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..per_publisher {
                let answer = api.insert(&token, &format!("p{p}"), json!(n), None).await;
                ids.push(answer["id"].as_str().unwrap().parse::<u64>().unwrap());
            }
            ids
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    acknowledged.sort_unstable();
    let mut received = Vec::new();
    while received.len() < acknowledged.len() {
        received.push(stream.next_event().await);
    }
    let ids = ids_of(&received);
    assert_eq!(
        ids, acknowledged,
        "each acknowledged insert exactly once, in id order"
    );
    for p in 0..publishers {
        let values: Vec<i64> = received
            .iter()
            .filter(|e| e.event == format!("p{p}"))
            .map(|e| e.json().as_i64().unwrap())
            .collect();
        assert_eq!(
            values,
            (0..per_publisher).collect::<Vec<_>>(),
            "publisher {p}'s order kept"
        );
    }
}

#[tokio::test]
async fn subscribers_joining_during_a_flood_miss_nothing_and_repeat_nothing() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    let events = 4;
    let per_event: i64 = 150;
    let mut publishers = Vec::new();
    for e in 0..events {
        let (api, token) = (api.clone(), token.clone());
        publishers.push(tokio::spawn(async move {
            for n in 0..per_event {
                api.insert(&token, &format!("e{e}"), json!(n), None).await;
            }
        }));
    }
    // Subscribers connect one after another while the publishers run.
    let mut subscribers = Vec::new();
    for _ in 0..12 {
        let (api, token) = (api.clone(), token.clone());
        let mut stream = api.stream("/events", Some(&token), None).await;
        subscribers.push(tokio::spawn(async move {
            let (snapshot, _) = stream.until_synced().await;
            let mut last: std::collections::HashMap<String, i64> = snapshot
                .iter()
                .map(|e| (e.event.clone(), e.json().as_i64().unwrap()))
                .collect();
            let mut previous_id = ids_of(&snapshot).last().copied().unwrap_or(0);
            while last.len() < events || last.values().any(|v| *v < per_event - 1) {
                let event = stream.next_event().await;
                let id: u64 = event.id.as_deref().unwrap().parse().unwrap();
                assert!(
                    id > previous_id,
                    "ids strictly increase: {id} after {previous_id}"
                );
                previous_id = id;
                let value = event.json().as_i64().unwrap();
                let expected = last.get(&event.event).map_or(0, |v| v + 1);
                assert_eq!(
                    value,
                    expected,
                    "{} jumped from {:?} to {value}",
                    event.event,
                    last.get(&event.event)
                );
                last.insert(event.event, value);
            }
        }));
        tokio::task::yield_now().await;
    }
    for p in publishers {
        p.await.unwrap();
    }
    for s in subscribers {
        tokio::time::timeout(TIMEOUT, s)
            .await
            .expect("subscriber saw everything")
            .unwrap();
    }
}

#[tokio::test]
async fn channels_filter_and_envelope() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    api.insert(&token, "msg", json!("a1"), Some("a")).await;
    api.insert(&token, "msg", json!("b1"), Some("b")).await;
    api.insert(&token, "msg", json!("c1"), Some("c")).await;
    let mut stream = api
        .stream("/events?channels=a,c&envelope=true", Some(&token), None)
        .await;
    let (snapshot, synced) = stream.until_synced().await;
    let channels: Vec<String> = snapshot
        .iter()
        .map(|e| e.json()["channel"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(channels, vec!["a", "c"]);
    assert_eq!(synced, "3", "$synced names the last id sent");
    let envelope = snapshot[0].json();
    assert_eq!(envelope["id"], json!("1"));
    assert_eq!(envelope["event"], json!("msg"));
    assert_eq!(envelope["data"], json!("a1"));
    assert!(
        envelope["timestamp"].as_u64().unwrap() > 1_600_000_000_000_000,
        "microseconds"
    );
    api.insert(&token, "msg", json!("b2"), Some("b")).await;
    let c2 = api.insert(&token, "msg", json!("c2"), Some("c")).await;
    let next = stream.next_event().await;
    assert_eq!(
        next.id.as_deref(),
        c2["id"].as_str(),
        "channel b is filtered out"
    );
    assert_eq!(next.json()["data"], json!("c2"));
}

/// A batch is one commit. A stream that may read all of it gets the commit's frames as shared
/// bytes; a stream that may read part of it gets those records alone. Both in id order, each
/// exactly once, in either format.
#[tokio::test]
async fn batches_reach_whole_and_filtered_streams_alike() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    let mut all = api.stream("/events", Some(&token), None).await;
    let mut some = api
        .stream("/events?channels=a,c&envelope=true", Some(&token), None)
        .await;
    all.until_synced().await;
    some.until_synced().await;
    let batch = |items: &[(&str, &str)]| {
        let events: Vec<_> = items
            .iter()
            .map(
                |(channel, value)| json!({"channelName": channel, "type": "msg", "payload": value}),
            )
            .collect();
        json!({ "events": events })
    };
    for items in [
        &[("a", "a1"), ("b", "b1"), ("c", "c1")][..],
        &[("a", "a2"), ("a", "a3")],
        &[("b", "b2")],
        &[("c", "c2")],
    ] {
        let (status, answer) = api.post("/publish", Some(&token), &batch(items)).await;
        assert!(status.is_success(), "{status} {answer}");
    }
    let mut seen_all = Vec::new();
    for _ in 0..7 {
        seen_all.push(all.next_event().await);
    }
    let values: Vec<_> = seen_all.iter().map(|e| e.json()).collect();
    assert_eq!(
        values,
        ["a1", "b1", "c1", "a2", "a3", "b2", "c2"].map(|v| json!(v))
    );
    let ids = ids_of(&seen_all);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order: {ids:?}");
    let mut seen_some = Vec::new();
    for _ in 0..5 {
        seen_some.push(some.next_event().await.json());
    }
    let pairs: Vec<_> = seen_some
        .iter()
        .map(|e| (e["channel"].clone(), e["data"].clone()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("a", "a1"),
            ("c", "c1"),
            ("a", "a2"),
            ("a", "a3"),
            ("c", "c2")
        ]
        .map(|(c, v)| (json!(c), json!(v)))
    );
    // Nothing more: the next record after a marker insert is the marker itself.
    let marker = api.insert(&token, "msg", json!("end"), Some("a")).await;
    assert_eq!(some.next_event().await.json()["id"], marker["id"]);
    assert_eq!(all.next_event().await.id.as_deref(), marker["id"].as_str());
}

#[tokio::test]
async fn keep_alive_comments_arrive_on_an_idle_stream() {
    let server = Server::start(&["--keepalive", "1"]);
    let api = server.api();
    let token = api.user("ada").await;
    let mut stream = api.stream("/events", Some(&token), None).await;
    stream.until_synced().await;
    let mut comments = 0;
    while comments < 2 {
        match stream.next_item_within(Duration::from_secs(5)).await {
            Ok(Some(SseItem::Comment(text))) => {
                assert_eq!(text, "keep-alive");
                comments += 1;
            }
            other => panic!("expected a keep-alive comment, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stalled_subscriber_delays_nobody_and_loses_nothing() {
    // A tiny ring buffer so that the stalled stream overflows it quickly.
    let server = Server::start(&["--stream-buffer", "16"]);
    let api = server.api();
    let token = api.user("ada").await;
    let mut stalled = api.stream("/events", Some(&token), None).await;
    stalled.until_synced().await;
    let mut healthy = api.stream("/events", Some(&token), None).await;
    healthy.until_synced().await;

    // ~12 MB of events: more than the socket buffers hold, so the stalled stream stops being
    // written to and falls behind the ring while the publishers carry on.
    let filler = "x".repeat(4000);
    let total = 3000;
    let mut publishers = Vec::new();
    for p in 0..16 {
        let (api, token, filler) = (api.clone(), token.clone(), filler.clone());
        publishers.push(tokio::spawn(async move {
            for n in (p..total).step_by(16) {
                api.insert(&token, "bulk", json!({"n": n, "pad": filler}), None)
                    .await;
            }
        }));
    }
    let mut healthy_ids = Vec::new();
    while healthy_ids.len() < total {
        healthy_ids.push(healthy.next_event().await);
    }
    for p in publishers {
        p.await.unwrap();
    }
    let healthy_ids = ids_of(&healthy_ids);
    // Only now does the stalled subscriber read: everything, in order, once.
    let mut late = Vec::new();
    while late.len() < total {
        late.push(stalled.next_event().await);
    }
    assert_eq!(ids_of(&late), healthy_ids);
    assert!(healthy_ids.windows(2).all(|w| w[0] < w[1]));
    let expected: HashSet<i64> = (0..total as i64).collect();
    let got: HashSet<i64> = late
        .iter()
        .map(|e| e.json()["n"].as_i64().unwrap())
        .collect();
    assert_eq!(got, expected);
    let metrics = api
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let caught_up: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("broker_slow_subscribers_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("slow subscriber metric");
    assert!(
        caught_up >= 1,
        "the stalled stream was caught up from the store:\n{metrics}"
    );
}

#[tokio::test]
async fn too_many_streams_get_503() {
    let server = Server::start(&["--max-streams", "2"]);
    let api = server.api();
    let token = api.user("ada").await;
    let _a = api.stream("/events", Some(&token), None).await;
    let _b = api.stream("/events", Some(&token), None).await;
    let refused =
        common::sse::SseStream::request(&api.http, &server.url("/events"), Some(&token), None)
            .await;
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("too many"));
    drop(_a);
    // The slot is released once the server notices the closed connection.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let resp =
            common::sse::SseStream::request(&api.http, &server.url("/events"), Some(&token), None)
                .await;
        if resp.status() == reqwest::StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn synced_carries_the_resume_id_even_after_an_empty_snapshot() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    let mut stream = api.stream("/events", Some(&token), None).await;
    let synced = loop {
        let event = stream.next_event().await;
        if event.event == "$synced" {
            break event;
        }
    };
    assert_eq!(
        synced.id.as_deref(),
        Some("0"),
        "`id:` on $synced so EventSource resumes from it"
    );
    drop(stream);
    let a = api.insert(&token, "e", json!(1), None).await;
    let b = api.insert(&token, "e", json!(2), None).await;
    let mut resumed = api
        .stream("/events", Some(&token), synced.id.as_deref())
        .await;
    let (replayed, _) = resumed.until_synced().await;
    let want: Vec<u64> = [&a, &b]
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        ids_of(&replayed),
        want,
        "both versions, not just the latest"
    );
}
