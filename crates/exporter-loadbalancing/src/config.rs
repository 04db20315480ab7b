//! `exporters.loadbalancing`: the Go exporter's keys.

use std::time::Duration;

use otelcol_core::component::NoEffectKey;
use otelcol_core::config::{duration, ConfigError};
use otelcol_exporter_otlp::config::OtlpGrpcConfig;
use serde::{Deserialize, Serialize};

use crate::route::RoutingKey;

/// The exporter's configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoadBalancingConfig {
    /// How backends are reached: `otlp`, the `otlp` exporter's keys
    /// (without `endpoint`, which each backend fills in). Each backend has
    /// its own sending queue and retries from these keys.
    pub protocol: Protocol,
    /// Where the backends' addresses come from.
    pub resolver: Resolver,
    /// What decides an item's backend.
    pub routing_key: RoutingKey,
    /// With `routing_key: attributes`: the attributes (`[user.email]`),
    /// each looked up on the item, then on the resource.
    pub routing_attributes: Vec<String>,
    /// Go: a queue before routing. No effect: each backend queues.
    pub sending_queue: Option<serde_yaml::Value>,
    /// Go: retries before routing. No effect: each backend retries.
    pub retry_on_failure: Option<serde_yaml::Value>,
    /// Go: a bound before routing. No effect: `protocol.otlp.timeout`.
    pub timeout: Option<serde_yaml::Value>,
}

/// `protocol`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Protocol {
    /// The `otlp` exporter's keys for every backend.
    pub otlp: OtlpGrpcConfig,
}

impl Default for Protocol {
    fn default() -> Self {
        Self {
            otlp: OtlpGrpcConfig {
                // Backends are usually in-cluster collectors.
                ..OtlpGrpcConfig::default()
            },
        }
    }
}

/// `resolver`: exactly one of `static` or `dns`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Resolver {
    /// A fixed list.
    #[serde(rename = "static")]
    pub fixed: Option<StaticResolver>,
    /// A DNS name resolved again every `interval`.
    pub dns: Option<DnsResolver>,
    /// Go: Kubernetes endpoints. Not in this build: use `dns` with a
    /// headless Service.
    pub k8s: Option<serde_yaml::Value>,
    /// Go: AWS Cloud Map. Not in this build.
    pub aws_cloud_map: Option<serde_yaml::Value>,
}

/// `resolver.static`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StaticResolver {
    /// `host:port` (port 4317 when left out).
    pub hostnames: Vec<String>,
}

/// `resolver.dns`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DnsResolver {
    /// The name whose A/AAAA records are the backends.
    pub hostname: String,
    /// The backends' port.
    pub port: String,
    /// How often the name is resolved again.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Bound of one resolution.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for DnsResolver {
    fn default() -> Self {
        Self {
            hostname: String::new(),
            port: "4317".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
        }
    }
}

/// `host` → `host:4317`; `host:port` as it is.
pub fn with_port(host: &str) -> String {
    let h = host.trim();
    let bracketed_v6 = h.starts_with('[') && h.ends_with(']');
    if h.rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !bracketed_v6
    {
        h.to_string()
    } else {
        format!("{h}:4317")
    }
}

impl LoadBalancingConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.resolver;
        if r.k8s.is_some() || r.aws_cloud_map.is_some() {
            return Err(ConfigError::invalid(
                "resolver",
                "the k8s and aws_cloud_map resolvers are not in this build; use dns with a headless Service (or static)",
            ));
        }
        match (&r.fixed, &r.dns) {
            (Some(s), None) if !s.hostnames.is_empty() => {}
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "resolver.static.hostnames",
                    "must list at least one backend",
                ))
            }
            (None, Some(d)) => {
                if d.hostname.trim().is_empty() {
                    return Err(ConfigError::invalid("resolver.dns.hostname", "is required"));
                }
                d.port.parse::<u16>().map_err(|_| {
                    ConfigError::invalid("resolver.dns.port", format!("`{}` is not a port", d.port))
                })?;
                if d.interval.is_zero() || d.timeout.is_zero() {
                    return Err(ConfigError::invalid(
                        "resolver.dns",
                        "interval and timeout must be above 0",
                    ));
                }
            }
            _ => {
                return Err(ConfigError::invalid(
                    "resolver",
                    "exactly one of static or dns must be set",
                ))
            }
        }
        if self.routing_key == RoutingKey::Attributes && self.routing_attributes.is_empty() {
            return Err(ConfigError::invalid(
                "routing_attributes",
                "routing_key: attributes needs at least one attribute (user.email, say)",
            ));
        }
        let mut otlp = self.protocol.otlp.clone();
        if !otlp.endpoint.is_empty() {
            return Err(ConfigError::invalid(
                "protocol.otlp.endpoint",
                "is filled in per backend by the resolver; remove it",
            ));
        }
        otlp.endpoint = "backend:4317".into();
        otlp.validate()
            .map_err(|e| ConfigError::invalid("protocol.otlp", e.to_string()))
    }

    /// The keys accepted with no effect.
    pub fn no_effect_keys() -> Vec<NoEffectKey> {
        const WHY: &str = "each backend has its own sending queue, retries and timeout from protocol.otlp (data is never re-routed from a backend that fails)";
        let mut keys: Vec<NoEffectKey> = ["sending_queue", "retry_on_failure", "timeout"]
            .map(|k| NoEffectKey::new(k, WHY))
            .to_vec();
        keys.extend(
            OtlpGrpcConfig::no_effect_keys()
                .into_iter()
                .map(|k| NoEffectKey {
                    path: format!("protocol.otlp.{}", k.path),
                    why: k.why,
                }),
        );
        keys
    }
}
