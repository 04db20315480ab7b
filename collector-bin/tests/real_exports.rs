//! The real exports of Claude Code (delta doubles), Codex (histograms,
//! identity only on the resource) and Gemini CLI (cumulative ints, the
//! prompt on the resource) replayed into the real binary with the
//! production config as they were sent (OTLP/JSON, or re-encoded to
//! protobuf for the http/protobuf runs); an HTTP server on 127.0.0.1 plays the Multitudes
//! endpoint. Checked: every token total equals what the fake model API
//! served (`shared/testdata/real/README.md`), and the totals' resource
//! holds only allow-listed attributes (no prompt, session, host or pid).
//!
//! The exports' timestamps are shifted to the test's clock, so the
//! cumulative streams began after this collector did (as a live sender's
//! would) and count in full.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt;
use otelcol_core::pdata::Metrics;
use otelcol_core::server::{self, ServerOptions};
use serde_json::Value as Json;

/// Every `…UnixNano` value in `v` moved by `by` nanoseconds (0 stays 0).
fn shift(v: &mut Json, by: i128) {
    match v {
        Json::Object(map) => {
            for (k, x) in map.iter_mut() {
                if k.ends_with("UnixNano") {
                    let n: i128 = match x {
                        Json::String(s) => s.parse().unwrap(),
                        Json::Number(n) => n.as_u64().unwrap().into(),
                        _ => panic!("odd time {x}"),
                    };
                    if n != 0 {
                        *x = Json::String((n + by).to_string());
                    }
                } else {
                    shift(x, by);
                }
            }
        }
        Json::Array(a) => a.iter_mut().for_each(|x| shift(x, by)),
        _ => {}
    }
}

/// The earliest non-zero `…UnixNano` value in `v`.
fn earliest(v: &Json) -> Option<i128> {
    match v {
        Json::Object(map) => map
            .iter()
            .filter_map(|(k, x)| match (k.ends_with("UnixNano"), x) {
                (true, Json::String(s)) => s.parse().ok().filter(|n| *n > 0),
                (true, Json::Number(n)) => n.as_u64().map(i128::from).filter(|n| *n > 0),
                _ => earliest(x),
            })
            .min(),
        Json::Array(a) => a.iter().filter_map(earliest).min(),
        _ => None,
    }
}

fn metric_bodies(file: &str, now: u128) -> Vec<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/real")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut bodies: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str::<Json>(l).unwrap())
        .filter(|r| r["signal"] == "metrics")
        .map(|r| r["body"].clone())
        .collect();
    let first = bodies.iter().filter_map(earliest).min().unwrap();
    let by = now as i128 - first;
    bodies.iter_mut().for_each(|b| shift(b, by));
    bodies
        .iter()
        .map(|b| serde_json::to_vec(b).unwrap())
        .collect()
}

/// How a replayed export goes on the wire.
#[derive(Clone, Copy)]
enum Wire {
    Json,
    /// Re-encoded to protobuf, as the tool sent it.
    Protobuf,
}

