//! Issue 14 for `awss3` on the real binary with `configs/s3.yaml` (merge
//! stage and sending queue on `file_storage`, retries that never give up)
//! against a real S3 server (moto) on 127.0.0.1. Events go in over
//! OTLP/HTTP; what counts is what the bucket holds afterwards, read back
//! with boto3: every event a sender was told was accepted, in exactly one
//! object (an object name is fixed before its first upload, so a resend
//! overwrites it rather than adding a second copy).
//!
//! - S3 down, `kill -9` during the outage, a restart while S3 is still
//!   down, S3 back: everything;
//! - `kill -9` at random moments, 20 times, while events flow: everything;
//! - S3 down until the queue and the merge stage are full: 503 with
//!   `Retry-After`, and after the sender's retries everything.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::faults::{event_ids, events_json, now_nanos, post_retrying, until};

const BUCKET: &str = "raw-test";

/// A moto S3 server on a given loopback port (in memory: a restart on
/// the same port is an empty server), with the test bucket.
struct Moto(Child);

impl Moto {
    fn start(port: u16) -> Self {
        let child = Command::new(common::venv_tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server listening within 30s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let me = Self(child);
        me.python(port, &format!("s3.create_bucket(Bucket='{BUCKET}')"));
        me
    }

    fn python(&self, port: u16, body: &str) -> String {
        let script = format!(
            "import boto3, gzip, json\n\
             s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', aws_access_key_id='t', aws_secret_access_key='t')\n\
             {body}\n"
        );
        let out = Command::new(common::venv_tool("python"))
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every object of the bucket: key → decompressed body.
    fn objects(&self, port: u16) -> BTreeMap<String, Vec<u8>> {
        let listing = self.python(
            port,
            &format!(
                "out = {{}}\n\
                 for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{BUCKET}'):\n    \
                 for o in page.get('Contents', []):\n        \
                 b = s3.get_object(Bucket='{BUCKET}', Key=o['Key'])['Body'].read()\n        \
                 out[o['Key']] = gzip.decompress(b).decode() if o['Key'].endswith('.gz') else b.decode()\n\
                 print(json.dumps(out))"
            ),
        );
        let map: BTreeMap<String, String> = serde_json::from_str(listing.trim()).unwrap();
        map.into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
    }

    /// How often each event id appears across the bucket's log objects.
    fn event_counts(&self, port: u16) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for (key, body) in self.objects(port) {
            if key.starts_with("raw/") && key.contains("/logs_") {
                for id in event_ids(&body) {
                    *counts.entry(id).or_default() += 1;
                }
            }
        }
        counts
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP forwarder on a loopback port to moto: while down it closes every
/// connection at once (an S3 outage, retryable), while up it forwards. Moto
/// keeps its objects and bucket through the outage.
struct Switch {
    port: u16,
    up: Arc<AtomicBool>,
}

impl Switch {
    async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let on = up.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !on.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut out) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Self { port, up }
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

/// The binary with `configs/s3.yaml` writing to moto on `s3_port`, its
/// queues under `storage`, the clocks compressed; returns once healthy,
/// with its OTLP/HTTP logs URL.
async fn spawn_s3(
    s3_port: u16,
    storage: &std::path::Path,
    sets: &[&str],
) -> (common::Collector, String) {
    let (http, health) = (common::free_port(), common::free_port());
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/s3.yaml");
    let mut args = vec!["--config".to_string(), config.display().to_string()];
    let fast = [
        "exporters.awss3/raw.batching.flush_interval=200ms",
        "exporters.awss3/raw.retry_on_failure.initial_interval=50ms",
        "exporters.awss3/raw.retry_on_failure.max_interval=200ms",
    ];
    for s in fast.iter().chain(sets) {
        args.push("--set".into());
        args.push(s.to_string());
    }
    let envs = [
        ("S3_BUCKET", BUCKET.to_string()),
        ("S3_ENDPOINT", format!("http://127.0.0.1:{s3_port}")),
        ("S3_PATH_STYLE", "true".into()),
        ("S3_DISABLE_SSL", "true".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("OTLP_HTTP_ENDPOINT", format!("127.0.0.1:{http}")),
        (
            "OTLP_GRPC_ENDPOINT",
            format!("127.0.0.1:{}", common::free_port()),
        ),
        ("HEALTH_ENDPOINT", format!("127.0.0.1:{health}")),
        (
            "METRICS_ENDPOINT",
            format!("127.0.0.1:{}", common::free_port()),
        ),
        ("OTELCOL_STORAGE_DIR", storage.display().to_string()),
    ];
    let collector = common::Collector::spawn(&args, &envs);
    common::wait_healthy(&format!("http://127.0.0.1:{health}/")).await;
    (collector, format!("http://127.0.0.1:{http}/v1/logs"))
}

/// Asserts that every id in `accepted` is in the bucket exactly once.
fn assert_each_once(counts: &BTreeMap<u64, usize>, accepted: &[u64]) {
    let missing: Vec<_> = accepted
        .iter()
        .filter(|id| !counts.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "accepted but not in the bucket: {missing:?}"
    );
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "in two objects: {repeated:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_a_kill_and_a_restart_store_every_accepted_event_once() {
    let s3_port = common::free_port();
    let moto = Moto::start(s3_port);
    let switch = Switch::start(s3_port).await;
    let storage = common::scratch_storage_dir();
    let (collector, logs) = spawn_s3(switch.port, &storage, &[]).await;
    switch.set(false); // S3 is down from here on.
    let mut accepted = vec![];
    for i in 0..10u64 {
        let ids = i * 5..i * 5 + 5;
        let (status, _) = post_retrying(&logs, events_json(ids.clone()), Duration::ZERO).await;
        assert_eq!(status, 200, "accepted while S3 is down");
        accepted.extend(ids);
    }
    // Merged, queued, and retried for a while (dozens of attempts).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = collector.kill9();
    let nothing_given_up = |log: &[String]| {
        !log.iter()
            .any(|l| l.contains("dropp") || l.contains("giving up") || l.contains("lost"))
    };
    assert!(
        log.iter().any(|l| l.contains("send failed; retrying")),
        "uploads were tried: {log:#?}"
    );
    assert!(nothing_given_up(&log), "{log:#?}");

    // A restart while S3 is still down: it starts, and keeps retrying.
    let (collector, logs) = spawn_s3(switch.port, &storage, &[]).await;
    let (status, _) = post_retrying(&logs, events_json(50..55), Duration::ZERO).await;
    assert_eq!(status, 200, "accepting again during the outage");
    accepted.extend(50..55);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(moto.event_counts(s3_port).is_empty(), "S3 was down");
    switch.set(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while moto.event_counts(s3_port).len() < accepted.len() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            moto.event_counts(s3_port)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, log) = collector.stop();
    assert!(ok, "{log:#?}");
    assert!(nothing_given_up(&log), "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("resuming the requests the persistent queue held")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("the bucket is unreachable now")),
        "{log:#?}"
    );
    assert_each_once(&moto.event_counts(s3_port), &accepted);
    let _ = std::fs::remove_dir_all(storage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_stores_every_accepted_event_once() {
    let s3_port = common::free_port();
    let moto = Moto::start(s3_port);
    let storage = common::scratch_storage_dir();
    let mut accepted: Vec<u64> = vec![];
    let mut seed = now_nanos() | 1;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut next = 0u64;
    for round in 0..20 {
        let (collector, logs) = spawn_s3(s3_port, &storage, &[]).await;
        let sender = tokio::spawn(async move {
            let mut ok = vec![];
            for _ in 0..1000 {
                let ids = next..next + 5;
                next += 5;
                let (status, _) =
                    post_retrying(&logs, events_json(ids.clone()), Duration::from_secs(2)).await;
                if status != 200 {
                    break;
                }
                ok.extend(ids);
            }
            (ok, next)
        });
        tokio::time::sleep(Duration::from_millis(100 + random(500))).await;
        let log = collector.kill9();
        let (ok, n) = sender.await.unwrap();
        next = n;
        assert!(
            !log.iter().any(|l| l.contains("panicked")),
            "round {round}: {log:#?}"
        );
        accepted.extend(ok);
    }
    assert!(accepted.len() > 100, "events flowed: {}", accepted.len());
    eprintln!("{} events accepted across 20 kills", accepted.len());
    let (collector, _) = spawn_s3(s3_port, &storage, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = moto.event_counts(s3_port);
        if accepted.iter().all(|id| counts.contains_key(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted events in the bucket",
            accepted.iter().filter(|id| counts.contains_key(id)).count(),
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (ok, log) = collector.stop();
    assert!(ok, "{log:#?}");
    assert_each_once(&moto.event_counts(s3_port), &accepted);
    let _ = std::fs::remove_dir_all(storage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_and_stage_answer_503_with_retry_after_and_lose_nothing() {
    let s3_port = common::free_port();
    let moto = Moto::start(s3_port);
    let switch = Switch::start(s3_port).await;
    let storage = common::scratch_storage_dir();
    let (collector, logs) = spawn_s3(
        switch.port,
        &storage,
        &[
            "exporters.awss3/raw.sending_queue.queue_size=2",
            "exporters.awss3/raw.sending_queue.num_consumers=1",
        ],
    )
    .await;
    // S3 down: one upload in flight, two queued, the stage fills; then 503.
    switch.set(false);
    let mut accepted = vec![];
    let mut refused = None;
    for i in 0..20u64 {
        let ids = i * 3..i * 3 + 3;
        let (status, _) = post_retrying(&logs, events_json(ids.clone()), Duration::ZERO).await;
        if status == 503 {
            refused = Some(i);
            break;
        }
        assert_eq!(status, 200);
        accepted.extend(ids);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let i = refused.expect("a full queue and stage refuse");
    assert!(
        accepted.len() >= 9,
        "the queue and the stage took some first: {accepted:?}"
    );
    // The sender retries after Retry-After while S3 comes back.
    let again = logs.clone();
    let ids = i * 3..i * 3 + 3;
    let body = events_json(ids.clone());
    let retry =
        tokio::spawn(async move { post_retrying(&again, body, Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    switch.set(true);
    assert_eq!(
        retry.await.unwrap(),
        (200, true),
        "503 with Retry-After, then 200"
    );
    accepted.extend(ids);
    until(
        "every accepted event stored",
        Duration::from_secs(20),
        || moto.event_counts(s3_port).len() == accepted.len(),
    )
    .await;
    let (ok, log) = collector.stop();
    assert!(ok, "{log:#?}");
    assert!(
        log.iter().any(|l| l.contains("the sending queue is full")),
        "{log:#?}"
    );
    assert_each_once(&moto.event_counts(s3_port), &accepted);
    let _ = std::fs::remove_dir_all(storage);
}
