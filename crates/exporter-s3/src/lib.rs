//! Exporters to object storage: `awss3` (the Go `awss3` exporter's keys),
//! `googlecloudstorage` and `file` (a local folder), all writing through
//! the `object_store` crate.
//!
//! Each type is a [`ObjectPush`] on the core sending path
//! ([`otelcol_core::exporter`]): batches are acknowledged once held in the
//! merge stage (on disk with `sending_queue.storage`), merged until
//! `batching.max_items`, `batching.max_bytes` or `batching.flush_interval`
//! (at most `max_objects_per_minute`), split by the partition of the
//! data's own time (`year=%Y/month=%m/...` by default, not the upload
//! time) and queued, one request per object:
//! `{base}/{prefix}/{partition}/{file_prefix}{signal}_{uuidv7}.{json|binpb|parquet}[.gz|.zst]`.
//! The id is the request's idempotency key, drawn when the object is
//! queued and stored with it, so a retried upload, or a resend after a
//! restart, replaces the same object. Uploads are retried by
//! `retry_on_failure`; a refusal that no retry can fix (a missing bucket,
//! refused credentials) is dropped, counted
//! (`otelcol_exporter_send_failed_*`) and logged with its key. At start
//! one listing checks the bucket and credentials; at shutdown everything
//! merged is queued and the queue drains (a persistent one keeps the rest).
//!
//! ```
//! use otelcol_exporter_s3::FileExporterConfig;
//! let config: FileExporterConfig = serde_yaml::from_str(
//!     "directory: ./data\nmarshaler: parquet\ncompression: zstd\n",
//! ).unwrap();
//! assert!(config.validate().is_ok());
//! ```

pub mod config;
pub mod encode;
pub mod key;
pub mod lines;
pub mod parquet;
pub mod push;
pub mod signal;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use otelcol_core::component::{
    ComponentError, ComponentId, CreateSettings, Exporter, ExporterFactory, Factory, NoEffectKey,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::exporter::{ExporterSettings, QueueConfig, RetryConfig};
use otelcol_core::pdata::{Logs, Metrics, Traces};
use otelcol_core::{Signal as SignalKind, Stability};

use config::{Batching, ParquetOptions};
pub use config::{FileExporterConfig, GcsExporterConfig, S3ExporterConfig};
use key::PartitionFormat;
pub use push::{Layout, ObjectExporter, ObjectPush};
use signal::Signal;
use store::Target;

fn partition(format: &str, zone: &str, path: &str) -> Result<PartitionFormat, ConfigError> {
    PartitionFormat::parse(format, zone).map_err(|m| ConfigError::invalid(path, m))
}

/// Why the retry keys of the AWS SDK (and of an earlier release of
/// `googlecloudstorage`) have no effect.
const RETRY_WHY: &str = "each upload is retried by retry_on_failure (exponential backoff until max_elapsed_time; 0 never gives up), the one retry mechanism of every exporter here; an attempt count would drop data in an outage";

/// The exporter-helper keys every type has, borrowed from its config.
struct Sending<'a> {
    queue: &'a QueueConfig,
    retry: &'a RetryConfig,
    batching: &'a Batching,
    timeout: Duration,
}

/// What each config type turns into: where to write and how.
trait ObjectConfig: serde::de::DeserializeOwned {
    fn check(&self) -> Result<(), ConfigError>;
    fn layout(&self) -> Result<Layout, ConfigError>;
    fn sending(&self) -> Sending<'_>;
    fn target(&self) -> Result<Target, store::StoreError>;
    /// The keys of this type accepted with no effect.
    fn no_effect_keys() -> Vec<NoEffectKey>;
}

/// `sending_queue.batch`'s merge keys: objects are merged by `batching`.
fn batch_keys() -> Vec<NoEffectKey> {
    const WHY: &str = "objects are merged by batching (flush_interval, max_items, max_bytes); sending_queue.batch.max_size still splits";
    [
        "sending_queue.batch.flush_timeout",
        "sending_queue.batch.min_size",
    ]
    .map(|k| NoEffectKey::new(k, WHY))
    .to_vec()
}

/// A resource attribute's name, if one is configured.
fn attribute(name: Option<&str>) -> Option<String> {
    name.filter(|a| !a.is_empty()).map(str::to_string)
}

