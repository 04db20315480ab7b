//! Components: their ids, factories and lifecycle, and the [`Host`] they see.
//!
//! Each component type is a factory (`type` name, stability, supported
//! signals, config check, constructor) plus a config struct decoded with
//! [`crate::config::decode`] plus a small implementation.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::config::{ConfigError, RawConfig};
use crate::consumer::{AuthData, Consumer};
use crate::pdata::{Logs, Metrics, Traces};
use crate::status::{StatusBoard, StatusReporter};
use crate::telemetry::MetricsRegistry;

/// A component's id in the config: `type` or `type/name`, e.g. `otlp/internal`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentId {
    type_name: String,
    name: Option<String>,
}

/// Why a component id does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid component id `{id}`: {reason}")]
pub struct IdError {
    id: String,
    reason: &'static str,
}

impl ComponentId {
    /// The id `type_name` with no name.
    pub fn new(type_name: impl Into<String>) -> Self {
        Self {
            type_name: type_name.into(),
            name: None,
        }
    }
    /// The type part: the factory that builds this component.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }
    /// The name part after `/`, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl FromStr for ComponentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let err = |reason| IdError {
            id: s.to_string(),
            reason,
        };
        let (type_name, name) = match s.split_once('/') {
            Some((t, n)) => (t.trim(), Some(n.trim())),
            None => (s.trim(), None),
        };
        if type_name.is_empty() {
            return Err(err("the type part is empty"));
        }
        if !type_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(err("the type may hold only letters, digits and `_`"));
        }
        match name {
            Some("") => Err(err("the name after `/` is empty")),
            Some(n) if n.contains('/') => Err(err("only one `/` is allowed")),
            _ => Ok(Self {
                type_name: type_name.to_string(),
                name: name.map(str::to_string),
            }),
        }
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.type_name, n),
            None => f.write_str(&self.type_name),
        }
    }
}

/// The kinds of component, named as in the config's top-level sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Brings data in.
    Receiver,
    /// Transforms data inside a pipeline.
    Processor,
    /// Sends data out.
    Exporter,
    /// Runs beside the pipelines (health, auth).
    Extension,
    /// The exporter of some pipelines and the receiver of others
    /// (possibly of another signal), e.g. log events to metric points.
    Connector,
}

impl Kind {
    /// The config section of this kind: `receivers`, `processors`, …
    pub fn section(self) -> &'static str {
        match self {
            Kind::Receiver => "receivers",
            Kind::Processor => "processors",
            Kind::Exporter => "exporters",
            Kind::Extension => "extensions",
            Kind::Connector => "connectors",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Receiver => "receiver",
            Kind::Processor => "processor",
            Kind::Exporter => "exporter",
            Kind::Extension => "extension",
            Kind::Connector => "connector",
        })
    }
}

/// The three OTLP signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// Metrics.
    Metrics,
    /// Logs.
    Logs,
    /// Traces.
    Traces,
}

impl Signal {
    /// Every signal, in config order.
    pub const ALL: [Signal; 3] = [Signal::Metrics, Signal::Logs, Signal::Traces];
    /// The lower-case name used in pipeline ids and URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Traces => "traces",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How settled a component is, as the Go collector labels them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stability {
    /// Being built; config may change.
    Development,
    /// Usable; config may change with notice.
    Alpha,
    /// Config is stable; behaviour may still be tuned.
    Beta,
    /// Stable.
    Stable,
}

/// Why a component could not be built, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// An I/O operation failed (binding a port, reading a file).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `binding 127.0.0.1:4317`.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The config decoded but cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Anything else, described.
    #[error("{0}")]
    Failed(String),
}

