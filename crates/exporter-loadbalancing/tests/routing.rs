//! `loadbalancing` in front of three of this collector's OTLP receivers on
//! 127.0.0.1: every user's points reach exactly one backend, all of them,
//! whether `user.email` is on the point or on the resource; removing a
//! backend moves only the users it had, and a ring change never sends a
//! point twice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use otelcol_core::component::{
    ComponentId, CreateSettings, ExporterFactory, Host, Kind, Lifecycle, ReceiverFactory,
    SignalConsumers,
};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError, RequestContext};
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::{find_attribute, string_attribute, Metrics};
use otelcol_exporter_loadbalancing::{
    LoadBalancingConfig, LoadBalancingExporter, LoadBalancingExporterFactory,
};
use otelcol_receiver_otlp::OtlpReceiverFactory;

/// (user, value) of every point a backend received.
#[derive(Default)]
struct Sink(Mutex<Vec<(String, f64)>>);

#[async_trait]
impl Consumer<Metrics> for Sink {
    async fn consume(&self, batch: Batch<Metrics>) -> Result<(), ConsumerError> {
        let mut got = self.0.lock().unwrap();
        for rm in &batch.data.resource_metrics {
            let resource = rm
                .resource
                .as_ref()
                .map(|r| &r.attributes[..])
                .unwrap_or(&[]);
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                let Some(metric::Data::Sum(s)) = &m.data else {
                    continue;
                };
                for p in &s.data_points {
                    let user = find_attribute(&p.attributes, "user.email")
                        .or_else(|| find_attribute(resource, "user.email"))
                        .and_then(otelcol_core::pdata::as_str)
                        .unwrap_or("?")
                        .to_string();
                    let Some(number_data_point::Value::AsDouble(v)) = p.value else {
                        continue;
                    };
                    got.push((user, v));
                }
            }
        }
        Ok(())
    }
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn raw(yaml: &str) -> otelcol_core::config::RawConfig {
    serde_yaml::from_str(yaml).unwrap()
}

fn host() -> Host {
    Host::new(Default::default(), Default::default())
}

/// A receiving collector: its gRPC endpoint and what it got.
async fn backend() -> (String, Arc<Sink>, Arc<dyn Lifecycle>) {
    backend_on(port(), Arc::new(Sink::default())).await
}

/// A receiving collector on port `p` feeding `sink`.
async fn backend_on(p: u16, sink: Arc<Sink>) -> (String, Arc<Sink>, Arc<dyn Lifecycle>) {
    let receiver = OtlpReceiverFactory
        .create(
            CreateSettings::standalone(ComponentId::new("otlp"), Kind::Receiver),
            &raw(&format!(
                "protocols:\n  grpc: {{endpoint: '127.0.0.1:{p}'}}\n"
            )),
            SignalConsumers {
                metrics: Some(sink.clone()),
                logs: None,
                traces: None,
            },
        )
        .unwrap();
    receiver.start(&host()).await.unwrap();
    (format!("127.0.0.1:{p}"), sink, receiver)
}

