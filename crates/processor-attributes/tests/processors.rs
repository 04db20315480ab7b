//! Table-driven tests: every action and every OTTL function, with exact
//! attributes before and after, on metrics, logs and spans; parse errors
//! at validation time.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use otelcol_core::component::{CreateSettings, Factory, Kind, ProcessorFactory};
use otelcol_core::config::RawConfig;
use otelcol_core::consumer::{
    AuthData, Batch, BearerToken, Consumer, ConsumerError, RequestContext,
};
use otelcol_core::pdata::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use otelcol_core::pdata::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use otelcol_core::pdata::proto::metrics::v1::{
    metric, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otelcol_core::pdata::{Logs, Metrics, Traces};
use otelcol_core::ComponentId;
use otelcol_processor_attributes::{
    AttributesProcessorFactory, ResourceProcessorFactory, TransformProcessorFactory,
};

const EMAIL_SHA256: &str = "8e43ca37701228e74983efdbd0cff5c16b3b1e5d4e29a7c05626d4d25a018e11";
const EMAIL_HMAC: &str = "c9dd898f38daaef107d2eee5775d3702862a88619b4bc7d677c1c4556e130c3a";
const FORTY_TWO_SHA256: &str = "73475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a8049";

fn v(s: &str) -> AnyValue {
    let (kind, text) = s.split_once(':').unwrap();
    let value = match kind {
        "s" => any_value::Value::StringValue(text.into()),
        "i" => any_value::Value::IntValue(text.parse().unwrap()),
        "d" => any_value::Value::DoubleValue(text.parse().unwrap()),
        "b" => any_value::Value::BoolValue(text.parse().unwrap()),
        _ => panic!("{s}"),
    };
    AnyValue { value: Some(value) }
}

fn kvs(list: &[(&str, &str)]) -> Vec<KeyValue> {
    list.iter()
        .map(|(k, x)| KeyValue {
            key: k.to_string(),
            value: Some(v(x)),
            ..Default::default()
        })
        .collect()
}

fn show(list: &[KeyValue]) -> Vec<String> {
    list.iter()
        .map(|kv| {
            let val = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => format!("s:{s}"),
                Some(any_value::Value::IntValue(i)) => format!("i:{i}"),
                Some(any_value::Value::DoubleValue(d)) => format!("d:{d}"),
                Some(any_value::Value::BoolValue(b)) => format!("b:{b}"),
                other => format!("{other:?}"),
            };
            format!("{}={val}", kv.key)
        })
        .collect()
}

#[derive(Default)]
struct Capture {
    metrics: Mutex<Vec<Metrics>>,
    logs: Mutex<Vec<Logs>>,
    traces: Mutex<Vec<Traces>>,
}

macro_rules! capture {
    ($t:ty, $field:ident) => {
        #[async_trait]
        impl Consumer<$t> for Capture {
            async fn consume(&self, b: Batch<$t>) -> Result<(), ConsumerError> {
                self.$field.lock().unwrap().push(b.data);
                Ok(())
            }
        }
    };
}
capture!(Metrics, metrics);
capture!(Logs, logs);
capture!(Traces, traces);

const RESOURCE: &[(&str, &str)] = &[
    ("service.name", "s:claude-code"),
    ("user", "s:cara"),
    ("department", "s:platform"),
];

fn ctx() -> RequestContext {
    RequestContext {
        auth: Some(Arc::new(AuthData {
            token: Some(BearerToken::new("tok-1")),
            headers: vec![],
        })),
        metadata: Arc::new(vec![("x-team".into(), "core".into())]),
        ..Default::default()
    }
}

