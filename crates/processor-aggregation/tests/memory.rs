//! Memory the engine takes for hostile or merely wide inputs, and for
//! closing many series, measured with a counting allocator (peak live
//! bytes). The tests run one at a time ([`ONE_AT_A_TIME`]), so nothing else
//! in this binary allocates while one measures.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::*;
use otelcol_core::consumer::RequestContext;
use otelcol_core::pdata::proto::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, ExponentialHistogram,
    ExponentialHistogramDataPoint, Metric,
};
use otelcol_core::pdata::Metrics;

struct Peak;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts bytes.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    /// Forwarded as a realloc (the collector's allocator does the same, so
    /// a shrink happens in place); a growth counts the old and the new
    /// block at once, as a move would.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old {
            let now = LIVE.load(Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
            LIVE.fetch_add(new_size - old, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(old - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Held by each test for its whole run.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[global_allocator]
static ALLOC: Peak = Peak;

/// Peak live bytes above the start while `f` runs.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

fn exp(temporality: i32, scale: i32, offset: i32, counts: Vec<u64>, t: u64) -> Metrics {
    request(
        &[("service.name", "x")],
        vec![Metric {
            name: "latency".into(),
            data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                aggregation_temporality: temporality,
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes: attrs(&[("user.email", "ana@example.com")]),
                    start_time_unix_nano: at(1),
                    time_unix_nano: t,
                    scale,
                    count: counts.iter().sum(),
                    sum: Some(1.0),
                    positive: Some(Buckets {
                        offset,
                        bucket_counts: counts,
                    }),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        }],
    )
}

#[test]
fn wide_and_hostile_exponential_histograms_take_a_few_kib() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const LIMIT: usize = 1 << 20;
    let ctx = RequestContext::default();
    let idx = |v: f64| (v.log2() * f64::from(1 << 20)).floor() as i32;
    // Issue 12, defect 4: 0.001 and 1e6 at scale 20 (was ~358 MiB).
    let a = exp(1, 20, idx(0.001), vec![1], at(10));
    let b = exp(1, 20, idx(1e6), vec![1], at(11));
    let mut e = engine(|_| {});
    let peak = peak_during(|| {
        e.add(&a, &ctx, at(20)).unwrap();
        e.add(&b, &ctx, at(20)).unwrap();
        e.take_all();
    });
    assert!(peak < LIMIT, "merging two observations took {peak} bytes");

    // Defect 5: extreme offsets and scales, delta and cumulative, one after another.
    let hostile = [
        (20, i32::MAX, vec![1]),
        (20, i32::MIN, vec![1]),
        (-10, i32::MIN, vec![1]),
        (-10, i32::MAX - 3, vec![1, 1]),
        (20, 1_000_000_000, vec![1]),
        (20, -1_000_000_000, vec![1]),
    ];
    let mut e = engine(|_| {});
    let peak = peak_during(|| {
        for (i, (scale, offset, counts)) in hostile.iter().cloned().enumerate() {
            for temporality in [1, 2] {
                let t = at(10 + i as u64 * 2 + temporality as u64);
                e.add(
                    &exp(temporality, scale, offset, counts.clone(), t),
                    &ctx,
                    at(30),
                )
                .unwrap();
            }
        }
        e.take_all();
    });
    assert!(peak < LIMIT, "hostile histograms took {peak} bytes");

    // A cumulative stream whose scale and range change at every point.
    let mut e = engine(|_| {});
    let peak = peak_during(|| {
        for (i, (scale, offset)) in [
            (20, -1_000_000_000),
            (20, 1_000_000_000),
            (0, 1000),
            (-10, 0),
        ]
        .into_iter()
        .enumerate()
        {
            let t = at(10 + i as u64);
            e.add(&exp(2, scale, offset, vec![1 + i as u64], t), &ctx, at(30))
                .unwrap();
        }
        e.take_all();
    });
    assert!(
        peak < LIMIT,
        "a changing cumulative stream took {peak} bytes"
    );
}

/// Closing a window of 100,000 series, and the shutdown's closing of every
/// window, take one copy of the closed series (64 bytes each: key and
/// value) and little else: no list of keys beside them, no second copy
/// while they are cut into pieces (issue 12: a million series took two
/// copies and the whole table at once, +445 MiB at the shutdown flush).
#[test]
fn closing_a_hundred_thousand_series_takes_one_copy_of_them() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let n = 100_000usize;
    let ctx = RequestContext::default();
    let points = (0..n)
        .map(|i| {
            point(
                1.0,
                at(10),
                0,
                &[("user.email", &format!("u{i}@example.com"))],
            )
        })
        .collect();
    let r = request(&[], vec![sum("m", 1, true, points)]);
    for all in [false, true] {
        let mut e = engine(|_| {});
        e.add(&r, &ctx, at(20)).unwrap();
        let peak = peak_during(|| {
            let emission = if all {
                e.close_all(1)
            } else {
                e.close(at(3600), 1)
            };
            assert!(emission.is_some());
        });
        assert_eq!(e.pieces().len(), n.div_ceil(4096));
        assert!(
            peak < n * 80,
            "closing (all: {all}) {n} series took {peak} bytes ({} per series)",
            peak / n
        );
    }
}
