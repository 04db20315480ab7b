//! The `batch` processor, on the core batcher ([`otelcol_core::batcher`],
//! the one the exporters' merge stage uses): collects batches into larger ones, sent when
//! `send_batch_size` items are waiting or `timeout` after the first arrived,
//! and split so none exceeds `send_batch_max_size`. Batches are kept apart
//! by the caller's bearer token and by the `metadata_keys` values, so a
//! split never mixes two clients. Everything waiting is sent at shutdown.
//!
//! A retryable refusal from the next component (a full sending queue) is
//! not a drop: the unsent items stay here and are offered again after
//! `timeout`; while a client's items wait after a refusal and reach
//! `send_batch_size`, new requests of that client are refused retryably
//! (the receiver answers 503 with `Retry-After`), so what is held stays
//! bounded. Only a permanent refusal, or items still refused at shutdown,
//! are dropped: counted and logged.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use otelcol_core::batcher::{Batcher, Bucket, Thresholds};
use otelcol_core::component::{
    ComponentError, CreateSettings, Factory, Host, Lifecycle, Processor, ProcessorFactory,
};
use otelcol_core::config::{decode, duration, ConfigError, RawConfig};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError, FlowPermit, RequestContext};
use otelcol_core::pdata::{Logs, Metrics, Traces};
use otelcol_core::task::Periodic;
use otelcol_core::telemetry::Counter;
use otelcol_core::{Signal, Stability};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use otelcol_core::pdata::Batchable;

/// `processors.batch`, with the Go processor's keys and defaults.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Send what is waiting this long after its first item arrived.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Send as soon as this many items wait.
    pub send_batch_size: usize,
    /// Never send more than this many items at once (0: no limit).
    pub send_batch_max_size: usize,
    /// Request metadata (headers) that keep batches apart.
    pub metadata_keys: Vec<String>,
    /// Most distinct metadata combinations held at once.
    pub metadata_cardinality_limit: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(200),
            send_batch_size: 8192,
            send_batch_max_size: 0,
            metadata_keys: vec![],
            metadata_cardinality_limit: 1000,
        }
    }
}

impl BatchConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.send_batch_max_size > 0 && self.send_batch_max_size < self.send_batch_size {
            return Err(ConfigError::invalid(
                "send_batch_max_size",
                "must be greater than or equal to send_batch_size",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid("timeout", "must be above 0"));
        }
        Ok(())
    }
}

/// What keeps batches apart: the bearer token and the metadata values.
type Key = (Option<String>, Vec<Option<String>>);

/// One request taken, as it came; a bucket's parts are merged when sent.
struct Part<T> {
    data: T,
    context: RequestContext,
}

struct Shared<T> {
    id: String,
    config: BatchConfig,
    next: Arc<dyn Consumer<T>>,
    /// The core batcher: per key, until `send_batch_size` or `timeout`.
    pending: Mutex<Batcher<Key, Part<T>>>,
    send_failed: Counter,
}

/// The running `batch` processor for one signal.
pub struct BatchProcessor<T> {
    shared: Arc<Shared<T>>,
    ticker: Periodic,
    _signal: PhantomData<fn(T)>,
}

