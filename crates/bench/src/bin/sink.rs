//! `cargo xtask sink -- --listen 127.0.0.1:9000 --token T`: a counting
//! OTLP/HTTP endpoint; `GET /stats` answers what it received as JSON.

use clap::Parser;

/// A counting OTLP/HTTP sink.
#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// The bearer token it accepts.
    #[arg(long, default_value = "bench-token")]
    token: String,
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let sink = match otelcol_bench::sink::start(&a.listen, &a.token).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sink: cannot listen on {}: {e}", a.listen);
            std::process::exit(1);
        }
    };
    println!("sink: listening on {} (GET /stats)", sink.addr);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let s = sink.stats();
                println!("sink: requests={} points={} total={} bad_token={}", s.requests, s.points, s.total(), s.bad_token);
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!(
        "{}",
        serde_json::to_string(&sink.stats()).unwrap_or_default()
    );
}
