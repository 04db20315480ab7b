//! The `signaltometrics` connector: the exporter of a logs pipeline and a
//! receiver of a metrics pipeline. Each log record that matches a metric's
//! `conditions` becomes one **delta** point of that metric, stamped with the
//! record's time (`observedTimeUnixNano` when `timeUnixNano` is 0, as Codex
//! sends), with the attributes the metric names and the request context
//! (the caller's token, headers) carried through, so the metrics pipeline's
//! `aggregation` makes the per-user totals and no raw event leaves.
//!
//! The keys are the Go connector's `logs` section; `rule_sets` (ours) adds
//! the built-in definitions of [`rules`] for Claude Code, Codex and Gemini
//! CLI. See the crate README for every key and what each rule set emits.

mod convert;
pub mod rules;

use std::sync::Arc;

use otelcol_core::component::{
    ComponentError, Connector, ConnectorFactory, CreateSettings, Factory, NoEffectKey,
    SignalConsumers,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::{Signal, Stability};
use serde::Deserialize;

pub use convert::{Compiled, Outcome};
pub use rules::RuleSet;

/// `connectors.signaltometrics`, with the Go connector's keys.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalToMetricsConfig {
    /// Metrics made from log records, each from every record it matches.
    pub logs: Vec<MetricInfo>,
    /// Built-in definitions to add to `logs` (ours, not Go's):
    /// `claude_code`, `codex`, `gemini_cli`.
    pub rule_sets: Vec<RuleSet>,
    /// Go: metrics from spans. Accepted with a start-up warning, no
    /// effect: this build connects logs pipelines only.
    pub spans: Vec<RawConfig>,
    /// Go: metrics from data points. As `spans`.
    pub datapoints: Vec<RawConfig>,
    /// Go: metrics from profiles. As `spans`.
    pub profiles: Vec<RawConfig>,
}

/// One metric to make from log records (Go `MetricInfo`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricInfo {
    /// The metric's name (required).
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its unit.
    pub unit: String,
    /// Resource attributes the points' resource keeps. Empty keeps the
    /// whole resource, as in Go (the aggregation processor's
    /// `resource_attributes` allow-list still applies downstream).
    pub include_resource_attributes: Vec<Attribute>,
    /// Record attributes that become the point's attributes; no others do.
    pub attributes: Vec<Attribute>,
    /// OTTL conditions in the log context, ORed; none means every record.
    pub conditions: Vec<String>,
    /// Make a sum: each record adds `value`.
    pub sum: Option<Sum>,
    /// Make a gauge: each record sets `value`.
    pub gauge: Option<Gauge>,
    /// Make an explicit-bucket histogram: each record observes `value`,
    /// `count` times.
    pub histogram: Option<Histogram>,
    /// Go: an exponential histogram. Refused when set (not in this build).
    pub exponential_histogram: Option<RawConfig>,
}

/// An attribute a point takes from the record (or resource).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Attribute {
    /// The attribute's key (required).
    pub key: String,
    /// When the record lacks it, make the point without it (otherwise a
    /// record without it makes no point of this metric).
    pub optional: bool,
    /// When the record lacks it, use this value.
    pub default_value: Option<Literal>,
}

/// A literal value from the config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Literal {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Double(f64),
    /// A string.
    Str(String),
}

/// `sum:` of a [`MetricInfo`].
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Sum {
    /// OTTL value expression for what a record adds, e.g.
    /// `Int(attributes["input_tokens"])` (required).
    pub value: String,
}

/// `gauge:` of a [`MetricInfo`].
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Gauge {
    /// OTTL value expression for the value a record sets (required).
    pub value: String,
}

/// `histogram:` of a [`MetricInfo`].
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Histogram {
    /// Upper bounds of the buckets, ascending (Go's default list when empty).
    pub buckets: Vec<f64>,
    /// OTTL value expression for how many observations a record makes
    /// (default 1).
    pub count: String,
    /// OTTL value expression for the observed value (required).
    pub value: String,
}

/// The factory of `signaltometrics`.
pub struct SignalToMetricsFactory;

impl Factory for SignalToMetricsFactory {
    fn type_name(&self) -> &'static str {
        "signaltometrics"
    }
    fn stability(&self) -> Stability {
        Stability::Alpha
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Logs, Signal::Metrics]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        Compiled::new(&decode::<SignalToMetricsConfig>(config)?).map(|_| ())
    }
    fn no_effect_keys(&self) -> Vec<NoEffectKey> {
        const WHY: &str = "this build makes metrics from logs only (the connector joins logs pipelines to metrics pipelines), so these definitions never run";
        ["spans", "datapoints", "profiles"]
            .map(|k| NoEffectKey::new(k, WHY))
            .to_vec()
    }
}

impl ConnectorFactory for SignalToMetricsFactory {
    fn pairs(&self) -> &'static [(Signal, Signal)] {
        &[(Signal::Logs, Signal::Metrics)]
    }
    fn create(
        &self,
        settings: CreateSettings,
        config: &RawConfig,
        next: SignalConsumers,
    ) -> Result<Connector, ComponentError> {
        let compiled = Compiled::new(&decode::<SignalToMetricsConfig>(config)?)?;
        let metrics = next.metrics.ok_or_else(|| {
            ComponentError::Failed("signaltometrics feeds metrics pipelines only".into())
        })?;
        let connector = Arc::new(convert::LogsToMetrics::new(&settings, compiled, metrics));
        Ok(Connector {
            component: connector.clone(),
            consumers: SignalConsumers {
                logs: Some(connector),
                ..SignalConsumers::default()
            },
        })
    }
}

/// Adds `signaltometrics` to `factories`.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories.connector(SignalToMetricsFactory)
}
