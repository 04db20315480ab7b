//! One test per defect of the aggregation review (issue 12), named by its
//! number; each failed on the engine before the fix.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use otelcol_core::consumer::RequestContext;
use otelcol_core::pdata::proto::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, ExponentialHistogram,
    ExponentialHistogramDataPoint, Histogram, HistogramDataPoint, Metric,
};
use otelcol_core::pdata::Metrics;
use otelcol_processor_aggregation::{AddOutcome, Engine, GaugePolicy};

const DELTA: i32 = 1;
const CUMULATIVE: i32 = 2;
const ANA: (&str, &str) = ("user.email", "ana@example.com");
const CC: &[(&str, &str)] = &[("service.name", "claude-code")];
const LATER: u64 = 3600;

fn add(e: &mut Engine, r: &Metrics, ctx: &RequestContext, now: u64) -> AddOutcome {
    e.add(r, ctx, now).unwrap()
}

fn cumulative(name: &str, v: f64, time: u64, start: u64, attrs: &[(&str, &str)]) -> Metrics {
    request(
        CC,
        vec![sum(
            name,
            CUMULATIVE,
            true,
            vec![point(v, time, start, attrs)],
        )],
    )
}

fn total(batches: &[otelcol_core::consumer::Batch<Metrics>]) -> f64 {
    totals(batches).iter().map(|t| t.value).sum()
}

fn header(name: &str, value: &str) -> RequestContext {
    RequestContext {
        metadata: Arc::new(vec![(name.into(), value.into())]),
        ..Default::default()
    }
}

#[test]
fn d01_a_stream_that_expired_and_returns_is_not_counted_twice() {
    let mut e = engine(|c| c.stream_ttl = Duration::from_secs(3600));
    let start = at(10); // after the collector: its first point counts in full
    add(
        &mut e,
        &cumulative("c", 100.0, at(20), start, &[ANA]),
        &RequestContext::default(),
        at(20),
    );
    let first = total(&e.take_closed(at(400)));
    assert_eq!(first, 100.0);
    // A weekend asleep: the stream expires.
    let back = at(20 + 3 * 3600);
    e.take_closed(back);
    assert_eq!(e.open_streams(), 0);
    let o = add(
        &mut e,
        &cumulative("c", 105.0, back, start, &[ANA]),
        &RequestContext::default(),
        back,
    );
    assert_eq!(o.baseline, 1, "it only sets the baseline");
    assert_eq!(total(&e.take_all()), 0.0, "total stays 100, not 205");
}

#[test]
fn d02_users_told_apart_only_by_a_header_or_token_keep_their_own_streams() {
    let mut e = engine(|c| c.lookup = vec!["header:x-user".into()]);
    let (ana, bo) = (
        header("x-user", "ana@example.com"),
        header("x-user", "bo@example.com"),
    );
    for (i, (v_ana, v_bo)) in [(10.0, 1.0), (20.0, 2.0)].into_iter().enumerate() {
        let t = at(30 + 10 * i as u64);
        add(&mut e, &cumulative("c", v_ana, t, at(1), &[]), &ana, t);
        add(&mut e, &cumulative("c", v_bo, t, at(2), &[]), &bo, t);
    }
    let t = by_user(&e.take_all(), "user.email");
    assert_eq!(t[&k("ana@example.com", "c", 0)], 20.0);
    assert_eq!(t[&k("bo@example.com", "c", 0)], 2.0);

    // The same payload under two tokens.
    let mut e = engine(|_| {});
    for (i, (a, b)) in [(10.0, 1.0), (20.0, 2.0)].into_iter().enumerate() {
        let t = at(30 + 10 * i as u64);
        add(
            &mut e,
            &cumulative("c", a, t, at(1), &[ANA]),
            &with_token("tok-a"),
            t,
        );
        add(
            &mut e,
            &cumulative("c", b, t, at(2), &[ANA]),
            &with_token("tok-b"),
            t,
        );
    }
    let by_token: BTreeMap<Option<String>, f64> = totals(&e.take_all())
        .into_iter()
        .map(|t| (t.token, t.value))
        .collect();
    assert_eq!(
        by_token,
        BTreeMap::from([(Some("tok-a".into()), 20.0), (Some("tok-b".into()), 2.0)])
    );
}

