//! Test helpers: a capturing exporter, free ports, and a service started
//! in-process from YAML with this build's components plus the test ones.
#![allow(dead_code)]

pub mod faults;
pub mod replay;
pub mod s3;

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use otelcol_core::component::{
    ComponentError, CreateSettings, Exporter, ExporterFactory, Factories, Factory, Lifecycle,
};
use otelcol_core::config::{self, ConfigError, ConfigSource, RawConfig};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError};
use otelcol_core::pdata::{Logs, Metrics, Traces};
use otelcol_core::pipeline::Service;
use otelcol_core::{Signal, Stability};

/// A free TCP port on 127.0.0.1, below the ephemeral range (see `otelcol_core::net`).
pub fn free_port() -> u16 {
    otelcol_core::net::unused_loopback_port()
}

/// What the `capture` exporter received.
#[derive(Default)]
pub struct Captured {
    pub metrics: Mutex<Vec<Batch<Metrics>>>,
    pub logs: Mutex<Vec<Batch<Logs>>>,
    pub traces: Mutex<Vec<Batch<Traces>>>,
    /// How long each consume takes (to hold requests in flight).
    pub delay: Mutex<Duration>,
    /// What consume answers.
    pub answer: Mutex<Option<ConsumerError>>,
}

trait Slot: Sized + Send + Sync + 'static {
    fn slot(c: &Captured) -> &Mutex<Vec<Batch<Self>>>;
}
impl Slot for Metrics {
    fn slot(c: &Captured) -> &Mutex<Vec<Batch<Self>>> {
        &c.metrics
    }
}
impl Slot for Logs {
    fn slot(c: &Captured) -> &Mutex<Vec<Batch<Self>>> {
        &c.logs
    }
}
impl Slot for Traces {
    fn slot(c: &Captured) -> &Mutex<Vec<Batch<Self>>> {
        &c.traces
    }
}

/// The second field: whether it says it `reads_received` (instances
/// named `capture/reads`), so a receiver hands it protobuf undecoded.
struct CaptureExporter<T>(Arc<Captured>, bool, PhantomData<fn(T)>);

impl<T> CaptureExporter<T> {
    fn new(captured: &Arc<Captured>, settings: &CreateSettings) -> Self {
        let reads = settings.id.name() == Some("reads");
        Self(captured.clone(), reads, PhantomData)
    }
}

impl<T> Lifecycle for CaptureExporter<T> {}

#[async_trait]
impl<T: Slot> Consumer<T> for CaptureExporter<T> {
    async fn consume(&self, batch: Batch<T>) -> Result<(), ConsumerError> {
        let delay = *self.0.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(e) = self.0.answer.lock().unwrap().clone() {
            return Err(e);
        }
        T::slot(&self.0).lock().unwrap().push(batch);
        Ok(())
    }

    fn reads_received(&self) -> bool {
        self.1
    }
}

/// Exporter type `capture`: keeps every batch in a shared [`Captured`];
/// `capture/reads` also says it reads the bytes a batch carries.
pub struct CaptureFactory(pub Arc<Captured>);

impl Factory for CaptureFactory {
    fn type_name(&self) -> &'static str {
        "capture"
    }
    fn stability(&self) -> Stability {
        Stability::Development
    }
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn validate(&self, _: &RawConfig) -> Result<(), ConfigError> {
        Ok(())
    }
}

impl ExporterFactory for CaptureFactory {
    fn create_metrics(
        &self,
        settings: CreateSettings,
        _: &RawConfig,
    ) -> Result<Arc<dyn Exporter<Metrics>>, ComponentError> {
        Ok(Arc::new(CaptureExporter::new(&self.0, &settings)))
    }
    fn create_logs(
        &self,
        settings: CreateSettings,
        _: &RawConfig,
    ) -> Result<Arc<dyn Exporter<Logs>>, ComponentError> {
        Ok(Arc::new(CaptureExporter::new(&self.0, &settings)))
    }
    fn create_traces(
        &self,
        settings: CreateSettings,
        _: &RawConfig,
    ) -> Result<Arc<dyn Exporter<Traces>>, ComponentError> {
        Ok(Arc::new(CaptureExporter::new(&self.0, &settings)))
    }
}

/// This build's factories plus `capture`.
pub fn factories_with_capture(captured: Arc<Captured>) -> Factories {
    otelcol_multitudes::factories().exporter(CaptureFactory(captured))
}

