//! The container image, without a Docker engine: the Dockerfile's shape is
//! checked, and the binary runs with the image's exact ENTRYPOINT, CMD and
//! HEALTHCHECK arguments (image paths mapped to the repository's files)
//! and the two variables an operator sets.

mod common;

use std::path::Path;

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile")).unwrap()
}

/// The JSON array of the last `KEY [...]` instruction.
fn exec_form(key: &str) -> Vec<String> {
    let text = dockerfile().replace("\\\n", " ");
    let line = text
        .lines()
        .rfind(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key}"));
    let json = &line[line.find('[').unwrap()..];
    serde_json::from_str(json).unwrap()
}

fn map(arg: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match arg {
        "/otelcol-multitudes" => env!("CARGO_BIN_EXE_otelcol-multitudes").to_string(),
        "/etc/otelcol-multitudes/config.yaml" => root
            .join("configs/otel-collector-config.yaml")
            .display()
            .to_string(),
        other => other.to_string(),
    }
}

#[test]
fn the_dockerfile_has_the_promised_shape() {
    let d = dockerfile();
    for needle in [
        "FROM rust:",
        "--mount=type=cache,target=/usr/local/cargo/registry",
        "cargo build --release --locked -p otelcol-multitudes",
        "FROM gcr.io/distroless/cc-debian12:nonroot",
        "COPY VERSION /VERSION",
        "COPY configs/otel-collector-config.yaml /etc/otelcol-multitudes/config.yaml",
        "COPY --from=build --chown=65532:65532 /storage /var/lib/otelcol-multitudes",
        "VOLUME /var/lib/otelcol-multitudes",
        "USER nonroot:nonroot",
        "EXPOSE 4317 4318 13133 55679",
    ] {
        assert!(d.contains(needle), "Dockerfile lacks `{needle}`");
    }
    assert_eq!(exec_form("ENTRYPOINT"), vec!["/otelcol-multitudes"]);
    assert_eq!(
        exec_form("CMD"),
        vec!["--config", "/etc/otelcol-multitudes/config.yaml"]
    );
    let health = exec_form("HEALTHCHECK");
    assert_eq!(health[1], "healthcheck");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_with_the_images_arguments_and_environment() {
    for port in [4317, 4318, 13133, 13132, 55679] {
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_err() {
            eprintln!("port {port} is busy on this machine: the image's own ports cannot be used here; not running");
            return;
        }
    }
    let listener = otelcol_core::server::bind("127.0.0.1:0").await.unwrap();
    let endpoint = otelcol_core::server::serve(listener, Default::default(), |_, _| async {
        otelcol_core::server::response(hyper::StatusCode::OK, "application/json", "{}")
    });
    let args: Vec<String> = exec_form("CMD").iter().map(|a| map(a)).collect();
    let collector = common::Collector::spawn(
        &args,
        &[
            (
                "MULTITUDES_INTEGRATION_ENDPOINT",
                format!("http://{}/ai/otel", endpoint.local_addr()),
            ),
            (
                "MULTITUDES_INTEGRATION_TOKEN",
                "image-test-token".to_string(),
            ),
        ],
    );
    let health: Vec<String> = exec_form("HEALTHCHECK").iter().map(|a| map(a)).collect();
    let started = std::time::Instant::now();
    loop {
        let status = std::process::Command::new(&health[0])
            .args(&health[1..])
            .output()
            .unwrap()
            .status;
        if status.success() {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "healthy within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, _) = common::http(
        "POST",
        "http://127.0.0.1:4318/v1/metrics",
        &[("content-type", "application/json")],
        common::claude_metrics_json(1),
    )
    .await;
    assert_eq!(status, 200);
    let (ok, log) = collector.stop();
    assert!(ok, "{log:?}");
    assert!(log.iter().all(|l| !l.contains("image-test-token")));
}
