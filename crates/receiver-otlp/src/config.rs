//! The `otlp` receiver's config: the Go receiver's keys and defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use otelcol_core::config::duration;
use otelcol_core::config::{ConfigError, RawConfig};
use otelcol_core::tls::TlsSettings;

/// `receivers.otlp`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// Which transports run. A protocol listed with no settings (`grpc:`)
    /// runs with its defaults; one not listed does not run.
    pub protocols: Protocols,
}

/// `protocols`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Protocols {
    /// OTLP/gRPC.
    #[serde(deserialize_with = "present_means_enabled")]
    pub grpc: Option<GrpcConfig>,
    /// OTLP/HTTP.
    #[serde(deserialize_with = "present_means_enabled")]
    pub http: Option<HttpConfig>,
}

fn present_means_enabled<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// `auth`: the authenticator extension that checks each request.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Id of an extension listed in `service.extensions`.
    pub authenticator: String,
    /// Go (HTTP only): query parameters handed to the authenticator.
    /// Accepted with a start-up warning: the authenticators here read
    /// headers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_params: Option<Vec<String>>,
}

/// `protocols.grpc`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// Only `tcp` is supported.
    pub transport: String,
    /// Largest accepted message, in MiB, after decompression.
    pub max_recv_msg_size_mib: u64,
    /// Concurrent calls per HTTP/2 connection. Go's default is unlimited;
    /// ours is 100, so that one connection cannot hold more than
    /// 100 × `max_recv_msg_size_mib` of messages being decoded.
    pub max_concurrent_streams: u32,
    /// Not a Go key: the most bytes of messages (as received, plus as
    /// decompressed) held at once by calls being read, decoded or handed
    /// to the pipeline, over every connection. A call that would go past it
    /// is refused with `UNAVAILABLE` and retry info (1 s), so many
    /// connections cannot take memory faster than `memory_limiter` can see
    /// it. At least `max_recv_msg_size_mib`; default 64 MiB, or
    /// `max_recv_msg_size_mib` when that is larger.
    pub max_inflight_bytes: Option<u64>,
    /// Accepted with a start-up warning; no effect (tonic sizes its
    /// connection buffers itself).
    pub read_buffer_size: Option<u64>,
    /// Accepted with a start-up warning; no effect (as `read_buffer_size`).
    pub write_buffer_size: Option<u64>,
    /// Connection lifetime and liveness, with the Go keys.
    pub keepalive: KeepaliveConfig,
    /// Keep the request's metadata in the batch context.
    pub include_metadata: bool,
    /// Authenticate requests with this extension.
    pub auth: Option<AuthConfig>,
    /// Serve over TLS.
    pub tls: Option<TlsSettings>,
    /// Go: middleware extensions. Accepted with a start-up warning: this
    /// build has no middleware extension types.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub middlewares: Option<RawConfig>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            endpoint: "localhost:4317".into(),
            transport: "tcp".into(),
            max_recv_msg_size_mib: 4,
            max_concurrent_streams: 100,
            max_inflight_bytes: None,
            read_buffer_size: None,
            write_buffer_size: None,
            keepalive: KeepaliveConfig::default(),
            include_metadata: false,
            auth: None,
            tls: None,
            middlewares: None,
        }
    }
}

/// `protocols.grpc.keepalive` (Go `configgrpc.KeepaliveServerConfig`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KeepaliveConfig {
    /// How long connections live and how dead ones are found.
    pub server_parameters: ServerParameters,
    /// Go: how often clients may ping. Accepted with a start-up warning:
    /// this server answers client pings without policing their rate.
    pub enforcement_policy: Option<EnforcementPolicy>,
}

/// `keepalive.server_parameters`. A zero duration means "never", as in Go.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerParameters {
    /// A connection with no call in flight for this long is closed.
    /// Go's default is never; ours is 5m, so connections that clients
    /// open and leave (10,000 cost 133 MiB) do not accumulate.
    #[serde(with = "duration")]
    pub max_connection_idle: Duration,
    /// A connection older than this is told to go away (GOAWAY), so
    /// clients reconnect and spread over replicas. Default never.
    #[serde(with = "duration")]
    pub max_connection_age: Duration,
    /// After `max_connection_age`, how long calls in flight may finish
    /// before the connection is closed. Default: until they finish.
    #[serde(with = "duration")]
    pub max_connection_age_grace: Duration,
    /// The server pings a connection quiet for this long. Default 2h.
    #[serde(with = "duration")]
    pub time: Duration,
    /// A ping not answered within this closes the connection. Default 20s.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for ServerParameters {
    fn default() -> Self {
        Self {
            max_connection_idle: Duration::from_secs(300),
            max_connection_age: Duration::ZERO,
            max_connection_age_grace: Duration::ZERO,
            time: Duration::from_secs(2 * 3600),
            timeout: Duration::from_secs(20),
        }
    }
}

