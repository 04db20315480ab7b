//! The aggregation engine: a plain struct with no clock, no task and no
//! locks. Feed it requests with [`Engine::add`], take the totals of closed
//! windows with [`Engine::take_closed`], and everything with [`Engine::take_all`].

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use otelcol_core::consumer::{Batch, RequestContext};
use otelcol_core::pdata::proto::common::v1::{any_value, AnyValue, KeyValue};
use otelcol_core::pdata::proto::metrics::v1::{metric, number_data_point, NumberDataPoint};
use otelcol_core::pdata::Metrics;
use prost::Message;

use crate::config::{AggregationConfig, Lookup, MissingKey};
use crate::intern::{Attr, AttrInterner, Interner};
use crate::output::{self, OutKind};
use crate::value::{cumulative_step, Cumulative, ExpHist, GaugeAcc, Hist, Stamp, Step, Stream};

const TEMPORALITY_CUMULATIVE: i32 = 2;
const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// What one call to [`Engine::add`] did with the points it was given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AddOutcome {
    /// Points that now count in a total.
    pub accepted: u64,
    /// Of those, points for a window that was already closed (emitted again as extra deltas).
    pub late: u64,
    /// First points of cumulative streams that began before the collector: baseline only.
    pub baseline: u64,
    /// Points not counted, by reason.
    pub dropped: Dropped,
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
    /// A new series past `max_series`.
    pub max_series: u64,
    /// No value, a non-finite value, or malformed buckets.
    pub invalid: u64,
    /// A cumulative point not newer than the last one of its stream.
    pub stale: u64,
}

impl Dropped {
    /// All dropped points.
    pub fn total(&self) -> u64 {
        self.missing_key + self.summary + self.max_series + self.invalid + self.stale
    }
}

/// The accumulated value of one series in one window. Large kinds are
/// boxed so that the common one (a sum) stays small.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Acc {
    Sum(f64),
    Gauge(Box<GaugeAcc>),
    Hist(Box<Hist>),
    Exp(Box<ExpHist>),
}

impl Acc {
    fn merge(&mut self, other: Acc, time: u64) {
        match (self, other) {
            (Acc::Sum(a), Acc::Sum(b)) => *a += b,
            (Acc::Gauge(a), Acc::Gauge(b)) => a.add(b.last, time),
            (Acc::Hist(a), Acc::Hist(b)) => a.merge(&b),
            (Acc::Exp(a), Acc::Exp(b)) => a.merge(&b),
            _ => {}
        }
    }

    fn traced_value(&self) -> f64 {
        match self {
            Acc::Sum(v) => *v,
            Acc::Gauge(g) => g.last,
            Acc::Hist(h) => h.count as f64,
            Acc::Exp(h) => h.count as f64,
        }
    }
}

/// What the output series of one metric share: the caller's token, the
/// resource, the metric's name, kind and unit, the user key's name (and the
/// first description seen, which is not part of the identity). Interned
/// once per distinct combination, so a series key holds one pointer to it.
///
/// Equality and hashing use the interned pointers of the fields: the
/// interners keep one allocation per distinct value for as long as anything
/// holds it, so equal pointers mean equal values. Ordering (for output)
/// compares contents.
#[derive(Debug)]
pub(crate) struct Group {
    pub token: Option<Arc<str>>,
    pub resource: Arc<[u8]>,
    pub name: Arc<str>,
    pub kind: OutKind,
    pub unit: Arc<str>,
    pub user_key: Arc<str>,
    pub description: Arc<str>,
}

fn same<T: ?Sized>(a: &Arc<T>, b: &Arc<T>) -> bool {
    Arc::ptr_eq(a, b)
}

