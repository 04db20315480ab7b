//! The `loadbalancing` exporter (the Go exporter's keys): routes each item
//! to one backend collector by a routing key, over a consistent-hash ring,
//! so that every stream of a user reaches the same aggregator. Routing by
//! user is `routing_key: attributes` with `routing_attributes:
//! [user.email]`, looked up on the point (record, span) and then on the
//! resource, as the `aggregation` processor does.
//!
//! - Backends come from `resolver.static.hostnames` or from
//!   `resolver.dns` (a name resolved again every `interval`; a headless
//!   Service in Kubernetes). A change of the list changes the ring at run
//!   time: only the keys of the arcs an added or removed backend gains or
//!   loses move ([`ring`]). After a change, requests carry its time
//!   ([`ROUTED_SINCE_HEADER`](otelcol_core::consumer::ROUTED_SINCE_HEADER)),
//!   so the aggregators never count a moved cumulative stream twice.
//! - Each backend is an `otlp` exporter built from `protocol.otlp` with
//!   its own sending queue and retries: data for a backend that fails
//!   waits and is retried there, never re-routed (re-routing a cumulative
//!   stream is what breaks its totals). A removed backend's exporter is
//!   shut down, draining what it holds.
//! - A batch is split by key in one pass, the parts of each backend sent
//!   as one request, all backends at once; the caller gets the first
//!   error. With the backends' queues on (the default) that is only a full
//!   queue.

pub mod config;
pub mod ring;
pub mod route;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use otelcol_core::component::{
    ComponentError, ComponentId, CreateSettings, Exporter, ExporterFactory, Factory, Host,
    Lifecycle, NoEffectKey,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError};
use otelcol_core::pdata::{Batchable, Logs, Metrics, Traces};
use otelcol_core::{Signal, Stability};
use otelcol_exporter_otlp::wire::Wire;
use otelcol_exporter_otlp::{grpc_exporter, OtlpGrpcExporter};

use config::with_port;
pub use config::LoadBalancingConfig;
use ring::Ring;
use route::{Routable, Router};

/// The ring and an exporter per backend on it.
struct Backends<T> {
    ring: Ring,
    exporters: BTreeMap<String, Arc<OtlpGrpcExporter<T>>>,
}

/// A `loadbalancing` exporter for one signal.
pub struct LoadBalancingExporter<T> {
    settings: CreateSettings,
    config: LoadBalancingConfig,
    router: Router,
    backends: RwLock<Arc<Backends<T>>>,
    /// Serializes ring changes.
    changing: tokio::sync::Mutex<()>,
    host: OnceLock<Host>,
    resolver: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// This exporter, for the DNS loop started at start (held weakly: the
    /// loop ends with the exporter).
    me: OnceLock<std::sync::Weak<Self>>,
    /// When the ring last changed at run time (Unix nanoseconds; 0: not
    /// since start), sent to the backends as
    /// [`ROUTED_SINCE_HEADER`](otelcol_core::consumer::ROUTED_SINCE_HEADER).
    routed_since: Arc<AtomicU64>,
}

impl<T: Routable + Wire> LoadBalancingExporter<T> {
    /// An exporter with `config` (validated); backends come at start.
    pub fn new(settings: CreateSettings, config: LoadBalancingConfig) -> Self {
        Self {
            router: Router {
                key: config.routing_key,
                attributes: config.routing_attributes.clone(),
            },
            settings,
            config,
            backends: RwLock::new(Arc::new(Backends {
                ring: Ring::default(),
                exporters: BTreeMap::new(),
            })),
            changing: tokio::sync::Mutex::new(()),
            host: OnceLock::new(),
            resolver: Mutex::new(None),
            me: OnceLock::new(),
            routed_since: Arc::new(AtomicU64::new(0)),
        }
    }

    /// An exporter that re-resolves `resolver.dns` while it runs.
    pub fn shared(settings: CreateSettings, config: LoadBalancingConfig) -> Arc<Self> {
        let exporter = Arc::new(Self::new(settings, config));
        let _ = exporter.me.set(Arc::downgrade(&exporter));
        exporter
    }

