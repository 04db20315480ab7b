//! OTLP/JSON as the Go collector writes it: lowerCamelCase names in proto
//! declaration order, default values omitted, 64-bit integers as decimal
//! strings, enums as integers, trace and span ids as hex, other bytes as
//! base64, doubles in Go's shortest form (exponent outside [1e-6, 1e21)).
//!
//! The generated serde code of `opentelemetry-proto` writes every default
//! field (and `null` for NaN), so exporters that promise the Go collector's
//! bytes use this encoder instead.

use std::fmt::Write as _;

use base64::Engine as _;

use super::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use super::proto::logs::v1::LogRecord;
use super::proto::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point, Exemplar,
    Metric,
};
use super::proto::resource::v1::Resource;
use super::proto::trace::v1::{span, Span, Status};
use super::{Logs, Metrics, Traces};

/// Writes one JSON object, field by field, skipping defaults.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, first: true }
    }
    fn key(&mut self, k: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
        self.out
    }
    fn str(&mut self, k: &str, v: &str) {
        if !v.is_empty() {
            string(self.key(k), v);
        }
    }
    fn u64s(&mut self, k: &str, v: u64) {
        if v != 0 {
            let _ = write!(self.key(k), "\"{v}\"");
        }
    }
    fn int(&mut self, k: &str, v: i64) {
        if v != 0 {
            let _ = write!(self.key(k), "{v}");
        }
    }
    fn f64(&mut self, k: &str, v: f64) {
        if v != 0.0 || v.is_sign_negative() {
            double(self.key(k), v);
        }
    }
    fn opt_f64(&mut self, k: &str, v: Option<f64>) {
        if let Some(v) = v {
            double(self.key(k), v);
        }
    }
    fn bool(&mut self, k: &str, v: bool) {
        if v {
            self.key(k).push_str("true");
        }
    }
    fn hex(&mut self, k: &str, v: &[u8]) {
        if !v.is_empty() {
            let out = self.key(k);
            out.push('"');
            for b in v {
                let _ = write!(out, "{b:02x}");
            }
            out.push('"');
        }
    }
    fn list<T>(&mut self, k: &str, items: &[T], each: impl Fn(&mut String, &T)) {
        if items.is_empty() {
            return;
        }
        let out = self.key(k);
        out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            each(out, item);
        }
        out.push(']');
    }
    fn attrs(&mut self, k: &str, v: &[KeyValue]) {
        self.list(k, v, key_value);
    }
    fn obj(&mut self, k: &str, write: impl FnOnce(&mut Obj<'_>)) {
        let out = self.key(k);
        let mut o = Obj::open(out);
        write(&mut o);
        o.close();
    }
    fn close(self) {
        self.out.push('}');
    }
}

/// A JSON string literal of `s`.
pub(crate) fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A double as Go's `strconv.FormatFloat(v, 'f' or 'e', -1, 64)` picks it;
/// non-finite values as the proto3 JSON strings.
pub(crate) fn double(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else if v != 0.0 && (v.abs() < 1e-6 || v.abs() >= 1e21) {
        let e = format!("{v:e}");
        let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "{mantissa}e{sign}{:02}", exp.abs());
    } else {
        let _ = write!(out, "{v}");
    }
}

fn any_value(out: &mut String, v: &AnyValue) {
    let mut o = Obj::open(out);
    match &v.value {
        Some(any_value::Value::StringValue(s)) => string(o.key("stringValue"), s),
        Some(any_value::Value::BoolValue(b)) => {
            o.key("boolValue")
                .push_str(if *b { "true" } else { "false" })
        }
        Some(any_value::Value::IntValue(i)) => {
            let _ = write!(o.key("intValue"), "\"{i}\"");
        }
        Some(any_value::Value::DoubleValue(d)) => double(o.key("doubleValue"), *d),
        Some(any_value::Value::ArrayValue(a)) => {
            o.obj("arrayValue", |o| o.list("values", &a.values, any_value))
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            o.obj("kvlistValue", |o| o.attrs("values", &kv.values))
        }
        Some(any_value::Value::BytesValue(b)) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(b);
            string(o.key("bytesValue"), &encoded);
        }
        Some(any_value::Value::StringValueStrindex(i)) => {
            o.int("stringValueStrindex", i64::from(*i))
        }
        None => {}
    }
    o.close();
}

