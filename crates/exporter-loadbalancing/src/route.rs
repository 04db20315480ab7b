//! Routing keys, and splitting a batch into one part per key with its
//! resource and scope kept (one pass over the items).

use std::collections::BTreeMap;

use otelcol_core::pdata::proto::common::v1::KeyValue;
use otelcol_core::pdata::proto::logs::v1::{ResourceLogs, ScopeLogs};
use otelcol_core::pdata::proto::metrics::v1::metric::Data;
use otelcol_core::pdata::proto::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
use otelcol_core::pdata::proto::trace::v1::{ResourceSpans, ScopeSpans};
use otelcol_core::pdata::{find_attribute, Batchable, Logs, Metrics, Traces};
use serde::{Deserialize, Serialize};

/// What decides an item's backend (`routing_key`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum RoutingKey {
    /// The resource's `service.name`.
    #[serde(rename = "service")]
    Service,
    /// Spans and log records: their trace id. Metrics have none and route
    /// by `service` (the Go default key).
    #[default]
    #[serde(rename = "traceID")]
    TraceId,
    /// All resource attributes.
    #[serde(rename = "resource")]
    Resource,
    /// Metrics: the metric's name (spans and records: `service`).
    #[serde(rename = "metric")]
    Metric,
    /// Metrics: the stream (resource, scope, metric name, point
    /// attributes); spans and records: `resource`.
    #[serde(rename = "streamID")]
    StreamId,
    /// The values of `routing_attributes`, each looked up on the item
    /// (point, record, span) and then on the resource.
    #[serde(rename = "attributes")]
    Attributes,
}

/// How keys are made.
#[derive(Clone, Debug, Default)]
pub struct Router {
    /// The key.
    pub key: RoutingKey,
    /// With [`RoutingKey::Attributes`]: the attributes.
    pub attributes: Vec<String>,
}

/// An item's context: what a key may be made of.
pub struct Item<'a> {
    /// Resource attributes.
    pub resource: &'a [KeyValue],
    /// The scope's name.
    pub scope: &'a str,
    /// The metric's name (metrics only).
    pub metric: &'a str,
    /// The item's own attributes.
    pub attributes: &'a [KeyValue],
    /// The trace id (spans and records; empty otherwise).
    pub trace_id: &'a [u8],
}

/// `attrs` as `k=v` lines in key order: the same attributes in any order
/// make the same text.
fn canonical(out: &mut Vec<u8>, attrs: &[KeyValue]) {
    let mut sorted: Vec<&KeyValue> = attrs.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    for kv in sorted {
        out.extend_from_slice(kv.key.as_bytes());
        out.push(b'=');
        if let Some(v) = &kv.value {
            out.extend_from_slice(otelcol_core::pdata::plain::text(v).as_bytes());
        }
        out.push(b'\n');
    }
}

fn service(out: &mut Vec<u8>, resource: &[KeyValue]) {
    if let Some(v) = find_attribute(resource, "service.name") {
        out.extend_from_slice(otelcol_core::pdata::plain::text(v).as_bytes());
    }
}

impl Router {
    /// The routing key of `item`.
    pub fn key(&self, item: &Item<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        match self.key {
            RoutingKey::Service => service(&mut out, item.resource),
            RoutingKey::TraceId if !item.trace_id.is_empty() => {
                out.extend_from_slice(item.trace_id)
            }
            RoutingKey::TraceId => service(&mut out, item.resource),
            RoutingKey::Resource => canonical(&mut out, item.resource),
            RoutingKey::Metric if !item.metric.is_empty() => {
                out.extend_from_slice(item.metric.as_bytes())
            }
            RoutingKey::Metric => service(&mut out, item.resource),
            RoutingKey::StreamId => {
                canonical(&mut out, item.resource);
                if !item.metric.is_empty() {
                    out.push(0);
                    out.extend_from_slice(item.scope.as_bytes());
                    out.push(0);
                    out.extend_from_slice(item.metric.as_bytes());
                    out.push(0);
                    canonical(&mut out, item.attributes);
                }
            }
            RoutingKey::Attributes => {
                for name in &self.attributes {
                    let v = find_attribute(item.attributes, name)
                        .or_else(|| find_attribute(item.resource, name));
                    if let Some(v) = v {
                        out.extend_from_slice(otelcol_core::pdata::plain::text(v).as_bytes());
                    }
                    out.push(0x1f);
                }
            }
        }
        out
    }
}

/// A signal the exporter routes.
pub trait Routable: Batchable {
    /// One part per distinct key (in key order), structure kept.
    fn split_by_key(self, router: &Router) -> BTreeMap<Vec<u8>, Self>;
}

fn attrs(r: &Option<otelcol_core::pdata::proto::resource::v1::Resource>) -> &[KeyValue] {
    r.as_ref().map(|r| &r.attributes[..]).unwrap_or(&[])
}

