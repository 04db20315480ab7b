//! The processor around the engine: emission of closed windows, the flush
//! at shutdown, downstream errors, self-metrics. Time is passed explicitly
//! to `emit_closed`; nothing sleeps.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use common::*;
use otelcol_core::component::{CreateSettings, Factory, Host, Kind, Lifecycle, ProcessorFactory};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError};
use otelcol_core::pdata::Metrics;
use otelcol_core::storage::StorageClient;
use otelcol_core::ComponentId;
use otelcol_processor_aggregation::{
    AggregationConfig, AggregationProcessor, AggregationProcessorFactory,
};

#[derive(Default)]
struct Downstream {
    got: Mutex<Vec<Batch<Metrics>>>,
    refuse: Mutex<Vec<ConsumerError>>,
}

#[async_trait]
impl Consumer<Metrics> for Downstream {
    async fn consume(&self, batch: Batch<Metrics>) -> Result<(), ConsumerError> {
        if let Some(e) = self.refuse.lock().unwrap().pop() {
            return Err(e);
        }
        self.got.lock().unwrap().push(batch);
        Ok(())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn window_start(t: u64) -> u64 {
    t - t % (300 * NS)
}

fn setup() -> (AggregationProcessor, Arc<Downstream>, CreateSettings) {
    let down = Arc::new(Downstream::default());
    let settings = CreateSettings::standalone(ComponentId::new("aggregation"), Kind::Processor);
    let config = AggregationConfig {
        aggregation_interval: Duration::from_secs(300),
        ..Default::default()
    };
    let p = AggregationProcessor::new(settings.clone(), config, down.clone(), 0, false).unwrap();
    (p, down, settings)
}

fn metric_line(settings: &CreateSettings, prefix: &str) -> String {
    settings
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn emits_closed_windows_and_flushes_the_rest_at_shutdown() {
    let (p, down, settings) = setup();
    let t = now();
    let w = window_start(t);
    let previous = w - 300 * NS + NS;
    let r = request(
        &[("service.name", "claude-code")],
        vec![sum(
            "claude_code.cost.usage",
            1,
            true,
            vec![
                point(0.5, previous, 0, &[("user.email", "ana@example.com")]),
                point(0.25, t, 0, &[("user.email", "ana@example.com")]),
                point(9.0, t, 0, &[("model", "no-user")]),
            ],
        )],
    );
    p.consume(Batch::new(r)).await.unwrap();
    p.emit_closed(w + 30 * NS).await;
    let first = totals(&down.got.lock().unwrap());
    assert_eq!(
        first.iter().map(|t| (t.start, t.value)).collect::<Vec<_>>(),
        vec![(w - 300 * NS, 0.5)]
    );

    p.shutdown().await.unwrap();
    let all = totals(&down.got.lock().unwrap());
    assert_eq!(
        all.iter().map(|t| (t.start, t.value)).collect::<Vec<_>>(),
        vec![(w - 300 * NS, 0.5), (w, 0.25)],
        "the current window is flushed at shutdown"
    );

    assert_eq!(
        metric_line(
            &settings,
            "otelcol_processor_aggregation_points_accepted_total"
        ),
        "otelcol_processor_aggregation_points_accepted_total{processor=\"aggregation\"} 2"
    );
    assert!(metric_line(&settings, "otelcol_processor_aggregation_points_dropped_total")
        .contains("otelcol_processor_aggregation_points_dropped_total{processor=\"aggregation\",reason=\"missing_key\"} 1"));
    assert_eq!(
        metric_line(
            &settings,
            "otelcol_processor_aggregation_totals_emitted_total"
        ),
        "otelcol_processor_aggregation_totals_emitted_total{processor=\"aggregation\"} 2"
    );
    assert_eq!(
        metric_line(&settings, "otelcol_processor_aggregation_series_open"),
        "otelcol_processor_aggregation_series_open{processor=\"aggregation\"} 0"
    );
}

#[tokio::test]
async fn retryable_downstream_errors_keep_the_totals_for_the_next_tick() {
    let (p, down, settings) = setup();
    let t = now();
    let w = window_start(t);
    let r = request(
        &[],
        vec![sum(
            "m",
            1,
            true,
            vec![point(2.0, w - 200 * NS, 0, &[("user.email", "a@b.c")])],
        )],
    );
    p.consume(Batch::new(r)).await.unwrap();
    down.refuse
        .lock()
        .unwrap()
        .push(ConsumerError::retryable("queue full"));
    p.emit_closed(w + 30 * NS).await;
    assert!(down.got.lock().unwrap().is_empty());
    p.emit_closed(w + 90 * NS).await;
    assert_eq!(
        totals(&down.got.lock().unwrap())
            .iter()
            .map(|t| t.value)
            .collect::<Vec<_>>(),
        vec![2.0]
    );

    let r = request(
        &[],
        vec![sum(
            "m",
            1,
            true,
            vec![point(3.0, w - 100 * NS, 0, &[("user.email", "a@b.c")])],
        )],
    );
    p.consume(Batch::new(r)).await.unwrap();
    down.refuse
        .lock()
        .unwrap()
        .push(ConsumerError::permanent("bad token"));
    p.emit_closed(w + 150 * NS).await;
    assert_eq!(
        metric_line(
            &settings,
            "otelcol_processor_aggregation_totals_failed_total"
        ),
        "otelcol_processor_aggregation_totals_failed_total{processor=\"aggregation\"} 1"
    );
    p.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_factory_validates_and_builds_with_go_keys() {
    let yaml = "attribute_key: user.email\naggregation_interval: 5m\nemit_interval: 1m\n";
    let raw: otelcol_core::config::RawConfig = serde_yaml::from_str(yaml).unwrap();
    AggregationProcessorFactory.validate(&raw).unwrap();
    let bad: otelcol_core::config::RawConfig =
        serde_yaml::from_str("include_attributes: [a]\nexclude_attributes: [b]\n").unwrap();
    assert_eq!(
        AggregationProcessorFactory
            .validate(&bad)
            .unwrap_err()
            .to_string(),
        "include_attributes: use include_attributes or exclude_attributes, not both"
    );
    let bad: otelcol_core::config::RawConfig =
        serde_yaml::from_str("lookup: ['header:']\n").unwrap();
    assert_eq!(
        AggregationProcessorFactory
            .validate(&bad)
            .unwrap_err()
            .to_string(),
        "lookup: unknown lookup `header:`; use datapoint, resource or header:<name>"
    );
    let down = Arc::new(Downstream::default());
    let settings = CreateSettings::standalone(ComponentId::new("aggregation"), Kind::Processor);
    let p = AggregationProcessorFactory
        .create_metrics(settings, &raw, down)
        .unwrap();
    p.start(&Host::new(Default::default(), Default::default()))
        .await
        .unwrap();
    p.shutdown().await.unwrap();
}

/// Issue 12, defect 6: a retry after a partial fan-out went to every
/// branch again, so the branch that had accepted counted the totals twice.
#[tokio::test]
async fn a_retry_after_a_partial_fan_out_reaches_only_the_refusing_branch() {
    let (a, b) = (
        Arc::new(Downstream::default()),
        Arc::new(Downstream::default()),
    );
    let fan =
        otelcol_core::consumer::fan_out(vec![a.clone() as Arc<dyn Consumer<Metrics>>, b.clone()]);
    let settings = CreateSettings::standalone(ComponentId::new("aggregation"), Kind::Processor);
    let config = AggregationConfig {
        aggregation_interval: Duration::from_secs(300),
        ..Default::default()
    };
    let p = AggregationProcessor::new(settings, config, fan, 0, false).unwrap();
    let w = window_start(now());
    let r = request(
        &[],
        vec![sum(
            "m",
            1,
            true,
            vec![point(2.0, w - 200 * NS, 0, &[("user.email", "a@b.c")])],
        )],
    );
    p.consume(Batch::new(r)).await.unwrap();
    b.refuse
        .lock()
        .unwrap()
        .push(ConsumerError::retryable("queue full"));
    p.emit_closed(w + 30 * NS).await;
    p.emit_closed(w + 90 * NS).await;
    p.emit_closed(w + 150 * NS).await;
    let values = |d: &Downstream| {
        totals(&d.got.lock().unwrap())
            .iter()
            .map(|t| t.value)
            .collect::<Vec<_>>()
    };
    assert_eq!(values(&a), vec![2.0], "the accepting branch got it once");
    assert_eq!(values(&b), vec![2.0], "the refusing branch got the retry");
    p.shutdown().await.unwrap();
}

/// More open series than one emission piece (4,096): the shutdown flush
/// sends every one of them.
#[tokio::test]
async fn the_shutdown_flush_sends_every_series_across_pieces() {
    let (p, down, _settings) = setup();
    let t = now();
    let points = (0..5000)
        .map(|i| point(1.0, t, 0, &[("user.email", &format!("u{i}@example.com"))]))
        .collect();
    p.consume(Batch::new(request(&[], vec![sum("m", 1, true, points)])))
        .await
        .unwrap();
    p.shutdown().await.unwrap();
    let got = totals(&down.got.lock().unwrap());
    assert_eq!(got.len(), 5000);
    assert_eq!(got.iter().map(|t| t.value).sum::<f64>(), 5000.0);
}

/// An emission never holds more than its window of built totals in memory
/// downstream: a consumer that keeps what it got (an exporter's memory
/// queue that is not sending) holds at most `FLOW_WINDOW_POINTS` of a
/// 100,000-series closing; the rest waits in the state (compact) and goes
/// at the next tick once the consumer has let go. Every total arrives once.
/// In one shard the window fills exactly; in three, the shards' last
/// pieces are partial, so it fills up to a piece short.
#[tokio::test]
async fn an_emission_waits_for_room_downstream_instead_of_piling_up_there() {
    emission_waits_for_room(1).await;
    emission_waits_for_room(3).await;
}

async fn emission_waits_for_room(shards: usize) {
    use otelcol_processor_aggregation::{FLOW_WINDOW_POINTS, PIECE_SERIES};
    let down = Arc::new(Downstream::default());
    let settings = CreateSettings::standalone(ComponentId::new("aggregation"), Kind::Processor);
    let config = AggregationConfig {
        aggregation_interval: Duration::from_secs(300),
        emit_interval: Duration::from_millis(200),
        shards,
        ..Default::default()
    };
    let p = AggregationProcessor::new(settings.clone(), config, down.clone(), 0, false).unwrap();
    let t = now();
    let w = window_start(t);
    let series = 100_000;
    let points = (0..series)
        .map(|i| {
            point(
                1.0,
                w - 200 * NS,
                0,
                &[("user.email", &format!("u{i}@example.com"))],
            )
        })
        .collect();
    p.consume(Batch::new(request(&[], vec![sum("m", 1, true, points)])))
        .await
        .unwrap();
    let held = |down: &Downstream| -> usize {
        down.got
            .lock()
            .unwrap()
            .iter()
            .map(|b| otelcol_core::pdata::Payload::item_count(&b.data))
            .sum()
    };
    let mut delivered = 0.0;
    let mut ticks = 0;
    p.emit_closed(w + 30 * NS).await;
    let first = held(&down);
    if shards == 1 {
        assert_eq!(first, FLOW_WINDOW_POINTS as usize);
    } else {
        assert!(first <= FLOW_WINDOW_POINTS as usize, "{first}");
        assert!(
            first > FLOW_WINDOW_POINTS as usize - PIECE_SERIES,
            "{first}"
        );
    }
    assert_eq!(
        metric_line(&settings, "otelcol_processor_aggregation_series_open"),
        format!(
            "otelcol_processor_aggregation_series_open{{processor=\"aggregation\"}} {}",
            series - first
        ),
        "what has not gone stays in the state"
    );
    while delivered < series as f64 {
        // The consumer sends what it holds: the room comes back.
        let sent: Vec<Batch<Metrics>> = std::mem::take(&mut *down.got.lock().unwrap());
        delivered += totals(&sent).iter().map(|t| t.value).sum::<f64>();
        drop(sent);
        ticks += 1;
        assert!(ticks <= 3, "{delivered} delivered after {ticks} ticks");
        p.emit_closed(w + 30 * NS).await;
        assert!(held(&down) <= FLOW_WINDOW_POINTS as usize);
    }
    assert_eq!(delivered, series as f64);
    assert_eq!(ticks, 2);
    assert!(down.got.lock().unwrap().is_empty());
    p.shutdown().await.unwrap();
}

/// A storage whose writes fail while `failing` is set (a full disk); reads
/// always work.
#[derive(Default)]
struct FlakyStorage {
    data: otelcol_core::storage::MemoryStorage,
    failing: std::sync::atomic::AtomicBool,
}

impl otelcol_core::storage::StorageClient for FlakyStorage {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, otelcol_core::storage::StorageError> {
        self.data.get(key)
    }
    fn batch(
        &self,
        ops: Vec<otelcol_core::storage::StorageOp>,
    ) -> Result<(), otelcol_core::storage::StorageError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(otelcol_core::storage::StorageError::Io {
                path: "flaky".into(),
                message: "No space left on device".into(),
            });
        }
        self.data.batch(ops)
    }
    fn scan(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, otelcol_core::storage::StorageError> {
        self.data.scan(prefix)
    }
}

/// A host whose `file_storage` extension hands out `storage`.
fn host_on(storage: Arc<FlakyStorage>) -> Host {
    let ext: Arc<dyn otelcol_core::component::Extension> = Arc::new(FlakyExtension(storage));
    Host::new(
        [(ComponentId::new("file_storage"), ext)]
            .into_iter()
            .collect(),
        Default::default(),
    )
}

/// A processor with 5-minute windows keeping its state in `file_storage`.
fn durable(down: Arc<Downstream>) -> AggregationProcessor {
    let settings = CreateSettings::standalone(ComponentId::new("aggregation"), Kind::Processor);
    let config = AggregationConfig {
        aggregation_interval: Duration::from_secs(300),
        storage: Some("file_storage".into()),
        ..Default::default()
    };
    AggregationProcessor::new(settings, config, down, 0, false).unwrap()
}

/// The extension handing out the one flaky client.
struct FlakyExtension(Arc<FlakyStorage>);

impl otelcol_core::storage::StorageExtension for FlakyExtension {
    fn client(
        &self,
        _kind: Kind,
        _id: &ComponentId,
        _name: &str,
    ) -> Result<Arc<dyn otelcol_core::storage::StorageClient>, otelcol_core::storage::StorageError>
    {
        Ok(self.0.clone())
    }
}

impl Lifecycle for FlakyExtension {}

impl otelcol_core::component::Extension for FlakyExtension {
    fn storage(self: Arc<Self>) -> Option<Arc<dyn otelcol_core::storage::StorageExtension>> {
        Some(self)
    }
}

/// With `storage`, a request is applied before its write and answered
/// after it. Writes that fail (concurrent requests, some queued behind the
/// failing one) are refused retryably and are in no total: the engine is
/// rebuilt from storage. Afterwards requests are taken again, and the
/// totals are exactly the acknowledged values, also after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_writes_refuse_their_requests_and_leave_no_trace_in_the_totals() {
    let storage = Arc::new(FlakyStorage::default());
    let host = host_on(storage.clone());
    let start = |down: Arc<Downstream>| Arc::new(durable(down));
    let (down, p) = {
        let down = Arc::new(Downstream::default());
        (down.clone(), start(down))
    };
    p.start(&host).await.unwrap();
    let t = now();
    let acked = Arc::new(Mutex::new(0.0f64));
    let refused = Arc::new(Mutex::new(0u32));
    let send = |round: u32| {
        let tasks: Vec<_> = (0..40u32)
            .map(|i| {
                let (p, acked, refused) = (p.clone(), acked.clone(), refused.clone());
                tokio::spawn(async move {
                    let value = (round * 1000 + i + 1) as f64;
                    let user = format!("u{}@example.com", i % 3);
                    let req = request(
                        &[],
                        vec![sum(
                            "m",
                            1,
                            true,
                            vec![point(value, t, 0, &[("user.email", &user)])],
                        )],
                    );
                    match p.consume(Batch::new(req)).await {
                        Ok(()) => *acked.lock().unwrap() += value,
                        Err(e) => {
                            assert!(e.is_retryable(), "{e}");
                            *refused.lock().unwrap() += 1;
                        }
                    }
                })
            })
            .collect();
        join_all(tasks)
    };
    send(0).await;
    let flip = {
        let storage = storage.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(300)).await;
            storage
                .failing
                .store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    send(1).await;
    flip.await.unwrap();
    send(2).await;
    assert!(
        *refused.lock().unwrap() >= 40,
        "every request of round 2 is refused"
    );
    storage
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    send(3).await;
    let refused_total = *refused.lock().unwrap();
    assert!(
        refused_total < 120,
        "round 3 is taken again ({refused_total} refused)"
    );
    let acked = *acked.lock().unwrap();
    p.shutdown().await.unwrap();
    let got: f64 = totals(&down.got.lock().unwrap())
        .iter()
        .map(|t| t.value)
        .sum();
    assert_eq!(got, acked, "exactly the acknowledged values");

    // A restart on the same storage finds nothing left to send.
    let down2 = Arc::new(Downstream::default());
    let p2 = start(down2.clone());
    p2.start(&host).await.unwrap();
    p2.shutdown().await.unwrap();
    assert!(totals(&down2.got.lock().unwrap()).is_empty());
}

/// Awaits every task (a panic in one fails the test).
async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        t.await.unwrap();
    }
}