fn key_value(out: &mut String, kv: &KeyValue) {
    let mut o = Obj::open(out);
    o.str("key", &kv.key);
    if let Some(v) = &kv.value {
        any_value(o.key("value"), v);
    }
    o.close();
}

fn resource(o: &mut Obj<'_>, r: &Option<Resource>) {
    if let Some(r) = r {
        o.obj("resource", |o| {
            o.attrs("attributes", &r.attributes);
            o.int(
                "droppedAttributesCount",
                i64::from(r.dropped_attributes_count),
            );
        });
    }
}

fn scope(o: &mut Obj<'_>, s: &Option<InstrumentationScope>) {
    if let Some(s) = s {
        o.obj("scope", |o| {
            o.str("name", &s.name);
            o.str("version", &s.version);
            o.attrs("attributes", &s.attributes);
            o.int(
                "droppedAttributesCount",
                i64::from(s.dropped_attributes_count),
            );
        });
    }
}

fn exemplar(out: &mut String, e: &Exemplar) {
    let mut o = Obj::open(out);
    o.attrs("filteredAttributes", &e.filtered_attributes);
    o.u64s("timeUnixNano", e.time_unix_nano);
    match e.value {
        Some(exemplar::Value::AsDouble(d)) => double(o.key("asDouble"), d),
        Some(exemplar::Value::AsInt(i)) => {
            let _ = write!(o.key("asInt"), "\"{i}\"");
        }
        None => {}
    }
    o.hex("spanId", &e.span_id);
    o.hex("traceId", &e.trace_id);
    o.close();
}

fn buckets(o: &mut Obj<'_>, k: &str, b: &Option<Buckets>) {
    if let Some(b) = b {
        o.obj(k, |o| {
            o.int("offset", i64::from(b.offset));
            o.list("bucketCounts", &b.bucket_counts, |out, c| {
                let _ = write!(out, "\"{c}\"");
            });
        });
    }
}

fn metric(out: &mut String, m: &Metric) {
    let mut o = Obj::open(out);
    o.str("name", &m.name);
    o.str("description", &m.description);
    o.str("unit", &m.unit);
    match &m.data {
        Some(metric::Data::Gauge(g)) => o.obj("gauge", |o| {
            o.list("dataPoints", &g.data_points, number_point)
        }),
        Some(metric::Data::Sum(s)) => o.obj("sum", |o| {
            o.list("dataPoints", &s.data_points, number_point);
            o.int(
                "aggregationTemporality",
                i64::from(s.aggregation_temporality),
            );
            o.bool("isMonotonic", s.is_monotonic);
        }),
        Some(metric::Data::Histogram(h)) => o.obj("histogram", |o| {
            o.list("dataPoints", &h.data_points, |out, p| {
                let mut o = Obj::open(out);
                o.attrs("attributes", &p.attributes);
                o.u64s("startTimeUnixNano", p.start_time_unix_nano);
                o.u64s("timeUnixNano", p.time_unix_nano);
                o.u64s("count", p.count);
                o.opt_f64("sum", p.sum);
                o.list("bucketCounts", &p.bucket_counts, |out, c| {
                    let _ = write!(out, "\"{c}\"");
                });
                o.list("explicitBounds", &p.explicit_bounds, |out, b| {
                    double(out, *b)
                });
                o.list("exemplars", &p.exemplars, exemplar);
                o.int("flags", i64::from(p.flags));
                o.opt_f64("min", p.min);
                o.opt_f64("max", p.max);
                o.close();
            });
            o.int(
                "aggregationTemporality",
                i64::from(h.aggregation_temporality),
            );
        }),
        Some(metric::Data::ExponentialHistogram(h)) => o.obj("exponentialHistogram", |o| {
            o.list("dataPoints", &h.data_points, |out, p| {
                let mut o = Obj::open(out);
                o.attrs("attributes", &p.attributes);
                o.u64s("startTimeUnixNano", p.start_time_unix_nano);
                o.u64s("timeUnixNano", p.time_unix_nano);
                o.u64s("count", p.count);
                o.opt_f64("sum", p.sum);
                o.int("scale", i64::from(p.scale));
                o.u64s("zeroCount", p.zero_count);
                buckets(&mut o, "positive", &p.positive);
                buckets(&mut o, "negative", &p.negative);
                o.int("flags", i64::from(p.flags));
                o.list("exemplars", &p.exemplars, exemplar);
                o.opt_f64("min", p.min);
                o.opt_f64("max", p.max);
                o.f64("zeroThreshold", p.zero_threshold);
                o.close();
            });
            o.int(
                "aggregationTemporality",
                i64::from(h.aggregation_temporality),
            );
        }),
        Some(metric::Data::Summary(s)) => o.obj("summary", |o| {
            o.list("dataPoints", &s.data_points, |out, p| {
                let mut o = Obj::open(out);
                o.attrs("attributes", &p.attributes);
                o.u64s("startTimeUnixNano", p.start_time_unix_nano);
                o.u64s("timeUnixNano", p.time_unix_nano);
                o.u64s("count", p.count);
                o.f64("sum", p.sum);
                o.list("quantileValues", &p.quantile_values, |out, q| {
                    let mut o = Obj::open(out);
                    o.f64("quantile", q.quantile);
                    o.f64("value", q.value);
                    o.close();
                });
                o.int("flags", i64::from(p.flags));
                o.close();
            });
        }),
        None => {}
    }
    o.attrs("metadata", &m.metadata);
    o.close();
}

