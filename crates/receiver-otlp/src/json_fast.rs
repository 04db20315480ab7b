//! The fast path for OTLP/JSON metrics: the body deserialized in one pass
//! straight into typed structs, with no `serde_json::Value` tree, no
//! rewriting pass and no path strings, for the shape the OpenTelemetry SDKs
//! write (Claude Code's and Gemini CLI's `http/json`).
//!
//! It takes a strict subset of what [`crate::json`] accepts:
//! lowerCamelCase names of known fields only, each field once, at most one
//! member of each oneof, scalar attribute values (string, bool, int,
//! double), sums, gauges and histograms without exemplars or entity refs
//! (empty lists of them are taken), and numbers in the forms and ranges the
//! general path checks. On anything else (snake_case, unknown fields,
//! duplicate fields, array, kvlist or bytes values, exemplars, exponential
//! histograms, summaries, any value out of range, any syntax error) it
//! answers `None` and the request takes the general path, which decodes it
//! or names what is wrong. What it accepts decodes to exactly what the
//! general path gives: the differential tests in `json_fast/tests.rs` and
//! the `json_fast_path` fuzz target check that.

use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;

use otelcol_core::pdata::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::{Logs, Metrics, Traces};

/// The export requests, with their fast OTLP/JSON path where they have one
/// (metrics); [`crate::decode::decode_json`] tries it first.
pub trait FastJson: Sized {
    /// The request decoded on the fast path, or `None` for the general one.
    fn fast_json(_body: &[u8]) -> Option<Self> {
        None
    }
}

impl FastJson for Metrics {
    fn fast_json(body: &[u8]) -> Option<Self> {
        metrics(body)
    }
}
impl FastJson for Logs {}
impl FastJson for Traces {}

/// Decodes an OTLP/JSON metrics export request on the fast path; `None`
/// when the request is outside its subset (see the module docs). Safe on
/// any input: serde_json keeps its own 128-level recursion limit here.
pub fn metrics(body: &[u8]) -> Option<Metrics> {
    let request: Request = serde_json::from_slice(body).ok()?;
    let resource_metrics = list(request.resource_metrics, resource_metrics).ok()?;
    Some(Metrics { resource_metrics })
}

/// What the conversion found outside the fast path's subset.
struct Outside;

fn list<A, B>(
    items: Option<Vec<A>>,
    f: impl FnMut(A) -> Result<B, Outside>,
) -> Result<Vec<B>, Outside> {
    items.unwrap_or_default().into_iter().map(f).collect()
}

/// A timestamp: a whole non-negative number, or a string of digits, that
/// fits 64 bits (as [`crate::json`] checks it).
struct Time(u64);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Time;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("nanoseconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Time, E> {
                Ok(Time(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Time, E> {
                if !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::custom("not digits"));
                }
                s.parse().map(Time).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A whole number in `MIN..=MAX`, as a number or a string with optional
/// surrounding whitespace and sign (as [`crate::json`] checks integers).
struct Int<const MIN: i128, const MAX: i128>(i128);

impl<'de, const MIN: i128, const MAX: i128> Deserialize<'de> for Int<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const MIN: i128, const MAX: i128>;
        impl<const MIN: i128, const MAX: i128> Visitor<'_> for V<MIN, MAX> {
            type Value = Int<MIN, MAX>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.checked(v.into())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                self.checked(v.into())
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                self.checked(s.trim().parse().map_err(E::custom)?)
            }
        }
        impl<const MIN: i128, const MAX: i128> V<MIN, MAX> {
            fn checked<E: de::Error>(self, n: i128) -> Result<Int<MIN, MAX>, E> {
                if (MIN..=MAX).contains(&n) {
                    Ok(Int(n))
                } else {
                    Err(E::custom("out of range"))
                }
            }
        }
        d.deserialize_any(V::<MIN, MAX>)
    }
}

type I64 = Int<{ i64::MIN as i128 }, { i64::MAX as i128 }>;
type U64 = Int<0, { u64::MAX as i128 }>;
type U32 = Int<0, { u32::MAX as i128 }>;

impl<const MIN: i128, const MAX: i128> Int<MIN, MAX> {
    /// The value; in range by construction.
    fn get<T: TryFrom<i128> + Default>(self) -> T {
        T::try_from(self.0).unwrap_or_default()
    }
}

/// A finite double, as a number or a string (as [`crate::json`] reads
/// doubles given as strings).
struct Double(f64);

