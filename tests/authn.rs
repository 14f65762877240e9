//! Signup, login, the four ways to authenticate, 401 and 403, admins, revocation, expiry.

mod common;

use base64::Engine;
use common::{PASSWORD, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn insert_status(api: &common::Api, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let _ = api;
    let resp = req
        .json(&json!({"event": "e", "data": 1}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn signup_and_login() {
    let server = Server::start(&[]);
    let api = server.api();
    let (status, body) = api
        .post(
            "/users",
            None,
            &json!({"username": "ada", "password": PASSWORD}),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"username": "ada"})));
    let (status, body) = api
        .post(
            "/users",
            None,
            &json!({"username": "ada", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    for bad in [
        json!({"username": "has space", "password": PASSWORD}),
        json!({"username": "", "password": PASSWORD}),
        json!({"username": "x".repeat(65), "password": PASSWORD}),
        json!({"username": "bob", "password": "short"}),
        json!({"username": "bob"}),
        json!({"password": PASSWORD}),
        json!({"username": 5, "password": PASSWORD}),
    ] {
        let (status, body) = api.post("/users", None, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }

    let resp = api
        .http
        .post(server.url("/login"))
        .json(&json!({"username": "ada", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = resp.json().await.unwrap();
    let jwt = body["jwt"].as_str().unwrap();
    assert!(
        cookie.starts_with(&format!("broker_token={jwt}")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires = body["expires_at"].as_u64().unwrap();
    assert!(
        (now + 86_390..=now + 86_410).contains(&expires),
        "default expiry is a day"
    );

    for (user, pass) in [("ada", "wrong password"), ("nobody", PASSWORD)] {
        let (status, body) = api
            .post("/login", None, &json!({"username": user, "password": pass}))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            json!({"error": "invalid credentials"}),
            "the same answer for both"
        );
    }
}

#[tokio::test]
async fn every_way_to_authenticate() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    let insert = || api.http.post(server.url("/insert"));

    assert_eq!(
        insert_status(&api, insert().bearer_auth(&token)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        insert_status(&api, insert().basic_auth("ada", Some(PASSWORD)))
            .await
            .0,
        StatusCode::OK
    );
    let cookie = format!("theme=dark; broker_token={token}");
    assert_eq!(
        insert_status(&api, insert().header("cookie", cookie))
            .await
            .0,
        StatusCode::OK
    );
    // access_token is for EventSource only: not accepted on /insert.
    let (status, body) = insert_status(
        &api,
        api.http
            .post(server.url(&format!("/insert?access_token={token}"))),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let mut stream = api
        .stream(&format!("/events?access_token={token}"), None, None)
        .await;
    let (snapshot, _) = stream.until_synced().await;
    assert_eq!(snapshot.len(), 1);
    let cookie_stream = api
        .http
        .get(server.url("/sse"))
        .header("cookie", format!("broker_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie_stream.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_credentials_get_401() {
    let server = Server::start(&["--jwt-secret", "the-right-secret"]);
    let api = server.api();
    let token = api.user("ada").await;
    let insert = || api.http.post(server.url("/insert"));
    let other = Server::start(&["--jwt-secret", "another-secret"]);
    let foreign = other.api().user("ada").await;
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let wrong_basic = base64::engine::general_purpose::STANDARD.encode("ada:wrong password");
    let cases = [
        ("no credentials", insert()),
        ("garbage token", insert().bearer_auth("not-a-jwt")),
        ("foreign signature", insert().bearer_auth(&foreign)),
        ("tampered token", insert().bearer_auth(&tampered)),
        (
            "wrong Basic password",
            insert().header("authorization", format!("Basic {wrong_basic}")),
        ),
        (
            "malformed Basic",
            insert().header("authorization", "Basic !!!"),
        ),
        (
            "unknown scheme",
            insert().header("authorization", format!("Token {token}")),
        ),
        ("bad cookie", insert().header("cookie", "broker_token=nope")),
    ];
    for (what, req) in cases {
        let (status, body) = insert_status(&api, req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(body["error"].is_string(), "{what}");
    }
    let refused =
        common::sse::SseStream::request(&api.http, &server.url("/events"), None, None).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn expired_tokens_are_refused_and_end_their_streams() {
    let server = Server::start(&["--jwt-expiry", "1"]);
    let api = server.api();
    let token = api.user("ada").await;
    let mut stream = api.stream("/events", Some(&token), None).await;
    stream.until_synced().await;
    // The server ends the stream when the token expires, saying why.
    let events = stream.until_end().await;
    let last = events.last().expect("an $error event before the end");
    assert_eq!(last.event, "$error");
    assert_eq!(last.json(), json!({"error": "token expired"}));
    let (status, body) = api
        .post("/insert", Some(&token), &json!({"event": "e", "data": 1}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"error": "token expired"}));
}

#[tokio::test]
async fn channel_permissions_give_403() {
    let server = Server::start(&[
        "--default-write",
        "user:{user}",
        "--default-read",
        "public,user:{user}",
    ]);
    let api = server.api();
    let ada = api.user("ada").await;
    api.insert(&ada, "note", json!("mine"), Some("user:ada"))
        .await;
    for channel in ["user:bob", "default", "public"] {
        let (status, body) = api
            .post(
                "/insert",
                Some(&ada),
                &json!({"event": "e", "data": 1, "channel": channel}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{channel}: {body}");
        assert!(body["error"].as_str().unwrap().contains(channel));
    }
    let (status, _) = api.get("/audit/note?channel=user:bob", Some(&ada)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api.get("/audit/note?channel=user:ada", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK);
    let refused = common::sse::SseStream::request(
        &api.http,
        &server.url("/events?channels=public,secret"),
        Some(&ada),
        None,
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // Without channels=, the stream carries exactly what the user may read.
    let bob = api.user("bob").await;
    api.insert(&bob, "note", json!("bob's"), Some("user:bob"))
        .await;
    let mut stream = api.stream("/events", Some(&ada), None).await;
    let (snapshot, _) = stream.until_synced().await;
    let channels: Vec<Value> = snapshot.iter().map(|e| e.json()).collect();
    assert_eq!(
        channels,
        vec![json!("mine")],
        "bob's private channel is not visible to ada"
    );
}

#[tokio::test]
async fn admin_only_signup_and_admin_grants() {
    let server = Server::start(&["--signup", "admin", "--admin", "root:root-password"]);
    let api = server.api();
    let new_user = json!({"username": "ada", "password": PASSWORD});
    assert_eq!(
        api.post("/users", None, &new_user).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = api
        .post(
            "/login",
            None,
            &json!({"username": "root", "password": "root-password"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let root = body["jwt"].as_str().unwrap().to_owned();
    let restricted =
        json!({"username": "ada", "password": PASSWORD, "read": ["public"], "write": []});
    assert_eq!(
        api.post("/users", Some(&root), &restricted).await.0,
        StatusCode::OK
    );
    let ada = api.login("ada").await;
    let (status, _) = api
        .post(
            "/users",
            Some(&ada),
            &json!({"username": "eve", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a non-admin cannot create users"
    );
    let (status, _) = api
        .post("/insert", Some(&ada), &json!({"event": "e", "data": 1}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "ada may write nowhere");
    api.insert(&root, "e", json!(1), Some("public")).await;
    let (status, _) = api.get("/audit/e?channel=public", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK);

    // With open signup, nobody can make themselves an admin.
    let open = Server::start(&[]);
    let (status, _) = open
        .api()
        .post(
            "/users",
            None,
            &json!({"username": "eve", "password": PASSWORD, "admin": true}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_revoked_user_is_locked_out_and_their_streams_end() {
    let server = Server::start(&["--admin", "root:root-password"]);
    let api = server.api();
    let ada = api.user("ada").await;
    let (_, body) = api
        .post(
            "/login",
            None,
            &json!({"username": "root", "password": "root-password"}),
        )
        .await;
    let root = body["jwt"].as_str().unwrap().to_owned();
    let mut stream = api.stream("/events", Some(&ada), None).await;
    stream.until_synced().await;

    let resp = api
        .http
        .delete(server.url("/users/ada"))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "only admins revoke");
    let resp = api
        .http
        .delete(server.url("/users/nobody"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = api
        .http
        .delete(server.url("/users/ada"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let events = stream.until_end().await;
    assert_eq!(
        events.last().map(|e| e.json()),
        Some(json!({"error": "user revoked"}))
    );
    let (status, body) = api
        .post("/insert", Some(&ada), &json!({"event": "e", "data": 1}))
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, json!({"error": "user revoked"}))
    );
    let (status, _) = api
        .post(
            "/login",
            None,
            &json!({"username": "ada", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api
        .post(
            "/users",
            None,
            &json!({"username": "ada", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "the name stays taken");
}

#[tokio::test]
async fn open_mode_needs_no_credentials() {
    let server = Server::start(&["--no-auth"]);
    let api = server.api();
    let (status, answer) = api
        .post(
            "/insert",
            None,
            &json!({"event": "e", "data": 1, "channel": "any"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut stream = api.stream("/events", None, None).await;
    let (snapshot, _) = stream.until_synced().await;
    assert_eq!(snapshot.len(), 1);
    let (_, history) = api.get("/history/e?channel=any", None).await;
    assert_eq!(history["items"][0]["user"], Value::Null);
    // A signed-in user is still recorded as the author.
    let token = api.user("ada").await;
    api.insert(&token, "e", json!(2), Some("any")).await;
    let (_, history) = api.get("/history/e?channel=any", None).await;
    assert_eq!(history["items"][1]["user"], json!("ada"));
}

#[tokio::test]
async fn a_generated_secret_is_kept_so_tokens_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let server = Server::start_on(&db, &[]);
    let token = server.api().user("ada").await;
    let secret =
        std::fs::read_to_string(db.join("jwt_secret")).expect("secret kept in the db directory");
    assert!(secret.len() >= 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(db.join("jwt_secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "only the owner may read the secret");
    }
    drop(server);
    let server = Server::start_on(&db, &[]);
    let (status, body) = server
        .api()
        .post("/insert", Some(&token), &json!({"event": "e", "data": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        std::fs::read_to_string(db.join("jwt_secret")).unwrap(),
        secret
    );
}
