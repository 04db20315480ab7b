//! What every OTLP exporter shares: per signal, the paths and the
//! partial-success answers; and what an OTLP/HTTP answer means (which
//! statuses retry, `Retry-After`). Used by `otlp`, `otlphttp` and the
//! `multitudes` exporter.

use std::time::{Duration, SystemTime};

use otelcol_core::consumer::PermanentKind;
use otelcol_core::pdata::{json, Batchable, Logs, Metrics, Traces};
use prost::Message;

/// How much of an error response body is logged.
pub const BODY_SNIPPET: usize = 1024;
/// How much of a success response body is read for a partial-success answer.
pub const SUCCESS_BODY_MAX: usize = 4 << 20;

/// What differs between the signals an OTLP exporter sends.
pub trait Wire: Batchable {
    /// The signal.
    const KIND: otelcol_core::Signal;
    /// `/v1/metrics`, `/v1/logs` or `/v1/traces`.
    const PATH: &'static str;
    /// The gRPC method (`/opentelemetry.proto.collector.metrics.v1.MetricsService/Export`).
    const GRPC_METHOD: &'static str;
    /// The export response message.
    type Response: Message + Default + Send + 'static;
    /// The (rejected items, error message) of a decoded export response.
    fn partial_of(response: &Self::Response) -> Option<(u64, String)>;
    /// Suffix of the Go counter names.
    const ITEMS: &'static str;
    /// The field of a partial-success answer that counts rejected items.
    const REJECTED: &'static str;
    /// The Go collector's OTLP/JSON.
    fn to_json(&self) -> String;
    /// The (rejected items, error message) of a protobuf export response
    /// body (one holding protobuf groups is not decoded, see below).
    fn partial_from_proto(body: &[u8]) -> Option<(u64, String)> {
        if !plain_response(body) {
            return None;
        }
        Self::partial_of(&Self::Response::decode(body).ok()?)
    }
}

/// Whether an export response (`partial_success` in field 1, whose own
/// fields are an integer and a string) holds no protobuf group, which OTLP
/// never uses: prost runs without a recursion limit in this build and skips
/// an unknown group by recursing, so a response of nested groups could
/// exhaust the stack. Only the response and its field 1 are messages.
pub(crate) fn plain_response(body: &[u8]) -> bool {
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
    const KIND: otelcol_core::Signal = otelcol_core::Signal::Metrics;
    const PATH: &'static str = "/v1/metrics";
    const GRPC_METHOD: &'static str =
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    type Response =
        otelcol_core::pdata::proto::collector::metrics::v1::ExportMetricsServiceResponse;
    fn partial_of(r: &Self::Response) -> Option<(u64, String)> {
        let p = r.partial_success.as_ref()?;
        Some((
            u64::try_from(p.rejected_data_points).unwrap_or(0),
            p.error_message.clone(),
        ))
    }
    const ITEMS: &'static str = "metric_points";
    const REJECTED: &'static str = "rejectedDataPoints";
    fn to_json(&self) -> String {
        json::metrics(self)
    }
}

impl Wire for Logs {
    const KIND: otelcol_core::Signal = otelcol_core::Signal::Logs;
    const PATH: &'static str = "/v1/logs";
    const GRPC_METHOD: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    type Response = otelcol_core::pdata::proto::collector::logs::v1::ExportLogsServiceResponse;
    fn partial_of(r: &Self::Response) -> Option<(u64, String)> {
        let p = r.partial_success.as_ref()?;
        Some((
            u64::try_from(p.rejected_log_records).unwrap_or(0),
            p.error_message.clone(),
        ))
    }
    const ITEMS: &'static str = "log_records";
    const REJECTED: &'static str = "rejectedLogRecords";
    fn to_json(&self) -> String {
        json::logs(self)
    }
}

impl Wire for Traces {
    const KIND: otelcol_core::Signal = otelcol_core::Signal::Traces;
    const PATH: &'static str = "/v1/traces";
    const GRPC_METHOD: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    type Response = otelcol_core::pdata::proto::collector::trace::v1::ExportTraceServiceResponse;
    fn partial_of(r: &Self::Response) -> Option<(u64, String)> {
        let p = r.partial_success.as_ref()?;
        Some((
            u64::try_from(p.rejected_spans).unwrap_or(0),
            p.error_message.clone(),
        ))
    }
    const ITEMS: &'static str = "spans";
    const REJECTED: &'static str = "rejectedSpans";
    fn to_json(&self) -> String {
        json::traces(self)
    }
}

/// A `Retry-After` value: seconds, or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
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

/// Whether an OTLP/HTTP status is worth another attempt.
pub fn retryable_status(s: u16) -> bool {
    matches!(s, 408 | 429 | 500 | 502 | 503 | 504)
}

/// What a refusing OTLP/HTTP status means.
pub fn permanent_kind(s: u16) -> PermanentKind {
    match s {
        400 => PermanentKind::InvalidData,
        401 => PermanentKind::Unauthenticated,
        403 => PermanentKind::PermissionDenied,
        _ => PermanentKind::Other,
    }
}

/// A reqwest error's text without its URL (which might one day carry a secret).
pub fn without_url(e: &reqwest::Error) -> String {
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
pub async fn read_body(mut resp: reqwest::Response, max: usize) -> Vec<u8> {
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
pub fn partial_from_json(body: &[u8], rejected_key: &str) -> Option<(u64, String)> {
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
