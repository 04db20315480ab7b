//! The compiled definitions and the conversion of log records to points.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use otelcol_core::component::{CreateSettings, Lifecycle};
use otelcol_core::config::ConfigError;
use otelcol_core::consumer::{Batch, Consumer, ConsumerError};
use otelcol_core::ottl::{self, Condition, Context, Env, Val, Value};
use otelcol_core::pdata::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge as PGauge, Histogram as PHistogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum as PSum,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::{Logs, Metrics};
use otelcol_core::telemetry::Counter;

use crate::rules::Definition;
use crate::{Attribute, Literal, MetricInfo, SignalToMetricsConfig};

/// Go's default histogram buckets.
const DEFAULT_BUCKETS: [f64; 16] = [
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10_000.0, 15_000.0,
];

/// The scope of every point the connector makes.
pub const SCOPE_NAME: &str = "otelcol-multitudes/signaltometrics";

/// The shortest time between two warnings about dropped contributions.
const WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Attr {
    key: String,
    optional: bool,
    default: Option<AnyValue>,
}

#[derive(Debug)]
enum Kind {
    Sum(Value),
    Gauge(Value),
    Histogram {
        bounds: Vec<f64>,
        count: Option<Value>,
        value: Value,
    },
}

#[derive(Debug)]
struct Rule {
    name: String,
    description: String,
    unit: String,
    /// Empty: the whole resource.
    resource: Vec<Attr>,
    attrs: Vec<Attr>,
    fixed: Vec<KeyValue>,
    conditions: Vec<Condition>,
    kind: Kind,
}

/// The checked definitions: the config's `logs` plus its rule sets.
#[derive(Debug)]
pub struct Compiled {
    rules: Vec<Rule>,
}

/// What one conversion made and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Points made.
    pub points: u64,
    /// Contributions dropped because the value (or count) did not convert
    /// to a finite number.
    pub invalid: u64,
    /// Contributions dropped because the value was absent.
    pub missing: u64,
    /// Log records with at least one dropped contribution.
    pub records_dropped: u64,
    /// The first drop, described (metric and value, never other attributes).
    pub first_problem: Option<String>,
}

fn literal(l: &Literal) -> AnyValue {
    let v = match l {
        Literal::Bool(b) => any_value::Value::BoolValue(*b),
        Literal::Int(i) => any_value::Value::IntValue(*i),
        Literal::Double(d) => any_value::Value::DoubleValue(*d),
        Literal::Str(s) => any_value::Value::StringValue(s.clone()),
    };
    AnyValue { value: Some(v) }
}

fn attrs(list: &[Attribute], path: &str) -> Result<Vec<Attr>, ConfigError> {
    let mut out: Vec<Attr> = vec![];
    for (i, a) in list.iter().enumerate() {
        let at = format!("{path}.{i}");
        if a.key.is_empty() {
            return Err(ConfigError::invalid(at, "attribute key missing"));
        }
        if a.optional && a.default_value.is_some() {
            return Err(ConfigError::invalid(
                at,
                "only one of default_value or optional should be set",
            ));
        }
        if out.iter().any(|o| o.key == a.key) {
            return Err(ConfigError::invalid(
                at,
                format!("duplicate key `{}`", a.key),
            ));
        }
        out.push(Attr {
            key: a.key.clone(),
            optional: a.optional,
            default: a.default_value.as_ref().map(literal),
        });
    }
    Ok(out)
}

fn value(text: &str, path: &str) -> Result<Value, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::invalid(path, "a value expression is required"));
    }
    ottl::compile_value(text, Context::Log).map_err(|e| {
        ConfigError::invalid(
            path,
            format!("`{text}`: column {}: {}", e.column, e.message),
        )
    })
}

