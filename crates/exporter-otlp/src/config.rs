//! `exporters.otlp` and `exporters.otlphttp`: the Go exporters' keys
//! (`configgrpc.ClientConfig` and `confighttp.ClientConfig` with the
//! exporter helper's `timeout`, `sending_queue`, `retry_on_failure`).

use std::collections::BTreeMap;
use std::time::Duration;

use otelcol_core::component::{ComponentId, NoEffectKey};
use otelcol_core::config::{duration, ConfigError};
use otelcol_core::exporter::{QueueConfig, RetryConfig};
use serde::{Deserialize, Serialize};

/// `tls:` of a client: the Go `configtls.ClientConfig` keys.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTls {
    /// Plaintext (gRPC; for HTTP the endpoint's scheme decides).
    pub insecure: bool,
    /// Accept any server certificate (testing only).
    pub insecure_skip_verify: bool,
    /// PEM CA bundle the server's certificate must chain to (added to the
    /// system's roots).
    pub ca_file: String,
    /// The bundle itself, instead of `ca_file`.
    pub ca_pem: String,
    /// Go: also trust the system's CAs. They are always trusted here.
    pub include_system_ca_certs_pool: bool,
    /// Client certificate chain (mutual TLS), with `key_file`.
    pub cert_file: String,
    /// The chain itself.
    pub cert_pem: String,
    /// Client private key.
    pub key_file: String,
    /// The key itself.
    pub key_pem: String,
    /// The name the server's certificate must carry, instead of the
    /// endpoint's host (gRPC).
    pub server_name_override: String,
    /// Lowest TLS version: `1.2` (default) or `1.3` (HTTP).
    pub min_version: String,
    /// Highest TLS version: `1.2` or `1.3` (HTTP).
    pub max_version: String,
    /// Go: cipher suites. No effect: rustls offers its own modern suites.
    pub cipher_suites: Vec<String>,
    /// Go: key-exchange groups. No effect: rustls' defaults.
    pub curve_preferences: Vec<String>,
    /// Go: re-read the client certificate. No effect: read at start.
    #[serde(with = "duration")]
    pub reload_interval: Duration,
    /// Go: a TPM-held key. No effect.
    pub tpm: Option<serde_yaml::Value>,
}

/// A certificate chain and its key, PEM.
pub type PemPair = (Vec<u8>, Vec<u8>);

/// The PEM text of an inline value or a file.
fn pem(inline: &str, file: &str, what: &str) -> Result<Option<Vec<u8>>, String> {
    if !inline.is_empty() {
        return Ok(Some(inline.as_bytes().to_vec()));
    }
    if file.is_empty() {
        return Ok(None);
    }
    std::fs::read(file)
        .map(Some)
        .map_err(|e| format!("tls.{what}: reading `{file}`: {e}"))
}

impl ClientTls {
    /// The CA bundle, if one is given.
    pub fn ca(&self) -> Result<Option<Vec<u8>>, String> {
        pem(&self.ca_pem, &self.ca_file, "ca_file")
    }

    /// The client certificate chain and key (PEM), if both are given.
    pub fn identity(&self) -> Result<Option<PemPair>, String> {
        let cert = pem(&self.cert_pem, &self.cert_file, "cert_file")?;
        let key = pem(&self.key_pem, &self.key_file, "key_file")?;
        match (cert, key) {
            (Some(c), Some(k)) => Ok(Some((c, k))),
            (None, None) => Ok(None),
            _ => Err("tls: cert_file and key_file (or their _pem forms) go together".into()),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("min_version", &self.min_version),
            ("max_version", &self.max_version),
        ] {
            if !["", "1.2", "1.3"].contains(&v.as_str()) {
                return Err(ConfigError::invalid(
                    format!("tls.{key}"),
                    format!("`{v}` is not 1.2 or 1.3 (this build speaks TLS 1.2 and 1.3)"),
                ));
            }
        }
        let cert = !self.cert_pem.is_empty() || !self.cert_file.is_empty();
        let key = !self.key_pem.is_empty() || !self.key_file.is_empty();
        if cert != key {
            return Err(ConfigError::invalid(
                "tls",
                "cert_file and key_file (or their _pem forms) go together",
            ));
        }
        Ok(())
    }

