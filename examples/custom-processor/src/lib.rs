//! A tiny processor of your own: type `team_tag` adds `team: <value>` to
//! every metric data point. The pattern of every component: a config
//! struct, a factory, the component, and `register`.

use std::sync::Arc;

use async_trait::async_trait;
use otelcol_core::component::{ComponentError, CreateSettings, Factories, Factory, Lifecycle, Processor, ProcessorFactory};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError};
use otelcol_core::pdata::proto::metrics::v1::metric;
use otelcol_core::pdata::{string_attribute, Metrics};
use otelcol_core::{Signal, Stability};
use serde::Deserialize;

/// `processors.team_tag`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeamTagConfig {
    /// The team written on every point.
    pub team: String,
}

/// The factory for type `team_tag`.
pub struct TeamTagFactory;

impl Factory for TeamTagFactory {
    fn type_name(&self) -> &'static str {
        "team_tag"
    }
    fn stability(&self) -> Stability {
        Stability::Development
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Metrics]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        let c: TeamTagConfig = decode(config)?;
        if c.team.is_empty() {
            return Err(ConfigError::invalid("team", "is required"));
        }
        Ok(())
    }
}

impl ProcessorFactory for TeamTagFactory {
    fn create_metrics(&self, _: CreateSettings, config: &RawConfig, next: Arc<dyn Consumer<Metrics>>) -> Result<Arc<dyn Processor<Metrics>>, ComponentError> {
        let c: TeamTagConfig = decode(config)?;
        Ok(Arc::new(TeamTag { team: c.team, next }))
    }
}

struct TeamTag {
    team: String,
    next: Arc<dyn Consumer<Metrics>>,
}

impl Lifecycle for TeamTag {}

#[async_trait]
impl Consumer<Metrics> for TeamTag {
    async fn consume(&self, mut batch: Batch<Metrics>) -> Result<(), ConsumerError> {
        for m in batch.data.resource_metrics.iter_mut().flat_map(|r| r.scope_metrics.iter_mut()).flat_map(|s| s.metrics.iter_mut()) {
            if let Some(metric::Data::Sum(s)) = &mut m.data {
                for p in &mut s.data_points {
                    p.attributes.push(string_attribute("team", self.team.clone()));
                }
            }
        }
        self.next.consume(batch).await
    }
}

/// The entry point `cargo xtask dist` calls.
pub fn register(factories: Factories) -> Factories {
    factories.processor(TeamTagFactory)
}