impl<T: Batchable> Shared<T> {
    fn key(&self, ctx: &RequestContext) -> Key {
        let token = ctx.bearer_token().map(|t| t.expose().to_string());
        let meta = self
            .config
            .metadata_keys
            .iter()
            .map(|k| ctx.header(k).map(str::to_string))
            .collect();
        (token, meta)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Batcher<Key, Part<T>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a bucket merged, split into sends of at most
    /// `send_batch_max_size` items. What the next component refuses
    /// retryably is handed back (with the rest, and why) for a later try;
    /// a permanent refusal is dropped here (counted and logged).
    async fn send(&self, bucket: Bucket<Part<T>>) -> Option<(Part<T>, u64, String)> {
        let mut parts = bucket.entries.into_iter();
        let first = parts.next()?;
        let mut context = first.context;
        let mut data = first.data;
        for p in parts {
            data.append(p.data);
            // The producers' room stays taken while their data is merged here.
            FlowPermit::merge(&mut context.flow, p.context.flow);
        }
        let max = self.config.send_batch_max_size;
        let mut left = data.item_count();
        while left > 0 {
            let n = if max > 0 { left.min(max) } else { left };
            let chunk = if n < left {
                data.take_front(n)
            } else {
                std::mem::take(&mut data)
            };
            let batch = Batch {
                data: chunk,
                context: context.clone(),
                received: None,
            };
            let kept = batch.data.clone();
            match self.next.consume(batch).await {
                Ok(()) => left -= n,
                Err(e) if e.is_retryable() => {
                    let mut back = kept;
                    back.append(data);
                    let part = Part {
                        data: back,
                        context,
                    };
                    return Some((part, left as u64, e.to_string()));
                }
                Err(e) => {
                    left -= n;
                    self.send_failed.add(n as u64);
                    tracing::error!(processor = %self.id, items = n, error = %e, "the next component refused a batch for good; it is dropped");
                }
            }
        }
        None
    }

    /// Sends `bucket`; what is refused retryably goes back in front of
    /// what arrived since, due again after `timeout`.
    async fn send_or_hold(&self, key: Key, bucket: Bucket<Part<T>>) {
        if let Some((part, items, why)) = self.send(bucket).await {
            self.pending()
                .put_back(key, vec![part], (items, 0), why, false, Instant::now());
        }
    }
}

#[async_trait]
impl<T: Batchable> Consumer<T> for BatchProcessor<T> {
    async fn consume(&self, batch: Batch<T>) -> Result<(), ConsumerError> {
        let s = &self.shared;
        let items = batch.data.item_count();
        if items == 0 {
            return Ok(());
        }
        let key = s.key(&batch.context);
        let full = {
            let mut pending = s.pending();
            let held = pending.get(&key);
            if held.is_none() && pending.keys() >= s.config.metadata_cardinality_limit {
                return Err(ConsumerError::retryable(format!(
                    "processor {}: too many distinct metadata combinations (metadata_cardinality_limit {})",
                    s.id, s.config.metadata_cardinality_limit
                )));
            }
            if let Some(held) =
                held.filter(|h| h.refused.is_some() && h.items >= s.config.send_batch_size as u64)
            {
                let why = held.refused.clone().unwrap_or_default();
                return Err(ConsumerError::Retryable {
                    message: format!(
                        "processor {}: holding {} items the next component refused ({why}); try again later",
                        s.id, held.items
                    ),
                    retry_after: Some(s.config.timeout.max(Duration::from_secs(1))),
                });
            }
            let part = Part {
                data: batch.data,
                context: batch.context,
            };
            if pending.add(key.clone(), part, items as u64, 0, Instant::now()) {
                pending.take(&key)
            } else {
                None
            }
        };
        if let Some(bucket) = full {
            s.send_or_hold(key, bucket).await;
        }
        Ok(())
    }
}

#[async_trait]
impl<T: Batchable> Lifecycle for BatchProcessor<T> {
    async fn start(&self, _host: &Host) -> Result<(), ComponentError> {
        let shared = self.shared.clone();
        let tick = (shared.config.timeout / 4).max(Duration::from_millis(5));
        self.ticker.start(tick, move || {
            let shared = shared.clone();
            async move {
                let due = shared.pending().take_due(Instant::now(), false);
                for (key, bucket) in due {
                    shared.send_or_hold(key, bucket).await;
                }
            }
        });
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        self.ticker.stop().await;
        let all = self.shared.pending().take_due(Instant::now(), true);
        for (_, bucket) in all {
            if let Some((_, items, why)) = self.shared.send(bucket).await {
                self.shared.send_failed.add(items);
                tracing::error!(
                    processor = %self.shared.id,
                    items,
                    error = %why,
                    "the next component still refuses at shutdown; these items are dropped"
                );
            }
        }
        Ok(())
    }
}

/// The factory for type `batch`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchProcessorFactory;

impl Factory for BatchProcessorFactory {
    fn type_name(&self) -> &'static str {
        "batch"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode::<BatchConfig>(config)?.validate()
    }
}