/// A batch as a receiver hands it to a pipeline that reads the bytes:
/// `data` left empty.
fn undecoded(bytes: Vec<u8>) -> Batch<Metrics> {
    Batch {
        received: Some(bytes.into()),
        ..Batch::new(Metrics::default())
    }
}

/// Handed the request's bytes alone (a receiver does so because the
/// processor `reads_received`), it counts the same; bytes that are not a
/// request are refused as invalid data, counting nothing.
#[tokio::test]
async fn takes_requests_left_undecoded_and_refuses_bytes_that_do_not_decode() {
    use otelcol_core::consumer::PermanentKind;
    use prost::Message;
    let (p, down, settings) = setup();
    assert!(p.reads_received());
    let t = now();
    let r = request(
        &[("service.name", "claude-code")],
        vec![sum(
            "claude_code.cost.usage",
            1,
            true,
            vec![
                point(0.5, t, 0, &[("user.email", "ana@example.com")]),
                point(9.0, t, 0, &[("model", "no-user")]),
            ],
        )],
    );
    p.consume(undecoded(r.encode_to_vec())).await.unwrap();
    // The same request decoded, with its bytes beside it: read from the tree.
    p.consume(Batch {
        received: Some(r.encode_to_vec().into()),
        ..Batch::new(r.clone())
    })
    .await
    .unwrap();
    // A string that is not UTF-8 (the metric's name).
    let mut bad = r.encode_to_vec();
    let at = bad
        .windows(b"claude_code".len())
        .position(|w| w == b"claude_code")
        .unwrap();
    bad[at] = 0xff;
    let e = p.consume(undecoded(bad)).await.unwrap_err();
    assert_eq!(
        e,
        ConsumerError::Permanent {
            message: "the request is not valid OTLP protobuf: failed to decode Protobuf message: Metric.name: ScopeMetrics.metrics: ResourceMetrics.scope_metrics: ExportMetricsServiceRequest.resource_metrics: invalid string value: data is not UTF-8 encoded".into(),
            kind: PermanentKind::InvalidData,
        }
    );
    p.shutdown().await.unwrap();
    let all = totals(&down.got.lock().unwrap());
    assert_eq!(
        all.iter().map(|t| t.value).collect::<Vec<_>>(),
        vec![1.0],
        "0.5 twice, nothing of the bad bytes"
    );
    assert_eq!(
        metric_line(
            &settings,
            "otelcol_processor_aggregation_points_accepted_total"
        ),
        "otelcol_processor_aggregation_points_accepted_total{processor=\"aggregation\"} 2"
    );
    assert!(metric_line(
        &settings,
        "otelcol_processor_aggregation_points_dropped_total"
    )
    .contains("reason=\"missing_key\"} 2"));
}

