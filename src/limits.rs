//! The process's open-file limit, and the connection and stream caps that keep it from being
//! reached.
//!
//! Every connection holds a socket. A process that runs out of file descriptors cannot accept
//! connections at all: new clients then wait in the kernel's accept queue with no answer, and
//! inserts and health checks stall with them. So Broker raises its soft limit to the hard
//! limit at start and holds connections below it (`--max-connections`, default that limit
//! less [`PROCESS_FDS`]), and event streams below that again, so that a full house of streams
//! still leaves connections for inserts, logins and health checks.

/// File descriptors kept free of streams: the database, the listener, inserts, health checks.
pub const RESERVED_FDS: u64 = 256;

/// File descriptors kept free of connections: the database files, the listener, the runtime,
/// and the few connections being closed at any moment to make room for new ones.
pub const PROCESS_FDS: u64 = 128;

/// Connections kept free of streams (at most a quarter of `--max-connections`).
pub const CONNECTIONS_FOR_REQUESTS: u64 = 128;

/// Raises the soft open-file limit to the hard limit; returns the soft limit now in force
/// (`None` where it cannot be read).
pub fn raise_open_files() -> Option<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().ok()?;
    if soft < hard && rlimit::Resource::NOFILE.set(hard, hard).is_err() {
        return Some(soft);
    }
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

/// The most connections to hold: `configured`, or fewer when the open-file limit is lower
/// (unbounded when neither is known).
pub fn connection_cap(configured: Option<u64>, open_files: Option<u64>) -> u64 {
    let by_files = open_files.map(|limit| limit.saturating_sub(PROCESS_FDS).max(1));
    match (configured, by_files) {
        (Some(configured), Some(by_files)) => configured.min(by_files),
        (Some(cap), None) | (None, Some(cap)) => cap,
        (None, None) => u64::MAX,
    }
}

/// The most streams to admit: `configured`, or fewer when the open-file limit or the
/// connection cap is lower, so that streams never take the connections held back for requests.
pub fn stream_cap(configured: u64, open_files: Option<u64>, max_connections: u64) -> u64 {
    let by_connections =
        max_connections.saturating_sub(CONNECTIONS_FOR_REQUESTS.min(max_connections / 4));
    let by_files = open_files.map_or(u64::MAX, |limit| limit.saturating_sub(RESERVED_FDS));
    configured.min(by_connections).min(by_files).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_leave_room_below_the_open_file_limit() {
        let conns = connection_cap(None, Some(20_000));
        assert_eq!(conns, 20_000 - PROCESS_FDS);
        assert_eq!(connection_cap(Some(500), Some(20_000)), 500);
        assert_eq!(connection_cap(Some(50_000), Some(20_000)), conns);
        assert_eq!(connection_cap(None, None), u64::MAX);

        assert_eq!(
            stream_cap(100_000, Some(20_000), conns),
            20_000 - RESERVED_FDS
        );
        assert_eq!(stream_cap(500, Some(20_000), conns), 500);
        assert_eq!(stream_cap(100_000, None, u64::MAX), 100_000);
        assert_eq!(stream_cap(100, Some(10), 1), 1, "never zero");
        // A small connection cap keeps a quarter of it for requests.
        assert_eq!(stream_cap(100_000, Some(20_000), 40), 30);
        // The seed's 300-file test: 44 streams.
        assert_eq!(
            stream_cap(100_000, Some(300), connection_cap(None, Some(300))),
            44
        );
    }
}
