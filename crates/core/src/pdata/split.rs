//! Appending payloads and taking a given number of items off the front,
//! for metrics (data points), logs (records) and traces (spans): what the
//! batch processor and the exporter helper merge and split with.

use super::proto::metrics::v1::{metric, Metric};
use super::{metric_point_count, Logs, Metrics, Payload, Traces};

/// A payload that can be merged and split: one of [`Metrics`], [`Logs`], [`Traces`].
pub trait Batchable: Payload + Default + prost::Message {
    /// Moves `other`'s content to the end of `self`.
    fn append(&mut self, other: Self);
    /// Removes the first `n` items (whole resources and scopes where
    /// possible) and returns them as a payload of their own.
    fn take_front(&mut self, n: usize) -> Self;

    /// Splits `self` into parts of at most `max_items` items (0: no limit)
    /// whose protobuf encoding is at most `max_bytes` (0: no limit), in
    /// order. A single item larger than `max_bytes` is a part of its own;
    /// the caller decides what to do with it ([`Self::encoded_len`] tells).
    fn split(mut self, max_items: usize, max_bytes: usize) -> Vec<Self> {
        let mut parts = Vec::new();
        let mut left = self.item_count();
        while max_items > 0 && left > max_items {
            parts.push(self.take_front(max_items));
            left -= max_items;
        }
        parts.push(self);
        if max_bytes == 0 {
            return parts;
        }
        let mut out = Vec::with_capacity(parts.len());
        while let Some(mut part) = parts.pop() {
            let items = part.item_count();
            if items <= 1 || part.encoded_len() <= max_bytes {
                out.push(part);
                continue;
            }
            // Halve until each half fits: a few encodings per level, and
            // the order kept by pushing the back half first.
            let front = part.take_front(items / 2);
            parts.push(part);
            parts.push(front);
        }
        out
    }
}

/// The first `n` data points of `m` as a metric of their own (same name, unit, kind).
fn take_points(m: &mut Metric, n: usize) -> Metric {
    let mut front = Metric {
        name: m.name.clone(),
        description: m.description.clone(),
        unit: m.unit.clone(),
        metadata: m.metadata.clone(),
        data: None,
    };
    macro_rules! take {
        ($variant:ident, $d:expr) => {{
            let mut head = $d.clone();
            head.data_points = $d
                .data_points
                .drain(..n.min($d.data_points.len()))
                .collect();
            front.data = Some(metric::Data::$variant(head));
        }};
    }
    match &mut m.data {
        Some(metric::Data::Gauge(d)) => take!(Gauge, d),
        Some(metric::Data::Sum(d)) => take!(Sum, d),
        Some(metric::Data::Histogram(d)) => take!(Histogram, d),
        Some(metric::Data::ExponentialHistogram(d)) => take!(ExponentialHistogram, d),
        Some(metric::Data::Summary(d)) => take!(Summary, d),
        None => {}
    }
    front
}

impl Batchable for Metrics {
    fn append(&mut self, other: Self) {
        self.resource_metrics.extend(other.resource_metrics);
    }

    fn take_front(&mut self, mut n: usize) -> Self {
        let mut out = Metrics::default();
        while n > 0 && !self.resource_metrics.is_empty() {
            let rm = &mut self.resource_metrics[0];
            let rm_points: usize = rm
                .scope_metrics
                .iter()
                .flat_map(|s| &s.metrics)
                .map(metric_point_count)
                .sum();
            if rm_points <= n {
                n -= rm_points;
                out.resource_metrics.push(self.resource_metrics.remove(0));
                continue;
            }
            let mut head = rm.clone();
            head.scope_metrics.clear();
            while n > 0 {
                let sm = &mut rm.scope_metrics[0];
                let sm_points: usize = sm.metrics.iter().map(metric_point_count).sum();
                if sm_points <= n {
                    n -= sm_points;
                    head.scope_metrics.push(rm.scope_metrics.remove(0));
                    continue;
                }
                let mut sm_head = sm.clone();
                sm_head.metrics.clear();
                while n > 0 {
                    let points = metric_point_count(&sm.metrics[0]);
                    if points <= n {
                        n -= points;
                        sm_head.metrics.push(sm.metrics.remove(0));
                    } else {
                        sm_head.metrics.push(take_points(&mut sm.metrics[0], n));
                        n = 0;
                    }
                }
                head.scope_metrics.push(sm_head);
            }
            out.resource_metrics.push(head);
        }
        out
    }
}

