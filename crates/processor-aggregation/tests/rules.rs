//! One test per rule of `shared/spec/aggregation.md`, with exact totals.

mod common;

use std::collections::BTreeMap;

use common::*;
use otelcol_core::consumer::RequestContext;
use otelcol_core::pdata::proto::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, summary_data_point, ExponentialHistogram,
    ExponentialHistogramDataPoint, Histogram, HistogramDataPoint, Metric, Summary,
    SummaryDataPoint,
};
use otelcol_core::pdata::Metrics;
use otelcol_processor_aggregation::{AddError, Dropped, GaugePolicy, MissingKey};

const DELTA: i32 = 1;
const CUMULATIVE: i32 = 2;
const ANA: (&str, &str) = ("user.email", "ana@example.com");
const BO: (&str, &str) = ("user.email", "bo@example.com");
const CC: &[(&str, &str)] = &[("service.name", "claude-code")];
const LATER: u64 = 3600; // seconds after T0 by which every window below is closed
const CTX: fn() -> RequestContext = RequestContext::default;

fn tokens(points: Vec<otelcol_core::pdata::proto::metrics::v1::NumberDataPoint>) -> Metrics {
    request(
        CC,
        vec![sum("claude_code.token.usage", DELTA, true, points)],
    )
}

#[test]
fn windows_follow_the_points_own_timestamp() {
    let mut e = engine(|_| {});
    // Arrival is an hour later; the points still land in their own windows.
    e.add(
        &tokens(vec![
            point(1.0, at(299), 0, &[ANA]),
            point(2.0, at(300), 0, &[ANA]),
        ]),
        &CTX(),
        at(LATER),
    )
    .unwrap();
    let t = by_user(&e.take_closed(at(LATER)), "user.email");
    assert_eq!(
        t,
        BTreeMap::from([
            (k("ana@example.com", "claude_code.token.usage", 0), 1.0),
            (k("ana@example.com", "claude_code.token.usage", 300), 2.0),
        ])
    );
}

#[test]
fn delta_sums_are_added_and_output_shape_is_right() {
    let mut e = engine(|_| {});
    let out = e
        .add(
            &tokens(vec![
                point(1834.0, at(10), at(0), &[ANA, ("type", "input")]),
                point(612.0, at(20), at(10), &[ANA, ("type", "input")]),
                point(0.0, at(30), at(20), &[ANA, ("type", "input")]),
            ]),
            &CTX(),
            at(40),
        )
        .unwrap();
    assert_eq!(out.accepted, 3);
    assert!(
        e.take_closed(at(329)).is_empty(),
        "window end 300 + grace 30 not reached"
    );
    let t = totals(&e.take_closed(at(330)));
    assert_eq!(t.len(), 1);
    let total = &t[0];
    assert_eq!(total.kind, "sum");
    assert_eq!(total.value, 2446.0);
    assert_eq!((total.start, total.end), (at(0), at(300)));
    assert_eq!(
        total.attrs,
        BTreeMap::from([
            ("type".into(), "input".into()),
            ("user.email".into(), "ana@example.com".into())
        ])
    );
    assert_eq!(
        total.resource,
        BTreeMap::from([("service.name".into(), "claude-code".into())])
    );
    assert_eq!(e.open_series(), 0);
}

