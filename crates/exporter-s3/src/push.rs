//! What is the object exporters' own on the core sending path: which
//! folder each item goes to, how a request becomes an object, and which
//! upload errors are worth another attempt. Merging, queueing (memory or
//! persistent), retries, timeouts and counters are the core exporter
//! helper's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use object_store::path::Path;
use object_store::{Attribute, ObjectStore, PutOptions, PutPayload};
use otelcol_core::component::{ComponentError, ComponentId, Host};
use otelcol_core::consumer::{ConsumerError, PermanentKind};
use otelcol_core::encoding::Encoding;
use otelcol_core::exporter::{Push, QueuedExporter, Request};
use otelcol_core::pdata::find_attribute;
use otelcol_core::pdata::proto::common::v1::KeyValue;

use crate::config::{Compression, Marshaler};
use crate::encode::encode;
use crate::key::{file_name, join, PartitionFormat};
use crate::parquet::value_text;
use crate::signal::{split_by, Signal};
use crate::store::{valid_bucket_name, Target};

/// An object-storage exporter for one signal: the core helper around [`ObjectPush`].
pub type ObjectExporter<T> = QueuedExporter<T, ObjectPush<T>>;

/// How object keys and contents are made.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Key segments before the prefix (`s3_base_prefix`).
    pub base: String,
    /// The prefix (`s3_prefix`, `prefix`).
    pub prefix: String,
    /// A resource attribute whose value replaces `prefix` (`resource_attrs_to_s3`).
    pub prefix_attribute: Option<String>,
    /// A resource attribute whose value names the bucket (`resource_attrs_to_s3.s3_bucket`).
    pub bucket_attribute: Option<String>,
    /// The time partition.
    pub partition: PartitionFormat,
    /// Before the file name.
    pub file_prefix: String,
    /// The marshaler (unless `encoding` is set).
    pub marshaler: Marshaler,
    /// An encoding extension to use instead of the marshaler (resolved at start).
    pub encoding: Option<ComponentId>,
    /// Replaces the file name's natural extension (`encoding_file_extension`).
    pub file_extension: Option<String>,
    /// The compression.
    pub compression: Compression,
    /// Attributes that fill Parquet's `user` column.
    pub user_attributes: Vec<String>,
}

/// One attempt at writing one request as one object.
///
/// The request's partition label is the object's folder
/// (`{base}/{prefix}/{partition}`, from the data's own time) and its
/// idempotency key is the object's id, both fixed when the request was
/// queued: a retry, or a resend after a restart, overwrites the same object.
pub struct ObjectPush<T> {
    id: String,
    layout: Layout,
    target: Target,
    probe_timeout: Duration,
    /// When a value that is not a bucket name was last warned about (s since the epoch).
    bad_bucket_warned: AtomicU64,
    /// The encoding extension named by `layout.encoding`, found at start.
    encoder: OnceLock<Arc<dyn Encoding>>,
    _t: std::marker::PhantomData<fn(T)>,
}

/// Ends the bucket part of a partition label when resources name buckets
/// (`{bucket}\u{1f}{folder}`; an empty bucket is the configured one).
/// Bucket names are checked, so they never hold it.
const BUCKET_END: char = '\u{1f}';

impl<T: Signal> ObjectPush<T> {
    /// Writes for exporter `id` to `target`; the start check may take `probe_timeout`.
    pub fn new(id: String, layout: Layout, target: Target, probe_timeout: Duration) -> Self {
        Self {
            id,
            layout,
            target,
            probe_timeout,
            bad_bucket_warned: AtomicU64::new(0),
            encoder: OnceLock::new(),
            _t: std::marker::PhantomData,
        }
    }

    fn prefix_of(&self, resource: &[KeyValue]) -> String {
        let l = &self.layout;
        l.prefix_attribute
            .as_deref()
            .and_then(|k| find_attribute(resource, k))
            .map(value_text)
            .unwrap_or_else(|| l.prefix.clone())
    }

