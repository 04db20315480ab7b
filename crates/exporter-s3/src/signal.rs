//! What the exporter needs of each signal: its name, its encodings, and
//! visiting or keeping items by (resource attributes, item time) so that a
//! batch can be split by partition.

use otelcol_core::pdata::proto::common::v1::KeyValue;
use otelcol_core::pdata::proto::metrics::v1::metric::Data;
use otelcol_core::pdata::{json, Batchable, Logs, Metrics, Traces};

use otelcol_core::encoding::{Encoding, EncodingError};

use crate::config::Compression;
use crate::encode::EncodeError;

/// A signal the object exporters write.
pub trait Signal: Batchable {
    /// `metrics`, `logs` or `traces`: the file name's signal part.
    const NAME: &'static str;
    /// The signal, for the core exporter helper.
    const KIND: otelcol_core::Signal;
    /// Whether the Parquet marshaler writes this signal.
    const PARQUET: bool;
    /// The Go collector's OTLP/JSON.
    fn to_json(&self) -> String;
    /// A Parquet file of one row per item (see the crate README).
    fn to_parquet(&self, users: &[String], c: Compression) -> Result<Vec<u8>, EncodeError>;
    /// Calls `f` with the resource attributes and time of every item.
    fn visit(&self, f: &mut dyn FnMut(&[KeyValue], u64));
    /// Keeps the items for which `f` is true; empty containers are removed.
    fn retain(&mut self, f: &mut dyn FnMut(&[KeyValue], u64) -> bool);
    /// This batch as encoding extension `e` writes it.
    fn encode_with(&self, e: &dyn Encoding) -> Result<Vec<u8>, EncodingError>;
    /// These logs, for the marshalers that write logs only.
    fn as_logs(&self) -> Option<&Logs> {
        None
    }
}

fn attrs(r: &Option<otelcol_core::pdata::proto::resource::v1::Resource>) -> &[KeyValue] {
    r.as_ref().map(|r| &r.attributes[..]).unwrap_or(&[])
}

/// A log record's time: its event time, else when it was observed.
fn log_time(t: u64, observed: u64) -> u64 {
    if t != 0 {
        t
    } else {
        observed
    }
}

macro_rules! each_point {
    ($data:expr, |$p:ident| $body:expr) => {
        match $data {
            Some(Data::Gauge(g)) => g.data_points.iter().for_each(|$p| $body),
            Some(Data::Sum(s)) => s.data_points.iter().for_each(|$p| $body),
            Some(Data::Histogram(h)) => h.data_points.iter().for_each(|$p| $body),
            Some(Data::ExponentialHistogram(h)) => h.data_points.iter().for_each(|$p| $body),
            Some(Data::Summary(s)) => s.data_points.iter().for_each(|$p| $body),
            None => {}
        }
    };
}

macro_rules! retain_points {
    ($data:expr, |$p:ident| $keep:expr) => {
        match $data {
            Some(Data::Gauge(g)) => g.data_points.retain(|$p| $keep),
            Some(Data::Sum(s)) => s.data_points.retain(|$p| $keep),
            Some(Data::Histogram(h)) => h.data_points.retain(|$p| $keep),
            Some(Data::ExponentialHistogram(h)) => h.data_points.retain(|$p| $keep),
            Some(Data::Summary(s)) => s.data_points.retain(|$p| $keep),
            None => {}
        }
    };
}

impl Signal for Metrics {
    fn encode_with(&self, e: &dyn Encoding) -> Result<Vec<u8>, EncodingError> {
        e.encode_metrics(self)
    }
    const NAME: &'static str = "metrics";
    const KIND: otelcol_core::Signal = otelcol_core::Signal::Metrics;
    const PARQUET: bool = true;
    fn to_parquet(&self, users: &[String], c: Compression) -> Result<Vec<u8>, EncodeError> {
        Ok(crate::parquet::metrics(self, users, c)?)
    }
    fn to_json(&self) -> String {
        json::metrics(self)
    }
    fn visit(&self, f: &mut dyn FnMut(&[KeyValue], u64)) {
        for rm in &self.resource_metrics {
            let r = attrs(&rm.resource);
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                each_point!(&m.data, |p| f(r, p.time_unix_nano));
            }
        }
    }
    fn retain(&mut self, f: &mut dyn FnMut(&[KeyValue], u64) -> bool) {
        for rm in &mut self.resource_metrics {
            let r = attrs(&rm.resource);
            for sm in &mut rm.scope_metrics {
                for m in &mut sm.metrics {
                    retain_points!(&mut m.data, |p| f(r, p.time_unix_nano));
                }
                sm.metrics
                    .retain(|m| otelcol_core::pdata::metric_point_count(m) > 0);
            }
            rm.scope_metrics.retain(|s| !s.metrics.is_empty());
        }
        self.resource_metrics
            .retain(|r| !r.scope_metrics.is_empty());
    }
}

