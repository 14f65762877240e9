//! What the load tool's tests share: starting a server and running the tool against it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The workspace's `broker` binary (built by `cargo test --workspace`), or `BROKER_BIN`.
pub fn broker_bin() -> PathBuf {
    std::env::var_os("BROKER_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/broker"),
        PathBuf::from,
    )
}

/// A running server: its process and its base URL; killed when dropped.
pub struct Broker(pub std::process::Child, pub String);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `broker` on a free port with its database at `db`.
pub fn start_broker(db: &std::path::Path, extra: &[&str]) -> Broker {
    let mut command = Command::new(broker_bin());
    command
        .args(["--host", "127.0.0.1", "--port", "0", "--db"])
        .arg(db)
        .args(extra)
        .env("RUST_LOG", "info");
    start(command)
}

/// Starts a server that logs `listening on <url>` to stderr, and waits for that line.
pub fn start(mut command: Command) -> Broker {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.split("listening on ").nth(1) {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server listening");
    Broker(child, url)
}

/// Runs broker-bench against `broker` with `args`, results to `json`; returns whether it
/// succeeded, its stdout and stderr, and the parsed results.
pub fn bench(
    broker: &Broker,
    json: &std::path::Path,
    args: &[&str],
) -> (bool, String, String, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_broker-bench"))
        .args(["--url", &broker.1, "--quiet", "--server-pid"])
        .arg(broker.0.id().to_string())
        .arg("--json")
        .arg(json)
        .args(args)
        .output()
        .expect("run broker-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let results = serde_json::from_str(&std::fs::read_to_string(json).expect("json written"))
        .expect("valid JSON");
    (out.status.success(), stdout, stderr, results)
}

/// [`bench`], asserting it succeeded; returns its stdout and the parsed results.
pub fn run_bench(
    broker: &Broker,
    json: &std::path::Path,
    args: &[&str],
) -> (String, serde_json::Value) {
    let (success, stdout, stderr, results) = bench(broker, json, args);
    assert!(success, "{stdout}\n{stderr}");
    (stdout, results)
}
