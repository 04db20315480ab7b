//! The load generator: `connections` clients, each with its own connection,
//! sending pre-encoded requests over HTTP/protobuf, HTTP/JSON or gRPC,
//! either as fast as answers come (closed loop) or at a fixed total rate.
//! At a fixed rate, latency is measured from when a request was due, not
//! when it left, so a stalled server is not hidden (no coordinated omission).
//! Every client opens its connection before the clock starts (as a fleet's
//! exporters keep theirs open): the figures are those of requests, not of
//! a thousand connections opened in the same instant. A connection lost
//! during the run is opened again inside it, and that counts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::payload::Encoded;

/// How requests travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// OTLP/HTTP with a protobuf body.
    HttpProto,
    /// OTLP/HTTP with a JSON body.
    HttpJson,
    /// OTLP/gRPC.
    Grpc,
}

/// One run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// `127.0.0.1:4318` (HTTP) or `127.0.0.1:4317` (gRPC).
    pub target: String,
    /// The transport.
    pub protocol: Protocol,
    /// Clients, one connection each.
    pub connections: usize,
    /// Total requests per second; `None`: each client sends as soon as it has its answer.
    pub rate: Option<f64>,
    /// How long to send.
    pub duration: Duration,
    /// Sent as `Authorization: Bearer …` when set.
    pub token: Option<String>,
    /// Print a line per second.
    pub report: bool,
}

/// What a run did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LoadResult {
    /// Requests answered 200.
    pub ok: u64,
    /// Other outcomes by status (`503`, `connect`, …).
    pub errors: BTreeMap<String, u64>,
    /// Points in the requests answered 200.
    pub points: u64,
    /// Sum of the values of those points.
    pub value_sum: f64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Requests answered 200 per second, each second.
    pub per_second: Vec<u64>,
    /// The slowest answer (microseconds) among the requests due in each
    /// second: when in the run a stall came.
    pub per_second_max_us: Vec<u64>,
}

impl LoadResult {
    /// Requests answered 200 per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }
    /// Points accepted per second.
    pub fn pps(&self) -> f64 {
        self.points as f64 / self.seconds.max(1e-9)
    }
}

struct Shared {
    ok: AtomicU64,
    points: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    value_sum: Mutex<f64>,
    latencies: Mutex<Vec<u32>>,
    /// The slowest answer by the second its request was due.
    worst: Mutex<Vec<u64>>,
    /// Clients that have tried to open their connection.
    ready: AtomicU64,
}

enum Conn {
    Http(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
}

async fn connect(cfg: &LoadConfig) -> Result<Conn, String> {
    match cfg.protocol {
        Protocol::Grpc => {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", cfg.target))
                .map_err(|e| e.to_string())?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Conn::Grpc(tonic::client::Grpc::new(ch)))
        }
        _ => {
            let stream = tokio::net::TcpStream::connect(&cfg.target)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Conn::Http(send))
        }
    }
}

/// Sends one request; `Ok(())` for 200 / gRPC OK, else the outcome's name.
async fn send(conn: &mut Conn, cfg: &LoadConfig, req: &Encoded) -> Result<(), String> {
    match conn {
        Conn::Http(s) => {
            let (body, ct) = match cfg.protocol {
                Protocol::HttpJson => (req.json.clone(), "application/json"),
                _ => (req.proto.clone(), "application/x-protobuf"),
            };
            let mut b = hyper::Request::post(format!("http://{}/v1/metrics", cfg.target))
                .header("content-type", ct)
                .header("host", &cfg.target);
            if let Some(t) = &cfg.token {
                b = b.header("authorization", format!("Bearer {t}"));
            }
            let r = b.body(Full::new(body)).map_err(|e| e.to_string())?;
            s.ready().await.map_err(|_| "connection".to_string())?;
            let resp = s
                .send_request(r)
                .await
                .map_err(|_| "connection".to_string())?;
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            if status == 200 {
                Ok(())
            } else {
                Err(status.to_string())
            }
        }
        Conn::Grpc(g) => {
            g.ready().await.map_err(|_| "connection".to_string())?;
            let mut request = tonic::Request::new(req.proto.clone());
            if let Some(t) = &cfg.token {
                if let Ok(v) = format!("Bearer {t}").parse() {
                    request.metadata_mut().insert("authorization", v);
                }
            }
            let path = http::uri::PathAndQuery::from_static(
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            );
            g.unary(request, path, crate::grpc::RawCodec)
                .await
                .map(|_| ())
                .map_err(|s| format!("grpc-{:?}", s.code()))
        }
    }
}

