//! Event streams over TLS: HTTP/1.1 streams on the lean path (snapshot, live events, resuming
//! with `Last-Event-ID`), HTTP/2 streams on the general server, other requests handed on with
//! the bytes already read, and a client that never sends its request after the handshake.

mod common;

use std::time::Duration;

use common::tls::TlsServer;
use common::{TIMEOUT, read_until};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

/// Inserts `data` as a `greeting` on the default channel; returns its id.
async fn insert(tls: &TlsServer, data: &str) -> u64 {
    let resp = tls
        .https
        .post(tls.url("/insert"))
        .json(&json!({"event": "greeting", "data": data}))
        .send()
        .await
        .expect("insert");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    body["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("numeric id")
}

/// Sends a stream request on a new raw TLS connection (HTTP/1.1 by ALPN).
async fn open_stream(
    tls: &TlsServer,
    last_event_id: Option<u64>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    open_stream_with(tls, last_event_id, rustls::DEFAULT_VERSIONS).await
}

/// [`open_stream`] with the TLS `versions` offered.
async fn open_stream_with(
    tls: &TlsServer,
    last_event_id: Option<u64>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut io = tls.connect_with(&[b"http/1.1"], versions).await;
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let request = format!(
        "GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n{resume}\r\n"
    );
    io.write_all(request.as_bytes()).await.expect("write");
    io
}

#[tokio::test]
async fn a_tls_stream_takes_the_lean_path_and_resumes_with_last_event_id() {
    let tls = TlsServer::start(&[]);
    let first = insert(&tls, "first").await;

    let mut io = open_stream(&tls, None).await;
    let mut seen = Vec::new();
    let text = read_until(&mut io, &mut seen, "$synced").await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    // Written by the lean stream writer, which closes the connection when the stream ends.
    assert!(head.contains("connection: close"), "{head}");
    assert!(body.contains(&format!("id: {first}\n")), "{body}");
    assert!(body.contains("data: \"first\""), "{body}");

    // A live event arrives on the open stream.
    let second = insert(&tls, "second").await;
    read_until(&mut io, &mut seen, "\"second\"").await;
    drop(io);

    // Resuming after the first event replays the second only, then goes live.
    let mut io = open_stream(&tls, Some(first)).await;
    let mut seen = Vec::new();
    let text = read_until(&mut io, &mut seen, "$synced").await;
    assert!(text.contains(&format!("id: {second}\n")), "{text}");
    assert!(!text.contains("\"first\""), "{text}");
    insert(&tls, "third").await;
    read_until(&mut io, &mut seen, "\"third\"").await;
}

#[tokio::test]
async fn a_tls12_stream_takes_the_lean_path_too() {
    let tls = TlsServer::start(&[]);
    insert(&tls, "first").await;
    let mut io = open_stream_with(&tls, None, &[&rustls::version::TLS12]).await;
    assert_eq!(
        io.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut seen = Vec::new();
    let text = read_until(&mut io, &mut seen, "$synced").await;
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(text.contains("\"first\""), "{text}");
    insert(&tls, "second").await;
    read_until(&mut io, &mut seen, "\"second\"").await;
}

#[tokio::test]
async fn a_tls13_stream_ends_with_close_notify_at_shutdown() {
    let tls = TlsServer::start(&[]);
    let mut io = open_stream(&tls, None).await;
    let mut seen = Vec::new();
    read_until(&mut io, &mut seen, "$synced").await;
    // The server ends its streams at shutdown: the client sees the last chunk, then a clean
    // TLS close (close_notify), which reads as the end of the stream rather than an error.
    tls.server.sigterm();
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 4096];
    loop {
        match timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => panic!("the stream was still open after shutdown began"),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("not a clean TLS close: {e}"),
        }
    }
    assert!(
        String::from_utf8_lossy(&seen).ends_with("0\r\n\r\n"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn other_requests_over_tls_go_to_the_general_server_with_their_bytes() {
    let tls = TlsServer::start(&[]);
    // A request with a body, then another on the same connection (keep-alive): the acceptor
    // read the first head, and the general server gets it back.
    let mut io = tls.connect(&[b"http/1.1"]).await;
    let body = r#"{"event":"greeting","data":"kept"}"#;
    let request = format!(
        "POST /insert HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    io.write_all(request.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let text = read_until(&mut io, &mut seen, "\"id\"").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    io.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let text = read_until(&mut io, &mut seen, "\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");

    // reqwest over HTTP/1.1 only: a JSON request and a stream.
    let http1 = TlsServer::client_for(&tls.cert(), true);
    let resp = http1.get(tls.url("/health")).send().await.expect("health");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
}

#[tokio::test]
async fn http2_streams_over_tls_still_stream() {
    let tls = TlsServer::start(&[]);
    insert(&tls, "before").await;
    // Two streams on the one HTTP/2 connection the client keeps.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let resp = tls
            .https
            .get(tls.url("/events"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("stream");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        streams.push(resp);
    }
    insert(&tls, "live").await;
    for mut resp in streams {
        let mut seen = String::new();
        let deadline = Instant::now() + TIMEOUT;
        while !seen.contains("\"live\"") {
            let chunk = timeout_at(deadline, resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no live event over HTTP/2: {seen:?}"))
                .expect("chunk")
                .expect("the stream is open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(seen.contains("\"before\""), "{seen}");
    }
}

#[tokio::test]
async fn a_tls_client_that_sends_no_request_after_its_handshake_is_closed() {
    let tls = TlsServer::start(&["--header-timeout", "1"]);
    let opened = Instant::now();
    let mut silent = tls.connect(&[b"http/1.1"]).await;
    let mut partial = tls.connect(&[b"http/1.1"]).await;
    partial
        .write_all(b"GET /events HTTP/1.1\r\nHost: loc")
        .await
        .expect("write");
    for (io, what) in [(&mut silent, "silent"), (&mut partial, "partial head")] {
        let deadline = opened + Duration::from_secs(1) + Duration::from_secs(4);
        let mut buf = [0u8; 1024];
        match timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after the header timeout"),
            Ok(Ok(0) | Err(_)) => {}
            Ok(Ok(n)) => panic!("{what}: got {:?}", String::from_utf8_lossy(&buf[..n])),
        }
    }
    // A prompt client is still served.
    let resp = timeout(TIMEOUT, tls.https.get(tls.url("/health")).send())
        .await
        .expect("in time")
        .expect("health");
    assert_eq!(resp.status(), StatusCode::OK);
}
