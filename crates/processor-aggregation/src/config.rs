//! `processors.aggregation`: the keys of `../shared/spec/aggregation.md`,
//! with the Go processor's `attribute_key`, `aggregation_interval` and
//! `emit_interval` accepted unchanged.

use std::time::Duration;

use otelcol_core::config::{duration, ConfigError};
use serde::{Deserialize, Serialize};

/// How gauge points in one window combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GaugePolicy {
    /// Added, as the Go processor does.
    #[default]
    Sum,
    /// The value with the latest timestamp.
    Last,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The arithmetic mean.
    Mean,
}

/// What to do with a point whose user key is not found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingKey {
    /// Drop it, count it, warn (rate-limited).
    #[default]
    Drop,
    /// Keep it under `missing_key_value`.
    Keep,
}

/// Where the user key is looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The data point's attributes.
    DataPoint,
    /// The resource's attributes.
    Resource,
    /// A request header captured by the receiver (`header:<name>`).
    Header(String),
}

impl Lookup {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "datapoint" => Ok(Self::DataPoint),
            "resource" => Ok(Self::Resource),
            _ => match s.strip_prefix("header:") {
                Some(h) if !h.is_empty() => Ok(Self::Header(h.to_ascii_lowercase())),
                _ => Err(format!(
                    "unknown lookup `{s}`; use datapoint, resource or header:<name>"
                )),
            },
        }
    }
}

/// Which resource attributes the output resource keeps (`resource_attributes`).
///
/// Give `include` (only these) or `exclude` (all but these), not both;
/// without either, [`DEFAULT_RESOURCE_ATTRIBUTES`] are kept. The user key is
/// kept in every case when the resource carries it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceAttributes {
    /// Keep only these keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// Keep every key but these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
}

/// The resource attributes an output resource keeps when
/// `resource_attributes` names no list: nothing that identifies a process,
/// a host, a session or a command line.
pub const DEFAULT_RESOURCE_ATTRIBUTES: &[&str] = &[
    "service.name",
    "service.namespace",
    "service.version",
    "deployment.environment.name",
    "organization.id",
];

impl ResourceAttributes {
    /// Whether the output resource keeps `key` (the user keys aside).
    pub fn keeps(&self, key: &str) -> bool {
        match (&self.include, &self.exclude) {
            (Some(list), _) => list.iter().any(|k| k == key),
            (None, Some(list)) => !list.iter().any(|k| k == key),
            (None, None) => DEFAULT_RESOURCE_ATTRIBUTES.contains(&key),
        }
    }
}

