//! broker-bench: a load tool for Broker and node-sse-server.
//!
//! Opens N SSE subscribers on one channel and P publishers, publishes for a duration, then
//! reports insert→delivery latency percentiles (from a send timestamp carried in each event),
//! throughput, connection set-up rate, lost and duplicated deliveries, and the server's memory.
//! Exits non-zero when anything was lost or duplicated.
//!
//! Layout: [`config`] (command line), [`profile`] (the wires), [`subscriber`] (one SSE
//! stream, over [`raw_http`] or reqwest), [`group`] (subscribers in this process or in worker
//! processes), [`publisher`], [`stats`] (histograms), [`system`] (rlimit, /proc), [`report`]
//! (JSON and Markdown). The hostile scenarios (`--scenario half-open|stalled|login-flood|soak`)
//! are in [`hostile`].

mod chunked;
mod config;
mod group;
mod hostile;
mod profile;
mod publisher;
mod raw_client;
mod raw_http;
mod report;
mod stats;
mod subscriber;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use tokio::time::Instant;

use broker_bench::system;
use config::{Args, Scenario, Wire};
use group::{Counts, Group, LocalGroup, Spec, WorkerGroup};
use report::Results;
use stats::{Summary, histogram};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(ca) = &args.tls_ca
        && let Err(e) = raw_http::trust_pem_file(ca, !args.h2)
    {
        eprintln!("broker-bench: {e}");
        return ExitCode::FAILURE;
    }
    if args.hostile.half_open_worker {
        return match hostile::serve_half_open_worker(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("broker-bench half-open worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.scenario != Scenario::Load {
        return match hostile::run(args).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("broker-bench: events lost, duplicated or out of order (see above)");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("broker-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.worker {
        let served = match clients(args.source_addrs) {
            Ok(clients) => group::serve_worker(&args, clients).await,
            Err(e) => Err(e),
        };
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("broker-bench worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args).await {
        Ok(results) => {
            println!("{}", results.markdown());
            if results.lost > 0
                || results.duplicated > 0
                || results.subscribers_failed > 0
                || results.subscribers_unconnected > 0
            {
                eprintln!("broker-bench: lost, duplicated, failed or unconnected subscribers");
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
    (0..usize::from(source_addrs).max(1))
        .map(|i| system::source_addr(source_addrs, i))
        .map(|addr| {
            let mut builder = reqwest::Client::builder();
            if let Some(pem) = raw_http::trusted_pem() {
                for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())? {
                    builder = builder.add_root_certificate(cert);
                }
            }
            builder
                .local_address(addr)
                .pool_max_idle_per_host(1024)
                .build()
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// The bearer tokens of a run's subscribers and publishers.
struct Tokens {
    subscribe: Option<String>,
    publish: Option<String>,
}

/// The run's tokens: the login's for both (see [`token`]), except on the mercure profile: a
/// Mercure token signed with `--mercure-jwt-key` for both, else none for subscribers
/// (anonymous) and the login's for publishers.
async fn tokens(args: &Args, http: &reqwest::Client) -> Result<Tokens, String> {
    if args.profile == Wire::Mercure
        && let Some(key) = &args.mercure_jwt_key
    {
        let token = mercure_token(key)?;
        return Ok(Tokens {
            subscribe: Some(token.clone()),
            publish: Some(token),
        });
    }
    let login = token(args, http).await?;
    Ok(Tokens {
        subscribe: login.clone().filter(|_| args.profile != Wire::Mercure),
        publish: login,
    })
}

/// A Mercure token (HS256, older claim form) allowed to publish and receive every topic for
/// a day.
fn mercure_token(key: &str) -> Result<String, String> {
    let exp = stats::now_us() / 1_000_000 + 86_400;
    let claims = json!({"exp": exp, "mercure": {"publish": ["*"], "subscribe": ["*"]}});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .map_err(|e| format!("cannot sign a Mercure token: {e}"))
}

/// Signs up (if needed) and logs in. The broker profile needs the token; the node-sse
/// profile uses one when the server has logins (Broker) and goes without (node-sse-server).
async fn token(args: &Args, http: &reqwest::Client) -> Result<Option<String>, String> {
    let creds = json!({"username": args.user, "password": args.password});
    let _ = http
        .post(format!("{}/users", args.url_for(0)))
        .json(&creds)
        .send()
        .await;
    let resp = http
        .post(format!("{}/login", args.url_for(0)))
        .json(&creds)
        .send()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", args.url_for(0)))?;
    if !resp.status().is_success() {
        if args.profile == Wire::NodeSse {
            return Ok(None);
        }
        return Err(format!("login failed: {}", resp.status()));
    }
    let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    Ok(body["jwt"].as_str().map(str::to_owned))
}

/// Publishes `count` distinct events, then times `--snapshot-readers` new subscribers taking
/// their snapshot of them at once (until the last has it all).
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
            .post(format!("{}/publish", args.url_for(0)))
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
    let readers =
        (0..args.snapshot_readers.max(1)).map(|_| read_snapshot(args, http, token, &channel));
    for received in futures_util::future::join_all(readers).await {
        let received = received?;
        if received < args.snapshot_events {
            return Err(format!(
                "snapshot had {received} of {} events",
                args.snapshot_events
            ));
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Reads `channel`'s snapshot up to `$synced` and returns how many events it held.
async fn read_snapshot(
    args: &Args,
    http: &reqwest::Client,
    token: Option<&str>,
    channel: &str,
) -> Result<usize, String> {
    let mut req = http.get(format!("{}/events?channels={channel}", args.url_for(0)));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let text = {
        use futures_util::StreamExt;
        const SYNCED: &[u8] = b"event: $synced";
        let mut body = resp.bytes_stream();
        let mut seen = Vec::new();
        while let Some(chunk) = body.next().await {
            // Only the new bytes (and the marker's length before them) can complete the
            // marker: searching all of `seen` on every chunk made a large snapshot's timing
            // quadratic in its size.
            let from = seen.len().saturating_sub(SYNCED.len() - 1);
            seen.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
            if seen[from..].windows(SYNCED.len()).any(|w| w == SYNCED) {
                break;
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    };
    Ok(text.matches("\nid: ").count() + usize::from(text.starts_with("id: ")))
}

/// How many worker processes a run needs: as asked, or enough that each stays within this
/// process's open-file limit (0: the subscribers live in this process).
fn worker_count(args: &Args, soft_limit: u64) -> usize {
    if let Some(n) = args.workers {
        return n;
    }
    let reserve = args.publishers as u64 + 256;
    let per_process = soft_limit.saturating_sub(reserve).max(1);
    if args.subscribers as u64 + reserve <= soft_limit {
        0
    } else {
        (args.subscribers as u64).div_ceil(per_process) as usize
    }
}

/// The sum of every group's counts.
fn counts(groups: &[Group]) -> Counts {
    groups
        .iter()
        .map(Group::counts)
        .fold(Counts::default(), Counts::add)
}

/// CPU seconds of this process and its workers.
fn tool_cpu(workers: &[Option<u32>]) -> Option<f64> {
    let own = system::cpu_seconds(std::process::id())?;
    Some(
        own + workers
            .iter()
            .flatten()
            .filter_map(|&p| system::cpu_seconds(p))
            .sum::<f64>(),
    )
}

async fn run(args: Args) -> Result<Results, String> {
    let (soft, hard) = system::raise_open_files();
    let workers = worker_count(&args, soft);
    let held_here = if workers == 0 { args.subscribers } else { 0 };
    let needed = (held_here + args.publishers + 64) as u64;
    if soft < needed {
        return Err(format!(
            "{held_here} subscribers need about {needed} open files, but this process may open {soft} \
             (hard limit {hard}); raise `ulimit -Hn` or use more --workers",
        ));
    }
    if args.profile == Wire::Mercure && (args.batch > 1 || args.snapshot_events > 0) {
        return Err(
            "the mercure profile publishes one update per request and has no \
                    snapshot: --batch 1 and no --snapshot-events"
                .into(),
        );
    }
    let clients = clients(args.source_addrs)?;
    let http = clients[0].clone();
    let Tokens {
        subscribe: token,
        publish: publish_token,
    } = tokens(&args, &http).await?;
    let snapshot = if args.snapshot_events > 0 {
        Some(snapshot_seconds(&args, &http, token.as_deref()).await?)
    } else {
        None
    };
    let rss_before = args.server_pid.and_then(system::rss_kib);
    let mut publisher_clients = Vec::with_capacity(args.publishers);
    for index in 0..args.publishers {
        publisher_clients
            .push(publisher::Client::for_url(args.publish_url_for(index), &http).await?);
    }
    let node_rss =
        |pids: &[u32]| -> Vec<Option<u64>> { pids.iter().map(|&p| system::rss_kib(p)).collect() };
    let pids = args.all_pids();
    let nodes_before = node_rss(&pids);

    // Subscribers, in this process or spread over workers, in steps for a memory series.
    let mut groups = Vec::new();
    if workers == 0 {
        let spec = Spec::new(&args, token.clone());
        groups.push(Group::Local(LocalGroup::new(spec, clients.clone(), 0, 1)));
    } else {
        for index in 0..workers {
            groups.push(Group::Worker(WorkerGroup::spawn(
                &args,
                token.as_deref(),
                index,
                workers,
            )?));
        }
        if !args.quiet {
            eprintln!(
                "{} subscribers over {workers} worker processes",
                args.subscribers
            );
        }
    }
    let worker_pids: Vec<Option<u32>> = groups.iter().map(Group::pid).collect();
    let group_count = groups.len();
    let started = Instant::now();
    let mut memory_series = Vec::new();
    let mut connected_all = true;
    for target in report::steps(args.subscribers, args.memory_step) {
        for (index, group) in groups.iter_mut().enumerate() {
            group
                .connect(group::share(target, index, group_count))
                .await?;
        }
        let connect_deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout);
        loop {
            let c = counts(&groups);
            if c.synced + c.failed >= target {
                break;
            }
            if Instant::now() > connect_deadline {
                eprintln!(
                    "broker-bench: only {} of {target} subscribers connected in {} s; going on with those \
                     (the server's open-file limit, or --max-streams, may be the cause)",
                    c.synced, args.connect_timeout
                );
                connected_all = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if args.memory_step > 0 {
            // Let the server settle (allocator purges, deferred frees) before reading.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let point = report::MemoryPoint {
                subscribers: counts(&groups).synced,
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
        if !connected_all {
            break;
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    if !connected_all {
        for group in &mut groups {
            group.settle().await?;
        }
    }
    let connected = counts(&groups);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = args.server_pid.and_then(system::rss_kib);
    let nodes_idle = node_rss(&pids);

    // Publishers.
    let acked = Arc::new(AtomicU64::new(0));
    let cpu_server_start = args.server_pid.and_then(system::cpu_seconds);
    let cpu_tool_start = tool_cpu(&worker_pids);
    let publish_start = Instant::now();
    let deadline = publish_start + Duration::from_secs_f64(args.duration_or(10.0));
    let per_publisher_rate = if args.rate > 0.0 {
        args.rate / args.publishers.max(1) as f64
    } else {
        0.0
    };
    let pad = "x".repeat(args.payload);
    let mut publishers = Vec::with_capacity(args.publishers);
    for (index, client) in publisher_clients.into_iter().enumerate() {
        let p = publisher::Publisher {
            index,
            wire: args.profile,
            base: args.publish_url_for(index).to_owned(),
            channel: args.channel.clone(),
            token: publish_token.clone(),
            http: client,
            rate: per_publisher_rate,
            batch: args.batch as usize,
            pad: pad.clone(),
            acked: acked.clone(),
            record_ids: false,
            budget: None,
            stop: None,
        };
        publishers.push(tokio::spawn(p.run(deadline)));
    }
    // Failover: kill a node under the run.
    let killed_us = Arc::new(AtomicU64::new(0));
    if let Some(pid) = args.kill_pid {
        let (after, killed_us) = (args.kill_after, killed_us.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(after)).await;
            killed_us.store(stats::now_us(), Ordering::Relaxed);
            let killed = tokio::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .await;
            eprintln!("\nbroker-bench: killed {pid} (SIGKILL): {killed:?}");
        });
    }
    let mut last_line = Instant::now();
    while publishers.iter().any(|p| !p.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !args.quiet && last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            let t = publish_start.elapsed().as_secs_f64();
            let (a, r) = (acked.load(Ordering::Relaxed), counts(&groups).received);
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
        .zip(tool_cpu(&worker_pids))
        .map(|(a, b)| b - a);

    // Drain: wait until every live subscriber has every acknowledged event.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    loop {
        let c = counts(&groups);
        if c.live_received >= inserts * c.live as u64 || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_seconds = publish_start.elapsed().as_secs_f64();
    if !args.quiet {
        eprintln!();
    }
    let mut totals = Counts::default();
    let mut latency = histogram();
    let mut first_error = None;
    for group in groups {
        let done = group.finish().await?;
        totals = totals.add(done.counts);
        done.merge_latency(&mut latency);
        first_error = first_error.or(done.first_error);
    }
    if let Some(e) = &first_error {
        eprintln!("{} subscribers failed, first: {e}", totals.failed);
    }
    let rss_end = args.server_pid.and_then(system::rss_kib);
    let nodes_end = node_rss(&pids);
    let url_count = args.url.split(',').count().max(1);
    let nodes = if pids.len() > 1 {
        pids.iter()
            .enumerate()
            .map(|(i, &pid)| {
                // Subscribers this node held: every one whose index maps to its URL.
                let held = (0..connected.synced).filter(|s| s % url_count == i).count();
                report::NodeMemory {
                    pid,
                    rss_before_kib: nodes_before[i],
                    rss_idle_kib: nodes_idle[i],
                    rss_end_kib: nodes_end[i],
                    subscribers: held,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let killed = killed_us.load(Ordering::Relaxed);
    let failover_seconds = (killed > 0 && totals.reconnected > 0)
        .then(|| totals.last_reconnect_us.saturating_sub(killed) as f64 / 1e6);
    let results = Results {
        nodes,
        reconnected: totals.reconnected,
        failover_seconds,
        workers,
        subscribers_synced: totals.synced,
        subscribers_failed: totals.failed,
        first_failure: first_error,
        subscribers_unconnected: args
            .subscribers
            .saturating_sub(connected.synced + connected.failed),
        connect_seconds,
        connect_rate: connected.synced as f64 / connect_seconds.max(1e-9),
        inserts,
        insert_errors,
        inserts_per_second: inserts as f64 / publish_seconds.max(1e-9),
        insert_latency: Summary::of(&insert_latency),
        deliveries: totals.received,
        deliveries_per_second: totals.received as f64 / total_seconds.max(1e-9),
        delivery_latency: Summary::of(&latency),
        lost: (inserts * totals.live as u64).saturating_sub(totals.live_received),
        duplicated: totals.duplicates,
        rss_before_kib: rss_before,
        rss_idle_kib: rss_idle,
        rss_end_kib: rss_end,
        bytes_per_idle_subscriber: rss_before
            .zip(rss_idle)
            .map(|(b, i)| (i.saturating_sub(b) * 1024) as f64 / connected.synced.max(1) as f64),
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
