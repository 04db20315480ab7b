//! Points the aggregation processor cannot count, in an otherwise good
//! request, are answered as OTLP `partial_success` (with the count and the
//! reason) over HTTP/JSON, HTTP/protobuf and gRPC, through the binary with
//! the production config. A request it can count whole gets the plain
//! empty answer.

mod common;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use prost::Message;

const INVALID: &str = "invalid (no value, a non-finite number, malformed buckets, an unrepresentable exponential histogram, or a total that would overflow)";

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn point(user: Option<&str>, value: Option<f64>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: user
            .map(|u| KeyValue {
                key: "user.email".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(u.into())),
                }),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        time_unix_nano: now_nanos(),
        value: value.map(number_data_point::Value::AsDouble),
        ..Default::default()
    }
}

fn request(points: Vec<NumberDataPoint>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "claude_code.cost.usage".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: 1,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncountable_points_are_answered_as_partial_success_on_every_transport() {
    // Nothing is exported during the test (windows close minutes later).
    let (_collector, ports) =
        common::spawn_production("http://127.0.0.1:9", "fallback-token", &[], &[]).await;
    let url = format!("http://127.0.0.1:{}/v1/metrics", ports.http);

    // OTLP/JSON: one good point, one without the user key, one without a value.
    let t = now_nanos();
    let json = format!(
        r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"claude_code.cost.usage","sum":{{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[
        {{"timeUnixNano":"{t}","asDouble":1.5,"attributes":[{{"key":"user.email","value":{{"stringValue":"ana@example.com"}}}}]}},
        {{"timeUnixNano":"{t}","asDouble":2.5}},
        {{"timeUnixNano":"{t}","attributes":[{{"key":"user.email","value":{{"stringValue":"ana@example.com"}}}}]}}
        ]}}}}]}}]}}]}}"#
    );
    let (status, body) = common::http(
        "POST",
        &url,
        &[("content-type", "application/json")],
        json.into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"partialSuccess": {
            "rejectedDataPoints": "2",
            "errorMessage": format!("aggregation: data points not counted: 1 {INVALID}; 1 without the user key \"user.email\""),
        }})
    );

    // A request that counts whole: the plain empty answer.
    let good = request(vec![point(Some("ana@example.com"), Some(1.0))]);
    let (status, body) = common::http(
        "POST",
        &url,
        &[("content-type", "application/json")],
        serde_json::to_vec(&good).unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));

    // OTLP/HTTP protobuf: a NaN among good points.
    let req = request(vec![
        point(Some("ana@example.com"), Some(f64::NAN)),
        point(Some("bo@example.com"), Some(3.0)),
    ]);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let resp = client
        .request(
            hyper::Request::post(&url)
                .header("content-type", "application/x-protobuf")
                .body(http_body_util::Full::new(req.encode_to_vec().into()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let answer = ExportMetricsServiceResponse::decode(bytes).unwrap();
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_data_points, 1);
    assert_eq!(
        partial.error_message,
        format!("aggregation: data points not counted: 1 {INVALID}")
    );

    // gRPC: points of a user-less metric.
    let mut grpc = MetricsServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    let answer = grpc
        .export(request(vec![
            point(None, Some(1.0)),
            point(None, Some(2.0)),
            point(Some("cy@example.com"), Some(4.0)),
        ]))
        .await
        .unwrap()
        .into_inner();
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_data_points, 2);
    assert_eq!(
        partial.error_message,
        "aggregation: data points not counted: 2 without the user key \"user.email\""
    );
    let answer = grpc
        .export(request(vec![point(Some("cy@example.com"), Some(4.0))]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.partial_success, None);
}