#[test]
fn cumulative_stream_across_three_windows_with_a_reset() {
    let mut e = engine(|_| {});
    let s1 = at(0); // started after the collector: its first point counts in full
    let s2 = at(420); // the sender restarted
    let pts = [
        (10.0, at(60), s1),  // window 0: +10
        (25.0, at(360), s1), // window 300: +15
        (5.0, at(480), s2),  // window 300: reset, +5
        (12.0, at(660), s2), // window 600: +7
    ];
    for (v, t, s) in pts {
        e.add(
            &request(
                CC,
                vec![sum(
                    "claude_code.cost.usage",
                    CUMULATIVE,
                    true,
                    vec![point(v, t, s, &[ANA])],
                )],
            ),
            &CTX(),
            t,
        )
        .unwrap();
    }
    let batches = e.take_closed(at(LATER));
    assert!(
        totals(&batches).iter().all(|t| t.kind == "sum"),
        "output is a delta monotonic sum"
    );
    let t = by_user(&batches, "user.email");
    assert_eq!(
        t,
        BTreeMap::from([
            (k("ana@example.com", "claude_code.cost.usage", 0), 10.0),
            (k("ana@example.com", "claude_code.cost.usage", 300), 20.0),
            (k("ana@example.com", "claude_code.cost.usage", 600), 7.0),
        ])
    );
}

#[test]
fn cumulative_baseline_lower_value_reset_and_stale_points() {
    // The collector started at T0; this stream began an hour before.
    let mut e = otelcol_processor_aggregation::Engine::new(
        otelcol_processor_aggregation::AggregationConfig {
            aggregation_interval: std::time::Duration::from_secs(300),
            ..Default::default()
        },
        at(0),
    )
    .unwrap();
    let s = at(0) - 3600 * NS;
    let mut send = |v: f64, t: u64| {
        let r = request(
            CC,
            vec![sum("m", CUMULATIVE, true, vec![point(v, t, s, &[ANA])])],
        );
        e.add(&r, &CTX(), t).unwrap()
    };
    let o = send(100.0, at(10));
    assert_eq!(
        (o.accepted, o.baseline),
        (0, 1),
        "first point of an older stream only sets the baseline"
    );
    assert_eq!(send(130.0, at(20)).accepted, 1); // +30
    let o = send(130.0, at(20));
    assert_eq!(
        o.dropped,
        Dropped {
            stale: 1,
            ..Default::default()
        },
        "a repeated point is stale"
    );
    assert_eq!(
        send(120.0, at(15)).dropped.stale,
        1,
        "an older point is stale"
    );
    assert_eq!(send(4.0, at(30)).accepted, 1); // lower value, same start: reset, +4
    assert_eq!(send(9.0, at(40)).accepted, 1); // +5
    let t = by_user(&e.take_closed(at(LATER)), "user.email");
    assert_eq!(t, BTreeMap::from([(k("ana@example.com", "m", 0), 39.0)]));
}

#[test]
fn the_same_data_as_delta_and_as_cumulative_gives_identical_totals() {
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut delta, mut cumulative) = (engine(|_| {}), engine(|_| {}));
    let users = [ANA, BO];
    let mut running = [[0.0f64; 2]; 2];
    for step in 0..60u64 {
        let t = at(step * 25 + 5);
        for (u, user) in users.iter().enumerate() {
            for (ty, kind) in ["input", "output"].iter().enumerate() {
                let inc = (next() % 1000) as f64;
                running[u][ty] += inc;
                let labels = [*user, ("type", *kind)];
                delta
                    .add(
                        &tokens(vec![point(inc, t, t - 25 * NS, &labels)]),
                        &CTX(),
                        t,
                    )
                    .unwrap();
                let c = request(
                    CC,
                    vec![sum(
                        "claude_code.token.usage",
                        CUMULATIVE,
                        true,
                        vec![point(running[u][ty], t, at(0), &labels)],
                    )],
                );
                cumulative.add(&c, &CTX(), t).unwrap();
            }
        }
    }
    let d = totals(&delta.take_all());
    let c = totals(&cumulative.take_all());
    assert_eq!(d.len(), 2 * 2 * 5, "2 users × 2 types × 5 windows");
    let key = |t: &Total| (t.attrs.clone(), t.start);
    let mut d: Vec<_> = d.iter().map(|t| (key(t), t.value)).collect();
    let mut c: Vec<_> = c.iter().map(|t| (key(t), t.value)).collect();
    d.sort_by(|a, b| a.0.cmp(&b.0));
    c.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(d, c);
}

