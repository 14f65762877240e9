//! `GET /audit/{event}` and `GET /history/{event}`: every version, in order.

mod common;

use common::Server;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn audit_lists_every_version_oldest_first_keyed_by_timestamp() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    let mut stamps = Vec::new();
    for name in ["Ada", "Grace", "Linus"] {
        let answer = api
            .insert(&token, "user", json!({"name": name}), None)
            .await;
        stamps.push(answer["timestamp"].as_u64().unwrap());
        api.insert(&token, "user", json!({"name": "elsewhere"}), Some("other"))
            .await;
    }
    let (status, body) = api.get("/audit/user", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let entries: Vec<(String, Value)> = body
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let expected: Vec<(String, Value)> = stamps
        .iter()
        .zip(["Ada", "Grace", "Linus"])
        .map(|(ts, name)| (format!("user_v_{ts}"), json!({"name": name})))
        .collect();
    assert_eq!(
        entries, expected,
        "oldest first, key {{event}}_v_{{timestamp}}"
    );

    let (status, other) = api.get("/audit/user?channel=other", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(other.as_object().unwrap().len(), 3);
    assert!(
        other
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == &json!({"name": "elsewhere"}))
    );

    let (status, missing) = api.get("/audit/nobody", Some(&token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(missing["error"].is_string());
    let (status, _) = api.get("/audit/user", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn history_pages_through_versions_with_after_and_next() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    let mut ids = Vec::new();
    for n in 0..25 {
        let answer = api.insert(&token, "counter", json!(n), Some("room1")).await;
        ids.push(answer["id"].as_str().unwrap().to_owned());
        api.insert(&token, "noise", json!(n), Some("room1")).await;
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let (status, page) = api
            .get(
                &format!("/history/counter?channel=room1&limit=10&after={after}"),
                Some(&token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["event"], json!("counter"));
            assert_eq!(item["channel"], json!("room1"));
            assert_eq!(item["user"], json!("ada"));
            assert!(item["timestamp"].is_u64());
            assert_eq!(item["data"], json!(seen.len()));
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
    let (_, default_page) = api
        .get("/history/counter?channel=room1", Some(&token))
        .await;
    assert_eq!(default_page["items"].as_array().unwrap().len(), 25);
    assert_eq!(default_page["next"], Value::Null);
}
