//! The processor: a thin wrapper that feeds the [`Engine`] and emits closed
//! windows on its own task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use otelcol_core::component::{
    ComponentError, ComponentId, CreateSettings, Factory, Host, Kind, Lifecycle, Processor,
    ProcessorFactory,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError, FlowPermit, PermanentKind};
use otelcol_core::pdata::proto::common::v1::KeyValue;
use otelcol_core::pdata::proto::metrics::v1::{metric, number_data_point, NumberDataPoint};
use otelcol_core::pdata::{as_str, find_attribute, Metrics, Payload};
use otelcol_core::storage::StorageError;
use otelcol_core::task::Periodic;
use otelcol_core::telemetry::{Counter, Gauge, MetricsRegistry};
use otelcol_core::{Signal, Stability};
use prost::Message;
use tokio::sync::Semaphore;

use crate::config::AggregationConfig;
use crate::config::Lookup;
use crate::durable::{Applied, Durable, Op, Request};
use crate::emission::Piece;
use crate::engine::{AddError, AddOutcome, Dropped, Engine, Input};
use crate::log_thread::LogWriter;
use crate::packed::Packed;
use crate::shard::ShardedEngine;

/// How often the missing-key warning may repeat for one metric.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The retry-after of a request refused because the state cannot be written.
const STORAGE_RETRY: Duration = Duration::from_secs(5);

/// Emitted totals one branch may hold in memory at once (points of built
/// batches not yet sent, written to a persistent queue or dropped
/// downstream: about 30 MiB). An emission waits for room before it builds
/// the next piece, so closing a million series costs this much memory
/// downstream, not a copy of every total in the exporter's memory queue.
pub const FLOW_WINDOW_POINTS: u32 = 16 * crate::emission::PIECE_SERIES as u32;

/// How long an emission waits for a branch to make room before it skips
/// the branch until the next tick (or the emit interval, when shorter). A
/// sending exporter frees a piece's room far sooner; a stuck one must not
/// hold the tick, nor a shutdown waiting for the tick, for long.
const ROOM_WAIT: Duration = Duration::from_secs(1);

/// How long the shutdown flush waits for a branch to make room before it
/// hands the rest over anyway (without storage: the exporter then counts
/// what it cannot send at its own shutdown; with storage the rest waits in
/// the state for the next start).
const LAST_CHANCE_WAIT: Duration = Duration::from_secs(10);

/// Redacts an email (or any identifier) for logs: `jo***@example.com`.
pub fn redact(id: &str) -> String {
    match id.split_once('@') {
        Some((local, domain)) => {
            format!("{}***@{domain}", local.chars().take(2).collect::<String>())
        }
        None => format!("{}***", id.chars().take(2).collect::<String>()),
    }
}

fn number(p: &NumberDataPoint) -> (&[KeyValue], u64, f64) {
    let v = match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None => f64::NAN,
    };
    (p.attributes.as_slice(), p.start_time_unix_nano, v)
}

/// The partial-success message for points a request had that count in no
/// total: what was wrong, by reason.
fn rejection_message(d: &Dropped, key: &str) -> String {
    let mut parts = vec![];
    if d.invalid > 0 {
        parts.push(format!("{} invalid (no value, a non-finite number, malformed buckets, an unrepresentable exponential histogram, or a total that would overflow)", d.invalid));
    }
    if d.missing_key > 0 {
        parts.push(format!("{} without the user key {key:?}", d.missing_key));
    }
    if d.summary > 0 {
        parts.push(format!("{} summaries (cannot be aggregated)", d.summary));
    }
    format!("aggregation: data points not counted: {}", parts.join("; "))
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The factory for type `aggregation`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AggregationProcessorFactory;

impl Factory for AggregationProcessorFactory {
    fn type_name(&self) -> &'static str {
        "aggregation"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Metrics]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode::<AggregationConfig>(config)?.validate()
    }
}

impl ProcessorFactory for AggregationProcessorFactory {
    fn create_metrics(
        &self,
        settings: CreateSettings,
        config: &RawConfig,
        next: Arc<dyn Consumer<Metrics>>,
    ) -> Result<Arc<dyn Processor<Metrics>>, ComponentError> {
        let config: AggregationConfig = decode(config)?;
        let debug = std::env::var_os("MULTITUDES_DEBUG").is_some_and(|v| !v.is_empty());
        Ok(Arc::new(AggregationProcessor::new(
            settings,
            config,
            next,
            now_nanos(),
            debug,
        )?))
    }
}

