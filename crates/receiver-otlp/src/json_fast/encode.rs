//! The fast path's structs written as protobuf: the encoding prost gives
//! the request they stand for (fields in number order, scalars at their
//! default left out, oneof members and optional fields written whenever
//! present), so that what reads the bytes in place or decodes them gets
//! what the general path decodes.
//!
//! Each message knows its body's length ([`Msg::len`]) and writes it
//! ([`Msg::put`]). Lengths are computed once, in one pass before writing,
//! into [`Lens`] in the order the messages are written: a parent's length
//! is its children's, and asking for it again at each level of nesting (as
//! prost does) made the sizing ~15% of a bulk JSON request's CPU.

use super::*;

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

fn varint_len(v: u64) -> usize {
    ((64 - (v | 1).leading_zeros()) as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A field's key (every field number here is below 16: one byte).
fn put_key(out: &mut Vec<u8>, field: u64, wire_type: u64) {
    out.push((field << 3 | wire_type) as u8);
}

/// The body lengths of a request's messages, in the order [`Msg::put`]
/// writes them (each message before its children).
#[derive(Default)]
struct Lens {
    lens: Vec<usize>,
    /// The next one to write.
    next: usize,
}

impl Lens {
    /// Takes the next message's length (written by [`msg_len`] in this
    /// order, so always there; 0 rather than a panic if not).
    fn take(&mut self) -> usize {
        let n = self.lens.get(self.next).copied().unwrap_or_default();
        self.next += 1;
        n
    }
}

/// A message the request is made of.
trait Msg {
    /// Bytes of its body, noting every nested message's in `lens` (through
    /// [`msg_len`], in the order [`Msg::put`] writes them).
    fn len(&self, lens: &mut Lens) -> usize;
    /// Writes its body, with the lengths [`Msg::len`] noted.
    fn put(&self, out: &mut Vec<u8>, lens: &mut Lens);
}

/// Bytes of a length-delimited field of `len` bytes.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Bytes of `m` as a field, its body's length noted in `lens`.
fn msg_len(m: &impl Msg, lens: &mut Lens) -> usize {
    let at = lens.lens.len();
    lens.lens.push(0);
    let n = m.len(lens);
    lens.lens[at] = n;
    field_len(n)
}

fn msgs_len<M: Msg>(list: &Option<Vec<M>>, lens: &mut Lens) -> usize {
    list.iter().flatten().map(|m| msg_len(m, lens)).sum()
}

fn opt_len(m: &Option<impl Msg>, lens: &mut Lens) -> usize {
    m.as_ref().map_or(0, |m| msg_len(m, lens))
}

fn put_msg(out: &mut Vec<u8>, field: u64, m: &impl Msg, lens: &mut Lens) {
    put_key(out, field, LEN);
    put_varint(out, lens.take() as u64);
    m.put(out, lens);
}

fn put_msgs<M: Msg>(out: &mut Vec<u8>, field: u64, list: &Option<Vec<M>>, lens: &mut Lens) {
    for m in list.iter().flatten() {
        put_msg(out, field, m, lens);
    }
}

fn put_opt(out: &mut Vec<u8>, field: u64, m: &Option<impl Msg>, lens: &mut Lens) {
    if let Some(m) = m {
        put_msg(out, field, m, lens);
    }
}

/// A string field (left out when empty, as prost does).
fn str_len(s: &Option<Str<'_>>) -> usize {
    s.as_ref().map_or(0, |s| match s.0.len() {
        0 => 0,
        n => field_len(n),
    })
}

fn put_str(out: &mut Vec<u8>, field: u64, s: &Option<Str<'_>>) {
    if let Some(s) = s.as_ref().filter(|s| !s.0.is_empty()) {
        put_bytes(out, field, s.0.as_bytes());
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A varint field (left out when 0).
fn uint_len(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        1 + varint_len(v)
    }
}

fn put_uint(out: &mut Vec<u8>, field: u64, v: u64) {
    if v != 0 {
        put_key(out, field, VARINT);
        put_varint(out, v);
    }
}

/// A fixed64 field (left out when 0 unless `always`).
fn fixed_len(v: u64, always: bool) -> usize {
    if v == 0 && !always {
        0
    } else {
        9
    }
}

fn put_fixed(out: &mut Vec<u8>, field: u64, v: u64, always: bool) {
    if v != 0 || always {
        put_key(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A packed repeated fixed64 field (left out when empty).
fn packed_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        field_len(8 * n)
    }
}

fn put_packed(out: &mut Vec<u8>, field: u64, values: impl ExactSizeIterator<Item = u64>) {
    if values.len() > 0 {
        put_key(out, field, LEN);
        put_varint(out, 8 * values.len() as u64);
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// An int32 or enum (negative ones as ten-byte varints, as prost writes them).
fn int32(v: i32) -> u64 {
    i64::from(v) as u64
}

impl Request<'_> {
    /// The protobuf `ExportMetricsServiceRequest`.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut lens = Lens::default();
        let mut out = Vec::with_capacity(msgs_len(&self.resource_metrics, &mut lens));
        put_msgs(&mut out, 1, &self.resource_metrics, &mut lens);
        debug_assert_eq!(lens.next, lens.lens.len(), "every length noted was written");
        out
    }
}

impl Msg for JResourceMetrics<'_> {
    fn len(&self, lens: &mut Lens) -> usize {
        opt_len(&self.resource, lens)
            + msgs_len(&self.scope_metrics, lens)
            + str_len(&self.schema_url)
    }
    fn put(&self, out: &mut Vec<u8>, lens: &mut Lens) {
        put_opt(out, 1, &self.resource, lens);
        put_msgs(out, 2, &self.scope_metrics, lens);
        put_str(out, 3, &self.schema_url);
    }
}

impl Msg for JResource<'_> {
    fn len(&self, lens: &mut Lens) -> usize {
        msgs_len(&self.attributes, lens)
            + uint_len(self.dropped_attributes_count.map_or(0, |c| c.get()))
    }
    fn put(&self, out: &mut Vec<u8>, lens: &mut Lens) {
        put_msgs(out, 1, &self.attributes, lens);
        put_uint(out, 2, self.dropped_attributes_count.map_or(0, |c| c.get()));
    }
}

impl Msg for JScopeMetrics<'_> {
    fn len(&self, lens: &mut Lens) -> usize {
        opt_len(&self.scope, lens) + msgs_len(&self.metrics, lens) + str_len(&self.schema_url)
    }
    fn put(&self, out: &mut Vec<u8>, lens: &mut Lens) {
        put_opt(out, 1, &self.scope, lens);
        put_msgs(out, 2, &self.metrics, lens);
        put_str(out, 3, &self.schema_url);
    }
}

impl Msg for JScope<'_> {
    fn len(&self, lens: &mut Lens) -> usize {
        str_len(&self.name)
            + str_len(&self.version)
            + msgs_len(&self.attributes, lens)
            + uint_len(self.dropped_attributes_count.map_or(0, |c| c.get()))
    }
    fn put(&self, out: &mut Vec<u8>, lens: &mut Lens) {
        put_str(out, 1, &self.name);
        put_str(out, 2, &self.version);
        put_msgs(out, 3, &self.attributes, lens);
        put_uint(out, 4, self.dropped_attributes_count.map_or(0, |c| c.get()));
    }
}

