//! The Parquet marshaler: one row per metric data point or log record, with
//! the stable schema documented in the crate README. Attribute values are
//! strings (numbers and booleans in their usual text form, arrays, maps and
//! bytes as JSON), so every column has one type whatever the sender did.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int32Builder, ListBuilder, MapBuilder, StringBuilder,
    TimestampNanosecondBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use otelcol_core::pdata::proto::common::v1::{any_value::Value, AnyValue, KeyValue};
use otelcol_core::pdata::proto::metrics::v1::{metric::Data, number_data_point};
use otelcol_core::pdata::{Logs, Metrics};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::config::Compression;

/// Why a Parquet file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("parquet: {0}")]
pub struct ParquetError(String);

/// The text form of an attribute value.
pub fn value_text(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => to_json(v).to_string(),
    }
}

fn to_json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        None => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(J::Number)
            .unwrap_or_else(|| J::String(d.to_string())),
        Some(Value::BytesValue(b)) => J::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        Some(Value::ArrayValue(a)) => J::Array(a.values.iter().map(to_json).collect()),
        Some(Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|e| {
                    let v = e.value.as_ref().map(to_json).unwrap_or(J::Null);
                    (e.key.clone(), v)
                })
                .collect(),
        ),
        Some(Value::StringValueStrindex(i)) => J::from(*i),
    }
}

type Map = MapBuilder<StringBuilder, StringBuilder>;

fn push_map(b: &mut Map, attrs: &[KeyValue]) -> Result<(), ParquetError> {
    for kv in attrs {
        b.keys().append_value(&kv.key);
        match &kv.value {
            Some(v) => b.values().append_value(value_text(v)),
            None => b.values().append_null(),
        }
    }
    b.append(true).map_err(|e| ParquetError(e.to_string()))
}

fn user_of(keys: &[String], point: &[KeyValue], resource: &[KeyValue]) -> Option<String> {
    keys.iter().find_map(|k| {
        point
            .iter()
            .chain(resource)
            .find(|kv| &kv.key == k)
            .and_then(|kv| kv.value.as_ref())
            .map(value_text)
    })
}

fn ts() -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::new().with_timezone("UTC")
}

fn push_time(b: &mut TimestampNanosecondBuilder, nanos: u64) {
    if nanos == 0 {
        b.append_null()
    } else {
        b.append_value(nanos.min(i64::MAX as u64) as i64)
    }
}

#[derive(Default)]
struct MetricColumns {
    start: Option<TimestampNanosecondBuilder>,
    end: Option<TimestampNanosecondBuilder>,
    user: StringBuilder,
    name: StringBuilder,
    unit: StringBuilder,
    kind: StringBuilder,
    temporality: StringBuilder,
    monotonic: BooleanBuilder,
    value: Float64Builder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bounds: ListBuilder<Float64Builder>,
    buckets: ListBuilder<UInt64Builder>,
    attributes: Option<Map>,
    resource: Option<Map>,
    scope: StringBuilder,
}

/// Fields of one row that depend on the point's kind.
#[derive(Default)]
struct Shape<'a> {
    value: Option<f64>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    bounds: Option<&'a [f64]>,
    buckets: Option<&'a [u64]>,
}

struct RowContext<'a> {
    name: &'a str,
    unit: &'a str,
    kind: &'a str,
    temporality: Option<&'a str>,
    monotonic: Option<bool>,
    resource: &'a [KeyValue],
    scope: &'a str,
}

fn temporality(t: i32) -> Option<&'static str> {
    match t {
        1 => Some("delta"),
        2 => Some("cumulative"),
        _ => None,
    }
}

