//! `--scenario soak` (`scripts/bench.sh soak`): `--subscribers` (5,000) on one channel, of
//! which `--stalled-percent` (5 %) stop reading and `--reconnecting-percent` (1 %) reconnect
//! with `Last-Event-ID` every few seconds, the rest live; publishers at `--rate` (200/s);
//! half-open connections (2,000, reopened when closed) and wrong-password logins (10/s) in
//! the background; probes of `/health` and `/insert`. Runs `--duration` (1,800 s). The
//! server's RSS is read every `--sample-every` seconds; live subscribers must lose nothing
//! and get nothing twice; the reconnecting and (once resumed) the stalled ones must end
//! complete.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::stalled::resume;
use super::{progress, progress_done, start_probes};
use crate::config::Args;
use crate::group::{self, Counts, Group, LocalGroup, Spec, WorkerGroup};
use crate::hostile::cohort::{Cohort, CohortReport};
use crate::hostile::half_open_workers::Attack;
use crate::hostile::login::{LoginAttack, Spec as LoginSpec};
use crate::hostile::rss::{Flatness, Memory, RssSampler};
use crate::hostile::tracked::Mode;
use crate::hostile::tracker::Expected;
use crate::hostile::{Goal, Outcome, Setup, ms, table};
use crate::publisher::{self, Publisher};
use crate::stats::{Summary, histogram};
use broker_bench::system;

/// RSS deviation from its mean allowed after warm-up, percent.
const FLAT_PERCENT: f64 = 10.0;

