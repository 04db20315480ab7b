//! `googlecloudstorage` through object_store's GCS client, against a local
//! server speaking the XML API. No GCS emulator that implements the upload
//! style of that client installs here (the PyPI `gcp-storage-emulator`
//! answers 501 to it), so the server is moto's S3 endpoint: GCS's XML API is
//! S3-compatible for `PUT /{bucket}/{object}` and for the listing the start
//! check does. Bucket names here have no `-`: the GCS client percent-encodes
//! it in the path, which moto does not decode. What runs is our config
//! mapping, the GCS client (with a placeholder token, as for an emulator)
//! and the key layout.

mod common;

use common::*;
use otelcol_core::pdata::Metrics;
use otelcol_exporter_s3::GcsExporterFactory;

#[tokio::test]
async fn objects_land_in_the_bucket_under_the_prefix_and_data_time_partition() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let moto = Moto::start();
    moto.create_bucket("gcstotals").await;
    let yaml = format!(
        "bucket: gcstotals\nendpoint: {}\nprefix: ai/totals\npartition_format: dt=%Y-%m-%d/hour=%H\nfile_prefix: collector-1-\n",
        moto.endpoint()
    );
    let (exp, s) = metrics_exporter(&GcsExporterFactory, "googlecloudstorage", &yaml);
    exp.start(&host()).await.unwrap();
    let data = totals("claude-code", T0, &[("ana@example.com", 9.0)]);
    exp.consume(batch(data.clone())).await.unwrap();
    exp.shutdown().await.unwrap();

    let reader = moto.reader("gcstotals");
    let keys = keys(&reader).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let dir = "ai/totals/dt=2026-11-21/hour=13/collector-1-metrics_";
    assert!(
        keys[0].starts_with(dir) && keys[0].ends_with(".json"),
        "{keys:?}"
    );
    let back: Metrics = serde_json::from_slice(&get(&reader, &keys[0]).await).unwrap();
    assert_eq!(back, data);
    assert!(s
        .metrics
        .render()
        .contains("otelcol_exporter_sent_metric_points_total{exporter=\"googlecloudstorage\"} 1"));
}

#[tokio::test]
async fn a_missing_bucket_fails_at_start() {
    let moto = Moto::start();
    let yaml = format!("bucket: absent\nendpoint: {}\n", moto.endpoint());
    let (exp, _) = metrics_exporter(&GcsExporterFactory, "googlecloudstorage", &yaml);
    let e = exp.start(&host()).await.unwrap_err().to_string();
    let expected = format!(
        "exporter googlecloudstorage: gs://absent at {}: the bucket does not exist (or the endpoint serves no such bucket): ",
        moto.endpoint()
    );
    assert!(e.starts_with(&expected), "{e}");
}

#[tokio::test]
async fn the_go_bucket_block_names_the_bucket_prefix_partition_and_file_prefix() {
    let moto = Moto::start();
    moto.create_bucket("gototals").await;
    let yaml = format!(
        "endpoint: {}\nbucket:\n  name: gototals\n  project_id: p\n  file_prefix: logs\n  partition: {{format: 'year=%Y/month=%m', prefix: archive}}\n",
        moto.endpoint()
    );
    let (exp, _) = metrics_exporter(&GcsExporterFactory, "googlecloudstorage", &yaml);
    exp.start(&host()).await.unwrap();
    let data = totals("claude-code", T0, &[("ana@example.com", 3.0)]);
    exp.consume(batch(data.clone())).await.unwrap();
    exp.shutdown().await.unwrap();
    let reader = moto.reader("gototals");
    let keys = keys(&reader).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("archive/year=2026/month=11/logs_metrics_"),
        "{keys:?}"
    );
    let back: Metrics = serde_json::from_slice(&get(&reader, &keys[0]).await).unwrap();
    assert_eq!(back, data);
}
