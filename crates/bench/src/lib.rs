//! Benchmark instruments for the collector, run through `cargo xtask`:
//!
//! - [`loadgen`]: an OTLP load generator (gRPC, HTTP/protobuf, HTTP/JSON;
//!   pre-encoded requests; closed loop or fixed rate; per-second and final
//!   figures).
//! - [`sink`]: a counting OTLP/HTTP sink that checks the bearer token and
//!   sums what it receives.
//! - [`payload`]: Claude Code-shaped requests (`bulk`: 1000 points per
//!   request; `fleet`: 20 points, one user per client).
//! - [`procfs`]: a process's CPU time and RSS.
//!
//! The `bench` binary starts a release collector, runs the profiles against
//! it, checks totals in = totals out and writes `BENCHMARKS.md`.

pub mod grpc;
pub mod loadgen;
pub mod payload;
pub mod procfs;
pub mod sink;
