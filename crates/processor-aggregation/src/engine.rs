//! The aggregation engine: a plain struct with no clock, no task and no
//! locks. Feed it requests with [`Engine::add`], take the totals of closed
//! windows with [`Engine::take_closed`] (or in bounded pieces with
//! [`Engine::take_closed_series`]), and everything with [`Engine::take_all`].

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use otelcol_core::consumer::{Batch, RequestContext};
use otelcol_core::pdata::depth::{check_proto, Msg};
use otelcol_core::pdata::proto::common::v1::{any_value, AnyValue, KeyValue};
use otelcol_core::pdata::proto::metrics::v1::{metric, number_data_point, NumberDataPoint};
use otelcol_core::pdata::{Metrics, Payload};
use prost::Message;

use crate::config::{AggregationConfig, Lookup, MissingKey};
use crate::emission::{Emissions, Piece, PIECE_SERIES};
use crate::heads::Heads;
use crate::intern::{Attr, AttrInterner, Encoded, Interner, ListInterner};
use crate::layout::{Layout, Layouts};
use crate::output::OutKind;
use crate::series::{Acc, Closed, Group, Series, SeriesKey, SeriesRef};
use crate::stream::{StreamIdentity, Streams};
use crate::value::{Cumulative, ExpHist, GaugeAcc, Hist, Stamp, Step, StreamLast, StreamLasts};
use crate::view::{DataKind, KvRef, ValueRef, View};

const TEMPORALITY_CUMULATIVE: i32 = 2;
const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// What one call to [`Engine::add`] did with the points it was given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AddOutcome {
    /// Points that now count in a total.
    pub accepted: u64,
    /// Of those, points for a window that was already emitted (emitted
    /// again: as extra deltas for additive kinds, as a replacement for
    /// gauges).
    pub late: u64,
    /// First points of cumulative streams that began before what the engine
    /// can vouch for: baseline only.
    pub baseline: u64,
    /// Points not counted, by reason.
    pub dropped: Dropped,
    /// Cumulative streams forgotten to stay within `max_streams`.
    pub streams_evicted: u64,
    /// Names of metrics that had points without the user key (for the warning).
    pub missing_key_metrics: Vec<String>,
    /// One record per point, when tracing is on ([`Engine::set_tracing`]).
    pub traces: Vec<PointTrace>,
}

/// What happened to one point (for `MULTITUDES_DEBUG` logs).
#[derive(Clone, Debug, PartialEq)]
pub struct PointTrace {
    /// Metric name.
    pub metric: String,
    /// The user key found, if any.
    pub user: Option<String>,
    /// Start of the window it went to (Unix nanoseconds), 0 if none.
    pub window: u64,
    /// The value it added (a histogram's count).
    pub value: f64,
    /// What happened.
    pub outcome: &'static str,
}

/// Points not counted, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// No user key found (`missing_key: drop`).
    pub missing_key: u64,
    /// Summaries cannot be merged.
    pub summary: u64,
    /// No value, a non-finite number, malformed buckets, an unrepresentable
    /// exponential histogram, or a total that would overflow.
    pub invalid: u64,
    /// A cumulative point not newer than the last one of its stream.
    pub stale: u64,
}

impl Dropped {
    /// All dropped points.
    pub fn total(&self) -> u64 {
        self.missing_key + self.summary + self.invalid + self.stale
    }
}

/// A request's bytes made ready for [`Engine::add_prepared`]: read in
/// place ([`View`](crate::view)) or, outside that shape, decoded by prost.
pub struct Prepared<'a>(pub(crate) Form<'a>);

/// What [`Prepared`] holds.
pub(crate) enum Form<'a> {
    /// Read in place.
    View(View<'a>),
    /// Decoded by prost.
    Tree(Metrics),
}

impl Prepared<'_> {
    /// Whether the bytes were read in place (else decoded by prost).
    pub fn in_place(&self) -> bool {
        matches!(self.0, Form::View(_))
    }
}

/// A request as the engine takes it: read from its bytes ([`Prepared`]) or
/// already decoded.
#[derive(Clone, Copy)]
pub(crate) enum Input<'r, 'b> {
    /// Read from its bytes.
    Prepared(&'r Prepared<'b>),
    /// Decoded by an earlier stage.
    Tree(&'r Metrics),
}

/// The points of a request that one shard of a sharded engine takes (see
/// [`crate::shard`]); every point when there is no part.
pub(crate) struct Part<'r> {
    /// The shard.
    pub shard: u8,
    /// Per point, in the order the engine walks them: its shard.
    pub points: &'r [u8],
    /// Per resource: the shards its points go to (bit `i`: shard `i`), and
    /// the index of its first point in `points`.
    pub resources: &'r [(u64, u32)],
}

impl Part<'_> {
    /// Whether resource `r` has points for this shard, and its first point.
    fn resource(&self, r: usize) -> Option<usize> {
        let (mask, first) = *self.resources.get(r)?;
        (mask & (1u64 << self.shard) != 0).then_some(first as usize)
    }

    /// Whether point `i` is this shard's.
    fn takes(&self, i: usize) -> bool {
        self.points.get(i) == Some(&self.shard)
    }
}

/// Why [`Engine::add`] refused a request as a whole (nothing of it was applied).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// The request needs more open series than `max_series` leaves room for.
    #[error("the request needs {needed} new series but only {free} of max_series {max} are free; retry after the next emission")]
    SeriesLimit {
        /// New series the request would open.
        needed: usize,
        /// Room left.
        free: usize,
        /// The configured bound.
        max: usize,
    },
    /// The request's bytes are not an `ExportMetricsServiceRequest`.
    #[error("the request is not valid OTLP protobuf: {0}")]
    Undecodable(String),
}

/// An attribute as the engine reads it: a decoded [`KeyValue`] or a
/// [`KvRef`] borrowed from the request's bytes. Both give the same key,
/// user value and canonical bytes for the same attribute.
pub(crate) trait Attribute {
    /// The attribute's key.
    fn key(&self) -> &str;
    /// The user key's value it gives: a non-empty string, or an integer,
    /// boolean or double in decimal form.
    fn user_value(&self) -> Option<Cow<'_, str>>;
    /// Appends its canonical bytes: the prost encoding of the `KeyValue`,
    /// length-delimited.
    fn encode(&self, out: &mut Vec<u8>);
}

impl Attribute for KeyValue {
    fn key(&self) -> &str {
        &self.key
    }
    fn user_value(&self) -> Option<Cow<'_, str>> {
        self.value.as_ref().and_then(scalar_str)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        // Scalars (nearly every attribute) as the view writes them, which
        // is prost's encoding without its size pass; arrays, maps and
        // bytes by prost. Writing to a Vec cannot run out of room.
        match scalar_ref(self) {
            Some(kv) => kv.encode(out),
            None => {
                let _ = self.encode_length_delimited(out);
            }
        }
    }
}