/// Runs `factory` with `yaml` over one data point, one log record and one
/// span carrying `before`; returns the item attributes and the resource
/// attributes after, for each signal.
async fn run(
    factory: &dyn ProcessorFactory,
    yaml: &str,
    before: &[(&str, &str)],
) -> Vec<(Vec<String>, Vec<String>)> {
    let raw: RawConfig = serde_yaml::from_str(yaml).unwrap();
    factory
        .validate(&raw)
        .unwrap_or_else(|e| panic!("{yaml}: {e}"));
    let cap = Arc::new(Capture::default());
    let settings =
        || CreateSettings::standalone(ComponentId::new(factory.type_name()), Kind::Processor);
    let scope = || {
        Some(InstrumentationScope {
            name: "com.anthropic.claude_code".into(),
            version: "2.1.332".into(),
            ..Default::default()
        })
    };
    let resource = || {
        Some(Resource {
            attributes: kvs(RESOURCE),
            ..Default::default()
        })
    };
    let metrics = Metrics {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "claude_code.cost.usage".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: kvs(before),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                scope: scope(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let logs = Logs {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    attributes: kvs(before),
                    body: Some(v("s:claude_code.api_request")),
                    severity_text: "WARN".into(),
                    severity_number: 13,
                    ..Default::default()
                }],
                scope: scope(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let traces = Traces {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "claude_code.api_request".into(),
                    attributes: kvs(before),
                    kind: 3,
                    ..Default::default()
                }],
                scope: scope(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    factory
        .create_metrics(settings(), &raw, cap.clone())
        .unwrap()
        .consume(Batch {
            data: metrics,
            context: ctx(),
            received: None,
        })
        .await
        .unwrap();
    factory
        .create_logs(settings(), &raw, cap.clone())
        .unwrap()
        .consume(Batch {
            data: logs,
            context: ctx(),
            received: None,
        })
        .await
        .unwrap();
    factory
        .create_traces(settings(), &raw, cap.clone())
        .unwrap()
        .consume(Batch {
            data: traces,
            context: ctx(),
            received: None,
        })
        .await
        .unwrap();
    let m = cap.metrics.lock().unwrap().pop().unwrap();
    let l = cap.logs.lock().unwrap().pop().unwrap();
    let t = cap.traces.lock().unwrap().pop().unwrap();
    let Some(metric::Data::Gauge(g)) = &m.resource_metrics[0].scope_metrics[0].metrics[0].data
    else {
        panic!()
    };
    vec![
        (
            show(&g.data_points[0].attributes),
            show(&m.resource_metrics[0].resource.as_ref().unwrap().attributes),
        ),
        (
            show(&l.resource_logs[0].scope_logs[0].log_records[0].attributes),
            show(&l.resource_logs[0].resource.as_ref().unwrap().attributes),
        ),
        (
            show(&t.resource_spans[0].scope_spans[0].spans[0].attributes),
            show(&t.resource_spans[0].resource.as_ref().unwrap().attributes),
        ),
    ]
}

const EMAIL: (&str, &str) = ("email", "s:ana@example.com");

/// A table row: the action or statement, attributes before, attributes after.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

#[tokio::test]
async fn attributes_actions() {
    let cases: &[Case] = &[
        (
            "{key: team, value: core, action: insert}",
            &[EMAIL],
            &["email=s:ana@example.com", "team=s:core"],
        ),
        (
            "{key: email, value: x, action: insert}",
            &[EMAIL],
            &["email=s:ana@example.com"],
        ),
        (
            "{key: email, value: x, action: update}",
            &[EMAIL],
            &["email=s:x"],
        ),
        (
            "{key: team, value: x, action: update}",
            &[EMAIL],
            &["email=s:ana@example.com"],
        ),
        (
            "{key: email, value: 7, action: upsert}",
            &[EMAIL],
            &["email=i:7"],
        ),
        (
            "{key: team, value: true, action: upsert}",
            &[],
            &["team=b:true"],
        ),
        (
            "{key: session.id, action: delete}",
            &[EMAIL, ("session.id", "s:abc")],
            &["email=s:ana@example.com"],
        ),
        (
            "{pattern: '^user\\.', action: delete}",
            &[("user.id", "s:1"), ("user.email", "s:a"), EMAIL],
            &["email=s:ana@example.com"],
        ),
        (
            "{key: email, action: hash}",
            &[EMAIL],
            &[&format!("email=s:{EMAIL_SHA256}")],
        ),
        (
            "{key: n, action: hash}",
            &[("n", "i:42")],
            &[&format!("n=s:{FORTY_TWO_SHA256}")],
        ),
        (
            "{key: email, action: hash, hmac_key: secret-key}",
            &[EMAIL],
            &[&format!("email=s:{EMAIL_HMAC}")],
        ),
        (
            "{pattern: '^e', action: hash}",
            &[EMAIL, ("x", "s:y")],
            &[&format!("email=s:{EMAIL_SHA256}"), "x=s:y"],
        ),
        (
            "{key: email, pattern: '^(?P<user>[^@]+)@(?P<domain>.+)$', action: extract}",
            &[EMAIL],
            &[
                "email=s:ana@example.com",
                "user=s:ana",
                "domain=s:example.com",
            ],
        ),
        (
            "{key: n, action: convert, converted_type: int}",
            &[("n", "s:42")],
            &["n=i:42"],
        ),
        (
            "{key: n, action: convert, converted_type: double}",
            &[("n", "i:3")],
            &["n=d:3"],
        ),
        (
            "{key: n, action: convert, converted_type: string}",
            &[("n", "d:1.5")],
            &["n=s:1.5"],
        ),
        (
            "{key: n, action: convert, converted_type: int}",
            &[("n", "s:not a number")],
            &["n=s:not a number"],
        ),
        (
            "{key: copy, from_attribute: email, action: insert}",
            &[EMAIL],
            &["email=s:ana@example.com", "copy=s:ana@example.com"],
        ),
        (
            "{key: team, from_context: metadata.x-team, action: upsert}",
            &[],
            &["team=s:core"],
        ),
        (
            "{key: team, from_context: x-team, action: upsert}",
            &[],
            &["team=s:core"],
        ),
        (
            "{key: t, from_context: auth.token, action: upsert}",
            &[],
            &["t=s:tok-1"],
        ),
        (
            "{key: dept, from_resource_attribute: department, action: insert}",
            &[],
            &["dept=s:platform"],
        ),
        (
            "{key: x, from_resource_attribute: nope, action: insert}",
            &[],
            &[],
        ),
    ];
    for (action, before, after) in cases {
        let yaml = format!("actions: [{action}]");
        for (signal, (attrs, _)) in run(&AttributesProcessorFactory, &yaml, before)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(
                attrs,
                after.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{action} (signal {signal})"
            );
        }
    }
}

#[tokio::test]
async fn include_and_exclude() {
    let yaml = |m: &str| format!("actions: [{{key: hit, value: 1, action: insert}}]\n{m}");
    let hits = |r: Vec<(Vec<String>, Vec<String>)>| {
        r.iter()
            .map(|(a, _)| a.iter().any(|x| x == "hit=i:1"))
            .collect::<Vec<_>>()
    };
    let r = run(
        &AttributesProcessorFactory,
        &yaml("include: {match_type: strict, metric_names: [claude_code.cost.usage]}"),
        &[],
    )
    .await;
    assert_eq!(
        hits(r),
        vec![true, true, true],
        "metric_names limits metrics only"
    );
    let r = run(&AttributesProcessorFactory, &yaml("include: {match_type: strict, metric_names: [other], log_bodies: [other], span_names: [other]}"), &[]).await;
    assert_eq!(hits(r), vec![false, false, false]);
    let r = run(
        &AttributesProcessorFactory,
        &yaml("include: {match_type: regexp, span_names: ['^claude_code\\.']}"),
        &[],
    )
    .await;
    assert_eq!(hits(r), vec![true, true, true]);
    let r = run(
        &AttributesProcessorFactory,
        &yaml("exclude: {match_type: strict, resources: [{key: department, value: platform}]}"),
        &[],
    )
    .await;
    assert_eq!(hits(r), vec![false, false, false]);
    let r = run(
        &AttributesProcessorFactory,
        &yaml("include: {match_type: strict, services: [claude-code], attributes: [{key: email}]}"),
        &[EMAIL],
    )
    .await;
    assert_eq!(hits(r), vec![true, true, true]);
    let r = run(
        &AttributesProcessorFactory,
        &yaml("include: {match_type: strict, attributes: [{key: email, value: bo@example.com}]}"),
        &[EMAIL],
    )
    .await;
    assert_eq!(hits(r), vec![false, false, false]);
}

#[tokio::test]
async fn include_by_scope_span_kind_and_log_severity() {
    let yaml = |m: &str| format!("actions: [{{key: hit, value: 1, action: insert}}]\n{m}");
    let hits = |r: Vec<(Vec<String>, Vec<String>)>| {
        r.iter()
            .map(|(a, _)| a.iter().any(|x| x == "hit=i:1"))
            .collect::<Vec<_>>()
    };
    // (matcher, hit on the data point, the log record, the span); the log
    // record is WARN (13), the span a client span, all in one scope.
    let cases: &[(&str, [bool; 3])] = &[
        ("include: {match_type: strict, libraries: [{name: com.anthropic.claude_code}]}", [true, true, true]),
        ("include: {match_type: strict, libraries: [{name: com.anthropic.claude_code, version: 2.1.332}]}", [true, true, true]),
        ("include: {match_type: strict, libraries: [{name: com.anthropic.claude_code, version: '1.0'}]}", [false, false, false]),
        ("include: {match_type: regexp, libraries: [{name: '^com\\.anthropic'}]}", [true, true, true]),
        ("exclude: {match_type: strict, libraries: [{name: other}]}", [true, true, true]),
        ("include: {match_type: strict, span_kinds: [SPAN_KIND_CLIENT]}", [false, false, true]),
        ("include: {match_type: strict, span_kinds: [SPAN_KIND_SERVER]}", [false, false, false]),
        ("include: {match_type: strict, log_severity_texts: [WARN]}", [false, true, false]),
        ("include: {match_type: regexp, log_severity_texts: ['^ERR']}", [false, false, false]),
        ("include: {match_type: strict, log_severity_number: {min: INFO}}", [false, true, false]),
        ("include: {match_type: strict, log_severity_number: {min: 13}}", [false, true, false]),
        ("include: {match_type: strict, log_severity_number: {min: WARN2}}", [false, false, false]),
        ("exclude: {match_type: strict, log_severity_number: {min: ERROR}}", [true, true, true]),
    ];
    for (matcher, want) in cases {
        let r = run(&AttributesProcessorFactory, &yaml(matcher), &[]).await;
        assert_eq!(hits(r), want.to_vec(), "{matcher}");
    }
    for (bad, error) in [
        (
            "include: {match_type: strict, span_kinds: [CLIENT]}",
            "include.span_kinds",
        ),
        (
            "include: {match_type: strict, log_severity_number: {min: LOUD}}",
            "include.log_severity_number.min",
        ),
        (
            "include: {match_type: strict, log_severity_number: {min: 30}}",
            "include.log_severity_number.min",
        ),
    ] {
        let raw: RawConfig = serde_yaml::from_str(&yaml(bad)).unwrap();
        let e = AttributesProcessorFactory
            .validate(&raw)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(error), "{bad}: {e}");
    }
}

