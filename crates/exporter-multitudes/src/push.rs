//! One attempt at one request to the endpoint: body, headers, and what
//! the answer means. Queue, retries and counters are the core helper's.

use std::io::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use otelcol_core::consumer::{BearerToken, ConsumerError, PermanentKind};
use otelcol_core::exporter::{Push, Request};
use otelcol_core::pdata::{json, Batchable, Logs, Metrics};
use otelcol_core::telemetry::{Counter, MetricsRegistry};
use prost::Message;

use crate::config::{BodyFormat, Compression, MultitudesExporterConfig};

/// How often the "no token" warning may repeat.
const NO_TOKEN_WARN_EVERY: Duration = Duration::from_secs(60);
/// How much of an error response body is logged.
const BODY_SNIPPET: usize = 1024;
/// How much of a success response body is read for a partial-success answer.
const SUCCESS_BODY_MAX: usize = 4 << 20;

/// What differs between the signals this exporter sends.
pub trait Wire: Batchable {
    /// `/v1/metrics` or `/v1/logs`.
    const PATH: &'static str;
    /// Suffix of the Go counter names.
    const ITEMS: &'static str;
    /// The field of a partial-success answer that counts rejected items.
    const REJECTED: &'static str;
    /// The Go collector's OTLP/JSON.
    fn to_json(&self) -> String;
    /// The (rejected items, error message) of a protobuf export response.
    fn partial_from_proto(body: &[u8]) -> Option<(u64, String)>;
}

/// Whether an export response (`partial_success` in field 1, whose own
/// fields are an integer and a string) holds no protobuf group, which OTLP
/// never uses: prost runs without a recursion limit in this build and skips
/// an unknown group by recursing, so a response of nested groups could
/// exhaust the stack. Only the response and its field 1 are messages.
fn plain_response(body: &[u8]) -> bool {
    fn fields(bytes: &[u8], descend: bool) -> bool {
        let mut at = 0;
        let varint = |at: &mut usize| -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let b = *bytes.get(*at)?;
                *at += 1;
                v |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        };
        while at < bytes.len() {
            let Some(key) = varint(&mut at) else {
                return false;
            };
            match key & 7 {
                0 => {
                    if varint(&mut at).is_none() {
                        return false;
                    }
                }
                1 => at += 8,
                5 => at += 4,
                2 => {
                    let Some(len) = varint(&mut at).and_then(|l| usize::try_from(l).ok()) else {
                        return false;
                    };
                    let Some(inner) = at.checked_add(len).and_then(|end| bytes.get(at..end)) else {
                        return false;
                    };
                    if descend && key >> 3 == 1 && !fields(inner, false) {
                        return false;
                    }
                    at += len;
                }
                _ => return false,
            }
        }
        at == bytes.len()
    }
    fields(body, true)
}

impl Wire for Metrics {
    const PATH: &'static str = "/v1/metrics";
    const ITEMS: &'static str = "metric_points";
    const REJECTED: &'static str = "rejectedDataPoints";
    fn to_json(&self) -> String {
        json::metrics(self)
    }
    fn partial_from_proto(body: &[u8]) -> Option<(u64, String)> {
        use otelcol_core::pdata::proto::collector::metrics::v1::ExportMetricsServiceResponse;
        if !plain_response(body) {
            return None;
        }
        let p = ExportMetricsServiceResponse::decode(body)
            .ok()?
            .partial_success?;
        Some((
            u64::try_from(p.rejected_data_points).unwrap_or(0),
            p.error_message,
        ))
    }
}

impl Wire for Logs {
    const PATH: &'static str = "/v1/logs";
    const ITEMS: &'static str = "log_records";
    const REJECTED: &'static str = "rejectedLogRecords";
    fn to_json(&self) -> String {
        json::logs(self)
    }
    fn partial_from_proto(body: &[u8]) -> Option<(u64, String)> {
        use otelcol_core::pdata::proto::collector::logs::v1::ExportLogsServiceResponse;
        if !plain_response(body) {
            return None;
        }
        let p = ExportLogsServiceResponse::decode(body)
            .ok()?
            .partial_success?;
        Some((
            u64::try_from(p.rejected_log_records).unwrap_or(0),
            p.error_message,
        ))
    }
}

/// Sends requests of one signal to the endpoint.
pub struct MultitudesPush {
    id: String,
    client: reqwest::Client,
    url: reqwest::Url,
    /// `url` without secrets, for logs.
    shown_url: String,
    config: MultitudesExporterConfig,
    fallback: Option<BearerToken>,
    partial_rejected: Counter,
    last_no_token_warning: Mutex<Option<Instant>>,
}

fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn retryable_status(s: u16) -> bool {
    matches!(s, 408 | 429 | 500 | 502 | 503 | 504)
}

fn permanent_kind(s: u16) -> PermanentKind {
    match s {
        400 => PermanentKind::InvalidData,
        401 => PermanentKind::Unauthenticated,
        403 => PermanentKind::PermissionDenied,
        _ => PermanentKind::Other,
    }
}

