//! The pipeline graph: fan-in from several receivers, fan-out to several
//! exporters, one receiver instance feeding several pipelines.

mod common;

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
    let (mut service, captured) = common::start_with_capture(&yaml).await;
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
    let (mut service, captured) = common::start_with_capture(&yaml).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_copies_resource_identity_so_aggregation_finds_it_on_points() {
    use otelcol_core::pdata::proto::metrics::v1::{metric::Data, number_data_point::Value};
    let port = common::free_port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols: {{http: {{endpoint: "127.0.0.1:{port}"}}}}
processors:
  transform:
    metric_statements:
      - context: datapoint
        statements:
          - set(attributes["user"], resource.attributes["user"])
          - set(attributes["department"], resource.attributes["department"])
          - set(attributes["email"], resource.attributes["email"])
  aggregation:
    attribute_key: email
    lookup: [datapoint]
    aggregation_interval: 1h
    exclude_attributes: [session.id, user.id, user.account_uuid, organization.id, terminal.type]
exporters:
  capture:
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics: {{receivers: [otlp], processors: [transform, aggregation], exporters: [capture]}}
"#
    );
    // The fixture of a Bedrock user, identity set with
    // OTEL_RESOURCE_ATTRIBUTES=user=cara,department=platform,email=cara@example.com
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata");
    let text =
        std::fs::read_to_string(dir.join("claude-code-metrics-resource-identity.json")).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let attrs = doc["resourceMetrics"][0]["resource"]["attributes"]
        .as_array_mut()
        .unwrap();
    attrs.retain(|a| a["key"] != "user.email");
    for (k, v) in [("user", "cara"), ("email", "cara@example.com")] {
        attrs.push(serde_json::json!({"key": k, "value": {"stringValue": v}}));
    }
    let body = serde_json::to_vec(&doc).unwrap();

    let run = |with_transform: bool| {
        let yaml = if with_transform {
            yaml.clone()
        } else {
            let (start, end) = (
                yaml.find("  transform:").unwrap(),
                yaml.find("  aggregation:").unwrap(),
            );
            format!("{}{}", &yaml[..start], &yaml[end..]).replace(
                "processors: [transform, aggregation]",
                "processors: [aggregation]",
            )
        };
        let body = body.clone();
        async move {
            let (mut service, captured) = common::start_with_capture(&yaml).await;
            let (status, _) = common::http(
                "POST",
                &format!("http://127.0.0.1:{port}/v1/metrics"),
                &[("content-type", "application/json")],
                body,
            )
            .await;
            assert_eq!(status, 200);
            service.shutdown().await;
            let mut totals: std::collections::BTreeMap<(String, String, String), f64> =
                Default::default();
            for b in captured.metrics.lock().unwrap().iter() {
                for rm in &b.data.resource_metrics {
                    for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                        let Some(Data::Sum(s)) = &m.data else {
                            panic!()
                        };
                        for p in &s.data_points {
                            let get = |k: &str| {
                                p.attributes
                                    .iter()
                                    .find(|kv| kv.key == k)
                                    .and_then(|kv| kv.value.as_ref())
                                    .and_then(otelcol_core::pdata::as_str)
                                    .unwrap_or("-")
                                    .to_string()
                            };
                            let Some(Value::AsDouble(v)) = p.value else {
                                panic!()
                            };
                            *totals
                                .entry((get("email"), get("department"), m.name.clone()))
                                .or_insert(0.0) += v;
                        }
                    }
                }
            }
            totals
        }
    };
    assert!(
        run(false).await.is_empty(),
        "without the transform no point carries the key: all dropped"
    );
    let totals = run(true).await;
    let k = |m: &str| {
        (
            "cara@example.com".to_string(),
            "platform".to_string(),
            m.to_string(),
        )
    };
    let expected = std::collections::BTreeMap::from([
        (k("claude_code.active_time.total"), 96.75),
        (k("claude_code.code_edit_tool.decision"), 3.0),
        (k("claude_code.commit.count"), 1.0),
        (k("claude_code.cost.usage"), 0.0914),
        (k("claude_code.lines_of_code.count"), 49.0),
        (k("claude_code.pull_request.count"), 1.0),
        (k("claude_code.session.count"), 1.0),
        (k("claude_code.token.usage"), 22926.0),
    ]);
    assert_eq!(totals, expected);
}