#[tokio::test]
async fn resource_actions() {
    let yaml = "attributes:\n  - {key: department, action: delete}\n  - {key: user.email, from_attribute: user, action: insert}\n  - {key: user, action: hash}\n";
    for (_, resource) in run(&ResourceProcessorFactory, yaml, &[]).await {
        assert_eq!(
            resource,
            vec![
                "service.name=s:claude-code".to_string(),
                "user=s:f61f5c5e22749aeba2bd920352dbd4c9f63e0ebaed6df623b09c836ffcbec2eb"
                    .to_string(),
                "user.email=s:cara".to_string(),
            ]
        );
    }
}

#[tokio::test]
async fn ottl_functions_in_every_item_context() {
    let cases: &[Case] = &[
        (r#"set(attributes["x"], "v")"#, &[], &["x=s:v"]),
        (
            r#"set(attributes["user"], resource.attributes["user"])"#,
            &[],
            &["user=s:cara"],
        ),
        (
            r#"set(attributes["user"], resource.attributes["missing"])"#,
            &[],
            &[],
        ),
        (
            r#"set(attributes["n"], 5) where attributes["email"] != nil"#,
            &[EMAIL],
            &["email=s:ana@example.com", "n=i:5"],
        ),
        (
            r#"set(attributes["n"], 5) where attributes["email"] == nil"#,
            &[EMAIL],
            &["email=s:ana@example.com"],
        ),
        (
            r#"set(attributes["n"], 1.5) where attributes["a"] == "1" and not (attributes["b"] == "2" or attributes["c"] == "3")"#,
            &[("a", "s:1"), ("b", "s:9")],
            &["a=s:1", "b=s:9", "n=d:1.5"],
        ),
        (
            r#"delete_key(attributes, "session.id")"#,
            &[("session.id", "s:1"), EMAIL],
            &["email=s:ana@example.com"],
        ),
        (
            r#"delete_matching_keys(attributes, "^user\\.")"#,
            &[("user.id", "s:1"), EMAIL],
            &["email=s:ana@example.com"],
        ),
        (
            r#"keep_keys(attributes, ["email", "model"])"#,
            &[("user.id", "s:1"), EMAIL, ("model", "s:m")],
            &["email=s:ana@example.com", "model=s:m"],
        ),
        (
            r#"replace_pattern(attributes["email"], "@.*$", "@redacted")"#,
            &[EMAIL],
            &["email=s:ana@redacted"],
        ),
        (
            r#"replace_pattern(attributes["email"], "^(\\w)\\w*", "$1***")"#,
            &[EMAIL],
            &["email=s:a***@example.com"],
        ),
        (
            r#"set(attributes["email"], SHA256(attributes["email"]))"#,
            &[EMAIL],
            &[&format!("email=s:{EMAIL_SHA256}")],
        ),
        (
            r#"set(attributes["id"], Concat([resource.attributes["department"], attributes["email"]], "/"))"#,
            &[EMAIL],
            &["email=s:ana@example.com", "id=s:platform/ana@example.com"],
        ),
        (
            r#"set(attributes["corp"], true) where IsMatch(attributes["email"], ".*@example\\.com$")"#,
            &[EMAIL],
            &["email=s:ana@example.com", "corp=b:true"],
        ),
        (r#"set(resource.attributes["seen"], "yes")"#, &[], &[]),
    ];
    for (statement, before, after) in cases {
        for (ctx, signal) in [("datapoint", 0), ("log", 1), ("span", 2)] {
            let yaml = format!("metric_statements: [{{context: datapoint, statements: ['{s}']}}]\nlog_statements: [{{context: log, statements: ['{s}']}}]\ntrace_statements: [{{context: span, statements: ['{s}']}}]\n", s = statement.replace('\'', "''"));
            let results = run(&TransformProcessorFactory, &yaml, before).await;
            assert_eq!(
                results[signal].0,
                after.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{statement} in {ctx}"
            );
        }
    }
    let r = run(&TransformProcessorFactory, "metric_statements: [{context: datapoint, statements: ['set(resource.attributes[\"seen\"], \"yes\")']}]", &[]).await;
    assert!(r[0].1.contains(&"seen=s:yes".to_string()), "{:?}", r[0].1);
}

#[tokio::test]
async fn the_resource_copy_statements_and_the_flat_form() {
    let context_form = r#"
metric_statements:
  - context: datapoint
    statements:
      - set(attributes["user"], resource.attributes["user"])
      - set(attributes["department"], resource.attributes["department"])
      - set(attributes["email"], resource.attributes["email"])
"#;
    let r = run(
        &TransformProcessorFactory,
        context_form,
        &[("model", "s:m")],
    )
    .await;
    assert_eq!(
        r[0].0,
        vec!["model=s:m", "user=s:cara", "department=s:platform"]
    );
    let flat = "metric_statements:\n  - 'set(datapoint.attributes[\"user\"], resource.attributes[\"user\"])'\nlog_statements:\n  - 'set(log.attributes[\"user\"], resource.attributes[\"user\"]) where log.body == \"claude_code.api_request\"'\ntrace_statements:\n  - 'set(span.name, Concat([span.name, resource.attributes[\"user\"]], \":\"))'\n";
    let r = run(&TransformProcessorFactory, flat, &[]).await;
    assert_eq!(r[0].0, vec!["user=s:cara"]);
    assert_eq!(r[1].0, vec!["user=s:cara"]);
}

fn transform_error(yaml: &str) -> String {
    let raw: RawConfig = serde_yaml::from_str(yaml).unwrap();
    TransformProcessorFactory
        .validate(&raw)
        .unwrap_err()
        .to_string()
}

#[test]
fn parse_errors_name_the_statement_and_column() {
    assert_eq!(
        transform_error("metric_statements: [{context: datapoint, statements: ['sett(attributes[\"x\"], 1)']}]"),
        "metric_statements[0].statements[0]: in `sett(attributes[\"x\"], 1)` at column 1: unknown function `sett`; available: set, delete_key, delete_matching_keys, keep_keys, replace_pattern, SHA256, Concat, IsMatch, Double, Int"
    );
    assert_eq!(
        transform_error("metric_statements: [{context: datapoint, statements: ['set(attributes[\"x\"], ressource.attributes[\"u\"])']}]"),
        "metric_statements[0].statements[0]: in `set(attributes[\"x\"], ressource.attributes[\"u\"])` at column 22: unknown path `ressource.attributes` in the datapoint context"
    );
    assert_eq!(
        transform_error("log_statements: [{context: log, statements: ['set(attributes[\"x\"], \"open)']}]"),
        "log_statements[0].statements[0]: in `set(attributes[\"x\"], \"open)` at column 22: unterminated string"
    );
    assert_eq!(
        transform_error(
            "log_statements: [{context: datapoint, statements: ['set(attributes[\"x\"], 1)']}]"
        ),
        "log_statements[0]: context `DataPoint` does not apply to log_statements"
    );
    assert_eq!(
        transform_error("metric_statements: [{context: metric, statements: ['set(attributes[\"x\"], 1)']}]"),
        "metric_statements[0].statements[0]: in `set(attributes[\"x\"], 1)` at column 5: unknown path `attributes` in the metric context"
    );
    assert_eq!(
        transform_error("metric_statements: ['set(attributes[\"x\"], 1)']"),
        "metric_statements[0]: in `set(attributes[\"x\"], 1)`: in the flat form every path needs its context, e.g. datapoint.attributes[\"user\"]"
    );
    let raw: RawConfig = serde_yaml::from_str("actions: [{key: a, action: rename}]").unwrap();
    assert_eq!(
        AttributesProcessorFactory.validate(&raw).unwrap_err().to_string(),
        "actions[0]: unknown action `rename`; use insert, update, upsert, delete, hash, extract or convert"
    );
    let raw: RawConfig =
        serde_yaml::from_str("actions: [{key: a, pattern: '(', action: delete}]").unwrap();
    assert!(AttributesProcessorFactory
        .validate(&raw)
        .unwrap_err()
        .to_string()
        .starts_with("actions[0]: exactly one of key or pattern"));
}

#[tokio::test]
async fn error_mode_propagate_refuses_and_ignore_goes_on() {
    let yaml = |mode: &str| {
        format!("error_mode: {mode}\ntrace_statements: [{{context: span, statements: ['set(name, [1, 2])', 'set(attributes[\"after\"], 1)']}}]")
    };
    let raw: RawConfig = serde_yaml::from_str(&yaml("propagate")).unwrap();
    let cap = Arc::new(Capture::default());
    let p = TransformProcessorFactory
        .create_traces(
            CreateSettings::standalone(ComponentId::new("transform"), Kind::Processor),
            &raw,
            cap.clone(),
        )
        .unwrap();
    let traces = Traces {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let err = p.consume(Batch::new(traces.clone())).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("statement `set(name, [1, 2])` failed"),
        "{err}"
    );
    let raw: RawConfig = serde_yaml::from_str(&yaml("ignore")).unwrap();
    let p = TransformProcessorFactory
        .create_traces(
            CreateSettings::standalone(ComponentId::new("transform"), Kind::Processor),
            &raw,
            cap.clone(),
        )
        .unwrap();
    p.consume(Batch::new(traces)).await.unwrap();
    let got = cap.traces.lock().unwrap().pop().unwrap();
    assert_eq!(
        show(&got.resource_spans[0].scope_spans[0].spans[0].attributes),
        vec!["after=i:1"]
    );
}

/// Runs the transform `yaml` over one resource holding log records with
/// these `user` attributes; returns, per output resource, its `user` and
/// how many records it holds.
async fn logs_by_resource(yaml: &str, users: &[&str]) -> Vec<(Vec<String>, usize)> {
    let raw: RawConfig = serde_yaml::from_str(yaml).unwrap();
    let cap = Arc::new(Capture::default());
    let settings = CreateSettings::standalone(ComponentId::new("transform"), Kind::Processor);
    let logs = Logs {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: kvs(&[("service.name", "s:claude-code")]),
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: users
                    .iter()
                    .map(|u| LogRecord {
                        attributes: kvs(&[("user", u)]),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    TransformProcessorFactory
        .create_logs(settings, &raw, cap.clone())
        .unwrap()
        .consume(Batch {
            data: logs,
            context: ctx(),
            received: None,
        })
        .await
        .unwrap();
    let out = cap.logs.lock().unwrap().pop().unwrap();
    out.resource_logs
        .iter()
        .map(|rl| {
            let resource = rl.resource.as_ref().unwrap();
            let users = show(&resource.attributes)
                .into_iter()
                .filter(|a| a.starts_with("user="))
                .collect();
            let records = rl.scope_logs.iter().map(|s| s.log_records.len()).sum();
            (users, records)
        })
        .collect()
}

#[tokio::test]
async fn flatten_data_sets_the_resource_per_log_record_and_regroups() {
    let statement = "log_statements:\n  - context: log\n    statements: ['set(resource.attributes[\"user\"], attributes[\"user\"])']\n";
    let flat = format!("{statement}flatten_data: true\n");
    // Each record gets its own resource; equal ones are grouped again.
    assert_eq!(
        logs_by_resource(&flat, &["s:ana", "s:ben", "s:ana"]).await,
        vec![
            (vec!["user=s:ana".to_string()], 2),
            (vec!["user=s:ben".to_string()], 1)
        ]
    );
    // Without it the records share one resource: the last write wins.
    assert_eq!(
        logs_by_resource(statement, &["s:ana", "s:ben", "s:ana"]).await,
        vec![(vec!["user=s:ana".to_string()], 3)]
    );
    assert_eq!(
        logs_by_resource(statement, &["s:ana", "s:ben"]).await,
        vec![(vec!["user=s:ben".to_string()], 2)]
    );
}
