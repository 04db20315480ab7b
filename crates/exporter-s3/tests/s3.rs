//! `awss3` against a real S3-compatible server (moto) on 127.0.0.1.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use otelcol_core::component::ExporterFactory;
use otelcol_core::pdata::{Logs, Metrics};
use otelcol_exporter_s3::S3ExporterFactory;
use prost::Message;

fn config(endpoint: &str, bucket: &str, extra: &str) -> String {
    config_with_retry(
        endpoint,
        bucket,
        "{initial_interval: 50ms, max_interval: 200ms}",
        extra,
    )
}

fn config_with_retry(endpoint: &str, bucket: &str, retry: &str, extra: &str) -> String {
    format!(
        "retry_on_failure: {retry}\ns3uploader:\n  region: us-east-1\n  s3_bucket: {bucket}\n  endpoint: {endpoint}\n  s3_force_path_style: true\n  disable_ssl: true\n{extra}"
    )
}

fn uuid_name(name: &str, prefix: &str, ext: &str) -> bool {
    let Some(id) = name.strip_prefix(prefix).and_then(|n| n.strip_suffix(ext)) else {
        return false;
    };
    id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4 && &id[14..15] == "7"
}

fn aws_env() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
}

#[tokio::test]
async fn objects_land_under_data_time_partitions_with_the_exact_content() {
    aws_env();
    let moto = Moto::start();
    moto.create_bucket("totals").await;
    let yaml = config(
        &moto.endpoint(),
        "totals",
        "  s3_base_prefix: base\n  s3_prefix: ai\n  file_prefix: otel-\n",
    );
    let (exp, s) = metrics_exporter(&S3ExporterFactory, "awss3", &yaml);
    exp.start(&host()).await.unwrap();
    // Two windows a minute apart in one batch, and one more batch: the
    // objects are split by the data's minute, not by the upload time.
    let mut first = totals(
        "claude-code",
        T0,
        &[("ana@example.com", 120.0), ("bo@example.com", 7.5)],
    );
    let second = totals("claude-code", T0 + MINUTE, &[("ana@example.com", 30.0)]);
    first
        .resource_metrics
        .extend(second.resource_metrics.clone());
    exp.consume(batch(first)).await.unwrap();
    exp.shutdown().await.unwrap();

    let reader = moto.reader("totals");
    let keys = keys(&reader).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    let dir47 = "base/ai/year=2026/month=11/day=21/hour=13/minute=47/";
    let dir48 = "base/ai/year=2026/month=11/day=21/hour=13/minute=48/";
    assert!(keys[0].starts_with(dir47), "{keys:?}");
    assert!(keys[1].starts_with(dir48), "{keys:?}");
    assert!(
        uuid_name(&keys[0][dir47.len()..], "otel-metrics_", ".json"),
        "{keys:?}"
    );

    let m47: Metrics = serde_json::from_slice(&get(&reader, &keys[0]).await).unwrap();
    assert_eq!(
        m47,
        totals(
            "claude-code",
            T0,
            &[("ana@example.com", 120.0), ("bo@example.com", 7.5)]
        )
    );
    let m48: Metrics = serde_json::from_slice(&get(&reader, &keys[1]).await).unwrap();
    assert_eq!(m48, second);
    let rendered = s.metrics.render();
    assert!(
        rendered.contains("otelcol_exporter_sent_metric_points_total{exporter=\"awss3\"} 3"),
        "{rendered}"
    );
}

/// A contrib MinIO config: `endpoint: http://host:port` and no
/// `disable_ssl` (Go uses an endpoint given with a scheme as it is).
#[tokio::test]
async fn an_http_endpoint_without_disable_ssl_writes_objects() {
    aws_env();
    let moto = Moto::start();
    moto.create_bucket("minio").await;
    let yaml = format!(
        "s3uploader:\n  region: us-east-1\n  s3_bucket: minio\n  endpoint: {}\n  s3_force_path_style: true\n",
        moto.endpoint()
    );
    assert!(
        moto.endpoint().starts_with("http://"),
        "{}",
        moto.endpoint()
    );
    let (exp, _) = metrics_exporter(&S3ExporterFactory, "awss3", &yaml);
    exp.start(&host()).await.unwrap();
    let sent = totals("claude-code", T0, &[("ana@example.com", 2.5)]);
    exp.consume(batch(sent.clone())).await.unwrap();
    exp.shutdown().await.unwrap();
    let reader = moto.reader("minio");
    let keys = keys(&reader).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let got: Metrics = serde_json::from_slice(&get(&reader, &keys[0]).await).unwrap();
    assert_eq!(got, sent);
}

