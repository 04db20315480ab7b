//! The engine against a reference model of `shared/spec/aggregation.md`.
//!
//! The model is written for clarity, not speed: it keeps every point it is
//! given, per cumulative stream the full list of arrivals, and recomputes
//! every total at the end by replaying the spec's rules. Random sequences
//! mix delta and cumulative sums, histograms, exponential histograms at
//! mixed scales, resets, duplicates, out-of-order and future points, gaps
//! longer than `stream_ttl`, two writers with one identity, several tokens,
//! identity on the point / resource / header, late points, random batching
//! and emission ticks. Both must give the same totals.
//!
//! 10,000 cases by default; `PROPTEST_CASES=N` for long runs.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use otelcol_core::consumer::{AuthData, BearerToken, RequestContext};
use otelcol_core::pdata::proto::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, ExponentialHistogram,
    ExponentialHistogramDataPoint, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
    ScopeMetrics,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::{string_attribute, Metrics};
use otelcol_processor_aggregation::{Engine, ShardedEngine};
use proptest::prelude::*;
use prost::Message;

const TTL: u64 = 1200; // seconds
const SKEW: u64 = 300;
const INTERVAL: u64 = 300;
const GRACE: u64 = 30;
/// The collector started 10 minutes after T0; the test clock starts at T0 + 1 h.
const COLLECTOR_START: u64 = 600;
const BOUNDS: [f64; 2] = [1.0, 10.0];

#[derive(Clone, Debug)]
enum Kind {
    DeltaSum,
    CumulativeSum,
    DeltaHist,
    CumulativeHist,
    DeltaExp,
}

#[derive(Clone, Debug)]
struct P {
    kind: Kind,
    user: u8,
    /// 0: user on the point, 1: on the resource, 2: in the request header.
    place: u8,
    /// Start time choice for cumulative points: two writers of one identity.
    writer: u8,
    session: u8,
    attr: u8,
    /// Time relative to the clock, seconds.
    dt: i64,
    inc: u32,
    reset: bool,
    dup: bool,
    /// Exponential histograms: scale choice, offset, counts.
    scale: u8,
    offset: i32,
    counts: Vec<u32>,
}

#[derive(Clone, Debug)]
enum Ev {
    Request {
        token: u8,
        header: Option<u8>,
        points: Vec<P>,
    },
    Advance(u64),
    Tick,
    /// The engine is written to a snapshot and a new one read from it (a
    /// restart with `aggregation.storage`): nothing may change.
    Restart,
}

fn p_strategy() -> impl Strategy<Value = P> {
    let kind = prop_oneof![
        Just(Kind::DeltaSum),
        Just(Kind::CumulativeSum),
        Just(Kind::DeltaHist),
        Just(Kind::CumulativeHist),
        Just(Kind::DeltaExp),
    ];
    let dt = prop_oneof![8 => -90i64..30, 2 => -1800i64..-300, 1 => 300i64..900];
    (
        kind,
        (0..2u8, 0..3u8, 0..2u8, 0..2u8, 0..2u8),
        dt,
        (
            0..20u32,
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.15),
        ),
        (0..4u8, -40..40i32, prop::collection::vec(0..4u32, 1..5)),
    )
        .prop_map(
            |(
                kind,
                (user, place, writer, session, attr),
                dt,
                (inc, reset, dup),
                (scale, offset, counts),
            )| P {
                kind,
                user,
                place,
                writer,
                session,
                attr,
                dt,
                inc,
                reset,
                dup,
                scale,
                offset,
                counts,
            },
        )
}

fn events() -> impl Strategy<Value = Vec<Ev>> {
    let ev = prop_oneof![
        6 => (0..3u8, prop::option::of(0..2u8), prop::collection::vec(p_strategy(), 1..6))
            .prop_map(|(token, header, points)| Ev::Request { token, header, points }),
        3 => prop_oneof![4 => 0..120u64, 1 => 1200..2700u64].prop_map(Ev::Advance),
        2 => Just(Ev::Tick),
        1 => Just(Ev::Restart),
    ];
    prop::collection::vec(ev, 1..40)
}

const USERS: [&str; 2] = ["ana@example.com", "bo@example.com"];
const SCALES: [i32; 4] = [-2, 0, 3, 8];