#[test]
fn d03_two_processes_of_one_user_with_identical_attributes_are_two_streams() {
    let mut e = engine(|_| {});
    let (a, b) = (at(1), at(2));
    let points = [
        (5.0, a),
        (3.0, b),
        (10.0, a),
        (8.0, b),
        (15.0, a),
        (18.0, b),
    ];
    for (i, (v, start)) in points.into_iter().enumerate() {
        let t = at(30 + i as u64);
        add(
            &mut e,
            &cumulative("c", v, t, start, &[ANA]),
            &RequestContext::default(),
            t,
        );
    }
    assert_eq!(total(&e.take_all()), 33.0);
}

fn exp_metric(temporality: i32, points: Vec<ExponentialHistogramDataPoint>) -> Metrics {
    request(
        CC,
        vec![Metric {
            name: "latency".into(),
            data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: points,
                aggregation_temporality: temporality,
            })),
            ..Default::default()
        }],
    )
}

fn exp_point(scale: i32, offset: i32, counts: Vec<u64>, sum: f64) -> ExponentialHistogramDataPoint {
    ExponentialHistogramDataPoint {
        attributes: attrs(&[ANA]),
        time_unix_nano: at(10),
        scale,
        count: counts.iter().sum(),
        sum: Some(sum),
        positive: Some(Buckets {
            offset,
            bucket_counts: counts,
        }),
        ..Default::default()
    }
}

fn only_exp(batches: &[otelcol_core::consumer::Batch<Metrics>]) -> ExponentialHistogramDataPoint {
    let m = &batches[0].data.resource_metrics[0].scope_metrics[0].metrics[0];
    let Some(metric::Data::ExponentialHistogram(h)) = &m.data else {
        panic!("an exponential histogram")
    };
    assert_eq!(h.data_points.len(), 1);
    h.data_points[0].clone()
}

#[test]
fn d04_merging_two_ordinary_exponential_histograms_stays_within_160_buckets() {
    let idx = |v: f64| (v.log2() * f64::from(1 << 20)).floor() as i32;
    let mut e = engine(|_| {});
    let r = exp_metric(
        DELTA,
        vec![
            exp_point(20, idx(0.001), vec![1], 0.001),
            exp_point(20, idx(1e6), vec![1], 1e6),
        ],
    );
    assert_eq!(
        add(&mut e, &r, &RequestContext::default(), at(20)).accepted,
        2
    );
    let p = only_exp(&e.take_all());
    let pos = p.positive.unwrap();
    assert!(
        pos.bucket_counts.len() <= 160,
        "{} buckets",
        pos.bucket_counts.len()
    );
    assert_eq!(
        (p.scale, p.count, pos.bucket_counts.iter().sum::<u64>()),
        (2, 2, 2)
    );
}

#[test]
fn d05_exponential_histograms_that_cannot_be_represented_are_refused_not_a_crash() {
    let mut e = engine(|_| {});
    let bad = vec![
        exp_point(20, i32::MAX, vec![1], 1.0),
        exp_point(20, i32::MIN, vec![1], 1.0),
        exp_point(20, i32::MAX - 1, vec![1, 0, 1], 1.0),
        exp_point(-10, i32::MIN, vec![1], 1.0),
        exp_point(-10, i32::MAX - 5, vec![1; 10], 1.0),
        exp_point(100, 0, vec![1], 1.0),
        exp_point(-11, 0, vec![1], 1.0),
    ];
    let n = bad.len() as u64;
    let o = add(
        &mut e,
        &exp_metric(DELTA, bad.clone()),
        &RequestContext::default(),
        at(20),
    );
    assert_eq!((o.accepted, o.dropped.invalid), (0, n));
    let o = add(
        &mut e,
        &exp_metric(CUMULATIVE, bad),
        &RequestContext::default(),
        at(20),
    );
    assert_eq!((o.accepted, o.dropped.invalid, e.open_streams()), (0, n, 0));
    // The engine still works.
    let ok = exp_metric(DELTA, vec![exp_point(0, 3, vec![2], 17.0)]);
    assert_eq!(
        add(&mut e, &ok, &RequestContext::default(), at(20)).accepted,
        1
    );
    assert_eq!(only_exp(&e.take_all()).count, 2);
}

