//! The `broker` binary: parse the configuration, start logging, serve.

use std::process::ExitCode;

use clap::Parser;

/// Per-connection memory is most of an idle server's memory; mimalloc keeps it compact.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // mimalloc asks for transparent huge pages on its arenas: every fault on fresh memory
    // then zeroes 2 MiB, which took 60 % of the server's CPU while a flood of connections
    // arrived, and a touched huge page stays resident whole. Off, idle streams cost less and
    // fan-out is no slower (docs/BENCHMARKS.md, "Half-open connections, accept queues").
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("broker: cannot turn transparent huge pages off: {e}");
    }
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
