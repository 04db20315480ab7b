//! The `otlp` (OTLP/gRPC) and `otlphttp` (OTLP/HTTP) exporters, with the
//! Go exporters' keys: to another collector (a second tier of
//! aggregators behind a gateway, say) or any OTLP backend.
//!
//! Each is a [`Push`](otelcol_core::exporter::Push) on the core exporter
//! helper ([`otelcol_core::exporter::QueuedExporter`]), which brings
//! `sending_queue` (memory or persistent), `retry_on_failure`, `timeout`
//! and the `otelcol_exporter_*` counters. What is this crate's own:
//! - the request: protobuf (or JSON for `otlphttp`), gzip by default,
//!   `headers`, and the headers of the client authenticator that
//!   `auth.authenticator` names (`headers_setter` forwarding the caller's
//!   bearer token, so a second tier sends each client's data under its
//!   own token; `bearertokenauth` with a token of its own);
//! - the answer: the OTLP spec's retryable statuses (HTTP 408, 429, 500,
//!   502, 503, 504 with `Retry-After`; gRPC `UNAVAILABLE`, `CANCELLED`,
//!   `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `DATA_LOSS`, and
//!   `RESOURCE_EXHAUSTED` with `RetryInfo`), partial-success answers
//!   counted in `otelcol_exporter_partial_rejected_items`.
//!
//! [`http::HttpSender`] and [`wire`] are also the `multitudes` exporter's.
//!
//! ```
//! use otelcol_exporter_otlp::config::OtlpHttpConfig;
//! let c: OtlpHttpConfig = serde_yaml::from_str("endpoint: http://aggregator:4318").unwrap();
//! c.validate().unwrap();
//! assert_eq!(c.url("/v1/metrics").unwrap().as_str(), "http://aggregator:4318/v1/metrics");
//! ```

pub mod config;
pub mod grpc;
pub mod http;
pub mod wire;

pub use grpc::OtlpGrpcPush;
pub use http::OtlpHttpPush;

use std::sync::Arc;

use otelcol_core::component::{
    ComponentError, CreateSettings, Exporter, ExporterFactory, Factory, NoEffectKey,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::exporter::{ExporterSettings, QueuedExporter};
use otelcol_core::pdata::{Logs, Metrics, Traces};
use otelcol_core::{Signal, Stability};

use config::{OtlpGrpcConfig, OtlpHttpConfig};
use http::{AuthSlot, HttpOptions, HttpSender};
use wire::Wire;

fn failed(id: &impl std::fmt::Display) -> impl Fn(String) -> ComponentError + '_ {
    move |e| ComponentError::Failed(format!("exporter {id}: {e}"))
}

/// An `otlp` exporter for one signal.
pub type OtlpGrpcExporter<T> = QueuedExporter<T, OtlpGrpcPush>;

/// An `otlp` exporter of signal `T` with a validated config, sending
/// `extra` metadata too when given (how the `loadbalancing` exporter builds
/// one per backend).
pub fn grpc_exporter<T: Wire>(
    s: &CreateSettings,
    c: &OtlpGrpcConfig,
    extra: Option<grpc::MetadataSource>,
) -> Result<Arc<OtlpGrpcExporter<T>>, ComponentError> {
    let helper = ExporterSettings::new(
        c.sending_queue.clone(),
        c.retry_on_failure.clone(),
        c.timeout,
    );
    let mut push = OtlpGrpcPush::new(s.id.to_string(), c, &s.metrics).map_err(failed(&s.id))?;
    if let Some(extra) = extra {
        push = push.with_metadata(extra);
    }
    Ok(Arc::new(QueuedExporter::new(s, T::KIND, helper, push)?))
}

fn build_grpc<T: Wire>(
    s: CreateSettings,
    raw: &RawConfig,
) -> Result<Arc<OtlpGrpcExporter<T>>, ComponentError> {
    let c: OtlpGrpcConfig = decode(raw)?;
    c.validate()?;
    grpc_exporter(&s, &c, None)
}

fn build_http<T: Wire>(
    s: CreateSettings,
    raw: &RawConfig,
) -> Result<Arc<QueuedExporter<T, OtlpHttpPush>>, ComponentError> {
    let c: OtlpHttpConfig = decode(raw)?;
    c.validate()?;
    let helper = ExporterSettings::new(
        c.sending_queue.clone(),
        c.retry_on_failure.clone(),
        c.timeout,
    );
    let options = HttpOptions {
        format: c.encoding,
        compression: c.compression,
        headers: c.headers.clone(),
        tls: c.tls.clone(),
        idle_timeout: c.idle_conn_timeout,
        max_idle_per_host: c.max_idle_conns_per_host,
    };
    let sender = HttpSender::new(s.id.to_string(), c.url(T::PATH)?, options, &s.metrics)
        .map_err(failed(&s.id))?;
    let push = OtlpHttpPush::new(sender, AuthSlot::new(c.auth.id()?));
    Ok(Arc::new(QueuedExporter::new(&s, T::KIND, helper, push)?))
}

macro_rules! factory {
    ($(#[$doc:meta])* $name:ident, $type_name:literal, $config:ty, $build:ident) => {
        $(#[$doc])*
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
                &[Signal::Traces, Signal::Metrics, Signal::Logs]
            }
            fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
                decode::<$config>(config)?.validate()
            }
            fn no_effect_keys(&self) -> Vec<NoEffectKey> {
                <$config>::no_effect_keys()
            }
        }

        impl ExporterFactory for $name {
            fn create_metrics(
                &self,
                s: CreateSettings,
                c: &RawConfig,
            ) -> Result<Arc<dyn Exporter<Metrics>>, ComponentError> {
                Ok($build::<Metrics>(s, c)?)
            }
            fn create_logs(
                &self,
                s: CreateSettings,
                c: &RawConfig,
            ) -> Result<Arc<dyn Exporter<Logs>>, ComponentError> {
                Ok($build::<Logs>(s, c)?)
            }
            fn create_traces(
                &self,
                s: CreateSettings,
                c: &RawConfig,
            ) -> Result<Arc<dyn Exporter<Traces>>, ComponentError> {
                Ok($build::<Traces>(s, c)?)
            }
        }
    };
}

factory!(
    /// The factory for type `otlp` (OTLP/gRPC).
    OtlpGrpcExporterFactory,
    "otlp",
    OtlpGrpcConfig,
    build_grpc
);
factory!(
    /// The factory for type `otlphttp` (OTLP/HTTP).
    OtlpHttpExporterFactory,
    "otlphttp",
    OtlpHttpConfig,
    build_http
);

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories
        .exporter(OtlpGrpcExporterFactory)
        .exporter(OtlpHttpExporterFactory)
}
