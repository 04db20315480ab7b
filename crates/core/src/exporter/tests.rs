//! The helper around a scripted [`Push`]: retry, queue, persistence, split.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::component::{CreateSettings, Extension, Host, Kind, Lifecycle};
use crate::consumer::{Batch, Consumer, ConsumerError};
use crate::pdata::proto::metrics::v1::{
    metric, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use crate::pdata::{Metrics, Payload};
use crate::storage::MemoryStorageExtension;
use crate::{ComponentId, Signal};

/// Answers attempts from a list, then with `otherwise`; records each attempt.
#[derive(Default)]
pub(super) struct Script {
    pub answers: Mutex<VecDeque<Result<(), ConsumerError>>>,
    pub otherwise: Mutex<Option<ConsumerError>>,
    /// (idempotency key, items) of every attempt.
    pub attempts: Mutex<Vec<(String, u64)>>,
    /// (partition label, items) of every attempt.
    pub labels: Mutex<Vec<(String, u64)>>,
    pub max_bytes: usize,
    /// Above 1: `partition` cuts a request into this many labelled parts.
    pub parts: usize,
}

#[derive(Clone)]
pub(super) struct Scripted(pub Arc<Script>);

#[async_trait]
impl Push<Metrics> for Scripted {
    async fn push(&self, r: &Request<Metrics>) -> Result<(), ConsumerError> {
        let s = &self.0;
        s.attempts
            .lock()
            .unwrap()
            .push((r.idempotency_key.clone(), r.items));
        s.labels
            .lock()
            .unwrap()
            .push((r.partition.clone(), r.items));
        if let Some(a) = s.answers.lock().unwrap().pop_front() {
            return a;
        }
        match s.otherwise.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    fn destination(&self) -> String {
        "scripted".into()
    }
    fn max_request_bytes(&self) -> usize {
        self.0.max_bytes
    }
    fn partition(&self, data: Metrics) -> Vec<(String, Metrics)> {
        let parts = self.0.parts.max(1);
        if parts == 1 {
            return vec![(String::new(), data)];
        }
        let per = data.item_count().div_ceil(parts);
        data.split(per, 0)
            .into_iter()
            .enumerate()
            .map(|(i, d)| (format!("p{i}"), d))
            .collect()
    }
}

pub(super) fn points(n: usize, attr_bytes: usize) -> Metrics {
    let data_points = (0..n)
        .map(|i| NumberDataPoint {
            attributes: vec![crate::pdata::string_attribute(
                "pad",
                "x".repeat(attr_bytes),
            )],
            time_unix_nano: i as u64 + 1,
            ..Default::default()
        })
        .collect();
    Metrics {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "m".into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub(super) fn retryable() -> ConsumerError {
    ConsumerError::retryable("HTTP 503")
}

fn exporter(
    script: &Arc<Script>,
    yaml: &str,
    settings: &CreateSettings,
) -> QueuedExporter<Metrics, Scripted> {
    exporter_with(script, yaml, settings, None)
}

/// An exporter around `script` with the keys in `yaml`, merging with `merge`.
pub(super) fn exporter_with(
    script: &Arc<Script>,
    yaml: &str,
    settings: &CreateSettings,
    merge: Option<MergeSettings>,
) -> QueuedExporter<Metrics, Scripted> {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Keys {
        sending_queue: QueueConfig,
        retry_on_failure: RetryConfig,
    }
    let keys: Keys = serde_yaml::from_str(yaml).unwrap();
    let mut s = ExporterSettings::new(
        keys.sending_queue,
        keys.retry_on_failure,
        Duration::from_secs(5),
    );
    s.drain_timeout = Duration::from_millis(300);
    s.merge = merge;
    QueuedExporter::new(settings, Signal::Metrics, s, Scripted(script.clone())).unwrap()
}

pub(super) fn settings() -> CreateSettings {
    CreateSettings::standalone(ComponentId::new("scripted"), Kind::Exporter)
}

pub(super) fn host_with(storage: &MemoryStorageExtension) -> Host {
    let mut ext: BTreeMap<ComponentId, Arc<dyn Extension>> = BTreeMap::new();
    ext.insert(ComponentId::new("file_storage"), Arc::new(storage.clone()));
    Host::new(ext, Default::default())
}

pub(super) fn value(settings: &CreateSettings, name: &str) -> String {
    let text = settings.metrics.render();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("")
        .to_string()
}

pub(super) async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn inline_retries_repeat_the_idempotency_key_and_count_once() {
    let script = Arc::new(Script::default());
    script
        .answers
        .lock()
        .unwrap()
        .extend([Err(retryable()), Err(retryable())]);
    let s = settings();
    let exp = exporter(
        &script,
        "sending_queue: {enabled: false}\nretry_on_failure: {initial_interval: 10ms, max_interval: 20ms}",
        &s,
    );
    exp.consume(Batch::new(points(3, 1))).await.unwrap();
    let attempts = script.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| a == &attempts[0]), "{attempts:?}");
    assert_eq!(value(&s, "otelcol_exporter_sent_metric_points_total"), "3");
    assert_eq!(
        value(&s, "otelcol_exporter_send_failed_metric_points_total"),
        "0"
    );
}

/// Issue 14: an outage longer than any retry budget, then a restart: with
/// `max_elapsed_time: 0` and a persistent queue nothing is dropped, and the
/// resend carries the keys of the first run.
#[tokio::test]
async fn a_persistent_queue_keeps_requests_across_a_restart_with_their_keys() {
    let script = Arc::new(Script::default());
    *script.otherwise.lock().unwrap() = Some(retryable());
    let storage = MemoryStorageExtension::default();
    let yaml = "sending_queue: {storage: file_storage, num_consumers: 3}\nretry_on_failure: {initial_interval: 5ms, max_interval: 10ms, max_elapsed_time: 0s}";
    let s = settings();
    let exp = exporter(&script, yaml, &s);
    exp.start(&host_with(&storage)).await.unwrap();
    for n in [1, 2, 3] {
        exp.consume(Batch::new(points(n, 1))).await.unwrap();
    }
    assert_eq!(storage.keys_held(), 3, "durable before consume returned");
    until("every request tried", || {
        script.attempts.lock().unwrap().len() >= 10
    })
    .await;
    exp.shutdown().await.unwrap();
    assert_eq!(
        value(&s, "otelcol_exporter_send_failed_metric_points_total"),
        "0"
    );
    assert_eq!(storage.keys_held(), 3, "kept for the next start");
    let first_keys: std::collections::BTreeSet<String> = script
        .attempts
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.0.clone())
        .collect();
    assert_eq!(first_keys.len(), 3);

    // The destination is back; a new process (a new exporter) starts.
    *script.otherwise.lock().unwrap() = None;
    script.attempts.lock().unwrap().clear();
    let s2 = settings();
    let exp = exporter(&script, yaml, &s2);
    exp.start(&host_with(&storage)).await.unwrap();
    until("resent", || script.attempts.lock().unwrap().len() == 3).await;
    until("removed once sent", || storage.keys_held() == 0).await;
    exp.shutdown().await.unwrap();
    let resent: std::collections::BTreeSet<String> = script
        .attempts
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.0.clone())
        .collect();
    assert_eq!(resent, first_keys);
    assert_eq!(value(&s2, "otelcol_exporter_sent_metric_points_total"), "6");
}

