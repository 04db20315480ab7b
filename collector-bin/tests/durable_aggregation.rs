//! Issue 15 on the real binary with the production config
//! (`aggregation.storage: file_storage`): open windows, emissions in flight
//! and cumulative baselines survive `kill -9` and rolling restarts.
//!
//! Senders post delta points (four users under two tokens and the fallback)
//! and cumulative points (two streams) over OTLP/HTTP, JSON and protobuf
//! in turn, while the collector is
//! killed and restarted; an HTTP server on 127.0.0.1 plays the Multitudes
//! endpoint and drops a repeated `Idempotency-Key`, as the real one does.
//! At the end, per user:
//! - delta: the delivered total equals the sum of every acknowledged point,
//!   plus possibly points whose answer the crash cut off (the sender cannot
//!   know whether they were taken; each counts at most once): the test
//!   checks the difference is a sum of some of those, and nothing else;
//! - cumulative: the delivered total equals the stream's last value (every
//!   increment since it began, counted once).

mod common;

use common::faults::{now_nanos, Endpoint};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use otelcol_core::pdata::Metrics;

const FALLBACK: &str = "fallback-token-dur-0001";

/// Windows of a second, quick retries, and the engine in three shards
/// (whatever the machine's cores), so that kills and restarts cut across
/// shards: one log for all of them.
const FAST: [&str; 7] = [
    "processors.aggregation.shards=3",
    "processors.aggregation.aggregation_interval=1s",
    "processors.aggregation.grace=200ms",
    "processors.aggregation.emit_interval=200ms",
    "exporters.multitudes.retry_on_failure.initial_interval=50ms",
    "exporters.multitudes.retry_on_failure.max_interval=200ms",
    "exporters.multitudes.sending_queue.num_consumers=2",
];

/// How a post ended.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    /// 2xx: taken.
    Acked,
    /// Not taken (an error status, or no connection): safe to send again.
    Refused,
    /// Sent, answer lost (the process died): taken or not.
    Unknown,
}

/// Protobuf posts acknowledged, across the tests of this file.
static PROTO_ACKED: AtomicUsize = AtomicUsize::new(0);

/// Posts an OTLP/JSON body: every other one as it is (the receiver
/// decodes it), the others as protobuf (handed over undecoded and read in
/// place by the aggregation engine, then logged as received).
async fn post(port: u16, token: Option<&str>, body: Vec<u8>) -> Answer {
    static SENT: AtomicUsize = AtomicUsize::new(0);
    let proto = SENT.fetch_add(1, Ordering::Relaxed) % 2 == 1;
    let (content_type, body) = if proto {
        let m: Metrics = serde_json::from_slice(&body).expect("the test's own JSON");
        ("application/x-protobuf", prost::Message::encode_to_vec(&m))
    } else {
        ("application/json", body)
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut req = hyper::Request::post(format!("http://127.0.0.1:{port}/v1/metrics"))
        .header("content-type", content_type);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Full::new(bytes::Bytes::from(body))).unwrap();
    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(r)) if r.status().is_success() => {
            if proto {
                PROTO_ACKED.fetch_add(1, Ordering::Relaxed);
            }
            Answer::Acked
        }
        Ok(Ok(_)) => Answer::Refused,
        Ok(Err(e)) if e.is_connect() => Answer::Refused,
        _ => Answer::Unknown,
    }
}

fn point_json(user: &str, metric: &str, value: u64, start: Option<u64>) -> Vec<u8> {
    let (temporality, start) = match start {
        Some(s) => (2, s),
        None => (1, 0),
    };
    format!(
        r#"{{"resourceMetrics": [{{"resource": {{"attributes": [{{"key": "service.name", "value": {{"stringValue": "claude-code"}}}}]}},
        "scopeMetrics": [{{"metrics": [{{"name": "{metric}", "unit": "USD",
        "sum": {{"aggregationTemporality": {temporality}, "isMonotonic": true, "dataPoints": [
        {{"startTimeUnixNano": "{start}", "timeUnixNano": "{}", "asDouble": {value}, "attributes": [{{"key": "user.email", "value": {{"stringValue": "{user}"}}}}]}}]}}}}]}}]}}]}}"#,
        now_nanos()
    )
    .into_bytes()
}

/// What the senders know.
#[derive(Default)]
struct Ledger {
    /// Per delta user: acknowledged sum, and values whose answer was lost.
    acked: BTreeMap<String, u64>,
    unknown: BTreeMap<String, Vec<u64>>,
    /// Per cumulative user: the last value sent, and whether it was acked.
    cumulative: BTreeMap<String, (u64, bool)>,
    posts: u64,
}

const DELTA_USERS: [(&str, Option<&str>); 4] = [
    ("ana@example.com", Some("tok-A-0001")),
    ("bo@example.com", Some("tok-A-0001")),
    ("cy@example.com", Some("tok-B-0002")),
    ("di@example.com", None),
];
const CUMULATIVE_USERS: [&str; 2] = ["eve@example.com", "fu@example.com"];

