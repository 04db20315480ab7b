//! The aggregation engine alone: points per second on one core, and bytes
//! of heap per open series (measured with a counting allocator).
//!
//! `cargo bench -p otelcol-processor-aggregation`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use otelcol_core::consumer::RequestContext;
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::{string_attribute, Metrics};
use otelcol_processor_aggregation::{AggregationConfig, Engine};
use prost::Message;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const T0: u64 = 1_795_255_200_000_000_000;
const TYPES: [&str; 4] = ["input", "output", "cacheRead", "cacheCreation"];

/// A Claude Code-shaped request: `users` users × 10 series each
/// (4 token types, 4 cost models, lines added/removed), delta, one point per series.
fn request(first_user: usize, users: usize, temporality: i32, value: f64) -> Metrics {
    let mut rms = vec![];
    for u in first_user..first_user + users {
        let email = format!("user{u}@example.com");
        let p = |attrs: Vec<(&str, String)>| NumberDataPoint {
            attributes: attrs
                .into_iter()
                .map(|(k, v)| string_attribute(k, v))
                .chain([
                    string_attribute("user.email", email.clone()),
                    string_attribute("session.id", format!("6f1c0b2e-3d4a-4c8e-9b1a-{u:012}")),
                    string_attribute("organization.id", "a1b2c3d4-0000-4000-8000-000000000001"),
                    string_attribute("terminal.type", "vscode"),
                ])
                .collect(),
            start_time_unix_nano: T0,
            time_unix_nano: T0 + 10_000_000_000,
            value: Some(number_data_point::Value::AsDouble(value)),
            ..Default::default()
        };
        let sum = |name: &str, unit: &str, points| Metric {
            name: name.into(),
            unit: unit.into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: temporality,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let tokens = TYPES
            .iter()
            .map(|t| {
                p(vec![
                    ("type", t.to_string()),
                    ("model", "claude-sonnet-4".into()),
                ])
            })
            .collect();
        let cost = (0..4)
            .map(|m| p(vec![("model", format!("model-{m}"))]))
            .collect();
        let lines = ["added", "removed"]
            .iter()
            .map(|t| p(vec![("type", t.to_string())]))
            .collect();
        rms.push(ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    string_attribute("service.name", "claude-code"),
                    string_attribute("service.version", "2.1.239"),
                    string_attribute("os.type", "darwin"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    sum("claude_code.token.usage", "tokens", tokens),
                    sum("claude_code.cost.usage", "USD", cost),
                    sum("claude_code.lines_of_code.count", "", lines),
                ],
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    Metrics {
        resource_metrics: rms,
    }
}

/// `request` with an attribute of each user's own on every point (Claude
/// Code's `user.account_uuid`), so that every series has its own
/// attribute list.
fn with_account(mut r: Metrics) -> Metrics {
    for rm in &mut r.resource_metrics {
        for m in &mut rm.scope_metrics[0].metrics {
            if let Some(metric::Data::Sum(s)) = &mut m.data {
                for p in &mut s.data_points {
                    let user = p.attributes[p.attributes.len() - 4].clone();
                    let id = format!("{:?}", user.value);
                    p.attributes.push(string_attribute("user.account_uuid", id));
                }
            }
        }
    }
    r
}

fn engine() -> Engine {
    let config = AggregationConfig {
        aggregation_interval: Duration::from_secs(300),
        exclude_attributes: vec!["session.id".into()],
        ..Default::default()
    };
    Engine::new(config, 0).unwrap()
}

fn bench(c: &mut Criterion) {
    let ctx = RequestContext::default();
    let now = T0 + 20_000_000_000;
    let mut g = c.benchmark_group("engine");
    let delta = request(0, 100, 1, 1.5);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("add: 1000 delta points into existing series", |b| {
        let mut e = engine();
        e.add(&delta, &ctx, now).unwrap();
        b.iter(|| black_box(e.add(black_box(&delta), &ctx, now).unwrap()))
    });
    // From the request's bytes, as a receiver has it: prost's tree, or
    // read in place.
    let bytes = delta.encode_to_vec();
    g.bench_function("prost decode + add: 1000 delta points from bytes", |b| {
        let mut e = engine();
        e.add(&delta, &ctx, now).unwrap();
        b.iter(|| {
            let r = Metrics::decode(black_box(&bytes[..])).unwrap();
            black_box(e.add(&r, &ctx, now).unwrap())
        })
    });
    g.bench_function("add_encoded: 1000 delta points read in place", |b| {
        let mut e = engine();
        e.add(&delta, &ctx, now).unwrap();
        b.iter(|| black_box(e.add_encoded(black_box(&bytes), &ctx, now).unwrap()))
    });
    let cumulative = request(0, 100, 2, 1.5);
    g.bench_function("add: 1000 cumulative points (stream lookup + delta)", |b| {
        let mut e = engine();
        let mut v = 1.0;
        let mut t = 0;
        b.iter_batched(
            || {
                v += 1.0;
                t += 1;
                let mut r = cumulative.clone();
                for rm in &mut r.resource_metrics {
                    for m in &mut rm.scope_metrics[0].metrics {
                        if let Some(metric::Data::Sum(s)) = &mut m.data {
                            for p in &mut s.data_points {
                                p.value = Some(number_data_point::Value::AsDouble(v));
                                p.time_unix_nano = T0 + t;
                            }
                        }
                    }
                }
                r
            },
            |r| black_box(e.add(&r, &ctx, now).unwrap()),
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("add + take_all: 1000 new series", |b| {
        b.iter_batched(
            engine,
            |mut e| {
                e.add(&delta, &ctx, now).unwrap();
                black_box(e.take_all())
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // What a durable processor does under the engine lock every time its
    // log has grown enough: the whole state as bytes.
    let mut e = engine();
    let add_users = |e: &mut Engine, hundreds: std::ops::Range<usize>| {
        for i in hundreds {
            e.add(&with_account(request(i * 100, 100, 1, 1.0)), &ctx, now)
                .unwrap();
        }
    };
    // What the processor does under the engine lock at every window's
    // end: every open series of the window leaves the open set.
    let after = now + 600_000_000_000;
    for hundreds in [20, 200] {
        g.throughput(Throughput::Elements(hundreds as u64 * 1000));
        g.bench_function(format!("close: {},000 open series", hundreds), |b| {
            b.iter_batched(
                || {
                    let mut e = engine();
                    add_users(&mut e, 0..hundreds);
                    e
                },
                |mut e| {
                    black_box(e.close(after, 1));
                    e
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    add_users(&mut e, 0..20);
    g.throughput(Throughput::Elements(e.open_series() as u64));
    g.bench_function("snapshot: 20,000 open series", |b| {
        b.iter(|| black_box(e.snapshot()))
    });
    g.bench_function(
        "take_snapshot (the part under the lock): 20,000 open series",
        |b| b.iter(|| black_box(e.take_snapshot())),
    );
    // Ten times as many: the state no longer fits in the caches.
    add_users(&mut e, 20..200);
    g.throughput(Throughput::Elements(e.open_series() as u64));
    g.bench_function("take_snapshot: 200,000 open series", |b| {
        b.iter(|| black_box(e.take_snapshot()))
    });
    g.finish();
}

/// Heap bytes per open series, with 100,000 series (10,000 users × 10).
fn bytes_per_series() {
    let ctx = RequestContext::default();
    let requests: Vec<Metrics> = (0..100).map(|i| request(i * 100, 100, 1, 1.0)).collect();
    let before = LIVE.load(Ordering::Relaxed);
    let mut e = engine();
    for r in &requests {
        e.add(r, &ctx, T0 + 20_000_000_000).unwrap();
    }
    let used = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "engine: {} open series hold {} bytes of heap: {} bytes per series",
        e.open_series(),
        used,
        used / e.open_series() as isize
    );
}

criterion_group!(benches, bench);

fn main() {
    bytes_per_series();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
