//! Four processors that fix identity and strip private data before
//! aggregation or before events are forwarded, config-compatible with the
//! Go ones:
//!
//! - `attributes`: [`actions`] on data-point, log-record and span
//!   attributes, with `include` / `exclude` ([`matching`]);
//! - `resource`: the same actions on resource attributes;
//! - `redaction`: an allow list of keys, blocked key patterns and blocked
//!   values masked or hashed ([`redaction`]), for events that leave;
//! - `transform`: statement groups in a subset of OTTL ([`otelcol_core::ottl`]), e.g. the
//!   copy of resource attributes onto data points:
//!
//! ```yaml
//! transform:
//!   metric_statements:
//!     - context: datapoint
//!       statements:
//!         - set(attributes["user"], resource.attributes["user"])
//!         - set(attributes["email"], resource.attributes["email"])
//! ```
//!
//! Every statement is parsed and checked when the config is validated;
//! errors name the statement and the column.

pub mod actions;
pub mod matching;
pub mod redaction;
pub mod transform;

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use otelcol_core::component::{
    ComponentError, CreateSettings, Factory, Lifecycle, NoEffectKey, Processor, ProcessorFactory,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError, PermanentKind, RequestContext};
use otelcol_core::pdata::proto::common::v1::{any_value, KeyValue};
use otelcol_core::pdata::proto::metrics::v1::metric;
use otelcol_core::pdata::{Logs, Metrics, Payload, Traces};
use otelcol_core::{Signal, Stability};
use serde::{Deserialize, Serialize};

use actions::{Action, ActionConfig};
use matching::{Filter, Item, MatchConfig, Matcher};
use redaction::Redaction;
pub use transform::{Transform, TransformConfig};

/// `processors.attributes`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AttributesConfig {
    /// Applied in order.
    pub actions: Vec<ActionConfig>,
    /// Only matching items are processed.
    pub include: Option<MatchConfig>,
    /// Matching items are skipped.
    pub exclude: Option<MatchConfig>,
}

/// `processors.resource`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceConfig {
    /// Applied in order to resource attributes (the Go key is `attributes`).
    pub attributes: Vec<ActionConfig>,
}

/// What a processor of this crate does to a payload.
pub enum Mode {
    /// `attributes`.
    Attributes(Vec<Action>, Box<Filter>),
    /// `resource`.
    Resource(Vec<Action>),
    /// `transform`.
    Transform(Transform),
    /// `redaction`.
    Redaction(Redaction),
}

/// A payload these processors can edit.
pub trait Editable: Payload {
    /// Applies `mode` to `data`.
    fn edit(mode: &Mode, data: &mut Self, ctx: &RequestContext) -> Result<(), String>;
}

