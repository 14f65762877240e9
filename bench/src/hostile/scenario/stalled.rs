//! `--scenario stalled`: S subscribers (100) open `/events` with a tiny receive buffer, read
//! up to `$synced`, and stop reading, while P publishers insert M events (4,096) of 1 MiB
//! each. The server's RSS is read every 250 ms. Then the subscribers resume (reading on, or
//! reconnecting with `Last-Event-ID` when the server cut them off) and each must receive every
//! acknowledged event in order, none twice. Inserting stops early when the server's RSS
//! passes `--rss-stop-mib`; publishing is bounded by `--duration` (default 300 s) and the
//! resumption by `--resume-timeout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::{progress, progress_done};
use crate::config::Args;
use crate::hostile::cohort::{Cohort, CohortReport};
use crate::hostile::rss::{Memory, RssSampler};
use crate::hostile::tracked::Mode;
use crate::hostile::tracker::Expected;
use crate::hostile::{Goal, Outcome, Setup, ms, table};
use crate::publisher::{self, Publisher};
use crate::stats::{Summary, histogram};
use broker_bench::system;

/// Memory above idle asked for, MiB.
const OVER_IDLE_MIB: f64 = 256.0;

/// The inserts of a run, and whether they stopped early.
pub struct Inserts {
    /// Acknowledged.
    pub acknowledged: u64,
    /// Failed.
    pub errors: u64,
    /// Publish latency.
    pub latency: Summary,
    /// The acknowledged ids.
    pub expected: Expected,
    /// Why inserting stopped before the count, if it did.
    pub stopped_early: Option<String>,
    /// Seconds of inserting.
    pub seconds: f64,
}

/// Inserts `count` events of `bytes` bytes with `--publishers` publishers, flat out, until
/// the count, `seconds`, or the server's RSS passing `stop_mib` (then it stops early).
pub async fn insert(
    args: &Args,
    setup: &Setup,
    rss: &RssSampler,
    count: u64,
    bytes: usize,
    seconds: f64,
    stop_mib: u64,
) -> Result<Inserts, String> {
    let budget = Arc::new(AtomicU64::new(count));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let pad = "x".repeat(bytes);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for index in 0..args.publishers.max(1) {
        let p = Publisher {
            index,
            wire: args.profile,
            base: args.url.clone(),
            channel: args.channel.clone(),
            token: Some(setup.token.clone()),
            http: publisher::Client::for_url(&args.url, &setup.http).await?,
            rate: 0.0,
            batch: 1,
            pad: pad.clone(),
            acked: acked.clone(),
            record_ids: true,
            budget: Some(budget.clone()),
            stop: Some(stop.clone()),
        };
        tasks.push(tokio::spawn(p.run(deadline)));
    }
    let mut stopped_early = None;
    while tasks.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if rss.server_gone() {
            stop.store(true, Ordering::Relaxed);
            stopped_early.get_or_insert_with(|| "the server is gone".to_owned());
        }
        let now_kib = rss.peek_kib().unwrap_or(0);
        if stopped_early.is_none() && now_kib > stop_mib * 1024 {
            stop.store(true, Ordering::Relaxed);
            stopped_early = Some(format!(
                "server RSS {:.0} MiB passed --rss-stop-mib {stop_mib} after {} inserts",
                now_kib as f64 / 1024.0,
                acked.load(Ordering::Relaxed)
            ));
        }
        let t = started.elapsed().as_secs_f64();
        progress(
            args,
            format_args!(
                "[{t:5.1}s] inserts {} of {count}  server RSS {:.0} MiB",
                acked.load(Ordering::Relaxed),
                now_kib as f64 / 1024.0
            ),
        );
    }
    progress_done(args);
    let seconds = started.elapsed().as_secs_f64();
    let (mut acknowledged, mut errors, mut ids) = (0, 0, Vec::new());
    let mut latency = histogram();
    for t in tasks {
        let outcome = t.await.map_err(|e| e.to_string())?;
        acknowledged += outcome.acknowledged;
        errors += outcome.errors;
        ids.extend(outcome.ids);
        latency.add(&outcome.latency).map_err(|e| e.to_string())?;
    }
    if stopped_early.is_none() && acknowledged + errors < count {
        stopped_early = Some(format!("--duration {seconds:.0} s ran out"));
    }
    Ok(Inserts {
        acknowledged,
        errors,
        latency: Summary::of(&latency),
        expected: Expected::new(ids),
        stopped_early,
        seconds,
    })
}

/// Lets `cohort` read up to the last acknowledged id; at most `timeout`. Seconds taken.
pub async fn resume(
    args: &Args,
    rss: &RssSampler,
    cohort: &Cohort,
    expected: &Expected,
    timeout: f64,
) -> f64 {
    let started = Instant::now();
    cohort.finish(expected.last());
    let deadline = started + Duration::from_secs_f64(timeout);
    let goal = expected.len() as u64 * cohort.len() as u64;
    while cohort.ended() < cohort.len() && Instant::now() < deadline && !rss.server_gone() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let t = started.elapsed().as_secs_f64();
        progress(
            args,
            format_args!(
                "[{t:5.1}s] resumed: {} of {} subscribers done, {} of {goal} deliveries",
                cohort.ended(),
                cohort.len(),
                cohort.received()
            ),
        );
    }
    progress_done(args);
    started.elapsed().as_secs_f64()
}

