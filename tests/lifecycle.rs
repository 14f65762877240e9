//! Restarts, crashes, shutdown, TLS with the original command line, flags, CORS, metrics.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Server, TIMEOUT};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Every version of `event` in `channel`, paging through /history.
async fn all_versions(api: &common::Api, token: &str, event: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = api
            .get(
                &format!("/history/{event}?limit=1000&after={after}"),
                Some(token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            out.push((
                item["id"].as_str().unwrap().to_owned(),
                item["data"].clone(),
            ));
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return out,
        }
    }
}

#[tokio::test]
async fn a_restart_keeps_users_records_and_the_id_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let server = Server::start_on(&db, &[]);
    let api = server.api();
    let token = api.user("ada").await;
    for n in 0..10 {
        api.insert(&token, "counter", json!(n), None).await;
        api.insert(&token, "other", json!(n), Some("room")).await;
    }
    let (_, audit_before) = api.get("/audit/counter", Some(&token)).await;
    let mut stream = api.stream("/events", Some(&token), None).await;
    let (snapshot_before, _) = stream.until_synced().await;
    drop(stream);
    server.sigterm();
    let mut server = server;
    assert!(server.wait_exit().success());

    let server = Server::start_on(&db, &[]);
    let api = server.api();
    let token = api.login("ada").await;
    let (_, audit_after) = api.get("/audit/counter", Some(&token)).await;
    assert_eq!(audit_after, audit_before);
    let mut stream = api.stream("/events", Some(&token), None).await;
    let (snapshot_after, _) = stream.until_synced().await;
    assert_eq!(snapshot_after, snapshot_before);
    let next = api.insert(&token, "counter", json!("after"), None).await;
    assert_eq!(next["id"], json!("21"), "ids continue after the last one");

    // And after a SIGKILL too.
    let mut server = server;
    server.kill();
    let server = Server::start_on(&db, &[]);
    let api = server.api();
    let token = api.login("ada").await;
    let versions = all_versions(&api, &token, "counter").await;
    assert_eq!(versions.len(), 11);
    assert_eq!(versions.last().unwrap().1, json!("after"));
}

#[tokio::test]
async fn sigkill_during_concurrent_inserts_loses_no_acknowledged_insert() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut server = Server::start_on(&db, &["--no-auth"]);
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..8 {
        let api = server.api();
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..5000 {
                let body = json!({"event": format!("w{w}"), "data": n});
                let Ok(resp) = api
                    .http
                    .post(format!("{}/insert", api.base))
                    .json(&body)
                    .send()
                    .await
                else {
                    break;
                };
                if resp.status() != StatusCode::OK {
                    break;
                }
                let Ok(answer) = resp.json::<Value>().await else {
                    break;
                };
                acked.push((answer["id"].as_str().unwrap().to_owned(), json!(n)));
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            acked
        }));
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while acknowledged.load(Ordering::SeqCst) < 400 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "inserts did not get going"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill();
    let mut acked_by_writer = Vec::new();
    for writer in writers {
        acked_by_writer.push(writer.await.unwrap());
    }
    let total: usize = acked_by_writer.iter().map(Vec::len).sum();
    assert!(total >= 400);
    assert!(
        total < 8 * 5000,
        "the kill happened while inserts were running"
    );

    let server = Server::start_on(&db, &["--no-auth"]);
    let api = server.api();
    let mut all_ids = Vec::new();
    for (w, acked) in acked_by_writer.iter().enumerate() {
        let stored = all_versions(&api, "", &format!("w{w}")).await;
        let stored_map: HashMap<&String, &Value> =
            stored.iter().map(|(id, data)| (id, data)).collect();
        for (id, data) in acked {
            assert_eq!(
                stored_map.get(id),
                Some(&data),
                "acknowledged insert {id} of w{w} survived the crash"
            );
        }
        // Stored versions are a prefix-closed sequence 0, 1, 2, ... per writer: none in between lost.
        let values: Vec<i64> = stored.iter().map(|(_, d)| d.as_i64().unwrap()).collect();
        assert_eq!(values, (0..values.len() as i64).collect::<Vec<_>>());
        all_ids.extend(stored.into_iter().map(|(id, _)| id));
    }
    let count = all_ids.len();
    all_ids.sort();
    all_ids.dedup();
    assert_eq!(all_ids.len(), count, "no id used twice");
}

#[tokio::test]
async fn sigterm_ends_streams_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut server = Server::start_on(&db, &[]);
    let api = server.api();
    let token = api.user("ada").await;
    let (status, ready) = api.get("/ready", None).await;
    assert_eq!(
        (status, ready),
        (StatusCode::OK, json!({"status": "ready"}))
    );
    let mut streams = Vec::new();
    for path in [
        "/events",
        "/sse",
        "/events?channels=a",
        "/subscribe?channels=a",
    ] {
        let mut stream = api.stream(path, Some(&token), None).await;
        stream.next_event().await;
        streams.push(stream);
    }
    api.insert(&token, "kept", json!("before the signal"), Some("a"))
        .await;
    server.sigterm();
    for stream in &mut streams {
        stream.until_end().await;
    }
    assert!(server.wait_exit().success(), "exit code 0");
    let server = Server::start_on(&db, &[]);
    let token = server.api().login("ada").await;
    let (_, audit) = server
        .api()
        .get("/audit/kept?channel=a", Some(&token))
        .await;
    assert_eq!(
        audit.as_object().unwrap().values().next(),
        Some(&json!("before the signal"))
    );
}