/// A decoded attribute whose value is absent, empty or a scalar, as the
/// view reads it from bytes.
fn scalar_ref(kv: &KeyValue) -> Option<KvRef<'_>> {
    if kv.key_strindex != 0 {
        return None;
    }
    let value = match &kv.value {
        None => ValueRef::Absent,
        Some(AnyValue { value: None }) => ValueRef::Empty,
        Some(AnyValue { value: Some(v) }) => match v {
            any_value::Value::StringValue(s) => ValueRef::Str(s),
            any_value::Value::BoolValue(b) => ValueRef::Bool(*b),
            any_value::Value::IntValue(i) => ValueRef::Int(*i),
            any_value::Value::DoubleValue(d) => ValueRef::Double(*d),
            _ => return None,
        },
    };
    Some(KvRef {
        key: &kv.key,
        value,
    })
}

impl Attribute for KvRef<'_> {
    fn key(&self) -> &str {
        self.key
    }
    fn user_value(&self) -> Option<Cow<'_, str>> {
        KvRef::user_value(self)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        KvRef::encode(self, out)
    }
}

/// Encodes `attrs` (those `keep` accepts) sorted by key into `out`.
fn canonical_into<A: Attribute>(
    out: &mut Vec<u8>,
    order: &mut Vec<usize>,
    attrs: &[A],
    keep: impl Fn(&A) -> bool,
) {
    out.clear();
    order.clear();
    order.extend((0..attrs.len()).filter(|&i| keep(&attrs[i])));
    order.sort_by(|&a, &b| attrs[a].key().cmp(attrs[b].key()));
    for &i in order.iter() {
        attrs[i].encode(out);
    }
}

/// Decodes a series' attribute list.
pub(crate) fn decode_attr_list(list: &[Attr]) -> Vec<KeyValue> {
    list.iter()
        .filter_map(|a| KeyValue::decode_length_delimited(&a.0 .0[..]).ok())
        .collect()
}

/// Decodes attributes written by [`canonical_into`].
pub(crate) fn decode_attrs(mut bytes: &[u8]) -> Vec<KeyValue> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match KeyValue::decode_length_delimited(&mut bytes) {
            Ok(kv) => out.push(kv),
            Err(_) => break,
        }
    }
    out
}

fn scalar_str(v: &AnyValue) -> Option<Cow<'_, str>> {
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
        any_value::Value::IntValue(i) => Some(Cow::Owned(i.to_string())),
        any_value::Value::BoolValue(b) => Some(Cow::Owned(b.to_string())),
        any_value::Value::DoubleValue(d) => Some(Cow::Owned(d.to_string())),
        _ => None,
    }
}

/// A point's value, validated.
enum Value {
    Number(f64),
    Hist(Hist),
    Exp(ExpHist),
}

/// How a metric's points are aggregated.
#[derive(Clone, Copy)]
struct Shape {
    kind: OutKind,
    cumulative: bool,
}

/// One data point as the engine reads it; `value` is `None` when invalid.
struct Point<'a, A> {
    attrs: &'a [A],
    start: u64,
    time: u64,
    value: Option<Value>,
}

fn number(p: &NumberDataPoint) -> Option<f64> {
    if p.flags & FLAG_NO_RECORDED_VALUE != 0 {
        return None;
    }
    let v = match p.value? {
        number_data_point::Value::AsDouble(d) => d,
        number_data_point::Value::AsInt(i) => i as f64,
    };
    v.is_finite().then_some(v)
}

/// Calls `f` for every point of a metric; returns the summary points
/// (which cannot be merged and are only counted).
fn each_point(data: Option<&metric::Data>, mut f: impl FnMut(Shape, Point<'_, KeyValue>)) -> u64 {
    let flagged = |flags: u32| flags & FLAG_NO_RECORDED_VALUE != 0;
    match data {
        Some(metric::Data::Sum(s)) => {
            let shape = sum_shape(s.aggregation_temporality, s.is_monotonic);
            for p in &s.data_points {
                let value = number(p).map(Value::Number);
                let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
                f(
                    shape,
                    Point {
                        attrs: &p.attributes,
                        start,
                        time,
                        value,
                    },
                );
            }
        }
        Some(metric::Data::Gauge(g)) => {
            let shape = Shape {
                kind: OutKind::Gauge,
                cumulative: false,
            };
            for p in &g.data_points {
                let value = number(p).map(Value::Number);
                let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
                f(
                    shape,
                    Point {
                        attrs: &p.attributes,
                        start,
                        time,
                        value,
                    },
                );
            }
        }
        Some(metric::Data::Histogram(h)) => {
            let cumulative = h.aggregation_temporality == TEMPORALITY_CUMULATIVE;
            let shape = Shape {
                kind: OutKind::Histogram,
                cumulative,
            };
            for p in &h.data_points {
                let value = Hist::from_point(p)
                    .filter(|_| !flagged(p.flags))
                    .map(Value::Hist);
                let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
                f(
                    shape,
                    Point {
                        attrs: &p.attributes,
                        start,
                        time,
                        value,
                    },
                );
            }
        }
        Some(metric::Data::ExponentialHistogram(h)) => {
            let cumulative = h.aggregation_temporality == TEMPORALITY_CUMULATIVE;
            let shape = Shape {
                kind: OutKind::ExpHistogram,
                cumulative,
            };
            for p in &h.data_points {
                let value = (!flagged(p.flags))
                    .then(|| ExpHist::from_point(p))
                    .flatten()
                    .map(Value::Exp);
                let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
                f(
                    shape,
                    Point {
                        attrs: &p.attributes,
                        start,
                        time,
                        value,
                    },
                );
            }
        }
        Some(metric::Data::Summary(s)) => return s.data_points.len() as u64,
        None => {}
    }
    0
}

/// What the engine was configured with, read-only while it runs.
struct Rules {
    config: AggregationConfig,
    keys: Vec<String>,
    lookups: Vec<Lookup>,
    interval: u64,
    grace: u64,
    skew: u64,
    tracing: bool,
}

/// What the engine holds. Maps use aHash with per-process random keys:
/// several times faster than SipHash on these short keys, and still keyed,
/// so senders cannot choose attribute values that collide.
pub(crate) struct State {
    pub(crate) series: hashbrown::HashMap<SeriesKey, Series, ahash::RandomState>,
    /// Emitted totals of non-additive kinds (gauges), kept one more window
    /// so that a late point's re-emission replaces the window's value.
    pub(crate) kept: HashMap<SeriesKey, Acc, ahash::RandomState>,
    pub(crate) groups: HashSet<Arc<Group>, ahash::RandomState>,
    pub(crate) streams: Streams,
    pub(crate) resource_hasher: ahash::RandomState,
    pub(crate) strs: Interner<str>,
    pub(crate) bytes: Interner<[u8]>,
    pub(crate) attrs: AttrInterner,
    pub(crate) lists: ListInterner,
    /// Where each attribute ends in `scratch` (a point's list, encoded).
    pub(crate) ends: Vec<usize>,
    pub(crate) list: Vec<Attr>,
    pub(crate) scratch: Vec<u8>,
    pub(crate) order: Vec<usize>,
    /// The key layouts of the last points added, the current point's first.
    pub(crate) layout: Layouts,
    /// The metrics of the last points added, the current point's first.
    pub(crate) heads: Heads,
    /// The `now` of the latest emission: windows closed by then were emitted.
    pub(crate) emitted_through: u64,
    /// Closed totals not yet taken by every downstream branch (they count
    /// against `max_series`).
    pub(crate) emissions: Emissions,
    /// The keys of the hashers whose results are kept (stream ids), so a
    /// restored engine computes the same ids.
    pub(crate) seeds: Seeds,
    /// While [`Engine::add`] runs: the request's
    /// [`ROUTED_SINCE_HEADER`](otelcol_core::consumer::ROUTED_SINCE_HEADER)
    /// time (0 without one), a further floor for counting a new cumulative
    /// stream's first point in full.
    pub(crate) request_floor: u64,
    /// While [`Engine::add`] runs: the user key last resolved, interned (a
    /// request's points mostly share one user: two interner lookups saved
    /// per point).
    pub(crate) last_user: Option<(Arc<str>, Arc<str>)>,
}

/// The keys of the hashers whose results outlive the process: stream ids
/// and the input-resource ids they are made of. Random per engine, kept in
/// its snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seeds(pub [u64; 12]);

impl Seeds {
    /// Fresh random keys.
    pub fn random() -> Self {
        let r = ahash::RandomState::new();
        let mut k = [0u64; 12];
        for (i, v) in k.iter_mut().enumerate() {
            *v = r.hash_one(i);
        }
        Self(k)
    }

    fn state(&self, i: usize) -> ahash::RandomState {
        let k = &self.0[i * 4..i * 4 + 4];
        ahash::RandomState::with_seeds(k[0], k[1], k[2], k[3])
    }
}

/// The resource, scope and metric a point belongs to.
struct Origin<'a, A> {
    token: Option<Arc<str>>,
    /// The input resource (where the user key may be).
    resource: &'a [A],
    /// The input resource's identity, for stream ids.
    resource_id: u64,
    /// The output resource: allow-listed attributes, canonical, interned.
    out_resource: Arc<[u8]>,
    scope: (&'a str, &'a str),
    name: Arc<str>,
    unit: Arc<str>,
    description: Arc<str>,
    /// The interned [`Group`] of the metric's last point (in this request
    /// or an earlier one): the next point's too when its token, resource,
    /// kind and user key name are the same (as they are for nearly every
    /// point), saving a group lookup per point.
    group: std::cell::RefCell<Option<Arc<Group>>>,
}

