//! `exporters.multitudes`: the Go exporter's keys and defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use otelcol_core::config::{duration, ConfigError};
use otelcol_core::exporter::{QueueConfig, RetryConfig};
use serde::{Deserialize, Serialize};

/// Body format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// OTLP/JSON as the Go collector writes it (`application/json`).
    #[default]
    Json,
    /// OTLP protobuf (`application/x-protobuf`).
    Proto,
}

/// Body compression (`Content-Encoding`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// None.
    #[default]
    None,
    /// `Content-Encoding: gzip`.
    Gzip,
}

/// The exporter's configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MultitudesExporterConfig {
    /// Base URL, e.g. `https://integrations.multitudes.co/ai/otel`; the
    /// signal path is appended to its path, a query string is kept.
    pub endpoint: String,
    /// Token used when the caller sent none.
    pub fallback_token: String,
    /// Bound of one attempt.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Retries (the core exporter helper's `retry_on_failure`).
    pub retry_on_failure: RetryConfig,
    /// The sending queue (the core exporter helper's `sending_queue`).
    pub sending_queue: QueueConfig,
    /// `json` or `proto`.
    pub encoding: BodyFormat,
    /// `none` or `gzip`.
    pub compression: Compression,
    /// Extra static headers.
    pub headers: BTreeMap<String, String>,
    /// Ours: requests whose protobuf encoding is larger are split before
    /// they are queued (0: no limit). Default 4 MiB.
    pub max_request_bytes: usize,
}

impl Default for MultitudesExporterConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            fallback_token: String::new(),
            timeout: Duration::from_secs(30),
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
            encoding: BodyFormat::Json,
            compression: Compression::None,
            headers: BTreeMap::new(),
            max_request_bytes: 4 << 20,
        }
    }
}

/// Headers the exporter sets itself.
const OWN_HEADERS: [&str; 4] = [
    "authorization",
    "content-type",
    "content-encoding",
    "idempotency-key",
];

impl MultitudesExporterConfig {
    /// The full URL for `signal_path` (`/v1/metrics`, `/v1/logs`): the
    /// path's trailing `/` trimmed and any signal path already there
    /// replaced; query kept, fragment dropped.
    pub fn url(&self, signal_path: &str) -> Result<reqwest::Url, ConfigError> {
        let e = self.endpoint.trim();
        let mut url = reqwest::Url::parse(e).map_err(|err| {
            ConfigError::invalid(
                "endpoint",
                format!("`{}` is not a URL: {err}", otelcol_core::net::redact_url(e)),
            )
        })?;
        let mut path = url.path().trim_end_matches('/').to_string();
        for p in ["/v1/metrics", "/v1/logs", "/v1/traces"] {
            if let Some(stripped) = path.strip_suffix(p) {
                path = stripped.to_string();
            }
        }
        url.set_path(&format!("{path}{signal_path}"));
        url.set_fragment(None);
        Ok(url)
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
                format!(
                    "`{}` must start with http:// or https://",
                    otelcol_core::net::redact_url(e)
                ),
            ));
        }
        self.url("/v1/metrics")?;
        if let Some(k) = self
            .headers
            .keys()
            .find(|k| OWN_HEADERS.contains(&k.to_ascii_lowercase().as_str()))
        {
            return Err(ConfigError::invalid(
                format!("headers.{k}"),
                "is set by the exporter itself (the token comes from the caller or fallback_token)",
            ));
        }
        self.sending_queue.validate()?;
        self.retry_on_failure.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(endpoint: &str) -> MultitudesExporterConfig {
        MultitudesExporterConfig {
            endpoint: endpoint.into(),
            ..Default::default()
        }
    }

    /// Issue 14: `…/ingest?api_key=X` became `…/ingest?api_key=X/v1/metrics`.
    #[test]
    fn the_signal_path_goes_on_the_path_and_the_query_is_kept() {
        let url = |e: &str, p: &str| with(e).url(p).unwrap().to_string();
        assert_eq!(
            url("https://h.example/ingest?api_key=X", "/v1/metrics"),
            "https://h.example/ingest/v1/metrics?api_key=X"
        );
        assert_eq!(
            url("https://h.example/ai/otel/", "/v1/logs"),
            "https://h.example/ai/otel/v1/logs"
        );
        assert_eq!(
            url("https://h.example/ai/otel/v1/metrics/", "/v1/logs"),
            "https://h.example/ai/otel/v1/logs"
        );
        assert_eq!(
            url("http://127.0.0.1:9", "/v1/metrics"),
            "http://127.0.0.1:9/v1/metrics"
        );
    }

    #[test]
    fn own_headers_cannot_be_overridden_and_bad_urls_are_named_without_secrets() {
        let mut c = with("https://h.example");
        c.headers.insert("Authorization".into(), "Bearer x".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("headers.Authorization"));
        let e = with("https://u:pw@[bad/x?api_key=K")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(!e.contains("pw") && !e.contains("=K"), "{e}");
    }
}
