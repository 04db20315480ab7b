//! `otlp` and `otlphttp` against this collector's own OTLP receiver on
//! 127.0.0.1: the data arrives exactly, the caller's bearer token is
//! forwarded by `headers_setter`, and a refusal is permanent while a busy
//! answer is retried until it passes.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use otelcol_core::component::{
    ComponentId, CreateSettings, Exporter, ExporterFactory, Extension, ExtensionFactory, Host,
    Kind, Lifecycle, ReceiverFactory, SignalConsumers,
};
use otelcol_core::consumer::{
    AuthData, Batch, BearerToken, Consumer, ConsumerError, RequestContext,
};
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::{string_attribute, Metrics};
use otelcol_core::status::StatusBoard;
use otelcol_exporter_otlp::{OtlpGrpcExporterFactory, OtlpHttpExporterFactory};
use otelcol_receiver_otlp::OtlpReceiverFactory;

/// What the receiving collector got: data and the token it came with.
#[derive(Default)]
struct Sink {
    got: Mutex<Vec<(Metrics, Option<String>)>>,
    /// Answers given before accepting, in order.
    answers: Mutex<Vec<ConsumerError>>,
}

#[async_trait]
impl Consumer<Metrics> for Sink {
    async fn consume(&self, batch: Batch<Metrics>) -> Result<(), ConsumerError> {
        if let Some(e) = self.answers.lock().unwrap().pop() {
            return Err(e);
        }
        let token = batch.context.bearer_token().map(|t| t.expose().to_string());
        self.got.lock().unwrap().push((batch.data, token));
        Ok(())
    }
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn raw(yaml: &str) -> otelcol_core::config::RawConfig {
    serde_yaml::from_str(yaml).unwrap()
}

fn extension(f: &dyn ExtensionFactory, id: &str, yaml: &str) -> (ComponentId, Arc<dyn Extension>) {
    let id: ComponentId = id.parse().unwrap();
    let e = f
        .create(
            CreateSettings::standalone(id.clone(), Kind::Extension),
            &raw(yaml),
        )
        .unwrap();
    (id, e)
}

/// The host both sides run in: the receiver's pass-through authenticator
/// and the exporters' `headers_setter`.
fn host() -> Host {
    let extensions: BTreeMap<_, _> = [
        extension(
            &otelcol_extension_auth::MultitudesAuthFactory,
            "multitudes_auth",
            "",
        ),
        extension(
            &otelcol_extension_auth::headers_setter::HeadersSetterFactory,
            "headers_setter",
            "headers: [{key: authorization, from_context: authorization}]",
        ),
    ]
    .into();
    Host::new(extensions, Arc::new(StatusBoard::new()))
}

struct Upstream {
    sink: Arc<Sink>,
    receiver: Arc<dyn Lifecycle>,
    http: u16,
    grpc: u16,
}

async fn upstream() -> Upstream {
    let (http, grpc) = (port(), port());
    let auth = "auth: {authenticator: multitudes_auth}";
    let yaml = format!(
        "protocols:\n  http: {{endpoint: '127.0.0.1:{http}', {auth}}}\n  grpc: {{endpoint: '127.0.0.1:{grpc}', {auth}}}\n"
    );
    let sink = Arc::new(Sink::default());
    let next = SignalConsumers {
        metrics: Some(sink.clone()),
        logs: None,
        traces: None,
    };
    let receiver = OtlpReceiverFactory
        .create(
            CreateSettings::standalone(ComponentId::new("otlp"), Kind::Receiver),
            &raw(&yaml),
            next,
        )
        .unwrap();
    receiver.start(&host()).await.unwrap();
    Upstream {
        sink,
        receiver,
        http,
        grpc,
    }
}

fn totals(user: &str, value: f64) -> Metrics {
    Metrics {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", "claude-code")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "claude_code.token.usage".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![string_attribute("user.email", user)],
                            time_unix_nano: 1_795_268_825_000_000_000,
                            value: Some(number_data_point::Value::AsDouble(value)),
                            ..Default::default()
                        }],
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

fn from(token: &str, data: Metrics) -> Batch<Metrics> {
    Batch {
        data,
        context: RequestContext {
            auth: Some(Arc::new(AuthData {
                token: Some(BearerToken::new(token)),
                headers: vec![],
            })),
            ..Default::default()
        },
        received: None,
    }
}

async fn exporter(f: &dyn ExporterFactory, yaml: &str) -> Arc<dyn Exporter<Metrics>> {
    let s = CreateSettings::standalone(ComponentId::new("otlp"), Kind::Exporter);
    let e = f.create_metrics(s, &raw(yaml)).unwrap();
    e.start(&host()).await.unwrap();
    e
}

const NO_QUEUE: &str = "sending_queue: {enabled: false}\nretry_on_failure: {initial_interval: 20ms, max_interval: 50ms, max_elapsed_time: 10s}\nauth: {authenticator: headers_setter}\n";

#[tokio::test]
async fn both_transports_deliver_exactly_with_the_callers_token() {
    let up = upstream().await;
    let grpc = exporter(
        &OtlpGrpcExporterFactory,
        &format!(
            "endpoint: 127.0.0.1:{}\ntls: {{insecure: true}}\n{NO_QUEUE}",
            up.grpc
        ),
    )
    .await;
    let http_proto = exporter(
        &OtlpHttpExporterFactory,
        &format!("endpoint: http://127.0.0.1:{}\n{NO_QUEUE}", up.http),
    )
    .await;
    let http_json = exporter(
        &OtlpHttpExporterFactory,
        &format!(
            "endpoint: http://127.0.0.1:{}\nencoding: json\ncompression: zstd\n{NO_QUEUE}",
            up.http
        ),
    )
    .await;
    grpc.consume(from("ana-token", totals("ana@example.com", 120.5)))
        .await
        .unwrap();
    http_proto
        .consume(from("bo-token", totals("bo@example.com", 7.0)))
        .await
        .unwrap();
    http_json
        .consume(from("cy-token", totals("cy@example.com", 0.25)))
        .await
        .unwrap();
    let got = up.sink.got.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            (
                totals("ana@example.com", 120.5),
                Some("ana-token".to_string())
            ),
            (totals("bo@example.com", 7.0), Some("bo-token".to_string())),
            (totals("cy@example.com", 0.25), Some("cy-token".to_string())),
        ]
    );
    for e in [grpc, http_proto, http_json] {
        e.shutdown().await.unwrap();
    }
    up.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refusal_is_permanent_and_a_busy_answer_is_retried() {
    let up = upstream().await;
    let grpc = exporter(
        &OtlpGrpcExporterFactory,
        &format!("endpoint: http://127.0.0.1:{}\n{NO_QUEUE}", up.grpc),
    )
    .await;
    let http = exporter(
        &OtlpHttpExporterFactory,
        &format!("endpoint: http://127.0.0.1:{}\n{NO_QUEUE}", up.http),
    )
    .await;
    for (name, e) in [("grpc", &grpc), ("http", &http)] {
        // Busy twice (UNAVAILABLE / 503 with a retry hint), then accepted.
        *up.sink.answers.lock().unwrap() = vec![
            ConsumerError::Retryable {
                message: "busy".into(),
                retry_after: Some(Duration::from_millis(10)),
            },
            ConsumerError::retryable("busy"),
        ];
        e.consume(from("t", totals("ana@example.com", 1.0)))
            .await
            .unwrap();
        assert_eq!(up.sink.got.lock().unwrap().len(), 1, "{name}");
        up.sink.got.lock().unwrap().clear();

        // Refused as invalid: one attempt, a permanent error.
        *up.sink.answers.lock().unwrap() = vec![ConsumerError::Permanent {
            message: "bad data".into(),
            kind: otelcol_core::consumer::PermanentKind::InvalidData,
        }];
        let err = e
            .consume(from("t", totals("ana@example.com", 2.0)))
            .await
            .unwrap_err();
        assert!(!err.is_retryable(), "{name}: {err}");
        assert!(up.sink.answers.lock().unwrap().is_empty(), "{name}");
        assert!(up.sink.got.lock().unwrap().is_empty(), "{name}");
    }
    // Nothing listens: retryable until retries run out.
    let dead = exporter(
        &OtlpGrpcExporterFactory,
        &format!(
            "endpoint: http://127.0.0.1:{}\nsending_queue: {{enabled: false}}\nretry_on_failure: {{enabled: false}}\n",
            port()
        ),
    )
    .await;
    let err = dead
        .consume(from("t", totals("ana@example.com", 3.0)))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    up.receiver.shutdown().await.unwrap();
}