impl PartialEq for Group {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind
            && same(&self.name, &o.name)
            && same(&self.resource, &o.resource)
            && same(&self.unit, &o.unit)
            && same(&self.user_key, &o.user_key)
            && match (&self.token, &o.token) {
                (Some(a), Some(b)) => same(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for Group {}

impl Hash for Group {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.kind.hash(h);
        Arc::as_ptr(&self.name).cast::<u8>().hash(h);
        Arc::as_ptr(&self.resource).cast::<u8>().hash(h);
        Arc::as_ptr(&self.unit).cast::<u8>().hash(h);
        Arc::as_ptr(&self.user_key).cast::<u8>().hash(h);
        self.token
            .as_ref()
            .map(|t| Arc::as_ptr(t).cast::<u8>())
            .hash(h);
    }
}

impl Group {
    fn order_key(&self) -> (Option<&str>, &[u8], &str, OutKind, &str, &str) {
        (
            self.token.as_deref(),
            &self.resource,
            &self.name,
            self.kind,
            &self.unit,
            &self.user_key,
        )
    }
}

impl PartialOrd for Group {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Group {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.order_key().cmp(&o.order_key())
    }
}

/// Identity of one output series in one window: 48 bytes, so that a
/// million open series stay small. The user and the attribute list (each
/// attribute in its canonical encoding, decoded only at emission; the list
/// sorted by key) are interned values; equality and hashing use pointers,
/// ordering compares contents.
#[derive(Clone, Debug)]
pub(crate) struct SeriesKey {
    pub group: Arc<Group>,
    pub window: u64,
    pub user: Arc<str>,
    pub attrs: Arc<[Attr]>,
}

impl PartialEq for SeriesKey {
    fn eq(&self, o: &Self) -> bool {
        self.window == o.window
            && same(&self.user, &o.user)
            && same(&self.attrs, &o.attrs)
            && same(&self.group, &o.group)
    }
}

impl Eq for SeriesKey {}

impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.window.hash(h);
        Arc::as_ptr(&self.user).cast::<u8>().hash(h);
        Arc::as_ptr(&self.attrs).cast::<u8>().hash(h);
        Arc::as_ptr(&self.group).hash(h);
    }
}

impl PartialOrd for SeriesKey {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for SeriesKey {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (&*self.group, self.window, &*self.user, &*self.attrs)
            .cmp(&(&*o.group, o.window, &*o.user, &*o.attrs))
    }
}

/// Series taken out of an [`Engine`], to be turned into batches.
#[derive(Debug)]
pub struct Closed {
    taken: Vec<(SeriesKey, Series)>,
    interval: u64,
    gauge: crate::config::GaugePolicy,
}

impl Closed {
    /// Whether nothing was taken.
    pub fn is_empty(&self) -> bool {
        self.taken.is_empty()
    }

    /// One batch per client token, one `ResourceMetrics` per resource.
    pub fn build(self) -> Vec<Batch<Metrics>> {
        output::build(self.taken, self.interval, self.gauge)
    }
}

/// One output series in one window.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub acc: Acc,
}

/// The resource, scope and metric a point belongs to.
struct Origin<'a> {
    token: Option<Arc<str>>,
    resource: &'a [KeyValue],
    resource_canon: Arc<[u8]>,
    scope: (&'a str, &'a str),
    name: Arc<str>,
    unit: Arc<str>,
    description: Arc<str>,
}

