//! What the tool reads from and asks of the operating system.

use std::net::{IpAddr, Ipv4Addr};

/// Raises the open-file limit to the hard limit; returns (soft, hard) after the attempt.
pub fn raise_open_files() -> (u64, u64) {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    rlimit::Resource::NOFILE.get().unwrap_or((0, 0))
}

/// Resident memory of a process in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system) of a process in seconds, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_seconds_in(&format!("/proc/{pid}/stat"))
}

/// CPU time (user + system) in seconds from a `stat` file of /proc (a process's, or
/// `/proc/thread-self/stat` for the calling thread).
pub fn cpu_seconds_in(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Source address of connection `i`: 127.0.0.2, 127.0.0.3, ... (`None`: the default).
pub fn source_addr(source_addrs: u8, i: usize) -> Option<IpAddr> {
    (source_addrs > 0).then(|| {
        let k = (i % usize::from(source_addrs)) as u8;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + k))
    })
}