impl<'a, A> Origin<'a, A> {
    /// The origin of a metric's points; `head` is the metric's name, unit
    /// and description.
    fn new(
        st: &mut State,
        token: &Option<Arc<str>>,
        resource: &'a [A],
        resource_id: u64,
        out_resource: &Arc<[u8]>,
        scope: (&'a str, &'a str),
        (name, unit, description): (&str, &str, &str),
    ) -> Self {
        let head = st.heads.get(&mut st.strs, name, unit, description);
        Origin {
            token: token.clone(),
            resource,
            resource_id,
            out_resource: out_resource.clone(),
            scope,
            name: head.name.clone(),
            unit: head.unit.clone(),
            description: head.description.clone(),
            group: std::cell::RefCell::new(head.group.clone()),
        }
    }

    /// After the metric's last point: its group is remembered for the
    /// metric's next appearance.
    fn done(self, st: &mut State) {
        if let Some(head) = st.heads.current() {
            head.group = self.group.into_inner();
        }
    }
}

/// Per-user totals per window. See the crate docs for the rules.
pub struct Engine {
    rules: Rules,
    pub(crate) state: State,
    /// Series per piece of an emission.
    piece_series: usize,
}

impl Rules {
    /// The user key of a point: (key name, value), by the configured lookups.
    /// `layout` is that of `attrs`.
    fn find_user<'a, A: Attribute>(
        &'a self,
        resource: &'a [A],
        attrs: &'a [A],
        layout: &Layout,
        ctx: &'a RequestContext,
    ) -> Option<(&'a str, Cow<'a, str>)> {
        let in_point = || {
            self.keys.iter().zip(&layout.user_at).find_map(|(k, at)| {
                at.and_then(|i| attrs[i].user_value())
                    .map(|v| (k.as_str(), v))
            })
        };
        let in_resource = || {
            self.keys.iter().find_map(|k| {
                resource
                    .iter()
                    .find(|kv| kv.key() == k)
                    .and_then(|kv| kv.user_value())
                    .map(|v| (k.as_str(), v))
            })
        };
        self.lookups.iter().find_map(|l| match l {
            Lookup::DataPoint => in_point(),
            Lookup::Resource => in_resource(),
            Lookup::Header(h) => ctx
                .header(h)
                .filter(|v| !v.is_empty())
                .map(|v| (self.keys[0].as_str(), Cow::Borrowed(v))),
        })
    }

    /// Whether a series keeps a point's attribute `key` (never a user key:
    /// the user is a dimension of its own).
    fn keeps(&self, key: &str) -> bool {
        let c = &self.config;
        let listed = |list: &[String]| list.iter().any(|k| k == key);
        !listed(&self.keys)
            && (c.include_attributes.is_empty() || listed(&c.include_attributes))
            && !listed(&c.exclude_attributes)
    }

    fn keeps_resource(&self, kv: &impl Attribute) -> bool {
        let key = kv.key();
        self.keys.iter().any(|k| k == key) || self.config.resource_attributes.keeps(key)
    }

    /// Makes the current layout of `layouts` that of a point's `attrs`.
    fn layout<A: Attribute>(&self, layouts: &mut Layouts, attrs: &[A]) {
        layouts.of(attrs, &self.keys, |k| self.keeps(k));
    }

    /// The window a point counts in: by its own time, or by `now` when it
    /// has none or is stamped later than `now + max_future_skew`.
    fn window_of(&self, time: u64, now: u64) -> u64 {
        let time = if time == 0 || time > now.saturating_add(self.skew) {
            now
        } else {
            time
        };
        time - time % self.interval
    }

    fn closed_by(&self, window: u64, now: u64) -> bool {
        window
            .saturating_add(self.interval)
            .saturating_add(self.grace)
            <= now
    }

    fn trace<A>(
        &self,
        out: &mut AddOutcome,
        o: &Origin<'_, A>,
        user: Option<&str>,
        window: u64,
        value: f64,
        outcome: &'static str,
    ) {
        if self.tracing {
            out.traces.push(PointTrace {
                metric: o.name.to_string(),
                user: user.map(str::to_string),
                window,
                value,
                outcome,
            });
        }
    }
}

