//! The three exporters' configurations. `awss3` takes the Go `awss3`
//! exporter's keys unchanged; `googlecloudstorage` and `file` take the same
//! output keys (marshaler, compression, partitioning, batching) flat.

use std::time::Duration;

use otelcol_core::config::{duration, ConfigError};
use otelcol_core::exporter::{MergeSettings, QueueConfig, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::key::PartitionFormat;

/// How a batch is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Marshaler {
    /// OTLP/JSON as the Multitudes exporter sends it (`.json`).
    #[default]
    OtlpJson,
    /// The OTLP export request as protobuf (`.binpb`).
    OtlpProto,
    /// One row per data point or log record (`.parquet`), see the crate README.
    Parquet,
    /// Logs only: Sumo Logic's installed-collector format, one JSON object
    /// per record and line (`.json`), see [`crate::lines::sumo_ic`].
    SumoIc,
    /// Logs only: each record's body as text, one per line (`.txt`).
    Body,
}

impl Marshaler {
    /// The name in the config.
    pub fn name(self) -> &'static str {
        match self {
            Self::OtlpJson => "otlp_json",
            Self::OtlpProto => "otlp_proto",
            Self::Parquet => "parquet",
            Self::SumoIc => "sumo_ic",
            Self::Body => "body",
        }
    }
}

/// Compression of the written object. For Parquet it is the codec of the
/// column chunks inside the file (the file stays readable as `.parquet`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Written as is.
    #[default]
    None,
    /// gzip (`.gz`).
    Gzip,
    /// zstd (`.zst`).
    Zstd,
}

/// Size and time thresholds: small batches are combined into one object
/// (the core exporter helper's merge stage, before the sending queue).
/// Not a Go key (the Go exporter writes one object per batch).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Batching {
    /// Write what is buffered at least this often.
    #[serde(with = "duration")]
    pub flush_interval: Duration,
    /// Write as soon as this many items (points, records, spans) wait.
    pub max_items: usize,
    /// Write as soon as the buffered requests reach this many protobuf bytes.
    pub max_bytes: usize,
    /// At most this many objects per minute (0: no limit); beyond it writes
    /// wait for the minute to pass (shutdown writes everything).
    pub max_objects_per_minute: u32,
}

impl Batching {
    /// The core helper's merge settings.
    pub fn merge(&self) -> MergeSettings {
        MergeSettings {
            flush_interval: self.flush_interval,
            max_items: self.max_items as u64,
            max_bytes: self.max_bytes as u64,
            max_per_minute: self.max_objects_per_minute,
        }
    }
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(30),
            max_items: 100_000,
            max_bytes: 8 << 20,
            max_objects_per_minute: 0,
        }
    }
}

/// Parquet options.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ParquetOptions {
    /// Attributes whose value fills the `user` column: the first found on
    /// the point (or record), then on the resource.
    pub user_attributes: Vec<String>,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        Self {
            user_attributes: vec!["user.email".into()],
        }
    }
}

