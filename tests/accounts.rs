//! One's own account, black-box: the optional TOTP second factor (enrolment with an
//! `otpauth://` URI, confirmation, login with a code, replay refused, Basic refused, disabling,
//! removal by an admin), with codes computed here from the secret as RFC 6238 describes.

mod common;

use common::{Api, PASSWORD, Server};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The RFC 6238 code (HMAC-SHA-1, 30 s steps, 6 digits) of base32 `secret` at Unix time `time`.
fn code(secret: &str, time: u64) -> String {
    let key = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret)
        .expect("base32 secret");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&key).expect("key");
    mac.update(&(time / 30).to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    format!("{:06}", binary % 1_000_000)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `POST /login` with an optional code.
async fn login(api: &Api, username: &str, code: Option<&str>) -> (StatusCode, Value) {
    let mut body = json!({"username": username, "password": PASSWORD});
    if let Some(code) = code {
        body["code"] = json!(code);
    }
    api.post("/login", None, &body).await
}

/// Enrols the holder of `token` and returns the secret.
async fn enrol(api: &Api, token: &str, username: &str) -> String {
    let (status, body) = api.post("/users/me/totp", Some(token), &json!({})).await;
    assert_eq!(status, StatusCode::OK, "enrol: {body}");
    let secret = body["secret"].as_str().expect("secret").to_owned();
    let uri = body["otpauth_uri"].as_str().expect("uri");
    assert!(
        uri.starts_with(&format!("otpauth://totp/Broker:{username}?")),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    secret
}

#[tokio::test]
async fn totp_second_factor() {
    let spec = format!("root:{PASSWORD}");
    let server = Server::start(&["--admin", &spec]);
    let api = server.api();
    let token = api.user("ada").await;
    let (_, me) = api.get("/users/me", Some(&token)).await;
    assert_eq!(me["totp"], false);

    let secret = enrol(&api, &token, "ada").await;
    // Pending: login needs no code yet.
    login_as_ok(&api, None).await;

    let t = now();
    let (status, body) = totp_step(&api, &token, "confirm", &code(&secret, t - 3600)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a stale code: {body}");
    let (status, body) = totp_step(&api, &token, "confirm", &code(&secret, t)).await;
    assert_eq!(status, StatusCode::OK, "confirm: {body}");
    assert_eq!(body["totp"], true);
    let (_, me) = api.get("/users/me", Some(&token)).await;
    assert_eq!(me["totp"], true);
    let (status, body) = api.post("/users/me/totp", Some(&token), &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "enrol twice: {body}");

    let (status, body) = login(&api, "ada", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "two-factor code required");
    let (status, body) = login(&api, "ada", Some("12345x")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid two-factor code");

    // The next step's code (within the one step of skew); accepted once.
    let next = code(&secret, t + 30);
    let (status, body) = login(&api, "ada", Some(&next)).await;
    assert_eq!(status, StatusCode::OK, "login with a code: {body}");
    assert!(body["jwt"].is_string());
    let (status, body) = login(&api, "ada", Some(&next)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "replayed code: {body}");

    // Basic credentials carry no code.
    let resp = api
        .http
        .get(format!("{}/users/me", api.base))
        .basic_auth("ada", Some(PASSWORD))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Tokens issued before keep working.
    let (status, _) = api.get("/users/me", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);

    // An admin removes the factor of a user who lost their authenticator.
    let root = api.login("root").await;
    let (status, user) = api.get("/users/ada", Some(&root)).await;
    assert_eq!((status, &user["totp"]), (StatusCode::OK, &json!(true)));
    let resp = api
        .http
        .patch(format!("{}/users/ada", api.base))
        .bearer_auth(&root)
        .json(&json!({"totp": false}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(resp.status(), StatusCode::OK);
    login_as_ok(&api, None).await;
}

/// Logs ada in (asserting 200).
/// `POST /users/me/totp/{step}` (`confirm` or `disable`) with `code`.
async fn totp_step(api: &Api, token: &str, step: &str, code: &str) -> (StatusCode, Value) {
    api.post(
        &format!("/users/me/totp/{step}"),
        Some(token),
        &json!({"code": code}),
    )
    .await
}

async fn login_as_ok(api: &Api, code: Option<&str>) {
    let (status, body) = login(api, "ada", code).await;
    assert_eq!(status, StatusCode::OK, "login: {body}");
}

#[tokio::test]
async fn totp_can_be_disabled_with_a_code() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("bob").await;
    let (status, body) = totp_step(&api, &token, "disable", "123456").await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing to disable: {body}");
    let (status, body) = totp_step(&api, &token, "confirm", "123456").await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing to confirm: {body}");

    let secret = enrol(&api, &token, "bob").await;
    let t = now();
    let (status, body) = totp_step(&api, &token, "confirm", &code(&secret, t)).await;
    assert_eq!(status, StatusCode::OK, "confirm: {body}");
    let (status, body) = totp_step(&api, &token, "disable", &code(&secret, t + 30)).await;
    assert_eq!(status, StatusCode::OK, "disable: {body}");
    assert_eq!(body["totp"], false);
    let (status, body) = login(&api, "bob", None).await;
    assert_eq!(status, StatusCode::OK, "login without a code again: {body}");

    // Open mode's anonymous caller has no account to protect.
    let open = Server::start(&["--no-auth"]);
    let (status, body) = open.api().post("/users/me/totp", None, &json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}