/// Replays the metric exports of `files` through the production config and
/// returns the token totals at the endpoint by (metric, token type), after
/// checking that every total is `ana@example.com`'s and that the totals'
/// resource keeps only allow-listed attributes.
async fn replay(files: &[(&str, Wire)]) -> BTreeMap<(String, String), f64> {
    common::init_crypto();
    let received: Arc<Mutex<Vec<bytes::Bytes>>> = Arc::default();
    let listener = server::bind("127.0.0.1:0").await.unwrap();
    let sink = received.clone();
    let endpoint = server::serve(listener, ServerOptions::default(), move |req, _| {
        let sink = sink.clone();
        async move {
            let metrics = req.uri().path().ends_with("/v1/metrics");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            if metrics {
                sink.lock().unwrap().push(body);
            }
            server::response(hyper::StatusCode::OK, "application/json", "{}")
        }
    });
    let url = format!("http://127.0.0.1:{}/ai/otel", endpoint.local_addr().port());
    let (collector, ports) =
        common::spawn_production(&url, "fallback-token-real-0001", &[], &[]).await;
    let http = ports.http;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    for (file, wire) in files {
        for body in metric_bodies(file, now) {
            let (content_type, body) = match wire {
                Wire::Json => ("application/json", body),
                Wire::Protobuf => {
                    let request: Metrics = serde_json::from_slice(&body).unwrap();
                    (
                        "application/x-protobuf",
                        prost::Message::encode_to_vec(&request),
                    )
                }
            };
            let (status, answer) = common::http(
                "POST",
                &format!("http://127.0.0.1:{http}/v1/metrics"),
                &[("content-type", content_type)],
                body,
            )
            .await;
            assert_eq!(status, 200, "{file}: {answer}");
        }
    }
    let (ok, log) = collector.stop();
    assert!(ok, "clean exit: {log:?}");
    endpoint.shutdown().await;

    let mut tokens: BTreeMap<(String, String), f64> = BTreeMap::new();
    for body in received.lock().unwrap().iter() {
        for (user, metric, ty, v) in common::token_points(body) {
            assert_eq!(user, "ana@example.com", "{metric}");
            *tokens.entry((metric, ty)).or_insert(0.0) += v;
        }
    }
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_json_exports_give_exact_token_totals_and_only_allow_listed_resources() {
    let files = [
        ("claude-json.jsonl", Wire::Json),
        ("codex-json.jsonl", Wire::Json),
        ("gemini.jsonl", Wire::Json),
    ];
    let tokens = replay(&files).await;
    let expected: BTreeMap<(String, String), f64> = [
        // The fake model API serves input + 1 per call: the JSON runs of
        // Claude Code and Codex were its fourth calls (1001 + 3, 2001 + 3).
        ("claude_code.token.usage", "input", 1004.0),
        ("claude_code.token.usage", "output", 20.0),
        ("claude_code.token.usage", "cacheRead", 300.0),
        ("claude_code.token.usage", "cacheCreation", 40.0),
        ("codex.turn.token_usage", "input", 2004.0),
        ("codex.turn.token_usage", "cached_input", 500.0),
        ("codex.turn.token_usage", "cache_write_input", 0.0),
        ("codex.turn.token_usage", "output", 30.0),
        ("codex.turn.token_usage", "reasoning_output", 7.0),
        ("codex.turn.token_usage", "total", 2034.0),
        // Two model calls per prompt (router and main model): input + 1 per call.
        ("gemini_cli.token.usage", "input", 6003.0),
        ("gemini_cli.token.usage", "output", 80.0),
        ("gemini_cli.token.usage", "cache", 1200.0),
        ("gemini_cli.token.usage", "thought", 18.0),
        ("gemini_cli.token.usage", "tool", 0.0),
        ("gen_ai.client.token.usage", "input", 6003.0),
        ("gen_ai.client.token.usage", "output", 80.0),
    ]
    .into_iter()
    .map(|(m, t, v)| ((m.to_string(), t.to_string()), v))
    .collect();
    assert_eq!(tokens, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_protobuf_exports_give_exact_token_totals_and_only_allow_listed_resources() {
    let files = [
        ("claude.jsonl", Wire::Protobuf),
        ("codex.jsonl", Wire::Protobuf),
    ];
    let tokens = replay(&files).await;
    let expected: BTreeMap<(String, String), f64> = [
        // The protobuf runs were the fake model API's first calls.
        ("claude_code.token.usage", "input", 1001.0),
        ("claude_code.token.usage", "output", 20.0),
        ("claude_code.token.usage", "cacheRead", 300.0),
        ("claude_code.token.usage", "cacheCreation", 40.0),
        ("codex.turn.token_usage", "input", 2001.0),
        ("codex.turn.token_usage", "cached_input", 500.0),
        ("codex.turn.token_usage", "cache_write_input", 0.0),
        ("codex.turn.token_usage", "output", 30.0),
        ("codex.turn.token_usage", "reasoning_output", 7.0),
        ("codex.turn.token_usage", "total", 2031.0),
    ]
    .into_iter()
    .map(|(m, t, v)| ((m.to_string(), t.to_string()), v))
    .collect();
    assert_eq!(tokens, expected);
}
