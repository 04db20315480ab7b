//! Exporters to object storage: `awss3` (the Go `awss3` exporter's keys),
//! `googlecloudstorage` and `file` (a local folder), all writing through
//! the `object_store` crate.
//!
//! Batches wait in memory until `batching.max_items`, `batching.max_bytes`
//! or `batching.flush_interval` is reached (at most
//! `max_objects_per_minute`), are split by the partition of the data's own
//! time (`year=%Y/month=%m/...` by default, not the upload time), and each
//! part becomes one object:
//! `{base}/{prefix}/{partition}/{file_prefix}{signal}_{uuidv7}.{json|binpb|parquet}[.gz|.zst]`.
//! The id is drawn before the first attempt, so a retried upload replaces
//! the same object. Objects that still fail after `retry_max_attempts` are
//! dropped, counted (`otelcol_exporter_send_failed_*`) and logged with
//! their key. At start one listing checks the bucket and credentials; at
//! shutdown everything buffered is written.
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
pub mod exporter;
pub mod key;
pub mod parquet;
pub mod signal;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use otelcol_core::component::{
    ComponentError, CreateSettings, Exporter, ExporterFactory, Factory, NoEffectKey,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::pdata::{Logs, Metrics, Traces};
use otelcol_core::{Signal as SignalKind, Stability};

pub use config::{FileExporterConfig, GcsExporterConfig, S3ExporterConfig};
pub use exporter::{Layout, ObjectExporter, Settings};
use key::PartitionFormat;
use signal::Signal;
use store::Target;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);

fn partition(format: &str, zone: &str, path: &str) -> Result<PartitionFormat, ConfigError> {
    PartitionFormat::parse(format, zone).map_err(|m| ConfigError::invalid(path, m))
}

/// What each config type turns into: where to write and how.
trait ObjectConfig: serde::de::DeserializeOwned {
    fn check(&self) -> Result<(), ConfigError>;
    fn settings(&self) -> Result<Settings, ConfigError>;
    fn target(&self) -> Result<Target, store::StoreError>;
    /// The Go keys of this type accepted with no effect.
    fn no_effect_keys() -> Vec<NoEffectKey> {
        Vec::new()
    }
}

impl ObjectConfig for S3ExporterConfig {
    fn check(&self) -> Result<(), ConfigError> {
        self.validate()
    }
    fn settings(&self) -> Result<Settings, ConfigError> {
        let u = &self.s3uploader;
        Ok(Settings {
            layout: Layout {
                base: u.s3_base_prefix.clone(),
                prefix: u.s3_prefix.clone(),
                prefix_attribute: Some(self.resource_attrs_to_s3.s3_prefix.clone())
                    .filter(|a| !a.is_empty()),
                partition: partition(
                    &u.s3_partition_format,
                    &u.s3_partition_timezone,
                    "s3uploader.s3_partition_format",
                )?,
                file_prefix: u.file_prefix.clone(),
                marshaler: self.marshaler,
                compression: u.compression,
                user_attributes: self.parquet.user_attributes.clone(),
            },
            batching: self.batching.clone(),
            queue: self.sending_queue.clone(),
            attempts: u.retry_max_attempts,
            max_backoff: u.retry_max_backoff,
            first_backoff: FIRST_BACKOFF,
            probe_timeout: self.timeout.max(Duration::from_secs(5)),
        })
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
        [
            "bucket.project_id",
            "bucket.region",
            "bucket.reuse_if_exists",
        ]
        .map(|k| NoEffectKey::new(k, WHY))
        .to_vec()
    }
    fn settings(&self) -> Result<Settings, ConfigError> {
        Ok(Settings {
            layout: Layout {
                base: String::new(),
                prefix: self.key_prefix().to_string(),
                prefix_attribute: None,
                partition: partition(
                    self.partition(),
                    &self.partition_timezone,
                    "partition_format",
                )?,
                file_prefix: self.object_file_prefix(),
                marshaler: self.marshaler,
                compression: self.compression,
                user_attributes: self.parquet.user_attributes.clone(),
            },
            batching: self.batching.clone(),
            queue: self.sending_queue.clone(),
            attempts: self.retry_max_attempts,
            max_backoff: self.retry_max_backoff,
            first_backoff: FIRST_BACKOFF,
            probe_timeout: self.timeout.max(Duration::from_secs(5)),
        })
    }
    fn target(&self) -> Result<Target, store::StoreError> {
        store::gcs(self)
    }
}

impl ObjectConfig for FileExporterConfig {
    fn check(&self) -> Result<(), ConfigError> {
        self.validate()
    }
    fn settings(&self) -> Result<Settings, ConfigError> {
        Ok(Settings {
            layout: Layout {
                base: String::new(),
                prefix: self.prefix.clone(),
                prefix_attribute: None,
                partition: partition(
                    &self.partition_format,
                    &self.partition_timezone,
                    "partition_format",
                )?,
                file_prefix: self.file_prefix.clone(),
                marshaler: self.marshaler,
                compression: self.compression,
                user_attributes: self.parquet.user_attributes.clone(),
            },
            batching: self.batching.clone(),
            queue: self.sending_queue.clone(),
            attempts: 1,
            max_backoff: Duration::ZERO,
            first_backoff: Duration::ZERO,
            probe_timeout: Duration::from_secs(5),
        })
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
    let settings = config.settings()?;
    encode::supports::<T>(settings.layout.marshaler)
        .map_err(|e| ComponentError::Failed(format!("exporter {}: {e}", s.id)))?;
    let target = config
        .target()
        .map_err(|e| ComponentError::Failed(format!("exporter {}: {e}", s.id)))?;
    Ok(Arc::new(ObjectExporter::new(
        s.id.to_string(),
        settings,
        target,
        &s.metrics,
    )))
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
