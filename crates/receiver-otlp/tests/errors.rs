//! Every error path of the OTLP receiver, over real HTTP and gRPC on
//! 127.0.0.1, with the exact status and body encoding the OTLP spec and the
//! Go receiver give.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use otelcol_core::component::{
    AuthError, CreateSettings, Extension, Host, Kind, Lifecycle, ReceiverFactory,
    ServerAuthenticator, SignalConsumers,
};
use otelcol_core::consumer::{
    AuthData, Batch, BearerToken, Consumer, ConsumerError, PermanentKind,
};
use otelcol_core::pdata::proto::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use otelcol_core::pdata::proto::common::v1::KeyValue;
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use otelcol_core::pdata::{ExportTraceServiceResponse, Logs, Metrics, Payload, Traces};
use otelcol_core::status::StatusBoard;
use otelcol_core::ComponentId;
use otelcol_receiver_otlp::status::RpcStatus;
use otelcol_receiver_otlp::OtlpReceiverFactory;
use prost::Message;

#[derive(Default)]
struct Sink {
    metrics: Mutex<Vec<Batch<Metrics>>>,
    answer: Mutex<Option<ConsumerError>>,
    delay: Mutex<Duration>,
    /// Says it [reads the bytes](Consumer::reads_received) it is handed.
    reads_received: bool,
}

#[async_trait]
impl Consumer<Metrics> for Sink {
    async fn consume(&self, batch: Batch<Metrics>) -> Result<(), ConsumerError> {
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        if let Some(e) = self.answer.lock().unwrap().clone() {
            return Err(e);
        }
        self.metrics.lock().unwrap().push(batch);
        Ok(())
    }

    fn reads_received(&self) -> bool {
        self.reads_received
    }
}

#[async_trait]
impl Consumer<Logs> for Sink {
    async fn consume(&self, _batch: Batch<Logs>) -> Result<(), ConsumerError> {
        Ok(())
    }
}

/// Accepts only `Bearer good-token`; keeps the `x-team` header.
struct StrictAuth;
impl Lifecycle for StrictAuth {}
impl Extension for StrictAuth {
    fn server_authenticator(self: Arc<Self>) -> Option<Arc<dyn ServerAuthenticator>> {
        Some(self)
    }
}
impl ServerAuthenticator for StrictAuth {
    fn authenticate(&self, headers: &http::HeaderMap) -> Result<AuthData, AuthError> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| AuthError("missing bearer token".into()))?;
        if token != "good-token" {
            return Err(AuthError("token not accepted".into()));
        }
        let headers = headers
            .get("x-team")
            .and_then(|v| v.to_str().ok())
            .map(|v| vec![("x-team".to_string(), v.to_string())])
            .unwrap_or_default();
        Ok(AuthData {
            token: Some(BearerToken::new(token)),
            headers,
        })
    }
}

struct Running {
    sink: Arc<Sink>,
    receiver: Arc<dyn Lifecycle>,
    http: SocketAddr,
    grpc: SocketAddr,
    settings: CreateSettings,
}

fn port() -> u16 {
    otelcol_core::net::unused_loopback_port()
}

async fn start(extra_http: &str, extra_grpc: &str) -> Running {
    start_with(Sink::default(), extra_http, extra_grpc).await
}