impl Engine {
    /// An engine for `config` (validated) in a collector that started at
    /// `collector_start` (Unix nanoseconds).
    pub fn new(
        config: AggregationConfig,
        collector_start: u64,
    ) -> Result<Self, otelcol_core::config::ConfigError> {
        Self::with_seeds(config, collector_start, Seeds::random())
    }

    pub(crate) fn with_seeds(
        config: AggregationConfig,
        collector_start: u64,
        seeds: Seeds,
    ) -> Result<Self, otelcol_core::config::ConfigError> {
        config.validate()?;
        let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let ttl = nanos(config.stream_ttl).max(1);
        let state = State {
            series: hashbrown::HashMap::default(),
            kept: HashMap::default(),
            groups: HashSet::default(),
            streams: Streams::new(
                config.max_streams,
                ttl,
                collector_start,
                (seeds.state(0), seeds.state(1)),
            ),
            resource_hasher: seeds.state(2),
            strs: Interner::default(),
            bytes: Interner::default(),
            attrs: AttrInterner::default(),
            lists: ListInterner::default(),
            ends: vec![],
            list: vec![],
            scratch: vec![],
            order: vec![],
            layout: Layouts::default(),
            heads: Heads::default(),
            emitted_through: 0,
            emissions: Emissions::default(),
            seeds,
            request_floor: 0,
            last_user: None,
        };
        let rules = Rules {
            keys: config.keys(),
            lookups: config.lookups()?,
            interval: nanos(config.aggregation_interval),
            grace: nanos(config.grace),
            skew: nanos(config.max_future_skew),
            tracing: false,
            config,
        };
        Ok(Self {
            rules,
            state,
            piece_series: PIECE_SERIES,
        })
    }

    /// Records a [`PointTrace`] per point in each [`AddOutcome`] (costly; for debugging).
    pub fn set_tracing(&mut self, on: bool) {
        self.rules.tracing = on;
    }

    /// The configuration.
    pub fn config(&self) -> &AggregationConfig {
        &self.rules.config
    }

    /// Open (window, series) entries, emitted gauges kept for late points
    /// and closed totals not yet taken downstream included: what
    /// `max_series` bounds.
    pub fn open_series(&self) -> usize {
        self.state.series.len() + self.state.kept.len() + self.state.emissions.held
    }

    /// Cumulative streams remembered.
    pub fn open_streams(&self) -> usize {
        self.state.streams.len()
    }

    /// The window length in nanoseconds.
    pub fn interval_nanos(&self) -> u64 {
        self.rules.interval
    }

    /// Sets how many series an emission piece holds at most (default
    /// [`PIECE_SERIES`]).
    pub fn set_piece_series(&mut self, n: usize) {
        self.piece_series = n.max(1);
    }

    /// Adds every point of `request`, sent with `context`, at time `now`
    /// (Unix nanoseconds). A request that would open more series than
    /// `max_series` leaves room for is refused whole: nothing of it is
    /// applied, so the sender's retry is not a duplicate.
    pub fn add(
        &mut self,
        request: &Metrics,
        context: &RequestContext,
        now: u64,
    ) -> Result<AddOutcome, AddError> {
        self.add_from(request, context, now)
    }

    /// [`Engine::add`] for a request still in its protobuf encoding (an
    /// `ExportMetricsServiceRequest`): the common shape is read in place,
    /// attribute keys and values borrowed from `bytes` (see
    /// [`View`](crate::view)); anything else is decoded with prost first.
    /// The totals are the same either way. Bytes that are not read in place
    /// have their nesting checked ([`check_proto`]) before prost, which
    /// runs without a recursion limit in this build, decodes them.
    pub fn add_encoded(
        &mut self,
        bytes: &[u8],
        context: &RequestContext,
        now: u64,
    ) -> Result<AddOutcome, AddError> {
        let prepared = Self::prepare(bytes)?;
        self.add_prepared(&prepared, context, now)
    }