#[tokio::test]
async fn a_failed_first_upload_is_retried_into_exactly_one_object() {
    aws_env();
    let moto = Moto::start();
    moto.create_bucket("retry").await;
    let (proxy, puts) = flaky_proxy(moto.port, 1).await;
    let yaml = config(&format!("http://127.0.0.1:{proxy}"), "retry", "");
    let (exp, s) = metrics_exporter(&S3ExporterFactory, "awss3", &yaml);
    exp.start(&host()).await.unwrap();
    exp.consume(batch(totals(
        "claude-code",
        T0,
        &[("ana@example.com", 1.0)],
    )))
    .await
    .unwrap();
    exp.shutdown().await.unwrap();

    let keys = keys(&moto.reader("retry")).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let puts = puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 2, "one refused attempt and one retry: {puts:?}");
    assert_eq!(puts[0], puts[1], "the retry reuses the object's key");
    assert_eq!(puts[0].replace("%3D", "="), format!("/retry/{}", keys[0]));
    let r = s.metrics.render();
    assert!(
        r.contains("otelcol_exporter_sent_metric_points_total{exporter=\"awss3\"} 1"),
        "{r}"
    );
    assert!(
        r.contains("otelcol_exporter_send_failed_metric_points_total{exporter=\"awss3\"} 0"),
        "{r}"
    );
}

#[tokio::test]
async fn uploads_that_keep_failing_are_dropped_counted_and_never_duplicated() {
    aws_env();
    let moto = Moto::start();
    moto.create_bucket("down").await;
    let (proxy, puts) = flaky_proxy(moto.port, 100).await;
    // The retry budget (retry_on_failure.max_elapsed_time) runs out.
    let yaml = config_with_retry(
        &format!("http://127.0.0.1:{proxy}"),
        "down",
        "{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 400ms}",
        "",
    );
    let (exp, s) = metrics_exporter(&S3ExporterFactory, "awss3", &yaml);
    exp.start(&host()).await.unwrap();
    exp.consume(batch(totals(
        "claude-code",
        T0,
        &[("a@x", 1.0), ("b@x", 2.0)],
    )))
    .await
    .unwrap();
    exp.shutdown().await.unwrap();
    assert!(keys(&moto.reader("down")).await.is_empty());
    let puts = puts.lock().unwrap().clone();
    assert!(
        puts.len() >= 3,
        "retried until the budget ran out: {puts:?}"
    );
    assert!(
        puts.iter().all(|p| p == &puts[0]),
        "one object key: {puts:?}"
    );
    let r = s.metrics.render();
    assert!(
        r.contains("otelcol_exporter_send_failed_metric_points_total{exporter=\"awss3\"} 2"),
        "{r}"
    );
    assert!(
        r.contains("otelcol_exporter_sent_metric_points_total{exporter=\"awss3\"} 0"),
        "{r}"
    );
}

