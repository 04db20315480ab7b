//! The bound on `AnyValue` nesting, checked on the request bytes before
//! anything decodes them.
//!
//! OTLP's only recursion is an `AnyValue` holding an array or a key-value
//! list of further `AnyValue`s. The Go collector's decoder accepts any
//! depth; prost stops at 100 nested messages (about 30 levels of
//! `AnyValue` inside a data point's attributes) and serde_json at 128 JSON
//! levels (about 30 as well), so a request Go takes was refused with 400.
//! Here prost and serde_json run without their own limits, and this module
//! bounds the nesting first, without recursing: [`MAX_ANY_VALUE_DEPTH`]
//! levels of `AnyValue` (the bound proposed for Go's pdata), which keeps
//! every later recursive walk (decode, the aggregation's canonical form,
//! encoding, drop) to a few hundred frames.
//!
//! The OTLP receiver checks every body before decoding it; the
//! aggregation engine checks the protobuf bytes it cannot read in place
//! before it hands them to prost (a receiver passes it bytes undecoded).

use std::fmt;

/// The most levels of `AnyValue` one value may nest (an attribute value
/// that is a plain string is level 1).
pub const MAX_ANY_VALUE_DEPTH: usize = 100;

/// The most JSON nesting levels an OTLP/JSON body may have: four per
/// `AnyValue` level (`{"kvlistValue":{"values":[{"key":…,"value":{…}}]}}`)
/// plus the envelope down to a log record's body.
pub const MAX_JSON_DEPTH: usize = 4 * MAX_ANY_VALUE_DEPTH + 16;

/// Why a body was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepthError {
    /// `AnyValue`s nest deeper than [`MAX_ANY_VALUE_DEPTH`].
    TooDeep,
    /// JSON nests deeper than [`MAX_JSON_DEPTH`].
    JsonTooDeep,
    /// The protobuf framing is broken at this byte offset.
    Malformed(usize),
}

impl fmt::Display for DepthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DepthError::TooDeep => write!(
                f,
                "attribute values nest deeper than {MAX_ANY_VALUE_DEPTH} levels"
            ),
            DepthError::JsonTooDeep => write!(
                f,
                "JSON nests deeper than {MAX_JSON_DEPTH} levels (attribute values may nest {MAX_ANY_VALUE_DEPTH} levels)"
            ),
            DepthError::Malformed(at) => write!(f, "malformed protobuf at byte {at}"),
        }
    }
}

impl std::error::Error for DepthError {}

/// The OTLP messages on the way to an `AnyValue` (variants are named
/// after them); every other message is skipped whole (it cannot nest).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg {
    /// `ExportMetricsServiceRequest`.
    MetricsRequest,
    /// `ExportLogsServiceRequest`.
    LogsRequest,
    /// `ExportTraceServiceRequest`.
    TracesRequest,
    ResourceMetrics,
    ResourceLogs,
    ResourceSpans,
    Resource,
    Scope,
    ScopeMetrics,
    ScopeLogs,
    ScopeSpans,
    Metric,
    /// Gauge, Sum, Histogram, ExponentialHistogram, Summary: field 1 holds
    /// their points.
    Points(Point),
    NumberPoint,
    HistogramPoint,
    ExpHistogramPoint,
    SummaryPoint,
    Exemplar,
    LogRecord,
    Span,
    SpanEvent,
    SpanLink,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    /// A message with no path to an `AnyValue` (EntityRef, Buckets,
    /// ValueAtQuantile, Status): scanned only so that no group hides in it
    /// (prost skips unknown groups by recursing).
    Leaf,
}

/// The point type of a metric's data.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    Number,
    Histogram,
    ExpHistogram,
    Summary,
}

/// The export requests, by their root message.
pub trait Rooted {
    /// The request's message type.
    const ROOT: Msg;
}

impl Rooted for crate::pdata::Metrics {
    const ROOT: Msg = Msg::MetricsRequest;
}
impl Rooted for crate::pdata::Logs {
    const ROOT: Msg = Msg::LogsRequest;
}
impl Rooted for crate::pdata::Traces {
    const ROOT: Msg = Msg::TracesRequest;
}

