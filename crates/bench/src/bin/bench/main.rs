//! `cargo xtask bench [--quick]`: starts the collector with a bench config
//! (otlp → aggregation → multitudes → a counting sink), runs the profiles,
//! samples the collector's CPU and RSS from /proc, checks that the totals
//! that came out equal what went in, and (full runs) writes BENCHMARKS.md.
//! `--series-only`, `--durable-only` and `--gateway-only` run one part and
//! print it; `--rotel PATH` runs the side-by-side bench against rotel
//! instead (see [`rotel`]).

mod rotel;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use otelcol_bench::loadgen::{self, LoadConfig, LoadResult, Protocol};
use otelcol_bench::{payload, procfs, sink};

const TOKEN: &str = "bench-token";

/// The end-to-end bench.
#[derive(Parser, Debug)]
struct Args {
    /// The collector binary.
    #[arg(long)]
    collector: PathBuf,
    /// Short runs, no 1M-series run, no speed targets: the CI check that
    /// totals in equal totals out under load.
    #[arg(long)]
    quick: bool,
    /// Seconds per profile (default 10, quick 2).
    #[arg(long)]
    seconds: Option<u64>,
    /// Write the report here (full runs default to BENCHMARKS.md).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only the aggregation state's cost (memory against `file_storage`)
    /// and the recovery of 1,000,000 series after `kill -9`, printed,
    /// nothing written: for working on the durable path.
    #[arg(long)]
    durable_only: bool,
    /// Only the 1,000,000-series run (RSS per open series, then the
    /// shutdown flush), printed, nothing written.
    #[arg(long)]
    series_only: bool,
    /// Only the gateway (a `loadbalancing` gateway in front of one
    /// aggregator): points/s routed and the p99 it adds, printed, nothing
    /// written.
    #[arg(long)]
    gateway_only: bool,
    /// rotel's `rotel-agent` binary: run the side-by-side bench (rotel's
    /// blackhole against ours aggregating, three rounds) instead, and write
    /// its block of the report.
    #[arg(long)]
    rotel: Option<PathBuf>,
}

fn free_port() -> u16 {
    otelcol_core::net::unused_loopback_port()
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"200"
}

/// What the bench collector does with the points.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// otlp → aggregation → multitudes (the product).
    Aggregate,
    /// otlp → multitudes, memory queue: the sending path alone.
    Forward,
    /// otlp → multitudes with `sending_queue.storage: file_storage`.
    ForwardPersistent,
    /// otlp → aggregation (`storage: file_storage`) → multitudes with a
    /// persistent queue: the production shape.
    AggregateDurable,
}

struct Collector {
    child: Child,
    http: u16,
    grpc: u16,
    started_to_healthy: Duration,
}

impl Collector {
    fn start(bin: &PathBuf, sink_port: u16, interval: &str, dir: &std::path::Path) -> Self {
        Self::start_shape(bin, sink_port, interval, dir, Shape::Aggregate)
    }

