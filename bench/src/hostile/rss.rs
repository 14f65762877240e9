//! The server's resident memory, read from /proc at a fixed interval while a scenario runs,
//! with a guard: a server whose RSS passes a limit is killed, so that a hostile scenario
//! cannot take the machine (the kernel's OOM killer might pick another process).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use broker_bench::system;

/// One reading.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssPoint {
    /// Seconds since the sampler started.
    pub t_s: f64,
    /// Server RSS, KiB.
    pub rss_kib: u64,
}

/// How often the guard reads the RSS, whatever the series' interval.
const GUARD_EVERY: Duration = Duration::from_millis(100);

/// Reads the server's RSS every interval in a task of its own.
pub struct RssSampler {
    pid: Option<u32>,
    started: Instant,
    series: Arc<Mutex<Vec<RssPoint>>>,
    killed: Arc<Mutex<Option<String>>>,
    task: Option<JoinHandle<()>>,
}

/// The memory figures of a run, in MiB.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    /// Before the attack or load (after the scenario's own set-up).
    pub idle_mib: Option<f64>,
    /// The highest reading.
    pub peak_mib: Option<f64>,
    /// Peak minus idle.
    pub peak_over_idle_mib: Option<f64>,
    /// At the end.
    pub end_mib: Option<f64>,
}

impl RssSampler {
    /// Starts reading the RSS of `pid` every `every` (nothing without a pid); kills the
    /// process (SIGKILL) if its RSS passes `kill_mib` MiB (0: never).
    pub fn start(pid: Option<u32>, every: Duration, kill_mib: u64) -> Self {
        let started = Instant::now();
        let series = Arc::new(Mutex::new(Vec::new()));
        let killed = Arc::new(Mutex::new(None));
        let task = pid.map(|pid| {
            let (series, killed) = (series.clone(), killed.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every.min(GUARD_EVERY));
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut next_point = Instant::now();
                loop {
                    tick.tick().await;
                    let Some(rss_kib) = system::rss_kib(pid) else {
                        return;
                    };
                    let t_s = started.elapsed().as_secs_f64();
                    if kill_mib > 0 && rss_kib > kill_mib * 1024 {
                        let why = kill(pid, rss_kib, kill_mib, t_s).await;
                        if let Ok(mut s) = series.lock() {
                            s.push(RssPoint { t_s, rss_kib });
                        }
                        if let Ok(mut k) = killed.lock() {
                            *k = Some(why);
                        }
                        return;
                    }
                    if Instant::now() >= next_point {
                        next_point += every;
                        if let Ok(mut s) = series.lock() {
                            s.push(RssPoint { t_s, rss_kib });
                        }
                    }
                }
            })
        });
        Self {
            pid,
            started,
            series,
            killed,
            task,
        }
    }

    /// Seconds since the sampler started (the series' clock).
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Why the guard killed the server, if it did.
    pub fn killed(&self) -> Option<String> {
        self.killed.lock().ok().and_then(|k| k.clone())
    }

    /// Whether the server is gone (killed by the guard, or exited): waiting on it is over.
    pub fn server_gone(&self) -> bool {
        self.killed().is_some() || self.pid.is_some_and(|pid| system::rss_kib(pid).is_none())
    }

    /// The RSS now, KiB (read at once, and kept in the series).
    pub fn now_kib(&self) -> Option<u64> {
        let rss_kib = system::rss_kib(self.pid?)?;
        if let Ok(mut s) = self.series.lock() {
            s.push(RssPoint {
                t_s: self.started.elapsed().as_secs_f64(),
                rss_kib,
            });
        }
        Some(rss_kib)
    }

    /// The RSS now, KiB, read at once but not kept in the series (for progress lines).
    pub fn peek_kib(&self) -> Option<u64> {
        system::rss_kib(self.pid?)
    }

    /// The highest reading so far, KiB.
    pub fn peak_kib(&self) -> Option<u64> {
        let s = self.series.lock().ok()?;
        s.iter().map(|p| p.rss_kib).max()
    }

    /// Stops reading; the series in time order.
    pub fn stop(mut self) -> Vec<RssPoint> {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let mut series = self.series.lock().map(|s| s.clone()).unwrap_or_default();
        series.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        series
    }
}

