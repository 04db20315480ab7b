//! Bytes to a sequence of aggregation-engine inputs: requests whose every
//! field comes from the bytes (extreme numbers, offsets and scales favoured)
//! and clock ticks.

use std::sync::Arc;

use otelcol_core::consumer::{AuthData, BearerToken, RequestContext};
use otelcol_core::pdata::proto::common::v1::KeyValue;
use otelcol_core::pdata::proto::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, number_data_point, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::Metrics;

/// One step of an engine run.
pub enum Step {
    /// `Engine::add(request, context, now)`.
    Add(Metrics, RequestContext, u64),
    /// `Engine::take_closed(now)`.
    Tick(u64),
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0u64, |acc, _| (acc << 8) | u64::from(self.u8()))
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.u8()) % from.len()]
    }
    fn f64(&mut self) -> f64 {
        match self.u8() % 8 {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::MAX,
            3 => -f64::MAX,
            4 => f64::from_bits(self.u64()),
            _ => f64::from(self.u8()),
        }
    }
    fn count(&mut self) -> u64 {
        match self.u8() % 6 {
            0 => u64::MAX,
            1 => self.u64(),
            _ => u64::from(self.u8()),
        }
    }
    fn i32(&mut self) -> i32 {
        match self.u8() % 6 {
            0 => i32::MAX,
            1 => i32::MIN,
            2 => self.u64() as i32,
            _ => i32::from(self.u8() as i8),
        }
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    otelcol_core::pdata::string_attribute(key, value)
}

const START: u64 = 1_800_000_000_000_000_000;
const USERS: [Option<&str>; 3] = [None, Some("ana@example.com"), Some("bo@example.com")];

fn attrs(b: &mut Bytes<'_>) -> Vec<KeyValue> {
    let mut out = vec![kv("a", &format!("{}", b.u8() % 4))];
    if let Some(u) = b.pick(&USERS) {
        out.push(kv("user.email", u));
    }
    out
}

fn times(b: &mut Bytes<'_>, now: u64) -> (u64, u64) {
    let mut t = || match b.u8() % 7 {
        0 => 0,
        1 => u64::MAX,
        2 => b.u64(),
        3 => now.saturating_add(3_600_000_000_000),
        _ => now.saturating_sub(u64::from(b.u8()) * 10_000_000_000),
    };
    (t(), t())
}

fn metric(b: &mut Bytes<'_>, now: u64) -> Metric {
    let name = b.pick(&["m.a", "m.b", "m.c"]).to_string();
    let kind = b.u8();
    let points = 1 + usize::from(b.u8() % 4);
    let temporality = 1 + i32::from(kind & 1);
    let data = match (kind >> 1) % 5 {
        0 | 1 => {
            let data_points = (0..points)
                .map(|_| {
                    let (start, time) = times(b, now);
                    NumberDataPoint {
                        attributes: attrs(b),
                        start_time_unix_nano: start,
                        time_unix_nano: time,
                        value: Some(if b.u8() & 1 == 0 {
                            number_data_point::Value::AsDouble(b.f64())
                        } else {
                            number_data_point::Value::AsInt(b.u64() as i64)
                        }),
                        flags: u32::from(b.u8() % 3 == 0),
                        ..Default::default()
                    }
                })
                .collect();
            if (kind >> 1) % 5 == 0 {
                metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: temporality,
                    is_monotonic: b.u8() & 1 == 0,
                })
            } else {
                metric::Data::Gauge(Gauge { data_points })
            }
        }
        2 => metric::Data::Histogram(Histogram {
            aggregation_temporality: temporality,
            data_points: (0..points)
                .map(|_| {
                    let (start, time) = times(b, now);
                    let n = usize::from(b.u8() % 5);
                    HistogramDataPoint {
                        attributes: attrs(b),
                        start_time_unix_nano: start,
                        time_unix_nano: time,
                        count: b.count(),
                        sum: (b.u8() & 1 == 0).then(|| b.f64()),
                        bucket_counts: (0..n).map(|_| b.count()).collect(),
                        explicit_bounds: (0..n.saturating_sub(1)).map(|_| b.f64()).collect(),
                        min: (b.u8() & 1 == 0).then(|| b.f64()),
                        max: (b.u8() & 1 == 0).then(|| b.f64()),
                        ..Default::default()
                    }
                })
                .collect(),
        }),
        _ => metric::Data::ExponentialHistogram(ExponentialHistogram {
            aggregation_temporality: temporality,
            data_points: (0..points)
                .map(|_| {
                    let (start, time) = times(b, now);
                    let scale = match b.u8() % 5 {
                        0 => b.i32(),
                        _ => i32::from(b.u8() % 32) - 11,
                    };
                    let side = |b: &mut Bytes<'_>| {
                        let len = match b.u8() % 6 {
                            0 => 300,
                            n => usize::from(n),
                        };
                        Some(Buckets {
                            offset: b.i32(),
                            bucket_counts: (0..len).map(|_| u64::from(b.u8() % 3)).collect(),
                        })
                    };
                    let (positive, negative) = (side(b), side(b));
                    let counted: u64 = positive
                        .iter()
                        .chain(&negative)
                        .flat_map(|s| &s.bucket_counts)
                        .sum();
                    let zero_count = u64::from(b.u8() % 3);
                    ExponentialHistogramDataPoint {
                        attributes: attrs(b),
                        start_time_unix_nano: start,
                        time_unix_nano: time,
                        scale,
                        zero_count,
                        count: if b.u8() % 4 == 0 {
                            b.count()
                        } else {
                            counted + zero_count
                        },
                        sum: (b.u8() & 1 == 0).then(|| b.f64()),
                        positive,
                        negative,
                        ..Default::default()
                    }
                })
                .collect(),
        }),
    };
    Metric {
        name,
        data: Some(data),
        ..Default::default()
    }
}

/// The steps `data` describes.
pub fn requests_and_ticks(data: &[u8]) -> Vec<Step> {
    let mut b = Bytes(data);
    let mut now = START;
    let mut steps = vec![];
    while !b.0.is_empty() && steps.len() < 64 {
        now = now.saturating_add(u64::from(b.u8()) * 10_000_000_000);
        if b.u8() % 4 == 3 {
            steps.push(Step::Tick(now));
            continue;
        }
        let token = b.pick(&[None, Some("tok-a"), Some("tok-b")]);
        let header = b.pick(&USERS);
        let ctx = RequestContext {
            auth: token.map(|t| {
                Arc::new(AuthData {
                    token: Some(BearerToken::new(t)),
                    headers: vec![],
                })
            }),
            metadata: Arc::new(
                header
                    .map(|u| vec![("x-user".into(), u.into())])
                    .unwrap_or_default(),
            ),
            ..Default::default()
        };
        let resources = 1 + usize::from(b.u8() % 2);
        let resource_metrics = (0..resources)
            .map(|_| {
                let mut attributes = vec![kv("service.name", "fuzz")];
                if let Some(u) = b.pick(&USERS) {
                    attributes.push(kv("user.email", u));
                }
                attributes.push(kv("session.id", &format!("s{}", b.u8() % 3)));
                let metrics = (0..1 + usize::from(b.u8() % 3))
                    .map(|_| metric(&mut b, now))
                    .collect();
                ResourceMetrics {
                    resource: Some(Resource {
                        attributes,
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        metrics,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect();
        steps.push(Step::Add(Metrics { resource_metrics }, ctx, now));
    }
    steps
}