/// Protobuf bytes of a request whose one point carries an attribute
/// nesting `levels` AnyValues (key-value lists), encoded by hand inside
/// out (the generated encoder recurses).
fn nested_request(levels: usize) -> Vec<u8> {
    fn head(field: u8, len: usize) -> Vec<u8> {
        let mut out = vec![field << 3 | 2];
        let mut v = len;
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    }
    let leaf = [&head(1, 4)[..], b"leaf"].concat();
    let mut len = leaf.len();
    let mut heads = vec![];
    for _ in 1..levels {
        let value = head(2, len);
        let kv = 3 + value.len() + len;
        let list = head(1, kv);
        let any = head(6, list.len() + kv);
        len = any.len() + list.len() + kv;
        heads.push([any, list, vec![0x0a, 1, b'k'], value].concat());
    }
    heads.reverse();
    let mut value: Vec<u8> = heads.concat();
    value.extend_from_slice(&leaf);
    let attr = [&head(1, 4)[..], b"deep", &head(2, value.len()), &value].concat();
    let point = [&head(7, attr.len())[..], &attr].concat();
    let gauge = [&head(1, point.len())[..], &point].concat();
    let metric = [&head(1, 1)[..], b"m", &head(5, gauge.len()), &gauge].concat();
    let scope = [&head(2, metric.len())[..], &metric].concat();
    let rm = [&head(2, scope.len())[..], &scope].concat();
    [&head(1, rm.len())[..], &rm].concat()
}

