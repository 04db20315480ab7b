//! The pipeline builder: turns a validated config into a running [`Service`].
//!
//! - one receiver instance per id, feeding every pipeline that lists it
//!   (fan-in is several receivers feeding one pipeline);
//! - one processor instance per (pipeline, id);
//! - one exporter instance per (id, signal), shared by that signal's
//!   pipelines; a pipeline with several exporters fans out to all;
//! - one connector instance per id: the exporter of the pipelines that list
//!   it under `exporters`, feeding those that list it under `receivers`;
//!   pipelines are built downstream first, so a connector exists only once
//!   everything it feeds does;
//! - start: extensions, then every component after everything downstream of
//!   it (exporters, processors last to first, connectors, …), receivers last;
//! - shutdown: health turns 503, then the exact reverse: receivers stop
//!   accepting and drain, processors flush downstream, exporters finish,
//!   extensions stop.

mod signal;
mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::component::{
    ComponentError, ComponentId, CreateSettings, Extension, Factories, Host, Kind, Lifecycle,
    Signal, SignalConsumers,
};
use crate::config::{CollectorConfig, ConfigError};
use crate::consumer::{fan_out, Consumer, ForgetReceived};
use crate::pdata::{Logs, Metrics, Traces};
use crate::server::{self, ServerHandle, ServerOptions};
use crate::status::{CollectorState, Status, StatusBoard};
use crate::telemetry::MetricsRegistry;
use signal::{AllBuilt, Built, SignalOps};
pub use validate::{no_effect_warnings, validate, PipelinePlan};

/// Why the service could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The config is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A factory refused to build a component.
    #[error("cannot create {kind} `{id}`: {source}")]
    Create {
        /// Kind of the component.
        kind: Kind,
        /// Its id.
        id: ComponentId,
        /// Why.
        source: ComponentError,
    },
    /// A component failed to start; everything started before it was shut down.
    #[error("cannot start {kind} `{id}`: {source}")]
    Start {
        /// Kind of the component.
        kind: Kind,
        /// Its id.
        id: ComponentId,
        /// Why.
        source: ComponentError,
    },
    /// The self-metrics endpoint could not listen.
    #[error("cannot serve self-metrics: {0}")]
    Telemetry(ComponentError),
}

struct Running {
    kind: Kind,
    id: ComponentId,
    component: Arc<dyn Lifecycle>,
}

struct Builder<'a> {
    config: &'a CollectorConfig,
    factories: &'a Factories,
    board: Arc<StatusBoard>,
    metrics: Arc<MetricsRegistry>,
    version: String,
    /// Pipelines that use each (kind, id), for the status board.
    membership: BTreeMap<(Kind, ComponentId), Vec<String>>,
    /// Everything built, in start order.
    order: Vec<Running>,
    /// Exporters and pipeline heads built so far, per signal.
    built: AllBuilt,
    /// Connectors built so far: what each offers the pipelines exporting to it.
    connectors: BTreeMap<ComponentId, SignalConsumers>,
}

