//! The exporter against a scripted HTTP server on 127.0.0.1 playing the
//! Multitudes endpoint: wire format, tokens, retries, queue, and logs.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use otelcol_core::component::{CreateSettings, ExporterFactory, Host, Kind};
use otelcol_core::consumer::{
    AuthData, Batch, BearerToken, ConsumerError, PermanentKind, RequestContext,
};
use otelcol_core::pdata::proto::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use otelcol_core::pdata::{string_attribute, Logs, Metrics};
use otelcol_core::server::{self, ServerOptions};
use otelcol_core::ComponentId;
use otelcol_exporter_multitudes::MultitudesExporterFactory;
use prost::Message;

#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    path: String,
    auth: String,
    content_type: String,
    content_encoding: String,
    idempotency_key: String,
    body: Bytes,
}

/// A scripted answer: status, headers, body.
type Answer = (u16, Vec<(&'static str, &'static str)>, &'static str);

#[derive(Default)]
struct Script {
    seen: Mutex<Vec<Seen>>,
    answers: Mutex<VecDeque<Answer>>,
    delay: Mutex<Duration>,
}

async fn endpoint(script: Arc<Script>) -> (u16, server::ServerHandle) {
    let listener = server::bind("127.0.0.1:0").await.unwrap();
    let handle = server::serve(listener, ServerOptions::default(), move |req, _| {
        let script = script.clone();
        async move {
            let h = |n: &str| {
                req.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            let (path, auth, ct, ce, key) = (
                req.uri().path().to_string(),
                h("authorization"),
                h("content-type"),
                h("content-encoding"),
                h("idempotency-key"),
            );
            let body = req.into_body().collect().await.unwrap().to_bytes();
            script.seen.lock().unwrap().push(Seen {
                at: Instant::now(),
                path,
                auth,
                content_type: ct,
                content_encoding: ce,
                idempotency_key: key,
                body,
            });
            let delay = *script.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            let (status, headers, body) =
                script
                    .answers
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or((200, vec![], "{}"));
            let mut r = server::response(
                http::StatusCode::from_u16(status).unwrap(),
                "application/json",
                body,
            );
            for (k, v) in headers {
                r.headers_mut().insert(k, http::HeaderValue::from_static(v));
            }
            r
        }
    });
    (handle.local_addr().port(), handle)
}

fn metrics(user: &str, value: f64) -> Metrics {
    Metrics {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "claude_code.cost.usage".into(),
                    unit: "USD".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![string_attribute("user.email", user)],
                            start_time_unix_nano: 1_795_255_200_000_000_000,
                            time_unix_nano: 1_795_255_500_000_000_000,
                            value: Some(number_data_point::Value::AsDouble(value)),
                            ..Default::default()
                        }],
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

fn batch<T>(data: T, token: Option<&str>) -> Batch<T> {
    Batch {
        data,
        context: RequestContext {
            auth: token.map(|t| {
                Arc::new(AuthData {
                    token: Some(BearerToken::new(t)),
                    headers: vec![],
                })
            }),
            ..Default::default()
        },
        received: None,
    }
}

fn exporter(
    port: u16,
    extra: &str,
) -> (
    Arc<dyn otelcol_core::component::Exporter<Metrics>>,
    CreateSettings,
) {
    let yaml = format!(
        "endpoint: http://127.0.0.1:{port}/ai/otel/\nfallback_token: fallback-secret-0000\nsending_queue: {{enabled: false}}\nretry_on_failure: {{initial_interval: 100ms, max_interval: 200ms, max_elapsed_time: 10s}}\n{extra}"
    );
    let raw: otelcol_core::config::RawConfig = serde_yaml::from_str(&yaml).unwrap();
    let settings = CreateSettings::standalone(ComponentId::new("multitudes"), Kind::Exporter);
    (
        MultitudesExporterFactory
            .create_metrics(settings.clone(), &raw)
            .unwrap(),
        settings,
    )
}

fn line(settings: &CreateSettings, name: &str) -> String {
    settings
        .metrics
        .render()
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or("")
        .to_string()
}

/// Captures the log lines written on this thread while `f` runs.
struct Logs_(Arc<Mutex<Vec<u8>>>);
impl Write for Logs_ {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || Logs_(b.clone()))
        .finish();
    (buf, tracing::subscriber::set_default(sub))
}

fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn json_to_the_signal_path_under_the_callers_token_or_the_fallback() {
    let (logs, _guard) = capture_logs();
    let script = Arc::new(Script::default());
    let (port, _server) = endpoint(script.clone()).await;
    let (exp, settings) = exporter(port, "");
    exp.start(&Host::new(Default::default(), Default::default()))
        .await
        .unwrap();
    exp.consume(batch(
        metrics("ana@example.com", 0.25),
        Some("tok-ana-123456"),
    ))
    .await
    .unwrap();
    exp.consume(batch(metrics("bo@example.com", 0.5), None))
        .await
        .unwrap();
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/ai/otel/v1/metrics");
    assert_eq!(seen[0].auth, "Bearer tok-ana-123456");
    assert_eq!(seen[1].auth, "Bearer fallback-secret-0000");
    assert_eq!(seen[0].content_type, "application/json");
    assert_eq!(
        String::from_utf8_lossy(&seen[0].body),
        otelcol_core::pdata::json::metrics(&metrics("ana@example.com", 0.25))
    );
    let strict: Metrics = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(strict, metrics("bo@example.com", 0.5));
    assert_eq!(
        line(&settings, "otelcol_exporter_sent_metric_points_total"),
        "otelcol_exporter_sent_metric_points_total{exporter=\"multitudes\"} 2"
    );

    let raw: otelcol_core::config::RawConfig = serde_yaml::from_str(&format!(
        "endpoint: http://127.0.0.1:{port}/ai/otel/v1/metrics\nsending_queue: {{enabled: false}}\n"
    ))
    .unwrap();
    let logs_exp = MultitudesExporterFactory
        .create_logs(
            CreateSettings::standalone(ComponentId::new("multitudes"), Kind::Exporter),
            &raw,
        )
        .unwrap();
    let events: Logs = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/testdata/claude-code-events.json"),
        )
        .unwrap(),
    )
    .unwrap();
    logs_exp
        .consume(batch(events.clone(), Some("tok-bo-abcdef")))
        .await
        .unwrap();
    let last = script.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        last.path, "/ai/otel/v1/logs",
        "a configured signal path is replaced by the signal's own"
    );
    let got: Logs = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(got, events);
    let all = text(&logs);
    for secret in ["tok-ana-123456", "fallback-secret-0000", "tok-bo-abcdef"] {
        assert!(!all.contains(secret), "a token leaked into the logs: {all}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn retryable_then_success_is_delivered_once_after_backoff() {
    let script = Arc::new(Script::default());
    script
        .answers
        .lock()
        .unwrap()
        .push_back((503, vec![], "busy"));
    let (port, _server) = endpoint(script.clone()).await;
    let (exp, settings) = exporter(port, "");
    let started = Instant::now();
    exp.consume(batch(metrics("ana@example.com", 1.0), Some("tok-a")))
        .await
        .unwrap();
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].idempotency_key.len(), 36, "a UUID");
    assert_eq!(
        seen[1].idempotency_key, seen[0].idempotency_key,
        "a retry repeats the key"
    );
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(50),
        "backoff of 100 ms ± 50%: {gap:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        line(&settings, "otelcol_exporter_sent_metric_points_total"),
        "otelcol_exporter_sent_metric_points_total{exporter=\"multitudes\"} 1"
    );
    assert_eq!(
        line(
            &settings,
            "otelcol_exporter_send_failed_metric_points_total"
        ),
        "otelcol_exporter_send_failed_metric_points_total{exporter=\"multitudes\"} 0"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn too_many_requests_honours_retry_after() {
    let script = Arc::new(Script::default());
    script
        .answers
        .lock()
        .unwrap()
        .push_back((429, vec![("retry-after", "2")], "slow down"));
    let (port, _server) = endpoint(script.clone()).await;
    let (exp, _) = exporter(port, "");
    exp.consume(batch(metrics("ana@example.com", 1.0), Some("tok-a")))
        .await
        .unwrap();
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1].at - seen[0].at >= Duration::from_secs(2),
        "waited {:?}",
        seen[1].at - seen[0].at
    );
}