    /// The bucket a resource names, `""` for the configured one. A value
    /// that is not a bucket name is warned about (at most once a minute).
    fn bucket_of(&self, resource: &[KeyValue]) -> String {
        let Some(value) = self
            .layout
            .bucket_attribute
            .as_deref()
            .and_then(|k| find_attribute(resource, k))
            .map(value_text)
        else {
            return String::new();
        };
        if valid_bucket_name(&value) {
            return value;
        }
        let now = now_nanos() / 1_000_000_000;
        let last = self.bad_bucket_warned.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .bad_bucket_warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                exporter = %self.id,
                "resource attribute {} holds `{}`, which is not a bucket name; its data goes to {} (said at most once a minute)",
                self.layout.bucket_attribute.as_deref().unwrap_or_default(),
                value.escape_debug(),
                self.target.describe
            );
        }
        String::new()
    }

    /// The store, its description and the object key's folder of a
    /// request's partition label.
    fn resolve<'a>(
        &self,
        label: &'a str,
    ) -> Result<(Arc<dyn ObjectStore>, String, &'a str), ConsumerError> {
        let default = || (self.target.store.clone(), self.target.describe.clone());
        let Some(buckets) = &self.target.buckets else {
            let (store, describe) = default();
            return Ok((store, describe, label));
        };
        let (bucket, folder) = label.split_once(BUCKET_END).unwrap_or(("", label));
        if bucket.is_empty() {
            let (store, describe) = default();
            return Ok((store, describe, folder));
        }
        let store = buckets.get(bucket).map_err(|e| {
            ConsumerError::permanent(format!("exporter {}: bucket {bucket}: {e}", self.id))
        })?;
        Ok((store, format!("s3://{bucket}"), folder))
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

#[async_trait]
impl<T: Signal> Push<T> for ObjectPush<T> {
    async fn push(&self, request: &Request<T>) -> Result<(), ConsumerError> {
        let l = &self.layout;
        let encoded = encode(&request.data, l, self.encoder.get().map(|e| &**e))
            .map_err(|e| {
                tracing::error!(exporter = %self.id, items = request.items, "dropping data that cannot be encoded: {e}");
                ConsumerError::Permanent {
                    message: format!("exporter {}: cannot encode: {e}", self.id),
                    kind: PermanentKind::InvalidData,
                }
            })?;
        let name = file_name(
            &l.file_prefix,
            T::NAME,
            &request.idempotency_key,
            &encoded.extension,
            "",
        );
        let (store, describe, folder) = self.resolve(&request.partition)?;
        let key = join(&[folder, &name]);
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
        let path = Path::from(key.as_str());
        let put = store.put_opts(&path, PutPayload::from(encoded.bytes), opts);
        match put.await {
            Ok(_) => {
                tracing::debug!(exporter = %self.id, key = %key, items = request.items, "object written");
                Ok(())
            }
            Err(e) if retryable(&e) => Err(ConsumerError::retryable(format!(
                "writing {key} to {describe}: {e}"
            ))),
            Err(e) => {
                tracing::error!(
                    exporter = %self.id,
                    items = request.items,
                    "dropping {} {} refused by {describe} for {key}: {e}",
                    request.items,
                    T::NAME,
                );
                Err(ConsumerError::permanent(format!(
                    "writing {key} to {describe}: {e}"
                )))
            }
        }
    }

    fn destination(&self) -> String {
        self.target.describe.clone()
    }

    /// One part per (prefix, partition of the item's own time); an item
    /// without a time is placed by the time it is partitioned (when the
    /// merged request is queued).
    fn partition(&self, data: T) -> Vec<(String, T)> {
        let now = now_nanos();
        let layout = &self.layout;
        let mut cache: Option<(u64, String)> = None;
        split_by(data, &mut |resource, t| {
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
            let folder = join(&[&layout.base, &self.prefix_of(resource), &partition]);
            if layout.bucket_attribute.is_some() {
                format!("{}{BUCKET_END}{folder}", self.bucket_of(resource))
            } else {
                folder
            }
        })
    }

    /// Object storage ignores callers' tokens: one object may hold several.
    fn keeps_tokens_apart(&self) -> bool {
        false
    }

    /// One listing checks the bucket (or folder) and the credentials.
    async fn start(&self, host: &Host) -> Result<(), ComponentError> {
        if let Some(id) = &self.layout.encoding {
            let encoder = host
                .encoding(id)
                .map_err(|e| ComponentError::Failed(format!("exporter {}: {e}", self.id)))?;
            let _ = self.encoder.set(encoder);
        }
        let prefix = join(&[&self.layout.base, &self.layout.prefix]);
        crate::store::probe(&self.target, &prefix, self.probe_timeout)
            .await
            .map_err(|e| ComponentError::Failed(format!("exporter {}: {e}", self.id)))
    }
}
