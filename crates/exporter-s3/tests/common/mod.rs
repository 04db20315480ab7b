//! Shared by the integration tests: a real S3-compatible server (moto, from
//! PyPI, installed into `.ci/venv` by `cargo xtask test` / `.ci/run`), a
//! fault-injecting proxy in front of it, and data builders.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore, ObjectStoreExt};
use otelcol_core::component::{ComponentId, CreateSettings, Exporter, ExporterFactory, Host, Kind};
use otelcol_core::consumer::{Batch, RequestContext};
use otelcol_core::pdata::proto::common::v1::KeyValue;
use otelcol_core::pdata::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::{string_attribute, Logs, Metrics};

/// 2026-11-21T13:47:05Z in nanoseconds.
pub const T0: u64 = 1_795_268_825_000_000_000;
pub const MINUTE: u64 = 60_000_000_000;

/// A program from the test virtualenv (`.ci/venv`, or `$OTELCOL_TEST_VENV`).
pub fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("OTELCOL_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.ci/venv"));
    let path = venv.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask test` (or .ci/run) installs the test tools into .ci/venv",
        path.display()
    );
    path
}

/// A moto S3 server on 127.0.0.1, killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Self {
        // reqwest is built without a provider of its own.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = otelcol_core::net::unused_loopback_port();
        let child = Command::new(venv_tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen within 30s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` (moto accepts unsigned requests).
    pub async fn create_bucket(&self, bucket: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    /// A client to read back what the exporter wrote.
    pub fn reader(&self, bucket: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_allow_http(true)
            .build()
            .unwrap()
    }

    /// What boto3 (the AWS SDK for Python) says of `key`: storage class,
    /// content type, content encoding and the ACL's grant permissions.
    pub fn describe(&self, bucket: &str, key: &str) -> String {
        let script = format!(
            "import boto3\n\
             s3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='t', aws_secret_access_key='t')\n\
             h = s3.head_object(Bucket='{bucket}', Key='{key}')\n\
             acl = s3.get_object_acl(Bucket='{bucket}', Key='{key}')\n\
             print(h.get('StorageClass', 'STANDARD'), h.get('ContentType'), h.get('ContentEncoding'), sorted(g['Permission'] for g in acl['Grants']))",
            self.endpoint()
        );
        let out = Command::new(venv_tool("python"))
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every key in the store, sorted.
pub async fn keys(store: &dyn ObjectStore) -> Vec<String> {
    use futures_util::StreamExt;
    let mut out: Vec<String> = store
        .list(None)
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    out.sort();
    out
}

pub async fn get(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
    store
        .get(&key.into())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// A proxy to `upstream` that answers 503 to the first `failures` object
/// uploads (PUT with a key) and forwards everything else. It records the
/// path of every PUT it saw.
pub async fn flaky_proxy(upstream: u16, failures: usize) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let puts = Arc::new(Mutex::new(Vec::new()));
    let left = Arc::new(AtomicUsize::new(failures));
    let client = reqwest::Client::new();
    let seen = puts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (left, client, seen) = (left.clone(), client.clone(), seen.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (left, client, seen) = (left.clone(), client.clone(), seen.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let path = parts.uri.path().to_string();
                        let is_upload = parts.method == hyper::Method::PUT
                            && path.trim_matches('/').contains('/');
                        if is_upload {
                            seen.lock().unwrap().push(path.clone());
                            let fail = left
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                            if fail {
                                let xml = "<Error><Code>ServiceUnavailable</Code><Message>try again</Message></Error>";
                                return Ok::<_, Infallible>(
                                    hyper::Response::builder()
                                        .status(503)
                                        .body(Full::new(Bytes::from(xml)))
                                        .unwrap(),
                                );
                            }
                        }
                        let pq = parts
                            .uri
                            .path_and_query()
                            .map(|p| p.as_str())
                            .unwrap_or("/");
                        let mut fwd = client.request(
                            parts.method.clone(),
                            format!("http://127.0.0.1:{upstream}{pq}"),
                        );
                        for (k, v) in &parts.headers {
                            if k != hyper::header::HOST {
                                fwd = fwd.header(k, v);
                            }
                        }
                        let r = fwd.body(body).send().await.unwrap();
                        let mut out = hyper::Response::builder().status(r.status());
                        for (k, v) in r.headers() {
                            out = out.header(k, v);
                        }
                        let b = r.bytes().await.unwrap();
                        Ok(out.body(Full::new(b)).unwrap())
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (port, puts)
}

pub fn settings(name: &str) -> CreateSettings {
    CreateSettings::standalone(ComponentId::new(name), Kind::Exporter)
}

pub fn raw(yaml: &str) -> otelcol_core::config::RawConfig {
    serde_yaml::from_str(yaml).unwrap()
}

pub fn host() -> Host {
    Host::new(Default::default(), Default::default())
}

pub fn metrics_exporter(
    f: &dyn ExporterFactory,
    name: &str,
    yaml: &str,
) -> (Arc<dyn Exporter<Metrics>>, CreateSettings) {
    let s = settings(name);
    (f.create_metrics(s.clone(), &raw(yaml)).unwrap(), s)
}

pub fn batch<T>(data: T) -> Batch<T> {
    Batch {
        data,
        context: RequestContext::default(),
        received: None,
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![string_attribute("service.name", service)],
        ..Default::default()
    })
}

/// One delta sum point per (user, value) at `time`, window start one minute earlier.
pub fn totals(service: &str, time: u64, points: &[(&str, f64)]) -> Metrics {
    Metrics {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "claude_code.token.usage".into(),
                    unit: "tokens".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: points
                            .iter()
                            .map(|(user, v)| NumberDataPoint {
                                attributes: vec![
                                    string_attribute("user.email", *user),
                                    string_attribute("type", "input"),
                                ],
                                start_time_unix_nano: time - MINUTE,
                                time_unix_nano: time,
                                value: Some(number_data_point::Value::AsDouble(*v)),
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
        }],
    }
}

pub fn events(service: &str, time: u64, bodies: &[&str]) -> Logs {
    Logs {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs {
                log_records: bodies
                    .iter()
                    .map(|b| LogRecord {
                        time_unix_nano: time,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        event_name: "claude_code.api_request".into(),
                        body: Some(otelcol_core::pdata::proto::common::v1::AnyValue {
                            value: Some(
                                otelcol_core::pdata::proto::common::v1::any_value::Value::StringValue(
                                    b.to_string(),
                                ),
                            ),
                        }),
                        attributes: vec![string_attribute("user.email", "ana@example.com")],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub fn kv(attrs: &[KeyValue]) -> Vec<(String, String)> {
    attrs
        .iter()
        .map(|a| {
            (
                a.key.clone(),
                otelcol_core::pdata::as_str(a.value.as_ref().unwrap())
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
