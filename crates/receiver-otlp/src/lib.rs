//! The `otlp` receiver: OTLP over gRPC (`:4317`) and HTTP (`:4318`) for
//! metrics, logs and traces, config-compatible with the Go collector's.
//!
//! Embedding without the collector:
//!
//! ```no_run
//! use std::sync::Arc;
//! use otelcol_core::component::{CreateSettings, Factory, Host, Kind, ReceiverFactory, SignalConsumers};
//! use otelcol_core::ComponentId;
//! use otelcol_receiver_otlp::OtlpReceiverFactory;
//!
//! # async fn run(metrics: Arc<dyn otelcol_core::Consumer<otelcol_core::pdata::Metrics>>) -> Result<(), Box<dyn std::error::Error>> {
//! let config: otelcol_core::config::RawConfig =
//!     serde_yaml::from_str("protocols: {http: {endpoint: '127.0.0.1:4318'}}")?;
//! let settings = CreateSettings::standalone(ComponentId::new("otlp"), Kind::Receiver);
//! let next = SignalConsumers { metrics: Some(metrics), ..Default::default() };
//! let receiver = OtlpReceiverFactory.create(settings, &config, next)?;
//! receiver.start(&Host::new(Default::default(), Default::default())).await?;
//! # Ok(()) }
//! ```

mod budget;
pub mod config;
pub mod cors;
pub mod decode;
pub use otelcol_core::pdata::depth;
mod grpc;
mod grpc_conn;
mod http;
pub mod json;
pub mod json_fast;
mod signal;
pub mod status;

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use otelcol_core::component::NoEffectKey;
use otelcol_core::component::{
    ComponentError, CreateSettings, Factory, Host, Lifecycle, ReceiverFactory, ServerAuthenticator,
    SignalConsumers,
};
use otelcol_core::config::{decode as decode_config, ConfigError, RawConfig};
use otelcol_core::server::ServerHandle;
use otelcol_core::{ComponentId, Signal, Stability};

pub use config::OtlpReceiverConfig;
use signal::{DiscardWarnings, Sinks};

/// The factory for type `otlp`.
#[derive(Clone, Copy, Debug, Default)]
pub struct OtlpReceiverFactory;

impl Factory for OtlpReceiverFactory {
    fn type_name(&self) -> &'static str {
        "otlp"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode_config::<OtlpReceiverConfig>(config)?.validate()
    }
    fn no_effect_keys(&self) -> Vec<NoEffectKey> {
        let mut keys = otelcol_core::tls::no_effect_keys("protocols.*.tls.");
        keys.extend(
            [
                ("protocols.grpc.read_buffer_size", "tonic sizes its connection buffers itself"),
                ("protocols.grpc.write_buffer_size", "tonic sizes its connection buffers itself"),
                ("protocols.grpc.keepalive.enforcement_policy.min_time", "this server answers client pings without policing their rate"),
                ("protocols.grpc.keepalive.enforcement_policy.permit_without_stream", "this server answers client pings without policing their rate"),
                ("protocols.*.middlewares", "this build has no middleware extension types"),
                ("protocols.*.auth.request_params", "the authenticators here read headers only"),
                ("protocols.http.write_timeout", "a response is written once the pipeline has answered; cutting a request off before that would make its sender resend data the pipeline may already hold (a duplicate total)"),
                ("protocols.http.idle_timeout", "a kept-alive connection waiting for its next request is closed after read_header_timeout"),
            ]
            .map(|(path, why)| NoEffectKey::new(path, why)),
        );
        keys
    }
}

impl ReceiverFactory for OtlpReceiverFactory {
    fn create(
        &self,
        settings: CreateSettings,
        config: &RawConfig,
        next: SignalConsumers,
    ) -> Result<Arc<dyn Lifecycle>, ComponentError> {
        let config: OtlpReceiverConfig = decode_config(config)?;
        config.validate()?;
        Ok(Arc::new(OtlpReceiver::new(settings, config, next)))
    }
}

/// A running `otlp` receiver.
pub struct OtlpReceiver {
    settings: CreateSettings,
    config: OtlpReceiverConfig,
    next: SignalConsumers,
    discard_warnings: DiscardWarnings,
    http: Mutex<Option<ServerHandle>>,
    grpc: Mutex<Option<grpc::GrpcServer>>,
}

impl OtlpReceiver {
    /// A receiver that will feed `next` once started.
    pub fn new(
        settings: CreateSettings,
        config: OtlpReceiverConfig,
        next: SignalConsumers,
    ) -> Self {
        Self {
            settings,
            config,
            next,
            discard_warnings: DiscardWarnings::default(),
            http: Mutex::new(None),
            grpc: Mutex::new(None),
        }
    }

    /// The address the HTTP server listens on, once started.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|h| h.local_addr())
    }

    /// The address the gRPC server listens on, once started.
    pub fn grpc_addr(&self) -> Option<std::net::SocketAddr> {
        self.grpc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|g| g.local_addr)
    }
}

fn authenticator(
    host: &Host,
    auth: &Option<config::AuthConfig>,
) -> Result<Option<Arc<dyn ServerAuthenticator>>, ComponentError> {
    let Some(auth) = auth else { return Ok(None) };
    let id: ComponentId = auth
        .authenticator
        .parse()
        .map_err(|e: otelcol_core::component::IdError| ComponentError::Failed(e.to_string()))?;
    host.authenticator(&id).map(Some)
}

#[async_trait]
impl Lifecycle for OtlpReceiver {
    async fn start(&self, host: &Host) -> Result<(), ComponentError> {
        let id = self.settings.id.to_string();
        if let Some(cfg) = &self.config.protocols.grpc {
            let sinks = Sinks::new(
                &self.settings,
                &self.next,
                &self.discard_warnings,
                &id,
                "grpc",
            );
            let budget = budget::Budget::new(
                cfg.inflight_bytes(),
                "protocols.grpc.max_inflight_bytes",
                &self.settings,
                "grpc",
            );
            let server = grpc::start(cfg, sinks, authenticator(host, &cfg.auth)?, budget).await?;
            tracing::info!(receiver = %id, endpoint = %server.local_addr, "OTLP/gRPC listening");
            *self.grpc.lock().unwrap_or_else(PoisonError::into_inner) = Some(server);
        }
        if let Some(cfg) = &self.config.protocols.http {
            let sinks = Sinks::new(
                &self.settings,
                &self.next,
                &self.discard_warnings,
                &id,
                "http",
            );
            let budget = budget::Budget::new(
                cfg.inflight_bytes(),
                "protocols.http.max_inflight_bytes",
                &self.settings,
                "http",
            );
            let server = http::start(cfg, sinks, authenticator(host, &cfg.auth)?, budget).await?;
            tracing::info!(receiver = %id, endpoint = %server.local_addr(), "OTLP/HTTP listening");
            *self.http.lock().unwrap_or_else(PoisonError::into_inner) = Some(server);
        }
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let http = self
            .http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let grpc = self
            .grpc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = http {
            h.shutdown().await;
        }
        if let Some(g) = grpc {
            g.shutdown().await;
        }
        Ok(())
    }
}

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories.receiver(OtlpReceiverFactory)
}
