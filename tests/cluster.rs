//! Cluster mode: Broker nodes on a 3-node NATS JetStream cluster (tests/common/nats.rs).

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::nats::NatsCluster;

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
/// and returns whether it succeeded and its standard error.
fn run_to_exit(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
    for (key, _) in std::env::vars() {
        if key == "PORT" || key.starts_with("BROKER_") {
            cmd.env_remove(key);
        }
    }
    let output = cmd
        .args(["--host", "127.0.0.1", "--port", "0", "--db"])
        .arg(dir.path().join("db"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run broker");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!("{stderr}");
    (output.status.success(), stderr)
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

#[test]
fn nats_2_15_passes_the_version_check() {
    let cluster = NatsCluster::start_n(1);
    let (_, stderr) = run_to_exit(&["--nats", &cluster.urls(), "--nats-replicas", "1"]);
    assert!(
        stderr.contains("connected to NATS") && stderr.contains("2.15.1"),
        "{stderr}"
    );
    assert!(!stderr.contains("too old"), "{stderr}");
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
