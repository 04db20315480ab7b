//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer), as
//! plain functions over bytes. `cargo xtask fuzz` runs them under libFuzzer;
//! `tests/corpus.rs` runs every seed and every kept crashing input through
//! them in the normal test suite, so a crash found once stays fixed.
//!
//! Each function must return normally for any input: a panic is the bug.

use std::sync::{Arc, OnceLock};

use otelcol_core::consumer::{Batch, Consumer, ConsumerError, RequestContext};
use otelcol_core::pdata::{Logs, Metrics, Traces};
use otelcol_processor_aggregation::{AggregationConfig, Engine};
use otelcol_receiver_otlp::decode::{decode_json, decode_proto, decompress, Encoding};

mod engine_input;

pub use engine_input::requests_and_ticks;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The targets by name, as `cargo xtask fuzz --target` and the corpus test
/// know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("http_body", http_body),
    ("grpc_request", grpc_request),
    ("engine", engine),
    ("ottl", ottl),
    ("config", config),
    ("json_fast_path", json_fast_path),
    ("metrics_view", metrics_view),
];

/// The built-in rule sets of the signaltometrics connector, compiled once.
fn rule_sets() -> &'static otelcol_connector_signaltometrics::Compiled {
    static COMPILED: OnceLock<otelcol_connector_signaltometrics::Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let config = otelcol_connector_signaltometrics::SignalToMetricsConfig {
            rule_sets: vec![
                otelcol_connector_signaltometrics::RuleSet::ClaudeCode,
                otelcol_connector_signaltometrics::RuleSet::Codex,
                otelcol_connector_signaltometrics::RuleSet::GeminiCli,
            ],
            ..Default::default()
        };
        match otelcol_connector_signaltometrics::Compiled::new(&config) {
            Ok(c) => c,
            Err(e) => panic!("the built-in rule sets compile: {e}"),
        }
    })
}

/// Decoded bodies are capped as the receiver caps them by default.
const BODY_LIMIT: u64 = 20 << 20;

fn fresh_engine() -> Engine {
    let config = AggregationConfig {
        lookup: vec![
            "datapoint".into(),
            "resource".into(),
            "header:x-user".into(),
        ],
        max_series: 100_000,
        max_streams: 10_000,
        ..Default::default()
    };
    match Engine::new(config, 1_700_000_000_000_000_000) {
        Ok(e) => e,
        Err(e) => panic!("the fuzz engine's config is valid: {e}"),
    }
}

/// An OTLP/HTTP body: byte 0 picks the `Content-Encoding`, byte 1 the
/// format (protobuf or JSON) and signal; the rest is the body. What decodes
/// as metrics then goes through the aggregation engine; what decodes as
/// logs through the signaltometrics rule sets and then the engine.
pub fn http_body(data: &[u8]) {
    let [enc, kind, body @ ..] = data else {
        return;
    };
    let encodings = [
        "identity",
        "gzip",
        "zstd",
        "deflate",
        "snappy",
        "x-snappy-framed",
        "lz4",
    ];
    let Some(encoding) = Encoding::parse(encodings[usize::from(*enc) % encodings.len()]) else {
        return;
    };
    let Ok(body) = decompress(body, encoding, BODY_LIMIT) else {
        return;
    };
    let json = kind & 1 == 1;
    match (kind >> 1) % 3 {
        0 => {
            let decoded: Option<Metrics> = if json {
                decode_json(&body).ok()
            } else {
                decode_proto(&body).ok()
            };
            if let Some(m) = decoded {
                let mut e = fresh_engine();
                let _ = e.add(&m, &RequestContext::default(), 1_800_000_000_000_000_000);
                let _ = e.take_all();
            }
        }
        1 => {
            let decoded: Option<Logs> = if json {
                decode_json(&body).ok()
            } else {
                decode_proto(&body).ok()
            };
            if let Some(mut logs) = decoded {
                let (m, _) = rule_sets().convert(&mut logs, 1_800_000_000_000_000_000);
                let mut e = fresh_engine();
                let _ = e.add(&m, &RequestContext::default(), 1_800_000_000_000_000_000);
                let _ = e.take_all();
            }
        }
        _ => {
            let _: Option<Traces> = if json {
                decode_json(&body).ok()
            } else {
                decode_proto(&body).ok()
            };
        }
    }
}