/// Bytes it cannot read in place are nesting-checked before prost reads
/// them (a receiver hands them over unchecked): 101 levels are refused as
/// the receiver refuses them, 100,000 do not reach prost's recursion.
#[tokio::test]
async fn undecoded_bytes_nested_too_deep_are_refused_before_prost() {
    use otelcol_core::consumer::PermanentKind;
    use prost::Message;
    let (p, _down, _settings) = setup();
    let ok = nested_request(100);
    assert_eq!(Metrics::decode(&ok[..]).unwrap().resource_metrics.len(), 1);
    p.consume(undecoded(ok)).await.unwrap();
    let refused = ConsumerError::Permanent {
        message:
            "the request is not valid OTLP protobuf: attribute values nest deeper than 100 levels"
                .into(),
        kind: PermanentKind::InvalidData,
    };
    for levels in [101, 100_000] {
        let e = p
            .consume(undecoded(nested_request(levels)))
            .await
            .unwrap_err();
        assert_eq!(e, refused, "{levels} levels");
    }
}

/// With `storage`, a request over `max_series` is refused retryably and
/// its points are counted as refused, exactly, whether it came decoded or
/// as bytes (counted on the wire only then).
#[tokio::test]
async fn with_storage_a_request_over_max_series_counts_its_points_as_refused() {
    use prost::Message;
    let ext: Arc<dyn otelcol_core::component::Extension> =
        Arc::new(FlakyExtension(Arc::new(FlakyStorage::default())));
    let host = Host::new(
        [(ComponentId::new("file_storage"), ext)]
            .into_iter()
            .collect(),
        Default::default(),
    );
    let down = Arc::new(Downstream::default());
    let settings = CreateSettings::standalone(ComponentId::new("aggregation"), Kind::Processor);
    let config = AggregationConfig {
        aggregation_interval: Duration::from_secs(300),
        storage: Some("file_storage".into()),
        max_series: 2,
        ..Default::default()
    };
    let p = AggregationProcessor::new(settings.clone(), config, down.clone(), 0, false).unwrap();
    p.start(&host).await.unwrap();
    let t = now();
    let three = request(
        &[],
        vec![sum(
            "m",
            1,
            true,
            ["a", "b", "c"]
                .iter()
                .map(|u| point(1.0, t, 0, &[("user.email", u)]))
                .collect(),
        )],
    );
    let e = p
        .consume(undecoded(three.encode_to_vec()))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let line = "otelcol_processor_aggregation_points_refused_total";
    assert_eq!(
        metric_line(&settings, line),
        format!("{line}{{processor=\"aggregation\"}} 3")
    );
    let e = p.consume(Batch::new(three)).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(
        metric_line(&settings, line),
        format!("{line}{{processor=\"aggregation\"}} 6")
    );
    p.shutdown().await.unwrap();
    assert!(totals(&down.got.lock().unwrap()).is_empty());
}