/// The receiver's protobuf bytes travel with the batch only while nothing
/// can have changed the data: through `memory_limiter`, not past a
/// processor that edits (here `attributes`), never for JSON or gzip-less
/// re-encodings. A durable log that stored stale bytes would replay data
/// other than what it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_bytes_reach_only_consumers_of_unchanged_data() {
    use otelcol_core::pdata::Metrics;
    use prost::Message;
    let port = common::free_port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols: {{http: {{endpoint: "127.0.0.1:{port}"}}}}
processors:
  memory_limiter: {{check_interval: 1s, limit_mib: 4000}}
  attributes:
    actions: [{{key: team, value: core, action: upsert}}]
exporters:
  capture:
  capture/edited:
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [memory_limiter]
      exporters: [capture]
    metrics/edited:
      receivers: [otlp]
      processors: [memory_limiter, attributes]
      exporters: [capture/edited]
"#
    );
    let (mut service, captured) = common::start_with_capture(&yaml).await;
    let json = common::claude_metrics_json(3);
    let request: Metrics = serde_json::from_slice(&json).unwrap();
    let proto = request.encode_to_vec();
    let url = format!("http://127.0.0.1:{port}/v1/metrics");
    let sent = common::http(
        "POST",
        &url,
        &[("content-type", "application/x-protobuf")],
        proto.clone(),
    )
    .await;
    assert_eq!(sent.0, 200, "{}", sent.1);
    let sent = common::http("POST", &url, &[("content-type", "application/json")], json).await;
    assert_eq!(sent.0, 200, "{}", sent.1);
    let seen: Vec<(Option<Vec<u8>>, Metrics)> = captured
        .metrics
        .lock()
        .unwrap()
        .iter()
        .map(|b| (b.received.as_ref().map(|r| r.to_vec()), b.data.clone()))
        .collect();
    assert_eq!(seen.len(), 4, "two requests, two pipelines");
    let with_bytes: Vec<&(Option<Vec<u8>>, Metrics)> =
        seen.iter().filter(|(r, _)| r.is_some()).collect();
    assert_eq!(
        with_bytes.len(),
        1,
        "only the protobuf request through memory_limiter alone keeps its bytes"
    );
    let (bytes, data) = with_bytes[0];
    assert_eq!(bytes.as_deref(), Some(&proto[..]), "exactly as received");
    assert_eq!(data, &request, "and the data they were decoded to");
    assert!(
        seen.iter()
            .any(|(r, d)| r.is_none() && d.encode_to_vec() != proto),
        "the edited copy went on without them"
    );
    service.shutdown().await;
}

/// The receiver asks its pipelines, once, whether they read the bytes
/// themselves (`reads_received`), through the pipeline builder: through
/// `memory_limiter` the answer is the exporter's (protobuf arrives
/// undecoded, its points counted); a processor that may change the data
/// (`attributes`) answers no; a receiver feeding two pipelines hands bytes
/// over undecoded only if both read them. JSON the receiver's fast path
/// takes goes the same way, written as protobuf (the same request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_goes_undecoded_only_to_pipelines_that_read_the_bytes() {
    use otelcol_core::pdata::Metrics;
    use prost::Message;
    let json = common::claude_metrics_json(3);
    let request: Metrics = serde_json::from_slice(&json).unwrap();
    let proto = request.encode_to_vec();
    let points = otelcol_core::pdata::Payload::item_count(&request);
    // (processors and exporter of pipeline 1, of pipeline 2 if any) ->
    // whether the protobuf request arrived undecoded.
    let cases: [(&str, &str, Option<&str>, bool); 4] = [
        ("memory_limiter", "capture/reads", None, true),
        ("memory_limiter, attributes", "capture/reads", None, false),
        ("memory_limiter", "capture", None, false),
        ("memory_limiter", "capture/reads", Some("capture"), false),
    ];
    for (processors, exporter, second, undecoded) in cases {
        let port = common::free_port();
        let second_pipeline = second
            .map(|e| format!("    metrics/2: {{receivers: [otlp], exporters: [{e}]}}\n"))
            .unwrap_or_default();
        // Only what the pipelines use (an unused component is an error).
        let attributes = match processors.contains("attributes") {
            true => "  attributes: {actions: [{key: team, value: core, action: upsert}]}\n",
            false => "",
        };
        let exporters: String = [Some(exporter), second]
            .into_iter()
            .flatten()
            .map(|e| format!("  {e}:\n"))
            .collect();
        let yaml = format!(
            r#"
receivers:
  otlp:
    protocols: {{http: {{endpoint: "127.0.0.1:{port}"}}}}
processors:
  memory_limiter: {{check_interval: 1s, limit_mib: 4000}}
{attributes}exporters:
{exporters}service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics: {{receivers: [otlp], processors: [{processors}], exporters: [{exporter}]}}
{second_pipeline}"#
        );
        let (mut service, captured) = common::start_with_capture(&yaml).await;
        let url = format!("http://127.0.0.1:{port}/v1/metrics");
        let proto_type = [("content-type", "application/x-protobuf")];
        let sent = common::http("POST", &url, &proto_type, proto.clone()).await;
        assert_eq!(sent.0, 200, "{}", sent.1);
        let json_type = [("content-type", "application/json")];
        let sent = common::http("POST", &url, &json_type, json.clone()).await;
        assert_eq!(sent.0, 200, "{}", sent.1);
        service.shutdown().await;
        let got = captured.metrics.lock().unwrap();
        let what = format!("{processors} -> {exporter}, second pipeline {second:?}");
        let first = &got[0];
        assert_eq!(first.undecoded(), undecoded, "{what}");
        assert_eq!(first.items(), points, "{what}");
        if undecoded {
            assert_eq!(first.received.as_deref(), Some(&proto[..]), "{what}");
            assert_eq!(first.data, Metrics::default(), "{what}");
        }
        let last = got.last().unwrap();
        assert_eq!(last.undecoded(), undecoded, "JSON: {what}");
        assert_eq!(last.items(), points, "JSON: {what}");
        match &last.received {
            Some(bytes) if undecoded => {
                assert_eq!(
                    Metrics::decode(&bytes[..]).unwrap(),
                    request,
                    "JSON: {what}"
                )
            }
            received => assert!(received.is_none(), "JSON: {what}"),
        }
    }
}

