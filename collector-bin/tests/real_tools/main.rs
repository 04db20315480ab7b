//! The real AI tools, end to end: Claude Code, Codex and Gemini CLI (the npm
//! packages pinned in `.ci/ai-tools`, installed by these tests with `npm ci`
//! and cached there) run headless as several users against a fake model API
//! on 127.0.0.1, sending their telemetry over every protocol each supports,
//! in delta and in cumulative temporality, to the binary running the
//! production config (ports moved); a loopback server plays Multitudes.
//!
//! Checked per user: every token total at the endpoint equals the usage the
//! fake model served; the totals went out under the caller's own token (or
//! the fallback token for a tool that sends none); the totals' resource
//! keeps only allow-listed attributes (Gemini puts the prompt and session
//! id there). Nothing leaves 127.0.0.1: the tools' proxies point at a
//! loopback port that drops every connection.

#[path = "../common/mod.rs"]
mod common;
mod fake_model;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fake_model::{FakeModel, Totals};
use http_body_util::BodyExt;
use otelcol_core::server::{self, ServerHandle, ServerOptions};

/// The metrics requests the fake Multitudes endpoint received: their
/// `Authorization` header and body.
type Received = Arc<Mutex<Vec<(Option<String>, bytes::Bytes)>>>;

const FALLBACK_TOKEN: &str = "fallback-token-tools-0001";

/// How long one tool run may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// `.ci/ai-tools/node_modules/.bin`, installed from the lock file on first
/// use (`npm ci`); a failed install fails the tests with the reason.
fn tools_bin() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(install_tools) {
        Ok(bin) => bin,
        Err(e) => panic!("{e}"),
    }
}