    fn start_shape(
        bin: &PathBuf,
        sink_port: u16,
        interval: &str,
        dir: &std::path::Path,
        shape: Shape,
    ) -> Self {
        let (http, grpc, health) = (free_port(), free_port(), free_port());
        let storage_dir = dir.join(format!("storage-{health}"));
        let (processors, storage, queue) = match shape {
            Shape::Aggregate => ("[aggregation]", String::new(), ""),
            Shape::Forward => ("[]", String::new(), ""),
            Shape::ForwardPersistent | Shape::AggregateDurable => (
                if shape == Shape::AggregateDurable {
                    "[aggregation]"
                } else {
                    "[]"
                },
                format!(
                    "  file_storage: {{directory: \"{}\", create_directory: true}}\n",
                    storage_dir.display()
                ),
                "    sending_queue: {storage: file_storage}\n",
            ),
        };
        let durable = if shape == Shape::AggregateDurable {
            "    storage: file_storage\n    max_series: 1100000\n"
        } else {
            ""
        };
        let processor_section = if matches!(shape, Shape::Aggregate | Shape::AggregateDurable) {
            format!("processors:\n  aggregation:\n    attribute_key: user.email\n    aggregation_interval: {interval}\n    emit_interval: 5s\n    exclude_attributes: [session.id]\n{durable}")
        } else {
            String::new()
        };
        let log_level = if shape == Shape::AggregateDurable {
            "info"
        } else {
            "warn"
        };
        let extensions = if storage.is_empty() {
            "[health_check]"
        } else {
            "[health_check, file_storage]"
        };
        let config = format!(
            r#"receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
{processor_section}exporters:
  multitudes:
    endpoint: http://127.0.0.1:{sink_port}/ai/otel
    fallback_token: {TOKEN}
{queue}extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
{storage}service:
  extensions: {extensions}
  telemetry: {{metrics: {{level: none}}, logs: {{level: {log_level}}}}}
  pipelines:
    metrics: {{receivers: [otlp], processors: {processors}, exporters: [multitudes]}}
"#
        );
        let path = dir.join(format!("bench-{health}.yaml"));
        if let Err(e) = std::fs::write(&path, config) {
            fail(&format!("cannot write {}: {e}", path.display()));
        }
        let log = std::fs::File::create(dir.join(format!("collector-{health}.log")))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let t0 = Instant::now();
        let child = Command::new(bin)
            .args(["--config", &path.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", bin.display())));
        while !healthy(health) {
            if t0.elapsed() > Duration::from_secs(30) {
                fail("the collector did not become healthy within 30 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Collector {
            child,
            http,
            grpc,
            started_to_healthy: t0.elapsed(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait up to `limit` (the shutdown flushes every window);
    /// killed past it.
    fn stop(mut self, limit: Duration) -> bool {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(1);
}

/// CPU (percent of one core) and peak RSS of `pid` while `f` runs.
async fn sampled<F: std::future::Future<Output = LoadResult>>(
    pid: u32,
    f: F,
) -> (LoadResult, f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let (s, p) = (stop.clone(), peak.clone());
    let sampler = tokio::spawn(async move {
        while !s.load(Ordering::Relaxed) {
            if let Some(r) = procfs::rss(pid) {
                p.fetch_max(r, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let (c0, t0) = (procfs::cpu_seconds(pid).unwrap_or(0.0), Instant::now());
    let result = f.await;
    let cpu = (procfs::cpu_seconds(pid).unwrap_or(0.0) - c0) / t0.elapsed().as_secs_f64() * 100.0;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    (result, cpu, peak.load(Ordering::Relaxed))
}

struct Row {
    name: String,
    result: LoadResult,
    cpu: f64,
    peak_rss: u64,
}

/// The slowest answer among the requests due in each second of a run, in
/// ms: when in the run a p99 outlier came.
fn slowest_ms(r: &loadgen::LoadResult) -> Vec<u64> {
    r.per_second_max_us.iter().map(|us| us / 1000).collect()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let dir = std::env::temp_dir().join(format!("otelcol-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    run(a, &dir).await;
    // Kept when a run fails (its collectors' logs are there); a finished
    // run's states take 300-450 MiB.
    let _ = std::fs::remove_dir_all(&dir);
}

/// The part of the bench `a` asks for, in `dir`.
async fn run(a: Args, dir: &std::path::Path) {
    let secs = Duration::from_secs(a.seconds.unwrap_or(if a.quick { 2 } else { 10 }));
    let dir = dir.to_path_buf();
    if a.durable_only {
        durable_cost(&a.collector, &dir, secs).await;
        let r = recovery(&a.collector, &dir).await;
        println!("bench: {}", recovery_line(&r));
        return;
    }
    if a.series_only {
        series_memory(&a.collector, &dir).await;
        return;
    }
    if a.gateway_only {
        gateway(&a.collector, &dir, secs).await;
        return;
    }
    if let Some(rotel) = &a.rotel {
        let out = a.out.unwrap_or_else(|| PathBuf::from("BENCHMARKS.md"));
        rotel::vs_rotel(&a.collector, rotel, &dir, secs, &out).await;
        return;
    }
    let sink = sink::start("127.0.0.1:0", TOKEN)
        .await
        .unwrap_or_else(|e| fail(&format!("sink: {e}")));
    let collector = Collector::start(&a.collector, sink.addr.port(), "1m", &dir);
    let pid = collector.pid();
    println!(
        "bench: collector pid {pid} healthy after {:?}",
        collector.started_to_healthy
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = procfs::rss(pid).unwrap_or(0);
    println!("bench: idle RSS {:.1} MiB", mib(idle_rss));

    let fleet_clients = if a.quick { 100 } else { 1000 };
    let mut rows: Vec<Row> = vec![];
    let run =
        |name: String, protocol: Protocol, connections: usize, rate: Option<f64>, fleet: bool| {
            let target = match protocol {
                Protocol::Grpc => format!("127.0.0.1:{}", collector.grpc),
                _ => format!("127.0.0.1:{}", collector.http),
            };
            let requests = if fleet {
                payload::fleet(connections, 1000, now_nanos())
            } else {
                payload::bulk(1000, 100, now_nanos())
            };
            let cfg = LoadConfig {
                target,
                protocol,
                connections,
                rate,
                duration: secs,
                token: None,
                report: false,
            };
            (name, cfg, requests)
        };
    let plans = vec![
        run(
            "bulk, HTTP/protobuf".into(),
            Protocol::HttpProto,
            4,
            None,
            false,
        ),
        run("bulk, gRPC".into(), Protocol::Grpc, 4, None, false),
        run("bulk, HTTP/JSON".into(), Protocol::HttpJson, 4, None, false),
        run(
            format!("fleet, HTTP/protobuf, {fleet_clients} clients, closed loop"),
            Protocol::HttpProto,
            fleet_clients,
            None,
            true,
        ),
    ];
    for (name, cfg, requests) in plans {
        println!("bench: {name} for {}s", secs.as_secs());
        let (result, cpu, peak_rss) = sampled(pid, loadgen::run(cfg, Arc::new(requests))).await;
        println!(
            "bench:   {:.0} requests/s, {:.0} points/s, p50 {} us, p99 {} us, collector CPU {cpu:.0}%, peak RSS {:.1} MiB, errors {:?}; slowest by second (ms) {:?}",
            result.rps(), result.pps(), result.p50_us, result.p99_us, mib(peak_rss), result.errors, slowest_ms(&result)
        );
        rows.push(Row {
            name,
            result,
            cpu,
            peak_rss,
        });
    }
    // The latency row: the fleet at half the rate it reached.
    let max_fleet = rows.last().map(|r| r.result.rps()).unwrap_or(1000.0);
    let half = (max_fleet / 2.0).max(10.0);
    let (name, cfg, requests) = run(
        format!("fleet, HTTP/protobuf, {fleet_clients} clients at {half:.0} requests/s"),
        Protocol::HttpProto,
        fleet_clients,
        Some(half),
        true,
    );
    println!("bench: {name} for {}s", secs.as_secs());
    let (result, cpu, peak_rss) = sampled(pid, loadgen::run(cfg, Arc::new(requests))).await;
    println!(
        "bench:   {:.0} requests/s, p50 {} us, p99 {} us, collector CPU {cpu:.0}%; slowest by second (ms) {:?}",
        result.rps(),
        result.p50_us,
        result.p99_us,
        slowest_ms(&result)
    );
    rows.push(Row {
        name,
        result,
        cpu,
        peak_rss,
    });

    let started = collector.started_to_healthy;
    let sent: f64 = rows.iter().map(|r| r.result.value_sum).sum();
    let clean_exit = collector.stop(Duration::from_secs(60));
    // The exporter's last requests may still be in flight when it exits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = sink.stats();
    let totals_ok =
        clean_exit && got.bad_token == 0 && got.bad_body == 0 && (got.total() - sent).abs() < 0.5;
    println!(
        "bench: totals in {sent} = out {} ({} requests to the sink, clean exit {clean_exit}): {}",
        got.total(),
        got.requests,
        if totals_ok { "OK" } else { "MISMATCH" }
    );
    if a.quick {
        if !totals_ok || rows.iter().any(|r| r.result.ok == 0) {
            fail("totals in != totals out, or a profile got no request through");
        }
        return;
    }

    let queue = queue_cost(&a.collector, &dir, secs).await;
    let durable = durable_cost(&a.collector, &dir, secs).await;
    let recovery = recovery(&a.collector, &dir).await;
    let series = series_memory(&a.collector, &dir).await;
    let out = a.out.unwrap_or_else(|| PathBuf::from("BENCHMARKS.md"));
    let measured = report(
        &rows,
        idle_rss,
        started,
        series,
        (sent, got.total(), totals_ok),
        &queue,
        (&durable, &recovery),
    );
    if let Err(e) = write_report(&out, &measured) {
        fail(&format!("cannot write {}: {e}", out.display()));
    }
    println!("bench: wrote {}", out.display());
    if !totals_ok {
        fail("totals in != totals out");
    }
}

/// The sending path alone, memory queue against persistent queue.
struct QueueRun {
    /// (name, load result, requests the sink took, totals equal) per shape.
    runs: Vec<(String, LoadResult, u64, bool)>,
}

/// Bulk HTTP/protobuf forwarded without aggregation (every request is one
/// exporter request of 1,000 points), with the queue in memory and then
/// on `file_storage`; the sink must receive every point's value.
async fn queue_cost(bin: &PathBuf, dir: &std::path::Path, secs: Duration) -> QueueRun {
    let mut runs = vec![];
    for (name, shape) in [
        ("forward, memory queue", Shape::Forward),
        (
            "forward, persistent queue (file_storage)",
            Shape::ForwardPersistent,
        ),
    ] {
        let sink = sink::start("127.0.0.1:0", TOKEN)
            .await
            .unwrap_or_else(|e| fail(&format!("sink: {e}")));
        let c = Collector::start_shape(bin, sink.addr.port(), "1m", dir, shape);
        let cfg = LoadConfig {
            target: format!("127.0.0.1:{}", c.http),
            protocol: Protocol::HttpProto,
            connections: 4,
            rate: None,
            duration: secs,
            token: None,
            report: false,
        };
        println!("bench: {name} for {}s", secs.as_secs());
        let result = loadgen::run(cfg, Arc::new(payload::bulk(1000, 100, now_nanos()))).await;
        let clean = tokio::task::spawn_blocking(move || c.stop(Duration::from_secs(120)))
            .await
            .unwrap_or(false);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = sink.stats();
        let ok = clean && (got.total() - result.value_sum).abs() < 0.5;
        println!(
            "bench:   {:.0} requests/s, {:.0} points/s, {} requests to the sink, totals {}",
            result.rps(),
            result.pps(),
            got.requests,
            if ok { "equal" } else { "MISMATCH" }
        );
        runs.push((name.to_string(), result, got.requests, ok));
    }
    QueueRun { runs }
}

/// What the 1,000,000-series run measured.
struct SeriesRun {
    /// RSS before the load, bytes.
    before: u64,
    /// RSS with every series open, bytes.
    after: u64,
    /// Highest RSS sampled (every 10 ms) from SIGTERM to exit, bytes.
    shutdown_peak: u64,
    /// Points the sink received from the shutdown flush.
    flushed_points: u64,
    /// From SIGTERM to exit.
    shutdown: Duration,
    /// The process exited 0.
    clean_exit: bool,
}

/// RSS per open series with 1,000,000 series (100,000 users × 10), then
/// what the shutdown flush of all of them costs.
/// A gateway (`configs/gateway.yaml`'s shape: otlp → loadbalancing by
/// `user.email`, memory queue) started in front of the gRPC port
/// `aggregator`; returns it and its HTTP port.
fn start_gateway(bin: &PathBuf, aggregator: u16, dir: &std::path::Path) -> (Child, u16) {
    let (http, grpc, health) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  loadbalancing:
    routing_key: attributes
    routing_attributes: [user.email]
    protocol: {{otlp: {{tls: {{insecure: true}}}}}}
    resolver: {{static: {{hostnames: ["127.0.0.1:{aggregator}"]}}}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{level: none}}, logs: {{level: warn}}}}
  pipelines:
    metrics: {{receivers: [otlp], exporters: [loadbalancing]}}
"#
    );
    let path = dir.join(format!("gateway-{health}.yaml"));
    if let Err(e) = std::fs::write(&path, config) {
        fail(&format!("cannot write {}: {e}", path.display()));
    }
    let child = Command::new(bin)
        .args(["--config", &path.to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start the gateway: {e}")));
    let t0 = Instant::now();
    while !healthy(health) {
        if t0.elapsed() > Duration::from_secs(30) {
            fail("the gateway did not become healthy within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (child, http)
}

/// The gateway's cost: bulk HTTP/protobuf through it (points/s routed,
/// its CPU), and the fleet at a fixed rate straight to the aggregator and
/// then through the gateway (the p99 it adds). Totals in must equal totals
/// out at the sink.
async fn gateway(bin: &PathBuf, dir: &std::path::Path, secs: Duration) {
    let sink = sink::start("127.0.0.1:0", TOKEN)
        .await
        .unwrap_or_else(|e| fail(&format!("sink: {e}")));
    let aggregator = Collector::start(bin, sink.addr.port(), "1m", dir);
    let (mut gw, gw_http) = start_gateway(bin, aggregator.grpc, dir);
    let cfg = |port: u16, connections: usize, rate: Option<f64>| LoadConfig {
        target: format!("127.0.0.1:{port}"),
        protocol: Protocol::HttpProto,
        connections,
        rate,
        duration: secs,
        token: None,
        report: false,
    };
    let mut sent = 0.0;
    let bulk = Arc::new(payload::bulk(1000, 100, now_nanos()));
    let (r, cpu, rss) = sampled(gw.id(), loadgen::run(cfg(gw_http, 4, None), bulk)).await;
    sent += r.value_sum;
    println!(
        "bench: gateway, bulk HTTP/protobuf: {:.0} points/s routed, p99 {} us, gateway CPU {cpu:.0}%, peak RSS {:.1} MiB, errors {:?}",
        r.pps(), r.p99_us, mib(rss), r.errors
    );
    let rate = 2000.0;
    let fleet = Arc::new(payload::fleet(200, 1000, now_nanos()));
    let (direct, _, _) = sampled(
        aggregator.pid(),
        loadgen::run(cfg(aggregator.http, 200, Some(rate)), fleet.clone()),
    )
    .await;
    sent += direct.value_sum;
    let (routed, _, _) = sampled(gw.id(), loadgen::run(cfg(gw_http, 200, Some(rate)), fleet)).await;
    sent += routed.value_sum;
    println!(
        "bench: fleet at {rate:.0} requests/s, 200 clients: direct p50 {} us p99 {} us; through the gateway p50 {} us p99 {} us: added p99 {} us",
        direct.p50_us,
        direct.p99_us,
        routed.p50_us,
        routed.p99_us,
        routed.p99_us.saturating_sub(direct.p99_us)
    );
    // SAFETY: kill(2) on our own child: SIGTERM, the gateway drains its queue.
    unsafe { libc::kill(gw.id() as i32, libc::SIGTERM) };
    let gateway_exit = gw.wait().map(|s| s.success()).unwrap_or(false);
    let clean = aggregator.stop(Duration::from_secs(60)) && gateway_exit;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = sink.stats();
    println!(
        "bench: gateway totals in {sent} = out {} (clean exits {clean}): {}",
        got.total(),
        if clean && (got.total() - sent).abs() < 0.5 {
            "OK"
        } else {
            "MISMATCH"
        }
    );
}

async fn series_memory(bin: &PathBuf, dir: &std::path::Path) -> SeriesRun {
    let sink = sink::start("127.0.0.1:0", TOKEN)
        .await
        .unwrap_or_else(|e| fail(&format!("sink: {e}")));
    let c = Collector::start(bin, sink.addr.port(), "1h", dir);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = procfs::rss(c.pid()).unwrap_or(0);
    let requests = payload::bulk(100_000, 100, now_nanos());
    let n = requests.len() as u64;
    let cfg = LoadConfig {
        target: format!("127.0.0.1:{}", c.http),
        protocol: Protocol::HttpProto,
        connections: 4,
        rate: None,
        duration: Duration::from_secs(3600),
        token: None,
        report: false,
    };
    let sent = loadgen::send_each_once(cfg, Arc::new(requests)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = procfs::rss(c.pid()).unwrap_or(0);
    println!(
        "bench: 1,000,000 series: RSS {:.1} → {:.1} MiB ({sent}/{n} requests accepted), {} bytes per series",
        mib(before),
        mib(after),
        after.saturating_sub(before) / 1_000_000
    );
    let pid = c.pid();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while let Some(rss) = procfs::rss(pid) {
            peak = peak.max(rss);
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    let t0 = Instant::now();
    let clean_exit = tokio::task::spawn_blocking(move || c.stop(Duration::from_secs(300)))
        .await
        .unwrap_or(false);
    let shutdown = t0.elapsed();
    // The pid disappears once the exited child is reaped (in stop).
    let shutdown_peak = sampler.join().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flushed_points = sink.stats().points;
    println!(
        "bench: shutdown with 1,000,000 open series: {:.1} s, RSS peak {:.1} MiB (+{:.1}), {flushed_points} points flushed, clean exit {clean_exit}",
        shutdown.as_secs_f64(),
        mib(shutdown_peak),
        mib(shutdown_peak.saturating_sub(after)),
    );
    SeriesRun {
        before,
        after,
        shutdown_peak,
        flushed_points,
        shutdown,
        clean_exit,
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|k| format!("{:.0} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem}")
}

fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// The measured part of BENCHMARKS.md (between the bench markers).
fn report(
    rows: &[Row],
    idle: u64,
    started: Duration,
    series: SeriesRun,
    totals: (f64, f64, bool),
    queue: &QueueRun,
    (durable, recovery): (&[DurableRow], &RecoveryRun),
) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Measured by `cargo xtask bench` on {}, commit `{}`; generator, sink and collector share the machine. Each profile ran for {:.0} s.\n\n",
        machine(),
        commit(),
        rows.first().map(|r| r.result.seconds).unwrap_or(0.0)
    ));
    s.push_str("| profile | requests/s | points/s | p50 | p99 | collector CPU | collector peak RSS | errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {:.0}% | {:.1} MiB | {:?} |\n",
            r.name,
            r.result.rps(),
            r.result.pps(),
            r.result.p50_us as f64 / 1000.0,
            r.result.p99_us as f64 / 1000.0,
            r.cpu,
            mib(r.peak_rss),
            r.result.errors
        ));
    }
    let find = |prefix: &str| rows.iter().find(|r| r.name.starts_with(prefix));
    let pps = |p: &str| find(p).map(|r| r.result.pps()).unwrap_or(0.0);
    let fleet = rows
        .iter()
        .filter(|r| r.name.starts_with("fleet"))
        .collect::<Vec<_>>();
    let fleet_max = fleet.first().map(|r| r.result.rps()).unwrap_or(0.0);
    let fleet_p99 = fleet
        .get(1)
        .map(|r| r.result.p99_us as f64 / 1000.0)
        .unwrap_or(f64::MAX);
    let bulk_rss = rows
        .iter()
        .filter(|r| r.name.starts_with("bulk"))
        .map(|r| r.peak_rss)
        .max()
        .unwrap_or(0);
    let (before, after) = (series.before, series.after);
    let per_series = after.saturating_sub(before) / 1_000_000;
    let started_ms = started.as_secs_f64() * 1000.0;
    s.push_str("\n| target | measured | |\n| --- | --- | --- |\n");
    let mut t = |name: &str, measured: String, ok: bool| {
        s.push_str(&format!("| {name} | {measured} | {} |\n", verdict(ok)));
    };
    let (http, grpc) = (pps("bulk, HTTP/protobuf"), pps("bulk, gRPC"));
    t(
        "bulk, HTTP/protobuf ≥ 2.5 M points/s",
        format!("{:.2} M points/s", http / 1e6),
        http >= 2.5e6,
    );
    t(
        "bulk, gRPC ≥ 2.5 M points/s",
        format!("{:.2} M points/s", grpc / 1e6),
        grpc >= 2.5e6,
    );
    t(
        "fleet, 1,000 clients ≥ 50,000 requests/s",
        format!("{fleet_max:.0} requests/s"),
        fleet_max >= 50_000.0,
    );
    t(
        "fleet p99 ≤ 5 ms at half that rate",
        format!("{fleet_p99:.2} ms at half of the {fleet_max:.0} requests/s reached"),
        fleet_p99 <= 5.0 && fleet_max >= 50_000.0,
    );
    t(
        "RSS under bulk load ≤ 64 MiB",
        format!("{:.1} MiB peak", mib(bulk_rss)),
        bulk_rss <= 64 << 20,
    );
    t(
        "1,000,000 open series ≤ 256 B of RSS each",
        format!(
            "{per_series} B ({:.0} → {:.0} MiB)",
            mib(before),
            mib(after)
        ),
        per_series <= 256,
    );
    let flush_extra = series.shutdown_peak.saturating_sub(after);
    t(
        "shutdown flush of 1,000,000 open series adds ≤ 64 MiB, every total delivered",
        format!(
            "+{:.1} MiB ({:.0} → {:.0} MiB peak), {} of 1,000,000 points in {:.1} s, clean exit: {}",
            mib(flush_extra),
            mib(after),
            mib(series.shutdown_peak),
            series.flushed_points,
            series.shutdown.as_secs_f64(),
            series.clean_exit
        ),
        flush_extra <= 64 << 20 && series.flushed_points == 1_000_000 && series.clean_exit,
    );
    t(
        "idle RSS ≤ 15 MiB",
        format!("{:.1} MiB", mib(idle)),
        idle <= 15 << 20,
    );
    t(
        "start to healthy ≤ 100 ms",
        format!("{started_ms:.1} ms"),
        started_ms <= 100.0,
    );
    t(
        "totals in = totals out",
        format!("{} = {}", totals.0, totals.1),
        totals.2,
    );
    let pps_of = |i: usize| queue.runs.get(i).map(|r| r.1.pps()).unwrap_or(0.0);
    let (memory, disk) = (pps_of(0), pps_of(1));
    let cost = if memory > 0.0 {
        1.0 - disk / memory
    } else {
        1.0
    };
    t(
        "persistent sending queue costs < 20% of bulk throughput",
        format!(
            "{:.0} → {:.0} points/s ({:.0}%)",
            memory,
            disk,
            cost * 100.0
        ),
        cost < 0.2,
    );
    s.push_str("\nThe sending path alone (no aggregation: each 1,000-point request is one exporter request, OTLP/JSON to the sink), bulk HTTP/protobuf, 4 connections:\n\n| queue | requests/s in | points/s | requests to the sink | p99 | totals equal |\n| --- | ---: | ---: | ---: | ---: | --- |\n");
    for (name, r, to_sink, ok) in &queue.runs {
        s.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {to_sink} | {:.2} ms | {ok} |\n",
            r.rps(),
            r.pps(),
            r.p99_us as f64 / 1000.0
        ));
    }
    s.push_str("\nAggregation state on disk (`aggregation.storage: file_storage`, persistent queue) against memory only (memory queue): both collectors running, each profile run on one then at once on the other; windows of 1 h (no emission during the runs):\n\n| profile | state | requests/s | points/s | p50 | p99 | collector CPU | totals equal |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for row in durable {
        let r = &row.result;
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {:.0}% | {} |\n",
            row.profile,
            row.state,
            r.rps(),
            r.pps(),
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
            row.cpu,
            row.totals_equal
        ));
    }
    let row = |profile: &str, state: &str| {
        durable
            .iter()
            .find(|r| r.profile.starts_with(profile) && r.state == state)
            .map(|r| &r.result)
    };
    s.push_str(
        "\n| target (state on disk against memory only) | measured | |\n| --- | --- | --- |\n",
    );
    for (name, profile) in [
        ("bulk", "bulk"),
        ("fleet, closed loop", "fleet, 1000 clients, closed loop"),
    ] {
        if let (Some(m), Some(d)) = (row(profile, "memory"), row(profile, "file_storage")) {
            let share = d.pps() / m.pps().max(1.0);
            s.push_str(&format!(
                "| {name} ≥ 70% of the memory-only throughput | {:.0}% ({:.0} vs {:.0} points/s) | {} |\n",
                share * 100.0,
                d.pps(),
                m.pps(),
                verdict(share >= 0.7)
            ));
        }
    }
    if let (Some(m), Some(d)) = (
        row("fleet, 1000 clients, at half", "memory"),
        row("fleet, 1000 clients, at half", "file_storage"),
    ) {
        let added = (d.p99_us as f64 - m.p99_us as f64) / 1000.0;
        s.push_str(&format!(
            "| fleet p99 added ≤ 10 ms at half the memory-only rate | +{added:.2} ms ({:.2} vs {:.2} ms) | {} |\n",
            d.p99_us as f64 / 1000.0,
            m.p99_us as f64 / 1000.0,
            verdict(added <= 10.0)
        ));
    }
    s.push_str(&format!("\n{}\n", recovery_line(recovery)));
    s
}

/// What the recovery run measured, in one sentence.
fn recovery_line(r: &RecoveryRun) -> String {
    format!(
        "Recovery after `kill -9` with {} open series ({} requests accepted): {} on disk ({} bytes per series); restart to healthy {:.2} s, of which state recovery {}.",
        r.series, r.accepted, mib_str(r.disk), r.disk / r.series.max(1), r.healthy.as_secs_f64(), r.recovered.as_deref().unwrap_or("(not logged)")
    )
}

fn mib_str(b: u64) -> String {
    format!("{:.1} MiB", mib(b))
}

/// One profile of [`durable_cost`].
struct DurableRow {
    profile: String,
    /// `memory` or `file_storage`.
    state: String,
    result: LoadResult,
    /// The collector's CPU, percent of one core.
    cpu: f64,
    /// Totals in = totals out for this state's collector.
    totals_equal: bool,
}

/// Bulk and fleet profiles (and the fleet at half its rate) with the
/// aggregation state in memory and on disk: two collectors running side
/// by side, each profile run against the memory-only one and then at once
/// against the durable one, so that the pair compares under the same
/// machine conditions (the machine's own speed drifts over a minute by as
/// much as the difference measured). Windows of an hour, so that no window
/// closes during the runs: a close's emission (once a minute in
/// production) lands in whichever run spans the minute and decides its
/// p99.
async fn durable_cost(bin: &PathBuf, dir: &std::path::Path, secs: Duration) -> Vec<DurableRow> {
    let states = [
        ("memory", Shape::Aggregate),
        ("file_storage", Shape::AggregateDurable),
    ];
    let mut running = vec![];
    for (state, shape) in states {
        let sink = sink::start("127.0.0.1:0", TOKEN)
            .await
            .unwrap_or_else(|e| fail(&format!("sink: {e}")));
        let c = Collector::start_shape(bin, sink.addr.port(), "1h", dir, shape);
        running.push((state, sink, c, 0.0f64));
    }
    let mut out = vec![];
    // "Half load" is half the rate the memory-only collector reached, for
    // both states: the same offered load, so the p99s compare.
    let mut fleet_rate = 1000.0;
    for (profile, connections, fleet, half) in [
        ("bulk, HTTP/protobuf", 4, false, false),
        ("fleet, 1000 clients, closed loop", 1000, true, false),
        (
            "fleet, 1000 clients, at half the memory-only rate",
            1000,
            true,
            true,
        ),
    ] {
        for (state, _, c, sent) in &mut running {
            let requests = if fleet {
                payload::fleet(connections, 1000, now_nanos())
            } else {
                payload::bulk(1000, 100, now_nanos())
            };
            let cfg = LoadConfig {
                target: format!("127.0.0.1:{}", c.http),
                protocol: Protocol::HttpProto,
                connections,
                rate: half.then(|| (fleet_rate / 2.0f64).max(10.0)),
                duration: secs,
                token: None,
                report: false,
            };
            println!(
                "bench: {profile}, state in {state}, for {}s",
                secs.as_secs()
            );
            let (r, cpu, _) = sampled(c.pid(), loadgen::run(cfg, Arc::new(requests))).await;
            println!(
                "bench:   {:.0} requests/s, {:.0} points/s, p50 {} us, p99 {} us, collector CPU {cpu:.0}%, errors {:?}; slowest by second (ms) {:?}",
                r.rps(),
                r.pps(),
                r.p50_us,
                r.p99_us,
                r.errors,
                slowest_ms(&r)
            );
            if fleet && !half && *state == "memory" {
                fleet_rate = r.rps();
            }
            *sent += r.value_sum;
            out.push(DurableRow {
                profile: profile.to_string(),
                state: state.to_string(),
                result: r,
                cpu,
                totals_equal: false,
            });
        }
    }
    for (state, sink, c, sent) in running {
        let clean = tokio::task::spawn_blocking(move || c.stop(Duration::from_secs(120)))
            .await
            .unwrap_or(false);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ok = clean && (sink.stats().total() - sent).abs() < 0.5;
        for row in out.iter_mut().filter(|r| r.state == state) {
            row.totals_equal = ok;
        }
    }
    out
}

/// What the recovery run measured.
struct RecoveryRun {
    series: u64,
    accepted: u64,
    disk: u64,
    healthy: Duration,
    recovered: Option<String>,
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// 1,000,000 open series with the state on disk, `kill -9`, a restart:
/// how long until healthy, what recovery logged, the size on disk.
async fn recovery(bin: &PathBuf, dir: &std::path::Path) -> RecoveryRun {
    let sink = sink::start("127.0.0.1:0", TOKEN)
        .await
        .unwrap_or_else(|e| fail(&format!("sink: {e}")));
    let rdir = dir.join("recovery");
    let _ = std::fs::create_dir_all(&rdir);
    let c = Collector::start_shape(bin, sink.addr.port(), "1h", &rdir, Shape::AggregateDurable);
    let requests = payload::bulk(100_000, 100, now_nanos());
    let cfg = LoadConfig {
        target: format!("127.0.0.1:{}", c.http),
        protocol: Protocol::HttpProto,
        connections: 4,
        rate: None,
        duration: Duration::from_secs(3600),
        token: None,
        report: false,
    };
    let accepted = loadgen::send_each_once(cfg, Arc::new(requests)).await;
    let mut c = c;
    let _ = c.child.kill();
    let _ = c.child.wait();
    let disk = dir_size(&rdir);
    // The same config file and storage directory again.
    let config = std::fs::read_dir(&rdir)
        .ok()
        .and_then(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "yaml"))
        })
        .unwrap_or_else(|| fail("recovery: the config file is gone"));
    let health = std::fs::read_to_string(&config)
        .ok()
        .and_then(|t| {
            t.split("health_check: {endpoint: \"127.0.0.1:")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or_else(|| fail("recovery: no health port in the config"));
    let log_path = rdir.join("recovery-restart.log");
    let log = std::fs::File::create(&log_path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let t0 = Instant::now();
    let mut child = Command::new(bin)
        .args(["--config", &config.to_string_lossy()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", bin.display())));
    while !healthy(health) {
        if t0.elapsed() > Duration::from_secs(120) {
            fail("the collector did not recover within 120 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let healthy_after = t0.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let recovered = std::fs::read_to_string(&log_path).ok().and_then(|t| {
        t.lines()
            .find(|l| l.contains("aggregation state recovered"))
            .map(|l| {
                let field = |k: &str| {
                    l.split(&format!("{k}="))
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .unwrap_or("?")
                        .to_string()
                };
                format!(
                    "{} ms ({} series, {} log records replayed, snapshot {} bytes)",
                    field("millis"),
                    field("series"),
                    field("records"),
                    field("snapshot_bytes")
                )
            })
    });
    println!(
        "bench: recovery of 1,000,000 series: {accepted} requests accepted, {:.1} MiB on disk, healthy after {:.2} s, {}",
        mib(disk),
        healthy_after.as_secs_f64(),
        recovered.as_deref().unwrap_or("no recovery line logged")
    );
    RecoveryRun {
        series: 1_000_000,
        accepted,
        disk,
        healthy: healthy_after,
        recovered,
    }
}

/// Puts `measured` between the bench markers of `path`, keeping the
/// hand-written analysis around them; a new file gets a skeleton.
fn write_report(path: &std::path::Path, measured: &str) -> std::io::Result<()> {
    write_block(path, "bench", measured)
}

/// Puts `measured` between the `<!-- NAME:begin -->` and `<!-- NAME:end -->`
/// markers of `path`; without them, the block goes at the end (a new file
/// gets a title).
fn write_block(path: &std::path::Path, name: &str, measured: &str) -> std::io::Result<()> {
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let block = format!("{begin}\n{measured}{end}");
    let text = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + end.len()..]),
        _ => format!("{}\n{block}\n", old.trim_end()),
    };
    std::fs::write(path, text)
}