#[test]
fn fixtures_delta_and_cumulative_exports_agree() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    let load = |name: &str| -> Metrics {
        serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
    };
    // Totals by (metric, window); the delta file and the cumulative files are different users.
    let run = |names: &[&str]| {
        let mut e = engine(|c| c.exclude_attributes = vec!["session.id".into()]);
        for n in names {
            let o = e.add(&load(n), &CTX(), at(400)).unwrap();
            assert_eq!(o.dropped, Dropped::default(), "{n}");
        }
        let mut m: BTreeMap<(String, i64), f64> = BTreeMap::new();
        for ((_, metric, w), v) in by_user(&e.take_all(), "user.email") {
            *m.entry((metric, w)).or_insert(0.0) += v;
        }
        m
    };
    let delta = run(&["claude-code-metrics-delta.json"]);
    let expected: BTreeMap<(String, i64), f64> = [
        ("claude_code.active_time.total", 96.75),
        ("claude_code.code_edit_tool.decision", 3.0),
        ("claude_code.commit.count", 1.0),
        ("claude_code.cost.usage", 0.0914),
        ("claude_code.lines_of_code.count", 49.0),
        ("claude_code.pull_request.count", 1.0),
        ("claude_code.session.count", 1.0),
        ("claude_code.token.usage", 22926.0),
    ]
    .into_iter()
    .map(|(m, v)| ((m.to_string(), 0), v))
    .collect();
    assert_eq!(
        delta, expected,
        "plain sums of the delta export, computed independently"
    );
    let cum1 = run(&["claude-code-metrics-cumulative-1.json"]);
    assert_eq!(
        cum1, delta,
        "export 1 of a stream begun after the collector counts in full"
    );
    let cum12 = run(&[
        "claude-code-metrics-cumulative-1.json",
        "claude-code-metrics-cumulative-2.json",
    ]);
    for (key, v) in &delta {
        let got = cum12[key];
        assert!((got - v * 2.5).abs() < 1e-9, "{key:?}: {got} != 2.5 × {v}");
    }
}

#[test]
fn idle_cumulative_streams_expire() {
    let mut e = engine(|c| c.stream_ttl = std::time::Duration::from_secs(600));
    e.add(
        &request(
            CC,
            vec![sum(
                "m",
                CUMULATIVE,
                true,
                vec![point(5.0, at(10), at(0), &[ANA])],
            )],
        ),
        &CTX(),
        at(10),
    )
    .unwrap();
    assert_eq!(e.open_streams(), 1);
    e.take_closed(at(609));
    assert_eq!(e.open_streams(), 1);
    e.take_closed(at(610));
    assert_eq!(e.open_streams(), 0);
}

#[test]
fn non_monotonic_sums_delta_added_cumulative_as_a_gauge() {
    let mut e = engine(|_| {});
    let r = request(
        CC,
        vec![
            sum(
                "queue.delta",
                DELTA,
                false,
                vec![
                    point(5.0, at(10), 0, &[ANA]),
                    point(-2.0, at(20), 0, &[ANA]),
                ],
            ),
            sum(
                "sessions.active",
                CUMULATIVE,
                false,
                vec![
                    point(3.0, at(20), at(0), &[ANA]),
                    point(1.0, at(50), at(0), &[ANA]),
                    point(7.0, at(40), at(0), &[ANA]),
                ],
            ),
        ],
    );
    e.add(&r, &CTX(), at(60)).unwrap();
    let t = totals(&e.take_closed(at(LATER)));
    let by_name: BTreeMap<_, _> = t
        .iter()
        .map(|t| (t.metric.as_str(), (t.kind, t.value)))
        .collect();
    assert_eq!(by_name["queue.delta"], ("updown", 3.0));
    assert_eq!(
        by_name["sessions.active"],
        ("gauge", 1.0),
        "a gauge in effect: the stream's latest value (the older point is stale)"
    );
}