fn build<T: Batchable>(
    settings: CreateSettings,
    raw: &RawConfig,
    next: Arc<dyn Consumer<T>>,
) -> Result<Arc<BatchProcessor<T>>, ComponentError> {
    let config: BatchConfig = decode(raw)?;
    config.validate()?;
    let id = settings.id.to_string();
    let thresholds = Thresholds {
        // Go: send_batch_size 0 sends each batch as it comes.
        items: (config.send_batch_size as u64).max(1),
        bytes: 0,
        age: config.timeout,
    };
    let send_failed = settings.metrics.counter(
        "otelcol_processor_batch_send_failed_items",
        "Items dropped after batching: refused for good by the next component, or still refused at shutdown (each drop is logged).",
        &[("processor", &id)],
    );
    Ok(Arc::new(BatchProcessor {
        shared: Arc::new(Shared {
            id,
            config,
            next,
            pending: Mutex::new(Batcher::new(thresholds)),
            send_failed,
        }),
        ticker: Periodic::default(),
        _signal: PhantomData,
    }))
}

impl ProcessorFactory for BatchProcessorFactory {
    fn create_metrics(
        &self,
        s: CreateSettings,
        c: &RawConfig,
        n: Arc<dyn Consumer<Metrics>>,
    ) -> Result<Arc<dyn Processor<Metrics>>, ComponentError> {
        Ok(build(s, c, n)?)
    }
    fn create_logs(
        &self,
        s: CreateSettings,
        c: &RawConfig,
        n: Arc<dyn Consumer<Logs>>,
    ) -> Result<Arc<dyn Processor<Logs>>, ComponentError> {
        Ok(build(s, c, n)?)
    }
    fn create_traces(
        &self,
        s: CreateSettings,
        c: &RawConfig,
        n: Arc<dyn Consumer<Traces>>,
    ) -> Result<Arc<dyn Processor<Traces>>, ComponentError> {
        Ok(build(s, c, n)?)
    }
}

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories.processor(BatchProcessorFactory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use otelcol_core::component::Kind;
    use otelcol_core::consumer::{AuthData, BearerToken};
    use otelcol_core::pdata::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use otelcol_core::pdata::Payload;
    use otelcol_core::ComponentId;

    #[derive(Default)]
    struct Sink(
        Mutex<Vec<(Option<String>, usize)>>,
        /// Refuse retryably while set.
        std::sync::atomic::AtomicBool,
        /// The producers' room each batch taken carried, kept.
        Mutex<Vec<Option<FlowPermit>>>,
    );

    #[async_trait]
    impl Consumer<Logs> for Sink {
        async fn consume(&self, b: Batch<Logs>) -> Result<(), ConsumerError> {
            if self.1.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(ConsumerError::retryable("the sending queue is full"));
            }
            let token = b.context.bearer_token().map(|t| t.expose().to_string());
            self.2.lock().unwrap().push(b.context.flow.clone());
            self.0.lock().unwrap().push((token, b.data.item_count()));
            Ok(())
        }
    }

    fn logs(n: usize) -> Logs {
        Logs {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn with_token(n: usize, token: &str) -> Batch<Logs> {
        Batch {
            data: logs(n),
            context: RequestContext {
                auth: Some(Arc::new(AuthData {
                    token: Some(BearerToken::new(token)),
                    headers: vec![],
                })),
                ..Default::default()
            },
            received: None,
        }
    }

    async fn processor(yaml: &str) -> (Arc<BatchProcessor<Logs>>, Arc<Sink>) {
        let sink = Arc::new(Sink::default());
        let raw: RawConfig = serde_yaml::from_str(yaml).unwrap();
        let p = build::<Logs>(
            CreateSettings::standalone(ComponentId::new("batch"), Kind::Processor),
            &raw,
            sink.clone(),
        )
        .unwrap();
        p.start(&Host::new(Default::default(), Default::default()))
            .await
            .unwrap();
        (p, sink)
    }

    #[tokio::test(start_paused = true)]
    async fn size_timeout_split_and_tokens() {
        let (p, sink) =
            processor("timeout: 1s\nsend_batch_size: 10\nsend_batch_max_size: 10\n").await;
        p.consume(with_token(6, "a")).await.unwrap();
        p.consume(with_token(3, "b")).await.unwrap();
        assert!(
            sink.0.lock().unwrap().is_empty(),
            "below send_batch_size, before timeout"
        );
        p.consume(with_token(5, "a")).await.unwrap();
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec![(Some("a".into()), 10), (Some("a".into()), 1)],
            "11 items for token a reached the size: sent split at send_batch_max_size"
        );
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(
            sink.0.lock().unwrap().last().cloned(),
            Some((Some("b".into()), 3)),
            "token b sent on timeout"
        );
        p.consume(with_token(2, "c")).await.unwrap();
        p.shutdown().await.unwrap();
        assert_eq!(
            sink.0.lock().unwrap().last().cloned(),
            Some((Some("c".into()), 2)),
            "flushed at shutdown"
        );
        let total: usize = sink.0.lock().unwrap().iter().map(|(_, n)| n).sum();
        assert_eq!(total, 16);
    }

    /// The producers' room stays taken while their data waits here and in
    /// what the merged batch became.
    #[tokio::test(start_paused = true)]
    async fn a_merged_batch_holds_every_producers_room() {
        let (p, sink) = processor("timeout: 1h\nsend_batch_size: 10\n").await;
        let window = Arc::new(tokio::sync::Semaphore::new(10));
        for n in [4, 6] {
            let mut b = with_token(n, "a");
            let permit = window.clone().try_acquire_many_owned(n as u32).unwrap();
            b.context.flow = Some(FlowPermit::new(permit));
            p.consume(b).await.unwrap();
            if n == 4 {
                assert_eq!(window.available_permits(), 6, "waiting here");
            }
        }
        assert_eq!(*sink.0.lock().unwrap(), vec![(Some("a".into()), 10)]);
        assert_eq!(window.available_permits(), 0, "held by the merged batch");
        sink.2.lock().unwrap().clear();
        assert_eq!(window.available_permits(), 10);
        p.shutdown().await.unwrap();
    }

    /// As in Go, `send_batch_size: 0` sends each batch as it comes.
    #[tokio::test(start_paused = true)]
    async fn a_zero_send_batch_size_sends_at_once() {
        let (p, sink) = processor("timeout: 1h\nsend_batch_size: 0\n").await;
        p.consume(with_token(3, "a")).await.unwrap();
        assert_eq!(*sink.0.lock().unwrap(), vec![(Some("a".into()), 3)]);
        p.shutdown().await.unwrap();
    }

    /// Issue 14: a retryable refusal downstream (a full sending queue)
    /// dropped the batch here.
    #[tokio::test(start_paused = true)]
    async fn a_retryable_refusal_keeps_the_items_and_pushes_back_when_full() {
        let (p, sink) = processor("timeout: 1s\nsend_batch_size: 10\n").await;
        sink.1.store(true, std::sync::atomic::Ordering::SeqCst);
        p.consume(with_token(4, "a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await; // refused at the timeout
        p.consume(with_token(6, "a")).await.unwrap();
        let err = p.consume(with_token(1, "a")).await.unwrap_err();
        assert!(
            matches!(
                err,
                ConsumerError::Retryable {
                    retry_after: Some(_),
                    ..
                }
            ),
            "10 items held after a refusal: new ones are refused: {err:?}"
        );
        p.consume(with_token(2, "b")).await.unwrap();
        sink.1.store(false, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2600)).await;
        let mut got = sink.0.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, vec![(Some("a".into()), 10), (Some("b".into()), 2)]);
        p.consume(with_token(1, "a")).await.unwrap();
        p.shutdown().await.unwrap();
        let total: usize = sink.0.lock().unwrap().iter().map(|(_, n)| n).sum();
        assert_eq!(total, 13, "nothing lost");
    }

    #[test]
    fn config_errors() {
        let raw: RawConfig =
            serde_yaml::from_str("send_batch_size: 100\nsend_batch_max_size: 10\n").unwrap();
        assert_eq!(
            BatchProcessorFactory
                .validate(&raw)
                .unwrap_err()
                .to_string(),
            "send_batch_max_size: must be greater than or equal to send_batch_size"
        );
    }
}