fn rule(info: &MetricInfo, fixed: &[(&str, &str)], path: &str) -> Result<Rule, ConfigError> {
    if info.name.is_empty() {
        return Err(ConfigError::invalid(
            format!("{path}.name"),
            "missing required metric name",
        ));
    }
    if info.exponential_histogram.is_some() {
        return Err(ConfigError::invalid(
            format!("{path}.exponential_histogram"),
            "exponential histograms are not made by this build; use sum, gauge or histogram",
        ));
    }
    let defined = [
        info.sum.is_some(),
        info.gauge.is_some(),
        info.histogram.is_some(),
    ];
    let n = defined.iter().filter(|d| **d).count();
    if n != 1 {
        return Err(ConfigError::invalid(
            path,
            format!("exactly one of sum, gauge or histogram must be defined, {n} found"),
        ));
    }
    let kind = if let Some(s) = &info.sum {
        Kind::Sum(value(&s.value, &format!("{path}.sum.value"))?)
    } else if let Some(g) = &info.gauge {
        Kind::Gauge(value(&g.value, &format!("{path}.gauge.value"))?)
    } else {
        let h = info.histogram.clone().unwrap_or_default();
        let bounds = if h.buckets.is_empty() {
            DEFAULT_BUCKETS.to_vec()
        } else {
            h.buckets.clone()
        };
        let ascending = bounds.windows(2).all(|w| w[0] < w[1]);
        if !ascending || bounds.iter().any(|b| !b.is_finite()) {
            return Err(ConfigError::invalid(
                format!("{path}.histogram.buckets"),
                "bucket bounds must be finite and strictly ascending",
            ));
        }
        let count = if h.count.trim().is_empty() {
            None
        } else {
            Some(value(&h.count, &format!("{path}.histogram.count"))?)
        };
        Kind::Histogram {
            bounds,
            count,
            value: value(&h.value, &format!("{path}.histogram.value"))?,
        }
    };
    let conditions = info
        .conditions
        .iter()
        .enumerate()
        .map(|(i, c)| {
            ottl::compile_condition(c, Context::Log).map_err(|e| {
                ConfigError::invalid(
                    format!("{path}.conditions.{i}"),
                    format!("`{c}`: column {}: {}", e.column, e.message),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Rule {
        name: info.name.clone(),
        description: info.description.clone(),
        unit: info.unit.clone(),
        resource: attrs(
            &info.include_resource_attributes,
            &format!("{path}.include_resource_attributes"),
        )?,
        attrs: attrs(&info.attributes, &format!("{path}.attributes"))?,
        fixed: fixed
            .iter()
            .map(|(k, v)| otelcol_core::pdata::string_attribute(*k, *v))
            .collect(),
        conditions,
        kind,
    })
}

/// A number a record contributes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    Int(i64),
    Double(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Double(d) => d,
        }
    }
}

/// Why a value gives no number.
enum NoNumber {
    Missing,
    Invalid(String),
}

/// The number in an evaluated value; `Err(x)` is an `x` that `Double` or
/// `Int` could not convert.
fn number(v: Result<Val, Val>) -> Result<Num, NoNumber> {
    let v = match v {
        Ok(v) => v,
        Err(Val::Str(s)) => {
            return Err(NoNumber::Invalid(format!("the string `{}`", truncate(&s))))
        }
        Err(other) => return Err(NoNumber::Invalid(describe(&other))),
    };
    match v {
        Val::Int(i) => Ok(Num::Int(i)),
        Val::Double(d) if d.is_finite() => Ok(Num::Double(d)),
        Val::Str(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                return Ok(Num::Int(i));
            }
            match t.parse::<f64>() {
                Ok(d) if d.is_finite() => Ok(Num::Double(d)),
                _ => Err(NoNumber::Invalid(format!("the string `{}`", truncate(t)))),
            }
        }
        Val::Nil => Err(NoNumber::Missing),
        other => Err(NoNumber::Invalid(describe(&other))),
    }
}

fn describe(v: &Val) -> String {
    match v {
        Val::Double(d) => format!("the number {d}"),
        Val::Int(i) => format!("the number {i}"),
        Val::Bool(b) => format!("the boolean {b}"),
        Val::Str(s) => format!("the string `{}`", truncate(s)),
        Val::List(_) => "a list".into(),
        Val::Nil => "absent".into(),
        Val::Other(_) => "a map or bytes".into(),
    }
}

fn truncate(s: &str) -> String {
    let cut: String = s.chars().take(32).collect();
    if cut.len() < s.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// Picks the attributes `wanted` from `have`; `None` when a required one is absent.
fn pick(wanted: &[Attr], have: &[KeyValue]) -> Option<Vec<KeyValue>> {
    let mut out = Vec::with_capacity(wanted.len());
    for w in wanted {
        let found = have
            .iter()
            .find(|kv| kv.key == w.key && kv.value.is_some())
            .and_then(|kv| kv.value.clone());
        match (found, &w.default) {
            (Some(v), _) => out.push(KeyValue {
                key: w.key.clone(),
                value: Some(v),
                ..KeyValue::default()
            }),
            (None, Some(d)) => out.push(KeyValue {
                key: w.key.clone(),
                value: Some(d.clone()),
                ..KeyValue::default()
            }),
            (None, None) if w.optional => {}
            (None, None) => return None,
        }
    }
    Some(out)
}

/// One made point, before it is placed in the output.
enum Point {
    Number(NumberDataPoint),
    Histogram(HistogramDataPoint),
}

/// Output being built: resources, each with its metrics.
#[derive(Default)]
struct Output {
    resources: Vec<(Vec<KeyValue>, Vec<Metric>)>,
}

impl Output {
    fn add(&mut self, resource: Vec<KeyValue>, rule: &Rule, point: Point) {
        let at = match self.resources.iter().position(|(r, _)| *r == resource) {
            Some(i) => i,
            None => {
                self.resources.push((resource, vec![]));
                self.resources.len() - 1
            }
        };
        let metrics = &mut self.resources[at].1;
        let same = |m: &Metric| {
            m.name == rule.name
                && m.unit == rule.unit
                && matches!(
                    (&m.data, &rule.kind),
                    (Some(metric::Data::Sum(_)), Kind::Sum(_))
                        | (Some(metric::Data::Gauge(_)), Kind::Gauge(_))
                        | (Some(metric::Data::Histogram(_)), Kind::Histogram { .. })
                )
        };
        let at = match metrics.iter().position(same) {
            Some(i) => i,
            None => {
                let delta = AggregationTemporality::Delta as i32;
                let data = match rule.kind {
                    Kind::Sum(_) => metric::Data::Sum(PSum {
                        data_points: vec![],
                        aggregation_temporality: delta,
                        is_monotonic: true,
                    }),
                    Kind::Gauge(_) => metric::Data::Gauge(PGauge {
                        data_points: vec![],
                    }),
                    Kind::Histogram { .. } => metric::Data::Histogram(PHistogram {
                        data_points: vec![],
                        aggregation_temporality: delta,
                    }),
                };
                metrics.push(Metric {
                    name: rule.name.clone(),
                    description: rule.description.clone(),
                    unit: rule.unit.clone(),
                    data: Some(data),
                    ..Metric::default()
                });
                metrics.len() - 1
            }
        };
        match (&mut metrics[at].data, point) {
            (Some(metric::Data::Sum(s)), Point::Number(p)) => s.data_points.push(p),
            (Some(metric::Data::Gauge(g)), Point::Number(p)) => g.data_points.push(p),
            (Some(metric::Data::Histogram(h)), Point::Histogram(p)) => h.data_points.push(p),
            _ => {}
        }
    }

    fn into_metrics(self) -> Metrics {
        Metrics {
            resource_metrics: self
                .resources
                .into_iter()
                .map(|(attributes, metrics)| ResourceMetrics {
                    resource: Some(Resource {
                        attributes,
                        ..Resource::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(InstrumentationScope {
                            name: SCOPE_NAME.into(),
                            ..InstrumentationScope::default()
                        }),
                        metrics,
                        ..ScopeMetrics::default()
                    }],
                    ..ResourceMetrics::default()
                })
                .collect(),
        }
    }
}

impl Compiled {
    /// Checks `config` and compiles its definitions and rule sets. Errors
    /// name the key (`logs.2.sum.value`) and what is wrong.
    pub fn new(config: &SignalToMetricsConfig) -> Result<Self, ConfigError> {
        if config.logs.is_empty() && config.rule_sets.is_empty() {
            return Err(ConfigError::invalid(
                "logs",
                "no metrics are defined: set `logs` or `rule_sets`",
            ));
        }
        let mut rules = vec![];
        for (i, info) in config.logs.iter().enumerate() {
            rules.push(rule(info, &[], &format!("logs.{i}"))?);
        }
        for (i, set) in config.rule_sets.iter().enumerate() {
            if config.rule_sets[..i].contains(set) {
                return Err(ConfigError::invalid(
                    format!("rule_sets.{i}"),
                    "this rule set is listed twice (its points would count twice)",
                ));
            }
            for Definition { info, fixed } in set.definitions() {
                rules.push(rule(&info, &fixed, &format!("rule_sets.{i}"))?);
            }
        }
        Ok(Self { rules })
    }

    /// Makes the points of every record of `logs` that a definition
    /// matches. `now` (Unix nanoseconds) stamps records without any time.
    pub fn convert(&self, logs: &mut Logs, now: u64) -> (Metrics, Outcome) {
        let mut out = Output::default();
        let mut outcome = Outcome::default();
        let mut no_resource = vec![];
        for rl in &mut logs.resource_logs {
            let resource = match rl.resource.as_mut() {
                Some(r) => &mut r.attributes,
                None => &mut no_resource,
            };
            for sl in &mut rl.scope_logs {
                for lr in &mut sl.log_records {
                    let time = [lr.time_unix_nano, lr.observed_time_unix_nano, now]
                        .into_iter()
                        .find(|t| *t != 0)
                        .unwrap_or(now);
                    let mut dropped = false;
                    for rule in &self.rules {
                        let evaluated = {
                            let mut env = Env {
                                resource: &mut *resource,
                                scope: sl.scope.as_mut(),
                                item: Some(&mut lr.attributes),
                                name: None,
                                metric_name: None,
                                description: None,
                                unit: None,
                                body: Some(&mut lr.body),
                                severity_text: Some(&mut lr.severity_text),
                            };
                            if !env.any(&rule.conditions) {
                                continue;
                            }
                            match &rule.kind {
                                Kind::Sum(v) | Kind::Gauge(v) => {
                                    (env.value_or_unconverted(v), None)
                                }
                                Kind::Histogram { count, value, .. } => (
                                    env.value_or_unconverted(value),
                                    count.as_ref().map(|c| env.value_or_unconverted(c)),
                                ),
                            }
                        };
                        let Some(mut point_attrs) = pick(&rule.attrs, &lr.attributes) else {
                            continue;
                        };
                        let resource_attrs = if rule.resource.is_empty() {
                            resource.clone()
                        } else {
                            match pick(&rule.resource, resource) {
                                Some(r) => r,
                                None => continue,
                            }
                        };
                        point_attrs.extend(rule.fixed.iter().cloned());
                        match make_point(rule, evaluated, point_attrs, time) {
                            Ok(point) => {
                                outcome.points += 1;
                                out.add(resource_attrs, rule, point);
                            }
                            Err((missing, why)) => {
                                dropped = true;
                                if missing {
                                    outcome.missing += 1;
                                } else {
                                    outcome.invalid += 1;
                                }
                                if outcome.first_problem.is_none() {
                                    outcome.first_problem =
                                        Some(format!("metric `{}`: {why}", rule.name));
                                }
                            }
                        }
                    }
                    outcome.records_dropped += u64::from(dropped);
                }
            }
        }
        (out.into_metrics(), outcome)
    }
}

/// The point `rule` makes of a record's evaluated value (and count), or
/// why it makes none: `(true, _)` for an absent value, `(false, _)` for
/// one that is not a finite number.
fn make_point(
    rule: &Rule,
    (value, count): (Result<Val, Val>, Option<Result<Val, Val>>),
    attributes: Vec<KeyValue>,
    time: u64,
) -> Result<Point, (bool, String)> {
    let explain = |what: &str, e: NoNumber| match e {
        NoNumber::Missing => (true, format!("the {what} is absent")),
        NoNumber::Invalid(v) => (false, format!("the {what} is {v}, not a finite number")),
    };
    let v = number(value).map_err(|e| explain("value", e))?;
    match &rule.kind {
        Kind::Sum(_) | Kind::Gauge(_) => Ok(Point::Number(NumberDataPoint {
            attributes,
            start_time_unix_nano: time,
            time_unix_nano: time,
            value: Some(match v {
                Num::Int(i) => number_data_point::Value::AsInt(i),
                Num::Double(d) => number_data_point::Value::AsDouble(d),
            }),
            ..NumberDataPoint::default()
        })),
        Kind::Histogram { bounds, .. } => {
            let n = match count {
                None => 1,
                Some(c) => match number(c).map_err(|e| explain("count", e))? {
                    Num::Int(i) if i >= 0 => i as u64,
                    Num::Double(d) if d >= 0.0 && d.fract() == 0.0 && d < 9.0e18 => d as u64,
                    other => {
                        return Err((
                            false,
                            format!("the count is {}, not a whole number ≥ 0", other.as_f64()),
                        ))
                    }
                },
            };
            let x = v.as_f64();
            let sum = x * n as f64;
            if !sum.is_finite() {
                return Err((false, "value × count is not finite".into()));
            }
            let mut bucket_counts = vec![0u64; bounds.len() + 1];
            let at = bounds.iter().position(|b| x <= *b).unwrap_or(bounds.len());
            bucket_counts[at] = n;
            Ok(Point::Histogram(HistogramDataPoint {
                attributes,
                start_time_unix_nano: time,
                time_unix_nano: time,
                count: n,
                sum: Some(sum),
                bucket_counts,
                explicit_bounds: bounds.clone(),
                min: Some(x),
                max: Some(x),
                ..HistogramDataPoint::default()
            }))
        }
    }
}

/// The running connector: a logs consumer feeding the metrics pipelines.
pub(crate) struct LogsToMetrics {
    compiled: Compiled,
    next: Arc<dyn Consumer<Metrics>>,
    id: String,
    points: Counter,
    invalid: Counter,
    missing: Counter,
    last_warning: Mutex<Option<Instant>>,
}

impl LogsToMetrics {
    pub(crate) fn new(
        settings: &CreateSettings,
        compiled: Compiled,
        next: Arc<dyn Consumer<Metrics>>,
    ) -> Self {
        let id = settings.id.to_string();
        let labels = |reason: &'static str| [("connector", id.clone()), ("reason", reason.into())];
        let dropped = |reason| {
            let l = labels(reason);
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            settings.metrics.counter(
                "otelcol_connector_signaltometrics_contributions_dropped_total",
                "Contributions of log records to a metric dropped: the value was absent or not a finite number.",
                &l,
            )
        };
        Self {
            points: settings.metrics.counter(
                "otelcol_connector_signaltometrics_points_total",
                "Metric points made from log records.",
                &[("connector", id.as_str())],
            ),
            invalid: dropped("invalid_value"),
            missing: dropped("missing_value"),
            compiled,
            next,
            id,
            last_warning: Mutex::new(None),
        }
    }

    fn warn(&self, outcome: &Outcome) {
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            connector = %self.id,
            invalid = outcome.invalid,
            missing = outcome.missing,
            "log records added nothing to a metric: {} (counted in \
             otelcol_connector_signaltometrics_contributions_dropped_total; \
             this warning repeats at most once a minute)",
            outcome.first_problem.as_deref().unwrap_or("unknown")
        );
    }
}

impl Lifecycle for LogsToMetrics {}

#[async_trait]
impl Consumer<Logs> for LogsToMetrics {
    async fn consume(&self, mut batch: Batch<Logs>) -> Result<(), ConsumerError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let (metrics, outcome) = self.compiled.convert(&mut batch.data, now);
        drop(batch.data);
        if outcome.invalid + outcome.missing > 0 {
            self.invalid.add(outcome.invalid);
            self.missing.add(outcome.missing);
            self.warn(&outcome);
            if let Some(problem) = &outcome.first_problem {
                batch
                    .context
                    .rejected
                    .add(outcome.records_dropped, || problem.clone());
            }
        }
        if outcome.points == 0 {
            return Ok(());
        }
        self.next
            .consume(Batch {
                data: metrics,
                context: batch.context,
                received: None,
            })
            .await?;
        self.points.add(outcome.points);
        Ok(())
    }
}