impl MetricColumns {
    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        c: &RowContext<'_>,
        users: &[String],
        start: u64,
        end: u64,
        attrs: &[KeyValue],
        s: Shape<'_>,
    ) -> Result<(), ParquetError> {
        push_time(self.start.get_or_insert_with(ts), start);
        push_time(self.end.get_or_insert_with(ts), end);
        self.user.append_option(user_of(users, attrs, c.resource));
        self.name.append_value(c.name);
        self.unit.append_value(c.unit);
        self.kind.append_value(c.kind);
        self.temporality.append_option(c.temporality);
        self.monotonic.append_option(c.monotonic);
        self.value.append_option(s.value);
        self.count.append_option(s.count);
        self.sum.append_option(s.sum);
        self.min.append_option(s.min);
        self.max.append_option(s.max);
        match s.bounds {
            Some(b) => self.bounds.append_value(b.iter().map(|x| Some(*x))),
            None => self.bounds.append_null(),
        }
        match s.buckets {
            Some(b) => self.buckets.append_value(b.iter().map(|x| Some(*x))),
            None => self.buckets.append_null(),
        }
        let new_map = || MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        push_map(self.attributes.get_or_insert_with(new_map), attrs)?;
        push_map(self.resource.get_or_insert_with(new_map), c.resource)?;
        self.scope.append_value(c.scope);
        Ok(())
    }

    fn finish(mut self) -> Result<RecordBatch, ParquetError> {
        let new_map = || MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        let cols: Vec<(&str, ArrayRef, bool)> = vec![
            (
                "window_start",
                Arc::new(self.start.get_or_insert_with(ts).finish()),
                true,
            ),
            (
                "window_end",
                Arc::new(self.end.get_or_insert_with(ts).finish()),
                true,
            ),
            ("user", Arc::new(self.user.finish()), true),
            ("metric_name", Arc::new(self.name.finish()), false),
            ("metric_unit", Arc::new(self.unit.finish()), false),
            ("metric_kind", Arc::new(self.kind.finish()), false),
            ("temporality", Arc::new(self.temporality.finish()), true),
            ("is_monotonic", Arc::new(self.monotonic.finish()), true),
            ("value", Arc::new(self.value.finish()), true),
            ("count", Arc::new(self.count.finish()), true),
            ("sum", Arc::new(self.sum.finish()), true),
            ("min", Arc::new(self.min.finish()), true),
            ("max", Arc::new(self.max.finish()), true),
            ("explicit_bounds", Arc::new(self.bounds.finish()), true),
            ("bucket_counts", Arc::new(self.buckets.finish()), true),
            (
                "attributes",
                Arc::new(self.attributes.get_or_insert_with(new_map).finish()),
                false,
            ),
            (
                "resource_attributes",
                Arc::new(self.resource.get_or_insert_with(new_map).finish()),
                false,
            ),
            ("scope_name", Arc::new(self.scope.finish()), false),
        ];
        RecordBatch::try_from_iter_with_nullable(cols).map_err(|e| ParquetError(e.to_string()))
    }
}

