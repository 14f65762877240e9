//! broker-bench: a load tool for Broker and node-sse-server.
//!
//! Opens N SSE subscribers on one channel and P publishers, publishes for a duration, then
//! reports insert→delivery latency percentiles (from a send timestamp carried in each event),
//! throughput, connection set-up rate, lost and duplicated deliveries, and the server's memory.
//! Exits non-zero when anything was lost or duplicated.
//!
//! Layout: [`config`] (command line), [`profile`] (the two wires), [`subscriber`],
//! [`publisher`], [`stats`] (histograms), [`system`] (rlimit, /proc), [`report`] (JSON and
//! Markdown).

mod config;
mod profile;
mod publisher;
mod report;
mod stats;
mod subscriber;
mod system;

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use tokio::time::Instant;

use config::{Args, Wire};
use report::Results;
use stats::{Summary, histogram};
use subscriber::{Progress, Subscriber};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(results) => {
            println!("{}", results.markdown());
            if results.lost > 0 || results.duplicated > 0 || results.subscribers_failed > 0 {
                eprintln!("broker-bench: lost, duplicated or failed deliveries");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("broker-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// HTTP clients, one per source address.
fn clients(source_addrs: u8) -> Result<Vec<reqwest::Client>, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addrs: Vec<Option<IpAddr>> = if source_addrs == 0 {
        vec![None]
    } else {
        (0..source_addrs)
            .map(|i| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i))))
            .collect()
    };
    addrs
        .into_iter()
        .map(|addr| {
            reqwest::Client::builder()
                .local_address(addr)
                .pool_max_idle_per_host(1024)
                .build()
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Signs up (if needed) and logs in. The broker profile needs the token; the node-sse
/// profile uses one when the server has logins (Broker) and goes without (node-sse-server).
async fn token(args: &Args, http: &reqwest::Client) -> Result<Option<String>, String> {
    let creds = json!({"username": args.user, "password": args.password});
    let _ = http
        .post(format!("{}/users", args.url))
        .json(&creds)
        .send()
        .await;
    let resp = http
        .post(format!("{}/login", args.url))
        .json(&creds)
        .send()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", args.url))?;
    if !resp.status().is_success() {
        if args.profile == Wire::NodeSse {
            return Ok(None);
        }
        return Err(format!("login failed: {}", resp.status()));
    }
    let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    Ok(body["jwt"].as_str().map(str::to_owned))
}

/// Publishes `count` distinct events, then times a new subscriber's snapshot of them.
async fn snapshot_seconds(
    args: &Args,
    http: &reqwest::Client,
    token: Option<&str>,
) -> Result<f64, String> {
    let channel = format!("{}-snapshot", args.channel);
    for start in (0..args.snapshot_events).step_by(1000) {
        let events: Vec<_> = (start..(start + 1000).min(args.snapshot_events))
            .map(|i| json!({"channelName": channel, "type": format!("e{i}"), "payload": i.to_string()}))
            .collect();
        let mut req = http
            .post(format!("{}/publish", args.url))
            .json(&json!({"events": events}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("snapshot publish: {}", resp.status()));
        }
    }
    let started = Instant::now();
    let mut req = http.get(format!("{}/events?channels={channel}", args.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let text = {
        use futures_util::StreamExt;
        let mut body = resp.bytes_stream();
        let mut seen = Vec::new();
        while let Some(chunk) = body.next().await {
            seen.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
            if seen.windows(14).any(|w| w == b"event: $synced") {
                break;
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    };
    let elapsed = started.elapsed().as_secs_f64();
    let received = text.matches("\nid: ").count() + usize::from(text.starts_with("id: "));
    if received < args.snapshot_events {
        return Err(format!(
            "snapshot had {received} of {} events",
            args.snapshot_events
        ));
    }
    Ok(elapsed)
}

async fn run(args: Args) -> Result<Results, String> {
    let (soft, hard) = system::raise_open_files();
    let needed = (args.subscribers + args.publishers + 64) as u64;
    if soft < needed {
        return Err(format!(
            "{} subscribers need about {needed} open files, but this process may open {soft} (hard limit {hard}); \
             raise `ulimit -Hn` or run several broker-bench processes",
            args.subscribers
        ));
    }
    let clients = clients(args.source_addrs)?;
    let http = clients[0].clone();
    let token = token(&args, &http).await?;
    let snapshot = if args.snapshot_events > 0 {
        Some(snapshot_seconds(&args, &http, token.as_deref()).await?)
    } else {
        None
    };
    let rss_before = args.server_pid.and_then(system::rss_kib);

    // Subscribers, in steps when a memory series is asked for.
    let latency = Arc::new(Mutex::new(histogram()));
    let started = Instant::now();
    let mut progress = Vec::with_capacity(args.subscribers);
    let mut tasks = Vec::with_capacity(args.subscribers);
    let mut memory_series = Vec::new();
    let synced = |progress: &[Arc<Progress>]| {
        progress
            .iter()
            .filter(|p| p.synced.load(Ordering::Acquire))
            .count()
    };
    let failed = |progress: &[Arc<Progress>]| {
        progress
            .iter()
            .filter(|p| p.failed.load(Ordering::Relaxed))
            .count()
    };
    for target in report::steps(args.subscribers, args.memory_step) {
        for i in progress.len()..target {
            let p = Arc::new(Progress::default());
            progress.push(p.clone());
            let sub = Subscriber {
                wire: args.profile,
                url: profile::stream_url(args.profile, &args.url, &args.channel, i),
                token: token.clone(),
                http: clients[i % clients.len()].clone(),
                publishers: args.publishers,
                progress: p,
                latency: latency.clone(),
            };
            tasks.push(tokio::spawn(sub.run()));
        }
        let connect_deadline = Instant::now() + Duration::from_secs(120);
        while synced(&progress) + failed(&progress) < target {
            if Instant::now() > connect_deadline {
                return Err(format!(
                    "only {} of {target} subscribers synced",
                    synced(&progress),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if args.memory_step > 0 {
            // Let the server settle (allocator purges, deferred frees) before reading.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let point = report::MemoryPoint {
                subscribers: synced(&progress),
                rss_kib: args.server_pid.and_then(system::rss_kib),
            };
            if !args.quiet {
                eprintln!(
                    "{} subscribers: server RSS {} KiB",
                    point.subscribers,
                    point.rss_kib.map_or("?".into(), |v| v.to_string())
                );
            }
            memory_series.push(point);
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    if let Some(e) = progress.iter().find_map(|p| p.error.get()) {
        eprintln!(
            "{} subscribers failed to connect, first: {e}",
            failed(&progress)
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = args.server_pid.and_then(system::rss_kib);

    // Publishers.
    let acked = Arc::new(AtomicU64::new(0));
    let cpu_server_start = args.server_pid.and_then(system::cpu_seconds);
    let cpu_tool_start = system::cpu_seconds(std::process::id());
    let publish_start = Instant::now();
    let deadline = publish_start + Duration::from_secs_f64(args.duration);
    let per_publisher_rate = if args.rate > 0.0 {
        args.rate / args.publishers.max(1) as f64
    } else {
        0.0
    };
    let pad = "x".repeat(args.payload);
    let publishers: Vec<_> = (0..args.publishers)
        .map(|index| {
            let p = publisher::Publisher {
                index,
                wire: args.profile,
                base: args.url.clone(),
                channel: args.channel.clone(),
                token: token.clone(),
                http: http.clone(),
                rate: per_publisher_rate,
                pad: pad.clone(),
                acked: acked.clone(),
            };
            tokio::spawn(p.run(deadline))
        })
        .collect();
    let received = |progress: &[Arc<Progress>]| {
        progress
            .iter()
            .map(|p| p.received.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let mut last_line = Instant::now();
    while publishers.iter().any(|p| !p.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !args.quiet && last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            let t = publish_start.elapsed().as_secs_f64();
            let (a, r) = (acked.load(Ordering::Relaxed), received(&progress));
            eprint!(
                "\r[{t:5.1}s] inserts {a} ({:.0}/s)  deliveries {r} ({:.0}/s)   ",
                a as f64 / t,
                r as f64 / t
            );
        }
    }
    let mut inserts = 0;
    let mut insert_errors = 0;
    let mut insert_latency = histogram();
    for p in publishers {
        let outcome = p.await.map_err(|e| e.to_string())?;
        inserts += outcome.acknowledged;
        insert_errors += outcome.errors;
        insert_latency
            .add(&outcome.latency)
            .map_err(|e| e.to_string())?;
    }
    let publish_seconds = publish_start.elapsed().as_secs_f64();
    let cpu_server = cpu_server_start
        .zip(args.server_pid.and_then(system::cpu_seconds))
        .map(|(a, b)| b - a);
    let cpu_tool = cpu_tool_start
        .zip(system::cpu_seconds(std::process::id()))
        .map(|(a, b)| b - a);

    // Drain: wait until every live subscriber has every acknowledged event.
    let live = args.subscribers - failed(&progress);
    let expected = inserts * live as u64;
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    while received(&progress) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_seconds = publish_start.elapsed().as_secs_f64();
    if !args.quiet {
        eprintln!();
    }
    for task in &tasks {
        task.abort();
    }
    let deliveries = received(&progress);
    let duplicated = progress
        .iter()
        .map(|p| p.duplicates.load(Ordering::Relaxed))
        .sum();
    let lost = progress
        .iter()
        .filter(|p| !p.failed.load(Ordering::Relaxed))
        .map(|p| inserts.saturating_sub(p.received.load(Ordering::Relaxed)))
        .sum();
    let delivery_latency = latency.lock().map(|h| Summary::of(&h)).unwrap_or_default();
    let rss_end = args.server_pid.and_then(system::rss_kib);
    let results = Results {
        subscribers_synced: synced(&progress),
        subscribers_failed: failed(&progress),
        connect_seconds,
        connect_rate: args.subscribers as f64 / connect_seconds.max(1e-9),
        inserts,
        insert_errors,
        inserts_per_second: inserts as f64 / publish_seconds.max(1e-9),
        insert_latency: Summary::of(&insert_latency),
        deliveries,
        deliveries_per_second: deliveries as f64 / total_seconds.max(1e-9),
        delivery_latency,
        lost,
        duplicated,
        rss_before_kib: rss_before,
        rss_idle_kib: rss_idle,
        rss_end_kib: rss_end,
        bytes_per_idle_subscriber: rss_before
            .zip(rss_idle)
            .map(|(b, i)| (i.saturating_sub(b) * 1024) as f64 / args.subscribers.max(1) as f64),
        server_cpu_seconds: cpu_server,
        tool_cpu_seconds: cpu_tool,
        snapshot_seconds: snapshot,
        memory_series,
        args,
    };
    if let Some(path) = &results.args.json {
        let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(results)
}
