//! The fast path for OTLP/JSON metrics: the body read in one pass into
//! typed structs that borrow its strings (no `serde_json::Value` tree, no
//! rewriting pass, no path strings, no allocation per string), then written
//! as the protobuf `ExportMetricsServiceRequest` it stands for
//! ([`metrics_proto`]). A pipeline that reads protobuf bytes in place (the
//! aggregation processor) is handed those bytes, as if the request had come
//! as protobuf; where the request is needed decoded, [`metrics`] decodes
//! them with prost. It covers the shape the OpenTelemetry SDKs write
//! (Claude Code's and Gemini CLI's `http/json`).
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

use std::borrow::Cow;
use std::marker::PhantomData;

use prost::Message;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;

use otelcol_core::pdata::{Logs, Metrics, Traces};

mod encode;

/// The export requests, with their fast OTLP/JSON path where they have one
/// (metrics); [`crate::decode::decode_json`] tries it first.
pub trait FastJson: Sized {
    /// The request decoded on the fast path, or `None` for the general one.
    fn fast_json(_body: &[u8]) -> Option<Self> {
        None
    }

    /// The request written as protobuf on the fast path (see
    /// [`metrics_proto`]), or `None` for the general one.
    fn fast_json_proto(_body: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

impl FastJson for Metrics {
    fn fast_json(body: &[u8]) -> Option<Self> {
        metrics(body)
    }
    fn fast_json_proto(body: &[u8]) -> Option<Vec<u8>> {
        metrics_proto(body)
    }
}
impl FastJson for Logs {}
impl FastJson for Traces {}

/// Decodes an OTLP/JSON metrics export request on the fast path; `None`
/// when the request is outside its subset (see the module docs). Safe on
/// any input: serde_json keeps its own 128-level recursion limit here.
pub fn metrics(body: &[u8]) -> Option<Metrics> {
    Metrics::decode(&metrics_proto(body)?[..]).ok()
}

/// An OTLP/JSON metrics export request written as the protobuf encoding of
/// the same request, on the fast path; `None` when the request is outside
/// its subset (see the module docs).
pub fn metrics_proto(body: &[u8]) -> Option<Vec<u8>> {
    let request: Request<'_> = serde_json::from_slice(body).ok()?;
    request.within().then(|| request.encode())
}

/// A string of the body: borrowed, unless it had escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// A timestamp: a whole non-negative number, or a string of digits, that
/// fits 64 bits (as [`crate::json`] checks it).
#[derive(Clone, Copy)]
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
#[derive(Clone, Copy)]
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
    fn get<T: TryFrom<i128> + Default>(&self) -> T {
        T::try_from(self.0).unwrap_or_default()
    }
}

/// A finite double, as a number or a string (as [`crate::json`] reads
/// doubles given as strings).
#[derive(Clone, Copy)]
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
#[derive(Clone, Copy)]
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
struct Request<'a> {
    #[serde(borrow)]
    resource_metrics: Option<Vec<JResourceMetrics<'a>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JResourceMetrics<'a> {
    #[serde(borrow)]
    resource: Option<JResource<'a>>,
    #[serde(borrow)]
    scope_metrics: Option<Vec<JScopeMetrics<'a>>>,
    #[serde(borrow)]
    schema_url: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JResource<'a> {
    #[serde(borrow)]
    attributes: Option<Vec<JKeyValue<'a>>>,
    dropped_attributes_count: Option<U32>,
    entity_refs: Option<Vec<IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JScopeMetrics<'a> {
    #[serde(borrow)]
    scope: Option<JScope<'a>>,
    #[serde(borrow)]
    metrics: Option<Vec<JMetric<'a>>>,
    #[serde(borrow)]
    schema_url: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JScope<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    version: Option<Str<'a>>,
    #[serde(borrow)]
    attributes: Option<Vec<JKeyValue<'a>>>,
    dropped_attributes_count: Option<U32>,
}

/// An attribute. `key` is required, as in the generated code; a field
/// twice, an unknown field, or two members of the value's oneof end the
/// fast path.
struct JKeyValue<'a> {
    key: Str<'a>,
    /// `None`: no value field (or null); `Some(None)`: `{}` or only nulls.
    value: Option<Option<Member<'a>>>,
}

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

/// An attribute value's member.
enum Member<'a> {
    Str(Str<'a>),
    Bool(bool),
    Int(i64),
    Double(f64),
}