    /// The keys accepted with no effect.
    fn no_effect_keys() -> Vec<NoEffectKey> {
        vec![
            NoEffectKey::new(
                "tls.include_system_ca_certs_pool",
                "the system's CAs are always trusted, with ca_file added",
            ),
            NoEffectKey::new(
                "tls.cipher_suites",
                "rustls offers only its own modern suites",
            ),
            NoEffectKey::new(
                "tls.curve_preferences",
                "rustls' default key-exchange groups",
            ),
            NoEffectKey::new(
                "tls.reload_interval",
                "the client certificate is read at start",
            ),
            NoEffectKey::new(
                "tls.tpm",
                "no TPM support; keys come from key_file or key_pem",
            ),
        ]
    }
}

/// Body compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// None.
    None,
    /// gzip (the Go default).
    #[default]
    Gzip,
    /// zstd.
    Zstd,
}

/// The body format of `otlphttp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// OTLP protobuf (the Go default).
    #[default]
    Proto,
    /// OTLP/JSON.
    Json,
}

/// `auth:` of a client.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientAuth {
    /// A client authenticator extension (`headers_setter`,
    /// `bearertokenauth`) that sets headers on every request.
    pub authenticator: String,
}

impl ClientAuth {
    /// The extension's id, if one is named.
    pub fn id(&self) -> Result<Option<ComponentId>, ConfigError> {
        if self.authenticator.is_empty() {
            return Ok(None);
        }
        self.authenticator
            .parse()
            .map(Some)
            .map_err(|e: otelcol_core::component::IdError| {
                ConfigError::invalid("auth.authenticator", e.to_string())
            })
    }
}

/// `keepalive:` of a gRPC client.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientKeepalive {
    /// Ping after this long without activity (0: no pings).
    #[serde(with = "duration")]
    pub time: Duration,
    /// Close the connection when a ping is not answered this fast.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Ping even with no call in flight.
    pub permit_without_stream: bool,
}

impl Default for ClientKeepalive {
    fn default() -> Self {
        Self {
            time: Duration::ZERO,
            timeout: Duration::from_secs(20),
            permit_without_stream: false,
        }
    }
}

/// `exporters.otlp` (OTLP/gRPC).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpGrpcConfig {
    /// `host:port` (TLS unless `tls.insecure`), or a URL whose scheme
    /// decides (`http://` plaintext, `https://` TLS).
    pub endpoint: String,
    /// `gzip` (default), `zstd` or `none`.
    pub compression: Compression,
    /// TLS.
    pub tls: ClientTls,
    /// HTTP/2 keepalive pings.
    pub keepalive: ClientKeepalive,
    /// Metadata sent with every call.
    pub headers: BTreeMap<String, String>,
    /// A client authenticator extension.
    pub auth: ClientAuth,
    /// Bound of one attempt.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// The sending queue.
    pub sending_queue: QueueConfig,
    /// Retries.
    pub retry_on_failure: RetryConfig,
    /// Go: the gRPC load-balancing policy. No effect (one connection).
    pub balancer_name: String,
    /// Go: the `:authority` of calls. No effect.
    pub authority: String,
    /// Go: block until the connection is ready. No effect: calls wait for
    /// the connection within `timeout`.
    pub wait_for_ready: bool,
    /// Go: socket buffer sizes. No effect.
    pub read_buffer_size: u64,
    /// As `read_buffer_size`.
    pub write_buffer_size: u64,
    /// Go: client middleware extensions. No effect.
    pub middlewares: Vec<serde_yaml::Value>,
}

impl Default for OtlpGrpcConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            compression: Compression::Gzip,
            tls: ClientTls::default(),
            keepalive: ClientKeepalive::default(),
            headers: BTreeMap::new(),
            auth: ClientAuth::default(),
            timeout: Duration::from_secs(5),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
            balancer_name: String::new(),
            authority: String::new(),
            wait_for_ready: false,
            read_buffer_size: 0,
            write_buffer_size: 0,
            middlewares: vec![],
        }
    }
}