#[test]
fn gauges_follow_the_policy() {
    for (policy, expected) in [
        (GaugePolicy::Sum, 14.0),
        (GaugePolicy::Last, 2.0),
        (GaugePolicy::Min, 2.0),
        (GaugePolicy::Max, 8.0),
        (GaugePolicy::Mean, 14.0 / 3.0),
    ] {
        let mut e = engine(|c| c.gauge = policy);
        let g = gauge(
            "temp",
            vec![
                point(4.0, at(10), 0, &[ANA]),
                point(8.0, at(20), 0, &[ANA]),
                point(2.0, at(30), 0, &[ANA]),
            ],
        );
        e.add(&request(CC, vec![g]), &CTX(), at(40)).unwrap();
        let t = totals(&e.take_all());
        assert_eq!((t[0].kind, t[0].value), ("gauge", expected), "{policy:?}");
    }
}

fn histogram(temporality: i32, points: Vec<HistogramDataPoint>) -> Metric {
    Metric {
        name: "codex.turn.token_usage".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: temporality,
        })),
        ..Default::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn hp(
    time: u64,
    start: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    bounds: &[f64],
    buckets: &[u64],
) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes: attrs(&[ANA, ("token_type", "input")]),
        start_time_unix_nano: start,
        time_unix_nano: time,
        count,
        sum: Some(sum),
        min: Some(min),
        max: Some(max),
        explicit_bounds: bounds.to_vec(),
        bucket_counts: buckets.to_vec(),
        ..Default::default()
    }
}

fn only_histogram(batches: &[otelcol_core::consumer::Batch<Metrics>]) -> HistogramDataPoint {
    let m = &batches[0].data.resource_metrics[0].scope_metrics[0].metrics[0];
    let Some(metric::Data::Histogram(h)) = &m.data else {
        panic!("a histogram")
    };
    assert_eq!(h.data_points.len(), 1);
    h.data_points[0].clone()
}

#[test]
fn delta_histograms_merge() {
    let mut e = engine(|_| {});
    let b = [100.0, 1000.0];
    let r = request(
        CC,
        vec![histogram(
            DELTA,
            vec![
                hp(at(10), 0, 2, 950.0, 150.0, 800.0, &b, &[0, 2, 0]),
                hp(at(20), 0, 3, 5950.0, 50.0, 4608.0, &b, &[1, 1, 1]),
            ],
        )],
    );
    e.add(&r, &CTX(), at(30)).unwrap();
    let p = only_histogram(&e.take_all());
    assert_eq!(
        (p.count, p.sum, p.min, p.max),
        (5, Some(6900.0), Some(50.0), Some(4608.0))
    );
    assert_eq!(
        (p.explicit_bounds, p.bucket_counts),
        (b.to_vec(), vec![1, 3, 1])
    );
    assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (at(0), at(300)));

    let mut e = engine(|_| {});
    let r = request(
        CC,
        vec![histogram(
            DELTA,
            vec![
                hp(at(10), 0, 2, 950.0, 150.0, 800.0, &b, &[0, 2, 0]),
                hp(at(20), 0, 1, 10.0, 10.0, 10.0, &[50.0], &[1, 0]),
            ],
        )],
    );
    e.add(&r, &CTX(), at(30)).unwrap();
    let p = only_histogram(&e.take_all());
    assert_eq!(
        (p.count, p.sum, p.min, p.max),
        (3, Some(960.0), Some(10.0), Some(800.0))
    );
    assert!(
        p.bucket_counts.is_empty() && p.explicit_bounds.is_empty(),
        "different bounds: buckets dropped"
    );
}