/// Kills `pid` with SIGKILL; says why.
async fn kill(pid: u32, rss_kib: u64, kill_mib: u64, t_s: f64) -> String {
    let status = tokio::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .await;
    let why = format!(
        "server RSS {:.0} MiB passed --rss-kill-mib {kill_mib} at {t_s:.1} s: killed{}",
        rss_kib as f64 / 1024.0,
        match status {
            Ok(s) if s.success() => String::new(),
            Ok(s) => format!(" (kill said {s})"),
            Err(e) => format!(" (could not run kill: {e})"),
        }
    );
    eprintln!("\nbroker-bench: {why}");
    why
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Memory {
    /// From the idle and end readings and the series' peak.
    pub fn new(idle_kib: Option<u64>, series: &[RssPoint], end_kib: Option<u64>) -> Self {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let peak = series.iter().map(|p| p.rss_kib).chain(end_kib).max();
        Self {
            idle_mib: idle_kib.map(mib),
            peak_mib: peak.map(mib),
            peak_over_idle_mib: peak.zip(idle_kib).map(|(p, i)| mib(p.saturating_sub(i))),
            end_mib: end_kib.map(mib),
        }
    }

    /// "idle / peak (+over) / end" for a Markdown row.
    pub fn row(&self) -> String {
        let f = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1} MiB"));
        format!(
            "{} / {} (+{}) / {}",
            f(self.idle_mib),
            f(self.peak_mib),
            f(self.peak_over_idle_mib),
            f(self.end_mib)
        )
    }
}

/// How flat a series is between two times: (min, mean, max) in MiB and the largest
/// deviation from the mean, in percent of it.
#[derive(Debug, Clone, Serialize)]
pub struct Flatness {
    /// The first reading counted is at or after this (seconds of the series' clock).
    pub from_s: f64,
    /// The last one at or before this.
    pub to_s: f64,
    /// Readings counted.
    pub points: usize,
    /// Lowest reading after warm-up.
    pub min_mib: f64,
    /// Their mean.
    pub mean_mib: f64,
    /// Highest reading after warm-up.
    pub max_mib: f64,
    /// The largest distance of a reading from the mean, in percent of the mean.
    pub deviation_percent: f64,
}

impl Flatness {
    /// Of the readings from `from` to `to` seconds; `None` when there are none.
    pub fn of(series: &[RssPoint], from: f64, to: f64) -> Option<Self> {
        let kept: Vec<f64> = series
            .iter()
            .filter(|p| p.t_s >= from && p.t_s <= to)
            .map(|p| p.rss_kib as f64 / 1024.0)
            .collect();
        if kept.is_empty() {
            return None;
        }
        let mean = kept.iter().sum::<f64>() / kept.len() as f64;
        let min = kept.iter().copied().fold(f64::MAX, f64::min);
        let max = kept.iter().copied().fold(0.0, f64::max);
        Some(Self {
            from_s: from,
            to_s: to,
            points: kept.len(),
            min_mib: min,
            mean_mib: mean,
            max_mib: max,
            deviation_percent: ((max - mean).max(mean - min) / mean.max(1e-9)) * 100.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatness_counts_only_its_window() {
        let series: Vec<RssPoint> = [
            (0.0, 10_240),
            (5.0, 90_000),
            (10.0, 102_400),
            (15.0, 112_640),
        ]
        .into_iter()
        .map(|(t_s, rss_kib)| RssPoint { t_s, rss_kib })
        .collect();
        let f = Flatness::of(&series, 10.0, 20.0).expect("two readings");
        assert_eq!(f.points, 2);
        assert!((f.mean_mib - 105.0).abs() < 1e-9);
        assert!((f.deviation_percent - 100.0 * 5.0 / 105.0).abs() < 1e-9);
        assert_eq!(Flatness::of(&series, 5.0, 10.0).map(|f| f.points), Some(2));
        assert!(Flatness::of(&series, 20.0, 30.0).is_none());
        let m = Memory::new(Some(10_240), &series, Some(51_200));
        assert_eq!(m.peak_mib, Some(110.0));
        assert_eq!(m.peak_over_idle_mib, Some(100.0));
    }
}
