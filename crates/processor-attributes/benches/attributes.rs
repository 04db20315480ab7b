//! The `attributes` and `transform` processors alone: data points per
//! second on one core, on Claude Code-shaped requests (1000 points, 7
//! attributes each).
//!
//! `cargo bench -p otelcol-processor-attributes`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use otelcol_core::consumer::RequestContext;
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::{string_attribute, Metrics};
use otelcol_processor_attributes::actions::{compile, ActionConfig};
use otelcol_processor_attributes::{Editable, Mode, Transform, TransformConfig};

fn request() -> Metrics {
    let rms = (0..100)
        .map(|u| ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    string_attribute("service.name", "claude-code"),
                    string_attribute("user", format!("user{u}")),
                    string_attribute("department", "platform"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "claude_code.token.usage".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: (0..10)
                            .map(|i| NumberDataPoint {
                                attributes: vec![
                                    string_attribute("user.email", format!("user{u}@example.com")),
                                    string_attribute(
                                        "session.id",
                                        format!("6f1c0b2e-3d4a-4c8e-9b1a-{u:012}"),
                                    ),
                                    string_attribute(
                                        "organization.id",
                                        "a1b2c3d4-0000-4000-8000-000000000001",
                                    ),
                                    string_attribute(
                                        "user.account_uuid",
                                        "0b9d5f7e-1111-4000-8000-000000000002",
                                    ),
                                    string_attribute("terminal.type", "vscode"),
                                    string_attribute("type", format!("t{i}")),
                                    string_attribute("model", "claude-sonnet-4"),
                                ],
                                value: Some(number_data_point::Value::AsDouble(1.5)),
                                ..Default::default()
                            })
                            .collect(),
                        aggregation_temporality: 1,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    Metrics {
        resource_metrics: rms,
    }
}

fn bench(c: &mut Criterion) {
    let ctx = RequestContext::default();
    let data = request();
    let mut g = c.benchmark_group("processor-attributes");
    g.throughput(Throughput::Elements(1000));

    let actions: Vec<ActionConfig> = serde_yaml::from_str(
        "- {key: session.id, action: delete}\n- {key: user.email, action: hash, hmac_key: secret}\n- {key: department, from_resource_attribute: department, action: insert}\n- {key: terminal.type, value: ide, action: update}\n",
    )
    .unwrap();
    let mode = Mode::Attributes(compile(&actions).unwrap(), Box::default());
    g.bench_function(
        "attributes: delete + hmac hash + insert from resource + update, 1000 points",
        |b| {
            b.iter_batched(
                || data.clone(),
                |mut d| black_box(Metrics::edit(&mode, &mut d, &ctx)),
                BatchSize::SmallInput,
            )
        },
    );

    let config: TransformConfig = serde_yaml::from_str(
        "metric_statements:\n  - context: datapoint\n    statements:\n      - set(attributes[\"user\"], resource.attributes[\"user\"])\n      - set(attributes[\"department\"], resource.attributes[\"department\"])\n      - delete_key(attributes, \"session.id\")\n",
    )
    .unwrap();
    let mode = Mode::Transform(Transform::new(&config).unwrap());
    g.bench_function(
        "transform: 2 resource copies + delete_key, 1000 points",
        |b| {
            b.iter_batched(
                || data.clone(),
                |mut d| black_box(Metrics::edit(&mode, &mut d, &ctx)),
                BatchSize::SmallInput,
            )
        },
    );
    g.bench_function("baseline: clone of the request alone", |b| {
        b.iter(|| black_box(data.clone()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
