//! One batch to the endpoint: encoding, the bearer token, retries.

use std::io::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use otelcol_core::consumer::{Batch, BearerToken, ConsumerError, PermanentKind};
use otelcol_core::pdata::{json, Logs, Metrics, Payload};
use otelcol_core::telemetry::{Counter, Gauge, MetricsRegistry};
use prost::Message;

use crate::config::{Compression, Encoding, MultitudesExporterConfig};

/// How often the "no token" warning may repeat.
const NO_TOKEN_WARN_EVERY: Duration = Duration::from_secs(60);
/// How much of an error response body is logged.
const BODY_SNIPPET: usize = 1024;
/// How much of a success response body is read for a partial-success answer.
const SUCCESS_BODY_MAX: usize = 4 << 20;

/// What differs between the signals this exporter sends.
pub trait Wire: Payload + Message + Default {
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

/// The exporter's self-metrics, with the Go collector's names.
pub(crate) struct Counters {
    pub sent: Counter,
    pub send_failed: Counter,
    pub enqueue_failed: Counter,
    pub partial_rejected: Counter,
    pub queue_size: Gauge,
    pub queue_capacity: Gauge,
}

impl Counters {
    pub fn new(m: &MetricsRegistry, id: &str, items: &'static str) -> Self {
        let l = [("exporter", id)];
        let (sent, failed, enqueue): (&'static str, &'static str, &'static str) = match items {
            "metric_points" => (
                "otelcol_exporter_sent_metric_points",
                "otelcol_exporter_send_failed_metric_points",
                "otelcol_exporter_enqueue_failed_metric_points",
            ),
            _ => (
                "otelcol_exporter_sent_log_records",
                "otelcol_exporter_send_failed_log_records",
                "otelcol_exporter_enqueue_failed_log_records",
            ),
        };
        let data_type = if items == "metric_points" {
            "metrics"
        } else {
            "logs"
        };
        let q = [("exporter", id), ("data_type", data_type)];
        Self {
            sent: m.counter(sent, "Items successfully sent to the destination.", &l),
            send_failed: m.counter(
                failed,
                "Items that failed to be sent to the destination (logged).",
                &l,
            ),
            enqueue_failed: m.counter(
                enqueue,
                "Items that could not be added to the sending queue.",
                &l,
            ),
            partial_rejected: m.counter(
                "otelcol_exporter_partial_rejected_items",
                "Items the destination rejected in a partial-success answer.",
                &l,
            ),
            queue_size: m.gauge(
                "otelcol_exporter_queue_size",
                "Batches in the sending queue.",
                &q,
            ),
            queue_capacity: m.gauge(
                "otelcol_exporter_queue_capacity",
                "Capacity of the sending queue, in batches.",
                &q,
            ),
        }
    }
}

/// Sends batches of one signal.
pub(crate) struct Sender {
    pub id: String,
    client: reqwest::Client,
    url: String,
    config: MultitudesExporterConfig,
    fallback: Option<BearerToken>,
    pub counters: Counters,
    last_no_token_warning: Mutex<Option<Instant>>,
    seed: Mutex<u64>,
}

enum Attempt {
    Done,
    Retry {
        why: String,
        after: Option<Duration>,
    },
    Fail(ConsumerError),
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

impl Sender {
    pub fn new(
        id: String,
        config: MultitudesExporterConfig,
        url: String,
        counters: Counters,
    ) -> Result<Self, String> {
        // rustls is built with the ring provider only; make it the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let fallback = Some(config.fallback_token.trim())
            .filter(|t| !t.is_empty())
            .map(BearerToken::new);
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Ok(Self {
            id,
            client,
            url,
            config,
            fallback,
            counters,
            last_no_token_warning: Mutex::new(None),
            seed: Mutex::new(seed),
        })
    }

    /// Whether a fallback token is configured.
    pub fn has_fallback(&self) -> bool {
        self.fallback.is_some()
    }

