//! Go server keys that a component accepts with no effect, in one place, so
//! every component that embeds the Go collector's `confighttp` or
//! `configgrpc` server block for an endpoint of its own (health, zpages)
//! accepts the same keys and warns about them the same way.
//!
//! Flatten the struct into the component's config (`#[serde(flatten)]`)
//! and return [`http_server_no_effect`] / [`grpc_server_no_effect`] from the
//! factory's `no_effect_keys`.

use serde::{Deserialize, Serialize};

use super::RawConfig;
use crate::component::NoEffectKey;

/// The keys of the Go `confighttp.ServerConfig` besides `endpoint`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct UnusedHttpServerKeys {
    /// `transport` (Go: tcp or unix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<RawConfig>,
    /// `tls` (configtls.ServerConfig).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawConfig>,
    /// `cors`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<RawConfig>,
    /// `auth`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<RawConfig>,
    /// `max_request_body_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_body_size: Option<RawConfig>,
    /// `include_metadata`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_metadata: Option<RawConfig>,
    /// `response_headers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<RawConfig>,
    /// `compression_algorithms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_algorithms: Option<RawConfig>,
    /// `read_timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<RawConfig>,
    /// `read_header_timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_header_timeout: Option<RawConfig>,
    /// `write_timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_timeout: Option<RawConfig>,
    /// `idle_timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<RawConfig>,
    /// `keep_alives_enabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alives_enabled: Option<RawConfig>,
    /// `middlewares`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub middlewares: Option<RawConfig>,
}

/// The keys of [`UnusedHttpServerKeys`].
pub const HTTP_SERVER_KEYS: [&str; 14] = [
    "transport",
    "tls",
    "cors",
    "auth",
    "max_request_body_size",
    "include_metadata",
    "response_headers",
    "compression_algorithms",
    "read_timeout",
    "read_header_timeout",
    "write_timeout",
    "idle_timeout",
    "keep_alives_enabled",
    "middlewares",
];

/// The keys of the Go `configgrpc.ServerConfig` besides `endpoint` and
/// `transport`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct UnusedGrpcServerKeys {
    /// `tls` (configtls.ServerConfig).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawConfig>,
    /// `max_recv_msg_size_mib`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_recv_msg_size_mib: Option<RawConfig>,
    /// `max_concurrent_streams`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<RawConfig>,
    /// `read_buffer_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_buffer_size: Option<RawConfig>,
    /// `write_buffer_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_buffer_size: Option<RawConfig>,
    /// `keepalive`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<RawConfig>,
    /// `auth`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<RawConfig>,
    /// `include_metadata`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_metadata: Option<RawConfig>,
    /// `middlewares`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub middlewares: Option<RawConfig>,
}

/// The keys of [`UnusedGrpcServerKeys`].
pub const GRPC_SERVER_KEYS: [&str; 9] = [
    "tls",
    "max_recv_msg_size_mib",
    "max_concurrent_streams",
    "read_buffer_size",
    "write_buffer_size",
    "keepalive",
    "auth",
    "include_metadata",
    "middlewares",
];

fn under(prefix: &str, keys: &[&str], why: &'static str) -> Vec<NoEffectKey> {
    keys.iter()
        .map(|k| NoEffectKey::new(format!("{prefix}{k}"), why))
        .collect()
}

/// [`UnusedHttpServerKeys`] at `prefix` (`""` or `"http."`) as no-effect keys.
pub fn http_server_no_effect(prefix: &str, why: &'static str) -> Vec<NoEffectKey> {
    under(prefix, &HTTP_SERVER_KEYS, why)
}

/// [`UnusedGrpcServerKeys`] at `prefix` (`"grpc."`) as no-effect keys.
pub fn grpc_server_no_effect(prefix: &str, why: &'static str) -> Vec<NoEffectKey> {
    under(prefix, &GRPC_SERVER_KEYS, why)
}