/// What a sender sent, once its own counters were applied.
#[derive(Clone, Debug, PartialEq)]
enum Sent {
    Sum(f64),
    Hist {
        count: u64,
        sum: f64,
        buckets: Vec<u64>,
    },
    Exp {
        scale: i32,
        offset: i32,
        counts: Vec<u64>,
    },
}

/// One point as it went out, with everything the model needs.
#[derive(Clone, Debug)]
struct Out {
    token: Option<&'static str>,
    user: Option<&'static str>,
    metric: &'static str,
    session: u8,
    attr: u8,
    place: u8,
    start: u64,
    time: u64,
    value: Sent,
}

fn metric_name(k: &Kind) -> &'static str {
    match k {
        Kind::DeltaSum => "d.sum",
        Kind::CumulativeSum => "c.sum",
        Kind::DeltaHist => "d.hist",
        Kind::CumulativeHist => "c.hist",
        Kind::DeltaExp => "d.exp",
    }
}

/// Turns the generated events into concrete points, the way senders with
/// their own cumulative counters would send them.
struct Senders {
    /// Per cumulative stream identity: the last (time, value) sent.
    last: HashMap<String, (u64, Sent)>,
    /// Per writer: its current start time.
    starts: HashMap<String, u64>,
}

impl Senders {
    fn concrete(
        &mut self,
        p: &P,
        token: Option<&'static str>,
        header: Option<u8>,
        now: u64,
    ) -> Out {
        let user = match p.place {
            0 | 1 => Some(USERS[p.user as usize]),
            _ => header.map(|h| USERS[h as usize]),
        };
        let time = (now as i64 + p.dt * NS as i64) as u64;
        let who = format!(
            "{token:?}/{user:?}/{}/{}/{}/{}/{}/{}",
            p.place,
            p.session,
            p.attr,
            metric_name(&p.kind),
            p.user,
            p.writer
        );
        // Writer 0 began just before it first sent (and begins again at a
        // reset: a sender restart); writer 1 began before the collector.
        let restart = p.reset && p.writer == 0;
        let start = match (p.writer, self.starts.get(&who)) {
            (0, Some(s)) if !restart => *s,
            (0, _) => now - NS,
            _ => at(COLLECTOR_START - 60),
        };
        self.starts.insert(who.clone(), start);
        let identity = format!("{who}/{start}");
        let mut out = Out {
            token,
            user,
            metric: metric_name(&p.kind),
            session: p.session,
            attr: p.attr,
            place: p.place,
            start,
            time,
            value: Sent::Sum(0.0),
        };
        let split = |count: u64| -> Vec<u64> {
            let a = count / 3;
            let b = count / 2 - a.min(count / 2);
            vec![a, b, count - a - b]
        };
        match p.kind {
            Kind::DeltaSum => out.value = Sent::Sum(f64::from(p.inc)),
            Kind::DeltaHist => {
                let count = u64::from(p.inc);
                out.value = Sent::Hist {
                    count,
                    sum: 2.0 * count as f64,
                    buckets: split(count),
                };
            }
            Kind::DeltaExp => {
                out.value = Sent::Exp {
                    scale: SCALES[p.scale as usize],
                    offset: p.offset,
                    counts: p.counts.iter().map(|c| u64::from(*c)).collect(),
                }
            }
            Kind::CumulativeSum | Kind::CumulativeHist => {
                let prev = self.last.get(&identity).cloned();
                if let (true, Some((t, v))) = (p.dup, prev.clone()) {
                    out.time = t;
                    out.value = v;
                    return out;
                }
                let inc = u64::from(p.inc);
                out.value = match (&p.kind, prev.map(|x| x.1)) {
                    (Kind::CumulativeSum, Some(Sent::Sum(v))) if !p.reset => {
                        Sent::Sum(v + inc as f64)
                    }
                    (Kind::CumulativeSum, _) => Sent::Sum(inc as f64),
                    (
                        _,
                        Some(Sent::Hist {
                            count,
                            sum,
                            buckets,
                        }),
                    ) if !p.reset => {
                        let add = split(inc);
                        Sent::Hist {
                            count: count + inc,
                            sum: sum + 2.0 * inc as f64,
                            buckets: buckets.iter().zip(&add).map(|(a, b)| a + b).collect(),
                        }
                    }
                    _ => Sent::Hist {
                        count: inc,
                        sum: 2.0 * inc as f64,
                        buckets: split(inc),
                    },
                };
                self.last.insert(identity, (out.time, out.value.clone()));
            }
        }
        out
    }
}

