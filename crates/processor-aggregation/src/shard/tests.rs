use std::sync::Arc;

use otelcol_core::consumer::RequestContext;
use otelcol_core::pdata::proto::common::v1::{any_value, AnyValue, KeyValue};
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use prost::Message;

use super::*;

const SHARDS: u8 = 7;
const NOW: u64 = 1_795_255_200_000_000_000;

fn kv(key: &str, value: &str) -> KeyValue {
    otelcol_core::pdata::string_attribute(key, value)
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn point(attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: NOW,
        value: Some(number_data_point::Value::AsDouble(1.0)),
        ..Default::default()
    }
}

fn sum(points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: "m".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: 1,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn resource(attrs: Vec<KeyValue>, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes: attrs,
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Requests with the user in every place the rules look, in order.
fn requests() -> Vec<Metrics> {
    let summary = Metric {
        name: "s".into(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint::default(); 2],
        })),
        ..Default::default()
    };
    let gauge = Metric {
        name: "g".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![point(vec![kv("user.email", "gauge@example.com")])],
        })),
        ..Default::default()
    };
    let no_data = Metric {
        name: "nothing".into(),
        ..Default::default()
    };
    let one = |r: ResourceMetrics| Metrics {
        resource_metrics: vec![r],
    };
    vec![
        // A later duplicate of the key is not the user.
        one(resource(
            vec![],
            vec![sum(vec![point(vec![
                kv("user.email", "first@example.com"),
                kv("user.email", "second@example.com"),
            ])])],
        )),
        // An empty first value: the next key, not the duplicate.
        one(resource(
            vec![],
            vec![sum(vec![point(vec![
                kv("user.email", ""),
                kv("user.email", "dup@example.com"),
                int("user.id", 42),
            ])])],
        )),
        // On the resource; on the point over the resource; none at all.
        Metrics {
            resource_metrics: vec![
                resource(
                    vec![kv("user.email", "res@example.com")],
                    vec![
                        sum(vec![
                            point(vec![kv("model", "a")]),
                            point(vec![kv("user.email", "pt@example.com")]),
                        ]),
                        summary.clone(),
                        no_data,
                        gauge,
                    ],
                ),
                resource(vec![], vec![sum(vec![point(vec![kv("model", "b")])])]),
                resource(
                    vec![kv("user.email", "other@example.com")],
                    vec![summary, sum(vec![point(vec![])])],
                ),
            ],
        },
        // Many users in one request.
        Metrics {
            resource_metrics: (0..40)
                .map(|i| {
                    resource(
                        vec![kv("user.email", &format!("u{i}@example.com"))],
                        vec![sum(vec![point(vec![kv("model", "a")]); 3])],
                    )
                })
                .collect(),
        },
    ]
}

fn configs() -> Vec<AggregationConfig> {
    let base = AggregationConfig {
        attribute_keys: vec!["user.email".into(), "user.id".into()],
        ..Default::default()
    };
    vec![
        base.clone(),
        AggregationConfig {
            lookup: vec!["resource".into(), "datapoint".into()],
            ..base.clone()
        },
        AggregationConfig {
            lookup: vec!["header:x-user".into(), "datapoint".into()],
            missing_key: MissingKey::Keep,
            ..base.clone()
        },
        AggregationConfig {
            lookup: vec!["datapoint".into()],
            missing_key: MissingKey::Keep,
            missing_key_value: "nobody".into(),
            ..base
        },
    ]
}

fn contexts() -> Vec<RequestContext> {
    vec![
        RequestContext::default(),
        RequestContext {
            metadata: Arc::new(vec![("x-user".into(), "hdr@example.com".into())]),
            ..Default::default()
        },
        RequestContext {
            metadata: Arc::new(vec![("x-user".into(), String::new())]),
            ..Default::default()
        },
    ]
}