struct Counters {
    accepted: Counter,
    late: Counter,
    baseline: Counter,
    dropped: HashMap<&'static str, Counter>,
    refused: Counter,
    streams_evicted: Counter,
    series_open: Gauge,
    emitted: Counter,
    emit_failed: Counter,
}

impl Counters {
    fn new(m: &MetricsRegistry, id: &str) -> Self {
        let l = [("processor", id)];
        let dropped = ["missing_key", "summary", "invalid", "stale"]
            .into_iter()
            .map(|reason| {
                let c = m.counter(
                    "otelcol_processor_aggregation_points_dropped",
                    "Data points not counted in any total, by reason.",
                    &[("processor", id), ("reason", reason)],
                );
                (reason, c)
            })
            .collect();
        Self {
            accepted: m.counter("otelcol_processor_aggregation_points_accepted", "Data points counted in a total.", &l),
            late: m.counter("otelcol_processor_aggregation_points_late", "Data points for an already emitted window (sent again).", &l),
            baseline: m.counter("otelcol_processor_aggregation_points_baseline", "First points of cumulative streams that began before what the collector can vouch for (baseline only).", &l),
            dropped,
            refused: m.counter("otelcol_processor_aggregation_points_refused", "Data points of requests refused whole (retryable) because max_series was reached.", &l),
            streams_evicted: m.counter("otelcol_processor_aggregation_streams_evicted", "Cumulative streams forgotten to stay within max_streams.", &l),
            series_open: m.gauge("otelcol_processor_aggregation_series_open", "Open (window, series) totals held.", &l),
            emitted: m.counter("otelcol_processor_aggregation_totals_emitted", "Total data points accepted downstream (per branch of a fan-out).", &l),
            emit_failed: m.counter("otelcol_processor_aggregation_totals_failed", "Total data points refused downstream for good (logged), per branch.", &l),
        }
    }

    fn record(&self, o: &AddOutcome) {
        self.accepted.add(o.accepted);
        self.late.add(o.late);
        self.baseline.add(o.baseline);
        self.streams_evicted.add(o.streams_evicted);
        let d = &o.dropped;
        for (reason, n) in [
            ("missing_key", d.missing_key),
            ("summary", d.summary),
            ("invalid", d.invalid),
            ("stale", d.stale),
        ] {
            if n > 0 {
                if let Some(c) = self.dropped.get(reason) {
                    c.add(n);
                }
            }
        }
    }
}

/// What [`Shared::make_room`] got.
enum Room {
    /// Room in the window, held by the piece's batches.
    Taken(FlowPermit),
    /// No room, but the piece goes anyway (the shutdown flush).
    HandOver,
    /// No room within the wait: skip the branch until the next tick.
    Stalled,
}

struct Shared {
    id: String,
    /// The first user key, for logs.
    key: String,
    /// The engine, in shards by user (see [`Shared::shards`]).
    memory: ShardedEngine,
    /// With `storage`: the engine read back from it at start, in the
    /// state's shards.
    recovered: OnceLock<Arc<ShardedEngine>>,
    /// The configuration.
    config: AggregationConfig,
    /// Where totals go: the branches of a fan-out, or the one consumer.
    targets: Vec<Arc<dyn Consumer<Metrics>>>,
    /// Per branch, the room for emitted totals in memory downstream
    /// ([`FLOW_WINDOW_POINTS`] permits, one per point).
    windows: Vec<Arc<Semaphore>>,
    counters: Counters,
    debug: bool,
    retry_after: Duration,
    warned: Mutex<HashMap<String, Instant>>,
    warned_invalid: Mutex<Option<Instant>>,
    /// One emission at a time (the ticker, the first one after recovery,
    /// shutdown).
    emitting: tokio::sync::Mutex<()>,
    /// The headers the engine reads (`lookup: header:<name>`, and
    /// `otelcol-routed-since`): what of a
    /// request's context the log keeps.
    headers: Vec<String>,
    /// With `storage`: the log every change goes through.
    log: OnceLock<LogWriter>,
    /// The first part of every idempotency key: random per process, or per
    /// durable state.
    instance: Mutex<u64>,
}

