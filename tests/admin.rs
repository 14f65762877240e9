//! The admin API, black-box: listing users a page at a time with search, one user, changing
//! rights (a 403 follows at once and open streams end), revoking and restoring, password
//! resets that end older tokens, and the channel list with counts and last activity.

mod common;

use common::{Api, PASSWORD, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The password an admin resets ada's to.
const RESET_PASSWORD: &str = "a password set by root";

/// Starts a server with the admin `root` and returns it, a client and root's token.
async fn with_root() -> (Server, Api, String) {
    let spec = format!("root:{PASSWORD}");
    let server = Server::start(&["--admin", &spec]);
    let api = server.api();
    let root = api.login("root").await;
    (server, api, root)
}

/// `PATCH path` with a JSON body as `token`.
async fn patch(api: &Api, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
    let resp = api
        .http
        .patch(format!("{}{path}", api.base))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("PATCH");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn names(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|u| u["username"].as_str().expect("username"))
        .collect()
}

#[tokio::test]
async fn users_are_listed_a_page_at_a_time() {
    let (_server, api, root) = with_root().await;
    let ada = api.user("ada").await;
    api.user("bob").await;
    api.user("carol").await;

    let (status, _) = api.get("/users", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = api.get("/users", Some(&ada)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, page) = api.get("/users?limit=2", Some(&root)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(names(&page), ["ada", "bob"]);
    assert_eq!(page["next"], "bob");
    let (_, page) = api.get("/users?limit=2&after=bob", Some(&root)).await;
    assert_eq!(names(&page), ["carol", "root"]);
    assert_eq!(page["next"], Value::Null);
    let (_, page) = api.get("/users?search=AR", Some(&root)).await;
    assert_eq!(names(&page), ["carol"]);
    let (status, body) = api.get("/users?limit=0", Some(&root)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, user) = api.get("/users/root", Some(&root)).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["admin"], true);
    assert_eq!(user["revoked"], false);
    assert_eq!(user["totp"], false);
    assert!(user["created_at"].as_u64().is_some_and(|t| t > 0));
    assert!(
        user.get("password_hash").is_none(),
        "no hash in the answer: {user}"
    );
    let (status, body) = api.get("/users/nobody", Some(&root)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = api.get("/users/bob", Some(&ada)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn an_admin_changes_rights_revokes_restores_and_resets() {
    let (_server, api, root) = with_root().await;
    let ada = api.user("ada").await;
    api.insert(&ada, "e", json!(1), Some("room")).await;
    let mut stream = api.stream("/events", Some(&ada), None).await;
    stream.until_synced().await;

    let (status, body) = patch(&api, "/users/ada", &ada, &json!({"admin": true})).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a user raising themselves: {body}"
    );
    for bad in [
        json!({"colour": "red"}),
        json!({"totp": true}),
        json!({"read": [""]}),
        json!({"write": "public"}),
    ] {
        let (status, body) = patch(&api, "/users/ada", &root, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, body) = patch(&api, "/users/nobody", &root, &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Narrower rights: a 403 follows at once, with the token ada already holds, and her
    // open stream ends (she reconnects under the new rights).
    let (status, user) = patch(
        &api,
        "/users/ada",
        &root,
        &json!({"read": ["public"], "write": ["public"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["write"], json!(["public"]));
    let (status, body) = api
        .post(
            "/insert",
            Some(&ada),
            &json!({"event": "e", "data": 2, "channel": "room"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    api.insert(&ada, "e", json!(3), Some("public")).await;
    stream.until_end().await;
    let (status, body) = api.get("/audit/e?channel=room", Some(&ada)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Revoke, then restore.
    let (status, user) = patch(&api, "/users/ada", &root, &json!({"revoked": true})).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["revoked"], true);
    let (status, _) = api.get("/users/me", Some(&ada)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, user) = patch(&api, "/users/ada", &root, &json!({"revoked": false})).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    let (status, me) = api.get("/users/me", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK, "restored: {me}");

    // A password reset ends the tokens issued before it.
    let (status, body) = api
        .post(
            "/users/ada/password",
            Some(&root),
            &json!({"new_password": "short"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = api
        .post(
            "/users/ada/password",
            Some(&ada),
            &json!({"new_password": RESET_PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = api
        .post(
            "/users/ada/password",
            Some(&root),
            &json!({"new_password": RESET_PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = api.get("/users/me", Some(&ada)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a token from before the reset"
    );
    let (status, _) = api
        .post(
            "/login",
            None,
            &json!({"username": "ada", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password");
    api.login_as("ada", RESET_PASSWORD).await;
}

#[tokio::test]
async fn channels_are_listed_with_counts_and_last_activity() {
    let (_server, api, root) = with_root().await;
    let (status, body) = api.get("/channels", Some(&root)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"channels": []}));

    api.insert(&root, "x", json!({"v": 1}), Some("room")).await;
    api.insert(&root, "x", json!({"v": 2}), Some("room")).await;
    api.insert(&root, "y", json!("why"), Some("room")).await;
    let last = api.insert(&root, "z", json!(null), Some("public")).await;
    let room_last = api.insert(&root, "x", json!({"v": 3}), Some("room")).await;

    let (status, body) = api.get("/channels", Some(&root)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = |v: &Value| {
        v["id"]
            .as_str()
            .expect("id")
            .parse::<u64>()
            .expect("number")
    };
    assert_eq!(
        body["channels"],
        json!([
            {"channel": "public", "records": 1, "events": 1,
             "last_id": id(&last), "last_timestamp": last["timestamp"]},
            {"channel": "room", "records": 4, "events": 2,
             "last_id": id(&room_last), "last_timestamp": room_last["timestamp"]},
        ])
    );

    // A reader sees only the channels they may read.
    let (status, _) = api
        .post(
            "/users",
            Some(&root),
            &json!({"username": "reader", "password": PASSWORD, "read": ["public"], "write": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let reader = api.login("reader").await;
    let (_, body) = api.get("/channels", Some(&reader)).await;
    let listed: Vec<&str> = body["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|c| c["channel"].as_str().expect("name"))
        .collect();
    assert_eq!(listed, ["public"]);
    let (status, _) = api.get("/channels", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // One channel's latest version of each event.
    let (status, body) = api.get("/latest?channel=room", Some(&root)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["items"].as_array().expect("items");
    let latest: Vec<(&str, &Value)> = items
        .iter()
        .map(|i| (i["event"].as_str().expect("event"), &i["data"]))
        .collect();
    assert_eq!(latest, [("y", &json!("why")), ("x", &json!({"v": 3}))]);
    assert_eq!(items[1]["user"], "root");
    let (status, _) = api.get("/latest?channel=room", Some(&reader)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api.get("/latest?channel=bad%20name", Some(&root)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
