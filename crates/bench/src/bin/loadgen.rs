//! `cargo xtask loadgen -- --profile bulk --protocol grpc --target 127.0.0.1:4317`

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use otelcol_bench::loadgen::{self, LoadConfig, Protocol};
use otelcol_bench::payload;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Profile {
    /// 1000 points per request.
    Bulk,
    /// Claude Code clients: 20 points per request, one connection each.
    Fleet,
}

/// An OTLP metrics load generator.
#[derive(Parser, Debug)]
struct Args {
    /// host:port of the collector (4318 for HTTP, 4317 for gRPC).
    #[arg(long, default_value = "127.0.0.1:4318")]
    target: String,
    #[arg(long, value_enum, default_value = "http-proto")]
    protocol: Protocol,
    #[arg(long, value_enum, default_value = "bulk")]
    profile: Profile,
    /// Connections (bulk) or clients (fleet).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Distinct users.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Total requests per second (0: as fast as answers come).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Bearer token to send.
    #[arg(long)]
    token: Option<String>,
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let requests = match a.profile {
        Profile::Bulk => payload::bulk(a.users, 100, now),
        Profile::Fleet => payload::fleet(a.connections, a.users, now),
    };
    let result = loadgen::run(
        LoadConfig {
            target: a.target,
            protocol: a.protocol,
            connections: a.connections,
            rate: (a.rate > 0.0).then_some(a.rate),
            duration: Duration::from_secs(a.seconds),
            token: a.token,
            report: true,
        },
        Arc::new(requests),
    )
    .await;
    println!(
        "requests/s={:.0}  points/s={:.0}  p50={}us  p99={}us  max={}us  ok={}  errors={:?}",
        result.rps(),
        result.pps(),
        result.p50_us,
        result.p99_us,
        result.max_us,
        result.ok,
        result.errors
    );
    println!("{}", serde_json::to_string(&result).unwrap_or_default());
}
