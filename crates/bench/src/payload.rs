//! Pre-encoded OTLP metrics requests shaped like Claude Code's: ten series
//! per user and model (token usage by type, cost, lines added/removed,
//! active time by type, commits), delta monotonic sums of doubles, seven
//! attributes per point. Values are small integers so that any sum of them
//! is exact in a double, and each request knows the sum of its values.

use bytes::Bytes;
use otelcol_core::pdata::proto::common::v1::KeyValue;
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::{json, string_attribute, Metrics};
use prost::Message;

/// (metric, unit, `type` attribute or none)
const SERIES: [(&str, &str, Option<&str>); 10] = [
    ("claude_code.token.usage", "tokens", Some("input")),
    ("claude_code.token.usage", "tokens", Some("output")),
    ("claude_code.token.usage", "tokens", Some("cacheRead")),
    ("claude_code.token.usage", "tokens", Some("cacheCreation")),
    ("claude_code.cost.usage", "USD", None),
    ("claude_code.lines_of_code.count", "", Some("added")),
    ("claude_code.lines_of_code.count", "", Some("removed")),
    ("claude_code.active_time.total", "s", Some("user")),
    ("claude_code.active_time.total", "s", Some("cli")),
    ("claude_code.commit.count", "", None),
];

const MODELS: [&str; 2] = ["claude-sonnet-4-5", "claude-opus-4-1"];

/// One pre-encoded request.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// OTLP protobuf.
    pub proto: Bytes,
    /// OTLP/JSON.
    pub json: Bytes,
    /// Data points in it.
    pub points: u64,
    /// Sum of its point values.
    pub value_sum: f64,
}

/// The email of user number `n`.
pub fn user_email(n: usize) -> String {
    format!("user{n:06}@example.com")
}

/// A request for `users` (numbers), `models` models each, at `time_nanos`.
pub fn request(users: &[usize], models: usize, time_nanos: u64) -> (Metrics, u64, f64) {
    let mut points = 0u64;
    let mut sum = 0f64;
    let resource_metrics = users
        .iter()
        .map(|&u| {
            let email = user_email(u);
            let common = [
                string_attribute("user.email", email.clone()),
                string_attribute("session.id", format!("session-{u}-1")),
                string_attribute("organization.id", "org-0001"),
                string_attribute("user.account_uuid", format!("acct-{u}")),
                string_attribute("terminal.type", "vscode"),
            ];
            let metrics = SERIES
                .iter()
                .enumerate()
                .map(|(i, (name, unit, kind))| {
                    let data_points = (0..models)
                        .map(|m| {
                            let mut attributes: Vec<KeyValue> = common.to_vec();
                            attributes.push(string_attribute("model", MODELS[m % MODELS.len()]));
                            if let Some(k) = kind {
                                attributes.push(string_attribute("type", *k));
                            }
                            let v = ((u + i + m) % 4 + 1) as f64;
                            points += 1;
                            sum += v;
                            NumberDataPoint {
                                attributes,
                                start_time_unix_nano: time_nanos - 10_000_000_000,
                                time_unix_nano: time_nanos,
                                value: Some(number_data_point::Value::AsDouble(v)),
                                ..Default::default()
                            }
                        })
                        .collect();
                    Metric {
                        name: name.to_string(),
                        unit: unit.to_string(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points,
                            aggregation_temporality: 1,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    }
                })
                .collect();
            ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        string_attribute("service.name", "claude-code"),
                        string_attribute("service.version", "2.1.239"),
                        string_attribute("os.type", "linux"),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    (Metrics { resource_metrics }, points, sum)
}

/// Encodes a request both ways.
pub fn encode(req: &Metrics, points: u64, value_sum: f64) -> Encoded {
    Encoded {
        proto: Bytes::from(req.encode_to_vec()),
        json: Bytes::from(json::metrics(req)),
        points,
        value_sum,
    }
}

/// `bulk`: requests of `users_per_request` users × 10 series (1000 points
/// for 100 users), cycling through `users` users.
pub fn bulk(users: usize, users_per_request: usize, time_nanos: u64) -> Vec<Encoded> {
    let per = users_per_request.max(1);
    let count = users.div_ceil(per).max(1);
    (0..count)
        .map(|r| {
            let ids: Vec<usize> = (0..per).map(|i| (r * per + i) % users.max(1)).collect();
            let (req, p, s) = request(&ids, 1, time_nanos);
            encode(&req, p, s)
        })
        .collect()
}

/// `fleet`: one request per client (its user is `client % users`), two
/// models × 10 series = 20 points, as one Claude Code process sends.
pub fn fleet(clients: usize, users: usize, time_nanos: u64) -> Vec<Encoded> {
    (0..clients)
        .map(|c| {
            let (req, p, s) = request(&[c % users.max(1)], 2, time_nanos);
            encode(&req, p, s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_requests_hold_1000_points_and_know_their_sum() {
        let reqs = bulk(1000, 100, 1_000_000_000_000);
        assert_eq!(reqs.len(), 10);
        assert!(reqs.iter().all(|r| r.points == 1000));
        let decoded = Metrics::decode(reqs[0].proto.clone()).unwrap();
        use otelcol_core::pdata::Payload;
        assert_eq!(decoded.item_count(), 1000);
        let total: f64 = decoded
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .flat_map(|m| match &m.data {
                Some(metric::Data::Sum(s)) => s.data_points.clone(),
                _ => vec![],
            })
            .map(|p| match p.value {
                Some(number_data_point::Value::AsDouble(v)) => v,
                _ => 0.0,
            })
            .sum();
        assert_eq!(total, reqs[0].value_sum);
    }

    #[test]
    fn fleet_requests_hold_20_points_of_one_user() {
        let reqs = fleet(3, 2, 1_000_000_000_000);
        assert_eq!(reqs.len(), 3);
        assert!(reqs.iter().all(|r| r.points == 20));
        let d = Metrics::decode(reqs[2].proto.clone()).unwrap();
        assert_eq!(d.resource_metrics.len(), 1);
        let s = String::from_utf8(reqs[2].json.to_vec()).unwrap();
        assert!(
            s.contains("user000000@example.com"),
            "client 2 of 2 users is user 0"
        );
    }
}