#[tokio::test]
async fn gzip_and_zstd_objects_decompress_to_the_payloads() {
    aws_env();
    let moto = Moto::start();
    moto.create_bucket("packed").await;
    let data = totals("claude-code", T0, &[("ana@example.com", 42.0)]);
    for (prefix, extra) in [
        ("gz", "  compression: gzip\nmarshaler: otlp_json\n"),
        ("zst", "  compression: zstd\nmarshaler: otlp_proto\n"),
    ] {
        let yaml = config(
            &moto.endpoint(),
            "packed",
            &format!("  s3_prefix: {prefix}\n{extra}"),
        );
        let (exp, _) = metrics_exporter(&S3ExporterFactory, "awss3", &yaml);
        exp.start(&host()).await.unwrap();
        exp.consume(batch(data.clone())).await.unwrap();
        exp.shutdown().await.unwrap();
    }
    let reader = moto.reader("packed");
    let keys = keys(&reader).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys[0].starts_with("gz/") && keys[0].ends_with(".json.gz"),
        "{keys:?}"
    );
    assert!(
        keys[1].starts_with("zst/") && keys[1].ends_with(".binpb.zst"),
        "{keys:?}"
    );

    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&get(&reader, &keys[0]).await[..])
        .read_to_end(&mut json)
        .unwrap();
    assert_eq!(serde_json::from_slice::<Metrics>(&json).unwrap(), data);
    let proto = zstd::decode_all(&get(&reader, &keys[1]).await[..]).unwrap();
    assert_eq!(Metrics::decode(&proto[..]).unwrap(), data);

    assert_eq!(
        moto.describe("packed", &keys[0]),
        "STANDARD application/json gzip ['FULL_CONTROL']"
    );
    assert_eq!(
        moto.describe("packed", &keys[1]),
        "STANDARD application/x-protobuf zstd ['FULL_CONTROL']"
    );
}

#[tokio::test]
async fn storage_class_acl_and_resource_prefix_are_applied() {
    aws_env();
    let moto = Moto::start();
    moto.create_bucket("classy").await;
    let yaml = config(
        &moto.endpoint(),
        "classy",
        "  s3_prefix: default\n  storage_class: STANDARD_IA\n  acl: public-read\nresource_attrs_to_s3:\n  s3_prefix: service.name\n",
    );
    let s = settings("awss3");
    let exp = S3ExporterFactory.create_logs(s, &raw(&yaml)).unwrap();
    exp.start(&host()).await.unwrap();
    let mut logs: Logs = events("claude-code", T0, &["one", "two"]);
    let mut bare = events("x", T0, &["three"]);
    bare.resource_logs[0].resource = None;
    logs.resource_logs.extend(bare.resource_logs);
    exp.consume(batch(logs)).await.unwrap();
    exp.shutdown().await.unwrap();

    let keys = keys(&moto.reader("classy")).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys[0].starts_with("claude-code/year=2026/month=11/day=21/hour=13/minute=47/logs_"),
        "{keys:?}"
    );
    assert!(keys[1].starts_with("default/year=2026/"), "{keys:?}");
    assert_eq!(
        moto.describe("classy", &keys[0]),
        "STANDARD_IA application/json None ['FULL_CONTROL', 'READ']"
    );
}

/// `resource_attrs_to_s3.s3_bucket`: a resource naming a bucket has its
/// data written there; one naming none, or a value that is not a bucket
/// name, goes to `s3uploader.s3_bucket`.
#[tokio::test]
async fn a_resource_attribute_picks_the_bucket() {
    aws_env();
    let moto = Moto::start();
    moto.create_bucket("main-bucket").await;
    moto.create_bucket("team-a").await;
    let yaml = config(
        &moto.endpoint(),
        "main-bucket",
        "resource_attrs_to_s3:\n  s3_bucket: tenant.bucket\n  s3_prefix: service.name\n",
    );
    let exp = S3ExporterFactory
        .create_logs(settings("awss3"), &raw(&yaml))
        .unwrap();
    exp.start(&host()).await.unwrap();
    let tenant = |service: &str, bucket: Option<&str>| {
        let mut l = events(service, T0, &[service]);
        if let Some(b) = bucket {
            let r = l.resource_logs[0].resource.as_mut().unwrap();
            r.attributes
                .push(otelcol_core::pdata::string_attribute("tenant.bucket", b));
        }
        l.resource_logs
    };
    let mut logs = Logs::default();
    logs.resource_logs.extend(tenant("svc-a", Some("team-a")));
    logs.resource_logs.extend(tenant("svc-b", None));
    logs.resource_logs
        .extend(tenant("svc-c", Some("Not_A/Bucket")));
    exp.consume(batch(logs)).await.unwrap();
    exp.shutdown().await.unwrap();

    let team = moto.reader("team-a");
    let in_team = keys(&team).await;
    assert_eq!(in_team.len(), 1, "{in_team:?}");
    assert!(in_team[0].starts_with("svc-a/year=2026/"), "{in_team:?}");
    let written: Logs = serde_json::from_slice(&get(&team, &in_team[0]).await).unwrap();
    assert_eq!(written.resource_logs, tenant("svc-a", Some("team-a")));

    let main = keys(&moto.reader("main-bucket")).await;
    assert_eq!(main.len(), 2, "{main:?}");
    assert!(main[0].starts_with("svc-b/year=2026/"), "{main:?}");
    assert!(main[1].starts_with("svc-c/year=2026/"), "{main:?}");
}