/// Runs the scenario.
pub async fn run(args: &Args, setup: &Setup) -> Result<Outcome, String> {
    let h = &args.hostile;
    let seconds = args.duration_or(1800.0);
    let share = |percent: f64| (args.subscribers as f64 * percent / 100.0).round() as usize;
    let (stalled_n, reconnecting_n) = (share(h.stalled_percent), share(h.reconnecting_percent));
    let live_n = args
        .subscribers
        .checked_sub(stalled_n + reconnecting_n)
        .ok_or("more stalled and reconnecting subscribers than subscribers")?;
    let rss = RssSampler::start(
        args.server_pid,
        Duration::from_secs_f64(h.sample_every.max(0.1)),
        h.rss_kill_mib,
    );
    let before = rss.now_kib();

    // Live subscribers (in worker processes when asked), then the misbehaving ones.
    let mut groups = live_groups(args, setup, live_n)?;
    for (index, g) in groups.iter_mut().enumerate() {
        g.connect(group::share(
            live_n,
            index,
            args.workers.unwrap_or(0).max(1),
        ))
        .await?;
    }
    let url = reqwest::Url::parse(&format!("{}/events?channels={}", args.url, args.channel))
        .map_err(|e| e.to_string())?;
    let mut stalled = Cohort::new(Mode::Stall {
        rcvbuf: h.stalled_rcvbuf,
    });
    let mut reconnecting = Cohort::new(Mode::Reconnect {
        every: Duration::from_secs_f64(h.reconnect_every.max(0.1)),
    });
    for i in 0..stalled_n + reconnecting_n {
        let local = system::source_addr(args.source_addrs, live_n + i);
        let cohort = if i < stalled_n {
            &mut stalled
        } else {
            &mut reconnecting
        };
        cohort.spawn(&url, &setup.token, local);
    }
    let connect_deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout);
    loop {
        let c = counts(&groups);
        if c.synced + c.failed >= live_n {
            break;
        }
        if Instant::now() >= connect_deadline {
            for g in &mut groups {
                g.settle().await?;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let timeout = Duration::from_secs_f64(args.connect_timeout);
    if !stalled.wait_synced(timeout).await || !reconnecting.wait_synced(timeout).await {
        return Err("the stalled or reconnecting subscribers did not all connect".into());
    }
    let connected = counts(&groups);
    let idle = rss.now_kib();

    // The attacks, the probes and the publishers.
    let started = Instant::now();
    let load_from = rss.elapsed();
    let deadline = started + Duration::from_secs_f64(seconds);
    let half_open = Attack::spawn(args, h.half_open.unwrap_or(2000), true, seconds)?;
    let logins = LoginAttack::start(LoginSpec {
        target: setup.target.clone(),
        user: args.user.clone(),
        clients: h.login_clients.max(1),
        total: None,
        rate: Some(h.login_rate.filter(|r| *r > 0.0).unwrap_or(10.0)),
        addrs: h.attack_addrs,
        timeout: Duration::from_secs_f64(h.request_timeout.max(0.001)),
        deadline,
    });
    let (health, insert) = start_probes(args, setup);
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for index in 0..args.publishers.max(1) {
        let p = Publisher {
            index,
            wire: args.profile,
            base: args.url.clone(),
            channel: args.channel.clone(),
            token: Some(setup.token.clone()),
            http: publisher::Client::for_url(&args.url, &setup.http).await?,
            rate: args.rate / args.publishers.max(1) as f64,
            batch: 1,
            pad: "x".repeat(args.payload),
            acked: acked.clone(),
            record_ids: true,
            budget: None,
            stop: Some(stop.clone()),
        };
        publishers.push(tokio::spawn(p.run(deadline)));
    }
    while publishers.iter().any(|p| !p.is_finished()) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if rss.server_gone() {
            stop.store(true, Ordering::Relaxed);
        }
        let t = started.elapsed().as_secs_f64();
        let (c, ho) = (counts(&groups), half_open.counts());
        progress(
            args,
            format_args!(
                "[{t:6.0}s] inserts {} deliveries {} (reconnecting subscribers {}) half-open {} wrong logins {} RSS {:.0} MiB",
                acked.load(Ordering::Relaxed),
                c.received,
                reconnecting.received(),
                ho.open_now,
                logins.sent(),
                rss.peek_kib().unwrap_or(0) as f64 / 1024.0
            ),
        );
    }
    progress_done(args);
    let run_seconds = started.elapsed().as_secs_f64();
    let load_to = rss.elapsed();
    let (mut inserts, mut insert_errors, mut ids) = (0, 0, Vec::new());
    let mut insert_latency = histogram();
    for p in publishers {
        let outcome = p.await.map_err(|e| e.to_string())?;
        inserts += outcome.acknowledged;
        insert_errors += outcome.errors;
        ids.extend(outcome.ids);
        insert_latency
            .add(&outcome.latency)
            .map_err(|e| e.to_string())?;
    }
    let half_open = half_open.finish().await?;
    let logins = logins.finish().await;
    let (health, insert) = (health.finish().await, insert.finish().await);

    // Drain the live subscribers, then let the misbehaving ones finish.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    loop {
        let c = counts(&groups);
        if c.live_received >= inserts * c.live as u64
            || Instant::now() >= drain_deadline
            || rss.server_gone()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected = Expected::new(ids);
    reconnecting.finish(expected.last());
    let resume_seconds = resume(args, &rss, &stalled, &expected, h.resume_timeout).await;
    let deadline = Instant::now() + Duration::from_secs_f64(h.resume_timeout);
    while reconnecting.ended() < reconnecting.len()
        && Instant::now() < deadline
        && !rss.server_gone()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (stalled, reconnecting) = (stalled.report(&expected), reconnecting.report(&expected));
    let mut live = Counts::default();
    let mut latency = histogram();
    let mut first_failure = None;
    for g in groups {
        let done = g.finish().await?;
        live = live.add(done.counts);
        done.merge_latency(&mut latency);
        first_failure = first_failure.or(done.first_error);
    }
    let end = rss.now_kib();
    let killed = rss.killed();
    let series = rss.stop();
    let memory = Memory::new(idle, &series, end);
    // Steady state: from the end of the warm-up to the end of publishing.
    let flatness = Flatness::of(&series, load_from + h.warmup, load_to);
    let lost = (inserts * live.live as u64).saturating_sub(live.live_received);
    let delivery = Summary::of(&latency);
    let goals = goals(&flatness, lost, &live, live_n, &stalled, &reconnecting);
    let ok =
        lost == 0 && live.duplicates == 0 && stalled.all_complete() && reconnecting.all_complete();
    let rows = [
        ("scenario", "soak".to_owned()),
        ("run", format!("{run_seconds:.0} s")),
        (
            "live subscribers synced / failed; lost / duplicated",
            format!(
                "{} of {live_n} / {}; {lost} / {}",
                connected.synced, live.failed, live.duplicates
            ),
        ),
        (
            "delivery latency p50 / p99 / max",
            format!(
                "{} / {} / {}",
                ms(delivery.p50_ms),
                ms(delivery.p99_ms),
                ms(delivery.max_ms)
            ),
        ),
        (
            "inserts",
            format!(
                "{inserts} ({:.0} /s, {insert_errors} errors), p99 {}",
                inserts as f64 / run_seconds.max(1e-9),
                ms(Summary::of(&insert_latency).p99_ms)
            ),
        ),
        (
            "stalled subscribers, resumed",
            format!("{} in {resume_seconds:.1} s", stalled.row()),
        ),
        ("reconnecting subscribers", reconnecting.row()),
        (
            "half-open connections (reopened when closed)",
            format!(
                "{} opened, {} closed by the server ({} in time), {} failed to open",
                half_open.counts.opened,
                half_open.counts.closed,
                half_open.counts.closed_in_time,
                half_open.counts.failed
            ),
        ),
        ("wrong-password logins", logins.row()),
        ("`/health` probes", health.row()),
        ("`/insert` probes", insert.row()),
        (
            "server RSS before / idle",
            format!(
                "{} / {}",
                before.map_or("–".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                idle.map_or("–".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
            ),
        ),
        ("server RSS idle / peak / end", memory.row()),
        (
            "server RSS after warm-up min / mean / max",
            flatness
                .as_ref()
                .map_or("no readings after warm-up".into(), |f| {
                    format!(
                        "{:.1} / {:.1} / {:.1} MiB (±{:.1} %, {} readings from {:.0} to {:.0} s)",
                        f.min_mib,
                        f.mean_mib,
                        f.max_mib,
                        f.deviation_percent,
                        f.points,
                        f.from_s,
                        f.to_s
                    )
                }),
        ),
    ];
    let mut markdown = table(&args.label, &rows, &goals);
    if let Some(e) = &first_failure {
        markdown.push_str(&format!("\nfirst failed live subscriber: {e}\n"));
    }
    super::note_killed(&mut markdown, &killed);
    let json = json!({
        "scenario": "soak",
        "args": args,
        "run_seconds": run_seconds,
        "inserts": {"acknowledged": inserts, "errors": insert_errors, "latency": Summary::of(&insert_latency)},
        "live": {"subscribers": live_n, "counts": live, "lost": lost, "duplicated": live.duplicates,
                 "first_failure": first_failure, "delivery_latency": delivery},
        "stalled": stalled,
        "reconnecting": reconnecting,
        "resume_seconds": resume_seconds,
        "half_open": {"counts": half_open.counts, "first_error": half_open.first_error},
        "logins": logins,
        "health": health,
        "insert": insert,
        "memory": memory,
        "flatness": flatness,
        "rss_series": series,
        "server_killed": killed,
        "goals": goals,
    });
    Ok(Outcome { json, markdown, ok })
}

/// The live subscribers' groups: one in this process, or `--workers` worker processes.
fn live_groups(args: &Args, setup: &Setup, live_n: usize) -> Result<Vec<Group>, String> {
    let mut live_args = args.clone();
    live_args.subscribers = live_n;
    let token = Some(setup.token.clone());
    match args.workers.unwrap_or(0) {
        0 => {
            let clients = crate::clients(args.source_addrs)?;
            let spec = Spec::new(&live_args, token);
            Ok(vec![Group::Local(LocalGroup::new(spec, clients, 0, 1))])
        }
        n => (0..n)
            .map(|index| {
                WorkerGroup::spawn(&live_args, token.as_deref(), index, n).map(Group::Worker)
            })
            .collect(),
    }
}

fn counts(groups: &[Group]) -> Counts {
    groups
        .iter()
        .map(Group::counts)
        .fold(Counts::default(), Counts::add)
}

fn goals(
    flatness: &Option<Flatness>,
    lost: u64,
    live: &Counts,
    live_n: usize,
    stalled: &CohortReport,
    reconnecting: &CohortReport,
) -> Vec<Goal> {
    vec![
        Goal::new(
            "server RSS flat within ±10 % after warm-up",
            flatness
                .as_ref()
                .map_or("no readings after warm-up".into(), |f| {
                    format!("±{:.1} % around {:.1} MiB", f.deviation_percent, f.mean_mib)
                }),
            flatness
                .as_ref()
                .is_some_and(|f| f.deviation_percent <= FLAT_PERCENT),
        ),
        Goal::new(
            "live subscribers lose nothing and get nothing twice",
            format!(
                "{lost} lost, {} twice, {} of {live_n} failed",
                live.duplicates, live.failed
            ),
            lost == 0 && live.duplicates == 0 && live.failed == 0,
        ),
        Goal::new(
            "every reconnecting subscriber ends complete",
            format!("{} of {}", reconnecting.complete, reconnecting.subscribers),
            reconnecting.all_complete(),
        ),
        Goal::new(
            "every stalled subscriber, resumed, ends complete",
            format!("{} of {}", stalled.complete, stalled.subscribers),
            stalled.all_complete(),
        ),
    ]
}
