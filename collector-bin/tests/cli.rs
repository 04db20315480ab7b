//! The real binary: subcommands, exit codes, config merging from files,
//! `--set`, redaction, and a run on the embedded default with a clean stop
//! on SIGTERM.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_otelcol-multitudes");

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("DATA_DIR", common::scratch_data_dir())
        .env_remove("MULTITUDES_INTEGRATION_ENDPOINT")
        .env_remove("MULTITUDES_INTEGRATION_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "otelcol-cli-{}-{}",
        std::process::id(),
        common::free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn version_prints_the_version_file() {
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!(
            "otelcol-multitudes {}",
            include_str!("../../VERSION").trim()
        )
    );
}

#[test]
fn components_lists_this_build() {
    let (code, out, _) = run(&["components"], &[]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_yaml::from_str(&out).unwrap();
    let names = |kind: &str| -> Vec<String> {
        doc[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("receivers"), vec!["otlp"]);
    assert_eq!(
        names("processors"),
        vec![
            "aggregation",
            "attributes",
            "batch",
            "memory_limiter",
            "redaction",
            "resource",
            "transform"
        ]
    );
    assert_eq!(names("connectors"), vec!["signaltometrics"]);
    assert_eq!(
        names("exporters"),
        vec![
            "awss3",
            "debug",
            "file",
            "googlecloudstorage",
            "loadbalancing",
            "multitudes",
            "otlp",
            "otlphttp"
        ]
    );
    assert_eq!(
        names("extensions"),
        vec![
            "bearertokenauth",
            "file_storage",
            "headers_setter",
            "health_check",
            "healthcheckv2",
            "multitudes_auth",
            "otlp_encoding",
            "pprof",
            "zpages"
        ]
    );
    assert_eq!(
        doc["buildinfo"]["version"],
        include_str!("../../VERSION").trim()
    );
    assert_eq!(doc["receivers"][0]["stability"], "beta");
}

#[test]
fn validate_reports_errors_and_merges_files_and_sets() {
    let dir = tempdir();
    let base = write(
        &dir,
        "base.yaml",
        "receivers:\n  otlp:\n    protocols:\n      http:\nexporters:\n  debug:\nservice:\n  pipelines:\n    metrics:\n      receivers: [otlp]\n      exporters: [debug]\n",
    );
    let (code, out, _) = run(&["validate", "--config", &base], &[]);
    assert_eq!((code, out.trim()), (0, "configuration is valid"));

    let bad = write(
        &dir,
        "bad.yaml",
        "exporters:\n  debug:\n    verbosty: detailed\n",
    );
    let (code, _, err) = run(&["validate", "--config", &base, "--config", &bad], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "Error: invalid configuration: exporters.debug: unknown field `verbosty`, expected one of `verbosity`, `sampling_initial`, `sampling_thereafter`, `use_internal_logger`"
    );

    let (code, _, err) = run(
        &[
            "validate",
            "--config",
            &base,
            "--set",
            "service.pipelines.metrics.exporters=[debug/nope]",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "Error: invalid configuration: service.pipelines.metrics: references exporter `debug/nope`, which is not configured under exporters or connectors"
    );

    let (code, _, err) = run(&["validate", "--config", "/nonexistent/x.yaml"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "Error: invalid configuration: /nonexistent/x.yaml: cannot read the config file:"
        ),
        "{err}"
    );

    let (code, _, err) = run(
        &[
            "validate",
            "--config",
            &write(&dir, "y.yaml", "receivers: [unclosed\n"),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("y.yaml: not a valid YAML map"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 14: `print-config` printed an endpoint's password and query values.
#[test]
fn print_config_redacts_secrets_inside_urls() {
    let dir = tempdir();
    let a = write(
        &dir,
        "a.yaml",
        "exporters:\n  multitudes:\n    endpoint: https://ana:pw-secret-7@ingest.example.com/ai?api_key=KEY-SECRET-8&region=eu\n",
    );
    let (code, out, err) = run(&["print-config", "--config", &a], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("pw-secret-7") && !out.contains("KEY-SECRET-8"),
        "{out}"
    );
    let doc: serde_json::Value = serde_yaml::from_str(&out).unwrap();
    assert_eq!(
        doc["exporters"]["multitudes"]["endpoint"],
        "https://ana:***@ingest.example.com/ai?api_key=***&region=***"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn print_config_merges_expands_and_redacts() {
    let dir = tempdir();
    let a = write(
        &dir,
        "a.yaml",
        "exporters:\n  otlphttp:\n    endpoint: ${env:MT_ENDPOINT}\n    fallback_token: ${env:MT_TOKEN}\n    headers:\n      authorization: Bearer ${env:MT_TOKEN}\n      x-team: core\n",
    );
    let b = write(
        &dir,
        "b.yaml",
        "exporters:\n  otlphttp:\n    timeout: 10s\n",
    );
    let env = [
        ("MT_ENDPOINT", "https://ingest.example.com"),
        ("MT_TOKEN", "super-secret-value"),
    ];
    let (code, out, _) = run(
        &[
            "print-config",
            "--config",
            &a,
            "--config",
            &b,
            "--set",
            "exporters.otlphttp.timeout=20s",
        ],
        &env,
    );
    assert_eq!(code, 0);
    assert!(!out.contains("super-secret-value"), "{out}");
    let doc: serde_json::Value = serde_yaml::from_str(&out).unwrap();
    let e = &doc["exporters"]["otlphttp"];
    assert_eq!(e["endpoint"], "https://ingest.example.com");
    assert_eq!(e["fallback_token"], "[REDACTED]");
    assert_eq!(e["headers"]["authorization"], "[REDACTED]");
    assert_eq!(e["headers"]["x-team"], "core");
    assert_eq!(e["timeout"], "20s");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn logs_can_be_json_and_a_busy_port_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempdir();
    let cfg = write(
        &dir,
        "json.yaml",
        &format!("receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: \"127.0.0.1:{port}\"\nexporters:\n  debug:\nservice:\n  telemetry:\n    logs: {{encoding: json}}\n    metrics: {{level: none}}\n  pipelines:\n    metrics: {{receivers: [otlp], exporters: [debug]}}\n"),
    );
    let (code, _, err) = run(&["--config", &cfg], &[]);
    let _ = std::fs::remove_dir_all(dir);
    drop(taken);
    assert_eq!(code, 1, "{err}");
    let first = err.lines().next().unwrap_or("");
    let line: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["fields"]["message"], "starting otelcol-multitudes");
    assert!(
        err.contains(&format!(
            "Error: cannot start receiver `otlp`: binding 127.0.0.1:{port}: Address already in use"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_the_embedded_default_and_stops_on_sigterm() {
    let (grpc, http, health, metrics) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let collector = common::Collector::spawn(
        &[],
        &[
            ("OTLP_GRPC_ENDPOINT", format!("127.0.0.1:{grpc}")),
            ("OTLP_HTTP_ENDPOINT", format!("127.0.0.1:{http}")),
            ("HEALTH_ENDPOINT", format!("127.0.0.1:{health}")),
            ("METRICS_ENDPOINT", format!("127.0.0.1:{metrics}")),
        ],
    );
    common::wait_healthy(&format!("http://127.0.0.1:{health}/")).await;
    let (status, body) =
        common::http("GET", &format!("http://127.0.0.1:{health}/"), &[], vec![]).await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["status"], "Server available");
    let (status, _) = common::http(
        "GET",
        &format!("http://127.0.0.1:{health}/health"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, 200);

    let (status, body) = common::http(
        "POST",
        &format!("http://127.0.0.1:{http}/v1/metrics"),
        &[("content-type", "application/json")],
        common::claude_metrics_json(3),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let (status, prom) = common::http(
        "GET",
        &format!("http://127.0.0.1:{metrics}/metrics"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        prom.contains(
            "otelcol_receiver_accepted_metric_points_total{receiver=\"otlp\",transport=\"http\"} 3"
        ),
        "{prom}"
    );

    let (ok, lines) = collector.stop();
    let log = lines.join("\n");
    assert!(ok, "clean exit: {log}");
    assert!(log.contains("3 data points received"), "{log}");
    assert!(
        log.contains("running the embedded local default (configs/local.yaml"),
        "the operator is told why the local default runs: {log}"
    );
    assert!(log.contains("signal=\"SIGTERM\""), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
}

#[test]
fn every_shipped_config_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml")
            || path.ends_with("builder-config.yaml")
        {
            continue; // the builder manifest is not a collector config
        }
        let env = [
            (
                "MULTITUDES_INTEGRATION_ENDPOINT",
                "https://integrations.example.com/ai/otel",
            ),
            ("MULTITUDES_INTEGRATION_TOKEN", "tok"),
            ("S3_BUCKET", "my-bucket"),
        ];
        // An overlay validates on top of the config it extends.
        let production = dir.join("otel-collector-config.yaml");
        let mut args = vec!["validate"];
        if path.ends_with("forward-events.yaml") {
            args.extend(["--config", production.to_str().unwrap()]);
        }
        args.extend(["--config", path.to_str().unwrap()]);
        let (code, out, err) = run(&args, &env);
        assert_eq!(
            (code, out.trim()),
            (0, "configuration is valid"),
            "{}: {err}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 3, "configs/ holds the shipped configs");
    let production = dir.join("otel-collector-config.yaml");
    let (code, _, err) = run(&["validate", "--config", production.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("exporters.multitudes.endpoint: is required"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multitudes_debug_logs_points_with_emails_redacted() {
    let (grpc, http, health, metrics) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/aggregation-local.yaml");
    let collector = common::Collector::spawn(
        &["--config".to_string(), config.display().to_string()],
        &[
            ("MULTITUDES_DEBUG", "1".to_string()),
            ("OTLP_GRPC_ENDPOINT", format!("127.0.0.1:{grpc}")),
            ("OTLP_HTTP_ENDPOINT", format!("127.0.0.1:{http}")),
            ("HEALTH_ENDPOINT", format!("127.0.0.1:{health}")),
            ("METRICS_ENDPOINT", format!("127.0.0.1:{metrics}")),
        ],
    );
    let url = format!("http://127.0.0.1:{http}/v1/metrics");
    let started = Instant::now();
    let status = loop {
        let attempt = tokio::time::timeout(Duration::from_secs(2), async {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            let req = hyper::Request::post(&url)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    common::claude_metrics_json(2),
                )))
                .unwrap();
            client.request(req).await.map(|r| r.status().as_u16())
        })
        .await;
        if let Ok(Ok(s)) = attempt {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "listening within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200);
    let anonymous = String::from_utf8(common::claude_metrics_json(1))
        .unwrap()
        .replace("user.email", "user.id");
    let (status, _) = common::http(
        "POST",
        &url,
        &[("content-type", "application/json")],
        anonymous.into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let (ok, lines) = collector.stop();
    let log = lines.join("\n");
    assert!(ok, "clean exit: {log}");
    assert!(log.contains("aggregation: point counted"), "{log}");
    assert!(
        log.contains(r#"dropping data point: required attribute not found {"attribute_key": "user.email", "metric_name": "claude_code.cost.usage"}"#),
        "{log}"
    );
    assert!(
        log.contains("aggregation: emitting a total"),
        "the shutdown flush is logged: {log}"
    );
    assert!(log.contains("an***@example.com"), "{log}");
    let debug_lines: Vec<&str> = log.lines().filter(|l| l.contains("aggregation:")).collect();
    assert!(
        debug_lines.iter().all(|l| !l.contains("ana@example.com")),
        "emails are redacted in debug logs: {debug_lines:?}"
    );
}

#[test]
fn the_two_variables_select_the_production_config() {
    let env = [
        (
            "MULTITUDES_INTEGRATION_ENDPOINT",
            "https://integrations.example.com/ai/otel",
        ),
        ("MULTITUDES_INTEGRATION_TOKEN", "container-token-123456"),
    ];
    let (code, out, _) = run(&["print-config"], &env);
    assert_eq!(code, 0);
    assert!(!out.contains("container-token-123456"), "{out}");
    let doc: serde_json::Value = serde_yaml::from_str(&out).unwrap();
    assert_eq!(
        doc["exporters"]["multitudes"]["endpoint"],
        "https://integrations.example.com/ai/otel"
    );
    assert_eq!(
        doc["exporters"]["multitudes"]["fallback_token"],
        "[REDACTED]"
    );
    assert_eq!(
        doc["processors"]["aggregation"]["aggregation_interval"],
        "5m"
    );
    let (code, _, err) = run(&["validate"], &env);
    assert_eq!(code, 0, "{err}");

    let (code, out, _) = run(&["print-config"], &env[..1]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_yaml::from_str(&out).unwrap();
    assert!(doc["exporters"]["debug"].is_object() || doc["exporters"]["debug"].is_null());
    assert!(
        doc["exporters"].get("multitudes").is_none(),
        "one variable is not enough: {out}"
    );
}