macro_rules! split_points {
    ($m:expr, $key:expr, $($kind:ident),*) => {{
        let mut m: Metric = $m;
        let data = m.data.take();
        let mut parts: BTreeMap<Vec<u8>, Metric> = BTreeMap::new();
        match data {
            $(Some(Data::$kind(d)) => {
                let mut shell = d.clone();
                shell.data_points.clear();
                for p in d.data_points {
                    let k = $key(&p.attributes[..]);
                    let part = parts.entry(k).or_insert_with(|| Metric {
                        data: Some(Data::$kind(shell.clone())),
                        ..m.clone()
                    });
                    if let Some(Data::$kind(d)) = &mut part.data {
                        d.data_points.push(p);
                    }
                }
            })*
            None => {
                parts.insert($key(&[]), m);
            }
        }
        parts
    }};
}

/// Groups the values of `parts` into `into` by key, each group wrapped by `wrap`.
fn gather<K: Ord, P, W>(
    into: &mut BTreeMap<K, Vec<W>>,
    parts: BTreeMap<K, P>,
    wrap: impl Fn(P) -> W,
) {
    for (k, p) in parts {
        into.entry(k).or_default().push(wrap(p));
    }
}

impl Routable for Metrics {
    fn split_by_key(self, router: &Router) -> BTreeMap<Vec<u8>, Self> {
        let mut out: BTreeMap<Vec<u8>, Metrics> = BTreeMap::new();
        for rm in self.resource_metrics {
            let resource = attrs(&rm.resource).to_vec();
            let mut scopes: BTreeMap<Vec<u8>, Vec<ScopeMetrics>> = BTreeMap::new();
            for sm in rm.scope_metrics {
                let scope = sm
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                let mut metrics: BTreeMap<Vec<u8>, Vec<Metric>> = BTreeMap::new();
                for m in sm.metrics {
                    let name = m.name.clone();
                    let key = |point: &[KeyValue]| {
                        router.key(&Item {
                            resource: &resource,
                            scope: &scope,
                            metric: &name,
                            attributes: point,
                            trace_id: &[],
                        })
                    };
                    let parts =
                        split_points!(m, key, Gauge, Sum, Histogram, ExponentialHistogram, Summary);
                    gather(&mut metrics, parts, |p| p);
                }
                gather(&mut scopes, metrics, |metrics| ScopeMetrics {
                    scope: sm.scope.clone(),
                    metrics,
                    schema_url: sm.schema_url.clone(),
                });
            }
            for (k, scope_metrics) in scopes {
                out.entry(k)
                    .or_default()
                    .resource_metrics
                    .push(ResourceMetrics {
                        resource: rm.resource.clone(),
                        scope_metrics,
                        schema_url: rm.schema_url.clone(),
                    });
            }
        }
        out
    }
}

impl Routable for Logs {
    fn split_by_key(self, router: &Router) -> BTreeMap<Vec<u8>, Self> {
        let mut out: BTreeMap<Vec<u8>, Logs> = BTreeMap::new();
        for rl in self.resource_logs {
            let resource = attrs(&rl.resource).to_vec();
            let mut scopes: BTreeMap<Vec<u8>, Vec<ScopeLogs>> = BTreeMap::new();
            for sl in rl.scope_logs {
                let scope = sl
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                let mut records: BTreeMap<Vec<u8>, Vec<_>> = BTreeMap::new();
                for r in sl.log_records {
                    let k = router.key(&Item {
                        resource: &resource,
                        scope: &scope,
                        metric: "",
                        attributes: &r.attributes,
                        trace_id: &r.trace_id,
                    });
                    records.entry(k).or_default().push(r);
                }
                gather(&mut scopes, records, |log_records| ScopeLogs {
                    scope: sl.scope.clone(),
                    log_records,
                    schema_url: sl.schema_url.clone(),
                });
            }
            for (k, scope_logs) in scopes {
                out.entry(k).or_default().resource_logs.push(ResourceLogs {
                    resource: rl.resource.clone(),
                    scope_logs,
                    schema_url: rl.schema_url.clone(),
                });
            }
        }
        out
    }
}

impl Routable for Traces {
    fn split_by_key(self, router: &Router) -> BTreeMap<Vec<u8>, Self> {
        let mut out: BTreeMap<Vec<u8>, Traces> = BTreeMap::new();
        for rs in self.resource_spans {
            let resource = attrs(&rs.resource).to_vec();
            let mut scopes: BTreeMap<Vec<u8>, Vec<ScopeSpans>> = BTreeMap::new();
            for ss in rs.scope_spans {
                let scope = ss
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                let mut spans: BTreeMap<Vec<u8>, Vec<_>> = BTreeMap::new();
                for s in ss.spans {
                    let k = router.key(&Item {
                        resource: &resource,
                        scope: &scope,
                        metric: "",
                        attributes: &s.attributes,
                        trace_id: &s.trace_id,
                    });
                    spans.entry(k).or_default().push(s);
                }
                gather(&mut scopes, spans, |spans| ScopeSpans {
                    scope: ss.scope.clone(),
                    spans,
                    schema_url: ss.schema_url.clone(),
                });
            }
            for (k, scope_spans) in scopes {
                out.entry(k)
                    .or_default()
                    .resource_spans
                    .push(ResourceSpans {
                        resource: rs.resource.clone(),
                        scope_spans,
                        schema_url: rs.schema_url.clone(),
                    });
            }
        }
        out
    }
}
