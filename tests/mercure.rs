//! The Mercure hub at `/.well-known/mercure`, tested from the specification (the
//! `spec/mercure.md` of dunglas/mercure) and its older deployed form: matchers, publishing,
//! custom ids, reconnection, private updates, both token forms and keys, RFC 6750 errors, and
//! the mapping onto Broker's records.

mod common;

use common::sse::{SseItem, SseStream};
use common::{Server, TIMEOUT, client};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "mercure-test-secret-of-32-bytes!";
const HUB: &str = "/.well-known/mercure";

/// Unix seconds an hour from now.
fn exp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600
}

/// An HS256 token with `claims` (an `exp` is added) and header `typ`.
fn token_with(key: &EncodingKey, alg: Algorithm, typ: Option<&str>, mut claims: Value) -> String {
    claims["exp"] = json!(exp());
    let mut header = Header::new(alg);
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).expect("encode")
}

fn hs(claims: Value) -> String {
    token_with(
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
        Some("JWT"),
        claims,
    )
}

/// A token in the older form: `mercure: {publish, subscribe}`.
fn legacy(publish: &[&str], subscribe: &[&str]) -> String {
    hs(json!({"mercure": {"publish": publish, "subscribe": subscribe}}))
}

/// An RFC 9068 access token with one Mercure authorization detail.
fn access_token(actions: &[&str], topics: Value) -> String {
    token_with(
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
        Some("at+jwt"),
        json!({
            "sub": "urn:example:subscriber",
            "authorization_details": [{
                "type": "https://mercure.rocks/authorization-detail",
                "actions": actions,
                "topics": topics,
            }]
        }),
    )
}

fn publisher() -> String {
    legacy(&["*"], &[])
}

fn hub(extra: &[&str]) -> Server {
    let mut args = vec!["--mercure-jwt-key", SECRET];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// POSTs a form to the hub with `token`; status, body and headers.
async fn publish(
    server: &Server,
    token: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, String, reqwest::header::HeaderMap) {
    let mut req = client().post(server.url(HUB)).form(form);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("publish");
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, resp.text().await.unwrap_or_default(), headers)
}

/// Publishes and asserts 200; returns the id.
async fn publish_ok(server: &Server, form: &[(&str, &str)]) -> String {
    let (status, body, headers) = publish(server, Some(&publisher()), form).await;
    assert_eq!(status, StatusCode::OK, "publish: {body}");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/plain; charset=utf-8")
    );
    body
}

/// A subscription request with `query`, an optional bearer token and `Last-Event-ID`.
async fn subscribe_request(
    server: &Server,
    query: &str,
    token: Option<&str>,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    SseStream::request(
        &client(),
        &format!("{}{HUB}?{query}", server.base),
        token,
        last_event_id,
    )
    .await
}

async fn subscribe(server: &Server, query: &str, token: Option<&str>) -> SseStream {
    let resp = subscribe_request(server, query, token, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    SseStream::from_response(resp)
}

/// The next event of a Mercure stream (no `$` events ever come on it).
async fn next(stream: &mut SseStream) -> common::sse::SseEvent {
    let event = stream.next_event().await;
    assert!(
        !event.event.starts_with('$'),
        "Broker event on a Mercure stream: {event:?}"
    );
    event
}

fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("query")
}

#[tokio::test]
async fn publish_and_subscribe_with_every_matcher_type() {
    let server = hub(&[]);
    let q = query(&[
        ("match", "https://example.com/foo"),
        ("match_urlpattern", "https://example.com/books/:id"),
        ("topic", "https://example.com/authors/{id}"),
    ]);
    let mut stream = subscribe(&server, &q, Some(&legacy(&[], &["*"]))).await;
    // Not selected by any matcher.
    publish_ok(
        &server,
        &[("topic", "https://example.com/foo/bar"), ("data", "no")],
    )
    .await;
    publish_ok(
        &server,
        &[
            ("topic", "https://example.com/books/1/reviews"),
            ("data", "no"),
        ],
    )
    .await;
    let foo = publish_ok(
        &server,
        &[("topic", "https://example.com/foo"), ("data", "foo")],
    )
    .await;
    assert!(foo.starts_with("urn:uuid:"), "generated id {foo}");
    publish_ok(
        &server,
        &[("topic", "https://example.com/books/7"), ("data", "book")],
    )
    .await;
    publish_ok(
        &server,
        &[
            ("topic", "https://example.com/authors/3"),
            ("data", "line 1\nline 2"),
            ("type", "author"),
            ("retry", "1500"),
        ],
    )
    .await;
    let first = next(&mut stream).await;
    assert_eq!(
        (
            first.id.as_deref(),
            first.event.as_str(),
            first.data.as_str()
        ),
        (Some(foo.as_str()), "message", "foo")
    );
    assert_eq!(next(&mut stream).await.data, "book");
    // The update's `retry:` comes with it (the parser reports it before the event).
    let mut retry = None;
    let author = loop {
        match stream.next_item().await {
            Some(SseItem::Retry(ms)) => retry = Some(ms),
            Some(SseItem::Event(event)) => break event,
            Some(SseItem::Comment(_)) => {}
            None => panic!("stream ended"),
        }
    };
    assert_eq!(
        (author.event.as_str(), author.data.as_str()),
        ("author", "line 1\nline 2")
    );
    assert_eq!(retry, Some(1500));
}

