//! `--scenario half-open`: N connections (25,000 by default) from worker processes, each
//! sending `GET /health HTTP/1.1` and then nothing, while new connections probe `/health`
//! and `/insert`. Reports the probes' latency and how many went unanswered, and when the
//! server closed each half-open connection. Ends at `--duration` (default: the header
//! timeout plus 10 s) after the attack began, or as soon as the server has closed them all.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use super::{progress, progress_done, start_probes};
use crate::config::Args;
use crate::hostile::half_open_workers::Attack;
use crate::hostile::probe::ProbeReport;
use crate::hostile::rss::{Memory, RssSampler};
use crate::hostile::{Goal, Outcome, Setup, ms, table};
use crate::stats::Summary;

/// Probe latency p99 asked for under attack.
const PROBE_P99_MS: f64 = 50.0;

/// What became of the half-open connections.
#[derive(Debug, Serialize)]
pub struct HalfOpen {
    /// Connections asked for.
    pub asked: usize,
    /// Connected with the request line sent.
    pub opened: u64,
    /// Could not connect within 5 s (a server that stopped accepting).
    pub failed: u64,
    /// Why the first one failed.
    pub first_error: Option<String>,
    /// Still connecting when the run ended.
    pub pending: u64,
    /// Seconds from the attack's start until every connection was open or had failed.
    pub all_opened_after_s: Option<f64>,
    /// Closed by the server.
    pub closed: u64,
    /// Closed by the server within the header timeout plus 5 s.
    pub closed_in_time: u64,
    /// Closed by the server later than that.
    pub closed_late: u64,
    /// Closed after some bytes of answer (such as a 408).
    pub answered: u64,
    /// Open when the run ended (the tool closed them).
    pub still_open: u64,
    /// Time from opening to the server's close.
    pub close_after: Summary,
}

/// Runs the scenario.
pub async fn run(args: &Args, setup: &Setup) -> Result<Outcome, String> {
    let h = &args.hostile;
    let asked = h.half_open.unwrap_or(25_000);
    let seconds = args.duration_or(h.header_timeout + 10.0);
    let rss = RssSampler::start(args.server_pid, Duration::from_millis(250), h.rss_kill_mib);
    let idle = rss.now_kib();
    let (health, insert) = start_probes(args, setup);
    // A second of probes before the attack, for comparison.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let attack = Attack::spawn(args, asked, false, seconds)?;
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut all_opened_after = None;
    let mut printed = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let c = attack.counts();
        let t = started.elapsed().as_secs_f64();
        if all_opened_after.is_none() && c.opened + c.failed >= asked as u64 {
            all_opened_after = Some(t);
        }
        if printed.elapsed() >= Duration::from_secs(1) {
            printed = Instant::now();
            progress(
                args,
                format_args!(
                    "[{t:5.1}s] half-open opened {} failed {} open {} closed {} (in time {})",
                    c.opened, c.failed, c.open_now, c.closed, c.closed_in_time
                ),
            );
        }
        if Instant::now() >= deadline
            || (all_opened_after.is_some() && c.open_now == 0)
            || rss.server_gone()
        {
            break;
        }
    }
    progress_done(args);
    let run_seconds = started.elapsed().as_secs_f64();
    let done = attack.finish().await?;
    let (health, insert) = (health.finish().await, insert.finish().await);
    let end = rss.now_kib();
    let killed = rss.killed();
    let series = rss.stop();
    let c = done.counts;
    let result = HalfOpen {
        asked,
        opened: c.opened,
        failed: c.failed,
        first_error: done.first_error.clone(),
        pending: c.attempted.saturating_sub(c.opened + c.failed),
        all_opened_after_s: all_opened_after,
        closed: c.closed,
        closed_in_time: c.closed_in_time,
        closed_late: c.closed - c.closed_in_time,
        answered: c.answered,
        still_open: c.opened.saturating_sub(c.closed),
        close_after: Summary::of(&done.close_histogram()),
    };
    let memory = Memory::new(idle, &series, end);
    let goals = goals(h.close_deadline(), &result, &health, &insert);
    let mut markdown = markdown(
        args,
        run_seconds,
        &result,
        &health,
        &insert,
        &memory,
        &goals,
    );
    super::note_killed(&mut markdown, &killed);
    let json = json!({
        "scenario": "half-open",
        "args": args,
        "run_seconds": run_seconds,
        "half_open": result,
        "health": health,
        "insert": insert,
        "memory": memory,
        "rss_series": series,
        "server_killed": killed,
        "goals": goals,
    });
    Ok(Outcome {
        json,
        markdown,
        ok: true,
    })
}

fn probe_goal(name: &str, p: &ProbeReport) -> Goal {
    Goal::new(
        name,
        format!(
            "p99 {}, max {}, {} of {} unanswered",
            ms(p.latency.p99_ms),
            ms(p.latency.max_ms),
            p.unanswered,
            p.sent
        ),
        p.latency.p99_ms <= PROBE_P99_MS && p.unanswered == 0 && p.answered > 0,
    )
}

fn goals(deadline: f64, r: &HalfOpen, health: &ProbeReport, insert: &ProbeReport) -> Vec<Goal> {
    vec![
        probe_goal(
            "`/health` p99 ≤ 50 ms throughout, every probe answered",
            health,
        ),
        probe_goal(
            "`/insert` p99 ≤ 50 ms throughout, every probe answered",
            insert,
        ),
        Goal::new(
            &format!("every half-open connection closed within {deadline} s"),
            format!(
                "{} of {} opened ({} later, {} still open)",
                r.closed_in_time, r.opened, r.closed_late, r.still_open
            ),
            r.opened > 0 && r.closed_in_time == r.opened,
        ),
    ]
}

fn markdown(
    args: &Args,
    seconds: f64,
    r: &HalfOpen,
    health: &ProbeReport,
    insert: &ProbeReport,
    memory: &Memory,
    goals: &[Goal],
) -> String {
    let h = &args.hostile;
    let rows = [
        ("scenario", "half-open".to_owned()),
        (
            "half-open connections asked / opened / failed / pending",
            format!(
                "{} / {} / {} / {} (`GET {} HTTP/1.1` then nothing; {} worker processes, {} source addresses)",
                r.asked,
                r.opened,
                r.failed,
                r.pending,
                h.half_open_path,
                h.attack_workers,
                h.attack_addrs
            ),
        ),
        (
            "all opened (or failed) after",
            r.all_opened_after_s
                .map_or("not within the run".into(), |t| format!("{t:.1} s")),
        ),
        (
            "closed by the server in time / later / still open at the end",
            format!(
                "{} / {} / {} (in time: within {} s)",
                r.closed_in_time,
                r.closed_late,
                r.still_open,
                h.close_deadline()
            ),
        ),
        (
            "time to the server's close p50 / p99 / max",
            if r.closed == 0 {
                "none closed".into()
            } else {
                format!(
                    "{:.2} / {:.2} / {:.2} s",
                    r.close_after.p50_ms / 1000.0,
                    r.close_after.p99_ms / 1000.0,
                    r.close_after.max_ms / 1000.0
                )
            },
        ),
        ("`/health` probes p50 / p99 / max", health.row()),
        ("`/insert` probes p50 / p99 / max", insert.row()),
        ("server RSS idle / peak / end", memory.row()),
        ("run", format!("{seconds:.1} s of attack")),
    ];
    let mut out = table(&args.label, &rows, goals);
    if let Some(e) = &r.first_error {
        out.push_str(&format!("\nfirst connection that failed to open: {e}\n"));
    }
    out
}
