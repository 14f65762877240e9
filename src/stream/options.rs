//! How a stream is asked for: where it starts, which channels it carries, in which format.

use std::collections::HashSet;
use std::sync::Arc;

use crate::auth::Caller;
use crate::sse::Format;
use crate::store::Record;

/// Where a new stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The latest version of every (channel, event), then live.
    Snapshot,
    /// Every record after this id, then live (`Last-Event-ID`).
    After(u64),
    /// The client named an id Broker does not know: `$reset`, then the snapshot.
    Unknown(String),
}

impl Start {
    /// Interprets a `Last-Event-ID` value.
    pub fn from_last_event_id(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            None | Some("") => Self::Snapshot,
            Some(raw) => raw
                .parse()
                .map_or_else(|_| Self::Unknown(raw.to_owned()), Self::After),
        }
    }
}

/// Which records a stream may see: the channels it asked for and the caller may read.
#[derive(Debug, Clone)]
pub struct ChannelFilter {
    /// The requested channels, in the order asked for.
    order: Option<Vec<String>>,
    requested: Option<HashSet<String>>,
    pub(super) caller: Caller,
}

impl ChannelFilter {
    /// A filter for `caller`, restricted to `channels` when given (already permission-checked).
    pub fn new(channels: Option<Vec<String>>, caller: Caller) -> Self {
        Self {
            requested: channels.as_ref().map(|c| c.iter().cloned().collect()),
            order: channels,
            caller,
        }
    }

    /// Whether a record of `channel` goes to this stream. Private Mercure updates never do:
    /// only a Mercure stream's [`RecordFilter`] may let them through.
    pub fn allows(&self, channel: &str) -> bool {
        self.requested.as_ref().is_none_or(|r| r.contains(channel))
            && channel != crate::mercure::update::PRIVATE_CHANNEL
            && self.caller.can_read(channel)
    }

    /// The requested channels in the order asked for (`None`: every readable channel).
    pub fn requested(&self) -> Option<Vec<String>> {
        self.order.clone()
    }
}

/// How a stream is to behave.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Which channels it carries.
    pub filter: ChannelFilter,
    /// How records are written.
    pub format: Format,
    /// The node-sse-server client id, announced in `registered` ([`Format::Compat`] only).
    pub client_id: Option<String>,
    /// Snapshot or replay.
    pub start: Start,
    /// When the caller's credentials expire (Unix seconds): the stream ends then.
    pub expires_at: Option<u64>,
    /// Decides record by record instead of the channel filter (Mercure: topics and private
    /// updates).
    pub record_filter: Option<Arc<dyn RecordFilter>>,
}

/// A stream's choice of records when channels alone do not decide it.
pub trait RecordFilter: Send + Sync + std::fmt::Debug {
    /// Whether `record` goes to the stream.
    fn admits(&self, record: &Record) -> bool;
}
