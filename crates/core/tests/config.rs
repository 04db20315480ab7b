//! Config loading and validation: every expansion rule, merging, `--set`,
//! unknown-key messages and pipeline validation errors, with exact texts.

use std::sync::Arc;
use std::time::Duration;

use otelcol_core::component::{
    ComponentError, Connector, ConnectorFactory, CreateSettings, Exporter, ExporterFactory,
    Factories, Factory, Lifecycle, ProcessorFactory, ReceiverFactory, SignalConsumers,
};
use otelcol_core::config::{decode, duration, load, ConfigError, ConfigSource, RawConfig};
use otelcol_core::pdata::Metrics;
use otelcol_core::pipeline::validate;
use otelcol_core::{Signal, Stability};
use serde::Deserialize;

fn text(yaml: &str) -> ConfigSource {
    ConfigSource::Text {
        name: "test.yaml".into(),
        yaml: yaml.into(),
    }
}

fn env(name: &str) -> Option<String> {
    match name {
        "ENDPOINT" => Some("https://ingest.example.com".into()),
        "PORT" => Some("4318".into()),
        "TOKEN" => Some("tok-123".into()),
        "KEYS" => Some("[user.email, user.id]".into()),
        _ => None,
    }
}

/// A stand-in for the aggregation processor's config, to check messages.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct AggregationLike {
    attribute_key: String,
    #[serde(with = "duration")]
    aggregation_interval: Duration,
    #[serde(with = "duration")]
    emit_interval: Duration,
    port: u16,
    enabled: bool,
    keys: Vec<String>,
}

impl Default for AggregationLike {
    fn default() -> Self {
        Self {
            attribute_key: "user.email".into(),
            aggregation_interval: Duration::from_secs(3600),
            emit_interval: Duration::from_secs(60),
            port: 0,
            enabled: false,
            keys: vec![],
        }
    }
}

struct Fake {
    name: &'static str,
    signals: &'static [Signal],
}

impl Factory for Fake {
    fn type_name(&self) -> &'static str {
        self.name
    }
    fn stability(&self) -> Stability {
        Stability::Development
    }
    fn signals(&self) -> &'static [Signal] {
        self.signals
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        if self.name == "aggregation" {
            decode::<AggregationLike>(config)?;
        }
        Ok(())
    }
}
impl ReceiverFactory for Fake {
    fn create(
        &self,
        _: CreateSettings,
        _: &RawConfig,
        _: SignalConsumers,
    ) -> Result<Arc<dyn Lifecycle>, ComponentError> {
        Err(ComponentError::Failed("not built in these tests".into()))
    }
}
impl ProcessorFactory for Fake {}
impl ExporterFactory for Fake {
    fn create_metrics(
        &self,
        _: CreateSettings,
        _: &RawConfig,
    ) -> Result<Arc<dyn Exporter<Metrics>>, ComponentError> {
        Err(ComponentError::Failed("not built in these tests".into()))
    }
}

impl ConnectorFactory for Fake {
    fn pairs(&self) -> &'static [(Signal, Signal)] {
        match self.name {
            "forward" => &[
                (Signal::Metrics, Signal::Metrics),
                (Signal::Logs, Signal::Logs),
            ],
            _ => &[(Signal::Logs, Signal::Metrics)],
        }
    }
    fn create(
        &self,
        _: CreateSettings,
        _: &RawConfig,
        _: SignalConsumers,
    ) -> Result<Connector, ComponentError> {
        Err(ComponentError::Failed("not built in these tests".into()))
    }
}

fn factories() -> Factories {
    Factories::default()
        .connector(Fake {
            name: "signaltometrics",
            signals: &[Signal::Logs, Signal::Metrics],
        })
        .connector(Fake {
            name: "forward",
            signals: &[Signal::Logs, Signal::Metrics],
        })
        .receiver(Fake {
            name: "otlp",
            signals: &Signal::ALL,
        })
        .processor(Fake {
            name: "aggregation",
            signals: &[Signal::Metrics],
        })
        .exporter(Fake {
            name: "debug",
            signals: &Signal::ALL,
        })
        .exporter(Fake {
            name: "multitudes",
            signals: &[Signal::Metrics, Signal::Logs],
        })
}