macro_rules! flat_batchable {
    ($t:ty, $resources:ident, $scopes:ident, $items:ident) => {
        impl Batchable for $t {
            fn append(&mut self, other: Self) {
                self.$resources.extend(other.$resources);
            }

            fn take_front(&mut self, mut n: usize) -> Self {
                let mut out = <$t>::default();
                while n > 0 && !self.$resources.is_empty() {
                    let r = &mut self.$resources[0];
                    let count: usize = r.$scopes.iter().map(|s| s.$items.len()).sum();
                    if count <= n {
                        n -= count;
                        out.$resources.push(self.$resources.remove(0));
                        continue;
                    }
                    let mut head = r.clone();
                    head.$scopes.clear();
                    while n > 0 {
                        let s = &mut r.$scopes[0];
                        if s.$items.len() <= n {
                            n -= s.$items.len();
                            head.$scopes.push(r.$scopes.remove(0));
                        } else {
                            let mut s_head = s.clone();
                            s_head.$items = s.$items.drain(..n).collect();
                            head.$scopes.push(s_head);
                            n = 0;
                        }
                    }
                    out.$resources.push(head);
                }
                out
            }
        }
    };
}

flat_batchable!(Logs, resource_logs, scope_logs, log_records);
flat_batchable!(Traces, resource_spans, scope_spans, spans);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdata::proto::metrics::v1::{Gauge, NumberDataPoint, ResourceMetrics, ScopeMetrics};
    use prost::Message;

    fn gauge(name: &str, points: usize) -> Metric {
        Metric {
            name: name.into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: (0..points)
                    .map(|i| NumberDataPoint {
                        time_unix_nano: i as u64,
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn split_by_items_and_by_encoded_size_keeps_every_item_in_order() {
        let m = Metrics {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![gauge("a", 10), gauge("b", 7)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let times = |parts: &[Metrics]| -> Vec<u64> {
            parts
                .iter()
                .flat_map(|p| &p.resource_metrics)
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .flat_map(|x| match &x.data {
                    Some(metric::Data::Gauge(g)) => g.data_points.clone(),
                    _ => vec![],
                })
                .map(|p| p.time_unix_nano)
                .collect()
        };
        let whole = m.encoded_len();
        let by_items = m.clone().split(5, 0);
        assert_eq!(
            by_items.iter().map(|p| p.item_count()).collect::<Vec<_>>(),
            vec![5, 5, 5, 2]
        );
        assert_eq!(times(&by_items), times(std::slice::from_ref(&m)));
        let by_bytes = m.clone().split(0, whole / 3);
        assert!(by_bytes.len() >= 3, "{}", by_bytes.len());
        assert!(by_bytes.iter().all(|p| p.encoded_len() <= whole / 3));
        assert_eq!(times(&by_bytes), times(std::slice::from_ref(&m)));
        // One point never fits in 1 byte: it is a part of its own.
        let tiny = m.clone().split(0, 1);
        assert_eq!(tiny.len(), 17);
        assert_eq!(m.split(0, 0).len(), 1);
    }

    #[test]
    fn take_front_splits_inside_a_metric_and_keeps_the_rest() {
        let mut m = Metrics {
            resource_metrics: vec![
                ResourceMetrics {
                    scope_metrics: vec![ScopeMetrics {
                        metrics: vec![gauge("a", 3), gauge("b", 4)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceMetrics {
                    scope_metrics: vec![ScopeMetrics {
                        metrics: vec![gauge("c", 2)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        };
        let head = m.take_front(5);
        assert_eq!((head.item_count(), m.item_count()), (5, 4));
        let names: Vec<(&str, usize)> = head.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .map(|x| (x.name.as_str(), metric_point_count(x)))
            .collect();
        assert_eq!(names, vec![("a", 3), ("b", 2)]);
        let rest = &m.resource_metrics[0].scope_metrics[0].metrics[0];
        assert_eq!((rest.name.as_str(), metric_point_count(rest)), ("b", 2));
        let Some(metric::Data::Gauge(g)) = &rest.data else {
            panic!()
        };
        assert_eq!(
            g.data_points[0].time_unix_nano, 2,
            "the points after the split stay in order"
        );
        let all = m.take_front(100);
        assert_eq!(all.item_count(), 4);
        assert!(m.resource_metrics.is_empty());
    }
}
