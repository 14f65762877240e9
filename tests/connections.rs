//! Connection admission as a hostile client meets it: half-open connections, slow bodies,
//! idle keep-alive, per-address caps on connections and streams, stalled TLS handshakes.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::tls::TlsServer;
use common::{Server, TIMEOUT};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout_at};

/// Time allowed beyond a timeout for the server to close a connection.
const MARGIN: Duration = Duration::from_secs(4);

/// Reads until the server closes the connection (EOF or reset), failing after `deadline`.
/// Returns what was read.
async fn closed_by(tcp: &mut TcpStream, deadline: Instant, what: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => panic!(
                "{what}: still open at the deadline; got {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until `needle` has arrived; returns everything read.
async fn read_until(tcp: &mut TcpStream, needle: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = timeout_at(deadline, tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("waiting for {needle:?}: {:?}", lossy(&seen)))
            .expect("read");
        assert!(n > 0, "closed before {needle:?}: {:?}", lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    lossy(&seen)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Connects to `server` from the local address `from`.
async fn connect_from(server: SocketAddr, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    let ip: IpAddr = from.parse().expect("ip");
    socket.bind(SocketAddr::new(ip, 0)).expect("bind");
    socket.connect(server).await.expect("connect")
}

async fn health(http: &reqwest::Client, server: &Server) -> StatusCode {
    // Retried once on a reset connection, as `insert` explains.
    let send = || tokio::time::timeout(TIMEOUT, http.get(server.url("/health")).send());
    match send().await.expect("health answered in time") {
        Err(e) if e.is_request() => send().await.expect("health answered in time"),
        other => other,
    }
    .expect("health")
    .status()
}

async fn insert(http: &reqwest::Client, server: &Server, n: u64) -> (StatusCode, Value) {
    // A connection evicted by the flood before its request arrived is reset; a client retries
    // on a new connection, as the README says. Once: a second reset is a failure.
    let send = || {
        tokio::time::timeout(
            TIMEOUT,
            http.post(server.url("/insert"))
                .json(&json!({"event": "tick", "data": n}))
                .send(),
        )
    };
    let resp = match send().await.expect("insert answered in time") {
        Err(e) if e.is_request() => send().await.expect("insert answered in time"),
        other => other,
    }
    .expect("insert");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn half_open_connections_do_not_keep_out_prompt_clients_and_are_closed() {
    let server = Server::start(&[
        "--no-auth",
        "--header-timeout",
        "1",
        "--max-connections",
        "64",
    ]);
    let api = server.api();
    // Streams are busy connections: the flood must not touch them.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut stream = api.stream("/events", None, None).await;
        stream.until_synced().await;
        streams.push(stream);
    }

    // Connections that never finish a request: nothing at all, a general request's first
    // line, and a stream request's first line (the lean path's first look).
    let addr = server.addr;
    let flood = tokio::spawn(async move {
        let mut half_open = Vec::new();
        for i in 0..240 {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            let start: &[u8] = match i % 3 {
                0 => b"",
                1 => b"GET /health HTTP/1.1\r\nHost: x\r\n",
                _ => b"GET /events?channels=a HTTP/1.1\r\n",
            };
            // An evicted connection may already be closed: that is fine.
            let _ = tcp.write_all(start).await;
            half_open.push((tcp, Instant::now()));
        }
        half_open
    });
    // A prompt client opens a connection per request, as the hostile benchmark's probes do. An
    // idle kept-alive connection is itself waiting, so the flood may evict it, and a POST sent
    // on it just as it closes cannot be retried by the client.
    common::install_crypto_provider();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut answered = 0;
    while !flood.is_finished() || answered < 5 {
        assert_eq!(health(&http, &server).await, StatusCode::OK);
        let (status, answer) = insert(&http, &server, answered).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answered += 1;
    }
    let mut half_open = flood.await.expect("flood");

    // Every half-open connection is closed: evicted to make room, or at the header timeout.
    for (i, (tcp, opened)) in half_open.iter_mut().enumerate() {
        let deadline = *opened + Duration::from_secs(1) + MARGIN;
        closed_by(tcp, deadline, &format!("half-open connection {i}")).await;
    }
    assert!(server.metric("broker_evicted_connections_total").await > 0.0);
    assert!(server.metric("broker_timed_out_connections_total").await > 0.0);

    // The streams lived through it and are live.
    let (status, inserted) = insert(&http, &server, 1000).await;
    assert_eq!(status, StatusCode::OK);
    for stream in &mut streams {
        // Every insert made during the flood arrives first, then this one.
        while stream.next_event().await.id.as_deref() != inserted["id"].as_str() {}
    }
}

#[tokio::test]
async fn a_stream_request_that_never_completes_its_head_is_closed() {
    let server = Server::start(&["--no-auth", "--header-timeout", "1"]);
    let opened = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let mut partial = TcpStream::connect(server.addr).await.expect("connect");
    partial
        .write_all(b"GET /events?channels=a HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let deadline = opened + Duration::from_secs(1) + MARGIN;
    closed_by(&mut silent, deadline, "silent connection").await;
    closed_by(&mut partial, deadline, "unfinished stream request").await;
    assert_eq!(
        server.metric("broker_timed_out_connections_total").await,
        2.0
    );
}

/// Writes `pieces` one at a time, each its own segment, so that the server sees a request
/// head arrive in parts (the pause only spaces the segments out; nothing waits on it).
async fn write_in_pieces(tcp: &mut TcpStream, pieces: &[&str]) {
    tcp.set_nodelay(true).expect("nodelay");
    for piece in pieces {
        tcp.write_all(piece.as_bytes()).await.expect("write");
        tcp.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn request_heads_that_arrive_in_pieces_are_served() {
    let server = Server::start(&["--no-auth"]);
    let http = common::client();
    let (status, answer) = insert(&http, &server, 7).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // A stream request in three parts is served as a stream: its snapshot, then live...
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    write_in_pieces(
        &mut stream,
        &[
            "GET /eve",
            "nts HTTP/1.1\r\nHost: x\r\n",
            "Accept: text/event-stream\r\n\r\n",
        ],
    )
    .await;
    let head = read_until(&mut stream, "data: 7").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("text/event-stream"),
        "{head}"
    );
    // ...by the lean stream writer, which closes the connection when the stream ends.
    assert!(head.contains("connection: close"), "{head}");
    let (status, answer) = insert(&http, &server, 8).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    read_until(&mut stream, "data: 8").await;

    // An insert whose head and body come in parts is answered like any other.
    let body = json!({"event": "tick", "data": 9}).to_string();
    let mut post = TcpStream::connect(server.addr).await.expect("connect");
    let length = format!("Content-Length: {}\r\n\r\n", body.len());
    write_in_pieces(
        &mut post,
        &[
            "POST /insert HTTP/1.1\r\nHost: x\r\n",
            "Content-Type: application/json\r\nConnection: close\r\n",
            &length,
            &body,
        ],
    )
    .await;
    let answer = closed_by(&mut post, Instant::now() + TIMEOUT, "insert in pieces").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    read_until(&mut stream, "data: 9").await;

    // A client that sends part of a head and closes is let go, and the server carries on.
    let mut gone = TcpStream::connect(server.addr).await.expect("connect");
    write_in_pieces(&mut gone, &["GET /health HT"]).await;
    drop(gone);
    assert_eq!(health(&http, &server).await, StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_closes_its_side_mid_head_is_let_go_at_once() {
    let server = Server::start(&["--no-auth", "--header-timeout", "60"]);
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    write_in_pieces(&mut tcp, &["GET /health HTTP/1.1\r\nHo"]).await;
    tcp.shutdown().await.expect("half-close");
    // Nothing more can come, so the server does not wait for the header timeout.
    closed_by(
        &mut tcp,
        Instant::now() + Duration::from_secs(5),
        "half-closed partial head",
    )
    .await;
    assert_eq!(health(&common::client(), &server).await, StatusCode::OK);
}

#[tokio::test]
async fn idle_keep_alive_connections_close_but_streams_do_not() {
    let server = Server::start(&[
        "--no-auth",
        "--header-timeout",
        "1",
        "--idle-timeout",
        "1",
        "--keepalive",
        "1",
    ]);
    // A stream on the lean path, and one on the general server (after another request on a
    // kept-alive connection).
    let mut lean = TcpStream::connect(server.addr).await.expect("connect");
    lean.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    read_until(&mut lean, "$synced").await;
    let mut general = TcpStream::connect(server.addr).await.expect("connect");
    general
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    read_until(&mut general, "\"ok\"").await;
    general
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    read_until(&mut general, "$synced").await;

    // A kept-alive connection with nothing more to ask is closed after the idle timeout.
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    read_until(&mut idle, "\"ok\"").await;
    let answered = Instant::now();
    closed_by(
        &mut idle,
        answered + Duration::from_secs(1) + MARGIN,
        "idle connection",
    )
    .await;

    // Both streams outlive both timeouts: three keep-alive comments a second apart.
    for (name, stream) in [("lean", &mut lean), ("general", &mut general)] {
        let mut seen = String::new();
        while seen.matches(": keep-alive").count() < 3 {
            let mut buf = [0u8; 1024];
            let n = timeout_at(Instant::now() + TIMEOUT, stream.read(&mut buf))
                .await
                .expect("keep-alive in time")
                .expect("read");
            assert!(n > 0, "the {name} stream was closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408() {
    let server = Server::start(&["--no-auth", "--body-timeout", "1"]);
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(
        b"POST /insert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"event\":",
    )
    .await
    .expect("write");
    let sent = Instant::now();
    let answer = closed_by(
        &mut tcp,
        sent + Duration::from_secs(1) + MARGIN,
        "slow body",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let (_, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let body: Value = serde_json::from_str(body).expect("a JSON body");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("body")),
        "{body}"
    );
    // A prompt body is still fine.
    let (status, answer) = insert(&common::client(), &server, 1).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn connections_over_the_per_address_cap_get_503() {
    let server = Server::start(&["--no-auth", "--max-connections-per-ip", "3"]);
    // Three kept-alive connections, each answered (so admitted) before the next.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = connect_from(server.addr, "127.0.0.1").await;
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        read_until(&mut tcp, "\"ok\"").await;
        held.push(tcp);
    }
    let mut refused = connect_from(server.addr, "127.0.0.1").await;
    let answer = closed_by(&mut refused, Instant::now() + TIMEOUT, "refused").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.ends_with("{\"error\":\"too many connections from your address\"}"),
        "{answer}"
    );
    // Another address has its own share.
    let mut other = connect_from(server.addr, "127.0.0.2").await;
    other
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = closed_by(&mut other, Instant::now() + TIMEOUT, "other address").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A closed connection gives its place back.
    drop(held.pop());
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut tcp = connect_from(server.addr, "127.0.0.1").await;
        let _ = tcp
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let answer = closed_by(&mut tcp, deadline, "after a place was freed").await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Read from another address: 127.0.0.1's share may still be full while the freed
    // connection closes on the server's side.
    let mut probe = connect_from(server.addr, "127.0.0.2").await;
    probe
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let metrics = closed_by(&mut probe, Instant::now() + TIMEOUT, "metrics").await;
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("broker_refused_connections_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no refused-connections metric in {metrics}"));
    assert!(refused >= 1.0);
}

/// Opens `/events` or `/subscribe` with an `X-Forwarded-For` header; status and response.
async fn stream_as(
    http: &reqwest::Client,
    server: &Server,
    path: &str,
    forwarded_for: &str,
) -> reqwest::Response {
    tokio::time::timeout(
        TIMEOUT,
        http.get(server.url(path))
            .header("accept", "text/event-stream")
            .header("x-forwarded-for", forwarded_for)
            .send(),
    )
    .await
    .expect("stream answered in time")
    .expect("stream request")
}

#[tokio::test]
async fn streams_over_the_per_address_cap_get_429() {
    let server = Server::start(&[
        "--no-auth",
        "--max-streams-per-ip",
        "2",
        "--trusted-proxies",
        "127.0.0.1",
    ]);
    // Behind the trusted proxy (127.0.0.1) each forwarded client has its own share.
    let proxy = common::client();
    let mut first = common::sse::SseStream::from_response(
        stream_as(&proxy, &server, "/events", "203.0.113.1").await,
    );
    first.until_synced().await;
    let second = stream_as(&proxy, &server, "/subscribe?channels=a", "203.0.113.1").await;
    assert_eq!(second.status(), StatusCode::OK);
    for path in ["/events", "/subscribe?channels=a"] {
        let refused = stream_as(&proxy, &server, path, "203.0.113.1").await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        let body: Value = refused.json().await.expect("JSON error");
        assert_eq!(body, json!({"error": "too many streams from your address"}));
    }
    let other = stream_as(&proxy, &server, "/events", "203.0.113.2").await;
    assert_eq!(other.status(), StatusCode::OK, "another client");

    // From an untrusted peer the header is ignored: the peer's own address counts.
    let direct = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client");
    let mut held = Vec::new();
    for spoof in ["198.51.100.1", "198.51.100.2"] {
        let resp = stream_as(&direct, &server, "/events", spoof).await;
        assert_eq!(resp.status(), StatusCode::OK);
        held.push(resp);
    }
    let spoofed = stream_as(&direct, &server, "/events", "198.51.100.3").await;
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(server.metric("broker_refused_streams_per_ip_total").await >= 3.0);

    // A stream that ends gives its place back.
    drop(first);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let resp = stream_as(&proxy, &server, "/events", "203.0.113.1").await;
        if resp.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no place freed: {}",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_tls_handshake_never_finished_is_closed() {
    let TlsServer { server, https, .. } = TlsServer::start(&["--header-timeout", "1"]);

    let opened = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let mut partial = TcpStream::connect(server.addr).await.expect("connect");
    // The first bytes of a ClientHello record, and no more.
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write");
    let deadline = opened + Duration::from_secs(1) + MARGIN;
    closed_by(&mut silent, deadline, "silent TLS connection").await;
    closed_by(&mut partial, deadline, "unfinished TLS handshake").await;

    // A client that completes its handshake is served.
    let resp = https
        .get(format!("https://localhost:{}/health", server.addr.port()))
        .send()
        .await
        .expect("https");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_stream_whose_client_stops_reading_is_cut_off_after_the_write_timeout() {
    let tls = TlsServer::start(&["--write-timeout", "1", "--max-body", "2097152"]);
    let TlsServer { server, https, .. } = &tls;
    let base = format!("https://localhost:{}", server.addr.port());
    // The stream's body is never read: once the socket buffers are full, the server's
    // writes make no progress. (Over HTTP/1.1: on HTTP/2 the stream's flow-control window,
    // not the socket, holds the server back, and the connection stays usable.)
    let http1 = TlsServer::client_for(&tls.cert(), true);
    let stalled = http1
        .get(format!("{base}/events"))
        .send()
        .await
        .expect("stream");
    assert_eq!(stalled.status(), StatusCode::OK);
    let payload = "x".repeat(512 * 1024);
    let mut inserted = 0u64;
    for _ in 0..64 {
        let resp = https
            .post(format!("{base}/insert"))
            .json(&json!({"event": "big", "data": payload}))
            .send()
            .await
            .expect("insert");
        assert_eq!(resp.status(), StatusCode::OK);
        inserted += 1;
    }
    // The server gives up on the stalled stream: its body ends (cut off, short of the 64
    // events) instead of staying open as a live stream does.
    let mut body = stalled;
    let mut received = 0usize;
    let ended = timeout_at(Instant::now() + TIMEOUT, async {
        while let Ok(Some(chunk)) = body.chunk().await {
            received += chunk.len();
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stalled TLS stream was still open after {TIMEOUT:?}"
    );
    assert!(
        (received as u64) < inserted * payload.len() as u64,
        "the stream delivered everything ({received} bytes) instead of being cut off"
    );
}
