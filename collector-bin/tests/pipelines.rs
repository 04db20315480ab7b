//! The pipeline graph: fan-in from several receivers, fan-out to several
//! exporters, one receiver instance feeding several pipelines.

mod common;

use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_fan_out_and_a_shared_receiver() {
    let (a, b) = (common::free_port(), common::free_port());
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols: {{http: {{endpoint: "127.0.0.1:{a}"}}}}
  otlp/second:
    protocols: {{http: {{endpoint: "127.0.0.1:{b}"}}}}
exporters:
  capture:
  capture/copy:
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics:
      receivers: [otlp, otlp/second]
      exporters: [capture, capture/copy]
    metrics/audit:
      receivers: [otlp]
      exporters: [capture]
"#
    );
    let captured = Arc::new(common::Captured::default());
    let mut service = otelcol_core::pipeline::Service::start(
        &common::load_yaml(&yaml),
        &common::factories_with_capture(captured.clone()),
        "test",
    )
    .await
    .unwrap();
    let post = |port: u16, points: usize| async move {
        common::http(
            "POST",
            &format!("http://127.0.0.1:{port}/v1/metrics"),
            &[("content-type", "application/json")],
            common::claude_metrics_json(points),
        )
        .await
    };
    assert_eq!(post(b, 2).await.0, 200);
    let counts = |c: &common::Captured| -> Vec<usize> {
        use otelcol_core::pdata::Payload;
        c.metrics
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.data.item_count())
            .collect()
    };
    assert_eq!(
        counts(&captured),
        vec![2, 2],
        "otlp/second feeds one pipeline with two exporters"
    );
    assert_eq!(post(a, 3).await.0, 200);
    assert_eq!(
        counts(&captured),
        vec![2, 2, 3, 3, 3],
        "otlp feeds both pipelines: two exporters in one, one in the other"
    );
    let snapshot = service.status().snapshot();
    let receiver = snapshot
        .iter()
        .find(|c| c.id.to_string() == "otlp")
        .unwrap();
    assert_eq!(
        receiver.pipelines,
        vec!["pipeline:metrics", "pipeline:metrics/audit"]
    );
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limiter_over_its_limit_makes_the_receiver_answer_503_with_retry_after() {
    let port = common::free_port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols: {{http: {{endpoint: "127.0.0.1:{port}"}}}}
processors:
  memory_limiter: {{check_interval: 1s, limit_mib: 2, spike_limit_mib: 1}}
  batch:
exporters:
  capture:
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics: {{receivers: [otlp], processors: [memory_limiter, batch], exporters: [capture]}}
"#
    );
    let captured = Arc::new(common::Captured::default());
    let mut service = otelcol_core::pipeline::Service::start(
        &common::load_yaml(&yaml),
        &common::factories_with_capture(captured.clone()),
        "test",
    )
    .await
    .unwrap();
    let (status, body) = common::http(
        "POST",
        &format!("http://127.0.0.1:{port}/v1/metrics"),
        &[("content-type", "application/json")],
        common::claude_metrics_json(2),
    )
    .await;
    assert_eq!(status, 503, "any process is above 1 MiB resident: {body}");
    assert_eq!(
        body,
        r#"{"code":14,"message":"data refused due to high memory usage (retryable)"}"#
    );
    service.shutdown().await;
    assert!(captured.metrics.lock().unwrap().is_empty());
}
