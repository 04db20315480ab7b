//! The two-tier deployment with the real binary on 127.0.0.1: one gateway
//! (`configs/gateway.yaml`, its DNS resolver swapped for the three
//! aggregators' addresses) in front of three aggregators (the production
//! config) and a fake Multitudes endpoint. Fifty users of the official
//! OpenTelemetry SDK, half delta and half cumulative, over OTLP/HTTP and
//! OTLP/gRPC: the totals delivered equal what was sent, exactly. The same load split round-robin over the
//! aggregators (what a plain Service does) counts cumulative streams more
//! than once: the test asserts that error exists, so the comparison is real.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::faults::{now_nanos, Endpoint};
use common::Collector;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use otelcol_core::pdata::Metrics;

const FALLBACK: &str = "fallback-token-2tier-01";

const FAST: [&str; 5] = [
    "processors.aggregation.aggregation_interval=1s",
    "processors.aggregation.grace=200ms",
    "processors.aggregation.emit_interval=200ms",
    "exporters.multitudes.retry_on_failure.initial_interval=50ms",
    "exporters.multitudes.retry_on_failure.max_interval=200ms",
];

fn point_json(user: &str, value: u64, cumulative_start: Option<u64>) -> Vec<u8> {
    let (temporality, start) = match cumulative_start {
        Some(s) => (2, s),
        None => (1, 0),
    };
    format!(
        r#"{{"resourceMetrics": [{{"resource": {{"attributes": [{{"key": "service.name", "value": {{"stringValue": "claude-code"}}}}]}},
        "scopeMetrics": [{{"metrics": [{{"name": "claude_code.token.usage", "unit": "tokens",
        "sum": {{"aggregationTemporality": {temporality}, "isMonotonic": true, "dataPoints": [
        {{"startTimeUnixNano": "{start}", "timeUnixNano": "{}", "asDouble": {value}, "attributes": [
          {{"key": "user.email", "value": {{"stringValue": "{user}"}}}},
          {{"key": "type", "value": {{"stringValue": "input"}}}}]}}]}}}}]}}]}}]}}"#,
        now_nanos()
    )
    .into_bytes()
}

