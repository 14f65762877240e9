//! node-sse-server's wire protocol: `/subscribe`, `/publish`, `/lastEvent`, `/presence`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::sse::{SseEvent, SseStream};
use common::{Server, TIMEOUT};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The example batch of node-sse-server's README.
fn readme_batch() -> Value {
    json!({"events": [
        {"channelName": "channel1", "type": "message", "payload": "{ \"location\": \"123.44,34.234234\"}"},
        {"channelName": "channel1", "type": "foo", "payload": "{ \"message\": \"Hi fooo\"}"},
        {"channelName": "channel2", "type": "message", "payload": "{ \"location\": \"123.44,872938.99\"}"},
        {"channelName": "channel2", "type": "bar", "payload": "{ \"location\": \"123.44\"}"}
    ]})
}

/// Next event that is not `online-presence`.
async fn next_non_presence(stream: &mut SseStream) -> SseEvent {
    loop {
        let event = stream.next_event().await;
        if event.event != "online-presence" {
            return event;
        }
    }
}

async fn subscribe(server: &Server, query: &str) -> SseStream {
    server
        .api()
        .stream(&format!("/subscribe?{query}"), None, None)
        .await
}

#[tokio::test]
async fn readme_example_subscribe_then_publish() {
    let server = Server::start(&["--no-auth"]);
    let mut stream = subscribe(&server, "channels=channel1,channel2").await;
    let registered = stream.next_event().await;
    assert_eq!(registered.event, "registered");
    let reg = registered.json();
    assert_eq!(reg["type"], json!("registered"));
    assert!(reg.get("channelName").is_none());
    let client: Value = serde_json::from_str(reg["payload"].as_str().unwrap()).unwrap();
    assert!(
        !client["clientId"].as_str().unwrap().is_empty(),
        "a generated client id"
    );
    for channel in ["channel1", "channel2"] {
        let last = stream.next_event().await;
        assert_eq!(last.event, "lastEvent");
        assert_eq!(
            last.json(),
            json!({"channelName": channel, "type": "lastEvent", "payload": "{}"})
        );
    }
    let (status, answer) = server.api().post("/publish", None, &readme_batch()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["published"], json!(4));
    let expected = readme_batch();
    for want in expected["events"].as_array().unwrap() {
        let got = next_non_presence(&mut stream).await;
        assert_eq!(got.event, want["type"].as_str().unwrap());
        assert_eq!(
            got.json(),
            *want,
            "the data is {{channelName, type, payload}}"
        );
        assert!(
            got.id.is_some(),
            "records carry ids so EventSource can resume"
        );
    }
}

#[tokio::test]
async fn last_values_reach_new_subscribers_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let server = Server::start_on(&db, &["--no-auth"]);
    server.api().post("/publish", None, &readme_batch()).await;
    let (status, last) = server.api().get("/lastEvent?channel=channel2", None).await;
    assert_eq!(status, StatusCode::OK);
    let expected_channel2 =
        json!({"type": "bar", "payload": "{ \"location\": \"123.44\"}"}).to_string();
    assert_eq!(last, json!({"response": expected_channel2}));
    let (_, empty) = server
        .api()
        .get("/lastEvent?channel=nothing-here", None)
        .await;
    assert_eq!(empty, json!({"response": "{}"}));
    let (status, _) = server.api().get("/lastEvent", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    drop(server);

    let server = Server::start_on(&db, &["--no-auth"]);
    let mut stream = subscribe(&server, "channels=channel1,channel2,channel3&clientId=me").await;
    let registered = stream.next_event().await;
    assert_eq!(registered.json()["payload"], json!("{\"clientId\":\"me\"}"));
    let values: Vec<Value> = [
        stream.next_event().await,
        stream.next_event().await,
        stream.next_event().await,
    ]
    .iter()
    .map(|e| e.json()["payload"].clone())
    .collect();
    let expected_channel1 =
        json!({"type": "foo", "payload": "{ \"message\": \"Hi fooo\"}"}).to_string();
    assert_eq!(
        values,
        vec![
            json!(expected_channel1),
            json!(expected_channel2),
            json!("{}")
        ]
    );
}

