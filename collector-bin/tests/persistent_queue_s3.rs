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
use std::time::{Duration, Instant};

use common::faults::{events_json, now_nanos, post_retrying, until};
use common::s3::{spawn_s3, Moto, Switch};

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
