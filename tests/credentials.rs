//! Credentials under attack, black-box: failed-login throttling per address and per username
//! (429 with Retry-After, without locking a user out of their known address), the Argon2
//! bound under a login flood, the Basic cache, CSRF checks on cookie writes, cookie flags and
//! logout, password changes and `--admin` resets that end older tokens, rights granted only by
//! a signed-in admin, the database directory's modes, the short-secret warning and token
//! redaction in logs.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sse::SseStream;
use common::{Api, PASSWORD, Server, TIMEOUT};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

/// The password ada changes to.
const NEW_PASSWORD: &str = "a brand new passphrase";

/// Sends a request: status, JSON answer (`Null` if not JSON) and headers.
async fn send(req: RequestBuilder) -> (StatusCode, Value, HeaderMap) {
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

/// Asserts `status` and a JSON error body.
fn assert_error(what: &str, (status, body, _): &(StatusCode, Value, HeaderMap), want: StatusCode) {
    assert_eq!(*status, want, "{what}: {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: error body must be {{\"error\": \"...\"}}, got {body}"
    );
}

/// Asserts a JSON 429 with a `Retry-After` of 1 to `max` seconds.
fn assert_throttled(what: &str, answer: &(StatusCode, Value, HeaderMap), max: u64) {
    assert_error(what, answer, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = answer
        .2
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: 429 without a numeric Retry-After"));
    assert!((1..=max).contains(&retry), "{what}: Retry-After {retry}");
}

/// `POST /login` as the client at `ip` (through the trusted proxy 127.0.0.1).
async fn login_from(
    api: &Api,
    ip: &str,
    username: &str,
    password: &str,
) -> (StatusCode, Value, HeaderMap) {
    send(
        api.http
            .post(format!("{}/login", api.base))
            .header("x-forwarded-for", ip)
            .json(&json!({"username": username, "password": password})),
    )
    .await
}

/// `GET /users/me` with Basic credentials as the client at `ip`.
async fn basic_me(
    api: &Api,
    ip: &str,
    username: &str,
    password: &str,
) -> (StatusCode, Value, HeaderMap) {
    send(
        api.http
            .get(format!("{}/users/me", api.base))
            .header("x-forwarded-for", ip)
            .basic_auth(username, Some(password)),
    )
    .await
}

/// Signs `username` up with [`PASSWORD`].
async fn signup(api: &Api, username: &str) {
    let (status, body) = api
        .post(
            "/users",
            None,
            &json!({"username": username, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "signup {username}: {body}");
}

#[tokio::test]
async fn failed_logins_are_throttled_without_locking_the_user_out() {
    let server = Server::start(&[
        "--trusted-proxies",
        "127.0.0.1",
        "--login-failures-per-user",
        "3",
        "--login-failures-per-ip",
        "5",
        "--login-window",
        "60",
    ]);
    let api = server.api();
    signup(&api, "ada").await;
    let home = "10.0.0.1";
    let answer = login_from(&api, home, "ada", PASSWORD).await;
    assert_eq!(answer.0, StatusCode::OK, "ada from home: {}", answer.1);

    // An attacker guesses ada's password: three failures, then 429 with Retry-After.
    for _ in 0..3 {
        let answer = login_from(&api, "10.6.6.6", "ada", "wrong password").await;
        assert_error("a guess", &answer, StatusCode::UNAUTHORIZED);
    }
    let answer = login_from(&api, "10.6.6.6", "ada", "wrong password").await;
    assert_throttled("fourth guess", &answer, 60);
    // The lock is on the username: other new addresses wait too, Basic credentials anywhere
    // included, and even the right password from a new address (one window at most).
    assert_throttled(
        "a guess from another address",
        &login_from(&api, "10.6.6.7", "ada", "guess").await,
        60,
    );
    assert_throttled(
        "a Basic guess",
        &basic_me(&api, "10.6.6.7", "ada", "guess").await,
        60,
    );
    assert_throttled(
        "ada from a new address",
        &login_from(&api, "10.0.0.2", "ada", PASSWORD).await,
        60,
    );
    // From her known address ada signs in, with a login or with Basic credentials.
    let answer = login_from(&api, home, "ada", PASSWORD).await;
    assert_eq!(answer.0, StatusCode::OK, "ada at home: {}", answer.1);
    assert!(answer.1["jwt"].is_string());
    let answer = basic_me(&api, home, "ada", PASSWORD).await;
    assert_eq!(
        answer.0,
        StatusCode::OK,
        "ada's Basic at home: {}",
        answer.1
    );
    assert_eq!(answer.1["username"], "ada");

    // Per address: five failures on any names, then every name waits.
    for i in 0..5 {
        let answer = login_from(&api, "10.6.6.8", &format!("nobody{i}"), "wrong").await;
        assert_error("a spray", &answer, StatusCode::UNAUTHORIZED);
    }
    assert_throttled(
        "sixth failure of one address",
        &login_from(&api, "10.6.6.8", "bob", "wrong").await,
        60,
    );
    assert_throttled(
        "that address with Basic",
        &basic_me(&api, "10.6.6.8", "bob", "wrong").await,
        60,
    );
}

#[tokio::test]
async fn a_login_flood_is_bounded_and_a_real_login_still_works() {
    // Only the Argon2 bound limits here: the failure limits are off.
    let server = Server::start(&[
        "--trusted-proxies",
        "127.0.0.1",
        "--login-failures-per-ip",
        "0",
        "--login-failures-per-user",
        "0",
    ]);
    let api = server.api();
    signup(&api, "ada").await;
    let attempts = (0..200).map(|i| {
        let api = api.clone();
        async move {
            login_from(
                &api,
                &format!("10.1.{}.{}", i / 200, i % 200 + 1),
                "ada",
                "wrong",
            )
            .await
        }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let mut refused = 0;
    for answer in &answers {
        match answer.0 {
            StatusCode::UNAUTHORIZED => {
                assert_error("a wrong password", answer, StatusCode::UNAUTHORIZED)
            }
            StatusCode::TOO_MANY_REQUESTS => {
                assert_throttled("beyond the Argon2 queue", answer, 1);
                refused += 1;
            }
            other => panic!(
                "a flood answer must be 401 or 429, got {other}: {}",
                answer.1
            ),
        }
    }
    assert!(refused > 0, "200 concurrent password checks, none refused");
    assert!(refused < answers.len(), "every attempt refused");
    let answer = login_from(&api, "10.0.0.1", "ada", PASSWORD).await;
    assert_eq!(answer.0, StatusCode::OK, "the real login: {}", answer.1);
}

/// A broker whose log lines the test reads.
struct Logged {
    child: Child,
    base: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    /// Starts a broker on `db` with `args` and `RUST_LOG=rust_log`, once it listens.
    fn start(db: &Path, args: &[&str], rust_log: &str) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
        for (key, _) in std::env::vars() {
            if key == "PORT" || key.starts_with("BROKER_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--db"])
            .arg(db)
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn broker");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[broker] {line}");
                sink.lock().expect("log lines").push(line);
            }
        });
        let mut server = Self {
            child,
            base: String::new(),
            lines,
        };
        let listening = server.wait_for("listening on ");
        let port = listening
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no port in {listening}"));
        server.base = format!("http://127.0.0.1:{port}");
        server
    }

    fn api(&self) -> Api {
        Api {
            http: common::client(),
            base: self.base.clone(),
        }
    }

    /// Lines logged so far that contain `needle`.
    fn matching(&self, needle: &str) -> Vec<String> {
        let lines = self.lines.lock().expect("log lines");
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits for a line containing `needle` and returns it.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(line) = self.matching(needle).pop() {
                return line;
            }
            assert!(Instant::now() < deadline, "no log line with '{needle}'");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn basic_credentials_cost_one_argon2_run_until_the_password_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Logged::start(&dir.path().join("db"), &[], "info,broker::auth=debug");
    let api = server.api();
    signup(&api, "ada").await;
    let me = |user: &str, pass: &str| {
        api.http
            .get(format!("{}/users/me", api.base))
            .basic_auth(user, Some(pass))
    };
    for _ in 0..25 {
        let answer = send(me("ada", PASSWORD)).await;
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
        assert_eq!(answer.1["username"], "ada");
    }
    // A wrong password is never served from the cache; its log line also shows that every
    // earlier line has been read.
    assert_error(
        "wrong Basic password",
        &send(me("ada", "wrong password")).await,
        StatusCode::UNAUTHORIZED,
    );
    server.wait_for("ok=false");
    let runs = server.matching("password checked with Argon2");
    assert_eq!(
        runs.len(),
        2,
        "25 Basic requests and a wrong one: {runs:#?}"
    );

    let answer = send(
        api.http
            .post(format!("{}/users/me/password", api.base))
            .basic_auth("ada", Some(PASSWORD))
            .json(&json!({"old_password": PASSWORD, "new_password": NEW_PASSWORD})),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "password change: {}", answer.1);
    assert_error(
        "the old Basic credentials",
        &send(me("ada", PASSWORD)).await,
        StatusCode::UNAUTHORIZED,
    );
    let answer = send(me("ada", NEW_PASSWORD)).await;
    assert_eq!(answer.0, StatusCode::OK, "the new ones: {}", answer.1);
}

/// The value of the `broker_token` cookie a login sets, with the whole `Set-Cookie` line.
async fn login_cookie(api: &Api, username: &str) -> (String, String) {
    let (status, body, headers) = send(
        api.http
            .post(format!("{}/login", api.base))
            .json(&json!({"username": username, "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let line = headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("set-cookie")
        .to_owned();
    let token = body["jwt"].as_str().expect("jwt").to_owned();
    (token, line)
}

#[tokio::test]
async fn cookie_writes_need_json_and_an_allowed_origin() {
    let server = Server::start(&[]);
    let api = server.api();
    signup(&api, "ada").await;
    let (token, set_cookie) = login_cookie(&api, "ada").await;
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let cookie = format!("broker_token={token}");
    let own = server.base.clone();
    let insert = |event: &str| {
        api.http
            .post(format!("{}/insert", api.base))
            .header("cookie", &cookie)
            .body(json!({"event": event, "data": 1}).to_string())
    };
    let json_type = ("content-type", "application/json");

    assert_error(
        "cookie, no content type",
        &send(insert("a").header("origin", "http://evil.example")).await,
        StatusCode::FORBIDDEN,
    );
    assert_error(
        "cookie, no content type, no origin",
        &send(insert("b")).await,
        StatusCode::FORBIDDEN,
    );
    assert_error(
        "cookie, text/plain",
        &send(insert("c").header("content-type", "text/plain")).await,
        StatusCode::FORBIDDEN,
    );
    assert_error(
        "cookie, JSON, evil origin",
        &send(
            insert("d")
                .header(json_type.0, json_type.1)
                .header("origin", "http://evil.example"),
        )
        .await,
        StatusCode::FORBIDDEN,
    );
    assert_error(
        "cookie, JSON, a sibling port",
        &send(
            insert("e")
                .header(json_type.0, json_type.1)
                .header("origin", "http://127.0.0.1:1"),
        )
        .await,
        StatusCode::FORBIDDEN,
    );
    assert_error(
        "cookie, JSON, evil referer",
        &send(
            insert("f")
                .header(json_type.0, json_type.1)
                .header("referer", "http://evil.example/page"),
        )
        .await,
        StatusCode::FORBIDDEN,
    );
    assert_error(
        "cookie, JSON, origin null",
        &send(
            insert("g")
                .header(json_type.0, json_type.1)
                .header("origin", "null"),
        )
        .await,
        StatusCode::FORBIDDEN,
    );

    for (what, event, req) in [
        (
            "own origin",
            "ok1",
            insert("ok1")
                .header(json_type.0, json_type.1)
                .header("origin", &own),
        ),
        (
            "own referer",
            "ok2",
            insert("ok2")
                .header(json_type.0, json_type.1)
                .header("referer", format!("{own}/demo")),
        ),
        (
            "no origin",
            "ok3",
            insert("ok3").header(json_type.0, json_type.1),
        ),
    ] {
        let (status, body, _) = send(req).await;
        assert_eq!(status, StatusCode::OK, "cookie, JSON, {what}: {body}");
        assert_eq!(body["event"], event);
    }
    // Bearer tokens are not sent by browsers on their own: CORS alone governs them.
    let (status, body, _) = send(
        api.http
            .post(format!("{}/insert", api.base))
            .bearer_auth(&token)
            .header("origin", "http://evil.example")
            .body(json!({"event": "bearer", "data": 1}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "bearer with another origin: {body}");
    // Reads with the cookie are not affected.
    let (status, body, _) = send(
        api.http
            .get(format!("{}/users/me", api.base))
            .header("cookie", &cookie)
            .header("origin", "http://evil.example"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "a read: {body}");
    // Nothing refused was stored.
    for event in ["a", "b", "c", "d", "e", "f", "g"] {
        let (status, body) = api.get(&format!("/audit/{event}"), Some(&token)).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "refused insert {event} was stored: {body}"
        );
    }

    // With a list of origins, those origins may write with the cookie too.
    let listed = Server::start(&["--origin", "https://app.example"]);
    let api = listed.api();
    signup(&api, "ada").await;
    let (token, _) = login_cookie(&api, "ada").await;
    let write = |origin: &str| {
        api.http
            .post(format!("{}/insert", api.base))
            .header("cookie", format!("broker_token={token}"))
            .header("origin", origin)
            .json(&json!({"event": "x", "data": 1}))
    };
    let (status, body, _) = send(write("https://app.example")).await;
    assert_eq!(status, StatusCode::OK, "listed origin: {body}");
    assert_error(
        "unlisted origin",
        &send(write("https://evil.example")).await,
        StatusCode::FORBIDDEN,
    );
}

#[tokio::test]
async fn cookie_flags_and_logout() {
    let server = Server::start(&["--cookie-samesite", "strict", "--cookie-secure"]);
    let api = server.api();
    signup(&api, "ada").await;
    let (_, set_cookie) = login_cookie(&api, "ada").await;
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(
            set_cookie.contains(attribute),
            "{attribute} missing: {set_cookie}"
        );
    }
    let (status, body, headers) = send(api.http.post(format!("{}/logout", api.base))).await;
    assert_eq!(
        (status, &body),
        (StatusCode::OK, &json!({"logged_out": true}))
    );
    let cleared = headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("logout sets a cookie");
    assert!(cleared.starts_with("broker_token=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    // SameSite=None without Secure is refused at start: browsers would drop the cookie.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args([
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--cookie-samesite",
            "none",
            "--db",
        ])
        .arg(dir.path().join("db"))
        .env_remove("BROKER_COOKIE_SECURE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("--cookie-samesite none without Secure was not refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read");
    assert!(stderr.contains("--cookie-secure"), "{stderr}");
}

#[tokio::test]
async fn a_password_change_ends_older_tokens_and_streams() {
    let server = Server::start(&[]);
    let api = server.api();
    let first = api.user("ada").await;
    let second = api.login("ada").await;
    let mut stream = api.stream("/events", Some(&first), None).await;
    stream.until_synced().await;
    let basic = api
        .http
        .get(format!("{}/events", api.base))
        .header("accept", "text/event-stream")
        .basic_auth("ada", Some(PASSWORD))
        .send()
        .await
        .expect("Basic stream");
    assert_eq!(basic.status(), StatusCode::OK);
    let mut basic_stream = SseStream::from_response(basic);
    basic_stream.until_synced().await;
    let change = |token: &str, old: &str, new: &str| {
        api.http
            .post(format!("{}/users/me/password", api.base))
            .bearer_auth(token)
            .json(&json!({"old_password": old, "new_password": new}))
    };
    assert_error(
        "wrong old password",
        &send(change(&first, "not it at all", NEW_PASSWORD)).await,
        StatusCode::FORBIDDEN,
    );
    assert_error(
        "short new password",
        &send(change(&first, PASSWORD, "short")).await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        "no credentials",
        &send(
            api.http
                .post(format!("{}/users/me/password", api.base))
                .json(&json!({"old_password": PASSWORD, "new_password": NEW_PASSWORD})),
        )
        .await,
        StatusCode::UNAUTHORIZED,
    );

    let (status, body, headers) = send(change(&first, PASSWORD, NEW_PASSWORD)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["username"], "ada");
    let fresh = body["jwt"].as_str().expect("a fresh token").to_owned();
    assert!(
        headers.get("set-cookie").is_some(),
        "the fresh token is also the cookie"
    );

    for (what, stream) in [("token", &mut stream), ("Basic", &mut basic_stream)] {
        let events = stream.until_end().await;
        assert_eq!(
            events.last().map(|e| e.event.as_str()),
            Some("$error"),
            "{what} stream: {events:?}"
        );
    }
    for (what, token) in [("the token used", &first), ("another older token", &second)] {
        let answer = send(
            api.http
                .get(format!("{}/users/me", api.base))
                .bearer_auth(token),
        )
        .await;
        assert_error(what, &answer, StatusCode::UNAUTHORIZED);
        assert!(
            answer.1["error"]
                .as_str()
                .is_some_and(|e| e.contains("revoked")),
            "{what}: {}",
            answer.1
        );
    }
    let (status, me) = api.get("/users/me", Some(&fresh)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        me,
        json!({"username": "ada", "admin": false, "read": ["*"], "write": ["*"], "totp": false})
    );
    let (status, _) = api
        .post(
            "/login",
            None,
            &json!({"username": "ada", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password");
    let (status, body) = api
        .post(
            "/login",
            None,
            &json!({"username": "ada", "password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the new password: {body}");
}

#[tokio::test]
async fn open_mode_does_not_grant_rights() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let admin = format!("root:{PASSWORD}");
    let mut server = Server::start_on(&db, &["--no-auth", "--admin", &admin]);
    let api = server.api();
    for (what, body) in [
        (
            "admin",
            json!({"username": "mallory", "password": PASSWORD, "admin": true}),
        ),
        (
            "read",
            json!({"username": "mallory", "password": PASSWORD, "read": ["*"]}),
        ),
        (
            "write",
            json!({"username": "mallory", "password": PASSWORD, "write": ["x"]}),
        ),
    ] {
        let answer = send(api.http.post(format!("{}/users", api.base)).json(&body)).await;
        assert_error(
            &format!("{what} granted in open mode"),
            &answer,
            StatusCode::FORBIDDEN,
        );
    }
    signup(&api, "mallory").await;
    let (status, me) = api.get("/users/me", None).await;
    assert_eq!(
        (status, &me["username"], &me["admin"]),
        (StatusCode::OK, &Value::Null, &json!(true)),
        "{me}"
    );
    // A signed-in admin still may.
    let root = api.login("root").await;
    let (status, body) = api
        .post(
            "/users",
            Some(&root),
            &json!({"username": "admin2", "password": PASSWORD, "admin": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.kill();
    drop(server);

    let server = Server::start_on(&db, &[]);
    let api = server.api();
    for (user, admin) in [("mallory", false), ("admin2", true)] {
        let token = api.login(user).await;
        let (status, me) = api.get("/users/me", Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me["admin"], admin, "{user}: {me}");
    }
}

#[tokio::test]
async fn an_admin_reset_ends_the_admins_older_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let admin = format!("root:{PASSWORD}");
    let mut server = Server::start_on(&db, &["--admin", &admin]);
    let api = server.api();
    let root = api.login("root").await;
    let ada = api.user("ada").await;
    let (status, body) = api.get("/users/me", Some(&root)).await;
    assert_eq!(
        (status, &body["admin"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );
    server.kill();
    drop(server);

    let server = Server::start_on(&db, &["--admin", &admin]);
    let api = server.api();
    let (status, body) = api.get("/users/me", Some(&root)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the admin's token from before the reset: {body}"
    );
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("revoked")),
        "{body}"
    );
    let (status, body) = api.get("/users/me", Some(&ada)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "other users keep their tokens: {body}"
    );
    let root = api.login("root").await;
    let (status, body) = api.get("/users/me", Some(&root)).await;
    assert_eq!(status, StatusCode::OK, "a new login: {body}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_directory_is_made_private_at_every_start() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let check = |when: &str| {
        assert_eq!(mode(&db), 0o700, "{when}: directory");
        let files: Vec<_> = std::fs::read_dir(&db)
            .expect("list")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(files.iter().any(|f| f.ends_with("jwt_secret")), "{files:?}");
        assert!(
            files.iter().any(|f| f.ends_with("broker.redb")),
            "{files:?}"
        );
        for file in &files {
            assert_eq!(mode(file), 0o600, "{when}: {}", file.display());
        }
    };
    let mut server = Server::start_on(&db, &[]);
    check("created");
    server.kill();
    drop(server);
    set(&db, 0o755);
    for entry in std::fs::read_dir(&db).expect("list").flatten() {
        set(&entry.path(), 0o644);
    }
    let _server = Server::start_on(&db, &[]);
    check("restarted");
}

#[tokio::test]
async fn short_secrets_are_warned_about_and_tokens_are_not_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Logged::start(
        &dir.path().join("db"),
        &["--jwt-secret", "secret"],
        "info,tower_http=debug",
    );
    let warning = server.wait_for("--jwt-secret is only 6 bytes");
    assert!(warning.contains("WARN"), "{warning}");

    let api = server.api();
    let token = api.user("ada").await;
    let mut stream = api
        .stream(
            &format!("/events?channels=a&access_token={token}"),
            None,
            None,
        )
        .await;
    stream.until_synced().await;
    let logged = server.wait_for("access_token=REDACTED");
    assert!(
        logged.contains("/events?channels=a&access_token=REDACTED"),
        "{logged}"
    );
    assert!(server.matching(&token).is_empty(), "the token was logged");

    let long = Logged::start(
        &dir.path().join("db2"),
        &["--jwt-secret", &"k".repeat(32)],
        "info",
    );
    assert!(
        long.matching("--jwt-secret is only").is_empty(),
        "a 32-byte secret is fine"
    );
}