/// The Go exporter's line marshalers for logs: `body` (each body as a
/// line of text) and `sumo_ic` (Sumo Logic's installed-collector lines);
/// neither takes metrics.
#[tokio::test]
async fn body_and_sumo_ic_write_one_line_per_log_record() {
    aws_env();
    let moto = Moto::start();
    moto.create_bucket("lines").await;
    let mut logs: Logs = events("claude-code", T0, &["first prompt", "second\tline"]);
    let resource = logs.resource_logs[0].resource.as_mut().unwrap();
    for (k, v) in [
        ("_sourceName", "claude"),
        ("_sourceHost", "laptop-7"),
        ("_sourceCategory", "ai/\"tools\""),
    ] {
        resource
            .attributes
            .push(otelcol_core::pdata::string_attribute(k, v));
    }
    logs.resource_logs[0].scope_logs[0].log_records[1].observed_time_unix_nano = T0 + 5;
    for marshaler in ["body", "sumo_ic"] {
        let yaml = config(
            &moto.endpoint(),
            "lines",
            &format!("  s3_prefix: {marshaler}\nmarshaler: {marshaler}\n"),
        );
        let exp = S3ExporterFactory
            .create_logs(settings("awss3"), &raw(&yaml))
            .unwrap();
        exp.start(&host()).await.unwrap();
        exp.consume(batch(logs.clone())).await.unwrap();
        exp.shutdown().await.unwrap();
        let refused = S3ExporterFactory
            .create_metrics(settings("awss3"), &raw(&yaml))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            refused.contains(&format!("the {marshaler} marshaler does not write metrics")),
            "{refused}"
        );
    }
    let reader = moto.reader("lines");
    let keys = keys(&reader).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys[0].starts_with("body/year=2026/") && keys[0].ends_with(".txt"),
        "{keys:?}"
    );
    assert_eq!(
        String::from_utf8(get(&reader, &keys[0]).await).unwrap(),
        "first prompt\nsecond\tline\n"
    );
    assert_eq!(
        moto.describe("lines", &keys[0]),
        "STANDARD text/plain; charset=utf-8 None ['FULL_CONTROL']"
    );
    assert!(
        keys[1].starts_with("sumo_ic/year=2026/") && keys[1].ends_with(".json"),
        "{keys:?}"
    );
    let fields = r#""fields":{"service.name":"claude-code"}"#;
    let source = r#""sourceName":"claude","sourceHost":"laptop-7","sourceCategory":"ai/\"tools\"""#;
    assert_eq!(
        String::from_utf8(get(&reader, &keys[1]).await).unwrap(),
        format!(
            "{{\"date\": \"1970-01-01 00:00:00 +0000 UTC\",{source},{fields},\"message\":{{\"log\":\"first prompt\",\"user.email\":\"ana@example.com\"}}}}\n\
             {{\"date\": \"2026-11-21 13:47:05.000000005 +0000 UTC\",{source},{fields},\"message\":{{\"log\":\"second\\tline\",\"user.email\":\"ana@example.com\"}}}}\n"
        )
    );
}

