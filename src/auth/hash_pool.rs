//! A bound on Argon2 work. One Argon2id run holds 7 MiB for its duration, so password checks
//! run at most one per core at a time, a few more wait their turn, and beyond that the caller
//! gets `429` at once instead of the server growing a blocking thread (and 7 MiB) per attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use super::rejection::AuthError;
use crate::error::ApiError;

/// Password checks that may wait for a core, per core running one.
pub const QUEUE_PER_CORE: usize = 4;

/// `Retry-After` seconds of the `429` sent when the queue is full.
const BUSY_RETRY_AFTER: u64 = 1;

/// Runs password hashing and verification on blocking threads, a bounded number at a time.
pub struct HashPool {
    running: Arc<Semaphore>,
    admitted: Arc<AtomicUsize>,
    limit: usize,
}

impl HashPool {
    /// A pool running `parallel` jobs at once with up to `queue` more waiting.
    pub fn new(parallel: usize, queue: usize) -> Self {
        let parallel = parallel.max(1);
        Self {
            running: Arc::new(Semaphore::new(parallel)),
            admitted: Arc::new(AtomicUsize::new(0)),
            limit: parallel.saturating_add(queue),
        }
    }

    /// A pool sized to the machine: one job per core, [`QUEUE_PER_CORE`] waiting per core.
    pub fn for_cores() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::new(cores, cores.saturating_mul(QUEUE_PER_CORE))
    }

    /// Takes a place in the pool, or `429` when every place is taken.
    ///
    /// # Errors
    /// 429 with `Retry-After` when the queue is full.
    pub fn ticket(&self) -> Result<Ticket, AuthError> {
        let admitted = self
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            tracing::debug!("password check refused: the Argon2 queue is full");
            return Err(AuthError::throttled(
                BUSY_RETRY_AFTER,
                "too many password checks at once; retry shortly",
            ));
        }
        Ok(Ticket {
            admitted: self.admitted.clone(),
            running: self.running.clone(),
        })
    }

    /// Runs `job` in the pool: [`ticket`](Self::ticket), then [`Ticket::run`].
    ///
    /// # Errors
    /// 429 when the queue is full; 500 if the job panics.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        self.ticket()?.run(job).await
    }

    /// Jobs admitted now (running or waiting).
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }
}

/// A place in a [`HashPool`]; the place frees itself when the ticket (or its job) is dropped.
pub struct Ticket {
    admitted: Arc<AtomicUsize>,
    running: Arc<Semaphore>,
}

impl Ticket {
    /// Waits for a core, then runs `job` on a blocking thread. The place and the core stay
    /// taken until the job ends, even if the caller stops waiting for it.
    ///
    /// # Errors
    /// 500 if the job panics.
    pub async fn run<T: Send + 'static>(
        self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(move || {
            let _place = self;
            let _core = permit;
            job()
        })
        .await
        .map_err(|e| AuthError::from(ApiError::internal(e)))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn bounded_then_refused_then_free_again() {
        let pool = Arc::new(HashPool::new(1, 1));
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let running = pool.ticket().expect("first place");
        let job = tokio::spawn(running.run(move || {
            let _ = hold.blocking_recv();
            1
        }));
        let waiting = pool.ticket().expect("second place: the queue");
        assert_eq!(pool.admitted(), 2);
        let refused = pool.ticket().err().expect("third is refused");
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(BUSY_RETRY_AFTER));
        drop(waiting);
        assert_eq!(pool.admitted(), 1, "a dropped ticket frees its place");
        let _ = release.send(());
        assert_eq!(job.await.expect("join").expect("job"), 1);
        assert_eq!(pool.admitted(), 0, "a finished job frees its place");
        assert_eq!(pool.run(|| 2).await.expect("free again"), 2);
    }
}
