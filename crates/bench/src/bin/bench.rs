//! `cargo xtask bench [--quick]`: starts the collector with a bench config
//! (otlp → aggregation → multitudes → a counting sink), runs the profiles,
//! samples the collector's CPU and RSS from /proc, checks that the totals
//! that came out equal what went in, and (full runs) writes BENCHMARKS.md.

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
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
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

struct Collector {
    child: Child,
    http: u16,
    grpc: u16,
    started_to_healthy: Duration,
}

impl Collector {
    fn start(bin: &PathBuf, sink_port: u16, interval: &str, dir: &std::path::Path) -> Self {
        let (http, grpc, health) = (free_port(), free_port(), free_port());
        let config = format!(
            r#"receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  aggregation:
    attribute_key: user.email
    aggregation_interval: {interval}
    emit_interval: 5s
    exclude_attributes: [session.id]
exporters:
  multitudes:
    endpoint: http://127.0.0.1:{sink_port}/ai/otel
    fallback_token: {TOKEN}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{level: none}}, logs: {{level: warn}}}}
  pipelines:
    metrics: {{receivers: [otlp], processors: [aggregation], exporters: [multitudes]}}
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

    /// SIGTERM, then wait (the shutdown flushes every window).
    fn stop(mut self) -> bool {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if t0.elapsed() > Duration::from_secs(60) {
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

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let secs = Duration::from_secs(a.seconds.unwrap_or(if a.quick { 2 } else { 10 }));
    let dir = std::env::temp_dir().join(format!("otelcol-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
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
            "bench:   {:.0} requests/s, {:.0} points/s, p50 {} us, p99 {} us, collector CPU {cpu:.0}%, peak RSS {:.1} MiB, errors {:?}",
            result.rps(), result.pps(), result.p50_us, result.p99_us, mib(peak_rss), result.errors
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
        "bench:   {:.0} requests/s, p50 {} us, p99 {} us, collector CPU {cpu:.0}%",
        result.rps(),
        result.p50_us,
        result.p99_us
    );
    rows.push(Row {
        name,
        result,
        cpu,
        peak_rss,
    });

    let started = collector.started_to_healthy;
    let sent: f64 = rows.iter().map(|r| r.result.value_sum).sum();
    let clean_exit = collector.stop();
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

    let series = series_memory(&a.collector, &dir).await;
    let out = a.out.unwrap_or_else(|| PathBuf::from("BENCHMARKS.md"));
    let report = report(
        &rows,
        idle_rss,
        started,
        series,
        (sent, got.total(), totals_ok),
    );
    if let Err(e) = std::fs::write(&out, report) {
        fail(&format!("cannot write {}: {e}", out.display()));
    }
    println!("bench: wrote {}", out.display());
    if !totals_ok {
        fail("totals in != totals out");
    }
}

/// RSS per open series with 1,000,000 series (100,000 users × 10).
async fn series_memory(bin: &PathBuf, dir: &std::path::Path) -> (u64, u64, u64) {
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
    drop(c);
    (before, after, sent)
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

fn report(
    rows: &[Row],
    idle: u64,
    started: Duration,
    series: (u64, u64, u64),
    totals: (f64, f64, bool),
) -> String {
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str(&format!(
        "Written by `cargo xtask bench` on {}, commit `{}`. Generator and collector share the machine.\n\n",
        machine(),
        commit()
    ));
    s.push_str("Pipeline: OTLP receiver → aggregation (1-minute windows, user.email, session.id dropped) → multitudes exporter (OTLP/JSON) → a counting sink. Requests are Claude Code-shaped (7 attributes per point, delta sums).\n\n");
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
    let (before, after, _) = series;
    s.push_str(&format!(
        "\n- Idle RSS: {:.1} MiB. Start to healthy: {:.1} ms.\n- 1,000,000 open series (100,000 users × 10): RSS {:.1} → {:.1} MiB, {} bytes per series.\n- Totals: in {} = out {}: {}.\n",
        mib(idle),
        started.as_secs_f64() * 1000.0,
        mib(before),
        mib(after),
        after.saturating_sub(before) / 1_000_000,
        totals.0,
        totals.1,
        if totals.2 { "equal" } else { "NOT EQUAL" }
    ));
    s.push_str("\nReproduce: `cargo xtask bench` (release build; writes this file). `cargo xtask bench --quick` is the CI check of totals under load (no speed targets).\n");
    s
}