/// The running `aggregation` processor.
pub struct AggregationProcessor {
    shared: Arc<Shared>,
    emit_interval: Duration,
    /// `storage`: the extension holding the durable state.
    storage: Option<String>,
    /// With `storage`: log bytes between snapshots (at least).
    snapshot_after: u64,
    ticker: Periodic,
}

impl AggregationProcessor {
    /// A processor feeding `next`; `collector_start` is the collector's start
    /// (Unix nanoseconds); `debug` turns on per-point and per-emission logs.
    pub fn new(
        settings: CreateSettings,
        config: AggregationConfig,
        next: Arc<dyn Consumer<Metrics>>,
        collector_start: u64,
        debug: bool,
    ) -> Result<Self, ComponentError> {
        let emit_interval = config.emit_interval;
        let key = config.keys()[0].clone();
        // The ring change time a gateway sends is read by the engine too,
        // so the durable log keeps it with each request.
        let headers = config
            .lookups()?
            .into_iter()
            .filter_map(|l| match l {
                Lookup::Header(h) => Some(h),
                _ => None,
            })
            .chain([otelcol_core::consumer::ROUTED_SINCE_HEADER.to_string()])
            .collect();
        let storage = config.storage.clone();
        // With storage, the engine is the one read back at start.
        let memory_shards = if storage.is_some() {
            1
        } else {
            config.shard_count()
        };
        let memory = ShardedEngine::new(&config, memory_shards, collector_start, debug)?;
        let id = settings.id.to_string();
        let targets = next.branches().unwrap_or_else(|| vec![next]);
        let windows = targets
            .iter()
            .map(|_| Arc::new(Semaphore::new(FLOW_WINDOW_POINTS as usize)))
            .collect();
        Ok(Self {
            shared: Arc::new(Shared {
                counters: Counters::new(&settings.metrics, &id),
                id,
                key,
                memory,
                recovered: OnceLock::new(),
                config: config.clone(),
                targets,
                windows,
                debug,
                retry_after: emit_interval,
                warned: Mutex::new(HashMap::new()),
                warned_invalid: Mutex::new(None),
                emitting: tokio::sync::Mutex::new(()),
                headers,
                log: OnceLock::new(),
                instance: Mutex::new(ahash::RandomState::new().hash_one(collector_start)),
            }),
            emit_interval,
            storage,
            snapshot_after: crate::durable::SNAPSHOT_AFTER,
            ticker: Periodic::default(),
        })
    }

    /// With `storage`: takes a snapshot once the log since the last one
    /// holds `bytes` (and four times the last snapshot), its requests
    /// counted unpacked (128 MiB by default; more means fewer snapshots and
    /// a longer replay at start). For tests that want many snapshots.
    #[doc(hidden)]
    pub fn set_snapshot_after(&mut self, bytes: u64) {
        self.snapshot_after = bytes;
    }

    /// Emits the windows closed at `now` (Unix nanoseconds), and offers
    /// again what was refused before; what the task does every `emit_interval`.
    pub async fn emit_closed(&self, now: u64) {
        self.shared.emit_closed(Some(now)).await;
    }
}

impl Shared {
    /// The engine: read back from storage once started with `storage`,
    /// else in memory.
    fn shards(&self) -> &ShardedEngine {
        self.recovered.get().map_or(&self.memory, |r| r)
    }

