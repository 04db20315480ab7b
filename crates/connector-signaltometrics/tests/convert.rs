//! The Go keys' semantics, record by record: conditions, attributes
//! (required, optional, default), resource attributes, values that convert
//! and values that do not (counted), times, histograms; config errors.

use otelcol_connector_signaltometrics::{Compiled, Outcome, SignalToMetricsConfig};
use otelcol_core::config::{decode, RawConfig};
use otelcol_core::pdata::proto::common::v1::{any_value, AnyValue, KeyValue};
use otelcol_core::pdata::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use otelcol_core::pdata::proto::metrics::v1::{metric, number_data_point, NumberDataPoint};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::{string_attribute, Logs, Metrics};

fn compile(yaml: &str) -> Result<Compiled, String> {
    let raw: RawConfig = serde_yaml::from_str(yaml).unwrap();
    decode::<SignalToMetricsConfig>(&raw)
        .and_then(|c| Compiled::new(&c))
        .map_err(|e| e.to_string())
}

fn int(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..KeyValue::default()
    }
}

fn record(time: u64, observed: u64, attributes: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: observed,
        attributes,
        ..LogRecord::default()
    }
}

fn logs(records: Vec<LogRecord>) -> Logs {
    Logs {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    string_attribute("service.name", "claude-code"),
                    string_attribute("process.command_args", "claude -p 'secret prompt'"),
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

fn points(m: &Metrics) -> Vec<&NumberDataPoint> {
    m.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .flat_map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s.data_points.iter().collect::<Vec<_>>(),
            _ => vec![],
        })
        .collect()
}

const SUM: &str = r#"
logs:
  - name: tokens
    unit: tokens
    include_resource_attributes: [{key: service.name}]
    attributes:
      - key: user.email
      - key: tier
        default_value: free
      - key: model
        optional: true
    conditions:
      - attributes["event.name"] == "api_request"
    sum:
      value: Int(attributes["n"])
"#;

#[test]
fn records_become_delta_points_with_only_the_named_attributes() {
    let compiled = compile(SUM).unwrap();
    let event = |n: Option<KeyValue>, email: bool| {
        let mut a = vec![
            string_attribute("event.name", "api_request"),
            string_attribute("session.id", "s-1"),
            string_attribute("prompt", "secret prompt"),
        ];
        if email {
            a.push(string_attribute("user.email", "ana@example.com"));
        }
        a.extend(n);
        a
    };
    let mut input = logs(vec![
        record(10, 11, event(Some(string_attribute("n", " 5 ")), true)),
        record(0, 21, event(Some(int("n", 7)), true)),
        record(0, 0, event(Some(int("n", 1)), true)),
        // A required attribute is missing: no point, nothing dropped.
        record(30, 30, event(Some(int("n", 100)), false)),
        // The condition does not hold.
        record(
            40,
            40,
            vec![string_attribute("event.name", "other"), int("n", 100)],
        ),
        // Values that give no number: counted.
        record(50, 50, event(Some(string_attribute("n", "12abc")), true)),
        record(60, 60, event(None, true)),
    ]);
    let (metrics, outcome) = compiled.convert(&mut input, 99);
    assert_eq!(
        outcome,
        Outcome {
            points: 3,
            invalid: 1,
            missing: 1,
            records_dropped: 2,
            first_problem: Some(
                "metric `tokens`: the value is the string `12abc`, not a finite number".into()
            ),
        }
    );
    assert_eq!(metrics.resource_metrics.len(), 1);
    let rm = &metrics.resource_metrics[0];
    assert_eq!(
        rm.resource.as_ref().unwrap().attributes,
        vec![string_attribute("service.name", "claude-code")]
    );
    let metric = &rm.scope_metrics[0].metrics[0];
    assert_eq!(
        (metric.name.as_str(), metric.unit.as_str()),
        ("tokens", "tokens")
    );
    let Some(metric::Data::Sum(sum)) = &metric.data else {
        panic!("a sum")
    };
    assert_eq!(sum.aggregation_temporality, 1, "delta");
    let got: Vec<(u64, u64, Option<number_data_point::Value>, Vec<KeyValue>)> = points(&metrics)
        .into_iter()
        .map(|p| {
            (
                p.start_time_unix_nano,
                p.time_unix_nano,
                p.value,
                p.attributes.clone(),
            )
        })
        .collect();
    let attrs = vec![
        string_attribute("user.email", "ana@example.com"),
        string_attribute("tier", "free"),
    ];
    use number_data_point::Value::AsInt;
    assert_eq!(
        got,
        vec![
            (10, 10, Some(AsInt(5)), attrs.clone()),
            (21, 21, Some(AsInt(7)), attrs.clone()),
            (99, 99, Some(AsInt(1)), attrs),
        ]
    );
}