const BASE: &str = r#"
receivers:
  otlp:
    protocols: {http: {endpoint: "localhost:4318"}}
processors:
  aggregation:
    attribute_key: user.email
    aggregation_interval: 5m
exporters:
  debug:
    verbosity: basic
service:
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [aggregation]
      exporters: [debug]
"#;

#[test]
fn expansion_rules_in_a_real_file() {
    let yaml = r#"
exporters:
  multitudes:
    endpoint: ${env:ENDPOINT}/ai/otel
    fallback_token: ${env:TOKEN}
    missing: "[${env:NOT_SET}]"
    defaulted: ${env:NOT_SET:-https://fallback.example.com}
    legacy: ${ENDPOINT}
    price: "$$5 and $${env:TOKEN}"
    keys: ${env:KEYS}
    port: ${env:PORT}
"#;
    let loaded = load(&[text(yaml)], &[], &env).unwrap();
    let m = loaded.root.find_ref("exporters.multitudes").unwrap();
    let s = |k: &str| m.find_ref(k).and_then(|v| v.as_str()).map(str::to_string);
    assert_eq!(
        s("endpoint").as_deref(),
        Some("https://ingest.example.com/ai/otel")
    );
    assert_eq!(s("fallback_token").as_deref(), Some("tok-123"));
    assert_eq!(s("missing").as_deref(), Some("[]"));
    assert_eq!(
        s("defaulted").as_deref(),
        Some("https://fallback.example.com")
    );
    assert_eq!(s("legacy").as_deref(), Some("https://ingest.example.com"));
    assert_eq!(s("price").as_deref(), Some("$5 and ${env:TOKEN}"));
    let keys: Vec<String> = m
        .find_ref("keys")
        .unwrap()
        .clone()
        .into_array()
        .unwrap()
        .into_iter()
        .map(|v| v.into_string().unwrap())
        .collect();
    assert_eq!(
        keys,
        vec!["user.email", "user.id"],
        "a whole-value reference holding a list is parsed as YAML"
    );
    assert_eq!(
        loaded.warnings,
        vec!["environment variable `NOT_SET` is not set; using an empty value"]
    );
    #[derive(Deserialize)]
    struct Port {
        port: u16,
    }
    let port: Port = decode(m).unwrap();
    assert_eq!(
        port.port, 4318,
        "a whole-value reference fills a numeric setting"
    );
}

#[test]
fn two_files_merge_maps_and_replace_lists() {
    let overlay = r#"
processors:
  aggregation:
    emit_interval: 30s
exporters:
  debug:
    verbosity: detailed
service:
  pipelines:
    metrics:
      exporters: [debug]
      processors: []
"#;
    let loaded = load(&[text(BASE), text(overlay)], &[], &env).unwrap();
    let agg: AggregationLike = decode(&loaded.config.processors["aggregation"]).unwrap();
    assert_eq!(agg.attribute_key, "user.email", "kept from the first file");
    assert_eq!(
        agg.aggregation_interval,
        Duration::from_secs(300),
        "kept from the first file"
    );
    assert_eq!(
        agg.emit_interval,
        Duration::from_secs(30),
        "set by the second file"
    );
    let p = &loaded.config.service.pipelines["metrics"];
    assert_eq!(p.receivers, vec!["otlp"]);
    assert!(
        p.processors.is_empty(),
        "the second file's list replaces the first's"
    );
    let debug = loaded.root.find_ref("exporters.debug.verbosity").unwrap();
    assert_eq!(debug.as_str(), Some("detailed"));
}

#[test]
fn set_overrides_files_with_yaml_values() {
    let sets = vec![
        "processors.aggregation.aggregation_interval=10m".to_string(),
        "processors::aggregation::keys=[a, b]".to_string(),
        "processors.aggregation.port=9000".to_string(),
        "processors.aggregation.enabled=true".to_string(),
    ];
    let loaded = load(&[text(BASE)], &sets, &env).unwrap();
    let agg: AggregationLike = decode(&loaded.config.processors["aggregation"]).unwrap();
    assert_eq!(agg.aggregation_interval, Duration::from_secs(600));
    assert_eq!(agg.keys, vec!["a", "b"]);
    assert_eq!(agg.port, 9000);
    assert!(agg.enabled);
    assert_eq!(agg.attribute_key, "user.email");
    let err = load(&[text(BASE)], &["no-equals-sign".to_string()], &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--set no-equals-sign: expected key.path=value"
    );
}

#[test]
fn unknown_keys_name_the_full_path() {
    let cfg = BASE.replace("attribute_key:", "attribute_ky:");
    let loaded = load(&[text(&cfg)], &[], &env).unwrap();
    let err = validate(&loaded.config, &factories()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "processors.aggregation: unknown field `attribute_ky`, expected one of `attribute_key`, `aggregation_interval`, `emit_interval`, `port`, `enabled`, `keys`"
    );
    let err = load(&[text("servce: {}\n")], &[], &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown field `servce`, expected one of `receivers`, `processors`, `exporters`, `extensions`, `connectors`, `service`"
    );
    let err = load(
        &[text(
            "service: {pipelines: {metrics: {recievers: [otlp]}}}\n",
        )],
        &[],
        &env,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service.pipelines.metrics: unknown field `recievers`, expected one of `receivers`, `processors`, `exporters`"
    );
    let cfg = BASE.replace(
        "aggregation_interval: 5m",
        "aggregation_interval: 5 minutes",
    );
    let loaded = load(&[text(&cfg)], &[], &env).unwrap();
    let err = validate(&loaded.config, &factories()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "processors.aggregation.aggregation_interval: unknown unit ` minutes` in duration `5 minutes` (use ns, us, ms, s, m or h)"
    );
}

fn validation_error(yaml: &str) -> String {
    let loaded = load(&[text(yaml)], &[], &env).unwrap();
    validate(&loaded.config, &factories())
        .unwrap_err()
        .to_string()
}

#[test]
fn validation_errors_name_component_and_pipeline() {
    assert!(validate(
        &load(&[text(BASE)], &[], &env).unwrap().config,
        &factories()
    )
    .is_ok());
    assert_eq!(
        validation_error(
            &format!("{BASE}\n  extensions: [health_check]\n")
                .replace("service:\n  pipelines", "service:\n  pipelines")
        ),
        "service.extensions: extension `health_check` is not configured under extensions"
    );
    assert_eq!(
        validation_error(&BASE.replace(
            "  debug:\n    verbosity: basic",
            "  debug:\n    verbosity: basic\n  kafka:"
        )),
        "exporters.kafka: unknown exporter type `kafka`; this build has: debug, multitudes"
    );
    assert_eq!(
        validation_error(&BASE.replace("  debug:\n    verbosity: basic", "  debug:\n    verbosity: basic\n  debug/unused:")),
        "exporters.debug/unused: exporter `debug/unused` is configured but is not used in any pipeline"
    );
    assert_eq!(
        validation_error(&BASE.replace("exporters: [debug]", "exporters: [debug/missing]")),
        "service.pipelines.metrics: references exporter `debug/missing`, which is not configured under exporters or connectors"
    );
    let traces = format!(
        "{}\n    traces:\n      receivers: [otlp]\n      exporters: [multitudes]\n",
        BASE.replace(
            "  debug:\n    verbosity: basic",
            "  debug:\n    verbosity: basic\n  multitudes:"
        )
    );
    assert_eq!(
        validation_error(&traces),
        "service.pipelines.traces: exporter `multitudes` does not support traces"
    );
    let logs_agg = format!("{BASE}\n    logs:\n      receivers: [otlp]\n      processors: [aggregation]\n      exporters: [debug]\n");
    assert_eq!(
        validation_error(&logs_agg),
        "service.pipelines.logs: processor `aggregation` does not support logs"
    );
    assert_eq!(
        validation_error(&BASE.replace("    metrics:\n", "    profiles:\n")),
        "service.pipelines.profiles: unknown signal `profiles`; a pipeline id starts with metrics, logs or traces"
    );
    assert_eq!(
        validation_error(&BASE.replace("receivers: [otlp]", "receivers: []")),
        "service.pipelines.metrics: must have at least one receiver"
    );
    assert_eq!(
        validation_error(&BASE.replace(
            "processors: [aggregation]",
            "processors: [aggregation, aggregation]"
        )),
        "service.pipelines.metrics: processor `aggregation` is listed twice"
    );
    assert_eq!(
        validation_error("receivers: {otlp: {}}\nexporters: {debug: {}}\n"),
        "service.pipelines: no pipelines are configured"
    );
}

/// `BASE` plus a logs pipeline exporting to connector `signaltometrics`,
/// with `pipelines` appended under `service.pipelines`.
fn with_connector(connectors: &str, pipelines: &str) -> String {
    format!(
        "{}connectors:\n{connectors}{pipelines}",
        BASE.replace("service:\n", "")
            .replace("  pipelines:\n    metrics:\n      receivers: [otlp]\n      processors: [aggregation]\n      exporters: [debug]\n", "")
    )
}

#[test]
fn connectors_join_pipelines_and_every_misuse_is_named() {
    let both_sides = "service:\n  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [signaltometrics]\n    metrics:\n      receivers: [otlp, signaltometrics]\n      processors: [aggregation]\n      exporters: [debug]\n";
    let yaml = with_connector("  signaltometrics:\n", both_sides);
    let plans = validate(
        &load(&[text(&yaml)], &[], &env).unwrap().config,
        &factories(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let ids: Vec<&str> = plans.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["logs", "metrics"]);
    assert_eq!(plans[1].receivers.len(), 2);

    let only_exporter = "service:\n  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [signaltometrics]\n    metrics:\n      receivers: [otlp]\n      processors: [aggregation]\n      exporters: [debug]\n";
    assert_eq!(
        validation_error(&with_connector("  signaltometrics:\n", only_exporter)),
        "connectors.signaltometrics: connector `signaltometrics` is used as an exporter but not as a receiver in any pipeline; a connector joins the pipelines that export to it to those that receive from it"
    );
    let wrong_signal = "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [signaltometrics]\n    metrics:\n      receivers: [signaltometrics]\n      processors: [aggregation]\n      exporters: [debug]\n";
    assert_eq!(
        validation_error(&with_connector("  signaltometrics:\n", wrong_signal)),
        "connectors.signaltometrics: connector `signaltometrics` is an exporter of traces pipeline `traces`, but the pipelines on its other side carry metrics; it joins only: logs to metrics"
    );
    let unused = "service:\n  pipelines:\n    metrics:\n      receivers: [otlp]\n      processors: [aggregation]\n      exporters: [debug]\n";
    assert_eq!(
        validation_error(&with_connector("  signaltometrics:\n", unused)),
        "connectors.signaltometrics: connector `signaltometrics` is configured but is not used in any pipeline (list it as an exporter of one pipeline and a receiver of another)"
    );
    let clash = with_connector(
        "  debug:\n",
        both_sides.replace("signaltometrics", "debug").as_str(),
    );
    assert_eq!(
        validation_error(&clash.replace("connectors:\n  debug:", "connectors:\n  debug:\n  signaltometrics:")),
        "connectors.debug: unknown connector type `debug`; this build has: forward, signaltometrics"
    );
    let cycle = "service:\n  pipelines:\n    metrics/a:\n      receivers: [otlp, forward/b]\n      exporters: [forward/a]\n    metrics/b:\n      receivers: [forward/a]\n      exporters: [forward/b, debug]\n    metrics:\n      receivers: [otlp]\n      processors: [aggregation]\n      exporters: [debug]\n";
    assert_eq!(
        validation_error(&with_connector("  forward/a:\n  forward/b:\n", cycle)),
        "service.pipelines: pipelines feed each other through connectors in a cycle: metrics/a -> metrics/b -> metrics/a"
    );
    let twin = "service:\n  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [forward]\n    logs/out:\n      receivers: [forward]\n      exporters: [debug]\n    metrics:\n      receivers: [otlp]\n      processors: [aggregation]\n      exporters: [debug]\n";
    let same_name = with_connector("  forward:\n", twin)
        .replace("exporters:\n  debug:", "exporters:\n  forward:\n  debug:");
    assert_eq!(
        validation_error(&same_name),
        "exporters.forward: unknown exporter type `forward`; this build has: debug, multitudes"
    );
}
