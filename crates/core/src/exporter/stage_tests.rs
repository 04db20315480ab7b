//! The merge stage through the helper: thresholds, partitions, keys that
//! survive a restart, backpressure, the last flush at shutdown.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::tests::{exporter_with, host_with, points, retryable, settings, until, value, Script};
use super::MergeSettings;
use crate::component::{Host, Lifecycle};
use crate::consumer::{Batch, Consumer, ConsumerError};
use crate::storage::MemoryStorageExtension;

fn merge(flush_interval: Duration, max_items: u64) -> Option<MergeSettings> {
    Some(MergeSettings {
        flush_interval,
        max_items,
        max_bytes: 1 << 30,
        max_per_minute: 0,
    })
}

fn no_host() -> Host {
    Host::new(Default::default(), Default::default())
}

fn keys(script: &Script) -> BTreeSet<String> {
    script
        .attempts
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.0.clone())
        .collect()
}

#[tokio::test]
async fn requests_are_merged_at_the_size_threshold_and_partitioned() {
    let script = Arc::new(Script {
        parts: 2,
        ..Default::default()
    });
    let s = settings();
    let exp = exporter_with(
        &script,
        "sending_queue: {num_consumers: 1}",
        &s,
        merge(Duration::from_secs(3600), 10),
    );
    exp.start(&no_host()).await.unwrap();
    for n in [3, 3, 3] {
        exp.consume(Batch::new(points(n, 1))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        script.attempts.lock().unwrap().is_empty(),
        "9 items are below max_items: nothing is sent before the hour"
    );
    exp.consume(Batch::new(points(3, 1))).await.unwrap();
    until("the merged parts are sent", || {
        script.attempts.lock().unwrap().len() == 2
    })
    .await;
    let labels = script.labels.lock().unwrap().clone();
    assert_eq!(labels, vec![("p0".to_string(), 6), ("p1".to_string(), 6)]);
    let k = keys(&script);
    assert_eq!(k.len(), 2, "each part has a key of its own: {k:?}");
    exp.shutdown().await.unwrap();
    assert_eq!(value(&s, "otelcol_exporter_sent_metric_points_total"), "12");
}

#[tokio::test]
async fn the_time_threshold_flushes_and_shutdown_flushes_the_rest() {
    let script = Arc::new(Script::default());
    let s = settings();
    let exp = exporter_with(&script, "{}", &s, merge(Duration::from_millis(50), 1000));
    exp.start(&no_host()).await.unwrap();
    exp.consume(Batch::new(points(2, 1))).await.unwrap();
    exp.consume(Batch::new(points(3, 1))).await.unwrap();
    until("one merged request after flush_interval", || {
        script.attempts.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(script.attempts.lock().unwrap()[0].1, 5);

    let slow = Arc::new(Script::default());
    let s2 = settings();
    let exp = exporter_with(&slow, "{}", &s2, merge(Duration::from_secs(3600), 1000));
    exp.start(&no_host()).await.unwrap();
    exp.consume(Batch::new(points(4, 1))).await.unwrap();
    exp.shutdown().await.unwrap();
    assert_eq!(slow.attempts.lock().unwrap().len(), 1, "sent at shutdown");
    assert_eq!(value(&s2, "otelcol_exporter_sent_metric_points_total"), "4");
    assert!(exp.consume(Batch::new(points(1, 1))).await.is_err());
}

/// Acknowledged requests are durable in the stage; once merged and queued
/// their key is stored with them, so after a crash the same object key is
/// sent again and nothing is lost or sent under a second key.
#[tokio::test]
async fn staged_and_queued_requests_survive_a_crash_with_stable_keys() {
    let storage = MemoryStorageExtension::default();
    let yaml = "sending_queue: {storage: file_storage, num_consumers: 1}\nretry_on_failure: {initial_interval: 5ms, max_interval: 10ms, max_elapsed_time: 0s}";

    // Run 1: two requests staged, then the process dies (no shutdown).
    let script = Arc::new(Script::default());
    let s = settings();
    let exp = exporter_with(&script, yaml, &s, merge(Duration::from_secs(3600), 100));
    exp.start(&host_with(&storage)).await.unwrap();
    exp.consume(Batch::new(points(2, 1))).await.unwrap();
    exp.consume(Batch::new(points(3, 1))).await.unwrap();
    assert_eq!(storage.keys_held(), 2, "durable before consume returned");
    drop(exp);

    // Run 2: recovered into the stage; the destination refuses, so the
    // merged request is queued (one key) and retried; then a crash.
    let down = Arc::new(Script::default());
    *down.otherwise.lock().unwrap() = Some(retryable());
    let s2 = settings();
    let exp = exporter_with(&down, yaml, &s2, merge(Duration::from_millis(20), 100));
    exp.start(&host_with(&storage)).await.unwrap();
    until("the merged request is tried", || {
        down.attempts.lock().unwrap().len() >= 3
    })
    .await;
    let tried = keys(&down);
    assert_eq!(tried.len(), 1, "one merged request, one key: {tried:?}");
    assert_eq!(down.attempts.lock().unwrap()[0].1, 5);
    assert_eq!(
        storage.keys_held(),
        1,
        "the stage's two became one queued request"
    );
    drop(exp);

    // Run 3: the destination is back; the same key is sent, once.
    let up = Arc::new(Script::default());
    let s3 = settings();
    let exp = exporter_with(&up, yaml, &s3, merge(Duration::from_millis(20), 100));
    exp.start(&host_with(&storage)).await.unwrap();
    until("sent", || up.attempts.lock().unwrap().len() == 1).await;
    until("removed once sent", || storage.keys_held() == 0).await;
    exp.shutdown().await.unwrap();
    assert_eq!(keys(&up), tried);
    assert_eq!(value(&s3, "otelcol_exporter_sent_metric_points_total"), "5");
}

#[tokio::test]
async fn a_full_queue_keeps_requests_staged_and_a_full_stage_refuses_retryably() {
    let script = Arc::new(Script::default());
    *script.otherwise.lock().unwrap() = Some(retryable());
    let s = settings();
    let exp = exporter_with(
        &script,
        "sending_queue: {queue_size: 2, num_consumers: 1}\nretry_on_failure: {initial_interval: 1s, max_elapsed_time: 0s}",
        &s,
        merge(Duration::from_millis(20), 1),
    );
    exp.start(&no_host()).await.unwrap();
    // Each request is its own flush (max_items 1): one in flight, two queued.
    for _ in 0..3 {
        exp.consume(Batch::new(points(1, 1))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // The queue is full: two more wait in the stage, a third is refused.
    exp.consume(Batch::new(points(1, 1))).await.unwrap();
    exp.consume(Batch::new(points(1, 1))).await.unwrap();
    let err = exp.consume(Batch::new(points(1, 1))).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConsumerError::Retryable {
                retry_after: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        value(&s, "otelcol_exporter_enqueue_failed_metric_points_total"),
        "1"
    );
    // Shutdown: nothing drains (the destination refuses), and a memory
    // queue counts everything it loses, the staged requests included.
    exp.shutdown().await.unwrap();
    assert_eq!(
        value(&s, "otelcol_exporter_send_failed_metric_points_total"),
        "5"
    );
}

/// Many small requests fill the stage long before a size or time
/// threshold: at half its capacity everything is merged and queued, so
/// senders are not refused while the queue has room.
#[tokio::test]
async fn a_half_full_stage_flushes_before_it_refuses() {
    let script = Arc::new(Script::default());
    let s = settings();
    let exp = exporter_with(
        &script,
        "sending_queue: {queue_size: 10}",
        &s,
        merge(Duration::from_secs(3600), 1_000_000),
    );
    exp.start(&no_host()).await.unwrap();
    for _ in 0..40 {
        exp.consume(Batch::new(points(1, 1))).await.unwrap();
    }
    until("all 40 sent", || {
        script
            .attempts
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.1)
            .sum::<u64>()
            == 40
    })
    .await;
    let requests = script.attempts.lock().unwrap().len();
    assert!(
        (4..=20).contains(&requests),
        "merged in groups of about half the capacity: {requests}"
    );
    assert_eq!(
        value(&s, "otelcol_exporter_enqueue_failed_metric_points_total"),
        "0"
    );
    exp.shutdown().await.unwrap();
}

#[tokio::test]
async fn tokens_stay_apart_when_merging() {
    use crate::consumer::{AuthData, BearerToken, RequestContext};
    let script = Arc::new(Script::default());
    let s = settings();
    let exp = exporter_with(&script, "{}", &s, merge(Duration::from_secs(3600), 1000));
    exp.start(&no_host()).await.unwrap();
    for token in ["aaaa-1", "bbbb-2", "aaaa-1"] {
        let context = RequestContext {
            auth: Some(Arc::new(AuthData {
                token: Some(BearerToken::new(token)),
                ..Default::default()
            })),
            ..Default::default()
        };
        exp.consume(Batch {
            data: points(1, 1),
            context,
            received: None,
        })
        .await
        .unwrap();
    }
    exp.shutdown().await.unwrap();
    let mut sizes: Vec<u64> = script
        .attempts
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.1)
        .collect();
    sizes.sort();
    assert_eq!(sizes, vec![1, 2], "one merged request per token");
}