#[test]
fn cumulative_histograms_become_deltas() {
    let mut e = engine(|_| {});
    let b = [100.0, 1000.0];
    for p in [
        hp(at(60), at(0), 2, 950.0, 150.0, 800.0, &b, &[0, 2, 0]),
        hp(at(360), at(0), 5, 6900.0, 50.0, 4608.0, &b, &[1, 3, 1]),
    ] {
        let t = p.time_unix_nano;
        e.add(
            &request(CC, vec![histogram(CUMULATIVE, vec![p])]),
            &CTX(),
            t,
        )
        .unwrap();
    }
    let batches = e.take_closed(at(LATER));
    let t = totals(&batches);
    assert_eq!(
        t.iter().map(|t| (t.start, t.value)).collect::<Vec<_>>(),
        vec![(at(0), 950.0), (at(300), 5950.0)]
    );
    let m = &batches[0].data.resource_metrics[0].scope_metrics[0].metrics[0];
    let Some(metric::Data::Histogram(h)) = &m.data else {
        panic!()
    };
    assert_eq!(h.data_points[1].count, 3);
    assert_eq!(h.data_points[1].bucket_counts, vec![1, 1, 1]);
    assert_eq!(h.data_points[1].min, None, "min of a difference is unknown");
    assert_eq!(
        h.data_points[0].min,
        Some(150.0),
        "a first point counted in full keeps its min"
    );
}

#[test]
fn exponential_histograms_merge_at_the_smaller_scale() {
    let ep = |scale: i32, offset: i32, counts: &[u64], count: u64, sum: f64| {
        ExponentialHistogramDataPoint {
            attributes: attrs(&[ANA]),
            time_unix_nano: at(10),
            count,
            sum: Some(sum),
            scale,
            zero_count: 0,
            positive: Some(Buckets {
                offset,
                bucket_counts: counts.to_vec(),
            }),
            ..Default::default()
        }
    };
    let m = Metric {
        name: "gen_ai.client.token.usage".into(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ep(2, 4, &[1, 1, 1, 1], 4, 10.0), ep(1, 2, &[3], 3, 5.0)],
            aggregation_temporality: DELTA,
        })),
        ..Default::default()
    };
    let mut e = engine(|_| {});
    e.add(&request(CC, vec![m]), &CTX(), at(20)).unwrap();
    let b = e.take_all();
    let m = &b[0].data.resource_metrics[0].scope_metrics[0].metrics[0];
    let Some(metric::Data::ExponentialHistogram(h)) = &m.data else {
        panic!()
    };
    let p = &h.data_points[0];
    assert_eq!((p.scale, p.count, p.sum), (1, 7, Some(15.0)));
    assert_eq!(
        p.positive,
        Some(Buckets {
            offset: 2,
            bucket_counts: vec![5, 2]
        })
    );
}

#[test]
fn summaries_are_dropped_and_counted() {
    let mut e = engine(|_| {});
    let s = Metric {
        name: "latency".into(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![
                SummaryDataPoint {
                    attributes: attrs(&[ANA]),
                    time_unix_nano: at(10),
                    count: 3,
                    sum: 1.0,
                    quantile_values: vec![summary_data_point::ValueAtQuantile {
                        quantile: 0.5,
                        value: 0.3
                    }],
                    ..Default::default()
                };
                2
            ],
        })),
        ..Default::default()
    };
    let o = e.add(&request(CC, vec![s]), &CTX(), at(20)).unwrap();
    assert_eq!(
        o.dropped,
        Dropped {
            summary: 2,
            ..Default::default()
        }
    );
    assert!(e.take_all().is_empty());
}