#[test]
fn d07_a_future_stamped_point_does_not_poison_its_stream() {
    let mut e = engine(|_| {});
    let start = at(1);
    let send = |e: &mut Engine, v: f64, time: u64, now: u64| {
        add(
            e,
            &cumulative("c", v, time, start, &[ANA]),
            &RequestContext::default(),
            now,
        )
    };
    send(&mut e, 10.0, at(10), at(10));
    // One point stamped two hours ahead (a clock that jumped).
    send(&mut e, 20.0, at(20 + 7200), at(20));
    // Correctly stamped points again, every minute.
    for (i, v) in [25.0, 30.0, 31.0, 40.0, 41.0, 50.0, 55.0, 60.0]
        .into_iter()
        .enumerate()
    {
        let t = at(80 + 60 * i as u64);
        send(&mut e, v, t, t);
    }
    assert_eq!(total(&e.take_all()), 60.0, "every increment counted once");
}

#[test]
fn d07_stale_points_keep_their_stream_alive() {
    let mut e = engine(|c| c.stream_ttl = Duration::from_secs(600));
    let start = at(1);
    let point_at = |v: f64, t: u64| cumulative("c", v, t, start, &[ANA]);
    add(
        &mut e,
        &point_at(10.0, at(10)),
        &RequestContext::default(),
        at(10),
    );
    // The same point, resent every 5 minutes for 20 minutes: stale, but seen.
    for i in 1..=4u64 {
        let now = at(10 + 300 * i);
        assert_eq!(
            add(
                &mut e,
                &point_at(10.0, at(10)),
                &RequestContext::default(),
                now
            )
            .dropped
            .stale,
            1
        );
        e.take_closed(now);
        assert_eq!(e.open_streams(), 1);
    }
    let now = at(1300);
    add(
        &mut e,
        &point_at(12.0, now),
        &RequestContext::default(),
        now,
    );
    assert_eq!(
        total(&e.take_all()),
        2.0,
        "the increment, not the whole value again"
    );
}

fn hist(temporality: i32, points: Vec<HistogramDataPoint>) -> Metrics {
    request(
        CC,
        vec![Metric {
            name: "codex.turn.token_usage".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: points,
                aggregation_temporality: temporality,
            })),
            ..Default::default()
        }],
    )
}

fn hp(count: u64, sum: Option<f64>, bounds: Vec<f64>, buckets: Vec<u64>) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes: attrs(&[ANA]),
        time_unix_nano: at(10),
        count,
        sum,
        explicit_bounds: bounds,
        bucket_counts: buckets,
        ..Default::default()
    }
}

fn only_hist(batches: &[otelcol_core::consumer::Batch<Metrics>]) -> HistogramDataPoint {
    let m = &batches[0].data.resource_metrics[0].scope_metrics[0].metrics[0];
    let Some(metric::Data::Histogram(h)) = &m.data else {
        panic!("a histogram")
    };
    h.data_points[0].clone()
}

#[test]
fn d08_a_histogram_without_a_sum_gives_a_total_without_a_sum() {
    let mut e = engine(|_| {});
    let r = hist(
        DELTA,
        vec![
            hp(2, None, vec![10.0], vec![1, 1]),
            hp(1, None, vec![10.0], vec![0, 1]),
        ],
    );
    add(&mut e, &r, &RequestContext::default(), at(20));
    let p = only_hist(&e.take_all());
    assert_eq!((p.count, p.sum, p.bucket_counts), (3, None, vec![1, 2]));
    // One point without a sum makes the window's sum unknown.
    let r = hist(
        DELTA,
        vec![
            hp(2, Some(4.0), vec![], vec![]),
            hp(1, None, vec![], vec![]),
        ],
    );
    add(&mut e, &r, &RequestContext::default(), at(20));
    assert_eq!(only_hist(&e.take_all()).sum, None);
}

fn gauge_value(
    batches: &[otelcol_core::consumer::Batch<Metrics>],
) -> Vec<(&'static str, u64, f64)> {
    totals(batches)
        .into_iter()
        .map(|t| (t.kind, (t.start / NS) - T0, t.value))
        .collect()
}

#[test]
fn d09_cumulative_non_monotonic_streams_are_gauges_combined_by_the_policy() {
    for (policy, expected) in [
        (GaugePolicy::Sum, 7.0),
        (GaugePolicy::Max, 4.0),
        (GaugePolicy::Min, 3.0),
        (GaugePolicy::Mean, 3.5),
        (GaugePolicy::Last, 3.0),
    ] {
        let mut e = engine(|c| c.gauge = policy);
        // Two terminals of one user: sessions.active per process.
        let pts = [(2.0, at(1), 20), (4.0, at(2), 30), (3.0, at(1), 40)];
        for (v, start, t) in pts {
            let r = request(
                CC,
                vec![sum(
                    "sessions.active",
                    CUMULATIVE,
                    false,
                    vec![point(v, at(t), start, &[ANA])],
                )],
            );
            add(&mut e, &r, &RequestContext::default(), at(t));
        }
        assert_eq!(
            gauge_value(&e.take_all()),
            vec![("gauge", 0, expected)],
            "{policy:?}"
        );
    }
}