    fn warn_missing(&self, metrics: &[String]) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let key = &self.key;
        for name in metrics {
            let due = warned
                .get(name)
                .is_none_or(|t| now.duration_since(*t) >= WARN_EVERY);
            if due {
                warned.insert(name.clone(), now);
                tracing::warn!(
                    "dropping data point: required attribute not found {{\"attribute_key\": \"{key}\", \"metric_name\": \"{name}\"}}"
                );
            }
        }
    }

    /// Logs points refused as invalid or unmergeable, at most once a minute
    /// (the counters have every one).
    fn warn_invalid(&self, message: String) {
        let mut last = self
            .warned_invalid
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
            *last = Some(now);
            tracing::warn!(processor = %self.id, "{message}");
        }
    }

    fn log_emission(&self, batch: &Batch<Metrics>) {
        for rm in &batch.data.resource_metrics {
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                let points: Vec<(&[KeyValue], u64, f64)> = match &m.data {
                    Some(metric::Data::Sum(s)) => s.data_points.iter().map(number).collect(),
                    Some(metric::Data::Gauge(g)) => g.data_points.iter().map(number).collect(),
                    Some(metric::Data::Histogram(h)) => h
                        .data_points
                        .iter()
                        .map(|p| {
                            (
                                p.attributes.as_slice(),
                                p.start_time_unix_nano,
                                p.count as f64,
                            )
                        })
                        .collect(),
                    Some(metric::Data::ExponentialHistogram(h)) => h
                        .data_points
                        .iter()
                        .map(|p| {
                            (
                                p.attributes.as_slice(),
                                p.start_time_unix_nano,
                                p.count as f64,
                            )
                        })
                        .collect(),
                    _ => vec![],
                };
                for (attrs, window_start, value) in points {
                    let user = find_attribute(attrs, &self.key)
                        .and_then(as_str)
                        .map(redact);
                    tracing::info!(processor = %self.id, metric = %m.name, user = user.as_deref().unwrap_or("-"), window_start, value, "aggregation: emitting a total");
                }
            }
        }
    }

    /// Applies a close or a delivered piece to shard `shard`: through the
    /// log when durable (answered once written; one shard), else directly.
    /// `now` overrides the clock without storage (tests drive time).
    async fn apply(&self, shard: usize, op: Op, now: Option<u64>) -> Result<(), ConsumerError> {
        match self.log.get() {
            Some(log) => log
                .submit(op, Packed::default(), None)
                .await
                .map(drop)
                .map_err(|e| self.unwritten(e)),
            None => {
                let now = now.unwrap_or_else(now_nanos);
                let mut e = self.shards().lock(shard);
                op.apply(&mut e, now);
                self.shards().publish(shard, &e);
                Ok(())
            }
        }
    }

    /// The refusal of a request whose effect cannot be made durable.
    fn unwritten(&self, e: StorageError) -> ConsumerError {
        ConsumerError::Retryable {
            message: format!("aggregation {}: state cannot be written: {e}", self.id),
            retry_after: Some(STORAGE_RETRY),
        }
    }

    /// The idempotency key of batch `j` of a piece: the same after a
    /// restart (durable state), so a resend can be dropped downstream.
    /// Shard 0's keys are those of an engine in one piece.
    fn batch_key(&self, shard: usize, p: &Piece, j: usize) -> Arc<str> {
        let instance = *self.instance.lock().unwrap_or_else(PoisonError::into_inner);
        match shard {
            0 => format!("agg-{instance:016x}-{}-{}-{j}", p.emission, p.index).into(),
            s => format!("agg-{instance:016x}-s{s}-{}-{}-{j}", p.emission, p.index).into(),
        }
    }

    /// Closes windows in every shard (`close`: [`Op::Close`] or
    /// [`Op::CloseAll`]), then offers
    /// every piece not yet taken (this emission's and any refused before)
    /// to the branches that have not taken it. A retryable refusal keeps
    /// the piece for the next tick; on the `last_chance` (shutdown) without
    /// storage it is lost, counted and logged; with storage it waits in the
    /// state for the next start.
    ///
    /// Each piece is built only once every branch still to take it has room
    /// for it ([`FLOW_WINDOW_POINTS`]); a branch that makes no room within
    /// [`ROOM_WAIT`] is skipped until the next tick, as if it had refused.
    async fn emit(&self, close: fn(u32, u32) -> Op, last_chance: bool, now: Option<u64>) {
        let _one = self.emitting.lock().await;
        let durable = self.log.get().is_some();
        // Shard by shard: each holds only its own lock while it closes.
        for shard in 0..self.shards().len() {
            if let Err(e) = self
                .apply(shard, close(shard as u32, self.targets.len() as u32), now)
                .await
            {
                tracing::warn!(processor = %self.id, error = %e, "cannot close windows now; trying again at the next tick");
            }
        }
        let pieces: Vec<(usize, Piece)> = (0..self.shards().len())
            .flat_map(|i| {
                self.shards()
                    .lock(i)
                    .pieces()
                    .into_iter()
                    .map(move |p| (i, p))
            })
            .collect();
        let mut stalled = vec![false; self.targets.len()];
        // Branches the shutdown flush stopped waiting for.
        let mut handing_over = vec![false; self.targets.len()];
        for (shard, p) in pieces {
            let points = self.shards().lock(shard).piece_len(p.emission, p.index) as u32;
            let mut room: Vec<Option<FlowPermit>> = vec![None; self.targets.len()];
            for (t, window) in self.windows.iter().enumerate() {
                if p.missing & (1u64 << t.min(63)) == 0 || stalled[t] {
                    continue;
                }
                if handing_over[t] {
                    continue;
                }
                match self
                    .make_room(window, points, last_chance && !durable)
                    .await
                {
                    Room::Taken(permit) => room[t] = Some(permit),
                    Room::HandOver => handing_over[t] = true,
                    Room::Stalled => stalled[t] = true,
                }
            }
            if (0..self.targets.len()).all(|t| p.missing & (1u64 << t.min(63)) == 0 || stalled[t]) {
                continue;
            }
            let batches = {
                let closed = self.shards().lock(shard).piece(p.emission, p.index);
                closed.build()
            };
            let points = u64::from(points);
            for (t, target) in self.targets.iter().enumerate() {
                if p.missing & (1u64 << t.min(63)) == 0 || stalled[t] {
                    continue;
                }
                let flow = room[t].take();
                let mut outcome = Ok(());
                for (j, b) in batches.iter().enumerate() {
                    let mut b = b.clone();
                    b.context.idempotency_key = Some(self.batch_key(shard, &p, j));
                    b.context.flow = flow.clone();
                    if self.debug {
                        self.log_emission(&b);
                    }
                    if let Err(e) = target.consume(b).await {
                        outcome = Err(e);
                        break;
                    }
                }
                drop(flow);
                let done = match outcome {
                    Ok(()) => {
                        self.counters.emitted.add(points);
                        true
                    }
                    Err(e) if e.is_retryable() && (durable || !last_chance) => {
                        tracing::warn!(processor = %self.id, error = %e, points, "downstream refused totals for now; offering them again at the next tick (to the refusing branch only)");
                        false
                    }
                    Err(e) => {
                        self.counters.emit_failed.add(points);
                        tracing::error!(processor = %self.id, error = %e, points, "downstream refused totals; they are lost");
                        true
                    }
                };
                if done {
                    let op = Op::Done {
                        shard: shard as u32,
                        emission: p.emission,
                        index: p.index,
                        target: t as u32,
                    };
                    if let Err(e) = self.apply(shard, op, None).await {
                        tracing::warn!(processor = %self.id, error = %e, "cannot record a delivered piece; it is offered again (same idempotency key)");
                    }
                }
            }
        }
        for (t, stalled) in stalled.iter().enumerate() {
            if *stalled {
                tracing::warn!(processor = %self.id, branch = t, window = FLOW_WINDOW_POINTS, "a branch still holds its window of emitted totals in memory (its exporter is not sending); offering its other pieces again at the next tick");
            }
        }
        self.counters
            .series_open
            .set(self.shards().open_series() as i64);
    }

    /// Waits for room for `points` emitted totals in one branch's window:
    /// [`ROOM_WAIT`] at most, or [`LAST_CHANCE_WAIT`] when `hand_over` (the
    /// shutdown flush without storage, which then hands the piece over
    /// without room rather than lose it here).
    async fn make_room(&self, window: &Arc<Semaphore>, points: u32, hand_over: bool) -> Room {
        let n = points.clamp(1, FLOW_WINDOW_POINTS);
        let wait = if hand_over {
            LAST_CHANCE_WAIT
        } else {
            self.retry_after.min(ROOM_WAIT)
        };
        match tokio::time::timeout(wait, window.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Room::Taken(FlowPermit::new(permit)),
            _ if hand_over => {
                tracing::warn!(processor = %self.id, "a branch made no room for emitted totals within {LAST_CHANCE_WAIT:?} at shutdown; handing the rest over without waiting");
                Room::HandOver
            }
            _ => Room::Stalled,
        }
    }

    /// Emits the windows closed at `now` (the clock when `None`, and
    /// always with storage) and offers again what was refused.
    async fn emit_closed(&self, now: Option<u64>) {
        self.emit(|shard, targets| Op::Close { shard, targets }, false, now)
            .await;
    }

    /// Emits every open window, the current one included.
    async fn flush_all(&self) {
        let before = self.shards().open_series();
        self.emit(|shard, targets| Op::CloseAll { shard, targets }, true, None)
            .await;
        let left = self.shards().open_series();
        tracing::info!(processor = %self.id, series = before, left, "flushed every open window, the current one included");
    }
}