fn to_request(points: &[Out]) -> Metrics {
    let resource_metrics = points
        .iter()
        .map(|o| {
            let mut resource = vec![
                string_attribute("service.name", "tool"),
                string_attribute("session.id", format!("s{}", o.session)),
            ];
            let mut attrs = vec![string_attribute("a", format!("{}", o.attr))];
            match (o.place, o.user) {
                (0, Some(u)) => attrs.push(string_attribute("user.email", u)),
                (1, Some(u)) => resource.push(string_attribute("user.email", u)),
                _ => {}
            }
            let data = match &o.value {
                Sent::Sum(v) => {
                    let temporality = if o.metric.starts_with("c.") { 2 } else { 1 };
                    let mut pt = point(*v, o.time, o.start, &[]);
                    pt.attributes = attrs.clone();
                    sum(o.metric, temporality, true, vec![pt]).data
                }
                Sent::Hist {
                    count,
                    sum,
                    buckets,
                } => Some(metric::Data::Histogram(Histogram {
                    aggregation_temporality: if o.metric.starts_with("c.") { 2 } else { 1 },
                    data_points: vec![HistogramDataPoint {
                        attributes: attrs.clone(),
                        start_time_unix_nano: o.start,
                        time_unix_nano: o.time,
                        count: *count,
                        sum: Some(*sum),
                        bucket_counts: buckets.clone(),
                        explicit_bounds: BOUNDS.to_vec(),
                        ..Default::default()
                    }],
                })),
                Sent::Exp {
                    scale,
                    offset,
                    counts,
                } => Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                    aggregation_temporality: 1,
                    data_points: vec![ExponentialHistogramDataPoint {
                        attributes: attrs.clone(),
                        start_time_unix_nano: o.start,
                        time_unix_nano: o.time,
                        scale: *scale,
                        count: counts.iter().sum(),
                        sum: Some(counts.iter().sum::<u64>() as f64),
                        positive: Some(Buckets {
                            offset: *offset,
                            bucket_counts: counts.clone(),
                        }),
                        ..Default::default()
                    }],
                })),
            };
            ResourceMetrics {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: o.metric.into(),
                        data,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    Metrics { resource_metrics }
}