#[test]
fn d09_a_late_gauge_point_re_emits_the_whole_window() {
    for (policy, first, again) in [(GaugePolicy::Max, 9.0, 9.0), (GaugePolicy::Sum, 14.0, 21.0)] {
        let mut e = engine(|c| c.gauge = policy);
        let g = |v: f64, t: u64| {
            request(
                CC,
                vec![gauge("queue.depth", vec![point(v, at(t), 0, &[ANA])])],
            )
        };
        add(&mut e, &g(5.0, 10), &RequestContext::default(), at(20));
        add(&mut e, &g(9.0, 20), &RequestContext::default(), at(20));
        assert_eq!(
            gauge_value(&e.take_closed(at(330))),
            vec![("gauge", 0, first)]
        );
        let o = add(&mut e, &g(7.0, 30), &RequestContext::default(), at(340));
        assert_eq!(o.late, 1);
        assert_eq!(
            gauge_value(&e.take_closed(at(400))),
            vec![("gauge", 0, again)],
            "{policy:?}: a replacement for the window, not the late point alone"
        );
    }
}

#[test]
fn d10_cumulative_streams_are_bounded_by_max_streams() {
    let mut e = engine(|c| c.max_streams = 2);
    let mut evicted = 0;
    for i in 0..3u64 {
        let r = cumulative("c", 1.0, at(20 + i), at(1 + i), &[ANA]);
        evicted += add(&mut e, &r, &RequestContext::default(), at(20 + i)).streams_evicted;
    }
    assert_eq!((e.open_streams(), evicted), (2, 1));
}

#[test]
fn d10_points_dropped_for_a_missing_user_key_keep_no_stream_state() {
    let mut e = engine(|_| {});
    let o = add(
        &mut e,
        &cumulative("c", 1.0, at(20), at(1), &[]),
        &RequestContext::default(),
        at(20),
    );
    assert_eq!((o.dropped.missing_key, e.open_streams()), (1, 0));
}

#[test]
fn d12_late_counts_only_points_of_windows_already_emitted() {
    let mut e = engine(|_| {});
    let r = tokens(vec![point(1.0, at(10), 0, &[ANA])]);
    // Window 0 is closed by the clock but not emitted yet: not late.
    assert_eq!(add(&mut e, &r, &RequestContext::default(), at(400)).late, 0);
    e.take_closed(at(400));
    assert_eq!(add(&mut e, &r, &RequestContext::default(), at(401)).late, 1);
}

fn tokens(points: Vec<otelcol_core::pdata::proto::metrics::v1::NumberDataPoint>) -> Metrics {
    request(
        CC,
        vec![sum("claude_code.token.usage", DELTA, true, points)],
    )
}

#[test]
fn d13_the_output_resource_keeps_only_allow_listed_attributes_and_sessions_do_not_split() {
    let mut e = engine(|_| {});
    for session in ["s-1", "s-2"] {
        let resource = [
            ("service.name", "gemini-cli"),
            ("service.version", "v22.1.0"),
            ("user.email", "ana@example.com"),
            ("session.id", session),
            ("process.command_args", "gemini -p tell me the secret plan"),
            ("process.pid", "4242"),
            ("host.name", "ana-laptop"),
        ];
        let r = request(
            &resource,
            vec![sum(
                "gemini_cli.token.usage",
                DELTA,
                true,
                vec![point(3.0, at(10), 0, &[("type", "input")])],
            )],
        );
        add(&mut e, &r, &RequestContext::default(), at(20));
    }
    let t = totals(&e.take_all());
    assert_eq!(t.len(), 1, "one series for both sessions");
    assert_eq!(t[0].value, 6.0);
    assert_eq!(
        t[0].resource,
        BTreeMap::from([
            ("service.name".into(), "gemini-cli".into()),
            ("service.version".into(), "v22.1.0".into()),
            ("user.email".into(), "ana@example.com".into()),
        ])
    );
    // An operator's own list.
    let mut e =
        engine(|c| c.resource_attributes.exclude = Some(vec!["process.command_args".into()]));
    let r = request(
        &[
            ("host.name", "h"),
            ("process.command_args", "x"),
            ("user.email", "ana@example.com"),
        ],
        vec![sum("c", DELTA, true, vec![point(1.0, at(10), 0, &[])])],
    );
    add(&mut e, &r, &RequestContext::default(), at(20));
    let keys: Vec<String> = totals(&e.take_all())[0].resource.keys().cloned().collect();
    assert_eq!(keys, vec!["host.name", "user.email"]);
}