#[tokio::test]
async fn unknown_match_parameters_and_bad_values_are_400() {
    let server = hub(&["--mercure-anonymous"]);
    for q in [
        "",
        "matchx=a",
        "MATCH_regex=a",
        "match_urlpattern=https%3A%2F%2Fexample.com%2F(",
        "topic=https%3A%2F%2Fexample.com%2F%7Bid",
        "match=a%07b",
    ] {
        let resp = subscribe_request(&server, q, None, None).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "query {q}");
        let body: Value = resp.json().await.expect("json");
        assert!(body["error"].is_string());
    }
    let token = publisher();
    for form in [
        vec![("data", "no topic")],
        vec![("topic", "*")],
        vec![("topic", "/.well-known/mercure/subscriptions/x")],
        vec![("topic", "https://hub.example/.well-known/%6Dercure/x")],
        vec![("topic", "a"), ("type", "mercure")],
        vec![("topic", "a"), ("retry", "12a")],
        vec![("topic", "a"), ("id", "#frag")],
        vec![("topic", "a"), ("id", "earliest")],
        vec![("topic", "broker://default/x")],
    ] {
        let (status, body, _) = publish(&server, Some(&token), &form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form:?}: {body}");
    }
}

#[tokio::test]
async fn custom_ids_are_honoured_unique_and_resume() {
    let server = hub(&[]);
    let sub = legacy(&[], &["*"]);
    let id = publish_ok(
        &server,
        &[
            ("topic", "https://example.com/a"),
            ("id", "urn:example:1"),
            ("data", "1"),
        ],
    )
    .await;
    assert_eq!(id, "urn:example:1");
    let (status, _, _) = publish(
        &server,
        Some(&publisher()),
        &[("topic", "https://example.com/a"), ("id", "urn:example:1")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    publish_ok(
        &server,
        &[
            ("topic", "https://example.com/a"),
            ("id", "urn:example:2"),
            ("data", "2"),
        ],
    )
    .await;
    publish_ok(
        &server,
        &[
            ("topic", "https://example.com/a"),
            ("id", "urn:example:3"),
            ("data", "3"),
        ],
    )
    .await;

    // The header, the query (both spellings), and `earliest`.
    let resp = subscribe_request(
        &server,
        "match=https%3A%2F%2Fexample.com%2Fa",
        Some(&sub),
        Some("urn:example:1"),
    )
    .await;
    let headers = resp.headers().clone();
    let mut stream = SseStream::from_response(resp);
    assert_eq!(headers["mercure-last-event-id"], "urn:example:1");
    assert_eq!(headers["last-event-id"], "urn:example:1");
    assert_eq!(next(&mut stream).await.data, "2");
    assert_eq!(next(&mut stream).await.id.as_deref(), Some("urn:example:3"));
    for q in [
        "match=https%3A%2F%2Fexample.com%2Fa&last_event_id=urn%3Aexample%3A2",
        "topic=https%3A%2F%2Fexample.com%2Fa&lastEventID=urn%3Aexample%3A2",
    ] {
        let mut stream = subscribe(&server, q, Some(&sub)).await;
        assert_eq!(next(&mut stream).await.data, "3", "{q}");
    }
    let resp = subscribe_request(
        &server,
        "match=https%3A%2F%2Fexample.com%2Fa&last_event_id=earliest",
        Some(&sub),
        None,
    )
    .await;
    assert_eq!(resp.headers()["mercure-last-event-id"], "earliest");
    let mut stream = SseStream::from_response(resp);
    for expected in ["1", "2", "3"] {
        assert_eq!(next(&mut stream).await.data, expected);
    }
    // An id the hub does not know: everything it holds, and `earliest` in the header.
    let resp = subscribe_request(
        &server,
        "match=https%3A%2F%2Fexample.com%2Fa",
        Some(&sub),
        Some("urn:unknown"),
    )
    .await;
    assert_eq!(resp.headers()["mercure-last-event-id"], "earliest");
    let mut stream = SseStream::from_response(resp);
    assert_eq!(next(&mut stream).await.data, "1");
    // Without a resume point: only what comes next, and the header names the newest id.
    let resp = subscribe_request(
        &server,
        "match=https%3A%2F%2Fexample.com%2Fa",
        Some(&sub),
        None,
    )
    .await;
    assert_eq!(resp.headers()["last-event-id"], "urn:example:3");
    assert!(resp.headers().get("mercure-last-event-id").is_none());
    let mut stream = SseStream::from_response(resp);
    publish_ok(
        &server,
        &[("topic", "https://example.com/a"), ("data", "4")],
    )
    .await;
    assert_eq!(next(&mut stream).await.data, "4");
}

#[tokio::test]
async fn updates_are_durable_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let args = ["--mercure-jwt-key", SECRET];
    let mut server = Server::start_on(&db, &args);
    publish_ok(
        &server,
        &[
            ("topic", "https://example.com/d"),
            ("id", "urn:d:1"),
            ("data", "kept"),
        ],
    )
    .await;
    server.sigterm();
    assert!(server.wait_exit().success());
    let server = Server::start_on(&db, &args);
    let mut stream = subscribe(
        &server,
        "match=https%3A%2F%2Fexample.com%2Fd&last_event_id=earliest",
        Some(&legacy(&[], &["*"])),
    )
    .await;
    let event = next(&mut stream).await;
    assert_eq!(
        (event.id.as_deref(), event.data.as_str()),
        (Some("urn:d:1"), "kept")
    );
    let (status, _, _) = publish(
        &server,
        Some(&publisher()),
        &[("topic", "https://example.com/d"), ("id", "urn:d:1")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

/// Publishes a private update, then a public marker: a subscriber that receives the marker
/// first was not sent the private update (updates are delivered in order).
async fn private_then_marker(server: &Server, topics: &[&str]) -> String {
    let mut form: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", *t)).collect();
    form.push(("private", ""));
    form.push(("data", "secret"));
    publish_ok(server, &form).await;
    publish_ok(
        server,
        &[("topic", "https://example.com/marker"), ("data", "marker")],
    )
    .await
}

#[tokio::test]
async fn private_updates_reach_only_authorized_subscribers() {
    let server = hub(&["--mercure-anonymous"]);
    let q = query(&[
        ("match_urlpattern", "https://example.com/books/:id"),
        ("match", "https://example.com/marker"),
    ]);
    let mut anonymous = subscribe(&server, &q, None).await;
    // Older selectors; routing by every book, authorized for book 1 only.
    let mut book1 = subscribe(
        &server,
        &q,
        Some(&legacy(&[], &["https://example.com/books/1"])),
    )
    .await;
    // Current form, authorized through an alternate topic only.
    let alternate = access_token(
        &["subscribe"],
        json!([{"match": "https://example.com/users/42/*", "match_type": "urlpattern"}]),
    );
    let mut user42 = subscribe(&server, &q, Some(&alternate)).await;

    private_then_marker(&server, &["https://example.com/books/1"]).await;
    private_then_marker(
        &server,
        &[
            "https://example.com/books/2",
            "https://example.com/users/42/books/2",
        ],
    )
    .await;

    assert_eq!(next(&mut anonymous).await.data, "marker");
    assert_eq!(next(&mut anonymous).await.data, "marker");
    assert_eq!(next(&mut book1).await.data, "secret");
    assert_eq!(next(&mut book1).await.data, "marker");
    assert_eq!(next(&mut book1).await.data, "marker");
    assert_eq!(next(&mut user42).await.data, "marker");
    let alt = next(&mut user42).await;
    assert_eq!(alt.data, "secret");
    assert_eq!(next(&mut user42).await.data, "marker");

    // Replay applies the same rule.
    let mut replay = SseStream::from_response(
        subscribe_request(&server, &format!("{q}&last_event_id=earliest"), None, None).await,
    );
    assert_eq!(next(&mut replay).await.data, "marker");
    assert_eq!(next(&mut replay).await.data, "marker");
}

#[tokio::test]
async fn private_updates_never_leak_through_brokers_own_endpoints() {
    let server = hub(&["--admin", "root:correct horse battery"]);
    let api = server.api();
    let reader = api.user("reader").await;
    let admin = api.login("root").await;
    let mut events = api.stream("/events", Some(&reader), None).await;
    let (snapshot, _) = events.until_synced().await;
    assert!(snapshot.is_empty());
    private_then_marker(&server, &["https://example.com/secret"]).await;
    // /events carries public updates (channel $mercure) but never private ones.
    let marker = events.next_event().await;
    assert_eq!(marker.json()["data"], "marker", "{marker:?}");
    let mut replay = api.stream("/events", Some(&reader), Some("0")).await;
    let (replayed, _) = replay.until_synced().await;
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    let mut fresh = api.stream("/events", Some(&reader), None).await;
    let (snapshot, _) = fresh.until_synced().await;
    assert_eq!(snapshot.len(), 1, "{snapshot:?}");
    // History: private updates to admins only.
    let (status, _) = api
        .get("/history/x?channel=%24mercure.private", Some(&reader))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .get("/audit/x?channel=%24mercure.private", Some(&reader))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // /subscribe and /lastEvent cannot name the Mercure channels.
    let resp = client()
        .get(server.url("/subscribe?channels=%24mercure.private"))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (status, _) = api
        .get("/lastEvent?channel=%24mercure.private", Some(&reader))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut admin_stream = SseStream::from_response(
        subscribe_request(
            &server,
            "match=https%3A%2F%2Fexample.com%2Fsecret&last_event_id=earliest",
            Some(&admin),
            None,
        )
        .await,
    );
    assert_eq!(next(&mut admin_stream).await.data, "secret");
}

#[tokio::test]
async fn updates_map_onto_records_in_history_and_audit() {
    let server = hub(&["--admin", "root:correct horse battery"]);
    let api = server.api();
    let admin = api.login("root").await;
    publish_ok(
        &server,
        &[
            ("topic", "https://example.com/h"),
            ("topic", "https://example.com/alt"),
            ("id", "urn:h:1"),
            ("data", "v1"),
            ("type", "t"),
        ],
    )
    .await;
    publish_ok(
        &server,
        &[
            ("topic", "https://example.com/h"),
            ("id", "urn:h:2"),
            ("private", "on"),
            ("data", "p"),
        ],
    )
    .await;
    let (status, page) = api
        .get("/history/urn:h:1?channel=%24mercure", Some(&admin))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let item = &page["items"][0];
    assert_eq!(item["event"], "urn:h:1");
    assert_eq!(item["channel"], "$mercure");
    assert_eq!(
        item["data"],
        json!({"topics": ["https://example.com/h", "https://example.com/alt"], "data": "v1", "type": "t"})
    );
    let (status, audit) = api
        .get("/audit/urn:h:2?channel=%24mercure.private", Some(&admin))
        .await;
    assert_eq!(status, StatusCode::OK);
    let versions: Vec<&Value> = audit.as_object().expect("object").values().collect();
    assert_eq!(versions[0]["private"], true);
}

#[tokio::test]
async fn broker_records_reach_mercure_subscribers_as_broker_topics() {
    let server = hub(&[
        "--admin",
        "root:correct horse battery",
        "--default-read",
        "room-*",
    ]);
    let api = server.api();
    let admin = api.login("root").await;
    let reader = api.user("ada").await;
    let q = query(&[
        ("match_urlpattern", "broker://room-1/:event"),
        ("match", "broker://secret/x"),
    ]);
    // A Broker token, its grants mapped: room-* readable, secret not.
    let mut ada = subscribe(&server, &q, Some(&reader)).await;
    // A Mercure token granting the broker:// topic.
    let mut token = subscribe(&server, &q, Some(&legacy(&[], &["broker://secret/{e}"]))).await;
    api.insert(&admin, "x", json!({"n": 1}), Some("secret"))
        .await;
    let inserted = api
        .insert(&admin, "user", json!({"name": "Ada"}), Some("room-1"))
        .await;
    let event = next(&mut ada).await;
    assert_eq!(event.id.as_deref(), inserted["id"].as_str());
    assert_eq!(event.json(), json!({"name": "Ada"}));
    assert_eq!(next(&mut token).await.json(), json!({"n": 1}));
}

#[tokio::test]
async fn tokens_in_every_place_and_both_forms() {
    let server = hub(&[]);
    let q = "match=https%3A%2F%2Fexample.com%2Ft";
    let sub = legacy(&[], &["https://example.com/t"]);
    // Cookie (older name), and the `authorization` query parameter.
    let resp = client()
        .get(format!("{}{HUB}?{q}", server.base))
        .header("cookie", format!("mercureAuthorization={sub}"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut by_cookie = SseStream::from_response(resp);
    let mut by_query = subscribe(&server, &format!("{q}&authorization={sub}"), None).await;
    // Publishing with an access token of the current form.
    let at = access_token(&["publish"], json!([{"match": "https://example.com/t"}]));
    let (status, id, _) = publish(
        &server,
        Some(&at),
        &[
            ("topic", "https://example.com/t"),
            ("private", ""),
            ("data", "x"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{id}");
    assert_eq!(next(&mut by_cookie).await.id.as_deref(), Some(id.as_str()));
    assert_eq!(next(&mut by_query).await.data, "x");
    // An access token for another topic may not publish this one.
    let other = access_token(
        &["publish"],
        json!([{"match": "https://example.com/other"}]),
    );
    let (status, _, headers) =
        publish(&server, Some(&other), &[("topic", "https://example.com/t")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("error=\"insufficient_scope\"")
    );
    // authorization_details need typ at+jwt.
    let wrong_typ = token_with(
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
        Some("JWT"),
        json!({"authorization_details": [{"type": "https://mercure.rocks/authorization-detail", "actions": ["publish"], "topics": [{"match": "*"}]}]}),
    );
    let (status, _, _) = publish(
        &server,
        Some(&wrong_typ),
        &[("topic", "https://example.com/t")],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A malformed Mercure detail refuses the whole token.
    let broken = access_token(
        &["publish"],
        json!([{"match": "*"}, {"match": "x", "match_type": "regex"}]),
    );
    let (status, _, _) = publish(
        &server,
        Some(&broken),
        &[("topic", "https://example.com/t")],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The `WWW-Authenticate` challenge of a response, checked to name the hub's protected
/// resource metadata (RFC 9728 section 5.1) as `metadata`.
fn challenge(headers: &reqwest::header::HeaderMap, metadata: &str) -> String {
    let challenge = headers["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{metadata}\"")),
        "{challenge}"
    );
    challenge
}

#[tokio::test]
async fn rfc_6750_errors() {
    let server = hub(&[]);
    let metadata = server.url("/.well-known/oauth-protected-resource/.well-known/mercure");
    // No token where one is needed: 401, a challenge without an error code.
    let resp = subscribe_request(&server, "match=a", None, None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(!challenge(resp.headers(), &metadata).contains("error="));
    let (status, _, headers) = publish(&server, None, &[("topic", "a")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!challenge(&headers, &metadata).contains("error="));
    // The metadata the challenge names is served there.
    let resp = client().get(&metadata).send().await.expect("metadata");
    assert_eq!(resp.status(), StatusCode::OK);
    // A bad token: invalid_token.
    let forged = token_with(
        &EncodingKey::from_secret(b"another secret of thirty-two b!!"),
        Algorithm::HS256,
        None,
        json!({"mercure": {"publish": ["*"]}}),
    );
    for resp in [
        subscribe_request(&server, "match=a", Some(&forged), None).await,
        subscribe_request(&server, "match=a", Some("not.a.token"), None).await,
    ] {
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(challenge(resp.headers(), &metadata).contains("error=\"invalid_token\""));
    }
    // A subscriber token cannot publish.
    let (status, _, headers) =
        publish(&server, Some(&legacy(&[], &["*"])), &[("topic", "a")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(challenge(&headers, &metadata).contains("error=\"insufficient_scope\""));
    // An unsupported scheme: invalid_request.
    let resp = client()
        .post(server.url(HUB))
        .header("authorization", "Digest x")
        .form(&[("topic", "a")])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(challenge(resp.headers(), &metadata).contains("error=\"invalid_request\""));
    // Expired tokens are refused.
    let mut expired = json!({"mercure": {"subscribe": ["*"]}});
    expired["exp"] = json!(1000);
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &expired,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode");
    assert_eq!(
        subscribe_request(&server, "match=a", Some(&expired), None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn rs256_and_es256_keys_with_issuer_and_audience() {
    let rsa_public = include_str!("fixtures/mercure-rs256-public.pem");
    let ec_public = include_str!("fixtures/mercure-es256-public.pem");
    let rsa = EncodingKey::from_rsa_pem(include_bytes!("fixtures/mercure-rs256-private.pem"))
        .expect("rsa");
    let ec =
        EncodingKey::from_ec_pem(include_bytes!("fixtures/mercure-es256-private.pem")).expect("ec");
    let server = Server::start(&[
        "--mercure-publisher-jwt-key",
        rsa_public,
        "--mercure-subscriber-jwt-key",
        ec_public,
        "--mercure-issuer",
        "https://app.example",
        "--mercure-audience",
        "https://hub.example/.well-known/mercure",
    ]);
    let claims = |iss: &str, aud: &str, actions: &[&str]| {
        json!({
            "iss": iss, "aud": [aud], "sub": "s", "client_id": "c", "iat": 0, "jti": "j",
            "authorization_details": [{"type": "https://mercure.rocks/authorization-detail", "actions": actions, "topics": [{"match": "*"}]}]
        })
    };
    let good_aud = "https://hub.example/.well-known/mercure";
    let sub = token_with(
        &ec,
        Algorithm::ES256,
        Some("at+jwt"),
        claims("https://app.example", good_aud, &["subscribe"]),
    );
    let mut stream = subscribe(&server, "match=https%3A%2F%2Fexample.com%2Fk", Some(&sub)).await;
    let publish_token = token_with(
        &rsa,
        Algorithm::RS256,
        Some("at+jwt"),
        claims("https://app.example", good_aud, &["publish"]),
    );
    let (status, id, _) = publish(
        &server,
        Some(&publish_token),
        &[
            ("topic", "https://example.com/k"),
            ("private", ""),
            ("data", "signed"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{id}");
    assert_eq!(next(&mut stream).await.data, "signed");
    // Wrong issuer, wrong audience, the subscriber's key for publishing: refused.
    for token in [
        token_with(
            &rsa,
            Algorithm::RS256,
            Some("at+jwt"),
            claims("https://evil.example", good_aud, &["publish"]),
        ),
        token_with(
            &rsa,
            Algorithm::RS256,
            Some("at+jwt"),
            claims("https://app.example", "https://other", &["publish"]),
        ),
        token_with(
            &ec,
            Algorithm::ES256,
            Some("at+jwt"),
            claims("https://app.example", good_aud, &["publish"]),
        ),
    ] {
        let (status, _, _) =
            publish(&server, Some(&token), &[("topic", "https://example.com/k")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn broker_tokens_publish_by_channel_grants_and_subscriptions_keep_alive() {
    let server = hub(&[
        "--admin",
        "root:correct horse battery",
        "--default-write",
        "room-*",
        "--keepalive",
        "1",
    ]);
    let api = server.api();
    let writer = api.user("writer").await;
    let admin = api.login("root").await;
    let (status, _, _) = publish(
        &server,
        Some(&writer),
        &[("topic", "https://example.com/b")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) =
        publish(&server, Some(&admin), &[("topic", "https://example.com/b")]).await;
    assert_eq!(status, StatusCode::OK);
    // Keep-alive comments follow --keepalive.
    let mut stream = subscribe(&server, "match=x", Some(&admin)).await;
    let comment = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(SseItem::Comment(text)) = stream.next_item().await {
                return text;
            }
        }
    })
    .await
    .expect("a keep-alive");
    assert_eq!(comment, "keep-alive");
}

#[tokio::test]
async fn subscriptions_take_the_lean_stream_path() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = hub(&["--mercure-anonymous"]);
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET /.well-known/mercure?match=https%3A%2F%2Fexample.com%2Fl HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut published = false;
    while !String::from_utf8_lossy(&seen).contains("data: lean") {
        let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        // Publish once the head is in: the subscription is registered by then.
        if !published && String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
            let form = [("topic", "https://example.com/l"), ("data", "lean")];
            publish_ok(&server, &form).await;
            published = true;
        }
    }
    let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    let (head, _) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    // Written by the lean stream writer (src/stream_conn.rs), which closes the connection
    // when the stream ends; the general server keeps connections alive instead.
    assert!(head.contains("connection: close"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
}

#[tokio::test]
async fn protected_resource_metadata() {
    let server = hub(&[
        "--mercure-audience",
        "https://hub.example/.well-known/mercure",
    ]);
    let resp = client()
        .get(server.url("/.well-known/oauth-protected-resource/.well-known/mercure"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.expect("json");
    assert_eq!(doc["resource"], "https://hub.example/.well-known/mercure");
    assert_eq!(
        doc["authorization_details_types_supported"],
        json!(["https://mercure.rocks/authorization-detail"])
    );
    assert_eq!(doc["mercure_cookie"], "mercureAuthorization");
    assert_eq!(
        doc.get("mercure_subscriptions"),
        None,
        "active subscriptions are off"
    );
    // A 401 names the metadata of the resource identifier (the audience), RFC 9728 section 3.1.
    let resp = subscribe_request(&server, "match=a", None, None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    challenge(
        resp.headers(),
        "https://hub.example/.well-known/oauth-protected-resource/.well-known/mercure",
    );
}

/// A subscriber to every subscription event of `server`, past the announcement of its own
/// subscription, and its token (which may also read the subscriptions API).
async fn watch_subscriptions(server: &Server) -> (SseStream, String) {
    let token = access_token(
        &["subscribe"],
        json!([{"match": "/.well-known/mercure/subscriptions{/*}?", "match_type": "urlpattern"}]),
    );
    let q = query(&[(
        "match_urlpattern",
        "/.well-known/mercure/subscriptions/:type/:match/:subscriber",
    )]);
    let mut watcher = subscribe(server, &q, Some(&token)).await;
    assert_eq!(watcher.next_event().await.event, "mercure", "its own");
    (watcher, token)
}

#[tokio::test]
async fn active_subscriptions_are_announced_and_listed() {
    let server = hub(&["--mercure-subscriptions"]);
    let (mut watcher, watcher_token) = watch_subscriptions(&server).await;
    let subscriber = subscribe(
        &server,
        "match=https%3A%2F%2Fexample.com%2Fwatched",
        Some(&legacy(&[], &["*"])),
    )
    .await;
    let created = watcher.next_event().await;
    assert_eq!(created.event, "mercure");
    let doc = created.json();
    assert_eq!(doc["type"], "subscription");
    assert_eq!(doc["match_type"], "exact");
    assert_eq!(doc["match"], "https://example.com/watched");
    assert_eq!(doc["active"], true);
    let id = doc["id"].as_str().expect("id").to_owned();
    assert!(
        id.starts_with("/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fexample.com%2Fwatched/urn%3Auuid%3A"),
        "{id}"
    );

    // The API: the collection, one matcher's, and the subscription itself.
    let token = watcher_token.clone();
    let get = |path: String| get_json(&server, token.clone(), path);
    let (status, link, all) = get("/.well-known/mercure/subscriptions".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        link.expect("link")
            .contains("rel=\"mercure\"; last-event-id=")
    );
    assert_eq!(all["type"], "subscriptions");
    assert_eq!(all["subscriptions"].as_array().expect("array").len(), 2);
    let (_, _, one_matcher) =
        get("/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fexample.com%2Fwatched".into())
            .await;
    assert_eq!(one_matcher["subscriptions"][0]["id"], id.as_str());
    let (status, _, single) = get(id.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(single, doc);
    // Without a grant on the path: 403; without a token: 401. Both name the metadata, which
    // says active subscriptions are on.
    let metadata = server.url("/.well-known/oauth-protected-resource/.well-known/mercure");
    let resp = client()
        .get(server.url("/.well-known/mercure/subscriptions"))
        .bearer_auth(legacy(&[], &["https://example.com/watched"]))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    challenge(resp.headers(), &metadata);
    let resp = client()
        .get(server.url("/.well-known/mercure/subscriptions"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    challenge(resp.headers(), &metadata);
    let doc: Value = client()
        .get(&metadata)
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["mercure_subscriptions"], true);

    // The subscription ends: announced inactive, and gone from the API.
    drop(subscriber);
    let ended = watcher.next_event().await.json();
    assert_eq!(
        (ended["id"].as_str(), ended["active"].as_bool()),
        (Some(id.as_str()), Some(false))
    );
    let (status, _, _) = get(id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// `GET path` with a bearer token: status, `Link` header and JSON body.
async fn get_json(
    server: &Server,
    token: String,
    path: String,
) -> (StatusCode, Option<String>, Value) {
    let resp = client()
        .get(server.url(&path))
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    let link = resp
        .headers()
        .get("link")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (
        resp.status(),
        link,
        resp.json::<Value>().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_works_across_cluster_nodes() {
    let cluster = common::nats::NatsCluster::start();
    let urls = cluster.urls();
    let replicas = cluster.len().to_string();
    let nodes: Vec<Server> = (0..2)
        .map(|_| {
            Server::start(&[
                "--nats",
                &urls,
                "--nats-replicas",
                &replicas,
                "--mercure-jwt-key",
                SECRET,
            ])
        })
        .collect();
    let sub = legacy(&[], &["*"]);
    let q = "match=https%3A%2F%2Fexample.com%2Fc";
    let mut on_b = subscribe(&nodes[1], q, Some(&sub)).await;
    let form = [
        ("topic", "https://example.com/c"),
        ("id", "urn:c:1"),
        ("private", ""),
        ("data", "one"),
    ];
    let (status, id, _) = publish(&nodes[0], Some(&publisher()), &form).await;
    assert_eq!((status, id.as_str()), (StatusCode::OK, "urn:c:1"));
    let event = next(&mut on_b).await;
    assert_eq!(
        (event.id.as_deref(), event.data.as_str()),
        (Some("urn:c:1"), "one")
    );
    // The id is taken on every node.
    let (status, _, _) = publish(&nodes[1], Some(&publisher()), &form).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // A custom id resumes on another node.
    publish(
        &nodes[1],
        Some(&publisher()),
        &[("topic", "https://example.com/c"), ("data", "two")],
    )
    .await;
    let resp = subscribe_request(&nodes[0], q, Some(&sub), Some("urn:c:1")).await;
    assert_eq!(resp.headers()["mercure-last-event-id"], "urn:c:1");
    let mut on_a = SseStream::from_response(resp);
    assert_eq!(next(&mut on_a).await.data, "two");
}

/// The subscription event for each of `ids` (the watcher's stream may carry others first).
async fn subscription_events(watcher: &mut SseStream, count: usize) -> Vec<Value> {
    let mut docs = Vec::new();
    while docs.len() < count {
        let event = watcher.next_event().await;
        assert_eq!(event.event, "mercure");
        docs.push(event.json());
    }
    docs
}

#[tokio::test]
async fn subscription_payloads_come_from_both_token_forms() {
    let server = hub(&["--mercure-subscriptions"]);
    let (mut watcher, watcher_token) = watch_subscriptions(&server).await;

    // The current form: the payload of the first subscribe detail whose topics match the
    // subscription's matcher taken as a topic; `*` as the default.
    let detail = |topics: Value, payload: Value| {
        json!({
            "type": "https://mercure.rocks/authorization-detail",
            "actions": ["subscribe"],
            "topics": topics,
            "payload": payload,
        })
    };
    let current = token_with(
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
        Some("at+jwt"),
        json!({"authorization_details": [
            detail(json!([{"match": "https://example.com/foo"}]), json!({"custom1": "foo"})),
            detail(
                json!([{"match": "https://example.com/bar/:id", "match_type": "urlpattern"}]),
                json!({"custom2": "bar"}),
            ),
            detail(json!([{"match": "*"}]), json!({"custom3": "default"})),
        ]}),
    );
    let q = query(&[
        ("match", "https://example.com/foo"),
        ("match_urlpattern", "https://example.com/bar/:id"),
        ("match", "https://example.com/other"),
    ]);
    let _current = subscribe(&server, &q, Some(&current)).await;
    let docs = subscription_events(&mut watcher, 3).await;
    let payloads: Vec<(&str, &Value)> = docs
        .iter()
        .map(|d| (d["match"].as_str().expect("match"), &d["payload"]))
        .collect();
    assert_eq!(
        payloads,
        [
            ("https://example.com/foo", &json!({"custom1": "foo"})),
            ("https://example.com/bar/:id", &json!({"custom2": "bar"})),
            ("https://example.com/other", &json!({"custom3": "default"})),
        ]
    );
    // The API lists them with their payloads.
    let id = docs[1]["id"].as_str().expect("id").to_owned();
    let (status, _, listed) = get_json(&server, watcher_token.clone(), id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["payload"], json!({"custom2": "bar"}));

    // The older form: `mercure.payload`, for every subscription of the token.
    let older = hs(json!({"mercure": {"subscribe": ["*"], "payload": {"user": "b"}}}));
    let _older = subscribe(&server, "match=https%3A%2F%2Fexample.com%2Fx", Some(&older)).await;
    let doc = &subscription_events(&mut watcher, 1).await[0];
    assert_eq!(doc["payload"], json!({"user": "b"}));
    // No payload: no member.
    let plain = subscribe(&server, "match=y", Some(&legacy(&[], &["*"]))).await;
    let doc = &subscription_events(&mut watcher, 1).await[0];
    assert_eq!(doc.get("payload"), None, "{doc}");
    drop(plain);

    // A detail whose payload is not an object makes the token invalid.
    let broken = token_with(
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
        Some("at+jwt"),
        json!({"authorization_details": [detail(json!([{"match": "*"}]), json!("text"))]}),
    );
    let resp = subscribe_request(&server, "match=a", Some(&broken), None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// Polls `server`'s subscriptions API until `check` accepts the listed matchers; fails after
/// `within`.
async fn listed_until(
    server: &Server,
    token: &str,
    within: std::time::Duration,
    check: impl Fn(&[String]) -> bool,
) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (status, _, body) = get_json(
            server,
            token.to_owned(),
            "/.well-known/mercure/subscriptions".into(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut matchers: Vec<String> = body["subscriptions"]
            .as_array()
            .expect("subscriptions")
            .iter()
            .map(|d| d["match"].as_str().expect("match").to_owned())
            .collect();
        matchers.sort();
        if check(&matchers) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriptions never became as expected: {matchers:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriptions_api_lists_every_cluster_nodes_subscriptions() {
    let cluster = common::nats::NatsCluster::start();
    let urls = cluster.urls();
    let replicas = cluster.len().to_string();
    let start = || {
        Server::start(&[
            "--nats",
            &urls,
            "--nats-replicas",
            &replicas,
            "--mercure-jwt-key",
            SECRET,
            "--mercure-subscriptions",
        ])
    };
    let (mut a, b) = (start(), start());
    let api = access_token(
        &["subscribe"],
        json!([{"match": "/.well-known/mercure/subscriptions{/*}?", "match_type": "urlpattern"}]),
    );
    let sub = legacy(&[], &["*"]);
    let _on_b = subscribe(&b, "match=https%3A%2F%2Fexample.com%2Fb", Some(&sub)).await;

    // A subscription on A is listed by B beside B's own, and leaves when its stream ends.
    let on_a = subscribe(&a, "match=https%3A%2F%2Fexample.com%2Fa", Some(&sub)).await;
    let both = |m: &[String]| m == ["https://example.com/a", "https://example.com/b"];
    listed_until(&b, &api, TIMEOUT, both).await;
    listed_until(&a, &api, TIMEOUT, both).await;
    drop(on_a);
    listed_until(&b, &api, TIMEOUT, |m| m == ["https://example.com/b"]).await;

    // A node killed without a word: its subscriptions leave B's list within the presence
    // timeout (8 s of silence, swept every second).
    let _again = subscribe(&a, "match=https%3A%2F%2Fexample.com%2Fa", Some(&sub)).await;
    listed_until(&b, &api, TIMEOUT, both).await;
    a.kill();
    listed_until(&b, &api, std::time::Duration::from_secs(15), |m| {
        m == ["https://example.com/b"]
    })
    .await;
}