/// The value of an attribute: `None` for `{}` or only nulls.
struct JAnyValue<'a>(Option<Member<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for JKeyValue<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = JKeyValue<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an attribute")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut key, mut value) = (None, None);
                while let Some(field) = map.next_key::<KeyValueField>()? {
                    match field {
                        KeyValueField::Key if key.is_none() => key = Some(map.next_value()?),
                        KeyValueField::Value if value.is_none() => {
                            value = Some(map.next_value::<Option<JAnyValue<'a>>>()?)
                        }
                        _ => return Err(de::Error::custom("field twice")),
                    }
                }
                Ok(JKeyValue {
                    key: key.ok_or_else(|| de::Error::missing_field("key"))?,
                    value: value.flatten().map(|v| v.0),
                })
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JAnyValue<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = JAnyValue<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an attribute value")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut seen = [false; 4];
                let mut out: Option<Member<'a>> = None;
                while let Some(field) = map.next_key::<AnyValueField>()? {
                    let i = field as usize;
                    if std::mem::replace(&mut seen[i], true) {
                        return Err(de::Error::custom("field twice"));
                    }
                    let member = match field {
                        AnyValueField::String => {
                            map.next_value::<Option<Str<'a>>>()?.map(Member::Str)
                        }
                        AnyValueField::Bool => map.next_value::<Option<bool>>()?.map(Member::Bool),
                        AnyValueField::Int => map
                            .next_value::<Option<I64>>()?
                            .map(|i| Member::Int(i.get())),
                        AnyValueField::Double => map
                            .next_value::<Option<Double>>()?
                            .map(|d| Member::Double(d.0)),
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
        d.deserialize_map(V(PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JMetric<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    description: Option<Str<'a>>,
    #[serde(borrow)]
    unit: Option<Str<'a>>,
    #[serde(borrow)]
    metadata: Option<Vec<JKeyValue<'a>>>,
    #[serde(borrow)]
    sum: Option<JSum<'a>>,
    #[serde(borrow)]
    gauge: Option<JGauge<'a>>,
    #[serde(borrow)]
    histogram: Option<JHistogram<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JSum<'a> {
    #[serde(borrow)]
    data_points: Option<Vec<JNumberPoint<'a>>>,
    aggregation_temporality: Option<Temporality>,
    is_monotonic: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JGauge<'a> {
    #[serde(borrow)]
    data_points: Option<Vec<JNumberPoint<'a>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JHistogram<'a> {
    #[serde(borrow)]
    data_points: Option<Vec<JHistogramPoint<'a>>>,
    aggregation_temporality: Option<Temporality>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JNumberPoint<'a> {
    #[serde(borrow)]
    attributes: Option<Vec<JKeyValue<'a>>>,
    start_time_unix_nano: Option<Time>,
    time_unix_nano: Option<Time>,
    exemplars: Option<Vec<IgnoredAny>>,
    flags: Option<U32>,
    as_double: Option<Double>,
    as_int: Option<I64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JHistogramPoint<'a> {
    #[serde(borrow)]
    attributes: Option<Vec<JKeyValue<'a>>>,
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

/// Whether a list outside the subset (exemplars, whose ids are hex strings;
/// entity refs) is absent or empty, as the tools send them.
fn empty(list: &Option<Vec<IgnoredAny>>) -> bool {
    list.as_ref().is_none_or(Vec::is_empty)
}

impl Request<'_> {
    /// Whether what was read is within the subset beyond what serde
    /// checked: no entity refs or exemplars, one kind of data per metric,
    /// at most one of a number point's values.
    fn within(&self) -> bool {
        self.resource_metrics.iter().flatten().all(|rm| {
            rm.resource.as_ref().is_none_or(|r| empty(&r.entity_refs))
                && rm
                    .scope_metrics
                    .iter()
                    .flatten()
                    .all(|sm| sm.metrics.iter().flatten().all(JMetric::within))
        })
    }
}

impl JMetric<'_> {
    fn within(&self) -> bool {
        let numbers = |points: &Option<Vec<JNumberPoint<'_>>>| {
            points
                .iter()
                .flatten()
                .all(|p| empty(&p.exemplars) && !(p.as_double.is_some() && p.as_int.is_some()))
        };
        match (&self.sum, &self.gauge, &self.histogram) {
            (None, None, None) => true,
            (Some(s), None, None) => numbers(&s.data_points),
            (None, Some(g), None) => numbers(&g.data_points),
            (None, None, Some(h)) => h.data_points.iter().flatten().all(|p| empty(&p.exemplars)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
