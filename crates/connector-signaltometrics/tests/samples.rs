//! The built-in rule sets over the real exports in `shared/testdata/real`:
//! each tool's events and metrics of the same run. The totals made from the
//! events equal the tool's own metric totals, and the usage the fake model
//! API served, token type by token type.

use std::collections::BTreeMap;

use otelcol_connector_signaltometrics::{Compiled, SignalToMetricsConfig};
use otelcol_core::config::decode as decode_config;
use otelcol_core::pdata::proto::common::v1::{any_value, KeyValue};
use otelcol_core::pdata::proto::metrics::v1::{metric, number_data_point};
use otelcol_core::pdata::{Logs, Metrics};
use serde_json::Value as Json;

fn requests(file: &str, signal: &str) -> Vec<Json> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/real")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .map(|l| serde_json::from_str::<Json>(l).unwrap())
        .filter(|r| r["signal"] == signal)
        .map(|r| r["body"].clone())
        .collect()
}

fn attr(attrs: &[KeyValue], key: &str) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            any_value::Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

fn number(v: &Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        Some(number_data_point::Value::AsDouble(d)) => *d,
        None => panic!("a point without a value"),
    }
}

/// Totals by (metric, type attribute) of sums and histograms in `metrics`;
/// cumulative streams (Gemini) count their last value, keyed by every
/// point attribute so that each stream counts once.
fn totals(all: &[Metrics], type_key: &str) -> BTreeMap<(String, String), f64> {
    let mut delta: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut last: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for m in all {
        for rm in &m.resource_metrics {
            for sm in &rm.scope_metrics {
                for metric in &sm.metrics {
                    match &metric.data {
                        Some(metric::Data::Sum(s)) => {
                            for p in &s.data_points {
                                let key = (metric.name.clone(), attr(&p.attributes, type_key));
                                if s.aggregation_temporality == 2 {
                                    let stream = format!("{:?}", p.attributes);
                                    last.insert((key.0, key.1, stream), number(&p.value));
                                } else {
                                    *delta.entry(key).or_default() += number(&p.value);
                                }
                            }
                        }
                        Some(metric::Data::Histogram(h)) => {
                            for p in &h.data_points {
                                let key = (metric.name.clone(), attr(&p.attributes, type_key));
                                *delta.entry(key).or_default() += p.sum.unwrap_or_default();
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for ((name, kind, _), v) in last {
        *delta.entry((name, kind)).or_default() += v;
    }
    delta
}

fn from_events(file: &str, rule_set: &str) -> (Vec<Metrics>, u64) {
    let raw: otelcol_core::config::RawConfig =
        serde_yaml::from_str(&format!("rule_sets: [{rule_set}]")).unwrap();
    let compiled = Compiled::new(&decode_config::<SignalToMetricsConfig>(&raw).unwrap()).unwrap();
    let mut made = vec![];
    let mut dropped = 0;
    for body in requests(file, "logs") {
        let mut logs: Logs = decode(&body);
        let (metrics, outcome) = compiled.convert(&mut logs, 1);
        dropped += outcome.invalid + outcome.missing;
        made.push(metrics);
    }
    (made, dropped)
}

fn tool_metrics(file: &str) -> Vec<Metrics> {
    requests(file, "metrics")
        .into_iter()
        .map(|b| decode(&b))
        .collect()
}

/// Decodes an OTLP/JSON body as the receiver does. The samples of the
/// protobuf runs render trace and span ids in base64 (the protobuf JSON
/// mapping), not OTLP/JSON's hex; the connector does not read them.
fn decode<T: serde::de::DeserializeOwned + otelcol_receiver_otlp::json_fast::FastJson>(
    body: &Json,
) -> T {
    let mut body = body.clone();
    strip_ids(&mut body);
    otelcol_receiver_otlp::decode::decode_json(&serde_json::to_vec(&body).unwrap()).unwrap()
}

fn strip_ids(v: &mut Json) {
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

/// `(event metric, tool metric, type key, [(type, served)])` per file.
fn check(
    file: &str,
    rule_set: &str,
    event_metric: &str,
    tool_metric: &str,
    type_key: &str,
    served: &[(&str, f64)],
) {
    let (made, dropped) = from_events(file, rule_set);
    assert_eq!(dropped, 0, "{file}: no contribution dropped");
    let events = totals(&made, type_key);
    let tool = totals(&tool_metrics(file), type_key);
    for (kind, want) in served {
        let got = events.get(&(event_metric.to_string(), kind.to_string()));
        assert_eq!(got, Some(want), "{file}: {event_metric} {kind}: {events:?}");
        let own = tool.get(&(tool_metric.to_string(), kind.to_string()));
        assert_eq!(own, Some(want), "{file}: {tool_metric} {kind}: {tool:?}");
    }
    let kinds: Vec<&String> = events
        .keys()
        .filter(|(m, _)| m == event_metric)
        .map(|(_, k)| k)
        .collect();
    assert_eq!(kinds.len(), served.len(), "{file}: types made {kinds:?}");
}

#[test]
fn claude_code_events_give_the_tools_own_token_and_cost_totals() {
    // The http/json run was served 3 more input tokens than the protobuf one.
    for (file, input) in [("claude.jsonl", 1001.0), ("claude-json.jsonl", 1004.0)] {
        let served = [
            ("input", input),
            ("output", 20.0),
            ("cacheRead", 300.0),
            ("cacheCreation", 40.0),
        ];
        check(
            file,
            "claude_code",
            "claude_code.events.token.usage",
            "claude_code.token.usage",
            "type",
            &served,
        );
        let (made, _) = from_events(file, "claude_code");
        let cost = totals(&made, "type")[&("claude_code.events.cost.usage".into(), String::new())];
        let own =
            totals(&tool_metrics(file), "type")[&("claude_code.cost.usage".into(), String::new())];
        assert!(
            (cost - own).abs() < 1e-12 && cost > 0.0,
            "{file}: cost {cost} vs {own}"
        );
    }
}

#[test]
fn codex_events_count_each_response_once_as_its_metrics_do() {
    for (file, input) in [("codex.jsonl", 2001.0), ("codex-json.jsonl", 2004.0)] {
        let served = [
            ("input", input),
            ("cached_input", 500.0),
            ("cache_write_input", 0.0),
            ("output", 30.0),
            ("reasoning_output", 7.0),
            ("total", input + 30.0),
        ];
        check(
            file,
            "codex",
            "codex.events.token.usage",
            "codex.turn.token_usage",
            "token_type",
            &served,
        );
        // Identity sits only on the resource; the points' resource keeps it.
        let (made, _) = from_events(file, "codex");
        let rm = &made
            .iter()
            .find(|m| !m.resource_metrics.is_empty())
            .unwrap()
            .resource_metrics[0];
        let resource = &rm.resource.as_ref().unwrap().attributes;
        assert_eq!(attr(resource, "user.email"), "ana@example.com");
        let keys: Vec<&str> = resource.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["user.email", "service.name"]);
    }
}

#[test]
fn gemini_cli_events_give_its_cumulative_metric_totals() {
    check(
        "gemini.jsonl",
        "gemini_cli",
        "gemini_cli.events.token.usage",
        "gemini_cli.token.usage",
        "type",
        &[
            ("input", 6003.0),
            ("output", 80.0),
            ("cache", 1200.0),
            ("thought", 18.0),
            ("tool", 0.0),
        ],
    );
}
