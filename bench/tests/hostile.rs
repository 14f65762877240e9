//! Runs each hostile scenario of the load tool on tiny numbers against the real `broker`
//! binary: the results must be well formed and the tool's own checks must hold (every
//! stalled and reconnecting subscriber complete, nothing lost). Whether the server meets the
//! targets is the benchmarks' business, not these tests'.

mod common;

use std::process::Command;

use common::{bench, run_bench, start_broker};
use serde_json::Value;

/// Whether this server build has a header read timeout flag.
fn has_header_timeout() -> bool {
    let help = Command::new(common::broker_bin())
        .arg("--help")
        .output()
        .expect("broker --help");
    String::from_utf8_lossy(&help.stdout).contains("--header-timeout")
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The sum of a `{"status": count}` object.
fn total(statuses: &Value) -> u64 {
    statuses
        .as_object()
        .expect("statuses")
        .values()
        .map(count)
        .sum()
}

#[test]
fn half_open_connections_are_counted_while_probes_are_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let timeout = has_header_timeout();
    let extra: &[&str] = if timeout {
        &["--header-timeout", "1"]
    } else {
        &[]
    };
    let broker = start_broker(&dir.path().join("db"), extra);
    let json = dir.path().join("half-open.json");
    let (stdout, r) = run_bench(
        &broker,
        &json,
        &[
            "--scenario",
            "half-open",
            "--half-open",
            "30",
            "--attack-workers",
            "2",
            "--attack-addrs",
            "3",
            "--header-timeout",
            "1",
            "--duration",
            if timeout { "10" } else { "2" },
            "--probe-interval",
            "0.2",
            "--label",
            "half-open",
        ],
    );
    assert_eq!(r["scenario"], "half-open");
    let h = &r["half_open"];
    assert_eq!(count(&h["opened"]), 30, "{stdout}");
    assert_eq!(count(&h["failed"]), 0);
    assert_eq!(
        count(&h["closed_in_time"]) + count(&h["closed_late"]) + count(&h["still_open"]),
        30,
        "every connection accounted for: {h}"
    );
    if timeout {
        assert_eq!(count(&h["closed_in_time"]), 30, "{stdout}");
        assert!(
            r["run_seconds"].as_f64().expect("seconds") < 9.0,
            "ends once all closed"
        );
        assert!(h["close_after"]["p50_ms"].as_f64().expect("p50") >= 900.0);
    } else {
        assert_eq!(
            count(&h["still_open"]),
            30,
            "no timeout closes them: {stdout}"
        );
        assert!(stdout.contains("| 0 of 30 opened (0 later, 30 still open) | **no** |"));
    }
    for probe in ["health", "insert"] {
        let p = &r[probe];
        assert!(count(&p["sent"]) >= 5, "{probe}: {p}");
        assert_eq!(
            count(&p["answered"]) + count(&p["unanswered"]),
            count(&p["sent"])
        );
        assert_eq!(total(&p["statuses"]), count(&p["answered"]));
        assert!(!p["windows"].as_array().expect("windows").is_empty());
    }
    assert_eq!(r["goals"].as_array().expect("goals").len(), 3);
    assert!(r["memory"]["peak_mib"].as_f64().is_some(), "RSS read");
}

#[test]
fn stalled_subscribers_resume_with_every_event_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(&dir.path().join("db"), &["--max-body", "2097152"]);
    let json = dir.path().join("stalled.json");
    let common = [
        "--scenario",
        "stalled",
        "--stalled",
        "3",
        "--event-bytes",
        "65536",
        "--publishers",
        "2",
    ];
    let (stdout, r) = run_bench(
        &broker,
        &json,
        &[&common[..], &["--events", "20", "--channel", "s1"]].concat(),
    );
    assert_eq!(count(&r["inserts"]["acknowledged"]), 20, "{stdout}");
    assert!(r["inserts"]["stopped_early"].is_null());
    let s = &r["stalled"];
    assert_eq!(count(&s["complete"]), 3, "{stdout}");
    assert_eq!(count(&s["expected"]), 60);
    assert_eq!(count(&s["received"]), 60);
    assert_eq!(count(&s["out_of_order"]), 0);
    assert!(r["memory"]["peak_over_idle_mib"].as_f64().is_some());
    assert!(r["rss_series"].as_array().expect("series").len() >= 4);

    // The memory guard: past --rss-stop-mib, inserting stops, and the subscribers still
    // receive every event that was acknowledged.
    let (stdout, r) = run_bench(
        &broker,
        &json,
        &[
            &common[..],
            &[
                "--events",
                "100000",
                "--rss-stop-mib",
                "1",
                "--channel",
                "s2",
            ],
        ]
        .concat(),
    );
    let inserts = count(&r["inserts"]["acknowledged"]);
    assert!(inserts < 100_000, "{stdout}");
    assert!(
        r["inserts"]["stopped_early"]
            .as_str()
            .is_some_and(|why| why.contains("--rss-stop-mib")),
        "{stdout}"
    );
    assert_eq!(count(&r["stalled"]["complete"]), 3, "{stdout}");
    assert_eq!(count(&r["stalled"]["received"]), 3 * inserts);
    assert_eq!(r["goals"][0]["met"], false, "stopped early is not met");
}

