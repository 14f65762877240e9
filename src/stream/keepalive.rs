//! The keep-alive timer of an idle stream.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Ticks every period after the first, so that an idle stream writes a comment now and then
/// and proxies and clients see it alive. A stream that was busy through a period is not owed
/// the missed ticks ([`MissedTickBehavior::Delay`]).
pub(super) struct KeepAlive(Interval);

impl KeepAlive {
    /// A timer whose first tick is one `period` from now.
    pub(super) fn new(period: Duration) -> Self {
        let mut interval = tokio::time::interval_at(Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self(interval)
    }

    /// Waits for the next tick.
    pub(super) async fn tick(&mut self) {
        self.0.tick().await;
    }
}
