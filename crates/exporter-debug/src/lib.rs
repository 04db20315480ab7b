//! The `debug` exporter: logs a summary of every batch that reaches it and,
//! with `verbosity: detailed`, the batch itself as OTLP/JSON. It is the
//! embedded default's exporter, so a newcomer sees data arrive.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use otelcol_core::component::{
    ComponentError, CreateSettings, Exporter, ExporterFactory, Factory, Lifecycle, NoEffectKey,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError};
use otelcol_core::pdata::{Logs, Metrics, Payload, Traces};
use otelcol_core::{Signal, Stability};
use serde::{Deserialize, Serialize};

/// How much the exporter prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// One line per batch with its counts.
    #[default]
    Basic,
    /// The same as `basic` (kept for config compatibility).
    Normal,
    /// The counts and the whole batch as OTLP/JSON.
    Detailed,
}

/// `exporters.debug`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DebugExporterConfig {
    /// How much to print.
    pub verbosity: Verbosity,
    /// Accepted with a start-up warning; every batch is logged.
    pub sampling_initial: Option<u64>,
    /// Accepted with a start-up warning; every batch is logged.
    pub sampling_thereafter: Option<u64>,
    /// Accepted with a start-up warning; the collector's log is always used.
    pub use_internal_logger: Option<bool>,
}

/// The factory for type `debug`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DebugExporterFactory;

impl Factory for DebugExporterFactory {
    fn type_name(&self) -> &'static str {
        "debug"
    }
    fn stability(&self) -> Stability {
        Stability::Development
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode::<DebugExporterConfig>(config).map(|_| ())
    }
    fn no_effect_keys(&self) -> Vec<NoEffectKey> {
        const SAMPLING: &str = "every batch is logged, one line each; sampling is not needed at the rate totals arrive";
        vec![
            NoEffectKey::new("sampling_initial", SAMPLING),
            NoEffectKey::new("sampling_thereafter", SAMPLING),
            NoEffectKey::new(
                "use_internal_logger",
                "the exporter always writes through the collector's own log",
            ),
        ]
    }
}

fn build<T: Payload + Serialize>(
    settings: CreateSettings,
    config: &RawConfig,
) -> Result<Arc<DebugExporter<T>>, ComponentError> {
    let config: DebugExporterConfig = decode(config)?;
    Ok(Arc::new(DebugExporter {
        id: settings.id.to_string(),
        verbosity: config.verbosity,
        _signal: PhantomData,
    }))
}

impl ExporterFactory for DebugExporterFactory {
    fn create_metrics(
        &self,
        s: CreateSettings,
        c: &RawConfig,
    ) -> Result<Arc<dyn Exporter<Metrics>>, ComponentError> {
        Ok(build::<Metrics>(s, c)?)
    }
    fn create_logs(
        &self,
        s: CreateSettings,
        c: &RawConfig,
    ) -> Result<Arc<dyn Exporter<Logs>>, ComponentError> {
        Ok(build::<Logs>(s, c)?)
    }
    fn create_traces(
        &self,
        s: CreateSettings,
        c: &RawConfig,
    ) -> Result<Arc<dyn Exporter<Traces>>, ComponentError> {
        Ok(build::<Traces>(s, c)?)
    }
}

/// A `debug` exporter for one signal.
pub struct DebugExporter<T> {
    id: String,
    verbosity: Verbosity,
    _signal: PhantomData<fn(T)>,
}

impl<T> Lifecycle for DebugExporter<T> {}

#[async_trait]
impl<T: Payload + Serialize> Consumer<T> for DebugExporter<T> {
    async fn consume(&self, batch: Batch<T>) -> Result<(), ConsumerError> {
        let items = batch.data.item_count();
        let what = match T::SIGNAL {
            Signal::Metrics => "data points",
            Signal::Logs => "log records",
            Signal::Traces => "spans",
        };
        tracing::info!(exporter = %self.id, signal = %T::SIGNAL, items, "{} {what} received", items);
        if self.verbosity == Verbosity::Detailed {
            match serde_json::to_string(&batch.data) {
                Ok(json) => tracing::info!(exporter = %self.id, signal = %T::SIGNAL, "{json}"),
                Err(e) => {
                    tracing::warn!(exporter = %self.id, error = %e, "cannot render the batch as JSON")
                }
            }
        }
        Ok(())
    }
}

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories.exporter(DebugExporterFactory)
}