/// The message type of field `field` of `msg`, when it leads to an
/// `AnyValue` (field numbers from the OTLP protos).
fn child(msg: Msg, field: u64) -> Option<Msg> {
    use Msg::*;
    Some(match (msg, field) {
        (MetricsRequest, 1) => ResourceMetrics,
        (LogsRequest, 1) => ResourceLogs,
        (TracesRequest, 1) => ResourceSpans,
        (ResourceMetrics | ResourceLogs | ResourceSpans, 1) => Resource,
        (ResourceMetrics, 2) => ScopeMetrics,
        (ResourceLogs, 2) => ScopeLogs,
        (ResourceSpans, 2) => ScopeSpans,
        (Resource, 1) | (Scope, 3) => KeyValue,
        (ScopeMetrics | ScopeLogs | ScopeSpans, 1) => Scope,
        (ScopeMetrics, 2) => Metric,
        (ScopeLogs, 2) => LogRecord,
        (ScopeSpans, 2) => Span,
        (Metric, 12) => KeyValue,
        (Metric, 5 | 7) => Points(Point::Number),
        (Metric, 9) => Points(Point::Histogram),
        (Metric, 10) => Points(Point::ExpHistogram),
        (Metric, 11) => Points(Point::Summary),
        (Points(Point::Number), 1) => NumberPoint,
        (Points(Point::Histogram), 1) => HistogramPoint,
        (Points(Point::ExpHistogram), 1) => ExpHistogramPoint,
        (Points(Point::Summary), 1) => SummaryPoint,
        (NumberPoint, 7) | (HistogramPoint, 9) | (ExpHistogramPoint, 1) | (SummaryPoint, 7) => {
            KeyValue
        }
        (NumberPoint, 5) | (HistogramPoint, 8) | (ExpHistogramPoint, 11) => Exemplar,
        (Exemplar, 7) => KeyValue,
        (LogRecord, 5) => AnyValue,
        (LogRecord, 6) | (Span, 9) | (SpanEvent, 3) | (SpanLink, 4) => KeyValue,
        (Span, 11) => SpanEvent,
        (Span, 13) => SpanLink,
        (KeyValue, 2) | (ArrayValue, 1) => AnyValue,
        (KeyValueList, 1) => KeyValue,
        (AnyValue, 5) => ArrayValue,
        (AnyValue, 6) => KeyValueList,
        (Resource, 3) | (ExpHistogramPoint, 8 | 9) | (SummaryPoint, 6) | (Span, 15) => Leaf,
        _ => return None,
    })
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, DepthError> {
    let start = *at;
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or(DepthError::Malformed(start))?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DepthError::Malformed(start))
}

/// Checks that no `AnyValue` in the protobuf message `bytes` (of type
/// `root`) nests deeper than [`MAX_ANY_VALUE_DEPTH`], with an explicit
/// stack (memory: one entry per open message, at most a few hundred).
/// Groups, which OTLP never uses, are malformed here, in every message
/// prost would decode: prost skips an unknown group by recursing, with no
/// bound once its own limit is off.
pub fn check_proto(bytes: &[u8], root: Msg) -> Result<(), DepthError> {
    // (message type, end offset, AnyValue depth)
    let mut stack: Vec<(Msg, usize, usize)> = vec![(root, bytes.len(), 0)];
    let mut at = 0usize;
    while let Some(&(msg, end, depth)) = stack.last() {
        if at == end {
            stack.pop();
            continue;
        }
        if at > end {
            return Err(DepthError::Malformed(at));
        }
        let key = varint(bytes, &mut at)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(bytes, &mut at)?;
            }
            1 => at += 8,
            5 => at += 4,
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?)
                    .map_err(|_| DepthError::Malformed(at))?;
                let inner_end = at.checked_add(len).ok_or(DepthError::Malformed(at))?;
                if inner_end > end {
                    return Err(DepthError::Malformed(at));
                }
                match child(msg, field) {
                    Some(inner) => {
                        let depth = depth + usize::from(inner == Msg::AnyValue);
                        if depth > MAX_ANY_VALUE_DEPTH {
                            return Err(DepthError::TooDeep);
                        }
                        stack.push((inner, inner_end, depth));
                    }
                    None => at = inner_end,
                }
            }
            _ => return Err(DepthError::Malformed(at)),
        }
        if at > end {
            return Err(DepthError::Malformed(end));
        }
    }
    Ok(())
}

