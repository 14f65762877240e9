//! Bad input, black-box: every malformed or invalid request gets the right 4xx status with a
//! JSON `{"error": "..."}` body, stores nothing, and leaves the server healthy.

mod common;

use common::{Api, Server};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A status and the raw body of an answer.
struct Answer {
    status: StatusCode,
    content_type: String,
    text: String,
}

impl Answer {
    async fn from(resp: reqwest::Response) -> Self {
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp.text().await.expect("body");
        Self {
            status,
            content_type,
            text,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("answer {} is not JSON ({e}): {:?}", self.status, self.text))
    }

    /// Asserts `expected` and a JSON body `{"error": "<non-empty string>"}`.
    fn assert_error(&self, expected: StatusCode, what: &str) {
        assert_eq!(self.status, expected, "{what}: {}", self.text);
        assert!(
            self.content_type.starts_with("application/json"),
            "{what}: content-type {:?}",
            self.content_type
        );
        let body = self.json();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.trim().is_empty()),
            "{what}: expected {{\"error\": \"...\"}}, got {body}"
        );
    }
}

/// `POST path` with a raw body, an optional content type and a bearer token.
async fn post_raw(
    api: &Api,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut req = api.http.post(format!("{}{path}", api.base)).body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(content_type) = content_type {
        req = req.header("content-type", content_type);
    }
    Answer::from(req.send().await.expect("POST")).await
}

/// `POST /insert` of a raw JSON body.
async fn insert_raw(api: &Api, token: &str, body: impl Into<reqwest::Body>) -> Answer {
    post_raw(api, "/insert", Some(token), Some("application/json"), body).await
}

/// `GET path` with a bearer token.
async fn get_raw(api: &Api, path: &str, token: &str) -> Answer {
    let resp = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    Answer::from(resp).await
}

/// A server with one signed-up user; the server and that user's token.
async fn server_with_user(args: &[&str]) -> (Server, Api, String) {
    let server = Server::start(args);
    let api = server.api();
    let token = api.user("ada").await;
    (server, api, token)
}

/// The server answers `/health`, and the stream snapshot holds exactly `expected`
/// `(channel, event, data)` records: nothing refused was stored.
async fn assert_healthy_and_stored(api: &Api, token: &str, expected: &[(&str, &str, &str)]) {
    let (status, body) = api.get("/health", None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "ok"})),
        "server healthy"
    );
    let mut stream = api.stream("/events?envelope=true", Some(token), None).await;
    let (snapshot, _) = stream.until_synced().await;
    let mut stored: Vec<(String, String, String)> = snapshot
        .iter()
        .map(|e| {
            let envelope = e.json();
            (
                envelope["channel"].as_str().expect("channel").to_owned(),
                envelope["event"].as_str().expect("event").to_owned(),
                envelope["data"].to_string(),
            )
        })
        .collect();
    stored.sort();
    let mut expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(c, e, d)| ((*c).to_owned(), (*e).to_owned(), (*d).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(stored, expected, "stored records");
}

