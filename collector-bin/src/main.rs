//! The `otelcol-multitudes` binary.

use std::process::ExitCode;

use clap::Parser;

/// The global allocator, wrapped so that `memory_limiter` reads the live
/// heap (bytes allocated and not freed), not the resident set.
#[cfg(not(feature = "mimalloc"))]
#[global_allocator]
static ALLOCATOR: otelcol_core::memory::CountingAllocator<std::alloc::System> =
    otelcol_core::memory::CountingAllocator(std::alloc::System);

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: otelcol_core::memory::CountingAllocator<mimalloc::MiMalloc> =
    otelcol_core::memory::CountingAllocator(mimalloc::MiMalloc);

#[tokio::main]
async fn main() -> ExitCode {
    // The system allocator gives a burst's large blocks back when freed
    // (see the function for what glibc does otherwise, measured).
    #[cfg(not(feature = "mimalloc"))]
    otelcol_core::memory::keep_large_blocks_apart();
    otelcol_multitudes::run(otelcol_multitudes::Cli::parse()).await
}