#[test]
fn grouping_never_mixes_resources_or_tokens_and_keeps_attributes_as_configured() {
    let mut e = engine(|c| c.exclude_attributes = vec!["session.id".into()]);
    let p = |v, session| {
        point(
            v,
            at(10),
            0,
            &[ANA, ("session.id", session), ("model", "opus")],
        )
    };
    let cc = tokens(vec![p(1.0, "s1"), p(2.0, "s2")]);
    let codex = request(
        &[("service.name", "codex_cli_rs")],
        vec![sum(
            "claude_code.token.usage",
            DELTA,
            true,
            vec![p(4.0, "s3")],
        )],
    );
    // The same metric from one token and two resources back to back,
    // then from another token: the engine remembers a metric's group
    // from one request to the next and must not reuse it for either.
    e.add(&cc, &with_token("tok-a"), at(20)).unwrap();
    e.add(&codex, &with_token("tok-a"), at(20)).unwrap();
    e.add(&cc, &with_token("tok-b"), at(20)).unwrap();
    let batches = e.take_all();
    assert_eq!(batches.len(), 2, "one batch per client token");
    let mut t: Vec<(Option<String>, String, f64)> = totals(&batches)
        .into_iter()
        .map(|t| {
            assert_eq!(
                t.attrs,
                BTreeMap::from([
                    ("model".into(), "opus".into()),
                    ("user.email".into(), "ana@example.com".into())
                ])
            );
            (t.token, t.resource["service.name"].clone(), t.value)
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(
        t,
        vec![
            (Some("tok-a".into()), "claude-code".into(), 3.0),
            (Some("tok-a".into()), "codex_cli_rs".into(), 4.0),
            (Some("tok-b".into()), "claude-code".into(), 3.0),
        ]
    );
    assert_eq!(
        batches[0].data.resource_metrics.len(),
        2,
        "one ResourceMetrics per resource"
    );

    let mut e = engine(|c| c.include_attributes = vec!["model".into()]);
    e.add(&cc, &CTX(), at(20)).unwrap();
    let t = totals(&e.take_all());
    assert_eq!(t.len(), 1);
    assert_eq!(
        t[0].attrs.keys().collect::<Vec<_>>(),
        vec!["model", "user.email"]
    );
}

#[test]
fn user_key_found_only_on_the_resource_is_written_on_every_point() {
    let mut e = engine(|_| {});
    let r = request(
        &[
            ("service.name", "claude-code"),
            ("user.email", "bedrock@example.com"),
        ],
        vec![sum(
            "claude_code.cost.usage",
            DELTA,
            true,
            vec![
                point(0.5, at(10), 0, &[("model", "sonnet")]),
                point(0.25, at(20), 0, &[("model", "sonnet")]),
            ],
        )],
    );
    e.add(&r, &CTX(), at(30)).unwrap();
    let t = totals(&e.take_all());
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].value, 0.75);
    assert_eq!(t[0].attrs["user.email"], "bedrock@example.com");
    assert_eq!(t[0].resource["user.email"], "bedrock@example.com");

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    let fixture: Metrics = serde_json::from_slice(
        &std::fs::read(dir.join("claude-code-metrics-resource-identity.json")).unwrap(),
    )
    .unwrap();
    let mut e = engine(|_| {});
    let o = e.add(&fixture, &CTX(), at(30)).unwrap();
    assert_eq!((o.accepted, o.dropped.total()), (13, 0));
    let emails: std::collections::BTreeSet<String> = totals(&e.take_all())
        .into_iter()
        .map(|t| t.attrs["user.email"].clone())
        .collect();
    assert_eq!(emails.len(), 1);
}