#[tokio::test]
async fn the_original_seed_command_line_serves_tls_with_http2() {
    let dir = tempfile::tempdir().unwrap();
    // The seed's file names.
    common::tls::self_signed(dir.path(), "broker.rsa", "broker.pem");
    let port = common::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
    // Exactly the original Broker's documented flags; only the port is a free one.
    cmd.current_dir(dir.path()).args([
        "--db=tmp",
        &format!("--port={port}"),
        "--secure=true",
        "--origin=*",
        "--jwt_expiry=86400",
        "--jwt_secret=secret",
        "--key_path=broker.rsa",
        "--cert_path=broker.pem",
        "--host=127.0.0.1",
    ]);
    let server = Server::spawn(cmd, dir.path().join("tmp"), "https");
    assert!(
        dir.path().join("tmp").join("broker.redb").exists(),
        "database in ./tmp"
    );

    common::install_crypto_provider();
    let cert =
        reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("broker.pem")).unwrap())
            .unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(cert)
        .build()
        .unwrap();
    let api = common::Api {
        http: http.clone(),
        base: format!("https://localhost:{port}"),
    };
    let token = api.user("ada").await;
    api.insert(&token, "user", json!({"name": "Ada"}), None)
        .await;
    let mut stream = api.stream("/events", Some(&token), None).await;
    let (snapshot, _) = stream.until_synced().await;
    assert_eq!(snapshot[0].json(), json!({"name": "Ada"}));
    let resp = http
        .get(format!("https://localhost:{port}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN h2");
    // The JWT secret given on the command line is the one in use.
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(b"secret"),
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    );
    assert!(claims.is_ok());
    let plain = common::client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await;
    assert!(
        plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true),
        "plain HTTP is not served"
    );
    drop(server);
}

fn run_broker(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
    for (key, _) in std::env::vars() {
        if key == "PORT" || key.starts_with("BROKER_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run broker")
}

#[test]
fn bad_flags_are_named_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let db = db.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--port", "notanumber"], "--port"),
        (&["--jwt-expiry", "0"], "--jwt-expiry"),
        (&["--max-body", "lots"], "--max-body"),
        (&["--signup", "everyone"], "--signup"),
        (&["--db", db, "--secure"], "--tls-cert"),
        (
            &[
                "--db",
                db,
                "--tls-cert",
                "missing.pem",
                "--tls-key",
                "missing.key",
            ],
            "--tls-cert",
        ),
    ];
    for (args, named) in cases {
        let out = run_broker(args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            stderr.contains(named),
            "{args:?}: stderr names {named}: {stderr}"
        );
    }
    let out = run_broker(&[], &[("PORT", "eighty")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"));
}

#[test]
fn environment_variables_configure_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-env");
    let port = common::free_port().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
    cmd.env("PORT", &port)
        .env("BROKER_DB", &db)
        .env("BROKER_HOST", "127.0.0.1")
        .env("BROKER_NO_AUTH", "true");
    // Server::spawn clears inherited PORT/BROKER_* only; these are set on the command itself.
    let server = Server::spawn(cmd, db.clone(), "http");
    assert_eq!(server.addr.port().to_string(), port);
    assert!(db.join("broker.redb").exists());
}

#[tokio::test]
async fn a_second_server_on_the_same_database_is_refused() {
    let server = Server::start(&[]);
    let out = run_broker(&["--port", "0", "--db", server.db.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        server.api().get("/health", None).await.0,
        StatusCode::OK,
        "the first one is unharmed"
    );
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    for _ in 0..3 {
        api.insert(&token, "e", json!(1), None).await;
    }
    let mut stream = api.stream("/events", Some(&token), None).await;
    stream.until_synced().await;
    let (status, health) = api.get("/health", None).await;
    assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(
        api.http
            .head(server.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let text = api
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metric = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(metric("broker_inserts_total") >= 3.0);
    assert!(metric("broker_subscribers") >= 1.0);
    assert!(metric("broker_deliveries_total") >= 1.0);
    assert!(metric("broker_store_commit_seconds_count") >= 3.0);
    assert!(text.contains("broker_store_commit_seconds_bucket"));
    let (status, doc) = api.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/insert"]["post"].is_object());
}

#[tokio::test]
async fn cors_follows_origin() {
    let any = Server::start(&[]);
    let preflight = |server: &Server, origin: &str| {
        server
            .api()
            .http
            .request(reqwest::Method::OPTIONS, server.url("/insert"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,last-event-id",
            )
            .send()
    };
    let resp = preflight(&any, "https://app.example").await.unwrap();
    assert!(resp.status().is_success());
    let headers = resp.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for h in ["authorization", "content-type", "last-event-id"] {
        assert!(allowed.contains(h), "{allowed}");
    }
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );

    let one = Server::start(&["--origin", "https://app.example"]);
    let resp = preflight(&one, "https://app.example").await.unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
    let other = preflight(&one, "https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let simple = one
        .api()
        .http
        .get(one.url("/health"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        simple.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}