fn spawn_senders(
    port: Arc<Mutex<u16>>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    start: u64,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![];
    for (i, (user, token)) in DELTA_USERS.into_iter().enumerate() {
        let (port, ledger, stop) = (port.clone(), ledger.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = i as u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let value = 1 + (n * 7919) % 97;
                let p = *port.lock().unwrap();
                // A refused point is sent again until taken or lost.
                loop {
                    let answer = post(p, token, point_json(user, "d.cost", value, None)).await;
                    {
                        let mut l = ledger.lock().unwrap();
                        l.posts += 1;
                        match answer {
                            Answer::Acked => *l.acked.entry(user.into()).or_default() += value,
                            Answer::Unknown => {
                                l.unknown.entry(user.into()).or_default().push(value)
                            }
                            Answer::Refused => {}
                        }
                    }
                    if answer != Answer::Refused || stop.load(Ordering::SeqCst) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }));
    }
    for (i, user) in CUMULATIVE_USERS.into_iter().enumerate() {
        let (port, ledger, stop) = (port.clone(), ledger.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut value = 0u64;
            let mut n = i as u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                value += 1 + (n * 104_729) % 13;
                let p = *port.lock().unwrap();
                let answer = post(p, None, point_json(user, "c.tokens", value, Some(start))).await;
                {
                    let mut l = ledger.lock().unwrap();
                    l.posts += 1;
                    l.cumulative
                        .insert(user.into(), (value, answer == Answer::Acked));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tasks
}

/// (user → total) over every delivered body, one per idempotency key.
fn delivered(endpoint: &Endpoint) -> BTreeMap<String, f64> {
    use otelcol_core::pdata::proto::metrics::v1::{metric::Data, number_data_point::Value};
    let mut out = BTreeMap::new();
    for a in endpoint.delivered_once_per_key("/ai/otel/v1/metrics") {
        let m: Metrics = serde_json::from_slice(&a.body).expect("strict OTLP/JSON");
        for metric in m
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
        {
            let Some(Data::Sum(s)) = &metric.data else {
                continue;
            };
            for p in &s.data_points {
                let user = p
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "user.email")
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(otelcol_core::pdata::as_str)
                    .unwrap()
                    .to_string();
                let Some(Value::AsDouble(v)) = p.value else {
                    panic!("totals are doubles")
                };
                *out.entry(user).or_insert(0.0) += v;
            }
        }
    }
    out
}

/// Whether `diff` is the sum of some of `values` (each at most once).
fn subset_sum(values: &[u64], diff: u64) -> bool {
    let mut reach = vec![false; diff as usize + 1];
    reach[0] = true;
    for &v in values {
        for s in (v as usize..=diff as usize).rev() {
            reach[s] |= reach[s - v as usize];
        }
    }
    reach[diff as usize]
}

/// Runs the senders against the production binary, ending it `restarts`
/// times (`kill -9`, or SIGTERM for a rolling deploy), then checks every
/// user's delivered total.
async fn restarts_lose_and_double_nothing(restarts: usize, kill: bool) {
    let endpoint = Arc::new(Endpoint::default());
    endpoint.up.store(true, Ordering::SeqCst);
    let (url, _server) = endpoint.start().await;
    let storage = common::scratch_storage_dir();
    let envs = [("OTELCOL_STORAGE_DIR", storage.display().to_string())];
    let (mut collector, ports) = common::spawn_production(&url, FALLBACK, &FAST, &envs).await;
    let start = now_nanos();
    let port = Arc::new(Mutex::new(ports.http));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let senders = spawn_senders(port.clone(), ledger.clone(), stop.clone(), start);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..restarts {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tokio::time::sleep(Duration::from_millis(300 + x % 900)).await;
        let lines = if kill {
            collector.kill9()
        } else {
            let (ok, lines) = collector.stop();
            assert!(ok, "round {round}: a clean exit on SIGTERM: {lines:?}");
            lines
        };
        assert!(
            !lines.iter().any(|l| l.contains("panicked")),
            "round {round}: {lines:?}"
        );
        let (c, p) = common::spawn_production(&url, FALLBACK, &FAST, &envs).await;
        collector = c;
        *port.lock().unwrap() = p.http;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.await.unwrap();
    }
    // Each cumulative stream's last value, sent until taken.
    let p = *port.lock().unwrap();
    for user in CUMULATIVE_USERS {
        let (value, acked) = ledger.lock().unwrap().cumulative[user];
        if !acked {
            let body = point_json(user, "c.tokens", value, Some(start));
            while post(p, None, body.clone()).await != Answer::Acked {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // A clean stop flushes the current window too; the queue drains.
    let (ok, lines) = collector.stop();
    assert!(ok, "{lines:?}");
    let l = ledger.lock().unwrap();
    let got = delivered(&endpoint);
    for (user, _) in DELTA_USERS {
        let acked = l.acked.get(user).copied().unwrap_or(0);
        let unknown = l.unknown.get(user).cloned().unwrap_or_default();
        let total = got.get(user).copied().unwrap_or(0.0);
        assert!(acked > 0, "{user}: something was acknowledged");
        assert_eq!(total.fract(), 0.0, "{user}: {total}");
        let total = total as u64;
        assert!(
            total >= acked,
            "{user}: delivered {total} < acknowledged {acked} (lost {}); unknown {unknown:?}",
            acked - total
        );
        assert!(
            subset_sum(&unknown, total - acked),
            "{user}: delivered {total} = acknowledged {acked} + {}, not a sum of the lost answers {unknown:?}",
            total - acked
        );
    }
    for user in CUMULATIVE_USERS {
        let (value, _) = l.cumulative[user];
        assert_eq!(
            got.get(user).copied(),
            Some(value as f64),
            "{user}: every increment once"
        );
    }
    let proto = PROTO_ACKED.load(Ordering::Relaxed);
    eprintln!(
        "{} posts over {restarts} restarts ({proto} protobuf acknowledged so far); lost answers: {:?}",
        l.posts,
        l.unknown.values().map(Vec::len).sum::<usize>()
    );
    assert!(proto > 0, "protobuf posts were acknowledged too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_lose_no_acknowledged_point_and_count_none_twice() {
    restarts_lose_and_double_nothing(20, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_lose_no_cumulative_increment() {
    restarts_lose_and_double_nothing(6, false).await;
}

/// One request of `points` delta points of 1 for `user`.
fn points_json(user: &str, points: usize) -> Vec<u8> {
    let dps: Vec<String> = (0..points)
        .map(|i| format!(
            r#"{{"timeUnixNano": "{}", "asDouble": 1, "attributes": [{{"key": "user.email", "value": {{"stringValue": "{user}"}}}}, {{"key": "n", "value": {{"intValue": "{i}"}}}}]}}"#,
            now_nanos()
        ))
        .collect();
    format!(
        r#"{{"resourceMetrics": [{{"resource": {{"attributes": [{{"key": "service.name", "value": {{"stringValue": "claude-code"}}}}]}},
        "scopeMetrics": [{{"metrics": [{{"name": "d.cost", "unit": "USD",
        "sum": {{"aggregationTemporality": 1, "isMonotonic": true, "dataPoints": [{}]}}}}]}}]}}]}}"#,
        dps.join(",")
    )
    .into_bytes()
}

/// The status and `Retry-After` of one post.
async fn post_status(port: u16, body: Vec<u8>) -> (u16, Option<String>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let req = hyper::Request::post(format!("http://127.0.0.1:{port}/v1/metrics"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("answered within 20 s")
        .expect("answered");
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    (r.status().as_u16(), retry_after)
}

/// A full disk (here: a file size limit, so growing the state's log
/// fails with `EFBIG`):
/// requests the state cannot take are refused retryably (503 with
/// `Retry-After`); once the disk has room they are taken again without a
/// restart, and every request acknowledged, before and after, is
/// delivered after a `kill -9` and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_requests_retryably_and_loses_nothing_acknowledged() {
    const POINTS: usize = 200;
    const USER: &str = "ana@example.com";
    let endpoint = Arc::new(Endpoint::default());
    endpoint.up.store(true, Ordering::SeqCst);
    let (url, _server) = endpoint.start().await;
    let storage = common::scratch_storage_dir();
    let envs = [("OTELCOL_STORAGE_DIR", storage.display().to_string())];
    let sets = ["processors.aggregation.aggregation_interval=1h"];
    let (collector, ports) =
        common::spawn_production_limited(&url, FALLBACK, &sets, &envs, Some(4 << 20)).await;
    let (mut acked, mut refused) = (0u64, 0u32);
    for _ in 0..20_000 {
        match post_status(ports.http, points_json(USER, POINTS)).await {
            (200, _) => acked += POINTS as u64,
            (503, retry_after) => {
                assert_eq!(retry_after.as_deref(), Some("5"), "a retryable refusal");
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            other => panic!("neither taken nor refused retryably: {other:?}"),
        }
    }
    assert_eq!(refused, 5, "the state's log reached its limit");
    assert!(acked > 0, "requests were taken before it did");
    // Room again, without a restart: the engine is rebuilt from storage
    // and requests are taken again.
    let pid = collector.0.as_ref().map(|c| c.id()).expect("running") as libc::pid_t;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) on our own child, with valid structs: read the
    // limits, then set the soft one to the hard one.
    let raised = unsafe {
        libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) == 0
        }
    };
    assert!(raised, "{}", std::io::Error::last_os_error());
    let began = std::time::Instant::now();
    let mut taken_again = 0;
    while taken_again < 3 {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "requests are taken again within 30 s of the disk having room"
        );
        match post_status(ports.http, points_json(USER, POINTS)).await {
            (200, _) => {
                acked += POINTS as u64;
                taken_again += 1;
            }
            (503, _) => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("neither taken nor refused retryably: {other:?}"),
        }
    }
    let lines = collector.kill9();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("aggregation state cannot be written")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("panicked")), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("aggregation state is written again")),
        "{lines:?}"
    );
    // Every acknowledged point is recovered and delivered.
    let (collector, _) = common::spawn_production(&url, FALLBACK, &sets, &envs).await;
    let (ok, lines) = collector.stop();
    assert!(ok, "{lines:?}");
    let got = delivered(&endpoint);
    assert_eq!(got.get(USER).copied(), Some(acked as f64), "{lines:?}");
}