#[test]
fn lookup_order_attribute_keys_and_headers() {
    let mut e = engine(|c| {
        c.attribute_keys = vec!["user.email".into(), "user.id".into()];
        c.lookup = vec![
            "header:x-user-email".into(),
            "datapoint".into(),
            "resource".into(),
        ];
    });
    let ctx = RequestContext {
        metadata: std::sync::Arc::new(vec![("x-user-email".into(), "header@example.com".into())]),
        ..Default::default()
    };
    let r = tokens(vec![point(1.0, at(10), 0, &[ANA])]);
    e.add(&r, &ctx, at(20)).unwrap();
    let r = tokens(vec![point(2.0, at(10), 0, &[("user.id", "u-42")])]);
    e.add(&r, &CTX(), at(20)).unwrap();
    let mut t: Vec<(String, String, f64)> = totals(&e.take_all())
        .into_iter()
        .map(|t| {
            let (k, v) = t
                .attrs
                .iter()
                .find(|(k, _)| k.starts_with("user."))
                .unwrap();
            (k.clone(), v.clone(), t.value)
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(
        t,
        vec![
            ("user.email".into(), "header@example.com".into(), 1.0),
            ("user.id".into(), "u-42".into(), 2.0),
        ]
    );
}

#[test]
fn late_points_are_emitted_again_as_extra_deltas() {
    let mut e = engine(|_| {});
    e.add(&tokens(vec![point(5.0, at(10), 0, &[ANA])]), &CTX(), at(20))
        .unwrap();
    let first = by_user(&e.take_closed(at(330)), "user.email");
    assert_eq!(
        first,
        BTreeMap::from([(k("ana@example.com", "claude_code.token.usage", 0), 5.0)])
    );
    let o = e
        .add(
            &tokens(vec![point(3.0, at(250), 0, &[ANA])]),
            &CTX(),
            at(340),
        )
        .unwrap();
    assert_eq!((o.accepted, o.late), (1, 1));
    let second = by_user(&e.take_closed(at(400)), "user.email");
    assert_eq!(
        second,
        BTreeMap::from([(k("ana@example.com", "claude_code.token.usage", 0), 3.0)])
    );
}

#[test]
fn a_point_inside_the_grace_period_still_lands_in_its_window() {
    let mut e = engine(|_| {});
    e.add(
        &tokens(vec![point(5.0, at(299), 0, &[ANA])]),
        &CTX(),
        at(320),
    )
    .unwrap();
    let o = e
        .add(
            &tokens(vec![point(1.0, at(298), 0, &[ANA])]),
            &CTX(),
            at(325),
        )
        .unwrap();
    assert_eq!(o.late, 0);
    let t = by_user(&e.take_closed(at(330)), "user.email");
    assert_eq!(
        t,
        BTreeMap::from([(k("ana@example.com", "claude_code.token.usage", 0), 6.0)])
    );
}

#[test]
fn take_all_flushes_the_current_window() {
    let mut e = engine(|_| {});
    e.add(
        &tokens(vec![
            point(5.0, at(10), 0, &[ANA]),
            point(7.0, at(320), 0, &[ANA]),
        ]),
        &CTX(),
        at(321),
    )
    .unwrap();
    assert_eq!(
        by_user(&e.take_closed(at(321)), "user.email").len(),
        0,
        "grace not over for window 0"
    );
    let t = by_user(&e.take_all(), "user.email");
    assert_eq!(
        t,
        BTreeMap::from([
            (k("ana@example.com", "claude_code.token.usage", 0), 5.0),
            (k("ana@example.com", "claude_code.token.usage", 300), 7.0),
        ])
    );
    assert_eq!(e.open_series(), 0);
}

#[test]
fn future_points_count_at_arrival() {
    let mut e = engine(|_| {});
    let now = at(100);
    e.add(
        &tokens(vec![
            point(1.0, now + 299 * NS, 0, &[ANA]),
            point(2.0, now + 301 * NS, 0, &[ANA]),
        ]),
        &CTX(),
        now,
    )
    .unwrap();
    let t = by_user(&e.take_all(), "user.email");
    assert_eq!(
        t,
        BTreeMap::from([
            (k("ana@example.com", "claude_code.token.usage", 0), 2.0),
            (k("ana@example.com", "claude_code.token.usage", 300), 1.0),
        ]),
        "within the 5m skew the point keeps its time; beyond it, it counts at now"
    );
}

#[test]
fn missing_key_dropped_and_counted_or_kept() {
    let mut e = engine(|_| {});
    let r = request(
        CC,
        vec![sum(
            "claude_code.cost.usage",
            DELTA,
            true,
            vec![point(1.0, at(10), 0, &[("model", "x")]); 3],
        )],
    );
    let o = e.add(&r, &CTX(), at(20)).unwrap();
    assert_eq!(
        o.dropped,
        Dropped {
            missing_key: 3,
            ..Default::default()
        }
    );
    assert_eq!(o.missing_key_metrics, vec!["claude_code.cost.usage"]);
    assert!(e.take_all().is_empty());

    let mut e = engine(|c| {
        c.missing_key = MissingKey::Keep;
        c.missing_key_value = "unattributed".into();
    });
    e.add(&r, &CTX(), at(20)).unwrap();
    let t = totals(&e.take_all());
    assert_eq!(
        (t[0].attrs["user.email"].as_str(), t[0].value),
        ("unattributed", 3.0)
    );
}

#[test]
fn max_series_refuses_a_request_whole_and_retryably() {
    let mut e = engine(|c| c.max_series = 3);
    let dd = ("user.email", "dd@example.com");
    let ee = ("user.email", "ee@example.com");
    let two = tokens(vec![
        point(1.0, at(10), 0, &[dd]),
        point(1.0, at(10), 0, &[ee]),
    ]);
    assert_eq!(e.add(&two, &CTX(), at(30)).unwrap().accepted, 2);
    let r = tokens(vec![
        point(1.0, at(10), 0, &[ANA]),
        point(1.0, at(10), 0, &[BO]),
        point(1.0, at(10), 0, &[("user.email", "cy@example.com")]),
        point(1.0, at(20), 0, &[ANA]),
    ]);
    assert_eq!(
        e.add(&r, &CTX(), at(30)),
        Err(AddError::SeriesLimit {
            needed: 3,
            free: 1,
            max: 3
        })
    );
    assert_eq!(
        e.open_series(),
        2,
        "nothing of a refused request is applied"
    );
    // Points into open series still fit when new ones do not.
    assert_eq!(e.add(&two, &CTX(), at(31)).unwrap().accepted, 2);
    // Once the window is emitted there is room again: the retry counts once.
    assert_eq!(totals(&e.take_closed(at(330))).len(), 2);
    assert_eq!(e.add(&r, &CTX(), at(340)).unwrap().accepted, 4);
    let t = by_user(&e.take_all(), "user.email");
    assert_eq!(t[&k("ana@example.com", "claude_code.token.usage", 0)], 2.0);
    assert_eq!(t[&k("cy@example.com", "claude_code.token.usage", 0)], 1.0);
}

#[test]
fn invalid_values_are_dropped_and_counted() {
    let mut e = engine(|_| {});
    let mut nan = point(f64::NAN, at(10), 0, &[ANA]);
    let mut none = point(1.0, at(10), 0, &[ANA]);
    none.value = None;
    let mut flagged = point(1.0, at(10), 0, &[ANA]);
    flagged.flags = 1;
    nan.flags = 0;
    let o = e
        .add(
            &tokens(vec![nan, none, flagged, point(2.0, at(10), 0, &[ANA])]),
            &CTX(),
            at(20),
        )
        .unwrap();
    assert_eq!((o.accepted, o.dropped.invalid), (1, 3));
}

#[test]
fn tracing_records_each_point() {
    let mut e = engine(|_| {});
    e.set_tracing(true);
    let o = e
        .add(
            &tokens(vec![
                point(2.0, at(10), 0, &[ANA]),
                point(1.0, at(10), 0, &[]),
            ]),
            &CTX(),
            at(20),
        )
        .unwrap();
    let outcomes: Vec<(&str, Option<&str>, f64)> = o
        .traces
        .iter()
        .map(|t| (t.outcome, t.user.as_deref(), t.value))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("counted", Some("ana@example.com"), 2.0),
            ("dropped: user key not found", None, 1.0)
        ]
    );
}