/// Loads YAML (with `${env:…}` read from the process) into a config.
pub fn load_yaml(yaml: &str) -> config::CollectorConfig {
    let source = ConfigSource::Text {
        name: "test".into(),
        yaml: yaml.into(),
    };
    config::load(&[source], &[], &|k| std::env::var(k).ok())
        .expect("test config loads")
        .config
}

/// Ports of one test collector.
pub struct Ports {
    pub grpc: u16,
    pub http: u16,
    pub health: u16,
}

/// Starts the collector described by `yaml` with this build's factories
/// plus `capture`, and what its `capture` exporters receive.
pub async fn start_with_capture(yaml: &str) -> (Service, Arc<Captured>) {
    let captured = Arc::new(Captured::default());
    let service = Service::start(
        &load_yaml(yaml),
        &factories_with_capture(captured.clone()),
        "test",
    )
    .await
    .unwrap();
    (service, captured)
}

/// A collector with OTLP in, `capture` out for all signals, health v1 on.
pub async fn start_capture_service(extra_receiver_yaml: &str) -> (Service, Arc<Captured>, Ports) {
    let ports = Ports {
        grpc: free_port(),
        http: free_port(),
        health: free_port(),
    };
    let yaml = format!(
        r#"
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"{extra}}}
exporters:
  capture:
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: "127.0.0.1:0"}}}}
  pipelines:
    metrics: {{receivers: [otlp], exporters: [capture]}}
    logs: {{receivers: [otlp], exporters: [capture]}}
    traces: {{receivers: [otlp], exporters: [capture]}}
"#,
        health = ports.health,
        grpc = ports.grpc,
        http = ports.http,
        extra = extra_receiver_yaml,
    );
    let captured = Arc::new(Captured::default());
    let service = Service::start(
        &load_yaml(&yaml),
        &factories_with_capture(captured.clone()),
        "test",
    )
    .await
    .expect("service starts");
    (service, captured, ports)
}

/// A plain HTTP request on loopback; returns status, headers and body.
pub async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(bytes::Bytes::from(body))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("answered within 20 s")
        .expect("request sent");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One Claude Code style OTLP/JSON metrics request with `points` points.
pub fn claude_metrics_json(points: usize) -> Vec<u8> {
    let dps: Vec<String> = (0..points)
        .map(|i| format!(
            r#"{{"timeUnixNano": "1795255210000000000", "asDouble": {i}.5, "attributes": [{{"key": "user.email", "value": {{"stringValue": "ana@example.com"}}}}]}}"#
        ))
        .collect();
    format!(
        r#"{{"resourceMetrics": [{{"resource": {{"attributes": [{{"key": "service.name", "value": {{"stringValue": "claude-code"}}}}]}},
        "scopeMetrics": [{{"metrics": [{{"name": "claude_code.cost.usage", "unit": "USD",
        "sum": {{"aggregationTemporality": 1, "isMonotonic": true, "dataPoints": [{}]}}}}]}}]}}]}}"#,
        dps.join(",")
    )
    .into_bytes()
}

/// A GET that reports failure instead of panicking (for polling a server that may not listen yet).
pub async fn try_get(url: &str) -> Option<u16> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client =
        Client::builder(TokioExecutor::new()).build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri = url.parse().ok()?;
    match tokio::time::timeout(Duration::from_millis(500), client.get(uri)).await {
        Ok(Ok(r)) => Some(r.status().as_u16()),
        _ => None,
    }
}