#[tokio::test(flavor = "current_thread")]
async fn bad_request_is_not_retried_and_is_logged_with_its_body() {
    let (logs, _guard) = capture_logs();
    let script = Arc::new(Script::default());
    script
        .answers
        .lock()
        .unwrap()
        .push_back((400, vec![], r#"{"error":"unknown metric shape"}"#));
    let (port, _server) = endpoint(script.clone()).await;
    let (exp, settings) = exporter(port, "");
    let err = exp
        .consume(batch(
            metrics("ana@example.com", 1.0),
            Some("tok-secret-999"),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConsumerError::Permanent {
                kind: PermanentKind::InvalidData,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(script.seen.lock().unwrap().len(), 1);
    assert_eq!(
        line(
            &settings,
            "otelcol_exporter_send_failed_metric_points_total"
        ),
        "otelcol_exporter_send_failed_metric_points_total{exporter=\"multitudes\"} 1"
    );
    let all = text(&logs);
    assert!(
        all.contains(r#"body={"error":"unknown metric shape"}"#),
        "{all}"
    );
    assert!(all.contains("status=400"), "{all}");
    assert!(all.contains("token=tok-***"), "{all}");
    assert!(!all.contains("tok-secret-999"), "{all}");

    script
        .answers
        .lock()
        .unwrap()
        .push_back((401, vec![], "bad token"));
    let err = exp
        .consume(batch(metrics("ana@example.com", 1.0), Some("tok-x")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConsumerError::Permanent {
                kind: PermanentKind::Unauthenticated,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Inline (no queue): giving up hands the retryable refusal back to the
/// caller, who still holds the batch, so nothing is counted as failed
/// (issue 12: it was counted failed, then sent by the caller's retry).
#[tokio::test(flavor = "current_thread")]
async fn endpoint_down_for_the_whole_retry_window_hands_the_refusal_back() {
    let (logs, _guard) = capture_logs();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!("endpoint: http://ana:pw-secret-1@127.0.0.1:{closed}/ingest?api_key=KEY-SECRET-2\nfallback_token: fallback-secret-0000\nsending_queue: {{enabled: false}}\nretry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 400ms}}\n");
    let raw: otelcol_core::config::RawConfig = serde_yaml::from_str(&yaml).unwrap();
    let settings = CreateSettings::standalone(ComponentId::new("multitudes"), Kind::Exporter);
    let exp = MultitudesExporterFactory
        .create_metrics(settings.clone(), &raw)
        .unwrap();
    let started = Instant::now();
    let err = exp
        .consume(batch(metrics("ana@example.com", 1.0), Some("tok-a")))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        line(
            &settings,
            "otelcol_exporter_send_failed_metric_points_total"
        ),
        "otelcol_exporter_send_failed_metric_points_total{exporter=\"multitudes\"} 0"
    );
    let all = text(&logs);
    assert!(
        all.contains("giving up retrying a batch; handing the refusal back"),
        "{all}"
    );
    // Issue 14: the give-up line printed the password and the api_key.
    assert!(
        all.contains("http://ana:***@127.0.0.1:"),
        "the destination is named, redacted: {all}"
    );
    assert!(all.contains("/ingest/v1/metrics?api_key=***"), "{all}");
    for secret in ["pw-secret-1", "KEY-SECRET-2", "fallback-secret-0000"] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
        assert!(
            !format!("{err}").contains(secret),
            "{secret} in the error: {err}"
        );
    }
}

/// With a queue the batch ends in the exporter: dropped, counted, logged.
#[tokio::test(flavor = "current_thread")]
async fn endpoint_down_for_the_whole_retry_window_drops_a_queued_batch_counted_and_logged() {
    let (logs, _guard) = capture_logs();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (exp, settings) = exporter(closed, "retry_on_failure: {initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 300ms}\n");
    drop(exp);
    let yaml = format!("endpoint: http://127.0.0.1:{closed}\nfallback_token: fallback-secret-0000\nretry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 300ms}}\n");
    let raw: otelcol_core::config::RawConfig = serde_yaml::from_str(&yaml).unwrap();
    let exp = MultitudesExporterFactory
        .create_metrics(settings.clone(), &raw)
        .unwrap();
    exp.start(&Host::new(Default::default(), Default::default()))
        .await
        .unwrap();
    exp.consume(batch(metrics("ana@example.com", 1.0), Some("tok-a")))
        .await
        .unwrap();
    let failed = "otelcol_exporter_send_failed_metric_points_total{exporter=\"multitudes\"} 1";
    let deadline = Instant::now() + Duration::from_secs(5);
    while line(
        &settings,
        "otelcol_exporter_send_failed_metric_points_total",
    ) != failed
    {
        assert!(Instant::now() < deadline, "never counted: {}", text(&logs));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        text(&logs).contains(
            "giving up on a request after retry_on_failure.max_elapsed_time; it is dropped"
        ),
        "{}",
        text(&logs)
    );
    exp.shutdown().await.unwrap();
}

/// Issue 12, defect 11: partial success was read only as JSON and only
/// within 1 KiB.
#[tokio::test(flavor = "current_thread")]
async fn partial_success_is_counted_in_protobuf_and_at_any_length() {
    let (logs, _guard) = capture_logs();
    let script = Arc::new(Script::default());
    let long: &'static str = Box::leak(
        format!(
            "{{\"partialSuccess\": {{\"rejectedDataPoints\": \"2\", \"errorMessage\": \"{}\"}}}}",
            "x".repeat(3000)
        )
        .into_boxed_str(),
    );
    script.answers.lock().unwrap().extend([
        (200, vec![], long),
        (
            200,
            vec![("content-type", "application/x-protobuf")],
            "\n\x07\x08\x03\x12\x03bad",
        ),
    ]);
    let (port, _server) = endpoint(script.clone()).await;
    let (exp, settings) = exporter(port, "encoding: proto\n");
    for _ in 0..2 {
        exp.consume(batch(metrics("ana@example.com", 1.0), Some("tok-a")))
            .await
            .unwrap();
    }
    assert_eq!(
        line(&settings, "otelcol_exporter_partial_rejected_items_total"),
        "otelcol_exporter_partial_rejected_items_total{exporter=\"multitudes\"} 5"
    );
    assert!(
        text(&logs).contains("rejected=3 items=1 bad"),
        "{}",
        text(&logs)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn no_token_at_all_is_dropped_with_one_warning() {
    let (logs, _guard) = capture_logs();
    let script = Arc::new(Script::default());
    let (port, _server) = endpoint(script.clone()).await;
    let raw: otelcol_core::config::RawConfig = serde_yaml::from_str(&format!(
        "endpoint: http://127.0.0.1:{port}\nsending_queue: {{enabled: false}}\n"
    ))
    .unwrap();
    let settings = CreateSettings::standalone(ComponentId::new("multitudes"), Kind::Exporter);
    let exp = MultitudesExporterFactory
        .create_metrics(settings.clone(), &raw)
        .unwrap();
    for _ in 0..3 {
        let err = exp
            .consume(batch(metrics("ana@example.com", 1.0), None))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ConsumerError::Permanent {
                kind: PermanentKind::Unauthenticated,
                ..
            }
        ));
    }
    assert!(script.seen.lock().unwrap().is_empty());
    assert_eq!(
        line(
            &settings,
            "otelcol_exporter_send_failed_metric_points_total"
        ),
        "otelcol_exporter_send_failed_metric_points_total{exporter=\"multitudes\"} 3"
    );
    let all = text(&logs);
    assert_eq!(
        all.matches("dropping a batch: the caller sent no bearer token")
            .count(),
        1,
        "{all}"
    );
    assert_eq!(
        all.matches("no fallback_token is set").count(),
        1,
        "warned at creation: {all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_a_retryable_error() {
    let script = Arc::new(Script::default());
    *script.delay.lock().unwrap() = Duration::from_millis(500);
    let (port, _server) = endpoint(script.clone()).await;
    let (exp, settings) = exporter(
        port,
        "sending_queue: {enabled: true, queue_size: 1, num_consumers: 1}\n",
    );
    exp.start(&Host::new(Default::default(), Default::default()))
        .await
        .unwrap();
    exp.consume(batch(metrics("a@b.c", 1.0), Some("t")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await; // the consumer takes it
    exp.consume(batch(metrics("a@b.c", 2.0), Some("t")))
        .await
        .unwrap();
    let err = exp
        .consume(batch(metrics("a@b.c", 3.0), Some("t")))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(
        line(
            &settings,
            "otelcol_exporter_enqueue_failed_metric_points_total"
        ),
        "otelcol_exporter_enqueue_failed_metric_points_total{exporter=\"multitudes\"} 1"
    );
    assert!(line(&settings, "otelcol_exporter_queue_capacity").ends_with(" 1"));
    exp.shutdown().await.unwrap();
    assert_eq!(
        script.seen.lock().unwrap().len(),
        2,
        "shutdown drains the queue"
    );
    assert_eq!(
        line(&settings, "otelcol_exporter_sent_metric_points_total"),
        "otelcol_exporter_sent_metric_points_total{exporter=\"multitudes\"} 2"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn proto_encoding_with_gzip() {
    let script = Arc::new(Script::default());
    let (port, _server) = endpoint(script.clone()).await;
    let (exp, _) = exporter(port, "encoding: proto\ncompression: gzip\n");
    exp.consume(batch(metrics("ana@example.com", 1.5), Some("t")))
        .await
        .unwrap();
    let seen = script.seen.lock().unwrap()[0].clone();
    assert_eq!(
        (seen.content_type.as_str(), seen.content_encoding.as_str()),
        ("application/x-protobuf", "gzip")
    );
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&seen.body[..])
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(
        Metrics::decode(&raw[..]).unwrap(),
        metrics("ana@example.com", 1.5)
    );
}
