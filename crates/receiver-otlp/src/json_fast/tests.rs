//! The fast path against the general one: what it takes decodes the same;
//! what it leaves gets the general path's answer.

use super::*;
use crate::decode::{decode_json, decode_json_general};

/// The start of `body`, for a failure message.
fn head(body: &str) -> &str {
    let end = body.char_indices().nth(300).map_or(body.len(), |(i, _)| i);
    &body[..end]
}

/// `body` is on the fast path and decodes exactly as on the general one.
fn same(body: &str) -> Metrics {
    let bytes = metrics_proto(body.as_bytes())
        .unwrap_or_else(|| panic!("not on the fast path: {}", head(body)));
    let fast = Metrics::decode(&bytes[..])
        .unwrap_or_else(|e| panic!("prost refuses what was written ({e}): {}", head(body)));
    let general: Metrics = decode_json_general(body.as_bytes())
        .unwrap_or_else(|e| panic!("the general path refuses {}: {e}", head(body)));
    assert!(fast == general, "different: {}", head(body));
    assert!(
        bytes == general.encode_to_vec(),
        "not prost's bytes: {}",
        head(body)
    );
    fast
}

/// `body` is left to the general path, and `decode_json` answers as it does.
fn outside(body: &str) {
    assert!(metrics_proto(body.as_bytes()).is_none(), "taken: {body}");
    let general: Result<Metrics, _> = decode_json_general(body.as_bytes());
    let answer: Result<Metrics, _> = decode_json(body.as_bytes());
    assert_eq!(
        answer.map_err(|e| e.to_string()),
        general.map_err(|e| e.to_string()),
        "{body}"
    );
}

/// One sum point with `point` as its fields, in a full request.
fn sum_with(point: &str) -> String {
    format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"user.email","value":{{"stringValue":"ana@example.com"}}}}]}},"scopeMetrics":[{{"scope":{{"name":"com.anthropic.claude_code","version":"2.0.0"}},"metrics":[{{"name":"claude_code.token.usage","unit":"tokens","sum":{{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{{{point}}}]}}}}]}}]}}]}}"#
    )
}

fn shared(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata")
        .join(path)
}

#[test]
fn the_tools_fixtures_and_real_exports_decode_the_same_on_the_fast_path() {
    let mut bodies = vec![];
    for entry in std::fs::read_dir(shared("")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if path.extension().is_some_and(|e| e == "json") && text.contains("resourceMetrics") {
            bodies.push(text);
        }
    }
    for name in ["claude-json.jsonl", "codex-json.jsonl"] {
        let text = std::fs::read_to_string(shared("real").join(name)).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["signal"] == "metrics" && v["json_raw"].is_object() {
                bodies.push(v["json_raw"].to_string());
            }
        }
    }
    let points: usize = bodies
        .iter()
        .map(|b| otelcol_core::pdata::Payload::item_count(&same(b)))
        .sum();
    // The fixtures as of this writing: 4 metrics files and the metrics
    // requests of two real exports; every one of them must be taken.
    assert!(bodies.len() >= 6, "found {} bodies", bodies.len());
    assert!(points >= 20, "found {points} points");
}