impl Builder<'_> {
    fn settings(&self, kind: Kind, id: &ComponentId) -> CreateSettings {
        CreateSettings {
            id: id.clone(),
            metrics: self.metrics.clone(),
            status: self.board.reporter(kind, id.clone()),
            version: self.version.clone(),
        }
    }

    fn raw(&self, kind: Kind, id: &ComponentId) -> Result<&figment::value::Value, ServiceError> {
        validate::raw_config(self.config, kind, id).ok_or_else(|| {
            ServiceError::Config(ConfigError::invalid(
                format!("{}.{id}", kind.section()),
                "not configured",
            ))
        })
    }

    fn push(&mut self, kind: Kind, id: &ComponentId, component: Arc<dyn Lifecycle>) {
        let pipelines = self
            .membership
            .get(&(kind, id.clone()))
            .cloned()
            .unwrap_or_default();
        self.board.register(kind, id.clone(), pipelines);
        self.order.push(Running {
            kind,
            id: id.clone(),
            component,
        });
    }

    fn is_connector(&self, id: &ComponentId) -> bool {
        self.config.connectors.contains_key(&id.to_string())
    }

    /// The consumer connector `id` offers `T` pipelines, building the
    /// connector the first time (everything it feeds is built by then).
    fn connector_input<T: SignalOps>(
        &mut self,
        id: &ComponentId,
    ) -> Result<Arc<dyn Consumer<T>>, ServiceError> {
        if !self.connectors.contains_key(id) {
            let mut next = SignalConsumers::default();
            take_heads(&mut self.built, id, &mut next);
            let factory = self.factories.connectors.get(id.type_name()).cloned();
            let factory = factory.ok_or_else(|| missing(Kind::Connector, id))?;
            let raw = self.raw(Kind::Connector, id)?;
            let built = factory
                .create(self.settings(Kind::Connector, id), raw, next)
                .map_err(|source| ServiceError::Create {
                    kind: Kind::Connector,
                    id: id.clone(),
                    source,
                })?;
            self.push(Kind::Connector, id, built.component);
            self.connectors.insert(id.clone(), built.consumers);
        }
        let mut consumers = self.connectors.get(id).cloned().unwrap_or_default();
        T::slot(&mut consumers)
            .clone()
            .ok_or_else(|| ServiceError::Create {
                kind: Kind::Connector,
                id: id.clone(),
                source: ComponentError::Failed(format!(
                    "`{}` does not take {}",
                    id.type_name(),
                    T::SIGNAL
                )),
            })
    }

    /// Builds the exporters and processors of one `T` pipeline and records
    /// its head for each of its receivers (or connectors).
    fn build_pipeline<T: SignalOps>(&mut self, plan: &PipelinePlan) -> Result<(), ServiceError> {
        let mut outs = vec![];
        for id in &plan.exporters {
            if self.is_connector(id) {
                outs.push(self.connector_input::<T>(id)?);
                continue;
            }
            if let Some(e) = T::built(&mut self.built).exporters.get(id) {
                outs.push(e.clone());
                continue;
            }
            let factory = self.factories.exporters.get(id.type_name()).cloned();
            let factory = factory.ok_or_else(|| missing(Kind::Exporter, id))?;
            let raw = self.raw(Kind::Exporter, id)?;
            let exporter =
                T::create_exporter(factory.as_ref(), self.settings(Kind::Exporter, id), raw)
                    .map_err(|source| ServiceError::Create {
                        kind: Kind::Exporter,
                        id: id.clone(),
                        source,
                    })?;
            self.push(Kind::Exporter, id, exporter.clone());
            T::built(&mut self.built)
                .exporters
                .insert(id.clone(), exporter.clone());
            outs.push(exporter);
        }
        let mut next = fan_out(outs);
        for id in plan.processors.iter().rev() {
            let factory = self.factories.processors.get(id.type_name()).cloned();
            let factory = factory.ok_or_else(|| missing(Kind::Processor, id))?;
            let raw = self.raw(Kind::Processor, id)?;
            // What a processor that may change the data passes on never
            // carries the bytes of the request as it was received.
            if !factory.keeps_data() {
                next = Arc::new(ForgetReceived(next));
            }
            let processor = T::create_processor(
                factory.as_ref(),
                self.settings(Kind::Processor, id),
                raw,
                next,
            )
            .map_err(|source| ServiceError::Create {
                kind: Kind::Processor,
                id: id.clone(),
                source,
            })?;
            self.push(Kind::Processor, id, processor.clone());
            next = processor;
        }
        let heads = &mut T::built(&mut self.built).heads;
        for r in &plan.receivers {
            heads.entry(r.clone()).or_default().push(next.clone());
        }
        Ok(())
    }
}

fn missing(kind: Kind, id: &ComponentId) -> ServiceError {
    ServiceError::Config(ConfigError::invalid(
        format!("{}.{id}", kind.section()),
        format!("unknown {kind} type `{}`", id.type_name()),
    ))
}

/// Moves the pipeline heads recorded for receiver or connector `id`, of
/// every signal, into `consumers`.
fn take_heads(all: &mut AllBuilt, id: &ComponentId, consumers: &mut SignalConsumers) {
    fn one<T: SignalOps>(all: &mut AllBuilt, id: &ComponentId, consumers: &mut SignalConsumers) {
        let built: &mut Built<T> = T::built(all);
        if let Some(list) = built.heads.remove(id) {
            *T::slot(consumers) = Some(fan_out(list));
        }
    }
    one::<Metrics>(all, id, consumers);
    one::<Logs>(all, id, consumers);
    one::<Traces>(all, id, consumers);
}

/// A running collector: every component started, data flowing.
pub struct Service {
    board: Arc<StatusBoard>,
    metrics: Arc<MetricsRegistry>,
    host: Host,
    running: Vec<Running>,
    metrics_server: Option<ServerHandle>,
}