/// Encodes `attrs` (those `keep` accepts) sorted by key into `out`.
fn canonical_into(
    out: &mut Vec<u8>,
    order: &mut Vec<usize>,
    attrs: &[KeyValue],
    keep: impl Fn(&KeyValue) -> bool,
) {
    out.clear();
    order.clear();
    order.extend((0..attrs.len()).filter(|&i| keep(&attrs[i])));
    order.sort_by(|&a, &b| attrs[a].key.cmp(&attrs[b].key));
    for &i in order.iter() {
        // Writing to a Vec cannot run out of room.
        let _ = attrs[i].encode_length_delimited(out);
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

/// What the engine was configured with, read-only while it runs.
struct Rules {
    config: AggregationConfig,
    keys: Vec<String>,
    lookups: Vec<Lookup>,
    interval: u64,
    grace: u64,
    skew: u64,
    ttl: u64,
    collector_start: u64,
    tracing: bool,
}

/// What the engine holds. Maps use aHash with per-process random keys:
/// several times faster than SipHash on these short keys, and still keyed,
/// so senders cannot choose attribute values that collide.
#[derive(Default)]
struct State {
    series: HashMap<SeriesKey, Series, ahash::RandomState>,
    groups: HashSet<Arc<Group>, ahash::RandomState>,
    streams: HashMap<u128, Stream, ahash::RandomState>,
    /// Two independent keys for the two halves of a stream id.
    stream_keys: (ahash::RandomState, ahash::RandomState),
    strs: Interner<str>,
    bytes: Interner<[u8]>,
    attrs: AttrInterner,
    lists: Interner<[Attr]>,
    list: Vec<Attr>,
    scratch: Vec<u8>,
    order: Vec<usize>,
}

/// Per-user totals per window. See the crate docs for the rules.
pub struct Engine {
    rules: Rules,
    state: State,
}

impl Rules {
    /// The user key of a point: (key name, value), by the configured lookups.
    fn find_user<'a>(
        &'a self,
        o: &'a Origin<'_>,
        attrs: &'a [KeyValue],
        ctx: &'a RequestContext,
    ) -> Option<(&'a str, Cow<'a, str>)> {
        let find = |list: &'a [KeyValue]| {
            self.keys.iter().find_map(|k| {
                list.iter()
                    .find(|kv| &kv.key == k)
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(scalar_str)
                    .map(|v| (k.as_str(), v))
            })
        };
        self.lookups.iter().find_map(|l| match l {
            Lookup::DataPoint => find(attrs),
            Lookup::Resource => find(o.resource),
            Lookup::Header(h) => ctx
                .header(h)
                .filter(|v| !v.is_empty())
                .map(|v| (self.keys[0].as_str(), Cow::Borrowed(v))),
        })
    }

    fn keeps(&self, kv: &KeyValue, user_key: &str) -> bool {
        let c = &self.config;
        kv.key != user_key
            && !self.keys.contains(&kv.key)
            && (c.include_attributes.is_empty() || c.include_attributes.contains(&kv.key))
            && !c.exclude_attributes.contains(&kv.key)
    }

    fn window_of(&self, time: u64, now: u64) -> (u64, bool) {
        let time = if time == 0 || time > now.saturating_add(self.skew) {
            now
        } else {
            time
        };
        let window = time - time % self.interval;
        (window, window + self.interval + self.grace <= now)
    }

    fn trace(
        &self,
        out: &mut AddOutcome,
        o: &Origin<'_>,
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
        config.validate()?;
        let rules = Rules {
            keys: config.keys(),
            lookups: config.lookups()?,
            interval: config.aggregation_interval.as_nanos() as u64,
            grace: config.grace.as_nanos() as u64,
            skew: config.max_future_skew.as_nanos() as u64,
            ttl: config.stream_ttl.as_nanos().max(1) as u64,
            collector_start,
            tracing: false,
            config,
        };
        Ok(Self {
            rules,
            state: State::default(),
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

    /// Open (window, series) entries.
    pub fn open_series(&self) -> usize {
        self.state.series.len()
    }

    /// Cumulative streams remembered.
    pub fn open_streams(&self) -> usize {
        self.state.streams.len()
    }

    /// The window length in nanoseconds.
    pub fn interval_nanos(&self) -> u64 {
        self.rules.interval
    }

    /// Adds every point of `request`, sent with `context`, at time `now`
    /// (Unix nanoseconds).
    pub fn add(&mut self, request: &Metrics, context: &RequestContext, now: u64) -> AddOutcome {
        let mut out = AddOutcome::default();
        let st = &mut self.state;
        let token = context.bearer_token().map(|t| st.strs.get(t.expose()));
        for rm in &request.resource_metrics {
            let resource: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
            canonical_into(&mut st.scratch, &mut st.order, resource, |_| true);
            let resource_canon = st.bytes.get(&st.scratch);
            for sm in &rm.scope_metrics {
                let scope = sm
                    .scope
                    .as_ref()
                    .map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
                for m in &sm.metrics {
                    let origin = Origin {
                        token: token.clone(),
                        resource,
                        resource_canon: resource_canon.clone(),
                        scope,
                        name: st.strs.get(&m.name),
                        unit: st.strs.get(&m.unit),
                        description: st.strs.get(&m.description),
                    };
                    add_metric(
                        &self.rules,
                        st,
                        &origin,
                        m.data.as_ref(),
                        context,
                        now,
                        &mut out,
                    );
                }
            }
        }
        out
    }

    /// Takes the totals of every window closed at `now` (`window_end + grace
    /// <= now`), one batch per client token, and forgets cumulative streams
    /// idle for longer than `stream_ttl`.
    pub fn take_closed(&mut self, now: u64) -> Vec<Batch<Metrics>> {
        let closed = self.take_closed_series(now);
        let batches = closed.build();
        self.collect_garbage();
        batches
    }

    /// Takes every open window, the current one included (for shutdown).
    pub fn take_all(&mut self) -> Vec<Batch<Metrics>> {
        let closed = self.take_all_series();
        let batches = closed.build();
        self.collect_garbage();
        batches
    }

    /// The series of every window closed at `now`, removed from the engine
    /// but not yet turned into batches: [`Closed::build`] can then run
    /// without holding whatever guards the engine. Also forgets idle
    /// cumulative streams.
    pub fn take_closed_series(&mut self, now: u64) -> Closed {
        let (interval, grace, ttl) = (self.rules.interval, self.rules.grace, self.rules.ttl);
        let st = &mut self.state;
        let closed: Vec<SeriesKey> = st
            .series
            .keys()
            .filter(|k| k.window + interval + grace <= now)
            .cloned()
            .collect();
        st.streams.retain(|_, s| now.saturating_sub(s.seen) < ttl);
        let taken: Vec<(SeriesKey, Series)> = closed
            .into_iter()
            .filter_map(|k| st.series.remove_entry(&k))
            .collect();
        self.closed(taken)
    }

    /// Every open series, the current window included (for shutdown).
    pub fn take_all_series(&mut self) -> Closed {
        let taken = self.state.series.drain().collect();
        self.closed(taken)
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

fn add_metric(
    r: &Rules,
    st: &mut State,
    o: &Origin<'_>,
    data: Option<&metric::Data>,
    ctx: &RequestContext,
    now: u64,
    out: &mut AddOutcome,
) {
    match data {
        Some(metric::Data::Sum(s)) => {
            let cumulative = s.aggregation_temporality == TEMPORALITY_CUMULATIVE;
            for p in &s.data_points {
                let Some(v) = number(p) else {
                    out.dropped.invalid += 1;
                    continue;
                };
                let stamp = Stamp {
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                };
                match (cumulative, s.is_monotonic) {
                    (false, mono) => {
                        let kind = if mono {
                            OutKind::MonotonicSum
                        } else {
                            OutKind::NonMonotonicSum
                        };
                        put(
                            r,
                            st,
                            o,
                            kind,
                            &p.attributes,
                            stamp.time,
                            Acc::Sum(v),
                            ctx,
                            now,
                            out,
                        );
                    }
                    (true, true) => put_cumulative(
                        r,
                        st,
                        o,
                        OutKind::MonotonicSum,
                        &p.attributes,
                        stamp,
                        v,
                        ctx,
                        now,
                        out,
                        Acc::Sum,
                    ),
                    (true, false) => {
                        let acc = Acc::Gauge(Box::new(GaugeAcc::new(v, stamp.time)));
                        put(
                            r,
                            st,
                            o,
                            OutKind::LastSum,
                            &p.attributes,
                            stamp.time,
                            acc,
                            ctx,
                            now,
                            out,
                        );
                    }
                }
            }
        }
        Some(metric::Data::Gauge(g)) => {
            for p in &g.data_points {
                match number(p) {
                    Some(v) => {
                        let acc = Acc::Gauge(Box::new(GaugeAcc::new(v, p.time_unix_nano)));
                        put(
                            r,
                            st,
                            o,
                            OutKind::Gauge,
                            &p.attributes,
                            p.time_unix_nano,
                            acc,
                            ctx,
                            now,
                            out,
                        );
                    }
                    None => out.dropped.invalid += 1,
                }
            }
        }
        Some(metric::Data::Histogram(h)) => {
            let cumulative = h.aggregation_temporality == TEMPORALITY_CUMULATIVE;
            for p in &h.data_points {
                let hist = Hist::from_point(p)
                    .filter(|h| h.sum.is_finite() && p.flags & FLAG_NO_RECORDED_VALUE == 0);
                let Some(hist) = hist else {
                    out.dropped.invalid += 1;
                    continue;
                };
                let stamp = Stamp {
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                };
                if cumulative {
                    put_cumulative(
                        r,
                        st,
                        o,
                        OutKind::Histogram,
                        &p.attributes,
                        stamp,
                        hist,
                        ctx,
                        now,
                        out,
                        |h| Acc::Hist(Box::new(h)),
                    );
                } else {
                    put(
                        r,
                        st,
                        o,
                        OutKind::Histogram,
                        &p.attributes,
                        stamp.time,
                        Acc::Hist(Box::new(hist)),
                        ctx,
                        now,
                        out,
                    );
                }
            }
        }
        Some(metric::Data::ExponentialHistogram(h)) => {
            let cumulative = h.aggregation_temporality == TEMPORALITY_CUMULATIVE;
            for p in &h.data_points {
                if p.flags & FLAG_NO_RECORDED_VALUE != 0 || !p.sum.unwrap_or(0.0).is_finite() {
                    out.dropped.invalid += 1;
                    continue;
                }
                let exp = ExpHist::from_point(p);
                let stamp = Stamp {
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                };
                if cumulative {
                    put_cumulative(
                        r,
                        st,
                        o,
                        OutKind::ExpHistogram,
                        &p.attributes,
                        stamp,
                        exp,
                        ctx,
                        now,
                        out,
                        |h| Acc::Exp(Box::new(h)),
                    );
                } else {
                    put(
                        r,
                        st,
                        o,
                        OutKind::ExpHistogram,
                        &p.attributes,
                        stamp.time,
                        Acc::Exp(Box::new(exp)),
                        ctx,
                        now,
                        out,
                    );
                }
            }
        }
        Some(metric::Data::Summary(s)) => out.dropped.summary += s.data_points.len() as u64,
        None => {}
    }
}

/// A 128-bit id of an input stream: resource, scope, metric and all point attributes.
fn stream_id(st: &mut State, o: &Origin<'_>, attrs: &[KeyValue]) -> u128 {
    canonical_into(&mut st.scratch, &mut st.order, attrs, |_| true);
    let parts = (&o.resource_canon, &o.scope, &o.name, &st.scratch);
    let (a, b) = (&st.stream_keys.0, &st.stream_keys.1);
    (u128::from(a.hash_one(parts)) << 64) | u128::from(b.hash_one(parts))
}

#[allow(clippy::too_many_arguments)]
fn put_cumulative<T: Cumulative>(
    r: &Rules,
    st: &mut State,
    o: &Origin<'_>,
    kind: OutKind,
    attrs: &[KeyValue],
    stamp: Stamp,
    value: T,
    ctx: &RequestContext,
    now: u64,
    out: &mut AddOutcome,
    into_acc: impl Fn(T) -> Acc,
) {
    let id = stream_id(st, o, attrs);
    let mut state = st.streams.remove(&id);
    let step = cumulative_step(&mut state, stamp, value, r.collector_start, now);
    if let Some(s) = state {
        st.streams.insert(id, s);
    }
    match step {
        Step::Count(delta) => put(
            r,
            st,
            o,
            kind,
            attrs,
            stamp.time,
            into_acc(delta),
            ctx,
            now,
            out,
        ),
        Step::Baseline => {
            out.baseline += 1;
            r.trace(
                out,
                o,
                None,
                0,
                0.0,
                "baseline (cumulative stream began before the collector)",
            );
        }
        Step::Stale => {
            out.dropped.stale += 1;
            r.trace(
                out,
                o,
                None,
                0,
                0.0,
                "dropped: not newer than the stream's last point",
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn put(
    r: &Rules,
    st: &mut State,
    o: &Origin<'_>,
    kind: OutKind,
    attrs: &[KeyValue],
    time: u64,
    acc: Acc,
    ctx: &RequestContext,
    now: u64,
    out: &mut AddOutcome,
) {
    let found = r.find_user(o, attrs, ctx);
    let (user_key, user) = match found {
        Some((k, v)) => (st.strs.get(k), st.strs.get(&v)),
        None if r.config.missing_key == MissingKey::Keep => (
            st.strs.get(&r.keys[0]),
            st.strs.get(&r.config.missing_key_value),
        ),
        None => {
            r.trace(
                out,
                o,
                None,
                0,
                acc.traced_value(),
                "dropped: user key not found",
            );
            out.dropped.missing_key += 1;
            if !out.missing_key_metrics.iter().any(|n| **n == *o.name) {
                out.missing_key_metrics.push(o.name.to_string());
            }
            return;
        }
    };
    let (window, late) = r.window_of(time, now);
    st.order.clear();
    st.order
        .extend((0..attrs.len()).filter(|&i| r.keeps(&attrs[i], &user_key)));
    st.order.sort_by(|&a, &b| attrs[a].key.cmp(&attrs[b].key));
    st.list.clear();
    for &i in st.order.iter() {
        st.scratch.clear();
        // Writing to a Vec cannot run out of room.
        let _ = attrs[i].encode_length_delimited(&mut st.scratch);
        st.list.push(st.attrs.get(&st.scratch));
    }
    let attr_list = st.lists.get(&st.list);
    let group = Group {
        token: o.token.clone(),
        resource: o.resource_canon.clone(),
        name: o.name.clone(),
        kind,
        unit: o.unit.clone(),
        user_key,
        description: o.description.clone(),
    };
    let group = match st.groups.get(&group) {
        Some(g) => g.clone(),
        None => {
            let g = Arc::new(group);
            st.groups.insert(g.clone());
            g
        }
    };
    let key = SeriesKey {
        group,
        window,
        user,
        attrs: attr_list,
    };
    let point_time = if time == 0 { now } else { time };
    let traced = r
        .tracing
        .then(|| (key.user.to_string(), acc.traced_value()));
    if let Some(series) = st.series.get_mut(&key) {
        series.acc.merge(acc, point_time);
    } else if st.series.len() >= r.config.max_series {
        out.dropped.max_series += 1;
        if let Some((user, value)) = traced {
            r.trace(
                out,
                o,
                Some(&user),
                window,
                value,
                "dropped: max_series reached",
            );
        }
        return;
    } else {
        st.series.insert(key, Series { acc });
    }
    out.accepted += 1;
    if late {
        out.late += 1;
    }
    if let Some((user, value)) = traced {
        let what = if late {
            "counted (late: its window was already emitted)"
        } else {
            "counted"
        };
        r.trace(out, o, Some(&user), window, value, what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A million open series must stay small: the table slot is key + value.
    #[test]
    fn a_series_slot_is_at_most_64_bytes() {
        assert_eq!(std::mem::size_of::<SeriesKey>(), 48);
        assert_eq!(std::mem::size_of::<Series>(), 16);
    }
}
