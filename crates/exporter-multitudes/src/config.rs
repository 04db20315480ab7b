//! `exporters.multitudes`: the Go exporter's keys and defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use otelcol_core::config::{duration, ConfigError};
use serde::{Deserialize, Serialize};

/// Body encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// OTLP/JSON as the Go collector writes it (`application/json`).
    #[default]
    Json,
    /// OTLP protobuf (`application/x-protobuf`).
    Proto,
}

/// Body compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// None.
    #[default]
    None,
    /// `Content-Encoding: gzip`.
    Gzip,
}

/// `retry_on_failure`: exponential backoff with jitter.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retry at all.
    pub enabled: bool,
    /// First wait.
    #[serde(with = "duration")]
    pub initial_interval: Duration,
    /// Longest wait.
    #[serde(with = "duration")]
    pub max_interval: Duration,
    /// Give up after this long (0: never).
    #[serde(with = "duration")]
    pub max_elapsed_time: Duration,
    /// Growth of the wait per attempt.
    pub multiplier: f64,
    /// Jitter: the wait is drawn from `[w(1-r), w(1+r)]`.
    pub randomization_factor: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

/// `sending_queue`: batches wait here for `num_consumers` senders.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Queue at all (otherwise the upstream waits for each send).
    pub enabled: bool,
    /// Batches held at most; a full queue refuses with a retryable error.
    pub queue_size: usize,
    /// Concurrent senders.
    pub num_consumers: usize,
    /// A storage extension for a persistent queue (not available: must be unset).
    pub storage: Option<String>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            queue_size: 1000,
            num_consumers: 10,
            storage: None,
        }
    }
}

/// The exporter's configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MultitudesExporterConfig {
    /// Base URL, e.g. `https://integrations.multitudes.co/ai/otel`.
    pub endpoint: String,
    /// Token used when the caller sent none.
    pub fallback_token: String,
    /// Per-attempt timeout.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Retries.
    pub retry_on_failure: RetryConfig,
    /// The in-memory queue.
    pub sending_queue: QueueConfig,
    /// `json` or `proto`.
    pub encoding: Encoding,
    /// `none` or `gzip`.
    pub compression: Compression,
    /// Extra static headers.
    pub headers: BTreeMap<String, String>,
}

impl Default for MultitudesExporterConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            fallback_token: String::new(),
            timeout: Duration::from_secs(30),
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
            encoding: Encoding::Json,
            compression: Compression::None,
            headers: BTreeMap::new(),
        }
    }
}

impl MultitudesExporterConfig {
    /// The full URL for `signal_path` (`/v1/metrics`, `/v1/logs`): trailing
    /// `/` trimmed, any signal path already there replaced.
    pub fn url(&self, signal_path: &str) -> String {
        let mut base = self.endpoint.trim().trim_end_matches('/');
        for p in ["/v1/metrics", "/v1/logs", "/v1/traces"] {
            if let Some(stripped) = base.strip_suffix(p) {
                base = stripped;
            }
        }
        format!("{base}{signal_path}")
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = self.endpoint.trim();
        if e.is_empty() {
            return Err(ConfigError::invalid(
                "endpoint",
                "is required (e.g. ${env:MULTITUDES_INTEGRATION_ENDPOINT})",
            ));
        }
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "endpoint",
                format!("`{e}` must start with http:// or https://"),
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid("timeout", "must be above 0"));
        }
        let q = &self.sending_queue;
        if q.enabled && (q.queue_size == 0 || q.num_consumers == 0) {
            return Err(ConfigError::invalid(
                "sending_queue",
                "queue_size and num_consumers must be above 0",
            ));
        }
        if q.storage.is_some() {
            return Err(ConfigError::invalid(
                "sending_queue.storage",
                "persistent queues are not available in this build; remove the key to use the in-memory queue",
            ));
        }
        let r = &self.retry_on_failure;
        if r.multiplier < 1.0 || !(0.0..=1.0).contains(&r.randomization_factor) {
            return Err(ConfigError::invalid(
                "retry_on_failure",
                "multiplier must be >= 1 and randomization_factor within [0, 1]",
            ));
        }
        Ok(())
    }
}