fn number_point(out: &mut String, p: &super::proto::metrics::v1::NumberDataPoint) {
    let mut o = Obj::open(out);
    o.attrs("attributes", &p.attributes);
    o.u64s("startTimeUnixNano", p.start_time_unix_nano);
    o.u64s("timeUnixNano", p.time_unix_nano);
    match p.value {
        Some(number_data_point::Value::AsDouble(d)) => double(o.key("asDouble"), d),
        Some(number_data_point::Value::AsInt(i)) => {
            let _ = write!(o.key("asInt"), "\"{i}\"");
        }
        None => {}
    }
    o.list("exemplars", &p.exemplars, exemplar);
    o.int("flags", i64::from(p.flags));
    o.close();
}

/// An `ExportMetricsServiceRequest` as the Go collector's OTLP/JSON.
pub fn metrics(req: &Metrics) -> String {
    let mut out = String::with_capacity(1024);
    let mut o = Obj::open(&mut out);
    o.list("resourceMetrics", &req.resource_metrics, |out, rm| {
        let mut o = Obj::open(out);
        resource(&mut o, &rm.resource);
        o.list("scopeMetrics", &rm.scope_metrics, |out, sm| {
            let mut o = Obj::open(out);
            scope(&mut o, &sm.scope);
            o.list("metrics", &sm.metrics, metric);
            o.str("schemaUrl", &sm.schema_url);
            o.close();
        });
        o.str("schemaUrl", &rm.schema_url);
        o.close();
    });
    o.close();
    out
}

fn log_record(out: &mut String, r: &LogRecord) {
    let mut o = Obj::open(out);
    o.u64s("timeUnixNano", r.time_unix_nano);
    o.u64s("observedTimeUnixNano", r.observed_time_unix_nano);
    o.int("severityNumber", i64::from(r.severity_number));
    o.str("severityText", &r.severity_text);
    if let Some(b) = &r.body {
        any_value(o.key("body"), b);
    }
    o.attrs("attributes", &r.attributes);
    o.int(
        "droppedAttributesCount",
        i64::from(r.dropped_attributes_count),
    );
    o.int("flags", i64::from(r.flags));
    o.hex("traceId", &r.trace_id);
    o.hex("spanId", &r.span_id);
    o.str("eventName", &r.event_name);
    o.close();
}

