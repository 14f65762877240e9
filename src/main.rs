//! The `broker` binary: parse the configuration, start logging, serve.

use std::process::ExitCode;

use clap::Parser;

/// Per-connection memory is most of an idle server's memory; mimalloc keeps it compact.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // mimalloc asks for transparent huge pages on its arenas: every fault on fresh memory
    // then zeroes 2 MiB, which took 60 % of the server's CPU while a flood of connections
    // arrived, and a touched huge page stays resident whole. Off, idle streams cost less and
    // fan-out is no slower (docs/BENCHMARKS.md, "Half-open connections, accept queues").
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("broker: cannot turn transparent huge pages off: {e}");
    }
    let config = broker::Config::parse();
    broker::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(return_freed_memory)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("broker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(broker::Broker::new(config).serve()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("broker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Least time between two collections on one worker thread.
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    static LAST_COLLECT: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Runs when a worker thread goes idle: at most once per [`COLLECT_EVERY`], asks mimalloc to
/// return the memory freed since (its purge is otherwise driven by the thread's next
/// allocation, so a burst's memory would stay resident while the server is quiet).
fn return_freed_memory() {
    let now = std::time::Instant::now();
    let due = LAST_COLLECT.with(|last| {
        let due = last
            .get()
            .is_none_or(|at| now.duration_since(at) >= COLLECT_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: mi_collect only walks the calling thread's heap and the shared arenas.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}