#[async_trait]
impl Consumer<Metrics> for AggregationProcessor {
    /// The engine reads a request's protobuf bytes in place, so a receiver
    /// need not decode what it hands over.
    fn reads_received(&self) -> bool {
        true
    }

    async fn consume(&self, batch: Batch<Metrics>) -> Result<(), ConsumerError> {
        let s = &self.shared;
        // Left undecoded by the receiver (this processor `reads_received`):
        // the engine reads the bytes in place.
        let undecoded = batch.undecoded();
        let Batch {
            data,
            context,
            received,
        } = batch;
        let (request, received) = match received {
            Some(bytes) if undecoded => (Request::Encoded(bytes.clone()), Some(bytes)),
            received => (Request::Decoded(data), received),
        };
        let items = || match &request {
            Request::Decoded(m) => m.item_count() as u64,
            Request::Encoded(b) => Metrics::count_encoded(b) as u64,
        };
        // Bytes are read (or decoded) here, before the engine lock; what
        // does not decode is refused without touching the state.
        let bytes = match &request {
            Request::Encoded(b) => Some(b.clone()),
            Request::Decoded(_) => None,
        };
        let prepared = match bytes.as_deref().map(Engine::prepare) {
            Some(Err(e)) => {
                tracing::debug!(processor = %s.id, points = items(), "refusing a request: {e}");
                return Err(ConsumerError::Permanent {
                    message: e.to_string(),
                    kind: PermanentKind::InvalidData,
                });
            }
            Some(Ok(p)) => Some(p),
            None => None,
        };
        let (outcome, open) = if let Some(log) = s.log.get() {
            // The receiver's own bytes when nothing changed the request
            // since; else it is encoded here. Packed here too: off the
            // log's thread, outside the engine lock.
            let encoded = match (&request, received) {
                (_, Some(bytes)) => bytes,
                (Request::Decoded(m), None) => m.encode_to_vec().into(),
                (Request::Encoded(b), None) => b.clone(),
            };
            // Counted only if refused (a wire count is a walk of the bytes).
            let points = match &request {
                Request::Decoded(m) => Some(m.item_count() as u64),
                Request::Encoded(_) => None,
            };
            let packed = Packed::pack(&encoded);
            let op = Op::Add {
                token: context.bearer_token().map(|t| t.expose().to_string()),
                headers: s
                    .headers
                    .iter()
                    .filter_map(|h| context.header(h).map(|v| (h.clone(), v.to_string())))
                    .collect(),
                request,
            };
            let (applied, commit) = log
                .begin(op, packed, prepared.as_ref())
                .map_err(|e| s.unwritten(e))?;
            let added = match applied {
                Applied::Added {
                    outcome,
                    open_series,
                } => Some((
                    outcome.map_err(|e| {
                        let n = points.unwrap_or_else(|| Metrics::count_encoded(&encoded) as u64);
                        (e, n)
                    }),
                    open_series,
                )),
                _ => None,
            };
            // Nothing of the request is read after this: its buffers are
            // freed before the wait (see `LogWriter::begin`).
            drop(prepared);
            drop(bytes);
            drop(encoded);
            commit.durable().await.map_err(|e| s.unwritten(e))?;
            match added {
                Some(added) => added,
                None => return Ok(()),
            }
        } else {
            let input = match (&prepared, &request) {
                (Some(p), _) => Input::Prepared(p),
                (None, Request::Decoded(m)) => Input::Tree(m),
                // Not reached: encoded bytes are prepared above.
                (None, Request::Encoded(_)) => {
                    return Err(ConsumerError::Permanent {
                        message: "aggregation: a request's bytes were not read".into(),
                        kind: PermanentKind::InvalidData,
                    })
                }
            };
            match s.shards().add_input(input, &context, now_nanos()) {
                Ok((outcome, open)) => (Ok(outcome), open),
                Err(e) => (Err((e, items())), 0),
            }
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err((e @ AddError::SeriesLimit { .. }, points)) => {
                s.counters.refused.add(points);
                tracing::warn!(processor = %s.id, points, "refusing a request: {e}");
                return Err(ConsumerError::Retryable {
                    message: e.to_string(),
                    retry_after: Some(s.retry_after),
                });
            }
            Err((e @ AddError::Undecodable(_), points)) => {
                tracing::debug!(processor = %s.id, points, "refusing a request: {e}");
                return Err(ConsumerError::Permanent {
                    message: e.to_string(),
                    kind: PermanentKind::InvalidData,
                });
            }
        };
        s.counters.record(&outcome);
        s.counters.series_open.set(open as i64);
        if !outcome.missing_key_metrics.is_empty() {
            s.warn_missing(&outcome.missing_key_metrics);
        }
        let d = &outcome.dropped;
        let rejected = d.invalid + d.missing_key + d.summary;
        if rejected > 0 {
            let reason = || rejection_message(d, &s.key);
            if d.invalid + d.summary > 0 {
                s.warn_invalid(reason());
            }
            context.rejected.add(rejected, reason);
        }
        for t in &outcome.traces {
            let user = t.user.as_deref().map(redact);
            tracing::info!(processor = %s.id, metric = %t.metric, user = user.as_deref().unwrap_or("-"), window_start = t.window, value = t.value, "aggregation: point {}", t.outcome);
        }
        Ok(())
    }
}