/// An OTLP/JSON metrics body: whatever the fast path takes it writes as
/// protobuf that prost decodes, to exactly what the general path gives.
pub fn json_fast_path(body: &[u8]) {
    use otelcol_receiver_otlp::{decode::decode_json_general, depth, json_fast};
    use prost::Message;
    let Some(bytes) = json_fast::metrics_proto(body) else {
        return;
    };
    let fast = match Metrics::decode(&bytes[..]) {
        Ok(m) => m,
        Err(e) => panic!("the fast path wrote protobuf prost refuses: {e}"),
    };
    if depth::check_json(body).is_err() {
        panic!("the fast path took a body nested past the limit");
    }
    match decode_json_general::<Metrics>(body) {
        Ok(general) if general == fast => {}
        Ok(general) => panic!("the fast path decoded {fast:?}, the general path {general:?}"),
        Err(e) => panic!("the fast path took a body the general path refuses: {e}"),
    }
}

/// Protobuf request bytes: whatever the engine reads in place must pass
/// the nesting check and be what prost decodes, and give the same outcome
/// and the same totals.
pub fn metrics_view(bytes: &[u8]) {
    use prost::Message;
    if !otelcol_processor_aggregation::reads_in_place(bytes) {
        return;
    }
    if let Err(e) = otelcol_core::pdata::depth::check_proto(
        bytes,
        otelcol_core::pdata::depth::Msg::MetricsRequest,
    ) {
        panic!("read in place, but the nesting check refuses the bytes: {e}");
    }
    let decoded = match Metrics::decode(bytes) {
        Ok(m) => m,
        Err(e) => panic!("read in place, but prost refuses the bytes: {e}"),
    };
    let ctx = RequestContext::default();
    let now = 1_800_000_000_000_000_000;
    let (mut tree, mut in_place) = (fresh_engine(), fresh_engine());
    let want = tree.add(&decoded, &ctx, now);
    let got = in_place.add_encoded(bytes, &ctx, now);
    assert_eq!(got, want, "outcome read in place / decoded");
    // Every output point with its resource and metric, sorted: the order
    // of series differs between engines (random hasher keys).
    let points = |e: &mut Engine| {
        use otelcol_core::pdata::proto::metrics::v1::metric::Data;
        let mut out = vec![];
        for b in e.take_all() {
            for rm in &b.data.resource_metrics {
                for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
                    let head = format!("{:?} {} {} {}", rm.resource, m.name, m.unit, m.description);
                    let each: Vec<String> = match &m.data {
                        Some(Data::Sum(d)) => d
                            .data_points
                            .iter()
                            .map(|p| {
                                format!(
                                    "sum {} {} {p:?}",
                                    d.aggregation_temporality, d.is_monotonic
                                )
                            })
                            .collect(),
                        Some(Data::Gauge(d)) => d
                            .data_points
                            .iter()
                            .map(|p| format!("gauge {p:?}"))
                            .collect(),
                        Some(Data::Histogram(d)) => d
                            .data_points
                            .iter()
                            .map(|p| format!("hist {p:?}"))
                            .collect(),
                        other => vec![format!("{other:?}")],
                    };
                    out.extend(each.into_iter().map(|p| format!("{head} {p}")));
                }
            }
        }
        out.sort();
        out
    };
    assert_eq!(
        points(&mut in_place),
        points(&mut tree),
        "totals read in place / decoded"
    );
}

/// A sequence of requests (any field values, built from the bytes) and
/// emission ticks through one engine; memory stays bounded by its limits.
pub fn engine(data: &[u8]) {
    let mut e = fresh_engine();
    for step in requests_and_ticks(data) {
        match step {
            engine_input::Step::Add(request, ctx, now) => {
                let _ = e.add(&request, &ctx, now);
            }
            engine_input::Step::Tick(now) => {
                let _ = e.take_closed(now);
            }
        }
    }
    let _ = e.take_all();
}

