//! A borrowing reader of `ExportMetricsServiceRequest` protobuf bytes: the
//! engine reads attribute keys and values as slices of the request, with
//! no tree built and no allocation per point (a handful of flat lists per
//! request).
//!
//! It takes the common shape only: sums, gauges and explicit-bucket
//! histograms, attribute values that are strings, booleans, integers or
//! doubles, no exemplars. It answers
//! `None` for anything else, and for anything it is not sure prost would
//! read the same way: a repeated singular message (prost merges those), a
//! second member of a oneof, an entity reference, a key index, a group, a
//! malformed varint or length, a wrong wire type, invalid UTF-8. The
//! caller then decodes with prost, which reads the request or names the
//! error. So whatever this reader takes, prost takes too, with the same
//! meaning; `tests/view.rs` and the `metrics_view` fuzz target hold it to
//! that.

use std::borrow::Cow;
use std::ops::Range;

use crate::value::HistParts;

/// Whether [`Engine::add_encoded`](crate::Engine::add_encoded) reads
/// `bytes` in place rather than decoding them with prost first (for tests
/// and diagnostics).
pub fn reads_in_place(bytes: &[u8]) -> bool {
    View::parse(bytes).is_some()
}

/// One attribute as it is in the request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KvRef<'a> {
    pub key: &'a str,
    pub value: ValueRef<'a>,
}

/// An attribute's value: absent, an empty `AnyValue`, or a scalar.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ValueRef<'a> {
    Absent,
    Empty,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
}

/// A resource: its attributes and scopes, as ranges of [`View`]'s lists.
pub(crate) struct ResourceView {
    pub attrs: Range<usize>,
    pub scopes: Range<usize>,
}

/// A scope's name and version and its metrics.
pub(crate) struct ScopeView<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub metrics: Range<usize>,
}

/// What kind of points a metric holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum DataKind {
    /// No data field.
    None,
    Gauge,
    Sum {
        temporality: i32,
        monotonic: bool,
    },
    Histogram {
        temporality: i32,
    },
}

/// A metric's identity and its points.
pub(crate) struct MetricView<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub unit: &'a str,
    pub kind: DataKind,
    pub points: Range<usize>,
}

/// A data point: a number, or a histogram's numbers.
pub(crate) struct PointView {
    pub attrs: Range<usize>,
    pub start: u64,
    pub time: u64,
    pub flags: u32,
    /// A number point's value.
    pub value: Option<f64>,
    /// A histogram point's numbers, buckets and bounds.
    pub hist: Option<HistView>,
}

/// A histogram point's numbers; its bucket counts and bounds as ranges of
/// [`View::buckets`] and [`View::bounds`].
pub(crate) struct HistView {
    pub parts: HistParts,
    pub buckets: Range<usize>,
    pub bounds: Range<usize>,
}

/// Which data field a metric's points came in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Gauge,
    Sum,
    Histogram,
}

/// A whole request, flattened: every list in wire order, nested items as
/// contiguous ranges of the next list.
#[derive(Default)]
pub(crate) struct View<'a> {
    pub resources: Vec<ResourceView>,
    pub scopes: Vec<ScopeView<'a>>,
    pub metrics: Vec<MetricView<'a>>,
    pub points: Vec<PointView>,
    pub kvs: Vec<KvRef<'a>>,
    pub buckets: Vec<u64>,
    pub bounds: Vec<f64>,
}