/// A connector joins a logs pipeline to a metrics pipeline: events in,
/// points out with the caller's token, the connector on the status board
/// with both pipelines, and the events' points still delivered when the
/// service stops (the connector is shut down after the logs pipeline and
/// before the metrics pipeline it feeds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_turns_a_logs_pipeline_into_points_of_a_metrics_pipeline() {
    let port = common::free_port();
    let yaml = format!(
        r#"
extensions:
  multitudes_auth:
receivers:
  otlp:
    protocols: {{http: {{endpoint: "127.0.0.1:{port}", auth: {{authenticator: multitudes_auth}}}}}}
processors:
  batch: {{timeout: 1h, send_batch_size: 1000}}
connectors:
  signaltometrics:
    rule_sets: [claude_code]
exporters:
  capture:
service:
  extensions: [multitudes_auth]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [signaltometrics]
    metrics:
      receivers: [signaltometrics]
      processors: [batch]
      exporters: [capture]
"#
    );
    let (mut service, captured) = common::start_with_capture(&yaml).await;
    let event = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"user.email","value":{"stringValue":"ana@example.com"}}]},
        "scopeLogs":[{"logRecords":[{"timeUnixNano":"1796174325142000000","body":{"stringValue":"claude_code.api_request"},
        "attributes":[{"key":"event.name","value":{"stringValue":"api_request"}},{"key":"session.id","value":{"stringValue":"s-1"}},
        {"key":"input_tokens","value":{"intValue":"1001"}},{"key":"cost_usd","value":{"doubleValue":0.5}}]}]}]}]}"#;
    let sent = common::http(
        "POST",
        &format!("http://127.0.0.1:{port}/v1/logs"),
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer tok-ana-0001"),
        ],
        event.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(sent.0, 200, "{}", sent.1);
    assert!(
        captured.metrics.lock().unwrap().is_empty(),
        "the batch processor holds the points until the service stops"
    );
    let snapshot = service.status().snapshot();
    let connector = snapshot
        .iter()
        .find(|c| c.id.to_string() == "signaltometrics")
        .unwrap();
    assert_eq!(
        connector.pipelines,
        vec!["pipeline:logs", "pipeline:metrics"]
    );
    service.shutdown().await;

    let batches = captured.metrics.lock().unwrap();
    assert_eq!(
        batches.len(),
        1,
        "flushed at shutdown, downstream of the connector"
    );
    let batch = &batches[0];
    assert_eq!(
        batch.context.bearer_token().map(|t| t.expose()),
        Some("tok-ana-0001")
    );
    let names: Vec<(String, usize)> = batch
        .data
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| (m.name.clone(), otelcol_core::pdata::metric_point_count(m)))
        .collect();
    assert_eq!(
        names,
        [
            ("claude_code.events.token.usage".to_string(), 1),
            ("claude_code.events.cost.usage".to_string(), 1)
        ]
    );
}
