//! What a slow or stalled subscriber can make the server hold: the live ring is bounded in
//! bytes, a stream that stops reading is cut off after `--write-timeout`, snapshots, replays
//! and the audit log are paged from the store, and nothing is lost on the way.

mod common;

use std::time::Duration;

use common::{Server, TIMEOUT};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// A raw stream connection with a tiny receive buffer, so that it stalls as soon as the
/// client stops reading.
async fn raw_stream(server: &Server, path: &str) -> (TcpStream, Vec<u8>) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut tcp = socket.connect(server.addr).await.expect("connect");
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut seen = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("$synced") {
        let n = timeout(deadline - Instant::now(), tcp.read(&mut buf))
            .await
            .expect("stream opens in time")
            .expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    (tcp, seen)
}

/// Reads everything left until the server closes the connection.
async fn read_to_end(tcp: &mut TcpStream, seen: &mut Vec<u8>) {
    timeout(TIMEOUT, tcp.read_to_end(seen))
        .await
        .expect("the server closes the stream in time")
        .expect("read");
}

/// The complete SSE events of a chunked response (head included), as (id, event, data);
/// a chunk or event cut off by the connection's end is left out.
fn events_of(raw: &[u8]) -> Vec<(Option<u64>, String, String)> {
    let text = String::from_utf8_lossy(raw);
    let (_, mut body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut sse = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        sse.push_str(&rest[..size]);
        body = rest.get(size + 2..).unwrap_or("");
    }
    let mut events = Vec::new();
    let mut frames: Vec<&str> = sse.split("\n\n").collect();
    frames.pop(); // whatever follows the last blank line is incomplete
    for frame in frames {
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = v.to_owned();
            }
        }
        if !event.is_empty() {
            events.push((id, event, data));
        }
    }
    events
}