impl<'a> View<'a> {
    /// Reads `bytes`, or `None` when they are outside the shape this reader
    /// takes (see the module docs).
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        // Sized for the usual shape up front: growing by doubling copied
        // the lists (~1.6% of a bulk request's CPU). A Claude Code-shaped
        // point is ~290 wire bytes with seven attributes of ~40; capped, so
        // that an odd shape (few attributes, large values) does not hold
        // memory it never uses.
        let mut v = View {
            points: Vec::with_capacity((bytes.len() / 256).min(1 << 14)),
            kvs: Vec::with_capacity((bytes.len() / 40).min(1 << 16)),
            ..View::default()
        };
        let mut w = Wire(bytes);
        while let Some((field, wt)) = w.key()? {
            match field {
                1 => {
                    let body = w.message(wt)?;
                    v.resource_metrics(body)?;
                }
                _ => w.skip(wt)?,
            }
        }
        Some(v)
    }

    fn resource_metrics(&mut self, body: &'a [u8]) -> Option<()> {
        let mut w = Wire(body);
        let scopes_from = self.scopes.len();
        let mut attrs = 0..0;
        let mut resource_seen = false;
        while let Some((field, wt)) = w.key()? {
            match field {
                1 if !resource_seen => {
                    resource_seen = true;
                    attrs = self.resource(w.message(wt)?)?;
                }
                2 => self.scope_metrics(w.message(wt)?)?,
                3 => {
                    w.string(wt)?;
                }
                1 => return None,
                _ => w.skip(wt)?,
            }
        }
        self.resources.push(ResourceView {
            attrs,
            scopes: scopes_from..self.scopes.len(),
        });
        Some(())
    }

    fn resource(&mut self, body: &'a [u8]) -> Option<Range<usize>> {
        let mut w = Wire(body);
        let from = self.kvs.len();
        while let Some((field, wt)) = w.key()? {
            match field {
                1 => {
                    let kv = key_value(w.message(wt)?)?;
                    self.kvs.push(kv);
                }
                2 => {
                    w.varint(wt)?;
                }
                3 => return None,
                _ => w.skip(wt)?,
            }
        }
        Some(from..self.kvs.len())
    }

    fn scope_metrics(&mut self, body: &'a [u8]) -> Option<()> {
        let mut w = Wire(body);
        let metrics_from = self.metrics.len();
        let (mut name, mut version) = ("", "");
        let mut scope_seen = false;
        while let Some((field, wt)) = w.key()? {
            match field {
                1 if !scope_seen => {
                    scope_seen = true;
                    (name, version) = scope(w.message(wt)?)?;
                }
                2 => self.metric(w.message(wt)?)?,
                3 => {
                    w.string(wt)?;
                }
                1 => return None,
                _ => w.skip(wt)?,
            }
        }
        self.scopes.push(ScopeView {
            name,
            version,
            metrics: metrics_from..self.metrics.len(),
        });
        Some(())
    }

    fn metric(&mut self, body: &'a [u8]) -> Option<()> {
        let mut w = Wire(body);
        let points_from = self.points.len();
        let (mut name, mut description, mut unit) = ("", "", "");
        let mut kind = DataKind::None;
        while let Some((field, wt)) = w.key()? {
            match field {
                1 => name = w.string(wt)?,
                2 => description = w.string(wt)?,
                3 => unit = w.string(wt)?,
                5 if kind == DataKind::None => kind = self.data(w.message(wt)?, Field::Gauge)?,
                7 if kind == DataKind::None => kind = self.data(w.message(wt)?, Field::Sum)?,
                9 if kind == DataKind::None => {
                    kind = self.data(w.message(wt)?, Field::Histogram)?
                }
                12 => {
                    key_value(w.message(wt)?)?;
                }
                5 | 7 | 9 | 10 | 11 => return None,
                _ => w.skip(wt)?,
            }
        }
        self.metrics.push(MetricView {
            name,
            description,
            unit,
            kind,
            points: points_from..self.points.len(),
        });
        Some(())
    }

    /// A gauge's, sum's or histogram's body.
    fn data(&mut self, body: &'a [u8], which: Field) -> Option<DataKind> {
        let mut w = Wire(body);
        let (mut temporality, mut monotonic) = (0i32, false);
        while let Some((field, wt)) = w.key()? {
            match (field, which) {
                (1, Field::Histogram) => self.hist_point(w.message(wt)?)?,
                (1, _) => self.point(w.message(wt)?)?,
                // prost reads an enum or int32 as the varint's low 32 bits.
                (2, Field::Sum | Field::Histogram) => temporality = w.varint(wt)? as i32,
                (3, Field::Sum) => monotonic = w.varint(wt)? != 0,
                _ => w.skip(wt)?,
            }
        }
        Some(match which {
            Field::Gauge => DataKind::Gauge,
            Field::Sum => DataKind::Sum {
                temporality,
                monotonic,
            },
            Field::Histogram => DataKind::Histogram { temporality },
        })
    }

    fn hist_point(&mut self, body: &'a [u8]) -> Option<()> {
        let mut w = Wire(body);
        let (kvs, buckets, bounds) = (self.kvs.len(), self.buckets.len(), self.bounds.len());
        let mut p = PointView {
            attrs: 0..0,
            start: 0,
            time: 0,
            flags: 0,
            value: None,
            hist: None,
        };
        let mut parts = HistParts::default();
        while let Some((field, wt)) = w.key()? {
            match field {
                9 => {
                    let kv = key_value(w.message(wt)?)?;
                    self.kvs.push(kv);
                }
                2 => p.start = w.fixed64(wt)?,
                3 => p.time = w.fixed64(wt)?,
                4 => parts.count = w.fixed64(wt)?,
                5 => parts.sum = Some(f64::from_bits(w.fixed64(wt)?)),
                6 => w.fixed64s(wt, |v| self.buckets.push(v))?,
                7 => w.fixed64s(wt, |v| self.bounds.push(f64::from_bits(v)))?,
                10 => p.flags = w.varint(wt)? as u32,
                11 => parts.min = Some(f64::from_bits(w.fixed64(wt)?)),
                12 => parts.max = Some(f64::from_bits(w.fixed64(wt)?)),
                8 => return None,
                _ => w.skip(wt)?,
            }
        }
        p.attrs = kvs..self.kvs.len();
        p.hist = Some(HistView {
            parts,
            buckets: buckets..self.buckets.len(),
            bounds: bounds..self.bounds.len(),
        });
        self.points.push(p);
        Some(())
    }

    fn point(&mut self, body: &'a [u8]) -> Option<()> {
        let mut w = Wire(body);
        let from = self.kvs.len();
        let mut p = PointView {
            attrs: 0..0,
            start: 0,
            time: 0,
            flags: 0,
            value: None,
            hist: None,
        };
        while let Some((field, wt)) = w.key()? {
            match field {
                7 => {
                    let kv = key_value(w.message(wt)?)?;
                    self.kvs.push(kv);
                }
                2 => p.start = w.fixed64(wt)?,
                3 => p.time = w.fixed64(wt)?,
                4 => p.value = Some(f64::from_bits(w.fixed64(wt)?)),
                6 => p.value = Some(w.fixed64(wt)? as i64 as f64),
                8 => p.flags = w.varint(wt)? as u32,
                5 => return None,
                _ => w.skip(wt)?,
            }
        }
        p.attrs = from..self.kvs.len();
        self.points.push(p);
        Some(())
    }
}

