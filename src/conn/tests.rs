use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn limits(max_connections: usize, max_per_ip: u32) -> Limits {
    Limits {
        max_connections,
        max_per_ip,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        write_timeout: Duration::from_secs(30),
    }
}

fn connections(max_connections: usize, max_per_ip: u32, trusted: &str) -> Arc<Connections> {
    Connections::new(
        limits(max_connections, max_per_ip),
        trusted.parse().expect("trusted proxies"),
        Arc::new(Metrics::new()),
    )
}

fn peer(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 40_000))
}

#[test]
fn at_the_cap_the_oldest_waiting_connection_makes_room() {
    let conns = connections(3, 100, "");
    let (a, _a) = conns.admit(peer(1)).expect("a");
    let (b, _b) = conns.admit(peer(2)).expect("b");
    let (c, _c) = conns.admit(peer(3)).expect("c");
    // `a` is busy with a request: the oldest waiting one is `b`.
    conns.request_started(&a, false);
    let (_d, _d_slot) = conns.admit(peer(4)).expect("d makes room");
    assert!(!a.is_closed(), "busy connections are never evicted");
    assert!(b.is_closed(), "the oldest waiting connection goes");
    assert!(!c.is_closed());
    assert_eq!(conns.metrics.evicted_connections.get(), 1);
    assert_eq!(conns.open(), 4, "counted until its socket is closed");
}

#[test]
fn with_every_connection_busy_a_new_one_is_refused() {
    let conns = connections(2, 100, "");
    let (a, _a) = conns.admit(peer(1)).expect("a");
    let (b, _b) = conns.admit(peer(2)).expect("b");
    conns.request_started(&a, false);
    conns.request_started(&b, false);
    assert_eq!(conns.admit(peer(3)).err(), Some(Refusal::Full));
    assert_eq!(conns.open(), 2, "a refused connection is not counted");
    // A response ends: the connection is idle, so it can make room.
    conns.response_ended(&a);
    assert!(conns.admit(peer(3)).is_ok());
    assert!(a.is_closed());
}

#[test]
fn each_address_has_its_cap_and_trusted_proxies_have_none() {
    let conns = connections(100, 2, "10.0.0.9");
    let one = conns.admit(peer(1)).expect("one");
    let _two = conns.admit(peer(1)).expect("two");
    assert_eq!(conns.admit(peer(1)).err(), Some(Refusal::PerIp));
    assert!(conns.admit(peer(2)).is_ok(), "another address");
    drop(one);
    assert!(
        conns.admit(peer(1)).is_ok(),
        "a closed one gives its place back"
    );
    let proxied: Vec<_> = (0..5)
        .map(|_| conns.admit(peer(9)).expect("a trusted proxy is not capped"))
        .collect();
    assert_eq!(proxied.len(), 5);
}

#[test]
fn each_waiting_phase_times_out_and_busy_never_does() {
    let conns = connections(100, 100, "");
    let start = Instant::now();
    let (head, _h) = conns.admit(peer(1)).expect("head");
    let (body, _b) = conns.admit(peer(2)).expect("body");
    let (idle, _i) = conns.admit(peer(3)).expect("idle");
    let (busy, _u) = conns.admit(peer(4)).expect("busy");
    conns.request_started(&body, true);
    conns.request_started(&idle, false);
    conns.response_ended(&idle);
    conns.request_started(&busy, true);
    conns.body_ended(&busy);

    conns.sweep(start + Duration::from_secs(9), usize::MAX);
    assert!(!head.is_closed());
    conns.sweep(start + Duration::from_secs(11), usize::MAX);
    assert!(head.is_closed(), "header timeout");
    assert!(!body.is_closed() && !idle.is_closed());
    conns.sweep(start + Duration::from_secs(33), usize::MAX);
    assert!(body.is_closed(), "body timeout and its grace");
    assert!(!idle.is_closed());
    conns.sweep(start + Duration::from_secs(61), usize::MAX);
    assert!(idle.is_closed(), "idle timeout");
    conns.sweep(start + Duration::from_secs(100_000), usize::MAX);
    assert!(
        !busy.is_closed(),
        "a request being handled is never timed out"
    );
    assert_eq!(conns.metrics.timed_out_connections.get(), 3);
}

#[test]
fn a_sweep_closes_no_more_than_its_budget_oldest_first() {
    let conns = connections(100, 100, "");
    let start = Instant::now();
    let admitted: Vec<_> = (1..=5)
        .map(|i| conns.admit(peer(i)).expect("admitted"))
        .collect();
    let later = start + Duration::from_secs(11);
    assert_eq!(conns.sweep(later, 2), 2);
    let closed: Vec<bool> = admitted.iter().map(|(c, _)| c.is_closed()).collect();
    assert_eq!(closed, [true, true, false, false, false]);
    assert_eq!(conns.sweep(later, 2), 2);
    assert_eq!(conns.sweep(later, 2), 1, "the last one, then nothing left");
    assert!(admitted.iter().all(|(c, _)| c.is_closed()));
}

#[test]
fn a_stream_leaves_the_queues_and_keeps_only_its_count() {
    let conns = connections(1, 100, "");
    let (stream, slot) = conns.admit(peer(1)).expect("stream");
    conns.stream_started(&stream);
    assert_eq!(conns.admit(peer(2)).err(), Some(Refusal::Full));
    conns.sweep(Instant::now() + Duration::from_secs(100_000), usize::MAX);
    assert!(!stream.is_closed());
    drop(slot);
    assert_eq!(conns.open(), 0);
}

#[tokio::test]
async fn a_closed_connection_fails_its_pending_read() {
    let conns = connections(1, 100, "");
    let (conn, slot) = conns.admit(peer(1)).expect("admitted");
    let (client, server) = tokio::io::duplex(64);
    let mut tracked = Tracked::new(server, conns.clone(), conn.clone(), slot);
    let (got_first, first_read) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 8];
        let first = tracked.read(&mut buf).await.map(|n| buf[..n].to_vec());
        let _ = got_first.send(first);
        let second = tracked.read(&mut buf).await;
        (second.map_err(|e| e.kind()), tracked)
    });
    let mut client = client;
    client.write_all(b"GET").await.expect("write");
    let first = first_read.await.expect("first read done");
    // Evicted by the next connection while its read waits for more.
    let _next = conns.admit(peer(2)).expect("makes room");
    let (second, tracked) = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the read is woken")
        .expect("no panic");
    assert_eq!(first.expect("first read"), b"GET");
    assert_eq!(second.err(), Some(std::io::ErrorKind::TimedOut));
    assert_eq!(conns.closing.load(Ordering::Acquire), 1);
    drop(tracked);
    assert_eq!(conns.closing.load(Ordering::Acquire), 0);
    assert_eq!(conns.open(), 1, "only the new one");
}
