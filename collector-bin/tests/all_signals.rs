//! Every signal is accepted on every transport, also one no pipeline takes:
//! the production config has no traces pipeline, and Gemini CLI (which
//! sends traces over gRPC by default) aborts its final flush, metrics
//! included, when the collector answers UNIMPLEMENTED for traces.

mod common;

use otelcol_core::pdata::proto::collector::trace::v1::trace_service_client::TraceServiceClient;
use otelcol_core::pdata::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otelcol_core::pdata::Traces;
use prost::Message;

fn spans(n: u8) -> Traces {
    Traces {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (1..=n)
                    .map(|i| Span {
                        trace_id: vec![i; 16],
                        span_id: vec![i; 8],
                        name: "gemini_cli.llm_call".into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_without_a_traces_pipeline_are_answered_ok_counted_and_warned_once() {
    let (collector, ports) =
        common::spawn_production("http://127.0.0.1:9", "fallback-token", &[], &[]).await;
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    client
        .export(spans(2))
        .await
        .expect("gRPC traces answered OK");
    client.export(spans(3)).await.expect("and again");
    let (status, body) = common::http(
        "POST",
        &format!("http://127.0.0.1:{}/v1/traces", ports.http),
        &[("content-type", "application/x-protobuf")],
        spans(1).encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (_, lines) = collector.stop();
    let warnings: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("no pipeline takes traces"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning per signal per 10 minutes, over both transports: {lines:#?}"
    );
    assert!(
        warnings[0].contains("add a `traces` pipeline with `receivers: [otlp]`"),
        "{}",
        warnings[0]
    );
}