/// Polls `/metrics` until `broker_subscribers` is `want`.
async fn await_subscribers(server: &Server, want: u64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let now = server.metric("broker_subscribers").await;
        if now == want as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "broker_subscribers stayed at {now}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_pin_no_memory_and_resume_with_nothing_lost() {
    let server = Server::start(&[
        "--no-auth",
        "--max-body",
        "2097152",
        "--stream-buffer-bytes",
        "4194304",
        "--write-timeout",
        "2",
        "--db-cache",
        "8388608",
    ]);
    let api = server.api();
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(raw_stream(&server, "/events").await);
    }
    let idle = rss(server.pid());
    // 200 events of 512 KiB: 100 MiB that a ring pinned by stalled readers would hold. The
    // server itself grows by about 45 MiB for the inserts alone (an 8 MiB page cache,
    // allocator pools), whether anyone listens or not.
    let payload = "x".repeat(512 * 1024);
    let mut peak = idle;
    let mut ids = Vec::new();
    for _ in 0..200 {
        let answer = api.insert("", "big", json!(payload), None).await;
        ids.push(
            answer["id"]
                .as_str()
                .expect("id")
                .parse::<u64>()
                .expect("numeric id"),
        );
        peak = peak.max(rss(server.pid()));
    }
    let growth = peak.saturating_sub(idle);
    assert!(
        growth < 90 * 1024 * 1024,
        "RSS grew by {} MiB while 3 subscribers stalled",
        growth / (1024 * 1024)
    );
    // Stalled longer than --write-timeout: the server cuts them off.
    await_subscribers(&server, 0).await;
    for (mut tcp, mut seen) in stalled {
        read_to_end(&mut tcp, &mut seen).await;
        let before: Vec<u64> = events_of(&seen)
            .into_iter()
            .filter(|(_, event, _)| event == "big")
            .filter_map(|(id, _, _)| id)
            .collect();
        assert!(
            before.len() < ids.len(),
            "the stalled subscriber was cut off before the end"
        );
        let resume = before.last().map_or(0, |id| *id).to_string();
        let mut again = api.stream("/events", None, Some(&resume)).await;
        let (events, _) = again.until_synced().await;
        let after: Vec<u64> = events
            .iter()
            .filter(|e| e.event == "big")
            .filter_map(|e| e.id.as_deref()?.parse().ok())
            .collect();
        let all: Vec<u64> = before.iter().chain(&after).copied().collect();
        assert_eq!(all, ids, "every event once, in order, across the cut");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_audit_logs_larger_than_a_page_are_whole_and_in_order() {
    let server = Server::start(&["--no-auth", "--max-body", "2097152"]);
    let api = server.api();
    // Six events of 700 KiB (pages hold about 256 KiB), and a history of the same size.
    let mut latest = Vec::new();
    for i in 0..6 {
        let data = json!({"n": i, "fill": "y".repeat(700 * 1024)});
        let answer = api.insert("", &format!("e{i}"), data, None).await;
        latest.push(answer["id"].as_str().expect("id").to_owned());
    }
    let mut versions = Vec::new();
    let mut last_doc = String::new();
    for v in 0..8 {
        let data = json!({"v": v, "fill": "z".repeat(700 * 1024)});
        let answer = api.insert("", "doc", data, None).await;
        versions.push(answer["timestamp"].as_u64().expect("timestamp"));
        last_doc = answer["id"].as_str().expect("id").to_owned();
    }
    latest.push(last_doc);
    latest.push(server_last_id(&api).await);

    let mut stream = api.stream("/events", None, None).await;
    let (events, synced) = stream.until_synced().await;
    let ids: Vec<String> = events.iter().filter_map(|e| e.id.clone()).collect();
    assert_eq!(ids, latest, "the latest version of each event, in id order");
    assert_eq!(synced, *latest.last().expect("ids"));

    let resp = common::client()
        .get(server.url("/audit/doc"))
        .send()
        .await
        .expect("audit");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().expect("type"),
        "application/json"
    );
    let text = resp.text().await.expect("body");
    let log: serde_json::Map<String, Value> =
        serde_json::from_str(&text).expect("the audit log is one JSON object");
    let keys: Vec<String> = log.keys().cloned().collect();
    let expected: Vec<String> = versions.iter().map(|t| format!("doc_v_{t}")).collect();
    assert_eq!(keys, expected, "every version, oldest first");
    for (i, value) in log.values().enumerate() {
        assert_eq!(value["v"], json!(i));
    }
}

/// Inserts a small marker event and returns its id: the newest record.
async fn server_last_id(api: &common::Api) -> String {
    let answer = api.insert("", "marker", json!(true), None).await;
    answer["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_lagged_past_its_revocation_ends_after_catching_up() {
    let server = Server::start(&[
        "--admin",
        "root:correct horse battery",
        "--max-body",
        "2097152",
        "--stream-buffer",
        "4",
    ]);
    let api = server.api();
    let admin = api.login("root").await;
    let ada = api.user("ada").await;
    let (mut tcp, mut seen) = raw_stream(&server, &format!("/events?access_token={ada}")).await;
    // Enough to fill the socket buffers of the stalled stream, then the revocation, then
    // enough commits to push the notice out of the ring before the stream reads again.
    let payload = "x".repeat(512 * 1024);
    for _ in 0..24 {
        api.insert(&admin, "big", json!(payload), None).await;
    }
    let resp = common::client()
        .delete(server.url("/users/ada"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status(), 200);
    for i in 0..8 {
        api.insert(&admin, "after", json!(i), None).await;
    }
    read_to_end(&mut tcp, &mut seen).await;
    let events = events_of(&seen);
    let last = events.last().expect("events");
    assert_eq!(last.1, "$error", "the stream ends with an error: {last:?}");
    assert!(last.2.contains("revoked"), "{last:?}");
    assert!(
        events.iter().all(|(_, event, _)| event != "after"),
        "nothing after the revocation reaches the revoked user"
    );
}
