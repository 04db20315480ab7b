//! Replays of the AI tools' real exports (`shared/testdata/real`) through
//! the real binary with the production config, an HTTP server on 127.0.0.1
//! playing the Multitudes endpoint; and the string scan that proves what
//! leaves holds nothing of the input but allow-listed values.
//!
//! The exports' timestamps are shifted to the test's clock, so the
//! cumulative streams began after this collector did (as a live sender's
//! would) and count in full.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt;
use otelcol_core::pdata::Metrics;
use otelcol_core::server::{self, ServerOptions};
use serde_json::Value as Json;

/// Every `…UnixNano` value in `v` moved by `by` nanoseconds (0 stays 0).
pub fn shift(v: &mut Json, by: i128) {
    match v {
        Json::Object(map) => {
            for (k, x) in map.iter_mut() {
                if k.ends_with("UnixNano") {
                    let n: i128 = match x {
                        Json::String(s) => s.parse().unwrap(),
                        Json::Number(n) => n.as_u64().unwrap().into(),
                        _ => panic!("odd time {x}"),
                    };
                    if n != 0 {
                        *x = Json::String((n + by).to_string());
                    }
                } else {
                    shift(x, by);
                }
            }
        }
        Json::Array(a) => a.iter_mut().for_each(|x| shift(x, by)),
        _ => {}
    }
}

/// The earliest non-zero `…UnixNano` value in `v`.
pub fn earliest(v: &Json) -> Option<i128> {
    match v {
        Json::Object(map) => map
            .iter()
            .filter_map(|(k, x)| match (k.ends_with("UnixNano"), x) {
                (true, Json::String(s)) => s.parse().ok().filter(|n| *n > 0),
                (true, Json::Number(n)) => n.as_u64().map(i128::from).filter(|n| *n > 0),
                _ => earliest(x),
            })
            .min(),
        Json::Array(a) => a.iter().filter_map(earliest).min(),
        _ => None,
    }
}

/// Removes `traceId`/`spanId`: the samples of the protobuf runs render them
/// in base64 (the protobuf JSON mapping), not OTLP/JSON's hex.
pub fn strip_ids(v: &mut Json) {
    match v {
        Json::Object(map) => {
            map.remove("traceId");
            map.remove("spanId");
            map.values_mut().for_each(strip_ids);
        }
        Json::Array(a) => a.iter_mut().for_each(strip_ids),
        _ => {}
    }
}

/// The `signal` requests of `file` (a real export in `shared/testdata/real`,
/// or `private-*.jsonl` in `tests/data`: synthetic events that carry what
/// prompt logging and tool details add), their times moved to `now`.
pub fn bodies(file: &str, signal: &str, now: u128) -> Vec<Vec<u8>> {
    // `tests/data/…`: synthetic samples of ours; else the real exports.
    let dir = if file.starts_with("private-") {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/real")
    };
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut bodies: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str::<Json>(l).unwrap())
        .filter(|r| r["signal"] == signal)
        .map(|r| r["body"].clone())
        .collect();
    bodies.iter_mut().for_each(strip_ids);
    // A file without requests of this signal has nothing to shift.
    let Some(first) = bodies.iter().filter_map(earliest).min() else {
        return vec![];
    };
    let by = now as i128 - first;
    bodies.iter_mut().for_each(|b| shift(b, by));
    bodies
        .iter()
        .map(|b| serde_json::to_vec(b).unwrap())
        .collect()
}

/// How a replayed export goes on the wire.
#[derive(Clone, Copy)]
pub enum Wire {
    /// OTLP/JSON, as the tool sent it.
    Json,
    /// Re-encoded to protobuf, as the tool sent it.
    Protobuf,
}

/// What the endpoint received in a replay.
pub struct Replayed {
    /// Totals of the named metrics by (metric, token type).
    pub tokens: BTreeMap<(String, String), f64>,
    /// Every request: path and body.
    pub requests: Vec<(String, bytes::Bytes)>,
}

impl Replayed {
    /// The paths requests went to, each once.
    pub fn paths(&self) -> Vec<String> {
        let mut p: Vec<String> = self.requests.iter().map(|(p, _)| p.clone()).collect();
        p.sort();
        p.dedup();
        p
    }