#[tokio::test]
async fn a_full_queue_refuses_retryably_with_a_retry_hint() {
    let script = Arc::new(Script::default());
    *script.otherwise.lock().unwrap() = Some(retryable());
    let s = settings();
    let exp = exporter(
        &script,
        "sending_queue: {queue_size: 5, sizer: items, num_consumers: 1}\nretry_on_failure: {initial_interval: 1s, max_elapsed_time: 0s}",
        &s,
    );
    exp.start(&Host::new(Default::default(), Default::default()))
        .await
        .unwrap();
    exp.consume(Batch::new(points(4, 1))).await.unwrap();
    until("taken by the sender", || {
        !script.attempts.lock().unwrap().is_empty()
    })
    .await;
    // In flight holds no room: 4 more wait, 2 beyond them do not fit.
    exp.consume(Batch::new(points(4, 1))).await.unwrap();
    let err = exp.consume(Batch::new(points(2, 1))).await.unwrap_err();
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
        "2"
    );
    exp.consume(Batch::new(points(1, 1))).await.unwrap();
    assert_eq!(value(&s, "otelcol_exporter_queue_capacity"), "5");
    exp.shutdown().await.unwrap();
    assert_eq!(
        value(&s, "otelcol_exporter_send_failed_metric_points_total"),
        "9",
        "a memory queue that cannot drain counts what it loses, in flight included"
    );
}

#[tokio::test]
async fn a_give_up_in_the_queue_is_counted_as_failed() {
    let script = Arc::new(Script::default());
    *script.otherwise.lock().unwrap() = Some(retryable());
    let s = settings();
    let exp = exporter(
        &script,
        "retry_on_failure: {initial_interval: 10ms, max_interval: 10ms, max_elapsed_time: 50ms}",
        &s,
    );
    exp.start(&Host::new(Default::default(), Default::default()))
        .await
        .unwrap();
    exp.consume(Batch::new(points(2, 1))).await.unwrap();
    until("given up", || {
        value(&s, "otelcol_exporter_send_failed_metric_points_total") == "2"
    })
    .await;
    exp.shutdown().await.unwrap();
    assert_eq!(value(&s, "otelcol_exporter_sent_metric_points_total"), "0");
}