/// `max_inflight_bytes` when not set: 64 MiB, or the largest request when
/// that is larger.
const DEFAULT_INFLIGHT_BYTES: u64 = 64 * 1024 * 1024;

impl GrpcConfig {
    /// `max_recv_msg_size_mib` in bytes.
    pub fn max_message_bytes(&self) -> u64 {
        self.max_recv_msg_size_mib.saturating_mul(1024 * 1024)
    }

    /// The in-flight budget in bytes (`max_inflight_bytes` or its default).
    pub fn inflight_bytes(&self) -> u64 {
        self.max_inflight_bytes
            .unwrap_or_else(|| DEFAULT_INFLIGHT_BYTES.max(self.max_message_bytes()))
    }
}

impl HttpConfig {
    /// The in-flight budget in bytes (`max_inflight_bytes` or its default).
    pub fn inflight_bytes(&self) -> u64 {
        self.max_inflight_bytes
            .unwrap_or_else(|| DEFAULT_INFLIGHT_BYTES.max(self.max_request_body_size))
    }
}

/// `keepalive.enforcement_policy` (see [`KeepaliveConfig`]).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EnforcementPolicy {
    /// Go: the shortest interval between client pings.
    #[serde(with = "duration")]
    pub min_time: Duration,
    /// Go: whether clients may ping with no call in flight.
    pub permit_without_stream: bool,
}

impl Default for EnforcementPolicy {
    fn default() -> Self {
        Self {
            min_time: Duration::from_secs(300),
            permit_without_stream: false,
        }
    }
}

/// `protocols.http`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// Only `tcp` is supported.
    pub transport: String,
    /// Path for traces.
    pub traces_url_path: String,
    /// Path for metrics.
    pub metrics_url_path: String,
    /// Path for logs.
    pub logs_url_path: String,
    /// Largest accepted body in bytes, checked on the wire and again after decompression.
    pub max_request_body_size: u64,
    /// Not a Go key: the most bytes of request bodies (as read, plus as
    /// decompressed) held at once by requests being read, decoded or handed
    /// to the pipeline. A request that would go past it is refused with 503
    /// and `Retry-After`, so a burst of large requests cannot take memory
    /// faster than `memory_limiter` can see it. At least
    /// `max_request_body_size`; default 64 MiB, or `max_request_body_size`
    /// when that is larger (a Go config that raises it runs unchanged).
    pub max_inflight_bytes: Option<u64>,
    /// Keep the request's headers in the batch context.
    pub include_metadata: bool,
    /// Authenticate requests with this extension.
    pub auth: Option<AuthConfig>,
    /// Serve over TLS.
    pub tls: Option<TlsSettings>,
    /// How long a client may take to send its headers.
    #[serde(with = "duration")]
    pub read_header_timeout: Duration,
    /// How long a client may take to send the whole body.
    #[serde(with = "duration")]
    pub read_timeout: Duration,
    /// Accepted with a start-up warning; no effect (a response is written
    /// once the pipeline has answered: cutting a request off before that
    /// would make its sender resend data the pipeline may hold).
    pub write_timeout: Option<String>,
    /// Accepted with a start-up warning; no effect (a kept-alive
    /// connection waiting for its next request is bounded by
    /// `read_header_timeout`).
    pub idle_timeout: Option<String>,
    /// `false`: every response closes its connection (Go's
    /// `keep_alives_enabled`); default on.
    pub keep_alives_enabled: Option<bool>,
    /// Go: middleware extensions. Accepted with a start-up warning: this
    /// build has no middleware extension types.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub middlewares: Option<RawConfig>,
    /// CORS for browser-based senders (Go keys; off without
    /// `allowed_origins`).
    pub cors: Option<crate::cors::CorsConfig>,
    /// Headers added to every response.
    pub response_headers: BTreeMap<String, String>,
    /// `Content-Encoding`s accepted (default: all supported).
    pub compression_algorithms: Option<Vec<String>>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            endpoint: "localhost:4318".into(),
            transport: "tcp".into(),
            traces_url_path: "/v1/traces".into(),
            metrics_url_path: "/v1/metrics".into(),
            logs_url_path: "/v1/logs".into(),
            max_request_body_size: 20 * 1024 * 1024,
            max_inflight_bytes: None,
            include_metadata: false,
            auth: None,
            tls: None,
            read_header_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            write_timeout: None,
            idle_timeout: None,
            keep_alives_enabled: None,
            middlewares: None,
            cors: None,
            response_headers: BTreeMap::new(),
            compression_algorithms: None,
        }
    }
}

