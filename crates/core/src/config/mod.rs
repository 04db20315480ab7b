//! Configuration: the collector's YAML, loaded from files, merged, expanded
//! and decoded into typed structs.
//!
//! - [`load`]: files and `--set` values merged (maps merge, lists replace),
//!   `${env:VAR}` style references expanded, the top level decoded into
//!   [`CollectorConfig`]; component sections stay [`RawConfig`] until their
//!   factory decodes them with [`decode`].
//! - Unknown keys are errors that name the full path, e.g.
//!   `processors.aggregation: unknown field `attribute_ky`, expected one of …`.

pub mod duration;
mod expand;
pub mod go_keys;
mod load;

use std::collections::BTreeMap;

use figment::providers::Serialized;
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use expand::expand;
pub use load::{load, redacted, ConfigSource, LoadedConfig};

use crate::telemetry::LogsConfig;

/// A component's config section before its factory decodes it.
pub type RawConfig = figment::value::Value;

/// The paths in `raw` that `pattern` names and that are set (to any
/// value, null included): `pattern` is `.`-separated and a `*` segment
/// matches every map key or list element (`protocols.*.tls.ca_file` gives
/// `protocols.grpc.tls.ca_file` when that is set). List elements appear by
/// index.
pub fn set_paths(raw: &RawConfig, pattern: &str) -> Vec<String> {
    fn walk(raw: &RawConfig, rest: &[&str], at: String, out: &mut Vec<String>) {
        use figment::value::Value;
        let Some((first, rest)) = rest.split_first() else {
            out.push(at);
            return;
        };
        let join = |k: &str| {
            if at.is_empty() {
                k.to_string()
            } else {
                format!("{at}.{k}")
            }
        };
        match (raw, *first) {
            (Value::Dict(_, map), "*") => {
                for (k, v) in map {
                    walk(v, rest, join(k), out);
                }
            }
            (Value::Dict(_, map), key) => {
                if let Some(v) = map.get(key) {
                    walk(v, rest, join(key), out);
                }
            }
            (Value::Array(_, items), "*") => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, rest, join(&i.to_string()), out);
                }
            }
            _ => {}
        }
    }
    let segments: Vec<&str> = pattern.split('.').collect();
    let mut out = Vec::new();
    walk(raw, &segments, String::new(), &mut out);
    out
}

/// What is wrong with a config, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A config file could not be read or parsed.
    #[error("{source_name}: {message}")]
    Source {
        /// The file (or `--set` argument) at fault.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// A value is missing, unknown or of the wrong shape.
    #[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Invalid {
        /// Dotted path of the offending key (`processors.aggregation`).
        path: String,
        /// What is wrong there.
        message: String,
    },
}

impl ConfigError {
    /// An error at `path`.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
    /// The same error with `prefix` put in front of its path.
    pub fn within(self, prefix: &str) -> Self {
        match self {
            Self::Invalid { path, message } => Self::Invalid {
                path: if path.is_empty() {
                    prefix.to_string()
                } else {
                    format!("{prefix}.{path}")
                },
                message,
            },
            other => other,
        }
    }
}

fn from_figment(err: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let mut segments = err.path.clone();
    let field: Option<&str> = match &err.kind {
        Kind::UnknownField(f, _) => Some(f),
        Kind::MissingField(f) => Some(f),
        _ => None,
    };
    if field.is_some() && segments.last().map(String::as_str) == field {
        segments.pop();
    }
    let mut path = segments.join(".");
    let message = match &err.kind {
        Kind::UnknownField(field, &[]) => {
            format!("unknown field `{field}`, there are no fields")
        }
        Kind::UnknownField(field, expected) => {
            let list: Vec<String> = expected.iter().map(|e| format!("`{e}`")).collect();
            format!(
                "unknown field `{field}`, expected one of {}",
                list.join(", ")
            )
        }
        Kind::MissingField(field) => format!("missing field `{field}`"),
        Kind::UnknownVariant(v, expected) => {
            let list: Vec<String> = expected.iter().map(|e| format!("`{e}`")).collect();
            format!("unknown value `{v}`, expected one of {}", list.join(", "))
        }
        other => other.to_string(),
    };
    if path.starts_with("default.") {
        path = path["default.".len()..].to_string();
    }
    ConfigError::invalid(path, message)
}