#[test]
fn every_form_of_number_the_general_path_takes_decodes_the_same() {
    let forms = [
        r#""timeUnixNano":"1796174331173000000","asDouble":1"#,
        r#""timeUnixNano":1796174331173000000,"asDouble":1.5"#,
        r#""startTimeUnixNano":"0","timeUnixNano":"18446744073709551615","asInt":"7""#,
        r#""asInt":" -9223372036854775808 ""#,
        r#""asInt":9223372036854775807"#,
        r#""asInt":"+5""#,
        r#""asDouble":" 2.5e3 ""#,
        r#""asDouble":"-0""#,
        r#""asDouble":1e308"#,
        r#""asDouble":123456789012345678901234567890"#,
        r#""flags":"1","asDouble":3"#,
        r#""flags":4294967295"#,
        r#""exemplars":[],"asDouble":3"#,
        r#""asDouble":null,"asInt":4"#,
        r#""attributes":null,"timeUnixNano":null,"asDouble":3"#,
        r#""attributes":[{"key":"n","value":{"intValue":"12"}},{"key":"b","value":{"boolValue":false}},{"key":"d","value":{"doubleValue":"0.25"}},{"key":"s","value":{"stringValue":"é\u00e9\n"}},{"key":"e","value":{}},{"key":"none"},{"key":"nul","value":null}],"asInt":1"#,
        r#""attributes":[{"key":"x","value":{"stringValue":null,"intValue":3}}],"asInt":1"#,
        "",
    ];
    for f in forms {
        same(&sum_with(f));
    }
    same(
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"t","sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE","dataPoints":[{"asInt":1}]}}]}],"schemaUrl":"s"}]}"#,
    );
    same(
        r#"{"resourceMetrics":[{"resource":{"droppedAttributesCount":"2","entityRefs":[]},"scopeMetrics":[{"scope":{"attributes":[],"droppedAttributesCount":1},"schemaUrl":"u","metrics":[{"name":"g","description":"d","metadata":[{"key":"k","value":{"stringValue":"v"}}],"gauge":{"dataPoints":[{"asDouble":"1.25"}]}},{"name":"none"}]}]}]}"#,
    );
    same(
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"h","unit":"ms","histogram":{"aggregationTemporality":2,"dataPoints":[{"timeUnixNano":"5","count":"3","sum":"4.5","bucketCounts":["1",2," 0 "],"explicitBounds":[1,"2.5"],"min":0.5,"max":"3","flags":0,"exemplars":[]}]}}]}]}]}"#,
    );
    same(r#"{"resourceMetrics":[]}"#);
    same("{}");
}

