//! The OTLP/JSON encoder: a golden file pins the bytes, and round trips
//! through the generated (strict) decoder give back the same message.

use otelcol_core::pdata::json;
use otelcol_core::pdata::proto::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use otelcol_core::pdata::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::{string_attribute, Logs, Metrics};

fn sample_metrics() -> Metrics {
    Metrics {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", "claude-code")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "otelcol-multitudes/processor/aggregation".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                metrics: vec![
                    Metric {
                        name: "claude_code.cost.usage".into(),
                        unit: "USD".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![NumberDataPoint {
                                attributes: vec![
                                    string_attribute("model", "claude-sonnet"),
                                    string_attribute("user.email", "ana@example.com"),
                                ],
                                start_time_unix_nano: 1_795_255_200_000_000_000,
                                time_unix_nano: 1_795_255_500_000_000_000,
                                value: Some(number_data_point::Value::AsDouble(0.0914)),
                                ..Default::default()
                            }],
                            aggregation_temporality: 1,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "codex.turn.token_usage".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                attributes: vec![KeyValue {
                                    key: "n".into(),
                                    value: Some(AnyValue {
                                        value: Some(any_value::Value::IntValue(-7)),
                                    }),
                                    ..Default::default()
                                }],
                                start_time_unix_nano: 1,
                                time_unix_nano: 2,
                                count: 3,
                                sum: Some(5950.0),
                                bucket_counts: vec![1, 0, 2],
                                explicit_bounds: vec![100.0, 1000.0],
                                min: Some(0.0),
                                max: Some(4608.0),
                                ..Default::default()
                            }],
                            aggregation_temporality: 1,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn metrics_golden() {
    let expected = concat!(
        r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"claude-code"}}]},"#,
        r#""scopeMetrics":[{"scope":{"name":"otelcol-multitudes/processor/aggregation","version":"0.1.0"},"metrics":["#,
        r#"{"name":"claude_code.cost.usage","unit":"USD","sum":{"dataPoints":[{"attributes":[{"key":"model","value":{"stringValue":"claude-sonnet"}},"#,
        r#"{"key":"user.email","value":{"stringValue":"ana@example.com"}}],"startTimeUnixNano":"1795255200000000000","timeUnixNano":"1795255500000000000","asDouble":0.0914}],"#,
        r#""aggregationTemporality":1,"isMonotonic":true}},"#,
        r#"{"name":"codex.turn.token_usage","histogram":{"dataPoints":[{"attributes":[{"key":"n","value":{"intValue":"-7"}}],"#,
        r#""startTimeUnixNano":"1","timeUnixNano":"2","count":"3","sum":5950,"bucketCounts":["1","0","2"],"explicitBounds":[100,1000],"min":0,"max":4608}],"#,
        r#""aggregationTemporality":1}}]}]}]}"#
    );
    assert_eq!(json::metrics(&sample_metrics()), expected);
}

#[test]
fn metrics_round_trip_through_the_strict_decoder() {
    let m = sample_metrics();
    let back: Metrics = serde_json::from_str(&json::metrics(&m)).unwrap();
    assert_eq!(back, m);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    for name in [
        "claude-code-metrics-delta.json",
        "claude-code-metrics-cumulative-1.json",
        "codex-metrics.json",
    ] {
        let original: Metrics =
            serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap();
        let back: Metrics = serde_json::from_str(&json::metrics(&original)).unwrap();
        assert_eq!(back, original, "{name}");
    }
}

#[test]
fn logs_golden_and_round_trip() {
    let logs = Logs {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource::default()),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 10,
                    severity_number: 9,
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(
                            "claude_code.api_request".into(),
                        )),
                    }),
                    attributes: vec![
                        KeyValue {
                            key: "cost_usd".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::DoubleValue(0.5)),
                            }),
                            ..Default::default()
                        },
                        KeyValue {
                            key: "list".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::ArrayValue(ArrayValue {
                                    values: vec![
                                        AnyValue {
                                            value: Some(any_value::Value::BoolValue(true)),
                                        },
                                        AnyValue {
                                            value: Some(any_value::Value::BytesValue(vec![
                                                0xff, 0x00,
                                            ])),
                                        },
                                    ],
                                })),
                            }),
                            ..Default::default()
                        },
                    ],
                    trace_id: vec![0xab; 16],
                    span_id: vec![0x01; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let text = json::logs(&logs);
    assert_eq!(
        text,
        concat!(
            r#"{"resourceLogs":[{"resource":{},"scopeLogs":[{"logRecords":[{"timeUnixNano":"10","severityNumber":9,"#,
            r#""body":{"stringValue":"claude_code.api_request"},"attributes":[{"key":"cost_usd","value":{"doubleValue":0.5}},"#,
            r#"{"key":"list","value":{"arrayValue":{"values":[{"boolValue":true},{"bytesValue":"/wA="}]}}}],"#,
            r#""traceId":"abababababababababababababababab","spanId":"0101010101010101"}]}]}]}"#
        )
    );
    let back: Logs = serde_json::from_str(&text).unwrap();
    assert_eq!(back, logs);
}
