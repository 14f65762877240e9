//! Authentication and authorization, black-box: signup, login, the four ways to prove who one
//! is (Bearer, Basic, cookie, `?access_token=`), every kind of bad credentials (401), channel
//! permissions (403), admin-only signup, revocation, expiry, open mode and the generated secret.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::sse::SseStream;
use common::{Api, PASSWORD, Server};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Sends a request; status and JSON answer (`Value::Null` when the body is not JSON).
async fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Asserts `status` and a JSON error body `{"error": "<non-empty>"}`.
fn assert_error(what: &str, (status, body): &(StatusCode, Value), expected: StatusCode) {
    assert_eq!(*status, expected, "{what}: {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: error body must be {{\"error\": \"...\"}}, got {body}"
    );
}

/// A `POST /insert` request of `{"event": event, "data": 1}` (no credentials yet).
fn insert_req(api: &Api, event: &str, channel: Option<&str>) -> RequestBuilder {
    let mut body = json!({"event": event, "data": 1});
    if let Some(channel) = channel {
        body["channel"] = json!(channel);
    }
    api.http.post(format!("{}/insert", api.base)).json(&body)
}

/// A stream request on `path` (no credentials yet).
fn stream_req(api: &Api, path: &str) -> RequestBuilder {
    api.http
        .get(format!("{}{path}", api.base))
        .header("accept", "text/event-stream")
}