/// `s3uploader`: the Go keys.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Uploader {
    /// AWS region.
    pub region: String,
    /// The bucket (required).
    pub s3_bucket: String,
    /// Root prefix of every key.
    pub s3_base_prefix: String,
    /// Prefix after the base prefix (replaced per resource by `resource_attrs_to_s3`).
    pub s3_prefix: String,
    /// strftime pattern of the time partition.
    pub s3_partition_format: String,
    /// `UTC` (default), `Local`, an IANA name (`Europe/Berlin`), or a fixed
    /// offset such as `+02:00`.
    pub s3_partition_timezone: String,
    /// Role to assume (web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` must be set).
    pub role_arn: String,
    /// Go: the external id passed to STS `AssumeRole`. Accepted with a
    /// start-up warning, no effect: roles are assumed with a web identity
    /// token here, and that call takes no external id.
    pub external_id: String,
    /// Prepended to the object's file name.
    pub file_prefix: String,
    /// S3-compatible endpoint (MinIO, LocalStack, …) instead of AWS.
    pub endpoint: String,
    /// Path-style addressing (`endpoint/bucket/key`).
    pub s3_force_path_style: bool,
    /// As in Go, affects only an `endpoint` given without a scheme: it is
    /// then reached over `http://` instead of `https://`. An endpoint given
    /// with its scheme is used as it is (`http://minio:9000` works without
    /// it, with a start-up warning that the connection is plaintext).
    pub disable_ssl: bool,
    /// `none`, `gzip` or `zstd`.
    pub compression: Compression,
    /// S3 storage class of written objects.
    pub storage_class: String,
    /// Canned ACL of written objects.
    pub acl: String,
    /// Go: the AWS SDK's retry mode. Accepted, no effect: uploads are
    /// retried by `retry_on_failure`.
    pub retry_mode: String,
    /// Go: the AWS SDK's attempts per upload. Accepted, no effect: uploads
    /// are retried by `retry_on_failure` (bounded by its `max_elapsed_time`).
    pub retry_max_attempts: u32,
    /// Go: the AWS SDK's longest wait. Accepted, no effect: see
    /// `retry_on_failure.max_interval`.
    #[serde(with = "duration")]
    pub retry_max_backoff: Duration,
    /// `uuidv7` (the only scheme: time-ordered ids).
    pub unique_key_func_name: String,
}

impl Default for S3Uploader {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            s3_bucket: String::new(),
            s3_base_prefix: String::new(),
            s3_prefix: String::new(),
            s3_partition_format: crate::key::DEFAULT_PARTITION_FORMAT.into(),
            s3_partition_timezone: String::new(),
            role_arn: String::new(),
            external_id: String::new(),
            file_prefix: String::new(),
            endpoint: String::new(),
            s3_force_path_style: false,
            disable_ssl: false,
            compression: Compression::None,
            storage_class: String::new(),
            acl: String::new(),
            retry_mode: "standard".into(),
            retry_max_attempts: 3,
            retry_max_backoff: Duration::from_secs(20),
            unique_key_func_name: String::new(),
        }
    }
}

impl S3Uploader {
    /// The endpoint as it will be reached, scheme included; empty for AWS.
    /// A scheme given is kept; without one it is `http://` when
    /// `disable_ssl` is set and `https://` otherwise (Go's rule).
    pub fn endpoint_url(&self) -> String {
        let e = self.endpoint.trim().trim_end_matches('/');
        if e.is_empty() || e.contains("://") {
            e.to_string()
        } else if self.disable_ssl {
            format!("http://{e}")
        } else {
            format!("https://{e}")
        }
    }

    /// Whether objects go over plaintext HTTP.
    pub fn plain_http(&self) -> bool {
        self.endpoint_url()
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("http://"))
    }
}

/// `resource_attrs_to_s3`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceAttrsToS3 {
    /// A resource attribute whose value replaces `s3_prefix` for that resource's data.
    pub s3_prefix: String,
    /// A resource attribute whose value names the bucket that resource's
    /// data is written to (same endpoint, region and credentials). A
    /// resource without it, or whose value is not a valid bucket name, is
    /// written to `s3uploader.s3_bucket` (with a warning for the latter).
    pub s3_bucket: String,
}

/// `exporters.awss3`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3ExporterConfig {
    /// Bucket, keys, credentials, retries.
    pub s3uploader: S3Uploader,
    /// `otlp_json`, `otlp_proto` or `parquet`.
    pub marshaler: Marshaler,
    /// An encoding extension (`otlp_encoding/json`, say) to write objects
    /// with instead of `marshaler`; it must be listed in `service.extensions`.
    pub encoding: String,
    /// The file name's extension instead of the natural one (`binpb`,
    /// `json`, …), without the dot. Go uses it with `encoding`; here it
    /// renames a marshaler's objects too.
    pub encoding_file_extension: String,
    /// Per-resource prefix.
    pub resource_attrs_to_s3: ResourceAttrsToS3,
    /// Per-attempt timeout.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// The core sending queue (memory, or persistent with `storage`).
    pub sending_queue: QueueConfig,
    /// Retries of each upload (the core helper's; not a Go key of `awss3`).
    pub retry_on_failure: RetryConfig,
    /// Size and time thresholds.
    pub batching: Batching,
    /// Parquet options.
    pub parquet: ParquetOptions,
}