#[test]
fn an_empty_resource_list_keeps_the_resource_as_go_does() {
    let compiled = compile("logs: [{name: n, sum: {value: \"1\"}}]").unwrap();
    let mut input = logs(vec![record(1, 1, vec![])]);
    let (metrics, outcome) = compiled.convert(&mut input, 5);
    assert_eq!(outcome.points, 1);
    assert_eq!(
        metrics.resource_metrics[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .len(),
        2
    );
    assert!(points(&metrics)[0].attributes.is_empty());
}

#[test]
fn histograms_observe_the_value_count_times() {
    let compiled = compile(
        r#"
logs:
  - name: latency
    histogram:
      buckets: [10, 100]
      count: Int(attributes["k"])
      value: Double(attributes["ms"])
"#,
    )
    .unwrap();
    let mut input = logs(vec![
        record(1, 1, vec![string_attribute("ms", "42.5"), int("k", 2)]),
        record(2, 2, vec![string_attribute("ms", "1"), int("k", -1)]),
    ]);
    let (metrics, outcome) = compiled.convert(&mut input, 5);
    assert_eq!((outcome.points, outcome.invalid), (1, 1));
    assert_eq!(
        outcome.first_problem.as_deref(),
        Some("metric `latency`: the count is -1, not a whole number ≥ 0")
    );
    let Some(metric::Data::Histogram(h)) =
        &metrics.resource_metrics[0].scope_metrics[0].metrics[0].data
    else {
        panic!("a histogram")
    };
    let p = &h.data_points[0];
    assert_eq!(
        (p.count, p.sum, p.bucket_counts.clone(), p.min, p.max),
        (2, Some(85.0), vec![0, 2, 0], Some(42.5), Some(42.5))
    );
    assert_eq!(p.explicit_bounds, vec![10.0, 100.0]);
}

#[test]
fn config_errors_name_the_key() {
    let cases = [
        ("logs: []", "logs: no metrics are defined: set `logs` or `rule_sets`"),
        (
            "logs: [{name: a}]",
            "logs.0: exactly one of sum, gauge or histogram must be defined, 0 found",
        ),
        (
            "logs: [{name: a, sum: {value: \"Int(\"}}]",
            "logs.0.sum.value: `Int(`: column 5: unexpected end of statement",
        ),
        (
            "logs: [{name: a, sum: {value: \"1\"}, conditions: [\"attributes[\\\"x\\\"] = 1\"]}]",
            "logs.0.conditions.0: `attributes[\"x\"] = 1`: column 17: expected `==`",
        ),
        (
            "logs: [{name: a, sum: {value: \"1\"}, attributes: [{key: k, optional: true, default_value: 1}]}]",
            "logs.0.attributes.0: only one of default_value or optional should be set",
        ),
        (
            "logs: [{name: a, exponential_histogram: {value: \"1\"}}]",
            "logs.0.exponential_histogram: exponential histograms are not made by this build; use sum, gauge or histogram",
        ),
        (
            "rule_sets: [codex, codex]",
            "rule_sets.1: this rule set is listed twice (its points would count twice)",
        ),
        (
            "spans: [{name: a, sum: {value: \"1\"}}]",
            "logs: no metrics are defined: set `logs` or `rule_sets`",
        ),
        (
            "rule_sets: [copilot]",
            "rule_sets.0: unknown value `copilot`, expected one of `claude_code`, `codex`, `gemini_cli`",
        ),
    ];
    for (yaml, want) in cases {
        assert_eq!(compile(yaml).unwrap_err(), want, "{yaml}");
    }
    compile("rule_sets: [claude_code, codex, gemini_cli]").unwrap();
    // Go's span, data point and profile definitions are accepted (the
    // factory lists them as having no effect) and make nothing here.
    compile(
        "spans: [{name: a}]\ndatapoints: [{name: b}]\nprofiles: [{name: c}]\nrule_sets: [codex]",
    )
    .unwrap();
}
