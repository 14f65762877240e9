//! The runtime that writes plain-HTTP event streams, apart from the one that accepts
//! connections and answers requests.
//!
//! A commit wakes every stream that may read it. On one runtime, those wakes queue ahead of
//! whatever else is waiting, such as the task of the insert that made the commit, which then
//! waits for a whole fan-out before it can answer. With streams on their own threads, the
//! request runtime only holds requests: its threads sleep most of the time, so the kernel runs
//! them as soon as they wake, and the stream threads take the rest of the cores.

use std::io;

use tokio::runtime::{Builder, Handle, Runtime};

/// The stream runtime, shut down (without waiting) when dropped; or none, when streams run on
/// the request runtime.
pub struct StreamRuntime {
    runtime: Option<Runtime>,
}

impl StreamRuntime {
    /// A runtime of `threads` workers (`None`: one per core); `Some(0)` starts none.
    ///
    /// # Errors
    /// When the threads cannot be started.
    pub fn start(threads: Option<usize>) -> io::Result<Self> {
        let threads = threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        if threads == 0 {
            return Ok(Self { runtime: None });
        }
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("broker-stream")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Where stream tasks are spawned; `None` for the current runtime.
    pub fn handle(&self) -> Option<Handle> {
        self.runtime.as_ref().map(|r| r.handle().clone())
    }
}

impl Drop for StreamRuntime {
    fn drop(&mut self) {
        // Streams have ended by now (the server waits for them); a runtime cannot be dropped
        // the blocking way inside another one.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for StreamRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRuntime")
            .field("separate", &self.runtime.is_some())
            .finish()
    }
}
