//! The `broker` binary: parse the configuration, start logging, serve.

use std::process::ExitCode;

use clap::Parser;

/// Per-connection memory is most of an idle server's memory; mimalloc keeps it compact.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
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