impl OtlpReceiverConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.protocols;
        if p.grpc.is_none() && p.http.is_none() {
            return Err(ConfigError::invalid(
                "protocols",
                "must specify at least one protocol (grpc or http)",
            ));
        }
        if let Some(g) = &p.grpc {
            if g.transport != "tcp" {
                return Err(ConfigError::invalid(
                    "protocols.grpc.transport",
                    format!(
                        "unsupported transport `{}`; only `tcp` is available",
                        g.transport
                    ),
                ));
            }
            if g.max_concurrent_streams == 0 {
                return Err(ConfigError::invalid(
                    "protocols.grpc.max_concurrent_streams",
                    "must be at least 1",
                ));
            }
            if g.max_recv_msg_size_mib == 0 {
                return Err(ConfigError::invalid(
                    "protocols.grpc.max_recv_msg_size_mib",
                    "must be at least 1",
                ));
            }
            let largest = g.max_message_bytes();
            match g.max_inflight_bytes {
                Some(n) if n < largest => {
                    return Err(ConfigError::invalid(
                        "protocols.grpc.max_inflight_bytes",
                        format!(
                            "{n} is below max_recv_msg_size_mib ({largest} bytes): a message of the largest size could never be read"
                        ),
                    ))
                }
                _ => {}
            }
        }
        if let Some(h) = &p.http {
            if h.transport != "tcp" {
                return Err(ConfigError::invalid(
                    "protocols.http.transport",
                    format!(
                        "unsupported transport `{}`; only `tcp` is available",
                        h.transport
                    ),
                ));
            }
            for (key, path) in [
                ("traces_url_path", &h.traces_url_path),
                ("metrics_url_path", &h.metrics_url_path),
                ("logs_url_path", &h.logs_url_path),
            ] {
                if !path.starts_with('/') {
                    return Err(ConfigError::invalid(
                        format!("protocols.http.{key}"),
                        format!("`{path}` must start with `/`"),
                    ));
                }
            }
            if h.max_request_body_size == 0 {
                return Err(ConfigError::invalid(
                    "protocols.http.max_request_body_size",
                    "must be above 0",
                ));
            }
            match h.max_inflight_bytes {
                Some(n) if n < h.max_request_body_size => {
                    return Err(ConfigError::invalid(
                        "protocols.http.max_inflight_bytes",
                        format!(
                            "{n} is below max_request_body_size ({}): a request of the largest size could never be read",
                            h.max_request_body_size
                        ),
                    ))
                }
                _ => {}
            }
            if let Some(list) = &h.compression_algorithms {
                for a in list {
                    if crate::decode::Encoding::parse(a).is_none() {
                        return Err(ConfigError::invalid(
                            "protocols.http.compression_algorithms",
                            format!("unsupported algorithm `{a}`"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> OtlpReceiverConfig {
        let raw: RawConfig = serde_yaml::from_str(yaml).unwrap();
        otelcol_core::config::decode(&raw).unwrap()
    }

    /// A Go config that raises a size limit past the default budget runs
    /// unchanged (the budget follows); a budget set below a limit is
    /// refused with both figures.
    #[test]
    fn the_inflight_budget_follows_the_size_limits_unless_set() {
        let c = config(
            "protocols: {http: {max_request_body_size: 104857600}, grpc: {max_recv_msg_size_mib: 100}}",
        );
        c.validate().unwrap();
        let p = &c.protocols;
        assert_eq!(p.http.as_ref().unwrap().inflight_bytes(), 104_857_600);
        assert_eq!(p.grpc.as_ref().unwrap().inflight_bytes(), 104_857_600);
        let c = config("protocols: {http: {}, grpc: {}}");
        assert_eq!(c.protocols.http.unwrap().inflight_bytes(), 64 << 20);
        assert_eq!(c.protocols.grpc.unwrap().inflight_bytes(), 64 << 20);
        let c =
            config("protocols: {grpc: {max_recv_msg_size_mib: 8, max_inflight_bytes: 4194304}}");
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "protocols.grpc.max_inflight_bytes: 4194304 is below max_recv_msg_size_mib (8388608 bytes): a message of the largest size could never be read"
        );
        let c =
            config("protocols: {http: {max_request_body_size: 2048, max_inflight_bytes: 1024}}");
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "protocols.http.max_inflight_bytes: 1024 is below max_request_body_size (2048): a request of the largest size could never be read"
        );
    }
}
