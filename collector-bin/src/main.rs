//! The `otelcol-multitudes` binary.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    otelcol_multitudes::run(otelcol_multitudes::Cli::parse()).await
}
