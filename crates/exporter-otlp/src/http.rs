//! OTLP/HTTP: one attempt at one request (body, headers, what the answer
//! means), shared by `otlphttp` and `multitudes`. Queue, retries and
//! counters are the core exporter helper's.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use otelcol_core::component::{ClientAuthenticator, ComponentError, ComponentId, Host};
use otelcol_core::consumer::{BearerToken, ConsumerError};
use otelcol_core::exporter::{Push, Request};
use otelcol_core::telemetry::{Counter, MetricsRegistry};
use tokio::sync::OnceCell;

use crate::config::{BodyFormat, ClientTls, Compression};
use crate::wire::{
    parse_retry_after, partial_from_json, permanent_kind, read_body, retryable_status, without_url,
    Wire, BODY_SNIPPET, SUCCESS_BODY_MAX,
};

/// How an [`HttpSender`] connects and writes bodies.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// `proto` or `json`.
    pub format: BodyFormat,
    /// Body compression.
    pub compression: Compression,
    /// Static headers.
    pub headers: BTreeMap<String, String>,
    /// TLS settings for `https://` URLs.
    pub tls: ClientTls,
    /// Idle connections are closed after this long (zero: never).
    pub idle_timeout: Duration,
    /// Idle connections kept per host (0: no limit).
    pub max_idle_per_host: usize,
}

/// One OTLP/HTTP destination: the client, the URL, the body format.
pub struct HttpSender {
    id: String,
    client: reqwest::Client,
    url: reqwest::Url,
    shown_url: String,
    options: HttpOptions,
    headers: Vec<(HeaderName, HeaderValue)>,
    partial_rejected: Counter,
}

impl HttpSender {
    /// A sender for exporter `id` to `url` (the signal's full URL).
    pub fn new(
        id: String,
        url: reqwest::Url,
        options: HttpOptions,
        metrics: &MetricsRegistry,
    ) -> Result<Self, String> {
        // rustls is built with the ring provider only; make it the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // No client timeout: the helper bounds each attempt by `timeout`.
        let mut builder = reqwest::Client::builder();
        if !options.idle_timeout.is_zero() {
            builder = builder.pool_idle_timeout(options.idle_timeout);
        }
        if options.max_idle_per_host > 0 {
            builder = builder.pool_max_idle_per_host(options.max_idle_per_host);
        }
        let tls = &options.tls;
        if let Some(ca) = tls.ca()? {
            for cert in reqwest::Certificate::from_pem_bundle(&ca)
                .map_err(|e| format!("tls.ca_file: {e}"))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = tls.identity()? {
            let mut pem = cert;
            pem.push(b'\n');
            pem.extend_from_slice(&key);
            builder = builder.identity(
                reqwest::Identity::from_pem(&pem).map_err(|e| format!("tls.cert_file: {e}"))?,
            );
        }
        if tls.insecure_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        if tls.min_version == "1.3" {
            builder = builder.tls_version_min(reqwest::tls::Version::TLS_1_3);
        }
        if tls.max_version == "1.2" {
            builder = builder.tls_version_max(reqwest::tls::Version::TLS_1_2);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let headers = options
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::try_from(k).ok()?,
                    HeaderValue::try_from(v).ok()?,
                ))
            })
            .collect();
        let partial_rejected = metrics.counter(
            "otelcol_exporter_partial_rejected_items",
            "Items the destination rejected in a partial-success answer.",
            &[("exporter", id.as_str())],
        );
        Ok(Self {
            shown_url: otelcol_core::net::redact_url(url.as_str()),
            id,
            client,
            url,
            options,
            headers,
            partial_rejected,
        })
    }

    /// The URL without secrets, for logs.
    pub fn destination(&self) -> String {
        self.shown_url.clone()
    }

    fn body<T: Wire>(&self, data: &T) -> Result<Bytes, ConsumerError> {
        let raw = match self.options.format {
            BodyFormat::Json => data.to_json().into_bytes(),
            BodyFormat::Proto => prost::Message::encode_to_vec(data),
        };
        let compressed = match self.options.compression {
            Compression::None => return Ok(raw.into()),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&raw).and_then(|_| e.finish())
            }
            Compression::Zstd => zstd::bulk::compress(&raw, 1),
        };
        compressed
            .map(Bytes::from)
            .map_err(|e| ConsumerError::permanent(format!("compressing the body: {e}")))
    }

    /// Sends `request` once with `extra` headers (set after the static
    /// ones, replacing them). `caller` is the request's token, shown
    /// redacted in the log of a refusal.
    pub async fn send<T: Wire>(
        &self,
        request: &Request<T>,
        extra: Vec<(HeaderName, HeaderValue)>,
        caller: Option<&BearerToken>,
    ) -> Result<(), ConsumerError> {
        let body = self.body(&request.data)?;
        let content_type = match self.options.format {
            BodyFormat::Json => "application/json",
            BodyFormat::Proto => "application/x-protobuf",
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        match self.options.compression {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
        }
        .map(|e| headers.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static(e)));
        for (k, v) in self.headers.iter().cloned().chain(extra) {
            headers.insert(k, v);
        }
        let sent = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else {
                    "connection failed"
                };
                return Err(ConsumerError::retryable(format!(
                    "{kind}: {}",
                    without_url(&e)
                )));
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if (200..300).contains(&status) {
            let proto = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-protobuf"));
            let body = read_body(resp, SUCCESS_BODY_MAX).await;
            let partial = if proto {
                T::partial_from_proto(&body)
            } else {
                partial_from_json(&body, T::REJECTED)
            };
            if let Some((rejected, message)) = partial.filter(|(r, m)| *r > 0 || !m.is_empty()) {
                self.partial_rejected.add(rejected);
                tracing::warn!(exporter = %self.id, rejected, items = request.items, message, "the endpoint accepted the batch in part");
            }
            return Ok(());
        }
        let snippet = read_body(resp, BODY_SNIPPET).await;
        if retryable_status(status) {
            return Err(ConsumerError::Retryable {
                message: format!("HTTP {status}: {}", String::from_utf8_lossy(&snippet)),
                retry_after,
            });
        }
        tracing::error!(
            exporter = %self.id,
            url = %self.shown_url,
            status,
            token = %caller.map(BearerToken::redacted).unwrap_or_default(),
            items = request.items,
            idempotency_key = %request.idempotency_key,
            body = %String::from_utf8_lossy(&snippet),
            "the endpoint refused the batch; not retrying"
        );
        Err(ConsumerError::Permanent {
            message: format!("{} answered HTTP {status}", self.shown_url),
            kind: permanent_kind(status),
        })
    }
}

