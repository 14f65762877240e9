//! Presence per permission, clientId ownership, reserved event names, channel-list caps and the
//! `{user}` pattern.

mod common;

use std::time::Duration;

use common::sse::SseStream;
use common::{Api, PASSWORD, Server, TIMEOUT};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The client ids of an `online-presence` event, sorted.
fn presence_ids(event: &common::sse::SseEvent) -> Vec<String> {
    let payload = event.json()["payload"]
        .as_str()
        .expect("string payload")
        .to_owned();
    let mut ids: Vec<String> = serde_json::from_str(&payload).expect("id list");
    ids.sort();
    ids
}

/// Reads `online-presence` events until one lists `want`; returns every list seen.
async fn presence_until_listed(stream: &mut SseStream, want: &str) -> Vec<Vec<String>> {
    let mut seen = Vec::new();
    loop {
        let event = stream.next_event().await;
        if event.event != "online-presence" {
            continue;
        }
        let ids = presence_ids(&event);
        let done = ids.iter().any(|id| id == want);
        seen.push(ids);
        if done {
            return seen;
        }
    }
}

/// Polls `GET /presence` with `token` until `check` holds on the listed clients, each as
/// "id:channel+channel".
async fn presence_poll(api: &Api, token: &str, check: impl Fn(&[String]) -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (status, body) = api.get("/presence", Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let clients = body["clients"].as_array().expect("clients");
        let listed: Vec<String> = clients
            .iter()
            .map(|c| {
                let channels: Vec<&str> = c["channels"]
                    .as_array()
                    .expect("channels")
                    .iter()
                    .map(|ch| ch.as_str().expect("channel"))
                    .collect();
                format!(
                    "{}:{}",
                    c["client_id"].as_str().expect("id"),
                    channels.join("+")
                )
            })
            .collect();
        if check(&listed) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence never became as expected: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn stream_status(api: &Api, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let resp = SseStream::request(&api.http, &format!("{}{path}", api.base), token, None).await;
    let status = resp.status();
    let body = if status == StatusCode::OK {
        Value::Null
    } else {
        resp.json().await.expect("a JSON error")
    };
    (status, body)
}

#[tokio::test]
async fn presence_frames_list_only_clients_on_readable_channels() {
    let server = Server::start(&[
        "--default-read",
        "a",
        "--admin",
        &format!("root:{PASSWORD}"),
    ]);
    let api = server.api();
    let root = api.login("root").await;
    let ada = api.user("ada").await;

    // An admin's client on channel b only: ada may not read b.
    let mut hidden = api
        .stream("/subscribe?channels=b&clientId=only-b", Some(&root), None)
        .await;
    // The admin sees it announced: the server does tell streams that may read b.
    presence_until_listed(&mut hidden, "only-b").await;

    let mut ada_stream = api
        .stream("/subscribe?channels=a&clientId=ada-tab", Some(&ada), None)
        .await;
    // A client on a joins after only-b: once ada's stream lists it, it has had every frame
    // announced since it opened.
    let _on_a = api
        .stream("/subscribe?channels=a&clientId=on-a", Some(&root), None)
        .await;
    let seen = presence_until_listed(&mut ada_stream, "on-a").await;
    assert_eq!(seen.last().expect("a frame"), &["ada-tab", "on-a"]);
    for ids in &seen {
        assert!(
            !ids.iter().any(|id| id == "only-b"),
            "ada's frame lists a client of channel b: {ids:?}"
        );
    }
    let admin_view = presence_until_listed(&mut hidden, "on-a").await;
    assert_eq!(
        admin_view.last().expect("a frame"),
        &["ada-tab", "on-a", "only-b"]
    );

    // GET /presence filters the same way.
    presence_poll(&api, &ada, |c| c == ["ada-tab:a", "on-a:a"]).await;
    presence_poll(&api, &root, |c| c == ["ada-tab:a", "on-a:a", "only-b:b"]).await;
}

#[tokio::test]
async fn a_client_id_belongs_to_its_user_until_they_leave() {
    let server = Server::start(&[]);
    let api = server.api();
    let ada = api.user("ada").await;
    let bob = api.user("bob").await;

    let mut tab1 = api
        .stream("/subscribe?channels=c&clientId=shared", Some(&ada), None)
        .await;
    assert_eq!(tab1.next_event().await.event, "registered");
    // Ada's own second tab shares it.
    let tab2 = api
        .stream("/subscribe?channels=d&clientId=shared", Some(&ada), None)
        .await;

    let (status, body) =
        stream_status(&api, "/subscribe?channels=c&clientId=shared", Some(&bob)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("clientId"),
        "{body}"
    );

    drop(tab1);
    // Tab 1 (channel c) is gone; tab 2 (channel d) holds on.
    presence_poll(&api, &bob, |clients| clients == ["shared:d"]).await;
    let (status, _) =
        stream_status(&api, "/subscribe?channels=c&clientId=shared", Some(&bob)).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "ada's second tab still holds it"
    );

    drop(tab2);
    presence_poll(&api, &bob, <[String]>::is_empty).await;
    let mut bobs = api
        .stream("/subscribe?channels=c&clientId=shared", Some(&bob), None)
        .await;
    let registered = bobs.next_event().await;
    assert_eq!(registered.event, "registered");
    assert_eq!(
        registered.json()["payload"],
        json!("{\"clientId\":\"shared\"}")
    );
    let (_, presence) = api.get("/presence", Some(&ada)).await;
    assert_eq!(presence["clients"][0]["user"], json!("bob"));
}

#[tokio::test]
async fn reserved_event_names_are_refused_on_every_write_path() {
    let server = Server::start(&["--no-auth"]);
    let api = server.api();
    for name in [
        "registered",
        "lastEvent",
        "online-presence",
        "$x",
        "$synced",
    ] {
        let (status, body) = api
            .post("/insert", None, &json!({"event": name, "data": 1}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        let error = body["error"].as_str().expect("error");
        assert!(
            error.contains("reserved") && error.contains(name),
            "{error}"
        );

        let batch = json!({"events": [{"channelName": "c", "type": name, "payload": "x"}]});
        let (status, body) = api.post("/publish", None, &batch).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(body["error"].as_str().expect("error").contains("reserved"));
    }
    let (status, _) = api
        .post("/insert", None, &json!({"event": "Registered", "data": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "names are case-sensitive");
    let (status, _) = api.get("/audit/registered", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing reserved was stored");
}

fn channel_list(count: usize) -> String {
    (0..count)
        .map(|i| format!("ch{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn channel_lists_are_capped() {
    let server = Server::start(&["--no-auth"]);
    let api = server.api();
    let full = channel_list(256);
    for route in ["/events", "/subscribe"] {
        let (status, body) = stream_status(
            &api,
            &format!("{route}?channels={}", channel_list(257)),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{route}");
        assert!(
            body["error"]
                .as_str()
                .expect("error")
                .contains("at most 256"),
            "{body}"
        );
        let (status, body) = stream_status(&api, &format!("{route}?channels={full}"), None).await;
        assert_eq!(status, StatusCode::OK, "{route}: {body}");
        // Duplicates count once.
        let twice = format!("{route}?channels={full},{full},ch0");
        let (status, body) = stream_status(&api, &twice, None).await;
        assert_eq!(status, StatusCode::OK, "{route}: {body}");
    }

    // The subscriber of 256 channels gets their records.
    let mut stream = api
        .stream(&format!("/events?channels={full},{full}"), None, None)
        .await;
    stream.until_synced().await;
    let (status, _) = api
        .post(
            "/insert",
            None,
            &json!({"event": "e", "data": 1, "channel": "ch255"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stream.next_event().await.event, "e");

    let small = Server::start(&["--no-auth", "--max-channels", "2"]);
    let (status, _) = stream_status(&small.api(), "/events?channels=a,b,a", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = stream_status(&small.api(), "/subscribe?channels=a,b,c", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn user_pattern_does_not_reach_a_longer_name() {
    let server = Server::start(&[
        "--default-read",
        "user:{user}*",
        "--default-write",
        "user:{user}*",
    ]);
    let api = server.api();
    let ada = api.user("ada").await;
    let adam = api.user("adam").await;

    for route in ["/events", "/subscribe"] {
        let (status, body) =
            stream_status(&api, &format!("{route}?channels=user:adam"), Some(&ada)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{route}: {body}");
        let (status, body) = stream_status(
            &api,
            &format!("{route}?channels=user:adam:inbox"),
            Some(&ada),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{route}: {body}");
    }
    let (status, _) = api.get("/lastEvent?channel=user:adam", Some(&ada)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .post(
            "/insert",
            Some(&ada),
            &json!({"event": "e", "data": 1, "channel": "user:adam"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Ada's stream of everything she may read: her own channels, not adam's.
    let mut stream = api.stream("/events?envelope=true", Some(&ada), None).await;
    stream.until_synced().await;
    api.insert(&adam, "secret", json!("adam's"), Some("user:adam"))
        .await;
    api.insert(&ada, "note", json!("ada's"), Some("user:ada:inbox"))
        .await;
    let event = stream.next_event().await;
    assert_eq!(
        (event.event.as_str(), event.json()["channel"].clone()),
        ("note", json!("user:ada:inbox"))
    );
}
