//! The collector's own telemetry: `tracing` logs and a small registry of
//! counters and gauges rendered in Prometheus text.
//!
//! Metric names are the Go collector's (`otelcol_receiver_accepted_metric_points`, …);
//! counters are exposed with the `_total` suffix as the Go collector's
//! Prometheus endpoint does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds `d` (may be negative).
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
enum Cell {
    Counter(Counter),
    Gauge(Gauge),
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    series: BTreeMap<String, Cell>,
}

/// Every self-metric of one collector, by name and labels.
#[derive(Debug, Default)]
pub struct MetricsRegistry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', r"\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s
}

impl MetricsRegistry {
    /// The counter `name` with `labels`, created at zero on first use.
    /// Asking again with the same name and labels returns the same counter.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Counter {
        match self.cell(name, help, labels, || Cell::Counter(Counter::default())) {
            Cell::Counter(c) => c,
            Cell::Gauge(_) => Counter::default(),
        }
    }

    /// The gauge `name` with `labels`, created at zero on first use.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        match self.cell(name, help, labels, || Cell::Gauge(Gauge::default())) {
            Cell::Gauge(g) => g,
            Cell::Counter(_) => Gauge::default(),
        }
    }

    fn cell(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Cell,
    ) -> Cell {
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            series: BTreeMap::new(),
        });
        match family
            .series
            .entry(render_labels(labels))
            .or_insert_with(make)
        {
            Cell::Counter(c) => Cell::Counter(c.clone()),
            Cell::Gauge(g) => Cell::Gauge(g.clone()),
        }
    }

    /// Everything in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for (name, family) in families.iter() {
            let is_counter = matches!(family.series.values().next(), Some(Cell::Counter(_)));
            let full = if is_counter {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            let kind = if is_counter { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {full} {}", family.help);
            let _ = writeln!(out, "# TYPE {full} {kind}");
            for (labels, cell) in &family.series {
                let value = match cell {
                    Cell::Counter(c) => c.get().to_string(),
                    Cell::Gauge(g) => g.get().to_string(),
                };
                if labels.is_empty() {
                    let _ = writeln!(out, "{full} {value}");
                } else {
                    let _ = writeln!(out, "{full}{{{labels}}} {value}");
                }
            }
        }
        out
    }
}

/// `service.telemetry.logs`: the Go keys, of which `level` and `encoding` act.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// `debug`, `info` (default), `warn` or `error`.
    pub level: String,
    /// `console` (default) or `json`.
    pub encoding: String,
    /// Accepted for compatibility; ignored.
    pub development: bool,
    /// Accepted for compatibility; ignored.
    pub disable_caller: bool,
    /// Accepted for compatibility; ignored.
    pub disable_stacktrace: bool,
    /// Accepted for compatibility; ignored (logs go to stderr).
    pub output_paths: Vec<String>,
    /// Accepted for compatibility; ignored (logs go to stderr).
    pub error_output_paths: Vec<String>,
    /// Accepted for compatibility; ignored.
    pub sampling: Option<serde_json::Value>,
    /// Accepted for compatibility; ignored.
    pub initial_fields: Option<serde_json::Value>,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            encoding: "console".into(),
            development: false,
            disable_caller: false,
            disable_stacktrace: false,
            output_paths: vec![],
            error_output_paths: vec![],
            sampling: None,
            initial_fields: None,
        }
    }
}

/// Installs the global `tracing` subscriber for `config`, writing to stderr.
/// `RUST_LOG`, when set, overrides the level. Does nothing if a subscriber is
/// already installed (tests, embedding programs).
pub fn init_logging(config: &LogsConfig) {
    use tracing_subscriber::EnvFilter;
    let level = match config.level.to_ascii_lowercase().as_str() {
        "debug" => "debug",
        "warn" => "warn",
        "error" | "dpanic" | "panic" | "fatal" => "error",
        _ => "info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if config.encoding.eq_ignore_ascii_case("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_total_suffix_for_counters() {
        let r = MetricsRegistry::default();
        let c = r.counter(
            "otelcol_receiver_accepted_metric_points",
            "Points accepted.",
            &[("receiver", "otlp"), ("transport", "http")],
        );
        c.add(3);
        r.counter(
            "otelcol_receiver_accepted_metric_points",
            "Points accepted.",
            &[("receiver", "otlp"), ("transport", "http")],
        )
        .add(2);
        r.gauge(
            "otelcol_exporter_queue_size",
            "Queue size.",
            &[("exporter", "x\"y")],
        )
        .set(-1);
        assert_eq!(
            r.render(),
            "# HELP otelcol_exporter_queue_size Queue size.\n\
             # TYPE otelcol_exporter_queue_size gauge\n\
             otelcol_exporter_queue_size{exporter=\"x\\\"y\"} -1\n\
             # HELP otelcol_receiver_accepted_metric_points_total Points accepted.\n\
             # TYPE otelcol_receiver_accepted_metric_points_total counter\n\
             otelcol_receiver_accepted_metric_points_total{receiver=\"otlp\",transport=\"http\"} 5\n"
        );
    }
}