async fn start_with(sink: Sink, extra_http: &str, extra_grpc: &str) -> Running {
    let (http, grpc) = (port(), port());
    let yaml = format!(
        "protocols:\n  http: {{endpoint: '127.0.0.1:{http}'{extra_http}}}\n  grpc: {{endpoint: '127.0.0.1:{grpc}'{extra_grpc}}}\n"
    );
    let config: otelcol_core::config::RawConfig = serde_yaml::from_str(&yaml).unwrap();
    let sink = Arc::new(sink);
    let settings = CreateSettings::standalone(ComponentId::new("otlp"), Kind::Receiver);
    let next = SignalConsumers {
        metrics: Some(sink.clone()),
        logs: Some(sink.clone()),
        traces: None,
    };
    let receiver = OtlpReceiverFactory
        .create(settings.clone(), &config, next)
        .unwrap();
    let mut extensions: BTreeMap<ComponentId, Arc<dyn Extension>> = BTreeMap::new();
    extensions.insert(ComponentId::new("strict"), Arc::new(StrictAuth));
    let host = Host::new(extensions, Arc::new(StatusBoard::new()));
    receiver.start(&host).await.unwrap();
    Running {
        sink,
        receiver,
        http: format!("127.0.0.1:{http}").parse().unwrap(),
        grpc: format!("127.0.0.1:{grpc}").parse().unwrap(),
        settings,
    }
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    fn proto_status(&self) -> RpcStatus {
        assert_eq!(self.content_type(), "application/x-protobuf");
        RpcStatus::decode(&self.body[..]).expect("a google.rpc.Status in protobuf")
    }
    fn json(&self) -> serde_json::Value {
        assert_eq!(self.content_type(), "application/json");
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("answered in time")
        .expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

const PROTO: (&str, &str) = ("content-type", "application/x-protobuf");
const JSON: (&str, &str) = ("content-type", "application/json");

fn one_point(email: &str, value: f64) -> Metrics {
    Metrics {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "claude_code.cost.usage".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![otelcol_core::pdata::string_attribute(
                                "user.email",
                                email,
                            )],
                            value: Some(number_data_point::Value::AsDouble(value)),
                            time_unix_nano: 1_795_255_210_000_000_000,
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn counter(r: &Running, name: &str) -> String {
    counter_on(r, name, "http")
}

#[tokio::test]
async fn malformed_protobuf_is_400_with_a_protobuf_status() {
    let r = start("", "").await;
    let a = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[PROTO],
        vec![0xff, 0xff, 0xff, 0x01],
    )
    .await;
    assert_eq!(a.status, 400);
    let s = a.proto_status();
    assert_eq!(s.code, 3);
    assert!(
        s.message.starts_with("cannot decode the protobuf body:"),
        "{}",
        s.message
    );
    assert!(r.sink.metrics.lock().unwrap().is_empty());
    r.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_json_is_400_with_a_json_status() {
    let r = start("", "").await;
    let a = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[JSON],
        b"{\"resourceMetrics\": [".to_vec(),
    )
    .await;
    assert_eq!(a.status, 400);
    let v = a.json();
    assert_eq!(v["code"], 3);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot decode the JSON body: EOF while parsing"),
        "{v}"
    );
    let a = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[JSON],
        b"{\"resourceMetrics\": [{\"scopeMetrics\": [{\"metrics\": [{\"name\": \"\xff\xfe\"}]}]}]}"
            .to_vec(),
    )
    .await;
    assert_eq!(a.status, 400, "invalid UTF-8 is refused");
    let a = send(r.http, "POST", "/v1/metrics", &[JSON], br#"{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"gauge": {"dataPoints": [{"asDouble": "NaN"}]}}]}]}]}"#.to_vec()).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json()["message"],
        "cannot decode the JSON body: $.resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].asDouble: `NaN` cannot be carried (NaN and infinities are not supported)"
    );
    r.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_content_type_is_415_and_get_is_405() {
    let r = start("", "").await;
    let a = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[("content-type", "text/plain")],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(a.status, 415);
    assert_eq!(
        a.text(),
        "415 unsupported media type, supported: [application/json, application/x-protobuf]"
    );
    let a = send(r.http, "POST", "/v1/metrics", &[], b"x".to_vec()).await;
    assert_eq!(a.status, 415, "no content type at all");
    let a = send(r.http, "GET", "/v1/metrics", &[], vec![]).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.headers.get("allow").unwrap(), "POST");
    assert_eq!(a.text(), "405 method not allowed, supported: [POST]");
    let a = send(r.http, "POST", "/v1/nothing", &[PROTO], vec![]).await;
    assert_eq!(a.status, 404);
    r.receiver.shutdown().await.unwrap();
}

fn three_spans() -> Traces {
    use otelcol_core::pdata::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let span = |n: u8| Span {
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        name: format!("span-{n}"),
        ..Default::default()
    };
    Traces {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span(1), span(2), span(3)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// No pipeline of this receiver takes traces: every transport still
/// answers OK (Gemini CLI aborts its final flush, metrics included, when
/// one signal fails), and the spans are discarded and counted.
#[tokio::test]
async fn a_signal_no_pipeline_takes_is_accepted_counted_and_discarded() {
    use otelcol_core::pdata::proto::collector::trace::v1::trace_service_client::TraceServiceClient;
    let r = start("", "").await;
    let body = three_spans().encode_to_vec();
    let a = send(r.http, "POST", "/v1/traces", &[PROTO], body.clone()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        ExportTraceServiceResponse::decode(a.body.clone()).unwrap(),
        ExportTraceServiceResponse::default()
    );
    let json = serde_json::to_vec(&three_spans()).unwrap();
    let a = send(r.http, "POST", "/v1/traces", &[JSON], json).await;
    assert_eq!((a.status, a.text().as_str()), (200, "{}"));
    // Malformed input is still refused: discarding is not a blind 200.
    let a = send(r.http, "POST", "/v1/traces", &[PROTO], vec![0x0a, 100, 1]).await;
    assert_eq!(a.status, 400);

    let mut client = TraceServiceClient::connect(format!("http://{}", r.grpc))
        .await
        .unwrap();
    client.export(three_spans()).await.expect("gRPC answers OK");

    let rendered = r.settings.metrics.render();
    for transport in ["http", "grpc"] {
        let spans = if transport == "http" { 6 } else { 3 };
        let line = format!(
            "otelcol_receiver_discarded_spans_total{{receiver=\"otlp\",transport=\"{transport}\"}} {spans}"
        );
        assert!(rendered.contains(&line), "{line} in\n{rendered}");
    }
    assert!(
        rendered.contains(
            "otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"http\"} 0"
        ),
        "{rendered}"
    );
    r.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_encoding_is_400() {
    let r = start("", "").await;
    let body = one_point("ana@example.com", 1.0).encode_to_vec();
    let a = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[PROTO, ("content-encoding", "br")],
        body,
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.proto_status().message,
        "unsupported Content-Encoding `br`"
    );
    r.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_body_is_400() {
    let r = start(", max_request_body_size: 1024", "").await;
    let a = send(r.http, "POST", "/v1/metrics", &[JSON], vec![b' '; 4096]).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json()["message"],
        "request body too large: more than 1024 bytes"
    );
    r.receiver.shutdown().await.unwrap();
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn gzip_bomb_is_400_and_memory_stays_flat() {
    let r = start("", "").await;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..512 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(
        bomb.len() < 1 << 20,
        "512 MiB of zeros compress to {} bytes",
        bomb.len()
    );
    drop(zeros);
    let before = peak_rss_kib();
    let a = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[PROTO, ("content-encoding", "gzip")],
        bomb,
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.proto_status().message,
        "request body too large: more than 20971520 bytes after decompression"
    );
    let growth_mib = peak_rss_kib().saturating_sub(before) / 1024;
    assert!(
        growth_mib < 64,
        "peak RSS grew by {growth_mib} MiB for a 512 MiB bomb"
    );
    r.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn empty_requests_are_answered_without_entering_the_pipeline() {
    let r = start("", "").await;
    let a = send(r.http, "POST", "/v1/metrics", &[PROTO], vec![]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type(), "application/x-protobuf");
    assert!(a.body.is_empty(), "an empty ExportMetricsServiceResponse");
    let no_points = Metrics {
        resource_metrics: vec![ResourceMetrics::default()],
    };
    let a = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[JSON],
        serde_json::to_vec(&no_points).unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "{}");
    assert!(r.sink.metrics.lock().unwrap().is_empty());
    r.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn pipeline_errors_map_to_503_with_retry_after_and_500() {
    let r = start("", "").await;
    *r.sink.answer.lock().unwrap() = Some(ConsumerError::Retryable {
        message: "memory limit reached".into(),
        retry_after: Some(Duration::from_millis(2500)),
    });
    let body = one_point("ana@example.com", 2.0).encode_to_vec();
    let a = send(r.http, "POST", "/v1/metrics", &[PROTO], body.clone()).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.headers.get("retry-after").unwrap(), "3");
    let s = a.proto_status();
    assert_eq!(
        (s.code, s.message.as_str()),
        (14, "memory limit reached (retryable)")
    );

    *r.sink.answer.lock().unwrap() = Some(ConsumerError::Permanent {
        message: "exporter misconfigured".into(),
        kind: PermanentKind::Other,
    });
    let a = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[JSON],
        serde_json::to_vec(&one_point("a@b.c", 1.0)).unwrap(),
    )
    .await;
    assert_eq!(a.status, 500);
    assert_eq!(
        a.json(),
        serde_json::json!({"code": 13, "message": "exporter misconfigured"})
    );
    assert!(a.headers.get("retry-after").is_none());
    assert_eq!(
        counter(&r, "otelcol_receiver_refused_metric_points_total"),
        "otelcol_receiver_refused_metric_points_total{receiver=\"otlp\",transport=\"http\"} 2"
    );
    r.receiver.shutdown().await.unwrap();
}

/// One point with a resource attribute of `bytes` bytes.
fn padded_point(bytes: usize) -> Metrics {
    let mut m = one_point("ana@example.com", 1.0);
    m.resource_metrics[0].resource = Some(otelcol_core::pdata::proto::resource::v1::Resource {
        attributes: vec![otelcol_core::pdata::string_attribute(
            "padding",
            "x".repeat(bytes),
        )],
        ..Default::default()
    });
    m
}

fn counter_on(r: &Running, name: &str, transport: &str) -> String {
    let label = format!("transport=\"{transport}\"");
    r.settings
        .metrics
        .render()
        .lines()
        .find(|l| l.starts_with(name) && l.contains(&label))
        .unwrap_or("")
        .to_string()
}

/// Requests the pipeline holds keep their bytes of the in-flight budget:
/// past `max_inflight_bytes` a request is refused retryably (503 /
/// `UNAVAILABLE`, retry after 1 s), counted per transport, and taken again
/// once the others are answered. Over gRPC a compressed message counts as
/// received and again as decompressed.
#[tokio::test]
async fn requests_past_the_inflight_budget_are_refused_retryably_and_counted() {
    const MIB: usize = 1 << 20;
    let budget = MIB * 3 / 2;
    let r = start(
        &format!(", max_request_body_size: {MIB}, max_inflight_bytes: {budget}"),
        &format!(", max_recv_msg_size_mib: 1, max_inflight_bytes: {budget}"),
    )
    .await;
    // Each request stays in the pipeline for 1.5 s.
    *r.sink.delay.lock().unwrap() = Duration::from_millis(1500);
    let big = padded_point(800 * 1024);
    let body = big.encode_to_vec();

    let held = tokio::spawn(send(r.http, "POST", "/v1/metrics", &[PROTO], body.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = send(r.http, "POST", "/v1/metrics", &[PROTO], body.clone()).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers.get("retry-after").unwrap(), "1");
    let s = refused.proto_status();
    assert_eq!(
        (s.code, s.message.as_str()),
        (14, "the receiver is busy: 1572864 bytes of requests are already in flight (protocols.http.max_inflight_bytes); retry later")
    );
    assert_eq!(held.await.unwrap().status, 200);
    let again = send(r.http, "POST", "/v1/metrics", &[PROTO], body.clone()).await;
    assert_eq!(again.status, 200, "the budget is given back");
    assert_eq!(
        counter_on(&r, "otelcol_receiver_busy_refused_requests_total", "http"),
        "otelcol_receiver_busy_refused_requests_total{receiver=\"otlp\",transport=\"http\"} 1"
    );

    let client = MetricsServiceClient::connect(format!("http://{}", r.grpc))
        .await
        .unwrap();
    let busy_status = |err: tonic::Status| {
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert_eq!(
            err.message(),
            "the receiver is busy: 1572864 bytes of requests are already in flight (protocols.grpc.max_inflight_bytes); retry later (retryable)"
        );
        assert_eq!(err.metadata().get("retry-after").unwrap(), "1");
        let details = RpcStatus::decode(err.details()).unwrap();
        assert_eq!(
            details.details[0].type_url,
            "type.googleapis.com/google.rpc.RetryInfo"
        );
    };
    for compressed in [false, true] {
        let mut first = client.clone();
        let request = big.clone();
        let held = tokio::spawn(async move { first.export(request).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut second = client.clone();
        if compressed {
            // About 1 KiB on the wire; 800 KiB once decompressed.
            second = second.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        busy_status(second.export(big.clone()).await.unwrap_err());
        held.await.unwrap().expect("the held call is answered OK");
        second
            .export(big.clone())
            .await
            .expect("taken once the budget is given back");
    }
    assert_eq!(
        counter_on(&r, "otelcol_receiver_busy_refused_requests_total", "grpc"),
        "otelcol_receiver_busy_refused_requests_total{receiver=\"otlp\",transport=\"grpc\"} 2"
    );
    assert_eq!(r.sink.metrics.lock().unwrap().len(), 6);
    r.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn json_accepts_snake_case_enum_names_and_quoted_doubles() {
    let r = start("", "").await;
    let body = br#"{"resource_metrics": [{"scope_metrics": [{"metrics": [{"name": "claude_code.cost.usage",
        "sum": {"aggregation_temporality": "AGGREGATION_TEMPORALITY_DELTA", "is_monotonic": true,
        "data_points": [{"as_double": "1.25", "time_unix_nano": "1795255210000000000",
        "attributes": [{"key": "user.email", "value": {"string_value": "ana@example.com"}}]}]}}]}]}]}"#;
    let a = send(r.http, "POST", "/v1/metrics", &[JSON], body.to_vec()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    {
        let got = r.sink.metrics.lock().unwrap();
        let m = &got[0].data.resource_metrics[0].scope_metrics[0].metrics[0];
        let Some(metric::Data::Sum(sum)) = &m.data else {
            panic!("a sum")
        };
        assert_eq!(sum.aggregation_temporality, 1);
        assert!(sum.is_monotonic);
        let p = &sum.data_points[0];
        assert_eq!(p.value, Some(number_data_point::Value::AsDouble(1.25)));
        assert_eq!(p.time_unix_nano, 1_795_255_210_000_000_000);
        assert_eq!(p.attributes[0].key, "user.email");
    }
    r.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn shared_fixtures_are_accepted_whole() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    let r = start("", "").await;
    let mut expected = 0;
    for name in [
        "claude-code-metrics-delta.json",
        "claude-code-metrics-cumulative-1.json",
        "claude-code-metrics-resource-identity.json",
        "codex-metrics.json",
    ] {
        let body = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let parsed: Metrics = serde_json::from_slice(&body).unwrap();
        expected += parsed.item_count();
        let a = send(r.http, "POST", "/v1/metrics", &[JSON], body).await;
        assert_eq!(a.status, 200, "{name}: {}", a.text());
    }
    let got: usize = r
        .sink
        .metrics
        .lock()
        .unwrap()
        .iter()
        .map(|b| b.data.item_count())
        .sum();
    assert!(expected > 0);
    assert_eq!(got, expected);
    assert_eq!(
        counter(&r, "otelcol_receiver_accepted_metric_points_total"),
        format!("otelcol_receiver_accepted_metric_points_total{{receiver=\"otlp\",transport=\"http\"}} {expected}")
    );
    for name in ["claude-code-events.json", "codex-events.json"] {
        let body = std::fs::read(dir.join(name)).unwrap();
        let a = send(r.http, "POST", "/v1/logs", &[JSON], body).await;
        assert_eq!(a.status, 200, "{name}: {}", a.text());
    }
    r.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn authenticator_and_metadata_reach_the_context() {
    let r = start(
        ", auth: {authenticator: strict}, include_metadata: true",
        ", auth: {authenticator: strict}",
    )
    .await;
    let body = one_point("ana@example.com", 3.0).encode_to_vec();
    let a = send(r.http, "POST", "/v1/metrics", &[PROTO], body.clone()).await;
    assert_eq!(a.status, 401);
    let s = a.proto_status();
    assert_eq!(
        (s.code, s.message.as_str()),
        (16, "authentication failed: missing bearer token")
    );
    let a = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[JSON, ("authorization", "Bearer wrong")],
        serde_json::to_vec(&one_point("a@b.c", 1.0)).unwrap(),
    )
    .await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["code"], 16);
    let a = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[
            PROTO,
            ("authorization", "Bearer good-token"),
            ("x-team", "platform"),
            ("x-user", "ana@example.com"),
        ],
        body,
    )
    .await;
    assert_eq!(a.status, 200);
    {
        let got = r.sink.metrics.lock().unwrap();
        let ctx = &got[0].context;
        assert_eq!(ctx.bearer_token().map(|t| t.expose()), Some("good-token"));
        assert_eq!(ctx.header("x-team"), Some("platform"));
        assert_eq!(
            ctx.header("x-user"),
            Some("ana@example.com"),
            "include_metadata keeps every header"
        );
    }

    let mut client = MetricsServiceClient::connect(format!("http://{}", r.grpc))
        .await
        .unwrap();
    let err = client
        .export(one_point("ana@example.com", 1.0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(one_point("ana@example.com", 1.0));
    req.metadata_mut()
        .insert("authorization", "Bearer good-token".parse().unwrap());
    client
        .export(req)
        .await
        .expect("accepted with the right token");
    {
        let got = r.sink.metrics.lock().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1].context.bearer_token().map(|t| t.expose()),
            Some("good-token")
        );
        assert_eq!(
            got[1].context.header("x-team"),
            None,
            "gRPC has include_metadata off"
        );
    }
    r.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn grpc_errors_map_to_unavailable_with_retry_info_and_size_limits() {
    let r = start("", ", max_recv_msg_size_mib: 1").await;
    let mut client = MetricsServiceClient::connect(format!("http://{}", r.grpc))
        .await
        .unwrap();
    *r.sink.answer.lock().unwrap() = Some(ConsumerError::retryable("queue is full"));
    let err = client
        .export(one_point("ana@example.com", 1.0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.message(), "queue is full (retryable)");
    assert_eq!(err.metadata().get("retry-after").unwrap(), "1");
    let details = RpcStatus::decode(err.details()).unwrap();
    assert_eq!(
        details.details[0].type_url,
        "type.googleapis.com/google.rpc.RetryInfo"
    );

    *r.sink.answer.lock().unwrap() = None;
    let mut big = one_point("ana@example.com", 1.0);
    big.resource_metrics[0].resource = Some(otelcol_core::pdata::proto::resource::v1::Resource {
        attributes: vec![KeyValue {
            key: "padding".into(),
            value: Some(otelcol_core::pdata::proto::common::v1::AnyValue {
                value: Some(
                    otelcol_core::pdata::proto::common::v1::any_value::Value::StringValue(
                        "x".repeat(2 << 20),
                    ),
                ),
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    let err = client.export(big).await.unwrap_err();
    // The Go receiver's answer: not OUT_OF_RANGE, which OTLP clients retry
    // forever, and without RetryInfo, so that they do not retry it at all.
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        RpcStatus::decode(err.details())
            .map(|s| s.details.is_empty())
            .unwrap_or(true),
        "no retry info: {err:?}"
    );
    assert!(r.sink.metrics.lock().unwrap().is_empty());
    client
        .export(one_point("ana@example.com", 1.0))
        .await
        .expect("the server still serves");
    r.receiver.shutdown().await.unwrap();
}

/// A raw gRPC call: one length-prefixed message of `message` bytes, sent
/// over HTTP/2; returns the `grpc-status` (headers or trailers) and message.
async fn raw_grpc(addr: SocketAddr, path: &str, message: &[u8]) -> (String, String) {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(message);
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("answered in time")
        .unwrap();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap();
    let all = body.trailers().cloned().unwrap_or_default();
    let get = |name: &str| {
        headers
            .get(name)
            .or_else(|| all.get(name))
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (get("grpc-status"), get("grpc-message"))
}

#[tokio::test]
async fn grpc_malformed_protobuf_is_invalid_argument() {
    let r = start("", "").await;
    // Field 1 (resource_metrics) says 100 bytes follow; 2 do.
    let (code, message) = raw_grpc(
        r.grpc,
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        &[0x0a, 100, 1, 2],
    )
    .await;
    assert_eq!(
        code,
        (tonic::Code::InvalidArgument as i32).to_string(),
        "{message}"
    );
    assert!(message.contains("decode"), "{message}");
    assert!(r.sink.metrics.lock().unwrap().is_empty());
    // An error the pipeline gives keeps its own code.
    *r.sink.answer.lock().unwrap() = Some(ConsumerError::permanent("broken exporter"));
    let (code, _) = raw_grpc(
        r.grpc,
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        &one_point("ana@example.com", 1.0).encode_to_vec(),
    )
    .await;
    assert_eq!(code, (tonic::Code::Internal as i32).to_string());
    r.receiver.shutdown().await.unwrap();
}

/// `keepalive.server_parameters.max_connection_idle` (Go meaning): a
/// connection with no call in flight for that long is closed; one with a
/// call in flight is not, however long the call takes.
#[tokio::test]
async fn grpc_connections_idle_past_max_connection_idle_are_closed() {
    use tokio::io::AsyncReadExt;
    let r = start(
        "",
        ", keepalive: {server_parameters: {max_connection_idle: 1s, time: 1h, timeout: 5s}}",
    )
    .await;
    // Opened and left: closed by the server.
    let mut idle = tokio::net::TcpStream::connect(r.grpc).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "an idle connection was not closed within 10 s"
    );

    // A call that takes 2.5 s (longer than the idle limit) completes.
    *r.sink.delay.lock().unwrap() = Duration::from_millis(2500);
    let mut client = MetricsServiceClient::connect(format!("http://{}", r.grpc))
        .await
        .unwrap();
    client
        .export(one_point("ana@example.com", 1.0))
        .await
        .expect("a call in flight keeps its connection");
    assert_eq!(r.sink.metrics.lock().unwrap().len(), 1);
    assert_eq!(
        r.sink.metrics.lock().unwrap()[0]
            .context
            .client_addr
            .map(|a| a.ip()),
        Some(std::net::Ipv4Addr::LOCALHOST.into()),
        "the client address still reaches the context"
    );
    r.receiver.shutdown().await.unwrap();
}

#[test]
fn grpc_keepalive_takes_the_go_keys() {
    use otelcol_core::component::Factory;
    use otelcol_receiver_otlp::config::OtlpReceiverConfig;
    let yaml = "protocols:\n  grpc:\n    max_concurrent_streams: 16\n    keepalive:\n      server_parameters:\n        max_connection_idle: 11s\n        max_connection_age: 12s\n        max_connection_age_grace: 5s\n        time: 30s\n        timeout: 4s\n      enforcement_policy:\n        min_time: 10s\n        permit_without_stream: true\n";
    let raw: otelcol_core::config::RawConfig = serde_yaml::from_str(yaml).unwrap();
    OtlpReceiverFactory.validate(&raw).unwrap();
    let c: OtlpReceiverConfig = otelcol_core::config::decode(&raw).unwrap();
    let g = c.protocols.grpc.unwrap();
    let p = &g.keepalive.server_parameters;
    assert_eq!(g.max_concurrent_streams, 16);
    assert_eq!(
        [
            p.max_connection_idle,
            p.max_connection_age,
            p.max_connection_age_grace,
            p.time,
            p.timeout
        ],
        [11, 12, 5, 30, 4].map(Duration::from_secs)
    );
    let e = g.keepalive.enforcement_policy.unwrap();
    assert_eq!(
        (e.min_time, e.permit_without_stream),
        (Duration::from_secs(10), true)
    );
    // Defaults: idle connections close after 5 minutes; 100 calls per connection.
    let raw: otelcol_core::config::RawConfig =
        serde_yaml::from_str("protocols:\n  grpc:\n").unwrap();
    let c: OtlpReceiverConfig = otelcol_core::config::decode(&raw).unwrap();
    let g = c.protocols.grpc.unwrap();
    assert_eq!(
        g.keepalive.server_parameters.max_connection_idle,
        Duration::from_secs(300)
    );
    assert_eq!(g.max_concurrent_streams, 100);
}

/// `protocols.http.cors` as the Go receiver answers it: preflights from
/// allowed origins get the CORS headers, others a bare 204; answers to
/// allowed origins carry `Access-Control-Allow-Origin`.
#[tokio::test]
async fn cors_preflights_and_answers_follow_the_allowed_origins() {
    let r = start(
        ", cors: {allowed_origins: ['https://*.example.com'], allowed_headers: [x-team], max_age: 600}",
        "",
    )
    .await;
    async fn preflight(addr: SocketAddr, origin: &str, headers: &str) -> Answer {
        let asked = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", headers),
        ];
        send(addr, "OPTIONS", "/v1/metrics", &asked, vec![]).await
    }
    let a = preflight(r.http, "https://app.example.com", "content-type, x-team").await;
    assert_eq!(a.status, 204);
    let h = |a: &Answer, name: &str| a.headers.get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        h(&a, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        h(&a, "access-control-allow-methods").as_deref(),
        Some("POST")
    );
    assert_eq!(
        h(&a, "access-control-allow-headers").as_deref(),
        Some("content-type, x-team")
    );
    assert_eq!(
        h(&a, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(h(&a, "access-control-max-age").as_deref(), Some("600"));
    for (origin, headers) in [
        ("https://evil.test", "content-type"),
        ("https://app.example.com", "content-type, x-secret"),
    ] {
        let a = preflight(r.http, origin, headers).await;
        assert_eq!(a.status, 204);
        assert_eq!(
            h(&a, "access-control-allow-origin"),
            None,
            "{origin} {headers}"
        );
    }
    assert!(
        r.sink.metrics.lock().unwrap().is_empty(),
        "a preflight is not data"
    );

    let body = one_point("ana@example.com", 1.0).encode_to_vec();
    let a = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[PROTO, ("origin", "https://app.example.com")],
        body.clone(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        h(&a, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let a = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[PROTO, ("origin", "https://evil.test")],
        body,
    )
    .await;
    assert_eq!(
        a.status, 200,
        "CORS is for browsers; the data is still taken"
    );
    assert_eq!(h(&a, "access-control-allow-origin"), None);
    r.receiver.shutdown().await.unwrap();

    // Without `cors`, OPTIONS is just a method the receiver does not take.
    let plain = start("", "").await;
    let a = send(
        plain.http,
        "OPTIONS",
        "/v1/metrics",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
        vec![],
    )
    .await;
    assert_eq!(a.status, 405);
    plain.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let r = start(", read_header_timeout: 500ms, read_timeout: 1s", "").await;
    // Headers that never end: the connection is closed after read_header_timeout.
    let mut slow = tokio::net::TcpStream::connect(r.http).await.unwrap();
    slow.write_all(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server closed the connection of a client that never finished its headers"
    );
    // A body that never ends: answered 408 after read_timeout.
    let mut slow = tokio::net::TcpStream::connect(r.http).await.unwrap();
    slow.write_all(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf))
        .await
        .expect("answered in time")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    r.receiver.shutdown().await.unwrap();
}

/// One point whose `deep` attribute nests `levels` AnyValues (a key-value
/// list in a key-value list …, a string at the bottom).
fn nested_point(levels: usize) -> Metrics {
    use otelcol_core::pdata::proto::common::v1::{any_value, AnyValue, KeyValueList};
    let mut value = AnyValue {
        value: Some(any_value::Value::StringValue("leaf".into())),
    };
    for _ in 1..levels {
        value = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(value),
                    ..Default::default()
                }],
            })),
        };
    }
    let mut m = one_point("ana@example.com", 1.0);
    let Some(metric::Data::Gauge(g)) = &mut m.resource_metrics[0].scope_metrics[0].metrics[0].data
    else {
        unreachable!()
    };
    g.data_points[0].attributes.push(KeyValue {
        key: "deep".into(),
        value: Some(value),
        ..Default::default()
    });
    m
}

/// A log request whose body nests `levels` AnyValues, encoded by hand (the
/// generated encoder recurses, and would overflow the test's own stack).
fn abyss_log(levels: usize) -> Vec<u8> {
    let field = |tag: u8, inner: &[u8]| {
        let mut out = vec![tag];
        let mut n = inner.len();
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(inner);
        out
    };
    let mut value = field(0x0a, b"leaf");
    for _ in 1..levels {
        value = field(0x32, &field(0x0a, &field(0x12, &value)));
    }
    field(0x0a, &field(0x12, &field(0x12, &field(0x2a, &value))))
}

/// Go's decoder takes any nesting; prost and serde_json stopped near 30
/// levels, so 60 was refused. Now: up to 100 levels over every transport,
/// decoded whole; deeper is refused as invalid, and a 5,000-level message
/// neither crashes nor stalls the receiver.
#[tokio::test]
async fn attribute_values_nest_one_hundred_levels_over_every_transport() {
    const EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    let r = start("", "").await;
    for levels in [60, 100] {
        let m = nested_point(levels);
        let proto = send(r.http, "POST", "/v1/metrics", &[PROTO], m.encode_to_vec()).await;
        assert_eq!(
            proto.status,
            200,
            "{levels} levels, protobuf: {}",
            proto.text()
        );
        let json = send(
            r.http,
            "POST",
            "/v1/metrics",
            &[JSON],
            serde_json::to_vec(&m).unwrap(),
        )
        .await;
        assert_eq!(json.status, 200, "{levels} levels, JSON: {}", json.text());
        let (code, message) = raw_grpc(r.grpc, EXPORT, &m.encode_to_vec()).await;
        assert_eq!(code, "0", "{levels} levels, gRPC: {message}");
        let got = r.sink.metrics.lock().unwrap();
        assert_eq!(got.len(), 3);
        for b in got.iter() {
            assert_eq!(b.data, m, "{levels} levels arrive whole");
        }
        drop(got);
        r.sink.metrics.lock().unwrap().clear();
    }
    let deeper = nested_point(101).encode_to_vec();
    let a = send(r.http, "POST", "/v1/metrics", &[PROTO], deeper.clone()).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.proto_status().message,
        "cannot decode the protobuf body: attribute values nest deeper than 100 levels"
    );
    let (code, message) = raw_grpc(r.grpc, EXPORT, &deeper).await;
    assert_eq!(code, (tonic::Code::InvalidArgument as i32).to_string());
    assert_eq!(
        message,
        "failed%20to%20decode%20the%20request:%20attribute%20values%20nest%20deeper%20than%20100%20levels"
    );
    let json = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[JSON],
        serde_json::to_vec(&nested_point(200)).unwrap(),
    )
    .await;
    assert_eq!(json.status, 400);
    assert!(
        json.json()["message"]
            .as_str()
            .unwrap()
            .contains("JSON nests deeper than 416 levels"),
        "{}",
        json.text()
    );
    let abyss = abyss_log(5_000);
    assert_eq!(
        send(r.http, "POST", "/v1/logs", &[PROTO], abyss.clone())
            .await
            .status,
        400
    );
    let (code, _) = raw_grpc(
        r.grpc,
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        &abyss,
    )
    .await;
    assert_eq!(code, (tonic::Code::InvalidArgument as i32).to_string());
    assert!(r.sink.metrics.lock().unwrap().is_empty());
    let fine = send(
        r.http,
        "POST",
        "/v1/metrics",
        &[PROTO],
        one_point("ana@example.com", 2.0).encode_to_vec(),
    )
    .await;
    assert_eq!(fine.status, 200, "the receiver still serves");
    r.receiver.shutdown().await.unwrap();
}

