//! The process's open-file limit, and the stream cap that keeps it from being reached.
//!
//! Every event stream holds a socket. A process that runs out of file descriptors cannot
//! accept connections at all: new clients then wait in the kernel's accept queue with no
//! answer, and inserts and health checks stall with them. So Broker raises its soft limit to
//! the hard limit at start, and admits streams only up to that limit less a reserve, so that
//! the stream beyond it gets a clear 503 and everything else keeps working.

/// File descriptors kept free of streams: the database, the listener, inserts, health checks.
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft open-file limit to the hard limit; returns the soft limit now in force
/// (`None` where it cannot be read).
pub fn raise_open_files() -> Option<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().ok()?;
    if soft < hard && rlimit::Resource::NOFILE.set(hard, hard).is_err() {
        return Some(soft);
    }
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

/// The most streams to admit: `configured`, or fewer when the open-file limit is lower.
pub fn stream_cap(configured: u64, open_files: Option<u64>) -> u64 {
    match open_files {
        Some(limit) => configured.min(limit.saturating_sub(RESERVED_FDS).max(1)),
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_below_the_open_file_limit() {
        assert_eq!(stream_cap(100_000, Some(20_000)), 20_000 - RESERVED_FDS);
        assert_eq!(stream_cap(500, Some(20_000)), 500);
        assert_eq!(stream_cap(100_000, None), 100_000);
        assert_eq!(stream_cap(100, Some(10)), 1, "never zero");
    }
}
