//! The aggregation engine: a plain struct with no clock, no task and no
//! locks. Feed it requests with [`Engine::add`], take the totals of closed
//! windows with [`Engine::take_closed`], and everything with [`Engine::take_all`].

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use otelcol_core::consumer::{Batch, BearerToken, RequestContext};
use otelcol_core::pdata::proto::common::v1::{any_value, AnyValue, KeyValue};
use otelcol_core::pdata::proto::metrics::v1::{metric, number_data_point, NumberDataPoint};
use otelcol_core::pdata::Metrics;
use prost::Message;

use crate::config::{AggregationConfig, Lookup, MissingKey};
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

/// The accumulated value of one series in one window.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Acc {
    Sum(f64),
    Gauge(GaugeAcc),
    Hist(Hist),
    Exp(ExpHist),
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
}

/// Identity of one output series in one window.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SeriesKey {
    pub token: Option<Arc<str>>,
    pub resource: Arc<[u8]>,
    pub name: Arc<str>,
    pub kind: OutKind,
    pub unit: Arc<str>,
    pub window: u64,
    pub user: Arc<str>,
    pub attrs: Vec<u8>,
}

/// One output series in one window.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub token: Option<BearerToken>,
    pub resource: Arc<Vec<KeyValue>>,
    pub description: String,
    pub attrs: Vec<KeyValue>,
    pub acc: Acc,
}

/// Where a point goes.
struct Place {
    window: u64,
    late: bool,
    user: Arc<str>,
    attrs: Vec<KeyValue>,
    canon: Vec<u8>,
}

/// The resource, scope and metric a point belongs to.
struct Origin<'a> {
    token: Option<(&'a BearerToken, Arc<str>)>,
    resource: &'a [KeyValue],
    resource_canon: Arc<[u8]>,
    resource_arc: Arc<Vec<KeyValue>>,
    scope: (&'a str, &'a str),
    name: Arc<str>,
    unit: Arc<str>,
    description: &'a str,
}

/// Attributes in a canonical byte form: sorted by key, protobuf-encoded.
fn canonical(attrs: &[&KeyValue]) -> Vec<u8> {
    let mut sorted: Vec<&&KeyValue> = attrs.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out = Vec::new();
    for kv in sorted {
        kv.encode_length_delimited(&mut out).ok();
    }
    out
}

fn scalar_string(v: &AnyValue) -> Option<String> {
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) if !s.is_empty() => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
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

/// Per-user totals per window. See the crate docs for the rules.
pub struct Engine {
    config: AggregationConfig,
    keys: Vec<String>,
    lookups: Vec<Lookup>,
    interval: u64,
    grace: u64,
    skew: u64,
    ttl: u64,
    collector_start: u64,
    series: HashMap<SeriesKey, Series>,
    streams: HashMap<u128, Stream>,
    tracing: bool,
}