impl Msg for JKeyValue<'_> {
    fn len(&self, _lens: &mut Lens) -> usize {
        let key = match self.key.0.len() {
            0 => 0,
            n => field_len(n),
        };
        key + self.value.as_ref().map_or(0, |v| field_len(member_len(v)))
    }
    fn put(&self, out: &mut Vec<u8>, _lens: &mut Lens) {
        if !self.key.0.is_empty() {
            put_bytes(out, 1, self.key.0.as_bytes());
        }
        if let Some(v) = &self.value {
            put_key(out, 2, LEN);
            put_varint(out, member_len(v) as u64);
            put_member(out, v);
        }
    }
}

/// Bytes of an `AnyValue`'s body: its member, written even at its default.
fn member_len(v: &Option<Member<'_>>) -> usize {
    match v {
        None => 0,
        Some(Member::Str(s)) => field_len(s.0.len()),
        Some(Member::Bool(_)) => 2,
        Some(Member::Int(i)) => 1 + varint_len(*i as u64),
        Some(Member::Double(_)) => 9,
    }
}

fn put_member(out: &mut Vec<u8>, v: &Option<Member<'_>>) {
    match v {
        None => {}
        Some(Member::Str(s)) => put_bytes(out, 1, s.0.as_bytes()),
        Some(Member::Bool(b)) => {
            put_key(out, 2, VARINT);
            out.push(u8::from(*b));
        }
        Some(Member::Int(i)) => {
            put_key(out, 3, VARINT);
            put_varint(out, *i as u64);
        }
        Some(Member::Double(d)) => put_fixed(out, 4, d.to_bits(), true),
    }
}

impl Msg for JMetric<'_> {
    fn len(&self, lens: &mut Lens) -> usize {
        str_len(&self.name)
            + str_len(&self.description)
            + str_len(&self.unit)
            + opt_len(&self.gauge, lens)
            + opt_len(&self.sum, lens)
            + opt_len(&self.histogram, lens)
            + msgs_len(&self.metadata, lens)
    }
    fn put(&self, out: &mut Vec<u8>, lens: &mut Lens) {
        put_str(out, 1, &self.name);
        put_str(out, 2, &self.description);
        put_str(out, 3, &self.unit);
        put_opt(out, 5, &self.gauge, lens);
        put_opt(out, 7, &self.sum, lens);
        put_opt(out, 9, &self.histogram, lens);
        put_msgs(out, 12, &self.metadata, lens);
    }
}

