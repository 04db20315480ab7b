//! Shutdown drains in-flight requests after health has turned 503; the
//! healthcheckv2 extension reports component status over HTTP and gRPC.

mod common;

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_and_health_turns_503_first() {
    let (mut service, captured, ports) = common::start_capture_service("").await;
    *captured.delay.lock().unwrap() = Duration::from_millis(1500);
    let url = format!("http://127.0.0.1:{}/v1/metrics", ports.http);
    let in_flight = tokio::spawn(async move {
        common::http(
            "POST",
            &url,
            &[("content-type", "application/json")],
            common::claude_metrics_json(2),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = format!("http://127.0.0.1:{}/", ports.health);
    assert_eq!(common::http("GET", &health, &[], vec![]).await.0, 200);

    let shutdown = tokio::spawn(async move {
        service.shutdown().await;
        service
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = common::http("GET", &health, &[], vec![]).await;
    assert_eq!(status, 503, "health answers 503 as soon as shutdown begins");
    assert!(body.contains("Server not available"), "{body}");
    assert!(
        !in_flight.is_finished(),
        "the request is still being processed"
    );

    let (status, body) = in_flight.await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "{}"),
        "the in-flight request completed"
    );
    let service = shutdown.await.unwrap();
    assert_eq!(captured.metrics.lock().unwrap().len(), 1);
    assert_eq!(
        service.status().state(),
        otelcol_core::status::CollectorState::Stopped
    );
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(("127.0.0.1", ports.http)),
    )
    .await
    .expect("connect answers");
    assert!(refused.is_err(), "the receiver no longer listens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheckv2_reports_components_over_http_and_grpc() {
    // The Go distribution's own config sets `http.status.include_attributes`.
    let (http_port, grpc_port, health, health_grpc) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let yaml = format!(
        r#"
extensions:
  healthcheckv2:
    use_v2: true
    component_health:
      include_permanent_errors: false
      include_recoverable_errors: true
      recovery_duration: 5m
    http:
      endpoint: "127.0.0.1:{health}"
      status:
        enabled: true
        path: "/"
        include_attributes: true
    grpc:
      endpoint: "127.0.0.1:{health_grpc}"
      transport: tcp
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}
      http: {{endpoint: "127.0.0.1:{http_port}"}}
exporters:
  capture:
service:
  extensions: [healthcheckv2]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics: {{receivers: [otlp], exporters: [capture]}}
"#
    );
    let captured = std::sync::Arc::new(common::Captured::default());
    let mut service = otelcol_core::pipeline::Service::start(
        &common::load_yaml(&yaml),
        &common::factories_with_capture(captured),
        "test",
    )
    .await
    .unwrap();

    let (status, body) =
        common::http("GET", &format!("http://127.0.0.1:{health}/"), &[], vec![]).await;
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["healthy"], true);
    assert_eq!(doc["status"], "StatusOK");
    let pipeline = &doc["components"]["pipeline:metrics"];
    assert_eq!(
        pipeline["components"]["receiver:otlp"]["status"],
        "StatusOK"
    );
    assert_eq!(
        pipeline["components"]["exporter:capture"]["status"],
        "StatusOK"
    );
    assert_eq!(
        doc["components"]["extensions"]["components"]["extension:healthcheckv2"]["status"],
        "StatusOK"
    );
    let (status, _) = common::http(
        "GET",
        &format!("http://127.0.0.1:{health}/?pipeline=metrics"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = common::http(
        "GET",
        &format!("http://127.0.0.1:{health}/health"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, 200);

    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{health_grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let mut serving = None;
    for _ in 0..50 {
        let r = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if let Ok(r) = r {
            serving = Some(r.into_inner().status);
            if serving == Some(ServingStatus::Serving as i32) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(serving, Some(ServingStatus::Serving as i32));
    let r = client
        .check(HealthCheckRequest {
            service: "metrics".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().status, ServingStatus::Serving as i32);
    service.shutdown().await;
}