impl MultitudesPush {
    /// A sender to `url` (the signal's full URL) for exporter `id`.
    pub fn new(
        id: String,
        config: MultitudesExporterConfig,
        url: reqwest::Url,
        metrics: &MetricsRegistry,
    ) -> Result<Self, String> {
        // rustls is built with the ring provider only; make it the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // No client timeout: the helper bounds each attempt by `timeout`.
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let fallback = Some(config.fallback_token.trim())
            .filter(|t| !t.is_empty())
            .map(BearerToken::new);
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
            config,
            fallback,
            partial_rejected,
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

    fn body<T: Wire>(&self, data: &T) -> Result<Bytes, ConsumerError> {
        let raw = match self.config.encoding {
            BodyFormat::Json => data.to_json().into_bytes(),
            BodyFormat::Proto => data.encode_to_vec(),
        };
        match self.config.compression {
            Compression::None => Ok(raw.into()),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&raw)
                    .and_then(|_| e.finish())
                    .map(Bytes::from)
                    .map_err(|e| ConsumerError::permanent(format!("gzip failed: {e}")))
            }
        }
    }

    /// Counts and logs a partial-success answer, JSON or protobuf (as the
    /// response's content type says), whatever its length up to
    /// [`SUCCESS_BODY_MAX`].
    fn note_partial_success<T: Wire>(&self, body: &[u8], proto: bool, items: u64) {
        let found = if proto {
            T::partial_from_proto(body)
        } else {
            partial_from_json(body, T::REJECTED)
        };
        let Some((rejected, message)) = found else {
            return;
        };
        if rejected > 0 || !message.is_empty() {
            self.partial_rejected.add(rejected);
            tracing::warn!(exporter = %self.id, rejected, items, message, "the endpoint accepted the batch in part");
        }
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
        self.shown_url.clone()
    }

    fn max_request_bytes(&self) -> usize {
        self.config.max_request_bytes
    }

    async fn push(&self, request: &Request<T>) -> Result<(), ConsumerError> {
        let Some(token) = self.token(request) else {
            return <Self as Push<T>>::check(self, request);
        };
        let body = self.body(&request.data)?;
        let content_type = match self.config.encoding {
            BodyFormat::Json => "application/json",
            BodyFormat::Proto => "application/x-protobuf",
        };
        let mut req = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            )
            .header("idempotency-key", request.idempotency_key.as_str());
        if self.config.compression == Compression::Gzip {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        for (k, v) in &self.config.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = match req.body(body).send().await {
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
            self.note_partial_success::<T>(&body, proto, request.items);
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
            token = %token,
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

/// A reqwest error's text without its URL (which might one day carry a secret).
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(url) = e.url() {
        msg = msg.replace(url.as_str(), "<endpoint>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// At most `max` bytes of a response body.
async fn read_body(mut resp: reqwest::Response, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(max);
    out
}

/// The (rejected items, error message) of a JSON export response.
fn partial_from_json(body: &[u8], rejected_key: &str) -> Option<(u64, String)> {
    let v = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let p = v.get("partialSuccess").filter(|p| !p.is_null())?;
    let rejected = match p.get(rejected_key) {
        Some(serde_json::Value::String(s)) => s.parse::<u64>().unwrap_or(0),
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    };
    let message = p.get("errorMessage").and_then(|m| m.as_str()).unwrap_or("");
    Some((rejected, message.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_http_date() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        let later = SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(110) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(s));
        }
        for s in [400, 401, 403, 404, 413] {
            assert!(!retryable_status(s));
        }
        assert_eq!(permanent_kind(401), PermanentKind::Unauthenticated);
        assert_eq!(permanent_kind(403), PermanentKind::PermissionDenied);
    }
}

#[cfg(test)]
mod response_tests {
    use super::*;

    #[test]
    fn a_response_with_groups_is_not_decoded() {
        // partial_success {rejected_data_points: 3, error_message: "x"}
        let plain = [0x0a, 0x05, 0x08, 0x03, 0x12, 0x01, b'x'];
        assert_eq!(
            <Metrics as Wire>::partial_from_proto(&plain),
            Some((3, "x".to_string()))
        );
        // The same with a million nested groups in an unknown field of
        // partial_success: refused before prost could recurse into them.
        let mut inner = vec![0x08, 0x03];
        inner.extend(std::iter::repeat_n(0x1b, 1_000_000)); // start group, field 3
        let mut body = vec![0x0a];
        let mut n = inner.len();
        while n >= 0x80 {
            body.push((n as u8) | 0x80);
            n >>= 7;
        }
        body.push(n as u8);
        body.extend_from_slice(&inner);
        assert_eq!(<Metrics as Wire>::partial_from_proto(&body), None);
        assert_eq!(<Logs as Wire>::partial_from_proto(&body), None);
    }
}