#[test]
fn a_login_flood_accounts_for_every_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(&dir.path().join("db"), &[]);
    let json = dir.path().join("login.json");
    let (stdout, r) = run_bench(
        &broker,
        &json,
        &[
            "--scenario",
            "login-flood",
            "--login-clients",
            "3",
            "--wrong-logins",
            "8",
            "--legit-interval",
            "0.3",
        ],
    );
    let a = &r["attack"];
    assert_eq!(count(&a["sent"]), 8, "{stdout}");
    assert_eq!(count(&a["answered"]) + count(&a["unanswered"]), 8);
    let statuses = a["statuses"].as_object().expect("statuses");
    assert!(
        statuses.keys().all(|k| k == "401" || k == "429"),
        "wrong passwords are refused or throttled: {stdout}"
    );
    assert_eq!(total(&a["statuses"]), count(&a["answered"]));
    let legit = &r["legit"];
    assert!(count(&legit["sent"]) >= 1, "{stdout}");
    assert!(
        count(&legit["statuses"]["200"]) >= 1,
        "the right password works: {stdout}"
    );
    assert!(stdout.contains("| 429s seen |"), "{stdout}");
    assert!(r["memory"]["peak_mib"].as_f64().is_some());
}

#[test]
fn a_short_soak_loses_nothing_and_plots_memory_over_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(&dir.path().join("db"), &[]);
    let json = dir.path().join("soak.json");
    let (stdout, r) = run_bench(
        &broker,
        &json,
        &[
            "--scenario",
            "soak",
            "--subscribers",
            "20",
            "--stalled-percent",
            "10",
            "--reconnecting-percent",
            "10",
            "--reconnect-every",
            "0.5",
            "--publishers",
            "2",
            "--rate",
            "40",
            "--duration",
            "4",
            "--half-open",
            "10",
            "--attack-workers",
            "1",
            "--login-rate",
            "2",
            "--login-clients",
            "2",
            "--probe-interval",
            "0.5",
            "--sample-every",
            "0.5",
            "--warmup",
            "1",
            "--label",
            "soak",
        ],
    );
    let inserts = count(&r["inserts"]["acknowledged"]);
    assert!(inserts > 0);
    assert_eq!(count(&r["live"]["lost"]), 0, "{stdout}");
    assert_eq!(count(&r["live"]["duplicated"]), 0);
    assert_eq!(count(&r["live"]["counts"]["live"]), 16);
    for cohort in ["stalled", "reconnecting"] {
        let c = &r[cohort];
        assert_eq!(count(&c["subscribers"]), 2, "{cohort}");
        assert_eq!(count(&c["complete"]), 2, "{cohort}: {stdout}");
        assert_eq!(count(&c["received"]), 2 * inserts, "{cohort}");
    }
    assert!(count(&r["reconnecting"]["reconnects"]) >= 2, "{stdout}");
    assert!(count(&r["half_open"]["counts"]["opened"]) >= 10);
    assert!(count(&r["logins"]["sent"]) >= 2);
    assert!(r["flatness"]["deviation_percent"].as_f64().is_some());
    assert!(r["rss_series"].as_array().expect("series").len() >= 6);

    let plots = dir.path().join("plots");
    let out = Command::new(env!("CARGO_BIN_EXE_broker-bench-plot"))
        .arg("--out")
        .arg(&plots)
        .arg(&json)
        .output()
        .expect("run broker-bench-plot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(plots.join("rss-over-time-soak.png")).expect("plot written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(bytes.len() > 5_000, "the plot has content");
}

#[test]
fn hostile_scenarios_refuse_the_node_sse_wire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(&dir.path().join("db"), &[]);
    let json = dir.path().join("refused.json");
    std::fs::write(&json, "{}").expect("placeholder");
    let (success, _, stderr, _) = bench(
        &broker,
        &json,
        &["--scenario", "stalled", "--profile", "node-sse"],
    );
    assert!(!success);
    assert!(stderr.contains("broker wire only"), "{stderr}");
}
