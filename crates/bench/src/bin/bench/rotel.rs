//! `bench --rotel PATH` (`cargo xtask bench --vs-rotel`): the same profiles
//! against rotel's `rotel-agent` with its blackhole exporter (receives,
//! decodes, drops) and against ours aggregating, memory only and with
//! `aggregation.storage: file_storage`, back to back in each of three
//! rounds, so every ratio compares runs seconds apart on the same machine.

use super::*;

/// Rounds: each figure is reported as the spread over them.
const ROUNDS: usize = 3;

/// A collector in the side-by-side run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    /// rotel 0.0.1a15, `--exporter blackhole`.
    Rotel,
    /// Ours: otlp → aggregation → multitudes (memory only).
    Ours,
    /// Ours with `aggregation.storage: file_storage` and a persistent queue.
    OursDurable,
}

const PEERS: [Peer; 3] = [Peer::Rotel, Peer::Ours, Peer::OursDurable];

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Rotel => "rotel 0.0.1a15, blackhole",
            Peer::Ours => "ours, aggregating",
            Peer::OursDurable => "ours, aggregating, storage on",
        }
    }
}

/// A load shape, run against every peer.
struct Profile {
    name: &'static str,
    protocol: Protocol,
    connections: usize,
    /// Fleet requests (20 points, one user) instead of bulk (1,000 points).
    fleet: bool,
    /// At half the rate this peer reached in the profile before.
    half: bool,
}

const PROFILES: [Profile; 5] = [
    Profile {
        name: "bulk, HTTP/protobuf, 4 connections",
        protocol: Protocol::HttpProto,
        connections: 4,
        fleet: false,
        half: false,
    },
    Profile {
        name: "bulk, gRPC, 4 connections",
        protocol: Protocol::Grpc,
        connections: 4,
        fleet: false,
        half: false,
    },
    Profile {
        name: "bulk, HTTP/JSON, 4 connections",
        protocol: Protocol::HttpJson,
        connections: 4,
        fleet: false,
        half: false,
    },
    Profile {
        name: "fleet, HTTP/protobuf, 1000 clients, closed loop",
        protocol: Protocol::HttpProto,
        connections: 1000,
        fleet: true,
        half: false,
    },
    Profile {
        name: "fleet, HTTP/protobuf, 1000 clients at half the rate reached",
        protocol: Protocol::HttpProto,
        connections: 1000,
        fleet: true,
        half: true,
    },
];

/// One profile against one peer in one round.
#[derive(Clone, Default)]
struct Measure {
    result: LoadResult,
    cpu: f64,
    peak_rss: u64,
}

