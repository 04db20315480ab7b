//! The `otelcol-multitudes` binary.

use std::process::ExitCode;

use clap::Parser;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    otelcol_multitudes::run(otelcol_multitudes::Cli::parse()).await
}
