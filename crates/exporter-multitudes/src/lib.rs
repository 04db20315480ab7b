//! The `multitudes` exporter: totals (and logs) to the Multitudes ingestion
//! endpoint as the Go exporter sent them: `POST {endpoint}/v1/metrics` and
//! `/v1/logs`, OTLP/JSON (or protobuf), `Authorization: Bearer <token>` with
//! the caller's own token when the receiver captured one, else
//! `fallback_token`. One request per batch, and a batch never mixes tokens
//! (the aggregation processor emits one batch per token). Tokens appear in
//! logs only as their first four characters and `***`.
//!
//! Retries follow `retry_on_failure` (exponential backoff with jitter,
//! `Retry-After` honoured) on connection errors, timeouts and 408, 429, 500,
//! 502, 503, 504; other statuses are permanent, logged with up to 1 KiB of
//! the answer. With `sending_queue` (the default) batches wait in memory for
//! `num_consumers` senders; a full queue refuses with a retryable error.

pub mod config;
mod send;

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use otelcol_core::component::{
    ComponentError, CreateSettings, Exporter, ExporterFactory, Factory, Host, Lifecycle,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError};
use otelcol_core::pdata::{Logs, Metrics};
use otelcol_core::{Signal, Stability};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use config::MultitudesExporterConfig;
pub use send::Wire;
use send::{Counters, Sender};

/// How long shutdown lets the queue drain before dropping what is left.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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
}

fn build<T: Wire>(
    settings: CreateSettings,
    raw: &RawConfig,
) -> Result<Arc<MultitudesExporter<T>>, ComponentError> {
    let config: MultitudesExporterConfig = decode(raw)?;
    config.validate()?;
    let id = settings.id.to_string();
    let counters = Counters::new(&settings.metrics, &id, T::ITEMS);
    let url = config.url(T::PATH);
    let queue = config.sending_queue.clone();
    let sender = Sender::new(id, config, url, counters).map_err(ComponentError::Failed)?;
    if !sender.has_fallback() {
        tracing::warn!(
            exporter = %sender.id,
            "no fallback_token is set: batches from callers without their own bearer token will be dropped"
        );
    }
    Ok(Arc::new(MultitudesExporter {
        sender: Arc::new(sender),
        queue: queue.enabled.then(|| Queue {
            capacity: queue.queue_size,
            consumers: queue.num_consumers,
            tx: Mutex::new(None),
            workers: Mutex::new(vec![]),
        }),
        _signal: PhantomData,
    }))
}

impl ExporterFactory for MultitudesExporterFactory {
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
}

struct Queue<T> {
    capacity: usize,
    consumers: usize,
    tx: Mutex<Option<mpsc::Sender<Batch<T>>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// A `multitudes` exporter for one signal.
pub struct MultitudesExporter<T> {
    sender: Arc<Sender>,
    queue: Option<Queue<T>>,
    _signal: PhantomData<fn(T)>,
}

#[async_trait]
impl<T: Wire> Consumer<T> for MultitudesExporter<T> {
    async fn consume(&self, batch: Batch<T>) -> Result<(), ConsumerError> {
        let Some(queue) = &self.queue else {
            return self.sender.send(&batch).await;
        };
        let items = batch.data.item_count() as u64;
        let tx = queue
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let refused = |why: &str| {
            self.sender.counters.enqueue_failed.add(items);
            tracing::warn!(exporter = %self.sender.id, items, "{why}");
            ConsumerError::retryable(format!("exporter {}: {why}", self.sender.id))
        };
        let Some(tx) = tx else {
            return Err(refused("the exporter is not running"));
        };
        match tx.try_send(batch) {
            Ok(()) => {
                self.sender.counters.queue_size.add(1);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(refused("the sending queue is full")),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(refused("the exporter is shutting down"))
            }
        }
    }
}

#[async_trait]
impl<T: Wire> Lifecycle for MultitudesExporter<T> {
    async fn start(&self, _host: &Host) -> Result<(), ComponentError> {
        let Some(queue) = &self.queue else {
            return Ok(());
        };
        let (tx, rx) = mpsc::channel::<Batch<T>>(queue.capacity);
        self.sender
            .counters
            .queue_capacity
            .set(queue.capacity as i64);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut workers = queue.workers.lock().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..queue.consumers {
            let (rx, sender) = (rx.clone(), self.sender.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(batch) = next else { break };
                    sender.counters.queue_size.add(-1);
                    // Permanent failures are counted and logged by the
                    // sender; a retryable one it gave up on ends here.
                    if let Err(e) = sender.send(&batch).await {
                        if e.is_retryable() {
                            let items = batch.data.item_count() as u64;
                            sender.counters.send_failed.add(items);
                            tracing::error!(items, error = %e, "giving up on a queued batch; it is dropped");
                        }
                    }
                }
            }));
        }
        *queue.tx.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let Some(queue) = &self.queue else {
            return Ok(());
        };
        queue
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let workers: Vec<JoinHandle<()>> =
            std::mem::take(&mut *queue.workers.lock().unwrap_or_else(PoisonError::into_inner));
        let aborts: Vec<_> = workers.iter().map(|w| w.abort_handle()).collect();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, futures_join(workers)).await;
        if drained.is_err() {
            aborts.iter().for_each(|a| a.abort());
            let left = self.sender.counters.queue_size.get();
            tracing::error!(
                exporter = %self.sender.id,
                batches = left,
                "the sending queue did not drain within {}s of shutdown; the batches still in it are dropped",
                DRAIN_TIMEOUT.as_secs()
            );
        }
        Ok(())
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories.exporter(MultitudesExporterFactory)
}