/// An `ExportLogsServiceRequest` as the Go collector's OTLP/JSON.
pub fn logs(req: &Logs) -> String {
    let mut out = String::with_capacity(1024);
    let mut o = Obj::open(&mut out);
    o.list("resourceLogs", &req.resource_logs, |out, rl| {
        let mut o = Obj::open(out);
        resource(&mut o, &rl.resource);
        o.list("scopeLogs", &rl.scope_logs, |out, sl| {
            let mut o = Obj::open(out);
            scope(&mut o, &sl.scope);
            o.list("logRecords", &sl.log_records, log_record);
            o.str("schemaUrl", &sl.schema_url);
            o.close();
        });
        o.str("schemaUrl", &rl.schema_url);
        o.close();
    });
    o.close();
    out
}

fn status(o: &mut Obj<'_>, s: &Option<Status>) {
    if let Some(s) = s {
        o.obj("status", |o| {
            o.str("message", &s.message);
            o.int("code", i64::from(s.code));
        });
    }
}

fn span(out: &mut String, s: &Span) {
    let mut o = Obj::open(out);
    o.hex("traceId", &s.trace_id);
    o.hex("spanId", &s.span_id);
    o.str("traceState", &s.trace_state);
    o.hex("parentSpanId", &s.parent_span_id);
    o.int("flags", i64::from(s.flags));
    o.str("name", &s.name);
    o.int("kind", i64::from(s.kind));
    o.u64s("startTimeUnixNano", s.start_time_unix_nano);
    o.u64s("endTimeUnixNano", s.end_time_unix_nano);
    o.attrs("attributes", &s.attributes);
    o.int(
        "droppedAttributesCount",
        i64::from(s.dropped_attributes_count),
    );
    o.list("events", &s.events, |out, e: &span::Event| {
        let mut o = Obj::open(out);
        o.u64s("timeUnixNano", e.time_unix_nano);
        o.str("name", &e.name);
        o.attrs("attributes", &e.attributes);
        o.int(
            "droppedAttributesCount",
            i64::from(e.dropped_attributes_count),
        );
        o.close();
    });
    o.int("droppedEventsCount", i64::from(s.dropped_events_count));
    o.list("links", &s.links, |out, l: &span::Link| {
        let mut o = Obj::open(out);
        o.hex("traceId", &l.trace_id);
        o.hex("spanId", &l.span_id);
        o.str("traceState", &l.trace_state);
        o.attrs("attributes", &l.attributes);
        o.int(
            "droppedAttributesCount",
            i64::from(l.dropped_attributes_count),
        );
        o.int("flags", i64::from(l.flags));
        o.close();
    });
    o.int("droppedLinksCount", i64::from(s.dropped_links_count));
    status(&mut o, &s.status);
    o.close();
}

/// An `ExportTraceServiceRequest` as the Go collector's OTLP/JSON.
pub fn traces(req: &Traces) -> String {
    let mut out = String::with_capacity(1024);
    let mut o = Obj::open(&mut out);
    o.list("resourceSpans", &req.resource_spans, |out, rs| {
        let mut o = Obj::open(out);
        resource(&mut o, &rs.resource);
        o.list("scopeSpans", &rs.scope_spans, |out, ss| {
            let mut o = Obj::open(out);
            scope(&mut o, &ss.scope);
            o.list("spans", &ss.spans, span);
            o.str("schemaUrl", &ss.schema_url);
            o.close();
        });
        o.str("schemaUrl", &rs.schema_url);
        o.close();
    });
    o.close();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_as_go_writes_them() {
        let f = |v: f64| {
            let mut s = String::new();
            double(&mut s, v);
            s
        };
        assert_eq!(f(1834.0), "1834");
        assert_eq!(f(0.0914), "0.0914");
        assert_eq!(f(-2.5), "-2.5");
        assert_eq!(f(1e21), "1e+21");
        assert_eq!(f(1.5e-7), "1.5e-07");
        assert_eq!(f(123456789012.0), "123456789012");
        assert_eq!(f(f64::NAN), "\"NaN\"");
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }
}