/// The encoding extension's id and the file extension, when set.
fn encoding(id: &str, file_extension: &str) -> (Option<ComponentId>, Option<String>) {
    (
        id.parse().ok().filter(|_| !id.is_empty()),
        Some(file_extension.to_string()).filter(|e| !e.is_empty()),
    )
}

fn layout(
    (base, prefix, prefix_attribute): (&str, &str, Option<&str>),
    (format, zone, path): (&str, &str, &str),
    file_prefix: String,
    (marshaler, compression, parquet): (config::Marshaler, config::Compression, &ParquetOptions),
    (encoding, file_extension): (Option<ComponentId>, Option<String>),
) -> Result<Layout, ConfigError> {
    Ok(Layout {
        encoding,
        file_extension,
        base: base.to_string(),
        prefix: prefix.to_string(),
        prefix_attribute: attribute(prefix_attribute),
        bucket_attribute: None,
        partition: partition(format, zone, path)?,
        file_prefix,
        marshaler,
        compression,
        user_attributes: parquet.user_attributes.clone(),
    })
}

impl ObjectConfig for S3ExporterConfig {
    fn check(&self) -> Result<(), ConfigError> {
        self.validate()
    }
    fn no_effect_keys() -> Vec<NoEffectKey> {
        let mut keys: Vec<NoEffectKey> = [
            "s3uploader.retry_mode",
            "s3uploader.retry_max_attempts",
            "s3uploader.retry_max_backoff",
        ]
        .map(|k| NoEffectKey::new(k, RETRY_WHY))
        .to_vec();
        keys.push(NoEffectKey::new(
            "s3uploader.external_id",
            "role_arn is assumed with a web identity token (AssumeRoleWithWebIdentity), which takes no external id; a trust policy that requires one refuses the role",
        ));
        keys.extend(batch_keys());
        keys
    }
    fn layout(&self) -> Result<Layout, ConfigError> {
        let u = &self.s3uploader;
        let mut l = layout(
            (
                &u.s3_base_prefix,
                &u.s3_prefix,
                Some(&self.resource_attrs_to_s3.s3_prefix),
            ),
            (
                &u.s3_partition_format,
                &u.s3_partition_timezone,
                "s3uploader.s3_partition_format",
            ),
            u.file_prefix.clone(),
            (self.marshaler, u.compression, &self.parquet),
            encoding(&self.encoding, &self.encoding_file_extension),
        )?;
        l.bucket_attribute = attribute(Some(&self.resource_attrs_to_s3.s3_bucket));
        Ok(l)
    }
    fn sending(&self) -> Sending<'_> {
        Sending {
            queue: &self.sending_queue,
            retry: &self.retry_on_failure,
            batching: &self.batching,
            timeout: self.timeout,
        }
    }
    fn target(&self) -> Result<Target, store::StoreError> {
        store::s3(self)
    }
}

impl ObjectConfig for GcsExporterConfig {
    fn check(&self) -> Result<(), ConfigError> {
        self.validate()
    }
    fn no_effect_keys() -> Vec<NoEffectKey> {
        const WHY: &str = "buckets are never created here: an existing bucket is used, a missing one fails the start";
        let mut keys: Vec<NoEffectKey> = [
            "bucket.project_id",
            "bucket.region",
            "bucket.reuse_if_exists",
        ]
        .map(|k| NoEffectKey::new(k, WHY))
        .to_vec();
        keys.extend(
            ["retry_max_attempts", "retry_max_backoff"].map(|k| NoEffectKey::new(k, RETRY_WHY)),
        );
        keys.extend(batch_keys());
        keys
    }
    fn layout(&self) -> Result<Layout, ConfigError> {
        layout(
            ("", self.key_prefix(), None),
            (
                self.partition(),
                &self.partition_timezone,
                "partition_format",
            ),
            self.object_file_prefix(),
            (self.marshaler, self.compression, &self.parquet),
            encoding(&self.encoding, ""),
        )
    }
    fn sending(&self) -> Sending<'_> {
        Sending {
            queue: &self.sending_queue,
            retry: &self.retry_on_failure,
            batching: &self.batching,
            timeout: self.timeout,
        }
    }
    fn target(&self) -> Result<Target, store::StoreError> {
        store::gcs(self)
    }
}