fn temporality(t: &Option<Temporality>) -> u64 {
    t.map_or(0, |t| int32(t.0))
}

impl Msg for JSum<'_> {
    fn len(&self, lens: &mut Lens) -> usize {
        msgs_len(&self.data_points, lens)
            + uint_len(temporality(&self.aggregation_temporality))
            + uint_len(u64::from(self.is_monotonic.unwrap_or_default()))
    }
    fn put(&self, out: &mut Vec<u8>, lens: &mut Lens) {
        put_msgs(out, 1, &self.data_points, lens);
        put_uint(out, 2, temporality(&self.aggregation_temporality));
        put_uint(out, 3, u64::from(self.is_monotonic.unwrap_or_default()));
    }
}

impl Msg for JGauge<'_> {
    fn len(&self, lens: &mut Lens) -> usize {
        msgs_len(&self.data_points, lens)
    }
    fn put(&self, out: &mut Vec<u8>, lens: &mut Lens) {
        put_msgs(out, 1, &self.data_points, lens);
    }
}

impl Msg for JHistogram<'_> {
    fn len(&self, lens: &mut Lens) -> usize {
        msgs_len(&self.data_points, lens) + uint_len(temporality(&self.aggregation_temporality))
    }
    fn put(&self, out: &mut Vec<u8>, lens: &mut Lens) {
        put_msgs(out, 1, &self.data_points, lens);
        put_uint(out, 2, temporality(&self.aggregation_temporality));
    }
}

fn time(t: &Option<Time>) -> u64 {
    t.map_or(0, |t| t.0)
}

fn flags(f: &Option<U32>) -> u64 {
    f.map_or(0, |f| f.get())
}

impl Msg for JNumberPoint<'_> {
    fn len(&self, lens: &mut Lens) -> usize {
        let value = if self.as_double.is_some() || self.as_int.is_some() {
            9
        } else {
            0
        };
        fixed_len(time(&self.start_time_unix_nano), false)
            + fixed_len(time(&self.time_unix_nano), false)
            + value
            + msgs_len(&self.attributes, lens)
            + uint_len(flags(&self.flags))
    }
    fn put(&self, out: &mut Vec<u8>, lens: &mut Lens) {
        put_fixed(out, 2, time(&self.start_time_unix_nano), false);
        put_fixed(out, 3, time(&self.time_unix_nano), false);
        if let Some(d) = self.as_double {
            put_fixed(out, 4, d.0.to_bits(), true);
        }
        if let Some(i) = self.as_int {
            put_fixed(out, 6, i.get::<i64>() as u64, true);
        }
        put_msgs(out, 7, &self.attributes, lens);
        put_uint(out, 8, flags(&self.flags));
    }
}

fn optional_double(d: &Option<Double>) -> usize {
    d.map_or(0, |_| 9)
}

impl Msg for JHistogramPoint<'_> {
    fn len(&self, lens: &mut Lens) -> usize {
        fixed_len(time(&self.start_time_unix_nano), false)
            + fixed_len(time(&self.time_unix_nano), false)
            + fixed_len(self.count.map_or(0, |c| c.get()), false)
            + optional_double(&self.sum)
            + packed_len(self.bucket_counts.as_ref().map_or(0, Vec::len))
            + packed_len(self.explicit_bounds.as_ref().map_or(0, Vec::len))
            + msgs_len(&self.attributes, lens)
            + uint_len(flags(&self.flags))
            + optional_double(&self.min)
            + optional_double(&self.max)
    }
    fn put(&self, out: &mut Vec<u8>, lens: &mut Lens) {
        put_fixed(out, 2, time(&self.start_time_unix_nano), false);
        put_fixed(out, 3, time(&self.time_unix_nano), false);
        put_fixed(out, 4, self.count.map_or(0, |c| c.get()), false);
        if let Some(d) = self.sum {
            put_fixed(out, 5, d.0.to_bits(), true);
        }
        let counts = self.bucket_counts.as_deref().unwrap_or_default();
        put_packed(out, 6, counts.iter().map(|c| c.get::<u64>()));
        let bounds = self.explicit_bounds.as_deref().unwrap_or_default();
        put_packed(out, 7, bounds.iter().map(|d| d.0.to_bits()));
        put_msgs(out, 9, &self.attributes, lens);
        put_uint(out, 10, flags(&self.flags));
        if let Some(d) = self.min {
            put_fixed(out, 11, d.0.to_bits(), true);
        }
        if let Some(d) = self.max {
            put_fixed(out, 12, d.0.to_bits(), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_have_the_length_they_are_written_with() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = vec![];
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }
}
