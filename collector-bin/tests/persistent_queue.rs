//! Issue 14 on the real binary with the production config: the sending
//! queue on `file_storage`, retries that never give up, and the
//! `Idempotency-Key` a resend repeats. An HTTP server on 127.0.0.1 plays the
//! Multitudes endpoint, down (503) or up, recording every attempt.
//!
//! - an outage, `kill -9` during it, a restart, the endpoint back: every
//!   total is delivered, exactly once per key, under the keys it was first
//!   tried with;
//! - `kill -9` at random moments, 20 times, while events flow: every event a
//!   sender was told was accepted is delivered; a repeat only under a
//!   repeated key;
//! - the queue full: the receiver answers 503 with `Retry-After`, and after
//!   the sender's retries every event arrives.

mod common;

use common::faults::{event_ids, events_json, now_nanos, post_retrying, until, Endpoint};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use otelcol_core::pdata::Metrics;

const FALLBACK: &str = "fallback-token-pq-0001";

/// One delta cost point for `user`, stamped now.
fn cost_json(user: &str, value: f64) -> Vec<u8> {
    format!(
        r#"{{"resourceMetrics": [{{"resource": {{"attributes": [{{"key": "service.name", "value": {{"stringValue": "claude-code"}}}}]}},
        "scopeMetrics": [{{"metrics": [{{"name": "claude_code.cost.usage", "unit": "USD",
        "sum": {{"aggregationTemporality": 1, "isMonotonic": true, "dataPoints": [
        {{"timeUnixNano": "{}", "asDouble": {value}, "attributes": [{{"key": "user.email", "value": {{"stringValue": "{user}"}}}}]}}]}}}}]}}]}}]}}"#,
        now_nanos()
    )
    .into_bytes()
}

/// (user, total) per point of a delivered metrics body.
fn totals(body: &[u8]) -> Vec<(String, f64)> {
    use otelcol_core::pdata::proto::metrics::v1::{metric::Data, number_data_point::Value};
    let m: Metrics = serde_json::from_slice(body).expect("strict OTLP/JSON");
    let mut out = vec![];
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
                .unwrap_or_default()
                .to_string();
            if let Some(Value::AsDouble(v)) = p.value {
                out.push((user, v));
            }
        }
    }
    out
}