impl ObjectConfig for FileExporterConfig {
    fn check(&self) -> Result<(), ConfigError> {
        self.validate()
    }
    fn no_effect_keys() -> Vec<NoEffectKey> {
        batch_keys()
    }
    fn layout(&self) -> Result<Layout, ConfigError> {
        layout(
            ("", &self.prefix, None),
            (
                &self.partition_format,
                &self.partition_timezone,
                "partition_format",
            ),
            self.file_prefix.clone(),
            (self.marshaler, self.compression, &self.parquet),
            (None, None),
        )
    }
    fn sending(&self) -> Sending<'_> {
        Sending {
            queue: &self.sending_queue,
            retry: &self.retry_on_failure,
            batching: &self.batching,
            timeout: Duration::from_secs(60),
        }
    }
    fn target(&self) -> Result<Target, store::StoreError> {
        store::file(self)
    }
}

fn build<C: ObjectConfig, T: Signal>(
    s: CreateSettings,
    raw: &RawConfig,
) -> Result<Arc<ObjectExporter<T>>, ComponentError> {
    let config: C = decode(raw)?;
    config.check()?;
    let layout = config.layout()?;
    if layout.encoding.is_none() {
        encode::supports::<T>(layout.marshaler)
            .map_err(|e| ComponentError::Failed(format!("exporter {}: {e}", s.id)))?;
    }
    let target = config
        .target()
        .map_err(|e| ComponentError::Failed(format!("exporter {}: {e}", s.id)))?;
    let sending = config.sending();
    let mut helper = ExporterSettings::new(
        sending.queue.clone(),
        sending.retry.clone(),
        sending.timeout,
    );
    helper.merge = Some(sending.batching.merge());
    let probe_timeout = sending.timeout.max(Duration::from_secs(5));
    let push = ObjectPush::new(s.id.to_string(), layout, target, probe_timeout);
    Ok(Arc::new(ObjectExporter::new(&s, T::KIND, helper, push)?))
}

macro_rules! factory {
    ($(#[$doc:meta])* $name:ident, $type_name:literal, $config:ty, $stability:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name;

        impl Factory for $name {
            fn type_name(&self) -> &'static str {
                $type_name
            }
            fn stability(&self) -> Stability {
                $stability
            }
            fn signals(&self) -> &'static [SignalKind] {
                &[SignalKind::Traces, SignalKind::Metrics, SignalKind::Logs]
            }
            fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
                decode::<$config>(config)?.check()
            }
            fn no_effect_keys(&self) -> Vec<NoEffectKey> {
                <$config as ObjectConfig>::no_effect_keys()
            }
        }

        impl ExporterFactory for $name {
            fn create_metrics(
                &self,
                s: CreateSettings,
                c: &RawConfig,
            ) -> Result<Arc<dyn Exporter<Metrics>>, ComponentError> {
                Ok(build::<$config, Metrics>(s, c)?)
            }
            fn create_logs(
                &self,
                s: CreateSettings,
                c: &RawConfig,
            ) -> Result<Arc<dyn Exporter<Logs>>, ComponentError> {
                Ok(build::<$config, Logs>(s, c)?)
            }
            fn create_traces(
                &self,
                s: CreateSettings,
                c: &RawConfig,
            ) -> Result<Arc<dyn Exporter<Traces>>, ComponentError> {
                Ok(build::<$config, Traces>(s, c)?)
            }
        }
    };
}

factory!(
    /// The factory for type `awss3`.
    S3ExporterFactory,
    "awss3",
    S3ExporterConfig,
    Stability::Alpha
);
factory!(
    /// The factory for type `googlecloudstorage`.
    GcsExporterFactory,
    "googlecloudstorage",
    GcsExporterConfig,
    Stability::Alpha
);
factory!(
    /// The factory for type `file` (objects as files under a local folder).
    FileExporterFactory,
    "file",
    FileExporterConfig,
    Stability::Alpha
);

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories
        .exporter(S3ExporterFactory)
        .exporter(GcsExporterFactory)
        .exporter(FileExporterFactory)
}
