//! Which records go to a stream: its record filter when it has one (Mercure), else its channel
//! filter, with the last channel's answer remembered.

use crate::hub::CommitRecords;
use crate::store::Record;

use super::options::StreamOptions;

/// The last channel looked at and whether it passed the filter: a stream's records mostly come
/// from one channel, so most deliveries skip the lookup and the permission check.
#[derive(Default)]
pub(super) struct Admission {
    last_channel: Option<(String, bool)>,
}

impl Admission {
    /// Whether every record of `commit` goes to the stream of `options`.
    pub(super) fn all(&mut self, options: &StreamOptions, commit: &CommitRecords) -> bool {
        if let Some(filter) = &options.record_filter {
            return commit.records().iter().all(|r| filter.admits(r));
        }
        match commit.channel() {
            Some(channel) => self.channel(options, channel),
            None => commit
                .records()
                .iter()
                .all(|r| self.channel(options, &r.channel)),
        }
    }

    /// Whether `record` goes to the stream of `options`.
    pub(super) fn record(&mut self, options: &StreamOptions, record: &Record) -> bool {
        match &options.record_filter {
            Some(filter) => filter.admits(record),
            None => self.channel(options, &record.channel),
        }
    }

    /// Whether records of `channel` go to the stream of `options`, remembering the answer.
    fn channel(&mut self, options: &StreamOptions, channel: &str) -> bool {
        if let Some((last, allowed)) = &self.last_channel
            && last == channel
        {
            return *allowed;
        }
        let allowed = options.filter.allows(channel);
        self.last_channel = Some((channel.to_owned(), allowed));
        allowed
    }
}