/// Polls `url` until it answers 200, for at most 20 s.
pub async fn wait_healthy(url: &str) {
    let started = std::time::Instant::now();
    while try_get(url).await != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{url} healthy within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A collector process that is killed if the test ends early (a panic), so
/// no process outlives its test.
pub struct Collector(pub Option<std::process::Child>);

impl Collector {
    /// Starts the binary with `args` and `envs`; stderr is piped, stdout discarded.
    pub fn spawn(args: &[String], envs: &[(&str, String)]) -> Self {
        Self::spawn_limited(args, envs, None)
    }

    /// As [`Collector::spawn`], and with `max_file_bytes` no file the
    /// process writes can grow past that size (the soft `RLIMIT_FSIZE`,
    /// SIGXFSZ ignored: a write past it fails with `EFBIG`, as on a full
    /// disk; raising it with `prlimit` gives the disk room again).
    pub fn spawn_limited(
        args: &[String],
        envs: &[(&str, String)],
        max_file_bytes: Option<u64>,
    ) -> Self {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_otelcol-multitudes"));
        if let Some(max) = max_file_bytes {
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    // Only the soft limit: the test may raise it again
                    // (prlimit) to give the "disk" room.
                    let mut limit = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    limit.rlim_cur = (max as libc::rlim_t).min(limit.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .args(args)
            .env("DATA_DIR", scratch_data_dir())
            .env("OTELCOL_STORAGE_DIR", scratch_storage_dir())
            .env_remove("MULTITUDES_INTEGRATION_ENDPOINT")
            .env_remove("MULTITUDES_INTEGRATION_TOKEN")
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the collector binary starts");
        Self(Some(child))
    }

    /// `kill -9`: no shutdown, no flush. Returns the log lines written so far.
    pub fn kill9(mut self) -> Vec<String> {
        use std::io::{BufRead, BufReader};
        let mut child = self.0.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect();
        let _ = child.wait();
        lines
    }

    /// Sends SIGTERM, collects stderr until exit, and returns (success, log lines).
    pub fn stop(mut self) -> (bool, Vec<String>) {
        use std::io::{BufRead, BufReader};
        let mut child = self.0.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let stderr = child.stderr.take().expect("piped stderr");
        let lines: Vec<String> = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect();
        let ok = child.wait().map(|s| s.success()).unwrap_or(false);
        (ok, lines)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where the embedded default's `file` exporter writes during tests (not
/// ./data in the source tree); a test that reads it sets its own DATA_DIR.
pub fn scratch_data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("otelcol-test-data-{}", std::process::id()))
}

/// A storage directory of its own for each collector a test starts (the
/// production config keeps its sending queue under `OTELCOL_STORAGE_DIR`,
/// and two collectors on one directory refuse to share it).
pub fn scratch_storage_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "otelcol-test-storage-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Installs rustls' ring provider as the process default: reqwest (used by
/// the SDK's HTTP exporters) is built without a provider of its own in this
/// workspace, as in the collector.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The loopback ports a production-config collector listens on.
pub struct ProductionPorts {
    pub grpc: u16,
    pub http: u16,
    pub health: u16,
    pub zpages: u16,
}

/// A program from the test virtualenv (`.ci/venv`, or `$OTELCOL_TEST_VENV`).
pub fn venv_tool(name: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("OTELCOL_TEST_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/venv"));
    let path = venv.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask test-tools` (or .ci/run) installs it",
        path.display()
    );
    path
}

/// The binary with the production config (`configs/otel-collector-config.yaml`)
/// on free loopback ports, sending to `endpoint` with `fallback_token`;
/// `extra_sets` are further `--set`s, `envs` further variables. Returns once
/// it reports healthy.
pub async fn spawn_production(
    endpoint: &str,
    fallback_token: &str,
    extra_sets: &[&str],
    envs: &[(&str, String)],
) -> (Collector, ProductionPorts) {
    spawn_production_limited(endpoint, fallback_token, extra_sets, envs, None).await
}

/// [`spawn_production`] with `configs/forward-events.yaml` merged in, so the
/// tools' events are forwarded to `/v1/logs` as well as made into totals.
pub async fn spawn_production_forwarding_events(
    endpoint: &str,
    fallback_token: &str,
    extra_sets: &[&str],
    envs: &[(&str, String)],
) -> (Collector, ProductionPorts) {
    spawn_production_with(
        &["forward-events.yaml"],
        endpoint,
        fallback_token,
        extra_sets,
        envs,
        None,
    )
    .await
}

/// [`spawn_production`] with the file size limit of [`Collector::spawn_limited`].
pub async fn spawn_production_limited(
    endpoint: &str,
    fallback_token: &str,
    extra_sets: &[&str],
    envs: &[(&str, String)],
    max_file_bytes: Option<u64>,
) -> (Collector, ProductionPorts) {
    spawn_production_with(
        &[],
        endpoint,
        fallback_token,
        extra_sets,
        envs,
        max_file_bytes,
    )
    .await
}

/// The production config plus `overlays` (file names under `configs/`).
async fn spawn_production_with(
    overlays: &[&str],
    endpoint: &str,
    fallback_token: &str,
    extra_sets: &[&str],
    envs: &[(&str, String)],
    max_file_bytes: Option<u64>,
) -> (Collector, ProductionPorts) {
    let ports = ProductionPorts {
        grpc: free_port(),
        http: free_port(),
        health: free_port(),
        zpages: free_port(),
    };
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/otel-collector-config.yaml");
    let mut sets = vec![
        format!(
            "receivers.otlp.protocols.grpc.endpoint=127.0.0.1:{}",
            ports.grpc
        ),
        format!(
            "receivers.otlp.protocols.http.endpoint=127.0.0.1:{}",
            ports.http
        ),
        format!(
            "extensions.healthcheckv2.http.endpoint=127.0.0.1:{}",
            ports.health
        ),
        format!(
            "extensions.healthcheckv2.grpc.endpoint=127.0.0.1:{}",
            free_port()
        ),
        format!("extensions.zpages.endpoint=127.0.0.1:{}", ports.zpages),
        format!("extensions.pprof.endpoint=127.0.0.1:{}", free_port()),
        format!(
            "service.telemetry.metrics.address=127.0.0.1:{}",
            free_port()
        ),
    ];
    sets.extend(extra_sets.iter().map(|s| s.to_string()));
    let mut args = vec!["--config".to_string(), config.display().to_string()];
    for o in overlays {
        let overlay = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs")
            .join(o);
        args.push("--config".into());
        args.push(overlay.display().to_string());
    }
    for s in sets {
        args.push("--set".into());
        args.push(s);
    }
    let mut all_envs = vec![
        ("MULTITUDES_INTEGRATION_ENDPOINT", endpoint.to_string()),
        ("MULTITUDES_INTEGRATION_TOKEN", fallback_token.to_string()),
    ];
    all_envs.extend(envs.iter().cloned());
    let collector = Collector::spawn_limited(&args, &all_envs, max_file_bytes);
    wait_healthy(&format!("http://127.0.0.1:{}/", ports.health)).await;
    (collector, ports)
}

/// Resource attributes the totals may keep (the aggregation's default
/// `resource_attributes` plus the user key).
pub const ALLOWED_RESOURCE: [&str; 6] = [
    "service.name",
    "service.namespace",
    "service.version",
    "deployment.environment.name",
    "organization.id",
    "user.email",
];

/// The token metrics the AI tools send.
pub const TOKEN_METRICS: [&str; 4] = [
    "claude_code.token.usage",
    "codex.turn.token_usage",
    "gemini_cli.token.usage",
    "gen_ai.client.token.usage",
];

/// The token totals in one Multitudes request body (strict OTLP/JSON):
/// (user, metric, token type, tokens) per point of a [`TOKEN_METRICS`]
/// metric, a sum's value or a histogram's sum. Fails the test if a
/// resource keeps an attribute beyond [`ALLOWED_RESOURCE`], a total is not
/// a double, or a point lacks its user or token type.
pub fn token_points(body: &[u8]) -> Vec<(String, String, String, f64)> {
    token_points_of(body, &TOKEN_METRICS)
}

/// [`token_points`] of the metrics named in `names`.
pub fn token_points_of(body: &[u8], names: &[&str]) -> Vec<(String, String, String, f64)> {
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
    use otelcol_core::pdata::proto::common::v1::KeyValue;
    let attr = |list: &[KeyValue], key: &str| {
        list.iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(otelcol_core::pdata::as_str)
            .map(str::to_string)
    };
    let m: Metrics = serde_json::from_slice(body).expect("strict OTLP/JSON");
    let mut out = Vec::new();
    for rm in &m.resource_metrics {
        for kv in &rm.resource.as_ref().expect("a resource").attributes {
            assert!(
                ALLOWED_RESOURCE.contains(&kv.key.as_str()),
                "resource attribute {} left",
                kv.key
            );
        }
        for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let name = metric.name.as_str();
            if !names.contains(&name) {
                continue;
            }
            let point = |a: &[KeyValue], v: f64| {
                let ty = ["type", "token_type", "gen_ai.token.type"]
                    .iter()
                    .find_map(|k| attr(a, k))
                    .unwrap_or_else(|| panic!("{name}: a point without a token type"));
                let user = attr(a, "user.email").expect("the user key on every total");
                (user, name.to_string(), ty, v)
            };
            match &metric.data {
                Some(Data::Sum(s)) => out.extend(s.data_points.iter().map(|p| {
                    let Some(Value::AsDouble(v)) = p.value else {
                        panic!("{name}: totals are doubles")
                    };
                    point(&p.attributes, v)
                })),
                Some(Data::Histogram(h)) => out.extend(h.data_points.iter().map(|p| {
                    point(
                        &p.attributes,
                        p.sum.expect("a histogram total keeps its sum"),
                    )
                })),
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
    }
    out
}
