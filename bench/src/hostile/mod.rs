//! Hostile clients: what one misbehaving client (or machine) does to the server, measured
//! while well-behaved clients go on using it.
//!
//! Scenarios (`--scenario`), each writing JSON (`--json`) and printing a Markdown table:
//! - `half-open`: connections that send one request line and then nothing ([`half_open`],
//!   in worker processes), while [`probe`]s time `/health` and `/insert` on new connections;
//!   when does the server close them?
//! - `stalled`: subscribers that stop reading ([`tracked`]) while large events are inserted;
//!   the server's memory ([`rss`]), then whether each receives every event in order
//!   ([`tracker`]) once it resumes.
//! - `login-flood`: concurrent wrong-password logins for one user ([`login`]) while a
//!   legitimate client logs in every 100 ms.
//! - `soak`: all of it at once for a long time, with live subscribers; server memory over
//!   time.
//!
//! Attackers use the loopback addresses 127.0.1.x, the probes and the legitimate client
//! 127.0.0.1, and subscribers 127.0.0.2 and up, so per-address limits of the server tell
//! them apart. Everything is bounded in count and time.

pub mod args;
mod cohort;
mod half_open;
mod half_open_workers;
mod login;
mod probe;
mod rss;
mod scenario;
mod tracked;
mod tracker;

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use crate::config::{Args, Scenario, Wire};
use crate::raw_http::Target;

pub use half_open_workers::serve_worker as serve_half_open_worker;

/// The probes' and the legitimate client's source address.
const WELL_BEHAVED: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One of the targets, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// What is asked.
    pub name: String,
    /// What was measured.
    pub measured: String,
    /// Whether it was met.
    pub met: bool,
}

impl Goal {
    /// A goal.
    pub fn new(name: &str, measured: String, met: bool) -> Self {
        Self {
            name: name.to_owned(),
            measured,
            met,
        }
    }
}

/// What a scenario hands back.
pub struct Outcome {
    /// Everything measured, for `--json`.
    pub json: serde_json::Value,
    /// The Markdown table printed on stdout.
    pub markdown: String,
    /// No event was lost, duplicated or out of order (the tool's own checks).
    pub ok: bool,
}

/// What every scenario starts from: an HTTP client, the run's user's token, the server.
pub struct Setup {
    /// A reqwest client (set-up requests only).
    pub http: reqwest::Client,
    /// Bearer token of `--user`.
    pub token: String,
    /// The server, for the lean client.
    pub target: Target,
}

impl Setup {
    async fn new(args: &Args) -> Result<Self, String> {
        let http = crate::clients(0)?
            .into_iter()
            .next()
            .ok_or("no HTTP client")?;
        let token = crate::token(args, &http)
            .await?
            .ok_or("the server gave no token")?;
        let url = reqwest::Url::parse(&args.url).map_err(|e| e.to_string())?;
        if url.scheme() != "http" {
            return Err("the hostile scenarios speak plain http:// only".into());
        }
        let target = Target::resolve(&url).await?;
        Ok(Self {
            http,
            token,
            target,
        })
    }
}

/// Runs the scenario of `args`, prints its table and writes its JSON; whether the tool's
/// correctness checks passed.
pub async fn run(args: Args) -> Result<bool, String> {
    if args.profile != Wire::Broker {
        return Err("the hostile scenarios speak the broker wire only".into());
    }
    let (soft, hard) = broker_bench::system::raise_open_files();
    if !args.quiet {
        eprintln!("open files: {soft} (hard limit {hard})");
    }
    let setup = Setup::new(&args).await?;
    let outcome = match args.scenario {
        Scenario::HalfOpen => scenario::half_open::run(&args, &setup).await?,
        Scenario::Stalled => scenario::stalled::run(&args, &setup).await?,
        Scenario::LoginFlood => scenario::login_flood::run(&args, &setup).await?,
        Scenario::Soak => scenario::soak::run(&args, &setup).await?,
        Scenario::Load => return Err("not a hostile scenario".into()),
    };
    println!("{}", outcome.markdown);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&outcome.json).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(outcome.ok)
}

/// A two-column Markdown table headed by the run's label, then the goals.
pub fn table(label: &str, rows: &[(&str, String)], goals: &[Goal]) -> String {
    let mut out = format!("| {label} | |\n|---|---|\n");
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
    }
    if !goals.is_empty() {
        out.push_str("\n| target | measured | met |\n|---|---|---|\n");
        for g in goals {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                g.name,
                g.measured.replace('|', "\\|"),
                if g.met { "yes" } else { "**no**" }
            ));
        }
    }
    out
}

/// Milliseconds from a summary, for goals.
pub fn ms(v: f64) -> String {
    format!("{v:.1} ms")
}
