//! Cluster mode: Broker nodes on a 3-node NATS JetStream cluster (tests/common/nats.rs).

mod common;

use std::future::Future;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use common::nats::NatsCluster;
use common::sse::SseEvent;
use serde_json::json;

/// Longest a cluster test may take. Past it the test fails saying so instead of hanging (each
/// step has its own shorter deadline; this catches anything that waits without one). The test's
/// nodes and NATS servers are killed as the test's future is dropped.
const TEST_LIMIT: Duration = Duration::from_secs(240);

/// Runs one test's body, failing it with a message after [`TEST_LIMIT`].
async fn limited(name: &str, test: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_LIMIT, test).await.is_err() {
        panic!("{name} did not finish within {TEST_LIMIT:?}: something waited without a deadline");
    }
}

#[test]
fn harness_cluster_survives_a_killed_node_and_restarts_it() {
    let mut cluster = NatsCluster::start();
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.urls().split(',').count(), 3);
    cluster.kill(1);
    assert!(!cluster.is_running(1));
    cluster.wait_healthy(0);
    cluster.restart(1);
    assert!(cluster.is_running(1));
}

/// Runs `broker` with `args` (clean environment, a fresh database directory) until it exits,
/// and returns whether it succeeded and its standard error. Fails the test if it has not exited
/// after [`common::TIMEOUT`] (it is killed then).
fn run_to_exit(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
    for (key, _) in std::env::vars() {
        if key == "PORT" || key.starts_with("BROKER_") {
            cmd.env_remove(key);
        }
    }
    let log = dir.path().join("stderr.log");
    let mut child = cmd
        .args(["--host", "127.0.0.1", "--port", "0", "--db"])
        .arg(dir.path().join("db"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("run broker");
    let deadline = Instant::now() + common::TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "broker {args:?} did not exit within {:?}: {stderr}",
                common::TIMEOUT
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).expect("stderr");
    eprintln!("{stderr}");
    (status.success(), stderr)
}

#[test]
fn too_old_nats_is_refused_naming_both_versions() {
    // The machine's own NATS (Debian's 2.9) on the default port, if there is one.
    if TcpStream::connect(("127.0.0.1", 4222)).is_err() {
        println!("skipped: nothing listens on 127.0.0.1:4222 (the system's nats-server 2.9)");
        return;
    }
    let (ok, stderr) = run_to_exit(&["--nats", "nats://127.0.0.1:4222"]);
    assert!(!ok, "a too-old NATS must stop the start");
    assert!(
        stderr.contains("is too old") && stderr.contains("2.12 or newer"),
        "the error names the version needed: {stderr}"
    );
    assert!(
        stderr.contains("version 2."),
        "the error names the version found: {stderr}"
    );
}

#[tokio::test]
async fn nats_2_15_passes_the_version_check_and_serves() {
    limited("nats_2_15_passes_the_version_check_and_serves", async {
        let cluster = NatsCluster::start_n(1);
        let broker = node(&cluster, &[]);
        let (status, body) = broker.api().get("/ready", None).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    })
    .await;
}

#[test]
fn unreachable_nats_is_named() {
    let port = common::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let (ok, stderr) = run_to_exit(&["--nats", &url]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot connect to NATS") && stderr.contains(&url),
        "{stderr}"
    );
}

/// A Broker node in cluster mode on `cluster`, with extra `args`.
fn node(cluster: &NatsCluster, args: &[&str]) -> Server {
    let urls = cluster.urls();
    let replicas = cluster.len().to_string();
    let mut all = vec!["--nats", &urls, "--nats-replicas", &replicas];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// Events of a stream up to and including the one with id `last`.
async fn events_until(stream: &mut common::sse::SseStream, last: u64) -> Vec<SseEvent> {
    let mut events = Vec::new();
    loop {
        let event = stream.next_event().await;
        let id = event.id.as_deref().and_then(|id| id.parse::<u64>().ok());
        events.push(event);
        if id.is_some_and(|id| id >= last) {
            return events;
        }
    }
}

/// The numeric id of an insert's answer.
fn id_of(answer: &serde_json::Value) -> u64 {
    answer["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("numeric id")
}

/// Inserts event `e{i}` with data `i` for each `i` of `numbers` through `api`, one at a time,
/// and returns their ids.
async fn insert_numbered(
    api: &common::Api,
    token: &str,
    numbers: std::ops::Range<u64>,
) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in numbers {
        ids.push(id_of(
            &api.insert(token, &format!("e{i}"), json!(i), None).await,
        ));
    }
    ids
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| e.id.as_deref()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_on_one_node_reaches_the_others_with_the_same_id() {
    limited(
        "an_insert_on_one_node_reaches_the_others_with_the_same_id",
        async {
            let cluster = NatsCluster::start();
            let nodes: Vec<Server> = (0..3).map(|_| node(&cluster, &[])).collect();
            // Signed up on A; the JWT secret is shared through JetStream, so B and C accept it.
            let token = nodes[0].api().user("ada").await;
            let mut b = nodes[1].api().stream("/events", Some(&token), None).await;
            let mut c = nodes[2].api().stream("/events", Some(&token), None).await;
            b.until_synced().await;
            c.until_synced().await;
            let answer = nodes[0]
                .api()
                .insert(&token, "greeting", json!({"hello": "world"}), Some("room"))
                .await;
            let id = answer["id"].as_str().expect("id").to_owned();
            for stream in [&mut b, &mut c] {
                let event = stream.next_event().await;
                assert_eq!(event.id.as_deref(), Some(id.as_str()));
                assert_eq!(event.event, "greeting");
                assert_eq!(event.json()["hello"], "world");
            }
            // And a batch from B arrives whole, in order, with consecutive ids, on A.
            let mut a = nodes[0].api().stream("/events", Some(&token), None).await;
            a.until_synced().await;
            let (status, body) = nodes[1]
                .api()
                .post(
                    "/publish",
                    Some(&token),
                    &json!({"events": [
                        {"channelName": "room", "type": "one", "payload": "1"},
                        {"channelName": "room", "type": "two", "payload": "2"},
                        {"channelName": "hall", "type": "three", "payload": "3"},
                    ]}),
                )
                .await;
            assert_eq!(status, reqwest::StatusCode::OK, "{body}");
            let got: Vec<SseEvent> = vec![
                a.next_event().await,
                a.next_event().await,
                a.next_event().await,
            ];
            let got_ids = ids(&got);
            assert_eq!(got_ids.len(), 3);
            assert!(
                got_ids.windows(2).all(|w| w[1] == w[0] + 1),
                "a batch takes consecutive ids: {got_ids:?}"
            );
            let names: Vec<&str> = got.iter().map(|e| e.event.as_str()).collect();
            assert_eq!(names, ["one", "two", "three"]);
        },
    )
    .await;
}

/// Inserts `per_writer` events from each of `writers` concurrent writers on every node of
/// `nodes`; every insert must succeed. Returns each answer's (id, timestamp).
async fn insert_everywhere(
    nodes: &[&Server],
    token: &str,
    writers: usize,
    per_writer: u64,
) -> Vec<(u64, u64)> {
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for w in 0..writers {
            let (api, token) = (node.api(), token.to_owned());
            tasks.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in 0..per_writer {
                    let answer = api
                        .insert(&token, &format!("n{n}w{w}"), json!(i), None)
                        .await;
                    let stamp = answer["timestamp"].as_u64().expect("timestamp");
                    answers.push((id_of(&answer), stamp));
                }
                answers
            }));
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("writer"));
    }
    all.sort_unstable();
    all
}

