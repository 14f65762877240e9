//! The `broker` binary: parse the configuration, start logging, serve.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Per-connection memory is most of an idle server's memory; mimalloc keeps it compact.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Transparent huge pages: every fault on fresh memory zeroes 2 MiB, which took 60 % of
    // the server's CPU while a flood of connections arrived, and a touched huge page stays
    // resident whole. Off, idle streams cost less and fan-out is no slower (docs/BENCHMARKS.md,
    // "Half-open connections, accept queues"). mimalloc is built not to ask for them (its
    // arena is reserved before `main`); this covers the rest of the process.
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("broker: cannot turn transparent huge pages off: {e}");
    }
    spawn_memory_returner();
    let config = broker::Config::parse();
    broker::init_logging();
    match broker::Broker::new(config).serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("broker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How often the allocator is asked to give freed memory back.
const MEMORY_RETURN_PERIOD: Duration = Duration::from_secs(1);

/// Starts a thread that asks mimalloc, every [`MEMORY_RETURN_PERIOD`], to give the system the
/// memory freed more than its purge delay ago. mimalloc does that only when some thread next
/// allocates, so without it a server that goes idle after a burst kept what the burst used.
/// The thread's own heap is nearly empty, so each call costs a few microseconds; the memory
/// it gives back is returned the same way under load.
fn spawn_memory_returner() {
    let returner = std::thread::Builder::new()
        .name("broker-memory".into())
        .spawn(|| {
            // mimalloc collects nothing for a thread that has never allocated.
            drop(std::hint::black_box(Box::new(0u8)));
            loop {
                std::thread::sleep(MEMORY_RETURN_PERIOD);
                // SAFETY: `mi_collect` takes no pointers; any thread may call it at any time.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        });
    if let Err(e) = returner {
        eprintln!("broker: cannot start the thread that returns freed memory: {e}");
    }
}