/// The production config with the clocks compressed: 1 s windows, fast
/// retries. The retry budget stays the shipped one (never give up).
const FAST: [&str; 6] = [
    "processors.aggregation.aggregation_interval=1s",
    "processors.aggregation.grace=100ms",
    "processors.aggregation.emit_interval=100ms",
    "exporters.multitudes.retry_on_failure.initial_interval=50ms",
    "exporters.multitudes.retry_on_failure.max_interval=200ms",
    "exporters.multitudes.sending_queue.num_consumers=2",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_a_kill_and_a_restart_deliver_every_total_under_its_first_key() {
    let endpoint = Arc::new(Endpoint::default());
    let (url, _server) = endpoint.start().await;
    let storage = common::scratch_storage_dir();
    let envs = [("OTELCOL_STORAGE_DIR", storage.display().to_string())];
    let (collector, ports) =
        common::spawn_production_forwarding_events(&url, FALLBACK, &FAST, &envs).await;
    let sent = [
        ("ana@example.com", 0.25),
        ("bo@example.com", 1.5),
        ("ana@example.com", 1.0),
        ("cy@example.com", 0.75),
    ];
    let receiver = format!("http://127.0.0.1:{}/v1/metrics", ports.http);
    for (user, v) in sent {
        let (status, _) =
            post_retrying(&receiver, cost_json(user, v), Duration::from_secs(10)).await;
        assert_eq!(status, 200);
    }
    let expected = BTreeMap::from([
        ("ana@example.com".to_string(), 1.25),
        ("bo@example.com".to_string(), 1.5),
        ("cy@example.com".to_string(), 0.75),
    ]);
    // The windows close and the totals are refused for a while (far past
    // the old 300 s budget's share of this clock: dozens of attempts each).
    let tried_users = || {
        let mut users = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for a in endpoint.attempts() {
            if a.path.ends_with("/v1/metrics") {
                keys.insert(a.key.clone());
                users.extend(totals(&a.body).into_iter().map(|t| t.0));
            }
        }
        (users, keys)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while tried_users().0.len() < 3 {
        if Instant::now() > deadline {
            let log = collector.kill9();
            panic!(
                "not every user's total was tried: {:?}\n{log:#?}",
                endpoint
                    .attempts()
                    .iter()
                    .map(|a| (a.path.clone(), totals(&a.body)))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    until("retried many times", Duration::from_secs(20), || {
        endpoint.attempts().len() >= 20
    })
    .await;
    let (_, keys_before) = tried_users();
    let log = collector.kill9();
    assert!(
        !log.iter()
            .any(|l| l.contains("dropped") || l.contains("giving up")),
        "nothing was given up: {log:#?}"
    );

    // A restart while the endpoint is still down, then the endpoint back.
    let (collector, _) =
        common::spawn_production_forwarding_events(&url, FALLBACK, &FAST, &envs).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        endpoint.attempts().iter().all(|a| a.status == 503),
        "still down"
    );
    endpoint.up.store(true, Ordering::SeqCst);
    let delivered_totals = || {
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        for a in endpoint.delivered_once_per_key("/ai/otel/v1/metrics") {
            for (user, v) in totals(&a.body) {
                *sums.entry(user).or_default() += v;
            }
        }
        sums
    };
    until("every total delivered", Duration::from_secs(20), || {
        delivered_totals() == expected
    })
    .await;
    let (ok, log) = collector.stop();
    assert!(ok, "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("resuming the requests the persistent queue held")),
        "{log:#?}"
    );
    assert_eq!(delivered_totals(), expected, "and nothing more since");
    let delivered_keys: BTreeSet<String> = endpoint
        .delivered_once_per_key("/ai/otel/v1/metrics")
        .into_iter()
        .map(|a| a.key)
        .collect();
    assert!(
        delivered_keys.is_subset(&keys_before),
        "resent under the keys first tried: {delivered_keys:?} ⊄ {keys_before:?}"
    );
    let _ = std::fs::remove_dir_all(storage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_accepted_event() {
    let endpoint = Arc::new(Endpoint::default());
    endpoint.up.store(true, Ordering::SeqCst);
    let (url, _server) = endpoint.start().await;
    let storage = common::scratch_storage_dir();
    let envs = [("OTELCOL_STORAGE_DIR", storage.display().to_string())];
    let mut accepted: BTreeSet<u64> = BTreeSet::new();
    let mut seed = now_nanos() | 1;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut next = 0u64;
    for round in 0..20 {
        // Slow answers make kills land mid-send.
        endpoint.delay_ms.store(random(80), Ordering::SeqCst);
        let (collector, ports) =
            common::spawn_production_forwarding_events(&url, FALLBACK, &FAST, &envs).await;
        let receiver = format!("http://127.0.0.1:{}/v1/logs", ports.http);
        let sender = tokio::spawn(async move {
            let mut ok = vec![];
            for _ in 0..1000 {
                let ids = next..next + 5;
                next += 5;
                let (status, _) =
                    post_retrying(&receiver, events_json(ids.clone()), Duration::from_secs(2))
                        .await;
                if status == 200 {
                    ok.extend(ids);
                } else {
                    break;
                }
            }
            (ok, next)
        });
        tokio::time::sleep(Duration::from_millis(50 + random(300))).await;
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
    endpoint.delay_ms.store(0, Ordering::SeqCst);
    let (collector, _) =
        common::spawn_production_forwarding_events(&url, FALLBACK, &FAST, &envs).await;
    let delivered = || -> BTreeSet<u64> {
        endpoint
            .delivered_once_per_key("/ai/otel/v1/logs")
            .iter()
            .flat_map(|a| event_ids(&a.body))
            .collect()
    };
    until(
        "every accepted event delivered",
        Duration::from_secs(30),
        || accepted.is_subset(&delivered()),
    )
    .await;
    let (ok, log) = collector.stop();
    assert!(ok, "{log:#?}");
    // Once per key, each event appears once: a repeat only ever came
    // with a repeated key.
    let mut per_event: BTreeMap<u64, usize> = BTreeMap::new();
    for a in endpoint.delivered_once_per_key("/ai/otel/v1/logs") {
        for id in event_ids(&a.body) {
            *per_event.entry(id).or_default() += 1;
        }
    }
    let repeated: Vec<_> = per_event.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "repeated under new keys: {repeated:?}");
    let _ = std::fs::remove_dir_all(storage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_loses_nothing() {
    let endpoint = Arc::new(Endpoint::default());
    let (url, _server) = endpoint.start().await;
    let mut sets = FAST.to_vec();
    sets.extend([
        "exporters.multitudes.sending_queue.queue_size=2",
        "exporters.multitudes.sending_queue.num_consumers=1",
    ]);
    let (collector, ports) =
        common::spawn_production_forwarding_events(&url, FALLBACK, &sets, &[]).await;
    let receiver = format!("http://127.0.0.1:{}/v1/logs", ports.http);
    // Down: one request in flight, two waiting, the fourth is refused.
    let mut statuses = vec![];
    for i in 0..4u64 {
        let (status, _) =
            post_retrying(&receiver, events_json(i * 3..i * 3 + 3), Duration::ZERO).await;
        statuses.push(status);
        if i == 0 {
            until("taken by the sender", Duration::from_secs(5), || {
                !endpoint.attempts().is_empty()
            })
            .await;
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 503]);
    // The sender retries after Retry-After while the endpoint comes back.
    let again = receiver.clone();
    let retry = tokio::spawn(async move {
        post_retrying(&again, events_json(9..12), Duration::from_secs(20)).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    endpoint.up.store(true, Ordering::SeqCst);
    let (status, saw_retry_after) = retry.await.unwrap();
    assert_eq!((status, saw_retry_after), (200, true));
    let delivered = || -> BTreeSet<u64> {
        endpoint
            .delivered_once_per_key("/ai/otel/v1/logs")
            .iter()
            .flat_map(|a| event_ids(&a.body))
            .collect()
    };
    until("all 12 events delivered", Duration::from_secs(10), || {
        delivered() == (0..12).collect()
    })
    .await;
    let (ok, log) = collector.stop();
    assert!(ok, "{log:#?}");
    assert!(
        log.iter().any(|l| l.contains("the sending queue is full")),
        "{log:#?}"
    );
}