impl Default for S3ExporterConfig {
    fn default() -> Self {
        Self {
            s3uploader: S3Uploader::default(),
            marshaler: Marshaler::OtlpJson,
            encoding: String::new(),
            encoding_file_extension: String::new(),
            resource_attrs_to_s3: ResourceAttrsToS3::default(),
            timeout: Duration::from_secs(5),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
            batching: Batching::default(),
            parquet: ParquetOptions::default(),
        }
    }
}

/// `bucket` of `googlecloudstorage`: a name, or the Go exporter's block.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum GcsBucket {
    /// The bucket's name.
    Name(String),
    /// The Go exporter's `bucket` block.
    Go(GoGcsBucket),
}

/// The Go `googlecloudstorage` exporter's `bucket` block.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GoGcsBucket {
    /// The bucket's name (required).
    pub name: String,
    /// Go: the project a new bucket is created in. Accepted with a
    /// start-up warning; no effect (buckets are never created here).
    pub project_id: Option<String>,
    /// Go: the region of a new bucket. As `project_id`.
    pub region: Option<String>,
    /// Go: use the bucket if it exists instead of failing. As `project_id`:
    /// an existing bucket is always used, a missing one fails the start.
    pub reuse_if_exists: Option<bool>,
    /// Prepended to each object's file name (Go default `logs`).
    pub file_prefix: Option<String>,
    /// The time partition and the prefix before it.
    pub partition: GoGcsPartition,
}

/// `bucket.partition` of the Go `googlecloudstorage` exporter.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GoGcsPartition {
    /// strftime pattern of the time partition (of the data's time here;
    /// Go uses the upload time).
    pub format: Option<String>,
    /// Prefix before the partition.
    pub prefix: Option<String>,
}

/// `exporters.googlecloudstorage`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GcsExporterConfig {
    /// The bucket (required): its name, or the Go exporter's `bucket`
    /// block (whose `file_prefix` and `partition` then take the place of
    /// the keys below).
    pub bucket: GcsBucket,
    /// Prefix of every key.
    pub prefix: String,
    /// strftime pattern of the time partition.
    pub partition_format: String,
    /// `UTC` (default), `Local`, an IANA name, or a fixed offset.
    pub partition_timezone: String,
    /// Prepended to the object's file name.
    pub file_prefix: String,
    /// Base URL of an emulator or private endpoint instead of Google's.
    pub endpoint: String,
    /// A service-account key file; otherwise the standard Google chain
    /// (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application default, metadata server).
    pub credentials_file: String,
    /// Storage class of written objects.
    pub storage_class: String,
    /// `otlp_json`, `otlp_proto` or `parquet` (`body`, `sumo_ic` for logs).
    pub marshaler: Marshaler,
    /// An encoding extension to write objects with instead of `marshaler`
    /// (listed in `service.extensions`).
    pub encoding: String,
    /// `none`, `gzip` or `zstd`.
    pub compression: Compression,
    /// Accepted, no effect (an earlier release's key): uploads are retried
    /// by `retry_on_failure`.
    pub retry_max_attempts: u32,
    /// Accepted, no effect: see `retry_on_failure.max_interval`.
    #[serde(with = "duration")]
    pub retry_max_backoff: Duration,
    /// Per-attempt timeout.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// The core sending queue (memory, or persistent with `storage`).
    pub sending_queue: QueueConfig,
    /// Retries of each upload.
    pub retry_on_failure: RetryConfig,
    /// Size and time thresholds.
    pub batching: Batching,
    /// Parquet options.
    pub parquet: ParquetOptions,
}