/// Starts rotel with its blackhole exporter on free loopback ports.
fn start_rotel(bin: &std::path::Path, dir: &std::path::Path) -> Collector {
    let (http, grpc) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join(format!("rotel-{http}.out")))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let t0 = Instant::now();
    let child = Command::new(bin)
        .arg("start")
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
        .args(["--exporter", "blackhole"])
        .arg("--pid-file")
        .arg(dir.join(format!("rotel-{http}.pid")))
        .arg("--log-file")
        .arg(dir.join(format!("rotel-{http}.log")))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", bin.display())));
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err()
    {
        if t0.elapsed() > Duration::from_secs(30) {
            fail("rotel did not open its ports within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Collector {
        child,
        http,
        grpc,
        started_to_healthy: t0.elapsed(),
    }
}

/// Runs every profile against `peer`, fresh, once.
async fn round(
    peer: Peer,
    collector_bin: &PathBuf,
    rotel: &std::path::Path,
    dir: &std::path::Path,
    secs: Duration,
) -> (Vec<Measure>, Option<bool>) {
    let sink = match peer {
        Peer::Rotel => None,
        _ => Some(
            sink::start("127.0.0.1:0", TOKEN)
                .await
                .unwrap_or_else(|e| fail(&format!("sink: {e}"))),
        ),
    };
    let collector = match (peer, &sink) {
        (Peer::Ours, Some(s)) => Collector::start(collector_bin, s.addr.port(), "1m", dir),
        (Peer::OursDurable, Some(s)) => Collector::start_shape(
            collector_bin,
            s.addr.port(),
            "1m",
            dir,
            Shape::AggregateDurable,
        ),
        _ => start_rotel(rotel, dir),
    };
    let pid = collector.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut out: Vec<Measure> = vec![];
    let mut sent = 0.0;
    for p in &PROFILES {
        let rate = p.half.then(|| {
            out.last()
                .map_or(10.0, |m| (m.result.rps() / 2.0).max(10.0))
        });
        let requests = if p.fleet {
            payload::fleet(p.connections, 1000, now_nanos())
        } else {
            payload::bulk(1000, 100, now_nanos())
        };
        let target = match p.protocol {
            Protocol::Grpc => collector.grpc,
            _ => collector.http,
        };
        let cfg = LoadConfig {
            target: format!("127.0.0.1:{target}"),
            protocol: p.protocol,
            connections: p.connections,
            rate,
            duration: secs,
            token: None,
            report: false,
        };
        let (result, cpu, peak_rss) = sampled(pid, loadgen::run(cfg, Arc::new(requests))).await;
        println!(
            "bench: {} | {}: {:.0} points/s, {:.0} requests/s, p99 {} us, CPU {cpu:.0}%, peak RSS {:.1} MiB, errors {:?}",
            peer.name(), p.name, result.pps(), result.rps(), result.p99_us, mib(peak_rss), result.errors
        );
        sent += result.value_sum;
        out.push(Measure {
            result,
            cpu,
            peak_rss,
        });
    }
    let totals = match sink {
        None => {
            drop(collector);
            None
        }
        Some(s) => {
            let clean = collector.stop(Duration::from_secs(120));
            tokio::time::sleep(Duration::from_millis(500)).await;
            let got = s.stats();
            let ok = clean && got.bad_body == 0 && (got.total() - sent).abs() < 0.5;
            println!(
                "bench: {}: totals in {sent} = out {}: {}",
                peer.name(),
                got.total(),
                if ok { "OK" } else { "MISMATCH" }
            );
            Some(ok)
        }
    };
    (out, totals)
}

/// `lo–hi` of `values` formatted by `f`, or the one value.
fn spread(values: &[f64], f: impl Fn(f64) -> String) -> String {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.is_empty() {
        "–".into()
    } else if f(lo) == f(hi) {
        f(lo)
    } else {
        format!("{}–{}", f(lo), f(hi))
    }
}

/// Runs the side-by-side bench, prints it and writes it into `out`.
pub(crate) async fn vs_rotel(
    collector_bin: &PathBuf,
    rotel: &std::path::Path,
    dir: &std::path::Path,
    secs: Duration,
    out: &std::path::Path,
) {
    // measures[peer][round][profile]
    let mut measures: Vec<Vec<Vec<Measure>>> = vec![vec![]; PEERS.len()];
    let mut totals_ok = true;
    for r in 0..ROUNDS {
        for (i, peer) in PEERS.iter().enumerate() {
            println!("bench: round {} of {ROUNDS}, {}", r + 1, peer.name());
            let (m, totals) = round(*peer, collector_bin, rotel, dir, secs).await;
            totals_ok &= totals.unwrap_or(true);
            measures[i].push(m);
        }
    }
    let block = side_by_side(&measures, secs, totals_ok);
    println!("{block}");
    if let Err(e) = write_block(out, "vs-rotel", &block) {
        fail(&format!("cannot write {}: {e}", out.display()));
    }
    println!("bench: wrote {}", out.display());
    if !totals_ok {
        fail("ours: totals in != totals out");
    }
}

/// The side-by-side block of BENCHMARKS.md.
fn side_by_side(measures: &[Vec<Vec<Measure>>], secs: Duration, totals_ok: bool) -> String {
    let mut s = format!(
        "Measured by `cargo xtask bench --vs-rotel` on {}, commit `{}`; generator, sink and collectors share the machine. {ROUNDS} rounds; in each, every peer was started fresh and ran every profile for {} s, rotel first. Figures are the spread over the rounds (lowest–highest); a ratio pairs the runs of one round.\n\n",
        machine(),
        commit(),
        secs.as_secs()
    );
    s.push_str("| profile | collector | points/s | requests/s | p99 | CPU | peak RSS | errors |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n");
    let each = |peer: usize, profile: usize, f: &dyn Fn(&Measure) -> f64| -> Vec<f64> {
        measures[peer].iter().map(|r| f(&r[profile])).collect()
    };
    let ratio = |peer: usize, profile: usize, f: &dyn Fn(&Measure) -> f64| -> Vec<f64> {
        measures[peer]
            .iter()
            .zip(&measures[0])
            .map(|(ours, rotel)| f(&ours[profile]) / f(&rotel[profile]).max(1e-9))
            .collect()
    };
    for (j, p) in PROFILES.iter().enumerate() {
        for (i, peer) in PEERS.iter().enumerate() {
            let errors: u64 = measures[i]
                .iter()
                .map(|r| r[j].result.errors.values().sum::<u64>())
                .sum();
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {errors} |\n",
                p.name,
                peer.name(),
                spread(&each(i, j, &|m| m.result.pps()), |v| format!(
                    "{:.2} M",
                    v / 1e6
                )),
                spread(&each(i, j, &|m| m.result.rps()), |v| format!("{v:.0}")),
                spread(&each(i, j, &|m| m.result.p99_us as f64 / 1000.0), |v| {
                    format!("{v:.1} ms")
                }),
                spread(&each(i, j, &|m| m.cpu), |v| format!("{v:.0}%")),
                spread(&each(i, j, &|m| mib(m.peak_rss)), |v| format!("{v:.0} MiB")),
            ));
        }
    }
    s.push_str("\n| target | measured (per round) | |\n| --- | --- | --- |\n");
    let mut t = |name: String, values: Vec<f64>, fmt: &dyn Fn(f64) -> String, ok: bool| {
        s.push_str(&format!(
            "| {name} | {} | {} |\n",
            values
                .iter()
                .map(|v| fmt(*v))
                .collect::<Vec<_>>()
                .join(", "),
            verdict(ok)
        ));
    };
    let times = |v: f64| format!("{v:.2}×");
    let pps = |m: &Measure| m.result.pps();
    let rps = |m: &Measure| m.result.rps();
    for (j, name) in [(0, "bulk HTTP/protobuf"), (1, "bulk gRPC")] {
        let r = ratio(1, j, &pps);
        let ok = r.iter().all(|v| *v >= 2.0);
        t(format!("{name}: ours ≥ 2× rotel"), r, &times, ok);
        let r = ratio(2, j, &pps);
        let ok = r.iter().all(|v| *v >= 1.5);
        t(
            format!("{name}: ours with storage ≥ 1.5× rotel"),
            r,
            &times,
            ok,
        );
    }
    let json = each(1, 2, &pps);
    let ok = json.iter().all(|v| *v >= 0.5e6);
    t(
        "bulk HTTP/JSON ≥ 0.5 M points/s".into(),
        json,
        &|v| format!("{:.2} M", v / 1e6),
        ok,
    );
    let r = ratio(1, 3, &rps);
    let ok = r.iter().all(|v| *v >= 1.5);
    t(
        "fleet: ours ≥ 1.5× rotel's requests/s".into(),
        r,
        &times,
        ok,
    );
    let p99 = each(1, 4, &|m| m.result.p99_us as f64 / 1000.0);
    let ok = p99.iter().all(|v| *v <= 5.0);
    t(
        "fleet p99 ≤ 5 ms at half the rate reached, 3 runs of 3".into(),
        p99,
        &|v| format!("{v:.1} ms"),
        ok,
    );
    let rss: Vec<f64> = measures[1]
        .iter()
        .map(|r| (0..3).map(|j| mib(r[j].peak_rss)).fold(0.0_f64, f64::max))
        .collect();
    let ok = rss.iter().all(|v| *v <= 64.0);
    t(
        "ours: peak RSS ≤ 64 MiB under every bulk profile".into(),
        rss,
        &|v| format!("{v:.0} MiB"),
        ok,
    );
    s.push_str(&format!(
        "\nOurs: totals in = totals out at the sink after every run: {}.\n",
        if totals_ok { "yes" } else { "**no**" }
    ));
    s
}
