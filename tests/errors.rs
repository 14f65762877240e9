//! Bad input: every answer is a JSON error with the right status, and nothing bad is stored.

mod common;

use common::Server;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Sends a raw body to /insert with a token, returning status and JSON body (asserting it is
/// an error object when not 200).
async fn raw_insert(
    server: &Server,
    token: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = server
        .api()
        .http
        .post(server.url("/insert"))
        .bearer_auth(token)
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let value: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    if status != StatusCode::OK {
        assert!(
            value["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{status}: {text}"
        );
    }
    (status, value)
}

async fn expect(server: &Server, token: &str, body: Value, status: StatusCode) {
    let (got, answer) = raw_insert(
        server,
        token,
        Some("application/json"),
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(got, status, "{body} → {answer}");
}

#[tokio::test]
async fn invalid_inserts_get_400_and_store_nothing() {
    let server = Server::start(&[]);
    let token = server.api().user("ada").await;
    for raw in [
        "{",
        "{\"event\": \"e\", \"data\": }",
        "nul",
        "{\"event\":\"e\",\"data\":1}}",
    ] {
        let (status, _) = raw_insert(&server, &token, Some("application/json"), raw.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "malformed: {raw}");
    }
    let (status, _) = raw_insert(&server, &token, Some("application/json"), Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "empty body");
    for body in [
        json!([1]),
        json!("x"),
        json!(null),
        json!({"data": 1}),
        json!({"event": "e"}),
        json!({"event": 5, "data": 1}),
        json!({"event": {"a": 1}, "data": 1}),
        json!({"event": null, "data": 1}),
        json!({"event": "", "data": 1}),
        json!({"event": "x".repeat(257), "data": 1}),
        json!({"event": "a\nb", "data": 1}),
        json!({"event": "tab\there", "data": 1}),
        json!({"event": "$synced", "data": 1}),
        json!({"event": "$anything", "data": 1}),
        json!({"event": "e", "data": 1, "channel": ""}),
        json!({"event": "e", "data": 1, "channel": "has space"}),
        json!({"event": "e", "data": 1, "channel": "é"}),
        json!({"event": "e", "data": 1, "channel": "c".repeat(129)}),
        json!({"event": "e", "data": 1, "channel": 7}),
    ] {
        expect(&server, &token, body, StatusCode::BAD_REQUEST).await;
    }
    let (status, _) = server.api().get("/history/e", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, last) = server.api().get("/audit/e", Some(&token)).await;
    assert!(last["error"].is_string(), "nothing was stored: {last}");

    expect(
        &server,
        &token,
        json!({"event": "x".repeat(256), "data": 1}),
        StatusCode::OK,
    )
    .await;
    expect(
        &server,
        &token,
        json!({"event": "e", "data": 1, "channel": "a_b.c:d/e@f-g"}),
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn every_json_type_is_valid_data_and_streams_compactly() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    let mut stream = api.stream("/events", Some(&token), None).await;
    stream.until_synced().await;
    let values = [
        json!(null),
        json!(42),
        json!(-1.5),
        json!("text\nwith newline"),
        json!([1, [2]]),
        json!({"b": 1, "a": {"c": true}}),
    ];
    for (i, value) in values.iter().enumerate() {
        // Pretty-printed on the way in, one line on the way out.
        let body = serde_json::to_string_pretty(&json!({"event": format!("t{i}"), "data": value}))
            .unwrap();
        let (status, answer) =
            raw_insert(&server, &token, Some("application/json"), body.into()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let event = stream.next_event().await;
        assert_eq!(
            event.data,
            serde_json::to_string(value).unwrap(),
            "compact, same key order"
        );
        assert!(!event.data.contains('\n'));
    }
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let server = Server::start(&["--max-body", "1024"]);
    let token = server.api().user("ada").await;
    let big = json!({"event": "e", "data": "x".repeat(2000)}).to_string();
    let (status, _) = raw_insert(
        &server,
        &token,
        Some("application/json"),
        big.clone().into(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Without Content-Length (chunked), the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(100)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let resp = server
        .api()
        .http
        .post(server.url("/insert"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    let fits = json!({"event": "e", "data": "x".repeat(990)}).to_string();
    assert!(fits.len() <= 1024);
    let (status, _) = raw_insert(&server, &token, Some("application/json"), fits.into()).await;
    assert_eq!(status, StatusCode::OK);
    // Login and signup bodies have the same limit.
    let (status, _) = server
        .api()
        .post(
            "/users",
            None,
            &json!({"username": "x", "password": "p".repeat(2000)}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn content_types_routes_and_methods() {
    let server = Server::start(&[]);
    let token = server.api().user("ada").await;
    let body = json!({"event": "e", "data": 1}).to_string();
    let (status, _) = raw_insert(&server, &token, Some("text/plain"), body.clone().into()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = raw_insert(
        &server,
        &token,
        Some("application/x-www-form-urlencoded"),
        body.clone().into(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = raw_insert(&server, &token, None, body.clone().into()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a missing Content-Type is taken as JSON"
    );
    let (status, _) = raw_insert(
        &server,
        &token,
        Some("application/json; charset=utf-8"),
        body.into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let http = &server.api().http;
    for (method, path, want) in [
        ("GET", "/nope", StatusCode::NOT_FOUND),
        ("POST", "/events/extra", StatusCode::NOT_FOUND),
        ("GET", "/insert", StatusCode::METHOD_NOT_ALLOWED),
        ("DELETE", "/events", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let resp = http
            .request(method.parse().unwrap(), server.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{method} {path}");
        let value: Value = resp.json().await.expect("JSON error body");
        assert!(value["error"].is_string());
    }
    let api = server.api();
    for path in [
        "/events?channels=bad%20channel",
        "/events?channels=,",
        "/events?envelope=maybe",
        "/history/e?limit=0",
        "/history/e?limit=1001",
        "/history/e?limit=abc",
        "/history/e?after=xyz",
        "/audit/e?channel=bad%20channel",
    ] {
        let (status, value) = api.get(path, Some(&token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {value}");
        assert!(value["error"].is_string());
    }
    let (status, _) = api.get("/audit/never", Some(&token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn random_bodies_never_break_the_server() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x00b2_0be2);
    let pieces: [&[u8]; 12] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"event\"",
        b"\"data\"",
        b":",
        b",",
        b"\"$x\"",
        b"null",
        b"\xff\xfe",
        b"1e999",
    ];
    for _ in 0..200 {
        let len = rng.random_range(0..24);
        let mut body = Vec::new();
        for _ in 0..len {
            if rng.random_bool(0.7) {
                body.extend_from_slice(pieces[rng.random_range(0..pieces.len())]);
            } else {
                body.push(rng.random());
            }
        }
        let resp = api
            .http
            .post(server.url("/insert"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let value: Value = resp
            .json()
            .await
            .unwrap_or_else(|_| panic!("non-JSON answer to {body:?}"));
        assert!(
            status.is_client_error() || status == StatusCode::OK,
            "{status} for {body:?}"
        );
        if status != StatusCode::OK {
            assert!(value["error"].is_string());
        }
    }
    let (status, health) = api.get("/health", None).await;
    assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));
}
