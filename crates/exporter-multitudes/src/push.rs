//! One attempt at one request to the endpoint: whose token it carries and
//! its idempotency key. The request itself (body, answer, retryable
//! statuses, partial success) is the shared OTLP/HTTP sender's
//! ([`otelcol_exporter_otlp::http::HttpSender`]); queue, retries and
//! counters are the core helper's.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use otelcol_core::consumer::{BearerToken, ConsumerError, PermanentKind};
use otelcol_core::exporter::{Push, Request};
use otelcol_core::telemetry::MetricsRegistry;
use otelcol_exporter_otlp::config::{BodyFormat as OtlpBody, Compression as OtlpCompression};
use otelcol_exporter_otlp::http::{HttpOptions, HttpSender};
pub use otelcol_exporter_otlp::wire::Wire;

use crate::config::{BodyFormat, Compression, MultitudesExporterConfig};

/// How often the "no token" warning may repeat.
const NO_TOKEN_WARN_EVERY: Duration = Duration::from_secs(60);

/// Sends requests of one signal to the endpoint.
pub struct MultitudesPush {
    id: String,
    sender: HttpSender,
    max_request_bytes: usize,
    fallback: Option<BearerToken>,
    last_no_token_warning: Mutex<Option<Instant>>,
}

impl MultitudesPush {
    /// A sender to `url` (the signal's full URL) for exporter `id`.
    pub fn new(
        id: String,
        config: MultitudesExporterConfig,
        url: reqwest::Url,
        metrics: &MetricsRegistry,
    ) -> Result<Self, String> {
        let options = HttpOptions {
            format: match config.encoding {
                BodyFormat::Json => OtlpBody::Json,
                BodyFormat::Proto => OtlpBody::Proto,
            },
            compression: match config.compression {
                Compression::None => OtlpCompression::None,
                Compression::Gzip => OtlpCompression::Gzip,
            },
            headers: config.headers.clone(),
            idle_timeout: Duration::from_secs(90),
            ..HttpOptions::default()
        };
        let fallback = Some(config.fallback_token.trim())
            .filter(|t| !t.is_empty())
            .map(BearerToken::new);
        Ok(Self {
            sender: HttpSender::new(id.clone(), url, options, metrics)?,
            id,
            max_request_bytes: config.max_request_bytes,
            fallback,
            last_no_token_warning: Mutex::new(None),
        })
    }

    /// Whether a fallback token is configured.
    pub fn has_fallback(&self) -> bool {
        self.fallback.is_some()
    }

    fn token<'a, T>(&'a self, request: &'a Request<T>) -> Option<&'a BearerToken> {
        request.token.as_ref().or(self.fallback.as_ref())
    }

    fn warn_no_token(&self, items: u64) {
        let mut last = self
            .last_no_token_warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= NO_TOKEN_WARN_EVERY) {
            *last = Some(now);
            tracing::warn!(
                exporter = %self.id,
                items,
                "dropping a batch: the caller sent no bearer token and no fallback_token is configured"
            );
        }
    }
}

#[async_trait]
impl<T: Wire> Push<T> for MultitudesPush {
    fn check(&self, request: &Request<T>) -> Result<(), ConsumerError> {
        if self.token(request).is_some() {
            return Ok(());
        }
        self.warn_no_token(request.items);
        Err(ConsumerError::Permanent {
            message: "no bearer token for this batch and no fallback_token configured".into(),
            kind: PermanentKind::Unauthenticated,
        })
    }

    fn destination(&self) -> String {
        self.sender.destination()
    }

    fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    async fn push(&self, request: &Request<T>) -> Result<(), ConsumerError> {
        let Some(token) = self.token(request) else {
            return <Self as Push<T>>::check(self, request);
        };
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", token.expose()))
            .map_err(|_| ConsumerError::Permanent {
                message: "the bearer token is not valid header text".into(),
                kind: PermanentKind::Unauthenticated,
            })?;
        authorization.set_sensitive(true);
        let key = HeaderValue::try_from(request.idempotency_key.as_str()).map_err(|_| {
            ConsumerError::permanent("the idempotency key is not valid header text")
        })?;
        let extra = vec![
            (http::header::AUTHORIZATION, authorization),
            (HeaderName::from_static("idempotency-key"), key),
        ];
        self.sender.send(request, extra, Some(token)).await
    }
}
