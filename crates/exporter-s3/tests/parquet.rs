//! The Parquet marshaler: files read back with the `parquet` crate (every
//! column of known rows), and by pyarrow (PyPI, in `.ci/venv`) from a file
//! the `file` exporter wrote.

mod common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, TimestampNanosecondType, UInt64Type};
use arrow_array::{Array, MapArray, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use common::*;
use otelcol_core::pdata::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
};
use otelcol_core::pdata::{string_attribute, Metrics};
use otelcol_exporter_s3::config::{Compression, Marshaler};
use otelcol_exporter_s3::encode::encode;
use otelcol_exporter_s3::FileExporterFactory;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// `data` as the Parquet marshaler writes it with `compression`, users
/// from `user.email`.
fn parquet<T: otelcol_exporter_s3::signal::Signal>(
    data: &T,
    compression: Compression,
) -> otelcol_exporter_s3::encode::Encoded {
    let layout = otelcol_exporter_s3::Layout {
        base: String::new(),
        prefix: String::new(),
        prefix_attribute: None,
        bucket_attribute: None,
        partition: otelcol_exporter_s3::key::PartitionFormat::parse("%Y", "").unwrap(),
        file_prefix: String::new(),
        marshaler: Marshaler::Parquet,
        encoding: None,
        file_extension: None,
        compression,
        user_attributes: vec!["user.email".to_string()],
    };
    encode(data, &layout, None).unwrap()
}

fn read(bytes: Vec<u8>) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1);
    batches.into_iter().next().unwrap()
}

fn strings(b: &RecordBatch, col: &str) -> Vec<Option<String>> {
    let a = b.column_by_name(col).unwrap().as_string::<i32>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect()
}

fn f64s(b: &RecordBatch, col: &str) -> Vec<Option<f64>> {
    let a = b.column_by_name(col).unwrap().as_primitive::<Float64Type>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect()
}

fn u64s(b: &RecordBatch, col: &str) -> Vec<Option<u64>> {
    let a = b.column_by_name(col).unwrap().as_primitive::<UInt64Type>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect()
}

fn times(b: &RecordBatch, col: &str) -> Vec<Option<i64>> {
    let a = b
        .column_by_name(col)
        .unwrap()
        .as_primitive::<TimestampNanosecondType>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect()
}