/// An OTTL statement, condition and value expression in every context.
pub fn ottl(data: &[u8]) {
    use otelcol_core::ottl::{compile, compile_condition, compile_value, Context};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for ctx in ["resource", "scope", "metric", "datapoint", "log", "span"] {
        if let Some(ctx) = Context::parse(ctx) {
            let _ = compile(text, ctx);
            let _ = compile_condition(text, ctx);
            let _ = compile_value(text, ctx);
        }
    }
}

/// A collector config: loaded (with `${env:…}` expansion) and validated
/// against every component of the distribution.
pub fn config(data: &[u8]) {
    use otelcol_core::config::{load, ConfigSource};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = ConfigSource::Text {
        name: "fuzz".into(),
        yaml: text.to_string(),
    };
    let lookup = |name: &str| (name == "SET").then(|| "value".to_string());
    if let Ok(loaded) = load(&[source], &[], &lookup) {
        let _ = otelcol_core::pipeline::validate(&loaded.config, &otelcol_multitudes::factories());
    }
}

/// A consumer that takes and drops everything (logs and traces).
struct Discard;

#[async_trait::async_trait]
impl<T: Send + 'static> Consumer<T> for Discard {
    async fn consume(&self, _batch: Batch<T>) -> Result<(), ConsumerError> {
        Ok(())
    }
}

/// A running OTLP receiver (gRPC) feeding a real aggregation processor.
struct GrpcTarget {
    runtime: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
}

fn grpc_target() -> Option<&'static GrpcTarget> {
    static TARGET: OnceLock<Option<GrpcTarget>> = OnceLock::new();
    TARGET.get_or_init(start_grpc_target).as_ref()
}

fn start_grpc_target() -> Option<GrpcTarget> {
    use otelcol_core::component::{CreateSettings, Host, Kind, ReceiverFactory, SignalConsumers};
    use otelcol_core::ComponentId;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .ok()?;
    let port = otelcol_core::net::unused_loopback_port();
    let yaml = format!("protocols:\n  grpc: {{endpoint: '127.0.0.1:{port}'}}\n");
    let config: otelcol_core::config::RawConfig = serde_yaml::from_str(&yaml).ok()?;
    let channel = runtime.block_on(async {
        let settings = CreateSettings::standalone(ComponentId::new("aggregation"), Kind::Processor);
        let processor = otelcol_processor_aggregation::AggregationProcessor::new(
            settings,
            AggregationConfig::default(),
            Arc::new(Discard),
            0,
            false,
        )
        .ok()?;
        let settings = CreateSettings::standalone(ComponentId::new("otlp"), Kind::Receiver);
        let next = SignalConsumers {
            metrics: Some(Arc::new(processor)),
            logs: Some(Arc::new(Discard)),
            traces: Some(Arc::new(Discard)),
        };
        let receiver = otelcol_receiver_otlp::OtlpReceiverFactory
            .create(settings, &config, next)
            .ok()?;
        let host = Host::new(Default::default(), Default::default());
        receiver.start(&host).await.ok()?;
        // Kept running for the life of the fuzzing process.
        std::mem::forget(receiver);
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .ok()?
            .connect()
            .await
            .ok()
    })?;
    Some(GrpcTarget { runtime, channel })
}

/// One gRPC export call with any message bytes: byte 0 picks the signal,
/// the rest goes over the wire as the message, through tonic's decoding,
/// the receiver and the aggregation processor.
pub fn grpc_request(data: &[u8]) {
    let [signal, message @ ..] = data else {
        return;
    };
    let Some(target) = grpc_target() else {
        panic!("the gRPC fuzz target could not start its receiver");
    };
    let path = match signal % 3 {
        0 => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        1 => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        _ => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    };
    let message = bytes::Bytes::copy_from_slice(message);
    let channel = target.channel.clone();
    target.runtime.block_on(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        if grpc.ready().await.is_err() {
            return;
        }
        let path = http::uri::PathAndQuery::from_static(path);
        let _ = grpc
            .unary(
                tonic::Request::new(message),
                path,
                otelcol_bench::grpc::RawCodec,
            )
            .await;
    });
}
