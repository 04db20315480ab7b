//! Configs of `health_check` (v1) and `healthcheckv2`, with the Go keys.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use otelcol_core::config::duration;
use otelcol_core::config::go_keys::{UnusedGrpcServerKeys, UnusedHttpServerKeys};

/// `extensions.health_check`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// Path of the status document.
    pub path: String,
    /// Replacement bodies: `{healthy: "...", unhealthy: "..."}`.
    pub response_body: Option<ResponseBody>,
    /// Accepted with a start-up warning; ignored (as in recent Go releases).
    pub check_collector_pipeline: Option<serde_json::Value>,
    /// The rest of the Go `confighttp` server keys: accepted with a
    /// start-up warning, no effect.
    #[serde(flatten)]
    pub unused: UnusedHttpServerKeys,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            endpoint: "localhost:13133".into(),
            path: "/".into(),
            response_body: None,
            check_collector_pipeline: None,
            unused: UnusedHttpServerKeys::default(),
        }
    }
}

/// Custom bodies for the v1 status document.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseBody {
    /// Body when healthy.
    pub healthy: String,
    /// Body when not.
    pub unhealthy: String,
}

/// `extensions.healthcheckv2`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckV2Config {
    /// `false`: behave as v1 on the v1 keys below; `true`: the v2 endpoints.
    pub use_v2: bool,
    /// Which component errors make the collector unhealthy.
    pub component_health: ComponentHealth,
    /// The v2 HTTP service.
    pub http: Option<V2Http>,
    /// The `grpc.health.v1` service.
    pub grpc: Option<V2Grpc>,
    /// v1 key used when `use_v2` is false.
    pub endpoint: String,
    /// v1 key used when `use_v2` is false.
    pub path: String,
    /// v1 key used when `use_v2` is false.
    pub response_body: Option<ResponseBody>,
    /// Accepted with a start-up warning; ignored.
    pub check_collector_pipeline: Option<serde_json::Value>,
    /// The rest of the Go `confighttp` server keys of the v1 endpoint:
    /// accepted with a start-up warning, no effect.
    #[serde(flatten)]
    pub unused: UnusedHttpServerKeys,
}

impl Default for HealthCheckV2Config {
    fn default() -> Self {
        let v1 = HealthCheckConfig::default();
        Self {
            use_v2: false,
            component_health: ComponentHealth::default(),
            http: None,
            grpc: None,
            endpoint: v1.endpoint,
            path: v1.path,
            response_body: None,
            check_collector_pipeline: None,
            unused: UnusedHttpServerKeys::default(),
        }
    }
}

/// `component_health`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentHealth {
    /// A component in permanent error makes the collector unhealthy.
    pub include_permanent_errors: bool,
    /// A component in recoverable error for longer than `recovery_duration`
    /// makes the collector unhealthy.
    pub include_recoverable_errors: bool,
    /// Grace period for recoverable errors.
    #[serde(with = "duration")]
    pub recovery_duration: Duration,
}

/// `http` of v2.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct V2Http {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// The status document.
    pub status: StatusPath,
    /// The config document (not served: it would expose the config).
    pub config: PathToggle,
    /// The rest of the Go `confighttp` server keys: accepted with a
    /// start-up warning, no effect.
    #[serde(flatten)]
    pub unused: UnusedHttpServerKeys,
}

impl Default for V2Http {
    fn default() -> Self {
        Self {
            endpoint: "localhost:13133".into(),
            status: StatusPath {
                enabled: true,
                path: "/status".into(),
                include_attributes: false,
            },
            config: PathToggle {
                enabled: false,
                path: "/config".into(),
            },
            unused: UnusedHttpServerKeys::default(),
        }
    }
}

/// An endpoint that can be turned on or off.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PathToggle {
    /// Served or not.
    pub enabled: bool,
    /// Its path.
    pub path: String,
}

/// `http.status` of v2: the Go `PathConfig` plus `include_attributes`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StatusPath {
    /// Served or not.
    pub enabled: bool,
    /// Its path.
    pub path: String,
    /// Go: add the attributes of each component's latest status event to
    /// its entry. Accepted with a start-up warning: no component of this
    /// collector attaches attributes to its status events, so the document
    /// is the same either way.
    pub include_attributes: bool,
}

/// `grpc` of v2.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct V2Grpc {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// Only `tcp`.
    pub transport: String,
    /// The rest of the Go `configgrpc` server keys: accepted with a
    /// start-up warning, no effect.
    #[serde(flatten)]
    pub unused: UnusedGrpcServerKeys,
}

impl Default for V2Grpc {
    fn default() -> Self {
        Self {
            endpoint: "localhost:13132".into(),
            transport: "tcp".into(),
            unused: UnusedGrpcServerKeys::default(),
        }
    }
}