async fn client(
    n: usize,
    cfg: Arc<LoadConfig>,
    requests: Arc<Vec<Encoded>>,
    shared: Arc<Shared>,
    mut clock: tokio::sync::watch::Receiver<Option<(Instant, Instant)>>,
) {
    let mut lat = Vec::new();
    let mut worst: Vec<u64> = Vec::new();
    let mut sum = 0f64;
    let mut conn: Option<Conn> = connect(&cfg).await.ok();
    shared.ready.fetch_add(1, Ordering::Relaxed);
    let Ok(Some((start, end))) = clock.wait_for(Option::is_some).await.map(|c| *c) else {
        return;
    };
    let interval = cfg
        .rate
        .map(|r| Duration::from_secs_f64(cfg.connections as f64 / r));
    // Spread the clients' first requests over one interval.
    let mut due = start
        + interval
            .map(|i| i.mul_f64(n as f64 / cfg.connections as f64))
            .unwrap_or_default();
    let mut i = n;
    while Instant::now() < end {
        if interval.is_some() {
            tokio::time::sleep_until(due.into()).await;
            if Instant::now() >= end {
                break;
            }
        } else {
            due = Instant::now();
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(&cfg).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    *shared
                        .errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry("connect".into())
                        .or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let req = &requests[i % requests.len()];
        i += cfg.connections;
        match send(c, &cfg, req).await {
            Ok(()) => {
                let us = due.elapsed().as_micros().min(u32::MAX as u128) as u32;
                lat.push(us);
                let second = due.saturating_duration_since(start).as_secs() as usize;
                if worst.len() <= second {
                    worst.resize(second + 1, 0);
                }
                worst[second] = worst[second].max(u64::from(us));
                shared.ok.fetch_add(1, Ordering::Relaxed);
                shared.points.fetch_add(req.points, Ordering::Relaxed);
                sum += req.value_sum;
            }
            Err(e) => {
                if e == "connection" {
                    conn = None;
                }
                *shared
                    .errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(e)
                    .or_default() += 1;
            }
        }
        if let Some(iv) = interval {
            due += iv;
        }
    }
    *shared.value_sum.lock().unwrap_or_else(|e| e.into_inner()) += sum;
    shared
        .latencies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(lat);
    let mut all = shared.worst.lock().unwrap_or_else(|e| e.into_inner());
    if all.len() < worst.len() {
        all.resize(worst.len(), 0);
    }
    for (a, w) in all.iter_mut().zip(worst) {
        *a = (*a).max(w);
    }
}

/// Runs the load; `requests` are used round-robin, client `n` starting at `n`.
pub async fn run(cfg: LoadConfig, requests: Arc<Vec<Encoded>>) -> LoadResult {
    let shared = Arc::new(Shared {
        ok: AtomicU64::new(0),
        points: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
        value_sum: Mutex::new(0.0),
        latencies: Mutex::new(Vec::new()),
        worst: Mutex::new(Vec::new()),
        ready: AtomicU64::new(0),
    });
    let cfg = Arc::new(cfg);
    let (clock, clock_rx) = tokio::sync::watch::channel(None);
    let tasks: Vec<_> = (0..cfg.connections)
        .map(|n| {
            tokio::spawn(client(
                n,
                cfg.clone(),
                requests.clone(),
                shared.clone(),
                clock_rx.clone(),
            ))
        })
        .collect();
    // Every connection opened (or failed) first, for at most 30 s.
    let opening = Instant::now() + Duration::from_secs(30);
    while shared.ready.load(Ordering::Relaxed) < cfg.connections as u64 && Instant::now() < opening
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = Instant::now();
    let end = start + cfg.duration;
    let _ = clock.send(Some((start, end)));
    let mut per_second = vec![];
    let (mut last_ok, mut last_points) = (0, 0);
    let mut tick = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    while Instant::now() + Duration::from_millis(500) < end {
        tick.tick().await;
        let (ok, points) = (
            shared.ok.load(Ordering::Relaxed),
            shared.points.load(Ordering::Relaxed),
        );
        per_second.push(ok - last_ok);
        if cfg.report {
            let errors: u64 = shared
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .sum();
            println!(
                "t={:>3}s  requests/s={:>8}  points/s={:>10}  errors={errors}",
                per_second.len(),
                ok - last_ok,
                points - last_points
            );
        }
        (last_ok, last_points) = (ok, points);
    }
    for t in tasks {
        let _ = t.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut lat = std::mem::take(&mut *shared.latencies.lock().unwrap_or_else(|e| e.into_inner()));
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as u64
    };
    let value_sum = *shared.value_sum.lock().unwrap_or_else(|e| e.into_inner());
    let per_second_max_us =
        std::mem::take(&mut *shared.worst.lock().unwrap_or_else(|e| e.into_inner()));
    let errors = shared
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    LoadResult {
        ok: shared.ok.load(Ordering::Relaxed),
        errors,
        points: shared.points.load(Ordering::Relaxed),
        value_sum,
        seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: lat.last().copied().unwrap_or(0) as u64,
        per_second,
        per_second_max_us,
    }
}

/// Sends every request once over `cfg.connections` connections (closed
/// loop); returns how many were answered 200.
pub async fn send_each_once(cfg: LoadConfig, requests: Arc<Vec<Encoded>>) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let cfg = Arc::new(cfg);
    let tasks: Vec<_> = (0..cfg.connections)
        .map(|_| {
            let (next, ok, cfg, requests) =
                (next.clone(), ok.clone(), cfg.clone(), requests.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = connect(&cfg).await else {
                    return;
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(req) = requests.get(i) else { break };
                    if send(&mut conn, &cfg, req).await.is_ok() {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    ok.load(Ordering::Relaxed)
}
