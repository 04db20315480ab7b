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
use crate::engine::{AddOutcome, Engine};

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
    series_open: Gauge,
    emitted: Counter,
    emit_failed: Counter,
}

impl Counters {
    fn new(m: &MetricsRegistry, id: &str) -> Self {
        let l = [("processor", id)];
        let dropped = ["missing_key", "summary", "max_series", "invalid", "stale"]
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
            late: m.counter("otelcol_processor_aggregation_points_late", "Data points for an already emitted window (sent again as extra deltas).", &l),
            baseline: m.counter("otelcol_processor_aggregation_points_baseline", "First points of cumulative streams that began before the collector (baseline only).", &l),
            dropped,
            series_open: m.gauge("otelcol_processor_aggregation_series_open", "Open (window, series) totals held.", &l),
            emitted: m.counter("otelcol_processor_aggregation_totals_emitted", "Total data points emitted downstream.", &l),
            emit_failed: m.counter("otelcol_processor_aggregation_totals_failed", "Total data points refused downstream for good (logged).", &l),
        }
    }

    fn record(&self, o: &AddOutcome) {
        self.accepted.add(o.accepted);
        self.late.add(o.late);
        self.baseline.add(o.baseline);
        let d = &o.dropped;
        for (reason, n) in [
            ("missing_key", d.missing_key),
            ("summary", d.summary),
            ("max_series", d.max_series),
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

struct Shared {
    id: String,
    engine: Mutex<Engine>,
    next: Arc<dyn Consumer<Metrics>>,
    counters: Counters,
    debug: bool,
    warned: Mutex<HashMap<String, Instant>>,
    /// Totals refused downstream with a retryable error, retried at the next tick.
    pending: tokio::sync::Mutex<Vec<Batch<Metrics>>>,
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
        let mut engine = Engine::new(config, collector_start)?;
        engine.set_tracing(debug);
        let id = settings.id.to_string();
        Ok(Self {
            shared: Arc::new(Shared {
                counters: Counters::new(&settings.metrics, &id),
                id,
                engine: Mutex::new(engine),
                next,
                debug,
                warned: Mutex::new(HashMap::new()),
                pending: tokio::sync::Mutex::new(vec![]),
            }),
            emit_interval,
            ticker: Periodic::default(),
        })
    }

    /// Emits the windows closed at `now` (Unix nanoseconds); what the task
    /// does every `emit_interval`.
    pub async fn emit_closed(&self, now: u64) {
        self.shared.emit_closed(now).await;
    }
}

impl Shared {
    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn warn_missing(&self, metrics: &[String], key: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
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

    fn log_emission(&self, batch: &Batch<Metrics>, key: &str) {
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
                    let user = find_attribute(attrs, key).and_then(as_str).map(redact);
                    tracing::info!(processor = %self.id, metric = %m.name, user = user.as_deref().unwrap_or("-"), window_start, value, "aggregation: emitting a total");
                }
            }
        }
    }

    async fn send(&self, batches: Vec<Batch<Metrics>>, last_chance: bool) {
        let mut pending = self.pending.lock().await;
        let mut queue: Vec<Batch<Metrics>> = std::mem::take(&mut *pending);
        queue.extend(batches);
        for batch in queue {
            let points = batch.data.item_count() as u64;
            if self.debug {
                let key = self.engine().config().keys()[0].clone();
                self.log_emission(&batch, &key);
            }
            match self.next.consume(batch.clone()).await {
                Ok(()) => self.counters.emitted.add(points),
                Err(e) if e.is_retryable() && !last_chance => {
                    tracing::warn!(processor = %self.id, error = %e, points, "downstream refused totals for now; retrying at the next tick");
                    pending.push(batch);
                }
                Err(e) => {
                    self.counters.emit_failed.add(points);
                    tracing::error!(processor = %self.id, error = %e, points, "downstream refused totals; they are lost");
                }
            }
        }
    }

    /// Takes the closed windows under the engine lock, but builds their
    /// batches outside it, so incoming requests do not wait for an emission;
    /// shared values are collected afterwards, only when something closed.
    async fn emit_closed(&self, now: u64) {
        let closed = {
            let mut engine = self.engine();
            let c = engine.take_closed_series(now);
            self.counters.series_open.set(engine.open_series() as i64);
            c
        };
        let batches = if closed.is_empty() {
            vec![]
        } else {
            let b = closed.build();
            self.engine().collect_garbage();
            b
        };
        // Also retries what a downstream refused on an earlier tick.
        self.send(batches, false).await;
    }
}

#[async_trait]
impl Consumer<Metrics> for AggregationProcessor {
    async fn consume(&self, batch: Batch<Metrics>) -> Result<(), ConsumerError> {
        let s = &self.shared;
        let (outcome, open, key) = {
            let mut engine = s.engine();
            let outcome = engine.add(&batch.data, &batch.context, now_nanos());
            (
                outcome,
                engine.open_series(),
                engine.config().keys()[0].clone(),
            )
        };
        s.counters.record(&outcome);
        s.counters.series_open.set(open as i64);
        if !outcome.missing_key_metrics.is_empty() {
            s.warn_missing(&outcome.missing_key_metrics, &key);
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
        let batches = {
            let mut engine = self.shared.engine();
            let b = engine.take_all();
            self.shared.counters.series_open.set(0);
            b
        };
        let points: usize = batches.iter().map(|b| b.data.item_count()).sum();
        tracing::info!(processor = %self.shared.id, points, "flushing every open window, the current one included");
        self.shared.send(batches, true).await;
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