impl Service {
    /// Validates `config`, builds every component with `factories`, serves
    /// self-metrics and starts everything. `version` is the collector's.
    pub async fn start(
        config: &CollectorConfig,
        factories: &Factories,
        version: &str,
    ) -> Result<Service, ServiceError> {
        let plans = validate(config, factories)?;
        for line in no_effect_warnings(config, factories) {
            tracing::warn!("{line}");
        }
        let board = Arc::new(StatusBoard::new());
        let metrics = Arc::new(MetricsRegistry::default());
        let mut b = Builder {
            config,
            factories,
            board: board.clone(),
            metrics: metrics.clone(),
            version: version.to_string(),
            membership: BTreeMap::new(),
            order: vec![],
            built: AllBuilt::default(),
            connectors: BTreeMap::new(),
        };
        for plan in &plans {
            let all = [
                (Kind::Receiver, &plan.receivers),
                (Kind::Processor, &plan.processors),
                (Kind::Exporter, &plan.exporters),
            ];
            for (kind, ids) in all {
                for id in ids {
                    let kind = if kind != Kind::Processor && b.is_connector(id) {
                        Kind::Connector
                    } else {
                        kind
                    };
                    let entry = b.membership.entry((kind, id.clone())).or_default();
                    entry.push(format!("pipeline:{}", plan.id));
                }
            }
        }

        let mut extensions: BTreeMap<ComponentId, Arc<dyn Extension>> = BTreeMap::new();
        for name in &config.service.extensions {
            let id: ComponentId = name.parse().map_err(|e: crate::component::IdError| {
                ConfigError::invalid("service.extensions", e.to_string())
            })?;
            let factory = factories
                .extensions
                .get(id.type_name())
                .cloned()
                .ok_or_else(|| missing(Kind::Extension, &id))?;
            let ext = factory
                .create(
                    b.settings(Kind::Extension, &id),
                    b.raw(Kind::Extension, &id)?,
                )
                .map_err(|source| ServiceError::Create {
                    kind: Kind::Extension,
                    id: id.clone(),
                    source,
                })?;
            b.push(Kind::Extension, &id, ext.clone());
            extensions.insert(id, ext);
        }

        for i in validate::downstream_first(&plans, &config.connectors)? {
            let plan = &plans[i];
            match plan.signal {
                Signal::Metrics => b.build_pipeline::<Metrics>(plan)?,
                Signal::Logs => b.build_pipeline::<Logs>(plan)?,
                Signal::Traces => b.build_pipeline::<Traces>(plan)?,
            }
        }
        let mut receiver_ids: Vec<ComponentId> = plans
            .iter()
            .flat_map(|p| p.receivers.clone())
            .filter(|id| !b.is_connector(id))
            .collect();
        receiver_ids.sort();
        receiver_ids.dedup();
        for id in &receiver_ids {
            let mut next = SignalConsumers::default();
            take_heads(&mut b.built, id, &mut next);
            let factory = factories
                .receivers
                .get(id.type_name())
                .cloned()
                .ok_or_else(|| missing(Kind::Receiver, id))?;
            let receiver = factory
                .create(
                    b.settings(Kind::Receiver, id),
                    b.raw(Kind::Receiver, id)?,
                    next,
                )
                .map_err(|source| ServiceError::Create {
                    kind: Kind::Receiver,
                    id: id.clone(),
                    source,
                })?;
            b.push(Kind::Receiver, id, receiver);
        }

        metrics
            .gauge(
                "otelcol_build_info",
                "The collector's version (service.version), as a label.",
                &[("service_version", version)],
            )
            .set(1);
        let host = Host::new(extensions, board.clone());
        let metrics_server = match config.service.telemetry.metrics.listen_address()? {
            Some(addr) => {
                let listener = server::bind(&addr).await.map_err(ServiceError::Telemetry)?;
                let registry = metrics.clone();
                tracing::info!(address = %addr, "serving self-metrics at /metrics");
                Some(server::serve(
                    listener,
                    ServerOptions::default(),
                    move |req, _| {
                        let registry = registry.clone();
                        async move {
                            if req.uri().path() == "/metrics" {
                                server::response(
                                    http::StatusCode::OK,
                                    "text/plain; version=0.0.4",
                                    registry.render(),
                                )
                            } else {
                                server::response(
                                    http::StatusCode::NOT_FOUND,
                                    "text/plain",
                                    "not found",
                                )
                            }
                        }
                    },
                ))
            }
            None => None,
        };

        let mut service = Service {
            board,
            metrics,
            host,
            running: vec![],
            metrics_server,
        };
        for r in b.order {
            tracing::debug!(kind = %r.kind, id = %r.id, "starting");
            service.board.report(r.kind, &r.id, Status::Starting);
            if let Err(source) = r.component.start(&service.host).await {
                service
                    .board
                    .report(r.kind, &r.id, Status::FatalError(source.to_string()));
                service.shutdown().await;
                return Err(ServiceError::Start {
                    kind: r.kind,
                    id: r.id,
                    source,
                });
            }
            service.board.report(r.kind, &r.id, Status::Ok);
            service.running.push(r);
        }
        service.board.set_state(CollectorState::Running);
        tracing::info!(
            components = service.running.len(),
            "everything is ready; data may flow"
        );
        Ok(service)
    }

    /// Component and collector status, as health extensions see it.
    pub fn status(&self) -> &Arc<StatusBoard> {
        &self.board
    }

    /// The self-metrics registry.
    pub fn metrics(&self) -> &Arc<MetricsRegistry> {
        &self.metrics
    }

    /// The address self-metrics are served on, when served.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics_server.as_ref().map(|s| s.local_addr())
    }

    /// Shuts everything down in reverse start order; health answers 503 from
    /// the first step on. Errors are logged, and shutdown goes on.
    pub async fn shutdown(&mut self) {
        self.board.set_state(CollectorState::ShuttingDown);
        while let Some(r) = self.running.pop() {
            tracing::debug!(kind = %r.kind, id = %r.id, "shutting down");
            self.board.report(r.kind, &r.id, Status::Stopping);
            if let Err(e) = r.component.shutdown().await {
                tracing::error!(kind = %r.kind, id = %r.id, error = %e, "shutdown failed");
            }
            self.board.report(r.kind, &r.id, Status::Stopped);
        }
        if let Some(s) = self.metrics_server.take() {
            s.shutdown().await;
        }
        self.board.set_state(CollectorState::Stopped);
    }
}