fn maps(b: &RecordBatch, col: &str) -> Vec<Vec<(String, String)>> {
    let m: &MapArray = b.column_by_name(col).unwrap().as_map();
    (0..m.len())
        .map(|i| {
            let entries = m.value(i);
            let (k, v) = (
                entries.column(0).as_string::<i32>(),
                entries.column(1).as_string::<i32>(),
            );
            (0..entries.len())
                .map(|j| (k.value(j).to_string(), v.value(j).to_string()))
                .collect()
        })
        .collect()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn int_attr(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

/// A delta sum (user on the point), an int gauge (user on the resource)
/// and a histogram.
fn known() -> Metrics {
    let mut m = totals("claude-code", T0, &[("ana@example.com", 120.5)]);
    let rm = &mut m.resource_metrics[0];
    rm.resource
        .as_mut()
        .unwrap()
        .attributes
        .push(string_attribute("user.email", "res@example.com"));
    let sm = &mut rm.scope_metrics[0];
    sm.scope = Some(InstrumentationScope {
        name: "aggregation".into(),
        ..Default::default()
    });
    sm.metrics.push(Metric {
        name: "claude_code.session.count".into(),
        unit: "1".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: vec![int_attr("attempt", 3)],
                time_unix_nano: T0,
                value: Some(number_data_point::Value::AsInt(4)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    });
    sm.metrics.push(Metric {
        name: "latency".into(),
        unit: "ms".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                start_time_unix_nano: T0 - MINUTE,
                time_unix_nano: T0,
                count: 3,
                sum: Some(60.0),
                min: Some(5.0),
                max: Some(40.0),
                explicit_bounds: vec![10.0, 20.0],
                bucket_counts: vec![1, 1, 1],
                ..Default::default()
            }],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    });
    m
}

#[test]
fn every_metric_column_of_known_rows_reads_back() {
    let e = parquet(&known(), Compression::Zstd);
    assert_eq!(e.extension, "parquet");
    assert_eq!(&e.bytes[..4], b"PAR1");
    let b = read(e.bytes);
    let schema = b.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "window_start",
            "window_end",
            "user",
            "metric_name",
            "metric_unit",
            "metric_kind",
            "temporality",
            "is_monotonic",
            "value",
            "count",
            "sum",
            "min",
            "max",
            "explicit_bounds",
            "bucket_counts",
            "attributes",
            "resource_attributes",
            "scope_name"
        ]
    );
    assert_eq!(
        schema.field_with_name("window_end").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Nanosecond, Some(Arc::from("UTC")))
    );
    assert_eq!(b.num_rows(), 3);
    let start = (T0 - MINUTE) as i64;
    assert_eq!(times(&b, "window_start"), [Some(start), None, Some(start)]);
    assert_eq!(times(&b, "window_end"), [Some(T0 as i64); 3]);
    assert_eq!(
        strings(&b, "user"),
        [
            s("ana@example.com"),
            s("res@example.com"),
            s("res@example.com")
        ]
    );
    assert_eq!(
        strings(&b, "metric_name"),
        [
            s("claude_code.token.usage"),
            s("claude_code.session.count"),
            s("latency")
        ]
    );
    assert_eq!(strings(&b, "metric_unit"), [s("tokens"), s("1"), s("ms")]);
    assert_eq!(
        strings(&b, "metric_kind"),
        [s("sum"), s("gauge"), s("histogram")]
    );
    assert_eq!(
        strings(&b, "temporality"),
        [s("delta"), None, s("cumulative")]
    );
    let mono = b.column_by_name("is_monotonic").unwrap().as_boolean();
    assert_eq!(
        (mono.value(0), mono.is_null(1), mono.is_null(2)),
        (true, true, true)
    );
    assert_eq!(f64s(&b, "value"), [Some(120.5), Some(4.0), None]);
    assert_eq!(u64s(&b, "count"), [None, None, Some(3)]);
    assert_eq!(f64s(&b, "sum"), [None, None, Some(60.0)]);
    assert_eq!(f64s(&b, "min"), [None, None, Some(5.0)]);
    assert_eq!(f64s(&b, "max"), [None, None, Some(40.0)]);
    let bounds = b
        .column_by_name("explicit_bounds")
        .unwrap()
        .as_list::<i32>();
    assert!(bounds.is_null(0) && bounds.is_null(1));
    assert_eq!(
        bounds
            .value(2)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec(),
        [10.0, 20.0]
    );
    let buckets = b.column_by_name("bucket_counts").unwrap().as_list::<i32>();
    assert!(buckets.is_null(0) && buckets.is_null(1));
    assert_eq!(
        buckets
            .value(2)
            .as_primitive::<UInt64Type>()
            .values()
            .to_vec(),
        [1, 1, 1]
    );
    assert_eq!(
        maps(&b, "attributes"),
        [
            pairs(&[("user.email", "ana@example.com"), ("type", "input")]),
            pairs(&[("attempt", "3")]),
            vec![]
        ]
    );
    let res = pairs(&[
        ("service.name", "claude-code"),
        ("user.email", "res@example.com"),
    ]);
    assert_eq!(
        maps(&b, "resource_attributes"),
        [res.clone(), res.clone(), res]
    );
    assert_eq!(strings(&b, "scope_name"), vec![s("aggregation"); 3]);
}