impl Default for GcsExporterConfig {
    fn default() -> Self {
        Self {
            bucket: GcsBucket::Name(String::new()),
            prefix: String::new(),
            partition_format: crate::key::DEFAULT_PARTITION_FORMAT.into(),
            partition_timezone: String::new(),
            file_prefix: String::new(),
            endpoint: String::new(),
            credentials_file: String::new(),
            storage_class: String::new(),
            marshaler: Marshaler::OtlpJson,
            encoding: String::new(),
            compression: Compression::None,
            retry_max_attempts: 3,
            retry_max_backoff: Duration::from_secs(20),
            timeout: Duration::from_secs(5),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
            batching: Batching::default(),
            parquet: ParquetOptions::default(),
        }
    }
}

/// `exporters.file`: objects as files under a local folder.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FileExporterConfig {
    /// The folder (created if missing).
    pub directory: String,
    /// Prefix of every key (a sub-folder).
    pub prefix: String,
    /// strftime pattern of the time partition.
    pub partition_format: String,
    /// `UTC` (default), `Local`, an IANA name, or a fixed offset.
    pub partition_timezone: String,
    /// Prepended to the file name.
    pub file_prefix: String,
    /// `otlp_json`, `otlp_proto` or `parquet`.
    pub marshaler: Marshaler,
    /// `none`, `gzip` or `zstd`.
    pub compression: Compression,
    /// The core sending queue (memory, or persistent with `storage`).
    pub sending_queue: QueueConfig,
    /// Retries of each write (a full disk, say).
    pub retry_on_failure: RetryConfig,
    /// Size and time thresholds.
    pub batching: Batching,
    /// Parquet options.
    pub parquet: ParquetOptions,
}

impl Default for FileExporterConfig {
    fn default() -> Self {
        Self {
            directory: "./data".into(),
            prefix: String::new(),
            partition_format: crate::key::DEFAULT_PARTITION_FORMAT.into(),
            partition_timezone: String::new(),
            file_prefix: String::new(),
            marshaler: Marshaler::OtlpJson,
            compression: Compression::None,
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
            batching: Batching::default(),
            parquet: ParquetOptions::default(),
        }
    }
}

/// S3 storage classes accepted by `storage_class`.
pub const S3_STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "OUTPOSTS",
    "GLACIER_IR",
    "SNOW",
    "EXPRESS_ONEZONE",
];

/// GCS storage classes accepted by `storage_class`.
pub const GCS_STORAGE_CLASSES: &[&str] = &["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"];

/// S3 canned ACLs accepted by `acl`.
pub const S3_ACLS: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
];

fn one_of(path: &str, value: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    if value.is_empty() || allowed.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        path,
        format!("`{value}` is not one of {}", allowed.join(", ")),
    ))
}

/// `encoding` must be a component id and the extension a plain name.
fn check_encoding(encoding: &str, file_extension: &str) -> Result<(), ConfigError> {
    if !encoding.is_empty() {
        encoding
            .parse::<otelcol_core::component::ComponentId>()
            .map_err(|e| ConfigError::invalid("encoding", e.to_string()))?;
    }
    if file_extension.contains(['/', '\\']) || file_extension.starts_with('.') {
        return Err(ConfigError::invalid(
            "encoding_file_extension",
            format!(
                "`{file_extension}` must be a file name extension without the dot, such as json"
            ),
        ));
    }
    Ok(())
}

fn check_common(
    queue: &QueueConfig,
    retry: &RetryConfig,
    batching: &Batching,
) -> Result<(), ConfigError> {
    queue.validate()?;
    retry.validate()?;
    if batching.flush_interval.is_zero() || batching.max_items == 0 || batching.max_bytes == 0 {
        return Err(ConfigError::invalid(
            "batching",
            "flush_interval, max_items and max_bytes must be above 0",
        ));
    }
    Ok(())
}