/// Decodes a component's section into its typed config. An empty section
/// (`debug:`) decodes as an empty map, so `#[serde(default)]` structs get
/// their defaults. Strings are read as numbers or booleans where the type
/// asks for one, so `port: ${env:PORT}` works.
pub fn decode<T: DeserializeOwned>(raw: &RawConfig) -> Result<T, ConfigError> {
    let dict = match raw {
        RawConfig::Dict(_, d) => d.clone(),
        RawConfig::Empty(..) => Default::default(),
        _ => return Err(ConfigError::invalid("", "expected a map of settings")),
    };
    Figment::from(Serialized::defaults(dict))
        .extract_lossy::<T>()
        .map_err(from_figment)
}

/// The whole config file, its components still raw.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// `receivers:` by component id.
    #[serde(default)]
    pub receivers: BTreeMap<String, RawConfig>,
    /// `processors:` by component id.
    #[serde(default)]
    pub processors: BTreeMap<String, RawConfig>,
    /// `exporters:` by component id.
    #[serde(default)]
    pub exporters: BTreeMap<String, RawConfig>,
    /// `extensions:` by component id.
    #[serde(default)]
    pub extensions: BTreeMap<String, RawConfig>,
    /// `connectors:` by component id.
    #[serde(default)]
    pub connectors: BTreeMap<String, RawConfig>,
    /// `service:`.
    #[serde(default)]
    pub service: ServiceConfig,
}

/// `service:`: which extensions run and how components form pipelines.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Extensions to run, by id.
    pub extensions: Vec<String>,
    /// Pipelines by id (`metrics`, `logs/raw`, …).
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// The collector's own logs and metrics.
    pub telemetry: TelemetryConfig,
}

/// One pipeline: receivers → processors (in order) → exporters.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Receiver ids.
    pub receivers: Vec<String>,
    /// Processor ids, in order.
    pub processors: Vec<String>,
    /// Exporter ids.
    pub exporters: Vec<String>,
}

/// `service.telemetry`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log level and encoding.
    pub logs: LogsConfig,
    /// Where the Prometheus endpoint listens.
    pub metrics: MetricsTelemetryConfig,
    /// Accepted for compatibility; attributes of the collector's own telemetry.
    pub resource: BTreeMap<String, Option<String>>,
    /// Accepted for compatibility; the collector does not trace itself.
    pub traces: Option<RawConfig>,
}

/// `service.telemetry.metrics`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsTelemetryConfig {
    /// `none` turns the endpoint off; `basic`, `normal` (default), `detailed` serve it.
    pub level: String,
    /// `host:port` of the Prometheus endpoint (default `localhost:8888`).
    pub address: Option<String>,
    /// The newer form: `readers: [{pull: {exporter: {prometheus: {host, port}}}}]`.
    pub readers: Vec<RawConfig>,
}

impl Default for MetricsTelemetryConfig {
    fn default() -> Self {
        Self {
            level: "normal".into(),
            address: None,
            readers: vec![],
        }
    }
}

#[derive(Deserialize)]
struct PullReader {
    pull: PullExporter,
}
#[derive(Deserialize)]
struct PullExporter {
    exporter: PromExporter,
}
#[derive(Deserialize)]
struct PromExporter {
    prometheus: HostPort,
}
#[derive(Deserialize)]
struct HostPort {
    host: String,
    port: u16,
}

impl MetricsTelemetryConfig {
    /// The address to serve `/metrics` on, or `None` when turned off.
    pub fn listen_address(&self) -> Result<Option<String>, ConfigError> {
        if self.level.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        if let Some(reader) = self.readers.first() {
            let r: PullReader =
                decode(reader).map_err(|e| e.within("service.telemetry.metrics.readers[0]"))?;
            let p = r.pull.exporter.prometheus;
            return Ok(Some(format!("{}:{}", p.host, p.port)));
        }
        Ok(Some(
            self.address
                .clone()
                .unwrap_or_else(|| "localhost:8888".into()),
        ))
    }
}