fn body_text(v: &Option<otelcol_core::pdata::proto::common::v1::AnyValue>) -> Option<&str> {
    match v.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn resource_actions(
    actions: &[Action],
    resource: &mut Option<otelcol_core::pdata::proto::resource::v1::Resource>,
    ctx: &RequestContext,
) {
    let r = resource.get_or_insert_with(Default::default);
    let before = r.attributes.clone();
    actions::apply(actions, &mut r.attributes, &before, ctx);
}

/// The attribute lists of every data point of a metric, whatever its kind.
pub(crate) fn points(data: &mut Option<metric::Data>) -> Vec<&mut Vec<KeyValue>> {
    match data {
        Some(metric::Data::Gauge(d)) => d
            .data_points
            .iter_mut()
            .map(|p| &mut p.attributes)
            .collect(),
        Some(metric::Data::Sum(d)) => d
            .data_points
            .iter_mut()
            .map(|p| &mut p.attributes)
            .collect(),
        Some(metric::Data::Histogram(d)) => d
            .data_points
            .iter_mut()
            .map(|p| &mut p.attributes)
            .collect(),
        Some(metric::Data::ExponentialHistogram(d)) => d
            .data_points
            .iter_mut()
            .map(|p| &mut p.attributes)
            .collect(),
        Some(metric::Data::Summary(d)) => d
            .data_points
            .iter_mut()
            .map(|p| &mut p.attributes)
            .collect(),
        None => vec![],
    }
}

impl Editable for Metrics {
    fn edit(mode: &Mode, data: &mut Self, ctx: &RequestContext) -> Result<(), String> {
        match mode {
            Mode::Transform(t) => t.metrics(data),
            Mode::Redaction(r) => {
                r.metrics(data);
                Ok(())
            }
            Mode::Resource(a) => {
                data.resource_metrics
                    .iter_mut()
                    .for_each(|rm| resource_actions(a, &mut rm.resource, ctx));
                Ok(())
            }
            Mode::Attributes(a, filter) => {
                for rm in &mut data.resource_metrics {
                    let resource: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
                    for sm in &mut rm.scope_metrics {
                        let scope = scope_of(&sm.scope);
                        for m in &mut sm.metrics {
                            let name = m.name.clone();
                            let item = Item {
                                name: Some(&name),
                                resource,
                                scope,
                                ..Item::default()
                            };
                            for attrs in points(&mut m.data) {
                                if filter.applies(&item, attrs) {
                                    actions::apply(a, attrs, resource, ctx);
                                }
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

impl Editable for Logs {
    fn edit(mode: &Mode, data: &mut Self, ctx: &RequestContext) -> Result<(), String> {
        match mode {
            Mode::Transform(t) => t.logs(data),
            Mode::Redaction(r) => {
                r.logs(data);
                Ok(())
            }
            Mode::Resource(a) => {
                data.resource_logs
                    .iter_mut()
                    .for_each(|r| resource_actions(a, &mut r.resource, ctx));
                Ok(())
            }
            Mode::Attributes(a, filter) => {
                for rl in &mut data.resource_logs {
                    let resource: &[KeyValue] = rl.resource.as_ref().map_or(&[], |r| &r.attributes);
                    for sl in &mut rl.scope_logs {
                        let scope = scope_of(&sl.scope);
                        for r in &mut sl.log_records {
                            let item = Item {
                                name: body_text(&r.body),
                                resource,
                                scope,
                                span_kind: None,
                                severity: Some((&r.severity_text, r.severity_number)),
                            };
                            if filter.applies(&item, &r.attributes) {
                                actions::apply(a, &mut r.attributes, resource, ctx);
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

impl Editable for Traces {
    fn edit(mode: &Mode, data: &mut Self, ctx: &RequestContext) -> Result<(), String> {
        match mode {
            Mode::Transform(t) => t.traces(data),
            Mode::Redaction(r) => {
                r.traces(data);
                Ok(())
            }
            Mode::Resource(a) => {
                data.resource_spans
                    .iter_mut()
                    .for_each(|r| resource_actions(a, &mut r.resource, ctx));
                Ok(())
            }
            Mode::Attributes(a, filter) => {
                for rs in &mut data.resource_spans {
                    let resource: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
                    for ss in &mut rs.scope_spans {
                        let scope = scope_of(&ss.scope);
                        for s in &mut ss.spans {
                            let item = Item {
                                name: Some(&s.name),
                                resource,
                                scope,
                                span_kind: Some(s.kind),
                                severity: None,
                            };
                            if filter.applies(&item, &s.attributes) {
                                actions::apply(a, &mut s.attributes, resource, ctx);
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// A running processor of this crate, for one signal.
pub struct EditProcessor<T> {
    id: String,
    mode: Mode,
    next: Arc<dyn Consumer<T>>,
    _signal: PhantomData<fn(T)>,
}

impl<T: Editable> EditProcessor<T> {
    /// A processor applying `mode` before `next`.
    pub fn new(id: String, mode: Mode, next: Arc<dyn Consumer<T>>) -> Self {
        Self {
            id,
            mode,
            next,
            _signal: PhantomData,
        }
    }
}

impl<T> Lifecycle for EditProcessor<T> {}

#[async_trait]
impl<T: Editable> Consumer<T> for EditProcessor<T> {
    async fn consume(&self, mut batch: Batch<T>) -> Result<(), ConsumerError> {
        if let Err(e) = T::edit(&self.mode, &mut batch.data, &batch.context) {
            tracing::error!(processor = %self.id, error = %e, "refusing a batch (error_mode: propagate)");
            return Err(ConsumerError::Permanent {
                message: format!("processor {}: {e}", self.id),
                kind: PermanentKind::InvalidData,
            });
        }
        self.next.consume(batch).await
    }
}

fn matcher(
    path: &str,
    c: &Option<MatchConfig>,
    signal: Signal,
) -> Result<Option<Matcher>, ConfigError> {
    c.as_ref()
        .map(|c| Matcher::new(path, c, signal))
        .transpose()
}

/// Which of the three types a factory builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Attributes,
    Resource,
    Transform,
    Redaction,
}

fn mode(which: Which, raw: &RawConfig, signal: Signal) -> Result<Mode, ConfigError> {
    Ok(match which {
        Which::Attributes => {
            let c: AttributesConfig = decode(raw)?;
            if c.actions.is_empty() {
                return Err(ConfigError::invalid(
                    "actions",
                    "at least one action is required",
                ));
            }
            let filter = Filter {
                include: matcher("include", &c.include, signal)?,
                exclude: matcher("exclude", &c.exclude, signal)?,
            };
            Mode::Attributes(actions::compile(&c.actions)?, Box::new(filter))
        }
        Which::Resource => {
            let c: ResourceConfig = decode(raw)?;
            if c.attributes.is_empty() {
                return Err(ConfigError::invalid(
                    "attributes",
                    "at least one action is required",
                ));
            }
            Mode::Resource(actions::compile(&c.attributes).map_err(|e| match e {
                ConfigError::Invalid { path, message } => {
                    ConfigError::invalid(path.replacen("actions", "attributes", 1), message)
                }
                other => other,
            })?)
        }
        Which::Transform => Mode::Transform(Transform::new(&decode(raw)?)?),
        Which::Redaction => Mode::Redaction(Redaction::new(&decode(raw)?)?),
    })
}

/// The name and version of a scope, if any.
fn scope_of(
    scope: &Option<otelcol_core::pdata::proto::common::v1::InstrumentationScope>,
) -> Option<(&str, &str)> {
    scope
        .as_ref()
        .map(|s| (s.name.as_str(), s.version.as_str()))
}

/// The Go keys each processor type accepts with no effect.
fn no_effect_keys(which: Which) -> Vec<NoEffectKey> {
    const CACHE: &str = "each pattern is compiled once at start; there is no match cache to size";
    match which {
        Which::Attributes => ["include", "exclude"]
            .into_iter()
            .flat_map(|side| {
                ["cacheenabled", "cachemaxnumentries"]
                    .map(|k| NoEffectKey::new(format!("{side}.regexp.{k}"), CACHE))
            })
            .collect(),
        Which::Redaction => vec![
            NoEffectKey::new(
                "db_sanitizer",
                "no component here makes database spans; statements are not obfuscated",
            ),
            NoEffectKey::new(
                "url_sanitizer",
                "span names are not rewritten here; URLs in attribute values are masked only by blocked_values",
            ),
        ],
        _ => Vec::new(),
    }
}

macro_rules! factory {
    ($name:ident, $type_name:literal, $which:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name;

        impl Factory for $name {
            fn type_name(&self) -> &'static str {
                $type_name
            }
            fn stability(&self) -> Stability {
                Stability::Beta
            }
            fn signals(&self) -> &'static [Signal] {
                &Signal::ALL
            }
            fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
                for s in Signal::ALL {
                    mode($which, config, s)?;
                }
                Ok(())
            }
            fn no_effect_keys(&self) -> Vec<NoEffectKey> {
                no_effect_keys($which)
            }
        }

        impl ProcessorFactory for $name {
            fn create_metrics(
                &self,
                s: CreateSettings,
                c: &RawConfig,
                n: Arc<dyn Consumer<Metrics>>,
            ) -> Result<Arc<dyn Processor<Metrics>>, ComponentError> {
                Ok(Arc::new(EditProcessor::new(
                    s.id.to_string(),
                    mode($which, c, Signal::Metrics)?,
                    n,
                )))
            }
            fn create_logs(
                &self,
                s: CreateSettings,
                c: &RawConfig,
                n: Arc<dyn Consumer<Logs>>,
            ) -> Result<Arc<dyn Processor<Logs>>, ComponentError> {
                Ok(Arc::new(EditProcessor::new(
                    s.id.to_string(),
                    mode($which, c, Signal::Logs)?,
                    n,
                )))
            }
            fn create_traces(
                &self,
                s: CreateSettings,
                c: &RawConfig,
                n: Arc<dyn Consumer<Traces>>,
            ) -> Result<Arc<dyn Processor<Traces>>, ComponentError> {
                Ok(Arc::new(EditProcessor::new(
                    s.id.to_string(),
                    mode($which, c, Signal::Traces)?,
                    n,
                )))
            }
        }
    };
}

factory!(
    AttributesProcessorFactory,
    "attributes",
    Which::Attributes,
    "The factory for type `attributes`."
);
factory!(
    ResourceProcessorFactory,
    "resource",
    Which::Resource,
    "The factory for type `resource`."
);
factory!(
    RedactionProcessorFactory,
    "redaction",
    Which::Redaction,
    "The factory for type `redaction`."
);
factory!(
    TransformProcessorFactory,
    "transform",
    Which::Transform,
    "The factory for type `transform`."
);

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories
        .processor(AttributesProcessorFactory)
        .processor(ResourceProcessorFactory)
        .processor(TransformProcessorFactory)
        .processor(RedactionProcessorFactory)
}
