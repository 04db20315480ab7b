//! The OpenTelemetry Rust SDK sends Claude Code-shaped metrics (names,
//! units, attributes, double values, delta temporality) for several users
//! over several windows through the real OTLP receiver and the aggregation
//! processor; the test checks the exact totals per user and window.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{MetricExporter, Protocol, WithExportConfig};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::Resource;

const WINDOW_MS: u64 = 2000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sleeps until at least 300 ms into the next window, and returns its start (ms).
fn enter_next_window() -> u64 {
    let next = (now_ms() / WINDOW_MS + 1) * WINDOW_MS;
    std::thread::sleep(Duration::from_millis(next + 300 - now_ms()));
    next
}

struct Claude {
    provider: SdkMeterProvider,
    cost: opentelemetry::metrics::Counter<f64>,
    tokens: opentelemetry::metrics::Counter<f64>,
    commits: opentelemetry::metrics::Counter<f64>,
}

/// One Claude Code process: its own resource and SDK pipeline, HTTP/protobuf.
fn claude(port: u16, email: &str) -> Claude {
    let exporter = MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("http://127.0.0.1:{port}/v1/metrics"))
        .with_temporality(Temporality::Delta)
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let provider = SdkMeterProvider::builder()
        .with_resource(
            Resource::builder_empty()
                .with_attributes([
                    KeyValue::new("service.name", "claude-code"),
                    KeyValue::new("service.version", "2.1.239"),
                    KeyValue::new("user.email", email.to_string()),
                ])
                .build(),
        )
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build();
    let meter = provider.meter("com.anthropic.claude_code");
    Claude {
        cost: meter
            .f64_counter("claude_code.cost.usage")
            .with_unit("USD")
            .build(),
        tokens: meter
            .f64_counter("claude_code.token.usage")
            .with_unit("tokens")
            .build(),
        commits: meter.f64_counter("claude_code.commit.count").build(),
        provider,
    }
}

/// (email, metric, window start ms) → total.
type Totals = BTreeMap<(String, String, u64), f64>;

fn run_sender(port: u16) -> Totals {
    let users = ["ana@example.com", "bo@example.com", "cy@example.com"];
    let clients: Vec<Claude> = users.iter().map(|u| claude(port, u)).collect();
    let mut expected = Totals::new();
    for round in 0..3u32 {
        let window = enter_next_window();
        for (i, (c, user)) in clients.iter().zip(users).enumerate() {
            let session = [
                KeyValue::new("session.id", format!("s-{i}-{round}")),
                KeyValue::new("user.email", user),
            ];
            let with = |extra: &[KeyValue]| [&session[..], extra].concat();
            let cost = 0.25 * (i as f64 + 1.0) + round as f64;
            c.cost
                .add(cost, &with(&[KeyValue::new("model", "claude-sonnet")]));
            c.cost
                .add(0.5, &with(&[KeyValue::new("model", "claude-sonnet")]));
            c.tokens.add(
                1000.0 * (i as f64 + 1.0),
                &with(&[
                    KeyValue::new("type", "input"),
                    KeyValue::new("model", "claude-sonnet"),
                ]),
            );
            c.tokens.add(
                0.0,
                &with(&[
                    KeyValue::new("type", "cacheRead"),
                    KeyValue::new("model", "claude-sonnet"),
                ]),
            );
            if round != 1 {
                c.commits.add(1.0, &session);
            }
            c.provider.force_flush().unwrap();
            let mut add = |metric: &str, v: f64| {
                *expected
                    .entry((user.to_string(), metric.to_string(), window))
                    .or_insert(0.0) += v
            };
            add("claude_code.cost.usage", cost + 0.5);
            add("claude_code.token.usage", 1000.0 * (i as f64 + 1.0));
            if round != 1 {
                add("claude_code.commit.count", 1.0);
            }
        }
        assert!(
            now_ms() < window + WINDOW_MS,
            "a round's exports all fell inside its window"
        );
    }
    for c in clients {
        c.provider.shutdown().unwrap();
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_metrics_become_exact_per_user_totals_per_window() {
    common::init_crypto();
    let port = common::free_port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols: {{http: {{endpoint: "127.0.0.1:{port}"}}}}
processors:
  aggregation:
    attribute_key: user.email
    aggregation_interval: 2s
    emit_interval: 250ms
    grace: 200ms
    exclude_attributes: [session.id]
exporters:
  capture:
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics: {{receivers: [otlp], processors: [aggregation], exporters: [capture]}}
"#
    );
    let (mut service, captured) = common::start_with_capture(&yaml).await;
    let expected = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || run_sender(port)),
    )
    .await
    .expect("sender finished in time")
    .unwrap();
    let emitted_before_shutdown = captured.metrics.lock().unwrap().len();
    // The first round's window closed about 2 s before the sender finished:
    // the processor's own task emitted it without waiting for shutdown.
    assert!(
        emitted_before_shutdown >= 1,
        "closed windows were emitted before shutdown"
    );
    service.shutdown().await;

    let mut got = Totals::new();
    for batch in captured.metrics.lock().unwrap().iter() {
        for rm in &batch.data.resource_metrics {
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                let Some(Data::Sum(s)) = &m.data else {
                    panic!("{}: a sum", m.name)
                };
                assert_eq!((s.aggregation_temporality, s.is_monotonic), (1, true));
                for p in &s.data_points {
                    assert!(
                        p.attributes.iter().all(|kv| kv.key != "session.id"),
                        "session.id excluded"
                    );
                    let user = p
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "user.email")
                        .and_then(|kv| kv.value.as_ref())
                        .and_then(otelcol_core::pdata::as_str)
                        .expect("the user key on every point")
                        .to_string();
                    let start_ms = p.start_time_unix_nano / 1_000_000;
                    assert_eq!(
                        p.time_unix_nano - p.start_time_unix_nano,
                        WINDOW_MS * 1_000_000
                    );
                    let Some(Value::AsDouble(v)) = p.value else {
                        panic!("doubles out")
                    };
                    *got.entry((user, m.name.clone(), start_ms)).or_insert(0.0) += v;
                }
            }
        }
    }
    assert_eq!(
        got.len(),
        3 * 3 * 3 - 3,
        "3 users × 3 windows × 3 metrics, less commits in round 2"
    );
    for (key, want) in &expected {
        let have = got.get(key).copied().unwrap_or(f64::NAN);
        assert!(
            (have - want).abs() < 1e-9,
            "{key:?}: got {have}, want {want}"
        );
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
}