/// An instrumentation scope's name and version (its attributes are read
/// for validity only).
fn scope(body: &[u8]) -> Option<(&str, &str)> {
    let mut w = Wire(body);
    let (mut name, mut version) = ("", "");
    while let Some((field, wt)) = w.key()? {
        match field {
            1 => name = w.string(wt)?,
            2 => version = w.string(wt)?,
            3 => {
                key_value(w.message(wt)?)?;
            }
            4 => {
                w.varint(wt)?;
            }
            _ => w.skip(wt)?,
        }
    }
    Some((name, version))
}

fn key_value(body: &[u8]) -> Option<KvRef<'_>> {
    let mut w = Wire(body);
    let mut kv = KvRef {
        key: "",
        value: ValueRef::Absent,
    };
    while let Some((field, wt)) = w.key()? {
        match field {
            1 => kv.key = w.string(wt)?,
            2 if matches!(kv.value, ValueRef::Absent) => kv.value = any_value(w.message(wt)?)?,
            2 | 3 => return None,
            _ => w.skip(wt)?,
        }
    }
    Some(kv)
}

fn any_value(body: &[u8]) -> Option<ValueRef<'_>> {
    let mut w = Wire(body);
    let mut v = ValueRef::Empty;
    while let Some((field, wt)) = w.key()? {
        let read = match field {
            1 => ValueRef::Str(w.string(wt)?),
            2 => ValueRef::Bool(w.varint(wt)? != 0),
            3 => ValueRef::Int(w.varint(wt)? as i64),
            4 => ValueRef::Double(f64::from_bits(w.fixed64(wt)?)),
            5..=8 => return None,
            _ => {
                w.skip(wt)?;
                continue;
            }
        };
        if !matches!(v, ValueRef::Empty) {
            return None;
        }
        v = read;
    }
    Some(v)
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// The bytes left to read, with prost's rules for what is well formed.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    /// A varint of at most ten bytes whose tenth byte is 0 or 1.
    fn raw_varint(&mut self) -> Option<u64> {
        // One byte: every field key and most lengths here.
        if let Some((&b, rest)) = self.0.split_first() {
            if b < 0x80 {
                self.0 = rest;
                return Some(u64::from(b));
            }
        }
        let mut value = 0u64;
        for (i, &b) in self.0.iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return None;
                }
                self.0 = &self.0[i + 1..];
                return Some(value);
            }
        }
        None
    }

    /// The next field's number and wire type; `Some(None)` at the end.
    fn key(&mut self) -> Option<Option<(u32, u8)>> {
        if self.0.is_empty() {
            return Some(None);
        }
        let key = self.raw_varint()?;
        let key = u32::try_from(key).ok()?;
        let (field, wt) = (key >> 3, (key & 7) as u8);
        (field >= 1 && wt <= FIXED32).then_some(Some((field, wt)))
    }

    fn varint(&mut self, wt: u8) -> Option<u64> {
        (wt == VARINT).then_some(())?;
        self.raw_varint()
    }

    fn fixed64(&mut self, wt: u8) -> Option<u64> {
        (wt == FIXED64).then_some(())?;
        let (head, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*head))
    }

    /// A repeated fixed64 field: packed (a multiple of 8 bytes) or one
    /// value, each given to `push`.
    fn fixed64s(&mut self, wt: u8, mut push: impl FnMut(u64)) -> Option<()> {
        if wt == FIXED64 {
            push(self.fixed64(wt)?);
            return Some(());
        }
        let packed = self.message(wt)?;
        (packed.len() % 8 == 0).then_some(())?;
        for chunk in packed.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            push(u64::from_le_bytes(b));
        }
        Some(())
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        (n <= self.0.len()).then_some(())?;
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// A length-delimited field's body.
    fn message(&mut self, wt: u8) -> Option<&'a [u8]> {
        (wt == LEN).then_some(())?;
        let n = usize::try_from(self.raw_varint()?).ok()?;
        self.take(n)
    }

    fn string(&mut self, wt: u8) -> Option<&'a str> {
        std::str::from_utf8(self.message(wt)?).ok()
    }

    /// Skips a field this reader does not use (groups are refused).
    fn skip(&mut self, wt: u8) -> Option<()> {
        match wt {
            VARINT => self.raw_varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.message(wt).map(drop),
            FIXED32 => self.take(4).map(drop),
            _ => None,
        }
    }
}