type Key = (Option<&'static str>, &'static str, &'static str, u8, u64);

/// A total as both sides report it; exponential histograms also keep what
/// they were made of (model) or how many emissions made them (engine).
#[derive(Clone, Debug, Default, PartialEq)]
struct Tot {
    sum: f64,
    count: u64,
    buckets: Vec<u64>,
}

impl Tot {
    fn add(&mut self, v: &Sent) {
        match v {
            Sent::Sum(x) => self.sum += x,
            Sent::Hist {
                count,
                sum,
                buckets,
            } => {
                self.count += count;
                self.sum += sum;
                if self.buckets.is_empty() {
                    self.buckets = vec![0; buckets.len()];
                }
                for (a, b) in self.buckets.iter_mut().zip(buckets) {
                    *a += b;
                }
            }
            Sent::Exp { counts, .. } => {
                let n: u64 = counts.iter().sum();
                self.count += n;
                self.sum += n as f64;
            }
        }
    }
}

fn window_of(time: u64, now: u64) -> u64 {
    let t = if time == 0 || time > now + SKEW * NS {
        now
    } else {
        time
    };
    t - t % (INTERVAL * NS)
}

/// The reference model: every point kept, every total recomputed.
#[derive(Default)]
struct Model {
    arrivals: Vec<(usize, u64, Out)>,
    ticks: Vec<(usize, u64)>,
}

impl Model {
    fn key(o: &Out, user: &'static str, window: u64) -> Key {
        (o.token, user, o.metric, o.attr, window)
    }

    fn totals(&self) -> (BTreeMap<Key, Tot>, BTreeMap<Key, Vec<Sent>>) {
        let mut totals: BTreeMap<Key, Tot> = BTreeMap::new();
        let mut exp: BTreeMap<Key, Vec<Sent>> = BTreeMap::new();
        // Cumulative arrivals per stream, in order.
        let mut streams: BTreeMap<String, Vec<&(usize, u64, Out)>> = BTreeMap::new();
        for a in &self.arrivals {
            let (_, now, o) = a;
            let Some(user) = o.user else { continue };
            let window = window_of(o.time, *now);
            if o.metric.starts_with("c.") {
                let id = format!(
                    "{:?}/{user}/{}/{}/{}/{}/{}",
                    o.token, o.session, o.place, o.attr, o.metric, o.start
                );
                streams.entry(id).or_default().push(a);
            } else {
                totals
                    .entry(Self::key(o, user, window))
                    .or_default()
                    .add(&o.value);
                if matches!(o.value, Sent::Exp { .. }) {
                    exp.entry(Self::key(o, user, window))
                        .or_default()
                        .push(o.value.clone());
                }
            }
        }
        for arrivals in streams.values() {
            // (kept time, last value, last seen, event index of the last arrival)
            let mut state: Option<(u64, Sent, u64, usize)> = None;
            for (idx, now, o) in arrivals.iter().map(|a| (a.0, a.1, &a.2)) {
                if let Some((_, _, seen, last_idx)) = &state {
                    let forgotten = self.ticks.iter().any(|(t_idx, t_now)| {
                        t_idx > last_idx && *t_idx < idx && t_now - seen >= TTL * NS
                    });
                    if forgotten {
                        state = None;
                    }
                }
                let user = o.user.unwrap_or_default();
                let key = Self::key(o, user, window_of(o.time, now));
                let capped = o.time.min(now + SKEW * NS);
                match state.take() {
                    None => {
                        let vouched = at(COLLECTOR_START).max(now.saturating_sub(TTL * NS));
                        if o.start >= vouched {
                            totals.entry(key).or_default().add(&o.value);
                        }
                        state = Some((capped, o.value.clone(), now, idx));
                    }
                    Some((kept, last, _, _)) if o.time <= kept => {
                        state = Some((kept, last, now, idx));
                    }
                    Some((_, last, _, _)) => {
                        let inc = match (&o.value, &last) {
                            (Sent::Sum(v), Sent::Sum(p)) if v >= p => Sent::Sum(v - p),
                            (
                                Sent::Hist {
                                    count,
                                    sum,
                                    buckets,
                                },
                                Sent::Hist {
                                    count: pc,
                                    sum: ps,
                                    buckets: pb,
                                },
                            ) if count >= pc && buckets.iter().zip(pb).all(|(a, b)| a >= b) => {
                                Sent::Hist {
                                    count: count - pc,
                                    sum: sum - ps,
                                    buckets: buckets.iter().zip(pb).map(|(a, b)| a - b).collect(),
                                }
                            }
                            (v, _) => v.clone(),
                        };
                        totals.entry(key).or_default().add(&inc);
                        state = Some((capped, o.value.clone(), now, idx));
                    }
                }
            }
        }
        (totals, exp)
    }
}

/// The scale and buckets the spec gives for merging `parts`: the finest
/// scale no finer than any part's at which all of them fit in 160 buckets.
fn expected_exp(parts: &[Sent]) -> (i32, i32, Vec<u64>) {
    let items: Vec<(i32, i64, u64)> = parts
        .iter()
        .flat_map(|p| match p {
            Sent::Exp {
                scale,
                offset,
                counts,
            } => counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (*scale, i64::from(*offset) + i as i64, *c))
                .collect::<Vec<_>>(),
            _ => vec![],
        })
        .collect();
    let mut scale = parts
        .iter()
        .filter_map(|p| match p {
            Sent::Exp { scale, .. } => Some(*scale),
            _ => None,
        })
        .min()
        .unwrap_or(0);
    loop {
        let at_scale: Vec<i64> = items.iter().map(|(s, i, _)| i >> (s - scale)).collect();
        let (lo, hi) = (
            at_scale.iter().min().copied(),
            at_scale.iter().max().copied(),
        );
        match (lo, hi) {
            (Some(lo), Some(hi)) if hi - lo + 1 > 160 => scale -= 1,
            (Some(lo), Some(hi)) => {
                let mut counts = vec![0u64; (hi - lo + 1) as usize];
                for ((_, _, c), idx) in items.iter().zip(&at_scale) {
                    counts[(idx - lo) as usize] += c;
                }
                return (scale, lo as i32, counts);
            }
            _ => return (scale, 0, vec![]),
        }
    }
}

