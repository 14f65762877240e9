//! Event streams over raw TCP: the lean stream connections (HTTP/1.1 chunked, HTTP/1.0,
//! errors) and the requests that must go on to the general HTTP server (pipelined,
//! keep-alive after another request), byte for byte as a client sees them.

mod common;

use std::time::Duration;

use common::{Server, TIMEOUT, read_until};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Decodes a chunked body (everything after the head); panics on bad framing.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size, 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        assert_eq!(&rest[size..size + 2], "\r\n", "chunk ends with CRLF");
        body = &rest[size + 2..];
    }
}

async fn server_with_event() -> (Server, String) {
    let server = Server::start(&[]);
    let api = server.api();
    let token = api.user("ada").await;
    api.insert(&token, "greeting", json!({"hello": "world"}), None)
        .await;
    (server, token)
}

#[tokio::test]
async fn http11_stream_is_chunked_and_live() {
    let (server, token) = server_with_event().await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!(
        "GET /events?access_token={token} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let text = read_until(&mut tcp, &mut seen, "$synced").await;
    let (head, _) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    // Written by the lean stream writer, which closes the connection when the stream ends.
    assert!(head.contains("connection: close"), "{head}");

    // A live insert arrives as one more chunk.
    server
        .api()
        .insert(&token, "greeting", json!("again"), None)
        .await;
    let text = read_until(&mut tcp, &mut seen, "\"again\"").await;
    let (_, body) = text.split_once("\r\n\r\n").expect("a head");
    // Cut after the last complete chunk and decode.
    let complete = &body[..body.rfind("\r\n").expect("a chunk") + 2];
    let events = dechunk(&format!("{complete}0\r\n\r\n"));
    assert!(events.starts_with("retry: "), "{events}");
    assert!(
        events.contains("event: greeting\ndata: {\"hello\":\"world\"}\n"),
        "{events}"
    );
    assert!(events.contains("event: $synced\n"), "{events}");
    assert!(
        events.contains("event: greeting\ndata: \"again\"\n"),
        "{events}"
    );
}

#[tokio::test]
async fn http10_stream_is_raw_and_errors_have_a_length() {
    let (server, token) = server_with_event().await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!("GET /sse HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let text = read_until(&mut tcp, &mut seen, "$synced").await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(body.starts_with("retry: "), "unframed body: {body:?}");

    // Refused on the stream path: a JSON error with its length, then the connection closes.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n")
        .await
        .expect("write");
    let mut all = String::new();
    timeout(TIMEOUT, tcp.read_to_string(&mut all))
        .await
        .expect("closed after the error")
        .expect("read");
    let (head, body) = all.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    let length = format!("content-length: {}", body.len());
    assert!(head.to_ascii_lowercase().contains(&length), "{head}");
    let error: serde_json::Value = serde_json::from_str(body).expect("JSON error");
    assert!(error["error"].is_string(), "{error}");
}

#[tokio::test]
async fn unusual_requests_are_served_by_the_general_server() {
    let (server, token) = server_with_event().await;

    // Keep-alive: a plain request first, then a stream on the same connection.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    read_until(&mut tcp, &mut seen, "\"ok\"").await;
    seen.clear();
    let request =
        format!("GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let text = read_until(&mut tcp, &mut seen, "$synced").await;
    assert!(text.contains("{\"hello\":\"world\"}"), "{text}");

    // A head that arrives in two pieces is answered the same, whichever server takes it.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"GET /events HTTP/1.1\r\nHo")
        .await
        .expect("write");
    tcp.flush().await.expect("flush");
    tokio::task::yield_now().await;
    let rest = format!("st: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    tcp.write_all(rest.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let text = read_until(&mut tcp, &mut seen, "$synced").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");

    // Pipelined: a stream request followed at once by another request.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let text = read_until(&mut tcp, &mut seen, "$synced").await;
    assert!(text.contains("\"ok\""), "{text}");
}

#[tokio::test]
async fn a_client_that_leaves_is_noticed() {
    let (server, token) = server_with_event().await;
    let metric = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("broker_subscribers "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("broker_subscribers metric")
    };
    let subscribers = || async {
        let text = common::client()
            .get(server.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        metric(&text)
    };
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let request =
        format!("GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    read_until(&mut tcp, &mut Vec::new(), "$synced").await;
    assert_eq!(subscribers().await, 1.0);
    drop(tcp);
    let deadline = Instant::now() + TIMEOUT;
    while subscribers().await != 0.0 {
        assert!(Instant::now() < deadline, "the stream outlived its client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn streams_stop_short_of_the_open_file_limit_with_a_503() {
    // 300 open files leave 44 for streams (256 are kept for everything else).
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg("ulimit -n 300 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_broker"))
        .args(["--host", "127.0.0.1", "--port", "0", "--no-auth", "--db"])
        .arg(&db);
    let server = Server::spawn(cmd, db, "http");
    let request = format!("GET /events HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    let mut open = Vec::new();
    for _ in 0..44 {
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("request");
        read_until(&mut tcp, &mut Vec::new(), "$synced").await;
        open.push(tcp);
    }
    let mut refused = TcpStream::connect(server.addr).await.expect("connect");
    refused
        .write_all(request.as_bytes())
        .await
        .expect("request");
    let text = read_until(&mut refused, &mut Vec::new(), "}").await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("{\"error\":"), "{text}");
    // Everything else still works: the reserve is untouched.
    let health = common::client()
        .get(server.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    // A stream that ends frees its place.
    drop(open.pop());
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("request");
        let mut seen = Vec::new();
        let head = read_until(&mut tcp, &mut seen, "\r\n").await;
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed: {head}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Names of the server process's threads.
fn thread_names(server: &Server) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.pid())).expect("threads");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn streams_are_written_on_their_own_threads_unless_told_otherwise() {
    for (threads, separate) in [("2", true), ("0", false)] {
        let server = Server::start(&["--no-auth", "--stream-threads", threads]);
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        tcp.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut seen = Vec::new();
        read_until(&mut tcp, &mut seen, "$synced").await;
        let insert = common::client()
            .post(server.url("/insert"))
            .json(&json!({"event": "tick", "data": threads}))
            .send()
            .await
            .expect("insert");
        assert!(insert.status().is_success());
        read_until(&mut tcp, &mut seen, &format!("data: \"{threads}\"")).await;
        // Its workers, and the blocking threads its streams read the database on.
        let stream_threads = thread_names(&server)
            .iter()
            .filter(|name| *name == "broker-stream")
            .count();
        assert_eq!(
            stream_threads >= 2,
            separate,
            "--stream-threads {threads}: {stream_threads} stream threads"
        );
    }
}