#[test]
fn d16_numbers_that_would_overflow_or_are_not_finite_are_refused_never_wrapped() {
    let mut e = engine(|_| {});
    let max = u64::MAX;
    let r = hist(
        DELTA,
        vec![
            hp(max, Some(1.0), vec![], vec![]),
            hp(max, Some(1.0), vec![], vec![]),
        ],
    );
    let o = add(&mut e, &r, &RequestContext::default(), at(20));
    assert_eq!((o.accepted, o.dropped.invalid), (1, 1));
    assert_eq!(
        only_hist(&e.take_all()).count,
        max,
        "saturated at one point, never wrapped"
    );

    let bad = vec![
        hp(1, Some(f64::NAN), vec![], vec![]),
        hp(1, Some(f64::INFINITY), vec![], vec![]),
        hp(2, Some(1.0), vec![5.0, 1.0], vec![1, 0, 1]),
        hp(2, Some(1.0), vec![f64::NAN], vec![1, 1]),
        hp(3, Some(1.0), vec![1.0], vec![1, 1]),
        hp(u64::MAX, Some(1.0), vec![1.0], vec![u64::MAX, 1]),
    ];
    let o = add(
        &mut e,
        &hist(DELTA, bad),
        &RequestContext::default(),
        at(20),
    );
    assert_eq!((o.accepted, o.dropped.invalid), (0, 6));

    let big = tokens(vec![
        point(f64::MAX, at(10), 0, &[ANA]),
        point(f64::MAX, at(11), 0, &[ANA]),
    ]);
    let o = add(&mut e, &big, &RequestContext::default(), at(20));
    assert_eq!((o.accepted, o.dropped.invalid), (1, 1));
    let inf = tokens(vec![
        point(f64::INFINITY, at(10), 0, &[ANA]),
        point(f64::NAN, at(10), 0, &[ANA]),
    ]);
    assert_eq!(
        add(&mut e, &inf, &RequestContext::default(), at(20))
            .dropped
            .invalid,
        2
    );
    let out = totals(&e.take_all());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].value, f64::MAX);
}

#[test]
fn shutdown_flush_and_closed_windows_come_out_in_bounded_pieces() {
    let mut e = engine(|_| {});
    let points: Vec<_> = (0..100)
        .map(|i| {
            point(
                1.0,
                at(10),
                0,
                &[("user.email", &format!("u{i}@example.com"))],
            )
        })
        .collect();
    add(&mut e, &tokens(points), &RequestContext::default(), at(20));
    e.set_piece_series(30);
    let id = e.close(at(LATER), 1).unwrap();
    let mut sizes = vec![];
    for p in e.pieces() {
        assert_eq!(p.emission, id);
        let c = e.piece(p.emission, p.index);
        sizes.push(c.len());
        assert_eq!(totals(&c.build()).len(), *sizes.last().unwrap());
        e.piece_done(p.emission, p.index, 0);
    }
    assert_eq!(sizes, vec![30, 30, 30, 10]);
    assert_eq!(e.open_series(), 0);
    assert!(e.pieces().is_empty());
}

#[test]
fn the_shutdown_flush_in_pieces_takes_every_series() {
    let mut e = engine(|_| {});
    let points: Vec<_> = (0..100)
        .map(|i| {
            point(
                1.0,
                at(10),
                0,
                &[("user.email", &format!("u{i}@example.com"))],
            )
        })
        .collect();
    add(&mut e, &tokens(points), &RequestContext::default(), at(20));
    e.set_piece_series(30);
    e.close_all(1);
    let mut total = 0.0;
    for p in e.pieces() {
        let c = e.piece(p.emission, p.index);
        assert!(c.len() <= 30);
        total += totals(&c.build()).iter().map(|t| t.value).sum::<f64>();
        e.piece_done(p.emission, p.index, 0);
    }
    assert_eq!(total, 100.0, "no series lost between pieces");
}
