//! `--scenario login-flood`: C concurrent attackers (300) send W wrong-password logins (3,000)
//! for the run's user, from the attackers' addresses, while a legitimate client logs in with
//! the right password every 100 ms from 127.0.0.1. Reports the server's peak memory, the
//! legitimate logins' latency and statuses, and the attackers' statuses (a throttling server
//! answers 429). Bounded by the total and by `--duration` (default 300 s).

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::{progress, progress_done};
use crate::config::Args;
use crate::hostile::login::{AttackReport, LoginAttack, Spec};
use crate::hostile::probe::{Kind, ProbeReport, Prober};
use crate::hostile::rss::{Memory, RssSampler};
use crate::hostile::{Goal, Outcome, Setup, WELL_BEHAVED, ms, table};

/// Peak RSS asked for during the flood.
const PEAK_MIB: f64 = 512.0;
/// Legitimate login p99 asked for, ms.
const LEGIT_P99_MS: f64 = 1000.0;

/// Runs the scenario.
pub async fn run(args: &Args, setup: &Setup) -> Result<Outcome, String> {
    let h = &args.hostile;
    let seconds = args.duration_or(300.0);
    let rss = RssSampler::start(args.server_pid, Duration::from_millis(100), h.rss_kill_mib);
    let idle = rss.now_kib();
    let timeout = Duration::from_secs_f64(h.request_timeout.max(0.001));
    let legit = Prober::start(
        "login",
        Kind::Login {
            user: args.user.clone(),
            password: args.password.clone(),
        },
        setup.target.clone(),
        WELL_BEHAVED,
        Duration::from_secs_f64(h.legit_interval.max(0.001)),
        timeout,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let attack = LoginAttack::start(Spec {
        target: setup.target.clone(),
        user: args.user.clone(),
        clients: h.login_clients.max(1),
        total: Some(h.wrong_logins),
        rate: h.login_rate.filter(|r| *r > 0.0),
        addrs: h.attack_addrs,
        timeout,
        deadline: started + Duration::from_secs_f64(seconds),
    });
    while !attack.is_finished() && !rss.server_gone() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = started.elapsed().as_secs_f64();
        progress(
            args,
            format_args!(
                "[{t:5.1}s] wrong logins sent {} answered {}  server RSS {:.0} MiB",
                attack.sent(),
                attack.answered(),
                rss.peak_kib().unwrap_or(0) as f64 / 1024.0
            ),
        );
    }
    progress_done(args);
    let attack = attack.finish().await;
    let legit = legit.finish().await;
    let end = rss.now_kib();
    let killed = rss.killed();
    let series = rss.stop();
    let memory = Memory::new(idle, &series, end);
    let goals = goals(&memory, &legit, &attack);
    let rows = [
        ("scenario", "login-flood".to_owned()),
        (
            "wrong-password logins",
            format!(
                "{} sent by {} concurrent attackers from {} addresses{}, in {:.1} s",
                attack.sent,
                h.login_clients,
                h.attack_addrs,
                h.login_rate.map_or(String::new(), |r| format!(" at {r}/s")),
                attack.seconds
            ),
        ),
        ("their answers", attack.row()),
        (
            "their latency p50 / p99 / max",
            format!(
                "{} / {} / {}",
                ms(attack.latency.p50_ms),
                ms(attack.latency.p99_ms),
                ms(attack.latency.max_ms)
            ),
        ),
        (
            "legitimate logins (every 100 ms) p50 / p99 / max",
            legit.row(),
        ),
        ("server RSS idle / peak / end", memory.row()),
    ];
    let mut markdown = table(&args.label, &rows, &goals);
    for (who, e) in [
        ("wrong login", &attack.first_error),
        ("legitimate login", &legit.first_error),
    ] {
        if let Some(e) = e {
            markdown.push_str(&format!("\nfirst unanswered {who}: {e}\n"));
        }
    }
    super::note_killed(&mut markdown, &killed);
    let json = json!({
        "scenario": "login-flood",
        "args": args,
        "attack": attack,
        "legit": legit,
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

fn goals(memory: &Memory, legit: &ProbeReport, attack: &AttackReport) -> Vec<Goal> {
    let peak = memory.peak_mib.unwrap_or(f64::MAX);
    vec![
        Goal::new(
            "server RSS ≤ 512 MiB",
            memory
                .peak_mib
                .map_or("not read (no --server-pid)".into(), |p| {
                    format!("peak {p:.1} MiB")
                }),
            peak <= PEAK_MIB,
        ),
        Goal::new(
            "a legitimate login p99 ≤ 1 s, every one answered 200",
            format!(
                "p99 {}, {} of {} answered 200, {} unanswered",
                ms(legit.latency.p99_ms),
                legit.status(200),
                legit.sent,
                legit.unanswered
            ),
            legit.latency.p99_ms <= LEGIT_P99_MS && legit.status(200) == legit.sent,
        ),
        Goal::new(
            "429s seen",
            format!(
                "{} of {} wrong logins ({} with Retry-After)",
                attack.status(429),
                attack.sent,
                attack.with_retry_after
            ),
            attack.status(429) > 0,
        ),
    ]
}