    /// The first half of [`Engine::add_encoded`], which needs no engine:
    /// reads `bytes` in place or decodes them (nesting-checked) with
    /// prost, so that a caller holding the engine behind a lock does this
    /// before taking it.
    pub fn prepare(bytes: &[u8]) -> Result<Prepared<'_>, AddError> {
        if let Some(view) = View::parse(bytes) {
            return Ok(Prepared(Form::View(view)));
        }
        check_proto(bytes, Msg::MetricsRequest)
            .map_err(|e| AddError::Undecodable(e.to_string()))?;
        Metrics::decode(bytes)
            .map(|m| Prepared(Form::Tree(m)))
            .map_err(|e| AddError::Undecodable(e.to_string()))
    }

    /// The second half of [`Engine::add_encoded`]: adds a request
    /// [prepared](Engine::prepare) from its bytes.
    pub fn add_prepared(
        &mut self,
        request: &Prepared<'_>,
        context: &RequestContext,
        now: u64,
    ) -> Result<AddOutcome, AddError> {
        match &request.0 {
            Form::View(view) => self.add_from(view, context, now),
            Form::Tree(tree) => self.add_from(tree, context, now),
        }
    }

    fn add_from<S: Source>(
        &mut self,
        request: &S,
        context: &RequestContext,
        now: u64,
    ) -> Result<AddOutcome, AddError> {
        self.check_room(request, context, now, None, 0)?;
        Ok(self.apply_from(request, context, now, None))
    }

    /// Refuses a request (the `part` of it this engine takes) that would
    /// open more series than `max_series` leaves room for, when `elsewhere`
    /// are held by the other shards.
    fn check_room<S: Source>(
        &mut self,
        request: &S,
        context: &RequestContext,
        now: u64,
        part: Option<&Part<'_>>,
        elsewhere: usize,
    ) -> Result<(), AddError> {
        let max = self.rules.config.max_series;
        let used = self.open_series().saturating_add(elsewhere);
        let free = max.saturating_sub(used);
        if request.points() > free {
            let needed = self.new_series_needed(request, context, now, part);
            if needed > free {
                return Err(AddError::SeriesLimit { needed, free, max });
            }
        }
        Ok(())
    }

    /// Adds the points of `request` (those of `part`, when given) with no
    /// `max_series` check.
    fn apply_from<S: Source>(
        &mut self,
        request: &S,
        context: &RequestContext,
        now: u64,
        part: Option<&Part<'_>>,
    ) -> AddOutcome {
        let mut out = AddOutcome::default();
        let (rules, st) = (&self.rules, &mut self.state);
        st.request_floor = context
            .header(otelcol_core::consumer::ROUTED_SINCE_HEADER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let summary = request.walk(rules, st, context, part, |rules, st, origin, shape, p| {
            add_point(rules, st, origin, shape, p, context, now, &mut out)
        });
        // A sharded request's summaries are counted by its router, once.
        if part.is_none() {
            out.dropped.summary += summary;
        }
        st.request_floor = 0;
        st.last_user = None;
        out
    }

    /// For a shard of a sharded engine: whether the `part` of `input` (all
    /// of it without one) fits in what `max_series` leaves with
    /// `elsewhere` held by the other shards; refused whole when it needs
    /// more. Changes no total ([`Engine::apply_part`] adds it).
    pub(crate) fn check_part(
        &mut self,
        input: Input<'_, '_>,
        context: &RequestContext,
        now: u64,
        part: Option<&Part<'_>>,
        elsewhere: usize,
    ) -> Result<(), AddError> {
        match input {
            Input::Prepared(Prepared(Form::View(v))) => {
                self.check_room(v, context, now, part, elsewhere)
            }
            Input::Prepared(Prepared(Form::Tree(t))) | Input::Tree(t) => {
                self.check_room(t, context, now, part, elsewhere)
            }
        }
    }

    /// New series the `part` of `input` would open here (an upper bound);
    /// for a request spread over several shards, checked against
    /// `max_series` as a whole before any shard applies its part.
    pub(crate) fn series_needed(
        &mut self,
        input: Input<'_, '_>,
        context: &RequestContext,
        now: u64,
        part: Option<&Part<'_>>,
    ) -> usize {
        match input {
            Input::Prepared(Prepared(Form::View(v))) => {
                self.new_series_needed(v, context, now, part)
            }
            Input::Prepared(Prepared(Form::Tree(t))) | Input::Tree(t) => {
                self.new_series_needed(t, context, now, part)
            }
        }
    }

    /// Adds the `part` of `input` with no `max_series` check (the caller
    /// made it, with [`Engine::series_needed`]).
    pub(crate) fn apply_part(
        &mut self,
        input: Input<'_, '_>,
        context: &RequestContext,
        now: u64,
        part: Option<&Part<'_>>,
    ) -> AddOutcome {
        match input {
            Input::Prepared(Prepared(Form::View(v))) => self.apply_from(v, context, now, part),
            Input::Prepared(Prepared(Form::Tree(t))) | Input::Tree(t) => {
                self.apply_from(t, context, now, part)
            }
        }
    }

    /// How many series not open now `request` would open (an upper bound:
    /// cumulative points that will only set a baseline are counted too).
    fn new_series_needed<S: Source>(
        &mut self,
        request: &S,
        ctx: &RequestContext,
        now: u64,
        part: Option<&Part<'_>>,
    ) -> usize {
        let mut new: HashSet<SeriesKey, ahash::RandomState> = HashSet::default();
        let (rules, st) = (&self.rules, &mut self.state);
        request.walk(rules, st, ctx, part, |rules, st, origin, shape, p| {
            if p.value.is_none() {
                return;
            }
            let Some(user) = resolve_user(rules, st, origin, p.attrs, ctx) else {
                return;
            };
            let window = rules.window_of(p.time, now);
            with_series(
                st,
                origin,
                shape.kind,
                p.attrs,
                &user,
                window,
                |series, _, id| {
                    if !series.contains_key(id.id()) {
                        new.insert(id.to_key());
                    }
                },
            );
            st.last_user = Some(user);
        });
        st.last_user = None;
        new.len()
    }

    /// Takes the totals of every window closed at `now` (`window_end + grace
    /// <= now`), one batch per client token, and forgets cumulative streams
    /// idle for longer than `stream_ttl`: [`Engine::close`],
    /// [`Engine::build_piece`] and [`Engine::piece_done`] in one call, for a
    /// caller with one consumer that cannot refuse.
    pub fn take_closed(&mut self, now: u64) -> Vec<Batch<Metrics>> {
        let id = self.close(now, 1);
        self.drain(id)
    }

    /// Takes every open window, the current one included (for shutdown).
    pub fn take_all(&mut self) -> Vec<Batch<Metrics>> {
        let id = self.close_all(1);
        let batches = self.drain(id);
        self.collect_garbage();
        batches
    }

    fn drain(&mut self, id: Option<u64>) -> Vec<Batch<Metrics>> {
        let Some(id) = id else { return vec![] };
        let mut batches = vec![];
        for p in self.pieces().into_iter().filter(|p| p.emission == id) {
            batches.extend(self.build_piece(p.emission, p.index));
            self.piece_done(p.emission, p.index, 0);
        }
        batches
    }

    /// Closes every window closed at `now`: their series leave the open
    /// set in one step and become an emission for `targets` downstream
    /// branches (see [`Engine::pieces`]); then forgets cumulative streams
    /// idle for `stream_ttl` and emitted gauges past their one-window keep.
    /// Returns the emission's id (`None`: nothing closed).
    pub fn close(&mut self, now: u64, targets: u32) -> Option<u64> {
        let rules = &self.rules;
        let st = &mut self.state;
        st.emitted_through = st.emitted_through.max(now);
        // Moved out in one pass (no list of keys on the side); a table left
        // mostly empty gives its room back.
        let closing = st
            .series
            .keys()
            .filter(|k| rules.closed_by(k.window, now))
            .count();
        let mut taken: Vec<(SeriesKey, Series)> = Vec::with_capacity(closing);
        // Moved, not cloned: no reference count touched.
        taken.extend(st.series.extract_if(|k, _| rules.closed_by(k.window, now)));
        if st.series.capacity() > 4 * st.series.len().max(crate::emission::PIECE_SERIES) {
            st.series.shrink_to_fit();
        }
        for (k, s) in &taken {
            if !k.group.kind.is_additive() {
                st.kept.insert(k.clone(), s.acc.clone());
            }
        }
        st.kept
            .retain(|k, _| !rules.closed_by(k.window.saturating_add(rules.interval), now));
        st.streams.expire(now);
        let id = st.emissions.push(taken, targets, self.piece_series);
        self.collect_garbage();
        id
    }

    /// Closes every open window, the current one included (for shutdown).
    pub fn close_all(&mut self, targets: u32) -> Option<u64> {
        let st = &mut self.state;
        st.kept.clear();
        // Taken whole, so the table is freed once its series are moved out
        // (`drain` would keep it allocated during the emission).
        let taken: Vec<(SeriesKey, Series)> = std::mem::take(&mut st.series).into_iter().collect();
        st.emissions.push(taken, targets, self.piece_series)
    }

    /// Every piece of an emission that some branch has not taken, oldest
    /// first.
    pub fn pieces(&self) -> Vec<Piece> {
        self.state.emissions.pieces()
    }

    /// The batches of one piece (one per client token), built from a copy:
    /// the piece stays until [`Engine::piece_done`] for every branch. The
    /// same piece always gives the same batches, in the same order.
    pub fn build_piece(&self, emission: u64, index: u32) -> Vec<Batch<Metrics>> {
        match self.state.emissions.series(emission, index) {
            Some(series) => self.closed(series.to_vec()).build(),
            None => vec![],
        }
    }

    /// A copy of one piece's series, to be built ([`Closed::build`]) without
    /// holding whatever guards the engine.
    pub fn piece(&self, emission: u64, index: u32) -> Closed {
        let series = self
            .state
            .emissions
            .series(emission, index)
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        self.closed(series)
    }

    /// Series in a piece (0 when it is gone).
    pub fn piece_len(&self, emission: u64, index: u32) -> usize {
        self.state
            .emissions
            .series(emission, index)
            .map_or(0, <[_]>::len)
    }

    /// Branch `target` took a piece (or refused it for good).
    pub fn piece_done(&mut self, emission: u64, index: u32, target: u32) {
        self.state.emissions.done(emission, index, target);
    }

    fn closed(&self, taken: Vec<(SeriesKey, Series)>) -> Closed {
        Closed {
            taken,
            interval: self.rules.interval,
            gauge: self.rules.config.gauge,
        }
    }

    /// Forgets shared values (users, attributes, groups) that no open series
    /// holds any more; call after the [`Closed`] taken were built.
    pub fn collect_garbage(&mut self) {
        let st = &mut self.state;
        st.groups.retain(|g| Arc::strong_count(g) > 1);
        st.strs.collect();
        st.bytes.collect();
        st.lists.collect();
        st.attrs.collect();
    }
}

