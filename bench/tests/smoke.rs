//! Runs the load tool on tiny numbers against the real `broker` binary, for both wires, so
//! `make test` proves the tool works (timings are not checked: they are benchmarks' business).

mod common;

use std::process::Command;

use common::{bench, run_bench, start, start_broker};

/// Asserts that all `subscribers` synced and got every published event, none lost or twice;
/// returns how many events were published.
fn assert_every_delivery(stdout: &str, results: &serde_json::Value, subscribers: u64) -> u64 {
    assert!(stdout.contains("| lost / duplicated | 0 / 0 |"), "{stdout}");
    let inserts = results["inserts"].as_u64().expect("inserts");
    assert!(inserts > 0, "{stdout}");
    assert_eq!(results["subscribers_synced"].as_u64(), Some(subscribers));
    assert_eq!(
        results["deliveries"].as_u64(),
        Some(inserts * subscribers),
        "every subscriber got every event: {stdout}"
    );
    inserts
}

#[test]
fn the_tool_measures_both_wires_with_nothing_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(&dir.path().join("db"), &[]);
    for profile in ["broker", "node-sse"] {
        let json = dir.path().join(format!("{profile}.json"));
        let (stdout, results) = run_bench(
            &broker,
            &json,
            &[
                "--profile",
                profile,
                "--subscribers",
                "20",
                "--publishers",
                "2",
                "--duration",
                "1",
                "--snapshot-events",
                "50",
                "--channel",
                profile,
            ],
        );
        assert_every_delivery(&stdout, &results, 20);
        assert!(results["delivery_latency"]["count"].as_u64().unwrap_or(0) > 0);
        assert!(
            results["rss_idle_kib"].as_u64().unwrap_or(0) > 0,
            "server memory read from /proc"
        );
        assert!(results["snapshot_seconds"].as_f64().is_some());
    }
}

#[test]
fn a_failed_subscriber_is_reported_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Room for two streams: the other two subscribers are refused with a 503.
    let broker = start_broker(&dir.path().join("db"), &["--max-streams", "2"]);
    let json = dir.path().join("refused.json");
    let (success, stdout, _, results) = bench(
        &broker,
        &json,
        &["--subscribers", "4", "--publishers", "1", "--duration", "1"],
    );
    assert!(!success, "failed subscribers fail the run");
    assert!(
        stdout.contains("| first subscriber failure | 503 "),
        "{stdout}"
    );
    assert_eq!(results["subscribers_failed"].as_u64(), Some(2));
    assert!(
        results["first_failure"]
            .as_str()
            .is_some_and(|f| f.contains("too many open streams")),
        "{results}"
    );
}

#[test]
fn a_memory_series_and_its_plots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(&dir.path().join("db"), &[]);
    let json = dir.path().join("memory.json");
    let (stdout, results) = run_bench(
        &broker,
        &json,
        &[
            "--subscribers",
            "30",
            "--memory-step",
            "10",
            "--publishers",
            "1",
            "--rate",
            "20",
            "--duration",
            "1",
        ],
    );
    let series = results["memory_series"].as_array().expect("memory series");
    let counts: Vec<u64> = series
        .iter()
        .filter_map(|p| p["subscribers"].as_u64())
        .collect();
    assert_eq!(counts, [10, 20, 30]);
    assert!(
        series
            .iter()
            .all(|p| p["rss_kib"].as_u64().unwrap_or(0) > 0)
    );
    assert!(
        stdout.contains("| idle subscribers | server RSS |"),
        "{stdout}"
    );

    // A light-load run beside it, for the latency plot.
    let light = dir.path().join("light.json");
    run_bench(
        &broker,
        &light,
        &[
            "--subscribers",
            "10",
            "--publishers",
            "1",
            "--rate",
            "20",
            "--duration",
            "1",
        ],
    );

    let plots = dir.path().join("plots");
    let out = Command::new(env!("CARGO_BIN_EXE_broker-bench-plot"))
        .arg("--out")
        .arg(&plots)
        .arg(&json)
        .arg(&light)
        .output()
        .expect("run broker-bench-plot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["latency-vs-subscribers.png", "memory-vs-connections.png"] {
        let bytes = std::fs::read(plots.join(name)).expect("plot written");
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is a PNG");
        assert!(bytes.len() > 5_000, "{name} has content");
    }
}

#[test]
fn worker_processes_and_batch_publish_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(&dir.path().join("db"), &[]);
    let json = dir.path().join("workers.json");
    let (stdout, results) = run_bench(
        &broker,
        &json,
        &[
            "--subscribers",
            "21",
            "--workers",
            "2",
            "--publishers",
            "2",
            "--batch",
            "5",
            "--duration",
            "1",
            "--source-addrs",
            "2",
        ],
    );
    assert!(stdout.contains("over 2 worker processes"), "{stdout}");
    let inserts = assert_every_delivery(&stdout, &results, 21);
    assert!(inserts.is_multiple_of(5), "whole batches: {inserts}");
    assert_eq!(results["workers"].as_u64(), Some(2));
    assert_eq!(
        results["delivery_latency"]["count"].as_u64(),
        Some(inserts * 21),
        "every worker's latencies merged"
    );
}

#[test]
fn the_floor_tool_measures_loopback_writes() {
    let out = Command::new(env!("CARGO_BIN_EXE_broker-bench-floor"))
        .args(["--connections", "40", "--rounds", "5", "--frame", "100"])
        .args(["--writers", "2"])
        .output()
        .expect("run broker-bench-floor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("40 connections, 100-byte frames, 5 rounds"),
        "{stdout}"
    );
    assert!(stdout.contains("µs CPU per write (2 thread(s)"), "{stdout}");
}

#[test]
fn the_bare_server_serves_the_tool_with_nothing_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_broker-bench-bare"));
    command
        .args(["--listen", "127.0.0.1:0", "--journal"])
        .arg(dir.path().join("journal"));
    let bare = start(command);
    for (name, batch) in [("single", "1"), ("batches", "4")] {
        let json = dir.path().join(format!("{name}.json"));
        let (stdout, results) = run_bench(
            &bare,
            &json,
            &[
                "--subscribers",
                "30",
                "--publishers",
                "2",
                "--batch",
                batch,
                "--duration",
                "1",
                "--channel",
                name,
            ],
        );
        assert_every_delivery(&stdout, &results, 30);
    }
    let journal = std::fs::metadata(dir.path().join("journal")).expect("the journal");
    assert_eq!(
        journal.len(),
        64 * 1024 * 1024,
        "written once in full at start"
    );
}
