//! The official OpenTelemetry Rust SDK exporters send metrics, logs and
//! traces to a collector started on 127.0.0.1, over gRPC, HTTP/protobuf and
//! HTTP/JSON; the test checks exactly what reached the exporter.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::logs::{AnyValue as LogValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue as ProtoKv};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

#[derive(Clone, Copy, Debug)]
enum Transport {
    Grpc,
    HttpProto,
    HttpJson,
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "claude-code"),
            KeyValue::new("user.email", "ana@example.com"),
        ])
        .build()
}

fn attrs(list: &[ProtoKv]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// Sends 2 metric points, 2 log records and 1 span with the SDK; blocking,
/// so it runs on a blocking thread of the test runtime.
fn send_with_sdk(transport: Transport, grpc: u16, http: u16) {
    let (endpoint, protocol) = match transport {
        Transport::Grpc => (format!("http://127.0.0.1:{grpc}"), Protocol::Grpc),
        Transport::HttpProto => (format!("http://127.0.0.1:{http}"), Protocol::HttpBinary),
        Transport::HttpJson => (format!("http://127.0.0.1:{http}"), Protocol::HttpJson),
    };
    let signal_url = |path: &str| match transport {
        Transport::Grpc => endpoint.clone(),
        _ => format!("{endpoint}{path}"),
    };
    let timeout = Duration::from_secs(5);

    let metrics = match transport {
        Transport::Grpc => MetricExporter::builder()
            .with_tonic()
            .with_endpoint(signal_url(""))
            .with_timeout(timeout)
            .with_temporality(Temporality::Delta)
            .build(),
        _ => MetricExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(signal_url("/v1/metrics"))
            .with_timeout(timeout)
            .with_temporality(Temporality::Delta)
            .build(),
    }
    .expect("metric exporter");
    let meters = SdkMeterProvider::builder()
        .with_resource(resource())
        .with_reader(
            PeriodicReader::builder(metrics)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build();
    let tokens = meters
        .meter("com.anthropic.claude_code")
        .f64_counter("claude_code.token.usage")
        .with_unit("tokens")
        .build();
    tokens.add(
        1834.0,
        &[
            KeyValue::new("type", "input"),
            KeyValue::new("model", "claude-sonnet"),
        ],
    );
    tokens.add(
        312.0,
        &[
            KeyValue::new("type", "output"),
            KeyValue::new("model", "claude-sonnet"),
        ],
    );
    meters.force_flush().expect("metrics flushed");
    meters.shutdown().expect("meter provider shut down");

    let logs = match transport {
        Transport::Grpc => LogExporter::builder()
            .with_tonic()
            .with_endpoint(signal_url(""))
            .with_timeout(timeout)
            .build(),
        _ => LogExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(signal_url("/v1/logs"))
            .with_timeout(timeout)
            .build(),
    }
    .expect("log exporter");
    let loggers = SdkLoggerProvider::builder()
        .with_resource(resource())
        .with_simple_exporter(logs)
        .build();
    let logger = loggers.logger("com.anthropic.claude_code.events");
    for (i, cost) in [0.0123, 0.5].into_iter().enumerate() {
        let mut record = logger.create_log_record();
        record.set_body(LogValue::from("claude_code.api_request"));
        record.add_attribute("event.name", "api_request");
        record.add_attribute("cost_usd", cost);
        record.add_attribute("event.sequence", i as i64);
        logger.emit(record);
    }
    loggers.shutdown().expect("logger provider shut down");

    let spans = match transport {
        Transport::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(signal_url(""))
            .with_timeout(timeout)
            .build(),
        _ => SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(signal_url("/v1/traces"))
            .with_timeout(timeout)
            .build(),
    }
    .expect("span exporter");
    let tracers = SdkTracerProvider::builder()
        .with_resource(resource())
        .with_simple_exporter(spans)
        .build();
    let mut span = tracers.tracer("codex").start("codex.api_request");
    span.set_attribute(KeyValue::new("model", "gpt-5"));
    span.end();
    tracers.shutdown().expect("tracer provider shut down");
}

async fn round_trip(transport: Transport) {
    common::init_crypto();
    let (mut service, captured, ports) = common::start_capture_service("").await;
    let (g, h) = (ports.grpc, ports.http);
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || send_with_sdk(transport, g, h)),
    )
    .await
    .expect("the SDK finished within 30 s")
    .expect("the SDK did not panic");
    service.shutdown().await;

    let metrics = captured.metrics.lock().unwrap();
    assert_eq!(metrics.len(), 1, "{transport:?}: one metrics export");
    let rm = &metrics[0].data.resource_metrics;
    assert_eq!(rm.len(), 1);
    let resource_attrs = attrs(&rm[0].resource.as_ref().unwrap().attributes);
    assert_eq!(resource_attrs["service.name"], "claude-code");
    assert_eq!(resource_attrs["user.email"], "ana@example.com");
    let metric = &rm[0].scope_metrics[0].metrics[0];
    assert_eq!(metric.name, "claude_code.token.usage");
    assert_eq!(metric.unit, "tokens");
    let Some(Data::Sum(sum)) = &metric.data else {
        panic!("{transport:?}: a sum, got {:?}", metric.data)
    };
    assert_eq!(sum.aggregation_temporality, 1, "delta");
    let mut points: Vec<(String, f64)> = sum
        .data_points
        .iter()
        .map(|p| {
            let a = attrs(&p.attributes);
            assert_eq!(a["model"], "claude-sonnet");
            let v = match p.value {
                Some(
                    opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(d),
                ) => d,
                other => panic!("double value, got {other:?}"),
            };
            (a["type"].clone(), v)
        })
        .collect();
    points.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        points,
        vec![("input".to_string(), 1834.0), ("output".to_string(), 312.0)]
    );
    assert!(metrics[0].context.client_addr.is_some());

    let logs = captured.logs.lock().unwrap();
    let records: Vec<_> = logs
        .iter()
        .flat_map(|b| b.data.resource_logs.iter())
        .flat_map(|rl| rl.scope_logs.iter())
        .flat_map(|sl| sl.log_records.iter())
        .collect();
    assert_eq!(records.len(), 2, "{transport:?}: two log records");
    let costs: Vec<String> = records
        .iter()
        .map(|r| attrs(&r.attributes)["cost_usd"].clone())
        .collect();
    assert_eq!(costs, vec!["0.0123", "0.5"]);
    for r in &records {
        assert_eq!(attrs(&r.attributes)["event.name"], "api_request");
        let body = r.body.as_ref().and_then(|b| b.value.as_ref());
        assert_eq!(
            body,
            Some(&any_value::Value::StringValue(
                "claude_code.api_request".into()
            ))
        );
    }

    let traces = captured.traces.lock().unwrap();
    let spans: Vec<_> = traces
        .iter()
        .flat_map(|b| b.data.resource_spans.iter())
        .flat_map(|rs| rs.scope_spans.iter())
        .flat_map(|ss| ss.spans.iter())
        .collect();
    assert_eq!(spans.len(), 1, "{transport:?}: one span");
    assert_eq!(spans[0].name, "codex.api_request");
    assert_eq!(spans[0].trace_id.len(), 16);
    assert_eq!(attrs(&spans[0].attributes)["model"], "gpt-5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_grpc() {
    round_trip(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_http_protobuf() {
    round_trip(Transport::HttpProto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_http_json() {
    round_trip(Transport::HttpJson).await;
}