/// `keep_alives_enabled: false` (Go key): each response closes its
/// connection; by default the connection stays open for the next request.
#[tokio::test]
async fn keep_alives_can_be_turned_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn one_request(addr: SocketAddr) -> (String, bool) {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = br#"{"resourceMetrics":[]}"#;
        let head = format!(
            "POST /v1/metrics HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(body).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = conn.read(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer[..n]).to_lowercase();
        let mut rest = [0u8; 16];
        let closed = matches!(
            tokio::time::timeout(Duration::from_millis(500), conn.read(&mut rest)).await,
            Ok(Ok(0))
        );
        (text, closed)
    }
    let off = start(", keep_alives_enabled: false", "").await;
    let (text, closed) = one_request(off.http).await;
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(closed, "the connection ends after the response");
    off.receiver.shutdown().await.unwrap();
    let on = start("", "").await;
    let (text, closed) = one_request(on.http).await;
    assert!(!text.contains("connection: close"), "{text}");
    assert!(!closed, "kept alive by default");
    on.receiver.shutdown().await.unwrap();
}

/// The protobuf bytes a request was decoded from go along with it over
/// both transports (gzip'd gRPC: the decompressed message), so a durable
/// aggregation logs them instead of encoding the request again; JSON has
/// none.
/// Sends `m` over HTTP as protobuf and as JSON, then over gRPC plain and
/// gzip'd; each must be answered OK.
async fn send_four_ways(r: &Running, m: &Metrics) {
    let a = send(r.http, "POST", "/v1/metrics", &[PROTO], m.encode_to_vec()).await;
    assert_eq!(a.status, 200);
    let json = serde_json::to_vec(m).unwrap();
    let a = send(r.http, "POST", "/v1/metrics", &[JSON], json).await;
    assert_eq!(a.status, 200);
    let mut client = MetricsServiceClient::connect(format!("http://{}", r.grpc))
        .await
        .unwrap();
    client.export(m.clone()).await.unwrap();
    let mut zipped = MetricsServiceClient::connect(format!("http://{}", r.grpc))
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    zipped.export(m.clone()).await.unwrap();
}