    /// Every body as text (OTLP/JSON, uncompressed).
    pub fn text(&self) -> String {
        self.requests
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

/// Replays the `signals` requests of `files` through the production config
/// (with `configs/forward-events.yaml` and `forward`'s extra `--set`s when
/// `forward` is given); returns the totals of the metrics named in `names`
/// and every request the endpoint received.
pub async fn replay_signals(
    files: &[(&str, Wire)],
    signals: &[&str],
    names: &[&str],
    forward: Option<&[&str]>,
) -> Replayed {
    replay_core(
        files,
        signals,
        names,
        forward.is_some(),
        forward.unwrap_or(&[]),
    )
    .await
}

/// [`replay_signals`] through the production config changed by `sets`,
/// counting no totals.
pub async fn replay_signals_with(
    files: &[(&str, Wire)],
    signals: &[&str],
    sets: &[&str],
) -> Replayed {
    replay_core(files, signals, &[], false, sets).await
}

pub async fn replay_core(
    files: &[(&str, Wire)],
    signals: &[&str],
    names: &[&str],
    forward: bool,
    sets: &[&str],
) -> Replayed {
    super::init_crypto();
    let received: Arc<Mutex<Vec<(String, bytes::Bytes)>>> = Arc::default();
    let listener = server::bind("127.0.0.1:0").await.unwrap();
    let sink = received.clone();
    let endpoint = server::serve(listener, ServerOptions::default(), move |req, _| {
        let sink = sink.clone();
        async move {
            let path = req.uri().path().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            sink.lock().unwrap().push((path, body));
            server::response(hyper::StatusCode::OK, "application/json", "{}")
        }
    });
    let url = format!("http://127.0.0.1:{}/ai/otel", endpoint.local_addr().port());
    const TOKEN: &str = "fallback-token-real-0001";
    let (collector, ports) = if forward {
        super::spawn_production_forwarding_events(&url, TOKEN, sets, &[]).await
    } else {
        super::spawn_production(&url, TOKEN, sets, &[]).await
    };
    let http = ports.http;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    for (file, wire) in files {
        for signal in signals {
            for body in bodies(file, signal, now) {
                let (content_type, body) = match (wire, *signal) {
                    (Wire::Json, _) => ("application/json", body),
                    (Wire::Protobuf, "metrics") => {
                        let request: Metrics = serde_json::from_slice(&body).unwrap();
                        (
                            "application/x-protobuf",
                            prost::Message::encode_to_vec(&request),
                        )
                    }
                    (Wire::Protobuf, _) => {
                        let request: otelcol_core::pdata::Logs =
                            otelcol_receiver_otlp::decode::decode_json(&body).unwrap();
                        (
                            "application/x-protobuf",
                            prost::Message::encode_to_vec(&request),
                        )
                    }
                };
                let (status, answer) = super::http(
                    "POST",
                    &format!("http://127.0.0.1:{http}/v1/{signal}"),
                    &[("content-type", content_type)],
                    body,
                )
                .await;
                assert_eq!(status, 200, "{file} {signal}: {answer}");
            }
        }
    }
    let (ok, log) = collector.stop();
    assert!(ok, "clean exit: {log:?}");
    endpoint.shutdown().await;

    let mut tokens: BTreeMap<(String, String), f64> = BTreeMap::new();
    let requests = received.lock().unwrap().clone();
    for (path, body) in &requests {
        if !path.ends_with("/v1/metrics") || names.is_empty() {
            continue;
        }
        for (user, metric, ty, v) in super::token_points_of(body, names) {
            assert_eq!(user, "ana@example.com", "{metric}");
            *tokens.entry((metric, ty)).or_insert(0.0) += v;
        }
    }
    Replayed { tokens, requests }
}

/// The event metrics of the built-in rule sets.
pub const EVENT_METRICS: [&str; 3] = [
    "codex.events.token.usage",
    "claude_code.events.token.usage",
    "gemini_cli.events.token.usage",
];

/// Every string value (attribute values, bodies) in `v` of at least 8
/// characters, into `kept` when it is the value of a key in `keys` (or a
/// metric or scope name), else into `other`.
pub fn strings(v: &Json, keys: &[String], kept: &mut Vec<String>, other: &mut Vec<String>) {
    match v {
        Json::Object(map) => {
            let keeps = map
                .get("key")
                .and_then(Json::as_str)
                .is_some_and(|k| keys.iter().any(|kept| kept == k));
            for (k, x) in map {
                match x {
                    Json::String(s) if k == "stringValue" && s.chars().count() >= 8 => {
                        other.push(s.clone())
                    }
                    // Metric (and scope) names leave as names of totals.
                    Json::String(s) if k == "name" => kept.push(s.clone()),
                    _ if k == "value" && keeps => strings(x, keys, &mut vec![], kept),
                    _ => strings(x, keys, kept, other),
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|x| strings(x, keys, kept, other)),
        _ => {}
    }
}

/// The string values (8 characters or more) of the `logs` requests of
/// `files` that are not values of `keys` and appear in `output`.
pub fn leaks(files: &[(&str, Wire)], keys: &[String], output: &str) -> Vec<String> {
    let (mut kept, mut input) = (vec![], vec![]);
    for (file, _) in files {
        for body in bodies(file, "logs", 0) {
            let body = serde_json::from_slice(&body).unwrap();
            strings(&body, keys, &mut kept, &mut input);
        }
    }
    // A value that is also (part of) a kept key's value or a metric's name
    // (the model under another key; an event named as a metric) may show.
    input.retain(|s| !kept.iter().any(|k| k.contains(s.as_str())));
    input.sort();
    input.dedup();
    assert!(
        input.len() > 20,
        "the scan has strings to look for: {input:?}"
    );
    input
        .into_iter()
        .filter(|s| output.contains(s.as_str()))
        .collect()
}

/// The keys the totals keep on their resources and points.
pub fn totals_keys() -> Vec<String> {
    ["user.email", "service.name", "service.version", "model"]
        .map(String::from)
        .to_vec()
}

/// The three tools' event samples, as each was sent.
pub const EVENT_FILES: [(&str, Wire); 3] = [
    ("codex.jsonl", Wire::Protobuf),
    ("claude-json.jsonl", Wire::Json),
    ("gemini.jsonl", Wire::Json),
];

/// The usage the model API served in the runs of [`EVENT_FILES`], as the
/// rule sets' metrics.
pub fn served_by_events() -> BTreeMap<(String, String), f64> {
    [
        ("codex.events.token.usage", "input", 2001.0),
        ("codex.events.token.usage", "cached_input", 500.0),
        ("codex.events.token.usage", "cache_write_input", 0.0),
        ("codex.events.token.usage", "output", 30.0),
        ("codex.events.token.usage", "reasoning_output", 7.0),
        ("codex.events.token.usage", "total", 2031.0),
        ("claude_code.events.token.usage", "input", 1004.0),
        ("claude_code.events.token.usage", "output", 20.0),
        ("claude_code.events.token.usage", "cacheRead", 300.0),
        ("claude_code.events.token.usage", "cacheCreation", 40.0),
        ("gemini_cli.events.token.usage", "input", 6003.0),
        ("gemini_cli.events.token.usage", "output", 80.0),
        ("gemini_cli.events.token.usage", "cache", 1200.0),
        ("gemini_cli.events.token.usage", "thought", 18.0),
        ("gemini_cli.events.token.usage", "tool", 0.0),
    ]
    .into_iter()
    .map(|(m, t, v)| ((m.to_string(), t.to_string()), v))
    .collect()
}

/// The `allowed_keys` of the overlay's `redaction/events`.
pub fn overlay_allowed_keys() -> Vec<String> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/forward-events.yaml");
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    yaml["processors"]["redaction/events"]["allowed_keys"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// The production aggregation's `include_attributes`: the point
/// attributes a total may keep besides the user key.
pub fn production_point_keys() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/otel-collector-config.yaml");
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    yaml["processors"]["aggregation"]["include_attributes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// The series of every point in `requests` (metrics only): metric name,
/// resource and point attributes, window start and end; each at most once.
pub fn series_per_window(requests: &[(String, bytes::Bytes)]) -> Vec<String> {
    use otelcol_core::pdata::proto::metrics::v1::metric::Data;
    let mut out = vec![];
    for (path, body) in requests {
        if !path.ends_with("/v1/metrics") {
            continue;
        }
        let m: Metrics = serde_json::from_slice(body).unwrap();
        for rm in &m.resource_metrics {
            let resource = format!("{:?}", rm.resource.as_ref().map(|r| &r.attributes));
            for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                // (attributes, start, end) of each point, whatever its kind.
                macro_rules! series {
                    ($points:expr) => {
                        $points
                            .iter()
                            .map(|p| {
                                let attrs = format!("{:?}", p.attributes);
                                (attrs, p.start_time_unix_nano, p.time_unix_nano)
                            })
                            .collect()
                    };
                }
                let points: Vec<(String, u64, u64)> = match &metric.data {
                    Some(Data::Sum(s)) => series!(s.data_points),
                    Some(Data::Histogram(h)) => series!(h.data_points),
                    Some(Data::Gauge(g)) => series!(g.data_points),
                    other => panic!("{}: unexpected {other:?}", metric.name),
                };
                for (attrs, start, end) in points {
                    out.push(format!("{} {resource} {attrs} {start}-{end}", metric.name));
                }
            }
        }
    }
    out
}