/// Per key, each emission of an exponential histogram: (scale, offset, counts).
type ExpEmissions = BTreeMap<Key, Vec<(i32, i32, Vec<u64>)>>;

fn engine_totals(
    batches: &[otelcol_core::consumer::Batch<Metrics>],
) -> (BTreeMap<Key, Tot>, ExpEmissions) {
    let leak = |s: &str| -> &'static str {
        match s {
            "ana@example.com" => USERS[0],
            "bo@example.com" => USERS[1],
            "tok-1" => "tok-1",
            "tok-2" => "tok-2",
            "d.sum" => "d.sum",
            "c.sum" => "c.sum",
            "d.hist" => "d.hist",
            "c.hist" => "c.hist",
            "d.exp" => "d.exp",
            other => panic!("unexpected {other}"),
        }
    };
    let mut totals: BTreeMap<Key, Tot> = BTreeMap::new();
    let mut exp: ExpEmissions = BTreeMap::new();
    for b in batches {
        let token = b.context.bearer_token().map(|t| leak(t.expose()));
        for rm in &b.data.resource_metrics {
            let resource = &rm.resource.as_ref().unwrap().attributes;
            assert!(
                resource.iter().all(|kv| kv.key != "session.id"),
                "no session on the output resource"
            );
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                let metric = leak(&m.name);
                let key_of = |attrs: &[otelcol_core::pdata::proto::common::v1::KeyValue],
                              start: u64| {
                    let get = |k: &str| {
                        attrs
                            .iter()
                            .find(|kv| kv.key == k)
                            .and_then(|kv| kv.value.as_ref())
                            .and_then(otelcol_core::pdata::as_str)
                            .unwrap()
                            .to_string()
                    };
                    let attr: u8 = get("a").parse().unwrap();
                    (token, leak(&get("user.email")), metric, attr, start)
                };
                match m.data.as_ref().unwrap() {
                    metric::Data::Sum(s) => {
                        for p in &s.data_points {
                            let Some(otelcol_core::pdata::proto::metrics::v1::number_data_point::Value::AsDouble(v)) = p.value else {
                                panic!("doubles out")
                            };
                            totals
                                .entry(key_of(&p.attributes, p.start_time_unix_nano))
                                .or_default()
                                .add(&Sent::Sum(v));
                        }
                    }
                    metric::Data::Histogram(h) => {
                        for p in &h.data_points {
                            let v = Sent::Hist {
                                count: p.count,
                                sum: p.sum.unwrap(),
                                buckets: p.bucket_counts.clone(),
                            };
                            totals
                                .entry(key_of(&p.attributes, p.start_time_unix_nano))
                                .or_default()
                                .add(&v);
                        }
                    }
                    metric::Data::ExponentialHistogram(h) => {
                        for p in &h.data_points {
                            let pos = p.positive.clone().unwrap_or_default();
                            assert!(pos.bucket_counts.len() <= 160);
                            assert_eq!(pos.bucket_counts.iter().sum::<u64>(), p.count);
                            let key = key_of(&p.attributes, p.start_time_unix_nano);
                            let t = totals.entry(key).or_default();
                            t.count += p.count;
                            t.sum += p.sum.unwrap();
                            exp.entry(key).or_default().push((
                                p.scale,
                                pos.offset,
                                pos.bucket_counts,
                            ));
                        }
                    }
                    other => panic!("unexpected output {other:?}"),
                }
            }
        }
    }
    (totals, exp)
}

fn context(token: u8, header: Option<u8>) -> RequestContext {
    let token = match token {
        0 => None,
        1 => Some("tok-1"),
        _ => Some("tok-2"),
    };
    RequestContext {
        auth: token.map(|t| {
            Arc::new(AuthData {
                token: Some(BearerToken::new(t)),
                headers: vec![],
            })
        }),
        metadata: Arc::new(
            header
                .map(|h| vec![("x-user".into(), USERS[h as usize].into())])
                .unwrap_or_default(),
        ),
        ..Default::default()
    }
}

/// The engine under test: one piece, or in shards.
enum Under {
    One(Box<Engine>),
    Sharded(ShardedEngine),
}