/// Snapshots are written on a thread of their own while groups go on
/// being committed. A crash image of the storage (every key as it is
/// between two rounds of concurrent requests, a snapshot write possibly
/// still running) recovers exactly the values acknowledged so far: the
/// snapshot and the records after it never miss or repeat one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_written_beside_the_log_recover_exactly_what_was_acknowledged() {
    let start = |down: Arc<Downstream>| {
        let mut p = durable(down);
        // A snapshot after nearly every group.
        p.set_snapshot_after(2048);
        Arc::new(p)
    };
    let storage = Arc::new(FlakyStorage::default());
    let host = host_on(storage.clone());
    let p = start(Arc::new(Downstream::default()));
    p.start(&host).await.unwrap();
    let t = now();
    let mut acked = 0.0f64;
    let mut images = vec![];
    for round in 0..24u32 {
        let tasks: Vec<_> = (0..40u32)
            .map(|i| {
                let p = p.clone();
                let value = (round * 1000 + i + 1) as f64;
                let user = format!("u{}@example.com", i % 5);
                let model = format!("model-{}", (round + i) % 7);
                tokio::spawn(async move {
                    let req = request(
                        &[],
                        vec![sum(
                            "m",
                            1,
                            true,
                            vec![point(
                                value,
                                t,
                                0,
                                &[("user.email", &user), ("model", &model)],
                            )],
                        )],
                    );
                    p.consume(Batch::new(req)).await.unwrap();
                })
            })
            .collect();
        join_all(tasks).await;
        acked += (0..40u32)
            .map(|i| (round * 1000 + i + 1) as f64)
            .sum::<f64>();
        if round % 6 == 5 {
            images.push((acked, StorageClient::scan(&storage.data, "").unwrap()));
        }
    }
    for (n, (acked, image)) in images.into_iter().enumerate() {
        let snapshots = image.iter().filter(|(k, _)| k.starts_with("snap/")).count();
        let records = image.iter().filter(|(k, _)| k.starts_with("log/")).count();
        assert!(snapshots > 0, "image {n}: a snapshot was written");
        let copy = Arc::new(FlakyStorage::default());
        let keys = image
            .into_iter()
            .map(|(k, v)| otelcol_core::storage::StorageOp::Set(k, v))
            .collect();
        StorageClient::batch(&copy.data, keys).unwrap();
        let down = Arc::new(Downstream::default());
        let p2 = start(down.clone());
        p2.start(&host_on(copy)).await.unwrap();
        p2.shutdown().await.unwrap();
        let got: f64 = totals(&down.got.lock().unwrap())
            .iter()
            .map(|t| t.value)
            .sum();
        assert_eq!(
            got, acked,
            "image {n} ({snapshots} snapshot parts, {records} records after it)"
        );
    }
    p.shutdown().await.unwrap();
}