/// `encoding` names an encoding extension (here the real `otlp_encoding`)
/// that writes objects instead of the marshaler; `encoding_file_extension`
/// names their files. An encoding that is not a running extension fails
/// the start, naming it.
#[tokio::test]
async fn an_encoding_extension_writes_the_objects() {
    use otelcol_core::component::{ComponentId, ExtensionFactory, Kind};
    aws_env();
    let moto = Moto::start();
    moto.create_bucket("encoded").await;
    let id: ComponentId = "otlp_encoding/proto".parse().unwrap();
    let extension = otelcol_extension_encoding::OtlpEncodingFactory
        .create(
            otelcol_core::component::CreateSettings::standalone(id.clone(), Kind::Extension),
            &raw("protocol: otlp_proto"),
        )
        .unwrap();
    let with_encoding =
        otelcol_core::component::Host::new([(id, extension)].into(), Default::default());
    let yaml = config(
        &moto.endpoint(),
        "encoded",
        "marshaler: otlp_json\nencoding: otlp_encoding/proto\nencoding_file_extension: pb\n",
    );
    let (exp, _) = metrics_exporter(&S3ExporterFactory, "awss3", &yaml);
    exp.start(&with_encoding).await.unwrap();
    let data = totals("claude-code", T0, &[("ana@example.com", 3.0)]);
    exp.consume(batch(data.clone())).await.unwrap();
    exp.shutdown().await.unwrap();
    let reader = moto.reader("encoded");
    let keys = keys(&reader).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with(".pb"), "{keys:?}");
    assert_eq!(
        Metrics::decode(&get(&reader, &keys[0]).await[..]).unwrap(),
        data
    );
    assert_eq!(
        moto.describe("encoded", &keys[0]),
        "STANDARD application/x-protobuf None ['FULL_CONTROL']"
    );

    let (missing, _) = metrics_exporter(&S3ExporterFactory, "awss3", &yaml);
    let e = missing.start(&host()).await.unwrap_err().to_string();
    assert!(
        e.contains("encoding `otlp_encoding/proto` is not a configured extension listed in service.extensions"),
        "{e}"
    );
}

#[tokio::test]
async fn small_batches_are_combined_until_a_threshold() {
    aws_env();
    let moto = Moto::start();
    moto.create_bucket("combined").await;
    let yaml = config(
        &moto.endpoint(),
        "combined",
        "batching:\n  flush_interval: 300ms\n  max_items: 1000\n",
    );
    let (exp, _) = metrics_exporter(&S3ExporterFactory, "awss3", &yaml);
    exp.start(&host()).await.unwrap();
    for i in 0..5 {
        exp.consume(batch(totals(
            "claude-code",
            T0,
            &[("ana@example.com", i as f64)],
        )))
        .await
        .unwrap();
    }
    let reader = moto.reader("combined");
    assert!(
        keys(&reader).await.is_empty(),
        "nothing before the interval"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let found = loop {
        let k = keys(&reader).await;
        if !k.is_empty() || std::time::Instant::now() > deadline {
            break k;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(found.len(), 1, "{found:?}");
    let m: Metrics = serde_json::from_slice(&get(&reader, &found[0]).await).unwrap();
    assert_eq!(m.resource_metrics.len(), 5);
    exp.shutdown().await.unwrap();
    assert_eq!(
        keys(&reader).await.len(),
        1,
        "nothing left to write at shutdown"
    );
}

#[tokio::test]
async fn start_fails_clearly_for_a_missing_bucket_and_survives_an_unreachable_endpoint() {
    aws_env();
    let moto = Moto::start();
    let (exp, _) = metrics_exporter(
        &S3ExporterFactory,
        "awss3",
        &config(&moto.endpoint(), "nope", ""),
    );
    let e = exp.start(&host()).await.unwrap_err().to_string();
    let expected = format!(
        "exporter awss3: s3://nope at {}: the bucket does not exist (or the endpoint serves no such bucket): ",
        moto.endpoint()
    );
    assert!(e.starts_with(&expected), "{e}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{closed}");
    // An outage at start (a restart during one): the exporter starts and
    // accepts (collector-bin's persistent_queue_s3 shows the upload once
    // the endpoint answers again).
    let (exp, _) = metrics_exporter(&S3ExporterFactory, "awss3", &config(&endpoint, "any", ""));
    exp.start(&host()).await.unwrap();
    exp.consume(batch(totals(
        "claude-code",
        T0,
        &[("ana@example.com", 1.0)],
    )))
    .await
    .unwrap();
}