/// Start and shutdown, for every component.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Called once before any data flows; bind ports and spawn tasks here.
    async fn start(&self, _host: &Host) -> Result<(), ComponentError> {
        Ok(())
    }
    /// Called once at shutdown. Receivers stop accepting and wait for
    /// in-flight requests; processors flush what they hold downstream;
    /// exporters finish or persist what they hold.
    async fn shutdown(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

/// A processor: a consumer in the middle of a pipeline with a lifecycle.
pub trait Processor<T: Send + 'static>: Consumer<T> + Lifecycle {}
impl<T: Send + 'static, P: Consumer<T> + Lifecycle> Processor<T> for P {}

/// An exporter: the consumer at the end of a pipeline, with a lifecycle.
pub trait Exporter<T: Send + 'static>: Consumer<T> + Lifecycle {}
impl<T: Send + 'static, E: Consumer<T> + Lifecycle> Exporter<T> for E {}

/// Authenticates incoming requests for a receiver (`auth.authenticator`).
pub trait ServerAuthenticator: Send + Sync {
    /// Accepts the request and says who sent it, or refuses it. `headers`
    /// are the HTTP headers or the gRPC metadata of the request.
    fn authenticate(&self, headers: &http::HeaderMap) -> Result<AuthData, AuthError>;
}

/// Adds credentials to outgoing requests for an exporter
/// (`auth.authenticator` of a client): the Go collector's client
/// authenticators (`bearertokenauth` with its own token, `headers_setter`
/// forwarding the caller's).
pub trait ClientAuthenticator: Send + Sync {
    /// The headers (lower-case names) to set on a request that carries
    /// `caller`'s token (when its receiver's authenticator captured one).
    fn headers(
        &self,
        caller: Option<&crate::consumer::BearerToken>,
    ) -> Vec<(http::HeaderName, http::HeaderValue)>;
}

/// A request refused by an authenticator (HTTP 401, gRPC Unauthenticated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed: {0}")]
pub struct AuthError(pub String);

/// An extension: runs beside the pipelines; may offer capabilities.
pub trait Extension: Lifecycle {
    /// This extension as a server authenticator, if it is one.
    fn server_authenticator(self: Arc<Self>) -> Option<Arc<dyn ServerAuthenticator>> {
        None
    }
    /// This extension as a client authenticator, if it is one.
    fn client_authenticator(self: Arc<Self>) -> Option<Arc<dyn ClientAuthenticator>> {
        None
    }
    /// This extension as a storage provider, if it is one.
    fn storage(self: Arc<Self>) -> Option<Arc<dyn crate::storage::StorageExtension>> {
        None
    }
    /// This extension as an encoding, if it is one.
    fn encoding(self: Arc<Self>) -> Option<Arc<dyn crate::encoding::Encoding>> {
        None
    }
}

/// What a component can reach while it runs.
#[derive(Clone)]
pub struct Host {
    extensions: Arc<BTreeMap<ComponentId, Arc<dyn Extension>>>,
    status: Arc<StatusBoard>,
}

impl Host {
    /// A host over started extensions and a status board.
    pub fn new(
        extensions: BTreeMap<ComponentId, Arc<dyn Extension>>,
        status: Arc<StatusBoard>,
    ) -> Self {
        Self {
            extensions: Arc::new(extensions),
            status,
        }
    }
    /// The extension configured under `id`, if it runs.
    pub fn extension(&self, id: &ComponentId) -> Option<Arc<dyn Extension>> {
        self.extensions.get(id).cloned()
    }
    /// What extension `id` offers as `what` (read by `offer`), or an error
    /// saying why it offers nothing of the kind.
    fn offered<C: ?Sized>(
        &self,
        id: &ComponentId,
        what: &str,
        offer: impl FnOnce(Arc<dyn Extension>) -> Option<Arc<C>>,
    ) -> Result<Arc<C>, ComponentError> {
        let ext = self.extension(id).ok_or_else(|| {
            ComponentError::Failed(format!(
                "{what} `{id}` is not a configured extension listed in service.extensions"
            ))
        })?;
        let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        offer(ext).ok_or_else(|| {
            ComponentError::Failed(format!(
                "extension `{id}` is not {article} {what} extension"
            ))
        })
    }
    /// The authenticator extension `id`, or an error saying why it is not one.
    pub fn authenticator(
        &self,
        id: &ComponentId,
    ) -> Result<Arc<dyn ServerAuthenticator>, ComponentError> {
        self.offered(id, "authenticator", |e| e.server_authenticator())
    }
    /// The client authenticator extension `id`, or an error saying why it is not one.
    pub fn client_authenticator(
        &self,
        id: &ComponentId,
    ) -> Result<Arc<dyn ClientAuthenticator>, ComponentError> {
        self.offered(id, "client authenticator", |e| e.client_authenticator())
    }
    /// The storage extension `id`, or an error saying why it is not one.
    pub fn storage(
        &self,
        id: &ComponentId,
    ) -> Result<Arc<dyn crate::storage::StorageExtension>, ComponentError> {
        self.offered(id, "storage", |e| e.storage())
    }
    /// The encoding extension `id`, or an error saying why it is not one.
    pub fn encoding(
        &self,
        id: &ComponentId,
    ) -> Result<Arc<dyn crate::encoding::Encoding>, ComponentError> {
        self.offered(id, "encoding", |e| e.encoding())
    }
    /// The status of every component, for health extensions.
    pub fn status(&self) -> &Arc<StatusBoard> {
        &self.status
    }
}

/// What a factory gets to build one component instance.
#[derive(Clone)]
pub struct CreateSettings {
    /// The instance's id.
    pub id: ComponentId,
    /// Where its self-metrics go.
    pub metrics: Arc<MetricsRegistry>,
    /// Reports its health to the status board.
    pub status: StatusReporter,
    /// The collector's version (the `VERSION` file).
    pub version: String,
}

impl CreateSettings {
    /// Settings for a component outside a collector (tests, embedding).
    pub fn standalone(id: ComponentId, kind: Kind) -> Self {
        let board = Arc::new(StatusBoard::new());
        Self {
            status: board.reporter(kind, id.clone()),
            id,
            metrics: Arc::new(MetricsRegistry::default()),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The consumers a receiver feeds: one per signal its pipelines carry.
#[derive(Clone, Default)]
pub struct SignalConsumers {
    /// Head of the metrics pipelines that list this receiver.
    pub metrics: Option<Arc<dyn Consumer<Metrics>>>,
    /// Head of the logs pipelines that list this receiver.
    pub logs: Option<Arc<dyn Consumer<Logs>>>,
    /// Head of the traces pipelines that list this receiver.
    pub traces: Option<Arc<dyn Consumer<Traces>>>,
}

/// A key of a component's config that the Go component has and that is
/// accepted here with no effect (see [`Factory::no_effect_keys`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoEffectKey {
    /// Where the key sits in the component's config, `.`-separated; a `*`
    /// segment matches any map key or list element
    /// (`protocols.*.tls.reload_interval`).
    pub path: String,
    /// Why it has no effect here: the warning reads
    /// "`<path>` has no effect here: <why>".
    pub why: &'static str,
}

impl NoEffectKey {
    /// The key at `path`, ignored because `why`.
    pub fn new(path: impl Into<String>, why: &'static str) -> Self {
        Self {
            path: path.into(),
            why,
        }
    }
}

/// What every factory says about itself.
pub trait Factory: Send + Sync {
    /// The `type` in component ids, e.g. `otlp`.
    fn type_name(&self) -> &'static str;
    /// How settled the component is.
    fn stability(&self) -> Stability;
    /// The signals it handles (ignored for extensions).
    fn signals(&self) -> &'static [Signal];
    /// Decodes and checks a config without building anything, so that
    /// `validate` and start-up report every config error before data flows.
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError>;
    /// The Go keys this component accepts and ignores, each with the
    /// reason. The service warns once at start for every one a config sets
    /// and `validate` prints the same lines, so a Go config runs unchanged
    /// and no key is ignored silently (`docs/compatibility.md` lists them).
    fn no_effect_keys(&self) -> Vec<NoEffectKey> {
        Vec::new()
    }
}

fn unsupported<T>(type_name: &str, signal: Signal) -> Result<T, ComponentError> {
    Err(ComponentError::Failed(format!(
        "`{type_name}` does not support {signal}"
    )))
}

/// Builds receivers. One instance serves every pipeline that lists it.
pub trait ReceiverFactory: Factory {
    /// Builds the receiver feeding `next`.
    fn create(
        &self,
        settings: CreateSettings,
        config: &RawConfig,
        next: SignalConsumers,
    ) -> Result<Arc<dyn Lifecycle>, ComponentError>;
}

/// Builds processors: one instance per pipeline that lists it.
pub trait ProcessorFactory: Factory {
    /// Whether the processor passes every batch on with its data unchanged
    /// (it may hold, refuse or drop a batch). `false`, the default, makes
    /// the pipeline clear [`Batch::received`](crate::consumer::Batch::received)
    /// on what it passes on, so the bytes never outlive a change to the data.
    fn keeps_data(&self) -> bool {
        false
    }
    /// Builds a metrics processor feeding `next`.
    fn create_metrics(
        &self,
        _settings: CreateSettings,
        _config: &RawConfig,
        _next: Arc<dyn Consumer<Metrics>>,
    ) -> Result<Arc<dyn Processor<Metrics>>, ComponentError> {
        unsupported(self.type_name(), Signal::Metrics)
    }
    /// Builds a logs processor feeding `next`.
    fn create_logs(
        &self,
        _settings: CreateSettings,
        _config: &RawConfig,
        _next: Arc<dyn Consumer<Logs>>,
    ) -> Result<Arc<dyn Processor<Logs>>, ComponentError> {
        unsupported(self.type_name(), Signal::Logs)
    }
    /// Builds a traces processor feeding `next`.
    fn create_traces(
        &self,
        _settings: CreateSettings,
        _config: &RawConfig,
        _next: Arc<dyn Consumer<Traces>>,
    ) -> Result<Arc<dyn Processor<Traces>>, ComponentError> {
        unsupported(self.type_name(), Signal::Traces)
    }
}

/// Builds exporters: one instance per signal, shared by that signal's pipelines.
pub trait ExporterFactory: Factory {
    /// Builds a metrics exporter.
    fn create_metrics(
        &self,
        _settings: CreateSettings,
        _config: &RawConfig,
    ) -> Result<Arc<dyn Exporter<Metrics>>, ComponentError> {
        unsupported(self.type_name(), Signal::Metrics)
    }
    /// Builds a logs exporter.
    fn create_logs(
        &self,
        _settings: CreateSettings,
        _config: &RawConfig,
    ) -> Result<Arc<dyn Exporter<Logs>>, ComponentError> {
        unsupported(self.type_name(), Signal::Logs)
    }
    /// Builds a traces exporter.
    fn create_traces(
        &self,
        _settings: CreateSettings,
        _config: &RawConfig,
    ) -> Result<Arc<dyn Exporter<Traces>>, ComponentError> {
        unsupported(self.type_name(), Signal::Traces)
    }
}

/// A connector as built: its lifecycle, and the consumer it offers each
/// signal it takes (the tail of the pipelines that list it as an exporter).
pub struct Connector {
    /// Started after, and shut down before, the pipelines it feeds.
    pub component: Arc<dyn Lifecycle>,
    /// What the pipelines that export to it hand their batches to, per signal.
    pub consumers: SignalConsumers,
}

/// Builds connectors: one instance per id, serving every pipeline that
/// lists it on either side.
pub trait ConnectorFactory: Factory {
    /// The `(from, to)` signal pairs it joins: `from` is the signal of a
    /// pipeline that lists it as an exporter, `to` the signal of a pipeline
    /// that lists it as a receiver (`(Logs, Metrics)`: events in, points out).
    fn pairs(&self) -> &'static [(Signal, Signal)];
    /// Builds the connector feeding `next`: the heads of the pipelines that
    /// list it as a receiver, per signal.
    fn create(
        &self,
        settings: CreateSettings,
        config: &RawConfig,
        next: SignalConsumers,
    ) -> Result<Connector, ComponentError>;
}

/// Builds extensions.
pub trait ExtensionFactory: Factory {
    /// Builds the extension.
    fn create(
        &self,
        settings: CreateSettings,
        config: &RawConfig,
    ) -> Result<Arc<dyn Extension>, ComponentError>;
}

/// The component types a build contains, by kind and type name.
#[derive(Clone, Default)]
pub struct Factories {
    /// Receiver factories by type name.
    pub receivers: BTreeMap<&'static str, Arc<dyn ReceiverFactory>>,
    /// Processor factories by type name.
    pub processors: BTreeMap<&'static str, Arc<dyn ProcessorFactory>>,
    /// Exporter factories by type name.
    pub exporters: BTreeMap<&'static str, Arc<dyn ExporterFactory>>,
    /// Extension factories by type name.
    pub extensions: BTreeMap<&'static str, Arc<dyn ExtensionFactory>>,
    /// Connector factories by type name.
    pub connectors: BTreeMap<&'static str, Arc<dyn ConnectorFactory>>,
}

/// One line of `components`: a type, its stability and signals.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComponentInfo {
    /// The type name.
    pub name: &'static str,
    /// Stability level.
    pub stability: Stability,
    /// Signals handled (empty for extensions).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub signals: &'static [Signal],
}

impl Factories {
    /// Registers a receiver type.
    pub fn receiver(mut self, f: impl ReceiverFactory + 'static) -> Self {
        self.receivers.insert(f.type_name(), Arc::new(f));
        self
    }
    /// Registers a processor type.
    pub fn processor(mut self, f: impl ProcessorFactory + 'static) -> Self {
        self.processors.insert(f.type_name(), Arc::new(f));
        self
    }
    /// Registers an exporter type.
    pub fn exporter(mut self, f: impl ExporterFactory + 'static) -> Self {
        self.exporters.insert(f.type_name(), Arc::new(f));
        self
    }
    /// Registers an extension type.
    pub fn extension(mut self, f: impl ExtensionFactory + 'static) -> Self {
        self.extensions.insert(f.type_name(), Arc::new(f));
        self
    }
    /// Registers a connector type.
    pub fn connector(mut self, f: impl ConnectorFactory + 'static) -> Self {
        self.connectors.insert(f.type_name(), Arc::new(f));
        self
    }
    /// The factory of `kind` for `type_name`, as a plain [`Factory`].
    pub fn factory(&self, kind: Kind, type_name: &str) -> Option<&dyn Factory> {
        match kind {
            Kind::Receiver => self
                .receivers
                .get(type_name)
                .map(|f| f.as_ref() as &dyn Factory),
            Kind::Processor => self
                .processors
                .get(type_name)
                .map(|f| f.as_ref() as &dyn Factory),
            Kind::Exporter => self
                .exporters
                .get(type_name)
                .map(|f| f.as_ref() as &dyn Factory),
            Kind::Extension => self
                .extensions
                .get(type_name)
                .map(|f| f.as_ref() as &dyn Factory),
            Kind::Connector => self
                .connectors
                .get(type_name)
                .map(|f| f.as_ref() as &dyn Factory),
        }
    }
    /// What this build contains, per kind, for the `components` command.
    pub fn describe(&self) -> BTreeMap<&'static str, Vec<ComponentInfo>> {
        let info = |f: &dyn Factory| ComponentInfo {
            name: f.type_name(),
            stability: f.stability(),
            signals: f.signals(),
        };
        let mut out = BTreeMap::new();
        out.insert(
            "receivers",
            self.receivers.values().map(|f| info(f.as_ref())).collect(),
        );
        out.insert(
            "processors",
            self.processors.values().map(|f| info(f.as_ref())).collect(),
        );
        out.insert(
            "exporters",
            self.exporters.values().map(|f| info(f.as_ref())).collect(),
        );
        out.insert(
            "extensions",
            self.extensions.values().map(|f| info(f.as_ref())).collect(),
        );
        out.insert(
            "connectors",
            self.connectors.values().map(|f| info(f.as_ref())).collect(),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_print() {
        let id: ComponentId = "otlp/internal".parse().unwrap();
        assert_eq!(id.type_name(), "otlp");
        assert_eq!(id.name(), Some("internal"));
        assert_eq!(id.to_string(), "otlp/internal");
        assert_eq!("debug".parse::<ComponentId>().unwrap().to_string(), "debug");
        for bad in ["", "/x", "otlp/", "a/b/c", "ot lp"] {
            assert!(
                bad.parse::<ComponentId>().is_err(),
                "{bad} should not parse"
            );
        }
        assert_eq!(
            "otlp/".parse::<ComponentId>().unwrap_err().to_string(),
            "invalid component id `otlp/`: the name after `/` is empty"
        );
    }
}