/// One row per data point. Summaries give count and sum; exponential
/// histograms give count, sum, min and max (their buckets are not columns).
pub fn metrics(
    req: &Metrics,
    users: &[String],
    compression: Compression,
) -> Result<Vec<u8>, ParquetError> {
    let mut cols = MetricColumns::default();
    for rm in &req.resource_metrics {
        let resource = rm
            .resource
            .as_ref()
            .map(|r| &r.attributes[..])
            .unwrap_or(&[]);
        for sm in &rm.scope_metrics {
            let scope = sm.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
            for m in &sm.metrics {
                let mut c = RowContext {
                    name: &m.name,
                    unit: &m.unit,
                    kind: "",
                    temporality: None,
                    monotonic: None,
                    resource,
                    scope,
                };
                let number = |p: &number_data_point::Value| match p {
                    number_data_point::Value::AsDouble(d) => *d,
                    number_data_point::Value::AsInt(i) => *i as f64,
                };
                match &m.data {
                    Some(Data::Gauge(g)) => {
                        c.kind = "gauge";
                        for p in &g.data_points {
                            let value = p.value.as_ref().map(number);
                            let s = Shape {
                                value,
                                ..Shape::default()
                            };
                            let (t0, t) = (p.start_time_unix_nano, p.time_unix_nano);
                            cols.row(&c, users, t0, t, &p.attributes, s)?;
                        }
                    }
                    Some(Data::Sum(sum)) => {
                        c.kind = "sum";
                        c.temporality = temporality(sum.aggregation_temporality);
                        c.monotonic = Some(sum.is_monotonic);
                        for p in &sum.data_points {
                            let value = p.value.as_ref().map(number);
                            let s = Shape {
                                value,
                                ..Shape::default()
                            };
                            let (t0, t) = (p.start_time_unix_nano, p.time_unix_nano);
                            cols.row(&c, users, t0, t, &p.attributes, s)?;
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        c.kind = "histogram";
                        c.temporality = temporality(h.aggregation_temporality);
                        for p in &h.data_points {
                            let s = Shape {
                                count: Some(p.count),
                                sum: p.sum,
                                min: p.min,
                                max: p.max,
                                bounds: Some(&p.explicit_bounds),
                                buckets: Some(&p.bucket_counts),
                                ..Shape::default()
                            };
                            let (t0, t) = (p.start_time_unix_nano, p.time_unix_nano);
                            cols.row(&c, users, t0, t, &p.attributes, s)?;
                        }
                    }
                    Some(Data::ExponentialHistogram(h)) => {
                        c.kind = "exponential_histogram";
                        c.temporality = temporality(h.aggregation_temporality);
                        for p in &h.data_points {
                            let s = Shape {
                                count: Some(p.count),
                                sum: p.sum,
                                min: p.min,
                                max: p.max,
                                ..Shape::default()
                            };
                            let (t0, t) = (p.start_time_unix_nano, p.time_unix_nano);
                            cols.row(&c, users, t0, t, &p.attributes, s)?;
                        }
                    }
                    Some(Data::Summary(sm)) => {
                        c.kind = "summary";
                        for p in &sm.data_points {
                            let s = Shape {
                                count: Some(p.count),
                                sum: Some(p.sum),
                                ..Shape::default()
                            };
                            let (t0, t) = (p.start_time_unix_nano, p.time_unix_nano);
                            cols.row(&c, users, t0, t, &p.attributes, s)?;
                        }
                    }
                    None => {}
                }
            }
        }
    }
    write(cols.finish()?, compression)
}

/// One row per log record.
pub fn logs(
    req: &Logs,
    users: &[String],
    compression: Compression,
) -> Result<Vec<u8>, ParquetError> {
    let (mut time, mut observed) = (ts(), ts());
    let (mut user, mut sev_text, mut event, mut body) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut sev = Int32Builder::new();
    let (mut trace_id, mut span_id, mut scope) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut attributes = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let mut resource_attrs = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let hex = |b: &[u8]| {
        (!b.is_empty()).then(|| b.iter().map(|x| format!("{x:02x}")).collect::<String>())
    };
    for rl in &req.resource_logs {
        let resource = rl
            .resource
            .as_ref()
            .map(|r| &r.attributes[..])
            .unwrap_or(&[]);
        for sl in &rl.scope_logs {
            let scope_name = sl.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
            for l in &sl.log_records {
                push_time(&mut time, l.time_unix_nano);
                push_time(&mut observed, l.observed_time_unix_nano);
                user.append_option(user_of(users, &l.attributes, resource));
                sev.append_value(l.severity_number);
                sev_text.append_value(&l.severity_text);
                event.append_value(&l.event_name);
                body.append_option(l.body.as_ref().map(value_text));
                push_map(&mut attributes, &l.attributes)?;
                push_map(&mut resource_attrs, resource)?;
                scope.append_value(scope_name);
                trace_id.append_option(hex(&l.trace_id));
                span_id.append_option(hex(&l.span_id));
            }
        }
    }
    let cols: Vec<(&str, ArrayRef, bool)> = vec![
        ("time", Arc::new(time.finish()), true),
        ("observed_time", Arc::new(observed.finish()), true),
        ("user", Arc::new(user.finish()), true),
        ("severity_number", Arc::new(sev.finish()), false),
        ("severity_text", Arc::new(sev_text.finish()), false),
        ("event_name", Arc::new(event.finish()), false),
        ("body", Arc::new(body.finish()), true),
        ("attributes", Arc::new(attributes.finish()), false),
        (
            "resource_attributes",
            Arc::new(resource_attrs.finish()),
            false,
        ),
        ("scope_name", Arc::new(scope.finish()), false),
        ("trace_id", Arc::new(trace_id.finish()), true),
        ("span_id", Arc::new(span_id.finish()), true),
    ];
    let batch =
        RecordBatch::try_from_iter_with_nullable(cols).map_err(|e| ParquetError(e.to_string()))?;
    write(batch, compression)
}

fn write(batch: RecordBatch, compression: Compression) -> Result<Vec<u8>, ParquetError> {
    let codec = match compression {
        Compression::None => Codec::UNCOMPRESSED,
        Compression::Gzip => Codec::GZIP(GzipLevel::default()),
        Compression::Zstd => Codec::ZSTD(ZstdLevel::default()),
    };
    let props = WriterProperties::builder().set_compression(codec).build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))
        .map_err(|e| ParquetError(e.to_string()))?;
    w.write(&batch).map_err(|e| ParquetError(e.to_string()))?;
    w.close().map_err(|e| ParquetError(e.to_string()))?;
    Ok(out)
}