impl Signal for Logs {
    fn encode_with(&self, e: &dyn Encoding) -> Result<Vec<u8>, EncodingError> {
        e.encode_logs(self)
    }
    const NAME: &'static str = "logs";
    fn as_logs(&self) -> Option<&Logs> {
        Some(self)
    }
    const KIND: otelcol_core::Signal = otelcol_core::Signal::Logs;
    const PARQUET: bool = true;
    fn to_parquet(&self, users: &[String], c: Compression) -> Result<Vec<u8>, EncodeError> {
        Ok(crate::parquet::logs(self, users, c)?)
    }
    fn to_json(&self) -> String {
        json::logs(self)
    }
    fn visit(&self, f: &mut dyn FnMut(&[KeyValue], u64)) {
        for rl in &self.resource_logs {
            let r = attrs(&rl.resource);
            for l in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
                f(r, log_time(l.time_unix_nano, l.observed_time_unix_nano));
            }
        }
    }
    fn retain(&mut self, f: &mut dyn FnMut(&[KeyValue], u64) -> bool) {
        for rl in &mut self.resource_logs {
            let r = attrs(&rl.resource);
            for sl in &mut rl.scope_logs {
                sl.log_records
                    .retain(|l| f(r, log_time(l.time_unix_nano, l.observed_time_unix_nano)));
            }
            rl.scope_logs.retain(|s| !s.log_records.is_empty());
        }
        self.resource_logs.retain(|r| !r.scope_logs.is_empty());
    }
}

impl Signal for Traces {
    fn encode_with(&self, e: &dyn Encoding) -> Result<Vec<u8>, EncodingError> {
        e.encode_traces(self)
    }
    const NAME: &'static str = "traces";
    const KIND: otelcol_core::Signal = otelcol_core::Signal::Traces;
    const PARQUET: bool = false;
    fn to_parquet(&self, _: &[String], _: Compression) -> Result<Vec<u8>, EncodeError> {
        Err(EncodeError::Unsupported {
            marshaler: "parquet",
            signal: Self::NAME,
        })
    }
    fn to_json(&self) -> String {
        json::traces(self)
    }
    fn visit(&self, f: &mut dyn FnMut(&[KeyValue], u64)) {
        for rs in &self.resource_spans {
            let r = attrs(&rs.resource);
            for s in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                f(r, s.start_time_unix_nano);
            }
        }
    }
    fn retain(&mut self, f: &mut dyn FnMut(&[KeyValue], u64) -> bool) {
        for rs in &mut self.resource_spans {
            let r = attrs(&rs.resource);
            for ss in &mut rs.scope_spans {
                ss.spans.retain(|s| f(r, s.start_time_unix_nano));
            }
            rs.scope_spans.retain(|s| !s.spans.is_empty());
        }
        self.resource_spans.retain(|r| !r.scope_spans.is_empty());
    }
}

/// Splits `data` into one request per distinct `key` of its items, in key
/// order. One key (the usual case) returns `data` unchanged.
pub fn split_by<T: Signal, K: Ord + Clone>(
    data: T,
    key: &mut dyn FnMut(&[KeyValue], u64) -> K,
) -> Vec<(K, T)> {
    let mut keys = std::collections::BTreeSet::new();
    data.visit(&mut |r, t| {
        keys.insert(key(r, t));
    });
    if keys.len() <= 1 {
        return keys
            .into_iter()
            .next()
            .map(|k| vec![(k, data)])
            .unwrap_or_default();
    }
    keys.into_iter()
        .map(|k| {
            let mut part = data.clone();
            part.retain(&mut |r, t| key(r, t) == k);
            (k, part)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use otelcol_core::pdata::proto::metrics::v1::{
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };

    fn point(t: u64) -> NumberDataPoint {
        NumberDataPoint {
            time_unix_nano: t,
            ..Default::default()
        }
    }

    fn metrics(times: &[u64]) -> Metrics {
        Metrics {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "m".into(),
                        data: Some(Data::Sum(Sum {
                            data_points: times.iter().map(|t| point(*t)).collect(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn points_of_one_metric_split_by_key_and_keep_their_structure() {
        let parts = split_by(metrics(&[10, 25, 11, 27]), &mut |_, t| t / 10);
        assert_eq!(
            parts,
            vec![(1, metrics(&[10, 11])), (2, metrics(&[25, 27]))]
        );
    }

    #[test]
    fn one_key_returns_the_batch_unchanged_and_empty_gives_nothing() {
        assert_eq!(
            split_by(metrics(&[1, 2]), &mut |_, _| 0),
            vec![(0, metrics(&[1, 2]))]
        );
        assert!(split_by(Metrics::default(), &mut |_, _| 0).is_empty());
    }

    #[test]
    fn log_records_fall_back_to_the_observed_time() {
        use otelcol_core::pdata::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let rec = |t, o| LogRecord {
            time_unix_nano: t,
            observed_time_unix_nano: o,
            ..Default::default()
        };
        let logs = Logs {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![rec(5, 99), rec(0, 7)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut seen = vec![];
        logs.visit(&mut |_, t| seen.push(t));
        assert_eq!(seen, [5, 7]);
    }
}
