//! Riding out the moments when JetStream has no one to answer a request.
//!
//! Right after a stream or bucket is created, or while its replica group elects a new leader,
//! NATS answers requests to it with "no responders": the interest of the stream's leader has not
//! reached the server this node talks to yet. That lasts well under a second, so such requests
//! are tried again for a short while before the failure reaches the client as a 503.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// How long a request answered "no responders" keeps being retried.
pub const PATIENCE: Duration = Duration::from_secs(3);

/// First pause between two tries; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(25);
const MAX_PAUSE: Duration = Duration::from_millis(400);

/// Whether an error from `async-nats` is NATS's "no responders" (status 503): nothing listens
/// on the request's subject for now. The crate reports it in different error kinds depending on
/// the call, so it is recognised by its message. A publish answered "no stream found for given
/// subject" is the same moment seen from another side: a server of a cluster that has just
/// started has not yet learnt of a stream created a moment ago.
pub fn no_responders(error: &impl Display) -> bool {
    let message = error.to_string();
    message.contains("no responders") || message.contains("no stream found for given subject")
}

/// Runs `op`, trying again while it fails with "no responders", for up to [`PATIENCE`]. Any
/// other error, or the last "no responders" once patience runs out, is returned as it is.
pub async fn patiently<T, E, Fut>(mut op: impl FnMut() -> Fut) -> Result<T, E>
where
    E: Display,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut pause = FIRST_PAUSE;
    loop {
        match op().await {
            Err(e) if no_responders(&e) && tokio::time::Instant::now() + pause < deadline => {
                tracing::debug!(error = %e, "no responders yet; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            other => return other,
        }
    }
}

/// Runs `op`, one of the requests a node makes while it starts, until it succeeds or
/// `patience` has run out, pausing half a second between tries and logging each failure. Right
/// after NATS (re)starts, or while a cluster is busy, replica groups may still be electing
/// leaders and a request may time out: a starting node keeps asking instead of exiting. The
/// last error is returned once patience runs out.
pub async fn while_starting<T, E, Fut>(
    patience: Duration,
    mut op: impl FnMut() -> Fut,
) -> Result<T, E>
where
    E: Display,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match op().await {
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "JetStream is not ready yet; retrying");
                tokio::time::sleep(STARTUP_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// Pause between two tries of a starting node's request.
const STARTUP_PAUSE: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn no_responders_is_retried_until_it_answers() {
        let tries = AtomicUsize::new(0);
        let result: Result<u32, String> = patiently(|| async {
            if tries.fetch_add(1, Ordering::SeqCst) < 3 {
                Err("unable to get message: 503 no responders".to_owned())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result, Ok(7));
        assert_eq!(tries.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_not_known_yet_is_retried() {
        let tries = AtomicUsize::new(0);
        let result: Result<u32, String> = patiently(|| async {
            if tries.fetch_add(1, Ordering::SeqCst) < 1 {
                Err("ack error: no stream found for given subject".to_owned())
            } else {
                Ok(1)
            }
        })
        .await;
        assert_eq!(result, Ok(1));
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_are_returned_at_once() {
        let tries = AtomicUsize::new(0);
        let result: Result<u32, String> = patiently(|| async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err("wrong last sequence".to_owned())
        })
        .await;
        assert_eq!(result, Err("wrong last sequence".to_owned()));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_starting_node_retries_any_error_until_patience_runs_out() {
        let tries = AtomicUsize::new(0);
        let result: Result<u32, String> = while_starting(Duration::from_secs(30), || async {
            if tries.fetch_add(1, Ordering::SeqCst) < 2 {
                Err("timed out".to_owned())
            } else {
                Ok(3)
            }
        })
        .await;
        assert_eq!(result, Ok(3));
        let start = tokio::time::Instant::now();
        let result: Result<u32, String> = while_starting(Duration::from_secs(5), || async {
            Err("timed out".to_owned())
        })
        .await;
        assert_eq!(result, Err("timed out".to_owned()));
        assert!(start.elapsed() >= Duration::from_secs(5));
        assert!(start.elapsed() <= Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn patience_runs_out() {
        let start = tokio::time::Instant::now();
        let result: Result<u32, String> =
            patiently(|| async { Err("503 no responders".to_owned()) }).await;
        assert!(result.is_err_and(|e| no_responders(&e)));
        assert!(start.elapsed() <= PATIENCE);
    }
}