/// `exporters.otlphttp` (OTLP/HTTP).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpHttpConfig {
    /// Base URL; `/v1/metrics`, `/v1/logs`, `/v1/traces` are appended.
    pub endpoint: String,
    /// The full URL for traces, instead of `endpoint` + `/v1/traces`.
    pub traces_endpoint: String,
    /// As `traces_endpoint`, for metrics.
    pub metrics_endpoint: String,
    /// As `traces_endpoint`, for logs.
    pub logs_endpoint: String,
    /// `proto` (default) or `json`.
    pub encoding: BodyFormat,
    /// `gzip` (default), `zstd` or `none`.
    pub compression: Compression,
    /// TLS (for `https://` endpoints).
    pub tls: ClientTls,
    /// Headers sent with every request.
    pub headers: BTreeMap<String, String>,
    /// A client authenticator extension.
    pub auth: ClientAuth,
    /// Bound of one attempt.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Idle connections are closed after this long (0: never).
    #[serde(with = "duration")]
    pub idle_conn_timeout: Duration,
    /// Idle connections kept per host.
    pub max_idle_conns_per_host: usize,
    /// The sending queue.
    pub sending_queue: QueueConfig,
    /// Retries.
    pub retry_on_failure: RetryConfig,
    /// Go: a proxy for requests. No effect.
    pub proxy_url: Option<String>,
    /// Go: socket buffer size. No effect.
    pub read_buffer_size: Option<u64>,
    /// Go: socket buffer size. No effect.
    pub write_buffer_size: Option<u64>,
    /// Go: `compression_params.level`. No effect.
    pub compression_params: Option<serde_yaml::Value>,
    /// Go: idle connections over all hosts. No effect.
    pub max_idle_conns: Option<u64>,
    /// Go: connections per host. No effect.
    pub max_conns_per_host: Option<u64>,
    /// Go: no keep-alive. No effect.
    pub disable_keep_alives: Option<bool>,
    /// Go: HTTP/2 health checks. No effect.
    pub http2_read_idle_timeout: Option<String>,
    /// Go: HTTP/2 health checks. No effect.
    pub http2_ping_timeout: Option<String>,
    /// Go: a cookie jar. No effect.
    pub cookies: Option<serde_yaml::Value>,
    /// Go: try HTTP/2 on custom transports. No effect.
    pub force_attempt_http2: Option<bool>,
    /// Go: client middleware extensions. No effect.
    pub middlewares: Option<serde_yaml::Value>,
    /// Go: the profiles signal's URL (no profiles here). No effect.
    pub profiles_endpoint: Option<String>,
}

impl Default for OtlpHttpConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            traces_endpoint: String::new(),
            metrics_endpoint: String::new(),
            logs_endpoint: String::new(),
            encoding: BodyFormat::Proto,
            compression: Compression::Gzip,
            tls: ClientTls::default(),
            headers: BTreeMap::new(),
            auth: ClientAuth::default(),
            timeout: Duration::from_secs(30),
            idle_conn_timeout: Duration::from_secs(90),
            max_idle_conns_per_host: 0,
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
            proxy_url: None,
            read_buffer_size: None,
            write_buffer_size: None,
            compression_params: None,
            max_idle_conns: None,
            max_conns_per_host: None,
            disable_keep_alives: None,
            http2_read_idle_timeout: None,
            http2_ping_timeout: None,
            cookies: None,
            force_attempt_http2: None,
            middlewares: None,
            profiles_endpoint: None,
        }
    }
}

fn check_common(
    tls: &ClientTls,
    queue: &QueueConfig,
    retry: &RetryConfig,
    headers: &BTreeMap<String, String>,
    auth: &ClientAuth,
    timeout: Duration,
) -> Result<(), ConfigError> {
    tls.validate()?;
    queue.validate()?;
    retry.validate()?;
    auth.id()?;
    if timeout.is_zero() {
        return Err(ConfigError::invalid("timeout", "must be above 0"));
    }
    for (k, v) in headers {
        if http::HeaderName::try_from(k.as_str()).is_err()
            || http::HeaderValue::try_from(v).is_err()
        {
            return Err(ConfigError::invalid(
                format!("headers.{k}"),
                "is not a valid header name and value",
            ));
        }
    }
    Ok(())
}