/// The processor's configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AggregationConfig {
    /// The user key (Go key).
    pub attribute_key: String,
    /// Several user keys; the first found wins. Overrides `attribute_key`.
    pub attribute_keys: Vec<String>,
    /// Where the key is looked for, in order: `datapoint`, `resource`, `header:<name>`.
    pub lookup: Vec<String>,
    /// Window length; windows are aligned to the Unix epoch.
    #[serde(with = "duration")]
    pub aggregation_interval: Duration,
    /// How often closed windows are looked for.
    #[serde(with = "duration")]
    pub emit_interval: Duration,
    /// A window closes at `window_end + grace`.
    #[serde(with = "duration")]
    pub grace: Duration,
    /// Points stamped later than `now + max_future_skew` count at `now`.
    #[serde(with = "duration")]
    pub max_future_skew: Duration,
    /// Point attributes kept as dimensions (all when empty).
    pub include_attributes: Vec<String>,
    /// Point attributes dropped from the dimensions.
    pub exclude_attributes: Vec<String>,
    /// How gauge points combine.
    pub gauge: GaugePolicy,
    /// What to do without a user key.
    pub missing_key: MissingKey,
    /// The key used with `missing_key: keep`.
    pub missing_key_value: String,
    /// Which resource attributes the output resource keeps.
    pub resource_attributes: ResourceAttributes,
    /// Open (window, series) entries held at most; a request that needs more
    /// is refused as a whole (retryable).
    pub max_series: usize,
    /// Cumulative streams tracked at most; past it the least recently seen
    /// are forgotten first (counted).
    pub max_streams: usize,
    /// A cumulative stream unseen this long is forgotten.
    #[serde(with = "duration")]
    pub stream_ttl: Duration,
    /// A storage extension id (`file_storage` or `file_storage/<name>`):
    /// open windows, late-point entries, emissions in flight and cumulative
    /// baselines survive restarts and crashes, and a request is answered
    /// only once its effect is durable. None: memory only.
    pub storage: Option<String>,
    /// The engine's shards, by user (a request of one user locks one
    /// shard); 0: one per core, up to 16. A durable state (`storage`)
    /// keeps the count it was created with.
    pub shards: usize,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        Self {
            attribute_key: "user.email".into(),
            attribute_keys: vec![],
            lookup: vec!["datapoint".into(), "resource".into()],
            aggregation_interval: Duration::from_secs(3600),
            emit_interval: Duration::from_secs(60),
            grace: Duration::from_secs(30),
            max_future_skew: Duration::from_secs(300),
            include_attributes: vec![],
            exclude_attributes: vec![],
            gauge: GaugePolicy::Sum,
            missing_key: MissingKey::Drop,
            missing_key_value: "unknown".into(),
            resource_attributes: ResourceAttributes::default(),
            max_series: 1_000_000,
            max_streams: 1_000_000,
            stream_ttl: Duration::from_secs(24 * 3600),
            storage: None,
            shards: 0,
        }
    }
}

impl AggregationConfig {
    /// The user keys in order of preference.
    pub fn keys(&self) -> Vec<String> {
        if self.attribute_keys.is_empty() {
            vec![self.attribute_key.clone()]
        } else {
            self.attribute_keys.clone()
        }
    }

    /// The parsed `lookup` list.
    pub fn lookups(&self) -> Result<Vec<Lookup>, ConfigError> {
        self.lookup
            .iter()
            .map(|s| Lookup::parse(s).map_err(|m| ConfigError::invalid("lookup", m)))
            .collect()
    }

    /// The engine's shards: `shards`, or one per core when 0.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => crate::shard::auto_shards(),
            n => n,
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.keys().iter().any(|k| k.is_empty()) {
            return Err(ConfigError::invalid("attribute_key", "must not be empty"));
        }
        if self.lookup.is_empty() {
            return Err(ConfigError::invalid(
                "lookup",
                "must name at least one place",
            ));
        }
        self.lookups()?;
        if self.aggregation_interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "aggregation_interval",
                "must be at least 1s",
            ));
        }
        if self.emit_interval.is_zero() {
            return Err(ConfigError::invalid("emit_interval", "must be above 0"));
        }
        if !self.include_attributes.is_empty() && !self.exclude_attributes.is_empty() {
            return Err(ConfigError::invalid(
                "include_attributes",
                "use include_attributes or exclude_attributes, not both",
            ));
        }
        if self.max_series == 0 {
            return Err(ConfigError::invalid("max_series", "must be above 0"));
        }
        if self.max_streams == 0 {
            return Err(ConfigError::invalid("max_streams", "must be above 0"));
        }
        if self.resource_attributes.include.is_some() && self.resource_attributes.exclude.is_some()
        {
            return Err(ConfigError::invalid(
                "resource_attributes",
                "use include or exclude, not both",
            ));
        }
        if self.shards > crate::shard::MAX_SHARDS {
            return Err(ConfigError::invalid(
                "shards",
                format!("must be at most {}", crate::shard::MAX_SHARDS),
            ));
        }
        if let Some(s) = &self.storage {
            s.parse::<otelcol_core::component::ComponentId>()
                .map_err(|e| ConfigError::invalid("storage", e.to_string()))?;
        }
        Ok(())
    }
}