/// Issue 14: one request of 67 MB went out as one POST; requests above the
/// destination's limit are split, each part keyed apart, and an item that
/// alone exceeds it is rejected (counted) while the rest goes.
#[tokio::test]
async fn requests_above_the_size_limit_are_split_and_an_oversized_item_is_rejected() {
    let script = Arc::new(Script {
        max_bytes: 600,
        ..Default::default()
    });
    let s = settings();
    let exp = exporter(&script, "sending_queue: {enabled: false}", &s);
    let mut data = points(10, 100);
    let huge = points(1, 2000);
    crate::pdata::Batchable::append(&mut data, huge);
    let batch = Batch::new(data);
    let rejected = batch.context.rejected.clone();
    exp.consume(batch).await.unwrap();
    let attempts = script.attempts.lock().unwrap().clone();
    let items: u64 = attempts.iter().map(|a| a.1).sum();
    assert_eq!(items, 10);
    assert!(attempts.len() >= 2, "{attempts:?}");
    let base = attempts[0].0.rsplit_once('-').unwrap().0.to_string();
    for (n, (key, _)) in attempts.iter().enumerate() {
        assert_eq!(key, &format!("{base}-{n}"));
    }
    assert_eq!(rejected.items(), 1);
    assert_eq!(
        value(&s, "otelcol_exporter_send_failed_metric_points_total"),
        "1"
    );
    assert_eq!(value(&s, "otelcol_exporter_sent_metric_points_total"), "10");
    let _ = points(1, 1).item_count();
}

#[tokio::test]
async fn wait_for_result_hands_a_permanent_refusal_back() {
    let script = Arc::new(Script::default());
    script
        .answers
        .lock()
        .unwrap()
        .push_back(Err(ConsumerError::permanent("HTTP 400")));
    let s = settings();
    let exp = exporter(&script, "sending_queue: {wait_for_result: true}", &s);
    exp.start(&Host::new(Default::default(), Default::default()))
        .await
        .unwrap();
    let err = exp.consume(Batch::new(points(2, 1))).await.unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    exp.consume(Batch::new(points(1, 1))).await.unwrap();
    exp.shutdown().await.unwrap();
    assert_eq!(
        (
            value(&s, "otelcol_exporter_sent_metric_points_total"),
            value(&s, "otelcol_exporter_send_failed_metric_points_total")
        ),
        ("1".to_string(), "2".to_string())
    );
}

/// A producer's room ([`crate::consumer::RequestContext::flow`]) stays
/// taken while its data is in memory here (waiting, retried, split into
/// parts) and comes back once the data is sent; a persistent queue gives it
/// back as soon as the request is on storage.
#[tokio::test]
async fn the_producers_room_is_held_while_its_data_is_in_memory() {
    use crate::consumer::FlowPermit;
    let window = Arc::new(tokio::sync::Semaphore::new(10));
    let batch = |n: usize| {
        let mut b = Batch::new(points(n, 1));
        let permit = window.clone().try_acquire_many_owned(n as u32).unwrap();
        b.context.flow = Some(FlowPermit::new(permit));
        b
    };
    let script = Arc::new(Script::default());
    *script.otherwise.lock().unwrap() = Some(retryable());
    let s = settings();
    let exp = exporter(
        &script,
        "sending_queue: {batch: {max_size: 2}}\nretry_on_failure: {initial_interval: 5ms, max_interval: 10ms}",
        &s,
    );
    exp.start(&Host::new(Default::default(), Default::default()))
        .await
        .unwrap();
    exp.consume(batch(5)).await.unwrap();
    until("every part tried twice", || {
        script.attempts.lock().unwrap().len() >= 6
    })
    .await;
    assert_eq!(window.available_permits(), 5, "held by the three parts");
    *script.otherwise.lock().unwrap() = None;
    until("given back once sent", || window.available_permits() == 10).await;
    exp.shutdown().await.unwrap();

    *script.otherwise.lock().unwrap() = Some(retryable());
    let storage = MemoryStorageExtension::default();
    let exp = exporter(
        &script,
        "sending_queue: {storage: file_storage}\nretry_on_failure: {initial_interval: 5ms, max_interval: 10ms}",
        &settings(),
    );
    exp.start(&host_with(&storage)).await.unwrap();
    exp.consume(batch(4)).await.unwrap();
    assert_eq!(storage.keys_held(), 1);
    assert_eq!(window.available_permits(), 10, "on storage, not in memory");
    exp.shutdown().await.unwrap();
}