/// Checks that the JSON text `bytes` nests no deeper than
/// [`MAX_JSON_DEPTH`] (brackets outside strings, counted in one pass).
pub fn check_json(bytes: &[u8]) -> Result<(), DepthError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(DepthError::JsonTooDeep);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdata::proto::common::v1::{any_value, AnyValue, KeyValue, KeyValueList};
    use prost::Message;

    /// A log request whose body nests `levels` AnyValues.
    fn nested_log(levels: usize) -> Vec<u8> {
        use crate::pdata::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let mut value = AnyValue {
            value: Some(any_value::Value::StringValue("leaf".into())),
        };
        for _ in 1..levels {
            value = AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "k".into(),
                        value: Some(value),
                        ..Default::default()
                    }],
                })),
            };
        }
        crate::pdata::Logs {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(value),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn nesting_up_to_the_bound_passes_and_beyond_is_refused() {
        assert_eq!(check_proto(&nested_log(1), Msg::LogsRequest), Ok(()));
        assert_eq!(
            check_proto(&nested_log(MAX_ANY_VALUE_DEPTH), Msg::LogsRequest),
            Ok(())
        );
        assert_eq!(
            check_proto(&nested_log(MAX_ANY_VALUE_DEPTH + 1), Msg::LogsRequest),
            Err(DepthError::TooDeep)
        );
    }

    #[test]
    fn broken_framing_is_malformed_not_a_panic() {
        assert_eq!(
            check_proto(&[0x0a, 100, 1, 2], Msg::MetricsRequest),
            Err(DepthError::Malformed(2))
        );
        assert!(
            check_proto(&[0x0b], Msg::MetricsRequest).is_err(),
            "a group"
        );
        // A group inside a message that cannot nest (a resource's entity
        // reference, field 3) is found too.
        let entity = [0x1a, 0x02, 0x0b, 0x0c]; // Resource.entity_refs: {group 1}
        let resource = [&[0x0a, entity.len() as u8][..], &entity].concat();
        let request = [&[0x0a, resource.len() as u8][..], &resource].concat();
        assert!(matches!(
            check_proto(&request, Msg::LogsRequest),
            Err(DepthError::Malformed(_))
        ));
        assert!(check_proto(&[0x08, 0xff], Msg::MetricsRequest).is_err());
        // 5,000 nested AnyValues built by hand: refused at the bound, with
        // no recursion and no decoding.
        let field = |tag: u8, inner: &[u8]| {
            let mut out = vec![tag];
            let mut n = inner.len();
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
            out.extend_from_slice(inner);
            out
        };
        let mut value = field(0x0a, b"leaf"); // AnyValue.string_value
        for _ in 0..5_000 {
            let kv = field(0x12, &value); // KeyValue.value
            let list = field(0x0a, &kv); // KeyValueList.values
            value = field(0x32, &list); // AnyValue.kvlist_value
        }
        let record = field(0x2a, &value); // LogRecord.body
        let scope = field(0x12, &record); // ScopeLogs.log_records
        let resource = field(0x12, &scope); // ResourceLogs.scope_logs
        let request = field(0x0a, &resource); // ExportLogsServiceRequest
        assert_eq!(
            check_proto(&request, Msg::LogsRequest),
            Err(DepthError::TooDeep)
        );
    }

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        let ok = "[".repeat(MAX_JSON_DEPTH) + &"]".repeat(MAX_JSON_DEPTH);
        assert_eq!(check_json(ok.as_bytes()), Ok(()));
        let deep = "[".repeat(MAX_JSON_DEPTH + 1);
        assert_eq!(check_json(deep.as_bytes()), Err(DepthError::JsonTooDeep));
        let quoted = format!("{{\"k\":\"{}\\\"\"}}", "[".repeat(10_000));
        assert_eq!(check_json(quoted.as_bytes()), Ok(()));
    }
}