#[tokio::test]
async fn the_received_protobuf_bytes_go_along_with_the_request_over_both_transports() {
    let r = start("", "").await;
    let m = one_point("ana@example.com", 2.0);
    let encoded = m.encode_to_vec();
    send_four_ways(&r, &m).await;
    let got = r.sink.metrics.lock().unwrap();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|b| b.data == m));
    let received: Vec<Option<&[u8]>> = got.iter().map(|b| b.received.as_deref()).collect();
    assert_eq!(
        received,
        [
            Some(&encoded[..]),
            None,
            Some(&encoded[..]),
            Some(&encoded[..])
        ]
    );
}

/// A pipeline that reads the bytes itself gets protobuf requests
/// undecoded, over both transports, their items counted on the wire; JSON
/// on the fast path comes written as protobuf (the same request), JSON
/// outside it decoded; and what the pipeline answers for bytes it cannot
/// decode reaches the sender as that pipeline's error.
#[tokio::test]
async fn a_pipeline_that_reads_the_bytes_gets_protobuf_undecoded() {
    let sink = Sink {
        reads_received: true,
        ..Default::default()
    };
    let r = start_with(sink, "", "").await;
    let mut m = one_point("ana@example.com", 2.0);
    m.resource_metrics.push(m.resource_metrics[0].clone());
    let encoded = m.encode_to_vec();
    send_four_ways(&r, &m).await;
    {
        let got = r.sink.metrics.lock().unwrap();
        let seen: Vec<(bool, usize, Option<&[u8]>)> = got
            .iter()
            .map(|b| (b.undecoded(), b.items(), b.received.as_deref()))
            .collect();
        let bytes = Some(&encoded[..]);
        let transcoded = got[1].received.as_deref();
        assert_eq!(
            seen,
            [
                (true, 2, bytes),
                (true, 2, transcoded),
                (true, 2, bytes),
                (true, 2, bytes)
            ]
        );
        assert_eq!(got[0].data, Metrics::default());
        assert_eq!(got[1].data, Metrics::default());
        assert_eq!(Metrics::decode(transcoded.unwrap()).unwrap(), m);
    }
    // JSON outside the fast path (a snake_case name) is decoded.
    let snake = serde_json::to_string(&m)
        .unwrap()
        .replace("timeUnixNano", "time_unix_nano");
    let a = send(r.http, "POST", "/v1/metrics", &[JSON], snake.into_bytes()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    {
        let mut got = r.sink.metrics.lock().unwrap();
        let b = got.pop().unwrap();
        assert_eq!((b.undecoded(), b.items(), b.received), (false, 2, None));
        assert_eq!(b.data, m);
    }
    assert_eq!(
        counter(&r, "otelcol_receiver_accepted_metric_points_total"),
        "otelcol_receiver_accepted_metric_points_total{receiver=\"otlp\",transport=\"http\"} 6"
    );
    assert_eq!(
        counter_on(&r, "otelcol_receiver_accepted_metric_points_total", "grpc"),
        "otelcol_receiver_accepted_metric_points_total{receiver=\"otlp\",transport=\"grpc\"} 4"
    );
    // Not even the nesting check runs here: the pipeline checks what it
    // cannot read in place (the aggregation processor refuses this one).
    let deep = nested_point(101).encode_to_vec();
    let a = send(r.http, "POST", "/v1/metrics", &[PROTO], deep.clone()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    {
        let got = r.sink.metrics.lock().unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[4].received.as_deref(), Some(&deep[..]));
    }
    // The pipeline's answer for bytes it cannot decode is the sender's.
    *r.sink.answer.lock().unwrap() = Some(ConsumerError::Permanent {
        message: "the request is not valid OTLP protobuf: invalid wire type".into(),
        kind: otelcol_core::consumer::PermanentKind::InvalidData,
    });
    let a = send(r.http, "POST", "/v1/metrics", &[PROTO], encoded.clone()).await;
    assert_eq!(a.status, 400);
    let mut client = MetricsServiceClient::connect(format!("http://{}", r.grpc))
        .await
        .unwrap();
    let e = client.export(m.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("not valid OTLP protobuf"), "{e:?}");
}