#[async_trait]
impl Lifecycle for AggregationProcessor {
    async fn start(&self, host: &Host) -> Result<(), ComponentError> {
        let shared = self.shared.clone();
        if let Some(name) = &self.storage {
            self.recover(host, name).await?;
            // Windows that closed while the collector was down, and pieces
            // a branch had not taken, go out now.
            let first = shared.clone();
            tokio::spawn(async move { first.emit_closed(None).await });
        }
        self.ticker.start(self.emit_interval, move || {
            let shared = shared.clone();
            async move { shared.emit_closed(None).await }
        });
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        self.ticker.stop().await;
        self.shared.flush_all().await;
        if let Some(log) = self.shared.log.get() {
            log.stop().await;
        }
        Ok(())
    }
}

impl AggregationProcessor {
    /// Opens the durable state in storage extension `name`, replays it into
    /// the engine and starts the log thread; before any receiver opens.
    async fn recover(&self, host: &Host, name: &str) -> Result<(), ComponentError> {
        let s = &self.shared;
        let fail = |e: String| ComponentError::Failed(format!("processor {}: storage: {e}", s.id));
        let id: ComponentId = name
            .parse()
            .map_err(|e: otelcol_core::component::IdError| fail(e.to_string()))?;
        let ext = host.storage(&id).map_err(|e| fail(e.to_string()))?;
        let pid: ComponentId =
            s.id.parse()
                .map_err(|e: otelcol_core::component::IdError| fail(e.to_string()))?;
        let client = ext
            .client(Kind::Processor, &pid, "state")
            .map_err(|e| fail(e.to_string()))?;
        let config = s.config.clone();
        let count = config.shard_count();
        let began = Instant::now();
        let (mut durable, engine, rec) =
            tokio::task::spawn_blocking(move || Durable::open(client, config, count, now_nanos()))
                .await
                .map_err(|e| fail(e.to_string()))?
                .map_err(|e| fail(e.to_string()))?;
        engine.set_tracing(s.debug);
        durable.snapshot_after = self.snapshot_after;
        let series = engine.open_series();
        let streams = engine.open_streams();
        let shards = durable.shards;
        *s.instance.lock().unwrap_or_else(PoisonError::into_inner) = durable.instance;
        let engine = Arc::new(engine);
        if s.recovered.set(engine.clone()).is_err() {
            return Err(fail("started twice".into()));
        }
        if rec.found {
            tracing::info!(processor = %s.id, storage = %name, series, streams, shards, records = rec.records, torn = rec.torn, snapshot_bytes = rec.snapshot_bytes, millis = began.elapsed().as_millis() as u64, "aggregation state recovered");
        } else {
            tracing::info!(processor = %s.id, storage = %name, shards, "aggregation state: starting empty (first start on this storage)");
        }
        let log = LogWriter::start(
            durable,
            engine,
            s.config.clone(),
            now_nanos,
            s.id.clone(),
            s.debug,
        )
        .map_err(|e| fail(e.to_string()))?;
        let _ = s.log.set(log);
        s.counters.series_open.set(series as i64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_emails_and_ids() {
        assert_eq!(redact("john.doe@example.com"), "jo***@example.com");
        assert_eq!(redact("a@b.co"), "a***@b.co");
        assert_eq!(redact("0b9d5f7e-1111"), "0b***");
    }
}
