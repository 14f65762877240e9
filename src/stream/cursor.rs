//! Where a stream stands in the commit order, and how it meets the live feed.
//!
//! The stream registers with the hub before it reads anything from the store, so every commit
//! made while it reads its history is also waiting in the hub's ring. The cursor is the id up
//! to which every record has been sent or deliberately skipped: a live commit at or below it
//! was already read from the store and is dropped, one wholly above it goes out as it is, and
//! one that straddles it goes out record by record from just past the cursor. That is the seam
//! between history and live: no gap, no duplicate. A commit whose records the hub's byte bound
//! has evicted (like a `Lagged` ring) means the stream fell behind: it catches up from the store
//! from its cursor, then meets the live feed the same way.

use crate::hub::{Commit, CommitRecords};

/// What a live commit is to a stream at its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seam {
    /// Every record of it was dealt with already (read from the store): drop it.
    Seen,
    /// Its records are gone from the hub (evicted): catch up from the store.
    Behind,
    /// Every record of it is new.
    Whole,
    /// It straddles the cursor: only the records past the cursor are new.
    Straddles,
}

/// A stream's position: the last id dealt with, and the last id sent (for `$synced`).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Cursor {
    /// Every record with an id up to this one has been sent or deliberately skipped.
    at: u64,
    /// Id of the last record sent.
    last_sent: Option<u64>,
}

impl Cursor {
    /// The last id dealt with (0 before anything).
    pub(super) fn at(&self) -> u64 {
        self.at
    }

    /// The id `$synced` announces: the last one sent, or 0.
    pub(super) fn last_sent(&self) -> u64 {
        self.last_sent.unwrap_or(0)
    }

    /// Resumes after `id`, which the client says it has (`Last-Event-ID`).
    pub(super) fn resume_after(&mut self, id: u64) {
        self.at = id;
        self.last_sent = Some(id);
    }

    /// Moves to `id` without sending anything: everything up to it is summed up already
    /// (node-sse-server's `lastEvent`s, or a `Last-Event-ID` it resumes from).
    pub(super) fn skip_to(&mut self, id: u64) {
        self.at = id;
    }

    /// A snapshot record is being sent: every record of the store below the highest of them
    /// is either in the snapshot, superseded by a version that is, or not readable.
    pub(super) fn snapshot_seen(&mut self, id: u64) {
        self.at = self.at.max(id);
    }

    /// Takes the record `id` if it is past the cursor (moving the cursor to it); `false` for
    /// one dealt with already.
    pub(super) fn pass(&mut self, id: u64) -> bool {
        if id > self.at {
            self.at = id;
            true
        } else {
            false
        }
    }

    /// A record passed by [`Self::pass`] was sent.
    pub(super) fn sent(&mut self, id: u64) {
        self.last_sent = Some(id);
    }

    /// A whole commit up to `last` was sent.
    pub(super) fn sent_through(&mut self, last: u64) {
        self.at = last;
        self.last_sent = Some(last);
    }

    /// Whether every record of `commit` was dealt with already (checked before its records
    /// are loaded from the hub).
    pub(super) fn has_seen(&self, commit: &Commit) -> bool {
        commit.last_id() <= self.at
    }

    /// How `commit`, whose records are `loaded` (`None`: evicted), meets this cursor.
    pub(super) fn meet(&self, commit: &Commit, loaded: Option<&CommitRecords>) -> Seam {
        self.seam(commit.first_id(), commit.last_id(), loaded.is_some())
    }

    fn seam(&self, first: u64, last: u64, loaded: bool) -> Seam {
        if last <= self.at {
            Seam::Seen
        } else if !loaded {
            Seam::Behind
        } else if first > self.at {
            Seam::Whole
        } else {
            Seam::Straddles
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_meet_the_cursor_at_the_seam() {
        let mut cursor = Cursor::default();
        cursor.snapshot_seen(5);
        assert_eq!(cursor.seam(3, 5, true), Seam::Seen);
        assert_eq!(
            cursor.seam(3, 5, false),
            Seam::Seen,
            "evicted but seen: nothing to do"
        );
        assert_eq!(cursor.seam(4, 6, true), Seam::Straddles);
        assert_eq!(cursor.seam(6, 8, true), Seam::Whole);
        assert_eq!(cursor.seam(6, 8, false), Seam::Behind);
    }

    #[test]
    fn pass_dedupes_and_advances() {
        let mut cursor = Cursor::default();
        cursor.resume_after(10);
        assert_eq!(cursor.last_sent(), 10);
        assert!(!cursor.pass(9));
        assert!(!cursor.pass(10));
        assert!(cursor.pass(11));
        assert_eq!(cursor.at(), 11);
        assert_eq!(cursor.last_sent(), 10, "passed, not sent (filtered out)");
        cursor.sent(11);
        assert_eq!(cursor.last_sent(), 11);
        cursor.sent_through(20);
        assert_eq!((cursor.at(), cursor.last_sent()), (20, 20));
    }

    #[test]
    fn snapshot_keeps_the_highest_id() {
        let mut cursor = Cursor::default();
        cursor.snapshot_seen(7);
        cursor.snapshot_seen(3);
        assert_eq!(cursor.at(), 7);
        cursor.skip_to(2);
        assert_eq!(cursor.at(), 2);
    }
}