fn varint_len(v: u64) -> usize {
    (((64 - (v | 1).leading_zeros()) * 9 + 64) / 64) as usize
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl KvRef<'_> {
    /// The user key's value this attribute gives: a non-empty string, or
    /// an integer, boolean or double in its decimal form.
    pub fn user_value(&self) -> Option<Cow<'_, str>> {
        match self.value {
            ValueRef::Str(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
            ValueRef::Int(i) => Some(Cow::Owned(i.to_string())),
            ValueRef::Bool(b) => Some(Cow::Owned(b.to_string())),
            ValueRef::Double(d) => Some(Cow::Owned(d.to_string())),
            _ => None,
        }
    }

    /// Appends the attribute as prost encodes the `KeyValue` it decodes
    /// to, length-delimited: the canonical bytes series are keyed by.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // The common case, a string under a key, every length one byte:
        // total = (2 + key) + 2 + (2 + string).
        if let ValueRef::Str(s) = self.value {
            let (k, v) = (self.key.len(), s.len());
            if k > 0 && k + v + 6 < 0x80 {
                out.reserve(k + v + 7);
                out.extend_from_slice(&[(k + v + 6) as u8, 0x0a, k as u8]);
                out.extend_from_slice(self.key.as_bytes());
                out.extend_from_slice(&[0x12, (v + 2) as u8, 0x0a, v as u8]);
                out.extend_from_slice(s.as_bytes());
                return;
            }
        }
        let value_len = match self.value {
            ValueRef::Absent | ValueRef::Empty => 0,
            ValueRef::Str(s) => 1 + varint_len(s.len() as u64) + s.len(),
            ValueRef::Bool(_) => 2,
            ValueRef::Int(i) => 1 + varint_len(i as u64),
            ValueRef::Double(_) => 9,
        };
        let key_len = match self.key.len() {
            0 => 0,
            n => 1 + varint_len(n as u64) + n,
        };
        let total = key_len
            + match self.value {
                ValueRef::Absent => 0,
                _ => 1 + varint_len(value_len as u64) + value_len,
            };
        put_varint(out, total as u64);
        if !self.key.is_empty() {
            out.push(0x0a);
            put_varint(out, self.key.len() as u64);
            out.extend_from_slice(self.key.as_bytes());
        }
        if matches!(self.value, ValueRef::Absent) {
            return;
        }
        out.push(0x12);
        put_varint(out, value_len as u64);
        match self.value {
            ValueRef::Absent | ValueRef::Empty => {}
            ValueRef::Str(s) => {
                out.push(0x0a);
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            ValueRef::Bool(b) => out.extend_from_slice(&[0x10, u8::from(b)]),
            ValueRef::Int(i) => {
                out.push(0x18);
                put_varint(out, i as u64);
            }
            ValueRef::Double(d) => {
                out.push(0x21);
                out.extend_from_slice(&d.to_bits().to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otelcol_core::pdata::proto::common::v1::{any_value::Value, AnyValue, KeyValue};
    use prost::Message;

    fn kv(key: &str, value: Option<Option<Value>>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.map(|value| AnyValue { value }),
            ..Default::default()
        }
    }

    /// The canonical bytes are prost's encoding of the decoded attribute,
    /// for every scalar form and the edge lengths and values of each.
    #[test]
    fn an_attribute_encodes_as_prost_encodes_what_it_decodes_to() {
        let long = "x".repeat(200);
        let mut cases = vec![
            kv("", None),
            kv("k", None),
            kv("", Some(None)),
            kv("k", Some(None)),
            kv(&long, Some(Some(Value::StringValue(long.clone())))),
            kv("k", Some(Some(Value::StringValue(String::new())))),
            kv("k", Some(Some(Value::StringValue("é✓".into())))),
            kv("", Some(Some(Value::StringValue("v".into())))),
            // Whole encodings of 127 and 128 bytes: the last with
            // one-byte lengths, the first without.
            kv("k", Some(Some(Value::StringValue("x".repeat(120))))),
            kv("k", Some(Some(Value::StringValue("x".repeat(121))))),
            kv("k", Some(Some(Value::StringValue("x".repeat(126))))),
            kv("k", Some(Some(Value::BoolValue(true)))),
            kv("k", Some(Some(Value::BoolValue(false)))),
            kv("k", Some(Some(Value::DoubleValue(f64::NAN)))),
            kv("k", Some(Some(Value::DoubleValue(-0.0)))),
        ];
        for i in [0, 1, -1, 127, 128, i64::MAX, i64::MIN, 300, -300] {
            cases.push(kv("n", Some(Some(Value::IntValue(i)))));
        }
        for case in cases {
            let wire = case.encode_to_vec();
            let read = key_value(&wire).expect("a scalar attribute is read");
            let mut ours = vec![];
            read.encode(&mut ours);
            assert_eq!(ours, case.encode_length_delimited_to_vec(), "{case:?}");
        }
    }

    #[test]
    fn varints_follow_prosts_rules() {
        let read = |b: &[u8]| Wire(b).raw_varint();
        assert_eq!(read(&[0x96, 0x01]), Some(150));
        assert_eq!(
            read(&[0xff; 9].iter().copied().chain([1]).collect::<Vec<_>>()),
            Some(u64::MAX)
        );
        assert_eq!(
            read(&[0xff; 9].iter().copied().chain([2]).collect::<Vec<_>>()),
            None
        );
        assert_eq!(read(&[0x80; 10]), None);
        assert_eq!(read(&[0x80]), None);
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut out = vec![];
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(read(&out), Some(v));
        }
    }
}