/// Every point goes to the shard of the user the engine finds for it
/// (its trace's), through the decoded tree and through the bytes.
#[test]
fn the_router_finds_the_user_the_engine_finds() {
    let mut routed = 0;
    for config in configs() {
        let router = Router::new(&config, SHARDS).unwrap();
        for ctx in contexts() {
            for request in requests() {
                let bytes = request.encode_to_vec();
                let prepared = Engine::prepare(&bytes).unwrap();
                for input in [Input::Tree(&request), Input::Prepared(&prepared)] {
                    let route = router.route(input, &ctx);
                    let mut e = Engine::new(config.clone(), 0).unwrap();
                    e.set_tracing(true);
                    e.check_part(input, &ctx, NOW, None, 0).unwrap();
                    let out = e.apply_part(input, &ctx, NOW, None);
                    assert_eq!(out.traces.len(), route.points.len());
                    assert_eq!(route.summaries, out.dropped.summary);
                    for (t, shard) in out.traces.iter().zip(&route.points) {
                        let want = t.user.as_deref().map_or(0, |u| shard_of(u, SHARDS));
                        assert_eq!(*shard, want, "{:?} {t:?}", config.lookup);
                        routed += 1;
                    }
                    // Each resource: its points' shards and where they begin.
                    let mut next = 0;
                    for (i, (mask, first)) in route.resources.iter().enumerate() {
                        assert_eq!(*first as usize, next, "resource {i}");
                        let end = route
                            .resources
                            .get(i + 1)
                            .map_or(route.points.len(), |r| r.1 as usize);
                        let want = route.points[next..end]
                            .iter()
                            .fold(0u64, |m, s| m | (1 << s));
                        assert_eq!(*mask, want);
                        next = end;
                    }
                    assert_eq!(
                        route.touched,
                        route.resources.iter().fold(0, |m, r| m | r.0)
                    );
                }
            }
        }
    }
    assert_eq!(routed, 4 * 3 * 2 * (1 + 1 + 5 + 120));
}

/// The shard of a user is fixed: the same on every machine and in every
/// release (a durable sharded state would depend on it), and users spread
/// evenly.
#[test]
fn a_user_has_one_shard_everywhere_and_users_spread_evenly() {
    assert_eq!(shard_of("ana@example.com", 3), 0);
    assert_eq!(shard_of("bo@example.com", 3), 2);
    assert_eq!(shard_of("", 16), shard_of("", 16));
    assert_eq!(shard_of("anyone", 1), 0);
    let mut per = [0usize; 4];
    for i in 0..10_000 {
        per[usize::from(shard_of(&format!("user{i:06}@example.com"), 4))] += 1;
    }
    for n in per {
        assert!((2_250..=2_750).contains(&n), "{per:?}");
    }
}

fn user_request(users: &[&str], series: usize) -> Metrics {
    Metrics {
        resource_metrics: users
            .iter()
            .map(|u| {
                let points = (0..series)
                    .map(|i| point(vec![kv("user.email", u), kv("n", &i.to_string())]))
                    .collect();
                resource(vec![], vec![sum(points)])
            })
            .collect(),
    }
}

/// `max_series` bounds all shards together, and a request spread over
/// several is refused whole: nothing of it counts anywhere.
#[test]
fn max_series_holds_across_shards_and_a_split_request_is_refused_whole() {
    let config = AggregationConfig {
        max_series: 6,
        ..Default::default()
    };
    // ana on shard 0, bo on shard 2.
    let e = ShardedEngine::new(&config, 3, 0, false).unwrap();
    let ctx = RequestContext::default();
    let add = |users: &[&str], series| e.add(&user_request(users, series), &ctx, NOW);
    assert_eq!(add(&["ana@example.com"], 4).unwrap().accepted, 4);
    assert_eq!(e.open_series(), 4);
    // 2 more of ana (already open) and 2 new of bo: 2 new, room for 2.
    let both = add(&["ana@example.com", "bo@example.com"], 2).unwrap();
    assert_eq!(both.accepted, 4);
    assert_eq!(e.open_series(), 6);
    // Full: a request of both users needing one new series of each.
    let err = add(&["ana@example.com", "bo@example.com"], 3).unwrap_err();
    assert_eq!(
        err,
        AddError::SeriesLimit {
            needed: 1,
            free: 0,
            max: 6
        }
    );
    // bo alone, on its own shard, counts ana's series too.
    assert!(add(&["bo@example.com"], 3).is_err());
    assert_eq!(e.open_series(), 6);
    let totals: f64 = e
        .take_all()
        .iter()
        .flat_map(|b| &b.data.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s
                .data_points
                .iter()
                .map(|p| match p.value {
                    Some(number_data_point::Value::AsDouble(v)) => v,
                    _ => 0.0,
                })
                .sum(),
            _ => 0.0,
        })
        .sum();
    assert_eq!(totals, 8.0, "the refused requests are in no total");
    assert_eq!(e.open_series(), 0);
}
