//! The production config on the real binary: the OpenTelemetry SDK sends
//! Claude Code metrics and events for three users, two with their own bearer
//! token and one without; an HTTP server on 127.0.0.1 plays the Multitudes
//! endpoint. Checked: exact totals per user, each under the right
//! `Authorization` header at `/v1/metrics`, as strict OTLP/JSON; events at
//! `/v1/logs`; no token in any log line of the run.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use opentelemetry::logs::{AnyValue as LogValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{LogExporter, MetricExporter, Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::Resource;
use otelcol_core::pdata::{Logs, Metrics};
use otelcol_core::server::{self, ServerOptions};

const FALLBACK: &str = "fallback-token-xyz-0001";

#[derive(Clone, Debug)]
struct Received {
    path: String,
    auth: String,
    content_type: String,
    body: bytes::Bytes,
}

fn send(http_port: u16, email: &str, token: Option<&str>, cost: f64, tokens: f64) {
    let headers: HashMap<String, String> = token
        .map(|t| ("authorization".to_string(), format!("Bearer {t}")))
        .into_iter()
        .collect();
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "claude-code"),
            KeyValue::new("user.email", email.to_string()),
        ])
        .build();
    let exporter = MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("http://127.0.0.1:{http_port}/v1/metrics"))
        .with_headers(headers.clone())
        .with_temporality(Temporality::Delta)
        .build()
        .unwrap();
    let provider = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build();
    let meter = provider.meter("com.anthropic.claude_code");
    let session = [
        KeyValue::new("session.id", format!("s-{email}")),
        KeyValue::new("user.email", email.to_string()),
    ];
    let cost_counter = meter
        .f64_counter("claude_code.cost.usage")
        .with_unit("USD")
        .build();
    let token_counter = meter
        .f64_counter("claude_code.token.usage")
        .with_unit("tokens")
        .build();
    cost_counter.add(
        cost,
        &[&session[..], &[KeyValue::new("model", "claude-sonnet")]].concat(),
    );
    token_counter.add(
        tokens,
        &[
            &session[..],
            &[
                KeyValue::new("type", "input"),
                KeyValue::new("model", "claude-sonnet"),
            ],
        ]
        .concat(),
    );
    provider.force_flush().unwrap();
    cost_counter.add(
        cost,
        &[&session[..], &[KeyValue::new("model", "claude-sonnet")]].concat(),
    );
    provider.force_flush().unwrap();
    provider.shutdown().unwrap();

    let logs = LogExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("http://127.0.0.1:{http_port}/v1/logs"))
        .with_headers(headers)
        .build()
        .unwrap();
    let loggers = SdkLoggerProvider::builder()
        .with_resource(resource)
        .with_simple_exporter(logs)
        .build();
    let logger = loggers.logger("com.anthropic.claude_code.events");
    let mut record = logger.create_log_record();
    record.set_body(LogValue::from("claude_code.api_request"));
    record.add_attribute("event.name", "api_request");
    record.add_attribute("user.email", email.to_string());
    record.add_attribute("cost_usd", cost);
    logger.emit(record);
    loggers.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_config_delivers_per_user_totals_under_each_token() {
    common::init_crypto();
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let listener = server::bind("127.0.0.1:0").await.unwrap();
    let sink = received.clone();
    let endpoint = server::serve(listener, ServerOptions::default(), move |req, _| {
        let sink = sink.clone();
        async move {
            let h = |n: &str| {
                req.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            let (path, auth, content_type) = (
                req.uri().path().to_string(),
                h("authorization"),
                h("content-type"),
            );
            let body = req.into_body().collect().await.unwrap().to_bytes();
            sink.lock().unwrap().push(Received {
                path,
                auth,
                content_type,
                body,
            });
            server::response(hyper::StatusCode::OK, "application/json", "{}")
        }
    });
    let url = format!("http://127.0.0.1:{}/ai/otel/", endpoint.local_addr().port());
    let (collector, ports) = common::spawn_production_forwarding_events(
        &url,
        FALLBACK,
        &["service.telemetry.logs.level=debug"],
        &[(
            "RUST_LOG",
            "debug,hyper=info,h2=info,tonic=info,reqwest=info".to_string(),
        )],
    )
    .await;
    let (http, zpages) = (ports.http, ports.zpages);
    let users = [
        ("ana@example.com", Some("tok-ana-aaaa-1111"), 0.25, 1000.0),
        ("bo@example.com", Some("tok-bo-bbbb-2222"), 1.5, 2000.0),
        ("cy@example.com", None, 0.75, 3000.0),
    ];
    tokio::task::spawn_blocking(move || {
        for (email, token, cost, tokens) in users {
            send(http, email, token, cost, tokens);
        }
    })
    .await
    .unwrap();
    let (status, zpage) = common::http(
        "GET",
        &format!("http://127.0.0.1:{zpages}/debug/pipelinez?format=json"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    assert!(zpage.contains("\"aggregation\""), "{zpage}");

    let (ok, log) = collector.stop();
    assert!(ok, "clean exit: {log:?}");
    endpoint.shutdown().await;

    let got = received.lock().unwrap().clone();
    let mut totals: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    let mut log_events: Vec<(String, String)> = vec![];
    for r in &got {
        assert_eq!(r.content_type, "application/json");
        match r.path.as_str() {
            "/ai/otel/v1/metrics" => {
                let m: Metrics = serde_json::from_slice(&r.body).expect("strict OTLP/JSON");
                for rm in &m.resource_metrics {
                    for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                        let Some(Data::Sum(s)) = &metric.data else {
                            panic!("sums out")
                        };
                        for p in &s.data_points {
                            let user = p
                                .attributes
                                .iter()
                                .find(|kv| kv.key == "user.email")
                                .and_then(|kv| kv.value.as_ref())
                                .and_then(otelcol_core::pdata::as_str)
                                .unwrap()
                                .to_string();
                            let Some(Value::AsDouble(v)) = p.value else {
                                panic!("doubles out")
                            };
                            *totals
                                .entry((r.auth.clone(), user, metric.name.clone()))
                                .or_insert(0.0) += v;
                        }
                    }
                }
            }
            "/ai/otel/v1/logs" => {
                let l: Logs = serde_json::from_slice(&r.body).expect("strict OTLP/JSON");
                for rec in l
                    .resource_logs
                    .iter()
                    .flat_map(|rl| &rl.scope_logs)
                    .flat_map(|sl| &sl.log_records)
                {
                    let user = rec
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "user.email")
                        .and_then(|kv| kv.value.as_ref())
                        .and_then(otelcol_core::pdata::as_str)
                        .unwrap()
                        .to_string();
                    log_events.push((r.auth.clone(), user));
                }
            }
            other => panic!("unexpected path {other}"),
        }
    }
    let k = |a: &str, u: &str, m: &str| (format!("Bearer {a}"), u.to_string(), m.to_string());
    let expected = BTreeMap::from([
        (
            k(
                "tok-ana-aaaa-1111",
                "ana@example.com",
                "claude_code.cost.usage",
            ),
            0.5,
        ),
        (
            k(
                "tok-ana-aaaa-1111",
                "ana@example.com",
                "claude_code.token.usage",
            ),
            1000.0,
        ),
        (
            k(
                "tok-bo-bbbb-2222",
                "bo@example.com",
                "claude_code.cost.usage",
            ),
            3.0,
        ),
        (
            k(
                "tok-bo-bbbb-2222",
                "bo@example.com",
                "claude_code.token.usage",
            ),
            2000.0,
        ),
        (k(FALLBACK, "cy@example.com", "claude_code.cost.usage"), 1.5),
        // Each user's `api_request` event also becomes a total through the
        // signaltometrics connector, under the same token as the metrics.
        (
            k(
                "tok-ana-aaaa-1111",
                "ana@example.com",
                "claude_code.events.cost.usage",
            ),
            0.25,
        ),
        (
            k(
                "tok-bo-bbbb-2222",
                "bo@example.com",
                "claude_code.events.cost.usage",
            ),
            1.5,
        ),
        (
            k(FALLBACK, "cy@example.com", "claude_code.events.cost.usage"),
            0.75,
        ),
        (
            k(FALLBACK, "cy@example.com", "claude_code.token.usage"),
            3000.0,
        ),
    ]);
    assert_eq!(totals, expected);
    log_events.sort();
    assert_eq!(
        log_events,
        vec![
            (format!("Bearer {FALLBACK}"), "cy@example.com".to_string()),
            (
                "Bearer tok-ana-aaaa-1111".to_string(),
                "ana@example.com".to_string()
            ),
            (
                "Bearer tok-bo-bbbb-2222".to_string(),
                "bo@example.com".to_string()
            ),
        ]
    );
    assert!(
        log.len() > 10,
        "a debug-level run logs plenty: {}",
        log.len()
    );
    for line in &log {
        for secret in ["tok-ana-aaaa-1111", "tok-bo-bbbb-2222", FALLBACK] {
            assert!(!line.contains(secret), "a token in the log: {line}");
        }
    }
}