impl OtlpGrpcConfig {
    /// The URL the channel connects to: a scheme given is kept; else
    /// `http://` with `tls.insecure`, `https://` without.
    pub fn url(&self) -> String {
        let e = self.endpoint.trim();
        if e.contains("://") {
            e.to_string()
        } else if self.tls.insecure {
            format!("http://{e}")
        } else {
            format!("https://{e}")
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.endpoint.trim().is_empty() {
            return Err(ConfigError::invalid("endpoint", "is required (host:port)"));
        }
        let url = self.url();
        url.parse::<http::Uri>().map_err(|e| {
            ConfigError::invalid(
                "endpoint",
                format!("`{}` is not a host:port or URL: {e}", self.endpoint),
            )
        })?;
        check_common(
            &self.tls,
            &self.sending_queue,
            &self.retry_on_failure,
            &self.headers,
            &self.auth,
            self.timeout,
        )
    }

    /// The keys accepted with no effect.
    pub fn no_effect_keys() -> Vec<NoEffectKey> {
        let mut keys = ClientTls::no_effect_keys();
        keys.extend([
            NoEffectKey::new("balancer_name", "one connection per exporter; the loadbalancing exporter spreads data over backends"),
            NoEffectKey::new("authority", "calls carry the endpoint's host"),
            NoEffectKey::new("wait_for_ready", "every call waits for the connection within timeout"),
            NoEffectKey::new("read_buffer_size", "the HTTP/2 stack sizes its buffers itself"),
            NoEffectKey::new("write_buffer_size", "the HTTP/2 stack sizes its buffers itself"),
            NoEffectKey::new("middlewares", "this build has no middleware extension types"),
            NoEffectKey::new("tls.min_version", "the gRPC client negotiates TLS 1.2 or 1.3"),
            NoEffectKey::new("tls.max_version", "the gRPC client negotiates TLS 1.2 or 1.3"),
        ]);
        keys.extend(otelcol_core::exporter::QueueBatchConfig::no_effect_keys());
        keys
    }
}

impl OtlpHttpConfig {
    /// The URL of a signal: its own key when set, else `endpoint` with
    /// `path` (`/v1/metrics`) appended to its path.
    pub fn url(&self, path: &str) -> Result<reqwest::Url, ConfigError> {
        let (key, own) = match path {
            "/v1/metrics" => ("metrics_endpoint", &self.metrics_endpoint),
            "/v1/logs" => ("logs_endpoint", &self.logs_endpoint),
            _ => ("traces_endpoint", &self.traces_endpoint),
        };
        let parse = |key: &str, text: &str| {
            reqwest::Url::parse(text.trim()).map_err(|e| {
                ConfigError::invalid(
                    key,
                    format!(
                        "`{}` is not a URL: {e}",
                        otelcol_core::net::redact_url(text)
                    ),
                )
            })
        };
        if !own.trim().is_empty() {
            return parse(key, own);
        }
        let mut url = parse("endpoint", &self.endpoint)?;
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}{path}"));
        Ok(url)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let signals = [
            &self.metrics_endpoint,
            &self.logs_endpoint,
            &self.traces_endpoint,
        ];
        if self.endpoint.trim().is_empty() && signals.iter().all(|e| e.trim().is_empty()) {
            return Err(ConfigError::invalid(
                "endpoint",
                "is required (or each signal's *_endpoint)",
            ));
        }
        for path in ["/v1/metrics", "/v1/logs", "/v1/traces"] {
            let own = match path {
                "/v1/metrics" => &self.metrics_endpoint,
                "/v1/logs" => &self.logs_endpoint,
                _ => &self.traces_endpoint,
            };
            if self.endpoint.trim().is_empty() && own.trim().is_empty() {
                continue;
            }
            let url = self.url(path)?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    "endpoint",
                    format!(
                        "`{}` must start with http:// or https://",
                        otelcol_core::net::redact_url(url.as_str())
                    ),
                ));
            }
        }
        check_common(
            &self.tls,
            &self.sending_queue,
            &self.retry_on_failure,
            &self.headers,
            &self.auth,
            self.timeout,
        )
    }

    /// The keys accepted with no effect.
    pub fn no_effect_keys() -> Vec<NoEffectKey> {
        let mut keys = ClientTls::no_effect_keys();
        keys.push(NoEffectKey::new(
            "tls.insecure",
            "for HTTP the endpoint's scheme decides: http:// is plaintext",
        ));
        keys.push(NoEffectKey::new(
            "tls.server_name_override",
            "the HTTP client checks the endpoint's host name",
        ));
        for k in [
            "proxy_url",
            "read_buffer_size",
            "write_buffer_size",
            "compression_params",
            "max_idle_conns",
            "max_conns_per_host",
            "disable_keep_alives",
            "http2_read_idle_timeout",
            "http2_ping_timeout",
            "cookies",
            "force_attempt_http2",
            "middlewares",
            "profiles_endpoint",
        ] {
            keys.push(NoEffectKey::new(
                k,
                "not a setting of this build's HTTP client (see docs/compatibility.md)",
            ));
        }
        keys.extend(otelcol_core::exporter::QueueBatchConfig::no_effect_keys());
        keys
    }
}
