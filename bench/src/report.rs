//! The results of a run, as JSON and as a Markdown table.

use serde::Serialize;

use crate::config::Args;
use crate::stats::Summary;

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct Results {
    /// The run's settings.
    pub args: Args,
    /// Worker processes that held the subscribers (0: this process did).
    pub workers: usize,
    /// Subscribers that reached the live phase.
    pub subscribers_synced: usize,
    /// Subscribers whose stream failed.
    pub subscribers_failed: usize,
    /// Why the first of them failed (as its client reported it).
    pub first_failure: Option<String>,
    /// Subscribers still not connected when `--connect-timeout` ran out.
    pub subscribers_unconnected: usize,
    /// Seconds until every subscriber was connected and synced.
    pub connect_seconds: f64,
    /// Subscribers connected per second.
    pub connect_rate: f64,
    /// Publishes acknowledged.
    pub inserts: u64,
    /// Publishes that failed.
    pub insert_errors: u64,
    /// Acknowledged publishes per second.
    pub inserts_per_second: f64,
    /// Publish latency.
    pub insert_latency: Summary,
    /// Deliveries received (distinct).
    pub deliveries: u64,
    /// Deliveries per second over the publishing period and the drain.
    pub deliveries_per_second: f64,
    /// Insert → delivery latency.
    pub delivery_latency: Summary,
    /// Acknowledged publishes some subscriber never received.
    pub lost: u64,
    /// Deliveries received twice (or out of order).
    pub duplicated: u64,
    /// Server RSS before the subscribers connected, KiB.
    pub rss_before_kib: Option<u64>,
    /// Server RSS with every subscriber connected and idle, KiB.
    pub rss_idle_kib: Option<u64>,
    /// Server RSS at the end, KiB.
    pub rss_end_kib: Option<u64>,
    /// (idle − before) / subscribers, bytes.
    pub bytes_per_idle_subscriber: Option<f64>,
    /// Server CPU seconds used during the publishing period.
    pub server_cpu_seconds: Option<f64>,
    /// This tool's own CPU seconds during the publishing period.
    pub tool_cpu_seconds: Option<f64>,
    /// Seconds `--snapshot-readers` new subscribers took to receive the snapshot of
    /// `--snapshot-events` events (until the last had it).
    pub snapshot_seconds: Option<f64>,
    /// Server memory after each step of `--memory-step` subscribers.
    pub memory_series: Vec<MemoryPoint>,
    /// Subscribers that opened their stream again on another node (`--reconnect`).
    pub reconnected: usize,
    /// From `--kill-pid`'s kill until the last of them had caught up (its `$synced` after the
    /// replay), seconds.
    pub failover_seconds: Option<f64>,
    /// Each node's memory, when `--node-pids` named the nodes of a cluster.
    pub nodes: Vec<NodeMemory>,
}

/// One cluster node's memory over a run.
#[derive(Debug, Clone, Serialize)]
pub struct NodeMemory {
    /// The node's pid.
    pub pid: u32,
    /// Subscribers connected to it (those whose URL was its).
    pub subscribers: usize,
    /// RSS before the subscribers connected, KiB.
    pub rss_before_kib: Option<u64>,
    /// RSS with every subscriber connected and idle, KiB.
    pub rss_idle_kib: Option<u64>,
    /// RSS at the end, KiB.
    pub rss_end_kib: Option<u64>,
}

/// Server memory with this many idle subscribers connected.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryPoint {
    /// Subscribers connected and synced.
    pub subscribers: usize,
    /// Server resident memory, KiB.
    pub rss_kib: Option<u64>,
}

/// The subscriber counts to stop at: every `step` up to `total`, and `total` itself
/// (just `total` when `step` is 0).
pub fn steps(total: usize, step: usize) -> Vec<usize> {
    if step == 0 || step >= total {
        return vec![total];
    }
    let mut out: Vec<usize> = (1..).map(|i| i * step).take_while(|&n| n < total).collect();
    out.push(total);
    out
}

