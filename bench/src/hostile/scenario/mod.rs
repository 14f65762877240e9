//! The hostile scenarios, one file each, and what they share: the probes of `/health` and
//! `/insert`, the progress line.

pub mod half_open;
pub mod login_flood;
pub mod soak;
pub mod stalled;

use std::time::Duration;

use crate::config::Args;
use crate::hostile::probe::{Kind, Prober};
use crate::hostile::{Setup, WELL_BEHAVED};

/// Starts probing `/health` and `/insert` (on the channel `<channel>-probe`).
pub fn start_probes(args: &Args, setup: &Setup) -> (Prober, Prober) {
    let h = &args.hostile;
    let every = Duration::from_secs_f64(h.probe_interval.max(0.001));
    let timeout = Duration::from_secs_f64(h.probe_timeout.max(0.001));
    let health = Prober::start(
        "health",
        Kind::Health,
        setup.target.clone(),
        WELL_BEHAVED,
        every,
        timeout,
    );
    let insert = Prober::start(
        "insert",
        Kind::Insert {
            token: setup.token.clone(),
            channel: format!("{}-probe", args.channel),
        },
        setup.target.clone(),
        WELL_BEHAVED,
        every,
        timeout,
    );
    (health, insert)
}

/// Rewrites the progress line on stderr (unless `--quiet`).
pub fn progress(args: &Args, line: std::fmt::Arguments<'_>) {
    if !args.quiet {
        eprint!("\r{line}    ");
    }
}

/// Adds the guard's kill, if it killed the server, below a table.
pub fn note_killed(markdown: &mut String, killed: &Option<String>) {
    if let Some(why) = killed {
        markdown.push_str(&format!("\n**the server was killed**: {why}\n"));
    }
}

/// Ends the progress line.
pub fn progress_done(args: &Args) {
    if !args.quiet {
        eprintln!();
    }
}