fn install_tools() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/ai-tools");
    let lock = std::fs::read_to_string(dir.join("package-lock.json"))
        .map_err(|e| format!("reading {}/package-lock.json: {e}", dir.display()))?;
    let bin = dir.join("node_modules/.bin");
    let stamp = dir.join("node_modules/.installed-lock");
    let installed = ["claude", "codex", "gemini"]
        .iter()
        .all(|t| bin.join(t).exists());
    if installed && std::fs::read_to_string(&stamp).ok().as_deref() == Some(lock.as_str()) {
        return Ok(bin);
    }
    eprintln!("installing the AI tools of .ci/ai-tools with npm ci (cached afterwards)");
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .output()
        .map_err(|e| {
            format!("the real-tools tests need npm (Node.js 20+) to install .ci/ai-tools: {e}")
        })?;
    if !out.status.success() {
        return Err(format!(
            "npm ci in .ci/ai-tools failed ({}); the real-tools tests need access to \
             registry.npmjs.org the first time:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(&stamp, lock).map_err(|e| format!("writing {}: {e}", stamp.display()))?;
    Ok(bin)
}

/// One simulated user: an email, a fresh home and working directory.
struct User {
    email: String,
    home: PathBuf,
    work: PathBuf,
}

/// The fake model, the fake Multitudes endpoint, the refusing proxy and
/// the collector between them.
struct Harness {
    model: FakeModel,
    received: Received,
    endpoint: ServerHandle,
    proxy: u16,
    proxy_connections: Arc<AtomicU64>,
    collector: common::Collector,
    ports: common::ProductionPorts,
    scratch: PathBuf,
    runs: BTreeMap<String, u64>,
}

impl Harness {
    async fn start(tool: &str) -> Self {
        common::init_crypto();
        let _ = tools_bin();
        let model = FakeModel::start().await;
        let received: Received = Arc::default();
        let sink = received.clone();
        let listener = server::bind("127.0.0.1:0").await.unwrap();
        let endpoint = server::serve(listener, ServerOptions::default(), move |req, _| {
            let sink = sink.clone();
            async move {
                let metrics = req.uri().path() == "/ai/otel/v1/metrics";
                let auth = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = req.into_body().collect().await.unwrap().to_bytes();
                if metrics {
                    sink.lock().unwrap().push((auth, body));
                }
                server::response(hyper::StatusCode::OK, "application/json", "{}")
            }
        });
        let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = proxy_listener.local_addr().unwrap().port();
        let proxy_connections = Arc::new(AtomicU64::new(0));
        let counted = proxy_connections.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = proxy_listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                drop(conn);
            }
        });
        let url = format!("http://127.0.0.1:{}/ai/otel", endpoint.local_addr().port());
        let (collector, ports) = common::spawn_production(&url, FALLBACK_TOKEN, &[], &[]).await;
        let scratch =
            std::env::temp_dir().join(format!("otelcol-real-{tool}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        Self {
            model,
            received,
            endpoint,
            proxy,
            proxy_connections,
            collector,
            ports,
            scratch,
            runs: BTreeMap::new(),
        }
    }

    fn user(&self, name: &str) -> User {
        let email = format!("{name}@example.com");
        let home = self.scratch.join(&email).join("home");
        let work = self.scratch.join(&email).join("work");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        User { email, home, work }
    }

    /// The variables every tool run gets: its home, the refusing proxy,
    /// the user on the resource, the temporality.
    fn base_env(&self, user: &User, temporality: &str) -> Vec<(String, String)> {
        let proxy = format!("http://127.0.0.1:{}", self.proxy);
        [
            ("HOME", user.home.display().to_string()),
            ("HTTPS_PROXY", proxy.clone()),
            ("HTTP_PROXY", proxy.clone()),
            ("https_proxy", proxy.clone()),
            ("http_proxy", proxy),
            ("NO_PROXY", "127.0.0.1,localhost".into()),
            ("no_proxy", "127.0.0.1,localhost".into()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                format!("user.email={}", user.email),
            ),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                temporality.into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Runs `tool` with `args` as `user`, to completion (bounded).
    async fn run(&mut self, user: &User, tool: &str, args: &[&str], env: Vec<(String, String)>) {
        *self.runs.entry(user.email.clone()).or_insert(0) += 1;
        let program = tools_bin().join(tool);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let work = user.work.clone();
        let log = user
            .home
            .join(format!("{tool}-{}.log", self.runs[&user.email]));
        tokio::task::spawn_blocking(move || run_to_end(&program, &args, &env, &work, &log))
            .await
            .unwrap();
    }

    async fn claude(&mut self, user: &User, protocol: &str, temporality: &str) {
        let endpoint = match protocol {
            "grpc" => format!("http://127.0.0.1:{}", self.ports.grpc),
            _ => format!("http://127.0.0.1:{}", self.ports.http),
        };
        let mut env = self.base_env(user, temporality);
        env.extend(
            [
                ("ANTHROPIC_BASE_URL", self.model.base_url()),
                ("ANTHROPIC_API_KEY", format!("key-{}", user.email)),
                ("CLAUDE_CODE_ENABLE_TELEMETRY", "1".into()),
                ("OTEL_METRICS_EXPORTER", "otlp".into()),
                ("OTEL_LOGS_EXPORTER", "otlp".into()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.into()),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    format!("Authorization=Bearer {}", token_of(&user.email)),
                ),
                ("OTEL_METRIC_EXPORT_INTERVAL", "1000".into()),
                ("OTEL_LOGS_EXPORT_INTERVAL", "500".into()),
                ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
                ("DISABLE_AUTOUPDATER", "1".into()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        self.run(user, "claude", &["-p", "say hi"], env).await;
    }

    async fn codex(&mut self, user: &User, protocol: &str, temporality: &str) {
        let exporter = |signal: &str| {
            match protocol {
            "grpc" => format!(
                "{{ otlp-grpc = {{ endpoint = \"http://127.0.0.1:{}\" }} }}",
                self.ports.grpc
            ),
            encoding => format!(
                "{{ otlp-http = {{ endpoint = \"http://127.0.0.1:{}/v1/{signal}\", protocol = \"{encoding}\" }} }}",
                self.ports.http
            ),
        }
        };
        let codex_home = user.home.join(".codex");
        std::fs::create_dir_all(&codex_home).unwrap();
        let config = format!(
            r#"model = "gpt-5"
model_provider = "fake"
approval_policy = "never"
sandbox_mode = "read-only"
check_for_update_on_startup = false

[model_providers.fake]
name = "fake"
base_url = "{}/v1"
wire_api = "responses"
env_key = "FAKE_API_KEY"
request_max_retries = 0
stream_max_retries = 0

[features]
plugins = false
remote_plugin = false
plugin_sharing = false
apps = false
in_app_updates = false
tool_suggest = false

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = {}
metrics_exporter = {}
trace_exporter = {}
"#,
            self.model.base_url(),
            exporter("logs"),
            exporter("metrics"),
            exporter("traces"),
        );
        std::fs::write(codex_home.join("config.toml"), config).unwrap();
        let mut env = self.base_env(user, temporality);
        env.push(("CODEX_HOME".into(), codex_home.display().to_string()));
        env.push(("FAKE_API_KEY".into(), format!("key-{}", user.email)));
        let args = [
            "exec",
            "--skip-git-repo-check",
            "--ephemeral",
            "--color",
            "never",
            "say hi",
        ];
        self.run(user, "codex", &args, env).await;
    }

    async fn gemini(&mut self, user: &User, protocol: &str, temporality: &str) {
        let endpoint = match protocol {
            "grpc" => format!("http://127.0.0.1:{}", self.ports.grpc),
            _ => format!("http://127.0.0.1:{}", self.ports.http),
        };
        let settings = serde_json::json!({
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false,
                "disableAutoUpdate": true, "disableUpdateNag": true},
            "privacy": {"usageStatisticsEnabled": false},
            "telemetry": {"enabled": true, "target": "local", "otlpEndpoint": endpoint,
                "otlpProtocol": protocol},
        });
        let dir = user.home.join(".gemini");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("settings.json"), settings.to_string()).unwrap();
        let mut env = self.base_env(user, temporality);
        env.extend(
            [
                ("GEMINI_API_KEY", format!("key-{}", user.email)),
                ("GOOGLE_GEMINI_BASE_URL", self.model.base_url()),
                ("GEMINI_CLI_TRUST_WORKSPACE", "true".into()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        self.run(user, "gemini", &["-p", "say hi"], env).await;
    }

    /// Stops the collector (which flushes every open window), then checks
    /// the endpoint's per-user token totals against the ledger, every
    /// user's token, and the resource allow-list.
    async fn finish(self, calls_per_run: u64, expected_token: impl Fn(&str) -> String) {
        let (ok, log) = self.collector.stop();
        assert!(ok, "clean exit: {log:?}");
        self.endpoint.shutdown().await;
        let unexpected = self.model.ledger.unexpected.lock().unwrap().clone();
        assert!(
            unexpected.is_empty(),
            "the fake model was asked: {unexpected:?}"
        );
        let calls = self.model.ledger.calls.lock().unwrap().clone();
        let expected_calls: BTreeMap<String, u64> = self
            .runs
            .iter()
            .map(|(u, runs)| (u.clone(), runs * calls_per_run))
            .collect();
        assert_eq!(calls, expected_calls, "model calls per user");

        let mut totals = Totals::new();
        let mut tokens: BTreeMap<String, BTreeSet<Option<String>>> = BTreeMap::new();
        for (auth, body) in self.received.lock().unwrap().iter() {
            for (user, metric, ty, v) in common::token_points(body) {
                tokens.entry(user.clone()).or_default().insert(auth.clone());
                *totals.entry((user, metric, ty)).or_insert(0.0) += v;
            }
        }
        let served = self.model.ledger.served.lock().unwrap().clone();
        assert_eq!(totals, served, "per-user token totals at the endpoint");

        // The same usage from the tools' events alone (the signaltometrics
        // connector's rule sets), under each tool's own metric's name.
        const EVENTS: [(&str, &str); 3] = [
            ("claude_code.events.token.usage", "claude_code.token.usage"),
            ("codex.events.token.usage", "codex.turn.token_usage"),
            ("gemini_cli.events.token.usage", "gemini_cli.token.usage"),
        ];
        let names = EVENTS.map(|(event, _)| event);
        let mut from_events = Totals::new();
        for (_, body) in self.received.lock().unwrap().iter() {
            for (user, metric, ty, v) in common::token_points_of(body, &names) {
                let tool = EVENTS.iter().find(|(e, _)| *e == metric).map(|(_, t)| *t);
                let key = (user, tool.unwrap_or_default().to_string(), ty);
                *from_events.entry(key).or_insert(0.0) += v;
            }
        }
        let served_with_events: Totals = served
            .into_iter()
            .filter(|((_, metric, _), _)| EVENTS.iter().any(|(_, t)| t == metric))
            .collect();
        assert_eq!(
            from_events, served_with_events,
            "per-user token totals made from the tools' events"
        );
        for (user, seen) in tokens {
            let want = BTreeSet::from([Some(format!("Bearer {}", expected_token(&user)))]);
            assert_eq!(seen, want, "the token {user}'s totals went out under");
        }
        eprintln!(
            "{} users, {} runs; the refusing proxy saw {} connection attempts",
            self.runs.len(),
            self.runs.values().sum::<u64>(),
            self.proxy_connections.load(Ordering::Relaxed)
        );
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The token a user's tool sends when it sends one.
fn token_of(email: &str) -> String {
    format!("tok-{email}")
}

/// Runs `program` to its end within [`RUN_LIMIT`], its output in `log`;
/// fails the test (with the output) on a timeout or a failed exit.
fn run_to_end(program: &Path, args: &[String], env: &[(String, String)], work: &Path, log: &Path) {
    let out = std::fs::File::create(log).unwrap();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(work)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "dumb")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} did not finish within {RUN_LIMIT:?}:\n{}",
                program.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "{} {args:?} exited with {status}:\n{}",
        program.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_totals_per_user_equal_the_usage_served_over_every_protocol() {
    let mut h = Harness::start("claude").await;
    for protocol in ["grpc", "http/protobuf", "http/json"] {
        for temporality in ["delta", "cumulative"] {
            for name in ["ana", "ben"] {
                let tag = protocol.replace('/', "-");
                let user = h.user(&format!("{name}.claude.{tag}.{temporality}"));
                for _ in 0..2 {
                    h.claude(&user, protocol, temporality).await;
                }
            }
        }
    }
    // One model call per prompt; the caller's token travels through.
    h.finish(1, token_of).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_totals_per_user_equal_the_usage_served_over_every_protocol() {
    let mut h = Harness::start("codex").await;
    for protocol in ["grpc", "binary", "json"] {
        for temporality in ["delta", "cumulative"] {
            for name in ["ana", "ben"] {
                let user = h.user(&format!("{name}.codex.{protocol}.{temporality}"));
                for _ in 0..2 {
                    h.codex(&user, protocol, temporality).await;
                }
            }
        }
    }
    // One model call per prompt; Codex sends no token of its own here.
    h.finish(1, |_| FALLBACK_TOKEN.to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_totals_per_user_equal_the_usage_served_over_every_protocol() {
    let mut h = Harness::start("gemini").await;
    for protocol in ["grpc", "http"] {
        for temporality in ["cumulative", "delta"] {
            for name in ["ana", "ben"] {
                let user = h.user(&format!("{name}.gemini.{protocol}.{temporality}"));
                for _ in 0..2 {
                    h.gemini(&user, protocol, temporality).await;
                }
            }
        }
    }
    // Two model calls per prompt (the router, then the main model).
    h.finish(2, |_| FALLBACK_TOKEN.to_string()).await;
}