/// Runs `events` through an engine, handing it each request decoded or,
/// when `encoded`, as its protobuf bytes ([`Engine::add_encoded`]); in
/// `shards` shards when above 1 (as the processor runs without storage).
fn run(events: &[Ev], encoded: bool, shards: usize) -> Result<(), TestCaseError> {
    let config = otelcol_processor_aggregation::AggregationConfig {
        aggregation_interval: Duration::from_secs(INTERVAL),
        grace: Duration::from_secs(GRACE),
        max_future_skew: Duration::from_secs(SKEW),
        stream_ttl: Duration::from_secs(TTL),
        lookup: vec![
            "datapoint".into(),
            "resource".into(),
            "header:x-user".into(),
        ],
        ..Default::default()
    };
    let mut e = match shards {
        1 => Under::One(Box::new(
            Engine::new(config.clone(), at(COLLECTOR_START)).unwrap(),
        )),
        n => Under::Sharded(ShardedEngine::new(&config, n, at(COLLECTOR_START), false).unwrap()),
    };
    let mut model = Model::default();
    let mut senders = Senders {
        last: HashMap::new(),
        starts: HashMap::new(),
    };
    let mut now = at(3600);
    let mut batches = vec![];
    for (idx, ev) in events.iter().enumerate() {
        match ev {
            Ev::Request {
                token,
                header,
                points,
            } => {
                let ctx = context(*token, *header);
                let tok = ctx.bearer_token().map(|t| {
                    if t.expose() == "tok-1" {
                        "tok-1"
                    } else {
                        "tok-2"
                    }
                });
                let outs: Vec<Out> = points
                    .iter()
                    .map(|p| senders.concrete(p, tok, *header, now))
                    .collect();
                let request = to_request(&outs);
                match (&mut e, encoded) {
                    (Under::One(e), true) => e.add_encoded(&request.encode_to_vec(), &ctx, now),
                    (Under::One(e), false) => e.add(&request, &ctx, now),
                    (Under::Sharded(e), true) => e.add_encoded(&request.encode_to_vec(), &ctx, now),
                    (Under::Sharded(e), false) => e.add(&request, &ctx, now),
                }
                .unwrap();
                model
                    .arrivals
                    .extend(outs.into_iter().map(|o| (idx, now, o)));
            }
            Ev::Advance(secs) => now += secs * NS,
            Ev::Tick => {
                batches.extend(match &mut e {
                    Under::One(e) => e.take_closed(now),
                    Under::Sharded(e) => e.take_closed(now),
                });
                model.ticks.push((idx, now));
            }
            // A sharded engine keeps no state on disk (the model's
            // restarts change nothing).
            Ev::Restart => {
                if let Under::One(one) = &mut e {
                    let bytes = one.snapshot();
                    **one = Engine::restore(config.clone(), &bytes).unwrap();
                    prop_assert_eq!(
                        one.snapshot().len(),
                        bytes.len(),
                        "a restored engine writes the same state"
                    );
                }
            }
        }
    }
    batches.extend(match &mut e {
        Under::One(e) => e.take_all(),
        Under::Sharded(e) => e.take_all(),
    });
    let (got, got_exp) = engine_totals(&batches);
    let (want, want_exp) = model.totals();
    let nonzero = |m: BTreeMap<Key, Tot>| -> BTreeMap<Key, Tot> {
        m.into_iter()
            .filter(|(_, t)| {
                *t != Tot::default()
                    && (t.sum != 0.0 || t.count != 0 || t.buckets.iter().any(|b| *b > 0))
            })
            .collect()
    };
    prop_assert_eq!(nonzero(got), nonzero(want));
    for (key, emissions) in got_exp {
        if let [only] = &emissions[..] {
            prop_assert_eq!(
                only,
                &expected_exp(&want_exp[&key]),
                "exponential histogram {:?}",
                key
            );
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_gives_the_reference_models_totals(events in events()) {
        run(&events, false, 1)?;
    }

    /// The same through the bytes: sums and gauges are read in place,
    /// histograms decoded first (`view.rs` checks which path each takes).
    #[test]
    fn the_engine_reading_request_bytes_gives_the_reference_models_totals(events in events()) {
        run(&events, true, 1)?;
    }

    /// The same in three shards (the two users on shards 0 and 2; a
    /// request of both is split between them): decoded and as bytes.
    #[test]
    fn a_sharded_engine_gives_the_reference_models_totals(events in events()) {
        run(&events, false, 3)?;
        run(&events, true, 3)?;
    }
}