#[tokio::test]
async fn publish_is_all_or_nothing() {
    let server = Server::start(&["--no-auth"]);
    let api = server.api();
    let mut watcher = api.stream("/events", None, None).await;
    watcher.until_synced().await;
    let bad_batches = [
        json!({"events": [{"channelName": "c", "type": "ok", "payload": "1"}, {"channelName": "c", "type": "registered", "payload": "x"}]}),
        json!({"events": [{"channelName": "c", "type": "ok", "payload": "1"}, {"channelName": "c", "type": "online-presence", "payload": "x"}]}),
        json!({"events": [{"channelName": "c", "type": "ok", "payload": "1"}, {"channelName": "c", "type": "lastEvent", "payload": "x"}]}),
        json!({"events": [{"channelName": "c", "type": "ok", "payload": "1"}, {"channelName": "c", "type": "x"}]}),
        json!({"events": [{"channelName": "c", "type": "ok", "payload": "1"}, {"type": "x", "payload": "1"}]}),
        json!({"events": [{"channelName": "c", "type": "ok", "payload": "1"}, {"channelName": "c", "payload": "1"}]}),
        json!({"events": [{"channelName": "c", "type": "ok", "payload": "1"}, {"channelName": "bad channel", "type": "x", "payload": "1"}]}),
        json!({"events": [{"channelName": "c", "type": "ok", "payload": "1"}, {"channelName": "c", "type": "$x", "payload": "1"}]}),
        json!({"events": [{"channelName": "c", "type": "ok", "payload": "1"}, "not an object"]}),
        json!({"events": "nope"}),
        json!({"nothing": []}),
    ];
    for batch in &bad_batches {
        let (status, answer) = api.post("/publish", None, batch).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{batch}: {answer}");
        assert!(answer["error"].is_string());
    }
    let (status, _) = api.get("/audit/ok?channel=c", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing of a rejected batch was stored"
    );
    // The stream saw nothing either: the next event is the one good publish.
    let (status, _) = api
        .post(
            "/publish",
            None,
            &json!({"events": [{"channelName": "c", "type": "good", "payload": "1"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let next = watcher.next_event().await;
    assert_eq!((next.event.as_str(), next.data.as_str()), ("good", "\"1\""));
    assert_eq!(
        next.id.as_deref(),
        Some("1"),
        "no id was spent on rejected batches"
    );
}

#[tokio::test]
async fn native_and_compat_streams_see_the_same_data() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    let mut compat = api
        .stream("/subscribe?channels=c&clientId=x", Some(&token), None)
        .await;
    for _ in 0..2 {
        compat.next_event().await; // registered, lastEvent
    }
    let mut native = api.stream("/events?channels=c", Some(&token), None).await;
    native.until_synced().await;

    api.insert(&token, "user", json!({"name": "Ada"}), Some("c"))
        .await;
    let got = next_non_presence(&mut compat).await;
    assert_eq!(
        got.json(),
        json!({"channelName": "c", "type": "user", "payload": "{\"name\":\"Ada\"}"})
    );
    assert_eq!(native.next_event().await.json(), json!({"name": "Ada"}));

    let (status, _) = api
        .post(
            "/publish",
            Some(&token),
            &json!({"events": [{"channelName": "c", "type": "note", "payload": "hello"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let got = native.next_event().await;
    assert_eq!((got.event.as_str(), got.json()), ("note", json!("hello")));
    assert_eq!(
        next_non_presence(&mut compat).await.json()["payload"],
        json!("hello")
    );
    let (_, audit) = api.get("/audit/note?channel=c", Some(&token)).await;
    assert_eq!(
        audit.as_object().unwrap().values().collect::<Vec<_>>(),
        vec![&json!("hello")]
    );
    let (_, history) = api.get("/history/note?channel=c", Some(&token)).await;
    assert_eq!(
        history["items"][0]["user"],
        json!("ada"),
        "published events keep their author"
    );
}

#[tokio::test]
async fn compat_endpoints_require_authentication_unless_open() {
    let server = Server::start(&["--default-write", "mine", "--default-read", "mine,public"]);
    let api = server.api();
    let token = api.user("ada").await;
    let batch = json!({"events": [{"channelName": "mine", "type": "t", "payload": "p"}]});
    assert_eq!(
        api.post("/publish", None, &batch).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.post("/publish", Some(&token), &batch).await.0,
        StatusCode::OK
    );
    let elsewhere = json!({"events": [{"channelName": "mine", "type": "t", "payload": "p"}, {"channelName": "public", "type": "t", "payload": "p"}]});
    assert_eq!(
        api.post("/publish", Some(&token), &elsewhere).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.get("/lastEvent?channel=mine", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.get("/lastEvent?channel=secret", Some(&token)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(api.get("/presence", None).await.0, StatusCode::UNAUTHORIZED);
    let refused = SseStream::request(
        &api.http,
        &server.url("/subscribe?channels=mine"),
        None,
        None,
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let refused = SseStream::request(
        &api.http,
        &server.url("/subscribe?channels=secret"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let missing =
        SseStream::request(&api.http, &server.url("/subscribe"), Some(&token), None).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    // EventSource cannot send headers: the token goes in the query.
    let mut stream = api
        .stream(
            &format!("/subscribe?channels=mine&access_token={token}"),
            None,
            None,
        )
        .await;
    assert_eq!(stream.next_event().await.event, "registered");
    assert_eq!(
        stream.next_event().await.json()["payload"],
        json!(json!({"type": "t", "payload": "p"}).to_string())
    );
}

/// Polls `/presence` until `check` holds.
async fn presence_until(server: &Server, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (_, body) = server.api().get("/presence", None).await;
        if check(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence never became as expected: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn ids(presence: &Value) -> Vec<String> {
    presence["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Reads `online-presence` events until one lists exactly `want`.
async fn until_presence(stream: &mut SseStream, want: &[&str]) {
    loop {
        let event = stream.next_event().await;
        if event.event == "online-presence" {
            let payload: Vec<String> =
                serde_json::from_str(event.json()["payload"].as_str().unwrap()).unwrap();
            let mut sorted = payload.clone();
            sorted.sort();
            if sorted == want {
                return;
            }
        }
    }
}

#[tokio::test]
async fn presence_counts_a_client_once_and_drops_it_with_its_last_connection() {
    let server = Server::start(&["--no-auth"]);
    let mut observer = subscribe(&server, "channels=lobby&clientId=observer").await;
    until_presence(&mut observer, &["observer"]).await;
    let tab1 = subscribe(&server, "channels=room1&clientId=ada").await;
    let tab2 = subscribe(&server, "channels=room2&clientId=ada").await;
    until_presence(&mut observer, &["ada", "observer"]).await;
    let (_, room1) = server.api().get("/presence?channel=room1", None).await;
    let ada = &room1["clients"][0];
    assert_eq!(ids(&room1), vec!["ada"]);
    assert_eq!(ada["channels"], json!(["room1", "room2"]));
    assert_eq!(ada["user"], Value::Null);
    assert!(ada["connected_at"].as_u64().unwrap() > 0);
    drop(tab1);
    presence_until(&server, |p| {
        p["clients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["client_id"] == json!("ada") && c["channels"] == json!(["room2"]))
    })
    .await;
    drop(tab2);
    until_presence(&mut observer, &["observer"]).await;
    assert_eq!(
        ids(&server.api().get("/presence", None).await.1),
        vec!["observer"]
    );
}

#[tokio::test]
async fn presence_is_right_after_a_client_is_killed() {
    let server = Server::start(&["--no-auth"]);
    // A separate process holds the connection, and is killed without closing it cleanly.
    let mut client = std::process::Command::new("curl")
        .args(["-sN", &server.url("/subscribe?channels=c&clientId=doomed")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("curl");
    presence_until(&server, |p| ids(p) == vec!["doomed"]).await;
    client.kill().expect("kill -9");
    client.wait().unwrap();
    presence_until(&server, |p| ids(p).is_empty()).await;
}

#[tokio::test]
async fn many_joins_at_once_make_few_presence_events() {
    let server = Server::start(&["--no-auth"]);
    let mut observer = subscribe(&server, "channels=lobby&clientId=observer").await;
    until_presence(&mut observer, &["observer"]).await;
    let mut clients = Vec::new();
    for i in 0..50 {
        clients.push(subscribe(&server, &format!("channels=c&clientId=c{i:02}")).await);
    }
    let mut want: Vec<String> = (0..50).map(|i| format!("c{i:02}")).collect();
    want.push("observer".into());
    want.sort();
    let mut announcements = 0;
    loop {
        let event = observer.next_event().await;
        assert_eq!(event.event, "online-presence");
        announcements += 1;
        let mut got: Vec<String> =
            serde_json::from_str(event.json()["payload"].as_str().unwrap()).unwrap();
        got.sort();
        if got == want {
            break;
        }
    }
    assert!(
        announcements < 25,
        "50 joins made {announcements} presence events"
    );
}

#[tokio::test]
async fn two_hundred_subscribers_on_twenty_channels_get_exactly_their_events() {
    let server = Server::start(&["--no-auth"]);
    let channels = 20;
    let mut subscribers = Vec::new();
    for i in 0..200 {
        let channel = format!("ch{}", i % channels);
        let stream = subscribe(&server, &format!("channels={channel}&clientId=s{i}")).await;
        subscribers.push((channel, stream));
    }
    let per_channel = 5;
    let events: Vec<Value> = (0..channels)
        .flat_map(|c| (0..per_channel).map(move |n| json!({"channelName": format!("ch{c}"), "type": "tick", "payload": format!("{c}-{n}")})))
        .collect();
    let (status, _) = server
        .api()
        .post("/publish", None, &json!({"events": events}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut tasks = Vec::new();
    for (channel, mut stream) in subscribers {
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < per_channel {
                let event = stream.next_event().await;
                if event.event == "tick" {
                    let data = event.json();
                    assert_eq!(data["channelName"], json!(channel), "only its own channel");
                    got.push(data["payload"].as_str().unwrap().to_owned());
                }
            }
            let c = channel.trim_start_matches("ch").to_owned();
            let want: Vec<String> = (0..per_channel).map(|n| format!("{c}-{n}")).collect();
            assert_eq!(got, want);
            // And nothing more arrives for this channel.
            let more = server_quiet(&mut stream).await;
            assert!(more.is_empty(), "unexpected extra events {more:?}");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Events other than presence that arrive within a short quiet period.
async fn server_quiet(stream: &mut SseStream) -> Vec<SseEvent> {
    let mut extra = Vec::new();
    while let Ok(Some(item)) = stream.next_item_within(Duration::from_millis(300)).await {
        if let common::sse::SseItem::Event(e) = item
            && e.event != "online-presence"
        {
            extra.push(e);
        }
    }
    extra
}

#[tokio::test]
async fn a_reconnecting_subscriber_gets_what_it_missed() {
    let server = Server::start(&["--no-auth"]);
    let api = server.api();
    let publish =
        |payload: &str| json!({"events": [{"channelName": "c", "type": "m", "payload": payload}]});
    api.post("/publish", None, &publish("before")).await;
    let mut stream = subscribe(&server, "channels=c&clientId=r").await;
    // registered, lastEvent, then the id-only frame is invisible; read the live one.
    stream.next_event().await;
    stream.next_event().await;
    api.post("/publish", None, &publish("live")).await;
    let live = next_non_presence(&mut stream).await;
    let last_id = live.id.clone();
    assert!(last_id.is_some());
    drop(stream);
    for p in ["missed-1", "missed-2", "missed-3"] {
        api.post("/publish", None, &publish(p)).await;
    }
    let mut resumed = api
        .stream("/subscribe?channels=c&clientId=r", None, last_id.as_deref())
        .await;
    assert_eq!(resumed.next_event().await.event, "registered");
    assert_eq!(resumed.next_event().await.event, "lastEvent");
    let mut missed = Vec::new();
    while missed.len() < 3 {
        missed.push(
            next_non_presence(&mut resumed).await.json()["payload"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(missed, vec!["missed-1", "missed-2", "missed-3"]);
    let unique: HashSet<&String> = missed.iter().collect();
    assert_eq!(unique.len(), 3);
}