    fn jitter(&self) -> f64 {
        let mut s = self.seed.lock().unwrap_or_else(PoisonError::into_inner);
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 11) as f64 / (1u64 << 53) as f64
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let r = &self.config.retry_on_failure;
        let base = r.initial_interval.as_secs_f64() * r.multiplier.powi(attempt as i32);
        let base = base.min(r.max_interval.as_secs_f64());
        let spread = base * r.randomization_factor;
        Duration::from_secs_f64((base - spread + 2.0 * spread * self.jitter()).max(0.0))
    }

    fn body<T: Wire>(&self, data: &T) -> Result<Bytes, ConsumerError> {
        let raw = match self.config.encoding {
            Encoding::Json => data.to_json().into_bytes(),
            Encoding::Proto => data.encode_to_vec(),
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

    async fn attempt<T: Wire>(&self, body: Bytes, token: &BearerToken, items: u64) -> Attempt {
        let content_type = match self.config.encoding {
            Encoding::Json => "application/json",
            Encoding::Proto => "application/x-protobuf",
        };
        let mut req = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            );
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
                return Attempt::Retry {
                    why: format!("{kind}: {}", without_url(&e)),
                    after: None,
                };
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
            self.note_partial_success::<T>(&body, proto, items);
            return Attempt::Done;
        }
        let snippet = read_body(resp, BODY_SNIPPET).await;
        if retryable_status(status) {
            return Attempt::Retry {
                why: format!("HTTP {status}: {}", String::from_utf8_lossy(&snippet)),
                after: retry_after,
            };
        }
        tracing::error!(
            exporter = %self.id,
            url = %self.url,
            status,
            token = %token,
            items,
            body = %String::from_utf8_lossy(&snippet),
            "the endpoint refused the batch; not retrying"
        );
        Attempt::Fail(ConsumerError::Permanent {
            message: format!("{} answered HTTP {status}", self.url),
            kind: permanent_kind(status),
        })
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
            self.counters.partial_rejected.add(rejected);
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

    /// Sends one batch, retrying as configured. Every failure is counted and logged.
    pub async fn send<T: Wire>(&self, batch: &Batch<T>) -> Result<(), ConsumerError> {
        let items = batch.data.item_count() as u64;
        if items == 0 {
            return Ok(());
        }
        let Some(token) = batch
            .context
            .bearer_token()
            .or(self.fallback.as_ref())
            .cloned()
        else {
            self.counters.send_failed.add(items);
            self.warn_no_token(items);
            return Err(ConsumerError::Permanent {
                message: "no bearer token for this batch and no fallback_token configured".into(),
                kind: PermanentKind::Unauthenticated,
            });
        };
        let body = self.body(&batch.data)?;
        let started = Instant::now();
        let retry = &self.config.retry_on_failure;
        let mut attempt = 0u32;
        loop {
            let (why, after) = match self.attempt::<T>(body.clone(), &token, items).await {
                Attempt::Done => {
                    self.counters.sent.add(items);
                    return Ok(());
                }
                Attempt::Fail(e) => {
                    self.counters.send_failed.add(items);
                    return Err(e);
                }
                Attempt::Retry { why, after } => (why, after),
            };
            let wait = after.unwrap_or_else(|| self.backoff(attempt));
            attempt += 1;
            let out_of_time = !retry.max_elapsed_time.is_zero()
                && started.elapsed() + wait > retry.max_elapsed_time;
            if !retry.enabled || out_of_time {
                // Not counted as failed here: the refusal is retryable, so
                // the caller still holds the batch (a queue worker counts
                // the drop, see `lib.rs`).
                tracing::warn!(
                    exporter = %self.id,
                    url = %self.url,
                    token = %token,
                    items,
                    attempts = attempt,
                    error = %why,
                    "giving up retrying a batch; handing the refusal back"
                );
                return Err(ConsumerError::Retryable {
                    message: format!(
                        "sending to {} failed after {attempt} attempts: {why}",
                        self.url
                    ),
                    retry_after: None,
                });
            }
            tracing::warn!(exporter = %self.id, token = %token, items, error = %why, wait_ms = wait.as_millis() as u64, "send failed; retrying");
            tokio::time::sleep(wait).await;
        }
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