/// A request the engine walks: the decoded tree ([`Metrics`]) or a view
/// borrowed from its protobuf bytes ([`View`]).
trait Source {
    type Attr: Attribute;
    /// Data points in the request.
    fn points(&self) -> usize;
    /// Calls `f` for every point (of `part`, when given) with its
    /// [`Origin`] and [`Shape`]; returns the summary points (which cannot be merged and are only
    /// counted).
    fn walk<F>(
        &self,
        rules: &Rules,
        st: &mut State,
        ctx: &RequestContext,
        part: Option<&Part<'_>>,
        f: F,
    ) -> u64
    where
        F: FnMut(&Rules, &mut State, &Origin<'_, Self::Attr>, Shape, Point<'_, Self::Attr>);
}

/// How a sum's points are aggregated.
fn sum_shape(temporality: i32, monotonic: bool) -> Shape {
    let cumulative = temporality == TEMPORALITY_CUMULATIVE;
    let kind = match (cumulative, monotonic) {
        (_, true) => OutKind::MonotonicSum,
        (false, false) => OutKind::NonMonotonicSum,
        (true, false) => OutKind::LastSum,
    };
    Shape { kind, cumulative }
}

/// A resource's identity (for stream ids) and its output attributes
/// (allow-listed, canonical, interned).
fn resource_origin<A: Attribute>(
    rules: &Rules,
    st: &mut State,
    resource: &[A],
) -> (u64, Arc<[u8]>) {
    canonical_into(&mut st.scratch, &mut st.order, resource, |_| true);
    let resource_id = st.resource_hasher.hash_one(&st.scratch[..]);
    canonical_into(&mut st.scratch, &mut st.order, resource, |kv| {
        rules.keeps_resource(kv)
    });
    (resource_id, st.bytes.get(&st.scratch))
}

impl Source for Metrics {
    type Attr = KeyValue;

    fn points(&self) -> usize {
        self.item_count()
    }

    fn walk<F>(
        &self,
        rules: &Rules,
        st: &mut State,
        ctx: &RequestContext,
        part: Option<&Part<'_>>,
        mut f: F,
    ) -> u64
    where
        F: FnMut(&Rules, &mut State, &Origin<'_, KeyValue>, Shape, Point<'_, KeyValue>),
    {
        let token = ctx.bearer_token().map(|t| st.strs.get(t.expose()));
        let mut summary = 0;
        // The next point's index (for `part`).
        let mut next = 0;
        for (r, rm) in self.resource_metrics.iter().enumerate() {
            if let Some(part) = part {
                match part.resource(r) {
                    Some(first) => next = first,
                    None => continue,
                }
            }
            let resource: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
            let (resource_id, out_resource) = resource_origin(rules, st, resource);
            for sm in &rm.scope_metrics {
                let scope = sm
                    .scope
                    .as_ref()
                    .map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
                for m in &sm.metrics {
                    let head = (m.name.as_str(), m.unit.as_str(), m.description.as_str());
                    let origin = Origin::new(
                        st,
                        &token,
                        resource,
                        resource_id,
                        &out_resource,
                        scope,
                        head,
                    );
                    summary += each_point(m.data.as_ref(), |shape, p| {
                        next += 1;
                        if part.is_some_and(|part| !part.takes(next - 1)) {
                            return;
                        }
                        rules.layout(&mut st.layout, p.attrs);
                        f(rules, st, &origin, shape, p)
                    });
                    origin.done(st);
                }
            }
        }
        summary
    }
}

impl<'v> Source for View<'v> {
    type Attr = KvRef<'v>;

    fn points(&self) -> usize {
        self.points.len()
    }

