//! `cargo xtask dist`: a reduced manifest builds a smaller binary whose
//! `components` lists only its crates, and a manifest with a component crate
//! of your own (examples/custom-processor) builds a binary that runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn build(name: &str, crates: &str) -> PathBuf {
    let dir = root().join("target/dist-test");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join(format!("{name}.yaml"));
    let yaml = format!(
        "dist:\n  name: {name}\n  description: test distribution\n  version: 9.9.9\n  output_path: {}\n{crates}",
        dir.join(name).display()
    );
    std::fs::write(&manifest, yaml).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root())
        .args([
            "xtask",
            "dist",
            "--manifest",
            manifest.to_str().unwrap(),
            "--debug",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "cargo xtask dist failed for {name}");
    dir.join(name).join(name)
}

fn components(bin: &Path) -> serde_json::Value {
    let out = Command::new(bin).arg("components").output().unwrap();
    assert!(out.status.success());
    serde_yaml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

fn names(doc: &serde_json::Value, kind: &str) -> Vec<String> {
    doc[kind]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduced_and_custom_distributions() {
    let lite = build(
        "otelcol-lite-test",
        "receivers: [{crate: otelcol-receiver-otlp}]\nprocessors: [{crate: otelcol-processor-aggregation}]\nexporters: [{crate: otelcol-exporter-multitudes}]\nextensions: [{crate: otelcol-extension-health}]\n",
    );
    let doc = components(&lite);
    assert_eq!(doc["buildinfo"]["command"], "otelcol-lite-test");
    assert_eq!(doc["buildinfo"]["version"], "9.9.9");
    assert_eq!(names(&doc, "receivers"), vec!["otlp"]);
    assert_eq!(names(&doc, "processors"), vec!["aggregation"]);
    assert_eq!(names(&doc, "exporters"), vec!["multitudes"]);
    assert_eq!(
        names(&doc, "extensions"),
        vec!["health_check", "healthcheckv2"]
    );
    let full = std::fs::metadata(env!("CARGO_BIN_EXE_otelcol-multitudes"))
        .unwrap()
        .len();
    let small = std::fs::metadata(&lite).unwrap().len();
    assert!(
        small < full,
        "the reduced binary is smaller: {small} vs {full} bytes"
    );

    let example = root().join("examples/custom-processor");
    let custom = build(
        "otelcol-custom-test",
        &format!(
            "receivers: [{{crate: otelcol-receiver-otlp}}]\nprocessors: [{{crate: otelcol-example-team-tag, path: {}}}]\nexporters: [{{crate: otelcol-exporter-debug}}]\n",
            example.display()
        ),
    );
    assert_eq!(names(&components(&custom), "processors"), vec!["team_tag"]);
    let http = common::free_port();
    let config = root().join("target/dist-test/custom.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers: {{otlp: {{protocols: {{http: {{endpoint: '127.0.0.1:{http}'}}}}}}}}\nprocessors: {{team_tag: {{team: platform}}}}\nexporters: {{debug: {{verbosity: detailed}}}}\nservice:\n  telemetry: {{metrics: {{level: none}}}}\n  pipelines: {{metrics: {{receivers: [otlp], processors: [team_tag], exporters: [debug]}}}}\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new(&custom)
        .args(["--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let guard = common::Collector(Some(child));
    let url = format!("http://127.0.0.1:{http}/v1/metrics");
    let started = std::time::Instant::now();
    loop {
        let body = common::claude_metrics_json(1);
        let ok = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            let req = hyper::Request::post(&url)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            client.request(req).await.map(|r| r.status().as_u16())
        })
        .await;
        if let Ok(Ok(200)) = ok {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the custom distribution serves"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (ok, lines) = guard.stop();
    assert!(ok);
    let log = lines.join("\n");
    assert!(
        log.contains(r#"{"key":"team","value":{"stringValue":"platform"}}"#),
        "the custom processor tagged the point: {log}"
    );
}
