//! The exporter shared by the three types: batches wait in memory until a
//! size or time threshold, are split by (prefix, partition of the data's
//! time), encoded, and each part is uploaded under a key whose id is fixed
//! before the first attempt.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{Attribute, PutOptions, PutPayload};
use otelcol_core::component::{ComponentError, Host, Lifecycle};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError};
use otelcol_core::pdata::find_attribute;
use otelcol_core::pdata::proto::common::v1::KeyValue;
use otelcol_core::task::Periodic;
use otelcol_core::telemetry::{Counter, MetricsRegistry};

use crate::config::{Batching, Compression, Marshaler, QueueConfig};
use crate::encode::{encode, Encoded};
use otelcol_core::exporter::new_request_id as new_object_id;

use crate::key::{file_name, join, PartitionFormat};
use crate::parquet::value_text;
use crate::signal::{split_by, Signal};
use crate::store::Target;

/// How object keys and contents are made.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Key segments before the prefix (`s3_base_prefix`).
    pub base: String,
    /// The prefix (`s3_prefix`, `prefix`).
    pub prefix: String,
    /// A resource attribute whose value replaces `prefix` (`resource_attrs_to_s3`).
    pub prefix_attribute: Option<String>,
    /// The time partition.
    pub partition: PartitionFormat,
    /// Before the file name.
    pub file_prefix: String,
    /// The encoding.
    pub marshaler: Marshaler,
    /// The compression.
    pub compression: Compression,
    /// Attributes that fill Parquet's `user` column.
    pub user_attributes: Vec<String>,
}

/// Everything an exporter instance needs, from any of the three configs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Keys and contents.
    pub layout: Layout,
    /// Thresholds.
    pub batching: Batching,
    /// The buffer.
    pub queue: QueueConfig,
    /// Attempts per object, the first included.
    pub attempts: u32,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// First wait between attempts (doubles each time, with jitter).
    pub first_backoff: Duration,
    /// How long the start check may take.
    pub probe_timeout: Duration,
}

struct Counters {
    sent: Counter,
    failed: Counter,
    enqueue_failed: Counter,
    objects: Counter,
    retries: Counter,
}

impl Counters {
    fn new<T: Signal>(m: &MetricsRegistry, id: &str) -> Self {
        let l = [("exporter", id)];
        let [sent, failed, enqueue] = T::COUNTERS;
        let lt = [("exporter", id), ("data_type", T::NAME)];
        Self {
            sent: m.counter(sent, "Items written to object storage.", &l),
            failed: m.counter(
                failed,
                "Items whose object could not be written (logged).",
                &l,
            ),
            enqueue_failed: m.counter(enqueue, "Items refused because the buffer was full.", &l),
            objects: m.counter(
                "otelcol_exporter_objects_written",
                "Objects written to object storage.",
                &lt,
            ),
            retries: m.counter(
                "otelcol_exporter_upload_retries",
                "Upload attempts after a failed one.",
                &lt,
            ),
        }
    }
}

#[derive(Default)]
struct Buffer<T> {
    batches: Vec<T>,
    items: usize,
    bytes: usize,
    oldest: Option<Instant>,
}

struct Shared<T> {
    id: String,
    settings: Settings,
    target: Target,
    counters: Counters,
    buffer: Mutex<Buffer<T>>,
    /// When recent objects were written, for `max_objects_per_minute`.
    recent: Mutex<VecDeque<Instant>>,
    /// One flush at a time, so objects leave in order.
    flushing: tokio::sync::Mutex<()>,
}

/// An object-storage exporter for one signal.
pub struct ObjectExporter<T: Signal> {
    shared: Arc<Shared<T>>,
    ticker: Periodic,
}

impl<T: Signal> ObjectExporter<T> {
    /// An exporter writing to `target`; its counters go to `metrics` under `id`.
    pub fn new(id: String, settings: Settings, target: Target, metrics: &MetricsRegistry) -> Self {
        let counters = Counters::new::<T>(metrics, &id);
        Self {
            shared: Arc::new(Shared {
                id,
                settings,
                target,
                counters,
                buffer: Mutex::new(Buffer {
                    batches: Vec::new(),
                    items: 0,
                    bytes: 0,
                    oldest: None,
                }),
                recent: Mutex::new(VecDeque::new()),
                flushing: tokio::sync::Mutex::new(()),
            }),
            ticker: Periodic::default(),
        }
    }