impl Results {
    /// A Markdown table of the main figures.
    pub fn markdown(&self) -> String {
        let a = &self.args;
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("–".to_owned(), |v| format!("{v:.1} {unit}"));
        let mut rows = vec![
            ("profile", format!("{:?}", a.profile).to_lowercase()),
            (
                "subscribers (synced / failed / unconnected)",
                format!(
                    "{} ({} / {} / {}){}",
                    a.subscribers,
                    self.subscribers_synced,
                    self.subscribers_failed,
                    self.subscribers_unconnected,
                    match self.workers {
                        0 => String::new(),
                        n => format!(", over {n} worker processes"),
                    }
                ),
            ),
        ];
        if let Some(failure) = &self.first_failure {
            rows.push(("first subscriber failure", failure.replace('|', "\\|")));
        }
        rows.extend([
            (
                "publishers, target rate",
                format!(
                    "{}, {}{}",
                    a.publishers,
                    if a.rate > 0.0 {
                        format!("{} events/s", a.rate)
                    } else {
                        "flat out".into()
                    },
                    match a.batch {
                        1 => String::new(),
                        n => format!(", batches of {n}"),
                    }
                ),
            ),
            (
                "connection set-up",
                format!(
                    "{:.0} /s ({:.2} s)",
                    self.connect_rate, self.connect_seconds
                ),
            ),
            (
                "inserts",
                format!(
                    "{} ({:.0} /s, {} errors)",
                    self.inserts, self.inserts_per_second, self.insert_errors
                ),
            ),
            (
                "insert latency p50 / p99 / max",
                format!(
                    "{:.2} / {:.2} / {:.2} ms",
                    self.insert_latency.p50_ms,
                    self.insert_latency.p99_ms,
                    self.insert_latency.max_ms
                ),
            ),
            (
                "deliveries",
                format!("{} ({:.0} /s)", self.deliveries, self.deliveries_per_second),
            ),
            (
                "delivery latency p50 / p90 / p99 / p99.9 / max",
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} / {:.2} ms",
                    self.delivery_latency.p50_ms,
                    self.delivery_latency.p90_ms,
                    self.delivery_latency.p99_ms,
                    self.delivery_latency.p999_ms,
                    self.delivery_latency.max_ms
                ),
            ),
            (
                "lost / duplicated",
                format!("{} / {}", self.lost, self.duplicated),
            ),
            (
                "server RSS before / idle / end",
                format!(
                    "{} / {} / {}",
                    opt(self.rss_before_kib.map(|v| v as f64 / 1024.0), "MiB"),
                    opt(self.rss_idle_kib.map(|v| v as f64 / 1024.0), "MiB"),
                    opt(self.rss_end_kib.map(|v| v as f64 / 1024.0), "MiB")
                ),
            ),
            (
                "memory per idle subscriber",
                opt(self.bytes_per_idle_subscriber, "B"),
            ),
            (
                "CPU seconds server / load tool",
                format!(
                    "{} / {}",
                    opt(self.server_cpu_seconds, "s"),
                    opt(self.tool_cpu_seconds, "s")
                ),
            ),
        ]);
        if a.reconnect {
            rows.push((
                "failover: subscribers reconnected, last one caught up ($synced) after the kill",
                format!("{} , {}", self.reconnected, opt(self.failover_seconds, "s")),
            ));
        }
        if let Some(s) = self.snapshot_seconds {
            rows.push((
                "snapshot",
                if a.snapshot_readers > 1 {
                    format!(
                        "{} events to {} subscribers at once in {:.3} s",
                        a.snapshot_events, a.snapshot_readers, s
                    )
                } else {
                    format!("{} events in {:.3} s", a.snapshot_events, s)
                },
            ));
        }
        let mut out = format!("| {} | |\n|---|---|\n", a.label);
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        if !self.nodes.is_empty() {
            out.push_str("\n| node (pid) | subscribers | RSS before / idle / end | per idle subscriber |\n|---|---|---|---|\n");
            let mib = |v: Option<u64>| opt(v.map(|v| v as f64 / 1024.0), "MiB");
            for (i, n) in self.nodes.iter().enumerate() {
                let per = n
                    .rss_before_kib
                    .zip(n.rss_idle_kib)
                    .filter(|_| n.subscribers > 0)
                    .map(|(b, i)| (i.saturating_sub(b) * 1024) as f64 / n.subscribers as f64);
                out.push_str(&format!(
                    "| {} ({}) | {} | {} / {} / {} | {} |\n",
                    i + 1,
                    n.pid,
                    n.subscribers,
                    mib(n.rss_before_kib),
                    mib(n.rss_idle_kib),
                    mib(n.rss_end_kib),
                    opt(per, "B")
                ));
            }
        }
        if !self.memory_series.is_empty() {
            out.push_str("\n| idle subscribers | server RSS | per subscriber over the first step |\n|---|---|---|\n");
            let first = self
                .memory_series
                .first()
                .and_then(|p| p.rss_kib.map(|r| (p.subscribers, r)));
            for p in &self.memory_series {
                let per = first
                    .zip(p.rss_kib)
                    .filter(|((n0, _), _)| p.subscribers > *n0)
                    .map(|((n0, r0), r)| {
                        format!(
                            "{:.0} B",
                            (r.saturating_sub(r0) * 1024) as f64 / (p.subscribers - n0) as f64
                        )
                    })
                    .unwrap_or_else(|| "–".into());
                let rss = p
                    .rss_kib
                    .map_or("–".into(), |r| format!("{:.1} MiB", r as f64 / 1024.0));
                out.push_str(&format!("| {} | {rss} | {per} |\n", p.subscribers));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::steps;

    #[test]
    fn steps_end_at_the_total() {
        assert_eq!(steps(10, 0), vec![10]);
        assert_eq!(steps(10, 20), vec![10]);
        assert_eq!(steps(10, 5), vec![5, 10]);
        assert_eq!(steps(10, 3), vec![3, 6, 9, 10]);
    }
}