/// Values at their defaults, where presence still counts (oneof members,
/// optional fields, empty messages), escaped strings, and lengths that
/// take two and three bytes: written so that prost decodes the general
/// path's request.
#[test]
fn defaults_presence_escapes_and_long_lengths_are_written_as_protobuf() {
    for f in [
        r#""asDouble":0"#,
        r#""asInt":0"#,
        r#""asInt":-1"#,
        r#""asDouble":-0.0"#,
        r#""startTimeUnixNano":0,"timeUnixNano":0,"flags":0"#,
        r#""attributes":[{"key":"","value":{"stringValue":""}},{"key":"z","value":{"intValue":0}},{"key":"f","value":{"doubleValue":0}},{"key":"b","value":{"boolValue":true}}],"asInt":1"#,
        r#""attributes":[{"key":"a\"b\\c\u0000","value":{"stringValue":"\ud83d\ude00 \t"}}],"asInt":1"#,
    ] {
        same(&sum_with(f));
    }
    let long = "x".repeat(200);
    same(&sum_with(&format!(
        r#""attributes":[{{"key":"{long}","value":{{"stringValue":"{long}"}}}}],"asDouble":2"#
    )));
    let many = vec![r#"{"asDouble":1.5,"attributes":[{"key":"model","value":{"stringValue":"claude-sonnet-4"}}]}"#; 2_000].join(",");
    let m = same(&format!(
        r#"{{"resourceMetrics":[{{"resource":{{}},"scopeMetrics":[{{"scope":{{}},"metrics":[{{"name":"m","sum":{{"dataPoints":[{many}]}}}}]}}]}}]}}"#
    ));
    assert_eq!(m.resource_metrics[0].scope_metrics[0].metrics.len(), 1);
    for body in [
        r#"{"resourceMetrics":[{"resource":{},"scopeMetrics":[{"scope":{},"metrics":[{"name":"","sum":{}}]}]}]}"#,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{}},{"name":"h","histogram":{}}]}]}]}"#,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"t","sum":{"aggregationTemporality":-1,"isMonotonic":false}}]}]}]}"#,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"h","histogram":{"dataPoints":[{"count":0,"sum":0,"min":0,"max":-0.0,"bucketCounts":[],"explicitBounds":[]},{}]}}]}]}]}"#,
        r#"{"resourceMetrics":[{},{"scopeMetrics":[{}]}]}"#,
    ] {
        same(body);
    }
    same(r#"{"resourceMetrics":null}"#);
}

#[test]
fn what_the_fast_path_leaves_gets_the_general_answer() {
    let points = [
        // Forms the general path rewrites or refuses.
        r#""time_unix_nano":"5","asDouble":1"#,
        r#""asDouble":"NaN""#,
        r#""asDouble":"Infinity""#,
        r#""asDouble":true"#,
        r#""asInt":1.5"#,
        r#""asInt":"9223372036854775808""#,
        r#""timeUnixNano":"-5""#,
        r#""timeUnixNano":" 5""#,
        r#""timeUnixNano":"""#,
        r#""timeUnixNano":5.0"#,
        r#""flags":4294967296"#,
        // Both members of a oneof, unknown fields, duplicates.
        r#""asDouble":1,"asInt":2"#,
        r#""asDouble":1,"asDouble":2"#,
        r#""unknown":1,"asDouble":1"#,
        r#""attributes":[{"key":"x","value":{"stringValue":"a","intValue":3}}]"#,
        r#""attributes":[{"value":{"stringValue":"a"}}]"#,
        r#""attributes":[{"key":"x","value":{"arrayValue":{}}}]"#,
        r#""attributes":[{"key":"x","value":{"kvlistValue":{"values":[]}}}]"#,
        r#""attributes":[{"key":"x","value":{"bytesValue":"AAE="}}]"#,
        r#""attributes":[{"key":"x","value":{"stringValue":"a","fooValue":1}}]"#,
        r#""attributes":[{"key":"x","keyStrindex":1}]"#,
        r#""attributes":[{"key":"x","key":"y","value":{"stringValue":"a"}}]"#,
        r#""attributes":[{"key":"x","value":{"stringValue":"a"},"value":{"stringValue":"b"}}]"#,
        r#""attributes":[{"key":"x","value":{"stringValue":"a","stringValue":"b"}}]"#,
        r#""attributes":[{"key":"x","value":{"stringValue":null,"stringValue":"b"}}]"#,
        r#""attributes":[{"key":"x","value":"a"}]"#,
        r#""attributes":{"key":"x"}"#,
        r#""attributes":[null]"#,
        r#""exemplars":[{"asDouble":1,"timeUnixNano":"1","traceId":"00"}],"asDouble":1"#,
    ];
    for p in points {
        outside(&sum_with(p));
    }
    for body in [
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"e","exponentialHistogram":{"dataPoints":[]}}]}]}]}"#,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"s","summary":{"dataPoints":[]}}]}]}]}"#,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"b","sum":{},"gauge":{}}]}]}]}"#,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"b","sum":5}]}]}]}"#,
        r#"{"resourceMetrics":[{"resource":{"entityRefs":[{"type":"service","idKeys":["service.name"]}]}}]}"#,
        r#"{"resource_metrics":[]}"#,
        r#"{"resourceMetrics":[],"extra":true}"#,
        r#"{"resourceMetrics":[]} trailing"#,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"t","sum":{"aggregationTemporality":"DELTA"}}]}]}]}"#,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"t","sum":{"aggregationTemporality":4294967296}}]}]}]}"#,
        "[]",
        "null",
        "",
    ] {
        outside(body);
    }
}

#[test]
fn a_body_nested_past_the_limit_is_left_to_the_nesting_check() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = sum_with(&format!(r#""exemplars":[{deep}],"asDouble":1"#));
    assert!(metrics(body.as_bytes()).is_none());
    let err = decode_json::<Metrics>(body.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("JSON nests deeper than"), "{err}");
}