    /// Writes everything buffered now, whatever the thresholds.
    pub async fn flush(&self) {
        self.shared.flush(true).await;
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// Whether another attempt can help: not for a missing bucket, refused
/// credentials or any other 4xx answer except 408 and 429.
fn retryable(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    let text = e.to_string();
    if let Some(code) = text
        .split_once("status code: ")
        .and_then(|(_, rest)| rest.get(..3))
    {
        if code.starts_with('4') && code != "408" && code != "429" {
            return false;
        }
    }
    !matches!(
        e,
        E::NotFound { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::UnknownConfigurationKey { .. }
    )
}

impl<T: Signal> Shared<T> {
    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer<T>> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rate_limited(&self) -> bool {
        let max = self.settings.batching.max_objects_per_minute as usize;
        if max == 0 {
            return false;
        }
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        while recent
            .front()
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(60))
        {
            recent.pop_front();
        }
        recent.len() >= max
    }

    async fn flush(&self, force: bool) {
        let _one = self.flushing.lock().await;
        let batches = {
            let mut b = self.buffer();
            let b_ref = &*b;
            let due = !b_ref.batches.is_empty()
                && (force
                    || b_ref.items >= self.settings.batching.max_items
                    || b_ref.bytes >= self.settings.batching.max_bytes
                    || b_ref
                        .oldest
                        .is_some_and(|t| t.elapsed() >= self.settings.batching.flush_interval));
            if !due || (!force && self.rate_limited()) {
                return;
            }
            std::mem::take(&mut *b).batches
        };
        // Failures are counted and logged inside.
        let _ = self.write(batches).await;
    }

    fn prefix_of<'a>(&'a self, resource: &'a [KeyValue]) -> String {
        let l = &self.settings.layout;
        l.prefix_attribute
            .as_deref()
            .and_then(|k| find_attribute(resource, k))
            .map(value_text)
            .unwrap_or_else(|| l.prefix.clone())
    }

    /// Writes `batches` as one object per (prefix, partition). Returns the
    /// first failure after every part was tried.
    async fn write(&self, batches: Vec<T>) -> Result<(), String> {
        let mut data = T::default();
        for b in batches {
            data.append(b);
        }
        let now = now_nanos();
        let layout = &self.settings.layout;
        let mut cache: Option<(u64, String)> = None;
        let parts = split_by(data, &mut |resource, t| {
            let t = if t == 0 { now } else { t };
            let second = t / 1_000_000_000;
            let partition = match &cache {
                Some((s, p)) if *s == second => p.clone(),
                _ => {
                    let p = layout.partition.render(t);
                    cache = Some((second, p.clone()));
                    p
                }
            };
            (self.prefix_of(resource), partition)
        });
        let concurrency = self.settings.queue.num_consumers.max(1);
        let results: Vec<Result<(), String>> = futures_util::stream::iter(parts)
            .map(|((prefix, partition), part)| self.write_part(prefix, partition, part))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn write_part(&self, prefix: String, partition: String, part: T) -> Result<(), String> {
        let items = part.item_count() as u64;
        let l = &self.settings.layout;
        let encoded = match encode(&part, l.marshaler, l.compression, &l.user_attributes) {
            Ok(e) => e,
            Err(e) => {
                self.counters.failed.add(items);
                tracing::error!(exporter = %self.id, items, "dropping data that cannot be encoded: {e}");
                return Err(e.to_string());
            }
        };
        // The id is fixed here, before the first attempt: a retry overwrites
        // the same object instead of writing a second one.
        let name = file_name(
            &l.file_prefix,
            T::NAME,
            &new_object_id(),
            &encoded.extension,
            "",
        );
        let key = join(&[&l.base, &prefix, &partition, &name]);
        match self.upload(&key, encoded).await {
            Ok(()) => {
                self.counters.sent.add(items);
                self.counters.objects.add(1);
                // Only a limit needs the history (unbounded otherwise).
                if self.settings.batching.max_objects_per_minute > 0 {
                    self.recent
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push_back(Instant::now());
                }
                tracing::debug!(exporter = %self.id, key = %key, items, "object written");
                Ok(())
            }
            Err(e) => {
                self.counters.failed.add(items);
                let msg = format!(
                    "dropping {items} {} after failing to write {key} to {}: {e}",
                    T::NAME,
                    self.target.describe
                );
                tracing::error!(exporter = %self.id, "{msg}");
                Err(msg)
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.settings.first_backoff.as_secs_f64() * 2f64.powi(attempt as i32 - 1);
        let base = base.min(self.settings.max_backoff.as_secs_f64());
        // Jitter in [base/2, base] from the clock's low bits.
        let frac = (now_nanos() % 1000) as f64 / 1000.0;
        Duration::from_secs_f64(base * (0.5 + 0.5 * frac))
    }

    async fn upload(&self, key: &str, encoded: Encoded) -> Result<(), object_store::Error> {
        let path = Path::from(key);
        let mut opts = PutOptions {
            attributes: self.target.attributes.clone(),
            ..PutOptions::default()
        };
        if self.target.content_headers {
            opts.attributes
                .insert(Attribute::ContentType, encoded.content_type.into());
            if let Some(enc) = encoded.content_encoding {
                opts.attributes
                    .insert(Attribute::ContentEncoding, enc.into());
            }
        }
        let payload = PutPayload::from(encoded.bytes);
        let mut attempt = 1;
        loop {
            let put = self
                .target
                .store
                .put_opts(&path, payload.clone(), opts.clone());
            match put.await {
                Ok(_) => return Ok(()),
                Err(e) if attempt >= self.settings.attempts || !retryable(&e) => return Err(e),
                Err(e) => {
                    let wait = self.backoff(attempt);
                    tracing::warn!(
                        exporter = %self.id,
                        key,
                        attempt,
                        "upload failed, retrying in {}ms: {e}",
                        wait.as_millis()
                    );
                    self.counters.retries.add(1);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[async_trait]
impl<T: Signal> Consumer<T> for ObjectExporter<T> {
    async fn consume(&self, batch: Batch<T>) -> Result<(), ConsumerError> {
        let items = batch.data.item_count();
        if items == 0 {
            return Ok(());
        }
        let s = &self.shared;
        if !s.settings.queue.enabled {
            return s
                .write(vec![batch.data])
                .await
                .map_err(|e| ConsumerError::retryable(format!("exporter {}: {e}", s.id)));
        }
        let bytes = batch.data.encoded_len();
        let mut b = s.buffer();
        if b.batches.len() >= s.settings.queue.queue_size {
            drop(b);
            s.counters.enqueue_failed.add(items as u64);
            tracing::warn!(exporter = %s.id, items, "the buffer is full; refusing the batch");
            return Err(ConsumerError::retryable(format!(
                "exporter {}: the buffer is full",
                s.id
            )));
        }
        b.batches.push(batch.data);
        b.items += items;
        b.bytes += bytes;
        b.oldest.get_or_insert_with(Instant::now);
        Ok(())
    }
}

#[async_trait]
impl<T: Signal> Lifecycle for ObjectExporter<T> {
    async fn start(&self, _host: &Host) -> Result<(), ComponentError> {
        let s = &self.shared;
        let prefix = join(&[&s.settings.layout.base, &s.settings.layout.prefix]);
        crate::store::probe(&s.target, &prefix, s.settings.probe_timeout)
            .await
            .map_err(|e| ComponentError::Failed(format!("exporter {}: {e}", s.id)))?;
        if s.settings.queue.enabled {
            let period = (s.settings.batching.flush_interval / 10)
                .clamp(Duration::from_millis(20), Duration::from_secs(1));
            let shared = s.clone();
            self.ticker.start(period, move || {
                let shared = shared.clone();
                async move { shared.flush(false).await }
            });
        }
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        self.ticker.stop().await;
        self.shared.flush(true).await;
        Ok(())
    }
}