/// Fifty users, one point each: even users carry `user.email` on the
/// point, odd ones on the resource; values make every (round, user) unique.
fn fleet(round: u32) -> Metrics {
    let point = |user: Option<String>, v: f64| NumberDataPoint {
        attributes: user
            .map(|u| vec![string_attribute("user.email", u)])
            .unwrap_or_default(),
        time_unix_nano: 1_795_268_825_000_000_000,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let resource = |attrs| ResourceMetrics {
        resource: Some(Resource {
            attributes: attrs,
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![Metric {
                name: "claude_code.token.usage".into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: vec![],
                    aggregation_temporality: 2,
                    is_monotonic: true,
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut shared = resource(vec![string_attribute("service.name", "claude-code")]);
    let mut out = Metrics::default();
    for u in 0..50u32 {
        let user = format!("user{u}@example.com");
        let v = f64::from(round * 1000 + u);
        if u % 2 == 0 {
            if let Some(metric::Data::Sum(s)) = &mut shared.scope_metrics[0].metrics[0].data {
                s.data_points.push(point(Some(user), v));
            }
        } else {
            let mut own = resource(vec![
                string_attribute("service.name", "codex"),
                string_attribute("user.email", user),
            ]);
            if let Some(metric::Data::Sum(s)) = &mut own.scope_metrics[0].metrics[0].data {
                s.data_points.push(point(None, v));
            }
            out.resource_metrics.push(own);
        }
    }
    out.resource_metrics.push(shared);
    out
}

const CONFIG: &str = "routing_key: attributes\nrouting_attributes: [user.email]\nprotocol:\n  otlp:\n    tls: {insecure: true}\n    sending_queue: {enabled: false}\n";

/// A started exporter with `yaml`.
async fn balancer(yaml: &str) -> Arc<LoadBalancingExporter<Metrics>> {
    let config: LoadBalancingConfig = serde_yaml::from_str(yaml).unwrap();
    config.validate().unwrap();
    let lb = LoadBalancingExporter::<Metrics>::shared(
        CreateSettings::standalone("loadbalancing".parse().unwrap(), Kind::Exporter),
        config,
    );
    lb.start(&host()).await.unwrap();
    lb
}

/// Which backend each user's points reached; fails if a user reached two.
fn owners(sinks: &[(String, Arc<Sink>)]) -> BTreeMap<String, String> {
    let mut owner = BTreeMap::new();
    for (endpoint, sink) in sinks {
        for (user, _) in sink.0.lock().unwrap().iter() {
            let previous = owner.insert(user.clone(), endpoint.clone());
            assert!(
                previous.is_none() || previous.as_deref() == Some(endpoint.as_str()),
                "{user} reached {previous:?} and {endpoint}"
            );
        }
    }
    owner
}

fn all_points(sinks: &[(String, Arc<Sink>)]) -> Vec<(String, f64)> {
    let mut all: Vec<(String, f64)> = sinks
        .iter()
        .flat_map(|(_, s)| s.0.lock().unwrap().clone())
        .collect();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    all
}

fn sent(rounds: std::ops::Range<u32>) -> Vec<(String, f64)> {
    let mut all = vec![];
    for r in rounds {
        for u in 0..50u32 {
            all.push((format!("user{u}@example.com"), f64::from(r * 1000 + u)));
        }
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    all
}

#[tokio::test]
async fn each_user_reaches_one_backend_and_a_removed_backend_moves_only_its_users() {
    let mut sinks = vec![];
    let mut receivers = vec![];
    for _ in 0..3 {
        let (endpoint, sink, receiver) = backend().await;
        sinks.push((endpoint, sink));
        receivers.push(receiver);
    }
    let hostnames: Vec<String> = sinks.iter().map(|(e, _)| e.clone()).collect();

    // Through the factory, as a config names it.
    let yaml = format!(
        "{CONFIG}resolver:\n  static:\n    hostnames: [{}]\n",
        hostnames.join(", ")
    );
    let lb = LoadBalancingExporterFactory
        .create_metrics(
            CreateSettings::standalone("loadbalancing".parse().unwrap(), Kind::Exporter),
            &raw(&yaml),
        )
        .unwrap();
    lb.start(&host()).await.unwrap();
    for round in 0..4 {
        lb.consume(Batch {
            data: fleet(round),
            context: RequestContext::default(),
            received: None,
        })
        .await
        .unwrap();
    }
    lb.shutdown().await.unwrap();
    assert_eq!(all_points(&sinks), sent(0..4), "every point once");
    let before = owners(&sinks);
    assert_eq!(before.len(), 50);
    let per_backend: BTreeSet<&String> = before.values().collect();
    assert_eq!(
        per_backend.len(),
        3,
        "users spread over all three: {before:?}"
    );

    // A ring change at run time: the middle backend goes away.
    for (_, s) in &sinks {
        s.0.lock().unwrap().clear();
    }
    let lb = balancer(&yaml).await;
    let removed = hostnames[1].clone();
    let kept: Vec<String> = hostnames
        .iter()
        .filter(|h| **h != removed)
        .cloned()
        .collect();
    lb.set_backends(&kept).await.unwrap();
    assert_eq!(lb.backends(), {
        let mut k = kept.clone();
        k.sort();
        k
    });
    for round in 4..6 {
        lb.consume(Batch {
            data: fleet(round),
            context: RequestContext::default(),
            received: None,
        })
        .await
        .unwrap();
    }
    lb.shutdown().await.unwrap();
    assert_eq!(
        all_points(&sinks),
        sent(4..6),
        "every point once after the change"
    );
    let after = owners(&sinks);
    for (user, was) in &before {
        let now = &after[user];
        if *was == removed {
            assert_ne!(*now, removed, "{user}");
        } else {
            assert_eq!(now, was, "{user} moved although its backend stayed");
        }
    }
    for r in receivers {
        r.shutdown().await.unwrap();
    }
}

/// `resolver.dns`: the name is resolved at start (an address literal here,
/// so the test needs no DNS server) and its port used.
#[tokio::test]
async fn the_dns_resolver_puts_the_resolved_addresses_on_the_ring() {
    let (endpoint, sink, receiver) = backend().await;
    let port = endpoint.rsplit_once(':').unwrap().1;
    let yaml = format!(
        "{CONFIG}resolver:\n  dns: {{hostname: 127.0.0.1, port: '{port}', interval: 50ms}}\n"
    );
    let lb = balancer(&yaml).await;
    assert_eq!(lb.backends(), vec![endpoint.clone()]);
    lb.consume(Batch {
        data: fleet(0),
        context: RequestContext::default(),
        received: None,
    })
    .await
    .unwrap();
    // The name is resolved again on its interval; the ring stays.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(lb.backends(), vec![endpoint]);
    lb.shutdown().await.unwrap();
    assert_eq!(all_points(&[("b".into(), sink)]), sent(0..1));
    receiver.shutdown().await.unwrap();
}

/// A backend that is down keeps its users' data in its own queue, retried
/// until it is back: nothing of it goes to the other backends meanwhile
/// (re-routing a cumulative stream is what breaks its totals).
#[tokio::test]
async fn a_backend_that_is_down_gets_its_data_when_back_and_nothing_is_re_routed() {
    let mut sinks = vec![];
    let mut receivers = vec![];
    for _ in 0..3 {
        let (endpoint, sink, receiver) = backend().await;
        sinks.push((endpoint, sink));
        receivers.push(receiver);
    }
    let hostnames: Vec<String> = sinks.iter().map(|(e, _)| e.clone()).collect();
    // Which users each backend owns, from a first round with all up.
    let yaml = format!(
        "routing_key: attributes\nrouting_attributes: [user.email]\nprotocol:\n  otlp:\n    tls: {{insecure: true}}\n    retry_on_failure: {{initial_interval: 20ms, max_interval: 100ms, max_elapsed_time: 0s}}\nresolver:\n  static:\n    hostnames: [{}]\n",
        hostnames.join(", ")
    );
    let lb = balancer(&yaml).await;
    let send = |round| Batch {
        data: fleet(round),
        context: RequestContext::default(),
        received: None,
    };
    lb.consume(send(0)).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while all_points(&sinks).len() < 50 {
        assert!(std::time::Instant::now() < deadline, "round 0 delivered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let owner = owners(&sinks);
    for (_, s) in &sinks {
        s.0.lock().unwrap().clear();
    }

    // The first backend goes down; two rounds are accepted meanwhile.
    receivers[0].shutdown().await.unwrap();
    lb.consume(send(1)).await.unwrap();
    lb.consume(send(2)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let down = &hostnames[0];
    let others: usize = sinks[1..]
        .iter()
        .map(|(_, s)| s.0.lock().unwrap().len())
        .sum();
    let expected_others = 2 * owner.values().filter(|o| *o != down).count();
    assert_eq!(
        others, expected_others,
        "the other backends got their own users only"
    );
    assert!(sinks[0].1 .0.lock().unwrap().is_empty());

    // Back on the same port: its users' two rounds arrive, from the queue.
    let port: u16 = down.rsplit_once(':').unwrap().1.parse().unwrap();
    let (_, _, back) = backend_on(port, sinks[0].1.clone()).await;
    receivers[0] = back;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while all_points(&sinks).len() < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "the queued rounds arrive"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    lb.shutdown().await.unwrap();
    assert_eq!(all_points(&sinks), sent(1..3), "every point once");
    assert_eq!(owners(&sinks), owner, "every user at its own backend");
    for r in receivers {
        r.shutdown().await.unwrap();
    }
}
