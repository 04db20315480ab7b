//! The embedded default config, run as a newcomer would (no --config):
//! points sent over OTLP/HTTP come out as per-user totals in a Parquet file
//! under DATA_DIR (./data by default), written at the latest at shutdown.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn find_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            find_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test]
async fn the_default_config_writes_parquet_totals_under_the_data_dir() {
    let data = std::env::temp_dir().join(format!("otelcol-local-default-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (http, grpc, health, metrics) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let collector = common::Collector::spawn(
        &[],
        &[
            ("DATA_DIR", data.display().to_string()),
            ("OTLP_HTTP_ENDPOINT", format!("127.0.0.1:{http}")),
            ("OTLP_GRPC_ENDPOINT", format!("127.0.0.1:{grpc}")),
            ("HEALTH_ENDPOINT", format!("127.0.0.1:{health}")),
            ("METRICS_ENDPOINT", format!("127.0.0.1:{metrics}")),
        ],
    );
    common::wait_healthy(&format!("http://127.0.0.1:{health}/")).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let point = |user: &str, v: f64| {
        format!(
            r#"{{"timeUnixNano": "{now}", "asDouble": {v}, "attributes": [{{"key": "user.email", "value": {{"stringValue": "{user}"}}}}]}}"#
        )
    };
    let body = format!(
        r#"{{"resourceMetrics": [{{"resource": {{"attributes": [{{"key": "service.name", "value": {{"stringValue": "claude-code"}}}}]}},
        "scopeMetrics": [{{"metrics": [{{"name": "claude_code.cost.usage", "unit": "USD",
        "sum": {{"aggregationTemporality": 1, "isMonotonic": true, "dataPoints": [{}, {}, {}]}}}}]}}]}}]}}"#,
        point("ana@example.com", 0.5),
        point("ana@example.com", 1.25),
        point("bo@example.com", 2.0)
    );
    let (status, _) = common::http(
        "POST",
        &format!("http://127.0.0.1:{http}/v1/metrics"),
        &[("content-type", "application/json")],
        body.into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let (ok, log) = collector.stop();
    assert!(ok, "{}", log.join("\n"));

    let mut files = vec![];
    find_files(&data.join("totals"), &mut files);
    assert_eq!(files.len(), 1, "{files:?}\n{}", log.join("\n"));
    let rel = files[0]
        .strip_prefix(&data)
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert!(
        rel.starts_with("totals/year=") && rel.contains("/metrics_"),
        "{rel}"
    );
    assert!(rel.ends_with(".parquet"), "{rel}");

    let bytes = bytes::Bytes::from(std::fs::read(&files[0]).unwrap());
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = vec![];
    for batch in reader {
        let b = batch.unwrap();
        let user = b.column_by_name("user").unwrap().as_string::<i32>();
        let name = b.column_by_name("metric_name").unwrap().as_string::<i32>();
        let value = b
            .column_by_name("value")
            .unwrap()
            .as_primitive::<Float64Type>();
        let temporality = b.column_by_name("temporality").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            assert!(value.is_valid(i));
            rows.push((
                user.value(i).to_string(),
                name.value(i).to_string(),
                value.value(i),
                temporality.value(i).to_string(),
            ));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        rows,
        [
            (
                "ana@example.com".into(),
                "claude_code.cost.usage".into(),
                1.75,
                "delta".into()
            ),
            (
                "bo@example.com".into(),
                "claude_code.cost.usage".into(),
                2.0,
                "delta".into()
            ),
        ]
    );
    let _ = std::fs::remove_dir_all(&data);
}