#[test]
fn every_log_column_of_known_rows_reads_back() {
    let mut logs = events("claude-code", T0, &["first", "second"]);
    let rec = &mut logs.resource_logs[0].scope_logs[0].log_records[1];
    rec.time_unix_nano = 0;
    rec.observed_time_unix_nano = T0 + 5;
    rec.trace_id = vec![0xab; 16];
    rec.span_id = vec![0x01; 8];
    rec.attributes.push(int_attr("tokens", 77));
    let e = parquet(&logs, Compression::Gzip);
    let b = read(e.bytes);
    let names: Vec<String> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "time",
            "observed_time",
            "user",
            "severity_number",
            "severity_text",
            "event_name",
            "body",
            "attributes",
            "resource_attributes",
            "scope_name",
            "trace_id",
            "span_id"
        ]
    );
    assert_eq!(times(&b, "time"), [Some(T0 as i64), None]);
    assert_eq!(times(&b, "observed_time"), [None, Some(T0 as i64 + 5)]);
    assert_eq!(
        strings(&b, "user"),
        [s("ana@example.com"), s("ana@example.com")]
    );
    let sev = b
        .column_by_name("severity_number")
        .unwrap()
        .as_primitive::<Int32Type>();
    assert_eq!(sev.values().to_vec(), [9, 9]);
    assert_eq!(strings(&b, "severity_text"), [s("INFO"), s("INFO")]);
    assert_eq!(
        strings(&b, "event_name"),
        vec![s("claude_code.api_request"); 2]
    );
    assert_eq!(strings(&b, "body"), [s("first"), s("second")]);
    assert_eq!(
        maps(&b, "attributes"),
        [
            pairs(&[("user.email", "ana@example.com")]),
            pairs(&[("user.email", "ana@example.com"), ("tokens", "77")])
        ]
    );
    assert_eq!(
        maps(&b, "resource_attributes"),
        vec![pairs(&[("service.name", "claude-code")]); 2]
    );
    assert_eq!(strings(&b, "scope_name"), [s(""), s("")]);
    assert_eq!(strings(&b, "trace_id"), [None, s(&"ab".repeat(16))]);
    assert_eq!(strings(&b, "span_id"), [None, s(&"01".repeat(8))]);
}

#[test]
fn traces_are_refused_by_the_parquet_marshaler_when_built() {
    use otelcol_core::component::ExporterFactory;
    let dir = std::env::temp_dir().join(format!("otelcol-s3-traces-{}", std::process::id()));
    let yaml = format!("directory: {}\nmarshaler: parquet\n", dir.display());
    let e = FileExporterFactory
        .create_traces(settings("file"), &raw(&yaml))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        e,
        "exporter file: the parquet marshaler does not write traces"
    );
}

#[tokio::test]
async fn pyarrow_reads_what_the_file_exporter_wrote() {
    let dir = std::env::temp_dir().join(format!("otelcol-s3-parquet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let yaml = format!(
        "directory: {}\nprefix: totals\nmarshaler: parquet\ncompression: zstd\n",
        dir.display()
    );
    let (exp, _) = metrics_exporter(&FileExporterFactory, "file", &yaml);
    exp.start(&host()).await.unwrap();
    exp.consume(batch(known())).await.unwrap();
    exp.shutdown().await.unwrap();

    let folder = dir.join("totals/year=2026/month=11/day=21/hour=13/minute=47");
    let files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("metrics_") && name.ends_with(".parquet"),
        "{name}"
    );

    let script = "import sys, pyarrow.parquet as pq\n\
        t = pq.read_table(sys.argv[1])\n\
        print(t.num_rows, t.schema.field('window_end').type, t.schema.field('attributes').type)\n\
        for r in t.to_pylist():\n\
        \x20   print(r['user'], r['metric_name'], r['metric_kind'], r['value'], r['count'], r['window_end'].isoformat(), dict(r['attributes']))\n";
    let out = std::process::Command::new(venv_tool("python"))
        .args(["-c", script, files[0].to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "3 timestamp[ns, tz=UTC] map<string, string ('attributes')>\n\
         ana@example.com claude_code.token.usage sum 120.5 None 2026-11-21T13:47:05+00:00 {'user.email': 'ana@example.com', 'type': 'input'}\n\
         res@example.com claude_code.session.count gauge 4.0 None 2026-11-21T13:47:05+00:00 {'attempt': '3'}\n\
         res@example.com latency histogram None 3 2026-11-21T13:47:05+00:00 {}\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
