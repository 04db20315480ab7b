//! Turning closed series into OTLP: one batch per client token, one
//! `ResourceMetrics` per distinct resource, delta temporality, start = window
//! start, time = window end, double values, the processor's scope.

use std::sync::Arc;

use otelcol_core::consumer::{AuthData, Batch, BearerToken, RequestContext};
use otelcol_core::pdata::proto::common::v1::{InstrumentationScope, KeyValue};
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::{string_attribute, Metrics};

use crate::config::GaugePolicy;
use crate::engine::{decode_attr_list, decode_attrs};
use crate::series::{Acc, Series, SeriesKey};

/// The scope name on every output metric.
pub const SCOPE_NAME: &str = "otelcol-multitudes/processor/aggregation";

const DELTA: i32 = 1;

/// The shape of an output series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutKind {
    /// Monotonic sum (delta or converted from cumulative): added.
    MonotonicSum,
    /// Delta non-monotonic sum: added.
    NonMonotonicSum,
    /// Cumulative non-monotonic sum: a gauge in effect, each stream's last
    /// value combined by the gauge policy; emitted as a gauge.
    LastSum,
    /// Gauge: combined by the gauge policy.
    Gauge,
    /// Explicit-bucket histogram.
    Histogram,
    /// Exponential histogram.
    ExpHistogram,
}

impl OutKind {
    /// Whether totals of this kind add up (a second emission for a window
    /// is an extra delta); gauges are replaced instead.
    pub fn is_additive(self) -> bool {
        !matches!(self, OutKind::LastSum | OutKind::Gauge)
    }
}

fn number_point(attrs: Vec<KeyValue>, start: u64, end: u64, v: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: end,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn new_metric(key: &SeriesKey) -> Metric {
    let g = &key.group;
    let data = match g.kind {
        OutKind::MonotonicSum | OutKind::NonMonotonicSum => metric::Data::Sum(Sum {
            data_points: vec![],
            aggregation_temporality: DELTA,
            is_monotonic: g.kind == OutKind::MonotonicSum,
        }),
        OutKind::LastSum | OutKind::Gauge => metric::Data::Gauge(Gauge {
            data_points: vec![],
        }),
        OutKind::Histogram => metric::Data::Histogram(Histogram {
            data_points: vec![],
            aggregation_temporality: DELTA,
        }),
        OutKind::ExpHistogram => metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![],
            aggregation_temporality: DELTA,
        }),
    };
    Metric {
        name: g.name.to_string(),
        description: g.description.to_string(),
        unit: g.unit.to_string(),
        data: Some(data),
        ..Default::default()
    }
}

fn push_point(
    m: &mut Metric,
    key: &SeriesKey,
    s: Series,
    start: u64,
    end: u64,
    policy: GaugePolicy,
) {
    let mut attrs = decode_attr_list(&key.attrs);
    attrs.push(string_attribute(
        key.group.user_key.as_ref(),
        key.user.as_ref(),
    ));
    match (m.data.as_mut(), s.acc) {
        (Some(metric::Data::Sum(sum)), Acc::Sum(v)) => {
            sum.data_points.push(number_point(attrs, start, end, v))
        }
        (Some(metric::Data::Gauge(gauge)), Acc::Lasts(l)) => {
            gauge
                .data_points
                .push(number_point(attrs, start, end, l.value(policy)))
        }
        (Some(metric::Data::Gauge(gauge)), Acc::Gauge(g)) => {
            gauge
                .data_points
                .push(number_point(attrs, start, end, g.value(policy)))
        }
        (Some(metric::Data::Histogram(h)), Acc::Hist(v)) => {
            h.data_points.push(HistogramDataPoint {
                attributes: attrs,
                start_time_unix_nano: start,
                time_unix_nano: end,
                count: v.count,
                sum: v.sum,
                bucket_counts: v.buckets,
                explicit_bounds: v.bounds,
                min: v.min,
                max: v.max,
                ..Default::default()
            })
        }
        (Some(metric::Data::ExponentialHistogram(h)), Acc::Exp(v)) => {
            h.data_points.push(ExponentialHistogramDataPoint {
                attributes: attrs,
                start_time_unix_nano: start,
                time_unix_nano: end,
                count: v.count,
                sum: v.sum,
                scale: v.scale,
                zero_count: v.zero_count,
                zero_threshold: v.zero_threshold,
                positive: v.positive.to_proto(),
                negative: v.negative.to_proto(),
                min: v.min,
                max: v.max,
                ..Default::default()
            })
        }
        _ => {}
    }
}

fn context_for(token: Option<&str>) -> RequestContext {
    RequestContext {
        auth: token.map(|t| {
            Arc::new(AuthData {
                token: Some(BearerToken::new(t)),
                headers: vec![],
            })
        }),
        ..Default::default()
    }
}

/// Builds the output batches from taken series.
pub(crate) fn build(
    mut taken: Vec<(SeriesKey, Series)>,
    interval: u64,
    policy: GaugePolicy,
) -> Vec<Batch<Metrics>> {
    taken.sort_by(|a, b| a.0.cmp(&b.0));
    let scope = InstrumentationScope {
        name: SCOPE_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let mut batches: Vec<Batch<Metrics>> = vec![];
    let mut last: Option<SeriesKey> = None;
    for (key, series) in taken {
        let same_token = last
            .as_ref()
            .is_some_and(|l| l.group.token == key.group.token);
        let same_resource = same_token
            && last
                .as_ref()
                .is_some_and(|l| l.group.resource == key.group.resource);
        let same_metric = same_resource
            && last.as_ref().is_some_and(|l| {
                l.group.name == key.group.name
                    && l.group.kind == key.group.kind
                    && l.group.unit == key.group.unit
            });
        if !same_token {
            batches.push(Batch {
                data: Metrics::default(),
                context: context_for(key.group.token.as_deref()),
                received: None,
            });
        }
        let Some(batch) = batches.last_mut() else {
            continue;
        };
        if !same_resource {
            batch.data.resource_metrics.push(ResourceMetrics {
                resource: Some(Resource {
                    attributes: decode_attrs(&key.group.resource),
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope.clone()),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        let Some(sm) = batch
            .data
            .resource_metrics
            .last_mut()
            .and_then(|rm| rm.scope_metrics.last_mut())
        else {
            continue;
        };
        if !same_metric {
            sm.metrics.push(new_metric(&key));
        }
        if let Some(m) = sm.metrics.last_mut() {
            push_point(m, &key, series, key.window, key.window + interval, policy);
        }
        last = Some(key);
    }
    batches
}