    fn walk<F>(
        &self,
        rules: &Rules,
        st: &mut State,
        ctx: &RequestContext,
        part: Option<&Part<'_>>,
        mut f: F,
    ) -> u64
    where
        F: FnMut(&Rules, &mut State, &Origin<'_, KvRef<'v>>, Shape, Point<'_, KvRef<'v>>),
    {
        let token = ctx.bearer_token().map(|t| st.strs.get(t.expose()));
        // The next point's index (for `part`).
        let mut next = 0;
        for (i, r) in self.resources.iter().enumerate() {
            if let Some(part) = part {
                match part.resource(i) {
                    Some(first) => next = first,
                    None => continue,
                }
            }
            let resource = &self.kvs[r.attrs.clone()];
            let (resource_id, out_resource) = resource_origin(rules, st, resource);
            for scope in &self.scopes[r.scopes.clone()] {
                for m in &self.metrics[scope.metrics.clone()] {
                    let shape = match m.kind {
                        DataKind::None => continue,
                        DataKind::Gauge => Shape {
                            kind: OutKind::Gauge,
                            cumulative: false,
                        },
                        DataKind::Sum {
                            temporality,
                            monotonic,
                        } => sum_shape(temporality, monotonic),
                        DataKind::Histogram { temporality } => Shape {
                            kind: OutKind::Histogram,
                            cumulative: temporality == TEMPORALITY_CUMULATIVE,
                        },
                    };
                    let scope = (scope.name, scope.version);
                    let head = (m.name, m.unit, m.description);
                    let origin = Origin::new(
                        st,
                        &token,
                        resource,
                        resource_id,
                        &out_resource,
                        scope,
                        head,
                    );
                    for p in &self.points[m.points.clone()] {
                        next += 1;
                        if part.is_some_and(|part| !part.takes(next - 1)) {
                            continue;
                        }
                        let recorded = p.flags & FLAG_NO_RECORDED_VALUE == 0;
                        let value = match &p.hist {
                            Some(h) => Hist::from_parts(
                                h.parts,
                                &self.buckets[h.buckets.clone()],
                                &self.bounds[h.bounds.clone()],
                            )
                            .filter(|_| recorded)
                            .map(Value::Hist),
                            None => p
                                .value
                                .filter(|v| recorded && v.is_finite())
                                .map(Value::Number),
                        };
                        let point = Point {
                            attrs: &self.kvs[p.attrs.clone()],
                            start: p.start,
                            time: p.time,
                            value,
                        };
                        rules.layout(&mut st.layout, point.attrs);
                        f(rules, st, &origin, shape, point);
                    }
                    origin.done(st);
                }
            }
        }
        0
    }
}

/// The user key of a point, interned: (key name, value). When it is the
/// request's last user it is moved out of `st.last_user`, and the caller
/// puts it back there when done with the point.
fn resolve_user<A: Attribute>(
    r: &Rules,
    st: &mut State,
    o: &Origin<'_, A>,
    attrs: &[A],
    ctx: &RequestContext,
) -> Option<(Arc<str>, Arc<str>)> {
    let (k, v) = match r.find_user(o.resource, attrs, st.layout.current(), ctx) {
        Some(found) => found,
        None if r.config.missing_key == MissingKey::Keep => (
            r.keys[0].as_str(),
            Cow::Borrowed(r.config.missing_key_value.as_str()),
        ),
        None => return None,
    };
    if let Some((key, user)) = st.last_user.take() {
        if *key == *k && *user == *v {
            return Some((key, user));
        }
    }
    Some((st.strs.get(k), st.strs.get(&v)))
}

/// The series maps, as [`with_series`] hands them over.
type SeriesMap = hashbrown::HashMap<SeriesKey, Series, ahash::RandomState>;
/// Emitted gauges kept for late points, as [`with_series`] hands them over.
type KeptMap = HashMap<SeriesKey, Acc, ahash::RandomState>;

/// Calls `f` with the open series, the kept gauges and the key (borrowed)
/// of the output series a point of `kind` with `attrs` goes to.
fn with_series<A: Attribute, R>(
    st: &mut State,
    o: &Origin<'_, A>,
    kind: OutKind,
    attrs: &[A],
    (user_key, user): &(Arc<str>, Arc<str>),
    window: u64,
    f: impl FnOnce(&mut SeriesMap, &KeptMap, SeriesRef<'_>) -> R,
) -> R {
    st.scratch.clear();
    st.ends.clear();
    for &i in st.layout.current().kept.iter() {
        attrs[i].encode(&mut st.scratch);
        st.ends.push(st.scratch.len());
    }
    let list = Encoded {
        bytes: &st.scratch,
        ends: &st.ends,
    };
    let attr_list = st.lists.get_encoded(list, &mut st.attrs, &mut st.list);
    let mut cached = o.group.borrow_mut();
    let group = group_of(&mut st.groups, &mut cached, o, kind, user_key);
    let id = SeriesRef {
        group,
        window,
        user,
        attrs: attr_list,
    };
    f(&mut st.series, &st.kept, id)
}

/// The interned group of a point of `kind` under `user_key`: the metric's
/// `cached` one when it fits, else looked up (and cached).
fn group_of<'c, A>(
    groups: &mut HashSet<Arc<Group>, ahash::RandomState>,
    cached: &'c mut Option<Arc<Group>>,
    o: &Origin<'_, A>,
    kind: OutKind,
    user_key: &Arc<str>,
) -> &'c Arc<Group> {
    let fits = |g: &Group| {
        g.kind == kind
            && Arc::ptr_eq(&g.user_key, user_key)
            && Arc::ptr_eq(&g.resource, &o.out_resource)
            && match (&g.token, &o.token) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    };
    if !cached.as_deref().is_some_and(fits) {
        *cached = None;
    }
    cached.get_or_insert_with(|| {
        let group = Group {
            token: o.token.clone(),
            resource: o.out_resource.clone(),
            name: o.name.clone(),
            kind,
            unit: o.unit.clone(),
            user_key: user_key.clone(),
            description: o.description.clone(),
        };
        match groups.get(&group) {
            Some(g) => g.clone(),
            None => {
                let g = Arc::new(group);
                groups.insert(g.clone());
                g
            }
        }
    })
}

/// The id of the cumulative stream a point belongs to (spec rule 3).
fn stream_id<A: Attribute>(
    st: &mut State,
    o: &Origin<'_, A>,
    kind: OutKind,
    attrs: &[A],
    user: &(Arc<str>, Arc<str>),
    start: u64,
) -> u128 {
    st.scratch.clear();
    for &i in st.layout.current().all.iter() {
        attrs[i].encode(&mut st.scratch);
    }
    st.streams.id(&StreamIdentity {
        token: o.token.as_deref(),
        user_key: &user.0,
        user: &user.1,
        resource: o.resource_id,
        scope: o.scope,
        name: &o.name,
        kind: kind as u8,
        attrs: &st.scratch,
        start,
    })
}

/// What a cumulative point brings: its increment (or, for a non-monotonic
/// sum, its value tagged with its stream), or `None` when it only set a
/// baseline or was stale (counted in `out`).
#[allow(clippy::too_many_arguments)]
fn cumulative<T: Cumulative, A: Attribute>(
    r: &Rules,
    st: &mut State,
    o: &Origin<'_, A>,
    kind: OutKind,
    p: &Point<'_, A>,
    user: &(Arc<str>, Arc<str>),
    value: T,
    now: u64,
    out: &mut AddOutcome,
) -> Option<(u128, Step<T>)> {
    let id = stream_id(st, o, kind, p.attrs, user, p.start);
    let stamp = Stamp {
        start: p.start,
        time: p.time,
        capped: p.time.min(now.saturating_add(r.skew)),
    };
    let floor = st.request_floor;
    let (step, evicted) = st.streams.step(id, stamp, value, now, floor);
    out.streams_evicted += evicted;
    match step {
        Step::Stale => {
            out.dropped.stale += 1;
            r.trace(
                out,
                o,
                Some(&user.1),
                0,
                0.0,
                "dropped: not newer than the stream's last point",
            );
            None
        }
        Step::Baseline if kind != OutKind::LastSum => {
            out.baseline += 1;
            r.trace(
                out,
                o,
                Some(&user.1),
                0,
                0.0,
                "baseline (the cumulative stream began before what the collector can vouch for)",
            );
            None
        }
        step => Some((id, step)),
    }
}