/// Signs `username` up with [`PASSWORD`] and no credentials, asserting 200.
async fn signup(api: &Api, username: &str) {
    let answer = api
        .post(
            "/users",
            None,
            &json!({"username": username, "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        answer,
        (StatusCode::OK, json!({"username": username})),
        "signup {username}"
    );
}

/// Logs in and returns the token with its `expires_at`.
async fn login_with_expiry(api: &Api, username: &str) -> (String, u64) {
    let (status, body) = api
        .post(
            "/login",
            None,
            &json!({"username": username, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "login {username}: {body}");
    (
        body["jwt"].as_str().expect("jwt").to_owned(),
        body["expires_at"].as_u64().expect("expires_at"),
    )
}

/// Mints an HS256 token as Broker would, signed with `secret`.
fn mint(secret: &[u8], sub: &str, exp: u64, alg: jsonwebtoken::Algorithm) -> String {
    let claims = json!({
        "sub": sub,
        "iat": now_secs(),
        "exp": exp,
        "admin": false,
        "read": ["*"],
        "write": ["*"],
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("encode")
}

/// The `user` of the only version of `event` in the default channel.
async fn recorded_user(api: &Api, token: &str, event: &str) -> Value {
    let (status, page) = api.get(&format!("/history/{event}"), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    items[0]["user"].clone()
}

#[tokio::test]
async fn signup_validates_and_refuses_duplicates() {
    let server = Server::start(&[]);
    let api = server.api();
    signup(&api, "ada").await;
    signup(&api, "bob.smith@x-y_z").await;

    let duplicate = api
        .post(
            "/users",
            None,
            &json!({"username": "ada", "password": "another password"}),
        )
        .await;
    assert_error("duplicate username", &duplicate, StatusCode::CONFLICT);

    let long_name = "u".repeat(65);
    for (what, body) in [
        (
            "empty username",
            json!({"username": "", "password": PASSWORD}),
        ),
        (
            "space in username",
            json!({"username": "has space", "password": PASSWORD}),
        ),
        (
            "non-ASCII username",
            json!({"username": "zoé", "password": PASSWORD}),
        ),
        (
            "slash in username",
            json!({"username": "a/b", "password": PASSWORD}),
        ),
        (
            "65-character username",
            json!({"username": long_name, "password": PASSWORD}),
        ),
        (
            "7-character password",
            json!({"username": "carol", "password": "1234567"}),
        ),
        (
            "empty password",
            json!({"username": "carol", "password": ""}),
        ),
        ("missing password", json!({"username": "carol"})),
        ("missing username", json!({"password": PASSWORD})),
        (
            "username of the wrong type",
            json!({"username": 7, "password": PASSWORD}),
        ),
    ] {
        let answer = api.post("/users", None, &body).await;
        assert_error(what, &answer, StatusCode::BAD_REQUEST);
    }
    // Nothing was created by the refused requests: `carol` cannot log in, and may still sign up
    // with a password of exactly 8 characters and a 64-character name is fine.
    let refused = api
        .post(
            "/login",
            None,
            &json!({"username": "carol", "password": "1234567"}),
        )
        .await;
    assert_error(
        "login of a refused signup",
        &refused,
        StatusCode::UNAUTHORIZED,
    );
    let answer = api
        .post(
            "/users",
            None,
            &json!({"username": "carol", "password": "12345678"}),
        )
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({"username": "carol"})));
    signup(&api, &"u".repeat(64)).await;
}

#[tokio::test]
async fn login_gives_a_token_and_an_http_only_cookie() {
    let server = Server::start(&[]);
    let api = server.api();
    signup(&api, "ada").await;

    let before = now_secs();
    let resp = api
        .http
        .post(server.url("/login"))
        .json(&json!({"username": "ada", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    let after = now_secs();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ASCII cookie").to_owned())
        .collect();
    let body: Value = resp.json().await.expect("JSON answer");
    let jwt = body["jwt"].as_str().expect("jwt is a string");
    assert_eq!(jwt.split('.').count(), 3, "a JWT has three parts: {jwt}");
    let expires_at = body["expires_at"]
        .as_u64()
        .expect("expires_at is an integer");
    assert!(
        (before + 86_400..=after + 86_400).contains(&expires_at),
        "default expiry is a day: expires_at {expires_at}, now {before}..{after}"
    );

    let cookie = cookies
        .iter()
        .find(|c| c.starts_with("broker_token="))
        .unwrap_or_else(|| panic!("no broker_token cookie in {cookies:?}"));
    let mut parts = cookie.split(';').map(str::trim);
    assert_eq!(
        parts.next(),
        Some(format!("broker_token={jwt}").as_str()),
        "the cookie carries the same token"
    );
    assert!(
        parts.any(|attr| attr.eq_ignore_ascii_case("httponly")),
        "cookie must be HttpOnly: {cookie}"
    );

    // The token works.
    let (status, body) = send(insert_req(&api, "e", None).bearer_auth(jwt)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let server = Server::start(&[]);
    let api = server.api();
    signup(&api, "ada").await;
    let invalid = (
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid credentials"}),
    );
    for (what, body) in [
        (
            "wrong password",
            json!({"username": "ada", "password": "wrong horse battery"}),
        ),
        (
            "unknown user",
            json!({"username": "nobody", "password": PASSWORD}),
        ),
        (
            "password of another case",
            json!({"username": "ada", "password": PASSWORD.to_uppercase()}),
        ),
    ] {
        assert_eq!(api.post("/login", None, &body).await, invalid, "{what}");
    }
    // The right password still works afterwards (no lock-out).
    login_with_expiry(&api, "ada").await;
}

#[tokio::test]
async fn missing_malformed_and_foreign_tokens_get_401() {
    let secret = "the-server-secret";
    let server = Server::start(&["--jwt-secret", secret]);
    let api = server.api();
    let token = api.user("ada").await;

    let resp = insert_req(&api, "e", None).send().await.expect("insert");
    // HTTP: a 401 names the scheme to use.
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let no_credentials = (resp.status(), resp.json().await.unwrap_or(Value::Null));
    assert_error("no credentials", &no_credentials, StatusCode::UNAUTHORIZED);
    assert!(
        challenge.to_ascii_lowercase().starts_with("bearer"),
        "WWW-Authenticate: {challenge:?}"
    );

    // A token minted with the server's own secret is accepted: the claims below are right, so
    // the refusals that follow are about the signature, the algorithm or the expiry alone.
    let far = now_secs() + 3600;
    let good = mint(
        secret.as_bytes(),
        "ada",
        far,
        jsonwebtoken::Algorithm::HS256,
    );
    let (status, body) = send(insert_req(&api, "e", None).bearer_auth(&good)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "token minted with the secret: {body}"
    );

    // A token of the same claims signed with another secret.
    let foreign = mint(
        b"another-secret",
        "ada",
        far,
        jsonwebtoken::Algorithm::HS256,
    );
    // A token of another server (another secret), for a user of the same name there.
    let other_server = Server::start(&["--jwt-secret", "a-different-secret"]);
    let other_token = other_server.api().user("ada").await;
    assert_ne!(other_token, token);
    // The same token with its payload swapped for another user's, signature kept.
    let bob_payload = mint(
        secret.as_bytes(),
        "bob",
        far,
        jsonwebtoken::Algorithm::HS256,
    );
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[1] = bob_payload.split('.').nth(1).expect("payload");
    let tampered = parts.join(".");
    // An unsigned token (`alg: none`).
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": "ada", "iat": now_secs(), "exp": far,
                   "admin": true, "read": ["*"], "write": ["*"]}))
    );
    let cases = [
        ("garbage token", "garbage".to_owned()),
        ("three garbage parts", "a.b.c".to_owned()),
        ("truncated token", token[..token.len() - 5].to_owned()),
        ("token signed with another secret", foreign),
        ("token of another server", other_token),
        ("tampered payload", tampered),
        ("alg none", unsigned),
        (
            "right secret, HS512",
            mint(
                secret.as_bytes(),
                "ada",
                far,
                jsonwebtoken::Algorithm::HS512,
            ),
        ),
        (
            "right secret, unknown user",
            mint(
                secret.as_bytes(),
                "nobody",
                far,
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        (
            "right secret, expired",
            mint(
                secret.as_bytes(),
                "ada",
                now_secs() - 10,
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
    ];
    for (what, bad) in &cases {
        let answer = send(insert_req(&api, "e", None).bearer_auth(bad)).await;
        assert_error(what, &answer, StatusCode::UNAUTHORIZED);
        // The same token is refused on the stream too.
        let answer = send(stream_req(&api, "/events").bearer_auth(bad)).await;
        assert_error(
            &format!("{what} on /events"),
            &answer,
            StatusCode::UNAUTHORIZED,
        );
    }
    for (what, header) in [
        ("unknown scheme", "Token abc"),
        ("empty bearer", "Bearer"),
        ("bare token", token.as_str()),
    ] {
        let answer = send(insert_req(&api, "e", None).header("authorization", header)).await;
        assert_error(what, &answer, StatusCode::UNAUTHORIZED);
    }

    // Only the insert with the good minted token was stored, as ada's.
    let (status, page) = api.get("/history/e", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let users: Vec<&Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| &i["user"])
        .collect();
    assert_eq!(users, vec![&json!("ada")], "{page}");
}

/// Logs `username` in on a server with `--jwt-expiry 1` until the token is still valid when
/// first used (a token issued late in a second lives only until the next second): returns it
/// with its expiry.
async fn short_lived_token(api: &Api, username: &str) -> (String, u64) {
    for _ in 0..10 {
        let (token, expires_at) = login_with_expiry(api, username).await;
        let (status, _) = send(insert_req(api, "fresh", None).bearer_auth(&token)).await;
        if status == StatusCode::OK {
            return (token, expires_at);
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    panic!("no token was valid long enough to be used once");
}

#[tokio::test]
async fn an_expired_token_gets_401() {
    let server = Server::start(&["--jwt-expiry", "1"]);
    let api = server.api();
    signup(&api, "ada").await;
    let issued = now_secs();
    let (token, expires_at) = short_lived_token(&api, "ada").await;
    assert!(
        (issued + 1..=now_secs() + 1).contains(&expires_at),
        "--jwt-expiry 1: expires_at {expires_at}, issued at {issued}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let refusal = loop {
        let answer = send(insert_req(&api, "e", None).bearer_auth(&token)).await;
        if answer.0 != StatusCode::OK {
            break answer;
        }
        assert!(Instant::now() < deadline, "token still valid after 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        refusal,
        (StatusCode::UNAUTHORIZED, json!({"error": "token expired"}))
    );
    assert!(
        now_secs() >= expires_at,
        "refused before its expiry {expires_at}"
    );
    // Expired is expired: it stays refused on every endpoint, while a new login works.
    let answer = send(stream_req(&api, "/events").bearer_auth(&token)).await;
    assert_error(
        "expired token on /events",
        &answer,
        StatusCode::UNAUTHORIZED,
    );
    let answer = send(stream_req(&api, &format!("/events?access_token={token}"))).await;
    assert_error("expired access_token", &answer, StatusCode::UNAUTHORIZED);
    short_lived_token(&api, "ada").await;
}

#[tokio::test]
async fn an_open_stream_ends_when_its_token_expires() {
    let server = Server::start(&["--jwt-expiry", "1"]);
    let api = server.api();
    signup(&api, "ada").await;
    let mut opened = None;
    for _ in 0..10 {
        let (token, expires_at) = login_with_expiry(&api, "ada").await;
        let resp = SseStream::request(&api.http, &server.url("/events"), Some(&token), None).await;
        if resp.status() == StatusCode::OK {
            opened = Some((SseStream::from_response(resp), token, expires_at));
            break;
        }
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let (mut stream, token, expires_at) = opened.expect("a stream opened before expiry");
    stream.until_synced().await;
    let events = stream.until_end().await;
    let ended = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let last = events
        .last()
        .expect("an event before the end of the stream");
    assert_eq!(last.event, "$error", "{events:?}");
    assert_eq!(last.json(), json!({"error": "token expired"}));
    assert!(
        ended + Duration::from_millis(250) >= Duration::from_secs(expires_at),
        "stream ended at {ended:?}, before the token's expiry {expires_at}"
    );
    let answer = send(stream_req(&api, "/events").bearer_auth(&token)).await;
    assert_error(
        "reopening with the expired token",
        &answer,
        StatusCode::UNAUTHORIZED,
    );
}

#[tokio::test]
async fn basic_auth_works_for_insert() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    let (status, body) =
        send(insert_req(&api, "basic", None).basic_auth("ada", Some(PASSWORD))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event"], "basic");
    assert_eq!(recorded_user(&api, &token, "basic").await, json!("ada"));

    let wrong =
        send(insert_req(&api, "basic", None).basic_auth("ada", Some("wrong horse battery"))).await;
    assert_eq!(
        wrong,
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid credentials"})
        )
    );
    let unknown = send(insert_req(&api, "basic", None).basic_auth("nobody", Some(PASSWORD))).await;
    assert_error(
        "Basic of an unknown user",
        &unknown,
        StatusCode::UNAUTHORIZED,
    );
    for (what, header) in [
        ("not base64", "Basic !!!not-base64!!!"),
        // base64("ada") without a colon.
        ("no colon", "Basic YWRh"),
    ] {
        let answer = send(insert_req(&api, "basic", None).header("authorization", header)).await;
        assert_error(what, &answer, StatusCode::UNAUTHORIZED);
    }
    // The password is everything after the first colon (usernames have none).
    let colon_password = "pass:word:with:colons";
    let answer = api
        .post(
            "/users",
            None,
            &json!({"username": "colon", "password": colon_password}),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let (status, body) =
        send(insert_req(&api, "colon", None).basic_auth("colon", Some(colon_password))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "Basic with colons in the password: {body}"
    );
    assert_eq!(recorded_user(&api, &token, "colon").await, json!("colon"));
    // Basic also opens a stream.
    let resp = send_stream(stream_req(&api, "/events").basic_auth("ada", Some(PASSWORD))).await;
    let (snapshot, _) = resp.expect("Basic stream").until_synced().await;
    let events: Vec<&str> = snapshot.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(events, vec!["basic", "colon"]);
    // Only the good insert was stored.
    assert_eq!(recorded_user(&api, &token, "basic").await, json!("ada"));
}

/// Opens a stream from a prepared request: the stream on 200, else status and body.
async fn send_stream(req: RequestBuilder) -> Result<SseStream, (StatusCode, String)> {
    let resp = req.send().await.expect("stream request");
    if resp.status() == StatusCode::OK {
        Ok(SseStream::from_response(resp))
    } else {
        Err((resp.status(), resp.text().await.unwrap_or_default()))
    }
}

#[tokio::test]
async fn the_login_cookie_authenticates() {
    let server = Server::start(&[]);
    let api = server.api();
    signup(&api, "ada").await;
    let (token, _) = login_with_expiry(&api, "ada").await;

    let cookie = format!("theme=dark; broker_token={token}; lang=en");
    let (status, body) = send(insert_req(&api, "c", None).header("cookie", &cookie)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(recorded_user(&api, &token, "c").await, json!("ada"));

    let mut stream = send_stream(stream_req(&api, "/events").header("cookie", &cookie))
        .await
        .expect("stream with the cookie");
    let (snapshot, _) = stream.until_synced().await;
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].event, "c");

    let answer = send(insert_req(&api, "c", None).header("cookie", "broker_token=garbage")).await;
    assert_error("garbage cookie", &answer, StatusCode::UNAUTHORIZED);
    let answer =
        send(insert_req(&api, "c", None).header("cookie", format!("other_token={token}"))).await;
    assert_error("token in another cookie", &answer, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn access_token_query_only_on_the_stream_endpoints() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    api.insert(&token, "q", json!("hello"), None).await;

    for path in ["/events", "/sse"] {
        let mut stream = send_stream(stream_req(&api, &format!("{path}?access_token={token}")))
            .await
            .unwrap_or_else(|e| panic!("{path} with access_token: {e:?}"));
        let (snapshot, _) = stream.until_synced().await;
        assert_eq!(snapshot.len(), 1, "{path}");
        assert_eq!(snapshot[0].data, "\"hello\"");
    }
    // With other query parameters around it.
    let mut stream = send_stream(stream_req(
        &api,
        &format!("/events?channels=default&access_token={token}&envelope=true"),
    ))
    .await
    .expect("access_token among other parameters");
    let (snapshot, _) = stream.until_synced().await;
    assert_eq!(snapshot[0].json()["data"], "hello");

    let answer = send(stream_req(&api, "/events?access_token=garbage")).await;
    assert_error("garbage access_token", &answer, StatusCode::UNAUTHORIZED);
    // node-sse-server's stream is an SSE endpoint too.
    let mut stream = send_stream(stream_req(
        &api,
        &format!("/subscribe?channels=default&access_token={token}"),
    ))
    .await
    .expect("/subscribe with access_token");
    assert_eq!(stream.next_event().await.event, "registered");
    let answer = send(stream_req(
        &api,
        "/subscribe?channels=default&access_token=garbage",
    ))
    .await;
    assert_error(
        "garbage access_token on /subscribe",
        &answer,
        StatusCode::UNAUTHORIZED,
    );

    // Not accepted on the other endpoints.
    let answer = send(
        api.http
            .post(server.url(&format!("/insert?access_token={token}")))
            .json(&json!({"event": "q", "data": "no"})),
    )
    .await;
    assert_error("access_token on /insert", &answer, StatusCode::UNAUTHORIZED);
    let answer = send(
        api.http
            .get(server.url(&format!("/history/q?access_token={token}"))),
    )
    .await;
    assert_error(
        "access_token on /history",
        &answer,
        StatusCode::UNAUTHORIZED,
    );
    let answer = send(
        api.http
            .get(server.url(&format!("/audit/q?access_token={token}"))),
    )
    .await;
    assert_error("access_token on /audit", &answer, StatusCode::UNAUTHORIZED);
    let answer = send(
        api.http
            .get(server.url(&format!("/lastEvent?channel=default&access_token={token}"))),
    )
    .await;
    assert_error(
        "access_token on /lastEvent",
        &answer,
        StatusCode::UNAUTHORIZED,
    );
    let (status, page) = api.get("/history/q", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
}

#[tokio::test]
async fn writing_a_channel_one_may_not_write_gets_403() {
    let server = Server::start(&["--default-write", "user:{user}"]);
    let api = server.api();
    let ada = api.user("ada").await;
    let bob = api.user("bob").await;

    let mine = api
        .insert(&ada, "note", json!("mine"), Some("user:ada"))
        .await;
    assert_eq!(mine["channel"], "user:ada");
    api.insert(&bob, "note", json!("bob's"), Some("user:bob"))
        .await;
    for (what, channel) in [
        ("another user's channel", Some("user:bob")),
        ("the default channel, implicitly", None),
        ("the default channel, by name", Some("default")),
        ("a prefix of one's own", Some("user:ad")),
        ("an extension of one's own", Some("user:ada2")),
    ] {
        let answer = send(insert_req(&api, "note", channel).bearer_auth(&ada)).await;
        assert_error(what, &answer, StatusCode::FORBIDDEN);
    }
    // Reading is not restricted (default `*`): the refused writes stored nothing.
    for (channel, expected) in [("user:ada", "mine"), ("user:bob", "bob's")] {
        let (status, page) = api
            .get(&format!("/history/note?channel={channel}"), Some(&ada))
            .await;
        assert_eq!(status, StatusCode::OK);
        let data: Vec<&Value> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| &i["data"])
            .collect();
        assert_eq!(data, vec![&json!(expected)], "{channel}: {page}");
    }
    let (status, page) = api.get("/history/note", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn reading_a_channel_one_may_not_read_gets_403() {
    let server = Server::start(&["--default-read", "public,user:{user}"]);
    let api = server.api();
    let ada = api.user("ada").await;
    // Writing is not restricted (default `*`).
    for channel in ["public", "secret", "user:ada", "user:bob", "default"] {
        api.insert(&ada, "e", json!(channel), Some(channel)).await;
    }

    for query in [
        "channels=secret",
        "channels=public,secret",
        "channels=user:bob",
        "channels=default",
    ] {
        let answer = send(stream_req(&api, &format!("/events?{query}")).bearer_auth(&ada)).await;
        assert_error(&format!("/events?{query}"), &answer, StatusCode::FORBIDDEN);
        let answer = send(stream_req(
            &api,
            &format!("/sse?{query}&access_token={ada}"),
        ))
        .await;
        assert_error(
            &format!("/sse?{query} (access_token)"),
            &answer,
            StatusCode::FORBIDDEN,
        );
    }
    for path in [
        "/audit/e?channel=secret",
        "/audit/e",
        "/audit/e?channel=user:bob",
        "/history/e?channel=secret",
        "/history/e",
    ] {
        let answer = api.get(path, Some(&ada)).await;
        assert_error(path, &answer, StatusCode::FORBIDDEN);
    }

    // What may be read, can be.
    let (status, audit) = api.get("/audit/e?channel=public", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        audit
            .as_object()
            .map(|o| o.values().cloned().collect::<Vec<_>>()),
        Some(vec![json!("public")])
    );
    let mut stream = api
        .stream("/events?channels=public,user:ada", Some(&ada), None)
        .await;
    let (snapshot, _) = stream.until_synced().await;
    assert_eq!(snapshot.len(), 2);
    // Without `channels`, the stream carries exactly the readable channels.
    let mut stream = api.stream("/events", Some(&ada), None).await;
    let (snapshot, _) = stream.until_synced().await;
    let data: Vec<Value> = snapshot.iter().map(|e| e.json()).collect();
    assert_eq!(data, vec![json!("public"), json!("user:ada")]);
    // ... live as well.
    api.insert(&ada, "e", json!("secret 2"), Some("secret"))
        .await;
    api.insert(&ada, "e", json!("public 2"), Some("public"))
        .await;
    assert_eq!(stream.next_event().await.json(), json!("public 2"));
}

#[tokio::test]
async fn admin_only_signup() {
    let admin_spec = format!("root:{PASSWORD}");
    let server = Server::start(&["--signup", "admin", "--admin", &admin_spec]);
    let api = server.api();
    let new_user = |name: &str| json!({"username": name, "password": PASSWORD});

    let answer = api.post("/users", None, &new_user("eve")).await;
    assert_error(
        "signup without credentials",
        &answer,
        StatusCode::UNAUTHORIZED,
    );
    let answer = api.post("/users", Some("garbage"), &new_user("eve")).await;
    assert_error("signup with a bad token", &answer, StatusCode::UNAUTHORIZED);

    let root = api.login("root").await;
    let answer = api.post("/users", Some(&root), &new_user("bob")).await;
    assert_eq!(answer, (StatusCode::OK, json!({"username": "bob"})));
    let bob = api.login("bob").await;
    let answer = api.post("/users", Some(&bob), &new_user("eve")).await;
    assert_error("signup by a non-admin", &answer, StatusCode::FORBIDDEN);
    let answer = send(
        api.http
            .post(server.url("/users"))
            .basic_auth("bob", Some(PASSWORD))
            .json(&new_user("eve")),
    )
    .await;
    assert_error(
        "signup by a non-admin (Basic)",
        &answer,
        StatusCode::FORBIDDEN,
    );
    let answer = api
        .post(
            "/login",
            None,
            &json!({"username": "eve", "password": PASSWORD}),
        )
        .await;
    assert_error("login of a refused user", &answer, StatusCode::UNAUTHORIZED);
    // The admin's Basic credentials do as well as the token.
    let answer = send(
        api.http
            .post(server.url("/users"))
            .basic_auth("root", Some(PASSWORD))
            .json(&new_user("dave")),
    )
    .await;
    assert_eq!(answer, (StatusCode::OK, json!({"username": "dave"})));

    // An admin may restrict what a new user reads and writes.
    let answer = api
        .post(
            "/users",
            Some(&root),
            &json!({"username": "reader", "password": PASSWORD,
                    "read": ["public", "news-*"], "write": ["public"]}),
        )
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({"username": "reader"})));
    let reader = api.login("reader").await;
    api.insert(&root, "e", json!("secret"), Some("secret"))
        .await;
    api.insert(&root, "e", json!("news"), Some("news-1")).await;
    api.insert(&reader, "e", json!("public"), Some("public"))
        .await;
    let answer = send(insert_req(&api, "e", Some("secret")).bearer_auth(&reader)).await;
    assert_error(
        "restricted user writes secret",
        &answer,
        StatusCode::FORBIDDEN,
    );
    let answer = send(insert_req(&api, "e", Some("news-1")).bearer_auth(&reader)).await;
    assert_error(
        "restricted user writes news-1",
        &answer,
        StatusCode::FORBIDDEN,
    );
    let answer = send(stream_req(&api, "/events?channels=secret").bearer_auth(&reader)).await;
    assert_error(
        "restricted user reads secret",
        &answer,
        StatusCode::FORBIDDEN,
    );
    let answer = api.get("/audit/e?channel=secret", Some(&reader)).await;
    assert_error(
        "restricted user audits secret",
        &answer,
        StatusCode::FORBIDDEN,
    );
    let mut stream = api.stream("/events", Some(&reader), None).await;
    let (snapshot, _) = stream.until_synced().await;
    let data: Vec<Value> = snapshot.iter().map(|e| e.json()).collect();
    assert_eq!(data, vec![json!("news"), json!("public")]);

    // An admin may make an admin, who may then create users.
    let answer = api
        .post(
            "/users",
            Some(&root),
            &json!({"username": "admin2", "password": PASSWORD, "admin": true}),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let admin2 = api.login("admin2").await;
    let answer = api.post("/users", Some(&admin2), &new_user("erin")).await;
    assert_eq!(answer, (StatusCode::OK, json!({"username": "erin"})));
    api.login("erin").await;
}

#[tokio::test]
async fn open_signup_cannot_ask_for_grants() {
    let server = Server::start(&[]);
    let api = server.api();
    for (what, body) in [
        (
            "admin: true",
            json!({"username": "mallory", "password": PASSWORD, "admin": true}),
        ),
        (
            "read",
            json!({"username": "mallory", "password": PASSWORD, "read": ["*"]}),
        ),
        (
            "write",
            json!({"username": "mallory", "password": PASSWORD, "write": ["*"]}),
        ),
    ] {
        let answer = api.post("/users", None, &body).await;
        assert_error(what, &answer, StatusCode::FORBIDDEN);
    }
    // A signed-in non-admin may not either.
    let ada = api.user("ada").await;
    let answer = api
        .post(
            "/users",
            Some(&ada),
            &json!({"username": "mallory", "password": PASSWORD, "admin": true}),
        )
        .await;
    assert_error("admin: true by a user", &answer, StatusCode::FORBIDDEN);
    // Nothing was created; the name is still free for a plain signup, which is not an admin.
    let answer = api
        .post(
            "/login",
            None,
            &json!({"username": "mallory", "password": PASSWORD}),
        )
        .await;
    assert_error(
        "login of a refused signup",
        &answer,
        StatusCode::UNAUTHORIZED,
    );
    let mallory = api.user("mallory").await;
    let answer = api
        .post(
            "/users",
            Some(&mallory),
            &json!({"username": "trudy", "password": PASSWORD, "admin": true}),
        )
        .await;
    assert_error("plain user grants admin", &answer, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_revoked_user_is_locked_out_and_their_streams_end() {
    let admin_spec = format!("root:{PASSWORD}");
    let server = Server::start(&["--admin", &admin_spec]);
    let api = server.api();
    let root = api.login("root").await;
    let ada = api.user("ada").await;
    let bob = api.user("bob").await;
    let delete = |path: &str| api.http.delete(server.url(path));

    let mut ada_bearer = api.stream("/events", Some(&ada), None).await;
    ada_bearer.until_synced().await;
    let mut ada_query = send_stream(stream_req(&api, &format!("/sse?access_token={ada}")))
        .await
        .expect("ada's access_token stream");
    ada_query.until_synced().await;
    let mut bob_stream = api.stream("/events", Some(&bob), None).await;
    bob_stream.until_synced().await;

    let answer = send(delete("/users/ada")).await;
    assert_error(
        "revoke without credentials",
        &answer,
        StatusCode::UNAUTHORIZED,
    );
    let answer = send(delete("/users/ada").bearer_auth(&bob)).await;
    assert_error("revoke by a non-admin", &answer, StatusCode::FORBIDDEN);
    let answer = send(delete("/users/nobody").bearer_auth(&root)).await;
    assert_error("revoke an unknown user", &answer, StatusCode::NOT_FOUND);
    // ada is untouched so far.
    api.insert(&ada, "e", json!("before"), None).await;

    let (status, body) = send(delete("/users/ada").bearer_auth(&root)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for (what, stream) in [
        ("bearer", &mut ada_bearer),
        ("access_token", &mut ada_query),
    ] {
        let events = stream.until_end().await;
        let last = events
            .last()
            .unwrap_or_else(|| panic!("{what} stream ended without an $error event"));
        assert_eq!(last.event, "$error", "{what}: {events:?}");
        assert!(
            last.json()["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {}",
            last.data
        );
        assert!(
            events
                .iter()
                .all(|e| e.event != "e" || e.data == "\"before\""),
            "{what}: nothing after the revocation: {events:?}"
        );
    }

    let answer = send(insert_req(&api, "e", None).bearer_auth(&ada)).await;
    assert_error("revoked user's token", &answer, StatusCode::UNAUTHORIZED);
    let answer = send(stream_req(&api, "/events").bearer_auth(&ada)).await;
    assert_error("revoked user's stream", &answer, StatusCode::UNAUTHORIZED);
    let answer = send(insert_req(&api, "e", None).basic_auth("ada", Some(PASSWORD))).await;
    assert_error("revoked user's Basic", &answer, StatusCode::UNAUTHORIZED);
    let answer = api
        .post(
            "/login",
            None,
            &json!({"username": "ada", "password": PASSWORD}),
        )
        .await;
    assert_error("revoked user's login", &answer, StatusCode::UNAUTHORIZED);

    // Other users are unaffected: bob's stream is still open and live.
    let inserted = api.insert(&bob, "e", json!("after"), None).await;
    let mut live = bob_stream.next_event().await;
    if live.data == "\"before\"" {
        live = bob_stream.next_event().await;
    }
    assert_eq!(live.id.as_deref(), inserted["id"].as_str());
    assert_eq!(live.json(), json!("after"));
}

#[tokio::test]
async fn open_mode_needs_no_credentials() {
    let server = Server::start(&["--no-auth"]);
    let api = server.api();
    let mut stream = api.stream("/events", None, None).await;
    let (snapshot, _) = stream.until_synced().await;
    assert!(snapshot.is_empty());

    let (status, answer) = send(insert_req(&api, "anon", Some("room"))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let live = stream.next_event().await;
    assert_eq!(live.event, "anon");
    assert_eq!(live.id.as_deref(), answer["id"].as_str());

    let (status, page) = api.get("/history/anon?channel=room", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["user"], Value::Null, "anonymous record: {page}");
    assert_eq!(items[0]["data"], json!(1));
    let (status, audit) = api.get("/audit/anon?channel=room", None).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
}

#[tokio::test]
async fn a_generated_secret_is_kept_so_tokens_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let mut server = Server::start_on(&db, &[]);
    let token = server.api().user("ada").await;
    let secret_file = db.join("jwt_secret");
    let secret = std::fs::read(&secret_file).expect("jwt_secret in the database directory");
    assert!(
        secret.len() >= 32,
        "a generated secret is long: {} bytes",
        secret.len()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "jwt_secret readable by others: {mode:o}");
    }
    server.kill();
    drop(server);

    let restarted = Server::start_on(&db, &[]);
    let api = restarted.api();
    let (status, body) = send(insert_req(&api, "after-restart", None).bearer_auth(&token)).await;
    assert_eq!(status, StatusCode::OK, "token after restart: {body}");
    assert_eq!(
        std::fs::read(&secret_file).expect("jwt_secret"),
        secret,
        "the secret is kept, not regenerated"
    );

    // Another database gets another secret: the token means nothing there, even for a user of
    // the same name.
    let other = Server::start(&[]);
    let other_api = other.api();
    other_api.user("ada").await;
    let other_secret = std::fs::read(other.db.join("jwt_secret")).expect("jwt_secret");
    assert_ne!(other_secret, secret);
    let answer = send(insert_req(&other_api, "e", None).bearer_auth(&token)).await;
    assert_error(
        "token of another database",
        &answer,
        StatusCode::UNAUTHORIZED,
    );
}