impl<'de> Deserialize<'de> for Double {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Double;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Double, E> {
                Ok(Double(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Double, E> {
                match s.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() => Ok(Double(v)),
                    _ => Err(E::custom("not a finite number")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `aggregationTemporality`: a number, or the enum value's name.
struct Temporality(i32);

impl<'de> Deserialize<'de> for Temporality {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Temporality;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an aggregation temporality")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Temporality, E> {
                i32::try_from(v).map(Temporality).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Temporality, E> {
                i32::try_from(v).map(Temporality).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Temporality, E> {
                match s {
                    "AGGREGATION_TEMPORALITY_UNSPECIFIED" => Ok(Temporality(0)),
                    "AGGREGATION_TEMPORALITY_DELTA" => Ok(Temporality(1)),
                    "AGGREGATION_TEMPORALITY_CUMULATIVE" => Ok(Temporality(2)),
                    _ => Err(E::custom("unknown temporality")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Request {
    resource_metrics: Option<Vec<JResourceMetrics>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JResourceMetrics {
    resource: Option<JResource>,
    scope_metrics: Option<Vec<JScopeMetrics>>,
    schema_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JResource {
    attributes: Option<Vec<JKeyValue>>,
    dropped_attributes_count: Option<U32>,
    entity_refs: Option<Vec<IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JScopeMetrics {
    scope: Option<JScope>,
    metrics: Option<Vec<JMetric>>,
    schema_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JScope {
    name: Option<String>,
    version: Option<String>,
    attributes: Option<Vec<JKeyValue>>,
    dropped_attributes_count: Option<U32>,
}

/// An attribute, deserialized straight into the prost type (a list of them
/// becomes the prost list in place). `key` is required, as in the generated
/// code; a field twice, an unknown field, or two members of the value's
/// oneof end the fast path.
#[repr(transparent)]
struct JKeyValue(KeyValue);

/// The fields of an attribute.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum KeyValueField {
    Key,
    Value,
}

/// The members of an attribute value's oneof the fast path takes.
#[derive(Deserialize, Clone, Copy)]
#[serde(field_identifier)]
enum AnyValueField {
    #[serde(rename = "stringValue")]
    String,
    #[serde(rename = "boolValue")]
    Bool,
    #[serde(rename = "intValue")]
    Int,
    #[serde(rename = "doubleValue")]
    Double,
}

/// The value of an attribute: `None` for `{}` or only nulls.
struct JAnyValue(Option<any_value::Value>);

impl<'de> Deserialize<'de> for JKeyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JKeyValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an attribute")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<JKeyValue, A::Error> {
                let (mut key, mut value) = (None, None);
                while let Some(field) = map.next_key::<KeyValueField>()? {
                    match field {
                        KeyValueField::Key if key.is_none() => key = Some(map.next_value()?),
                        KeyValueField::Value if value.is_none() => {
                            value = Some(map.next_value::<Option<JAnyValue>>()?)
                        }
                        _ => return Err(de::Error::custom("field twice")),
                    }
                }
                Ok(JKeyValue(KeyValue {
                    key: key.ok_or_else(|| de::Error::missing_field("key"))?,
                    value: value.flatten().map(|v| AnyValue { value: v.0 }),
                    key_strindex: 0,
                }))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for JAnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JAnyValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an attribute value")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<JAnyValue, A::Error> {
                use any_value::Value as Member;
                let mut seen = [false; 4];
                let mut out: Option<Member> = None;
                while let Some(field) = map.next_key::<AnyValueField>()? {
                    let i = field as usize;
                    if std::mem::replace(&mut seen[i], true) {
                        return Err(de::Error::custom("field twice"));
                    }
                    let member = match field {
                        AnyValueField::String => {
                            map.next_value::<Option<String>>()?.map(Member::StringValue)
                        }
                        AnyValueField::Bool => {
                            map.next_value::<Option<bool>>()?.map(Member::BoolValue)
                        }
                        AnyValueField::Int => map
                            .next_value::<Option<I64>>()?
                            .map(|i| Member::IntValue(i.get())),
                        AnyValueField::Double => map
                            .next_value::<Option<Double>>()?
                            .map(|d| Member::DoubleValue(d.0)),
                    };
                    if let Some(m) = member {
                        if out.replace(m).is_some() {
                            return Err(de::Error::custom("two members of the oneof"));
                        }
                    }
                }
                Ok(JAnyValue(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JMetric {
    name: Option<String>,
    description: Option<String>,
    unit: Option<String>,
    metadata: Option<Vec<JKeyValue>>,
    sum: Option<JSum>,
    gauge: Option<JGauge>,
    histogram: Option<JHistogram>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JSum {
    data_points: Option<Vec<JNumberPoint>>,
    aggregation_temporality: Option<Temporality>,
    is_monotonic: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JGauge {
    data_points: Option<Vec<JNumberPoint>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JHistogram {
    data_points: Option<Vec<JHistogramPoint>>,
    aggregation_temporality: Option<Temporality>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JNumberPoint {
    attributes: Option<Vec<JKeyValue>>,
    start_time_unix_nano: Option<Time>,
    time_unix_nano: Option<Time>,
    exemplars: Option<Vec<IgnoredAny>>,
    flags: Option<U32>,
    as_double: Option<Double>,
    as_int: Option<I64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JHistogramPoint {
    attributes: Option<Vec<JKeyValue>>,
    start_time_unix_nano: Option<Time>,
    time_unix_nano: Option<Time>,
    count: Option<U64>,
    sum: Option<Double>,
    bucket_counts: Option<Vec<U64>>,
    explicit_bounds: Option<Vec<Double>>,
    exemplars: Option<Vec<IgnoredAny>>,
    flags: Option<U32>,
    min: Option<Double>,
    max: Option<Double>,
}

/// The attributes of a list, moved out of their wrappers in place.
fn attributes(items: Option<Vec<JKeyValue>>) -> Vec<KeyValue> {
    items
        .unwrap_or_default()
        .into_iter()
        .map(|kv| kv.0)
        .collect()
}

fn resource_metrics(r: JResourceMetrics) -> Result<ResourceMetrics, Outside> {
    let resource = match r.resource {
        Some(res) if !empty(&res.entity_refs) => return Err(Outside),
        Some(res) => Some(Resource {
            attributes: attributes(res.attributes),
            dropped_attributes_count: res.dropped_attributes_count.map_or(0, Int::get),
            entity_refs: vec![],
        }),
        None => None,
    };
    Ok(ResourceMetrics {
        resource,
        scope_metrics: list(r.scope_metrics, scope_metrics)?,
        schema_url: r.schema_url.unwrap_or_default(),
    })
}

fn scope_metrics(s: JScopeMetrics) -> Result<ScopeMetrics, Outside> {
    let scope = match s.scope {
        Some(sc) => Some(InstrumentationScope {
            name: sc.name.unwrap_or_default(),
            version: sc.version.unwrap_or_default(),
            attributes: attributes(sc.attributes),
            dropped_attributes_count: sc.dropped_attributes_count.map_or(0, Int::get),
        }),
        None => None,
    };
    Ok(ScopeMetrics {
        scope,
        metrics: list(s.metrics, metric)?,
        schema_url: s.schema_url.unwrap_or_default(),
    })
}

fn metric(m: JMetric) -> Result<Metric, Outside> {
    let data = match (m.sum, m.gauge, m.histogram) {
        (None, None, None) => None,
        (Some(s), None, None) => Some(metric::Data::Sum(Sum {
            data_points: list(s.data_points, number_point)?,
            aggregation_temporality: s.aggregation_temporality.map_or(0, |t| t.0),
            is_monotonic: s.is_monotonic.unwrap_or_default(),
        })),
        (None, Some(g), None) => Some(metric::Data::Gauge(Gauge {
            data_points: list(g.data_points, number_point)?,
        })),
        (None, None, Some(h)) => Some(metric::Data::Histogram(Histogram {
            data_points: list(h.data_points, histogram_point)?,
            aggregation_temporality: h.aggregation_temporality.map_or(0, |t| t.0),
        })),
        _ => return Err(Outside),
    };
    Ok(Metric {
        name: m.name.unwrap_or_default(),
        description: m.description.unwrap_or_default(),
        unit: m.unit.unwrap_or_default(),
        metadata: attributes(m.metadata),
        data,
    })
}

/// Whether a list outside the subset (exemplars, whose ids are hex strings;
/// entity refs) is absent or empty, as the tools send them.
fn empty(list: &Option<Vec<IgnoredAny>>) -> bool {
    list.as_ref().is_none_or(Vec::is_empty)
}

fn number_point(p: JNumberPoint) -> Result<NumberDataPoint, Outside> {
    if !empty(&p.exemplars) {
        return Err(Outside);
    }
    let value = match (p.as_double, p.as_int) {
        (None, None) => None,
        (Some(d), None) => Some(number_data_point::Value::AsDouble(d.0)),
        (None, Some(i)) => Some(number_data_point::Value::AsInt(i.get())),
        (Some(_), Some(_)) => return Err(Outside),
    };
    Ok(NumberDataPoint {
        attributes: attributes(p.attributes),
        start_time_unix_nano: p.start_time_unix_nano.map_or(0, |t| t.0),
        time_unix_nano: p.time_unix_nano.map_or(0, |t| t.0),
        exemplars: vec![],
        flags: p.flags.map_or(0, Int::get),
        value,
    })
}

fn histogram_point(p: JHistogramPoint) -> Result<HistogramDataPoint, Outside> {
    if !empty(&p.exemplars) {
        return Err(Outside);
    }
    Ok(HistogramDataPoint {
        attributes: attributes(p.attributes),
        start_time_unix_nano: p.start_time_unix_nano.map_or(0, |t| t.0),
        time_unix_nano: p.time_unix_nano.map_or(0, |t| t.0),
        count: p.count.map_or(0, Int::get),
        sum: p.sum.map(|d| d.0),
        bucket_counts: p
            .bucket_counts
            .unwrap_or_default()
            .into_iter()
            .map(Int::get)
            .collect(),
        explicit_bounds: p
            .explicit_bounds
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.0)
            .collect(),
        exemplars: vec![],
        flags: p.flags.map_or(0, Int::get),
        min: p.min.map(|d| d.0),
        max: p.max.map(|d| d.0),
    })
}

#[cfg(test)]
mod tests;