#[allow(clippy::too_many_arguments)]
fn add_point<A: Attribute>(
    r: &Rules,
    st: &mut State,
    o: &Origin<'_, A>,
    shape: Shape,
    p: Point<'_, A>,
    ctx: &RequestContext,
    now: u64,
    out: &mut AddOutcome,
) {
    let Some(value) = p.value.as_ref() else {
        out.dropped.invalid += 1;
        r.trace(out, o, None, 0, 0.0, "dropped: invalid value");
        return;
    };
    let Some(user) = resolve_user(r, st, o, p.attrs, ctx) else {
        out.dropped.missing_key += 1;
        let value = match value {
            Value::Number(v) => *v,
            Value::Hist(h) => h.count as f64,
            Value::Exp(h) => h.count as f64,
        };
        r.trace(out, o, None, 0, value, "dropped: user key not found");
        if !out.missing_key_metrics.iter().any(|n| **n == *o.name) {
            out.missing_key_metrics.push(o.name.to_string());
        }
        return;
    };
    add_user_point(r, st, o, shape, &p, value, &user, now, out);
    st.last_user = Some(user);
}

/// [`add_point`] for a point with a valid `value` and a `user`.
#[allow(clippy::too_many_arguments)]
fn add_user_point<A: Attribute>(
    r: &Rules,
    st: &mut State,
    o: &Origin<'_, A>,
    shape: Shape,
    p: &Point<'_, A>,
    value: &Value,
    user: &(Arc<str>, Arc<str>),
    now: u64,
    out: &mut AddOutcome,
) {
    let kind = shape.kind;
    let time = if p.time == 0 { now } else { p.time };
    let acc = match (value, shape.cumulative) {
        (Value::Number(v), false) if kind == OutKind::Gauge => {
            Acc::Gauge(Box::new(GaugeAcc::new(*v, time)))
        }
        (Value::Number(v), false) => Acc::Sum(*v),
        (Value::Number(v), true) => match cumulative(r, st, o, kind, p, user, *v, now, out) {
            None => return,
            Some((id, _)) if kind == OutKind::LastSum => {
                let time = p.time.min(now.saturating_add(r.skew));
                Acc::Lasts(Box::new(StreamLasts(vec![StreamLast {
                    stream: id,
                    value: *v,
                    time,
                }])))
            }
            Some((_, Step::Count(d))) => Acc::Sum(d),
            Some(_) => return,
        },
        (Value::Hist(h), false) => Acc::Hist(Box::new(h.clone())),
        (Value::Hist(h), true) => match cumulative(r, st, o, kind, p, user, h.clone(), now, out) {
            Some((_, Step::Count(d))) => Acc::Hist(Box::new(d)),
            _ => return,
        },
        (Value::Exp(h), false) => Acc::Exp(Box::new(h.clone())),
        (Value::Exp(h), true) => match cumulative(r, st, o, kind, p, user, h.clone(), now, out) {
            Some((_, Step::Count(d))) => Acc::Exp(Box::new(d)),
            _ => return,
        },
    };
    let window = r.window_of(p.time, now);
    let late = r.closed_by(window, st.emitted_through);
    let traced = r.tracing.then(|| (user.1.to_string(), acc.traced_value()));
    let merged = with_series(st, o, kind, p.attrs, user, window, |series, kept, id| {
        match series.get_mut(id.id()) {
            Some(series) => series.acc.merge(&acc),
            None => {
                let acc = match kept.get(id.id()) {
                    // A late point of an emitted gauge: the re-emission
                    // carries the whole window, so it replaces the earlier one.
                    Some(kept) => {
                        let mut whole = kept.clone();
                        whole.merge(&acc).then_some(whole)
                    }
                    None => Some(acc),
                };
                match acc {
                    Some(acc) => {
                        series.insert(id.to_key(), Series { acc });
                        true
                    }
                    None => false,
                }
            }
        }
    });
    let user = traced.as_ref().map(|t| t.0.as_str());
    let value = traced.as_ref().map_or(0.0, |t| t.1);
    if !merged {
        out.dropped.invalid += 1;
        r.trace(
            out,
            o,
            user,
            window,
            value,
            "dropped: the total would overflow",
        );
        return;
    }
    out.accepted += 1;
    if late {
        out.late += 1;
    }
    let what = if late {
        "counted (late: its window was already emitted)"
    } else {
        "counted"
    };
    r.trace(out, o, user, window, value, what);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded attribute's canonical bytes are prost's encoding of it,
    /// whether written as a scalar or by prost.
    #[test]
    fn a_decoded_attribute_encodes_as_prost_does() {
        use any_value::Value as V;
        let kv = |key: &str, value: Option<Option<V>>| KeyValue {
            key: key.into(),
            value: value.map(|value| AnyValue { value }),
            ..Default::default()
        };
        let long = "x".repeat(200);
        let array = V::ArrayValue(otelcol_core::pdata::proto::common::v1::ArrayValue {
            values: vec![AnyValue {
                value: Some(V::IntValue(7)),
            }],
        });
        let mut cases = vec![
            kv("", None),
            kv("k", None),
            kv("k", Some(None)),
            kv(&long, Some(Some(V::StringValue(long.clone())))),
            kv("k", Some(Some(V::StringValue(String::new())))),
            kv("k", Some(Some(V::StringValue("é✓".into())))),
            kv("k", Some(Some(V::BoolValue(false)))),
            kv("k", Some(Some(V::DoubleValue(-0.0)))),
            kv("k", Some(Some(V::BytesValue(vec![0, 1])))),
            kv("k", Some(Some(array))),
        ];
        for i in [0, -1, 127, 128, i64::MAX, i64::MIN] {
            cases.push(kv("n", Some(Some(V::IntValue(i)))));
        }
        cases.push(KeyValue {
            key_strindex: 3,
            ..kv("k", Some(Some(V::BoolValue(true))))
        });
        for case in cases {
            let mut ours = vec![];
            Attribute::encode(&case, &mut ours);
            assert_eq!(ours, case.encode_length_delimited_to_vec(), "{case:?}");
        }
    }

    /// A million open series must stay small: the table slot is key + value.
    #[test]
    fn a_series_slot_is_at_most_64_bytes() {
        assert_eq!(std::mem::size_of::<SeriesKey>(), 48);
        assert_eq!(std::mem::size_of::<Series>(), 16);
    }
}