/// The client authenticator an exporter's `auth.authenticator` names,
/// found at start.
#[derive(Default)]
pub struct AuthSlot {
    id: Option<ComponentId>,
    found: OnceCell<Arc<dyn ClientAuthenticator>>,
}

impl AuthSlot {
    /// A slot for extension `id` (none: no authenticator).
    pub fn new(id: Option<ComponentId>) -> Self {
        Self {
            id,
            found: OnceCell::new(),
        }
    }

    /// Finds the extension; fails the start when it is missing or not a
    /// client authenticator.
    pub fn resolve(&self, exporter: &str, host: &Host) -> Result<(), ComponentError> {
        if let Some(id) = &self.id {
            let auth = host
                .client_authenticator(id)
                .map_err(|e| ComponentError::Failed(format!("exporter {exporter}: {e}")))?;
            let _ = self.found.set(auth);
        }
        Ok(())
    }

    /// The headers for a request carrying `caller`'s token.
    pub fn headers(&self, caller: Option<&BearerToken>) -> Vec<(HeaderName, HeaderValue)> {
        self.found
            .get()
            .map(|a| a.headers(caller))
            .unwrap_or_default()
    }
}

/// The `otlphttp` exporter's [`Push`]: the sender plus the client
/// authenticator (which may forward the caller's token).
pub struct OtlpHttpPush {
    sender: HttpSender,
    auth: AuthSlot,
}

impl OtlpHttpPush {
    /// A push through `sender`, with headers from `auth`.
    pub fn new(sender: HttpSender, auth: AuthSlot) -> Self {
        Self { sender, auth }
    }
}

#[async_trait]
impl<T: Wire> Push<T> for OtlpHttpPush {
    async fn push(&self, request: &Request<T>) -> Result<(), ConsumerError> {
        let caller = request.token.as_ref();
        self.sender
            .send(request, self.auth.headers(caller), caller)
            .await
    }

    fn destination(&self) -> String {
        self.sender.destination()
    }

    async fn start(&self, host: &Host) -> Result<(), ComponentError> {
        self.auth.resolve(&self.sender.id, host)
    }
}