/// Sends one point over OTLP/HTTP (JSON) or OTLP/gRPC, until it is taken.
async fn send(http: u16, grpc: u16, over_grpc: bool, body: Vec<u8>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ok = if over_grpc {
            let m: Metrics = serde_json::from_slice(&body).unwrap();
            let request = ExportMetricsServiceRequest {
                resource_metrics: m.resource_metrics,
            };
            match MetricsServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await {
                Ok(mut c) => c.export(request).await.is_ok(),
                Err(_) => false,
            }
        } else {
            common::http(
                "POST",
                &format!("http://127.0.0.1:{http}/v1/metrics"),
                &[("content-type", "application/json")],
                body.clone(),
            )
            .await
            .0 == 200
        };
        if ok {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a point taken within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One user of the official SDK: a meter provider whose resource names the
/// user (so the gateway finds `user.email` on the resource), exporting a
/// token counter with `temporality` over gRPC or HTTP/protobuf when flushed.
struct SdkUser {
    meters: opentelemetry_sdk::metrics::SdkMeterProvider,
    tokens: opentelemetry::metrics::Counter<f64>,
}

impl SdkUser {
    fn new(user: &str, cumulative: bool, over_grpc: bool, http: u16, grpc: u16) -> Self {
        use opentelemetry::metrics::MeterProvider as _;
        use opentelemetry_otlp::{MetricExporter, Protocol, WithExportConfig};
        use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
        let temporality = if cumulative {
            Temporality::Cumulative
        } else {
            Temporality::Delta
        };
        let timeout = Duration::from_secs(10);
        let exporter = if over_grpc {
            MetricExporter::builder()
                .with_tonic()
                .with_endpoint(format!("http://127.0.0.1:{grpc}"))
                .with_timeout(timeout)
                .with_temporality(temporality)
                .build()
        } else {
            MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("http://127.0.0.1:{http}/v1/metrics"))
                .with_timeout(timeout)
                .with_temporality(temporality)
                .build()
        }
        .expect("metric exporter");
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([
                opentelemetry::KeyValue::new("service.name", "claude-code"),
                opentelemetry::KeyValue::new("user.email", user.to_string()),
            ])
            .build();
        let meters = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(
                PeriodicReader::builder(exporter)
                    .with_interval(Duration::from_secs(3600))
                    .build(),
            )
            .build();
        let tokens = meters
            .meter("com.anthropic.claude_code")
            .f64_counter("claude_code.token.usage")
            .with_unit("tokens")
            .build();
        Self { meters, tokens }
    }

    /// Adds `value` tokens and exports (blocking).
    fn add_and_flush(&self, value: f64) {
        self.tokens
            .add(value, &[opentelemetry::KeyValue::new("type", "input")]);
        self.meters
            .force_flush()
            .expect("the gateway took the export");
    }
}

/// The gateway: `configs/gateway.yaml` on free loopback ports, routing to
/// `aggregators` (gRPC ports) by a static list instead of DNS.
async fn spawn_gateway(aggregators: &[u16]) -> (Collector, u16, u16) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/gateway.yaml");
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (http, grpc, health) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let hostnames: Vec<String> = aggregators
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    config["exporters"]["loadbalancing"]["resolver"] = serde_yaml::from_str(&format!(
        "static: {{hostnames: [{}]}}",
        hostnames.join(", ")
    ))
    .unwrap();
    let otlp = &mut config["receivers"]["otlp"]["protocols"];
    otlp["grpc"]["endpoint"] = format!("127.0.0.1:{grpc}").into();
    otlp["http"]["endpoint"] = format!("127.0.0.1:{http}").into();
    let health_ext = &mut config["extensions"]["healthcheckv2"];
    health_ext["http"]["endpoint"] = format!("127.0.0.1:{health}").into();
    health_ext["grpc"]["endpoint"] = format!("127.0.0.1:{}", common::free_port()).into();
    config["service"]["telemetry"] = serde_yaml::from_str(&format!(
        "metrics: {{address: '127.0.0.1:{}'}}",
        common::free_port()
    ))
    .unwrap();
    let file = common::scratch_data_dir().join("gateway.yaml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, serde_yaml::to_string(&config).unwrap()).unwrap();
    let gateway = Collector::spawn(&["--config".into(), file.display().to_string()], &[]);
    common::wait_healthy(&format!("http://127.0.0.1:{health}/")).await;
    (gateway, http, grpc)
}

/// (user → total) over every delivered body, one per idempotency key.
fn delivered(endpoint: &Endpoint) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for a in endpoint.delivered_once_per_key("/ai/otel/v1/metrics") {
        for (user, _, _, v) in common::token_points(&a.body) {
            *out.entry(user).or_insert(0.0) += v;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_routing_by_user_keeps_every_total_exact_where_round_robin_does_not() {
    let endpoint = Arc::new(Endpoint::default());
    endpoint.up.store(true, Ordering::SeqCst);
    let (url, _server) = endpoint.start().await;
    let mut aggregators = vec![];
    for _ in 0..3 {
        aggregators.push(common::spawn_production(&url, FALLBACK, &FAST, &[]).await);
    }
    let grpc_ports: Vec<u16> = aggregators.iter().map(|(_, p)| p.grpc).collect();
    let (gateway, gw_http, gw_grpc) = spawn_gateway(&grpc_ports).await;
    let start = now_nanos();

    // Fifty users of the official SDK through the gateway (half delta,
    // half cumulative; half over gRPC, half over HTTP/protobuf), and fifty
    // others round-robin over the aggregators; three exports each.
    let users: Vec<(String, SdkUser)> = (0..50u64)
        .map(|u| {
            let user = format!("user{u}@example.com");
            let sdk = SdkUser::new(&user, u % 2 == 1, u % 4 >= 2, gw_http, gw_grpc);
            (user, sdk)
        })
        .collect();
    let users = Arc::new(users);
    let mut expected = BTreeMap::new();
    let mut round_robin_cumulative = BTreeMap::new();
    let mut post = 0usize;
    for round in 1..=3u64 {
        let sdk_users = users.clone();
        tokio::task::spawn_blocking(move || {
            for (u, (_, sdk)) in sdk_users.iter().enumerate() {
                sdk.add_and_flush((round + u as u64) as f64);
            }
        })
        .await
        .unwrap();
        for u in 0..50u64 {
            // The SDK's cumulative export is the running sum of its adds,
            // so both kinds total the sum of what was added.
            *expected
                .entry(format!("user{u}@example.com"))
                .or_insert(0.0) += (round + u) as f64;
            let cumulative = u % 2 == 1;
            let over_grpc = u % 4 >= 2;
            let value = if cumulative {
                round * 10 + u
            } else {
                round + u
            };
            let rr = format!("rr{u}@example.com");
            let (_, ports) = &aggregators[post % 3];
            post += 1;
            let start = cumulative.then_some(start);
            send(
                ports.http,
                ports.grpc,
                over_grpc,
                point_json(&rr, value, start),
            )
            .await;
            if cumulative {
                round_robin_cumulative.insert(rr, value as f64);
            } else {
                *expected.entry(rr).or_insert(0.0) += value as f64;
            }
        }
    }
    let sdk_users = users.clone();
    tokio::task::spawn_blocking(move || {
        for (_, sdk) in sdk_users.iter() {
            sdk.meters.shutdown().expect("meter provider shut down");
        }
    })
    .await
    .unwrap();

    // The gateway drains its queues, then the aggregators flush their windows.
    let (ok, lines) = gateway.stop();
    assert!(ok, "{lines:?}");
    for (a, _) in aggregators {
        let (ok, lines) = a.stop();
        assert!(ok, "{lines:?}");
    }
    let got = delivered(&endpoint);
    for (user, want) in &expected {
        assert_eq!(got.get(user), Some(want), "{user}");
    }
    let mut overcounted = 0;
    for (user, last) in &round_robin_cumulative {
        let total = got.get(user).copied().unwrap_or(0.0);
        assert!(total >= *last, "{user}: {total} < {last}");
        if total > *last {
            overcounted += 1;
        }
    }
    assert_eq!(
        overcounted,
        round_robin_cumulative.len(),
        "round-robin counts each cumulative stream's earlier points again on each aggregator: {got:?}"
    );
}

/// Removing an aggregator from the ring mid-run: the users it had move to
/// the others. A moved cumulative stream is new there; the gateway sends
/// the time of its ring change, so the new aggregator counts it from its
/// next point on and never again from its start: each moved stream loses
/// at most the one increment across the move, nothing is counted twice,
/// and the streams that stayed are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_change_loses_at_most_one_increment_per_moved_stream_and_counts_nothing_twice() {
    use otelcol_core::component::{CreateSettings, Host, Kind, Lifecycle};
    use otelcol_core::consumer::{Batch, Consumer, RequestContext};
    use otelcol_exporter_loadbalancing::route::{Item, Router, RoutingKey};
    use otelcol_exporter_loadbalancing::{ring::Ring, LoadBalancingConfig, LoadBalancingExporter};

    common::init_crypto();
    let endpoint = Arc::new(Endpoint::default());
    endpoint.up.store(true, Ordering::SeqCst);
    let (url, _server) = endpoint.start().await;
    let mut aggregators = vec![];
    for _ in 0..3 {
        aggregators.push(common::spawn_production(&url, FALLBACK, &FAST, &[]).await);
    }
    let backends: Vec<String> = aggregators
        .iter()
        .map(|(_, p)| format!("127.0.0.1:{}", p.grpc))
        .collect();
    let config: LoadBalancingConfig = serde_yaml::from_str(&format!(
        "routing_key: attributes\nrouting_attributes: [user.email]\nprotocol:\n  otlp:\n    tls: {{insecure: true}}\n    sending_queue: {{enabled: false}}\n    retry_on_failure: {{initial_interval: 20ms, max_interval: 100ms}}\nresolver:\n  static: {{hostnames: [{}]}}\n",
        backends.join(", ")
    ))
    .unwrap();
    let gateway = LoadBalancingExporter::<Metrics>::shared(
        CreateSettings::standalone("loadbalancing".parse().unwrap(), Kind::Exporter),
        config,
    );
    let host = Host::new(Default::default(), Default::default());
    gateway.start(&host).await.unwrap();

    // Which users the removed aggregator had.
    let removed = backends[1].clone();
    let kept: Vec<String> = backends
        .iter()
        .filter(|b| **b != removed)
        .cloned()
        .collect();
    let router = Router {
        key: RoutingKey::Attributes,
        attributes: vec!["user.email".into()],
    };
    let (before, after) = (Ring::new(&backends), Ring::new(&kept));
    let users: Vec<String> = (0..30).map(|u| format!("mover{u}@example.com")).collect();
    let moved = |user: &str| {
        let attrs = [otelcol_core::pdata::string_attribute("user.email", user)];
        let key = router.key(&Item {
            resource: &[],
            scope: "",
            metric: "",
            attributes: &attrs,
            trace_id: &[],
        });
        before.pick(&key) != after.pick(&key)
    };
    assert!(
        users.iter().any(|u| moved(u)),
        "some users were on the removed aggregator"
    );

    let start = now_nanos();
    let send = |user: &str, value: u64| {
        let data: Metrics = serde_json::from_slice(&point_json(user, value, Some(start))).unwrap();
        let gateway = gateway.clone();
        async move {
            gateway
                .consume(Batch {
                    data,
                    context: RequestContext::default(),
                    received: None,
                })
                .await
                .unwrap()
        }
    };
    for round in 1..=6u64 {
        if round == 4 {
            gateway.set_backends(&kept).await.unwrap();
        }
        for (u, user) in users.iter().enumerate() {
            send(user, round * 10 + u as u64).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    gateway.shutdown().await.unwrap();
    for (a, _) in aggregators {
        let (ok, lines) = a.stop();
        assert!(ok, "{lines:?}");
    }
    let got = delivered(&endpoint);
    for (u, user) in users.iter().enumerate() {
        let last = (60 + u) as f64;
        let total = got.get(user).copied().unwrap_or(0.0);
        if moved(user) {
            assert!(
                total <= last && total >= last - 10.0,
                "{user} (moved): {total} not within one increment (10) below {last}"
            );
        } else {
            assert_eq!(total, last, "{user} stayed on its aggregator");
        }
    }
}
