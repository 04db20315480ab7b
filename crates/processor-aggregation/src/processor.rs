//! The processor: a thin wrapper that feeds the [`Engine`] and emits closed
//! windows on its own task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use otelcol_core::component::{
    ComponentError, CreateSettings, Factory, Host, Lifecycle, Processor, ProcessorFactory,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError};
use otelcol_core::pdata::proto::common::v1::KeyValue;
use otelcol_core::pdata::proto::metrics::v1::{metric, number_data_point, NumberDataPoint};
use otelcol_core::pdata::{as_str, find_attribute, Metrics, Payload};
use otelcol_core::task::Periodic;
use otelcol_core::telemetry::{Counter, Gauge, MetricsRegistry};
use otelcol_core::{Signal, Stability};

use crate::config::AggregationConfig;
use crate::engine::{AddError, AddOutcome, Dropped, Engine};

/// How often the missing-key warning may repeat for one metric.
const WARN_EVERY: Duration = Duration::from_secs(60);

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

/// Series taken from the engine per piece of an emission: each piece is
/// built and handed downstream before the next is taken, so an emission of
/// a million series adds a few MiB, not a copy of everything.
const EMIT_CHUNK: usize = 4096;

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

/// Totals refused downstream with a retryable error, to be offered again,
/// and the branches (of a fan-out) that still have to take them.
struct Pending {
    batch: Batch<Metrics>,
    targets: Vec<usize>,
}

struct Shared {
    id: String,
    /// The first user key, for logs.
    key: String,
    engine: Mutex<Engine>,
    /// Where totals go: the branches of a fan-out, or the one consumer.
    targets: Vec<Arc<dyn Consumer<Metrics>>>,
    counters: Counters,
    debug: bool,
    retry_after: Duration,
    warned: Mutex<HashMap<String, Instant>>,
    warned_invalid: Mutex<Option<Instant>>,
    pending: tokio::sync::Mutex<Vec<Pending>>,
}

/// The running `aggregation` processor.
pub struct AggregationProcessor {
    shared: Arc<Shared>,
    emit_interval: Duration,
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
        let mut engine = Engine::new(config, collector_start)?;
        engine.set_tracing(debug);
        let id = settings.id.to_string();
        let targets = next.branches().unwrap_or_else(|| vec![next]);
        Ok(Self {
            shared: Arc::new(Shared {
                counters: Counters::new(&settings.metrics, &id),
                id,
                key,
                engine: Mutex::new(engine),
                targets,
                debug,
                retry_after: emit_interval,
                warned: Mutex::new(HashMap::new()),
                warned_invalid: Mutex::new(None),
                pending: tokio::sync::Mutex::new(vec![]),
            }),
            emit_interval,
            ticker: Periodic::default(),
        })
    }

    /// Emits the windows closed at `now` (Unix nanoseconds), and offers
    /// again what was refused before; what the task does every `emit_interval`.
    pub async fn emit_closed(&self, now: u64) {
        self.shared.emit_closed(now).await;
    }
}

impl Shared {
    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// Offers `batches` (and what was refused before) to every target that
    /// has not taken them. A retryable refusal keeps the batch for the next
    /// tick, for the refusing branches only; on the `last_chance` (shutdown)
    /// it is lost, counted and logged.
    async fn send(&self, batches: Vec<Batch<Metrics>>, last_chance: bool) {
        let mut pending = self.pending.lock().await;
        let all: Vec<usize> = (0..self.targets.len()).collect();
        let mut queue = std::mem::take(&mut *pending);
        queue.extend(batches.into_iter().map(|batch| Pending {
            batch,
            targets: all.clone(),
        }));
        for item in queue {
            let points = item.batch.data.item_count() as u64;
            if self.debug {
                self.log_emission(&item.batch);
            }
            let mut refused = vec![];
            for t in item.targets {
                match self.targets[t].consume(item.batch.clone()).await {
                    Ok(()) => self.counters.emitted.add(points),
                    Err(e) if e.is_retryable() && !last_chance => {
                        tracing::warn!(processor = %self.id, error = %e, points, "downstream refused totals for now; offering them again at the next tick");
                        refused.push(t);
                    }
                    Err(e) => {
                        self.counters.emit_failed.add(points);
                        tracing::error!(processor = %self.id, error = %e, points, "downstream refused totals; they are lost");
                    }
                }
            }
            if !refused.is_empty() {
                pending.push(Pending {
                    batch: item.batch,
                    targets: refused,
                });
            }
        }
        let held = pending.iter().map(|p| p.batch.data.item_count()).sum();
        self.engine().set_held(held);
    }

    /// Offers again what was refused, then emits the closed windows in
    /// pieces of [`EMIT_CHUNK`] series: each piece is taken under the
    /// engine lock and built and sent outside it, so requests do not wait
    /// for an emission.
    async fn emit_closed(&self, now: u64) {
        self.send(vec![], false).await;
        loop {
            let closed = self.engine().take_closed_series(now, EMIT_CHUNK);
            if closed.is_empty() {
                break;
            }
            self.send(closed.build(), false).await;
        }
        let mut engine = self.engine();
        engine.finish_emission(now);
        self.counters.series_open.set(engine.open_series() as i64);
    }

    /// Emits every open window, the current one included, in pieces.
    async fn flush_all(&self) {
        let mut points = 0;
        loop {
            let closed = self.engine().take_all_series(EMIT_CHUNK);
            if closed.is_empty() {
                break;
            }
            points += closed.len();
            self.send(closed.build(), true).await;
        }
        self.send(vec![], true).await;
        self.engine().collect_garbage();
        self.counters.series_open.set(0);
        tracing::info!(processor = %self.id, points, "flushed every open window, the current one included");
    }
}

#[async_trait]
impl Consumer<Metrics> for AggregationProcessor {
    async fn consume(&self, batch: Batch<Metrics>) -> Result<(), ConsumerError> {
        let s = &self.shared;
        let (outcome, open) = {
            let mut engine = s.engine();
            let outcome = engine.add(&batch.data, &batch.context, now_nanos());
            (outcome, engine.open_series())
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e @ AddError::SeriesLimit { .. }) => {
                let points = batch.data.item_count() as u64;
                s.counters.refused.add(points);
                tracing::warn!(processor = %s.id, points, "refusing a request: {e}");
                return Err(ConsumerError::Retryable {
                    message: e.to_string(),
                    retry_after: Some(s.retry_after),
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
            batch.context.rejected.add(rejected, reason);
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
    async fn start(&self, _host: &Host) -> Result<(), ComponentError> {
        let shared = self.shared.clone();
        self.ticker.start(self.emit_interval, move || {
            let shared = shared.clone();
            async move { shared.emit_closed(now_nanos()).await }
        });
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        self.ticker.stop().await;
        self.shared.flush_all().await;
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