impl S3ExporterConfig {
    /// Checks what serde cannot; the partition format is parsed here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let u = &self.s3uploader;
        if u.s3_bucket.trim().is_empty() {
            return Err(ConfigError::invalid("s3uploader.s3_bucket", "is required"));
        }
        if u.region.trim().is_empty() && u.endpoint.trim().is_empty() {
            return Err(ConfigError::invalid(
                "s3uploader.region",
                "is required when no endpoint is set",
            ));
        }
        PartitionFormat::parse(&u.s3_partition_format, &u.s3_partition_timezone)
            .map_err(|m| ConfigError::invalid("s3uploader.s3_partition_format", m))?;
        one_of(
            "s3uploader.storage_class",
            &u.storage_class,
            S3_STORAGE_CLASSES,
        )?;
        one_of("s3uploader.acl", &u.acl, S3_ACLS)?;
        one_of(
            "s3uploader.retry_mode",
            &u.retry_mode,
            &["standard", "adaptive", "nop"],
        )?;
        one_of(
            "s3uploader.unique_key_func_name",
            &u.unique_key_func_name,
            &["uuidv7"],
        )?;
        check_encoding(&self.encoding, &self.encoding_file_extension)?;
        if self.marshaler == Marshaler::SumoIc && u.compression != Compression::None {
            return Err(ConfigError::invalid(
                "s3uploader.compression",
                "the sumo_ic marshaler writes uncompressed objects (as in Go); remove compression",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid("timeout", "must be above 0"));
        }
        check_common(&self.sending_queue, &self.retry_on_failure, &self.batching)
    }
}

impl GcsExporterConfig {
    /// The bucket's name.
    pub fn bucket_name(&self) -> &str {
        match &self.bucket {
            GcsBucket::Name(n) => n,
            GcsBucket::Go(b) => &b.name,
        }
    }

    /// The Go block's value when it gives one, else the key of this config.
    fn go_or<'a>(
        &'a self,
        go: impl Fn(&'a GoGcsBucket) -> Option<&'a String>,
        own: &'a str,
    ) -> &'a str {
        match &self.bucket {
            GcsBucket::Go(b) => go(b).map(String::as_str).unwrap_or(own),
            GcsBucket::Name(_) => own,
        }
    }

    /// The prefix before the partition.
    pub fn key_prefix(&self) -> &str {
        self.go_or(|b| b.partition.prefix.as_ref(), &self.prefix)
    }

    /// The strftime pattern of the partition.
    pub fn partition(&self) -> &str {
        self.go_or(|b| b.partition.format.as_ref(), &self.partition_format)
    }

    /// Prepended to each object's file name. The Go block's `file_prefix`
    /// is followed by `_`, as the Go exporter names its objects
    /// (`logs_…`).
    pub fn object_file_prefix(&self) -> String {
        match &self.bucket {
            GcsBucket::Go(GoGcsBucket {
                file_prefix: Some(p),
                ..
            }) if !p.is_empty() => format!("{p}_"),
            _ => self.file_prefix.clone(),
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bucket_name().trim().is_empty() {
            let path = match self.bucket {
                GcsBucket::Name(_) => "bucket",
                GcsBucket::Go(_) => "bucket.name",
            };
            return Err(ConfigError::invalid(path, "is required"));
        }
        PartitionFormat::parse(self.partition(), &self.partition_timezone)
            .map_err(|m| ConfigError::invalid("partition_format", m))?;
        one_of("storage_class", &self.storage_class, GCS_STORAGE_CLASSES)?;
        check_encoding(&self.encoding, "")?;
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid("timeout", "must be above 0"));
        }
        check_common(&self.sending_queue, &self.retry_on_failure, &self.batching)
    }
}

impl FileExporterConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.directory.trim().is_empty() {
            return Err(ConfigError::invalid("directory", "is required"));
        }
        PartitionFormat::parse(&self.partition_format, &self.partition_timezone)
            .map_err(|m| ConfigError::invalid("partition_format", m))?;
        check_common(&self.sending_queue, &self.retry_on_failure, &self.batching)
    }
}