#[tokio::test]
async fn malformed_and_invalid_insert_bodies_get_400() {
    let (_server, api, token) = server_with_user(&[]).await;
    let deep = format!(
        r#"{{"event":"bad","data":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated object", br#"{"event":"bad","data":1"#.to_vec()),
        ("lone brace", b"{".to_vec()),
        ("not JSON at all", b"event=bad&data=1".to_vec()),
        ("trailing comma", br#"{"event":"bad","data":1,}"#.to_vec()),
        ("single quotes", br#"{'event':'bad','data':1}"#.to_vec()),
        (
            "trailing garbage",
            br#"{"event":"bad","data":1} x"#.to_vec(),
        ),
        (
            "two objects",
            br#"{"event":"bad","data":1}{"event":"bad","data":2}"#.to_vec(),
        ),
        (
            "invalid UTF-8",
            b"{\"event\":\"bad\xff\",\"data\":1}".to_vec(),
        ),
        (
            "lone surrogate",
            br#"{"event":"bad\ud800","data":1}"#.to_vec(),
        ),
        ("nesting 100000 deep", deep.into_bytes()),
        ("array", b"[1]".to_vec()),
        (
            "array of an insert",
            br#"[{"event":"bad","data":1}]"#.to_vec(),
        ),
        ("string", br#""x""#.to_vec()),
        ("number", b"42".to_vec()),
        ("null", b"null".to_vec()),
        ("true", b"true".to_vec()),
        ("empty object", b"{}".to_vec()),
        ("whitespace only", b"  \n ".to_vec()),
        ("missing event", br#"{"data":1}"#.to_vec()),
        ("missing data", br#"{"event":"bad"}"#.to_vec()),
        (
            "missing data, with channel",
            br#"{"event":"bad","channel":"c"}"#.to_vec(),
        ),
        ("event a number", br#"{"event":1,"data":1}"#.to_vec()),
        (
            "event an object",
            br#"{"event":{"name":"bad"},"data":1}"#.to_vec(),
        ),
        ("event an array", br#"{"event":["bad"],"data":1}"#.to_vec()),
        ("event null", br#"{"event":null,"data":1}"#.to_vec()),
        ("event a boolean", br#"{"event":true,"data":1}"#.to_vec()),
    ];
    for (what, body) in cases {
        insert_raw(&api, &token, body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, what);
    }
    // The same body without any fault is accepted (the faults above were the only reason).
    let ok = insert_raw(&api, &token, r#"{"event":"good","data":1}"#).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);

    get_raw(&api, "/audit/bad", &token)
        .await
        .assert_error(StatusCode::NOT_FOUND, "audit of a never-stored event");
    assert_healthy_and_stored(&api, &token, &[("default", "good", "1")]).await;
}

#[tokio::test]
async fn data_of_every_json_type_is_stored_and_streamed_compactly() {
    let (_server, api, token) = server_with_user(&[]).await;
    let mut stream = api.stream("/events", Some(&token), None).await;
    stream.until_synced().await;
    // (data as sent, with whitespace; data as it must come back on the stream).
    let cases = [
        ("null", "null"),
        ("true", "true"),
        ("false", "false"),
        ("0", "0"),
        ("-17", "-17"),
        ("3.25", "3.25"),
        ("1.5e-7", "1.5e-7"),
        ("18446744073709551615", "18446744073709551615"),
        ("-9223372036854775808", "-9223372036854775808"),
        (r#""""#, r#""""#),
        (r#""plain""#, r#""plain""#),
        (
            r#""line1\nline2\r\nid: 9\n\nevent: forged""#,
            r#""line1\nline2\r\nid: 9\n\nevent: forged""#,
        ),
        (
            r#""quote \" and \\ and é ✓ \u00e9""#,
            r#""quote \" and \\ and é ✓ é""#,
        ),
        ("[ ]", "[]"),
        ("[ 1, \"a\" ,\n null, [ ], { } ]", r#"[1,"a",null,[],{}]"#),
        ("{ }", "{}"),
        (
            "{ \"z\" : 1,\n  \"a\" : { \"b\" : [ 1 , 2 ] },\t\"m\": \"x y\" }",
            r#"{"z":1,"a":{"b":[1,2]},"m":"x y"}"#,
        ),
    ];
    for (i, (sent, _)) in cases.iter().enumerate() {
        let body = format!("{{ \"event\" : \"t{i}\" ,\n \"data\" : {sent} }}");
        let answer = insert_raw(&api, &token, body).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "data {sent}: {}",
            answer.text
        );
        assert_eq!(answer.json()["event"], format!("t{i}"));
    }
    for (i, (sent, expected)) in cases.iter().enumerate() {
        let event = stream.next_event().await;
        assert_eq!(event.event, format!("t{i}"), "data {sent}");
        assert_eq!(event.data, *expected, "data {sent} echoed exactly");
    }
    // The same values in the history, and the audit log.
    for (i, (sent, expected)) in cases.iter().enumerate() {
        let (status, page) = api.get(&format!("/history/t{i}"), Some(&token)).await;
        assert_eq!(status, StatusCode::OK);
        let expected: Value = serde_json::from_str(expected).expect("expected JSON");
        assert_eq!(page["items"][0]["data"], expected, "history of {sent}");
        let (status, audit) = api.get(&format!("/audit/t{i}"), Some(&token)).await;
        assert_eq!(status, StatusCode::OK);
        let values: Vec<&Value> = audit.as_object().expect("audit object").values().collect();
        assert_eq!(values, vec![&expected], "audit of {sent}");
    }
}

#[tokio::test]
async fn event_names_are_checked() {
    let (_server, api, token) = server_with_user(&[]).await;
    let long_257 = "x".repeat(257);
    let multibyte_258 = "é".repeat(129);
    for (what, name) in [
        ("empty name", ""),
        ("257 bytes", long_257.as_str()),
        ("258 bytes in 129 characters", multibyte_258.as_str()),
        ("newline", "a\nb"),
        ("carriage return", "a\rb"),
        ("NUL", "a\u{0}b"),
        ("tab", "a\tb"),
        ("escape", "\u{1b}[31mred"),
        ("DEL", "a\u{7f}"),
        ("C1 control (NEL)", "a\u{85}b"),
        ("$synced", "$synced"),
        ("$error", "$error"),
        ("$anything", "$anything"),
        ("lone $", "$"),
    ] {
        insert_raw(
            &api,
            &token,
            json!({"event": name, "data": "bad"}).to_string(),
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, what);
    }
    let long_256 = "x".repeat(256);
    let multibyte_256 = "é".repeat(128);
    let mut accepted = Vec::new();
    for name in [
        long_256.as_str(),
        multibyte_256.as_str(),
        "a",
        "price$",
        "naïve name ✓ with spaces",
        "🦀",
    ] {
        let answer = insert_raw(&api, &token, json!({"event": name, "data": 1}).to_string()).await;
        assert_eq!(answer.status, StatusCode::OK, "{name:?}: {}", answer.text);
        assert_eq!(answer.json()["event"], name);
        accepted.push(("default", name, "1"));
    }
    assert_healthy_and_stored(&api, &token, &accepted).await;
}

#[tokio::test]
async fn channels_are_checked() {
    let (_server, api, token) = server_with_user(&[]).await;
    let long_129 = "c".repeat(129);
    for (what, channel) in [
        ("empty", json!("")),
        ("a space", json!(" ")),
        ("inner space", json!("a b")),
        ("non-ASCII", json!("é")),
        ("comma", json!("a,b")),
        ("newline", json!("a\nb")),
        ("wildcard", json!("room*")),
        ("129 characters", json!(long_129)),
        ("number", json!(1)),
        ("array", json!(["room"])),
        ("object", json!({"name": "room"})),
        ("boolean", json!(true)),
    ] {
        insert_raw(
            &api,
            &token,
            json!({"event": "bad", "data": 1, "channel": channel}).to_string(),
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, &format!("channel {what}"));
    }
    let exotic = "a_b.c:d/e@f-g";
    let long_128 = "c".repeat(128);
    for channel in [exotic, long_128.as_str()] {
        let answer = insert_raw(
            &api,
            &token,
            json!({"event": "good", "data": 1, "channel": channel}).to_string(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{channel}: {}", answer.text);
        assert_eq!(answer.json()["channel"], channel);
    }
    // The exotic channel can be read back by name.
    let resp = api
        .http
        .get(format!("{}/history/good", api.base))
        .query(&[("channel", exotic)])
        .bearer_auth(&token)
        .send()
        .await
        .expect("history");
    let page = Answer::from(resp).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(page.json()["items"][0]["channel"], exotic);
    assert_healthy_and_stored(
        &api,
        &token,
        &[(exotic, "good", "1"), (&long_128, "good", "1")],
    )
    .await;
}

#[tokio::test]
async fn bodies_over_max_body_get_413() {
    let limit = 1024;
    let (_server, api, token) = server_with_user(&["--max-body", "1024"]).await;
    // A valid insert body of exactly `len` bytes.
    let body_of = |len: usize| {
        let empty = json!({"event": "big", "data": ""}).to_string();
        let body = json!({"event": "big", "data": "x".repeat(len - empty.len())}).to_string();
        assert_eq!(body.len(), len);
        body
    };
    let chunked = |body: String| {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
            .into_bytes()
            .chunks(100)
            .map(|c| Ok(c.to_vec()))
            .collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
    };

    insert_raw(&api, &token, body_of(2000))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "2000 bytes");
    insert_raw(&api, &token, body_of(limit + 1))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "one byte over");
    insert_raw(&api, &token, chunked(body_of(2000)))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "2000 bytes chunked");
    insert_raw(&api, &token, chunked(body_of(limit + 1)))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "one byte over, chunked");
    // Too large is too large even when the JSON is broken.
    insert_raw(&api, &token, "{".repeat(2000))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "2000 bytes of garbage");
    // Signup and login have the same limit.
    let big_signup = json!({"username": "bob", "password": "p".repeat(2000)}).to_string();
    post_raw(
        &api,
        "/users",
        None,
        Some("application/json"),
        big_signup.clone(),
    )
    .await
    .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "signup over the limit");
    post_raw(&api, "/login", None, Some("application/json"), big_signup)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "login over the limit");

    // Under and at the limit: accepted, with or without Content-Length.
    let mut stored = Vec::new();
    for (what, body) in [
        ("just under", body_of(limit - 1)),
        ("exactly at", body_of(limit)),
    ] {
        let data = json!(serde_json::from_str::<Value>(&body).expect("json")["data"]).to_string();
        let answer = insert_raw(&api, &token, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{what} the limit: {}",
            answer.text
        );
        let answer = insert_raw(&api, &token, chunked(body)).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{what} the limit, chunked: {}",
            answer.text
        );
        stored.push(data);
    }
    // Only the latest version is in the snapshot; the history has all four accepted inserts.
    let last = stored.last().expect("stored").clone();
    assert_healthy_and_stored(&api, &token, &[("default", "big", &last)]).await;
    let (status, page) = api.get("/history/big", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let lengths: Vec<usize> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["data"].as_str().expect("string").len())
        .collect();
    let under = stored[0].len() - 2;
    assert_eq!(lengths, vec![under, under, under + 1, under + 1]);
}

#[tokio::test]
async fn content_types_and_empty_bodies() {
    let (_server, api, token) = server_with_user(&[]).await;
    let body = r#"{"event":"ct","data":1}"#;
    for content_type in [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "text/json-ish",
    ] {
        post_raw(&api, "/insert", Some(&token), Some(content_type), body)
            .await
            .assert_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("Content-Type {content_type}"),
            );
    }
    let mut accepted = 0;
    for content_type in [
        None,
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("Application/JSON"),
    ] {
        let answer = post_raw(&api, "/insert", Some(&token), content_type, body).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "Content-Type {content_type:?}: {}",
            answer.text
        );
        accepted += 1;
    }
    for content_type in [None, Some("application/json")] {
        post_raw(&api, "/insert", Some(&token), content_type, "")
            .await
            .assert_error(
                StatusCode::BAD_REQUEST,
                &format!("empty body, Content-Type {content_type:?}"),
            );
    }
    // Signup and login refuse the same way.
    post_raw(
        &api,
        "/users",
        None,
        Some("text/plain"),
        r#"{"username":"bob","password":"12345678"}"#,
    )
    .await
    .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "signup as text/plain");
    post_raw(&api, "/login", None, Some("application/json"), "")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "empty login");

    let (status, page) = api.get("/history/ct", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(accepted),
        "{page}"
    );
    assert_healthy_and_stored(&api, &token, &[("default", "ct", "1")]).await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json() {
    let (_server, api, token) = server_with_user(&[]).await;
    for path in [
        "/nope",
        "/insert/extra",
        "/events/x",
        "/users/ada/x",
        "/audit",
    ] {
        get_raw(&api, path, &token)
            .await
            .assert_error(StatusCode::NOT_FOUND, &format!("GET {path}"));
    }
    post_raw(&api, "/nope", Some(&token), Some("application/json"), "{}")
        .await
        .assert_error(StatusCode::NOT_FOUND, "POST /nope");
    for (method, path, allowed) in [
        (reqwest::Method::GET, "/insert", "POST"),
        (reqwest::Method::PUT, "/insert", "POST"),
        (reqwest::Method::DELETE, "/events", "GET"),
        (reqwest::Method::POST, "/events", "GET"),
        (reqwest::Method::GET, "/login", "POST"),
        (reqwest::Method::PUT, "/users", "POST"),
        (reqwest::Method::POST, "/health", "GET"),
        (reqwest::Method::PATCH, "/history/e", "GET"),
    ] {
        let resp = api
            .http
            .request(method.clone(), format!("{}{path}", api.base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        // HTTP: a 405 lists the methods the route has.
        let allow = resp
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Answer::from(resp)
            .await
            .assert_error(StatusCode::METHOD_NOT_ALLOWED, &format!("{method} {path}"));
        assert!(
            allow.split(',').any(|m| m.trim() == allowed),
            "{method} {path}: Allow {allow:?} should list {allowed}"
        );
    }
    assert_healthy_and_stored(&api, &token, &[]).await;
}

#[tokio::test]
async fn bad_query_parameters_get_400() {
    let (_server, api, token) = server_with_user(&[]).await;
    let first = api.insert(&token, "e", json!(1), None).await;
    api.insert(&token, "e", json!(2), None).await;

    for query in [
        "channels=bad%20channel",
        "channels=%C3%A9",
        "channels=a,b%20c",
        "channels=,",
        "channels=room*",
        &format!("channels={}", "c".repeat(129)),
        "envelope=maybe",
    ] {
        let resp = api
            .http
            .get(format!("{}/events?{query}", api.base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET /events");
        Answer::from(resp)
            .await
            .assert_error(StatusCode::BAD_REQUEST, &format!("/events?{query}"));
        get_raw(&api, &format!("/sse?{query}"), &token)
            .await
            .assert_error(StatusCode::BAD_REQUEST, &format!("/sse?{query}"));
    }
    for query in [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "after=abc",
        "after=-1",
        "after=1e3",
        "channel=bad%20channel",
        "channel=",
    ] {
        get_raw(&api, &format!("/history/e?{query}"), &token)
            .await
            .assert_error(StatusCode::BAD_REQUEST, &format!("/history/e?{query}"));
    }
    get_raw(&api, "/audit/e?channel=bad%20channel", &token)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "/audit with a bad channel");
    get_raw(&api, "/audit/never", &token)
        .await
        .assert_error(StatusCode::NOT_FOUND, "/audit of an unknown event");
    get_raw(&api, "/audit/e?channel=elsewhere", &token)
        .await
        .assert_error(
            StatusCode::NOT_FOUND,
            "/audit of an event of another channel",
        );

    // The bounds themselves are fine.
    for (query, count) in [("limit=1", 1), ("limit=1000", 2), ("after=0", 2)] {
        let (status, page) = api.get(&format!("/history/e?{query}"), Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        assert_eq!(
            page["items"].as_array().map(Vec::len),
            Some(count),
            "{query}"
        );
    }
    let (_, page) = api
        .get(
            &format!("/history/e?after={}", first["id"].as_str().expect("id")),
            Some(&token),
        )
        .await;
    assert_eq!(page["items"][0]["data"], json!(2));
    assert_healthy_and_stored(&api, &token, &[("default", "e", "2")]).await;
}

#[tokio::test]
async fn random_bodies_get_4xx_json_and_do_not_break_the_server() {
    let (_server, api, token) = server_with_user(&[]).await;
    let mut rng = StdRng::seed_from_u64(0x5eed_b0d1e5);
    // Mostly bytes from JSON's own alphabet, to get past the first character of the parser.
    let alphabet: &[u8] = b"{}[]\":,.-+0123456789eEtrufalsnl \n\\eventdatachannel$";
    for i in 0..200 {
        let len = rng.random_range(0..300);
        let body: Vec<u8> = match i % 3 {
            0 => (0..len).map(|_| rng.random::<u8>()).collect(),
            1 => (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect(),
            _ => {
                // A valid insert with a random cut and a random byte spliced in.
                let mut valid =
                    br#"{"event":"fuzz","data":{"a":[1,2,{"b":null}]},"channel":"c"}"#.to_vec();
                let cut = rng.random_range(0..valid.len());
                valid.truncate(cut);
                // Never `}`: closing the object at a cut before `,"channel"` would make it valid.
                let byte = rng.random::<u8>();
                valid.push(if byte == b'}' { b'!' } else { byte });
                valid
            }
        };
        let answer = insert_raw(&api, &token, body.clone()).await;
        assert!(
            answer.status.is_client_error(),
            "body #{i} {:?}: {} {}",
            String::from_utf8_lossy(&body),
            answer.status,
            answer.text
        );
        answer.assert_error(answer.status, &format!("body #{i}"));
    }
    assert_healthy_and_stored(&api, &token, &[]).await;
    // And still works.
    api.insert(&token, "after", json!("fuzz"), None).await;
    assert_healthy_and_stored(&api, &token, &[("default", "after", "\"fuzz\"")]).await;
}

/// The contract's "every error is `{"error": "..."}`" holds for query strings and path
/// segments the router itself cannot decode, not only for the bodies Broker parses.
#[tokio::test]
async fn undecodable_queries_and_paths_get_json_errors() {
    let (_server, api, token) = server_with_user(&[]).await;
    api.insert(&token, "e", json!(1), None).await;
    for path in [
        "/history/e?limit=1&limit=2",
        "/history/e?channel=default&channel=default",
        "/audit/e?channel=default&channel=other",
        "/events?channels=default&channels=other",
        "/sse?envelope=true&envelope=false",
        "/audit/%FF",
        "/history/%FF%FE",
    ] {
        get_raw(&api, path, &token)
            .await
            .assert_error(StatusCode::BAD_REQUEST, path);
    }
    assert_healthy_and_stored(&api, &token, &[("default", "e", "1")]).await;
}