    fn current(&self) -> Arc<Backends<T>> {
        self.backends
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The backends now on the ring, sorted.
    pub fn backends(&self) -> Vec<String> {
        self.current().ring.backends().to_vec()
    }

    /// Puts `endpoints` (`host:port`) on the ring: exporters are built and
    /// started for new ones, and shut down (draining what they hold, in
    /// the background) for those no longer listed. What the resolvers call.
    pub async fn set_backends(&self, endpoints: &[String]) -> Result<(), ComponentError> {
        let _one_at_a_time = self.changing.lock().await;
        let now = self.current();
        let wanted = Ring::new(endpoints);
        if wanted.backends() == now.ring.backends() {
            return Ok(());
        }
        let host = self.host.get().cloned().ok_or_else(|| {
            ComponentError::Failed(format!("exporter {}: not started", self.settings.id))
        })?;
        let mut exporters = BTreeMap::new();
        for endpoint in wanted.backends() {
            let exporter = match now.exporters.get(endpoint) {
                Some(e) => e.clone(),
                None => {
                    let e = self.backend(endpoint)?;
                    e.start(&host).await?;
                    e
                }
            };
            exporters.insert(endpoint.clone(), exporter);
        }
        let removed: Vec<(String, Arc<OtlpGrpcExporter<T>>)> = now
            .exporters
            .iter()
            .filter(|(e, _)| !exporters.contains_key(*e))
            .map(|(e, x)| (e.clone(), x.clone()))
            .collect();
        tracing::info!(
            exporter = %self.settings.id,
            backends = ?wanted.backends(),
            removed = ?removed.iter().map(|(e, _)| e).collect::<Vec<_>>(),
            "loadbalancing: the ring changed"
        );
        if !now.ring.backends().is_empty() {
            // Moved streams are new to their next aggregator: from now on
            // it counts a new stream in full only if it began after this.
            self.routed_since.store(now_nanos(), Ordering::SeqCst);
        }
        *self
            .backends
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(Backends {
            ring: wanted,
            exporters,
        });
        for (endpoint, exporter) in removed {
            let id = self.settings.id.clone();
            tokio::spawn(async move {
                if let Err(e) = exporter.shutdown().await {
                    tracing::warn!(exporter = %id, backend = %endpoint, "shutting down a removed backend: {e}");
                }
            });
        }
        Ok(())
    }

    /// The `otlp` exporter of one backend: `protocol.otlp` with the
    /// backend's endpoint, named `<this id>@<endpoint>` in counters and
    /// storage.
    fn backend(&self, endpoint: &str) -> Result<Arc<OtlpGrpcExporter<T>>, ComponentError> {
        let mut otlp = self.config.protocol.otlp.clone();
        otlp.endpoint = endpoint.to_string();
        let name = format!("{}@{endpoint}", self.settings.id.name().unwrap_or_default());
        let id: ComponentId = format!("{}/{name}", self.settings.id.type_name())
            .parse()
            .map_err(|e| ComponentError::Failed(format!("backend {endpoint}: {e}")))?;
        let settings = CreateSettings {
            id,
            ..self.settings.clone()
        };
        let since = self.routed_since.clone();
        let header = http::HeaderName::from_static(otelcol_core::consumer::ROUTED_SINCE_HEADER);
        let extra: otelcol_exporter_otlp::grpc::MetadataSource =
            Arc::new(move || match since.load(Ordering::SeqCst) {
                0 => vec![],
                t => vec![(header.clone(), http::HeaderValue::from(t))],
            });
        grpc_exporter::<T>(&settings, &otlp, Some(extra))
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Resolves `hostname:port` once, within `timeout`: the sorted addresses.
async fn resolve(hostname: &str, port: &str, timeout: Duration) -> Result<Vec<String>, String> {
    let lookup = tokio::net::lookup_host(format!("{hostname}:{port}"));
    let found = tokio::time::timeout(timeout, lookup)
        .await
        .map_err(|_| format!("resolving {hostname} took longer than {timeout:?}"))?
        .map_err(|e| format!("resolving {hostname}: {e}"))?;
    let mut addrs: Vec<String> = found.map(|a| a.to_string()).collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

#[async_trait]
impl<T: Routable + Wire> Consumer<T> for LoadBalancingExporter<T> {
    async fn consume(&self, batch: Batch<T>) -> Result<(), ConsumerError> {
        let backends = self.current();
        if backends.exporters.is_empty() {
            return Err(ConsumerError::retryable(format!(
                "exporter {}: no backend resolved yet",
                self.settings.id
            )));
        }
        let mut per_backend: BTreeMap<&str, T> = BTreeMap::new();
        for (key, part) in batch.data.split_by_key(&self.router) {
            let Some(backend) = backends.ring.pick(&key) else {
                continue;
            };
            match per_backend.get_mut(backend) {
                Some(data) => Batchable::append(data, part),
                None => {
                    per_backend.insert(backend, part);
                }
            }
        }
        let sends = per_backend.into_iter().filter_map(|(backend, data)| {
            let exporter = backends.exporters.get(backend)?.clone();
            let part = Batch {
                data,
                context: batch.context.clone(),
                received: None,
            };
            Some(async move { exporter.consume(part).await })
        });
        let results = futures_util::future::join_all(sends).await;
        results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
    }
}

#[async_trait]
impl<T: Routable + Wire> Lifecycle for LoadBalancingExporter<T> {
    async fn start(&self, host: &Host) -> Result<(), ComponentError> {
        let _ = self.host.set(host.clone());
        let resolver = &self.config.resolver;
        if let Some(fixed) = &resolver.fixed {
            let list: Vec<String> = fixed.hostnames.iter().map(|h| with_port(h)).collect();
            return self.set_backends(&list).await;
        }
        let Some(dns) = resolver.dns.clone() else {
            return Ok(());
        };
        match resolve(&dns.hostname, &dns.port, dns.timeout).await {
            Ok(list) => self.set_backends(&list).await?,
            Err(e) => {
                tracing::warn!(exporter = %self.settings.id, "{e}; retrying every {:?} (data is refused retryably until a backend is known)", dns.interval)
            }
        }
        if let Some(weak) = self.me.get() {
            let task = tokio::spawn(watch_dns(weak.clone(), dns));
            *self.resolver.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        }
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        if let Some(task) = self
            .resolver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        let backends = self.current();
        for exporter in backends.exporters.values() {
            exporter.shutdown().await?;
        }
        Ok(())
    }
}

/// Re-resolves `dns` every `interval` while `exporter` lives.
async fn watch_dns<T: Routable + Wire>(
    weak: std::sync::Weak<LoadBalancingExporter<T>>,
    dns: config::DnsResolver,
) {
    loop {
        tokio::time::sleep(dns.interval).await;
        let Some(exporter) = weak.upgrade() else {
            return;
        };
        match resolve(&dns.hostname, &dns.port, dns.timeout).await {
            Ok(list) if !list.is_empty() => {
                if let Err(e) = exporter.set_backends(&list).await {
                    tracing::warn!(exporter = %exporter.settings.id, "applying a ring change: {e}");
                }
            }
            Ok(_) => {
                tracing::warn!(exporter = %exporter.settings.id, hostname = %dns.hostname, "the name resolved to no address; keeping the ring")
            }
            Err(e) => tracing::warn!(exporter = %exporter.settings.id, "{e}; keeping the ring"),
        }
    }
}

fn build<T: Routable + Wire>(
    s: CreateSettings,
    raw: &RawConfig,
) -> Result<Arc<LoadBalancingExporter<T>>, ComponentError> {
    let config: LoadBalancingConfig = decode(raw)?;
    config.validate()?;
    Ok(LoadBalancingExporter::shared(s, config))
}

/// The factory for type `loadbalancing`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadBalancingExporterFactory;

impl Factory for LoadBalancingExporterFactory {
    fn type_name(&self) -> &'static str {
        "loadbalancing"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode::<LoadBalancingConfig>(config)?.validate()
    }
    fn no_effect_keys(&self) -> Vec<NoEffectKey> {
        LoadBalancingConfig::no_effect_keys()
    }
}

impl ExporterFactory for LoadBalancingExporterFactory {
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

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories.exporter(LoadBalancingExporterFactory)
}
