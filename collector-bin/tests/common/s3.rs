//! A real S3 server for tests of the binary: moto on 127.0.0.1 (from the
//! test virtualenv), a switch that can cut it off (an outage), and the
//! binary started with `configs/s3.yaml` against it.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::faults::event_ids;

/// The bucket every test writes to.
pub const BUCKET: &str = "raw-test";

/// A moto S3 server on a given loopback port (in memory: a restart on
/// the same port is an empty server), with the test bucket.
pub struct Moto(Child);

impl Moto {
    pub fn start(port: u16) -> Self {
        let child = Command::new(super::venv_tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server listening within 30s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let me = Self(child);
        me.python(port, &format!("s3.create_bucket(Bucket='{BUCKET}')"));
        me
    }

    pub fn python(&self, port: u16, body: &str) -> String {
        let script = format!(
            "import boto3, gzip, json\n\
             s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', aws_access_key_id='t', aws_secret_access_key='t')\n\
             {body}\n"
        );
        let out = Command::new(super::venv_tool("python"))
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every object of the bucket: key → decompressed body.
    pub fn objects(&self, port: u16) -> BTreeMap<String, Vec<u8>> {
        let listing = self.python(
            port,
            &format!(
                "out = {{}}\n\
                 for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{BUCKET}'):\n    \
                 for o in page.get('Contents', []):\n        \
                 b = s3.get_object(Bucket='{BUCKET}', Key=o['Key'])['Body'].read()\n        \
                 out[o['Key']] = gzip.decompress(b).decode() if o['Key'].endswith('.gz') else b.decode()\n\
                 print(json.dumps(out))"
            ),
        );
        let map: BTreeMap<String, String> = serde_json::from_str(listing.trim()).unwrap();
        map.into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
    }

    /// How often each event id appears across the bucket's log objects.
    pub fn event_counts(&self, port: u16) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for (key, body) in self.objects(port) {
            if key.starts_with("raw/") && key.contains("/logs_") {
                for id in event_ids(&body) {
                    *counts.entry(id).or_default() += 1;
                }
            }
        }
        counts
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP forwarder on a loopback port to moto: while down it closes every
/// connection at once (an S3 outage, retryable), while up it forwards. Moto
/// keeps its objects and bucket through the outage.
pub struct Switch {
    /// The port senders connect to.
    pub port: u16,
    up: Arc<AtomicBool>,
}

impl Switch {
    pub async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let on = up.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !on.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut out) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Self { port, up }
    }

    pub fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

/// The binary with `configs/s3.yaml` writing to moto on `s3_port`, its
/// queues under `storage`, the clocks compressed; returns once healthy,
/// with its OTLP/HTTP logs URL.
pub async fn spawn_s3(
    s3_port: u16,
    storage: &std::path::Path,
    sets: &[&str],
) -> (super::Collector, String) {
    let (http, health) = (super::free_port(), super::free_port());
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/s3.yaml");
    let mut args = vec!["--config".to_string(), config.display().to_string()];
    let fast = [
        "exporters.awss3/raw.batching.flush_interval=200ms",
        "exporters.awss3/raw.retry_on_failure.initial_interval=50ms",
        "exporters.awss3/raw.retry_on_failure.max_interval=200ms",
    ];
    for s in fast.iter().chain(sets) {
        args.push("--set".into());
        args.push(s.to_string());
    }
    let envs = [
        ("S3_BUCKET", BUCKET.to_string()),
        ("S3_ENDPOINT", format!("http://127.0.0.1:{s3_port}")),
        ("S3_PATH_STYLE", "true".into()),
        ("S3_DISABLE_SSL", "true".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("OTLP_HTTP_ENDPOINT", format!("127.0.0.1:{http}")),
        (
            "OTLP_GRPC_ENDPOINT",
            format!("127.0.0.1:{}", super::free_port()),
        ),
        ("HEALTH_ENDPOINT", format!("127.0.0.1:{health}")),
        (
            "METRICS_ENDPOINT",
            format!("127.0.0.1:{}", super::free_port()),
        ),
        ("OTELCOL_STORAGE_DIR", storage.display().to_string()),
    ];
    let collector = super::Collector::spawn(&args, &envs);
    super::wait_healthy(&format!("http://127.0.0.1:{health}/")).await;
    (collector, format!("http://127.0.0.1:{http}/v1/logs"))
}