impl Acc {
    fn traced_value(&self) -> f64 {
        match self {
            Acc::Sum(v) => *v,
            Acc::Gauge(g) => g.last,
            Acc::Hist(h) => h.count as f64,
            Acc::Exp(h) => h.count as f64,
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
        Ok(Self {
            keys: config.keys(),
            lookups: config.lookups()?,
            interval: config.aggregation_interval.as_nanos() as u64,
            grace: config.grace.as_nanos() as u64,
            skew: config.max_future_skew.as_nanos() as u64,
            ttl: config.stream_ttl.as_nanos().max(1) as u64,
            collector_start,
            series: HashMap::new(),
            streams: HashMap::new(),
            tracing: false,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AggregationConfig {
        &self.config
    }

    /// Records a [`PointTrace`] per point in each [`AddOutcome`] (costly; for debugging).
    pub fn set_tracing(&mut self, on: bool) {
        self.tracing = on;
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

    /// Open (window, series) entries.
    pub fn open_series(&self) -> usize {
        self.series.len()
    }

    /// Cumulative streams remembered.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Adds every point of `request`, sent with `context`, at time `now`
    /// (Unix nanoseconds).
    pub fn add(&mut self, request: &Metrics, context: &RequestContext, now: u64) -> AddOutcome {
        let mut out = AddOutcome::default();
        let token = context
            .bearer_token()
            .map(|t| (t, Arc::<str>::from(t.expose())));
        for rm in &request.resource_metrics {
            let resource: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
            let resource_canon: Arc<[u8]> = canonical(&resource.iter().collect::<Vec<_>>()).into();
            let resource_arc = Arc::new(resource.to_vec());
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
                        resource_arc: resource_arc.clone(),
                        scope,
                        name: Arc::from(m.name.as_str()),
                        unit: Arc::from(m.unit.as_str()),
                        description: &m.description,
                    };
                    self.add_metric(&origin, m.data.as_ref(), context, now, &mut out);
                }
            }
        }
        out
    }

    fn add_metric(
        &mut self,
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
                            self.put(
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
                        (true, true) => self.put_cumulative(
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
                            let acc = Acc::Gauge(GaugeAcc::new(v, stamp.time));
                            self.put(
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
                            let acc = Acc::Gauge(GaugeAcc::new(v, p.time_unix_nano));
                            self.put(
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
                        self.put_cumulative(
                            o,
                            OutKind::Histogram,
                            &p.attributes,
                            stamp,
                            hist,
                            ctx,
                            now,
                            out,
                            Acc::Hist,
                        );
                    } else {
                        self.put(
                            o,
                            OutKind::Histogram,
                            &p.attributes,
                            stamp.time,
                            Acc::Hist(hist),
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
                        self.put_cumulative(
                            o,
                            OutKind::ExpHistogram,
                            &p.attributes,
                            stamp,
                            exp,
                            ctx,
                            now,
                            out,
                            Acc::Exp,
                        );
                    } else {
                        self.put(
                            o,
                            OutKind::ExpHistogram,
                            &p.attributes,
                            stamp.time,
                            Acc::Exp(exp),
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

    fn stream_id(o: &Origin<'_>, attrs: &[KeyValue]) -> u128 {
        let point = canonical(&attrs.iter().collect::<Vec<_>>());
        let half = |seed: u8| {
            let mut h = DefaultHasher::new();
            seed.hash(&mut h);
            o.resource_canon.hash(&mut h);
            o.scope.hash(&mut h);
            o.name.hash(&mut h);
            point.hash(&mut h);
            h.finish()
        };
        (u128::from(half(1)) << 64) | u128::from(half(2))
    }

    #[allow(clippy::too_many_arguments)]
    fn put_cumulative<T: Cumulative>(
        &mut self,
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
        let id = Self::stream_id(o, attrs);
        let mut state = self.streams.remove(&id);
        let step = cumulative_step(&mut state, stamp, value, self.collector_start, now);
        if let Some(s) = state {
            self.streams.insert(id, s);
        }
        match step {
            Step::Count(delta) => {
                self.put(o, kind, attrs, stamp.time, into_acc(delta), ctx, now, out)
            }
            Step::Baseline => {
                out.baseline += 1;
                self.trace(
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
                self.trace(
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

    fn find_user(
        &self,
        o: &Origin<'_>,
        attrs: &[KeyValue],
        ctx: &RequestContext,
    ) -> Option<(String, String)> {
        let find = |list: &[KeyValue]| {
            self.keys.iter().find_map(|k| {
                list.iter()
                    .find(|kv| &kv.key == k)
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(scalar_string)
                    .map(|v| (k.clone(), v))
            })
        };
        self.lookups.iter().find_map(|l| match l {
            Lookup::DataPoint => find(attrs),
            Lookup::Resource => find(o.resource),
            Lookup::Header(h) => ctx
                .header(h)
                .filter(|v| !v.is_empty())
                .map(|v| (self.keys[0].clone(), v.to_string())),
        })
    }

    fn place(
        &self,
        o: &Origin<'_>,
        attrs: &[KeyValue],
        time: u64,
        ctx: &RequestContext,
        now: u64,
    ) -> Option<Place> {
        let (key, user) = match self.find_user(o, attrs, ctx) {
            Some(found) => found,
            None if self.config.missing_key == MissingKey::Keep => {
                (self.keys[0].clone(), self.config.missing_key_value.clone())
            }
            None => return None,
        };
        let time = if time == 0 || time > now.saturating_add(self.skew) {
            now
        } else {
            time
        };
        let window = time - time % self.interval;
        let late = window + self.interval + self.grace <= now;
        let c = &self.config;
        let kept: Vec<&KeyValue> = attrs
            .iter()
            .filter(|kv| kv.key != key && !self.keys.contains(&kv.key))
            .filter(|kv| c.include_attributes.is_empty() || c.include_attributes.contains(&kv.key))
            .filter(|kv| !c.exclude_attributes.contains(&kv.key))
            .collect();
        let canon = canonical(&kept);
        let mut out_attrs: Vec<KeyValue> = kept.into_iter().cloned().collect();
        out_attrs.push(otelcol_core::pdata::string_attribute(key, user.clone()));
        Some(Place {
            window,
            late,
            user: user.into(),
            attrs: out_attrs,
            canon,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        o: &Origin<'_>,
        kind: OutKind,
        attrs: &[KeyValue],
        time: u64,
        acc: Acc,
        ctx: &RequestContext,
        now: u64,
        out: &mut AddOutcome,
    ) {
        let Some(place) = self.place(o, attrs, time, ctx, now) else {
            self.trace(
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
        };
        let key = SeriesKey {
            token: o.token.as_ref().map(|(_, s)| s.clone()),
            resource: o.resource_canon.clone(),
            name: o.name.clone(),
            kind,
            unit: o.unit.clone(),
            window: place.window,
            user: place.user,
            attrs: place.canon,
        };
        let point_time = if time == 0 { now } else { time };
        let traced = self
            .tracing
            .then(|| (key.user.to_string(), acc.traced_value()));
        if let Some(series) = self.series.get_mut(&key) {
            series.acc.merge(acc, point_time);
        } else if self.series.len() >= self.config.max_series {
            out.dropped.max_series += 1;
            if let Some((user, value)) = traced {
                self.trace(
                    out,
                    o,
                    Some(&user),
                    place.window,
                    value,
                    "dropped: max_series reached",
                );
            }
            return;
        } else {
            self.series.insert(
                key,
                Series {
                    token: o.token.as_ref().map(|(t, _)| (*t).clone()),
                    resource: o.resource_arc.clone(),
                    description: o.description.to_string(),
                    attrs: place.attrs,
                    acc,
                },
            );
        }
        out.accepted += 1;
        if place.late {
            out.late += 1;
        }
        if let Some((user, value)) = traced {
            let what = if place.late {
                "counted (late: its window was already emitted)"
            } else {
                "counted"
            };
            self.trace(out, o, Some(&user), place.window, value, what);
        }
    }

    /// Takes the totals of every window closed at `now` (`window_end + grace
    /// <= now`), one batch per client token, and forgets cumulative streams
    /// idle for longer than `stream_ttl`.
    pub fn take_closed(&mut self, now: u64) -> Vec<Batch<Metrics>> {
        let (interval, grace) = (self.interval, self.grace);
        let closed: Vec<SeriesKey> = self
            .series
            .keys()
            .filter(|k| k.window + interval + grace <= now)
            .cloned()
            .collect();
        let ttl = self.ttl;
        self.streams.retain(|_, s| now.saturating_sub(s.seen) < ttl);
        let taken = closed
            .into_iter()
            .filter_map(|k| self.series.remove_entry(&k))
            .collect();
        output::build(taken, self.interval, self.config.gauge)
    }

    /// Takes every open window, the current one included (for shutdown).
    pub fn take_all(&mut self) -> Vec<Batch<Metrics>> {
        let taken = self.series.drain().collect();
        output::build(taken, self.interval, self.config.gauge)
    }

    /// The window length in nanoseconds.
    pub fn interval_nanos(&self) -> u64 {
        self.interval
    }
}