/// Ids are unique and consecutive from `first`, and timestamps increase with them.
fn assert_one_order(answers: &[(u64, u64)], first: u64) {
    let ids: Vec<u64> = answers.iter().map(|a| a.0).collect();
    let expected: Vec<u64> = (first..first + ids.len() as u64).collect();
    assert_eq!(ids, expected, "unique, consecutive ids");
    assert!(
        answers.windows(2).all(|w| w[0].1 < w[1].1),
        "timestamps increase with the id: {answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_on_every_node_share_one_order_through_the_writers_death() {
    limited(
        "concurrent_inserts_on_every_node_share_one_order_through_the_writers_death",
        async {
            let cluster = NatsCluster::start();
            let mut nodes: Vec<Server> = (0..3).map(|_| node(&cluster, &[])).collect();
            let token = nodes[0].api().user("ada").await;
            // Every node inserts at once: one node writes for all (the first one started
            // holds the writer lease), the others forward to it; none is refused.
            let before = insert_everywhere(&nodes.iter().collect::<Vec<_>>(), &token, 3, 20).await;
            assert_one_order(&before, 1);
            // The writer is killed: the other two go on inserting at once, first each on its
            // own, then through whichever takes the lease over (3 s after its last renewal),
            // in the same one order.
            nodes[0].kill();
            let killed = Instant::now();
            let mut all = before;
            while killed.elapsed() < Duration::from_secs(5) {
                all.extend(insert_everywhere(&[&nodes[1], &nodes[2]], &token, 3, 10).await);
            }
            all.sort_unstable();
            assert_one_order(&all, 1);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_on_another_node_after_its_node_is_killed() {
    limited(
        "a_stream_resumes_on_another_node_after_its_node_is_killed",
        async {
            let cluster = NatsCluster::start();
            let mut a = node(&cluster, &[]);
            let b = node(&cluster, &[]);
            let token = b.api().user("ada").await;
            let mut stream = a.api().stream("/events", Some(&token), None).await;
            stream.until_synced().await;
            let mut inserted = insert_numbered(&b.api(), &token, 0..5).await;
            let seen = ids(&events_until(&mut stream, inserted[2]).await);
            assert_eq!(seen, inserted[..3]);
            a.kill();
            inserted.extend(insert_numbered(&b.api(), &token, 5..10).await);
            let last_seen = seen.last().expect("seen").to_string();
            let mut resumed = b
                .api()
                .stream("/events", Some(&token), Some(&last_seen))
                .await;
            let rest = ids(&events_until(&mut resumed, inserted[9]).await);
            assert_eq!(rest, inserted[3..], "no gap and no duplicate across nodes");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_ends_the_users_streams_on_another() {
    limited(
        "a_revocation_on_one_node_ends_the_users_streams_on_another",
        async {
            let cluster = NatsCluster::start();
            let a = node(&cluster, &["--admin", "root:rootpassword"]);
            let b = node(&cluster, &[]);
            let root = a.api().login_as("root", "rootpassword").await;
            let ada = a.api().user("ada").await;
            let mut stream = b.api().stream("/events", Some(&ada), None).await;
            stream.until_synced().await;
            let resp = common::client()
                .delete(a.url("/users/ada"))
                .bearer_auth(&root)
                .send()
                .await
                .expect("DELETE");
            assert_eq!(resp.status(), reqwest::StatusCode::OK);
            let events = stream.until_end().await;
            assert!(
                events.iter().any(|e| e.data.contains("revoked")),
                "the stream on the other node ends saying why: {events:?}"
            );
            let (status, _) = b.api().get("/events", Some(&ada)).await;
            assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_insert_survives_a_killed_nats_server() {
    limited(
        "every_acknowledged_insert_survives_a_killed_nats_server",
        async {
            let mut cluster = NatsCluster::start();
            let broker = node(&cluster, &[]);
            let token = broker.api().user("ada").await;
            let api = broker.api();
            // When the NATS server was killed, once it was.
            let (killed_tx, killed_rx) = tokio::sync::watch::channel(None::<Instant>);
            let mut writers = Vec::new();
            for w in 0..4 {
                let (api, token, mut killed) = (api.clone(), token.clone(), killed_rx.clone());
                writers.push(tokio::spawn(async move {
                    let mut acked = Vec::new();
                    let mut after_kill = 0;
                    let mut i = 0;
                    let started = Instant::now();
                    // Until the NATS server is dead and 20 more inserts of this writer succeeded.
                    // The target is inserts succeeding again within 10 s of the kill; the
                    // failure deadline is generous (a busy machine), the time is printed.
                    while after_kill < 20 {
                        let since = killed.borrow().unwrap_or(started);
                        assert!(
                            since.elapsed() < common::TIMEOUT * 2,
                            "inserts did not succeed again after the NATS server was killed"
                        );
                        i += 1;
                        let (status, body) = api
                            .post(
                                "/insert",
                                Some(&token),
                                &json!({"event": format!("w{w}"), "data": i}),
                            )
                            .await;
                        if status == reqwest::StatusCode::OK {
                            acked.push(id_of(&body));
                            if let Some(at) = *killed.borrow_and_update() {
                                if after_kill == 0 {
                                    eprintln!(
                                        "writer {w}: an insert succeeded {:?} after the kill",
                                        at.elapsed()
                                    );
                                }
                                after_kill += 1;
                            }
                        } else {
                            assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
                            assert_eq!(body["error"], "store unavailable");
                        }
                    }
                    acked
                }));
            }
            // Let every writer get some inserts in, then kill a NATS server under them.
            let probe = api.insert(&token, "probe", json!(0), None).await;
            assert!(probe["id"].is_string());
            // The records stream's leader: the server whose loss forces an election.
            let leader = cluster
                .stream_leader(0, "broker_records")
                .expect("the records stream has a leader");
            cluster.kill(leader);
            killed_tx
                .send(Some(Instant::now()))
                .expect("writers listening");
            let mut acked = Vec::new();
            for writer in writers {
                acked.extend(writer.await.expect("writer"));
            }
            acked.sort_unstable();
            let last = *acked.last().expect("some inserts");
            let mut replay = api.stream("/events", Some(&token), Some("0")).await;
            let stored: std::collections::HashSet<u64> =
                ids(&events_until(&mut replay, last).await)
                    .into_iter()
                    .collect();
            let lost: Vec<u64> = acked
                .iter()
                .filter(|id| !stored.contains(id))
                .copied()
                .collect();
            assert!(lost.is_empty(), "acknowledged inserts lost: {lost:?}");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_node_keeps_users_secret_and_records() {
    limited(
        "restarting_every_node_keeps_users_secret_and_records",
        async {
            let mut cluster = NatsCluster::start();
            let mut a = node(&cluster, &[]);
            let token = a.api().user("ada").await;
            let answer = a.api().insert(&token, "kept", json!("yes"), None).await;
            let id = answer["id"].as_str().expect("id").to_owned();
            a.kill();
            cluster.restart_all();
            let b = node(&cluster, &[]);
            // The old token still verifies (same secret) and the user can log in again.
            let mut stream = b.api().stream("/events", Some(&token), None).await;
            let (snapshot, synced) = stream.until_synced().await;
            assert_eq!(synced, id);
            assert_eq!(snapshot.len(), 1);
            assert_eq!(snapshot[0].event, "kept");
            b.api().login("ada").await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nats_gives_503_and_streams_catch_up_when_it_returns() {
    limited(
        "unreachable_nats_gives_503_and_streams_catch_up_when_it_returns",
        async {
            let mut cluster = NatsCluster::start_n(1);
            let broker = node(&cluster, &[]);
            let api = broker.api();
            let token = api.user("ada").await;
            let first = api.insert(&token, "before", json!(1), None).await;
            let mut stream = api.stream("/events", Some(&token), None).await;
            let (_, synced) = stream.until_synced().await;
            assert_eq!(Some(synced.as_str()), first["id"].as_str());

            cluster.kill(0);
            let (status, body) = api
                .post(
                    "/insert",
                    Some(&token),
                    &json!({"event": "during", "data": 2}),
                )
                .await;
            assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["error"], "store unavailable");
            // /ready follows the connection to NATS (the client notices the loss within moments).
            let deadline = std::time::Instant::now() + common::TIMEOUT;
            while api.get("/ready", None).await.0 != reqwest::StatusCode::SERVICE_UNAVAILABLE {
                assert!(std::time::Instant::now() < deadline, "/ready stayed 200");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }

            cluster.restart(0);
            let deadline = std::time::Instant::now() + common::TIMEOUT;
            let after = loop {
                let (status, body) = api
                    .post(
                        "/insert",
                        Some(&token),
                        &json!({"event": "after", "data": 3}),
                    )
                    .await;
                if status == reqwest::StatusCode::OK {
                    break body;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "inserts did not resume: {body}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            assert_eq!(api.get("/ready", None).await.0, reqwest::StatusCode::OK);
            // The stream opened before the outage stayed open and receives what came after it.
            let event = stream.next_event().await;
            assert_eq!(event.event, "after");
            assert_eq!(event.id.as_deref(), after["id"].as_str());
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_port_with_reuse_port() {
    limited("two_nodes_share_one_port_with_reuse_port", async {
        let cluster = NatsCluster::start_n(1);
        let port = common::free_port().to_string();
        let urls = cluster.urls();
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<Server> = (0..2)
            .map(|i| {
                let db = dir.path().join(format!("db{i}"));
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
                cmd.args(["--host", "127.0.0.1", "--port", &port, "--reuse-port"])
                    .args(["--nats", &urls, "--nats-replicas", "1", "--db"])
                    .arg(&db);
                Server::spawn(cmd, db, "http")
            })
            .collect();
        assert_eq!(nodes[0].addr, nodes[1].addr, "both listen on one port");
        let api = nodes[0].api();
        let token = api.user("ada").await;
        // Whichever process the kernel hands each connection to, the data is the same.
        for i in 0..6 {
            let answer = common::Api {
                http: common::client(),
                base: nodes[1].base.clone(),
            }
            .insert(&token, "tick", json!(i), None)
            .await;
            assert!(answer["id"].is_string());
        }
    })
    .await;
}

/// Reads `online-presence` events until one lists exactly `want`; fails if one lists an id of
/// `never` first.
async fn until_presence(stream: &mut common::sse::SseStream, want: &[&str], never: &[&str]) {
    loop {
        let event = stream.next_event().await;
        if event.event != "online-presence" {
            continue;
        }
        let payload = event.json()["payload"]
            .as_str()
            .expect("payload")
            .to_owned();
        let mut ids: Vec<String> = serde_json::from_str(&payload).expect("ids");
        ids.sort();
        assert!(
            !ids.iter().any(|id| never.contains(&id.as_str())),
            "listed a client it must not see: {ids:?}"
        );
        if ids == want {
            return;
        }
    }
}

/// Client ids (sorted) and channels of a `/presence` answer.
fn presence_of(body: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    let mut clients: Vec<(String, serde_json::Value)> = body["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| {
            (
                c["client_id"].as_str().expect("id").to_owned(),
                c["channels"].clone(),
            )
        })
        .collect();
    clients.sort_by(|a, b| a.0.cmp(&b.0));
    clients
}

/// Polls `server`'s `/presence` until `check` accepts its clients; fails after
/// [`common::TIMEOUT`].
async fn presence_until(server: &Server, check: impl Fn(&[(String, serde_json::Value)]) -> bool) {
    let deadline = Instant::now() + common::TIMEOUT;
    loop {
        let (_, body) = server.api().get("/presence", None).await;
        if check(&presence_of(&body)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "presence never became as expected: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_nodes_and_a_killed_nodes_clients_leave() {
    limited(
        "presence_crosses_nodes_and_a_killed_nodes_clients_leave",
        async {
            let cluster = NatsCluster::start();
            let mut a = node(&cluster, &["--no-auth"]);
            let b = node(&cluster, &["--no-auth"]);
            let mut watcher = b
                .api()
                .stream("/subscribe?channels=lobby&clientId=watcher", None, None)
                .await;
            until_presence(&mut watcher, &["watcher"], &[]).await;

            // A join on A reaches B's stream and B's /presence, and A lists B's client too.
            let mut ada = a
                .api()
                .stream("/subscribe?channels=room&clientId=ada", None, None)
                .await;
            until_presence(&mut watcher, &["ada", "watcher"], &[]).await;
            until_presence(&mut ada, &["ada", "watcher"], &[]).await;
            let (_, body) = b.api().get("/presence?channel=room", None).await;
            assert_eq!(presence_of(&body), [("ada".to_owned(), json!(["room"]))]);

            // One client on both nodes counts once, with the channels of both.
            let ada_on_b = b
                .api()
                .stream("/subscribe?channels=lobby&clientId=ada", None, None)
                .await;
            presence_until(&a, |clients| {
                clients.first() == Some(&("ada".to_owned(), json!(["lobby", "room"])))
            })
            .await;
            drop(ada_on_b);

            // A leave on A reaches B.
            let bob = a
                .api()
                .stream("/subscribe?channels=room&clientId=bob", None, None)
                .await;
            until_presence(&mut watcher, &["ada", "bob", "watcher"], &[]).await;
            drop(bob);
            until_presence(&mut watcher, &["ada", "watcher"], &[]).await;

            // A node started later learns the others' clients at once (it asks for them).
            let c = node(&cluster, &["--no-auth"]);
            presence_until(&c, |clients| {
                clients.iter().map(|c| c.0.as_str()).collect::<Vec<_>>() == ["ada", "watcher"]
            })
            .await;
            drop(c);

            // A dies without a word: its clients leave B's presence within 15 s.
            a.kill();
            tokio::time::timeout(
                Duration::from_secs(15),
                until_presence(&mut watcher, &["watcher"], &[]),
            )
            .await
            .expect("the killed node's clients left within 15 s");
            let (_, body) = b.api().get("/presence", None).await;
            assert_eq!(
                presence_of(&body),
                [("watcher".to_owned(), json!(["lobby"]))]
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_across_nodes_follows_permissions() {
    limited("presence_across_nodes_follows_permissions", async {
        let cluster = NatsCluster::start();
        let a = node(&cluster, &["--admin", "root:rootpassword"]);
        let b = node(&cluster, &[]);
        let root = a.api().login_as("root", "rootpassword").await;
        let (status, body) = a
            .api()
            .post(
                "/users",
                Some(&root),
                &json!({"username": "reader", "password": common::PASSWORD, "read": ["lobby"]}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        let reader = b.api().login("reader").await;
        let mut watcher = b
            .api()
            .stream("/subscribe?channels=lobby&clientId=r", Some(&reader), None)
            .await;
        until_presence(&mut watcher, &["r"], &[]).await;
        // Two clients of root's on A: one on a channel the reader may not read.
        let _secret = a
            .api()
            .stream(
                "/subscribe?channels=secret&clientId=hidden",
                Some(&root),
                None,
            )
            .await;
        let _lobby = a
            .api()
            .stream("/subscribe?channels=lobby&clientId=seen", Some(&root), None)
            .await;
        until_presence(&mut watcher, &["r", "seen"], &["hidden"]).await;
        let (_, body) = b.api().get("/presence", Some(&reader)).await;
        let ids: Vec<String> = presence_of(&body).into_iter().map(|c| c.0).collect();
        assert_eq!(ids, ["r", "seen"]);
        let (_, body) = b.api().get("/presence", Some(&root)).await;
        let ids: Vec<String> = presence_of(&body).into_iter().map(|c| c.0).collect();
        assert_eq!(ids, ["hidden", "r", "seen"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_on_one_node_ends_the_users_streams_on_another() {
    limited(
        "a_password_change_on_one_node_ends_the_users_streams_on_another",
        async {
            let cluster = NatsCluster::start();
            let a = node(&cluster, &[]);
            let b = node(&cluster, &[]);
            let ada = a.api().user("ada").await;
            let mut stream = b.api().stream("/events", Some(&ada), None).await;
            stream.until_synced().await;
            let resp = common::client()
                .post(a.url("/users/me/password"))
                .basic_auth("ada", Some(common::PASSWORD))
                .json(&json!({"old_password": common::PASSWORD, "new_password": "a new horse battery"}))
                .send()
                .await
                .expect("POST");
            assert_eq!(resp.status(), reqwest::StatusCode::OK);
            // The watch on the users bucket carries the change to B, which ends the stream
            // (awaited: the stream's own deadline fails the test if it stays open).
            stream.until_end().await;
            let (status, _) = b.api().get("/events", Some(&ada)).await;
            assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "the old token on B");
            b.api().login_as("ada", "a new horse battery").await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_sees_and_changes_every_node() {
    limited("the_admin_api_sees_and_changes_every_node", async {
        let cluster = NatsCluster::start();
        let a = node(&cluster, &["--admin", "root:rootpassword"]);
        let b = node(&cluster, &[]);
        let root = a.api().login_as("root", "rootpassword").await;
        let ada = a.api().user("ada").await;
        a.api().insert(&ada, "x", json!(1), Some("room")).await;
        a.api().insert(&ada, "x", json!(2), Some("room")).await;
        let last = a.api().insert(&ada, "y", json!(3), Some("room")).await;

        let (status, page) = b.api().get("/users", Some(&root)).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{page}");
        let names: Vec<&str> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|u| u["username"].as_str())
            .collect();
        assert_eq!(names, ["ada", "root"]);
        let (status, body) = b.api().get("/channels", Some(&root)).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        assert_eq!(
            body["channels"],
            json!([{"channel": "room", "records": 3, "events": 2,
                "last_id": id_of(&last),
                "last_timestamp": last["timestamp"]}])
        );

        // Rights taken away on node b: ada's next insert on node a gets 403.
        let resp = common::client()
            .patch(b.url("/users/ada"))
            .bearer_auth(&root)
            .json(&json!({"write": ["public"]}))
            .send()
            .await
            .expect("PATCH");
        assert_eq!(resp.status(), reqwest::StatusCode::OK);
        let (status, body) = a
            .api()
            .post(
                "/insert",
                Some(&ada),
                &json!({"event": "x", "data": 4, "channel": "room"}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "{body}");
    })
    .await;
}

/// Streams opened at once on one node in the storm tests: enough for their snapshots and
/// replays to overlap many times over, few enough for `make test` on two cores.
const STORM: usize = 300;

/// The ids of an event list's records (`$synced` and other control events left out).
fn record_ids(events: &[SseEvent]) -> Vec<u64> {
    let records: Vec<SseEvent> = events
        .iter()
        .filter(|e| !e.event.starts_with('$'))
        .cloned()
        .collect();
    ids(&records)
}

/// Inserts event `e{i % 5}` with data `i` for each `i` of `numbers` through `api`, into
/// channel `room` for even `i` and `hall` for odd, one at a time; returns (id, channel, event).
async fn insert_in_rooms(
    api: &common::Api,
    token: &str,
    numbers: std::ops::Range<u64>,
) -> Vec<(u64, &'static str, String)> {
    let mut written = Vec::new();
    for i in numbers {
        let channel = if i % 2 == 0 { "room" } else { "hall" };
        let event = format!("e{}", i % 5);
        let answer = api.insert(token, &event, json!(i), Some(channel)).await;
        written.push((id_of(&answer), channel, event));
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opening_at_once_get_one_cut_then_the_live_feed() {
    limited(
        "streams_opening_at_once_get_one_cut_then_the_live_feed",
        async {
            let cluster = NatsCluster::start();
            let a = node(&cluster, &[]);
            let token = a.api().user("ada").await;
            // Events written only before B started (B's snapshots read them from JetStream,
            // once) and events written after (in B's own window).
            let mut written = Vec::new();
            for i in 0..10u64 {
                let channel = if i % 2 == 0 { "room" } else { "hall" };
                let event = format!("before{i}");
                let answer = a
                    .api()
                    .insert(&token, &event, json!(i), Some(channel))
                    .await;
                written.push((id_of(&answer), channel, event));
            }
            let b = node(&cluster, &[]);
            written.extend(insert_in_rooms(&a.api(), &token, 0..30).await);
            // Inserts go on through A while STORM streams open on B, half of them for one
            // channel only.
            let writer = {
                let (api, token) = (a.api(), token.clone());
                tokio::spawn(async move { insert_in_rooms(&api, &token, 30..90).await })
            };
            let mut opening = tokio::task::JoinSet::new();
            for k in 0..STORM {
                let (api, token) = (b.api(), token.clone());
                let path = if k % 2 == 0 {
                    "/events?channels=room"
                } else {
                    "/events"
                };
                opening.spawn(async move { (k, api.stream(path, Some(&token), None).await) });
            }
            let streams = opening.join_all().await;
            written.extend(writer.await.expect("writer"));
            let mut reading = tokio::task::JoinSet::new();
            for (k, mut stream) in streams {
                let only_room = k % 2 == 0;
                let mine: Vec<(u64, String)> = written
                    .iter()
                    .filter(|(_, channel, _)| !only_room || *channel == "room")
                    .map(|(id, channel, event)| (*id, format!("{channel}/{event}")))
                    .collect();
                reading.spawn(async move {
                    let (snapshot, synced) = stream.until_synced().await;
                    let synced: u64 = synced.parse().expect("$synced id");
                    // The snapshot is the latest version of each event as of its cut.
                    let mut latest = std::collections::HashMap::new();
                    for (id, key) in mine.iter().filter(|(id, _)| *id <= synced) {
                        latest.insert(key.clone(), *id);
                    }
                    let mut expected: Vec<u64> = latest.into_values().collect();
                    expected.sort_unstable();
                    assert_eq!(ids(&snapshot), expected, "stream {k}: snapshot at {synced}");
                    // Then every later record of its channels, once, in order.
                    let after: Vec<u64> = mine
                        .iter()
                        .map(|(id, _)| *id)
                        .filter(|id| *id > synced)
                        .collect();
                    if let Some(&last) = after.last() {
                        let live = record_ids(&events_until(&mut stream, last).await);
                        assert_eq!(live, after, "stream {k}: live feed after {synced}");
                    }
                });
            }
            reading.join_all().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_resuming_at_once_from_different_ids_get_exactly_what_they_missed() {
    limited(
        "streams_resuming_at_once_from_different_ids_get_exactly_what_they_missed",
        async {
            let cluster = NatsCluster::start();
            let a = node(&cluster, &[]);
            let token = a.api().user("ada").await;
            // Records from before B started (read from JetStream) and after (B's own window).
            let mut inserted = insert_numbered(&a.api(), &token, 0..40).await;
            let b = node(&cluster, &[]);
            inserted.extend(insert_numbered(&a.api(), &token, 40..80).await);
            let writer = {
                let (api, token) = (a.api(), token.clone());
                tokio::spawn(async move { insert_numbered(&api, &token, 80..120).await })
            };
            let mut opening = tokio::task::JoinSet::new();
            for k in 0..STORM {
                let (api, token) = (b.api(), token.clone());
                let from = inserted[k % inserted.len()];
                opening.spawn(async move {
                    let stream = api
                        .stream("/events", Some(&token), Some(&from.to_string()))
                        .await;
                    (from, stream)
                });
            }
            let streams = opening.join_all().await;
            inserted.extend(writer.await.expect("writer"));
            let last = *inserted.last().expect("inserted");
            let mut reading = tokio::task::JoinSet::new();
            for (from, mut stream) in streams {
                let missed: Vec<u64> = inserted.iter().copied().filter(|id| *id > from).collect();
                reading.spawn(async move {
                    let got = record_ids(&events_until(&mut stream, last).await);
                    assert_eq!(got, missed, "resumed after {from}");
                });
            }
            reading.join_all().await;
        },
    )
    .await;
}
