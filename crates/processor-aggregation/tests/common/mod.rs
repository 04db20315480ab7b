//! Builders for requests and a flat view of the engine's output.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use otelcol_core::consumer::{AuthData, Batch, BearerToken, RequestContext};
use otelcol_core::pdata::proto::common::v1::KeyValue;
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::{string_attribute, Metrics};
use otelcol_processor_aggregation::{AggregationConfig, Engine};

/// 2026-11-21T10:00:00Z in seconds: aligned to 5 minutes and to the hour.
pub const T0: u64 = 1_795_255_200;
pub const NS: u64 = 1_000_000_000;

/// Unix nanoseconds `secs` seconds after T0.
pub fn at(secs: u64) -> u64 {
    (T0 + secs) * NS
}

pub fn attrs(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    pairs
        .iter()
        .map(|(k, v)| string_attribute(*k, *v))
        .collect()
}

pub fn point(value: f64, time: u64, start: u64, pairs: &[(&str, &str)]) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs(pairs),
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

pub fn sum(name: &str, temporality: i32, monotonic: bool, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: "tokens".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

pub fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

pub fn request(resource: &[(&str, &str)], metrics: Vec<Metric>) -> Metrics {
    Metrics {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: attrs(resource),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub fn with_token(token: &str) -> RequestContext {
    RequestContext {
        auth: Some(Arc::new(AuthData {
            token: Some(BearerToken::new(token)),
            headers: vec![],
        })),
        ..Default::default()
    }
}

/// An engine with 5-minute windows, 30 s grace, the collector started an hour before T0.
pub fn engine(tweak: impl FnOnce(&mut AggregationConfig)) -> Engine {
    let mut c = AggregationConfig {
        aggregation_interval: Duration::from_secs(300),
        ..Default::default()
    };
    tweak(&mut c);
    Engine::new(c, at(0) - 3600 * NS).unwrap()
}

/// One output point, flattened.
#[derive(Clone, Debug, PartialEq)]
pub struct Total {
    pub token: Option<String>,
    pub resource: BTreeMap<String, String>,
    pub metric: String,
    pub kind: &'static str,
    pub start: u64,
    pub end: u64,
    pub attrs: BTreeMap<String, String>,
    pub value: f64,
}

fn flat(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            let v = kv
                .value
                .as_ref()
                .and_then(otelcol_core::pdata::as_str)
                .unwrap_or("?");
            (kv.key.clone(), v.to_string())
        })
        .collect()
}

/// Every output point of `batches`, with a value (histograms: their sum).
pub fn totals(batches: &[Batch<Metrics>]) -> Vec<Total> {
    let mut out = vec![];
    for b in batches {
        let token = b.context.bearer_token().map(|t| t.expose().to_string());
        for rm in &b.data.resource_metrics {
            let resource = flat(&rm.resource.as_ref().unwrap().attributes);
            for sm in &rm.scope_metrics {
                assert_eq!(
                    sm.scope.as_ref().unwrap().name,
                    otelcol_processor_aggregation::SCOPE_NAME
                );
                for m in &sm.metrics {
                    let mut push = |kind, a: &[KeyValue], start, end, value| {
                        out.push(Total {
                            token: token.clone(),
                            resource: resource.clone(),
                            metric: m.name.clone(),
                            kind,
                            start,
                            end,
                            attrs: flat(a),
                            value,
                        })
                    };
                    match m.data.as_ref().unwrap() {
                        metric::Data::Sum(s) => {
                            let kind = match (s.aggregation_temporality, s.is_monotonic) {
                                (1, true) => "sum",
                                (1, false) => "updown",
                                _ => "last",
                            };
                            for p in &s.data_points {
                                let Some(number_data_point::Value::AsDouble(v)) = p.value else {
                                    panic!("doubles out")
                                };
                                push(
                                    kind,
                                    &p.attributes,
                                    p.start_time_unix_nano,
                                    p.time_unix_nano,
                                    v,
                                );
                            }
                        }
                        metric::Data::Gauge(g) => {
                            for p in &g.data_points {
                                let Some(number_data_point::Value::AsDouble(v)) = p.value else {
                                    panic!("doubles out")
                                };
                                push(
                                    "gauge",
                                    &p.attributes,
                                    p.start_time_unix_nano,
                                    p.time_unix_nano,
                                    v,
                                );
                            }
                        }
                        metric::Data::Histogram(h) => {
                            assert_eq!(h.aggregation_temporality, 1);
                            for p in &h.data_points {
                                push(
                                    "histogram",
                                    &p.attributes,
                                    p.start_time_unix_nano,
                                    p.time_unix_nano,
                                    p.sum.unwrap(),
                                );
                            }
                        }
                        metric::Data::ExponentialHistogram(h) => {
                            for p in &h.data_points {
                                push(
                                    "exphistogram",
                                    &p.attributes,
                                    p.start_time_unix_nano,
                                    p.time_unix_nano,
                                    p.sum.unwrap(),
                                );
                            }
                        }
                        metric::Data::Summary(_) => panic!("no summaries out"),
                    }
                }
            }
        }
    }
    out
}

/// Totals keyed by (user, metric, window start in seconds after T0).
pub fn by_user(batches: &[Batch<Metrics>], key: &str) -> BTreeMap<(String, String, i64), f64> {
    let mut m = BTreeMap::new();
    for t in totals(batches) {
        let user = t.attrs.get(key).cloned().unwrap_or_default();
        let w = (t.start / NS) as i64 - T0 as i64;
        *m.entry((user, t.metric, w)).or_insert(0.0) += t.value;
    }
    m
}

pub fn k(user: &str, metric: &str, window: i64) -> (String, String, i64) {
    (user.into(), metric.into(), window)
}