/// Runs the scenario.
pub async fn run(args: &Args, setup: &Setup) -> Result<Outcome, String> {
    let h = &args.hostile;
    let url = reqwest::Url::parse(&format!("{}/events?channels={}", args.url, args.channel))
        .map_err(|e| e.to_string())?;
    let mut cohort = Cohort::new(Mode::Stall {
        rcvbuf: h.stalled_rcvbuf,
    });
    for i in 0..h.stalled {
        cohort.spawn(
            &url,
            &setup.token,
            system::source_addr(args.source_addrs, i),
        );
    }
    let timeout = Duration::from_secs_f64(args.connect_timeout);
    if !cohort.wait_synced(timeout).await {
        let failed = cohort.report(&Expected::default());
        return Err(format!(
            "only {} of {} stalled subscribers connected: {}",
            failed.synced,
            h.stalled,
            failed.first_error.unwrap_or_default()
        ));
    }
    let rss = RssSampler::start(args.server_pid, Duration::from_millis(250), h.rss_kill_mib);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss.now_kib();
    let seconds = args.duration_or(300.0);
    let inserts = insert(
        args,
        setup,
        &rss,
        h.events,
        h.event_bytes,
        seconds,
        h.rss_stop_mib,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_inserts = rss.now_kib();
    let resume_seconds = resume(args, &rss, &cohort, &inserts.expected, h.resume_timeout).await;
    let report = cohort.report(&inserts.expected);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = rss.now_kib();
    let killed = rss.killed();
    let series = rss.stop();
    let memory = Memory::new(idle, &series, end);
    let goals = goals(h.events, &inserts, &memory, &report);
    let mib =
        |kib: Option<u64>| kib.map_or("–".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let rows = [
        ("scenario", "stalled".to_owned()),
        (
            "stalled subscribers",
            format!(
                "{} (SO_RCVBUF {} B, reading nothing after `$synced`)",
                h.stalled, h.stalled_rcvbuf
            ),
        ),
        (
            "inserts acknowledged / failed",
            format!(
                "{} / {} of {} × {} B, by {} publishers in {:.1} s{}",
                inserts.acknowledged,
                inserts.errors,
                h.events,
                h.event_bytes,
                args.publishers,
                inserts.seconds,
                inserts
                    .stopped_early
                    .as_ref()
                    .map_or(String::new(), |why| format!("; **stopped early**: {why}"))
            ),
        ),
        (
            "insert latency p50 / p99 / max",
            format!(
                "{} / {} / {}",
                ms(inserts.latency.p50_ms),
                ms(inserts.latency.p99_ms),
                ms(inserts.latency.max_ms)
            ),
        ),
        ("server RSS idle / peak (+ over idle) / end", memory.row()),
        ("server RSS 2 s after the inserts", mib(after_inserts)),
        (
            "resumed subscribers",
            format!("{} in {resume_seconds:.1} s", report.row()),
        ),
    ];
    let mut markdown = table(&args.label, &rows, &goals);
    if let Some(e) = &report.first_error {
        markdown.push_str(&format!("\nfirst failed subscriber: {e}\n"));
    }
    super::note_killed(&mut markdown, &killed);
    let json = json!({
        "scenario": "stalled",
        "args": args,
        "inserts": {
            "acknowledged": inserts.acknowledged,
            "errors": inserts.errors,
            "latency": inserts.latency,
            "stopped_early": inserts.stopped_early,
            "seconds": inserts.seconds,
        },
        "memory": memory,
        "rss_after_inserts_mib": after_inserts.map(|k| k as f64 / 1024.0),
        "resume_seconds": resume_seconds,
        "stalled": report,
        "rss_series": series,
        "server_killed": killed,
        "goals": goals,
    });
    Ok(Outcome {
        json,
        markdown,
        ok: report.all_complete(),
    })
}

fn goals(events: u64, inserts: &Inserts, memory: &Memory, report: &CohortReport) -> Vec<Goal> {
    let over = memory.peak_over_idle_mib.unwrap_or(f64::MAX);
    vec![
        Goal::new(
            "server RSS ≤ 256 MiB above idle",
            memory
                .peak_over_idle_mib
                .map_or("not read (no --server-pid)".into(), |o| {
                    format!(
                        "+{o:.1} MiB{}",
                        if inserts.stopped_early.is_some() {
                            " (inserting stopped early)"
                        } else {
                            ""
                        }
                    )
                }),
            over <= OVER_IDLE_MIB && inserts.stopped_early.is_none(),
        ),
        Goal::new(
            &format!("each stalled subscriber, resumed, receives all {events} in order"),
            format!(
                "{} of {} complete, each with the {} acknowledged",
                report.complete, report.subscribers, inserts.acknowledged
            ),
            report.all_complete() && inserts.acknowledged == events,
        ),
    ]
}
