//! The `multitudes` exporter: totals (and logs) to the Multitudes ingestion
//! endpoint as the Go exporter sent them: `POST {endpoint}/v1/metrics` and
//! `/v1/logs`, OTLP/JSON (or protobuf), `Authorization: Bearer <token>` with
//! the caller's own token when the receiver captured one, else
//! `fallback_token`, and `Idempotency-Key: <request id>`, repeated by every
//! retry and by every resend after a restart. Tokens appear in logs only as
//! their first four characters and `***`; URLs without passwords or query
//! values.
//!
//! This crate is the [`Push`](otelcol_core::exporter::Push): the body, the
//! headers and which answers retry (connection errors, timeouts and 408,
//! 429, 500, 502, 503, 504, with `Retry-After` honoured). Queue, retries,
//! timeout, size split and the `otelcol_exporter_*` counters come from
//! [`otelcol_core::exporter::QueuedExporter`].

pub mod config;
mod push;

use std::sync::Arc;

use otelcol_core::component::{
    ComponentError, CreateSettings, Exporter, ExporterFactory, Factory, NoEffectKey,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::exporter::{ExporterSettings, QueuedExporter};
use otelcol_core::pdata::{Logs, Metrics};
use otelcol_core::{Signal, Stability};

pub use config::MultitudesExporterConfig;
pub use push::{MultitudesPush, Wire};

/// A `multitudes` exporter for one signal.
pub type MultitudesExporter<T> = QueuedExporter<T, MultitudesPush>;

/// The factory for type `multitudes`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MultitudesExporterFactory;

impl Factory for MultitudesExporterFactory {
    fn type_name(&self) -> &'static str {
        "multitudes"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Metrics, Signal::Logs]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode::<MultitudesExporterConfig>(config)?.validate()
    }
    fn no_effect_keys(&self) -> Vec<NoEffectKey> {
        otelcol_core::exporter::QueueBatchConfig::no_effect_keys()
    }
}

fn build<T: Wire>(
    settings: CreateSettings,
    raw: &RawConfig,
    signal: Signal,
) -> Result<Arc<MultitudesExporter<T>>, ComponentError> {
    let config: MultitudesExporterConfig = decode(raw)?;
    config.validate()?;
    let id = settings.id.to_string();
    let url = config.url(T::PATH)?;
    let helper = ExporterSettings::new(
        config.sending_queue.clone(),
        config.retry_on_failure.clone(),
        config.timeout,
    );
    let push = MultitudesPush::new(id.clone(), config, url, &settings.metrics)
        .map_err(ComponentError::Failed)?;
    if !push.has_fallback() {
        tracing::warn!(
            exporter = %id,
            "no fallback_token is set: batches from callers without their own bearer token will be dropped"
        );
    }
    Ok(Arc::new(QueuedExporter::new(
        &settings, signal, helper, push,
    )?))
}

impl ExporterFactory for MultitudesExporterFactory {
    fn create_metrics(
        &self,
        s: CreateSettings,
        c: &RawConfig,
    ) -> Result<Arc<dyn Exporter<Metrics>>, ComponentError> {
        Ok(build::<Metrics>(s, c, Signal::Metrics)?)
    }
    fn create_logs(
        &self,
        s: CreateSettings,
        c: &RawConfig,
    ) -> Result<Arc<dyn Exporter<Logs>>, ComponentError> {
        Ok(build::<Logs>(s, c, Signal::Logs)?)
    }
}

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories.exporter(MultitudesExporterFactory)
}
