//! Config keys: a Go `awss3` config decodes unchanged, and wrong values are
//! refused at config time with the key and the accepted values.

mod common;

use common::raw;
use otelcol_core::component::Factory;
use otelcol_exporter_s3::{
    FileExporterFactory, GcsExporterFactory, S3ExporterConfig, S3ExporterFactory,
};

/// The Go exporter's documented keys, as its users write them.
const GO_CONFIG: &str = r#"
s3uploader:
  region: eu-central-1
  s3_bucket: databucket
  s3_prefix: metric
  s3_partition_format: "year=%Y/month=%m/day=%d/hour=%H"
  s3_partition_timezone: "UTC"
  file_prefix: collector-1-
  endpoint: https://s3.example.internal
  s3_force_path_style: true
  disable_ssl: false
  compression: gzip
  storage_class: STANDARD_IA
  acl: bucket-owner-full-control
  retry_mode: nop
  retry_max_attempts: 5
  retry_max_backoff: 30s
marshaler: otlp_proto
resource_attrs_to_s3:
  s3_prefix: com.awss3.prefix
  s3_bucket: com.awss3.bucket
timeout: 10s
sending_queue:
  enabled: true
  num_consumers: 10
  queue_size: 1000
"#;

#[test]
fn a_go_awss3_config_runs_unchanged() {
    S3ExporterFactory.validate(&raw(GO_CONFIG)).unwrap();
    let c: S3ExporterConfig = otelcol_core::config::decode(&raw(GO_CONFIG)).unwrap();
    assert_eq!(c.s3uploader.retry_max_attempts, 5);
    assert_eq!(c.s3uploader.retry_max_backoff.as_secs(), 30);
    assert_eq!(c.resource_attrs_to_s3.s3_prefix, "com.awss3.prefix");
    assert_eq!(c.resource_attrs_to_s3.s3_bucket, "com.awss3.bucket");
    assert_eq!(c.timeout.as_secs(), 10);
    // The AWS SDK's attempt count would drop data in an outage: the keys
    // are accepted with a start-up warning; retry_on_failure retries.
    let no_effect: Vec<String> = S3ExporterFactory
        .no_effect_keys()
        .into_iter()
        .map(|k| k.path)
        .collect();
    for key in [
        "s3uploader.retry_mode",
        "s3uploader.retry_max_attempts",
        "s3uploader.retry_max_backoff",
    ] {
        assert!(no_effect.iter().any(|k| k == key), "{no_effect:?}");
    }
}

#[test]
fn an_endpoint_keeps_its_scheme_and_disable_ssl_only_picks_a_missing_one() {
    let uploader = |extra: &str| -> otelcol_exporter_s3::config::S3Uploader {
        let yaml = format!("s3uploader:\n  s3_bucket: b\n{extra}");
        S3ExporterFactory.validate(&raw(&yaml)).unwrap();
        let c: S3ExporterConfig = otelcol_core::config::decode(&raw(&yaml)).unwrap();
        c.s3uploader
    };
    let minio = uploader("  endpoint: http://minio:9000/\n");
    assert_eq!(
        (minio.endpoint_url().as_str(), minio.plain_http()),
        ("http://minio:9000", true)
    );
    let tls = uploader("  endpoint: https://s3.internal\n  disable_ssl: true\n");
    assert_eq!(
        (tls.endpoint_url().as_str(), tls.plain_http()),
        ("https://s3.internal", false)
    );
    let bare = uploader("  endpoint: minio:9000\n  disable_ssl: true\n");
    assert_eq!(
        (bare.endpoint_url().as_str(), bare.plain_http()),
        ("http://minio:9000", true)
    );
    let bare_tls = uploader("  endpoint: s3.internal\n");
    assert_eq!(
        (bare_tls.endpoint_url().as_str(), bare_tls.plain_http()),
        ("https://s3.internal", false)
    );
    let aws = uploader("");
    assert_eq!((aws.endpoint_url().as_str(), aws.plain_http()), ("", false));
}

fn s3_error(uploader_extra: &str, extra: &str) -> String {
    let yaml = format!("s3uploader:\n  s3_bucket: b\n{uploader_extra}{extra}");
    S3ExporterFactory
        .validate(&raw(&yaml))
        .unwrap_err()
        .to_string()
}

#[test]
fn wrong_values_are_named_at_config_time() {
    assert_eq!(
        s3_error("  storage_class: FROZEN\n", ""),
        "s3uploader.storage_class: `FROZEN` is not one of STANDARD, REDUCED_REDUNDANCY, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER, DEEP_ARCHIVE, OUTPOSTS, GLACIER_IR, SNOW, EXPRESS_ONEZONE"
    );
    assert_eq!(
        s3_error("  acl: everyone\n", ""),
        "s3uploader.acl: `everyone` is not one of private, public-read, public-read-write, authenticated-read, aws-exec-read, bucket-owner-read, bucket-owner-full-control"
    );
    assert_eq!(
        s3_error("  s3_partition_format: \"year=%Y/%Q\"\n", ""),
        "s3uploader.s3_partition_format: `year=%Y/%Q` is not a valid strftime pattern (use %Y, %m, %d, %H, %M, %S, %j, …)"
    );
    assert_eq!(
        s3_error("  s3_partition_timezone: Mars/Olympus\n", ""),
        "s3uploader.s3_partition_format: time zone `Mars/Olympus` is not UTC, Local, an IANA name like Europe/Berlin or a fixed offset like +02:00"
    );
    assert_eq!(
        s3_error("", "sending_queue:\n  num_consumers: 0\n"),
        "sending_queue.num_consumers: must be above 0"
    );
    assert_eq!(
        s3_error("", "marshaler: csv\n"),
        "marshaler: unknown value `csv`, expected one of `otlp_json`, `otlp_proto`, `parquet`, `sumo_ic`, `body`"
    );
    assert_eq!(
        s3_error("  compression: gzip\n", "marshaler: sumo_ic\n"),
        "s3uploader.compression: the sumo_ic marshaler writes uncompressed objects (as in Go); remove compression"
    );
    assert_eq!(
        s3_error("  compression: brotli\n", ""),
        "s3uploader.compression: unknown value `brotli`, expected one of `none`, `gzip`, `zstd`"
    );
    assert_eq!(
        s3_error("", "encoding: \"text encoding!\"\n"),
        "encoding: invalid component id `text encoding!`: the type may hold only letters, digits and `_`"
    );
    assert_eq!(
        s3_error("", "encoding: otlp_encoding\nencoding_file_extension: .json\n"),
        "encoding_file_extension: `.json` must be a file name extension without the dot, such as json"
    );
    assert_eq!(
        S3ExporterFactory
            .validate(&raw("s3uploader:\n  region: us-east-1\n"))
            .unwrap_err()
            .to_string(),
        "s3uploader.s3_bucket: is required"
    );
    assert_eq!(
        GcsExporterFactory
            .validate(&raw("bucket: b\nstorage_class: GLACIER\n"))
            .unwrap_err()
            .to_string(),
        "storage_class: `GLACIER` is not one of STANDARD, NEARLINE, COLDLINE, ARCHIVE"
    );
    assert_eq!(
        FileExporterFactory
            .validate(&raw("directory: ./d\nbatching:\n  max_items: 0\n"))
            .unwrap_err()
            .to_string(),
        "batching: flush_interval, max_items and max_bytes must be above 0"
    );
}
